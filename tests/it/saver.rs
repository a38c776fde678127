//! The saver never deadlocks (issue 12): a regression test for the hang found with 1 MiB packs
//! (30 files of 1 MB stopped forever at 0 % CPU, the upload threads blocked on a full results
//! channel while the main thread waited to hand them the next pack), and a matrix over the pack
//! sizes the format allows, every upload concurrency from 1 to 16 and several input shapes. Each
//! backup runs under a watchdog that turns a hang into a failure naming the case; each snapshot
//! must restore byte for byte. Through the library on an in-memory backend, with fixed seeds.
//!
//! Two levels keep the matrix quick in debug builds. The saver itself treats sealed blobs as
//! opaque bytes, so its matrix (every pack size class × uploads 1 to 16 × four shapes of calls)
//! hands it random bytes as sealed blobs and finds each one again, byte for byte, in the packs the
//! index points to. The backup pipeline (chunking, sealing, restore) runs on a smaller matrix of
//! real sources: many small files, one stream, a mix, and files of the pack size ±1.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::Duration;

use cairn_store::backend::Backend;
use cairn_store::backend::object_store::ObjectStoreBackend;
use cairn_store::backup::{self, BackupOptions, BackupOutcome, BackupSource, NoProgress};
use cairn_store::format::config::{MAX_PACK_TARGET_SIZE, MIN_PACK_TARGET_SIZE};
use cairn_store::format::pack::SealedBlob;
use cairn_store::keys::KdfParams;
use cairn_store::repository::{Concurrency, pack_name};
use cairn_store::restore::{self, NoRestoreProgress};
use cairn_store::saver::BlobSaver;
use cairn_store::{BlobType, CacheLocation, Id, InitOptions, Repository};

use crate::support::{TreeBuilder, assert_same_entries, random_bytes, restored_path, scan_tree};

const PASSWORD: &[u8] = b"saver matrix password";

/// Far beyond what any case needs on a loaded machine: this detects a hang, it does not measure
/// speed.
const HANG_BOUND: Duration = Duration::from_mins(4);

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

/// Regression: 30 files of 1 MB on 1 MiB packs, with compression and the upload concurrency as by
/// default (2), hung forever.
#[test]
fn thirty_files_of_one_megabyte_on_one_mebibyte_packs_do_not_hang() {
    let directory = tempfile::tempdir().expect("temp dir");
    let source = files(&directory.path().join("source"), 30, 1_000_000, 1200);
    backs_up_and_restores(
        "30 x 1 MB, 1 MiB packs, 2 uploads",
        repository(MIN_PACK_TARGET_SIZE, 2, 3),
        &Input::Paths(source),
    );
}

/// One stream (`--stdin`, `--command`) longer than a read block, at the smallest pack size with
/// one upload thread: each 8 MiB block fills seven or eight packs in one call, the most a stream
/// can (the old queues held seven, so streams escaped the hang by a pack; this keeps it so).
#[test]
fn a_stream_of_nine_mebibytes_on_one_mebibyte_packs_does_not_hang() {
    backs_up_and_restores(
        "9 MiB stream, 1 MiB packs, 1 upload",
        repository(MIN_PACK_TARGET_SIZE, 1, 0),
        &Input::Stream(Arc::new(random_bytes(1250, 9 << 20))),
    );
}

/// The pack sizes of the matrix: the smallest the format allows, the default, the largest.
const PACK_SIZES: [u32; 3] = [MIN_PACK_TARGET_SIZE, 16 << 20, MAX_PACK_TARGET_SIZE];

/// Random bytes shared by every case (blobs are slices of it).
fn pool() -> &'static [u8] {
    static POOL: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    POOL.get_or_init(|| random_bytes(1300, (16 << 20) + 2))
}

/// Builds the blobs of one case with distinct ids, each `sealed` a slice of [`pool`].
struct BlobMaker {
    next: u64,
}

impl BlobMaker {
    fn blob(&mut self, blob_type: BlobType, length: usize) -> SealedBlob {
        self.next += 1;
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&self.next.to_le_bytes());
        let start = usize::try_from(self.next * 7919).unwrap() % (pool().len() - length + 1);
        SealedBlob {
            blob_type,
            id: Id(id),
            raw_length: u32::try_from(length).unwrap(),
            sealed: pool()[start..start + length].to_vec(),
        }
    }

    fn data(&mut self, count: usize, length: usize) -> Vec<SealedBlob> {
        (0..count)
            .map(|_| self.blob(BlobType::Data, length))
            .collect()
    }
}

/// The shapes of `save_sealed` calls: each shape is the list of calls, each call its blobs.
fn call_shapes(pack_size: u32) -> Vec<(&'static str, Vec<Vec<SealedBlob>>)> {
    let mut maker = BlobMaker { next: 0 };
    let mut shapes = vec![
        // Eight or more 1 MiB packs filled within one call: the pattern that hung.
        (
            "many small blobs in one call",
            vec![maker.data(288, 32 << 10)],
        ),
        // A stream: one large blob per call.
        (
            "one large blob per call",
            (0..10).map(|_| maker.data(1, 900 << 10)).collect(),
        ),
        (
            "a mix of data and tree blobs",
            (0..4)
                .flat_map(|round| {
                    let mut small = maker.data(40 + round, 20 << 10);
                    small.push(maker.blob(BlobType::Tree, 3000));
                    [
                        small,
                        maker.data(1, 1 << 20),
                        vec![maker.blob(BlobType::Tree, 70 << 10)],
                    ]
                })
                .collect(),
        ),
    ];
    let pack_size = usize::try_from(pack_size).unwrap();
    if pack_size < pool().len() {
        let edges: Vec<SealedBlob> = [pack_size - 1, pack_size, pack_size + 1]
            .iter()
            .map(|&length| maker.blob(BlobType::Data, length))
            .collect();
        shapes.push((
            "blobs of the pack size -1, exactly, +1",
            edges.chunks(1).map(<[SealedBlob]>::to_vec).collect(),
        ));
    }
    shapes
}

/// Every blob lies, byte for byte, in the pack the index names for it.
#[track_caller]
fn assert_stored(case: &str, repository: &Repository, blobs: &[SealedBlob]) {
    let ids: Vec<Id> = blobs.iter().map(|blob| blob.id).collect();
    let locations = repository.cache().lookup_many(&ids).expect("lookup");
    let mut packs: HashMap<Id, bytes::Bytes> = HashMap::new();
    for (blob, location) in blobs.iter().zip(locations) {
        let location = location.unwrap_or_else(|| panic!("{case}: a blob is not indexed"));
        let pack = packs.entry(location.pack_id).or_insert_with(|| {
            repository
                .backend()
                .get(&pack_name(&location.pack_id))
                .unwrap_or_else(|error| panic!("{case}: an indexed pack is missing: {error}"))
        });
        let start = location.entry.offset as usize;
        let stored = &pack[start..start + location.entry.length as usize];
        assert!(
            stored == blob.sealed.as_slice() && location.entry.blob_type == blob.blob_type,
            "{case}: a blob of {} bytes differs in its pack",
            blob.sealed.len()
        );
    }
}

/// Every pack size class, every upload concurrency from 1 to 16, every shape of calls: the
/// saver finishes and every blob is stored where the index says.
#[test]
fn the_saver_completes_for_every_pack_size_concurrency_and_shape() {
    for pack_size in PACK_SIZES {
        for (shape, calls) in call_shapes(pack_size) {
            let blobs: Vec<SealedBlob> = calls.iter().flatten().cloned().collect();
            for uploads in 1..=16 {
                let case = format!(
                    "{shape}, {} MiB packs, {uploads} upload(s)",
                    pack_size >> 20
                );
                let repository = repository(pack_size, uploads, 0);
                let calls = calls.clone();
                let (repository, stats) = within_bound(&case, move || {
                    let mut saver = BlobSaver::new(&repository);
                    for call in calls {
                        saver.save_sealed(call).expect("save_sealed");
                    }
                    let stats = saver.finish().expect("finish");
                    (repository, stats)
                });
                assert_eq!(stats.blobs_added, blobs.len() as u64, "{case}");
                assert_stored(&case, &repository, &blobs);
            }
        }
    }
}

/// The backup pipeline on real sources: many small files, one stream, a mix of both kinds of
/// files, and files of the pack size ±1, at the smallest pack size with 1 and 16 uploads; a
/// stream and small files at the default and the largest pack size (2 and 3 uploads).
#[test]
fn backups_of_every_shape_restore_at_every_pack_size() {
    let directory = tempfile::tempdir().expect("temp dir");
    let small = files(&directory.path().join("small"), 24, 100_000, 1400);
    let stream = Input::Stream(Arc::new(random_bytes(1500, 3_000_000)));
    let mix = directory.path().join("mix");
    files(&mix.join("small"), 12, 60_000, 1600);
    files(&mix.join("large"), 2, 1_300_000, 1700);
    let edges = directory.path().join("edges");
    let tree = TreeBuilder::new(&edges);
    let pack = MIN_PACK_TARGET_SIZE as usize;
    for (name, length) in [
        ("minus-one", pack - 1),
        ("exact", pack),
        ("plus-one", pack + 1),
    ] {
        tree.file(name, &random_bytes(1800 + length as u64, length));
    }
    let shapes = [
        ("many small files", Input::Paths(small)),
        ("one stream", stream),
        ("a mix", Input::Paths(mix)),
        (
            "files of the pack size -1, exactly, +1",
            Input::Paths(edges),
        ),
    ];
    for (pack_size, uploads, shape_count) in [
        (MIN_PACK_TARGET_SIZE, 1, 4),
        (MIN_PACK_TARGET_SIZE, 16, 4),
        (16 << 20, 2, 2),
        (MAX_PACK_TARGET_SIZE, 3, 2),
    ] {
        for (shape, input) in &shapes[..shape_count] {
            backs_up_and_restores(
                &format!(
                    "{shape}, {} MiB packs, {uploads} upload(s)",
                    pack_size >> 20
                ),
                repository(pack_size, uploads, 0),
                input,
            );
        }
    }
}
