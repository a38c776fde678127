//! The fidelity matrix: a generated tree holding every kind of entry and metadata a Linux file
//! system holds (extended attributes in the user, trusted and security namespaces, access and
//! default ACLs including the masked-group case, hard link groups of 2 and 3 links across
//! directories, FIFOs, character and block devices, a socket, set-id and sticky bits, foreign
//! owners with and without names here, empty files and directories, non-UTF-8 names and names
//! with newlines, symlinks pointing anywhere, sparse files) is backed up and restored with the
//! `cairn` binary, then a checker reads both trees back and compares every property: content,
//! type, mode, owner, nanosecond mtime, device numbers, xattrs, ACLs (through `getfacl`), link
//! groups (inode equality) and sparseness (`st_blocks` against size).
//!
//! Runs as root (as CI does): device nodes, foreign owners and `trusted.*` need it. As another
//! user the matrix test says so and returns.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::fs::{AtFlags, CWD, FileType, Mode, Timespec, Timestamps};

use crate::support::{Workspace, chown_tree, effective_uid, random_bytes, unprivileged_prefix};

/// Whether this runs as root, as CI does; says so when not (the test then returns).
fn running_as_root() -> bool {
    let root = effective_uid() == 0;
    if !root {
        eprintln!("skipping: device nodes, foreign owners and trusted.* need root");
    }
    root
}

/// Runs `cairn restore latest:SOURCE --target TARGET`.
fn restore_into(workspace: &Workspace, source: &str, target: &Path) -> crate::support::Run {
    workspace.cairn(&[
        "restore",
        &format!("latest:{source}"),
        "--target",
        &target.to_string_lossy(),
    ])
}

/// A user and a group id with no name on this machine.
const FOREIGN_UID: u32 = 4242;
const FOREIGN_GID: u32 = 4343;

/// Everything the checker reads back about one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// `st_mode`: file type and permission bits, set-id and sticky bits included.
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    /// Regular files: the content's BLAKE3.
    content: Option<[u8; 32]>,
    size: u64,
    /// Symlinks: the raw target.
    target: Option<Vec<u8>>,
    /// Device nodes: `st_rdev`.
    rdev: u64,
    /// Every extended attribute, sorted by name.
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// `getfacl` output (numeric) of entries that hold an ACL attribute.
    acl: Option<String>,
}

/// What the checker also needs but does not compare directly.
struct Reading {
    entries: BTreeMap<Vec<u8>, Entry>,
    /// Regular files by inode: the link groups.
    inodes: BTreeMap<u64, BTreeSet<Vec<u8>>>,
    /// Regular files' allocated bytes (`st_blocks` · 512).
    allocated: BTreeMap<Vec<u8>, u64>,
}

fn xattrs_of(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut list = vec![0u8; 65_536];
    let length = match rustix::fs::llistxattr(path, &mut list[..]) {
        Ok(length) => length,
        Err(errno) if errno == rustix::io::Errno::NOTSUP => 0,
        Err(errno) => panic!("listxattr {}: {errno}", path.display()),
    };
    let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = list[..length]
        .split(|byte| *byte == 0)
        .filter(|name| !name.is_empty())
        .map(|name| {
            let mut value = vec![0u8; 65_536];
            let value_length = rustix::fs::lgetxattr(path, name, &mut value[..])
                .unwrap_or_else(|errno| panic!("getxattr {}: {errno}", path.display()));
            value.truncate(value_length);
            (name.to_vec(), value)
        })
        .collect();
    xattrs.sort();
    xattrs
}

fn getfacl(path: &Path) -> String {
    let output = Command::new("getfacl")
        .args(["--numeric", "--absolute-names", "--omit-header"])
        .arg(path)
        .output()
        .expect("getfacl runs (the acl package; tests/servers.sh installs it)");
    assert!(output.status.success(), "getfacl {}", path.display());
    String::from_utf8(output.stdout).expect("getfacl prints text")
}

/// Reads every entry below `root` (and `root` itself, as the empty path), never following
/// symlinks.
fn read_tree(root: &Path) -> Reading {
    let mut reading = Reading {
        entries: BTreeMap::new(),
        inodes: BTreeMap::new(),
        allocated: BTreeMap::new(),
    };
    let mut pending = vec![Vec::new()];
    while let Some(relative) = pending.pop() {
        let path = if relative.is_empty() {
            root.to_path_buf()
        } else {
            root.join(OsStr::from_bytes(&relative))
        };
        let metadata = fs::symlink_metadata(&path).expect("metadata");
        let file_type = metadata.file_type();
        let xattrs = xattrs_of(&path);
        let acl = xattrs
            .iter()
            .any(|(name, _)| name.starts_with(b"system.posix_acl"))
            .then(|| getfacl(&path));
        let entry = Entry {
            mode: metadata.mode(),
            uid: metadata.uid(),
            gid: metadata.gid(),
            mtime: (metadata.mtime(), metadata.mtime_nsec()),
            content: file_type
                .is_file()
                .then(|| *blake3::hash(&fs::read(&path).expect("read")).as_bytes()),
            size: if file_type.is_file() {
                metadata.len()
            } else {
                0
            },
            target: file_type.is_symlink().then(|| {
                fs::read_link(&path)
                    .expect("readlink")
                    .into_os_string()
                    .into_vec()
            }),
            rdev: metadata.rdev(),
            xattrs,
            acl,
        };
        if file_type.is_file() {
            reading
                .inodes
                .entry(metadata.ino())
                .or_default()
                .insert(relative.clone());
            reading
                .allocated
                .insert(relative.clone(), metadata.blocks() * 512);
        }
        if file_type.is_dir() {
            for child in fs::read_dir(&path).expect("list") {
                let name = child.expect("entry").file_name().into_vec();
                let mut child_relative = relative.clone();
                if !child_relative.is_empty() {
                    child_relative.push(b'/');
                }
                child_relative.extend_from_slice(&name);
                pending.push(child_relative);
            }
        }
        reading.entries.insert(relative, entry);
    }
    reading
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty())
        .unwrap_or_else(|errno| panic!("setxattr {name} on {}: {errno}", path.display()));
}

fn setfacl(path: &Path, args: &[&str]) {
    let status = Command::new("setfacl")
        .args(args)
        .arg(path)
        .status()
        .expect("setfacl runs (the acl package; tests/servers.sh installs it)");
    assert!(status.success(), "setfacl {args:?} {}", path.display());
}

fn mknod(path: &Path, file_type: FileType, device: u64) {
    rustix::fs::mknodat(
        CWD,
        path,
        file_type,
        Mode::from_bits_truncate(0o640),
        device,
    )
    .unwrap_or_else(|errno| panic!("mknod {}: {errno}", path.display()));
}

/// The generated tree: what it holds, and which files are sparse.
struct Matrix {
    root: PathBuf,
    sparse: Vec<Vec<u8>>,
    socket: Vec<u8>,
}

/// Builds the matrix below `root` (as root).
fn build_matrix(root: &Path) -> Matrix {
    let at = |relative: &str| root.join(relative);
    for directory in [
        "",
        "empty-dir",
        "sticky",
        "setgid-dir",
        "private",
        "links",
        "hl/a",
        "hl/b",
        "hl/c",
        "special",
        "owners",
        "xattr/dir",
        "acl/default-dir",
        "names",
    ] {
        fs::create_dir_all(at(directory)).unwrap();
    }
    fs::write(at("empty"), b"").unwrap();
    fs::write(at("small.txt"), b"small\n").unwrap();
    fs::write(at("big.bin"), random_bytes(13, 3 << 20)).unwrap();
    fs::write(at("private/secret"), b"secret\n").unwrap();
    // Names: not UTF-8, with a newline, and (gated) the longest a name can be.
    fs::write(
        root.join(OsStr::from_bytes(b"names/bad-\xff\xfe")),
        b"latin1",
    )
    .unwrap();
    fs::write(at("names/new\nline"), b"newline").unwrap();
    fs::write(at(&format!("names/{}", "n".repeat(255))), b"long").unwrap();
    // Sparse: 16 MiB with data at both ends and in the middle.
    let sparse = fs::File::create(at("sparse.img")).unwrap();
    sparse.set_len(16 << 20).unwrap();
    for offset in [0u64, 8 << 20, (16 << 20) - 4096] {
        rustix::io::pwrite(&sparse, &random_bytes(offset, 4096), offset).unwrap();
    }
    drop(sparse);
    // Set-id and sticky bits.
    fs::write(at("setuid"), b"#!/bin/sh\n").unwrap();
    fs::write(at("setgid"), b"#!/bin/sh\n").unwrap();
    // Symlinks pointing anywhere.
    std::os::unix::fs::symlink("nowhere/at/all", at("links/dangling")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", at("links/absolute")).unwrap();
    std::os::unix::fs::symlink("../small.txt", at("links/relative")).unwrap();
    std::os::unix::fs::symlink("../empty-dir", at("links/to-dir")).unwrap();
    // Hard links: a group of 2 and a group of 3, across directories.
    fs::write(at("hl/a/two"), b"two links\n").unwrap();
    fs::hard_link(at("hl/a/two"), at("hl/b/two")).unwrap();
    fs::write(at("hl/a/three"), random_bytes(3, 100_000)).unwrap();
    fs::hard_link(at("hl/a/three"), at("hl/b/three")).unwrap();
    fs::hard_link(at("hl/a/three"), at("hl/c/three")).unwrap();
    // Special files; the socket is skipped with a warning.
    mknod(&at("special/fifo"), FileType::Fifo, 0);
    mknod(
        &at("special/null"),
        FileType::CharacterDevice,
        rustix::fs::makedev(1, 3),
    );
    mknod(
        &at("special/loop"),
        FileType::BlockDevice,
        rustix::fs::makedev(7, 200),
    );
    drop(std::os::unix::net::UnixListener::bind(at("special/sock")).unwrap());
    // Owners: ids without names here, and ids with names (daemon is 1:1 on Debian).
    fs::write(at("owners/foreign"), b"foreign\n").unwrap();
    std::os::unix::fs::lchown(at("owners/foreign"), Some(FOREIGN_UID), Some(FOREIGN_GID)).unwrap();
    fs::write(at("owners/named"), b"named\n").unwrap();
    std::os::unix::fs::lchown(at("owners/named"), Some(1), Some(1)).unwrap();
    std::os::unix::fs::symlink("foreign", at("owners/link")).unwrap();
    std::os::unix::fs::lchown(at("owners/link"), Some(FOREIGN_UID), Some(FOREIGN_GID)).unwrap();
    std::os::unix::fs::lchown(at("owners"), Some(FOREIGN_UID), Some(1)).unwrap();
    // Extended attributes in every namespace root can write.
    fs::write(at("xattr/file"), b"attributes\n").unwrap();
    set_xattr(&at("xattr/file"), "user.comment", b"hello");
    set_xattr(&at("xattr/file"), "user.binary", &[0, 255, 10, 0]);
    set_xattr(&at("xattr/file"), "user.empty", b"");
    set_xattr(&at("xattr/file"), "trusted.cairn", b"trusted value");
    set_xattr(&at("xattr/file"), "security.cairn", b"security value");
    set_xattr(&at("xattr/dir"), "user.dir", b"on a directory");
    set_xattr(&at("xattr/dir"), "trusted.dir", &random_bytes(9, 3000));
    std::os::unix::fs::symlink("file", at("xattr/link")).unwrap();
    set_xattr(&at("xattr/link"), "trusted.on-symlink", b"link");
    // ACLs: the reported case (group::r-- under mask::rwx), and a default ACL.
    fs::write(at("acl/masked"), b"masked group\n").unwrap();
    fs::set_permissions(at("acl/masked"), fs::Permissions::from_mode(0o640)).unwrap();
    setfacl(&at("acl/masked"), &["-m", "u:1000:rwx,g::r--,m::rwx"]);
    setfacl(
        &at("acl/default-dir"),
        &["-d", "-m", "u:1000:r-x,g:100:rwx,o::---"],
    );
    fs::write(
        at("acl/default-dir/inherited"),
        b"inherits the default ACL\n",
    )
    .unwrap();
    // Modes last (chown clears set-id bits).
    for (relative, mode) in [
        ("setuid", 0o4755),
        ("setgid", 0o2755),
        ("sticky", 0o1777),
        ("setgid-dir", 0o2775),
        ("private", 0o700),
        ("private/secret", 0o600),
        ("owners/named", 0o640),
    ] {
        fs::set_permissions(at(relative), fs::Permissions::from_mode(mode)).unwrap();
    }
    // Nanosecond mtimes, deepest first so writing entries does not change them again.
    let mut paths: Vec<Vec<u8>> = read_tree(root).entries.into_keys().collect();
    paths.sort_by_key(|path| std::cmp::Reverse(path.split(|byte| *byte == b'/').count()));
    for (index, relative) in paths.iter().enumerate() {
        let path = if relative.is_empty() {
            root.to_path_buf()
        } else {
            root.join(OsStr::from_bytes(relative))
        };
        let index = i64::try_from(index).unwrap();
        let time = Timespec {
            tv_sec: 1_600_000_000 + index * 86_400,
            tv_nsec: 123_456_789 - index * 1000,
        };
        let times = Timestamps {
            last_access: time,
            last_modification: time,
        };
        rustix::fs::utimensat(CWD, &path, &times, AtFlags::SYMLINK_NOFOLLOW).unwrap();
    }
    Matrix {
        root: root.to_path_buf(),
        sparse: vec![b"sparse.img".to_vec()],
        socket: b"special/sock".to_vec(),
    }
}

/// Compares the restored tree with the source; returns every difference, one a line.
fn differences(source: &Reading, restored: &Reading, matrix: &Matrix) -> Vec<String> {
    let mut out = Vec::new();
    let show = |path: &[u8]| format!("\"{}\"", String::from_utf8_lossy(path).escape_debug());
    for (path, expected) in &source.entries {
        if *path == matrix.socket {
            if restored.entries.contains_key(path) {
                out.push(format!("{}: the socket was restored", show(path)));
            }
            continue;
        }
        let Some(actual) = restored.entries.get(path) else {
            out.push(format!("{}: missing", show(path)));
            continue;
        };
        if expected != actual {
            out.push(format!(
                "{}:\n  source   {expected:?}\n  restored {actual:?}",
                show(path)
            ));
        }
    }
    for path in restored.entries.keys() {
        if !source.entries.contains_key(path) {
            out.push(format!("{}: restored but not in the source", show(path)));
        }
    }
    let groups = |reading: &Reading| -> BTreeSet<BTreeSet<Vec<u8>>> {
        reading.inodes.values().cloned().collect()
    };
    if groups(source) != groups(restored) {
        out.push(format!(
            "hard link groups differ:\n  source   {:?}\n  restored {:?}",
            groups(source),
            groups(restored)
        ));
    }
    for path in &matrix.sparse {
        let size = restored.entries.get(path).map_or(0, |entry| entry.size);
        let allocated = restored.allocated.get(path).copied().unwrap_or(u64::MAX);
        if allocated >= size {
            out.push(format!(
                "{}: not sparse after restore ({allocated} bytes allocated for {size})",
                show(path)
            ));
        }
    }
    out
}

#[test]
fn the_fidelity_matrix_survives_backup_and_restore() {
    if !running_as_root() {
        return;
    }
    let workspace = Workspace::initialized();
    let matrix = build_matrix(&workspace.path("source"));
    let source = read_tree(&matrix.root);
    let source_text = matrix.root.to_string_lossy().into_owned();
    let backup = workspace.cairn(&["backup", &source_text]).ok();
    assert!(
        backup.stderr.contains("special/sock: skipped: socket"),
        "the socket is skipped with a warning naming it: {}",
        backup.stderr
    );
    let target = workspace.path("restored");
    let restore = restore_into(&workspace, &source_text, &target).ok();
    assert!(
        !restore.stderr.contains("warning"),
        "a restore as root on the same file system warns about nothing: {}",
        restore.stderr
    );
    let restored = read_tree(&target);
    let found = differences(&source, &restored, &matrix);
    assert!(found.is_empty(), "restore lost:\n{}", found.join("\n"));
    // The masked ACL left the group read-only, and the mode shows the mask as recorded.
    let masked = getfacl(&target.join("acl/masked"));
    assert!(
        masked.contains("group::r--") && masked.contains("mask::rwx"),
        "{masked}"
    );
    // The checker is not blind: a lost attribute, a widened ACL, a broken link group and a
    // lost nanosecond are each reported.
    rustix::fs::lremovexattr(target.join("xattr/file"), "user.comment").unwrap();
    setfacl(&target.join("acl/masked"), &["-m", "g::rwx"]);
    fs::remove_file(target.join("hl/c/three")).unwrap();
    fs::copy(target.join("hl/a/three"), target.join("hl/c/three")).unwrap();
    let time = Timespec {
        tv_sec: source.entries[&b"small.txt".to_vec()].mtime.0,
        tv_nsec: 0,
    };
    let times = Timestamps {
        last_access: time,
        last_modification: time,
    };
    rustix::fs::utimensat(CWD, target.join("small.txt"), &times, AtFlags::empty()).unwrap();
    let found = differences(&source, &read_tree(&target), &matrix).join("\n");
    for expected in [
        "\"xattr/file\":",
        "\"acl/masked\":",
        "hard link groups differ",
        "\"hl/c/three\":",
        "\"small.txt\":",
    ] {
        assert!(
            found.contains(expected),
            "{expected} not reported in:\n{found}"
        );
    }
}

#[test]
fn numeric_owner_keeps_recorded_ids_and_names_map_by_default() {
    if !running_as_root() {
        return;
    }
    let workspace = Workspace::initialized();
    let source = workspace.path("source");
    fs::create_dir(&source).unwrap();
    // root has a name everywhere, 4242 nowhere: both ways give the recorded ids back here.
    fs::write(source.join("root-owned"), b"r").unwrap();
    fs::write(source.join("foreign"), b"f").unwrap();
    std::os::unix::fs::lchown(source.join("foreign"), Some(FOREIGN_UID), Some(FOREIGN_GID))
        .unwrap();
    workspace.cairn(&["backup", &source.to_string_lossy()]).ok();
    for extra in [None, Some("--numeric-owner")] {
        let target = workspace.path(if extra.is_some() { "numeric" } else { "named" });
        let mut args = vec![
            "restore".to_owned(),
            format!("latest:{}", source.display()),
            "--target".to_owned(),
            target.to_string_lossy().into_owned(),
        ];
        args.extend(extra.map(str::to_owned));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        workspace.cairn(&args).ok();
        let foreign = fs::metadata(target.join("foreign")).unwrap();
        assert_eq!((foreign.uid(), foreign.gid()), (FOREIGN_UID, FOREIGN_GID));
        let owned = fs::metadata(target.join("root-owned")).unwrap();
        assert_eq!((owned.uid(), owned.gid()), (0, 0));
    }
}

#[test]
fn an_unprivileged_restore_names_what_it_could_not_recreate_and_restores_the_rest() {
    if !running_as_root() {
        return;
    }
    let mut workspace = Workspace::initialized();
    let matrix = build_matrix(&workspace.path("source"));
    let source_text = matrix.root.to_string_lossy().into_owned();
    workspace.cairn(&["backup", &source_text]).ok();
    // `nobody` restores: no device nodes, no trusted.* attributes, no foreign owners.
    chown_tree(workspace.root(), 65_534, 65_534);
    workspace.prefix = unprivileged_prefix();
    let target = workspace.path("restored-by-nobody");
    let restore = restore_into(&workspace, &source_text, &target).code(3);
    let text = &restore.stderr;
    for named in [
        "special/null: cannot create character device",
        "special/loop: cannot create block device",
        "xattr/file: extended attribute trusted.cairn not restored",
    ] {
        assert!(text.contains(named), "no warning {named:?} in:\n{text}");
    }
    // Everything else is there, content verified; the FIFO needs no privilege.
    for (relative, expected) in [
        ("small.txt", &b"small\n"[..]),
        ("xattr/file", b"attributes\n"),
        ("hl/c/three", &random_bytes(3, 100_000)),
    ] {
        assert_eq!(
            fs::read(target.join(relative)).unwrap(),
            expected,
            "{relative}"
        );
    }
    assert!(
        fs::symlink_metadata(target.join("special/fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    let three = fs::metadata(target.join("hl/a/three")).unwrap();
    assert_eq!(
        three.nlink(),
        3,
        "hard links are restored without privilege"
    );
    assert_eq!(
        xattrs_of(&target.join("xattr/file"))
            .into_iter()
            .map(|(name, _)| OsString::from_vec(name))
            .collect::<Vec<_>>(),
        ["user.binary", "user.comment", "user.empty"].map(OsString::from),
        "user.* attributes restore without privilege"
    );
}

/// An incremental backup takes an unchanged entry's extended attributes from its parent
/// snapshot (same inode, same ctime) instead of reading them again; every attribute or ACL
/// changed between the two backups, on every kind of entry, must still be seen, content
/// unchanged. Three backups in a row: the matrix, then the changes, then nothing, and each
/// snapshot restores the tree as it was.
#[test]
fn attributes_changed_between_backups_are_seen_and_unchanged_ones_kept() {
    if !running_as_root() {
        return;
    }
    let workspace = Workspace::initialized();
    let matrix = build_matrix(&workspace.path("source"));
    let source_text = matrix.root.to_string_lossy().into_owned();
    let backup = || {
        workspace
            .cairn(&["backup", "--json", &source_text])
            .ok()
            .summary()["snapshot_id"]
            .as_str()
            .expect("the summary names the snapshot")
            .to_owned()
    };
    let first = read_tree(&matrix.root);
    let first_id = backup();
    let at = |relative: &str| matrix.root.join(relative);
    // Content unchanged; only attributes: added, changed, removed, on files, directories,
    // symlinks, devices, FIFOs, the root and a hard-linked file; ACLs widened, added, removed.
    set_xattr(&at("xattr/file"), "user.comment", b"changed value");
    rustix::fs::lremovexattr(at("xattr/file"), "user.binary").unwrap();
    set_xattr(&at("xattr/file"), "user.added", b"new");
    rustix::fs::lremovexattr(at("xattr/dir"), "trusted.dir").unwrap();
    set_xattr(&at("xattr/link"), "trusted.on-symlink", b"changed link");
    set_xattr(&at("small.txt"), "user.first", b"a file that had none");
    set_xattr(&at("empty-dir"), "user.dir", b"a directory that had none");
    set_xattr(&at("special/fifo"), "trusted.fifo", b"fifo");
    set_xattr(&at("special/null"), "trusted.device", b"device");
    set_xattr(&at(""), "user.root", b"the root");
    set_xattr(&at("hl/b/three"), "user.linked", b"seen through every link");
    setfacl(&at("acl/masked"), &["-m", "u:1001:r--"]);
    setfacl(&at("acl/default-dir"), &["-k"]);
    setfacl(&at("big.bin"), &["-m", "g:100:r--"]);
    let second = read_tree(&matrix.root);
    assert_ne!(
        first.entries, second.entries,
        "the changes changed something"
    );
    let second_id = backup();
    // A third backup with nothing changed: every attribute comes from the parent.
    let third_id = backup();
    for (index, (id, expected)) in [
        (&first_id, &first),
        (&second_id, &second),
        (&third_id, &second),
    ]
    .into_iter()
    .enumerate()
    {
        let target = workspace.path(&format!("restored-{index}"));
        workspace
            .cairn(&[
                "restore",
                &format!("{id}:{source_text}"),
                "--target",
                &target.to_string_lossy(),
            ])
            .ok();
        let found = differences(expected, &read_tree(&target), &matrix);
        assert!(
            found.is_empty(),
            "snapshot {index} ({id}) restored differently:\n{}",
            found.join("\n")
        );
    }
    assert!(
        getfacl(&workspace.path("restored-1/acl/masked")).contains("user:1001:r--"),
        "the added ACL entry is restored"
    );
}
