//! Fault injection through the library: a backup whose backend fails at any request either
//! succeeds or fails without committing a snapshot, and always leaves a repository that checks
//! clean and takes a new backup that restores byte for byte. Also a property test that restore
//! inverts backup for random small trees.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_store::backend::Backend;
use cairn_store::backend::PutMode;
use cairn_store::backend::faulty::{FaultPlan, FaultyBackend};
use cairn_store::backend::object_store::ObjectStoreBackend;
use cairn_store::backup::{
    self, BackupOptions, BackupOutcome, BackupSource, NoProgress, ParentChoice,
};
use cairn_store::check::{self, CheckOptions};
use cairn_store::format::tree::Timestamp;
use cairn_store::keys::KdfParams;
use cairn_store::restore::{self, NoRestoreProgress};
use cairn_store::{CacheLocation, ErrorKind, InitOptions, Repository};
use proptest::prelude::*;

use crate::support::{
    Prng, TreeBuilder, assert_same_entries, compressible_text, random_bytes, restored_path,
    scan_tree,
};

const PASSWORD: &[u8] = b"fault injection password";

fn init_options() -> InitOptions {
    InitOptions {
        kdf: KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        },
        pack_target_size: 1 << 20,
        ..InitOptions::default()
    }
}

fn backup_options(second: i64) -> BackupOptions {
    BackupOptions {
        host: "fault-host".into(),
        username: "tester".into(),
        tags: vec!["faults".into()],
        time: Timestamp {
            seconds: 1_767_225_600 + second,
            nanos: 0,
        },
        program_version: "test".into(),
        parent: ParentChoice::Latest,
        ..BackupOptions::default()
    }
}

fn open(backend: &Arc<dyn Backend>) -> cairn_store::Result<Repository> {
    Repository::open(Arc::clone(backend), PASSWORD, &CacheLocation::Memory)
}

fn backup_paths(
    repository: &Repository,
    paths: &[&Path],
    second: i64,
) -> cairn_store::Result<BackupOutcome> {
    backup::backup(
        repository,
        BackupSource::Paths(paths.iter().map(|path| path.to_path_buf()).collect()),
        &backup_options(second),
        &NoProgress,
    )
}

fn snapshot_names(backend: &Arc<dyn Backend>) -> Vec<String> {
    let mut names: Vec<String> = backend
        .list("snapshots")
        .expect("list snapshots")
        .into_iter()
        .map(|info| info.name)
        .collect();
    names.sort();
    names
}

/// A copy of every object of `source` in a new in-memory backend.
fn clone_backend(source: &Arc<dyn Backend>) -> Arc<dyn Backend> {
    let copy: Arc<dyn Backend> = Arc::new(ObjectStoreBackend::in_memory());
    let config = source.get("config").expect("get config");
    copy.put("config", config, PutMode::Create)
        .expect("put config");
    for prefix in ["keys", "snapshots", "index", "data"] {
        for info in source.list(prefix).expect("list") {
            let bytes = source.get(&info.name).expect("get");
            copy.put(&info.name, bytes, PutMode::Create).expect("put");
        }
    }
    copy
}

/// Restores the snapshot `outcome` into a fresh directory and compares it with `source`.
#[track_caller]
fn assert_restores(repository: &Repository, outcome: &BackupOutcome, source: &Path) {
    let target = tempfile::tempdir().expect("temp dir");
    let restored = restore::restore(
        repository,
        &outcome.snapshot.root,
        "",
        target.path(),
        &NoRestoreProgress,
    )
    .expect("restore");
    assert!(
        restored.failed.is_empty(),
        "restore failed for: {:?}",
        restored.failed
    );
    assert_same_entries(
        &scan_tree(source),
        &scan_tree(&restored_path(target.path(), source)),
    );
}

/// A source of about 1.2 MB: two incompressible files (so more than one 1 MiB data pack), text,
/// small files, an empty file and directory, a symlink.
fn build_source(root: &Path) -> PathBuf {
    let source = root.join("source");
    let tree = TreeBuilder::new(&source);
    tree.file("baseline/kept.bin", &random_bytes(200, 60_000));
    tree.file("baseline/notes.txt", &compressible_text(201, 20_000));
    tree.file("big-1.bin", &random_bytes(202, 540_000));
    tree.file("big-2.bin", &random_bytes(203, 540_000));
    tree.file("text/log.txt", &compressible_text(204, 40_000));
    for index in 0..3 {
        tree.file(
            &format!("text/small-{index}.txt"),
            &compressible_text(210 + index, 2_000),
        );
    }
    tree.file("empty", b"");
    tree.dir("empty-dir");
    tree.symlink("link", "text/log.txt");
    source
}

/// Name and size of every object of a backend.
fn object_listing(backend: &Arc<dyn Backend>) -> Vec<(String, u64)> {
    let mut objects: Vec<(String, u64)> = ["keys", "snapshots", "index", "data"]
        .into_iter()
        .flat_map(|prefix| backend.list(prefix).expect("list"))
        .map(|info| (info.name, info.size))
        .collect();
    objects.sort();
    objects
}

/// Runs one faulted backup over a copy of `base` and verifies the invariants: on success the
/// snapshot is stored and restores; on failure no snapshot was committed, the error is the
/// injected (transient) one, and a new backup without faults succeeds and restores. Either way
/// `check --read-data` passes. Returns whether the faulted backup succeeded.
///
/// `base_verified` skips repeating the recovery when a failed run wrote nothing at all (the
/// repository is then exactly `base`, already verified once).
fn faulted_run(
    base: &Arc<dyn Backend>,
    plan: FaultPlan,
    source: &Path,
    base_verified: &mut bool,
) -> bool {
    let backend = clone_backend(base);
    let before = snapshot_names(&backend);
    let faulty: Arc<dyn Backend> = Arc::new(FaultyBackend::new(Arc::clone(&backend), plan));
    let result = open(&faulty).and_then(|repository| backup_paths(&repository, &[source], 10));
    let after = snapshot_names(&backend);
    let untouched = object_listing(&backend) == object_listing(base);
    if let Err(error) = &result {
        assert_eq!(
            before, after,
            "{plan:?}: a failed backup ({error}) committed a snapshot"
        );
        assert_eq!(
            error.kind(),
            ErrorKind::Transient,
            "{plan:?}: an injected backend failure surfaced as {error:?}"
        );
        if untouched && *base_verified {
            return false;
        }
    }
    let repository = open(&backend).expect("open without faults");
    let report = check::check(&repository, CheckOptions::read_all()).expect("check");
    assert!(
        report.is_ok(),
        "{plan:?}: check after the faulted backup ({}) found damage: {:?} {:?}",
        if result.is_ok() {
            "succeeded"
        } else {
            "failed"
        },
        report.damaged,
        report.affected
    );
    if let Ok(outcome) = result {
        assert_eq!(after.len(), before.len() + 1, "{plan:?}: snapshot count");
        assert!(
            after
                .iter()
                .any(|name| name.ends_with(&outcome.snapshot_id.to_hex())),
            "{plan:?}: the reported snapshot is not stored"
        );
        assert_restores(&repository, &outcome, source);
        return true;
    }
    let outcome = backup_paths(&repository, &[source], 20)
        .unwrap_or_else(|error| panic!("{plan:?}: backup after the fault: {error}"));
    assert_restores(&repository, &outcome, source);
    *base_verified |= untouched;
    false
}

/// An initialised in-memory repository holding one snapshot of `baseline`.
fn base_repository(baseline: &Path) -> Arc<dyn Backend> {
    let base: Arc<dyn Backend> = Arc::new(ObjectStoreBackend::in_memory());
    let repository = Repository::init(
        Arc::clone(&base),
        PASSWORD,
        &init_options(),
        &CacheLocation::Memory,
    )
    .expect("init");
    backup_paths(&repository, &[baseline], 0).expect("baseline backup");
    base
}

/// How many requests a clean open and backup of `source` make.
fn clean_request_count(base: &Arc<dyn Backend>, source: &Path) -> u64 {
    let backend = clone_backend(base);
    let faulty = Arc::new(FaultyBackend::new(
        Arc::clone(&backend),
        FaultPlan::FailFrom(u64::MAX),
    ));
    let as_backend: Arc<dyn Backend> = Arc::clone(&faulty) as Arc<dyn Backend>;
    let repository = open(&as_backend).expect("open");
    backup_paths(&repository, &[source], 10).expect("clean backup");
    faulty.requests()
}

/// Every request of a backup, failing from that request on.
#[test]
fn backup_failing_from_any_request_leaves_a_sound_repository() {
    let directory = tempfile::tempdir().expect("temp dir");
    let source = build_source(directory.path());
    let base = base_repository(&source.join("baseline"));
    let requests = clean_request_count(&base, &source);
    assert!(requests >= 8, "a backup made only {requests} requests");
    let mut succeeded = Vec::new();
    let mut base_verified = false;
    for k in 0..=requests {
        if faulted_run(&base, FaultPlan::FailFrom(k), &source, &mut base_verified) {
            succeeded.push(k);
        }
    }
    // The last request is the session's end marker, written after the snapshot committed and
    // best effort (an unended session only delays a prune's deletions): failing it alone does
    // not fail the backup. Every request before it does.
    assert_eq!(
        succeeded,
        vec![requests - 1, requests],
        "only runs whose faults start after the snapshot's commit should succeed"
    );
}

/// Every request of a backup, failing only that request (a transient blip).
#[test]
fn backup_with_one_failed_request_leaves_a_sound_repository() {
    let directory = tempfile::tempdir().expect("temp dir");
    let source = build_source(directory.path());
    let base = base_repository(&source.join("baseline"));
    let requests = clean_request_count(&base, &source);
    let mut base_verified = false;
    let mut succeeded = Vec::new();
    for k in 0..=requests {
        if faulted_run(&base, FaultPlan::FailOnce(k), &source, &mut base_verified) {
            succeeded.push(k);
        }
    }
    assert!(succeeded.contains(&requests), "{succeeded:?}");
}

/// One entry of a generated tree.
#[derive(Debug, Clone)]
enum Generated {
    File { seed: u64, length: usize, mode: u32 },
    Directory,
    Symlink(String),
}

fn name_strategy() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 _.éü日-]{1,10}".prop_filter("not . or ..", |name| name != "." && name != "..")
}

fn entry_strategy() -> impl Strategy<Value = (Vec<String>, Generated)> {
    let kind = prop_oneof![
        3 => (any::<u64>(), 0usize..60_000, prop::sample::select(vec![0o644u32, 0o600, 0o755, 0o400]))
            .prop_map(|(seed, length, mode)| Generated::File { seed, length, mode }),
        1 => Just(Generated::Directory),
        1 => "[a-z./ ]{1,20}".prop_map(Generated::Symlink),
    ];
    (prop::collection::vec(name_strategy(), 1..4), kind)
}

fn build_generated(root: &Path, entries: &[(Vec<String>, Generated)]) {
    let tree = TreeBuilder::new(root);
    for (components, entry) in entries {
        let relative = components.join("/");
        let path = root.join(&relative);
        if std::fs::symlink_metadata(&path).is_ok() {
            continue;
        }
        let Some(parent) = path.parent() else {
            continue;
        };
        if std::fs::create_dir_all(parent).is_err() {
            continue; // a prefix is a file or a symlink
        }
        match entry {
            Generated::File { seed, length, mode } => {
                let data = if seed % 2 == 0 {
                    random_bytes(*seed, *length)
                } else {
                    compressible_text(*seed, *length)
                };
                tree.file(&relative, &data);
                tree.mode(&relative, *mode);
            }
            Generated::Directory => {
                tree.dir(&relative);
            }
            Generated::Symlink(target) => {
                tree.symlink(&relative, target);
            }
        }
    }
    // Fixed, distinct mtimes (after all creation, which changes directory mtimes).
    let mut prng = Prng::new(entries.len() as u64);
    for (relative, entry) in scan_tree(root) {
        if !matches!(entry.kind, crate::support::EntryKind::Symlink(_)) {
            let seconds =
                1_000_000_000 + i64::try_from(prng.next_u64() % 1_000_000_000).expect("small");
            let nanos = u32::try_from(prng.next_u64() % 1_000_000_000).expect("below 1e9");
            crate::support::set_mtime(&root.join(relative), seconds, nanos);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]

    /// restore(backup(x)) == x for random small trees, through the library.
    #[test]
    fn restore_inverts_backup(entries in prop::collection::vec(entry_strategy(), 0..14)) {
        let directory = tempfile::tempdir().expect("temp dir");
        let source = directory.path().join("source");
        build_generated(&source, &entries);
        let backend: Arc<dyn Backend> = Arc::new(ObjectStoreBackend::in_memory());
        let repository = Repository::init(
            Arc::clone(&backend),
            PASSWORD,
            &init_options(),
            &CacheLocation::Memory,
        )
        .expect("init");
        let outcome = backup_paths(&repository, &[&source], 0).expect("backup");
        prop_assert!(outcome.warnings.is_empty(), "{:?}", outcome.warnings);
        assert_restores(&repository, &outcome, &source);
        // A second backup of the same tree stores the same tree for it (deterministic trees).
        let again = backup_paths(&repository, &[&source], 1).expect("backup again");
        let subtree = |root| match repository.find_node(root, &source.to_string_lossy()) {
            Ok(Some(node)) => node.kind,
            other => panic!("source not in snapshot: {other:?}"),
        };
        prop_assert_eq!(subtree(&again.snapshot.root), subtree(&outcome.snapshot.root));
    }
}
