//! The run state of a config: what `cairn run` last did for each source, and its last check and
//! drill. `cairn status` and `cairn metrics` read it. A small JSON file on this machine (see
//! [`crate::config::Config::state_file`]), replaced atomically (temporary file, fsync, rename);
//! nothing of it is stored in the repository. The verdicts ([`source_health`], [`due`]) are
//! pure functions of the state and a given time.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::schedule::{self, Due, Schedule};

/// Everything remembered about one config's runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Per source name.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceState>,
    /// The last check `cairn run` did.
    #[serde(default)]
    pub check: Option<StepState>,
    /// The last drill `cairn run` did.
    #[serde(default)]
    pub drill: Option<StepState>,
    /// The last drill of each source (by `cairn run` or `cairn --config ... drill`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drills: BTreeMap<String, SourceDrill>,
    /// The last copy into each `[[copy]]` destination, by its name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub copies: BTreeMap<String, CopyState>,
}

/// The last copy `cairn run` made into one `[[copy]]` destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CopyState {
    /// When the last copy started.
    pub last_attempt: Timestamp,
    /// How long it took (copy, retention and prune of the destination).
    pub last_duration_seconds: f64,
    /// Whether it succeeded.
    pub last_ok: bool,
    /// Why it failed.
    #[serde(default)]
    pub last_error: Option<String>,
    /// When the last successful copy started.
    #[serde(default)]
    pub last_success: Option<Timestamp>,
    /// Snapshots the last copy committed.
    #[serde(default)]
    pub snapshots_copied: u64,
    /// Bytes the last copy added to the destination (compressed, encrypted, new data only).
    #[serde(default)]
    pub bytes_added: u64,
    /// Snapshots of the destination's sources it does not hold yet (the next copy's work).
    #[serde(default)]
    pub behind: u64,
    /// Per source: the time of the newest snapshot the destination holds a copy of.
    #[serde(default)]
    pub newest_copied: BTreeMap<String, Timestamp>,
}

impl CopyState {
    /// The time of the newest snapshot copied, of any source.
    pub fn newest_copy(&self) -> Option<Timestamp> {
        self.newest_copied.values().max().copied()
    }
}

/// The last drill of one source's snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceDrill {
    /// When it started.
    pub time: Timestamp,
    /// Whether every selected file was restored and verified.
    pub ok: bool,
    /// The snapshot drilled (full hex id).
    pub snapshot: String,
    /// The measured restore time (RTO) of what was restored.
    pub rto_seconds: f64,
    /// Bytes restored and verified.
    pub bytes_restored: u64,
    /// The share of the snapshot's files restored, as a percentage (absent: all).
    #[serde(default)]
    pub sample_percent: Option<f64>,
    /// What went wrong.
    #[serde(default)]
    pub error: Option<String>,
}

/// The last run of one source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceState {
    /// When the last run of the source started.
    pub last_attempt: Timestamp,
    /// How long it took, hooks included.
    pub last_duration_seconds: f64,
    /// Whether it succeeded (hooks, backup and retention).
    pub last_ok: bool,
    /// Why it failed.
    #[serde(default)]
    pub last_error: Option<String>,
    /// When the last successful run started.
    #[serde(default)]
    pub last_success: Option<Timestamp>,
    /// The snapshot of the last successful run (full hex id).
    #[serde(default)]
    pub last_snapshot: Option<String>,
    /// Bytes of content in the last successful run's snapshot (read or proven unchanged).
    #[serde(default)]
    pub bytes_processed: u64,
    /// Bytes the last successful run added to the repository.
    #[serde(default)]
    pub bytes_added: u64,
    /// Files and streams of the last successful run at least ten times smaller than in its
    /// parent snapshot, as `path: now, before` (an empty dump that exited 0).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub size_drops: Vec<String>,
    /// Source entries the last run could not read (its snapshot was written without them: a
    /// partial backup, exit 3); 0 when it read everything or wrote no snapshot.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub last_unreadable: u64,
    /// Files that changed while the last run read them (held as read: also partial).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub last_changed: u64,
}

impl SourceState {
    /// Whether the last run wrote a snapshot that misses or holds torn entries (backup exit 3).
    pub fn last_partial(&self) -> bool {
        self.last_ok && (self.last_unreadable > 0 || self.last_changed > 0)
    }
}

/// For `skip_serializing_if`: a count of zero is left out of the state file.
#[allow(clippy::trivially_copy_pass_by_ref)] // serde hands a reference
fn is_zero(count: &u64) -> bool {
    *count == 0
}

/// The last check or drill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepState {
    /// When it started.
    pub time: Timestamp,
    /// Whether it found everything intact.
    pub ok: bool,
    /// How long it took.
    pub duration_seconds: f64,
    /// What it did (`read-data-rotate 30`, `db 5%`).
    pub detail: String,
    /// What went wrong.
    #[serde(default)]
    pub error: Option<String>,
}

impl RunState {
    /// Reads the state file; a missing file is an empty state.
    ///
    /// # Errors
    /// The file exists but cannot be read or parsed.
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("run state {} is damaged: remove it", path.display())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(error) => {
                Err(error).with_context(|| format!("cannot read run state {}", path.display()))
            }
        }
    }

    /// Writes the state file atomically.
    ///
    /// # Errors
    /// The directory cannot be created or written.
    pub fn store(&self, path: &Path) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self).context("while encoding the run state")?;
        bytes.push(b'\n');
        write_atomically(path, &bytes)
            .with_context(|| format!("cannot write run state {}", path.display()))
    }
}

/// Replaces `path` with `bytes` so a concurrent reader sees the old or the new file, never a
/// part: a temporary file in the same directory, flushed to disk, then renamed over it. Creates
/// the directory when missing.
///
/// # Errors
/// Any I/O failure; the temporary file is removed then.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(directory)?;
    let mut temporary = tempfile::Builder::new()
        .prefix(".cairn-")
        .suffix(".tmp")
        .tempfile_in(directory)?;
    temporary.write_all(bytes)?;
    temporary.as_file().sync_all()?;
    // World-readable like a file written with the default umask (node_exporter runs as its own
    // user); tempfile creates 0600.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        temporary
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    temporary.persist(path).map_err(|error| error.error)?;
    Ok(())
}

/// A `[[copy]]` destination's state, for `cairn status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyHealth {
    /// Its last copy succeeded within the maximum age and left nothing behind.
    InStep,
    /// Snapshots of its sources are not in it yet (its last copy failed, or never ran since).
    Behind,
    /// Its last successful copy is older than the maximum age.
    Stale,
    /// No copy into it ever succeeded.
    Never,
}

/// How a destination stands at `now` (`max_age`: the longest of its sources').
pub fn copy_health(
    state: Option<&CopyState>,
    max_age: Option<Duration>,
    now: Timestamp,
) -> CopyHealth {
    let Some((state, success)) =
        state.and_then(|state| state.last_success.map(|success| (state, success)))
    else {
        return CopyHealth::Never;
    };
    match max_age {
        Some(max_age) if age(success, now) > max_age => CopyHealth::Stale,
        _ if state.behind > 0 || !state.last_ok => CopyHealth::Behind,
        _ => CopyHealth::InStep,
    }
}

/// A source's freshness, for `cairn status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Succeeded within its maximum age (or has none and succeeded once).
    Fresh,
    /// The last success is older than the maximum age.
    Overdue,
    /// It never succeeded.
    Never,
}

/// How fresh a source is at `now`. A last run that failed while the last success is still within
/// the maximum age is [`Health::Fresh`]: the maximum age is the tolerance.
pub fn source_health(
    state: Option<&SourceState>,
    max_age: Option<Duration>,
    now: Timestamp,
) -> Health {
    let Some(success) = state.and_then(|state| state.last_success) else {
        return Health::Never;
    };
    match max_age {
        Some(max_age) if age(success, now) > max_age => Health::Overdue,
        _ => Health::Fresh,
    }
}

/// The time schedules and the run state go by: now, or the RFC 3339 time in the environment
/// variable `CAIRN_SCHEDULE_NOW` (for tests of schedules over simulated days; snapshot times stay
/// the real clock's).
///
/// # Errors
/// The variable is set but is not an RFC 3339 time.
pub fn schedule_now() -> Result<Timestamp> {
    match std::env::var("CAIRN_SCHEDULE_NOW") {
        Ok(text) => text.parse().with_context(|| {
            format!("CAIRN_SCHEDULE_NOW={text:?} is not an RFC 3339 time: unset it")
        }),
        Err(_) => Ok(Timestamp::now()),
    }
}

/// Time from `then` to `now` (zero when `then` is later).
pub fn age(then: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(now.duration_since(then)).unwrap_or(Duration::ZERO)
}

/// Whether a thing last done at `last` (never: `None`) is due at `now` under `schedule` (`None`:
/// every time), local times taken in `zone` ([`schedule::due`] has the rule).
pub fn due(
    schedule: Option<&Schedule>,
    last: Option<Timestamp>,
    now: Timestamp,
    timer_period: Duration,
    zone: &jiff::tz::TimeZone,
) -> Due {
    let Some(schedule) = schedule else {
        return Due::Now;
    };
    let local = |time: Timestamp| zone.to_datetime(time);
    schedule::due(schedule, last.map(local), local(now), timer_period)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    fn succeeded_at(text: &str) -> SourceState {
        SourceState {
            last_attempt: time(text),
            last_duration_seconds: 1.5,
            last_ok: true,
            last_error: None,
            last_success: Some(time(text)),
            last_snapshot: Some("ab".repeat(32)),
            bytes_processed: 10,
            bytes_added: 2,
            size_drops: Vec::new(),
            last_unreadable: 0,
            last_changed: 0,
        }
    }

    #[test]
    fn health_by_max_age() {
        let now = time("2024-06-02T03:00:00Z");
        let yesterday = succeeded_at("2024-06-01T03:00:00Z");
        let hours = |count: u64| Some(Duration::from_secs(count * 3600));
        assert_eq!(
            source_health(Some(&yesterday), hours(26), now),
            Health::Fresh
        );
        assert_eq!(
            source_health(Some(&yesterday), hours(24), now),
            Health::Fresh
        );
        assert_eq!(
            source_health(Some(&yesterday), hours(23), now),
            Health::Overdue
        );
        assert_eq!(source_health(Some(&yesterday), None, now), Health::Fresh);
        assert_eq!(source_health(None, hours(26), now), Health::Never);
        let failed_only = SourceState {
            last_ok: false,
            last_success: None,
            last_error: Some("boom".into()),
            ..yesterday.clone()
        };
        assert_eq!(source_health(Some(&failed_only), None, now), Health::Never);
        let failed_after_success = SourceState {
            last_attempt: time("2024-06-02T02:00:00Z"),
            last_ok: false,
            ..yesterday
        };
        assert_eq!(
            source_health(Some(&failed_after_success), hours(26), now),
            Health::Fresh,
            "one failed night within max_age is tolerated"
        );
    }

    #[test]
    fn copy_health_by_lag_and_age() {
        let now = time("2024-06-02T03:00:00Z");
        let hours = |count: u64| Some(Duration::from_secs(count * 3600));
        let copied = CopyState {
            last_attempt: time("2024-06-01T03:00:00Z"),
            last_duration_seconds: 2.0,
            last_ok: true,
            last_error: None,
            last_success: Some(time("2024-06-01T03:00:00Z")),
            snapshots_copied: 2,
            bytes_added: 10,
            behind: 0,
            newest_copied: BTreeMap::from([("db".into(), time("2024-06-01T02:59:00Z"))]),
        };
        assert_eq!(
            copy_health(Some(&copied), hours(26), now),
            CopyHealth::InStep
        );
        assert_eq!(copy_health(Some(&copied), None, now), CopyHealth::InStep);
        assert_eq!(
            copy_health(Some(&copied), hours(23), now),
            CopyHealth::Stale
        );
        assert_eq!(copy_health(None, hours(26), now), CopyHealth::Never);
        let failed = CopyState {
            last_attempt: time("2024-06-02T02:00:00Z"),
            last_ok: false,
            last_error: Some("wrong password".into()),
            behind: 1,
            ..copied.clone()
        };
        assert_eq!(
            copy_health(Some(&failed), hours(26), now),
            CopyHealth::Behind
        );
        assert_eq!(
            copy_health(Some(&failed), hours(23), now),
            CopyHealth::Stale
        );
        let never = CopyState {
            last_success: None,
            ..failed
        };
        assert_eq!(copy_health(Some(&never), hours(26), now), CopyHealth::Never);
        assert_eq!(copied.newest_copy(), Some(time("2024-06-01T02:59:00Z")));
    }

    #[test]
    fn due_steps_in_local_time() {
        let hour = Duration::from_hours(1);
        let daily = Schedule {
            every: Duration::from_hours(24),
            window: Some("01:00-05:00".parse().expect("window")),
        };
        let plus_two = jiff::tz::TimeZone::fixed(jiff::tz::offset(2));
        // 01:30 at UTC+2 is 23:30 UTC the day before.
        let now = time("2024-06-07T23:30:00Z");
        assert_eq!(due(None, None, now, hour, &plus_two), Due::Now);
        assert_eq!(due(Some(&daily), None, now, hour, &plus_two), Due::Now);
        assert!(matches!(
            due(Some(&daily), None, now, hour, &jiff::tz::TimeZone::UTC),
            Due::NotBefore(_)
        ));
        // Yesterday's run 3 minutes later than today's start: still due (the old rule skipped).
        let yesterday = Some(time("2024-06-06T23:33:00Z"));
        assert_eq!(due(Some(&daily), yesterday, now, hour, &plus_two), Due::Now);
        assert_eq!(
            due(Some(&daily), Some(now), now, hour, &plus_two),
            Due::NotBefore("2024-06-09T01:00".parse().expect("civil"))
        );
    }

    #[test]
    fn state_round_trips_through_its_file() {
        let directory = tempfile::tempdir().expect("temp dir");
        let path = directory.path().join("deeper/cairn.json");
        assert_eq!(
            RunState::load(&path).expect("missing is empty"),
            RunState::default()
        );
        let mut state = RunState::default();
        state
            .sources
            .insert("db".into(), succeeded_at("2024-06-01T03:00:00Z"));
        state.check = Some(StepState {
            time: time("2024-06-01T04:00:00Z"),
            ok: false,
            duration_seconds: 3.0,
            detail: "read-data-rotate 30".into(),
            error: Some("damaged".into()),
        });
        state.store(&path).expect("written");
        assert_eq!(RunState::load(&path).expect("read"), state);
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().expect("parent"))
            .expect("listing")
            .collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left");
        std::fs::write(&path, b"{not json").expect("overwrite");
        let message = format!("{:#}", RunState::load(&path).expect_err("damaged"));
        assert!(message.contains("is damaged"), "{message}");
    }
}
