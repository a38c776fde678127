//! Backup sources beyond plain paths and stdin, with the real binary: `--command` streams (their
//! output restores byte for byte; a command that fails, is killed, or is interrupted with cairn
//! commits nothing; large output streams in bounded memory), the warning for compressed or
//! encrypted input that defeats deduplication, excludes and `--one-file-system`.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::{
    MongoArchive, Run, Tmpfs, TreeBuilder, Workspace, compressible_text, json_u64, listed_below,
    random_bytes,
};

const MIB: usize = 1024 * 1024;

/// A path quoted for `sh -c` (test paths hold no single quote).
fn quoted(path: &Path) -> String {
    format!("'{}'", path.display())
}

/// `backup --json --command COMMAND --name NAME extra...`.
fn backup_command(workspace: &Workspace, command: &str, name: &str, extra: &[&str]) -> Run {
    let mut args = vec!["backup", "--json", "--command", command, "--name", name];
    args.extend_from_slice(extra);
    workspace.cairn(&args)
}

/// The `warning` lines of kind `dedup_hostile` of a `--json` run.
fn dedup_warnings(run: &Run) -> Vec<serde_json::Value> {
    run.json_lines()
        .into_iter()
        .filter(|line| line["message_type"] == "warning" && line["kind"] == "dedup_hostile")
        .collect()
}

/// Waits up to `limit` for `child` to end.
#[track_caller]
fn wait_for(child: &mut std::process::Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("poll cairn") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "cairn did not end within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn command_output_is_backed_up_and_dumps_byte_for_byte() {
    let workspace = Workspace::initialized();
    let archive = MongoArchive::generate(31, 400).to_bytes();
    let file = workspace.path("dump.archive");
    fs::write(&file, &archive).unwrap();
    let command = format!("cat {}; echo 'dump done' >&2", quoted(&file));

    let first = backup_command(&workspace, &command, "app.archive", &[]).ok();
    assert!(
        first.stderr.contains("dump done"),
        "the command's stderr is passed through: {}",
        first.stderr
    );
    let first = first.summary();
    assert_eq!(json_u64(&first, "bytes_processed"), archive.len() as u64);
    assert_eq!(first["parent"], serde_json::Value::Null);
    let dumped = workspace.cairn(&["dump", "latest", "app.archive"]).ok();
    assert!(dumped.stdout == archive, "dumped stream differs");

    // The same stream again: the first snapshot is its parent, and nearly nothing is added.
    let second = backup_command(&workspace, &command, "app.archive", &[])
        .ok()
        .summary();
    assert_eq!(second["parent"], first["snapshot_id"]);
    assert!(json_u64(&second, "bytes_added") * 50 < archive.len() as u64);

    // `--name` also names a stdin stream, and `--stdin-name` still works.
    workspace
        .cairn_stdin(&["backup", "--stdin", "--name", "a.bin"], b"via --name")
        .ok();
    workspace
        .cairn_stdin(&["backup", "--stdin", "--stdin-name", "b.bin"], b"old flag")
        .ok();
    let snapshots = workspace.snapshots();
    let names: Vec<&serde_json::Value> = snapshots.iter().map(|s| &s["paths"][0]).collect();
    assert_eq!(names, ["app.archive", "app.archive", "a.bin", "b.bin"]);
    assert!(snapshots.iter().all(|snapshot| snapshot["stdin"] == true));
    let dumped = workspace.cairn(&["dump", "latest", "b.bin"]).ok();
    assert_eq!(dumped.stdout, b"old flag");

    // A command that writes nothing and succeeds: an empty stream, with a warning.
    backup_command(&workspace, "true", "empty.bin", &[])
        .ok()
        .stdout_contains_kind("empty_command_output");
}

/// Asserts that a `--json` run printed a warning of this kind.
trait WarningKinds {
    fn stdout_contains_kind(&self, kind: &str);
}

impl WarningKinds for Run {
    #[track_caller]
    fn stdout_contains_kind(&self, kind: &str) {
        assert!(
            self.json_lines()
                .iter()
                .any(|line| line["message_type"] == "warning" && line["kind"] == kind),
            "no {kind} warning in {}",
            self.text()
        );
    }
}

#[test]
fn a_failing_command_writes_no_snapshot_and_its_uploads_are_reused() {
    let workspace = Workspace::initialized();
    workspace.backup_stdin("app.archive", b"yesterday's dump", &[]);
    let before = workspace.snapshots();
    // Enough output that packs are uploaded before the command fails.
    let big = workspace.path("big.bin");
    fs::write(&big, random_bytes(0x5eed, 60_000_000)).unwrap();

    let failing = format!(
        "printf partial; cat {}; echo 'connection lost' >&2; echo boom >&2; exit 3",
        quoted(&big)
    );
    backup_command(&workspace, &failing, "app.archive", &[])
        .code(15)
        .stderr_contains(&format!(
            "cairn: command '{failing}' failed with exit status 3; no snapshot written; its \
             last stderr lines:\n  connection lost\n  boom"
        ));
    assert_eq!(workspace.snapshots(), before, "a snapshot was written");
    let sessions = workspace.open_repository().list_sessions().unwrap();
    assert!(
        sessions.values().all(|session| session.ended),
        "the failed backup left its session open: {sessions:?}"
    );
    let check = workspace.cairn(&["check", "--json"]).ok();
    let unindexed = check.json_lines().last().unwrap()["unindexed_packs"]
        .as_array()
        .map_or(0, Vec::len) as u64;

    let rerun = backup_command(
        &workspace,
        &format!("cat {}", quoted(&big)),
        "app.archive",
        &[],
    )
    .ok()
    .summary();
    assert_eq!(
        json_u64(&rerun, "recovered_packs"),
        unindexed,
        "the next backup reuses every pack the failed one uploaded"
    );
    // Each reused pack holds about 16 MiB of the 60 MB that need not be sent again.
    assert!(
        json_u64(&rerun, "bytes_added") + unindexed * 15 * (MIB as u64) < 62_000_000,
        "{rerun}"
    );
    let dumped = workspace.cairn(&["dump", "latest", "app.archive"]).ok();
    assert!(dumped.stdout == fs::read(&big).unwrap());
    workspace.cairn(&["check", "--read-data"]).ok();
}

#[test]
fn a_command_killed_by_a_signal_writes_no_snapshot() {
    let workspace = Workspace::initialized();
    backup_command(
        &workspace,
        "printf partial; echo 'about to die' >&2; kill -KILL $$",
        "app.archive",
        &[],
    )
    .code(15)
    .stderr_contains("was killed by signal 9 (SIGKILL); no snapshot written")
    .stderr_contains("\n  about to die");
    // A command that cannot even be found is a failed command too (sh exits 127).
    backup_command(
        &workspace,
        "no-such-dump-tool --archive",
        "app.archive",
        &[],
    )
    .code(15)
    .stderr_contains("failed with exit status 127");
    assert!(workspace.snapshots().is_empty());
    workspace.cairn(&["check"]).ok();
}

#[test]
fn interrupting_cairn_kills_and_reaps_its_command() {
    let workspace = Workspace::initialized();
    let pid_file = workspace.path("command.pid");
    let command = format!("echo $$ > {}; exec sleep 120", quoted(&pid_file));
    let mut cairn = workspace
        .command(
            &["backup", "--command", &command, "--name", "slow.archive"],
            &[],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cairn starts");
    let deadline = Instant::now() + Duration::from_mins(1);
    let command_pid = loop {
        if let Ok(text) = fs::read_to_string(&pid_file)
            && text.ends_with('\n')
        {
            break Pid::from_raw(text.trim().parse().expect("a pid"));
        }
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    let cairn_pid = Pid::from_raw(i32::try_from(cairn.id()).unwrap());
    kill(cairn_pid, Signal::SIGINT).unwrap();
    let status = wait_for(&mut cairn, Duration::from_secs(30));
    assert_eq!(
        status.signal(),
        Some(Signal::SIGINT as i32),
        "cairn should die by SIGINT (exit 130 in a shell): {status:?}"
    );
    assert_eq!(
        kill(command_pid, None),
        Err(Errno::ESRCH),
        "the command outlived cairn (or was not reaped)"
    );
    assert!(workspace.snapshots().is_empty());
}

/// The peak resident memory of a process, sampled from `/proc` until it ends.
fn peak_rss_kib(child: &mut std::process::Child) -> (ExitStatus, u64) {
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Ok(status) = fs::read_to_string(&status_path)
            && let Some(kib) = status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|value| {
                    value
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        {
            peak = kib.max(peak);
        }
        if let Some(status) = child.try_wait().expect("poll cairn") {
            return (status, peak);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn large_command_output_streams_in_bounded_memory() {
    let workspace = Workspace::initialized();
    let total: usize = 200_000_000;
    // 200 MB of output, plus 2 MB of stderr in one line: neither is held whole.
    let command =
        format!("head -c {total} /dev/zero; head -c 2000000 /dev/zero | tr '\\0' x >&2; echo >&2");
    let stdout_path = workspace.path("backup.out");
    let stderr_path = workspace.path("backup.err");
    let mut cairn = workspace
        .command(
            &[
                "backup",
                "--json",
                "--command",
                &command,
                "--name",
                "big.raw",
            ],
            &[],
        )
        .stdin(Stdio::null())
        .stdout(File::create(&stdout_path).unwrap())
        .stderr(File::create(&stderr_path).unwrap())
        .spawn()
        .expect("cairn starts");
    let (status, peak_kib) = peak_rss_kib(&mut cairn);
    let stdout = fs::read_to_string(&stdout_path).unwrap();
    assert!(status.success(), "{status:?}: {stdout}");
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(json_u64(&summary, "bytes_processed"), total as u64);
    assert_eq!(fs::metadata(&stderr_path).unwrap().len(), 2_000_001);
    let peak_mib = peak_kib / 1024;
    eprintln!("peak RSS of a {total}-byte command backup: {peak_mib} MiB");
    assert!(
        peak_mib < 100,
        "peak RSS {peak_mib} MiB for a {total}-byte stream"
    );
    let listed = workspace.cairn(&["ls", "--long", "latest"]).ok().text();
    assert!(listed.contains(&total.to_string()), "{listed}");
}

#[test]
fn compressed_looking_input_that_changes_whole_is_warned_about() {
    let workspace = Workspace::initialized();
    let backup = |data: &[u8]| {
        workspace
            .cairn_stdin(&["backup", "--json", "--stdin", "--name", "dump.gz"], data)
            .ok()
    };
    // Random bytes look like compressed output. A first backup is not judged.
    let first = backup(&random_bytes(1, 10 * MIB));
    assert!(dedup_warnings(&first).is_empty(), "{}", first.text());
    assert_eq!(json_u64(&first.summary(), "dedup_hostile"), 0);

    let second = backup(&random_bytes(2, 10 * MIB));
    let warnings = dedup_warnings(&second);
    assert_eq!(warnings.len(), 1, "{}", second.text());
    assert_eq!(warnings[0]["path"], "dump.gz");
    assert_eq!(json_u64(&warnings[0], "bytes"), 10 * MIB as u64);
    assert!(warnings[0]["compression_saved"].as_f64().unwrap() < 0.05);
    assert!(warnings[0]["already_stored"].as_f64().unwrap() < 0.05);
    assert_eq!(json_u64(&second.summary(), "dedup_hostile"), 1);

    // The human form says what to do.
    workspace
        .cairn_stdin(
            &["backup", "--stdin", "--name", "dump.gz"],
            &random_bytes(3, 10 * MIB),
        )
        .ok()
        .stderr_contains(
            "warning: dump.gz: looks compressed or encrypted (zstd saved 0%) and only 0% of it \
             was already stored: back it up uncompressed",
        );
    // The same bytes again are all stored: no warning.
    let again = backup(&random_bytes(3, 10 * MIB));
    assert!(dedup_warnings(&again).is_empty(), "{}", again.text());

    // A large file in a directory backup that is rewritten whole.
    let source = workspace.path("source");
    let tree = TreeBuilder::new(&source);
    let file = tree.file("db/backup.tar.gz", &random_bytes(4, 9 * MIB));
    tree.file("db/notes.txt", b"small files are never judged\n");
    let first = workspace
        .cairn(&["backup", "--json", &source.to_string_lossy()])
        .ok();
    assert!(dedup_warnings(&first).is_empty());
    fs::write(&file, random_bytes(5, 9 * MIB)).unwrap();
    let second = workspace
        .cairn(&["backup", "--json", &source.to_string_lossy()])
        .ok();
    let warnings = dedup_warnings(&second);
    assert_eq!(warnings.len(), 1, "{}", second.text());
    assert_eq!(warnings[0]["path"], file.to_string_lossy().as_ref());
}

#[test]
fn uncompressed_input_with_small_edits_is_not_warned_about() {
    let workspace = Workspace::initialized();
    let mut dump = compressible_text(7, 12 * MIB);
    let first = workspace
        .cairn_stdin(
            &["backup", "--json", "--stdin", "--name", "shop.sql"],
            &dump,
        )
        .ok();
    for offset in [100_000, 5 * MIB, 11 * MIB] {
        dump[offset..offset + 20].copy_from_slice(b"UPDATED ROW 12345678");
    }
    let second = workspace
        .cairn_stdin(
            &["backup", "--json", "--stdin", "--name", "shop.sql"],
            &dump,
        )
        .ok();
    for run in [&first, &second] {
        assert!(dedup_warnings(run).is_empty(), "{}", run.text());
        assert!(!run.stderr.contains("looks compressed"));
    }
    // Incompressible data that mostly stays the same is fine too.
    let mut blob = random_bytes(8, 10 * MIB);
    workspace.backup_stdin("vm.img", &blob, &[]);
    blob[3 * MIB..4 * MIB].copy_from_slice(&random_bytes(9, MIB));
    let changed = workspace
        .cairn_stdin(&["backup", "--json", "--stdin", "--name", "vm.img"], &blob)
        .ok();
    assert!(dedup_warnings(&changed).is_empty(), "{}", changed.text());
}

#[test]
fn excludes_leave_entries_out_and_incremental_backups_still_reuse_the_parent() {
    let workspace = Workspace::initialized();
    let source = workspace.path("src");
    let tree = TreeBuilder::new(&source);
    tree.file("app/main.rs", b"fn main() {}\n");
    tree.file("app/debug.log", b"noise\n"); // *.log
    tree.file("app/tmp/session.db", b"state\n"); // /.../src/app/tmp (anchored)
    tree.file(
        "web/tmp/keep.txt",
        b"kept: the anchored pattern is elsewhere\n",
    );
    tree.file("web/node_modules/pad/index.js", b"module.exports = 1;\n"); // node_modules
    tree.file("web/cache/blob.bin", b"cached\n"); // cache/ (directories only)
    tree.file("app/cache", b"a file called cache stays\n");
    tree.file("web/notes.bak", b"old notes\n"); // *.bak, from the exclude file
    tree.file("scratch/.nobackup", b""); // the marker leaves scratch out
    tree.file("scratch/disk.iso", &random_bytes(10, 100_000));
    let exclude_file = workspace.path("excludes.txt");
    fs::write(&exclude_file, "# editor leftovers\n\n*.bak\n").unwrap();
    let anchored = format!("{}/app/tmp", source.display());
    let source_arg = source.to_string_lossy();
    let args = [
        "backup",
        "--json",
        &source_arg,
        "--exclude",
        "*.log",
        "--exclude",
        &anchored,
        "--exclude",
        "node_modules",
        "--exclude",
        "cache/",
        "--exclude-file",
        &exclude_file.to_string_lossy(),
        "--exclude-if-present",
        ".nobackup",
    ];
    let first = workspace.cairn(&args).ok().summary();
    assert_eq!(json_u64(&first, "entries_excluded"), 6);
    assert_eq!(json_u64(&first, "files_processed"), 3);
    let expected: BTreeSet<String> = [
        "app",
        "app/cache",
        "app/main.rs",
        "web",
        "web/tmp",
        "web/tmp/keep.txt",
    ]
    .map(str::to_owned)
    .into();
    assert_eq!(listed_below(&workspace, &source), expected);

    let second = workspace.cairn(&args).ok().summary();
    assert_eq!(second["parent"], first["snapshot_id"]);
    assert_eq!(json_u64(&second, "files_unchanged"), 3);
    assert_eq!(json_u64(&second, "entries_excluded"), 6);
    // Nothing under the source is stored again. The snapshot also records the source's
    // ancestors with their metadata, and other tests change /tmp's mtime meanwhile, so only the
    // trees of those ancestors may be new.
    assert_eq!(json_u64(&second, "files_changed"), 0);
    let ancestor_trees = source.ancestors().count() as u64 - 1;
    assert!(
        json_u64(&second, "blobs_added") <= ancestor_trees,
        "{second}"
    );
    assert_eq!(listed_below(&workspace, &source), expected);

    // Without the excludes, the same parent still lets the unchanged files go unread.
    let third = workspace.backup(&[&source]);
    assert_eq!(json_u64(&third, "files_unchanged"), 3);
    assert_eq!(json_u64(&third, "files_processed"), 10);
}

#[test]
fn bad_exclude_arguments_are_refused_before_anything_is_written() {
    let workspace = Workspace::initialized();
    let source = workspace.path("src");
    TreeBuilder::new(&source).file("a.txt", b"a\n");
    let source_arg = source.to_string_lossy();
    let refusals = [
        (
            ["--exclude", "!*.log"],
            "invalid exclude pattern \"!*.log\": negated patterns",
        ),
        (["--exclude", "a[b"], "invalid exclude pattern \"a[b\""),
        (
            ["--exclude-file", "/no/such/file"],
            "cannot read exclude file /no/such/file",
        ),
        (
            ["--exclude-if-present", "a/b"],
            "invalid --exclude-if-present name",
        ),
    ];
    for ([option, value], message) in refusals {
        workspace
            .cairn(&["backup", &source_arg, option, value])
            .code(1)
            .stderr_contains(message);
    }
    workspace
        .cairn_stdin(
            &["backup", "--stdin", "--name", "x", "--exclude", "*.log"],
            b"x",
        )
        .code(2);
    workspace
        .cairn(&["backup", &source_arg, "--name", "x"])
        .code(2);
    assert!(workspace.snapshots().is_empty());
}

#[test]
fn one_file_system_records_mount_points_empty() {
    let workspace = Workspace::initialized();
    let source = workspace.path("fs-src");
    let tree = TreeBuilder::new(&source);
    tree.file("root.txt", b"on the first file system\n");
    let Some(_mounted) = Tmpfs::mount(source.join("mnt"), "4m", "the --one-file-system test")
    else {
        return;
    };
    fs::write(source.join("mnt/inside.txt"), b"on the tmpfs\n").unwrap();
    let source_arg = source.to_string_lossy();

    let crossing = workspace.backup(&[&source]);
    assert_eq!(json_u64(&crossing, "mount_points_not_crossed"), 0);
    assert!(listed_below(&workspace, &source).contains("mnt/inside.txt"));

    let staying = workspace
        .cairn(&["backup", "--json", "--one-file-system", &source_arg])
        .ok()
        .summary();
    assert_eq!(json_u64(&staying, "mount_points_not_crossed"), 1);
    let listed = listed_below(&workspace, &source);
    assert_eq!(
        listed,
        ["mnt", "root.txt"].map(str::to_owned).into(),
        "the mount point is recorded, empty"
    );
    let target = workspace.path("restored");
    workspace
        .cairn(&["restore", "latest", "--target", &target.to_string_lossy()])
        .ok();
    let restored_mount = crate::support::restored_path(&target, &source.join("mnt"));
    assert!(restored_mount.is_dir());
    assert_eq!(fs::read_dir(&restored_mount).unwrap().count(), 0);

    // A path given on the other file system is backed up: the boundary is its own.
    workspace
        .cairn(&["backup", "-x", &source.join("mnt").to_string_lossy()])
        .ok();
    assert!(
        listed_below(&workspace, &source).contains("mnt/inside.txt"),
        "the given mount point itself is walked"
    );
}
