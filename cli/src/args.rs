//! The command line, as clap definitions. No logic lives here.

use std::path::PathBuf;

use cairn_store::compressibility::CompressionProbe;
use cairn_store::retention::{GroupBy, KeepWithin, TagSet};
use cairn_store::sweep::Subset;
use clap::{Args, Parser, Subcommand};

/// cairn: encrypted, deduplicating backups of files, trees and streams to any object store.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, about, after_help = crate::exit::after_help())]
pub struct Cli {
    /// Global options.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[allow(clippy::struct_excessive_bools)] // independent command-line switches
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Config file (cairn.toml): repository settings for every command, and the sources of
    /// `cairn run`, `status` and `metrics`; command-line options and environment variables beat it
    #[arg(long, env = "CAIRN_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Repository location: a directory, `file://`, `s3://bucket/prefix`, `az://container/prefix`, `gs://bucket/prefix`
    #[arg(short = 'r', long, env = "CAIRN_REPOSITORY", global = true)]
    pub repo: Option<String>,
    /// Read the password from this file (first line)
    #[arg(long, env = "CAIRN_PASSWORD_FILE", global = true)]
    pub password_file: Option<PathBuf>,
    /// Run this shell command and use the first line of its output as the password
    #[arg(long, env = "CAIRN_PASSWORD_COMMAND", global = true)]
    pub password_command: Option<String>,
    /// Directory of the local index cache (default: the user cache directory)
    #[arg(long, env = "CAIRN_CACHE_DIR", global = true)]
    pub cache_dir: Option<PathBuf>,
    /// Keep no local cache: rebuild the index in memory on every run
    #[arg(long, global = true)]
    pub no_cache: bool,
    /// Backend option key=value (for example endpoint=http://127.0.0.1:9000), repeatable; cairn's
    /// own: stall-timeout=10s, connect-timeout=5s, timeout (none by default), retries=4
    #[arg(short = 'o', long = "option", value_name = "KEY=VALUE", global = true)]
    pub options: Vec<String>,
    /// Print machine-readable JSON, one object per line
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only errors and warnings
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Pack uploads in flight during a backup (each holds one pack in memory)
    #[arg(
        long,
        env = "CAIRN_UPLOAD_CONCURRENCY",
        default_value_t = 2,
        global = true
    )]
    pub upload_concurrency: usize,
    /// Ranged reads in flight during restore and dump, and packs verified at once by check
    #[arg(
        long,
        env = "CAIRN_DOWNLOAD_CONCURRENCY",
        default_value_t = 4,
        global = true
    )]
    pub download_concurrency: usize,
    /// Never delete or overwrite anything (for credentials without delete permission);
    /// forget, prune and key remove refuse
    #[arg(long, env = "CAIRN_APPEND_ONLY", global = true)]
    pub append_only: bool,
    /// Also report the object-store requests made and bytes moved (on stderr, or as a JSON line)
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Compression of the data this run writes: fastest (zstd 1), default (the repository's
    /// level; 3 unless set at init), max (zstd 19, slow), off, or a zstd level (-7..=22). With
    /// `init`, the repository's default level
    #[arg(
        long,
        env = "CAIRN_COMPRESSION",
        value_name = "LEVEL",
        value_parser = parse_compression,
        allow_negative_numbers = true,
        global = true
    )]
    pub compression: Option<Compression>,
    /// Before compressing a data chunk, judge from its byte histogram whether zstd can shrink
    /// it; chunks that look compressed or random (gzip layers, media, encrypted files) are then
    /// stored raw without a zstd pass. `off` (the default) gives every chunk to zstd: on the
    /// benchmark corpus the probe cost more CPU than zstd spent on the chunks it skipped
    #[arg(
        long,
        env = "CAIRN_COMPRESSION_PROBE",
        value_name = "on|off",
        default_value = "off",
        value_parser = parse_compression_probe,
        global = true
    )]
    pub compression_probe: CompressionProbe,
    /// Worker threads for chunking, hashing, compression and encryption (default: one per core)
    #[arg(long, env = "CAIRN_THREADS", value_parser = clap::value_parser!(u16).range(1..), global = true)]
    pub threads: Option<u16>,
    /// Memory the local index cache may use for its page cache, in MiB (the index itself lives on
    /// disk, so memory does not grow with the repository)
    #[arg(
        long,
        env = "CAIRN_CACHE_MEMORY_MIB",
        default_value_t = 32,
        value_parser = clap::value_parser!(u32).range(1..=65536),
        global = true
    )]
    pub cache_memory_mib: u32,
    /// Limit uploads to the object store to RATE, shared by all concurrent uploads: KiB/s as a
    /// bare number (as restic: 512), or a size per second (2M, 800KiB/s)
    #[arg(long, env = "CAIRN_LIMIT_UPLOAD", value_name = "RATE", value_parser = cairn_store::units::parse_rate, global = true)]
    pub limit_upload: Option<u64>,
    /// Limit downloads from the object store to RATE, shared by all concurrent downloads:
    /// KiB/s as a bare number, or a size per second (2M, 800KiB/s)
    #[arg(long, env = "CAIRN_LIMIT_DOWNLOAD", value_name = "RATE", value_parser = cairn_store::units::parse_rate, global = true)]
    pub limit_download: Option<u64>,
}

/// A `--compression` choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// The repository's default level.
    Default,
    /// This zstd level; 0 means uncompressed.
    Level(i32),
}

/// zstd level of `--compression fastest`.
pub const COMPRESSION_FASTEST: i32 = 1;
/// zstd level of `--compression max`.
pub const COMPRESSION_MAX: i32 = 19;

/// Parses `fastest`, `default`, `max`, `off` or a zstd level.
fn parse_compression(text: &str) -> Result<Compression, String> {
    match text {
        "fastest" => Ok(Compression::Level(COMPRESSION_FASTEST)),
        "default" | "auto" => Ok(Compression::Default),
        "max" => Ok(Compression::Level(COMPRESSION_MAX)),
        "off" | "none" | "0" => Ok(Compression::Level(0)),
        number => match number.parse::<i32>() {
            Ok(level) if (-7..=22).contains(&level) => Ok(Compression::Level(level)),
            _ => Err(format!(
                "{text:?} is not a compression: give fastest, default, max, off or a zstd level from -7 to 22"
            )),
        },
    }
}

/// Parses `on` or `off` for `--compression-probe`.
fn parse_compression_probe(text: &str) -> Result<CompressionProbe, String> {
    match text {
        "on" => Ok(CompressionProbe::On),
        "off" => Ok(CompressionProbe::Off),
        _ => Err(format!("{text:?} is not a probe setting: give on or off")),
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new repository (never where any repository object is: a lost config is rebuilt
    /// with `repair config`)
    Init(InitArgs),
    /// Back up files, directories, a stream from standard input, or a command's output
    Backup(BackupArgs),
    /// List snapshots
    Snapshots(SnapshotsArgs),
    /// List the contents of a snapshot
    Ls(LsArgs),
    /// Restore a snapshot (or a path in it) into a directory, verifying every byte
    Restore(RestoreArgs),
    /// Write one file or stream of a snapshot to standard output
    Dump(DumpArgs),
    /// Browse snapshots as a read-only file system (FUSE) until Ctrl-C, SIGTERM or
    /// `fusermount -u`: snapshots/, hosts/, tags/ (and sources/ with --config), each with a
    /// `latest` link
    Mount(MountArgs),
    /// Verify the repository's structure, and with --read-data* all, part or a rotating share of
    /// its bytes
    Check(CheckArgs),
    /// Restore drill: restore a snapshot (or --sample of it) into a temporary directory,
    /// verifying every byte, report the time taken and the snapshot's age, then remove it
    Drill(DrillArgs),
    /// Remove snapshots by a retention policy (--keep-daily 7 ...), or the snapshots named by ID
    /// (even unreadable ones); --dry-run shows what and why
    Forget(ForgetArgs),
    /// Manage the local index cache
    #[command(subcommand)]
    Index(IndexCommand),
    /// Delete unreferenced data: safe while backups run (see FORMAT.md section 21)
    Prune(PruneArgs),
    /// Manage the passwords (key objects) that open the repository
    #[command(subcommand)]
    Key(KeyCommand),
    /// Repair a damaged repository: rebuild the index from the packs, or write snapshots
    /// without their lost files
    #[command(subcommand)]
    Repair(RepairCommand),
    /// Show what changed between two snapshots: added (+), removed (-), content modified (M),
    /// type changed (T) and metadata-only changed (U) entries
    Diff(DiffArgs),
    /// Find entries whose name or path matches a glob in all (or chosen) snapshots
    Find(FindArgs),
    /// Sizes of the repository and of snapshots: raw, restore, deduplicated and stored bytes
    Stats(StatsArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to standard output
    Completions(CompletionsArgs),
    /// Print the man page (roff), or write one page per command into --dir
    Man(ManArgs),
    /// List every exit code and what it means (also `cairn help exit-codes`)
    #[command(after_help = crate::exit::table())]
    ExitCodes,
    /// The nightly job of a config file: back up every source (or the named ones) with its
    /// hooks, apply retention and prune, run the check slice and drill when due, write metrics
    Run(RunArgs),
    /// Disaster recovery: restore the latest snapshot of every source of the config (the one
    /// `cairn run` stored in the repository, or --config) onto this machine, verified and timed
    Recover(RecoverArgs),
    /// Per source of the config: last success, its age, last result, snapshots, and stale
    /// backup sessions; exit 16 when a source is older than its `max_age` or never succeeded,
    /// or a backup session is stale
    Status(StatusArgs),
    /// Write the config's run state and the repository's size as Prometheus text (for
    /// `node_exporter`'s textfile collector)
    Metrics(MetricsArgs),
    /// Add, remove or set tags of existing snapshots (each changed snapshot is written anew and
    /// the old one removed; its data stays)
    Tag(TagArgs),
    /// Remove paths (--exclude PATTERN) from existing snapshots, for example a secret backed up
    /// by mistake; the originals stay unless --forget, then `prune --max-unused 0%` deletes the data
    Rewrite(RewriteArgs),
    /// Copy snapshots from another repository (--from-repo) into this one, re-encrypted with
    /// this repository's keys; snapshots already copied are skipped, blobs already here are not
    /// sent again
    Copy(CopyArgs),
}

/// `cairn tag`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("change").required(true).multiple(true).args(["add", "remove", "set"]))]
pub struct TagArgs {
    /// Snapshots to change (ID, unique ID prefix, or `latest`); default: every selected snapshot
    pub snapshots: Vec<String>,
    /// Which snapshots to change.
    #[command(flatten)]
    pub selection: SelectionArgs,
    /// Add these tags; `--add a,b` gives two tags, repeatable
    #[arg(long, value_name = "TAG[,TAG...]", value_delimiter = ',', value_parser = parse_tag)]
    pub add: Vec<String>,
    /// Remove these tags, repeatable
    #[arg(long, value_name = "TAG[,TAG...]", value_delimiter = ',', value_parser = parse_tag)]
    pub remove: Vec<String>,
    /// Replace all tags by these (`--set ''` removes every tag), repeatable
    #[arg(long, value_name = "TAG[,TAG...]", value_delimiter = ',', conflicts_with_all = ["add", "remove"])]
    pub set: Vec<String>,
    /// Show what would change; write and delete nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
}

/// `cairn rewrite`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("patterns").required(true).multiple(true).args(["excludes", "exclude_files", "iexcludes", "iexclude_files"]))]
pub struct RewriteArgs {
    /// Snapshots to rewrite (ID, unique ID prefix, or `latest`); default: every selected
    /// snapshot
    pub snapshots: Vec<String>,
    /// Which snapshots to rewrite.
    #[command(flatten)]
    pub selection: SelectionArgs,
    /// Remove what this pattern matches (the syntax of `backup --exclude`), repeatable
    #[arg(long = "exclude", value_name = "PATTERN")]
    pub excludes: Vec<String>,
    /// Read patterns from this file, one per line (`#` starts a comment), repeatable
    #[arg(long = "exclude-file", value_name = "FILE")]
    pub exclude_files: Vec<PathBuf>,
    /// Like --exclude, ignoring case, repeatable
    #[arg(long = "iexclude", value_name = "PATTERN")]
    pub iexcludes: Vec<String>,
    /// Like --exclude-file, its patterns ignoring case, repeatable
    #[arg(long = "iexclude-file", value_name = "FILE")]
    pub iexclude_files: Vec<PathBuf>,
    /// Delete each original snapshot once its rewritten snapshot is written (then `cairn
    /// prune` frees the space only the originals used)
    #[arg(long)]
    pub forget: bool,
    /// Show what would be removed; write and delete nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
}

/// How to open the source repository of `copy` and `init --copy-chunker-params-from`: its own
/// password and store options (the global ones belong to the destination).
#[allow(clippy::struct_field_names)] // the flags are --from-*
#[derive(Debug, Clone, Default, Args)]
pub struct FromRepoSecretArgs {
    /// Read the source repository's password from this file (first line); the environment
    /// variable `CAIRN_FROM_PASSWORD` gives it directly
    #[arg(long, env = "CAIRN_FROM_PASSWORD_FILE", value_name = "FILE")]
    pub from_password_file: Option<PathBuf>,
    /// Run this shell command and use the first line of its output as the source repository's
    /// password
    #[arg(long, env = "CAIRN_FROM_PASSWORD_COMMAND", value_name = "COMMAND")]
    pub from_password_command: Option<String>,
    /// Backend option key=value of the source repository (as -o for the destination), repeatable
    #[arg(long = "from-option", value_name = "KEY=VALUE")]
    pub from_options: Vec<String>,
}

/// `cairn copy`.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The source repository to copy from (the destination is -r)
    #[arg(long, env = "CAIRN_FROM_REPOSITORY", value_name = "URL")]
    pub from_repo: Option<String>,
    /// How to open the source.
    #[command(flatten)]
    pub from: FromRepoSecretArgs,
    /// Which source snapshots to copy (default: every one, stored configs included).
    #[command(flatten)]
    pub selection: SelectionArgs,
    /// Source snapshots to copy (ID, unique ID prefix, or `latest`); default: every selected one
    pub snapshots: Vec<String>,
    /// Show which snapshots would be copied and which are copied already; write nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Afterwards read back every blob of the copied snapshots from the destination and check
    /// every file's hash (as `check --read-data` for those snapshots only)
    #[arg(long)]
    pub verify: bool,
}

/// Which snapshots a command looks at, and which of them `latest` is (README, "Choosing
/// snapshots"). Flattened into every command that takes snapshots.
#[derive(Debug, Clone, Default, Args)]
pub struct SelectionArgs {
    /// Only snapshots of this host, repeatable (any of them)
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Only snapshots with all of these tags, repeatable (any of the lists); `--tag ''` selects
    /// untagged snapshots, `--tag cairn:config` the stored configs
    #[arg(long = "tag", value_name = "TAG[,TAG...]")]
    pub tags: Vec<TagSet>,
    /// Only snapshots that include this path or stream name among their backed-up paths,
    /// repeatable (all of them)
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<String>,
    /// Only snapshots of this source of the config (its tag `source:NAME` and the config's
    /// host), repeatable (any of them)
    #[arg(long = "source", value_name = "NAME")]
    pub sources: Vec<String>,
}

/// `cairn snapshots`.
#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    /// Which snapshots to list.
    #[command(flatten)]
    pub selection: SelectionArgs,
    /// Only the N newest snapshots of each group (of host and paths, or of --group-by)
    #[arg(long, value_name = "N")]
    pub latest: Option<usize>,
    /// Show the snapshots in groups sharing these fields, each under a heading: a
    /// comma-separated list of host, paths, tags
    #[arg(long, value_name = "FIELDS")]
    pub group_by: Option<GroupBy>,
    /// One short line per snapshot: ID, time, host and tags (no paths)
    #[arg(long)]
    pub compact: bool,
}

/// `cairn diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The older snapshot (ID, unique ID prefix, or `latest`)
    pub old: String,
    /// The newer snapshot (ID, unique ID prefix, or `latest`)
    pub new: String,
    /// Also list metadata-only changes (mode, owner, mtime) of directories
    #[arg(long)]
    pub metadata: bool,
    /// Which snapshots `latest` and the ids may be.
    #[command(flatten)]
    pub selection: SelectionArgs,
}

/// `cairn find`.
#[derive(Debug, Args)]
pub struct FindArgs {
    /// Glob patterns (see README, "Patterns"): without `/` they match names, with a leading `/`
    /// the whole path, otherwise the path's last components
    #[arg(required = true)]
    pub patterns: Vec<String>,
    /// Search only this snapshot (ID, unique ID prefix, or `latest`), repeatable
    #[arg(long = "snapshot", short = 's', value_name = "ID")]
    pub snapshots: Vec<String>,
    /// Which snapshots to search.
    #[command(flatten)]
    pub selection: SelectionArgs,
}

/// `cairn stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Snapshots to count (ID, unique ID prefix, or `latest`); default: every snapshot selected
    pub snapshots: Vec<String>,
    /// Which snapshots to count.
    #[command(flatten)]
    pub selection: SelectionArgs,
}

/// `cairn completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell
    pub shell: clap_complete::Shell,
}

/// `cairn man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write `cairn.1` and one `cairn-COMMAND.1` per command into this directory (created)
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// `cairn run`.
#[allow(clippy::struct_excessive_bools)] // independent command-line switches
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Sources of the config to back up (default: all, in file order)
    #[arg(value_name = "SOURCE")]
    pub sources: Vec<String>,
    /// Write metrics to this file (default: the config's `[metrics]` file, if any)
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    /// Do not apply retention (nor prune), in the repository or the `[[copy]]` destinations
    #[arg(long)]
    pub no_forget: bool,
    /// Do not run the check slice
    #[arg(long)]
    pub no_check: bool,
    /// Do not run the restore drill
    #[arg(long)]
    pub no_drill: bool,
}

/// `cairn recover`.
#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// `--source`: recover only these sources (default: all); `--host`: as --from-host;
    /// `--tag`, `--path`: each source's newest snapshot that also has them
    #[command(flatten)]
    pub selection: SelectionArgs,
    /// Restore files below this directory instead of their recorded paths (streams without a
    /// restore command go here too, unless --streams-to is given)
    #[arg(long, value_name = "DIR")]
    pub target: Option<PathBuf>,
    /// Write streams without a restore command (or all, with --no-restore-commands) into this
    /// directory, each under its stream name
    #[arg(long, value_name = "DIR")]
    pub streams_to: Option<PathBuf>,
    /// Write streams to files even when their source has a `restore` command (a practice run
    /// that must not touch the databases)
    #[arg(long)]
    pub no_restore_commands: bool,
    /// Show the plan (source, snapshot, time, size, destination) and write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// The host whose config and snapshots to recover (default: the config's `host`, else the
    /// host that stored the config); `--host` says the same
    #[arg(long, value_name = "HOST", conflicts_with = "hosts")]
    pub from_host: Option<String>,
    /// Also write the stored config the recovery used to this file
    #[arg(long, value_name = "PATH")]
    pub save_config: Option<PathBuf>,
}

/// `cairn metrics`.
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Write to this file, atomically (default: standard output)
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    /// A backup session unended for longer than this is stale (`cairn_stale_sessions`; default
    /// `stale_session_age` of the config, else 24h)
    #[arg(long, value_name = "AGE")]
    pub stale_session_age: Option<crate::config::Age>,
}

/// `cairn status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A backup session unended for longer than this is stale and listed (default
    /// `stale_session_age` of the config, else 24h)
    #[arg(long, value_name = "AGE")]
    pub stale_session_age: Option<crate::config::Age>,
}

/// `cairn repair ...`.
#[derive(Debug, Subcommand)]
pub enum RepairCommand {
    /// Rebuild the repository's index objects from the packs' trailers (replaces every index
    /// object; takes the prune lease)
    Index(RepairIndexArgs),
    /// Write a new snapshot (tagged `repaired`) without the files and directories whose data is
    /// lost or damaged; the original stays unless --forget
    Snapshots(RepairSnapshotsArgs),
    /// Rebuild a lost or damaged config from a key object this password opens (proven against
    /// the index, snapshots or packs); a damaged config is copied aside first
    Config(RepairConfigArgs),
}

/// `cairn repair index`.
#[derive(Debug, Args)]
pub struct RepairIndexArgs {
    /// Seconds after which a prune may take over this repair's lease if it stops renewing it
    #[arg(long, default_value_t = 900)]
    pub lease_ttl: u64,
}

/// `cairn repair snapshots`.
#[derive(Debug, Args)]
pub struct RepairSnapshotsArgs {
    /// Snapshots to repair (ID, unique ID prefix, or `latest`); default: every snapshot
    pub snapshots: Vec<String>,
    /// Also download every pack and authenticate every blob, so damaged (not only missing)
    /// data is found
    #[arg(long)]
    pub read_data: bool,
    /// Delete each original snapshot once its repaired snapshot is written
    #[arg(long)]
    pub forget: bool,
    /// Show what would be dropped; write and delete nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
}

/// `cairn prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// How to prune.
    #[command(flatten)]
    pub options: PruneOptionsArgs,
    /// Show what would be deleted and repacked; change nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Declare a backup session ended (its process is known dead, on another machine) so the
    /// packs it kept alive can go: the full 32-digit id that prune prints; repeatable
    #[arg(long, value_name = "SESSION")]
    pub end_session: Vec<String>,
}

/// Options of prune, shared with `forget --prune`.
#[derive(Debug, Args, Clone)]
pub struct PruneOptionsArgs {
    /// Repack partly used packs until unused space is at most this share of the repository
    /// (percent, 0-100)
    #[arg(long, default_value = "10%", value_parser = parse_percent)]
    pub max_unused: f64,
    /// Seconds after which another prune may take over this prune's lease if it stops renewing it
    #[arg(long, default_value_t = 900)]
    pub lease_ttl: u64,
}

/// Parses `10%`, `10` or `0.5%` into a fraction.
fn parse_percent(text: &str) -> Result<f64, String> {
    let number = text.trim().trim_end_matches('%');
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a percentage"))?;
    if !(0.0..=100.0).contains(&value) {
        return Err("must be between 0% and 100%".into());
    }
    Ok(value / 100.0)
}

/// Argon2id cost of a new key object (`init`, `key add`, `key passwd`).
#[derive(Debug, Args)]
pub struct KdfArgs {
    /// Argon2id memory cost of the key, in MiB
    #[arg(long = "kdf-memory-mib", default_value_t = 64)]
    pub memory_mib: u32,
    /// Argon2id passes
    #[arg(long = "kdf-iterations", default_value_t = 3)]
    pub iterations: u32,
    /// Argon2id lanes
    #[arg(long = "kdf-parallelism", default_value_t = 4)]
    pub parallelism: u32,
}

/// `cairn init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Argon2id cost of the first key.
    #[command(flatten)]
    pub kdf: KdfArgs,
    /// Chunker bounds and pack size.
    #[command(flatten)]
    pub layout: LayoutArgs,
    /// Mark the repository append-only: no client will delete anything from it
    #[arg(long)]
    pub append_only: bool,
    /// Chunk exactly like this existing repository (its chunker bounds and seed), so `cairn
    /// copy` from it never re-chunks and dedup works across the two; opened with the --from-*
    /// options
    #[arg(long, value_name = "URL", conflicts_with_all = ["chunk_min", "chunk_avg", "chunk_max"])]
    pub copy_chunker_params_from: Option<String>,
    /// How to open the repository of --copy-chunker-params-from.
    #[command(flatten)]
    pub from: FromRepoSecretArgs,
}

/// The writer's choices a config records: chunker bounds and pack size (`init`, `repair config`).
#[derive(Debug, Args)]
pub struct LayoutArgs {
    /// Minimum chunk size in bytes
    #[arg(long, default_value_t = cairn_store::repository::InitOptions::default().chunker.min_size)]
    pub chunk_min: u32,
    /// Average chunk size in bytes
    #[arg(long, default_value_t = cairn_store::repository::InitOptions::default().chunker.avg_size)]
    pub chunk_avg: u32,
    /// Maximum chunk size in bytes
    #[arg(long, default_value_t = cairn_store::repository::InitOptions::default().chunker.max_size)]
    pub chunk_max: u32,
    /// Pack target size in MiB
    #[arg(long, default_value_t = 16)]
    pub pack_size_mib: u32,
}

/// `cairn repair config`.
#[derive(Debug, Args)]
pub struct RepairConfigArgs {
    /// Chunker bounds and pack size of new backups (give the ones the repository was made with;
    /// other values cost deduplication against older snapshots, never readability)
    #[command(flatten)]
    pub layout: LayoutArgs,
}

/// `cairn backup`.
#[allow(clippy::struct_excessive_bools)] // independent command-line switches
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("stream").args(["stdin", "command"])))]
pub struct BackupArgs {
    /// Files and directories to back up (stored under their absolute paths)
    #[arg(
        required_unless_present_any = ["stream", "files_from", "files_from_raw"],
        conflicts_with = "stream"
    )]
    pub paths: Vec<PathBuf>,
    /// Read the data to back up from standard input (name it with --name)
    #[arg(long, requires = "name")]
    pub stdin: bool,
    /// Run this shell command (`sh -c`) and back up its standard output as a stream called
    /// --name (for example `mongodump --archive` or `pg_dump shop`); its stderr is passed
    /// through. If it fails (non-zero exit, killed) no snapshot is written: exit code 15
    #[arg(long, value_name = "COMMAND", requires = "name")]
    pub command: Option<String>,
    /// Name of the stream read with --stdin or --command (for example app.archive)
    #[arg(
        long,
        visible_alias = "stdin-name",
        value_name = "NAME",
        requires = "stream"
    )]
    pub name: Option<String>,
    /// Tag the snapshot; `--tag a,b` gives two tags, repeatable
    #[arg(long = "tag", value_name = "TAG[,TAG...]", value_delimiter = ',', value_parser = parse_tag)]
    pub tags: Vec<String>,
    /// Host name to record (default: this machine's)
    #[arg(long)]
    pub host: Option<String>,
    /// Read every file, even those the parent snapshot proves unchanged
    #[arg(long)]
    pub force: bool,
    /// Compare against this snapshot instead of the latest one of the same host and paths
    #[arg(long, conflicts_with = "force")]
    pub parent: Option<String>,
    /// Record this time as the snapshot's: RFC 3339 (2024-06-01T03:00:00Z,
    /// 2024-06-01T05:00:00+02:00) or local time as restic writes it ("2024-06-01 05:00:00", in
    /// TZ or the system's zone); default: now
    #[arg(long, value_name = "TIME", value_parser = parse_snapshot_time)]
    pub time: Option<jiff::Timestamp>,
    /// Leave out paths matching this glob, repeatable: `*.log` and `node_modules` match at any
    /// depth, `/srv/app/tmp` is anchored at the root, a trailing `/` matches directories only
    #[arg(long = "exclude", value_name = "PATTERN", conflicts_with = "stream")]
    pub excludes: Vec<String>,
    /// Read exclude patterns from this file, one per line (`#` starts a comment), repeatable
    #[arg(long = "exclude-file", value_name = "FILE", conflicts_with = "stream")]
    pub exclude_files: Vec<PathBuf>,
    /// Leave out every directory that contains an entry of this name (for example .nobackup
    /// or CACHEDIR.TAG), repeatable
    #[arg(
        long = "exclude-if-present",
        value_name = "NAME",
        conflicts_with = "stream"
    )]
    pub exclude_if_present: Vec<String>,
    /// Do not descend into other file systems mounted below the given paths (their mount
    /// points are recorded as empty directories)
    #[arg(short = 'x', long, conflicts_with = "stream")]
    pub one_file_system: bool,
    /// Like --exclude, ignoring case (`*.jpg` also leaves out `IMG.JPG`), repeatable
    #[arg(long = "iexclude", value_name = "PATTERN", conflicts_with = "stream")]
    pub iexcludes: Vec<String>,
    /// Like --exclude-file, its patterns ignoring case, repeatable
    #[arg(long = "iexclude-file", value_name = "FILE", conflicts_with = "stream")]
    pub iexclude_files: Vec<PathBuf>,
    /// Leave out directories tagged as caches: those holding a CACHEDIR.TAG file that starts
    /// with the standard signature (bford.info/cachedir)
    #[arg(long, conflicts_with = "stream")]
    pub exclude_caches: bool,
    /// Leave out files larger than SIZE (bytes, or with a binary unit: 500K, 20M, 1.5G, 1T)
    #[arg(long, value_name = "SIZE", value_parser = cairn_store::units::parse_size, conflicts_with = "stream")]
    pub exclude_larger_than: Option<u64>,
    /// Also back up the paths listed in FILE, one per line (`#` starts a comment line, blank
    /// lines are skipped; `-` reads standard input), repeatable
    #[arg(long = "files-from", value_name = "FILE", conflicts_with = "stream")]
    pub files_from: Vec<PathBuf>,
    /// Also back up the paths listed in FILE, each ended by a NUL byte (`find -print0`; `-`
    /// reads standard input), repeatable
    #[arg(
        long = "files-from-raw",
        value_name = "FILE",
        conflicts_with = "stream"
    )]
    pub files_from_raw: Vec<PathBuf>,
    /// Show what would be read and how much would be added, and write nothing to the repository
    #[arg(short = 'n', long)]
    pub dry_run: bool,
}

/// A backup tag: not empty (so `--tag a,,b` and a trailing comma are mistakes, not tags).
fn parse_tag(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err("a tag cannot be empty: write --tag a,b".into());
    }
    Ok(text.to_owned())
}

/// The format of restic's `--time`: local time without a zone.
const LOCAL_TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// A snapshot time: RFC 3339, or local wall-clock time `YYYY-MM-DD HH:MM:SS` in `zone` (a time
/// a daylight-saving change skips or repeats is taken as the zone's rules make it: the earlier
/// of a repeated hour, the later side of a skipped one).
pub fn snapshot_time_in(text: &str, zone: &jiff::tz::TimeZone) -> Result<jiff::Timestamp, String> {
    let text = text.trim();
    if let Ok(time) = text.parse::<jiff::Timestamp>() {
        return Ok(time);
    }
    jiff::civil::DateTime::strptime(LOCAL_TIME_FORMAT, text)
        .ok()
        .and_then(|local| local.to_zoned(zone.clone()).ok())
        .map(|zoned| zoned.timestamp())
        .ok_or_else(|| {
            format!(
                "{text:?} is not a time: give RFC 3339 (2026-12-01T03:00:00Z) or local time \
                 (\"2026-12-01 03:00:00\")"
            )
        })
}

/// `--time`: [`snapshot_time_in`] the zone of `TZ`, else the system's.
fn parse_snapshot_time(text: &str) -> Result<jiff::Timestamp, String> {
    snapshot_time_in(text, &jiff::tz::TimeZone::system())
}

/// `cairn ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Snapshot ID, unique ID prefix, or `latest`
    pub snapshot: String,
    /// Paths in the snapshot to list: each one, and a directory's entries one level deep
    /// (everything below with --recursive); none lists the whole snapshot, as restic does
    #[arg(id = "entries", value_name = "PATH")]
    pub paths: Vec<String>,
    /// List everything below the given directories, not only their entries
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Show mode, owner, size and modification time, below a header line
    #[arg(short, long)]
    pub long: bool,
    /// Which snapshots `latest` and the id may be; with a path, `latest` is the newest of
    /// them that holds it.
    #[command(flatten)]
    pub selection: SelectionArgs,
}

/// `cairn restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// SNAPSHOT or SNAPSHOT:PATH (ID, unique ID prefix, or `latest`)
    pub snapshot: String,
    /// Directory to restore into
    #[arg(short, long)]
    pub target: PathBuf,
    /// Restore only entries whose snapshot path matches this glob (and what is below them),
    /// repeatable; see README, "Patterns"
    #[arg(long = "include", value_name = "PATTERN")]
    pub includes: Vec<String>,
    /// Leave out entries whose snapshot path matches this glob (and what is below them),
    /// repeatable
    #[arg(long = "exclude", value_name = "PATTERN")]
    pub excludes: Vec<String>,
    /// Give entries the recorded user and group ids; by default the ids of the recorded names
    /// on this machine are used where those names exist
    #[arg(long)]
    pub numeric_owner: bool,
    /// What to do with entries that already exist in the target: always replace them; replace
    /// them unless they already hold the snapshot's content (if-changed, the default: the
    /// result of always, without rewriting what is right); replace only what is older than
    /// the snapshot's entry (if-newer); never replace them
    #[arg(long, value_enum, default_value_t = OverwriteArg::IfChanged)]
    pub overwrite: OverwriteArg,
    /// Remove entries of the target that the snapshot does not have (only below the restored
    /// paths, never what --exclude leaves out)
    #[arg(long)]
    pub delete: bool,
    /// Show what the restore would create, replace, keep and delete, and write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Which snapshots `latest` and the id may be; with `:PATH`, `latest` is the newest of
    /// them that holds it.
    #[command(flatten)]
    pub selection: SelectionArgs,
}

/// `restore --overwrite` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OverwriteArg {
    /// Always replace existing entries
    Always,
    /// Replace existing entries unless they hold the snapshot's content
    IfChanged,
    /// Replace existing entries older than the snapshot's
    IfNewer,
    /// Never replace existing entries
    Never,
}

/// `cairn dump`.
#[derive(Debug, Args)]
pub struct DumpArgs {
    /// Snapshot ID, unique ID prefix, or `latest`
    pub snapshot: String,
    /// The stream name, or the path of a file or directory in the snapshot (`/` for all of it)
    pub name: String,
    /// Which snapshots `latest` and the id may be; `latest` is the newest of them that holds
    /// the name.
    #[command(flatten)]
    pub selection: SelectionArgs,
    /// Write an archive of NAME and everything below it: tar (the default for a directory)
    /// or zip. tar keeps modes, owners, times in seconds, symlinks, hard links, FIFOs and
    /// devices; zip keeps modes, times in 2-second steps and symlinks
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub archive: Option<ArchiveArg>,
}

/// `cairn mount`.
#[derive(Debug, Args)]
pub struct MountArgs {
    /// An existing empty directory to mount at; `REPOSITORY MOUNTPOINT` names the repository
    /// too (instead of the global repository option)
    #[arg(value_name = "MOUNTPOINT", num_args = 1..=2, required = true)]
    pub places: Vec<PathBuf>,
    /// Which snapshots to show.
    #[command(flatten)]
    pub selection: SelectionArgs,
    /// Let other users see the mount; the kernel then applies the recorded owners and modes.
    /// Needs `user_allow_other` in /etc/fuse.conf unless run as root
    #[arg(long)]
    pub allow_other: bool,
}

/// `dump --archive` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ArchiveArg {
    /// A GNU tar stream
    Tar,
    /// A zip archive (streamed: sizes follow each entry's data)
    Zip,
}

/// `cairn check`: the structure always; at most one of the data levels.
#[derive(Debug, Clone, Args)]
#[group(id = "data_level", multiple = false)]
#[allow(clippy::struct_field_names)] // the flags are --read-data*
pub struct CheckArgs {
    /// Download every pack and authenticate every blob
    #[arg(long, group = "data_level")]
    pub read_data: bool,
    /// Download and verify part of the packs: N% (a random share) or K/M (slice K of M: the
    /// packs whose first 16 hex digits, as a number, are K-1 modulo M; M runs cover every pack
    /// once)
    #[arg(long, value_name = "N%|K/M", group = "data_level")]
    pub read_data_subset: Option<Subset>,
    /// Rotating sweep: download the packs never or longest ago verified (remembered in the local
    /// cache), about 1/DAYS of the bytes, so daily runs re-read everything every DAYS days
    #[arg(long, value_name = "DAYS", group = "data_level", value_parser = clap::value_parser!(u32).range(1..))]
    pub read_data_rotate: Option<u32>,
}

/// `cairn drill`.
#[derive(Debug, Args)]
pub struct DrillArgs {
    /// Snapshot ID, unique ID prefix, or `latest`
    #[arg(default_value = "latest")]
    pub snapshot: String,
    /// Which snapshots `latest` and the id may be.
    #[command(flatten)]
    pub selection: SelectionArgs,
    /// Restore only this share of the files (at least one), chosen by --seed
    #[arg(long, value_name = "N%", value_parser = parse_sample)]
    pub sample: Option<f64>,
    /// Seed of the --sample choice (default: random, printed so the drill can be repeated)
    #[arg(long, requires = "sample")]
    pub seed: Option<u64>,
    /// Create the temporary restore directory below this existing directory (default: the
    /// system temporary directory); it is removed afterwards, also on failure
    #[arg(long, value_name = "DIR")]
    pub scratch: Option<PathBuf>,
}

/// Parses a `--sample` share: a percentage above 0.
fn parse_sample(text: &str) -> Result<f64, String> {
    match text.parse::<Subset>()? {
        Subset::Fraction(fraction) => Ok(fraction),
        Subset::Slice(_) => Err("give a percentage, for example 5%".into()),
    }
}

/// `cairn forget`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("policy").multiple(true).args([
    "keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly",
    "keep_within", "keep_tags",
])))]
pub struct ForgetArgs {
    /// Snapshots to remove (ID, unique ID prefix, or `latest`), instead of a policy; works on
    /// snapshot objects that cannot be read or decrypted (unless a selection flag is given,
    /// which the snapshot must then match)
    #[arg(value_name = "ID", conflicts_with_all = ["policy", "allow_empty_group"])]
    pub snapshots: Vec<String>,
    /// Remove every snapshot of a group when the policy keeps none of them (refused otherwise,
    /// so that a misspelled rule cannot empty a group)
    #[arg(long)]
    pub allow_empty_group: bool,
    /// Keep the N newest snapshots (N or `unlimited`)
    #[arg(long, value_name = "N", value_parser = parse_keep_count)]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the N newest hours that have one
    #[arg(long, value_name = "N", value_parser = parse_keep_count)]
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the N newest days that have one
    #[arg(long, value_name = "N", value_parser = parse_keep_count)]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the N newest ISO weeks that have one
    #[arg(long, value_name = "N", value_parser = parse_keep_count)]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the N newest months that have one
    #[arg(long, value_name = "N", value_parser = parse_keep_count)]
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the N newest years that have one
    #[arg(long, value_name = "N", value_parser = parse_keep_count)]
    pub keep_yearly: Option<u32>,
    /// Keep snapshots newer than this span before the newest snapshot of their group: 7d, 2w,
    /// 1m (a month), 1y, 12h or combined like 1y6m
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<KeepWithin>,
    /// Keep snapshots that have every one of these tags, repeatable
    #[arg(long = "keep-tag", value_name = "TAG[,TAG...]")]
    pub keep_tags: Vec<TagSet>,
    /// Which snapshots the policy considers (the others are left alone), or which snapshots
    /// `latest` and the ids may be.
    #[command(flatten)]
    pub selection: SelectionArgs,
    /// Apply the policy separately to each group of snapshots sharing these fields: a
    /// comma-separated list of host, paths, tags; '' puts all snapshots in one group
    #[arg(long, value_name = "FIELDS", default_value = "host,paths")]
    pub group_by: GroupBy,
    /// Time zone of the hourly, daily, weekly, monthly and yearly buckets, an IANA name such as
    /// Europe/Berlin (default: TZ, else the system's)
    #[arg(long, value_name = "ZONE")]
    pub time_zone: Option<String>,
    /// Show what would be kept and removed, and why; remove nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Afterwards, delete the data that only the removed snapshots used (as `cairn prune`)
    #[arg(long)]
    pub prune: bool,
    /// Prune options, used with --prune.
    #[command(flatten)]
    pub prune_options: PruneOptionsArgs,
}

/// A `--keep-*` count: a number, or `unlimited`.
fn parse_keep_count(text: &str) -> Result<u32, String> {
    if text == "unlimited" {
        return Ok(u32::MAX);
    }
    text.parse()
        .map_err(|_| format!("{text:?} is not a count: give a whole number or `unlimited`"))
}

/// `cairn index ...`.
#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Drop the local index cache and rebuild it from the repository's index objects
    Rebuild,
}

/// `cairn key ...`.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List the key objects; `*` marks the one the password opened
    List,
    /// Add a password: wrap the repository's secret under a new password
    Add(NewKeyArgs),
    /// Remove a key object (full id or unique prefix); never the last usable one
    Remove(KeyRemoveArgs),
    /// Change the password: add a key for the new password, prove it opens, remove the old key
    Passwd(NewKeyArgs),
}

/// The new password and its key cost, for `key add` and `key passwd`. Without a file or a
/// command the new password is asked twice on the terminal.
#[derive(Debug, Args)]
pub struct NewKeyArgs {
    /// Read the new password from this file (first line)
    #[arg(long, env = "CAIRN_NEW_PASSWORD_FILE")]
    pub new_password_file: Option<PathBuf>,
    /// Run this shell command and use the first line of its output as the new password
    #[arg(long, env = "CAIRN_NEW_PASSWORD_COMMAND")]
    pub new_password_command: Option<String>,
    /// Argon2id cost of the new key.
    #[command(flatten)]
    pub kdf: KdfArgs,
}

/// `cairn key remove`.
#[derive(Debug, Args)]
pub struct KeyRemoveArgs {
    /// Key id or unique id prefix (see `cairn key list`)
    pub id: String,
    /// Also remove the key the current password opened (another key object must decode)
    #[arg(long)]
    pub force: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> jiff::Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn snapshot_times_take_rfc3339_or_local_time_across_daylight_saving() {
        let berlin = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
        for (text, expected) in [
            ("2026-12-01 03:00:00", "2026-12-01T02:00:00Z"),
            ("2026-07-01 03:00:00", "2026-07-01T01:00:00Z"),
            // 02:30 does not exist on 29 March (clocks jump 02:00 -> 03:00): the later side.
            ("2026-03-29 02:30:00", "2026-03-29T01:30:00Z"),
            // 02:30 happens twice on 25 October: the first (summer time).
            ("2026-10-25 02:30:00", "2026-10-25T00:30:00Z"),
            ("2026-12-01T03:00:00Z", "2026-12-01T03:00:00Z"),
            (" 2026-12-01T03:00:00-01:00 ", "2026-12-01T04:00:00Z"),
        ] {
            assert_eq!(snapshot_time_in(text, &berlin), Ok(utc(expected)), "{text}");
        }
        for bad in [
            "",
            "2026-12-01",
            "2026-12-01 03:00",
            "2026-12-01T03:00:00",
            "2026-02-30 03:00:00",
            "01.12.2026 03:00:00",
        ] {
            let error = snapshot_time_in(bad, &berlin).unwrap_err();
            assert!(
                error.contains("not a time") && !error.contains('\n'),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn tags_cannot_be_empty() {
        assert_eq!(parse_tag("web"), Ok("web".to_owned()));
        for bad in ["", " ", "\t"] {
            assert!(parse_tag(bad).is_err(), "{bad:?}");
        }
    }
}
