//! `cairn backup`, and the one backup entry point that `cairn run` shares with it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cairn_store::backup::{
    self, BackupOptions, BackupOutcome, BackupProgress, BackupSource, ParentChoice, SourceWarning,
};
use cairn_store::dedup_hostile::DedupHostile;
use cairn_store::exclude::{self, ExcludeRules};
use cairn_store::format::tree::Timestamp;
use cairn_store::id::Id;
use cairn_store::repository::Repository;
use cairn_store::size_drop::SizeDrop;
use cairn_store::time_sanity::{self, TimeWarning};

use super::Completion;
use crate::args::{BackupArgs, GlobalArgs};
use crate::progress::{Meter, Total};
use crate::render;
use crate::settings;
use crate::source_command::SourceCommand;

/// Where the bytes of one backup come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestSource {
    /// Files and directories.
    Paths(Vec<PathBuf>),
    /// Standard input, stored under this name.
    Stdin {
        /// The stream's name in the snapshot.
        name: String,
    },
    /// The standard output of a shell command, stored under this name.
    Command {
        /// The command line, run with `sh -c`.
        command: String,
        /// The stream's name in the snapshot.
        name: String,
    },
}

/// One backup as the command line or a config file's source asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupRequest {
    /// What to read.
    pub source: RequestSource,
    /// Tags of the snapshot.
    pub tags: Vec<String>,
    /// Host name to record (default: this machine's).
    pub host: Option<String>,
    /// Read every file even when the parent proves it unchanged.
    pub force: bool,
    /// Parent snapshot spec (ID, prefix or `latest`) instead of the automatic choice.
    pub parent: Option<String>,
    /// The snapshot's time (default: now).
    pub time: Option<jiff::Timestamp>,
    /// Glob patterns of paths to leave out.
    pub excludes: Vec<String>,
    /// Files with one exclude pattern per line.
    pub exclude_files: Vec<PathBuf>,
    /// Leave out directories that contain a file of this name.
    pub exclude_if_present: Vec<String>,
    /// Do not cross file-system boundaries below the given paths.
    pub one_file_system: bool,
}

impl BackupRequest {
    /// The request the `cairn backup` command line makes.
    pub fn from_args(args: &BackupArgs) -> Self {
        let name = args.name.clone().unwrap_or_default();
        let source = if args.stdin {
            RequestSource::Stdin { name }
        } else if let Some(command) = &args.command {
            RequestSource::Command {
                command: command.clone(),
                name,
            }
        } else {
            RequestSource::Paths(args.paths.clone())
        };
        Self {
            source,
            tags: args.tags.clone(),
            host: args.host.clone(),
            force: args.force,
            parent: args.parent.clone(),
            time: args.time,
            excludes: args.excludes.clone(),
            exclude_files: args.exclude_files.clone(),
            exclude_if_present: args.exclude_if_present.clone(),
            one_file_system: args.one_file_system,
        }
    }
}

/// What one completed backup did, for the summary, `cairn run` and its metrics.
#[allow(dead_code)] // read by `cairn run` (issue 7, in progress)
#[derive(Debug, Clone)]
pub struct BackupReport {
    /// The snapshot written.
    pub snapshot_id: Id,
    /// Bytes of file and stream content in the snapshot (read or proven unchanged).
    pub bytes_processed: u64,
    /// Bytes added to the repository (after compression and encryption).
    pub bytes_added: u64,
    /// Files in the snapshot.
    pub files: u64,
    /// Wall time of the backup.
    pub duration: Duration,
    /// Done, or written with unreadable or changing entries (exit 3).
    pub completion: Completion,
    /// Entries left out by excludes, marker files or `--one-file-system`.
    pub entries_excluded: u64,
    /// Files and streams that look compressed or encrypted and shared almost nothing with their
    /// previous backup (each was warned about).
    pub dedup_hostile: Vec<PathBuf>,
    /// Files and streams at least ten times smaller than in the parent snapshot (each was
    /// warned about).
    pub size_drops: Vec<SizeDrop>,
}

struct Reporter {
    json: bool,
    meter: Meter,
}

impl BackupProgress for Reporter {
    fn warning(&self, warning: &SourceWarning) {
        self.meter.suspend(|| self.print_warning(warning));
    }

    fn file_done(&self, _path: &Path, _bytes: u64) {
        self.meter.add_file();
    }

    fn bytes_processed(&self, bytes: u64) {
        self.meter.add_bytes(bytes);
    }

    fn expected_bytes(&self, bytes: u64) {
        self.meter.set_total(bytes, Total::Estimate);
    }

    fn dedup_hostile(&self, finding: &DedupHostile) {
        let message = format!(
            "looks compressed or encrypted (zstd saved {}) and only {} of it was already \
             stored: back it up uncompressed (for example mongodump without --gzip, pg_dump \
             -Z0, tar without -z); cairn compresses and deduplicates itself",
            percent(finding.compression_saved),
            percent(finding.already_stored)
        );
        self.meter
            .suspend(|| self.print_dedup_hostile(finding, &message));
    }

    fn size_drop(&self, finding: &SizeDrop) {
        self.meter.suspend(|| print_size_drop(self.json, finding));
    }
}

/// The size-drop warning's words.
pub fn size_drop_message(finding: &SizeDrop) -> String {
    format!(
        "{} now, {} in the parent snapshot (at least {} times smaller): check that its source \
         did not fail quietly (an empty dump, a wrong path, a truncated file)",
        render::bytes(finding.bytes),
        render::bytes(finding.previous_bytes),
        cairn_store::size_drop::FACTOR
    )
}

fn print_size_drop(json: bool, finding: &SizeDrop) {
    let message = size_drop_message(finding);
    if json {
        render::json_line(&serde_json::json!({
            "message_type": "warning",
            "kind": "size_drop",
            "path": finding.path.to_string_lossy(),
            "bytes": finding.bytes,
            "previous_bytes": finding.previous_bytes,
            "message": message,
        }));
    } else {
        eprintln!("warning: {}: {message}", finding.path.display());
    }
}

/// Warns when the snapshot's time looks wrong ([`cairn_store::time_sanity`]).
fn warn_about_time(json: bool, outcome: &BackupOutcome) {
    let id = outcome.snapshot_id;
    let time = render::jiff_time(outcome.snapshot.time);
    let shown = render::local_time(outcome.snapshot.time);
    let warnings = time_sanity::backup_time_warnings(
        time,
        jiff::Timestamp::now(),
        outcome.newest_time.map(render::jiff_time),
        outcome.latest_same_time.map(render::jiff_time),
    );
    for warning in warnings {
        let message = match warning {
            TimeWarning::AheadOfClock { by } => format!(
                "snapshot {} is dated {shown}, {} ahead of this machine's clock: it stays `latest` \
                 until the clock passes it, and `cairn forget` keeps it; if the date is wrong, \
                 remove it with `cairn forget {id}`",
                id.short(),
                render::span(by.unsigned_abs())
            ),
            TimeWarning::AheadOfNewest { newest } => format!(
                "snapshot {} is dated {shown}, more than a year after the newest snapshot \
                 ({}): if this machine's clock is wrong, fix it and remove the snapshot with \
                 `cairn forget {id}`",
                id.short(),
                newest.strftime("%Y-%m-%d %H:%M:%S UTC")
            ),
            TimeWarning::BeforeNewest { newest } => format!(
                "snapshot {} is dated {shown}, before the latest snapshot of this host and source \
                 ({}), which stays `latest`: `cairn snapshots` marks snapshots dated in the future",
                id.short(),
                newest.strftime("%Y-%m-%d %H:%M:%S UTC")
            ),
        };
        if json {
            render::json_line(&serde_json::json!({
                "message_type": "warning",
                "kind": warning.kind(),
                "snapshot_id": id.to_hex(),
                "time": time.to_string(),
                "message": message,
            }));
        } else {
            eprintln!("warning: {message}");
        }
    }
}

impl Reporter {
    fn print_dedup_hostile(&self, finding: &DedupHostile, message: &str) {
        if self.json {
            render::json_line(&serde_json::json!({
                "message_type": "warning",
                "kind": "dedup_hostile",
                "path": finding.path.to_string_lossy(),
                "bytes": finding.length,
                "compression_saved": finding.compression_saved,
                "already_stored": finding.already_stored,
                "message": message,
            }));
        } else {
            eprintln!("warning: {}: {message}", finding.path.display());
        }
    }

    fn print_warning(&self, warning: &SourceWarning) {
        if self.json {
            render::json_line(&serde_json::json!({
                "message_type": "warning",
                "path": warning.path.to_string_lossy(),
                "message": warning.message,
            }));
        } else {
            eprintln!("warning: {}: {}", warning.path.display(), warning.message);
        }
    }
}

/// A share for a message, to a tenth of a percent: `1%`, `0.3%`.
fn percent(fraction: f64) -> String {
    format!("{}%", (fraction * 1000.0).round() / 10.0)
}

/// The exclude rules of a request: its patterns, those of its exclude files, its markers.
fn exclude_rules(request: &BackupRequest) -> Result<ExcludeRules> {
    let mut patterns = request.excludes.clone();
    for file in &request.exclude_files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read exclude file {}", file.display()))?;
        patterns.extend(exclude::patterns_from_file_text(&text));
    }
    Ok(ExcludeRules::new(&patterns, &request.exclude_if_present)?)
}

/// A time as stored in a snapshot: whole seconds (floored) and the non-negative nanoseconds after.
pub fn stored_time(time: jiff::Timestamp) -> Timestamp {
    let (seconds, nanos) = (time.as_second(), time.subsec_nanosecond());
    if nanos < 0 {
        Timestamp {
            seconds: seconds - 1,
            nanos: u32::try_from(nanos + 1_000_000_000).unwrap_or(0),
        }
    } else {
        Timestamp {
            seconds,
            nanos: u32::try_from(nanos).unwrap_or(0),
        }
    }
}

/// Runs `cairn backup`.
pub fn run(global: &GlobalArgs, args: &BackupArgs) -> Result<Completion> {
    let repository = settings::open_repository(global)?;
    perform(&repository, global, &BackupRequest::from_args(args)).map(|report| report.completion)
}

/// Runs one backup into an open repository and prints its summary (per `--json` and
/// `--quiet`). No snapshot is written when this returns an error.
pub fn perform(
    repository: &Repository,
    global: &GlobalArgs,
    request: &BackupRequest,
) -> Result<BackupReport> {
    let started = Instant::now();
    let time = request.time.unwrap_or_else(jiff::Timestamp::now);
    let options = BackupOptions {
        host: request.host.clone().unwrap_or_else(settings::host_name),
        username: settings::user_name(),
        tags: request.tags.clone(),
        time: stored_time(time),
        program_version: env!("CARGO_PKG_VERSION").to_owned(),
        parent: if request.force {
            ParentChoice::None
        } else if let Some(spec) = &request.parent {
            ParentChoice::Snapshot(repository.resolve_snapshot(spec)?.0)
        } else {
            ParentChoice::Latest
        },
        excludes: exclude_rules(request)?,
        one_file_system: request.one_file_system,
    };
    if !matches!(request.source, RequestSource::Paths(_))
        && (!options.excludes.is_empty() || options.one_file_system)
    {
        anyhow::bail!("excludes and --one-file-system apply to paths, not to a stream");
    }
    let reporter = Reporter {
        json: global.json,
        meter: Meter::new(global, "files", "processed"),
    };
    let outcome = match &request.source {
        RequestSource::Paths(paths) => backup::backup(
            repository,
            BackupSource::Paths(paths.clone()),
            &options,
            &reporter,
        )?,
        RequestSource::Stdin { name } => backup::backup(
            repository,
            BackupSource::Stream {
                name: name.clone(),
                reader: &mut std::io::stdin(),
            },
            &options,
            &reporter,
        )?,
        RequestSource::Command { command, name } => {
            back_up_command(repository, command, name, &options, &reporter)?
        }
    };
    reporter.meter.finish();
    let summary = &outcome.snapshot.summary;
    let requests = outcome.requests;
    if global.json {
        render::json_line(&serde_json::json!({
            "message_type": "summary",
            "snapshot_id": outcome.snapshot_id.to_hex(),
            "files_processed": summary.files,
            "directories_processed": summary.directories,
            "bytes_processed": summary.bytes_processed,
            "bytes_added": summary.bytes_added,
            "blobs_added": summary.blobs_added,
            "data_added": outcome.saver.raw_bytes_added,
            "packs_added": outcome.saver.packs_added,
            "entries_unreadable": summary.entries_unreadable,
            "files_changed": outcome.changed.len(),
            "recovered_packs": outcome.recovered_packs,
            "blobs_rescued": outcome.blobs_rescued,
            "files_unchanged": outcome.files_unchanged,
            "parent": outcome.parent.map(|id| id.to_hex()),
            "entries_skipped": outcome.skipped.len(),
            "entries_excluded": outcome.entries_excluded,
            "mount_points_not_crossed": outcome.mount_points,
            "dedup_hostile": outcome.dedup_hostile.len(),
            "size_drops": outcome.size_drops.len(),
            "requests": {
                "put": requests.puts, "get": requests.gets, "list": requests.lists,
                "head": requests.heads, "delete": requests.deletes,
                "bytes_sent": requests.bytes_sent, "bytes_received": requests.bytes_received,
            },
        }));
    } else if !global.quiet {
        outln!(
            "processed {} ({} unchanged since the parent snapshot, not read), {}, {}",
            render::count(summary.files, "file", "files"),
            outcome.files_unchanged,
            render::count(summary.directories, "directory", "directories"),
            render::bytes(summary.bytes_processed)
        );
        outln!(
            "added {} to the repository ({}, {} of new data before compression)",
            render::bytes(summary.bytes_added),
            render::count(summary.blobs_added, "new blob", "new blobs"),
            render::bytes(outcome.saver.raw_bytes_added)
        );
        if outcome.entries_excluded > 0 {
            outln!(
                "excluded {}",
                render::count(outcome.entries_excluded as u64, "entry", "entries")
            );
        }
        if outcome.mount_points > 0 {
            outln!(
                "did not descend into {} (recorded empty)",
                render::count(outcome.mount_points as u64, "mount point", "mount points")
            );
        }
        outln!("snapshot {} saved", outcome.snapshot_id.short());
    }
    warn_about_time(global.json, &outcome);
    if !outcome.warnings.is_empty() {
        eprintln!(
            "warning: {} could not be read and {} missing from snapshot {}",
            render::count(
                outcome.warnings.len() as u64,
                "source entry",
                "source entries"
            ),
            if outcome.warnings.len() == 1 {
                "is"
            } else {
                "are"
            },
            outcome.snapshot_id.short()
        );
    }
    if !outcome.changed.is_empty() {
        eprintln!(
            "warning: {} changed while being read; snapshot {} holds {} as read",
            render::count(outcome.changed.len() as u64, "file", "files"),
            outcome.snapshot_id.short(),
            if outcome.changed.len() == 1 {
                "it"
            } else {
                "them"
            }
        );
    }
    let completion = if outcome.warnings.is_empty() && outcome.changed.is_empty() {
        Completion::Done
    } else {
        Completion::Partial
    };
    Ok(BackupReport {
        snapshot_id: outcome.snapshot_id,
        bytes_processed: summary.bytes_processed,
        bytes_added: summary.bytes_added,
        files: summary.files,
        duration: started.elapsed(),
        completion,
        entries_excluded: outcome.entries_excluded,
        dedup_hostile: outcome
            .dedup_hostile
            .into_iter()
            .map(|finding| finding.path)
            .collect(),
        size_drops: outcome.size_drops,
    })
}

/// Backs up the standard output of `command` as the stream `name`. When the command fails,
/// the store's read fails before the snapshot is written and the error says how the command
/// ended; when cairn fails first, the command is killed and reaped.
fn back_up_command(
    repository: &Repository,
    command: &str,
    name: &str,
    options: &BackupOptions,
    reporter: &Reporter,
) -> Result<BackupOutcome> {
    let mut source = SourceCommand::spawn(command)?;
    let outcome = backup::backup(
        repository,
        BackupSource::Stream {
            name: name.to_owned(),
            reader: &mut source,
        },
        options,
        reporter,
    );
    if let Some(failure) = source.failure() {
        return Err(failure.clone().into());
    }
    let outcome = outcome?;
    if source.left_holders() {
        let message = format!(
            "command '{command}' left background processes holding its output: they were \
             killed after it exited, and its output up to its exit was taken as complete"
        );
        if reporter.json {
            render::json_line(&serde_json::json!({
                "message_type": "warning",
                "kind": "command_left_background_processes",
                "path": name,
                "message": message,
            }));
        } else {
            eprintln!("warning: {message}");
        }
    }
    if outcome.snapshot.summary.bytes_processed == 0 {
        let message = format!("command '{command}' wrote nothing: {name} is empty in the snapshot");
        if reporter.json {
            render::json_line(&serde_json::json!({
                "message_type": "warning",
                "kind": "empty_command_output",
                "path": name,
                "message": message,
            }));
        } else {
            eprintln!("warning: {message}");
        }
    }
    Ok(outcome)
}
