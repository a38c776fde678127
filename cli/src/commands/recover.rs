//! `cairn recover`: the latest snapshot of every source of a config (or the chosen ones) back
//! onto a machine: files to their recorded paths (or below `--target`), streams to files or into
//! each source's `restore` command; each source verified and timed, the total time printed as
//! the RTO. Also where the config travels: `cairn run` stores it in the repository
//! ([`store_config`], FORMAT.md "Stored configs"), and `recover` without `--config` starts from
//! the newest stored one. Glue only: restore and dump are the library's.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use cairn_store::backup::{
    self as store_backup, BackupOptions, BackupSource, NoProgress, ParentChoice,
};
use cairn_store::exclude::ExcludeRules;
use cairn_store::format::snapshot::{Snapshot, Source};
use cairn_store::fsmeta::OwnerMapping;
use cairn_store::overwrite::Overwrite;
use cairn_store::pathmatch::PathMatcher;
use cairn_store::restore::{self, NoRestoreProgress, RestoreFilter, RestoreOptions};
use cairn_store::retention::{SnapshotFilter, SnapshotInfo};
use cairn_store::select::{Selection, SourceSelector};
use cairn_store::{Id, Repository};

use super::Completion;
use crate::args::{GlobalArgs, RecoverArgs};
use crate::config::{Config, SourceConfig, SourceKind, source_tag};
use crate::render;
use crate::settings;

/// The tag of the snapshots that hold a stored config (FORMAT.md "Stored configs").
pub const CONFIG_TAG: &str = "cairn:config";
/// The name of the stream a stored config is kept under.
pub const CONFIG_STREAM: &str = "cairn.toml";

/// The newest stored config of `host` (any host when `None`): its snapshot and its bytes.
/// `Ok(None)` when there is none.
///
/// # Errors
/// Listing or reading the repository failed; with no host given, configs of several hosts.
fn newest_stored_config(
    repository: &Repository,
    host: Option<&str>,
) -> Result<Option<(Id, Snapshot, Vec<u8>)>> {
    let (snapshots, _) = repository.list_snapshots()?;
    let stored: Vec<(Id, Snapshot)> = snapshots
        .into_iter()
        .filter(|(_, snapshot)| snapshot.tags.iter().any(|tag| tag == CONFIG_TAG))
        .filter(|(_, snapshot)| host.is_none_or(|host| snapshot.host == host))
        .collect();
    if host.is_none() {
        let mut hosts: Vec<&str> = stored
            .iter()
            .map(|(_, snapshot)| snapshot.host.as_str())
            .collect();
        hosts.sort_unstable();
        hosts.dedup();
        if hosts.len() > 1 {
            bail!(
                "the repository holds the configs of several hosts ({}): choose one with --from-host",
                hosts.join(", ")
            );
        }
    }
    let Some((id, snapshot)) = stored
        .into_iter()
        .max_by_key(|(id, snapshot)| (snapshot.time, *id))
    else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    restore::dump(repository, &snapshot.root, CONFIG_STREAM, &mut bytes)
        .with_context(|| format!("while reading the config stored in snapshot {}", id.short()))?;
    Ok(Some((id, snapshot, bytes)))
}

/// Stores the config file at `config_path` in the repository as a stream snapshot tagged
/// [`CONFIG_TAG`] of `host`, unless the newest stored config of `host` has the same bytes.
/// Returns the new snapshot, if one was written.
///
/// # Errors
/// The file cannot be read, or the repository cannot be read or written.
pub fn store_config(
    repository: &Repository,
    global: &GlobalArgs,
    config_path: &Path,
    host: &str,
) -> Result<Option<Id>> {
    let bytes = std::fs::read(config_path)
        .with_context(|| format!("cannot read the config file {}", config_path.display()))?;
    if let Some((_, _, stored)) = newest_stored_config(repository, Some(host))?
        && stored == bytes
    {
        return Ok(None);
    }
    let options = BackupOptions {
        host: host.to_owned(),
        username: settings::user_name(),
        tags: vec![CONFIG_TAG.to_owned()],
        time: super::backup::stored_time(jiff::Timestamp::now()),
        program_version: env!("CARGO_PKG_VERSION").to_owned(),
        parent: ParentChoice::None,
        excludes: ExcludeRules::default(),
        one_file_system: false,
    };
    let outcome = store_backup::backup(
        repository,
        BackupSource::Stream {
            name: CONFIG_STREAM.to_owned(),
            reader: &mut bytes.as_slice(),
        },
        &options,
        &NoProgress,
    )
    .context("while storing the config in the repository")?;
    if !global.quiet && !global.json {
        outln!(
            "config: stored in the repository (snapshot {}, tag {CONFIG_TAG})",
            outcome.snapshot_id.short()
        );
    }
    Ok(Some(outcome.snapshot_id))
}

/// Where one source goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Destination {
    /// Files, restored below this directory (`/`: their recorded paths).
    Directory(PathBuf),
    /// A stream, written to this file.
    File(PathBuf),
    /// A stream, piped into this shell command.
    Command(String),
}

impl Destination {
    fn describe(&self) -> String {
        match self {
            Self::Directory(directory) if directory == Path::new("/") => {
                "its recorded paths".into()
            }
            Self::Directory(directory) => format!("below {}", directory.display()),
            Self::File(file) => file.display().to_string(),
            Self::Command(command) => format!("| {command}"),
        }
    }
}

/// One source of the plan: its snapshot and destination, or why it cannot be recovered.
struct Planned<'a> {
    name: &'a str,
    chosen: Result<(Id, Snapshot, Destination)>,
}

/// Where a source goes, given the command line. Pure.
fn destination(source: &SourceConfig, args: &RecoverArgs) -> Result<Destination> {
    match &source.kind {
        SourceKind::Paths { .. } => Ok(Destination::Directory(
            args.target.clone().unwrap_or_else(|| PathBuf::from("/")),
        )),
        SourceKind::Command { stream_name, .. } => {
            if let Some(command) = source
                .restore
                .as_ref()
                .filter(|_| !args.no_restore_commands)
            {
                return Ok(Destination::Command(command.clone()));
            }
            args.streams_to
                .as_ref()
                .or(args.target.as_ref())
                .map(|directory| Destination::File(directory.join(stream_name)))
                .ok_or_else(|| {
                    anyhow!(
                        "stream {stream_name} has nowhere to go: give --streams-to DIR (or --target DIR, or a restore command in the config)"
                    )
                })
        }
    }
}

/// The host named by `--from-host` or `--host` (one at most).
///
/// # Errors
/// Several `--host` (a usage error).
fn from_host(args: &RecoverArgs) -> Result<Option<String>> {
    match args.selection.hosts.as_slice() {
        [] => Ok(args.from_host.clone()),
        [host] => Ok(Some(host.clone())),
        several => Err(crate::config::ConfigError::usage(
            Path::new(""),
            "--host",
            format!(
                "recover takes the snapshots of one host, not {}",
                several.join(", ")
            ),
        )
        .into()),
    }
}

/// The config to recover from: `--config`, else the newest one stored in the repository. Also
/// the host whose snapshots to take and where the config came from.
fn recovery_config(
    repository: &Repository,
    global: &GlobalArgs,
    config: Option<&Config>,
    args: &RecoverArgs,
) -> Result<(Config, String, String)> {
    let from_host = from_host(args)?;
    if let (Some(path), Some(config)) = (global.config.as_deref(), config) {
        let host = from_host
            .clone()
            .or_else(|| config.defaults.host.clone())
            .or_else(|| {
                newest_stored_config(repository, None)
                    .ok()
                    .flatten()
                    .map(|(_, snapshot, _)| snapshot.host)
            })
            .unwrap_or_else(settings::host_name);
        return Ok((config.clone(), host, path.display().to_string()));
    }
    let (id, snapshot, bytes) = newest_stored_config(repository, from_host.as_deref())?
        .ok_or_else(|| {
            anyhow!(
                "no config stored in the repository{}: give --config FILE (`cairn run` stores its config unless store_config = false)",
                from_host
                    .as_ref()
                    .map(|host| format!(" for host {host}"))
                    .unwrap_or_default()
            )
        })?;
    let origin = format!("stored config of snapshot {}", id.short());
    let text = String::from_utf8(bytes).map_err(|_| anyhow!("the {origin} is not UTF-8 text"))?;
    let parsed = Config::parse(&text, Path::new(&origin)).with_context(|| {
        format!(
            "the stored config does not parse: `cairn dump {} {CONFIG_STREAM} > cairn.toml`, fix it, then give --config cairn.toml",
            id.short()
        )
    })?;
    if let Some(path) = &args.save_config {
        save_private(path, text.as_bytes())
            .with_context(|| format!("cannot write the config to {}", path.display()))?;
    }
    let host = from_host
        .or_else(|| parsed.defaults.host.clone())
        .unwrap_or(snapshot.host);
    Ok((
        parsed,
        host,
        format!("{origin} ({})", render::local_time(snapshot.time)),
    ))
}

/// Writes `bytes` to `path` readable by its owner only (a config may hold secrets): a temporary
/// file beside it, created 0600, flushed and renamed over it.
fn save_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut temporary = tempfile::Builder::new()
        .prefix(".cairn-config-")
        .tempfile_in(directory)?;
    temporary.write_all(bytes)?;
    temporary.as_file().sync_all()?;
    temporary.persist(path).map_err(|error| error.error)?;
    Ok(())
}

/// Two streams bound for one file: the later source fails in the plan instead of overwriting the
/// earlier one's file.
fn refuse_shared_files(plan: &mut [Planned<'_>]) {
    let mut taken: Vec<(PathBuf, &str)> = Vec::new();
    for planned in plan.iter_mut() {
        let Ok((_, _, Destination::File(file))) = &planned.chosen else {
            continue;
        };
        if let Some((_, first)) = taken.iter().find(|(path, _)| path == file) {
            planned.chosen = Err(anyhow!(
                "its stream would overwrite source {first}'s at {}: recover it alone with --source {} and another --streams-to",
                file.display(),
                planned.name
            ));
        } else {
            taken.push((file.clone(), planned.name));
        }
    }
}

/// The stream a command source's snapshot holds.
fn stream_name(snapshot: &Snapshot) -> Option<&str> {
    match &snapshot.source {
        Source::Stdin(name) => Some(name),
        Source::Paths(_) => None,
    }
}

/// What recovering one source did.
struct Recovered {
    bytes: u64,
    files: u64,
    warnings: Vec<String>,
}

/// Writes a stream to a file through a temporary name beside it, renamed once the whole
/// stream verified.
fn stream_to_file(
    repository: &Repository,
    snapshot: &Snapshot,
    name: &str,
    file: &Path,
) -> Result<u64> {
    let directory = file.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(directory)
        .with_context(|| format!("cannot create {}", directory.display()))?;
    let mut temporary = tempfile::Builder::new()
        .prefix(".cairn-recover-")
        .tempfile_in(directory)
        .with_context(|| format!("cannot create a file in {}", directory.display()))?;
    let bytes = {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, temporary.as_file_mut());
        let bytes = restore::dump(repository, &snapshot.root, name, &mut out)?;
        out.flush().context("while writing the stream")?;
        bytes
    };
    temporary
        .as_file()
        .sync_all()
        .context("while writing the stream")?;
    temporary
        .persist(file)
        .map_err(|error| error.error)
        .with_context(|| format!("cannot write {}", file.display()))?;
    Ok(bytes)
}

/// Pipes a stream into `sh -c command`; the source fails when the command does, or when the
/// stream did not verify (the command then saw a stream cut short).
fn stream_to_command(
    repository: &Repository,
    snapshot_id: Id,
    snapshot: &Snapshot,
    name: &str,
    source: &str,
    command: &str,
) -> Result<u64> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("CAIRN_SOURCE", source)
        .env("CAIRN_SNAPSHOT", snapshot_id.to_hex())
        .stdin(Stdio::piped())
        .stdout(Stdio::from(std::io::stderr()))
        .spawn()
        .with_context(|| format!("cannot start restore command {command:?}"))?;
    let dumped = {
        let stdin = child
            .stdin
            .take()
            .context("restore command without stdin")?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, stdin);
        let dumped = restore::dump(repository, &snapshot.root, name, &mut out);
        // Dropping the writer closes the pipe: the command sees the end of the stream.
        dumped.and_then(|bytes| {
            out.flush()
                .map_err(|error| cairn_store::Error::local("write", Path::new(name), error))
                .map(|()| bytes)
        })
    };
    let status = child
        .wait()
        .with_context(|| format!("while waiting for restore command {command:?}"))?;
    if !status.success() {
        bail!("restore command {command:?} failed ({status})");
    }
    // The command succeeded but did not get the whole, verified stream: it exited before reading
    // all of it, or the stream failed verification part way (the command saw it cut short).
    dumped.with_context(|| {
        format!("restore command {command:?} did not receive the whole, verified stream")
    })
}

/// Recovers one planned source.
fn recover_source(
    repository: &Repository,
    name: &str,
    snapshot_id: Id,
    snapshot: &Snapshot,
    destination: &Destination,
) -> Result<Recovered> {
    match destination {
        Destination::Directory(directory) => {
            let options = RestoreOptions {
                filter: RestoreFilter {
                    includes: PathMatcher::new(&[])?,
                    excludes: PathMatcher::new(&[])?,
                },
                overwrite: Overwrite::IfChanged,
                delete: false,
                dry_run: false,
                owners: OwnerMapping::ByName,
            };
            let outcome = restore::restore_with(
                repository,
                &snapshot.root,
                "",
                directory,
                &options,
                &NoRestoreProgress,
            )?;
            if let Some((path, error)) = outcome.failed.first() {
                bail!(
                    "{} not be restored (first: {}: {error})",
                    render::count(outcome.failed.len() as u64, "entry could", "entries could"),
                    path.display()
                );
            }
            Ok(Recovered {
                bytes: outcome.bytes,
                files: outcome.files,
                warnings: outcome
                    .warnings
                    .iter()
                    .map(|warning| format!("{}: {}", warning.path.display(), warning.message))
                    .collect(),
            })
        }
        Destination::File(file) => {
            let stream = stream_name(snapshot).context("the snapshot holds no stream")?;
            let bytes = stream_to_file(repository, snapshot, stream, file)?;
            Ok(Recovered {
                bytes,
                files: 1,
                warnings: Vec::new(),
            })
        }
        Destination::Command(command) => {
            let stream = stream_name(snapshot).context("the snapshot holds no stream")?;
            let bytes =
                stream_to_command(repository, snapshot_id, snapshot, stream, name, command)?;
            Ok(Recovered {
                bytes,
                files: 1,
                warnings: Vec::new(),
            })
        }
    }
}

/// `12 files, 3.40 MiB` for files, `a stream of 3.40 MiB` for a stream.
fn what(files: u64, bytes: u64, destination: &Destination) -> String {
    match destination {
        Destination::Directory(_) => format!(
            "{files} {}, {}",
            if files == 1 { "file" } else { "files" },
            render::bytes(bytes)
        ),
        Destination::File(_) | Destination::Command(_) => {
            format!("a stream of {}", render::bytes(bytes))
        }
    }
}

fn print_plan_line(global: &GlobalArgs, planned: &Planned<'_>, host: &str) {
    match &planned.chosen {
        Ok((id, snapshot, destination)) => {
            if global.json {
                render::json_line(&serde_json::json!({
                    "message_type": "plan", "source": planned.name, "host": host,
                    "snapshot_id": id.to_hex(), "snapshot_time": render::rfc3339(snapshot.time),
                    "bytes": snapshot.summary.bytes_processed, "files": snapshot.summary.files,
                    "destination": destination.describe(),
                }));
            } else {
                outln!(
                    "{}: snapshot {} of {} ({}, {}) → {}",
                    planned.name,
                    id.short(),
                    host,
                    render::local_time(snapshot.time),
                    what(
                        snapshot.summary.files,
                        snapshot.summary.bytes_processed,
                        destination
                    ),
                    destination.describe()
                );
            }
        }
        Err(error) => {
            if global.json {
                render::json_line(&serde_json::json!({
                    "message_type": "plan", "source": planned.name, "host": host, "error": render::error_line(error),
                }));
            } else {
                eprintln!(
                    "{}: CANNOT RECOVER: {}",
                    planned.name,
                    render::error_line(error)
                );
            }
        }
    }
}

/// Runs `cairn recover`.
///
/// # Errors
/// The repository cannot be opened, no config is given or stored, an unknown `--source`. A
/// source that cannot be recovered is not an error: it makes [`Completion::RecoverFailed`]
/// once the others are done.
pub fn run(global: &GlobalArgs, config: Option<&Config>, args: &RecoverArgs) -> Result<Completion> {
    let clock = Instant::now();
    let repository = settings::open_repository(global)?;
    let (config, host, origin) = recovery_config(&repository, global, config, args)?;
    let sources = config.select(&args.selection.sources).map_err(|message| {
        crate::config::ConfigError::usage(Path::new(&origin), "sources", message)
    })?;
    if !global.json && !global.quiet {
        outln!(
            "recovering from {origin}: {} of host {host}{}",
            render::count(sources.len() as u64, "source", "sources"),
            if args.dry_run {
                " (dry run: nothing is written)"
            } else {
                ""
            }
        );
    }
    let (snapshots, _) = repository.list_snapshots()?;
    let mut plan: Vec<Planned<'_>> = sources
        .iter()
        .map(|(name, source)| {
            let narrowing = Selection::from(SnapshotFilter {
                hosts: Vec::new(),
                tags: args.selection.tags.clone(),
                paths: args.selection.paths.clone(),
            });
            let selection = Selection {
                filter: narrowing.filter.clone(),
                sources: vec![SourceSelector {
                    name: (*name).to_owned(),
                    host: host.clone(),
                    tag: source_tag(name),
                }],
            };
            let latest = snapshots.iter().rev().find(|(id, snapshot)| {
                selection.may_be_latest(&SnapshotInfo::from_snapshot(*id, snapshot))
            });
            let chosen = latest
                .ok_or_else(|| {
                    let also = if narrowing.is_empty() {
                        String::new()
                    } else {
                        format!(" with {}", narrowing.describe())
                    };
                    anyhow!(
                        "no snapshot tagged {} of host {host}{also}",
                        source_tag(name)
                    )
                })
                .and_then(|(id, snapshot)| {
                    destination(source, args)
                        .map(|destination| (*id, snapshot.clone(), destination))
                });
            Planned { name, chosen }
        })
        .collect();
    refuse_shared_files(&mut plan);
    for planned in &plan {
        print_plan_line(global, planned, &host);
    }
    let planned_failures = plan
        .iter()
        .filter(|planned| planned.chosen.is_err())
        .count();
    if args.dry_run {
        if global.json {
            render::json_line(&serde_json::json!({
                "message_type": "summary", "dry_run": true, "sources": plan.len(),
                "sources_failed": planned_failures,
            }));
        }
        return Ok(if planned_failures == 0 {
            Completion::Done
        } else {
            Completion::RecoverFailed
        });
    }
    let mut failed = planned_failures;
    let mut warned = false;
    let mut total_bytes = 0;
    for planned in &plan {
        let Ok((id, snapshot, destination)) = &planned.chosen else {
            continue;
        };
        let source_clock = Instant::now();
        let outcome = recover_source(&repository, planned.name, *id, snapshot, destination);
        let seconds = source_clock.elapsed().as_secs_f64();
        match &outcome {
            Ok(recovered) => {
                total_bytes += recovered.bytes;
                warned |= !recovered.warnings.is_empty();
                for warning in &recovered.warnings {
                    eprintln!("warning: {}: {warning}", planned.name);
                }
                if global.json {
                    render::json_line(&serde_json::json!({
                        "message_type": "source", "source": planned.name, "ok": true, "verified": true,
                        "snapshot_id": id.to_hex(), "destination": destination.describe(),
                        "files": recovered.files, "bytes": recovered.bytes, "seconds": seconds,
                        "warnings": recovered.warnings,
                    }));
                } else if !global.quiet {
                    outln!(
                        "{}: recovered snapshot {} → {}: {} in {:.1} s, every byte verified",
                        planned.name,
                        id.short(),
                        destination.describe(),
                        what(recovered.files, recovered.bytes, destination),
                        seconds
                    );
                }
            }
            Err(error) => {
                failed += 1;
                if global.json {
                    render::json_line(&serde_json::json!({
                        "message_type": "source", "source": planned.name, "ok": false,
                        "snapshot_id": id.to_hex(), "destination": destination.describe(),
                        "seconds": seconds, "error": render::error_line(error),
                    }));
                } else {
                    eprintln!("{}: FAILED: {}", planned.name, render::error_line(error));
                }
            }
        }
    }
    let rto = clock.elapsed();
    if global.json {
        render::json_line(&serde_json::json!({
            "message_type": "summary", "dry_run": false, "sources": plan.len(),
            "sources_recovered": plan.len() - failed, "sources_failed": failed,
            "bytes": total_bytes, "rto_seconds": rto.as_secs_f64(),
        }));
    } else if !global.quiet || failed > 0 {
        outln!(
            "recovered {} of {}, {}, in {} (RTO, from opening the repository to the last source verified)",
            plan.len() - failed,
            render::count(plan.len() as u64, "source", "sources"),
            render::bytes(total_bytes),
            render::span(rto)
        );
    }
    Ok(if failed > 0 {
        Completion::RecoverFailed
    } else if warned {
        Completion::Partial
    } else {
        Completion::Done
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(
        target: Option<&str>,
        streams_to: Option<&str>,
        no_restore_commands: bool,
    ) -> RecoverArgs {
        RecoverArgs {
            selection: crate::args::SelectionArgs::default(),
            target: target.map(PathBuf::from),
            streams_to: streams_to.map(PathBuf::from),
            no_restore_commands,
            dry_run: false,
            from_host: None,
            save_config: None,
        }
    }

    #[test]
    fn destinations_follow_the_command_line_and_the_config() {
        let config = Config::parse(
            "[sources.files]\npaths = [\"/srv\"]\n\
             [sources.db]\ncommand = \"pg_dump app\"\nstream_name = \"app.sql\"\nrestore = \"psql app\"\n\
             [sources.blob]\ncommand = \"cat x\"\nstream_name = \"x.bin\"\n",
            Path::new("cairn.toml"),
        )
        .expect("valid");
        let (files, db, blob) = (
            &config.sources["files"],
            &config.sources["db"],
            &config.sources["blob"],
        );
        let bare = args(None, None, false);
        assert_eq!(
            destination(files, &bare).expect("files"),
            Destination::Directory("/".into())
        );
        assert_eq!(
            destination(db, &bare).expect("db"),
            Destination::Command("psql app".into())
        );
        let message = format!("{:#}", destination(blob, &bare).expect_err("nowhere"));
        assert!(message.contains("give --streams-to DIR"), "{message}");
        let scratch = args(Some("/mnt/new"), None, true);
        assert_eq!(
            destination(files, &scratch).expect("files"),
            Destination::Directory("/mnt/new".into())
        );
        assert_eq!(
            destination(db, &scratch).expect("db"),
            Destination::File("/mnt/new/app.sql".into())
        );
        let streams = args(Some("/mnt/new"), Some("/var/dumps"), false);
        assert_eq!(
            destination(blob, &streams).expect("blob"),
            Destination::File("/var/dumps/x.bin".into())
        );
        assert_eq!(
            destination(db, &streams).expect("db"),
            Destination::Command("psql app".into())
        );
    }

    #[test]
    fn two_streams_bound_for_one_file_fail_the_later_source() {
        let snapshot = |name: &str| Snapshot {
            time: cairn_store::format::tree::Timestamp {
                seconds: 0,
                nanos: 0,
            },
            host: "web1".into(),
            username: "root".into(),
            tags: Vec::new(),
            source: Source::Stdin(name.into()),
            root: Id([0; 32]),
            parent: None,
            summary: cairn_store::format::snapshot::Summary::default(),
            program_version: String::new(),
            extensions: Vec::new(),
        };
        let file = |name: &str| Destination::File(PathBuf::from("/restore").join(name));
        let mut plan = vec![
            Planned {
                name: "db",
                chosen: Ok((Id([1; 32]), snapshot("dump.sql"), file("dump.sql"))),
            },
            Planned {
                name: "files",
                chosen: Ok((
                    Id([2; 32]),
                    snapshot("x"),
                    Destination::Directory("/".into()),
                )),
            },
            Planned {
                name: "other",
                chosen: Ok((Id([3; 32]), snapshot("dump.sql"), file("dump.sql"))),
            },
            Planned {
                name: "third",
                chosen: Ok((Id([4; 32]), snapshot("b.sql"), file("b.sql"))),
            },
        ];
        refuse_shared_files(&mut plan);
        let failed: Vec<&str> = plan
            .iter()
            .filter(|planned| planned.chosen.is_err())
            .map(|planned| planned.name)
            .collect();
        assert_eq!(failed, ["other"]);
        let message = format!("{:#}", plan[2].chosen.as_ref().expect_err("refused"));
        assert!(
            message.contains("would overwrite source db's at /restore/dump.sql"),
            "{message}"
        );
    }

    #[test]
    fn a_restore_command_on_a_paths_source_is_refused() {
        let message = Config::parse(
            "[sources.a]\npaths = [\"/a\"]\nrestore = \"x\"\n",
            Path::new("c.toml"),
        )
        .expect_err("refused")
        .to_string();
        assert!(
            message.contains("restore is for command sources"),
            "{message}"
        );
    }
}
