//! `cairn backup`, and the one backup entry point that `cairn run` shares with it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cairn_store::backup::{
    self, BackupOptions, BackupOutcome, BackupProgress, BackupSource, ParentChoice, SourceWarning,
};
use cairn_store::dedup_hostile::DedupHostile;
use cairn_store::exclude::{self, ExcludeRules, ExcludeSpec, PathListFormat};
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
    /// Glob patterns of paths to leave out, whatever their case.
    pub iexcludes: Vec<String>,
    /// Files with one such pattern per line.
    pub iexclude_files: Vec<PathBuf>,
    /// Leave out directories tagged as caches by a `CACHEDIR.TAG`.
    pub exclude_caches: bool,
    /// Leave out files larger than this many bytes.
    pub exclude_larger_than: Option<u64>,
    /// Files listing more paths to back up, one per line (`-`: standard input).
    pub files_from: Vec<PathBuf>,
    /// Files listing more paths to back up, NUL-separated (`-`: standard input).
    pub files_from_raw: Vec<PathBuf>,
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
            iexcludes: args.iexcludes.clone(),
            iexclude_files: args.iexclude_files.clone(),
            exclude_caches: args.exclude_caches,
            exclude_larger_than: args.exclude_larger_than,
            files_from: args.files_from.clone(),
            files_from_raw: args.files_from_raw.clone(),
        }
    }

    /// Whether anything is left out of a paths backup, or read from a path list.
    fn has_path_options(&self) -> bool {
        !self.excludes.is_empty()
            || !self.exclude_files.is_empty()
            || !self.exclude_if_present.is_empty()
            || self.one_file_system
            || !self.iexcludes.is_empty()
            || !self.iexclude_files.is_empty()
            || self.exclude_caches
            || self.exclude_larger_than.is_some()
            || !self.files_from.is_empty()
            || !self.files_from_raw.is_empty()
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
    /// Source entries that could not be read (missing from the snapshot).
    pub unreadable: u64,
    /// Files that changed while being read (held as read).
    pub changed: u64,
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
    /// A dry run lists every file and stream it would read (not with `--quiet`).
    list_reads: bool,
}

impl BackupProgress for Reporter {
    fn warning(&self, warning: &SourceWarning) {
        self.meter.suspend(|| self.print_warning(warning));
    }

    fn file_read(&self, path: &Path, bytes: u64) {
        if !self.list_reads {
            return;
        }
        self.meter.suspend(|| {
            if self.json {
                render::json_line(&serde_json::json!({
                    "message_type": "would_read",
                    "path": path.to_string_lossy(),
                    "bytes": bytes,
                }));
            } else {
                outln!("would read {} ({})", path.display(), render::bytes(bytes));
            }
        });
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

/// The patterns of `patterns` and of the exclude files `files`.
pub fn patterns_with_files(patterns: &[String], files: &[PathBuf]) -> Result<Vec<String>> {
    let mut patterns = patterns.to_vec();
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read exclude file {}", file.display()))?;
        patterns.extend(exclude::patterns_from_file_text(&text));
    }
    Ok(patterns)
}

/// The exclude rules of a request: its patterns, those of its exclude files (both cases), its
/// markers, cache tags and size limit.
fn exclude_rules(request: &BackupRequest) -> Result<ExcludeRules> {
    Ok(ExcludeRules::from_spec(&ExcludeSpec {
        patterns: patterns_with_files(&request.excludes, &request.exclude_files)?,
        patterns_ignoring_case: patterns_with_files(&request.iexcludes, &request.iexclude_files)?,
        markers: request.exclude_if_present.clone(),
        caches: request.exclude_caches,
        larger_than: request.exclude_larger_than,
    })?)
}

/// The paths of a paths backup: those given, then those of each path list in order.
/// Standard input (`-`) may be named by one list only (a second is refused).
fn source_paths(request: &BackupRequest, given: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut paths = given.to_vec();
    let lists = request
        .files_from
        .iter()
        .map(|file| (file, PathListFormat::Lines, "--files-from"))
        .chain(
            request
                .files_from_raw
                .iter()
                .map(|file| (file, PathListFormat::Nul, "--files-from-raw")),
        );
    let mut stdin_read = false;
    for (file, format, flag) in lists {
        let bytes = if file.as_os_str() == "-" {
            if std::mem::replace(&mut stdin_read, true) {
                anyhow::bail!("{flag} -: standard input can be read only once");
            }
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
                .with_context(|| format!("cannot read {flag} - (standard input)"))?;
            bytes
        } else {
            std::fs::read(file).with_context(|| format!("cannot read {flag} {}", file.display()))?
        };
        paths.extend(exclude::paths_from_list(&bytes, format));
    }
    if paths.is_empty() {
        anyhow::bail!("no paths to back up: the --files-from lists are empty");
    }
    Ok(paths)
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
    let request = BackupRequest::from_args(args);
    if args.dry_run {
        return dry_run(&repository, global, &request);
    }
    perform(&repository, global, &request).map(|report| report.completion)
}

/// Runs `cairn backup --dry-run`: lists what would be read and prints what would be added;
/// writes nothing to the repository.
fn dry_run(
    repository: &Repository,
    global: &GlobalArgs,
    request: &BackupRequest,
) -> Result<Completion> {
    let options = backup_options(repository, request)?;
    let reporter = Reporter {
        json: global.json,
        meter: Meter::new(global, "files", "processed"),
        list_reads: global.json || !global.quiet,
    };
    let mut stdin = std::io::stdin();
    let Some(source) = paths_or_stdin(request, &mut stdin)? else {
        anyhow::bail!("--dry-run does not run a --command: pipe its output into --stdin");
    };
    let outcome = backup::dry_run(repository, source, &options, &reporter)?;
    reporter.meter.finish();
    let summary = &outcome.snapshot.summary;
    let would_add = outcome.would_add;
    if global.json {
        render::json_line(&serde_json::json!({
            "message_type": "dry_run_summary",
            "files_processed": summary.files,
            "directories_processed": summary.directories,
            "bytes_processed": summary.bytes_processed,
            "files_unchanged": outcome.files_unchanged,
            "bytes_added": would_add.bytes_added,
            "blobs_added": would_add.blobs_added,
            "data_added": would_add.raw_bytes_added,
            "entries_unreadable": summary.entries_unreadable,
            "entries_excluded": outcome.entries_excluded,
            "mount_points_not_crossed": outcome.mount_points,
            "parent": outcome.parent.map(|id| id.to_hex()),
        }));
    } else if !global.quiet {
        print_amounts(
            ["would process", "would add about"],
            summary,
            outcome.files_unchanged,
            would_add.raw_bytes_added,
        );
        if outcome.entries_excluded > 0 {
            outln!(
                "would exclude {}",
                render::count(outcome.entries_excluded as u64, "entry", "entries")
            );
        }
        outln!("dry run: nothing was written to the repository");
    }
    if !outcome.warnings.is_empty() {
        eprintln!(
            "warning: {} source entries could not be read and would be missing from the snapshot",
            outcome.warnings.len()
        );
    }
    Ok(
        if outcome.warnings.is_empty() && outcome.changed.is_empty() {
            Completion::Done
        } else {
            Completion::Partial
        },
    )
}

/// The two lines of what a backup processed and added (`verbs`: "processed", "added"; a dry
/// run's "would process", "would add about").
fn print_amounts(
    verbs: [&str; 2],
    summary: &cairn_store::format::snapshot::Summary,
    files_unchanged: u64,
    raw_bytes_added: u64,
) {
    let [processed, added] = verbs;
    outln!(
        "{processed} {} ({files_unchanged} unchanged since the parent snapshot, not read), {}, {}",
        render::count(summary.files, "file", "files"),
        render::count(summary.directories, "directory", "directories"),
        render::bytes(summary.bytes_processed)
    );
    outln!(
        "{added} {} to the repository ({}, {} of new data before compression)",
        render::bytes(summary.bytes_added),
        render::count(summary.blobs_added, "new blob", "new blobs"),
        render::bytes(raw_bytes_added)
    );
}

/// The library's source for a paths or standard-input request (`None` for a command, which
/// needs a child process around the backup).
fn paths_or_stdin<'a>(
    request: &BackupRequest,
    stdin: &'a mut std::io::Stdin,
) -> Result<Option<BackupSource<'a>>> {
    Ok(match &request.source {
        RequestSource::Paths(paths) => Some(BackupSource::Paths(source_paths(request, paths)?)),
        RequestSource::Stdin { name } => Some(BackupSource::Stream {
            name: name.clone(),
            reader: stdin,
        }),
        RequestSource::Command { .. } => None,
    })
}

/// The library's options for a request: who, when, which parent, what to leave out.
fn backup_options(repository: &Repository, request: &BackupRequest) -> Result<BackupOptions> {
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
    if !matches!(request.source, RequestSource::Paths(_)) && request.has_path_options() {
        anyhow::bail!("excludes, path lists and --one-file-system apply to paths, not to a stream");
    }
    Ok(options)
}

/// Runs one backup into an open repository and prints its summary (per `--json` and
/// `--quiet`). No snapshot is written when this returns an error.
pub fn perform(
    repository: &Repository,
    global: &GlobalArgs,
    request: &BackupRequest,
) -> Result<BackupReport> {
    let started = Instant::now();
    let options = backup_options(repository, request)?;
    let reporter = Reporter {
        json: global.json,
        meter: Meter::new(global, "files", "processed"),
        list_reads: false,
    };
    let mut stdin = std::io::stdin();
    let outcome = match (&request.source, paths_or_stdin(request, &mut stdin)?) {
        (_, Some(source)) => backup::backup(repository, source, &options, &reporter)?,
        (RequestSource::Command { command, name }, None) => {
            back_up_command(repository, command, name, &options, &reporter)?
        }
        (_, None) => unreachable!("only a command source has no reader here"),
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
        print_amounts(
            ["processed", "added"],
            summary,
            outcome.files_unchanged,
            outcome.saver.raw_bytes_added,
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
        unreadable: outcome.warnings.len() as u64,
        changed: outcome.changed.len() as u64,
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
