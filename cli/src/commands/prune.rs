//! `cairn prune`.

use std::time::Duration;

use anyhow::{Result, bail};
use cairn_store::format::lifecycle::SessionId;
use cairn_store::prune::{self, PruneOptions, PruneReport};
use cairn_store::repository::Repository;

use crate::args::{GlobalArgs, PruneArgs, PruneOptionsArgs};
use crate::render;
use crate::settings;

/// Prunes the repository and reports what was freed.
pub fn run(global: &GlobalArgs, args: &PruneArgs) -> Result<()> {
    let repository = settings::open_repository(global)?;
    for text in &args.end_session {
        let Some(session) = SessionId::from_hex(text) else {
            bail!("{text:?} is not a session id (32 hex digits, as prune prints them)");
        };
        repository.ensure_may_delete("prune")?;
        repository.end_session(session, None, 2)?;
    }
    run_on(global, &args.options, args.dry_run, &repository)
}

/// Prunes an open repository (also used by `forget --prune`).
pub fn run_on(
    global: &GlobalArgs,
    args: &PruneOptionsArgs,
    dry_run: bool,
    repository: &Repository,
) -> Result<()> {
    let report = prune::prune(
        repository,
        &PruneOptions {
            max_unused: args.max_unused,
            dry_run,
            lease_ttl: Duration::from_secs(args.lease_ttl.max(1)),
        },
    )?;
    print_report(global, dry_run, &report);
    Ok(())
}

fn print_report(global: &GlobalArgs, dry_run: bool, report: &PruneReport) {
    if global.json {
        render::json_line(&serde_json::json!({
            "message_type": "prune",
            "dry_run": dry_run,
            "generation": report.generation,
            "snapshots": report.snapshots,
            "referenced_blobs": report.referenced_blobs,
            "packs_before": report.packs_before,
            "bytes_before": report.bytes_before,
            "packs_condemned": report.packs_condemned,
            "bytes_condemned": report.bytes_condemned,
            "packs_repacked": report.packs_repacked,
            "bytes_repacked": report.bytes_repacked,
            "packs_resurrected": report.packs_resurrected,
            "packs_deleted": report.packs_deleted,
            "bytes_freed": report.bytes_freed,
            "packs_pending": report.packs_pending,
            "bytes_pending": report.bytes_pending,
            "staging_files_removed": report.staging_files_removed,
            "staging_bytes_removed": report.staging_bytes_removed,
            "staging_files_kept": report.staging_files_kept,
            "index_written": report.index_written,
            "index_removed": report.index_removed,
            "unused_bytes_kept": report.unused_bytes_kept,
            "sessions_ended": report.sessions_ended,
            "blocking_sessions": report.blocking_sessions.iter().map(|blocking| {
                let mut fields = render::waiting_session_json(&blocking.waiting);
                fields["packs_held"] = blocking.packs_held.into();
                fields["bytes_held"] = blocking.bytes_held.into();
                fields
            }).collect::<Vec<_>>(),
            "requests": render::requests_json(&report.requests),
        }));
        return;
    }
    if global.quiet {
        return;
    }
    let verb = if dry_run { "would" } else { "did" };
    outln!(
        "{} {} {} in {} ({})",
        render::count(report.snapshots as u64, "snapshot", "snapshots"),
        if report.snapshots == 1 {
            "references"
        } else {
            "reference"
        },
        render::count(report.referenced_blobs, "blob", "blobs"),
        render::count(report.packs_before, "pack", "packs"),
        render::bytes(report.bytes_before)
    );
    outln!(
        "{verb} condemn {} ({}), {} of them repacked",
        render::count(report.packs_condemned, "pack", "packs"),
        render::bytes(report.bytes_condemned),
        report.packs_repacked
    );
    if report.packs_resurrected > 0 {
        outln!(
            "took back {} that a snapshot needs",
            render::count(
                report.packs_resurrected,
                "condemned pack",
                "condemned packs"
            )
        );
    }
    outln!(
        "{verb} delete {}, freeing {}{}",
        render::count(report.packs_deleted, "pack", "packs"),
        render::bytes(report.bytes_freed),
        if report.bytes_repacked > 0 {
            format!(" (repack wrote {})", render::bytes(report.bytes_repacked))
        } else {
            String::new()
        }
    );
    if report.staging_files_removed > 0 {
        outln!(
            "{verb} remove {} staging files left by interrupted uploads ({})",
            report.staging_files_removed,
            render::bytes(report.staging_bytes_removed)
        );
    }
    if report.staging_files_kept > 0 {
        outln!(
            "kept {} staging files younger than an hour (an upload may still write them; a later prune removes them once abandoned)",
            report.staging_files_kept
        );
    }
    if report.packs_pending > 0 {
        outln!(
            "{} condemned packs ({}) wait for the backup sessions below to end; a later prune \
             deletes them",
            report.packs_pending,
            render::bytes(report.bytes_pending)
        );
    }
    if !report.blocking_sessions.is_empty() {
        let now = jiff::Timestamp::now();
        outln!(
            "prune waits for {} unended backup sessions:",
            report.blocking_sessions.len()
        );
        for blocking in &report.blocking_sessions {
            outln!(
                "  {}; holds {} ({})",
                render::waiting_session(&blocking.waiting, now),
                render::count(blocking.packs_held, "pack", "packs"),
                render::bytes(blocking.bytes_held)
            );
        }
        outln!(
            "  each ends by itself when its backup finishes, or when a backup, prune or check on \
             its machine proves its process gone; if you know a backup is dead (a lost machine, \
             an old cairn), end it: cairn prune --end-session ID"
        );
    }
    if report.sessions_ended > 0 {
        outln!(
            "{} {} sessions of backups on this machine whose process is gone",
            if dry_run { "would end" } else { "ended" },
            report.sessions_ended
        );
    }
}
