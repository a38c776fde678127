//! Restore and walk mechanics of issue 13: owner-only local repositories, short temporary names,
//! private-by-construction restores, restoring into a non-empty target, honest summaries,
//! missing source paths and sparse files whatever the chunker seed.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::{
    CHEAP_INIT, TreeBuilder, Workspace, assert_same_tree, effective_uid, objects, random_bytes,
    restored_path,
};

/// A command prefix that runs `cairn` under `umask`.
fn umask_prefix(umask: &str) -> Vec<OsString> {
    [
        "/bin/sh",
        "-c",
        &format!("umask {umask}; exec \"$0\" \"$@\""),
    ]
    .into_iter()
    .map(OsString::from)
    .collect()
}

/// Every entry below `root` (and `root` itself) with its permission bits.
fn modes_below(root: &Path) -> Vec<(std::path::PathBuf, bool, u32)> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(path) = pending.pop() {
        let metadata = fs::symlink_metadata(&path).expect("stat");
        if metadata.is_dir() {
            for entry in fs::read_dir(&path).expect("list") {
                pending.push(entry.expect("entry").path());
            }
        }
        found.push((path, metadata.is_dir(), metadata.mode() & 0o7777));
    }
    found
}

/// Regression: under umask 022 a local repository's key objects and config were 0644, so any
/// local user could copy them and guess the password offline. Under umask 022 and 000 every
/// object is 0600 and every folder 0700, after init, a backup and a password change.
#[test]
fn local_repository_is_owner_only_whatever_the_umask() {
    for umask in ["022", "000"] {
        let mut workspace = Workspace::new();
        workspace.prefix = umask_prefix(umask);
        workspace.cairn(&CHEAP_INIT).ok();
        let tree = TreeBuilder::new(workspace.path("source"));
        tree.file("a.txt", b"some content");
        tree.file("sub/b.bin", &vec![7u8; 100_000]);
        workspace.backup(&[tree.root()]);
        let found = modes_below(&workspace.repo);
        assert!(found.len() > 8, "{found:?}");
        assert!(
            found
                .iter()
                .any(|(path, _, _)| path.starts_with(workspace.repo.join("keys"))),
            "no key object in {found:?}"
        );
        for (path, is_dir, mode) in found {
            let wanted = if is_dir { 0o700 } else { 0o600 };
            assert_eq!(
                mode,
                wanted,
                "umask {umask}: {} is {mode:o}",
                path.display()
            );
        }
    }
}

/// Regression: a name of 241 to 255 bytes backed up fine but could not be restored, since the
/// temporary name `.NAME.cairn-partial` was longer than the file system allows. Names of every
/// length up to 255 bytes, in directories with 255-byte names, restore byte-identical and leave
/// no temporary file.
#[test]
fn names_of_up_to_255_bytes_restore() {
    let workspace = Workspace::initialized();
    let tree = TreeBuilder::new(workspace.path("source"));
    let long_directory = "d".repeat(255);
    for length in [1usize, 200, 240, 241, 242, 250, 254, 255] {
        let name = "f".repeat(length);
        tree.file(&name, &random_bytes(length as u64, 10_000 + length));
        tree.file(
            &format!("{long_directory}/{name}"),
            format!("{length}").as_bytes(),
        );
    }
    tree.symlink(&"s".repeat(255), &"t".repeat(255));
    workspace.backup(&[tree.root()]);
    let target = workspace.path("restored");
    let spec = format!("latest:{}", tree.root().display());
    let run = workspace
        .cairn(&["restore", &spec, "--target", target.to_str().unwrap()])
        .ok();
    assert!(
        run.text().contains("(every file verified)"),
        "{}",
        run.text()
    );
    assert_same_tree(tree.root(), &target);
    assert!(temporary_files(&target).is_empty());
}

/// Every leftover temporary file of a restore below `root`.
fn temporary_files(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(directory) = pending.pop() {
        let Ok(listing) = fs::read_dir(&directory) else {
            continue;
        };
        for entry in listing.flatten() {
            let path = entry.path();
            if entry.file_name().as_bytes().starts_with(b".cairn-partial") {
                found.push(path.clone());
            }
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                pending.push(path);
            }
        }
    }
    found
}

/// The paths below `target` that the user `nobody` can read (open and read a byte of, or list
/// entries of: an empty directory that stood there before the restore gives nothing away),
/// among `candidates` and every temporary file of the restore.
fn readable_by_nobody(target: &Path, candidates: &[PathBuf]) -> Vec<String> {
    let mut paths: Vec<PathBuf> = candidates.to_vec();
    paths.extend(temporary_files(target));
    let mut script = String::new();
    for path in &paths {
        let quoted = path.display().to_string().replace('\'', "'\\''");
        writeln!(
            script,
            "if [ -d '{quoted}' ]; then [ -n \"$(ls -A '{quoted}' 2>/dev/null)\" ] && echo 'LISTED {quoted}'; \
             else head -c 1 '{quoted}' >/dev/null 2>&1 && echo 'READ {quoted}'; fi"
        )
        .unwrap();
    }
    let output = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("setpriv runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A tree with private entries and large files, so that a restore of it is long enough to be
/// stopped while it writes: the private paths as restored below `target`, and the public one.
fn private_tree(workspace: &Workspace) -> (TreeBuilder, Vec<&'static str>, &'static str) {
    let tree = TreeBuilder::new(workspace.path("source"));
    tree.file("public/readme.txt", b"anyone may read this");
    tree.file("public/a-private.bin", &random_bytes(1, 16 << 20));
    tree.mode("public/a-private.bin", 0o600);
    tree.file("secret/key.pem", b"-----BEGIN PRIVATE KEY-----");
    tree.mode("secret/key.pem", 0o600);
    tree.file("secret/big.bin", &random_bytes(2, 16 << 20));
    tree.mode("secret/big.bin", 0o644);
    tree.mode("secret", 0o700);
    tree.mode("public", 0o755);
    tree.mode("", 0o755);
    let private = vec![
        "public/a-private.bin",
        "secret",
        "secret/key.pem",
        "secret/big.bin",
    ];
    (tree, private, "public/readme.txt")
}

/// Regression: mid-restore a directory recorded 0700 was 0755 and partial copies of 0600 files
/// were 0644, and the user `nobody` read a secret; a `kill -9` left those modes. The restore is
/// stopped (SIGSTOP) again and again while it runs, and at every stop `nobody` can read no
/// private path and no temporary file; then it is killed mid-write, and still nothing private
/// is readable; the next restore removes the leftovers and gives the recorded modes.
#[test]
fn restore_is_private_while_it_runs_and_after_a_kill() {
    if effective_uid() != 0 {
        eprintln!("skipped: needs root to run a reader as nobody");
        return;
    }
    let workspace = Workspace::initialized();
    let (tree, private, public) = private_tree(&workspace);
    workspace.backup(&[tree.root()]);
    let spec = format!("latest:{}", tree.root().display());
    let candidates = |target: &Path| -> Vec<PathBuf> {
        private
            .iter()
            .map(|relative| target.join(relative))
            .collect()
    };

    // Into a target whose directories are open to everyone (as /srv is), so that only the
    // modes the restore gives what it creates keep the private entries private.
    // `secret` already stands there open to everyone too: the restore closes it at once.
    let open_target = |name: &str| {
        let target = workspace.path(name);
        fs::create_dir_all(target.join("public")).unwrap();
        fs::create_dir_all(target.join("secret")).unwrap();
        for directory in [target.clone(), target.join("public"), target.join("secret")] {
            fs::set_permissions(&directory, fs::Permissions::from_mode(0o755)).unwrap();
        }
        target
    };

    // A temporary file takes its recorded mode just before its rename: one that becomes a
    // public file may be readable, and holds then the whole public content (checked while the
    // restore is stopped, so the tree does not move under the check).
    let public_content = fs::read(tree.root().join(public)).unwrap();
    let leaks = |readable: Vec<String>, public_content: &[u8]| -> Vec<String> {
        readable
            .into_iter()
            .filter(|line| {
                let path = line.split_once(' ').map_or("", |(_, path)| path);
                let temporary = Path::new(path)
                    .file_name()
                    .is_some_and(|name| name.as_bytes().starts_with(b".cairn-partial"));
                !(temporary && fs::read(path).is_ok_and(|content| content == public_content))
            })
            .collect()
    };

    // Stopped again and again.
    let target = open_target("stopped");
    let mut child = workspace
        .command(
            &["restore", &spec, "--target", target.to_str().unwrap()],
            &[],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
    let mut stops = 0;
    let mut stops_mid_write = 0;
    while child.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(3));
        if kill(pid, Signal::SIGSTOP).is_err() {
            break;
        }
        stops += 1;
        stops_mid_write += usize::from(!temporary_files(&target).is_empty());
        let readable = leaks(
            readable_by_nobody(&target, &candidates(&target)),
            &public_content,
        );
        let _ = kill(pid, Signal::SIGCONT);
        assert!(
            readable.is_empty(),
            "stop {stops}: nobody could read {readable:?}"
        );
    }
    assert!(child.wait().unwrap().success());
    eprintln!("{stops} stops, {stops_mid_write} of them mid-write");
    assert!(
        stops_mid_write > 0,
        "no stop caught a file mid-write in {stops} stops"
    );
    // The check can fail: once restored, the public file is readable and the modes are the
    // recorded ones.
    assert_eq!(
        readable_by_nobody(&target, &[target.join(public)]),
        vec![format!("READ {}", target.join(public).display())]
    );
    assert_same_tree(tree.root(), &target);

    // Killed mid-write.
    let target = open_target("killed");
    let mut child = workspace
        .command(
            &["restore", &spec, "--target", target.to_str().unwrap()],
            &[],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() && temporary_files(&target).is_empty() {
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = child.kill();
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "the restore ended before the kill"
    );
    let left = temporary_files(&target);
    assert!(!left.is_empty());
    for path in &left {
        if fs::read(path).is_ok_and(|content| content == public_content) {
            continue;
        }
        let mode = fs::metadata(path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
    let readable = leaks(
        readable_by_nobody(&target, &candidates(&target)),
        &public_content,
    );
    assert!(
        readable.is_empty(),
        "after kill -9 nobody could read {readable:?}"
    );
    // The next restore finishes the job and removes what the killed one left.
    workspace
        .cairn(&["restore", &spec, "--target", target.to_str().unwrap()])
        .ok();
    assert!(temporary_files(&target).is_empty());
    assert_same_tree(tree.root(), &target);
}

/// What `restore --json` said in its summary.
fn restore_summary(
    workspace: &Workspace,
    spec: &str,
    target: &Path,
    extra: &[&str],
) -> serde_json::Value {
    let mut args = vec![
        "restore",
        "--json",
        spec,
        "--target",
        target.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    workspace.cairn(&args).ok().summary()
}

/// The counts of a restore summary: created, replaced, kept, deleted.
fn counts(summary: &serde_json::Value) -> [u64; 4] {
    ["created", "replaced", "kept", "deleted"].map(|field| summary[field].as_u64().unwrap())
}

/// A target laid out against a snapshot of `same.txt`, `changed.txt`, `newer.txt`,
/// `was-dir` (a file in the snapshot), `was-file/` (a directory in the snapshot) and `link`:
/// the same file, a changed file (older), a changed file newer than the snapshot's, a directory
/// where a file belongs, a file where a directory belongs, a symlink with another target, and
/// an extra file.
fn crowded_target(workspace: &Workspace, name: &str) -> PathBuf {
    let target = TreeBuilder::new(workspace.path(name));
    target.file("same.txt", b"same content");
    target.file("changed.txt", b"old content");
    target.mtime("changed.txt", 1_000, 0);
    target.file("newer.txt", b"edited after the backup");
    target.mtime("newer.txt", 4_000_000_000, 0);
    target.file(
        "was-dir/inside.txt",
        b"a file in a directory where a file belongs",
    );
    target.file("was-file", b"a file where a directory belongs");
    target.symlink("link", "elsewhere");
    target.file("extra.txt", b"not in the snapshot");
    target.root().to_owned()
}

fn snapshot_for_crowding(workspace: &Workspace) -> (TreeBuilder, String) {
    let tree = TreeBuilder::new(workspace.path("source"));
    tree.file("same.txt", b"same content");
    tree.file("changed.txt", b"new content");
    tree.file("newer.txt", b"the snapshot's version");
    tree.mtime("newer.txt", 2_000_000_000, 0);
    tree.file("was-dir", b"a file in the snapshot");
    tree.file("was-file/inner.txt", b"a directory in the snapshot");
    tree.symlink("link", "the-target");
    workspace.backup(&[tree.root()]);
    let spec = format!("latest:{}", tree.root().display());
    (tree, spec)
}

/// Regression: restore silently overwrote a different file and silently deleted a file where
/// a directory belongs. Each `--overwrite` mode does what restic's does over a crowded
/// target, the summary counts what was created, replaced, kept and deleted, kind changes are
/// warned about by path, and a dry run reports the same counts and writes nothing.
#[test]
fn overwrite_modes_over_a_crowded_target() {
    let workspace = Workspace::initialized();
    let (tree, spec) = snapshot_for_crowding(&workspace);
    // mode → (created, replaced, kept, deleted) over the seven entries of the snapshot root
    // (same, changed, newer, was-dir, was-file, was-file/inner.txt, link).
    let cases: [(&str, [u64; 4]); 4] = [
        // was-file/inner.txt is created once was-file is a directory.
        ("always", [1, 6, 0, 0]),
        // same.txt is kept, everything else replaced.
        ("if-changed", [1, 5, 1, 0]),
        // Only changed.txt (dated 1970 in the target) is older than the snapshot's entry;
        // everything else in the target was written after the backup, and newer.txt is dated
        // after the snapshot's.
        ("if-newer", [0, 1, 5, 0]),
        ("never", [0, 0, 6, 0]),
    ];
    for (mode, expected) in cases {
        let target = crowded_target(&workspace, &format!("dry-{mode}"));
        let before = crate::support::listing(&target);
        let dry = restore_summary(
            &workspace,
            &spec,
            &target,
            &["--overwrite", mode, "--dry-run"],
        );
        assert_eq!(counts(&dry), expected, "dry run of {mode}: {dry}");
        assert_eq!(
            crate::support::listing(&target),
            before,
            "dry run of {mode} wrote"
        );
        let target = crowded_target(&workspace, mode);
        let run = workspace
            .cairn(&[
                "restore",
                &spec,
                "--target",
                target.to_str().unwrap(),
                "--overwrite",
                mode,
            ])
            .ok();
        let summary = restore_summary(
            &workspace,
            &spec,
            &crowded_target(&workspace, &format!("json-{mode}")),
            &["--overwrite", mode],
        );
        assert_eq!(counts(&summary), expected, "{mode}: {summary}");
        let stderr = run.stderr.clone();
        match mode {
            "always" | "if-changed" => {
                let mut found = crate::support::listing(&target);
                assert!(
                    found.remove(Path::new("extra.txt")).is_some(),
                    "no --delete, no deletion"
                );
                assert_eq!(found, crate::support::listing(tree.root()));
                assert_eq!(
                    fs::read_link(target.join("link")).unwrap(),
                    Path::new("the-target")
                );
                assert!(
                    stderr.contains("directory replaced by the snapshot's file"),
                    "{stderr}"
                );
                assert!(
                    stderr.contains("file replaced by the snapshot's directory"),
                    "{stderr}"
                );
            }
            _ => {
                let changed: &[u8] = if mode == "never" {
                    b"old content"
                } else {
                    b"new content"
                };
                assert_eq!(fs::read(target.join("changed.txt")).unwrap(), changed);
                assert_eq!(
                    fs::read(target.join("newer.txt")).unwrap(),
                    b"edited after the backup"
                );
                assert!(target.join("was-dir/inside.txt").is_file());
                assert!(target.join("was-file").is_file());
                assert!(
                    stderr.contains("directory kept where the snapshot has a file"),
                    "{stderr}"
                );
            }
        }
    }
    // if-newer replaces what is older than the snapshot's entry.
    let target = crowded_target(&workspace, "older");
    crate::support::set_mtime(&target.join("newer.txt"), 1_000, 0);
    workspace
        .cairn(&[
            "restore",
            &spec,
            "--target",
            target.to_str().unwrap(),
            "--overwrite",
            "if-newer",
        ])
        .ok();
    assert_eq!(
        fs::read(target.join("newer.txt")).unwrap(),
        b"the snapshot's version"
    );
}

/// `--delete` removes what the snapshot does not have, only below the restored path and never
/// what `--exclude` leaves out; a dry run lists what it would delete.
#[test]
fn delete_removes_only_what_the_snapshot_lacks() {
    let workspace = Workspace::initialized();
    let (tree, spec) = snapshot_for_crowding(&workspace);
    let target = crowded_target(&workspace, "target");
    fs::write(target.join("was-file-extra.log"), b"excluded").unwrap();
    let outside = workspace.path("outside.txt");
    fs::write(&outside, b"next to the target").unwrap();
    let dry = workspace
        .cairn(&[
            "restore",
            &spec,
            "--target",
            target.to_str().unwrap(),
            "--delete",
            "--dry-run",
            "--exclude",
            "*.log",
        ])
        .ok();
    assert!(
        dry.text().contains(&format!(
            "would delete {}",
            target.join("extra.txt").display()
        )),
        "{}",
        dry.text()
    );
    assert!(target.join("extra.txt").is_file());
    let summary = restore_summary(
        &workspace,
        &spec,
        &target,
        &["--delete", "--exclude", "*.log"],
    );
    assert_eq!(summary["deleted"].as_u64(), Some(1), "{summary}");
    assert!(!target.join("extra.txt").exists());
    assert!(
        target.join("was-file-extra.log").is_file(),
        "excluded entries stay"
    );
    assert!(outside.is_file());
    fs::remove_file(target.join("was-file-extra.log")).unwrap();
    assert_eq!(
        crate::support::listing(tree.root()),
        crate::support::listing(&target)
    );
}

/// Regression: restore printed "(every file verified)" even when it exited 1. With a pack
/// gone, it exits 1 and does not claim verification.
#[test]
fn verified_is_printed_only_when_true() {
    let workspace = Workspace::initialized();
    let tree = TreeBuilder::new(workspace.path("source"));
    tree.file("a.bin", &random_bytes(3, 300_000));
    tree.file("b.txt", b"small");
    workspace.backup(&[tree.root()]);
    for pack in objects(&workspace.repo, "data") {
        fs::remove_file(pack).unwrap();
    }
    let target = workspace.path("restored");
    let run = workspace
        .cairn(&["restore", "latest", "--target", target.to_str().unwrap()])
        .code(1);
    assert!(run.text().contains("restored "), "{}", run.text());
    assert!(!run.text().contains("verified"), "{}", run.text());
    assert!(
        !run.stderr
            .contains("everything else was restored and verified"),
        "{}",
        run.stderr
    );
}

/// Regression: a backup of a path that does not exist wrote an empty snapshot, and a FIFO
/// named on the command line gave an empty snapshot with exit 0. As in restic: no source path
/// at all is fatal (exit 18, no snapshot); a missing one among others is a warning (exit 3,
/// snapshot of the others); a FIFO is stored as a FIFO (restic does the same).
#[test]
fn missing_sources_and_a_fifo_argument() {
    let workspace = Workspace::initialized();
    let missing = workspace.path("no-such-dir");
    let also_missing = workspace.path("nor-this");
    workspace
        .cairn(&[
            "backup",
            missing.to_str().unwrap(),
            also_missing.to_str().unwrap(),
        ])
        .code(18)
        .stderr_contains("no source path exists");
    assert!(workspace.snapshots().is_empty(), "no snapshot is written");
    let tree = TreeBuilder::new(workspace.path("source"));
    tree.file("kept.txt", b"kept");
    workspace
        .cairn(&[
            "backup",
            missing.to_str().unwrap(),
            tree.root().to_str().unwrap(),
        ])
        .code(3)
        .stderr_contains("source path does not exist");
    assert_eq!(workspace.snapshots().len(), 1);
    let target = workspace.path("restored");
    workspace
        .cairn(&["restore", "latest", "--target", target.to_str().unwrap()])
        .ok();
    assert_eq!(
        fs::read(restored_path(&target, &tree.path("kept.txt"))).unwrap(),
        b"kept"
    );
    let fifo = workspace.path("queue");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    // A FIFO is stored as a FIFO node (never read: that would block or empty it) and comes
    // back as a FIFO.
    workspace.cairn(&["backup", fifo.to_str().unwrap()]).ok();
    assert_eq!(workspace.snapshots().len(), 2);
    let fifo_target = workspace.path("restored-fifo");
    workspace
        .cairn(&[
            "restore",
            "latest",
            "--target",
            fifo_target.to_str().unwrap(),
        ])
        .ok();
    let restored = fs::symlink_metadata(restored_path(&fifo_target, &fifo)).unwrap();
    assert!(
        std::os::unix::fs::FileTypeExt::is_fifo(&restored.file_type()),
        "the FIFO comes back as a FIFO"
    );
}
