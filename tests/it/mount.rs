//! `cairn mount` for real: the binary mounts a repository with FUSE, the tests walk the tree and
//! compare every file with its source byte for byte (modes, times, symlinks, hard links), read a
//! stream at chunk boundaries and random offsets, check the layout (`latest`, `hosts/`, `tags/`)
//! and that nothing can be written, and end the mount by SIGTERM, SIGINT and `fusermount -u`.
//! Without `/dev/fuse` (or `fusermount` for the test that needs it) they skip with a note.

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::{Prng, TreeBuilder, Workspace, assert_same_entries, random_bytes, scan_tree};

/// Small chunks, so a modest stream has hundreds of chunk boundaries to read across.
const SMALL_CHUNKS: [&str; 6] = [
    "--chunk-min",
    "16384",
    "--chunk-avg",
    "65536",
    "--chunk-max",
    "262144",
];
/// A mount that has not come up or gone away by then has hung.
const PATIENCE: Duration = Duration::from_mins(1);
/// After this the watchdog kills the mount (a blocked read then fails instead of hanging CI).
const WATCHDOG: Duration = Duration::from_mins(10);

/// Why FUSE tests cannot run here, if they cannot.
fn fuse_missing() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("no /dev/fuse".into());
    }
    if nix::unistd::geteuid().as_raw() != 0 && fusermount().is_none() {
        return Some("not root and no fusermount3/fusermount".into());
    }
    None
}

/// The `fusermount` program, if installed.
fn fusermount() -> Option<&'static str> {
    ["fusermount3", "fusermount"].into_iter().find(|name| {
        Command::new(name)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    })
}

macro_rules! skip_without_fuse {
    () => {
        if let Some(reason) = fuse_missing() {
            eprintln!(
                "note: skipping {}: {reason} (tests/servers.sh installs fuse3)",
                module_path!()
            );
            return;
        }
    };
}

/// Whether `point` is a mountpoint now.
fn is_mounted(point: &Path) -> bool {
    let wanted = point.to_string_lossy().replace(' ', "\\040");
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(wanted.as_str()))
}

/// A running `cairn mount`; dropping it kills the process and detaches the mount. A watchdog
/// does the same after [`WATCHDOG`], so a hang fails the test instead of blocking forever.
struct Mount {
    child: Option<Child>,
    point: PathBuf,
    stderr: PathBuf,
    watchdog: Option<mpsc::Sender<()>>,
}

fn force_unmount(point: &Path) {
    if let Some(program) = fusermount() {
        let _ = Command::new(program)
            .args(["-u", "-z"])
            .arg(point)
            .stderr(Stdio::null())
            .status();
    } else {
        let _ = Command::new("umount").arg("-l").arg(point).status();
    }
}

impl Mount {
    /// Starts `cairn mount extra... POINT` and waits until the kernel lists the mount.
    #[track_caller]
    fn start(workspace: &Workspace, extra: &[&str], point: &Path) -> Self {
        fs::create_dir_all(point).unwrap();
        let stderr = workspace.path(&format!(
            "mount-stderr-{}",
            point.file_name().unwrap().to_string_lossy()
        ));
        let mut args = vec!["mount"];
        args.extend_from_slice(extra);
        let point_text = point.to_str().unwrap();
        args.push(point_text);
        let child = workspace
            .command(&args, &[])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start cairn mount");
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
        let (sender, receiver) = mpsc::channel::<()>();
        let watched = point.to_owned();
        std::thread::spawn(move || {
            if receiver.recv_timeout(WATCHDOG) == Err(mpsc::RecvTimeoutError::Timeout) {
                eprintln!(
                    "watchdog: the mount at {} hung: killing it",
                    watched.display()
                );
                let _ = kill(pid, Signal::SIGKILL);
                force_unmount(&watched);
            }
        });
        let mut mount = Self {
            child: Some(child),
            point: point.to_owned(),
            stderr,
            watchdog: Some(sender),
        };
        let started = Instant::now();
        while !is_mounted(point) {
            if let Some(status) = mount.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "cairn mount ended ({status}) before mounting:\n{}",
                    mount.stderr_text()
                );
            }
            assert!(
                started.elapsed() < PATIENCE,
                "not mounted after {PATIENCE:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        mount
    }

    fn stderr_text(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.as_ref().unwrap().id()).unwrap())
    }

    /// Waits for the command to end; asserts it ended with status 0 and left no mount.
    #[track_caller]
    fn expect_clean_end(mut self) {
        let mut child = self.child.take().unwrap();
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(started.elapsed() < PATIENCE, "cairn mount did not end");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(0), "{status}:\n{}", self.stderr_text());
        assert!(!is_mounted(&self.point), "still mounted after the end");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if is_mounted(&self.point) {
            force_unmount(&self.point);
        }
        if let Some(watchdog) = self.watchdog.take() {
            let _ = watchdog.send(());
        }
    }
}

/// The source tree of the byte-for-byte test: sizes around the chunk bounds, nesting, every
/// kind the tree records, odd modes and names.
fn build_source(source: &TreeBuilder) {
    for (position, size) in [
        0usize,
        1,
        4095,
        4096,
        16_384,
        65_536,
        262_144,
        262_145,
        3 << 20,
    ]
    .into_iter()
    .enumerate()
    {
        source.file(
            &format!("sizes/file-{size}"),
            &random_bytes(position as u64, size),
        );
    }
    source.file("deep/a/b/c/d/e/leaf.txt", b"deep down\n");
    source.file("names/with space.txt", b"space\n");
    source.file("names/ünïcødé-名前.txt", "utf-8 ✓\n".as_bytes());
    source.dir("empty");
    source.symlink("links/relative", "../names/with space.txt");
    source.symlink("links/absolute", "/etc/hostname");
    source.symlink("links/dangling", "nowhere/at/all");
    source.file("hard/first", &random_bytes(99, 100_000));
    fs::hard_link(source.path("hard/first"), source.path("hard/second")).unwrap();
    source.file("modes/secret", b"0600\n");
    source.mode("modes/secret", 0o600);
    source.file("modes/tool", b"#!/bin/sh\n");
    source.mode("modes/tool", 0o755);
    source.file("modes/setuid", b"#!/bin/sh\n");
    source.mode("modes/setuid", 0o4755);
    source.dir("modes/private-dir");
    source.mode("modes/private-dir", 0o700);
    source.mtime("sizes/file-1", 1_000_000_000, 123_456_789);
    source.mtime("deep/a/b", 86_400, 0);
}

/// Offsets where `chunks` of these lengths meet, with their neighbours.
fn chunk_boundaries(workspace: &Workspace, name: &str) -> Vec<u64> {
    let repository = crate::support::open_local_repository(&workspace.repo);
    repository.sync_index().unwrap();
    let (_, snapshot) = repository.resolve_snapshot("latest").unwrap();
    let node = repository.find_node(&snapshot.root, name).unwrap().unwrap();
    let cairn_store::format::tree::NodeKind::File { chunks, .. } = node.kind else {
        panic!("{name} is no file");
    };
    let mut boundaries = Vec::new();
    let mut end = 0u64;
    for chunk in &chunks {
        let location = repository.locate_blob(chunk).unwrap().unwrap();
        end += u64::from(location.entry.raw_length);
        boundaries.push(end);
    }
    assert!(chunks.len() > 50, "only {} chunks", chunks.len());
    boundaries
}

#[test]
fn every_file_reads_back_byte_for_byte_with_its_metadata_and_sigterm_unmounts() {
    skip_without_fuse!();
    let workspace = Workspace::initialized_with(&SMALL_CHUNKS);
    let source = TreeBuilder::new(workspace.path("source"));
    build_source(&source);
    let xattrs_work = rustix::fs::setxattr(
        source.path("names/with space.txt"),
        "user.comment",
        b"kept",
        rustix::fs::XattrFlags::empty(),
    )
    .is_ok();
    workspace.backup(&[source.root()]);
    let stream = random_bytes(7, 24 << 20);
    workspace.backup_stdin("db.dump", &stream, &[]);

    let point = workspace.path("mnt");
    let mount = Mount::start(&workspace, &[], &point);
    let snapshots: Vec<String> = fs::read_dir(point.join("snapshots"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        snapshots.len(),
        3,
        "two snapshots and latest: {snapshots:?}"
    );
    let mut names: Vec<&String> = snapshots.iter().filter(|name| *name != "latest").collect();
    names.sort();
    let files_snapshot = point.join("snapshots").join(names[0]);

    // The tree as a restore lays it out: the source's absolute path below the snapshot.
    let mounted_source = files_snapshot.join(source.root().strip_prefix("/").unwrap());
    assert_same_entries(&scan_tree(source.root()), &scan_tree(&mounted_source));

    // Owners, hard links, extended attributes.
    for relative in ["modes/secret", "hard/first", "deep/a/b/c"] {
        let expected = fs::symlink_metadata(source.path(relative)).unwrap();
        let found = fs::symlink_metadata(mounted_source.join(relative)).unwrap();
        assert_eq!((found.uid(), found.gid()), (expected.uid(), expected.gid()));
    }
    let first = fs::metadata(mounted_source.join("hard/first")).unwrap();
    let second = fs::metadata(mounted_source.join("hard/second")).unwrap();
    assert_eq!(first.ino(), second.ino(), "hard links share an inode");
    assert_eq!((first.nlink(), second.nlink()), (2, 2));
    if xattrs_work {
        let mut value = [0u8; 16];
        let length = rustix::fs::getxattr(
            mounted_source.join("names/with space.txt"),
            "user.comment",
            &mut value,
        )
        .unwrap();
        assert_eq!(&value[..length], b"kept");
    } else {
        eprintln!("note: no user xattrs on this file system: their check skipped");
    }

    // The stream, whole and at chunk boundaries, its last byte and past its end.
    let dump = point.join("snapshots/latest/db.dump");
    assert_eq!(fs::read(&dump).unwrap(), stream, "the stream read whole");
    let file = fs::File::open(&dump).unwrap();
    let size = stream.len() as u64;
    let mut offsets: Vec<(u64, usize)> = Vec::new();
    for boundary in chunk_boundaries(&workspace, "db.dump") {
        offsets.push((boundary.saturating_sub(1), 2));
        offsets.push((boundary.saturating_sub(100), 300));
    }
    let mut prng = Prng::new(11);
    for _ in 0..120 {
        let offset = prng.below(stream.len()) as u64;
        offsets.push((offset, 1 + prng.below(1 << 20)));
    }
    offsets.extend([
        (0, 1),
        (size - 1, 1),
        (size - 1, 10),
        (size, 10),
        (size + 4096, 10),
    ]);
    for (offset, length) in offsets {
        let mut buffer = vec![0u8; length];
        let mut read = 0;
        while read < length {
            let count = file
                .read_at(&mut buffer[read..], offset + read as u64)
                .unwrap();
            if count == 0 {
                break;
            }
            read += count;
        }
        let start = usize::try_from(offset.min(size)).unwrap();
        let end = (start + length).min(stream.len());
        assert_eq!(read, end - start, "length read at {offset}");
        assert!(
            buffer[..read] == stream[start..end],
            "bytes at {offset}+{length}"
        );
    }
    drop(file);

    // Nothing can be written.
    let refused = [
        fs::write(point.join("snapshots/new"), b"x").unwrap_err(),
        fs::OpenOptions::new().write(true).open(&dump).unwrap_err(),
        fs::create_dir(mounted_source.join("newdir")).unwrap_err(),
        fs::remove_file(mounted_source.join("modes/secret")).unwrap_err(),
        fs::rename(
            mounted_source.join("modes/tool"),
            mounted_source.join("moved"),
        )
        .unwrap_err(),
    ];
    for error in refused {
        assert_eq!(error.raw_os_error(), Some(nix::libc::EROFS), "{error}");
    }
    assert_eq!(fs::read(source.path("modes/secret")).unwrap(), b"0600\n");

    kill(mount.pid(), Signal::SIGTERM).unwrap();
    mount.expect_clean_end();
}

#[test]
fn latest_hosts_and_tags_show_each_night_and_sigint_unmounts() {
    skip_without_fuse!();
    let workspace = Workspace::initialized();
    let source = TreeBuilder::new(workspace.path("etc"));
    source.file("nginx.conf", b"worker_processes 1;\n");
    let args = |host: &str, tag: &str| {
        vec![
            "backup".to_owned(),
            "--host".into(),
            host.into(),
            "--tag".into(),
            tag.into(),
            source.root().to_str().unwrap().into(),
        ]
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        workspace.cairn(&args).ok();
    };
    run(args("web1", "nightly"));
    // Snapshot names have one-second resolution: the next one is a second later.
    std::thread::sleep(Duration::from_millis(1100));
    source.file("nginx.conf", b"worker_processes 8;\n");
    run(args("web2", "weekly/full"));

    let point = workspace.path("mnt");
    let mount = Mount::start(&workspace, &[], &point);
    let conf = source.root().strip_prefix("/").unwrap().join("nginx.conf");
    let latest = fs::read_link(point.join("snapshots/latest")).unwrap();
    let mut nights: Vec<String> = fs::read_dir(point.join("snapshots"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name != "latest")
        .collect();
    nights.sort();
    assert_eq!(nights.len(), 2);
    assert_eq!(latest, Path::new(&nights[1]), "latest names the newer");
    let contents: Vec<Vec<u8>> = nights
        .iter()
        .map(|night| fs::read(point.join("snapshots").join(night).join(&conf)).unwrap())
        .collect();
    assert_eq!(
        contents,
        [
            b"worker_processes 1;\n".to_vec(),
            b"worker_processes 8;\n".to_vec()
        ]
    );
    assert_eq!(
        fs::read(point.join("snapshots/latest").join(&conf)).unwrap(),
        b"worker_processes 8;\n"
    );
    let listed = |relative: &str| -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(point.join(relative))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        listed("."),
        ["hosts", "snapshots", "tags"],
        "no sources/ without a config"
    );
    assert_eq!(listed("hosts"), ["web1", "web2"]);
    assert_eq!(listed("hosts/web1"), [nights[0].clone(), "latest".into()]);
    assert_eq!(
        listed("tags"),
        ["nightly", "weekly%2Ffull"],
        "a / in a tag is escaped"
    );
    assert_eq!(
        fs::read(point.join("tags/nightly/latest").join(&conf)).unwrap(),
        b"worker_processes 1;\n"
    );
    assert_eq!(
        fs::read_link(point.join("tags/weekly%2Ffull/latest")).unwrap(),
        Path::new(&nights[1])
    );
    assert!(!point.join("snapshots/nothing-here").exists());

    kill(mount.pid(), Signal::SIGINT).unwrap();
    mount.expect_clean_end();
}

#[test]
fn fusermount_u_ends_the_command_with_status_0() {
    skip_without_fuse!();
    let Some(program) = fusermount() else {
        eprintln!("note: skipping: no fusermount3/fusermount (tests/servers.sh installs fuse3)");
        return;
    };
    let workspace = Workspace::initialized();
    workspace.backup_stdin("s.bin", b"stream", &[]);
    let point = workspace.path("mnt");
    let mount = Mount::start(&workspace, &[], &point);
    assert_eq!(
        fs::read(point.join("snapshots/latest/s.bin")).unwrap(),
        b"stream"
    );
    let status = Command::new(program)
        .arg("-u")
        .arg(&point)
        .status()
        .unwrap();
    assert!(status.success());
    mount.expect_clean_end();
}

#[test]
fn a_mountpoint_that_is_not_an_empty_directory_is_refused_with_exit_2() {
    let workspace = Workspace::initialized();
    let file = workspace.path("a-file");
    fs::write(&file, b"x").unwrap();
    let full = workspace.path("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("kept"), b"mine").unwrap();
    for (point, says) in [
        (
            workspace.path("missing"),
            "give an existing empty directory",
        ),
        (file.clone(), "is not a directory"),
        (full.clone(), "is not empty"),
    ] {
        workspace
            .cairn(&["mount", point.to_str().unwrap()])
            .code(2)
            .stderr_contains(says);
    }
    assert_eq!(fs::read(full.join("kept")).unwrap(), b"mine");
    // Three places is a usage error of the command line.
    workspace.cairn(&["mount", "a", "b", "c"]).code(2);
}

#[test]
fn with_a_config_sources_hold_each_source_and_latest_skips_the_stored_config() {
    skip_without_fuse!();
    let workspace = Workspace::initialized();
    let (config, archive) = crate::select::readme_config(&workspace);
    workspace
        .cairn(&["--config", &config, "run", "--no-check", "--no-drill"])
        .ok();
    let point = workspace.path("mnt");
    let mount = Mount::start(&workspace, &["--config", &config], &point);
    assert_eq!(
        fs::read(point.join("sources/db/latest/app.archive")).unwrap(),
        archive
    );
    let hosts = workspace
        .path("system/etc/hosts")
        .strip_prefix("/")
        .unwrap()
        .to_owned();
    assert_eq!(
        fs::read(point.join("sources/system/latest").join(&hosts)).unwrap(),
        b"127.0.0.1 localhost\n"
    );
    // The stored config is the newest snapshot, yet `latest` is the newest backup; its own tag
    // folder's `latest` is the config.
    let latest = fs::read_link(point.join("snapshots/latest")).unwrap();
    assert_eq!(
        latest,
        fs::read_link(point.join("sources/system/latest")).unwrap()
    );
    assert!(
        fs::read(point.join("tags/cairn:config/latest/cairn.toml"))
            .unwrap()
            .starts_with(b"state_dir")
    );
    kill(mount.pid(), Signal::SIGTERM).unwrap();
    mount.expect_clean_end();
}
