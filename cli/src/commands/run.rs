//! `cairn run`: the whole nightly job of a config. Global `before` hooks; open the repository;
//! per source its `before` hooks, the backup and its `after` (or `on_failure`) hooks, a failing
//! source never stopping the others; retention per source and one prune; the check slice and the
//! drill when due; global `after` or `on_failure` hooks; the run state and the metrics file; a
//! summary. Orchestration only: the backup, retention, check and drill are the commands' and the
//! library's.

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use cairn_store::Repository;
use cairn_store::drill::{self as store_drill, DrillOptions, Sample};
use cairn_store::forget::{ForgetOptions, plan_forget};
use cairn_store::retention::{GroupBy, RetentionPolicy, SnapshotFilter, TagSet};
use jiff::Timestamp;

use super::Completion;
use super::backup::{self, BackupReport, BackupRequest, RequestSource};
use super::run_copies::{self, DestinationRun};
use super::status::required_config;
use crate::args::{CheckArgs, GlobalArgs, PruneOptionsArgs, RunArgs};
use crate::config::{CheckData, Config, ConfigError, SourceConfig, SourceKind, source_tag};
use crate::render;
use crate::schedule::{self, DrillSources, Due};
use crate::settings;
use crate::state::{self, RunState, SourceState, StepState};

/// Runs one list of hook commands in order with `sh -c`, their output on stderr (stdout stays
/// for cairn's own lines); stops at the first that fails.
fn run_hooks(commands: &[String], hook: &str, environment: &[(&str, String)]) -> Result<()> {
    for command in commands {
        let status = Command::new("sh")
            .arg("-c")
            .arg(command)
            .env("CAIRN_HOOK", hook)
            .envs(environment.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::io::stderr()))
            .status()
            .with_context(|| format!("cannot start {hook} hook {command:?}"))?;
        if !status.success() {
            bail!("{hook} hook {command:?} failed ({status})");
        }
    }
    Ok(())
}

/// Runs the `on_failure` hooks; their own failure is only reported.
fn run_failure_hooks(commands: &[String], environment: &[(&str, String)]) {
    if let Err(error) = run_hooks(commands, "on_failure", environment) {
        eprintln!("warning: {}", render::error_line(&error));
    }
}

/// The backup a source asks for.
fn request(config: &Config, name: &str, source: &SourceConfig) -> BackupRequest {
    let mut request = BackupRequest {
        source: RequestSource::Paths(Vec::new()),
        tags: config.tags_of(name, source),
        host: config.defaults.host.clone(),
        force: false,
        parent: None,
        time: None,
        excludes: Vec::new(),
        exclude_files: Vec::new(),
        exclude_if_present: Vec::new(),
        one_file_system: false,
        iexcludes: Vec::new(),
        iexclude_files: Vec::new(),
        exclude_caches: false,
        exclude_larger_than: None,
        files_from: Vec::new(),
        files_from_raw: Vec::new(),
    };
    match &source.kind {
        SourceKind::Paths {
            paths,
            exclude,
            exclude_file,
            exclude_if_present,
            one_file_system,
            iexclude,
            iexclude_file,
            exclude_caches,
            exclude_larger_than,
            files_from,
            files_from_raw,
        } => {
            request.source = RequestSource::Paths(paths.clone());
            request.excludes.clone_from(exclude);
            request.exclude_files.clone_from(exclude_file);
            request.exclude_if_present.clone_from(exclude_if_present);
            request.one_file_system = *one_file_system;
            request.iexcludes.clone_from(iexclude);
            request.iexclude_files.clone_from(iexclude_file);
            request.exclude_caches = *exclude_caches;
            request.exclude_larger_than = *exclude_larger_than;
            request.files_from.clone_from(files_from);
            request.files_from_raw.clone_from(files_from_raw);
        }
        SourceKind::Command {
            command,
            stream_name,
        } => {
            request.source = RequestSource::Command {
                command: command.clone(),
                name: stream_name.clone(),
            };
        }
    }
    request
}

/// What happened to one source in this run.
struct SourceRun {
    name: String,
    started: Timestamp,
    duration_seconds: f64,
    /// The backup's report (the snapshot exists even when an `after` hook then failed).
    report: Option<BackupReport>,
    /// Why the source failed.
    error: Option<String>,
}

impl SourceRun {
    fn ok(&self) -> bool {
        self.error.is_none()
    }

    /// The source's new state, given its previous one.
    fn state(&self, previous: Option<&SourceState>) -> SourceState {
        let succeeded = self.report.as_ref().filter(|_| self.ok());
        SourceState {
            last_attempt: self.started,
            last_duration_seconds: self.duration_seconds,
            last_ok: self.ok(),
            last_error: self.error.clone(),
            last_success: if succeeded.is_some() {
                Some(self.started)
            } else {
                previous.and_then(|previous| previous.last_success)
            },
            last_snapshot: succeeded.map_or_else(
                || previous.and_then(|previous| previous.last_snapshot.clone()),
                |report| Some(report.snapshot_id.to_hex()),
            ),
            bytes_processed: succeeded.map_or_else(
                || previous.map_or(0, |previous| previous.bytes_processed),
                |report| report.bytes_processed,
            ),
            bytes_added: succeeded.map_or_else(
                || previous.map_or(0, |previous| previous.bytes_added),
                |report| report.bytes_added,
            ),
            last_unreadable: succeeded.map_or(0, |report| report.unreadable),
            last_changed: succeeded.map_or(0, |report| report.changed),
            size_drops: succeeded.map_or_else(
                || previous.map_or_else(Vec::new, |previous| previous.size_drops.clone()),
                |report| {
                    report
                        .size_drops
                        .iter()
                        .map(|finding| {
                            format!(
                                "{}: {} now, {} before",
                                finding.path.display(),
                                render::bytes(finding.bytes),
                                render::bytes(finding.previous_bytes)
                            )
                        })
                        .collect()
                },
            ),
        }
    }
}

/// A failure reported before any backup (global hook, repository): every source fails with it.
fn failed_before_start(name: &str, error: &str, started: Timestamp) -> SourceRun {
    SourceRun {
        name: name.to_owned(),
        started,
        duration_seconds: 0.0,
        report: None,
        error: Some(error.to_owned()),
    }
}

/// One source: before hooks, backup, after hooks; on any failure its `on_failure` hooks.
fn run_source(
    repository: &Repository,
    nested: &GlobalArgs,
    config: &Config,
    name: &str,
    source: &SourceConfig,
    started: Timestamp,
) -> SourceRun {
    let clock = Instant::now();
    let environment = vec![("CAIRN_SOURCE", name.to_owned())];
    let mut report = None;
    let outcome = run_hooks(&source.hooks.before, "before", &environment)
        .and_then(|()| backup::perform(repository, nested, &request(config, name, source)))
        .and_then(|backup_report| {
            let mut after_environment = environment.clone();
            after_environment.push(("CAIRN_SNAPSHOT", backup_report.snapshot_id.to_hex()));
            report = Some(backup_report);
            run_hooks(&source.hooks.after, "after", &after_environment)
        });
    let error = outcome.err().map(|error| render::error_line(&error));
    if let Some(error) = &error {
        let mut failure_environment = environment;
        failure_environment.push(("CAIRN_ERROR", error.clone()));
        run_failure_hooks(&source.hooks.on_failure, &failure_environment);
    }
    SourceRun {
        name: name.to_owned(),
        started,
        duration_seconds: clock.elapsed().as_secs_f64(),
        report,
        error,
    }
}

/// Records sources' runs in the state file (read again first: another run may have written it).
fn record_sources(state_path: &std::path::Path, runs: &[SourceRun]) -> Result<()> {
    let mut run_state = RunState::load(state_path)?;
    for source_run in runs {
        let new_state = source_run.state(run_state.sources.get(&source_run.name));
        run_state.sources.insert(source_run.name.clone(), new_state);
    }
    run_state.store(state_path)
}

/// Applies a source's retention to its own snapshots (tag `source:NAME`, this host) in
/// `repository` (the repository, or a `[[copy]]` destination); returns how many were removed.
pub(super) fn apply_retention(
    repository: &Repository,
    host: &str,
    name: &str,
    policy: &RetentionPolicy,
) -> Result<usize> {
    let options = ForgetOptions {
        policy: policy.clone(),
        filter: SnapshotFilter {
            hosts: vec![host.to_owned()],
            tags: vec![TagSet(vec![source_tag(name)])],
            paths: Vec::new(),
        }
        .into(),
        group_by: GroupBy {
            host: true,
            paths: false,
            tags: false,
        },
        time_zone: jiff::tz::TimeZone::system(),
        now: Some(Timestamp::now() + cairn_store::time_sanity::FUTURE_TOLERANCE),
    };
    let plan = plan_forget(repository, &options)?;
    for error in &plan.unreadable {
        eprintln!(
            "warning: {error} (left alone by the retention: `cairn forget {}` removes it)",
            super::forget::unreadable_id(error)
        );
    }
    // Never: a run has no one to ask, and a source's whole history is not thinned unattended.
    plan.ensure_no_group_emptied()?;
    let removals = plan.removals();
    if removals.is_empty() {
        return Ok(0);
    }
    let outcome = repository.forget_snapshots(&removals)?;
    if let Some((id, error)) = outcome.failed.first() {
        bail!(
            "{} of {} could not be removed (first: {}: {error})",
            outcome.failed.len(),
            render::count(removals.len() as u64, "snapshot", "snapshots"),
            id.short()
        );
    }
    Ok(outcome.removed.len())
}

/// The `check` arguments a `[check]` section stands for.
fn check_args(data: CheckData) -> CheckArgs {
    CheckArgs {
        read_data: data == CheckData::All,
        read_data_subset: match data {
            CheckData::Subset(subset) => Some(subset),
            _ => None,
        },
        read_data_rotate: match data {
            CheckData::Rotate(days) => Some(days),
            _ => None,
        },
    }
}

/// The check slice; `None` when not configured.
fn run_check(
    repository: &Repository,
    nested: &GlobalArgs,
    config: &Config,
    started: Timestamp,
) -> Option<StepState> {
    let check = config.check?;
    let clock = Instant::now();
    let outcome = super::check::perform(nested, repository, &check_args(check.data));
    let (ok, detail, error) = match outcome {
        Ok((report, selection)) => (
            report.is_ok(),
            super::check::level_phrase(selection),
            (!report.is_ok()).then(|| super::check::damage_summary(&report)),
        ),
        Err(error) => (
            false,
            "not completed".into(),
            Some(render::error_line(&error)),
        ),
    };
    Some(StepState {
        time: started,
        ok,
        duration_seconds: clock.elapsed().as_secs_f64(),
        detail,
        error,
    })
}

/// The drill: round robin, the source drilled longest ago that has a snapshot; all, every
/// source that has one. Each drilled source's result goes into `run_state.drills`.
fn run_drill(
    repository: &Repository,
    nested: &GlobalArgs,
    config: &Config,
    host: &str,
    run_state: &mut RunState,
    started: Timestamp,
) -> Option<StepState> {
    let drill = config.drill.as_ref()?;
    let clock = Instant::now();
    let table: Vec<(&str, Option<Timestamp>)> = config
        .sources
        .keys()
        .map(|name| {
            (
                name.as_str(),
                run_state.drills.get(name).map(|drilled| drilled.time),
            )
        })
        .collect();
    let mut drilled = Vec::new();
    let mut errors = Vec::new();
    for index in schedule::drill_order(drill.sources, &table) {
        let name = table[index].0;
        let filter = SnapshotFilter {
            hosts: vec![host.to_owned()],
            tags: vec![TagSet(vec![source_tag(name)])],
            paths: Vec::new(),
        };
        let options = DrillOptions {
            scratch_parent: drill.scratch.clone().unwrap_or_else(std::env::temp_dir),
            sample: drill.sample.map(|fraction| Sample {
                fraction,
                seed: super::drill::random_seed(),
            }),
        };
        let outcome = match store_drill::choose_snapshot(repository, "latest", &filter) {
            // A source that has never succeeded has nothing to drill: status reports it.
            Err(cairn_store::Error::SnapshotNotFound(_)) => continue,
            chosen => chosen
                .and_then(|(id, snapshot)| store_drill::drill(repository, id, &snapshot, &options)),
        };
        let record = match outcome {
            Ok(report) => {
                super::drill::print(nested, &report);
                let record = super::drill::source_drill(&report, started);
                if report.is_ok() {
                    drilled.push(name.to_owned());
                } else {
                    errors.push(format!(
                        "{name}: {}",
                        record.error.clone().unwrap_or_default()
                    ));
                }
                record
            }
            Err(error) => {
                let error = anyhow::Error::from(error);
                errors.push(format!("{name}: {}", render::error_line(&error)));
                state::SourceDrill {
                    time: started,
                    ok: false,
                    snapshot: String::new(),
                    rto_seconds: 0.0,
                    bytes_restored: 0,
                    sample_percent: None,
                    error: Some(render::error_line(&error)),
                }
            }
        };
        run_state.drills.insert(name.to_owned(), record);
        if drill.sources == DrillSources::RoundRobin {
            break;
        }
    }
    let sample = drill.sample.map_or_else(
        || "whole snapshots".into(),
        |fraction| format!("{}% samples", render::percent(fraction)),
    );
    Some(StepState {
        time: started,
        ok: errors.is_empty(),
        duration_seconds: clock.elapsed().as_secs_f64(),
        detail: if drilled.is_empty() && errors.is_empty() {
            "no source has a snapshot yet".into()
        } else {
            format!("{sample} of {}", drilled.join(", "))
        },
        error: (!errors.is_empty()).then(|| errors.join("; ")),
    })
}

/// What of a run is due at `now`: the sources (all named ones, else those whose schedule is
/// due), whether the check and the drill are, and for each source left out when it is due.
struct DuePlan<'a> {
    sources: Vec<(&'a str, &'a SourceConfig)>,
    not_due: Vec<(&'a str, jiff::civil::DateTime)>,
    check: bool,
    drill: bool,
}

fn due_plan<'a>(
    config: &'a Config,
    selected: Vec<(&'a str, &'a SourceConfig)>,
    named: bool,
    args: &RunArgs,
    previous: &RunState,
    now: Timestamp,
) -> DuePlan<'a> {
    let zone = jiff::tz::TimeZone::system();
    let timer_period = config.timer_period();
    let due = |schedule: Option<&schedule::Schedule>, last: Option<Timestamp>| {
        state::due(schedule, last, now, timer_period, &zone)
    };
    let mut sources = Vec::new();
    let mut not_due = Vec::new();
    for (name, source) in selected {
        let last = previous
            .sources
            .get(name)
            .map(|source_state| source_state.last_attempt);
        match due(source.schedule.as_ref(), last) {
            Due::NotBefore(next) if !named => not_due.push((name, next)),
            _ => sources.push((name, source)),
        }
    }
    let check = !args.no_check
        && config.check.is_some_and(|check| {
            due(
                check.schedule.as_ref(),
                previous.check.as_ref().map(|step| step.time),
            ) == Due::Now
        });
    let drill = !args.no_drill
        && config.drill.as_ref().is_some_and(|drill| {
            let step = drill.schedule.map(|period| {
                schedule::drill_step_schedule(&period, drill.sources, config.sources.len())
            });
            due(step.as_ref(), previous.drill.as_ref().map(|step| step.time)) == Due::Now
        });
    DuePlan {
        sources,
        not_due,
        check,
        drill,
    }
}

/// Prints the sources a run leaves for later.
fn print_not_due(global: &GlobalArgs, not_due: &[(&str, jiff::civil::DateTime)]) {
    for (name, next) in not_due {
        if global.json {
            render::json_line(&serde_json::json!({
                "message_type": "not_due", "source": name, "next_due": next.to_string(),
            }));
        } else if !global.quiet {
            outln!("{name}: not due before {}", next.strftime("%Y-%m-%d %H:%M"));
        }
    }
}

/// The copy of the global options the nested commands print with: with `--json`, they stay
/// silent and `run` prints its own lines.
fn nested_options(global: &GlobalArgs) -> GlobalArgs {
    let mut nested = global.clone();
    if global.json {
        nested.json = false;
        nested.quiet = true;
    }
    nested
}

/// Prints the end-of-run summary: one line per source, then the steps (with `--quiet` only
/// the failures).
fn print_summary(
    global: &GlobalArgs,
    runs: &[SourceRun],
    copies: &[DestinationRun],
    steps: &[(String, Option<String>)],
) {
    if global.json {
        for source_run in runs {
            let report = source_run.report.as_ref();
            render::json_line(&serde_json::json!({
                "message_type": "source",
                "source": source_run.name,
                "ok": source_run.ok(),
                "error": source_run.error,
                "snapshot_id": report.map(|report| report.snapshot_id.to_hex()),
                "duration_seconds": source_run.duration_seconds,
                "bytes_processed": report.map(|report| report.bytes_processed),
                "bytes_added": report.map(|report| report.bytes_added),
                "files": report.map(|report| report.files),
                "partial": report.map(|report| report.completion == Completion::Partial),
            }));
        }
        for copy in copies {
            render::json_line(&run_copies::json_line(copy));
        }
        render::json_line(&serde_json::json!({
            "message_type": "summary",
            "ok": runs.iter().all(SourceRun::ok) && copies.iter().all(DestinationRun::ok) && steps.iter().all(|(_, error)| error.is_none()),
            "destinations_failed": copies.iter().filter(|copy| !copy.ok()).map(|copy| copy.name.clone()).collect::<Vec<_>>(),
            "sources_failed": runs.iter().filter(|source_run| !source_run.ok()).map(|source_run| source_run.name.clone()).collect::<Vec<_>>(),
            "steps": steps.iter().map(|(step, error)| serde_json::json!({"step": step, "ok": error.is_none(), "error": error})).collect::<Vec<_>>(),
        }));
        return;
    }
    if !global.quiet {
        outln!();
    }
    for source_run in runs {
        match (&source_run.error, &source_run.report) {
            (None, Some(_)) if global.quiet => {}
            (None, Some(report)) => outln!(
                "{}: ok, snapshot {} ({} processed, {} added, {:.1} s){}",
                source_run.name,
                report.snapshot_id.short(),
                render::bytes(report.bytes_processed),
                render::bytes(report.bytes_added),
                source_run.duration_seconds,
                if report.completion == Completion::Partial {
                    ", some files unreadable or changing (see above)"
                } else {
                    ""
                }
            ),
            (error, _) => eprintln!(
                "{}: FAILED: {}",
                source_run.name,
                error.as_deref().unwrap_or("no snapshot")
            ),
        }
    }
    for copy in copies {
        match run_copies::summary_line(global, copy) {
            Some(line) if copy.ok() => outln!("{line}"),
            Some(line) => eprintln!("{line}"),
            None => {}
        }
    }
    for (step, error) in steps {
        match error {
            None if global.quiet => {}
            None => outln!("{step}: ok"),
            Some(error) => eprintln!("{step}: FAILED: {error}"),
        }
    }
}

/// Runs `cairn run`.
///
/// # Errors
/// A usage error (no config, unknown source), or the repository cannot be opened (after the
/// failure is recorded in the run state and the metrics; the exit code stays the error's: 10,
/// 12, ...). Failing hooks, sources and steps are not errors: they make
/// [`Completion::RunFailed`].
pub fn run(global: &GlobalArgs, config: Option<&Config>, args: &RunArgs) -> Result<Completion> {
    let (config_path, config) = required_config(global, config, "run")?;
    let selected = config
        .select(&args.sources)
        .map_err(|message| ConfigError::usage(config_path, "sources", message))?;
    if selected.is_empty() {
        return Err(
            ConfigError::usage(config_path, "sources", "no [sources.NAME] to back up").into(),
        );
    }
    let state_path = config.state_file(config_path, settings::running_as_root());
    let now = state::schedule_now()?;
    let plan = due_plan(
        config,
        selected,
        !args.sources.is_empty(),
        args,
        &RunState::load(&state_path).unwrap_or_default(),
        now,
    );
    print_not_due(global, &plan.not_due);
    if plan.sources.is_empty() && !plan.check && !plan.drill {
        if !global.json && !global.quiet {
            outln!("nothing due");
        }
        return Ok(Completion::Done);
    }
    let sources = plan.sources;
    let metrics_path = args
        .metrics_file
        .clone()
        .or_else(|| config.metrics.file.clone());
    let nested = nested_options(global);
    let host = super::metrics::config_host(config);
    let mut steps: Vec<(String, Option<String>)> = Vec::new();

    let global_environment = vec![(
        "CAIRN_SOURCES",
        sources
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(" "),
    )];
    let failed_start = |error: &anyhow::Error| {
        let message = render::error_line(error);
        let runs: Vec<SourceRun> = sources
            .iter()
            .map(|(name, _)| failed_before_start(name, &message, now))
            .collect();
        finish_failed_start(
            config,
            &state_path,
            metrics_path.as_deref(),
            &runs,
            &message,
        );
    };
    if let Err(error) = run_hooks(&config.hooks.before, "before", &global_environment) {
        eprintln!("error: {}", render::error_line(&error));
        failed_start(&error);
        return Ok(Completion::RunFailed);
    }
    let repository = settings::open_repository(global).inspect_err(|error| failed_start(error))?;
    if config.stores_config()
        && let Err(error) = super::recover::store_config(&repository, &nested, config_path, &host)
    {
        steps.push(("config".into(), Some(render::error_line(&error))));
    }

    let mut runs = Vec::new();
    for (name, source) in &sources {
        if !global.json && !global.quiet {
            outln!("== {name}");
        }
        let source_run = run_source(&repository, &nested, config, name, source, now);
        if let Some(error) = &source_run.error {
            eprintln!("error: source {name}: {error}");
        }
        if let Err(error) = record_sources(&state_path, std::slice::from_ref(&source_run)) {
            steps.push(("state".into(), Some(render::error_line(&error))));
        }
        runs.push(source_run);
    }

    if !args.no_forget {
        retention_and_prune(
            &repository,
            global,
            &nested,
            config,
            &runs,
            &host,
            &mut steps,
        );
    }
    let previous_state = RunState::load(&state_path).unwrap_or_default();
    let backed_up: Vec<&str> = runs
        .iter()
        .map(|source_run| source_run.name.as_str())
        .collect();
    let destinations = run_copies::due_destinations(config, &backed_up, &previous_state);
    let copies = if destinations.is_empty() {
        Vec::new()
    } else {
        run_copies::run_destinations(
            &repository,
            &nested,
            config,
            config_path,
            &destinations,
            &host,
            !args.no_forget,
            &previous_state,
        )
    };
    let mut run_state = RunState::load(&state_path).unwrap_or_default();
    run_copies::record(&mut run_state, &copies);
    // A source whose retention failed (a policy that would empty it, say) failed in this run:
    // `status` shows it with the reason.
    for (step, error) in &steps {
        if let (Some(name), Some(error)) = (step.strip_prefix("retention "), error)
            && let Some(source_state) = run_state.sources.get_mut(name)
        {
            source_state.last_ok = false;
            source_state.last_error = Some(format!("retention: {error}"));
        }
    }
    if plan.check
        && let Some(check) = run_check(&repository, &nested, config, now)
    {
        steps.push((format!("check ({})", check.detail), check.error.clone()));
        run_state.check = Some(check);
    }
    if plan.drill
        && let Some(drill) = run_drill(&repository, &nested, config, &host, &mut run_state, now)
    {
        steps.push((format!("drill ({})", drill.detail), drill.error.clone()));
        run_state.drill = Some(drill);
    }
    if let Err(error) = run_state.store(&state_path) {
        steps.push(("state".into(), Some(render::error_line(&error))));
    }

    let failed: Vec<&SourceRun> = runs.iter().filter(|source_run| !source_run.ok()).collect();
    let failed_copies: Vec<&DestinationRun> = copies.iter().filter(|copy| !copy.ok()).collect();
    let step_failures: Vec<String> = steps
        .iter()
        .filter_map(|(step, error)| error.as_ref().map(|error| format!("{step}: {error}")))
        .chain(failed_copies.iter().map(|copy| {
            format!(
                "copy {}: {}",
                copy.name,
                copy.error.as_deref().unwrap_or_default()
            )
        }))
        .collect();
    let global_hook = if failed.is_empty() && step_failures.is_empty() {
        run_hooks(&config.hooks.after, "after", &global_environment).err()
    } else {
        let mut environment = global_environment.clone();
        environment.push((
            "CAIRN_FAILED_SOURCES",
            failed
                .iter()
                .map(|source_run| source_run.name.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        ));
        environment.push((
            "CAIRN_FAILED_DESTINATIONS",
            failed_copies
                .iter()
                .map(|copy| copy.name.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        ));
        let errors: Vec<String> = failed
            .iter()
            .map(|source_run| {
                format!(
                    "{}: {}",
                    source_run.name,
                    source_run.error.as_deref().unwrap_or_default()
                )
            })
            .chain(step_failures)
            .collect();
        environment.push(("CAIRN_ERROR", errors.join("; ")));
        run_failure_hooks(&config.hooks.on_failure, &environment);
        None
    };
    if let Some(error) = global_hook {
        steps.push(("after hooks".into(), Some(render::error_line(&error))));
    }

    if let Some(path) = &metrics_path {
        let state_now = RunState::load(&state_path).unwrap_or(run_state);
        let (text, problem) = super::metrics::render(config, &state_now, Some(&repository));
        if let Some(error) = problem {
            eprintln!(
                "warning: metrics without repository figures: {}",
                render::error_line(&error)
            );
        }
        if let Err(error) = super::metrics::write_file(path, &text) {
            steps.push(("metrics".into(), Some(render::error_line(&error))));
        }
    }

    print_summary(global, &runs, &copies, &steps);
    let partial = runs.iter().any(|source_run| {
        source_run
            .report
            .as_ref()
            .is_some_and(|report| report.completion == Completion::Partial)
    });
    Ok(
        if runs.iter().any(|source_run| !source_run.ok())
            || !failed_copies.is_empty()
            || steps.iter().any(|(_, error)| error.is_some())
        {
            Completion::RunFailed
        } else if partial {
            Completion::Partial
        } else {
            Completion::Done
        },
    )
}

/// Retention of each source that succeeded in this run (a failing source's history is never
/// thinned), then one prune when anything was removed. Skipped, with a note, when append-only.
fn retention_and_prune(
    repository: &Repository,
    global: &GlobalArgs,
    nested: &GlobalArgs,
    config: &Config,
    runs: &[SourceRun],
    host: &str,
    steps: &mut Vec<(String, Option<String>)>,
) {
    let with_policy: Vec<(&SourceRun, &RetentionPolicy)> = runs
        .iter()
        .filter(|source_run| source_run.ok())
        .filter_map(|source_run| {
            let source = &config.sources[&source_run.name];
            config
                .retention_of(source)
                .map(|policy| (source_run, policy))
        })
        .collect();
    if with_policy.is_empty() {
        return;
    }
    if repository.client_append_only() || repository.repository_append_only() {
        if !global.quiet {
            eprintln!(
                "note: retention skipped: append-only (run `cairn forget --prune` from a machine allowed to delete)"
            );
        }
        return;
    }
    let mut removed_total = 0;
    for (source_run, policy) in with_policy {
        let step = format!("retention {}", source_run.name);
        match apply_retention(repository, host, &source_run.name, policy) {
            Ok(removed) => {
                removed_total += removed;
                if !global.json && !global.quiet {
                    outln!("retention {}: removed {removed} snapshots", source_run.name);
                }
                steps.push((step, None));
            }
            Err(error) => steps.push((step, Some(render::error_line(&error)))),
        }
    }
    if removed_total > 0 {
        let outcome = prune_after_retention(nested, repository);
        steps.push((
            "prune".into(),
            outcome.err().map(|error| render::error_line(&error)),
        ));
    }
}

/// The prune after a run's retention removed snapshots: the default 10% unused allowance.
///
/// # Errors
/// The prune's.
pub(super) fn prune_after_retention(nested: &GlobalArgs, repository: &Repository) -> Result<()> {
    let options = PruneOptionsArgs {
        max_unused: 0.1,
        lease_ttl: 900,
    };
    super::prune::run_on(nested, &options, false, repository)
}

/// Records a run that could not start (global hook or repository failed): every source failed,
/// the metrics say so, the `on_failure` hooks run.
fn finish_failed_start(
    config: &Config,
    state_path: &std::path::Path,
    metrics_path: Option<&std::path::Path>,
    runs: &[SourceRun],
    message: &str,
) {
    if let Err(error) = record_sources(state_path, runs) {
        eprintln!("warning: {}", render::error_line(&error));
    }
    let names: Vec<&str> = runs
        .iter()
        .map(|source_run| source_run.name.as_str())
        .collect();
    run_failure_hooks(
        &config.hooks.on_failure,
        &[
            ("CAIRN_SOURCES", names.join(" ")),
            ("CAIRN_FAILED_SOURCES", names.join(" ")),
            ("CAIRN_ERROR", message.to_owned()),
        ],
    );
    if let Some(path) = metrics_path {
        let run_state = RunState::load(state_path).unwrap_or_default();
        let (text, _) = super::metrics::render(config, &run_state, None);
        if let Err(error) = super::metrics::write_file(path, &text) {
            eprintln!("warning: {}", render::error_line(&error));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_run_in_order_with_their_environment_and_stop_at_a_failure() {
        let directory = tempfile::tempdir().expect("temp dir");
        let log = directory.path().join("log");
        let log_text = log.display().to_string();
        let commands = vec![
            format!("echo \"one $CAIRN_HOOK $CAIRN_SOURCE\" >> {log_text}"),
            format!("echo two >> {log_text}; exit 3"),
            format!("echo three >> {log_text}"),
        ];
        let error = run_hooks(&commands, "before", &[("CAIRN_SOURCE", "db".into())])
            .expect_err("the second fails");
        assert!(
            error.to_string().starts_with("before hook \"echo two"),
            "{error}"
        );
        assert!(error.to_string().contains("exit status: 3"), "{error}");
        assert_eq!(
            std::fs::read_to_string(&log).expect("log"),
            "one before db\ntwo\n"
        );
    }

    #[test]
    fn a_source_becomes_a_tagged_request() {
        let config = Config::parse(
            "[defaults]\ntags = [\"nightly\"]\nhost = \"web1\"\n\
             [sources.db]\ncommand = \"pg_dump app\"\nstream_name = \"app.sql\"\ntags = [\"db\"]\n\
             [sources.etc]\npaths = [\"/etc\"]\nexclude = [\"*.tmp\"]\none_file_system = true\n",
            std::path::Path::new("cairn.toml"),
        )
        .expect("valid");
        let db = request(&config, "db", &config.sources["db"]);
        assert_eq!(
            db.source,
            RequestSource::Command {
                command: "pg_dump app".into(),
                name: "app.sql".into()
            }
        );
        assert_eq!(db.tags, ["nightly", "db", "source:db"]);
        assert_eq!(db.host.as_deref(), Some("web1"));
        let etc = request(&config, "etc", &config.sources["etc"]);
        assert_eq!(etc.source, RequestSource::Paths(vec!["/etc".into()]));
        assert_eq!(etc.excludes, ["*.tmp"]);
        assert!(etc.one_file_system);
    }

    #[test]
    fn a_failed_run_keeps_the_last_success() {
        let earlier: Timestamp = "2024-06-01T03:00:00Z".parse().expect("time");
        let previous = SourceState {
            last_attempt: earlier,
            last_duration_seconds: 1.0,
            last_ok: true,
            last_error: None,
            last_success: Some(earlier),
            last_snapshot: Some("ab".repeat(32)),
            bytes_processed: 7,
            bytes_added: 3,
            size_drops: Vec::new(),
            last_unreadable: 0,
            last_changed: 0,
        };
        let failed = SourceRun {
            name: "db".into(),
            started: "2024-06-02T03:00:00Z".parse().expect("time"),
            duration_seconds: 0.5,
            report: None,
            error: Some("command failed".into()),
        };
        let next = failed.state(Some(&previous));
        assert!(!next.last_ok);
        assert_eq!(next.last_error.as_deref(), Some("command failed"));
        assert_eq!(next.last_success, Some(earlier));
        assert_eq!(next.last_snapshot, previous.last_snapshot);
        assert_eq!(next.bytes_processed, 7);
        assert_eq!(failed.state(None).last_success, None);
    }
}
