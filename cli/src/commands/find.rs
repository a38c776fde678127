//! `cairn find`.

use anyhow::Result;
use cairn_store::find::Finder;
use cairn_store::format::tree::{Node, NodeKind};
use cairn_store::pathmatch::PathMatcher;

use crate::args::{FindArgs, GlobalArgs};
use crate::config::Config;
use crate::render;
use crate::settings;

/// Prints every matching entry of the chosen snapshots, oldest snapshot first.
pub fn run(global: &GlobalArgs, config: Option<&Config>, args: &FindArgs) -> Result<()> {
    let matcher = PathMatcher::new(&args.patterns)?;
    let selection = super::selection(&args.selection, config)?;
    let repository = settings::open_repository(global)?;
    repository.sync_index()?;
    let snapshots =
        super::Chooser::new(&repository, selection).named_or_selected(&args.snapshots)?;
    let mut finder = Finder::new(matcher);
    let mut load = |id: &cairn_store::Id| repository.load_tree(id);
    let mut total = 0;
    for (id, snapshot) in &snapshots {
        let mut report = |path: &str, node: &Node| {
            if global.json {
                render::json_line(&serde_json::json!({
                    "message_type": "match",
                    "snapshot_id": id.to_hex(),
                    "snapshot_time": render::rfc3339(snapshot.time),
                    "path": path,
                    "type": render::node_type(node),
                    "size": node.size,
                    "mtime": render::rfc3339(node.mtime),
                }));
            } else {
                outln!(
                    "{}  {}  {:>12}  {}  {path}",
                    id.short(),
                    render::local_time(snapshot.time),
                    if matches!(node.kind, NodeKind::Directory { .. }) {
                        "dir".to_owned()
                    } else {
                        render::bytes(node.size)
                    },
                    render::local_time(node.mtime),
                );
            }
        };
        total += finder.search(&mut load, &snapshot.root, &mut report)?;
    }
    if global.json {
        render::json_line(&serde_json::json!({
            "message_type": "summary",
            "matches": total,
            "snapshots_searched": snapshots.len(),
        }));
    } else if !global.quiet {
        outln!(
            "{} in {}",
            render::count(total, "match", "matches"),
            render::count(snapshots.len() as u64, "snapshot", "snapshots")
        );
    }
    Ok(())
}
