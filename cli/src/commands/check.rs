//! `cairn check`.

use anyhow::{Result, bail};
use cairn_store::check::{self, CheckOptions};

use crate::args::{CheckArgs, GlobalArgs};
use crate::render;
use crate::settings;

/// Checks the repository and reports damage as objects → snapshots → paths.
pub fn run(global: &GlobalArgs, args: &CheckArgs) -> Result<()> {
    let repository = settings::open_repository(global)?;
    let report = check::check(
        &repository,
        CheckOptions {
            read_data: args.read_data,
        },
    )?;
    if global.json {
        render::json_line(&serde_json::json!({
            "message_type": "summary",
            "ok": report.is_ok(),
            "snapshots": report.snapshots,
            "trees": report.trees,
            "packs": report.packs,
            "packs_read": report.packs_read,
            "bytes_read": report.bytes_read,
            "damaged": report.damaged.iter().map(|(object, reason)| serde_json::json!({"object": object, "reason": reason})).collect::<Vec<_>>(),
            "affected": report.affected.iter().map(|affected| serde_json::json!({"snapshot": affected.snapshot.to_hex(), "path": affected.path, "object": affected.object})).collect::<Vec<_>>(),
            "unindexed_packs": report.unindexed_packs,
        }));
    } else {
        for (object, reason) in &report.damaged {
            eprintln!("damaged: {object}: {reason}");
        }
        for affected in &report.affected {
            eprintln!(
                "  affects snapshot {} path {} (needs {})",
                affected.snapshot.short(),
                affected.path,
                affected.object
            );
        }
        if !global.quiet {
            if !report.unindexed_packs.is_empty() {
                println!(
                    "{} packs are in no index (left by an interrupted backup; the next backup reuses them)",
                    report.unindexed_packs.len()
                );
            }
            println!(
                "checked {} snapshots, {} trees, {} packs{}",
                report.snapshots,
                report.trees,
                report.packs,
                if args.read_data {
                    format!(
                        ", read and verified {} packs ({})",
                        report.packs_read,
                        render::bytes(report.bytes_read)
                    )
                } else {
                    String::new()
                }
            );
        }
    }
    if !report.is_ok() {
        bail!(
            "repository damaged: {} objects, {} snapshot paths affected",
            report.damaged.len(),
            report.affected.len()
        );
    }
    if !global.quiet && !global.json {
        println!("no errors found");
    }
    Ok(())
}
