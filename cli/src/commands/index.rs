//! `cairn index rebuild`.

use anyhow::Result;

use crate::args::{GlobalArgs, IndexCommand};
use crate::render;
use crate::settings;

/// Rebuilds the local index cache from the repository's index objects.
pub fn run(global: &GlobalArgs, command: &IndexCommand) -> Result<()> {
    match command {
        IndexCommand::Rebuild => {
            let repository = settings::open_repository(global)?;
            repository.cache().clear()?;
            let report = repository.sync_index()?;
            for name in &report.damaged {
                eprintln!("warning: index object {name} is damaged; run `cairn check`");
            }
            if global.json {
                render::json_line(&serde_json::json!({
                    "message_type": "summary", "index_objects": report.merged, "damaged": report.damaged,
                }));
            } else if !global.quiet {
                println!("local index rebuilt from {} index objects", report.merged);
            }
            Ok(())
        }
    }
}
