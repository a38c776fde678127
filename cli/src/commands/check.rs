//! `cairn check`.

use anyhow::{Result, bail};
use cairn_store::check::{self, CheckOptions, CheckProgress, CheckReport, DataSelection};
use cairn_store::sweep::Subset;

use crate::args::{CheckArgs, GlobalArgs};
use crate::config::Config;
use crate::progress::{Meter, Total};
use crate::render;
use crate::settings;
use crate::state::{self, RunState, StepState};

/// The data level the arguments ask for. A random share gets a seed from the clock: each run
/// samples other packs.
pub fn data_selection(args: &CheckArgs) -> DataSelection {
    if args.read_data {
        return DataSelection::All;
    }
    if let Some(days) = args.read_data_rotate {
        return DataSelection::Rotate { days };
    }
    match args.read_data_subset {
        None => DataSelection::Structure,
        Some(Subset::Slice(slice)) => DataSelection::Slice(slice),
        Some(Subset::Fraction(fraction)) => DataSelection::Sample {
            fraction,
            seed: clock_seed(),
        },
    }
}

/// A seed that differs from run to run.
fn clock_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    // The low bits change fastest; truncation keeps them.
    #[allow(clippy::cast_possible_truncation)]
    let seed = nanos as u64;
    seed ^ u64::from(std::process::id()).rotate_left(32)
}

/// The level's name and its parameter, for the summary.
fn level(selection: DataSelection) -> (&'static str, Option<String>) {
    match selection {
        DataSelection::Structure => ("structure", None),
        DataSelection::All => ("read-data", None),
        DataSelection::Sample { fraction, .. } => (
            "read-data-subset",
            Some(format!("{}%", render::percent(fraction))),
        ),
        DataSelection::Slice(slice) => (
            "read-data-subset",
            Some(format!("{}/{}", slice.part(), slice.of())),
        ),
        DataSelection::Rotate { days } => ("read-data-rotate", Some(days.to_string())),
    }
}

/// Pack downloads drawn on a [`Meter`].
struct CheckMeter(Meter);

impl CheckProgress for CheckMeter {
    fn packs_chosen(&self, packs: u64, bytes: u64) {
        if packs > 0 {
            self.0.set_total(bytes, Total::Exact);
        }
    }

    fn pack_done(&self, bytes: u64) {
        self.0.add_file();
        self.0.add_bytes(bytes);
    }
}

fn print_json(report: &CheckReport, selection: DataSelection) {
    let (level, parameter) = level(selection);
    let mut summary = serde_json::json!({
        "message_type": "summary",
        "ok": report.is_ok(),
        "level": level,
        "snapshots": report.snapshots,
        "trees": report.trees,
        "packs": report.packs,
        "packs_selected": report.packs_selected,
        "packs_read": report.packs_read,
        "bytes_read": report.bytes_read,
        "damaged": report.damaged.iter().map(|(object, reason)| serde_json::json!({"object": object, "reason": reason})).collect::<Vec<_>>(),
        "affected": report.affected.iter().map(|affected| serde_json::json!({"snapshot": affected.snapshot.to_hex(), "path": affected.path, "object": affected.object})).collect::<Vec<_>>(),
        "unindexed_packs": report.unindexed_packs,
        "staging_files": report.staging_files.iter().map(|file| serde_json::json!({"name": file.name, "size": file.size, "age_seconds": file.age.as_secs(), "abandoned": file.is_abandoned()})).collect::<Vec<_>>(),
    });
    if let Some(parameter) = parameter {
        summary["level_parameter"] = parameter.into();
    }
    if let Some(coverage) = report.coverage {
        summary["verified_within_days"] = serde_json::json!({
            "days": coverage.days,
            "packs": coverage.packs_verified,
            "bytes": coverage.bytes_verified,
            "packs_total": coverage.packs_total,
            "bytes_total": coverage.bytes_total,
            "fraction": coverage.fraction(),
        });
    }
    if let Some(reason) = &report.history_not_saved {
        summary["history_not_saved"] = reason.clone().into();
    }
    render::json_line(&summary);
}

fn print_human(global: &GlobalArgs, report: &CheckReport, selection: DataSelection) {
    // Each damaged object once, the snapshot paths that need it below it; then objects that
    // paths need but that are only known as missing from the trees' point of view.
    let affects = |object: &str| {
        for affected in report
            .affected
            .iter()
            .filter(|affected| affected.object == object)
        {
            eprintln!(
                "  affects snapshot {} path {}",
                affected.snapshot.short(),
                affected.path
            );
        }
    };
    for (object, reason) in &report.damaged {
        eprintln!(
            "damaged: {}: {}",
            render::shorten_ids(object),
            render::shorten_ids(reason)
        );
        affects(object);
    }
    let mut needed: Vec<&str> = report
        .affected
        .iter()
        .map(|affected| affected.object.as_str())
        .filter(|object| !report.damaged.contains_key(*object))
        .collect();
    needed.sort_unstable();
    needed.dedup();
    for object in needed {
        eprintln!("unreadable: {}", render::shorten_ids(object));
        affects(object);
    }
    if let Some(reason) = &report.history_not_saved {
        eprintln!(
            "warning: could not remember which packs were verified ({reason}); the next sweep may read them again"
        );
    }
    if global.quiet {
        return;
    }
    if !report.unindexed_packs.is_empty() {
        outln!(
            "{} in no index and not read: an interrupted backup leaves such packs, \
             and the next backup indexes the ones whose trailer reads; `cairn repair index` reads \
             them all now and names those that do not",
            render::count(report.unindexed_packs.len() as u64, "pack is", "packs are")
        );
    }
    if !report.staging_files.is_empty() {
        let bytes = report.staging_files.iter().map(|file| file.size).sum();
        let young = report
            .staging_files
            .iter()
            .filter(|file| !file.is_abandoned())
            .count();
        let when = if young > 0 {
            format!(" ({young} younger than an hour: an upload may still be writing them)")
        } else {
            String::new()
        };
        outln!(
            "{} staging files left by interrupted uploads ({}): `cairn prune` removes them once an hour old{when}",
            report.staging_files.len(),
            render::bytes(bytes)
        );
    }
    let data = if selection == DataSelection::Structure {
        String::new()
    } else {
        let (_, parameter) = level(selection);
        let which = match selection {
            DataSelection::All => String::new(),
            DataSelection::Rotate { days } => format!(" ({days}-day rotation)"),
            _ => format!(" (subset {})", parameter.unwrap_or_default()),
        };
        format!(
            ", read and verified {} of them{which} ({})",
            report.packs_read,
            render::bytes(report.bytes_read)
        )
    };
    outln!(
        "checked {}, {}, {}{data}",
        render::count(report.snapshots as u64, "snapshot", "snapshots"),
        render::count(report.trees as u64, "tree", "trees"),
        render::count(report.packs as u64, "pack", "packs"),
    );
    if let Some(coverage) = report.coverage {
        outln!(
            "{:.1}% of the pack bytes ({} of {} packs) verified within the last {} days",
            coverage.fraction() * 100.0,
            coverage.packs_verified,
            coverage.packs_total,
            coverage.days
        );
    }
}

/// Checks an open repository at the level `args` ask for and prints the report (damage as
/// objects → snapshots → paths); damage is in the report, not an error (also used by `cairn run`).
///
/// # Errors
/// The check could not run (backend, cache).
pub fn perform(
    global: &GlobalArgs,
    repository: &cairn_store::Repository,
    args: &CheckArgs,
) -> Result<(CheckReport, DataSelection)> {
    let selection = data_selection(args);
    if matches!(selection, DataSelection::Rotate { .. }) && !repository.cache().is_persistent() {
        eprintln!(
            "warning: no local cache file (--no-cache, or another cairn holds it): this sweep cannot remember what it verified, so every such run reads the same packs"
        );
    }
    let report = check::check_with_progress(
        repository,
        CheckOptions { data: selection },
        &CheckMeter(Meter::new(global, "packs", "verified")),
    )?;
    if global.json {
        print_json(&report, selection);
    } else {
        print_human(global, &report, selection);
    }
    Ok((report, selection))
}

/// The level's name and parameter as one phrase: `structure`, `read-data-rotate 30`.
pub fn level_phrase(selection: DataSelection) -> String {
    match level(selection) {
        (name, Some(parameter)) => format!("{name} {parameter}"),
        (name, None) => name.to_owned(),
    }
}

/// Records a check run by hand in the run state of `--config`.
fn record(global: &GlobalArgs, config: Option<&Config>, step: StepState) -> Result<()> {
    let (Some(config_path), Some(config)) = (global.config.as_deref(), config) else {
        return Ok(());
    };
    let state_path = config.state_file(config_path, settings::running_as_root());
    let mut run_state = RunState::load(&state_path)?;
    run_state.check = Some(step);
    run_state.store(&state_path)
}

/// Checks the repository and reports damage as objects → snapshots → paths; with `--config`,
/// the check is recorded in the run state.
pub fn run(global: &GlobalArgs, config: Option<&Config>, args: &CheckArgs) -> Result<()> {
    let repository = settings::open_repository(global)?;
    let started = state::schedule_now()?;
    let clock = std::time::Instant::now();
    let outcome = perform(global, &repository, args);
    let step = match &outcome {
        Ok((report, selection)) => StepState {
            time: started,
            ok: report.is_ok(),
            duration_seconds: clock.elapsed().as_secs_f64(),
            detail: format!("by hand, {}", level_phrase(*selection)),
            error: (!report.is_ok()).then(|| damage_summary(report)),
        },
        Err(error) => StepState {
            time: started,
            ok: false,
            duration_seconds: clock.elapsed().as_secs_f64(),
            detail: "by hand, not completed".into(),
            error: Some(render::error_line(error)),
        },
    };
    if let Err(error) = record(global, config, step) {
        eprintln!(
            "warning: the check is not recorded in the run state: {}",
            render::error_line(&error)
        );
    }
    let (report, _) = outcome?;
    if !report.is_ok() {
        bail!("{}", damage_summary(&report));
    }
    if !global.quiet && !global.json {
        outln!("no errors found");
    }
    Ok(())
}

/// The one-line verdict of a check that found damage: how many objects, and how many snapshot
/// paths they affect (the final error, and the run state of `check` and `cairn run`).
pub fn damage_summary(report: &cairn_store::check::CheckReport) -> String {
    format!(
        "repository damaged: {}, {} affected",
        render::count(report.damaged.len() as u64, "object", "objects"),
        render::count(
            report.affected.len() as u64,
            "snapshot path",
            "snapshot paths"
        )
    )
}
