//! `cairn snapshots`.

use anyhow::Result;

use crate::args::GlobalArgs;
use crate::render;
use crate::settings;

/// Lists snapshots, oldest first.
pub fn run(global: &GlobalArgs) -> Result<()> {
    let repository = settings::open_repository(global)?;
    let (snapshots, errors) = repository.list_snapshots()?;
    for error in &errors {
        eprintln!("warning: {error}");
    }
    if global.json {
        for (id, snapshot) in &snapshots {
            render::json_line(&serde_json::json!({
                "message_type": "snapshot",
                "id": id.to_hex(),
                "short_id": id.short(),
                "time": render::rfc3339(snapshot.time),
                "host": snapshot.host,
                "username": snapshot.username,
                "tags": snapshot.tags,
                "paths": snapshot.source.names(),
                "stdin": matches!(snapshot.source, cairn_store::format::snapshot::Source::Stdin(_)),
                "root": snapshot.root.to_hex(),
                "summary": {
                    "files": snapshot.summary.files,
                    "directories": snapshot.summary.directories,
                    "bytes_processed": snapshot.summary.bytes_processed,
                    "bytes_added": snapshot.summary.bytes_added,
                },
            }));
        }
        return Ok(());
    }
    println!(
        "{:<10} {:<19} {:<16} {:<16} paths",
        "ID", "time", "host", "tags"
    );
    for (id, snapshot) in &snapshots {
        println!(
            "{:<10} {:<19} {:<16} {:<16} {}",
            id.short(),
            render::local_time(snapshot.time),
            snapshot.host,
            snapshot.tags.join(","),
            snapshot.source.names().join(" ")
        );
    }
    if !global.quiet {
        println!("{} snapshots", snapshots.len());
    }
    Ok(())
}
