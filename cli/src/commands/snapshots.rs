//! `cairn snapshots`.

use anyhow::Result;

use cairn_store::time_sanity;

use crate::args::{GlobalArgs, SnapshotsArgs};
use crate::config::Config;
use crate::render;
use crate::settings;

/// Lists the selected snapshots, oldest first.
pub fn run(global: &GlobalArgs, config: Option<&Config>, args: &SnapshotsArgs) -> Result<()> {
    let selection = super::selection(&args.selection, config)?;
    let repository = settings::open_repository(global)?;
    let snapshots = super::Chooser::new(&repository, selection).selected()?;
    let now = jiff::Timestamp::now();
    let future = |snapshot: &cairn_store::format::snapshot::Snapshot| {
        time_sanity::is_future(render::jiff_time(snapshot.time), now)
    };
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
                "future": future(snapshot),
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
    let mut rows = vec![["ID", "time", "host", "tags", "paths"].map(str::to_owned)];
    for (id, snapshot) in &snapshots {
        rows.push([
            id.short(),
            render::local_time(snapshot.time),
            snapshot.host.clone(),
            snapshot.tags.join(","),
            format!(
                "{}{}",
                snapshot.source.names().join(" "),
                if future(snapshot) {
                    "  (dated in the future)"
                } else {
                    ""
                }
            ),
        ]);
    }
    for line in render::aligned_rows(&rows) {
        outln!("{line}");
    }
    if !global.quiet {
        outln!("{} snapshots", snapshots.len());
    }
    let in_future = snapshots
        .iter()
        .filter(|(_, snapshot)| future(snapshot))
        .count();
    if in_future > 0 {
        eprintln!(
            "warning: {in_future} snapshots are dated in the future of this machine's clock: the \
             newest of them is `latest` and forget keeps them until then; if a date is wrong, \
             `cairn forget ID` removes that snapshot"
        );
    }
    Ok(())
}
