//! cairn in a bad environment, with the real binary: a restore target that fills up or hits the
//! file-size limit, source files that change while they are read, and a repository written by a
//! newer cairn. (Unreadable source files and a wrong password: see `cli_e2e`.)

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::{
    Tmpfs, TreeBuilder, Workspace, copy_dir, files_below, json_u64, listing, random_bytes,
    restored_path,
};

/// Asserts that `directory` holds no file called `name` and no partial (temporary) file.
#[track_caller]
fn assert_nothing_left(directory: &Path, name: &str) {
    let left: Vec<PathBuf> = files_below(directory)
        .into_iter()
        .filter(|path| {
            let file_name = path.file_name().unwrap().to_string_lossy();
            file_name == name || file_name.contains("cairn-partial")
        })
        .collect();
    assert!(
        left.is_empty(),
        "a failed restore left files behind: {left:?}"
    );
}

/// A workspace with a backup of a small file, a 700 kB file and a 3 MB file; returns the
/// workspace and the source directory.
fn workspace_with_files() -> (Workspace, PathBuf) {
    let workspace = Workspace::initialized();
    let source = workspace.path("source");
    let tree = TreeBuilder::new(&source);
    tree.file("small.txt", b"fits anywhere\n");
    tree.file("medium.bin", &random_bytes(0x3ed, 700_000));
    tree.file("big.bin", &random_bytes(0xb16, 3_000_000));
    workspace.backup(&[&source]);
    (workspace, source)
}

/// Restores one file of the latest snapshot into `target`.
fn restore_file(
    workspace: &Workspace,
    source: &Path,
    name: &str,
    target: &Path,
) -> crate::support::Run {
    workspace.cairn(&[
        "restore",
        &format!("latest:{}", source.join(name).display()),
        "--target",
        target.to_str().unwrap(),
    ])
}

/// A restore into a file system that fills up fails with an error naming the file and the cause,
/// and leaves neither a file under the final name nor a temporary one; both when a write fails
/// midway (a file larger than the disk) and when only the final flush fails (a file smaller than
/// the write buffer, on a nearly full disk).
#[test]
fn restore_into_a_full_file_system_fails_and_leaves_no_file_behind() {
    let (workspace, source) = workspace_with_files();
    let Some(disk) = Tmpfs::mount(workspace.path("small-disk"), "2m", "the full-disk restore")
    else {
        return;
    };
    let target = &disk.mount_point;
    let run = restore_file(&workspace, &source, "big.bin", target).failed();
    assert!(
        run.stderr.contains("No space left on device")
            && run
                .stderr
                .contains(&target.join("big.bin").to_string_lossy().into_owned()),
        "the error does not name the file and the cause:\n{}",
        run.stderr
    );
    assert_nothing_left(target, "big.bin");

    // Leave about 400 kB free: the 700 kB file is buffered whole and fails at the last flush.
    fs::write(target.join("filler"), vec![1u8; 1_700_000]).unwrap();
    restore_file(&workspace, &source, "medium.bin", target)
        .failed()
        .stderr_contains("No space left on device");
    assert_nothing_left(target, "medium.bin");

    // Once there is room again, the same restore succeeds.
    fs::remove_file(target.join("filler")).unwrap();
    restore_file(&workspace, &source, "medium.bin", target).ok();
    assert!(fs::read(target.join("medium.bin")).unwrap() == random_bytes(0x3ed, 700_000));
}

/// The same with the file-size limit (`ulimit -f`, no root needed): writing past it is an error
/// (EFBIG), not a fatal SIGXFSZ that would leave the temporary file behind.
#[test]
fn restore_past_the_file_size_limit_fails_and_leaves_no_file_behind() {
    let (mut workspace, source) = workspace_with_files();
    // 2048 blocks: 1 MiB in dash's 512-byte blocks, 2 MiB in bash's 1024-byte ones.
    workspace.prefix = ["sh", "-c", "ulimit -f 2048 && exec \"$0\" \"$@\""]
        .into_iter()
        .map(OsString::from)
        .collect();
    let target = workspace.path("limited");
    let mut args = vec!["--no-cache"];
    let spec = format!("latest:{}", source.join("big.bin").display());
    args.extend_from_slice(&["restore", &spec, "--target", target.to_str().unwrap()]);
    let run = workspace.cairn(&args).failed();
    assert!(
        run.stderr.contains("File too large"),
        "expected EFBIG, exit {:?}:\n{}",
        run.code,
        run.stderr
    );
    assert_nothing_left(&target, "big.bin");
    // Files within the limit restore as usual.
    let spec = format!("latest:{}", source.join("small.txt").display());
    workspace
        .cairn(&[
            "--no-cache",
            "restore",
            &spec,
            "--target",
            target.to_str().unwrap(),
        ])
        .ok();
    assert_eq!(
        fs::read(target.join("small.txt")).unwrap(),
        b"fits anywhere\n"
    );
}

/// Appends to `path` every few milliseconds until `stop` is set (at most `limit` bytes).
fn append_until_stopped(
    path: PathBuf,
    stop: Arc<AtomicBool>,
    limit: usize,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        use std::io::Write;
        let mut file = fs::OpenOptions::new().append(true).open(&path).unwrap();
        let mut appended = 0;
        let mut line = 0u64;
        while !stop.load(Ordering::SeqCst) && appended < limit {
            line += 1;
            let text = format!("{line:08} appended while the backup reads this file\n").repeat(64);
            file.write_all(text.as_bytes()).unwrap();
            appended += text.len();
            std::thread::sleep(Duration::from_millis(5));
        }
        appended
    })
}

/// A file appended to while the backup reads it is reported by name ("changed while being
/// read", exit 3); the snapshot holds the bytes read, which restore verifies against their
/// recorded hash; the next backup, once the file is quiet, reads it again and exits 0.
#[test]
fn a_file_growing_during_backup_is_reported_and_its_snapshot_stays_consistent() {
    let workspace = Workspace::initialized();
    let source = workspace.path("source");
    let tree = TreeBuilder::new(&source);
    tree.file("steady.bin", &random_bytes(0x57, 300_000));
    let original = random_bytes(0x9a0, 3_000_000);
    let growing = tree.file("growing.log", &original);

    let stop = Arc::new(AtomicBool::new(false));
    let appender = append_until_stopped(growing.clone(), Arc::clone(&stop), 8_000_000);
    let started = Instant::now();
    let run = workspace.cairn(&["backup", "--json", source.to_str().unwrap()]);
    stop.store(true, Ordering::SeqCst);
    let appended = appender.join().unwrap();
    let run = run.code(3);
    let warnings: Vec<serde_json::Value> = run
        .json_lines()
        .into_iter()
        .filter(|line| line["message_type"] == "warning")
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0]["path"], growing.to_string_lossy().as_ref());
    assert!(
        warnings[0]["message"]
            .as_str()
            .unwrap()
            .contains("changed while being read"),
        "{warnings:?}"
    );
    let summary = run.summary();
    assert_eq!(json_u64(&summary, "files_changed"), 1, "{summary}");
    assert_eq!(json_u64(&summary, "entries_unreadable"), 0, "{summary}");
    eprintln!(
        "growing file: {appended} bytes appended during a backup of {} ms",
        started.elapsed().as_millis()
    );

    // Restore verifies every file against its recorded hash: the growing file comes back as a
    // prefix of what it is now, at least as long as it was, and the steady file intact.
    let target = workspace.path("restored");
    workspace
        .cairn(&["restore", "latest", "--target", target.to_str().unwrap()])
        .ok();
    let now = fs::read(&growing).unwrap();
    let restored = fs::read(restored_path(&target, &growing)).unwrap();
    assert!(
        restored.len() >= original.len() && now.starts_with(&restored),
        "restored {} bytes that are not a prefix of the {} now",
        restored.len(),
        now.len()
    );
    assert!(
        fs::read(restored_path(&target, &source.join("steady.bin"))).unwrap()
            == random_bytes(0x57, 300_000)
    );

    // Quiet now: the next backup reads it again (its recorded times are from before the change)
    // and is complete.
    let summary = workspace.backup(&[&source]);
    assert_eq!(json_u64(&summary, "files_changed"), 0, "{summary}");
    assert_eq!(json_u64(&summary, "files_unchanged"), 1, "{summary}");
    let dumped = workspace
        .cairn(&["dump", "latest", growing.to_str().unwrap()])
        .ok();
    assert!(
        dumped.stdout == now,
        "the second backup does not hold the whole file"
    );
}

/// A repository whose config says it is of a newer format version: every command refuses it
/// with exit 14 and an error naming the version, before asking anything of the keys, and
/// changes nothing.
#[test]
fn a_repository_of_a_newer_format_exits_14_naming_the_version() {
    let workspace = Workspace::initialized();
    let source = workspace.path("source");
    TreeBuilder::new(&source).file("a.txt", b"data\n");
    workspace.backup(&[&source]);
    let newer = workspace.path("newer-repo");
    copy_dir(&workspace.repo, &newer);
    let config = newer.join("config");
    let mut bytes = fs::read(&config).unwrap();
    assert_eq!(&bytes[..4], b"CRNC", "the config starts with its magic");
    bytes[4..6].copy_from_slice(&3u16.to_le_bytes());
    fs::write(&config, bytes).unwrap();
    let before = listing(&newer);
    let target = workspace.path("target");
    for args in [
        vec!["snapshots"],
        vec!["backup", source.to_str().unwrap()],
        vec!["restore", "latest", "--target", target.to_str().unwrap()],
        vec!["check", "--read-data"],
        vec!["prune"],
    ] {
        let run = workspace
            .cairn_env(&args, &[("CAIRN_REPOSITORY", &newer)])
            .code(14)
            .stderr_contains("format version 3")
            .stderr_contains("upgrade cairn");
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        // Whatever the password: the version is read before any key.
        let mut command = workspace.command(&args, &[("CAIRN_REPOSITORY", &newer)]);
        command.env("CAIRN_PASSWORD", "not the password");
        crate::support::run_command(command, None).code(14);
    }
    assert_eq!(before, listing(&newer), "the newer repository changed");
    assert!(!target.exists());
}
