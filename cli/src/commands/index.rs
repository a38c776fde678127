//! `cairn index rebuild`.

use anyhow::Result;
use cairn_store::index::cache::IndexCache;

use crate::args::{GlobalArgs, IndexCommand};
use crate::render;
use crate::settings;

/// Rebuilds the local index cache from the repository's index objects.
pub fn run(global: &GlobalArgs, command: &IndexCommand) -> Result<()> {
    match command {
        IndexCommand::Rebuild => {
            let mut repository = settings::open_repository(global)?;
            if let Err(error) = repository.cache().clear() {
                // A file too damaged to clear is replaced, not kept.
                if !repository.cache().is_persistent() {
                    return Err(error.into());
                }
                let path = repository.cache().path().to_owned();
                drop(repository);
                let aside = IndexCache::move_aside(&path)?;
                eprintln!(
                    "warning: the local index cache {} could not be cleared ({error}): moved to {} and rebuilt",
                    path.display(),
                    aside.display()
                );
                repository = settings::open_repository(global)?;
            }
            let report = repository.sync_index()?;
            for name in &report.damaged {
                eprintln!("warning: index object {name} is damaged; run `cairn check`");
            }
            if global.json {
                render::json_line(&serde_json::json!({
                    "message_type": "summary", "index_objects": report.merged, "damaged": report.damaged,
                }));
            } else if !global.quiet {
                outln!("local index rebuilt from {} index objects", report.merged);
            }
            Ok(())
        }
    }
}
