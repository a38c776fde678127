//! The committed format v2 repository (`tests/fixtures/repo-v2`, written by cairn 0.2.0) must
//! open, pass `check --read-data` and restore byte for byte forever, with what version 2 added:
//! tree version 2 (a FIFO, a hard link pair, an extended attribute, owner names) and session
//! markers version 2 (the process place). The fixture is never regenerated; see
//! `tests/fixtures/README.md` and FORMAT.md section 20.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cairn_chunker::ChunkerParams;
use cairn_store::Repository;
use cairn_store::check::{self, CheckOptions};
use cairn_store::format::lifecycle::SessionMarker;
use cairn_store::format::snapshot::Source;
use cairn_store::restore::{self, NoRestoreProgress};

use crate::fixture_v1::{
    assert_dumps_the_fixture_stream, assert_refuses_a_wrong_password, fixtures, open_copy_of, scan,
};

/// The password the fixture was made with.
const PASSWORD: &str = "fixture-password-v2";

/// The tree the directory snapshot holds: `repo-v1-source` plus what the fixture's README says
/// was added before the backup (a hard link, a FIFO).
fn expected_tree() -> BTreeMap<PathBuf, (char, Vec<u8>)> {
    let source = fixtures().join("repo-v1-source");
    let mut expected = scan(&source);
    let notes = std::fs::read(source.join("docs/notes.md")).unwrap();
    expected.insert(PathBuf::from("notes-hardlink.md"), ('f', notes));
    expected.insert(PathBuf::from("queue"), ('p', Vec::new()));
    expected
}

/// What a restored tree holds; FIFOs are recorded as kind `p` and never opened.
fn scan_restored(root: &Path) -> BTreeMap<PathBuf, (char, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(directory) = pending.pop() {
        for entry in std::fs::read_dir(&directory).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(root).unwrap().to_path_buf();
            let file_type = std::fs::symlink_metadata(&path).unwrap().file_type();
            let value = if file_type.is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                ('l', target.into_os_string().into_encoded_bytes())
            } else if file_type.is_dir() {
                pending.push(path.clone());
                ('d', Vec::new())
            } else if file_type.is_fifo() {
                ('p', Vec::new())
            } else {
                ('f', std::fs::read(&path).unwrap())
            };
            out.insert(relative, value);
        }
    }
    out
}

/// Whether `directory`'s file system keeps `user.*` extended attributes.
fn user_xattrs_supported(directory: &Path) -> bool {
    let probe = directory.join(".xattr-probe");
    std::fs::write(&probe, b"").unwrap();
    let supported =
        rustix::fs::setxattr(&probe, "user.probe", b"1", rustix::fs::XattrFlags::empty()).is_ok();
    std::fs::remove_file(&probe).unwrap();
    supported
}

fn restore_directory_snapshot(repository: &Repository, root: &cairn_store::Id, path: &str) {
    let workspace = tempfile::tempdir().unwrap();
    let target = workspace.path().join("restored");
    let outcome = restore::restore(repository, root, path, &target, &NoRestoreProgress).unwrap();
    assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
    assert_eq!(outcome.files, 5, "five files written, the sixth is a link");
    assert_eq!(outcome.hard_links, 1);
    assert_eq!(outcome.specials, 1);
    assert_eq!(outcome.symlinks, 1);
    assert_eq!(scan_restored(&target), expected_tree());

    let notes = std::fs::metadata(target.join("docs/notes.md")).unwrap();
    let link = std::fs::metadata(target.join("notes-hardlink.md")).unwrap();
    assert_eq!(
        notes.ino(),
        link.ino(),
        "the hard link pair is one file again"
    );
    assert_eq!(notes.nlink(), 2);
    let table = std::fs::metadata(target.join("data/table.csv")).unwrap();
    assert_eq!(table.permissions().mode() & 0o7777, 0o600);
    if user_xattrs_supported(workspace.path()) {
        let mut value = [0u8; 16];
        let length = rustix::fs::getxattr(target.join("README.txt"), "user.fixture", &mut value)
            .expect("README.txt keeps its user.fixture attribute");
        assert_eq!(&value[..length], b"v2");
    } else {
        eprintln!("skipping the xattr comparison: the target file system keeps no user.* xattrs");
    }
}

#[test]
fn fixture_v2_opens_checks_and_restores_byte_for_byte() {
    let (_workspace, repository) = open_copy_of("repo-v2", PASSWORD);
    let repository = repository.expect("the v2 fixture opens");
    let config = repository.config();
    assert_eq!(config.version, 2);
    assert_eq!(config.chunker, ChunkerParams::DEFAULT);

    let report = check::check(&repository, CheckOptions::read_all()).unwrap();
    assert!(
        report.is_ok(),
        "check found damage: {:?} {:?}",
        report.damaged,
        report.affected
    );
    assert_eq!(report.snapshots, 2);
    assert_eq!(report.packs_read, report.packs);

    // Both backups ended their version 2 sessions; each marker records where it ran.
    let sessions = repository.list_sessions().unwrap();
    assert_eq!(sessions.len(), 2);
    for status in sessions.values() {
        assert!(status.ended, "{status:?}");
        let name = format!("sessions/{}", status.session.to_hex());
        let bytes = repository.backend().get(&name).unwrap();
        let marker = SessionMarker::decode(&repository.keys().data_key, &bytes)
            .expect("the version 2 marker opens");
        assert_eq!(marker.session, status.session);
        assert_eq!(marker.host, "fixture-host");
        assert_ne!(
            marker.place.boot_id, [0; 16],
            "a version 2 marker has a boot id"
        );
        assert_ne!(
            marker.place.start_ticks, 0,
            "and the start time of its process"
        );
    }

    let (snapshots, errors) = repository.list_snapshots().unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    let mut restored_directory = false;
    let mut dumped_stream = false;
    for (id, snapshot) in &snapshots {
        assert_eq!(snapshot.host, "fixture-host");
        assert_eq!(snapshot.tags, ["fixture"]);
        match &snapshot.source {
            Source::Paths(paths) => {
                let [path] = paths.as_slice() else {
                    panic!("snapshot {id} should hold one path: {paths:?}")
                };
                assert!(path.ends_with("/repo-v2-source"));
                restore_directory_snapshot(&repository, &snapshot.root, path);
                restored_directory = true;
            }
            Source::Stdin(name) => {
                assert_dumps_the_fixture_stream(&repository, &snapshot.root, name);
                dumped_stream = true;
            }
        }
    }
    assert!(restored_directory && dumped_stream);
}

#[test]
fn fixture_v2_refuses_a_wrong_password() {
    assert_refuses_a_wrong_password("repo-v2");
}
