//! `cairn copy`: snapshots of another repository (`--from-repo`) copied into this one.

use std::path::Path;

use anyhow::{Result, bail};
use cairn_store::copy::{self, CopiedSnapshot, CopyOptions, CopyProgress, CopyReport};
use cairn_store::{Id, Repository};

use super::{Chooser, Completion, selection};
use crate::args::{CopyArgs, GlobalArgs};
use crate::config::{Config, ConfigError};
use crate::render;
use crate::settings;

/// The one-line notice of a copy that re-chunks.
pub const RECHUNK_NOTICE: &str = "note: the two repositories chunk differently, so every copied \
     file is read whole and re-chunked (slower, and no dedup with the source's chunks); \
     `cairn init --copy-chunker-params-from` makes a destination that chunks like its source";

/// Copies the chosen snapshots.
pub fn run(global: &GlobalArgs, config: Option<&Config>, args: &CopyArgs) -> Result<Completion> {
    let Some(from_repo) = args.from_repo.as_deref() else {
        return Err(ConfigError::usage(
            Path::new(""),
            "--from-repo",
            "no source repository given: use --from-repo or set CAIRN_FROM_REPOSITORY",
        )
        .into());
    };
    let destination = settings::open_repository(global)?;
    let source = settings::open_source_repository(global, from_repo, &args.from)?;
    ensure_distinct(&source, &destination)?;
    let chooser = Chooser::new(&source, selection(&args.selection, config)?);
    let selected = chooser.named_or_selected(&args.snapshots)?;
    let plan = copy::plan(&source, &destination, selected.clone())?;
    if args.dry_run {
        print_plan(global, &plan);
        return Ok(Completion::Done);
    }
    if !plan.to_copy.is_empty() && !copy::chunks_alike(&source, &destination) && !global.quiet {
        eprintln!("{RECHUNK_NOTICE}");
    }
    let progress = Printer { global };
    let report = copy::copy(
        &source,
        &destination,
        selected,
        &CopyOptions {
            host: settings::host_name(),
        },
        &progress,
    )?;
    print_summary(global, &report);
    if args.verify {
        let copies: Vec<Id> = report
            .copied
            .iter()
            .map(|copied| copied.destination)
            .chain(
                report
                    .already_copied
                    .iter()
                    .map(|(_, destination)| *destination),
            )
            .collect();
        let verified = copy::verify_snapshots(&destination, &copies)?;
        if global.json {
            render::json_line(&serde_json::json!({
                "message_type": "verify",
                "snapshots": copies.len(),
                "files_verified": verified.files_verified,
                "bytes_verified": verified.bytes_verified,
                "problems": verified.problems,
            }));
        } else {
            for problem in &verified.problems {
                eprintln!("error: {problem}");
            }
            if !global.quiet {
                outln!(
                    "verified {} of {} in the destination: {} read back",
                    render::count(verified.files_verified, "file", "files"),
                    render::count(copies.len() as u64, "snapshot", "snapshots"),
                    render::bytes(verified.bytes_verified)
                );
            }
        }
        if !verified.problems.is_empty() {
            bail!(
                "the copy does not verify: {} (run `cairn check --read-data` on the destination)",
                render::count(verified.problems.len() as u64, "problem", "problems")
            );
        }
    }
    Ok(Completion::Done)
}

/// Refuses a copy of a repository into itself (a usage error, exit 2).
///
/// # Errors
/// [`ConfigError`] when both have the same repository id.
pub fn ensure_distinct(source: &Repository, destination: &Repository) -> Result<()> {
    if source.config().repository_id == destination.config().repository_id {
        return Err(ConfigError::usage(
            Path::new(""),
            "--from-repo",
            format!(
                "the source and the destination are the same repository ({}): give another --from-repo or --repo",
                &destination.id_hex()[..10]
            ),
        )
        .into());
    }
    Ok(())
}

struct Printer<'a> {
    global: &'a GlobalArgs,
}

impl CopyProgress for Printer<'_> {
    fn snapshot_copied(&self, copied: &CopiedSnapshot) {
        print_copied(self.global, copied);
    }
}

/// Prints one committed copy: a `snapshot_copied` JSON line, or a line of text.
pub fn print_copied(global: &GlobalArgs, copied: &CopiedSnapshot) {
    if global.json {
        render::json_line(&serde_json::json!({
            "message_type": "snapshot_copied",
            "source": copied.source.to_hex(),
            "snapshot_id": copied.destination.to_hex(),
            "time": render::rfc3339(copied.snapshot.time),
            "host": copied.snapshot.host,
            "paths": copied.snapshot.source.names(),
            "blobs_added": copied.added.blobs_added,
            "bytes_added": copied.added.bytes_added,
            "packs_added": copied.added.packs_added,
        }));
    } else if !global.quiet {
        outln!(
            "copied snapshot {} of {} ({}) as {}: {} added",
            copied.source.short(),
            copied.snapshot.host,
            render::local_time(copied.snapshot.time),
            copied.destination.short(),
            render::bytes(copied.added.bytes_added)
        );
    }
}

fn print_plan(global: &GlobalArgs, plan: &copy::CopyPlan) {
    if global.json {
        render::json_line(&serde_json::json!({
            "message_type": "dry_run",
            "to_copy": plan.to_copy.iter().map(|(id, _)| id.to_hex()).collect::<Vec<_>>(),
            "already_copied": plan.already_copied.iter().map(|(source, destination)| serde_json::json!({
                "source": source.to_hex(), "snapshot_id": destination.to_hex(),
            })).collect::<Vec<_>>(),
        }));
        return;
    }
    for (id, snapshot) in &plan.to_copy {
        outln!(
            "would copy snapshot {} of {} ({})",
            id.short(),
            snapshot.host,
            render::local_time(snapshot.time)
        );
    }
    outln!(
        "would copy {}; {} copied already",
        render::count(plan.to_copy.len() as u64, "snapshot", "snapshots"),
        plan.already_copied.len()
    );
}

fn print_summary(global: &GlobalArgs, report: &CopyReport) {
    let added = report
        .copied
        .iter()
        .fold((0u64, 0u64, 0u64), |(blobs, bytes, packs), copied| {
            (
                blobs + copied.added.blobs_added,
                bytes + copied.added.bytes_added,
                packs + copied.added.packs_added,
            )
        });
    if global.json {
        render::json_line(&serde_json::json!({
            "message_type": "summary",
            "snapshots_copied": report.copied.len(),
            "snapshots_already_copied": report.already_copied.len(),
            "rechunked": report.rechunked,
            "trees_reused": report.trees_reused,
            "files_reused": report.files_reused,
            "files_read": report.files_read,
            "bytes_read": report.bytes_read,
            "bytes_read_again": report.bytes_read_again,
            "blobs_added": added.0,
            "bytes_added": added.1,
            "packs_added": added.2,
            "packs_adopted": report.packs_adopted,
        }));
        return;
    }
    if global.quiet {
        return;
    }
    if report.packs_adopted > 0 {
        outln!(
            "adopted {} an interrupted run had stored",
            render::count(report.packs_adopted as u64, "pack", "packs")
        );
    }
    outln!(
        "copied {} ({} copied already): read {} of file content from the source, added {} in {}",
        render::count(report.copied.len() as u64, "snapshot", "snapshots"),
        report.already_copied.len(),
        render::bytes(report.bytes_read),
        render::bytes(added.1),
        render::count(added.2, "pack", "packs")
    );
}
