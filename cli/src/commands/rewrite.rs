//! `cairn rewrite`: remove paths from the chosen snapshots.

use std::path::Path;

use anyhow::Result;
use cairn_store::exclude::{ExcludeRules, ExcludeSpec};
use cairn_store::rewrite::{
    self, RemovedKind, RewriteOptions, RewriteOutcome, RewriteReport, SnapshotRewrite,
};

use crate::args::{GlobalArgs, RewriteArgs};
use crate::commands::backup::patterns_with_files;
use crate::config::{Config, ConfigError};
use crate::render;
use crate::settings;

/// Rewrites the chosen snapshots (default: every selected one) without what the patterns
/// match, and reports each.
///
/// # Errors
/// No snapshot chosen (exit 20), a refused snapshot (exit 2, nothing written), append-only with
/// `--forget` (exit 13), or what the library fails with.
pub fn run(global: &GlobalArgs, config: Option<&Config>, args: &RewriteArgs) -> Result<()> {
    let rules = ExcludeRules::from_spec(&ExcludeSpec {
        patterns: patterns_with_files(&args.excludes, &args.exclude_files)?,
        patterns_ignoring_case: patterns_with_files(&args.iexcludes, &args.iexclude_files)?,
        ..ExcludeSpec::default()
    })
    .map_err(|error| usage(error.to_string()))?;
    let selection = super::selection(&args.selection, config)?;
    let repository = settings::open_repository(global)?;
    let chooser = super::Chooser::new(&repository, selection.clone());
    let chosen = chooser.named_or_selected(&args.snapshots)?;
    if chosen.is_empty() {
        return Err(super::NoMatch(format!("no snapshot among {}", selection.describe())).into());
    }
    let report = rewrite::rewrite_snapshots(
        &repository,
        &chosen,
        &rules,
        &RewriteOptions {
            forget: args.forget,
            dry_run: args.dry_run,
            host: settings::host_name(),
            program_version: env!("CARGO_PKG_VERSION").to_owned(),
        },
    )
    .map_err(|error| match error {
        // A refused snapshot: the patterns are the problem (exit 2), nothing was written.
        cairn_store::Error::Usage(message) => usage(message),
        other => other.into(),
    })?;
    print_report(global, args.dry_run, &report);
    Ok(())
}

/// A usage error (exit 2) with no file position.
fn usage(message: String) -> anyhow::Error {
    ConfigError::usage(Path::new(""), "", message).into()
}

fn kind_name(kind: RemovedKind) -> &'static str {
    match kind {
        RemovedKind::File => "file",
        RemovedKind::Directory => "directory",
        RemovedKind::Other => "other",
    }
}

fn action(outcome: &RewriteOutcome) -> &'static str {
    match outcome {
        RewriteOutcome::Unchanged => "unchanged",
        RewriteOutcome::WouldRewrite => "would_rewrite",
        RewriteOutcome::Rewritten { .. } => "rewritten",
        RewriteOutcome::Vanished => "vanished",
    }
}

fn snapshot_json(entry: &SnapshotRewrite) -> serde_json::Value {
    let (new_id, already_written, forgotten) = match entry.outcome {
        RewriteOutcome::Rewritten {
            new_id,
            already_written,
            forgotten,
        } => (Some(new_id.to_hex()), already_written, forgotten),
        _ => (None, false, false),
    };
    serde_json::json!({
        "message_type": "snapshot",
        "snapshot_id": entry.original.to_hex(),
        "time": render::rfc3339(entry.snapshot.time),
        "host": entry.snapshot.host,
        "paths": entry.snapshot.source.names(),
        "action": action(&entry.outcome),
        "removed": entry.removed.iter().map(|removed| serde_json::json!({
            "path": removed.path, "kind": kind_name(removed.kind), "files": removed.files,
            "directories": removed.directories, "bytes": removed.bytes,
        })).collect::<Vec<_>>(),
        "new_snapshot_id": new_id,
        "already_written": already_written,
        "forgotten": forgotten,
    })
}

fn print_report(global: &GlobalArgs, dry_run: bool, report: &RewriteReport) {
    let changed = report
        .snapshots
        .iter()
        .filter(|entry| {
            matches!(
                entry.outcome,
                RewriteOutcome::WouldRewrite | RewriteOutcome::Rewritten { .. }
            )
        })
        .count();
    if global.json {
        for entry in &report.snapshots {
            render::json_line(&snapshot_json(entry));
        }
        render::json_line(&serde_json::json!({
            "message_type": "summary",
            "dry_run": dry_run,
            "snapshots_chosen": report.snapshots.len(),
            "snapshots_rewritten": changed,
            "snapshots_forgotten": report.snapshots.iter().filter(|entry| matches!(entry.outcome, RewriteOutcome::Rewritten { forgotten: true, .. })).count(),
            "trees_written": report.trees_written,
            "bytes_added": report.bytes_added,
        }));
        return;
    }
    render::warn_vanished(
        report
            .snapshots
            .iter()
            .filter(|entry| entry.outcome == RewriteOutcome::Vanished)
            .map(|entry| &entry.original),
        "not rewritten",
    );
    if global.quiet {
        return;
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    for entry in &report.snapshots {
        if entry.outcome == RewriteOutcome::Unchanged {
            outln!(
                "snapshot {}: nothing matches, left as it is",
                entry.original.short()
            );
            continue;
        }
        outln!(
            "snapshot {} of {} on {} ({}):",
            entry.original.short(),
            render::local_time(entry.snapshot.time),
            entry.snapshot.host,
            entry.snapshot.source.names().join(", ")
        );
        for removed in &entry.removed {
            let held = match removed.kind {
                RemovedKind::Directory => format!(
                    " ({}, {})",
                    render::count(removed.files, "file", "files"),
                    render::bytes(removed.bytes)
                ),
                RemovedKind::File => format!(" ({})", render::bytes(removed.bytes)),
                RemovedKind::Other => String::new(),
            };
            outln!(
                "  {verb} {} {}{held}",
                kind_name(removed.kind),
                removed.path
            );
        }
        if let RewriteOutcome::Rewritten {
            new_id,
            already_written,
            forgotten,
        } = entry.outcome
        {
            outln!(
                "  {} snapshot {}{}",
                if already_written {
                    "already rewritten as"
                } else {
                    "wrote"
                },
                new_id.short(),
                if forgotten {
                    "; removed the original"
                } else {
                    "; the original is kept"
                }
            );
        }
    }
    let forgotten = report.snapshots.iter().any(|entry| {
        matches!(
            entry.outcome,
            RewriteOutcome::Rewritten {
                forgotten: true,
                ..
            }
        )
    });
    outln!(
        "{} {}, {} unchanged{}",
        render::count(changed as u64, "snapshot", "snapshots"),
        if dry_run {
            "would be rewritten"
        } else {
            "rewritten"
        },
        report
            .snapshots
            .iter()
            .filter(|entry| entry.outcome == RewriteOutcome::Unchanged)
            .count(),
        if forgotten {
            ": `cairn prune --max-unused 0%` deletes what only the originals used (a plain \
             prune may keep it inside packs still mostly used)"
        } else {
            ""
        }
    );
}
