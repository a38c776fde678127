//! `cairn backup`.

use std::path::Path;

use anyhow::Result;
use cairn_store::backup::{
    self, BackupOptions, BackupProgress, BackupSource, ParentChoice, SourceWarning,
};
use cairn_store::format::tree::Timestamp;

use super::Completion;
use crate::args::{BackupArgs, GlobalArgs};
use crate::render;
use crate::settings;

struct Reporter {
    json: bool,
}

impl BackupProgress for Reporter {
    fn warning(&self, warning: &SourceWarning) {
        if self.json {
            render::json_line(&serde_json::json!({
                "message_type": "warning",
                "path": warning.path.to_string_lossy(),
                "message": warning.message,
            }));
        } else {
            eprintln!("warning: {}: {}", warning.path.display(), warning.message);
        }
    }

    fn file_done(&self, _path: &Path, _bytes: u64) {}
}

/// A time as stored in a snapshot: whole seconds (floored) and the non-negative nanoseconds after.
fn stored_time(time: jiff::Timestamp) -> Timestamp {
    let (seconds, nanos) = (time.as_second(), time.subsec_nanosecond());
    if nanos < 0 {
        Timestamp {
            seconds: seconds - 1,
            nanos: u32::try_from(nanos + 1_000_000_000).unwrap_or(0),
        }
    } else {
        Timestamp {
            seconds,
            nanos: u32::try_from(nanos).unwrap_or(0),
        }
    }
}

/// Runs the backup and prints the summary.
pub fn run(global: &GlobalArgs, args: &BackupArgs) -> Result<Completion> {
    let repository = settings::open_repository(global)?;
    let time = args.time.unwrap_or_else(jiff::Timestamp::now);
    let options = BackupOptions {
        host: args.host.clone().unwrap_or_else(settings::host_name),
        username: settings::user_name(),
        tags: args.tags.clone(),
        time: stored_time(time),
        program_version: env!("CARGO_PKG_VERSION").to_owned(),
        parent: if args.force {
            ParentChoice::None
        } else if let Some(spec) = &args.parent {
            ParentChoice::Snapshot(repository.resolve_snapshot(spec)?.0)
        } else {
            ParentChoice::Latest
        },
    };
    let mut stdin = std::io::stdin();
    let source = if args.stdin {
        BackupSource::Stream {
            name: args.stdin_name.clone().unwrap_or_default(),
            reader: &mut stdin,
        }
    } else {
        BackupSource::Paths(args.paths.clone())
    };
    let reporter = Reporter { json: global.json };
    let outcome = backup::backup(&repository, source, &options, &reporter)?;
    let summary = &outcome.snapshot.summary;
    let requests = outcome.requests;
    if global.json {
        render::json_line(&serde_json::json!({
            "message_type": "summary",
            "snapshot_id": outcome.snapshot_id.to_hex(),
            "files_processed": summary.files,
            "directories_processed": summary.directories,
            "bytes_processed": summary.bytes_processed,
            "bytes_added": summary.bytes_added,
            "blobs_added": summary.blobs_added,
            "data_added": outcome.saver.raw_bytes_added,
            "packs_added": outcome.saver.packs_added,
            "entries_unreadable": summary.entries_unreadable,
            "files_changed": outcome.changed.len(),
            "recovered_packs": outcome.recovered_packs,
            "blobs_rescued": outcome.blobs_rescued,
            "files_unchanged": outcome.files_unchanged,
            "parent": outcome.parent.map(|id| id.to_hex()),
            "entries_skipped": outcome.skipped.len(),
            "requests": {
                "put": requests.puts, "get": requests.gets, "list": requests.lists,
                "head": requests.heads, "delete": requests.deletes,
                "bytes_sent": requests.bytes_sent, "bytes_received": requests.bytes_received,
            },
        }));
    } else if !global.quiet {
        println!(
            "processed {} files ({} unchanged since the parent snapshot, not read), {} directories, {}",
            summary.files,
            outcome.files_unchanged,
            summary.directories,
            render::bytes(summary.bytes_processed)
        );
        println!(
            "added {} to the repository ({} new blobs, {} of new data before compression)",
            render::bytes(summary.bytes_added),
            summary.blobs_added,
            render::bytes(outcome.saver.raw_bytes_added)
        );
        println!("snapshot {} saved", outcome.snapshot_id.short());
    }
    if !outcome.warnings.is_empty() {
        eprintln!(
            "warning: {} source entries could not be read and are missing from snapshot {}",
            outcome.warnings.len(),
            outcome.snapshot_id.short()
        );
    }
    if !outcome.changed.is_empty() {
        eprintln!(
            "warning: {} files changed while being read; snapshot {} holds them as read",
            outcome.changed.len(),
            outcome.snapshot_id.short()
        );
    }
    if outcome.warnings.is_empty() && outcome.changed.is_empty() {
        Ok(Completion::Done)
    } else {
        Ok(Completion::Partial)
    }
}
