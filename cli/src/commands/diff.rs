//! `cairn diff`.

use anyhow::Result;
use cairn_store::diff::{self, DiffOptions};

use crate::args::{DiffArgs, GlobalArgs};
use crate::config::Config;
use crate::render;
use crate::settings;

/// Lists the entries that differ between two snapshots, then the totals.
pub fn run(global: &GlobalArgs, config: Option<&Config>, args: &DiffArgs) -> Result<()> {
    let selection = super::selection(&args.selection, config)?;
    let repository = settings::open_repository(global)?;
    repository.sync_index()?;
    let chooser = super::Chooser::new(&repository, selection);
    let (old_id, old) = chooser.one(&args.old)?;
    let (new_id, new) = chooser.one(&args.new)?;
    let options = DiffOptions {
        directory_metadata: args.metadata,
    };
    let mut load = |id: &cairn_store::Id| repository.load_tree(id);
    let mut report = |change: &diff::Change| {
        if global.json {
            render::json_line(&serde_json::json!({
                "message_type": "change",
                "path": change.path,
                "change": change.kind.name(),
                "directory": change.directory,
                "old_size": change.old_size,
                "new_size": change.new_size,
            }));
        } else {
            let slash = if change.directory { "/" } else { "" };
            outln!("{}    {}{slash}", change.kind.marker(), change.path);
        }
    };
    let totals = diff::diff_trees(&mut load, &old.root, &new.root, options, &mut report)?;
    if global.json {
        render::json_line(&serde_json::json!({
            "message_type": "summary",
            "old_snapshot": old_id.to_hex(),
            "new_snapshot": new_id.to_hex(),
            "added": totals.added,
            "removed": totals.removed,
            "modified": totals.modified,
            "type_changed": totals.type_changed,
            "metadata_changed": totals.metadata,
            "bytes_added": totals.bytes_added,
            "bytes_removed": totals.bytes_removed,
        }));
    } else if !global.quiet {
        outln!(
            "{} -> {}: {} added, {} removed, {} modified, {} type changed, {} metadata only; {} added, {} removed",
            old_id.short(),
            new_id.short(),
            totals.added,
            totals.removed,
            totals.modified,
            totals.type_changed,
            totals.metadata,
            render::bytes(totals.bytes_added),
            render::bytes(totals.bytes_removed),
        );
    }
    Ok(())
}
