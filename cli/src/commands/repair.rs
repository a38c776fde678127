//! `cairn repair index`, `cairn repair snapshots` and `cairn repair config`.

use std::time::Duration;

use anyhow::{Result, bail};
use cairn_store::backend::object_store::CreateDirectory;
use cairn_store::repair::{
    self, DroppedKind, RepairIndexOptions, RepairIndexReport, RepairSnapshotsOptions,
    RepairSnapshotsReport, SnapshotRepair,
};
use cairn_store::repair_config::{self, RepairConfigOptions};

use crate::args::{
    Compression, GlobalArgs, RepairCommand, RepairConfigArgs, RepairIndexArgs, RepairSnapshotsArgs,
};
use crate::render;
use crate::settings;

/// Runs a repair subcommand.
pub fn run(global: &GlobalArgs, command: &RepairCommand) -> Result<()> {
    match command {
        RepairCommand::Index(args) => index(global, args),
        RepairCommand::Snapshots(args) => snapshots(global, args),
        RepairCommand::Config(args) => config(global, args),
    }
}

fn config(global: &GlobalArgs, args: &RepairConfigArgs) -> Result<()> {
    let backend = settings::backend(global, CreateDirectory::No)?;
    let password = settings::password(global, false)?;
    let options = RepairConfigOptions {
        chunker: settings::chunker_params(&args.layout),
        pack_target_size: args.layout.pack_size_mib.saturating_mul(1024 * 1024),
        compression_level: match global.compression {
            Some(Compression::Level(level)) => level,
            None | Some(Compression::Default) => RepairConfigOptions::default().compression_level,
        },
        client_append_only: global.append_only,
    };
    let outcome = repair_config::repair_config(&backend, &password, &options)?;
    // The proof that counts: the repository opens and lists its snapshots.
    let repository = settings::open_repository(global)?;
    let (snapshots, unreadable) = repository.list_snapshots()?;
    if global.json {
        render::json_line(&serde_json::json!({
            "message_type": "summary",
            "key": outcome.key.to_hex(),
            "proven_by": outcome.proven_by,
            "repository_id": outcome.repository_id,
            "repository_id_kept": outcome.repository_id_kept,
            "largest_data_chunk": outcome.largest_data_chunk,
            "damaged_config_kept": outcome.damaged_config_kept,
            "snapshots": snapshots.len(),
            "unreadable_snapshots": unreadable.len(),
        }));
        return Ok(());
    }
    if global.quiet {
        return Ok(());
    }
    if let Some(aside) = &outcome.damaged_config_kept {
        outln!("copied the damaged config to {aside}");
    }
    outln!(
        "rebuilt the config with the master secret of key {}{}; {} snapshots readable{}",
        outcome.key.short(),
        outcome
            .proven_by
            .as_ref()
            .map(|name| format!(" (it opens {name})"))
            .unwrap_or_default(),
        snapshots.len(),
        if unreadable.is_empty() {
            String::new()
        } else {
            format!(", {} unreadable (run `cairn check`)", unreadable.len())
        }
    );
    if !outcome.repository_id_kept {
        outln!(
            "the repository has a new id, so its local cache starts empty (the old one can be deleted)"
        );
    }
    Ok(())
}

fn index(global: &GlobalArgs, args: &RepairIndexArgs) -> Result<()> {
    let repository = settings::open_repository(global)?;
    let report = repair::repair_index(
        &repository,
        &RepairIndexOptions {
            lease_ttl: Duration::from_secs(args.lease_ttl.max(1)),
        },
    )?;
    print_index_report(global, &report);
    Ok(())
}

fn print_index_report(global: &GlobalArgs, report: &RepairIndexReport) {
    if global.json {
        render::json_line(&serde_json::json!({
            "message_type": "summary",
            "packs_read": report.packs_read,
            "packs_unreadable": report.packs_unreadable.iter().map(|pack| serde_json::json!({
                "pack": pack.name, "reason": pack.reason, "entries_kept": pack.entries_kept,
            })).collect::<Vec<_>>(),
            "packs_condemned": report.packs_condemned,
            "blobs_indexed": report.blobs_indexed,
            "index_written": report.index_written,
            "index_removed": report.index_removed,
            "index_kept": report.index_kept,
        }));
        return;
    }
    for pack in &report.packs_unreadable {
        if pack.entries_kept {
            eprintln!(
                "warning: pack {} cannot be read ({}); its entries were kept from the old index: run `cairn check --read-data`",
                pack.name, pack.reason
            );
        } else {
            eprintln!(
                "warning: pack {} cannot be read ({}) and no index listed it as it is: left out of \
                 the index; `cairn check` says whether a snapshot misses data from it (then \
                 `cairn repair snapshots`); nothing else can use the pack and no cairn command \
                 deletes it: remove it by hand for the space",
                pack.name, pack.reason
            );
        }
    }
    if global.quiet {
        return;
    }
    outln!(
        "read the trailers of {} ({} unreadable); indexed {} in {}",
        render::count(report.packs_read, "pack", "packs"),
        report.packs_unreadable.len(),
        render::count(report.blobs_indexed, "blob", "blobs"),
        render::count(
            report.index_written,
            "new index object",
            "new index objects"
        )
    );
    if report.packs_condemned > 0 {
        outln!(
            "{} of those packs are condemned by prune and stay so (the next prune deletes them)",
            report.packs_condemned
        );
    }
    if report.index_kept > 0 {
        outln!(
            "append-only: kept {} old index objects beside the new ones",
            report.index_kept
        );
    } else {
        outln!("removed {} old index objects", report.index_removed);
    }
}

fn snapshots(global: &GlobalArgs, args: &RepairSnapshotsArgs) -> Result<()> {
    let repository = settings::open_repository(global)?;
    let report = repair::repair_snapshots(
        &repository,
        &RepairSnapshotsOptions {
            snapshots: args.snapshots.clone(),
            read_data: args.read_data,
            forget: args.forget,
            dry_run: args.dry_run,
            host: settings::host_name(),
            program_version: env!("CARGO_PKG_VERSION").to_owned(),
        },
    )?;
    print_snapshots_report(global, args, &report);
    let unrepaired = report
        .damaged
        .iter()
        .filter(|entry| entry.unrepairable.is_some())
        .count();
    if !args.dry_run && (unrepaired > 0 || !report.unreadable_snapshots.is_empty()) {
        bail!(
            "{} snapshots could not be repaired and {} cannot be read (listed above): remove them with `cairn forget ID...` when you no longer need what is left of them",
            unrepaired,
            report.unreadable_snapshots.len()
        );
    }
    Ok(())
}

fn kind_name(kind: DroppedKind) -> &'static str {
    match kind {
        DroppedKind::File => "file",
        DroppedKind::Directory => "directory",
    }
}

/// Repaired snapshots written by this run (or that a dry run would write).
fn written(report: &RepairSnapshotsReport) -> usize {
    report
        .damaged
        .iter()
        .filter(|entry| entry.unrepairable.is_none() && !entry.already_repaired)
        .count()
}

fn snapshot_json(entry: &SnapshotRepair) -> serde_json::Value {
    serde_json::json!({
        "message_type": "snapshot",
        "snapshot_id": entry.original.to_hex(),
        "time": render::rfc3339(entry.snapshot.time),
        "host": entry.snapshot.host,
        "paths": entry.snapshot.source.names(),
        "dropped": entry.dropped.iter().map(|dropped| serde_json::json!({
            "path": dropped.path, "kind": kind_name(dropped.kind), "size": dropped.size,
            "object": dropped.object,
        })).collect::<Vec<_>>(),
        "repaired_snapshot_id": entry.repaired.map(|id| id.to_hex()),
        "already_repaired": entry.already_repaired,
        "unrepairable": entry.unrepairable,
        "forgotten": entry.forgotten,
    })
}

fn print_snapshots_report(
    global: &GlobalArgs,
    args: &RepairSnapshotsArgs,
    report: &RepairSnapshotsReport,
) {
    if global.json {
        for entry in &report.damaged {
            render::json_line(&snapshot_json(entry));
        }
        render::json_line(&serde_json::json!({
            "message_type": "summary",
            "dry_run": args.dry_run,
            "snapshots_checked": report.snapshots_checked,
            "snapshots_damaged": report.damaged.len(),
            "snapshots_written": written(report),
            "snapshots_forgotten": report.damaged.iter().filter(|entry| entry.forgotten).count(),
            "unreadable_snapshots": report.unreadable_snapshots.iter().map(|(name, reason)| serde_json::json!({"object": name, "reason": reason})).collect::<Vec<_>>(),
            "damaged_index": report.damaged_index,
            "packs_read": report.packs_read,
            "bytes_read": report.bytes_read,
            "trees_written": report.trees_written,
            "blobs_copied": report.blobs_copied,
            "bytes_added": report.bytes_added,
        }));
        return;
    }
    for name in &report.damaged_index {
        eprintln!(
            "warning: index object {name} cannot be read; the blobs only it lists count as lost: run `cairn repair index` first"
        );
    }
    for (name, reason) in &report.unreadable_snapshots {
        eprintln!(
            "error: snapshot object {name} cannot be read: {reason} (remove it with `cairn forget {}`)",
            name.rsplit('/').next().unwrap_or(name)
        );
    }
    for entry in &report.damaged {
        if let Some(reason) = &entry.unrepairable {
            eprintln!(
                "error: snapshot {} cannot be repaired: {reason}",
                entry.original.short()
            );
        }
    }
    if global.quiet {
        return;
    }
    for entry in &report.damaged {
        outln!(
            "snapshot {} of {} on {} ({}): {} lost",
            entry.original.short(),
            render::local_time(entry.snapshot.time),
            entry.snapshot.host,
            entry.snapshot.source.names().join(", "),
            render::count(entry.dropped.len() as u64, "entry", "entries")
        );
        for dropped in &entry.dropped {
            outln!(
                "  {} {} {} (needs {})",
                if args.dry_run {
                    "would drop"
                } else {
                    "dropped"
                },
                kind_name(dropped.kind),
                dropped.path,
                dropped.object
            );
        }
        match (entry.repaired, entry.already_repaired) {
            (Some(id), true) => outln!("  already repaired as snapshot {}", id.short()),
            (Some(id), false) => outln!("  wrote repaired snapshot {}", id.short()),
            (None, _) if entry.unrepairable.is_none() && args.dry_run => {
                outln!("  would write a repaired snapshot tagged `repaired`");
            }
            (None, _) => {}
        }
        if entry.forgotten {
            outln!("  removed the original snapshot {}", entry.original.short());
        }
    }
    outln!(
        "checked {} snapshots{}: {} damaged, {} repaired snapshots {}",
        report.snapshots_checked,
        if args.read_data {
            format!(
                ", read and verified {} packs ({})",
                report.packs_read,
                render::bytes(report.bytes_read)
            )
        } else {
            String::new()
        },
        report.damaged.len(),
        written(report),
        if args.dry_run {
            "would be written"
        } else {
            "written"
        }
    );
}
