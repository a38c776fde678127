//! `cairn metrics`: the config's run state and the repository's size as Prometheus metrics, for
//! `node_exporter`'s textfile collector; also what `cairn run --metrics-file` writes.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use cairn_store::Repository;
use cairn_store::repository::{DATA_PREFIX, INDEX_PREFIX, KEYS_PREFIX, SNAPSHOTS_PREFIX};
use cairn_store::sessions::{self, Judge, WaitingSession};
use jiff::Timestamp;

use crate::args::{GlobalArgs, MetricsArgs};
use crate::config::{Config, source_tag};
use crate::metrics::{Family, encode};
use crate::render;
use crate::settings;
use crate::state::{RunState, StepState, write_atomically};

/// What the repository holds, for metrics and status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepositoryStats {
    /// Snapshots of this host per config source (by their `source:NAME` tag).
    pub snapshots_by_source: BTreeMap<String, u64>,
    /// Every snapshot in the repository, of any host or source.
    pub snapshots: u64,
    /// Bytes of every stored object (packs, index, snapshots, keys), as listed.
    pub stored_bytes: u64,
    /// Sum of every snapshot's content bytes (`bytes_processed`).
    pub content_bytes: u64,
    /// Backup sessions not ended (running, or crashed and not yet proven gone).
    pub unended_sessions: u64,
    /// Unended sessions older than the config's stale session age.
    pub stale_sessions: Vec<WaitingSession>,
}

impl RepositoryStats {
    /// Content bytes per stored byte; 0 for an empty repository.
    #[allow(clippy::cast_precision_loss)] // a ratio
    pub fn dedup_ratio(&self) -> f64 {
        if self.stored_bytes == 0 {
            0.0
        } else {
            self.content_bytes as f64 / self.stored_bytes as f64
        }
    }
}

/// The host name this config's snapshots are recorded under.
pub fn config_host(config: &Config) -> String {
    config
        .defaults
        .host
        .clone()
        .unwrap_or_else(settings::host_name)
}

/// Lists the repository's snapshots and objects.
///
/// # Errors
/// Backend failures while listing.
pub fn repository_stats(
    repository: &Repository,
    config: &Config,
    host: &str,
) -> Result<RepositoryStats> {
    let (snapshots, _unreadable) = repository.list_snapshots()?;
    let mut stats = RepositoryStats {
        snapshots: snapshots.len() as u64,
        ..RepositoryStats::default()
    };
    for name in config.sources.keys() {
        let tag = source_tag(name);
        let count = snapshots
            .iter()
            .filter(|(_, snapshot)| snapshot.host == host && snapshot.tags.contains(&tag))
            .count();
        stats.snapshots_by_source.insert(name.clone(), count as u64);
    }
    stats.content_bytes = snapshots
        .iter()
        .map(|(_, snapshot)| snapshot.summary.bytes_processed)
        .sum();
    let sessions_listed = repository.list_sessions()?;
    stats.unended_sessions = sessions_listed
        .values()
        .filter(|status| !status.ended)
        .count() as u64;
    stats.stale_sessions = sessions::stale_sessions(
        &Judge::here(repository),
        &sessions_listed,
        Timestamp::now().as_second(),
        config.stale_session_age().as_secs(),
    );
    for prefix in [DATA_PREFIX, INDEX_PREFIX, SNAPSHOTS_PREFIX, KEYS_PREFIX] {
        stats.stored_bytes += repository
            .backend()
            .list(prefix)
            .map_err(cairn_store::Error::from)?
            .iter()
            .map(|object| object.size)
            .sum::<u64>();
    }
    Ok(stats)
}

/// Seconds since the Unix epoch.
fn unix_seconds(time: Timestamp) -> f64 {
    time.as_duration().as_secs_f64()
}

/// 1 or 0.
fn flag(value: bool) -> f64 {
    if value { 1.0 } else { 0.0 }
}

#[allow(clippy::cast_precision_loss)] // metric values are floats
fn float(value: u64) -> f64 {
    value as f64
}

/// The families of one step (check or drill): last time, success and duration.
fn step_families(
    names: [&'static str; 3],
    helps: [&'static str; 3],
    step: Option<&StepState>,
) -> [Family; 3] {
    let mut time = Family::gauge(names[0], helps[0]);
    let mut success = Family::gauge(names[1], helps[1]);
    let mut duration = Family::gauge(names[2], helps[2]);
    if let Some(step) = step {
        time.push(Vec::new(), unix_seconds(step.time));
        success.push(Vec::new(), flag(step.ok));
        duration.push(Vec::new(), step.duration_seconds);
    }
    [time, success, duration]
}

/// Every metric of a config: per source from the run state, per repository from `stats` (none
/// when the repository could not be read; `cairn_repository_up` says so).
pub fn families(config: &Config, state: &RunState, stats: Option<&RepositoryStats>) -> Vec<Family> {
    let mut last_success = Family::gauge(
        "cairn_source_last_success_timestamp_seconds",
        "Unix time the last successful run of the source started; 0 if it never succeeded.",
    );
    let mut last_run = Family::gauge(
        "cairn_source_last_run_timestamp_seconds",
        "Unix time the last run of the source started, successful or not.",
    );
    let mut duration = Family::gauge(
        "cairn_source_last_run_duration_seconds",
        "Duration of the last run of the source (before hook to after hook).",
    );
    let mut success = Family::gauge(
        "cairn_source_last_run_success",
        "1 if the last run of the source succeeded (hooks and backup), else 0.",
    );
    let mut processed = Family::gauge(
        "cairn_source_bytes_processed",
        "Bytes of content in the last successful snapshot of the source (read, or proven unchanged and not read).",
    );
    let mut added = Family::gauge(
        "cairn_source_bytes_added",
        "Bytes the last successful run of the source added to the repository (compressed, encrypted, new data only).",
    );
    let mut size_drops = Family::gauge(
        "cairn_source_size_drops",
        "Files and streams of the last successful run at least ten times smaller than in its parent snapshot (an empty dump that exited 0): alert when above 0.",
    );
    let mut max_age = Family::gauge(
        "cairn_source_max_age_seconds",
        "Configured max_age of the source: alert when time() - cairn_source_last_success_timestamp_seconds exceeds it.",
    );
    let mut snapshots = Family::gauge(
        "cairn_snapshots",
        "Snapshots of the source (tag source:NAME, this host) in the repository.",
    );
    for (name, source) in &config.sources {
        let label = || vec![("source", name.clone())];
        if let Some(age) = config.max_age_of(source) {
            max_age.push(label(), age.as_secs_f64());
        }
        if let Some(count) = stats.and_then(|stats| stats.snapshots_by_source.get(name)) {
            snapshots.push(label(), float(*count));
        }
        let Some(source_state) = state.sources.get(name) else {
            last_success.push(label(), 0.0);
            continue;
        };
        last_success.push(label(), source_state.last_success.map_or(0.0, unix_seconds));
        last_run.push(label(), unix_seconds(source_state.last_attempt));
        duration.push(label(), source_state.last_duration_seconds);
        success.push(label(), flag(source_state.last_ok));
        if source_state.last_success.is_some() {
            processed.push(label(), float(source_state.bytes_processed));
            added.push(label(), float(source_state.bytes_added));
            size_drops.push(label(), float(source_state.size_drops.len() as u64));
        }
    }
    let mut up = Family::gauge(
        "cairn_repository_up",
        "1 if the repository could be opened and listed for these metrics, else 0.",
    );
    up.push(Vec::new(), flag(stats.is_some()));
    let mut families = vec![
        last_success,
        last_run,
        duration,
        success,
        processed,
        added,
        size_drops,
        max_age,
        snapshots,
        up,
    ];
    if let Some(stats) = stats {
        let mut total = Family::gauge(
            "cairn_repository_snapshots",
            "Snapshots in the repository, of every host and source.",
        );
        total.push(Vec::new(), float(stats.snapshots));
        let mut size = Family::gauge(
            "cairn_repository_size_bytes",
            "Bytes of all objects in the repository (packs, index, snapshots, keys), as listed.",
        );
        size.push(Vec::new(), float(stats.stored_bytes));
        let mut ratio = Family::gauge(
            "cairn_dedup_ratio",
            "Sum of all snapshots' content bytes divided by cairn_repository_size_bytes (deduplication and compression together); 0 when empty.",
        );
        ratio.push(Vec::new(), stats.dedup_ratio());
        let mut unended = Family::gauge(
            "cairn_unended_sessions",
            "Backup sessions in the repository not ended (running, or crashed and not yet proven gone): each keeps the packs prune condemns meanwhile.",
        );
        unended.push(Vec::new(), float(stats.unended_sessions));
        let mut stale = Family::gauge(
            "cairn_stale_sessions",
            "Backup sessions unended for longer than stale_session_age (default 24h): end them on their machine, or with cairn prune --end-session ID.",
        );
        stale.push(Vec::new(), float(stats.stale_sessions.len() as u64));
        families.extend([total, size, ratio, unended, stale]);
    }
    families.extend(step_families(
        [
            "cairn_check_last_timestamp_seconds",
            "cairn_check_last_success",
            "cairn_check_last_duration_seconds",
        ],
        [
            "Unix time the last check by cairn run started.",
            "1 if the last check by cairn run found no damage, else 0.",
            "Duration of the last check by cairn run.",
        ],
        state.check.as_ref(),
    ));
    families.extend(step_families(
        [
            "cairn_drill_last_timestamp_seconds",
            "cairn_drill_last_success",
            "cairn_drill_last_duration_seconds",
        ],
        [
            "Unix time the last restore drill by cairn run started.",
            "1 if the last restore drill restored and verified every selected file, else 0.",
            "Duration of the last restore drill by cairn run (all sources).",
        ],
        state.drill.as_ref(),
    ));
    families.extend(source_drill_families(config, state));
    families.extend(copy_families(config, state));
    families
}

/// Each `[[copy]]` destination copied into at least once: when, whether it succeeded, how far
/// behind it is and how new its newest copy is.
fn copy_families(config: &Config, state: &RunState) -> [Family; 6] {
    let mut last_success = Family::gauge(
        "cairn_copy_last_success_timestamp_seconds",
        "Unix time the last successful copy into the destination started; 0 if none succeeded.",
    );
    let mut last_run = Family::gauge(
        "cairn_copy_last_run_timestamp_seconds",
        "Unix time the last copy into the destination started, successful or not.",
    );
    let mut success = Family::gauge(
        "cairn_copy_last_run_success",
        "1 if the last copy into the destination (copy, its retention and prune) succeeded, else 0.",
    );
    let mut behind = Family::gauge(
        "cairn_copy_snapshots_behind",
        "Snapshots of the destination's sources not yet copied into it: alert when above 0.",
    );
    let mut newest = Family::gauge(
        "cairn_copy_newest_copy_timestamp_seconds",
        "Time of the newest snapshot the destination holds a copy of: time() minus it is the age of the offsite copy.",
    );
    let mut max_age = Family::gauge(
        "cairn_copy_max_age_seconds",
        "The longest max_age of the destination's sources: alert when time() - cairn_copy_last_success_timestamp_seconds exceeds it.",
    );
    for destination in &config.copies {
        let label = || vec![("destination", destination.name.clone())];
        if let Some(age) = config.max_age_of_destination(destination) {
            max_age.push(label(), age.as_secs_f64());
        }
        let Some(copy) = state.copies.get(&destination.name) else {
            last_success.push(label(), 0.0);
            continue;
        };
        last_success.push(label(), copy.last_success.map_or(0.0, unix_seconds));
        last_run.push(label(), unix_seconds(copy.last_attempt));
        success.push(label(), flag(copy.last_ok));
        behind.push(label(), float(copy.behind));
        if let Some(time) = copy.newest_copy() {
            newest.push(label(), unix_seconds(time));
        }
    }
    [last_success, last_run, success, behind, newest, max_age]
}

/// Each source's last drill: when, whether it verified, the restore time it measured (only for
/// sources drilled at least once).
fn source_drill_families(config: &Config, state: &RunState) -> [Family; 3] {
    let mut time = Family::gauge(
        "cairn_source_last_drill_timestamp_seconds",
        "Unix time the last restore drill of the source started (by cairn run or by hand with --config).",
    );
    let mut success = Family::gauge(
        "cairn_source_last_drill_success",
        "1 if the last restore drill of the source restored and verified every selected file, else 0.",
    );
    let mut rto = Family::gauge(
        "cairn_source_drill_rto_seconds",
        "Restore time the last drill of the source measured (of its sample, when it drilled one).",
    );
    for name in config.sources.keys() {
        if let Some(drilled) = state.drills.get(name) {
            let label = vec![("source", name.clone())];
            time.push(label.clone(), unix_seconds(drilled.time));
            success.push(label.clone(), flag(drilled.ok));
            rto.push(label, drilled.rto_seconds);
        }
    }
    [time, success, rto]
}

/// The metrics text of a config, reading the repository when it is open.
pub fn render(
    config: &Config,
    state: &RunState,
    repository: Option<&Repository>,
) -> (String, Option<anyhow::Error>) {
    let host = config_host(config);
    let (stats, problem) =
        match repository.map(|repository| repository_stats(repository, config, &host)) {
            Some(Ok(stats)) => (Some(stats), None),
            Some(Err(error)) => (None, Some(error)),
            None => (None, None),
        };
    (encode(&families(config, state, stats.as_ref())), problem)
}

/// Writes metrics text to `path` atomically (`node_exporter` may read it at any moment).
///
/// # Errors
/// The file cannot be written.
pub fn write_file(path: &Path, text: &str) -> Result<()> {
    write_atomically(path, text.as_bytes())
        .with_context(|| format!("cannot write metrics file {}", path.display()))
}

/// Runs `cairn metrics`.
///
/// # Errors
/// No config, a damaged run state, or the metrics file cannot be written. A repository that
/// cannot be opened is a warning (`cairn_repository_up 0`).
pub fn run(global: &GlobalArgs, config: Option<&Config>, args: &MetricsArgs) -> Result<()> {
    let (path, config) = super::status::required_config(global, config, "metrics")?;
    let config = &super::status::with_stale_session_age(config, args.stale_session_age);
    let state = RunState::load(&config.state_file(path, settings::running_as_root()))?;
    let repository = settings::open_repository(global)
        .inspect_err(|error| {
            eprintln!(
                "warning: cannot open the repository: {}",
                render::error_line(error)
            );
        })
        .ok();
    let (text, problem) = render(config, &state, repository.as_ref());
    if let Some(error) = problem {
        eprintln!(
            "warning: cannot list the repository: {}",
            render::error_line(&error)
        );
    }
    if let Some(file) = &args.metrics_file {
        return write_file(file, &text);
    }
    out!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::SourceState;

    fn config() -> Config {
        Config::parse(
            "[defaults]\nmax_age = \"26h\"\n[sources.db]\ncommand = \"x\"\nstream_name = \"db\"\n\
             [sources.etc]\npaths = [\"/etc\"]\n[sources.new]\npaths = [\"/new\"]\n",
            Path::new("cairn.toml"),
        )
        .expect("valid")
    }

    fn state() -> RunState {
        let time: Timestamp = "2024-06-01T03:00:00Z".parse().expect("time");
        let mut state = RunState::default();
        state.sources.insert(
            "db".into(),
            SourceState {
                last_attempt: time,
                last_duration_seconds: 2.5,
                last_ok: true,
                last_error: None,
                last_success: Some(time),
                last_snapshot: None,
                bytes_processed: 1000,
                bytes_added: 100,
                size_drops: vec!["/db.sql: 52 B now, 28.6 MiB before".into()],
                last_unreadable: 0,
                last_changed: 0,
            },
        );
        state.sources.insert(
            "etc".into(),
            SourceState {
                last_attempt: time,
                last_duration_seconds: 0.5,
                last_ok: false,
                last_error: Some("boom".into()),
                last_success: None,
                last_snapshot: None,
                bytes_processed: 0,
                bytes_added: 0,
                size_drops: Vec::new(),
                last_unreadable: 0,
                last_changed: 0,
            },
        );
        state
    }

    #[test]
    fn sources_and_repository_become_samples() {
        let stats = RepositoryStats {
            snapshots_by_source: [("db".to_owned(), 3), ("etc".to_owned(), 0)].into(),
            snapshots: 5,
            stored_bytes: 400,
            content_bytes: 1000,
            unended_sessions: 2,
            stale_sessions: vec![WaitingSession {
                session: "00".repeat(16),
                host: None,
                machine: "?".into(),
                pid: None,
                started_unix: None,
                reason: "its start marker cannot be read",
                old_format: false,
            }],
        };
        let text = encode(&families(&config(), &state(), Some(&stats)));
        for line in [
            "cairn_source_last_success_timestamp_seconds{source=\"db\"} 1717210800",
            "cairn_source_last_success_timestamp_seconds{source=\"etc\"} 0",
            "cairn_source_last_success_timestamp_seconds{source=\"new\"} 0",
            "cairn_source_last_run_success{source=\"db\"} 1",
            "cairn_source_last_run_success{source=\"etc\"} 0",
            "cairn_source_last_run_duration_seconds{source=\"db\"} 2.5",
            "cairn_source_bytes_processed{source=\"db\"} 1000",
            "cairn_source_bytes_added{source=\"db\"} 100",
            "cairn_source_max_age_seconds{source=\"new\"} 93600",
            "cairn_snapshots{source=\"db\"} 3",
            "cairn_repository_up 1",
            "cairn_repository_size_bytes 400",
            "cairn_dedup_ratio 2.5",
            "cairn_unended_sessions 2",
            "cairn_stale_sessions 1",
        ] {
            assert!(
                text.lines().any(|got| got == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(
            !text.contains("cairn_source_bytes_added{source=\"etc\"}"),
            "{text}"
        );
        assert!(!text.contains("cairn_check_"), "no check yet: {text}");
        assert!(
            !text.contains("cairn_source_last_drill_timestamp_seconds{"),
            "no drill yet: {text}"
        );
    }

    #[test]
    fn each_drilled_source_has_its_drill_samples() {
        let mut state = state();
        state.drills.insert(
            "db".into(),
            crate::state::SourceDrill {
                time: "2024-06-01T04:00:00Z".parse().expect("time"),
                ok: false,
                snapshot: "ab".repeat(32),
                rto_seconds: 12.5,
                bytes_restored: 10,
                sample_percent: Some(5.0),
                error: Some("1 of 2 files restored and verified".into()),
            },
        );
        let text = encode(&families(&config(), &state, None));
        for line in [
            "cairn_source_last_drill_timestamp_seconds{source=\"db\"} 1717214400",
            "cairn_source_last_drill_success{source=\"db\"} 0",
            "cairn_source_drill_rto_seconds{source=\"db\"} 12.5",
        ] {
            assert!(
                text.lines().any(|got| got == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(
            !text.contains("cairn_source_drill_rto_seconds{source=\"etc\"}"),
            "{text}"
        );
    }

    #[test]
    fn an_unreadable_repository_is_reported_not_guessed() {
        let text = encode(&families(&config(), &state(), None));
        assert!(text.contains("cairn_repository_up 0\n"), "{text}");
        assert!(!text.contains("cairn_snapshots"), "{text}");
        assert!(!text.contains("cairn_repository_size_bytes"), "{text}");
    }

    #[test]
    fn dedup_ratio_of_an_empty_repository_is_zero() {
        assert!(RepositoryStats::default().dedup_ratio().abs() < f64::EPSILON);
    }
}
