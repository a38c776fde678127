//! `cairn.toml`: the configuration file of `cairn run`, `status` and `metrics` (and the repository
//! settings of every other command). Owns the file's schema, its validation and the one-line
//! errors that name the file, line and key; reads the file and nothing else.
//!
//! Precedence: a command-line option beats its environment variable, which beats the file, which
//! beats the built-in default ([`Config::apply_to`]).

use std::collections::BTreeSet;
use std::fmt::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use cairn_store::retention::{KeepWithin, RetentionPolicy, TagSet};
use cairn_store::sweep::Subset;
use indexmap::IndexMap;
use serde::{Deserialize, Deserializer};

use crate::args::GlobalArgs;
use crate::schedule::{DEFAULT_TIMER_PERIOD, DrillSources, Schedule, Window};

/// The tag `cairn run` gives every snapshot of a source; retention, status and metrics find a
/// source's snapshots by it.
pub fn source_tag(source: &str) -> String {
    format!("source:{source}")
}

/// A config file that cannot be used: where and why, on one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    /// The config file.
    pub path: PathBuf,
    /// 1-based line of the offending key or value, when known.
    pub line: Option<usize>,
    /// Dotted path of the offending key (`sources.db.max_age`), empty for the whole file.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    fn render(&self) -> String {
        let mut text = self.path.display().to_string();
        if let Some(line) = self.line {
            let _ = write!(text, ":{line}");
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        if !self.key.is_empty() {
            text.push_str(&self.key);
            text.push_str(": ");
        }
        text.push_str(&self.message);
        text
    }

    /// An error about the command line's use of the config (no file position; an empty `path`
    /// when there is no file).
    pub fn usage(path: &Path, key: &str, message: impl Into<String>) -> Self {
        Self {
            path: path.to_owned(),
            line: None,
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// A value read from its string form through [`FromStr`] (`"30d"`, `"5%"`, `"3/7"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Parsed<T>(pub T);

impl<'de, T> Deserialize<'de> for Parsed<T>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map(Self).map_err(serde::de::Error::custom)
    }
}

/// A size written like `"500K"`, `"20M"` or `"1.5G"` ([`cairn_store::units::parse_size`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl FromStr for Size {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        cairn_store::units::parse_size(text).map(Self)
    }
}

/// A transfer rate in bytes per second, written like `"512"` (KiB/s) or `"2M"`
/// ([`cairn_store::units::parse_rate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate(pub u64);

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        cairn_store::units::parse_rate(text).map(Self)
    }
}

/// Default age past which an unended backup session is stale: a nightly backup that has not
/// ended after a whole day crashed, stalls, or runs on a machine that has not run cairn since.
pub const DEFAULT_STALE_SESSION_AGE: Duration = Duration::from_hours(24);

/// A length of time written like `26h`, `7d`, `1week` or `90min` (humantime syntax).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Age(pub Duration);

impl FromStr for Age {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let duration = humantime::parse_duration(text.trim()).map_err(|error| {
            format!("invalid duration {text:?} ({error}): write it like 26h, 7d or 90min")
        })?;
        if duration.is_zero() {
            return Err(format!(
                "invalid duration {text:?}: must be longer than zero"
            ));
        }
        Ok(Self(duration))
    }
}

impl fmt::Display for Age {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Age {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Parsed::<Self>::deserialize(deserializer).map(|parsed| parsed.0)
    }
}

/// A whole `cairn.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory of the run-state file (default: `/var/lib/cairn` as root, else
    /// `$XDG_STATE_HOME/cairn`).
    pub state_dir: Option<PathBuf>,
    /// Where the repository is and how to open it.
    #[serde(default)]
    pub repository: RepositoryConfig,
    /// Settings every source inherits.
    #[serde(default)]
    pub defaults: Defaults,
    /// Commands run once around the whole run.
    #[serde(default)]
    pub hooks: Hooks,
    /// The sources, in file order (the order `cairn run` backs them up in).
    #[serde(default)]
    pub sources: IndexMap<String, SourceConfig>,
    /// The check slice of each run; absent: `cairn run` does not check.
    pub check: Option<CheckConfig>,
    /// The restore drill; absent: `cairn run` does not drill.
    pub drill: Option<DrillConfig>,
    /// Where metrics go.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// How often the timer starts `cairn run` (default 1h): the schedules' tolerance
    /// ([`crate::schedule`]).
    pub timer_period: Option<Age>,
    /// `[[copy]]`: second repositories `cairn run` copies the sources' snapshots into, in file
    /// order.
    #[serde(default, rename = "copy")]
    pub copies: Vec<CopyDestination>,
}

/// `[repository] options`, whose store limits must parse.
fn store_options<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<IndexMap<String, String>, D::Error> {
    let options = IndexMap::<String, String>::deserialize(deserializer)?;
    let pairs: Vec<(String, String)> = options
        .iter()
        .map(|(key, value)| (key.to_ascii_lowercase(), value.clone()))
        .collect();
    cairn_store::backend::object_store::StoreLimits::from_options(&pairs)
        .map_err(serde::de::Error::custom)?;
    Ok(options)
}

/// `[repository]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    /// Location, as `--repo`.
    pub url: Option<String>,
    /// Backend options, as `-o key=value`; the limits cairn reads itself (`stall_timeout`,
    /// `retries`, ...) are checked here, so a bad value is named with its line.
    #[serde(default, deserialize_with = "store_options")]
    pub options: IndexMap<String, String>,
    /// Password file, as `--password-file`.
    pub password_file: Option<PathBuf>,
    /// Password command, as `--password-command`.
    pub password_command: Option<String>,
    /// Cache directory, as `--cache-dir`.
    pub cache_dir: Option<PathBuf>,
    /// Never delete, as `--append-only` (retention is then skipped by `cairn run`).
    #[serde(default)]
    pub append_only: bool,
    /// A backup session unended for longer than this is stale: `status` and the metrics show
    /// it (default 24h; `--stale-session-age` overrides it).
    pub stale_session_age: Option<Age>,
    /// Whether `cairn run` stores this config file in the repository (default true), so
    /// `cairn recover` can start from the URL and the password alone.
    pub store_config: Option<bool>,
    /// Upload limit, as `--limit-upload` (`"512"` KiB/s, `"2M"`).
    pub limit_upload: Option<Parsed<Rate>>,
    /// Download limit, as `--limit-download`.
    pub limit_download: Option<Parsed<Rate>>,
}

/// `[defaults]`: what a source does not set itself.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Host name recorded in snapshots (default: this machine's).
    pub host: Option<String>,
    /// Tags added to every source's snapshots.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Retention of sources without their own.
    pub retention: Option<Retention>,
    /// `max_age` of sources without their own.
    pub max_age: Option<Age>,
}

/// Shell commands run before and after a backup, and when it fails.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    /// Run in order before; a failing one fails the source (or, global, every source).
    #[serde(default)]
    pub before: Vec<String>,
    /// Run in order after success; a failing one fails the source (its snapshot stays).
    #[serde(default)]
    pub after: Vec<String>,
    /// Run in order after any failure, with `CAIRN_ERROR` set.
    #[serde(default)]
    pub on_failure: Vec<String>,
}

/// What a source reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// Files and directories, with their exclusions.
    Paths {
        /// Absolute paths.
        paths: Vec<PathBuf>,
        /// Glob patterns to leave out.
        exclude: Vec<String>,
        /// Files of patterns, one per line.
        exclude_file: Vec<PathBuf>,
        /// Leave out directories holding a file of this name.
        exclude_if_present: Vec<String>,
        /// Stay on the file system of each path.
        one_file_system: bool,
        /// Glob patterns to leave out, whatever their case.
        iexclude: Vec<String>,
        /// Files of such patterns, one per line.
        iexclude_file: Vec<PathBuf>,
        /// Leave out directories tagged as caches by a `CACHEDIR.TAG`.
        exclude_caches: bool,
        /// Leave out files larger than this many bytes.
        exclude_larger_than: Option<u64>,
        /// Files listing more paths, one per line.
        files_from: Vec<PathBuf>,
        /// Files listing more paths, NUL-separated.
        files_from_raw: Vec<PathBuf>,
    },
    /// A shell command's standard output, stored as one stream.
    Command {
        /// The command line (`sh -c`).
        command: String,
        /// The stream's name in the snapshot.
        stream_name: String,
    },
}

/// `[sources.NAME]`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawSource")]
pub struct SourceConfig {
    /// What to read.
    pub kind: SourceKind,
    /// Tags of this source's snapshots (besides the defaults' and `source:NAME`).
    pub tags: Vec<String>,
    /// Retention of this source (replaces the default one whole).
    pub retention: Option<Retention>,
    /// How old the last success may be before `cairn status` fails.
    pub max_age: Option<Age>,
    /// This source's hooks.
    pub hooks: Hooks,
    /// When `cairn run` backs it up (absent: every run).
    pub schedule: Option<Schedule>,
    /// The command `cairn recover` pipes a command source's stream into (`sh -c`).
    pub restore: Option<String>,
}

/// `[sources.NAME]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    #[serde(default)]
    paths: Vec<PathBuf>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    exclude_file: Vec<PathBuf>,
    #[serde(default)]
    exclude_if_present: Vec<String>,
    #[serde(default)]
    one_file_system: bool,
    #[serde(default)]
    iexclude: Vec<String>,
    #[serde(default)]
    iexclude_file: Vec<PathBuf>,
    #[serde(default)]
    exclude_caches: bool,
    exclude_larger_than: Option<Parsed<Size>>,
    #[serde(default)]
    files_from: Vec<PathBuf>,
    #[serde(default)]
    files_from_raw: Vec<PathBuf>,
    command: Option<String>,
    stream_name: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    retention: Option<Retention>,
    max_age: Option<Age>,
    #[serde(default)]
    before: Vec<String>,
    #[serde(default)]
    after: Vec<String>,
    #[serde(default)]
    on_failure: Vec<String>,
    every: Option<Age>,
    window: Option<Parsed<Window>>,
    restore: Option<String>,
}

/// A schedule from its keys: a window needs a period.
fn schedule_of(every: Option<Age>, window: Option<Window>) -> Result<Option<Schedule>, String> {
    match (every, window) {
        (None, None) => Ok(None),
        (None, Some(_)) => {
            Err("window needs every (how often to run inside it, like \"1d\")".into())
        }
        (Some(every), window) => Ok(Some(Schedule {
            every: every.0,
            window,
        })),
    }
}

impl TryFrom<RawSource> for SourceConfig {
    type Error = String;

    fn try_from(raw: RawSource) -> Result<Self, Self::Error> {
        let schedule = schedule_of(raw.every, raw.window.map(|window| window.0))?;
        if raw.restore.is_some() && raw.command.is_none() {
            return Err(
                "restore is for command sources (a paths source is restored to its paths)".into(),
            );
        }
        let listed = !raw.files_from.is_empty() || !raw.files_from_raw.is_empty();
        let kind = match (raw.paths.is_empty() && !listed, raw.command) {
            (false, Some(_)) => return Err("give either paths or command, not both".into()),
            (true, None) => {
                return Err("give paths = [...] (or files_from) or command = \"...\"".into());
            }
            (false, None) => {
                if let Some(relative) = raw
                    .paths
                    .iter()
                    .chain(&raw.files_from)
                    .chain(&raw.files_from_raw)
                    .find(|path| !path.is_absolute())
                {
                    return Err(format!(
                        "path {} is relative: give absolute paths (a timer's working directory is /)",
                        relative.display()
                    ));
                }
                if raw.stream_name.is_some() {
                    return Err("stream_name is for command sources".into());
                }
                SourceKind::Paths {
                    paths: raw.paths,
                    exclude: raw.exclude,
                    exclude_file: raw.exclude_file,
                    exclude_if_present: raw.exclude_if_present,
                    one_file_system: raw.one_file_system,
                    iexclude: raw.iexclude,
                    iexclude_file: raw.iexclude_file,
                    exclude_caches: raw.exclude_caches,
                    exclude_larger_than: raw.exclude_larger_than.map(|size| size.0.0),
                    files_from: raw.files_from,
                    files_from_raw: raw.files_from_raw,
                }
            }
            (true, Some(command)) => {
                if !raw.exclude.is_empty()
                    || !raw.exclude_file.is_empty()
                    || !raw.exclude_if_present.is_empty()
                    || raw.one_file_system
                    || !raw.iexclude.is_empty()
                    || !raw.iexclude_file.is_empty()
                    || raw.exclude_caches
                    || raw.exclude_larger_than.is_some()
                    || !raw.files_from.is_empty()
                    || !raw.files_from_raw.is_empty()
                {
                    return Err(
                        "exclude, exclude_file, exclude_if_present, one_file_system, iexclude, iexclude_file, exclude_caches, exclude_larger_than, files_from and files_from_raw are for paths sources".into(),
                    );
                }
                if command.trim().is_empty() {
                    return Err("command is empty".into());
                }
                let Some(stream_name) = raw.stream_name else {
                    return Err(
                        "a command source needs stream_name, its name in the snapshot (for example \"app.archive\")".into(),
                    );
                };
                if stream_name.is_empty() || stream_name.contains('/') {
                    return Err(format!(
                        "stream_name {stream_name:?} must be a non-empty name without /"
                    ));
                }
                SourceKind::Command {
                    command,
                    stream_name,
                }
            }
        };
        Ok(Self {
            kind,
            tags: raw.tags,
            retention: raw.retention,
            max_age: raw.max_age,
            hooks: Hooks {
                before: raw.before,
                after: raw.after,
                on_failure: raw.on_failure,
            },
            schedule,
            restore: raw.restore,
        })
    }
}

/// A retention policy as written (`keep_daily = 7` ...), never empty.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawRetention")]
pub struct Retention(pub RetentionPolicy);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(clippy::struct_field_names)] // the keys of the file
struct RawRetention {
    #[serde(default)]
    keep_last: u32,
    #[serde(default)]
    keep_hourly: u32,
    #[serde(default)]
    keep_daily: u32,
    #[serde(default)]
    keep_weekly: u32,
    #[serde(default)]
    keep_monthly: u32,
    #[serde(default)]
    keep_yearly: u32,
    keep_within: Option<Parsed<KeepWithin>>,
    #[serde(default)]
    keep_tags: Vec<Parsed<TagSet>>,
}

impl TryFrom<RawRetention> for Retention {
    type Error = String;

    fn try_from(raw: RawRetention) -> Result<Self, Self::Error> {
        let policy = RetentionPolicy {
            keep_last: raw.keep_last,
            keep_hourly: raw.keep_hourly,
            keep_daily: raw.keep_daily,
            keep_weekly: raw.keep_weekly,
            keep_monthly: raw.keep_monthly,
            keep_yearly: raw.keep_yearly,
            keep_within: raw.keep_within.map(|within| within.0),
            keep_tags: raw.keep_tags.into_iter().map(|tags| tags.0).collect(),
        };
        if policy.is_empty() {
            return Err(
                "retention keeps nothing: give at least one of keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly, keep_within, keep_tags (or leave retention out to keep everything)".into(),
            );
        }
        Ok(Self(policy))
    }
}

/// How much data the check of a run reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CheckData {
    /// Structure only.
    Structure,
    /// Every pack (`--read-data`).
    All,
    /// A share or slice (`--read-data-subset`).
    Subset(Subset),
    /// The rotating sweep (`--read-data-rotate DAYS`).
    Rotate(u32),
}

/// `[check]`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "RawCheck")]
pub struct CheckConfig {
    /// What to read.
    pub data: CheckData,
    /// Check only when due (absent: every run).
    pub schedule: Option<Schedule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    #[serde(default)]
    read_data: bool,
    read_data_subset: Option<Parsed<Subset>>,
    read_data_rotate: Option<u32>,
    every: Option<Age>,
    window: Option<Parsed<Window>>,
}

impl TryFrom<RawCheck> for CheckConfig {
    type Error = String;

    fn try_from(raw: RawCheck) -> Result<Self, Self::Error> {
        let data = match (raw.read_data, raw.read_data_subset, raw.read_data_rotate) {
            (false, None, None) => CheckData::Structure,
            (true, None, None) => CheckData::All,
            (false, Some(subset), None) => CheckData::Subset(subset.0),
            (false, None, Some(0)) => {
                return Err("read_data_rotate must be at least 1 (days)".into());
            }
            (false, None, Some(days)) => CheckData::Rotate(days),
            _ => {
                return Err(
                    "give at most one of read_data, read_data_subset, read_data_rotate".into(),
                );
            }
        };
        Ok(Self {
            data,
            schedule: schedule_of(raw.every, raw.window.map(|window| window.0))?,
        })
    }
}

/// `[drill]`: restore the latest snapshot of each source into a scratch directory now and then.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawDrill")]
pub struct DrillConfig {
    /// The period within which every source is drilled, and the window (absent: every run
    /// drills).
    pub schedule: Option<Schedule>,
    /// One source a drill (round robin) or all of them.
    pub sources: DrillSources,
    /// Share of each snapshot's files to restore (default: all).
    pub sample: Option<f64>,
    /// Parent of the scratch directory (default: the system temporary directory).
    pub scratch: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDrill {
    every: Option<Age>,
    window: Option<Parsed<Window>>,
    sources: Option<Parsed<DrillSources>>,
    sample: Option<Parsed<Subset>>,
    scratch: Option<PathBuf>,
}

impl TryFrom<RawDrill> for DrillConfig {
    type Error = String;

    fn try_from(raw: RawDrill) -> Result<Self, Self::Error> {
        let sample = match raw.sample {
            None => None,
            Some(Parsed(Subset::Fraction(fraction))) => Some(fraction),
            Some(Parsed(Subset::Slice(_))) => {
                return Err("sample is a percentage, for example \"5%\"".into());
            }
        };
        Ok(Self {
            schedule: schedule_of(raw.every, raw.window.map(|window| window.0))?,
            sources: raw.sources.map(|sources| sources.0).unwrap_or_default(),
            sample,
            scratch: raw.scratch,
        })
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// The Prometheus text file `cairn run` and `cairn metrics` write (atomically).
    pub file: Option<PathBuf>,
}

/// `[[copy]]`: a second repository `cairn run` copies snapshots into, validated.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawCopyDestination")]
pub struct CopyDestination {
    /// Its name in `status`, the metrics' `destination` label and the run state.
    pub name: String,
    /// Location, as `--repo`.
    pub url: String,
    /// Backend options of this repository only, as `-o key=value`.
    pub options: IndexMap<String, String>,
    /// Password file of this repository (it shares no password with the source).
    pub password_file: Option<PathBuf>,
    /// Password command of this repository.
    pub password_command: Option<String>,
    /// Cache directory (default: the repository's).
    pub cache_dir: Option<PathBuf>,
    /// The sources whose snapshots it receives; empty: every source.
    pub sources: Vec<String>,
    /// Its own retention, applied to the copies of each source (absent: keep every copy).
    pub retention: Option<Retention>,
    /// Upload limit in bytes per second (default: the repository's).
    pub limit_upload: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCopyDestination {
    name: String,
    url: String,
    #[serde(default, deserialize_with = "store_options")]
    options: IndexMap<String, String>,
    password_file: Option<PathBuf>,
    password_command: Option<String>,
    cache_dir: Option<PathBuf>,
    sources: Option<Vec<String>>,
    retention: Option<Retention>,
    limit_upload: Option<Parsed<Rate>>,
}

impl TryFrom<RawCopyDestination> for CopyDestination {
    type Error = String;

    fn try_from(raw: RawCopyDestination) -> Result<Self, Self::Error> {
        if !valid_source_name(&raw.name) {
            return Err(format!(
                "name {:?}: a destination name may hold only letters, digits, '_', '.' and '-'",
                raw.name
            ));
        }
        if raw.url.trim().is_empty() {
            return Err("url is empty".into());
        }
        if raw.password_file.is_some() == raw.password_command.is_some() {
            return Err(
                "give password_file or password_command (one: the destination shares no password with the repository)".into(),
            );
        }
        if raw.sources.as_ref().is_some_and(Vec::is_empty) {
            return Err(
                "sources = [] copies nothing: name sources, or leave sources out to copy all"
                    .into(),
            );
        }
        Ok(Self {
            name: raw.name,
            url: raw.url,
            options: raw.options,
            password_file: raw.password_file,
            password_command: raw.password_command,
            cache_dir: raw.cache_dir,
            sources: raw.sources.unwrap_or_default(),
            retention: raw.retention,
            limit_upload: raw.limit_upload.map(|rate| rate.0.0),
        })
    }
}

/// A repository location compared with another: without `file://` and trailing slashes.
fn same_location(one: &str, other: &str) -> bool {
    let normal = |location: &str| {
        let location = location.trim();
        let location = location.strip_prefix("file://").unwrap_or(location);
        location.trim_end_matches('/').to_owned()
    };
    normal(one) == normal(other)
}

/// The line of the `index`-th (0-based) `[[copy]]` header, for errors found after parsing.
fn copy_line(text: &str, index: usize) -> Option<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| {
            let compact: String = line.chars().filter(|c| !c.is_whitespace()).collect();
            compact.starts_with("[[copy]]")
        })
        .nth(index)
        .map(|(number, _)| number + 1)
}

/// Whether a source name is usable in tags, metric labels and file names.
fn valid_source_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|character| character.is_ascii_alphanumeric() || "_.-".contains(character))
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|byte| *byte == b'\n')
        .count()
        + 1
}

/// The line of `[sources.NAME]` (or `sources.NAME.` keys), for errors found after parsing.
fn source_line(text: &str, name: &str) -> Option<usize> {
    let header = format!("[sources.{name}");
    let quoted = format!("[sources.\"{name}\"");
    text.lines()
        .position(|line| {
            let line = line.trim_start();
            line.starts_with(&header) || line.starts_with(&quoted)
        })
        .map(|index| index + 1)
}

impl Config {
    /// Parses and validates a config file's text; `path` only names it in errors.
    ///
    /// # Errors
    /// [`ConfigError`] for invalid TOML, an unknown key, a value of the wrong type or form, or
    /// an inconsistent section.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let error_at = |line: Option<usize>, key: String, message: String| ConfigError {
            path: path.to_owned(),
            line,
            key,
            message,
        };
        let deserializer = toml::de::Deserializer::parse(text).map_err(|error| {
            error_at(
                error.span().map(|span| line_of(text, span.start)),
                String::new(),
                error.message().trim().to_owned(),
            )
        })?;
        let config: Self = serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let key = error.path().to_string();
            let inner = error.into_inner();
            error_at(
                inner.span().map(|span| line_of(text, span.start)),
                if key == "." { String::new() } else { key },
                inner.message().trim().to_owned(),
            )
        })?;
        for name in config.sources.keys() {
            if !valid_source_name(name) {
                return Err(error_at(
                    source_line(text, name),
                    format!("sources.{name}"),
                    "a source name may hold only letters, digits, '_', '.' and '-'".into(),
                ));
            }
        }
        config
            .validate_copies()
            .map_err(|(index, key, message)| error_at(copy_line(text, index), key, message))?;
        Ok(config)
    }

    /// The `[[copy]]` rules serde cannot see: unique names, known sources, another location
    /// than the repository's. The error names the destination's index, key and problem.
    fn validate_copies(&self) -> Result<(), (usize, String, String)> {
        for (index, destination) in self.copies.iter().enumerate() {
            let key = |field: &str| format!("copy[{index}].{field}");
            if self.copies[..index]
                .iter()
                .any(|earlier| earlier.name == destination.name)
            {
                return Err((
                    index,
                    key("name"),
                    format!(
                        "a second destination named {:?}: names must be unique",
                        destination.name
                    ),
                ));
            }
            if let Some(unknown) = destination
                .sources
                .iter()
                .find(|name| !self.sources.contains_key(*name))
            {
                let known: Vec<&str> = self.sources.keys().map(String::as_str).collect();
                return Err((
                    index,
                    key("sources"),
                    format!(
                        "no source {unknown:?} in the config (sources: {})",
                        known.join(", ")
                    ),
                ));
            }
            if let Some(earlier) = self.copies[..index]
                .iter()
                .find(|earlier| same_location(&earlier.url, &destination.url))
            {
                return Err((
                    index,
                    key("url"),
                    format!("the same location as destination {:?}", earlier.name),
                ));
            }
            if self
                .repository
                .url
                .as_deref()
                .is_some_and(|url| same_location(url, &destination.url))
            {
                return Err((
                    index,
                    key("url"),
                    "the repository itself: a copy needs a second repository".into(),
                ));
            }
        }
        Ok(())
    }

    /// The sources a destination receives, in file order.
    pub fn sources_of<'a>(&'a self, destination: &'a CopyDestination) -> Vec<&'a str> {
        self.sources
            .keys()
            .filter(|name| destination.sources.is_empty() || destination.sources.contains(name))
            .map(String::as_str)
            .collect()
    }

    /// The age past which a destination's last successful copy is stale: the longest
    /// `max_age` of its sources (none: never stale by age).
    pub fn max_age_of_destination(&self, destination: &CopyDestination) -> Option<Duration> {
        self.sources_of(destination)
            .into_iter()
            .filter_map(|name| self.max_age_of(&self.sources[name]))
            .max()
    }

    /// Reads and parses a config file.
    ///
    /// # Errors
    /// [`ConfigError`] when it cannot be read or is invalid.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError {
            path: path.to_owned(),
            line: None,
            key: String::new(),
            message: format!("cannot read the config file: {error}"),
        })?;
        Self::parse(&text, path)
    }

    /// Fills the repository settings the command line and environment left unset.
    pub fn apply_to(&self, global: &mut GlobalArgs) {
        let repository = &self.repository;
        if global.repo.is_none() {
            global.repo.clone_from(&repository.url);
        }
        if global.password_file.is_none() && global.password_command.is_none() {
            global.password_file.clone_from(&repository.password_file);
            global
                .password_command
                .clone_from(&repository.password_command);
        }
        if global.cache_dir.is_none() {
            global.cache_dir.clone_from(&repository.cache_dir);
        }
        global.append_only |= repository.append_only;
        let given: BTreeSet<String> = global
            .options
            .iter()
            .filter_map(|option| option.split_once('='))
            .map(|(key, _)| key.trim().to_ascii_lowercase().replace('-', "_"))
            .collect();
        // A limit given on the command line (flag, environment or `-o`) beats the file's.
        if global.limit_upload.is_none() && !given.contains("limit_upload") {
            global.limit_upload = repository.limit_upload.map(|rate| rate.0.0);
        }
        if global.limit_download.is_none() && !given.contains("limit_download") {
            global.limit_download = repository.limit_download.map(|rate| rate.0.0);
        }
        let from_file = repository
            .options
            .iter()
            .filter(|(key, _)| !given.contains(&key.to_ascii_lowercase().replace('-', "_")))
            .map(|(key, value)| format!("{key}={value}"));
        global.options.splice(0..0, from_file);
    }

    /// The sources to run: all, or the named ones in the order given.
    ///
    /// # Errors
    /// A message naming the unknown source and the known ones.
    pub fn select<'a>(
        &'a self,
        names: &'a [String],
    ) -> Result<Vec<(&'a str, &'a SourceConfig)>, String> {
        if names.is_empty() {
            return Ok(self
                .sources
                .iter()
                .map(|(name, source)| (name.as_str(), source))
                .collect());
        }
        names
            .iter()
            .map(|name| {
                self.sources
                    .get(name)
                    .map(|source| (name.as_str(), source))
                    .ok_or_else(|| {
                        let known: Vec<&str> = self.sources.keys().map(String::as_str).collect();
                        format!(
                            "no source {name:?} in the config (sources: {})",
                            known.join(", ")
                        )
                    })
            })
            .collect()
    }

    /// The retention of a source: its own, else the default, else none (keep everything).
    pub fn retention_of<'a>(&'a self, source: &'a SourceConfig) -> Option<&'a RetentionPolicy> {
        source
            .retention
            .as_ref()
            .or(self.defaults.retention.as_ref())
            .map(|retention| &retention.0)
    }

    /// How often the timer starts `cairn run`: the schedules' tolerance.
    pub fn timer_period(&self) -> Duration {
        self.timer_period.map_or(DEFAULT_TIMER_PERIOD, |age| age.0)
    }

    /// Whether `cairn run` stores this config file in the repository.
    pub fn stores_config(&self) -> bool {
        self.repository.store_config.unwrap_or(true)
    }

    /// The age past which an unended backup session is stale.
    pub fn stale_session_age(&self) -> Duration {
        self.repository
            .stale_session_age
            .map_or(DEFAULT_STALE_SESSION_AGE, |age| age.0)
    }

    /// The maximum age of a source's last success: its own, else the default.
    pub fn max_age_of(&self, source: &SourceConfig) -> Option<Duration> {
        source.max_age.or(self.defaults.max_age).map(|age| age.0)
    }

    /// The tags of a source's snapshots: the defaults', the source's, and `source:NAME`.
    pub fn tags_of(&self, name: &str, source: &SourceConfig) -> Vec<String> {
        let mut tags = self.defaults.tags.clone();
        for tag in &source.tags {
            if !tags.contains(tag) {
                tags.push(tag.clone());
            }
        }
        tags.push(source_tag(name));
        tags
    }

    /// The run-state file of the config at `config_path`: `<state_dir>/<config file stem>.json`.
    pub fn state_file(&self, config_path: &Path, running_as_root: bool) -> PathBuf {
        let directory = self.state_dir.clone().unwrap_or_else(|| {
            if running_as_root {
                PathBuf::from("/var/lib/cairn")
            } else {
                dirs::state_dir()
                    .or_else(dirs::cache_dir)
                    .unwrap_or_else(std::env::temp_dir)
                    .join("cairn")
            }
        });
        let stem = config_path.file_stem().map_or_else(
            || "cairn".into(),
            |stem| stem.to_string_lossy().into_owned(),
        );
        directory.join(format!("{stem}.json"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/cairn/cairn.toml"))
    }

    fn error(text: &str) -> String {
        parse(text).expect_err("invalid config").to_string()
    }

    const FULL: &str = r#"
state_dir = "/var/lib/cairn"

[repository]
url = "s3://backups/web1"
options = { region = "eu-central-1" }
password_file = "/etc/cairn/password"
cache_dir = "/var/cache/cairn"

[defaults]
tags = ["nightly"]
max_age = "26h"
retention = { keep_daily = 7, keep_weekly = 4, keep_within = "2d", keep_tags = ["keep,forever"] }

[hooks]
on_failure = ["logger cairn failed"]

[sources.db]
command = "mongodump --archive"
stream_name = "app.archive"
before = ["echo before"]

[sources.etc]
paths = ["/etc"]
exclude = ["*.tmp"]
one_file_system = true
retention = { keep_last = 3 }
max_age = "8d"

[check]
read_data_rotate = 30

[drill]
every = "7d"
sample = "5%"

[metrics]
file = "/var/lib/node_exporter/textfile_collector/cairn.prom"
"#;

    #[test]
    fn bad_store_limits_are_named_with_their_line() {
        let message = error("[repository]\nurl = \"/r\"\noptions = { stall_timeout = \"0s\" }\n");
        assert!(
            message.starts_with("/etc/cairn/cairn.toml:3: repository.options"),
            "{message}"
        );
        assert!(message.contains("option stall_timeout=0s"), "{message}");
        let config = parse("[repository]\noptions = { stall-timeout = \"1m\", region = \"x\" }\n")
            .expect("valid");
        assert_eq!(config.repository.options.len(), 2);
    }

    #[test]
    fn a_full_config_parses_in_file_order() {
        let config = parse(FULL).expect("valid");
        let names: Vec<&String> = config.sources.keys().collect();
        assert_eq!(names, ["db", "etc"]);
        let db = &config.sources["db"];
        assert_eq!(
            db.kind,
            SourceKind::Command {
                command: "mongodump --archive".into(),
                stream_name: "app.archive".into()
            }
        );
        assert_eq!(db.hooks.before, ["echo before"]);
        assert_eq!(
            config.retention_of(db).map(|policy| policy.keep_daily),
            Some(7)
        );
        assert_eq!(
            config
                .retention_of(db)
                .map(|policy| policy.keep_tags.clone()),
            Some(vec![TagSet(vec!["keep".into(), "forever".into()])])
        );
        let etc = &config.sources["etc"];
        assert_eq!(
            config.retention_of(etc).map(|policy| policy.keep_daily),
            Some(0)
        );
        assert_eq!(config.max_age_of(db), Some(Duration::from_hours(26)));
        assert_eq!(config.max_age_of(etc), Some(Duration::from_hours(8 * 24)));
        assert_eq!(config.tags_of("db", db), ["nightly", "source:db"]);
        assert_eq!(
            config.check.map(|check| check.data),
            Some(CheckData::Rotate(30))
        );
        let drill = config.drill.clone().expect("drill");
        assert_eq!(drill.sample, Some(0.05));
        assert_eq!(
            drill.schedule.map(|schedule| schedule.every),
            Some(Duration::from_hours(7 * 24))
        );
        assert_eq!(drill.sources, DrillSources::RoundRobin);
    }

    #[test]
    fn the_shipped_example_config_parses() {
        let config = Config::parse(
            include_str!("../../contrib/cairn.toml"),
            Path::new("contrib/cairn.toml"),
        )
        .expect("contrib/cairn.toml is valid");
        let names: Vec<&String> = config.sources.keys().collect();
        assert_eq!(names, ["db", "images", "system"]);
        assert!(config.check.is_some() && config.drill.is_some());
        assert!(config.metrics.file.is_some());
        assert!(
            config
                .sources
                .values()
                .all(|source| config.max_age_of(source).is_some())
        );
    }

    #[test]
    fn an_unknown_key_names_file_line_and_key() {
        let text = "[repository]\nurl = \"/srv/repo\"\npasword_file = \"/x\"\n";
        let message = error(text);
        assert!(
            message.starts_with("/etc/cairn/cairn.toml:3: "),
            "{message}"
        );
        assert!(
            message.contains("unknown field `pasword_file`"),
            "{message}"
        );
        assert!(!message.contains('\n'), "one line: {message}");
    }

    #[test]
    fn an_unknown_key_in_a_source_names_the_source() {
        let message = error("[sources.db]\ncommand = \"x\"\nstream_name = \"a\"\nexclud = []\n");
        assert!(
            message.starts_with("/etc/cairn/cairn.toml:4: sources.db"),
            "{message}"
        );
        assert!(message.contains("unknown field `exclud`"), "{message}");
    }

    #[test]
    fn a_bad_value_names_its_key_and_line() {
        let message = error("[sources.etc]\npaths = [\"/etc\"]\nmax_age = \"tomorrow\"\n");
        assert!(
            message.starts_with("/etc/cairn/cairn.toml:3: sources.etc.max_age: invalid duration"),
            "{message}"
        );
        let message = error("[defaults]\nretention = { keep_daily = \"seven\" }\n");
        assert!(
            message.contains(":2: defaults.retention.keep_daily: "),
            "{message}"
        );
        let message = error("[check]\nread_data_subset = \"150%\"\n");
        assert!(
            message.contains(":2: check.read_data_subset: "),
            "{message}"
        );
    }

    #[test]
    fn inconsistent_sources_are_refused() {
        for (text, expected) in [
            ("[sources.a]\ntags = [\"x\"]\n", "give paths"),
            (
                "[sources.a]\npaths = [\"/a\"]\ncommand = \"x\"\n",
                "not both",
            ),
            ("[sources.a]\npaths = [\"etc\"]\n", "is relative"),
            ("[sources.a]\ncommand = \"x\"\n", "needs stream_name"),
            (
                "[sources.a]\ncommand = \"x\"\nstream_name = \"s\"\nexclude = [\"*\"]\n",
                "for paths sources",
            ),
            (
                "[sources.a]\npaths = [\"/a\"]\nretention = {}\n",
                "retention keeps nothing",
            ),
            (
                "[sources.\"a b\"]\npaths = [\"/a\"]\n",
                "a source name may hold only",
            ),
            (
                "[check]\nread_data = true\nread_data_rotate = 3\n",
                "at most one",
            ),
            ("[drill]\nsample = \"1/7\"\n", "sample is a percentage"),
        ] {
            let message = error(text);
            assert!(message.contains(expected), "{text:?}: {message}");
            assert!(
                message.contains(":1:") || message.contains(":2:") || message.contains(":3:"),
                "{message}"
            );
        }
    }

    #[test]
    fn invalid_toml_is_a_located_error() {
        let message = error("[repository]\nurl = \n");
        assert!(
            message.starts_with("/etc/cairn/cairn.toml:2: "),
            "{message}"
        );
        assert!(!message.contains('\n'), "{message}");
    }

    #[test]
    fn command_line_and_environment_beat_the_file() {
        use clap::Parser;
        let config = parse(FULL).expect("valid");
        let mut cli = crate::args::Cli::try_parse_from([
            "cairn",
            "--repo",
            "/elsewhere",
            "--password-command",
            "pass cairn",
            "-o",
            "REGION=us-east-1",
            "snapshots",
        ])
        .expect("parses");
        // Whatever the test process's environment holds.
        cli.global.password_file = None;
        cli.global.cache_dir = None;
        config.apply_to(&mut cli.global);
        assert_eq!(cli.global.repo.as_deref(), Some("/elsewhere"));
        assert_eq!(
            cli.global.password_file, None,
            "a command-line password source wins"
        );
        assert_eq!(cli.global.password_command.as_deref(), Some("pass cairn"));
        assert_eq!(
            cli.global.cache_dir,
            Some(PathBuf::from("/var/cache/cairn"))
        );
        assert_eq!(cli.global.options, ["REGION=us-east-1"]);
        let mut bare = crate::args::Cli::try_parse_from(["cairn", "snapshots"]).expect("parses");
        bare.global.repo = None;
        bare.global.password_file = None;
        bare.global.password_command = None;
        bare.global.cache_dir = None;
        bare.global.options.clear();
        config.apply_to(&mut bare.global);
        assert_eq!(bare.global.repo.as_deref(), Some("s3://backups/web1"));
        assert_eq!(
            bare.global.password_file,
            Some(PathBuf::from("/etc/cairn/password"))
        );
        assert_eq!(bare.global.options, ["region=eu-central-1"]);
    }

    #[test]
    fn the_state_file_is_named_after_the_config() {
        let config = parse("").expect("empty config");
        assert_eq!(
            config.state_file(Path::new("/etc/cairn/web.toml"), true),
            PathBuf::from("/var/lib/cairn/web.json")
        );
        let config = parse("state_dir = \"/srv/state\"").expect("valid");
        assert_eq!(
            config.state_file(Path::new("cairn.toml"), false),
            PathBuf::from("/srv/state/cairn.json")
        );
    }

    #[test]
    fn selecting_an_unknown_source_lists_the_known_ones() {
        let config = parse(FULL).expect("valid");
        let names = ["etc".to_owned()];
        let selected = config.select(&names).expect("known");
        assert_eq!(selected.len(), 1);
        let message = config.select(&["web".into()]).expect_err("unknown");
        assert_eq!(
            message,
            "no source \"web\" in the config (sources: db, etc)"
        );
    }

    #[test]
    fn copy_destinations_parse_with_their_sources_and_max_age() {
        let config = parse(&format!(
            "{FULL}\n[[copy]]\nname = \"offsite\"\nurl = \"s3://offsite/web1\"\n\
             options = {{ region = \"eu-west-1\" }}\npassword_command = \"pass offsite\"\n\
             sources = [\"etc\"]\nretention = {{ keep_last = 2 }}\nlimit_upload = \"2M\"\n\
             [[copy]]\nname = \"usb\"\nurl = \"file:///mnt/usb/\"\npassword_file = \"/p\"\n"
        ))
        .expect("valid");
        let [offsite, usb] = config.copies.as_slice() else {
            panic!("two destinations");
        };
        assert_eq!(offsite.name, "offsite");
        assert_eq!(config.sources_of(offsite), ["etc"]);
        assert_eq!(config.sources_of(usb), ["db", "etc"]);
        assert_eq!(offsite.limit_upload, Some(2 * 1024 * 1024));
        assert_eq!(offsite.retention.as_ref().map(|r| r.0.keep_last), Some(2));
        assert_eq!(
            config.max_age_of_destination(offsite),
            Some(Duration::from_hours(8 * 24))
        );
        assert_eq!(
            config.max_age_of_destination(usb),
            Some(Duration::from_hours(8 * 24)),
            "the longest of its sources'"
        );
    }

    #[test]
    fn bad_copy_destinations_name_their_line_and_key() {
        let head = "[repository]\nurl = \"/srv/backup\"\n[sources.db]\ncommand = \"x\"\nstream_name = \"d\"\n";
        let good = "[[copy]]\nname = \"a\"\nurl = \"/srv/a\"\npassword_file = \"/p\"\n";
        for (copies, expected) in [
            (
                format!("{good}[[copy]]\nname = \"a\"\nurl = \"/srv/b\"\npassword_file = \"/p\"\n"),
                ":10: copy[1].name: a second destination named \"a\"",
            ),
            (
                format!(
                    "{good}[[copy]]\nname = \"b\"\nurl = \"/srv/a/\"\npassword_file = \"/p\"\n"
                ),
                ":10: copy[1].url: the same location as destination \"a\"",
            ),
            (
                format!("{good}sources = [\"web\"]\n"),
                ":6: copy[0].sources: no source \"web\" in the config (sources: db)",
            ),
            (
                "[[copy]]\nname = \"a\"\nurl = \"/srv/backup/\"\npassword_file = \"/p\"\n".into(),
                ":6: copy[0].url: the repository itself",
            ),
            (
                "[[copy]]\nname = \"a b\"\nurl = \"/srv/a\"\npassword_file = \"/p\"\n".into(),
                "a destination name may hold only",
            ),
            (
                format!("{good}password_command = \"x\"\n"),
                "give password_file or password_command",
            ),
            (
                format!("{good}sources = []\n"),
                "sources = [] copies nothing",
            ),
        ] {
            let message = error(&format!("{head}{copies}"));
            assert!(message.contains(expected), "{copies:?}: {message}");
        }
    }

    #[test]
    fn stale_session_age_defaults_to_a_day_and_is_validated() {
        let default = parse("[sources.etc]\npaths = [\"/etc\"]\n").unwrap();
        assert_eq!(default.stale_session_age(), Duration::from_hours(24));
        let set = parse(
            "[repository]\nstale_session_age = \"90min\"\n[sources.etc]\npaths = [\"/etc\"]\n",
        )
        .unwrap();
        assert_eq!(set.stale_session_age(), Duration::from_mins(90));
        let message = error("[repository]\nstale_session_age = \"0s\"\n");
        assert!(
            message.contains("repository.stale_session_age")
                && message.contains("longer than zero"),
            "{message}"
        );
    }
}
