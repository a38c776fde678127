//! `cairn stats`.

use anyhow::Result;
use cairn_store::stats;

use crate::args::{GlobalArgs, StatsArgs};
use crate::config::Config;
use crate::render;
use crate::settings;

/// Prints the sizes of the chosen snapshots (default: all selected) and of the repository.
pub fn run(global: &GlobalArgs, config: Option<&Config>, args: &StatsArgs) -> Result<()> {
    let selection = super::selection(&args.selection, config)?;
    let repository = settings::open_repository(global)?;
    let snapshots =
        super::Chooser::new(&repository, selection).named_or_selected(&args.snapshots)?;
    let stats = stats::stats(&repository, &snapshots)?;
    if stats.blobs_not_indexed > 0 {
        eprintln!(
            "warning: {} referenced blobs are not in the index: sizes are low (run cairn check)",
            stats.blobs_not_indexed
        );
    }
    if global.json {
        render::json_line(&serde_json::json!({
            "message_type": "summary",
            "snapshots": stats.snapshots,
            "files": stats.files,
            "raw_bytes": stats.raw_bytes,
            "unique_files": stats.unique_files,
            "unique_files_bytes": stats.unique_files_bytes,
            "data_blobs": stats.data_blobs,
            "tree_blobs": stats.tree_blobs,
            "deduplicated_bytes": stats.deduplicated_bytes,
            "stored_bytes": stats.stored_bytes,
            "deduplication_ratio": stats.deduplication_ratio(),
            "compression_ratio": stats.compression_ratio(),
            "blobs_not_indexed": stats.blobs_not_indexed,
            "packs": stats.packs,
            "repository_objects": stats.repository_objects,
            "repository_bytes": stats.repository_bytes,
        }));
        return Ok(());
    }
    let rows = [
        ("snapshots", stats.snapshots.to_string()),
        (
            "raw size",
            format!(
                "{} in {} (every snapshot counted)",
                render::bytes(stats.raw_bytes),
                render::count(stats.files as u64, "file", "files")
            ),
        ),
        (
            "unique files",
            format!(
                "{} in {} distinct file contents",
                render::bytes(stats.unique_files_bytes),
                stats.unique_files
            ),
        ),
        (
            "deduplicated size",
            format!(
                "{} in {} data and {} tree blobs",
                render::bytes(stats.deduplicated_bytes),
                stats.data_blobs,
                stats.tree_blobs
            ),
        ),
        (
            "stored size",
            format!(
                "{} (compressed, encrypted)",
                render::bytes(stats.stored_bytes)
            ),
        ),
        (
            "deduplication",
            format!("{:.2}x (raw / deduplicated)", stats.deduplication_ratio()),
        ),
        (
            "compression",
            format!("{:.2}x (deduplicated / stored)", stats.compression_ratio()),
        ),
        (
            "repository",
            format!(
                "{} in {}, {}",
                render::bytes(stats.repository_bytes),
                render::count(stats.repository_objects as u64, "object", "objects"),
                render::count(stats.packs as u64, "pack", "packs")
            ),
        ),
    ];
    for (label, value) in rows {
        outln!("{label:<18} {value}");
    }
    Ok(())
}
