//! The `[[copy]]` step of `cairn run`: after the backups and the repository's retention, each
//! destination receives the new snapshots of its sources, then its own retention and prune. A
//! failing destination fails alone (never a source's backup nor another destination).
//! Orchestration only: what is pending is [`crate::copy_lag`]'s, copying the library's.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use cairn_store::Id;
use cairn_store::Repository;
use cairn_store::copy::{self, CopiedSnapshot, CopyOptions, CopyProgress};
use cairn_store::format::snapshot::Snapshot;
use jiff::Timestamp;

use super::run::{apply_retention, prune_after_retention};
use crate::args::GlobalArgs;
use crate::config::{Config, CopyDestination};
use crate::copy_lag::{self, DestinationLag};
use crate::render;
use crate::settings;
use crate::state::{CopyState, RunState};

/// What happened to one destination in this run.
#[derive(Debug, Clone)]
pub struct DestinationRun {
    /// Its name.
    pub name: String,
    /// When its step started.
    pub started: Timestamp,
    /// How long it took.
    pub duration_seconds: f64,
    /// Snapshots committed in it.
    pub snapshots_copied: u64,
    /// Bytes added to it.
    pub bytes_added: u64,
    /// Snapshots its own retention removed.
    pub removed: usize,
    /// Snapshots of its sources it still lacks.
    pub behind: u64,
    /// Per source, the time of the newest snapshot it holds a copy of.
    pub newest_copied: BTreeMap<String, Timestamp>,
    /// Why it failed.
    pub error: Option<String>,
}

impl DestinationRun {
    /// Whether it succeeded.
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }

    /// The destination's new state, given its previous one.
    fn state(&self, previous: Option<&CopyState>) -> CopyState {
        CopyState {
            last_attempt: self.started,
            last_duration_seconds: self.duration_seconds,
            last_ok: self.ok(),
            last_error: self.error.clone(),
            last_success: if self.ok() {
                Some(self.started)
            } else {
                previous.and_then(|previous| previous.last_success)
            },
            snapshots_copied: self.snapshots_copied,
            bytes_added: self.bytes_added,
            behind: self.behind,
            newest_copied: self.newest_copied.clone(),
        }
    }
}

/// Counts what a copy committed (its snapshots stay when it then fails) and prints each one
/// as `cairn copy` does.
struct Counter<'a> {
    global: &'a GlobalArgs,
    snapshots: Cell<u64>,
    bytes: Cell<u64>,
}

impl CopyProgress for Counter<'_> {
    fn snapshot_copied(&self, copied: &CopiedSnapshot) {
        self.snapshots.set(self.snapshots.get() + 1);
        self.bytes.set(self.bytes.get() + copied.added.bytes_added);
        super::copy::print_copied(self.global, copied);
    }
}

/// The destinations this run copies into: those receiving a source backed up in this run, and
/// those whose last copy failed or left snapshots behind (they catch up).
pub fn due_destinations<'a>(
    config: &'a Config,
    backed_up: &[&str],
    previous: &RunState,
) -> Vec<&'a CopyDestination> {
    config
        .copies
        .iter()
        .filter(|destination| {
            let lagging = previous
                .copies
                .get(&destination.name)
                .is_some_and(|state| !state.last_ok || state.behind > 0);
            lagging
                || config
                    .sources_of(destination)
                    .iter()
                    .any(|name| backed_up.contains(name))
        })
        .collect()
}

/// Copies into each destination in turn; `source_snapshots` is the repository's listing after
/// its retention (an error, when it could not be listed, fails every destination).
#[allow(clippy::too_many_arguments)] // one call site, the run's context
pub fn run_destinations(
    repository: &Repository,
    nested: &GlobalArgs,
    config: &Config,
    config_path: &Path,
    destinations: &[&CopyDestination],
    host: &str,
    forget: bool,
    previous: &RunState,
) -> Vec<DestinationRun> {
    let source_snapshots = repository
        .list_snapshots()
        .map(|(snapshots, _)| snapshots)
        .map_err(anyhow::Error::from);
    destinations
        .iter()
        .map(|destination| {
            if !nested.json && !nested.quiet {
                outln!("== copy {}", destination.name);
            }
            let started = Timestamp::now();
            let clock = Instant::now();
            let counter = Counter {
                global: nested,
                snapshots: Cell::new(0),
                bytes: Cell::new(0),
            };
            let mut lag = None;
            let mut removed = 0;
            let outcome = source_snapshots
                .as_ref()
                .map_err(|error| anyhow::anyhow!("cannot list the repository: {error:#}"))
                .and_then(|snapshots| {
                    copy_into(
                        &Step {
                            repository,
                            nested,
                            config,
                            config_path,
                            destination,
                            host,
                            forget,
                        },
                        snapshots,
                        &counter,
                        &mut lag,
                        &mut removed,
                    )
                });
            let previous_newest = previous
                .copies
                .get(&destination.name)
                .map(|state| state.newest_copied.clone())
                .unwrap_or_default();
            let (behind, newest_copied) = match (&outcome, lag) {
                (Ok(()), Some(lag)) => (lag.pending.len() as u64, lag.newest_copied),
                // Listed before it failed: what it lacked then, less what it got since.
                (Err(_), Some(lag)) => (
                    (lag.pending.len() as u64).saturating_sub(counter.snapshots.get()),
                    lag.newest_copied,
                ),
                (_, None) => (
                    source_snapshots.as_ref().map_or(0, |snapshots| {
                        copy_lag::behind_by_last_known(
                            snapshots,
                            &previous_newest,
                            host,
                            &config.sources_of(destination),
                        )
                    }),
                    previous_newest,
                ),
            };
            let error = outcome.err().map(|error| render::error_line(&error));
            if let Some(error) = &error {
                eprintln!("error: copy {}: {error}", destination.name);
            }
            DestinationRun {
                name: destination.name.clone(),
                started,
                duration_seconds: clock.elapsed().as_secs_f64(),
                snapshots_copied: counter.snapshots.get(),
                bytes_added: counter.bytes.get(),
                removed,
                behind,
                newest_copied,
                error,
            }
        })
        .collect()
}

/// What one destination's step needs besides its progress.
struct Step<'a> {
    repository: &'a Repository,
    nested: &'a GlobalArgs,
    config: &'a Config,
    config_path: &'a Path,
    destination: &'a CopyDestination,
    host: &'a str,
    forget: bool,
}

/// One destination: open it, store the config in it, copy what it lacks, apply its retention
/// and prune it, list it again for what it still lacks (`lag`).
fn copy_into(
    step: &Step<'_>,
    source_snapshots: &[(Id, Snapshot)],
    counter: &Counter<'_>,
    lag: &mut Option<DestinationLag>,
    removed: &mut usize,
) -> Result<()> {
    let Step {
        repository,
        nested,
        config,
        config_path,
        destination,
        host,
        forget,
    } = *step;
    let sources = config.sources_of(destination);
    let target = settings::open_destination_repository(nested, destination)?;
    super::copy::ensure_distinct(repository, &target)?;
    let lag_now = |target: &Repository| -> Result<DestinationLag> {
        let (destination_snapshots, _) = target.list_snapshots()?;
        Ok(copy_lag::destination_lag(
            repository.config().repository_id,
            source_snapshots,
            &destination_snapshots,
            host,
            &sources,
        ))
    };
    let before = lag_now(&target)?;
    let pending = before.pending.clone();
    *lag = Some(before);
    if config.stores_config() {
        // The destination can then be recovered from with its URL and password alone.
        super::recover::store_config(&target, nested, config_path, host)?;
    }
    if !pending.is_empty() {
        if !copy::chunks_alike(repository, &target) && !nested.quiet {
            eprintln!("{}", super::copy::RECHUNK_NOTICE);
        }
        copy::copy(
            repository,
            &target,
            pending,
            &CopyOptions {
                host: settings::host_name(),
            },
            counter,
        )?;
    }
    if forget && let Some(retention) = &destination.retention {
        if target.client_append_only() || target.repository_append_only() {
            if !nested.quiet {
                eprintln!(
                    "note: retention of copy {} skipped: the destination is append-only",
                    destination.name
                );
            }
        } else {
            for name in &sources {
                *removed += apply_retention(&target, host, name, &retention.0)?;
            }
            if !nested.quiet {
                outln!(
                    "retention of copy {}: removed {removed} snapshots",
                    destination.name
                );
            }
            if *removed > 0 {
                prune_after_retention(nested, &target)?;
            }
        }
    }
    *lag = Some(lag_now(&target)?);
    Ok(())
}

/// Records destinations' runs in the run state.
pub fn record(run_state: &mut RunState, runs: &[DestinationRun]) {
    for destination_run in runs {
        let new_state = destination_run.state(run_state.copies.get(&destination_run.name));
        run_state
            .copies
            .insert(destination_run.name.clone(), new_state);
    }
}

/// The summary line of a destination (`None`: nothing to say with `--quiet`).
pub fn summary_line(global: &GlobalArgs, destination_run: &DestinationRun) -> Option<String> {
    match &destination_run.error {
        None if global.quiet => None,
        None => Some(format!(
            "copy {}: ok, {} copied ({} added, {:.1} s), {} behind",
            destination_run.name,
            render::count(destination_run.snapshots_copied, "snapshot", "snapshots"),
            render::bytes(destination_run.bytes_added),
            destination_run.duration_seconds,
            destination_run.behind
        )),
        Some(error) => Some(format!(
            "copy {}: FAILED: {error} (behind by {})",
            destination_run.name,
            render::count(destination_run.behind, "snapshot", "snapshots")
        )),
    }
}

/// The `--json` line of a destination.
pub fn json_line(destination_run: &DestinationRun) -> serde_json::Value {
    serde_json::json!({
        "message_type": "copy",
        "destination": destination_run.name,
        "ok": destination_run.ok(),
        "error": destination_run.error,
        "snapshots_copied": destination_run.snapshots_copied,
        "bytes_added": destination_run.bytes_added,
        "snapshots_removed": destination_run.removed,
        "behind": destination_run.behind,
        "duration_seconds": destination_run.duration_seconds,
    })
}
