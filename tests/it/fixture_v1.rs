//! The committed format v1 repository (`tests/fixtures/repo-v1`, written by cairn 0.1.0) must
//! open, pass `check --read-data` and restore byte for byte forever. The fixture is never
//! regenerated; see `tests/fixtures/README.md` and FORMAT.md section 20.
//!
//! Snapshot paths are absolute paths of the machine that made the fixture
//! (`/tmp/cairn-fixture-v1/repo-v1-source`); the test does not assume them but reads them from the
//! directory snapshot's `Source::Paths` and restores that path, whose contents land directly in
//! the target.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_chunker::ChunkerParams;
use cairn_store::backend::object_store::{CreateDirectory, ObjectStoreBackend};
use cairn_store::check::{self, CheckOptions};
use cairn_store::format::snapshot::Source;
use cairn_store::restore::{self, NoRestoreProgress};
use cairn_store::{CacheLocation, ErrorKind, Repository};

/// The password the fixture was made with.
const PASSWORD: &str = "fixture-password-v1";
/// The name the stream snapshot stores its one file under.
const STREAM_NAME: &str = "app.archive";

pub(crate) fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// Copies a directory of regular files and directories (the repository has nothing else).
fn copy_directory(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_directory(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// What a tree holds, for comparison: relative path → kind and content or link target.
pub(crate) fn scan(root: &Path) -> BTreeMap<PathBuf, (char, Vec<u8>)> {
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
            } else {
                ('f', std::fs::read(&path).unwrap())
            };
            out.insert(relative, value);
        }
    }
    out
}

fn open_copy(password: &str) -> (tempfile::TempDir, cairn_store::Result<Repository>) {
    open_copy_of("repo-v1", password)
}

/// Opens a copy of the committed fixture repository `name` (fixtures are never opened in
/// place: opening may write, e.g. end sessions).
pub(crate) fn open_copy_of(
    name: &str,
    password: &str,
) -> (tempfile::TempDir, cairn_store::Result<Repository>) {
    let workspace = tempfile::tempdir().unwrap();
    let copy = workspace.path().join(name);
    copy_directory(&fixtures().join(name), &copy);
    let backend =
        ObjectStoreBackend::open(copy.to_str().unwrap(), &[], CreateDirectory::No).unwrap();
    let repository = Repository::open(
        Arc::new(backend),
        password.as_bytes(),
        &CacheLocation::Memory,
    );
    (workspace, repository)
}

/// Dumps the stream snapshot `name` (rooted at `root`) and compares it with the committed
/// `repo-v1-stream.bin`, which every fixture holds as `app.archive`.
pub(crate) fn assert_dumps_the_fixture_stream(
    repository: &Repository,
    root: &cairn_store::Id,
    name: &str,
) {
    assert_eq!(name, STREAM_NAME);
    let mut dumped = Vec::new();
    restore::dump(repository, root, name, &mut dumped).unwrap();
    assert!(
        dumped == std::fs::read(fixtures().join("repo-v1-stream.bin")).unwrap(),
        "the dumped stream differs from tests/fixtures/repo-v1-stream.bin"
    );
}

/// A wrong password must not open the fixture `name`, and says so as a wrong password.
pub(crate) fn assert_refuses_a_wrong_password(name: &str) {
    let (_workspace, repository) = open_copy_of(name, "not-the-fixture-password");
    let error = repository.expect_err("a wrong password must not open the fixture");
    assert_eq!(error.kind(), ErrorKind::WrongPassword);
}

#[test]
fn fixture_v1_opens_checks_and_restores_byte_for_byte() {
    let (workspace, repository) = open_copy(PASSWORD);
    let repository = repository.expect("the v1 fixture opens");
    let config = repository.config();
    assert_eq!(config.version, 1);
    assert_eq!(config.chunker, ChunkerParams::DEFAULT);
    assert_eq!(config.pack_target_size, 16 * 1024 * 1024);
    assert_eq!(config.compression_level, 3);

    let report = check::check(&repository, CheckOptions::read_all()).unwrap();
    assert!(
        report.is_ok(),
        "check found damage: {:?} {:?}",
        report.damaged,
        report.affected
    );
    assert!(report.unindexed_packs.is_empty());
    assert_eq!(report.snapshots, 2);
    assert_eq!(report.packs_read, report.packs);

    let (snapshots, errors) = repository.list_snapshots().unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(snapshots.len(), 2);
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
                assert!(path.starts_with('/') && path.ends_with("/repo-v1-source"));
                let target = workspace.path().join("restored");
                let outcome = restore::restore(
                    &repository,
                    &snapshot.root,
                    path,
                    &target,
                    &NoRestoreProgress,
                )
                .unwrap();
                assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
                assert_eq!(outcome.files, 5);
                assert_eq!(outcome.symlinks, 1);
                let expected = scan(&fixtures().join("repo-v1-source"));
                assert_eq!(scan(&target), expected);
                assert!(
                    expected
                        .values()
                        .any(|(kind, bytes)| *kind == 'f' && bytes.is_empty())
                );
                assert!(
                    expected
                        .values()
                        .any(|(kind, bytes)| *kind == 'f' && bytes.len() > 40 * 1024)
                );
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
fn fixture_v1_refuses_a_wrong_password() {
    assert_refuses_a_wrong_password("repo-v1");
}
