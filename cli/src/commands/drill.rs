//! `cairn drill`.

use anyhow::{Context, Result, bail};
use cairn_store::drill::{self, DrillOptions, DrillReport, Sample};

use crate::args::{DrillArgs, GlobalArgs};
use crate::config::{Config, source_tag};
use crate::render;
use crate::settings;
use crate::state::{self, RunState, SourceDrill, StepState};

/// A seed that differs from run to run (printed, so a drill can be repeated with `--seed`).
pub fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    #[allow(clippy::cast_possible_truncation)] // the fast-changing low bits are the ones kept
    let seed = nanos as u64;
    // Short, so it is easy to type back.
    (seed ^ u64::from(std::process::id()).rotate_left(32)) % 1_000_000
}

/// Megabytes (10^6 bytes) per second.
fn megabytes_per_second(report: &DrillReport) -> f64 {
    report.bytes_per_second() / 1_000_000.0
}

fn print_json(report: &DrillReport) {
    let mut summary = serde_json::json!({
        "message_type": "summary",
        "ok": report.is_ok(),
        "snapshot_id": report.snapshot.to_hex(),
        "snapshot_time": render::rfc3339(report.snapshot_time),
        "snapshot_age_seconds": report.snapshot_age.as_secs(),
        "files_in_snapshot": report.files_in_snapshot,
        "bytes_in_snapshot": report.bytes_in_snapshot,
        "files_selected": report.files_selected,
        "bytes_selected": report.bytes_selected,
        "files_restored": report.files_restored,
        "bytes_restored": report.bytes_restored,
        "restore_seconds": report.elapsed.as_secs_f64(),
        "mb_per_second": megabytes_per_second(report),
        "damaged": report.damaged.iter().map(|(path, error)| serde_json::json!({"path": path, "error": error.to_string()})).collect::<Vec<_>>(),
        "scratch": report.scratch.to_string_lossy(),
        "scratch_removed": report.cleanup_failed.is_none(),
    });
    if let Some(sample) = report.sample {
        summary["sample_percent"] = render::percent(sample.fraction).into();
        summary["seed"] = sample.seed.into();
    }
    if let Some(error) = &report.cleanup_failed {
        summary["cleanup_error"] = error.to_string().into();
    }
    render::json_line(&summary);
}

fn print_human(global: &GlobalArgs, report: &DrillReport) {
    for (path, error) in &report.damaged {
        eprintln!("damaged: {path}: {error}");
    }
    if let Some(error) = &report.cleanup_failed {
        eprintln!("error: {error}: remove it by hand");
    }
    if global.quiet {
        return;
    }
    let what = match report.sample {
        None => "the whole snapshot".to_owned(),
        Some(sample) => format!(
            "a {}% sample (--seed {}) of {}",
            render::percent(sample.fraction),
            sample.seed,
            render::count(report.files_in_snapshot, "file", "files")
        ),
    };
    outln!(
        "drill of snapshot {} ({}): {what}",
        report.snapshot.short(),
        render::local_time(report.snapshot_time)
    );
    outln!(
        "  restored and verified {} of {}, {}",
        report.files_restored,
        render::count(report.files_selected, "file", "files"),
        render::bytes(report.bytes_restored)
    );
    outln!(
        "  restore time (RTO): {} at {:.1} MB/s",
        render::span(report.elapsed),
        megabytes_per_second(report)
    );
    outln!(
        "  snapshot age (RPO): {}",
        render::span(report.snapshot_age)
    );
    if report.cleanup_failed.is_none() {
        outln!("  scratch directory {} removed", report.scratch.display());
    }
}

/// What the run state keeps of a drill that started at `started`.
pub fn source_drill(report: &DrillReport, started: jiff::Timestamp) -> SourceDrill {
    SourceDrill {
        time: started,
        ok: report.is_ok(),
        snapshot: report.snapshot.to_hex(),
        rto_seconds: report.elapsed.as_secs_f64(),
        bytes_restored: report.bytes_restored,
        sample_percent: report.sample.map(|sample| render::percent(sample.fraction)),
        error: (!report.is_ok()).then(|| {
            format!(
                "{} of {} restored and verified",
                report.files_restored,
                render::count(report.files_selected, "file", "files")
            )
        }),
    }
}

/// Records a drill run by hand in the run state of `--config` (the drill step, and the
/// source's drill when the snapshot is tagged `source:NAME` of one of its sources).
fn record(
    global: &GlobalArgs,
    config: Option<&Config>,
    snapshot: &cairn_store::format::snapshot::Snapshot,
    report: &DrillReport,
    started: jiff::Timestamp,
) -> Result<()> {
    let (Some(config_path), Some(config)) = (global.config.as_deref(), config) else {
        return Ok(());
    };
    let state_path = config.state_file(config_path, settings::running_as_root());
    let mut run_state = RunState::load(&state_path)?;
    let source = config
        .sources
        .keys()
        .find(|name| snapshot.tags.contains(&source_tag(name)));
    let drilled = source_drill(report, started);
    run_state.drill = Some(StepState {
        time: started,
        ok: report.is_ok(),
        duration_seconds: report.elapsed.as_secs_f64(),
        detail: format!(
            "by hand, snapshot {}{}",
            report.snapshot.short(),
            source.map(|name| format!(" of {name}")).unwrap_or_default()
        ),
        error: drilled.error.clone(),
    });
    if let Some(name) = source {
        run_state.drills.insert(name.clone(), drilled);
    }
    run_state.store(&state_path)
}

/// Prints a drill's report: human lines, or one JSON summary with `--json`.
pub fn print(global: &GlobalArgs, report: &DrillReport) {
    if global.json {
        print_json(report);
    } else {
        print_human(global, report);
    }
}

/// Restores a snapshot (or a sample) into a scratch directory, verifies it and reports.
pub fn run(global: &GlobalArgs, config: Option<&Config>, args: &DrillArgs) -> Result<()> {
    let selection = super::selection(&args.selection, config)?;
    let repository = settings::open_repository(global)?;
    let (snapshot_id, snapshot) =
        super::Chooser::new(&repository, selection).one(&args.snapshot)?;
    let options = DrillOptions {
        scratch_parent: args.scratch.clone().unwrap_or_else(std::env::temp_dir),
        sample: args.sample.map(|fraction| Sample {
            fraction,
            seed: args.seed.unwrap_or_else(random_seed),
        }),
    };
    let started = state::schedule_now()?;
    let report = drill::drill(&repository, snapshot_id, &snapshot, &options)
        .with_context(|| format!("while drilling snapshot {}", snapshot_id.short()))?;
    print(global, &report);
    if let Err(error) = record(global, config, &snapshot, &report, started) {
        eprintln!(
            "warning: the drill is not recorded in the run state: {}",
            render::error_line(&error)
        );
    }
    if !report.is_ok() {
        bail!(
            "drill failed: {} of {} restored and verified, {} damaged{}",
            report.files_restored,
            render::count(report.files_selected as u64, "file", "files"),
            report.damaged.len(),
            if report.cleanup_failed.is_some() {
                ", scratch directory left behind"
            } else {
                ""
            }
        );
    }
    Ok(())
}
