//! The saver never deadlocks (issue 12): a regression test for the hang found with 1 MiB packs
//! (30 files of 1 MB stopped forever at 0 % CPU, the upload threads blocked on a full results
//! channel while the main thread waited to hand them the next pack), and a matrix over the pack
//! sizes the format allows, every upload concurrency from 1 to 16 and several input shapes. Each
//! backup runs under a watchdog that turns a hang into a failure naming the case; each snapshot
//! must restore byte for byte. Through the library on an in-memory backend, with fixed seeds.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::Duration;

use cairn_store::backend::Backend;
use cairn_store::backend::object_store::ObjectStoreBackend;
use cairn_store::backup::{self, BackupOptions, BackupOutcome, BackupSource, NoProgress};
use cairn_store::format::config::{MAX_PACK_TARGET_SIZE, MIN_PACK_TARGET_SIZE};
use cairn_store::keys::KdfParams;
use cairn_store::repository::Concurrency;
use cairn_store::restore::{self, NoRestoreProgress};
use cairn_store::{CacheLocation, InitOptions, Repository};

use crate::support::{TreeBuilder, assert_same_entries, random_bytes, restored_path, scan_tree};

const PASSWORD: &[u8] = b"saver matrix password";

/// Far beyond what any case needs on a loaded machine: this detects a hang, it does not measure
/// speed.
const HANG_BOUND: Duration = Duration::from_secs(240);

/// A fresh in-memory repository with `pack_size` packs, `uploads` upload threads and
/// compression at `compression_level`.
fn repository(pack_size: u32, uploads: usize, compression_level: i32) -> Repository {
    let backend: Arc<dyn Backend> = Arc::new(ObjectStoreBackend::in_memory());
    let options = InitOptions {
        kdf: KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        },
        pack_target_size: pack_size,
        compression_level,
        ..InitOptions::default()
    };
    Repository::init(backend, PASSWORD, &options, &CacheLocation::Memory)
        .expect("init")
        .with_concurrency(Concurrency {
            uploads,
            downloads: 4,
        })
}

fn options() -> BackupOptions {
    BackupOptions {
        host: "saver-host".into(),
        username: "tester".into(),
        program_version: "test".into(),
        ..BackupOptions::default()
    }
}

/// What one case backs up.
#[derive(Debug, Clone)]
enum Input {
    /// Files and directories below this path.
    Paths(PathBuf),
    /// One stream of these bytes.
    Stream(Arc<Vec<u8>>),
}

/// Runs `work` on its own thread and fails the test, naming `case`, if it does not finish within
/// [`HANG_BOUND`]: a deadlocked saver would otherwise hang the test run forever.
#[track_caller]
fn within_bound<T: Send + 'static>(case: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
    let (sender, receiver) = channel();
    let worker = std::thread::spawn(move || {
        let _ = sender.send(work());
    });
    match receiver.recv_timeout(HANG_BOUND) {
        Ok(value) => {
            worker.join().expect("worker thread");
            value
        }
        Err(RecvTimeoutError::Timeout) => panic!(
            "{case}: the backup did not finish within {HANG_BOUND:?}; the saver is deadlocked"
        ),
        Err(RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the worker sends before it returns"),
        },
    }
}

/// Backs `input` up under the watchdog and checks that the snapshot restores byte for byte.
#[track_caller]
fn backs_up_and_restores(case: &str, repository: Repository, input: &Input) {
    let job = input.clone();
    let (repository, outcome) = within_bound(case, move || {
        let outcome = match &job {
            Input::Paths(path) => backup::backup(
                &repository,
                BackupSource::Paths(vec![path.clone()]),
                &options(),
                &NoProgress,
            ),
            Input::Stream(bytes) => backup::backup(
                &repository,
                BackupSource::Stream {
                    name: "stream".into(),
                    reader: &mut Cursor::new(bytes.as_slice()),
                },
                &options(),
                &NoProgress,
            ),
        };
        (repository, outcome)
    });
    let outcome: BackupOutcome = outcome.unwrap_or_else(|error| panic!("{case}: {error}"));
    match input {
        Input::Paths(path) => {
            let target = tempfile::tempdir().expect("temp dir");
            let restored = restore::restore(
                &repository,
                &outcome.snapshot.root,
                "",
                target.path(),
                &NoRestoreProgress,
            )
            .unwrap_or_else(|error| panic!("{case}: restore: {error}"));
            assert!(restored.failed.is_empty(), "{case}: {:?}", restored.failed);
            assert_same_entries(
                &scan_tree(path),
                &scan_tree(&restored_path(target.path(), path)),
            );
        }
        Input::Stream(bytes) => {
            let mut dumped = Vec::new();
            restore::dump(&repository, &outcome.snapshot.root, "stream", &mut dumped)
                .unwrap_or_else(|error| panic!("{case}: dump: {error}"));
            assert!(
                dumped == **bytes,
                "{case}: the dumped stream differs ({} bytes, {} expected)",
                dumped.len(),
                bytes.len()
            );
        }
    }
}

/// `count` files of `size` random bytes each (seeded by `seed` and the file's number).
fn files(root: &Path, count: usize, size: usize, seed: u64) -> PathBuf {
    let tree = TreeBuilder::new(root);
    for index in 0..count {
        tree.file(
            &format!("f{index:03}"),
            &random_bytes(seed + index as u64, size),
        );
    }
    root.to_path_buf()
}

/// Regression: 30 files of 1 MB on 1 MiB packs, with compression as by default, hung at every
/// upload concurrency up to 2 (the default).
#[test]
fn thirty_files_of_one_megabyte_on_one_mebibyte_packs_do_not_hang() {
    let directory = tempfile::tempdir().expect("temp dir");
    let source = files(&directory.path().join("source"), 30, 1_000_000, 1200);
    for uploads in [1, 2] {
        backs_up_and_restores(
            &format!("30 x 1 MB, 1 MiB packs, {uploads} upload(s)"),
            repository(MIN_PACK_TARGET_SIZE, uploads, 3),
            &Input::Paths(source.clone()),
        );
    }
}
