//! One backend conformance suite, run on every backend cairn ships: in-memory, local directory,
//! and the real S3 (moto) and Azure (Azurite) servers that `tests/servers.sh` starts on
//! loopback; on GCS (fake-gcs-server) every read, and the clean failure of writes it cannot take.
//! Plus the CLI's main commands end to end against each remote store.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Barrier};

use bytes::Bytes;
use cairn_store::backend::object_store::{CreateDirectory, ObjectStoreBackend};
use cairn_store::backend::{Backend, BackendError, PutMode};

use crate::support::{CHEAP_INIT, Workspace, random_bytes};

static PREFIX_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh prefix below a remote test URL from the environment, or `None` (with a note) when the
/// servers are not running. With `CAIRN_TEST_REQUIRE_SERVERS=1` (set by tests/run-all.sh) a
/// missing server fails the test instead.
pub fn remote_url(variable: &str, test: &str) -> Option<String> {
    if let Ok(base) = std::env::var(variable) {
        return Some(format!(
            "{base}/{test}-{}-{}",
            std::process::id(),
            PREFIX_COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
    }
    assert!(
        std::env::var("CAIRN_TEST_REQUIRE_SERVERS").is_err(),
        "{variable} is not set but servers are required: run tests/run-all.sh"
    );
    eprintln!("skipping {test} on {variable}: start servers with tests/run-all.sh");
    None
}

fn open(location: &str) -> Arc<dyn Backend> {
    Arc::new(ObjectStoreBackend::open(location, &[], CreateDirectory::Yes).expect("backend opens"))
}

/// Backends by name.
type NamedBackends = Vec<(&'static str, Arc<dyn Backend>)>;

/// Every backend, each at a fresh empty location. The temp dir keeps the local one alive.
fn every_backend(test: &str) -> (tempfile::TempDir, NamedBackends) {
    let directory = tempfile::tempdir().unwrap();
    let mut backends: NamedBackends = vec![
        ("memory", Arc::new(ObjectStoreBackend::in_memory())),
        (
            "local",
            open(directory.path().join("repo").to_str().unwrap()),
        ),
    ];
    if let Some(url) = remote_url("CAIRN_TEST_S3_URL", test) {
        backends.push(("s3", open(&url)));
    }
    if let Some(url) = remote_url("CAIRN_TEST_AZURE_URL", test) {
        backends.push(("azure", open(&url)));
    }
    // GCS is not here: fake-gcs-server cannot take object_store's uploads (see
    // `gcs_reads_a_repository_uploaded_through_the_json_api`).
    (directory, backends)
}

fn conformance(kind: &str, backend: &dyn Backend) {
    let payload = Bytes::from(random_bytes(7, 100_000));
    backend
        .put("snapshots/a", payload.clone(), PutMode::Create)
        .unwrap_or_else(|error| panic!("{kind}: create: {error}"));
    assert!(
        matches!(
            backend.put("snapshots/a", Bytes::from_static(b"other"), PutMode::Create),
            Err(BackendError::AlreadyExists { .. })
        ),
        "{kind}: a second create must fail"
    );
    assert_eq!(backend.get("snapshots/a").unwrap(), payload, "{kind}: get");
    assert_eq!(
        backend.get_range("snapshots/a", 1000..1100).unwrap(),
        payload.slice(1000..1100),
        "{kind}: ranged get"
    );
    assert!(
        backend.get_range("snapshots/a", 99_990..100_100).is_err(),
        "{kind}: a range past the end is an error, not short data"
    );
    assert!(
        matches!(
            backend.get("snapshots/missing"),
            Err(BackendError::NotFound { .. })
        ),
        "{kind}: missing get"
    );
    assert_eq!(
        backend.head("snapshots/a").unwrap(),
        Some(100_000),
        "{kind}"
    );
    assert_eq!(backend.head("snapshots/missing").unwrap(), None, "{kind}");

    backend
        .put("data/ab/x", Bytes::from_static(b"1"), PutMode::Overwrite)
        .unwrap();
    backend
        .put("data/ab/x", Bytes::from_static(b"22"), PutMode::Overwrite)
        .unwrap();
    backend
        .put("data/cd/y", Bytes::from_static(b"333"), PutMode::Overwrite)
        .unwrap();
    let mut listed: Vec<(String, u64)> = backend
        .list("data")
        .unwrap()
        .into_iter()
        .map(|info| (info.name, info.size))
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        vec![("data/ab/x".to_owned(), 2), ("data/cd/y".to_owned(), 3)],
        "{kind}: list is relative to the repository root, with sizes"
    );
    assert!(backend.list("index").unwrap().is_empty(), "{kind}");

    backend.delete("data/ab/x").unwrap();
    assert_eq!(backend.head("data/ab/x").unwrap(), None, "{kind}: deleted");
    backend
        .delete("data/ab/x")
        .unwrap_or_else(|error| panic!("{kind}: deleting a missing object: {error}"));

    let large = Bytes::from(random_bytes(8, 20 * 1024 * 1024));
    backend
        .put("data/ee/large", large.clone(), PutMode::Overwrite)
        .unwrap();
    assert_eq!(
        backend.get("data/ee/large").unwrap(),
        large,
        "{kind}: 20 MiB"
    );
    // Above the multipart threshold: uploaded in parts, read back whole.
    let huge = Bytes::from(random_bytes(9, 41 * 1024 * 1024 + 5));
    let puts_before = backend.stats().puts;
    backend
        .put("data/ff/huge", huge.clone(), PutMode::Overwrite)
        .unwrap_or_else(|error| panic!("{kind}: multipart put: {error}"));
    assert!(
        backend.stats().puts - puts_before >= 6,
        "{kind}: parts are requests too"
    );
    assert_eq!(
        backend.head("data/ff/huge").unwrap(),
        Some(huge.len() as u64),
        "{kind}"
    );
    assert!(
        backend.get("data/ff/huge").unwrap() == huge,
        "{kind}: multipart round trip"
    );
    let stats = backend.stats();
    assert!(
        stats.puts >= 6 && stats.gets >= 4 && stats.lists >= 2,
        "{kind}: {stats:?}"
    );
    assert!(stats.bytes_sent >= 20 * 1024 * 1024, "{kind}: {stats:?}");
}

#[test]
fn every_backend_passes_the_conformance_suite() {
    let (_directory, backends) = every_backend("conformance");
    for (kind, backend) in backends {
        conformance(kind, backend.as_ref());
    }
}

#[test]
fn concurrent_creates_have_exactly_one_winner() {
    let (_directory, backends) = every_backend("create-race");
    for (kind, backend) in backends {
        for trial in 0..3 {
            let name = format!("snapshots/race-{trial}");
            let contenders = 8;
            let barrier = Arc::new(Barrier::new(contenders));
            let handles: Vec<_> = (0..contenders)
                .map(|contender| {
                    let backend = Arc::clone(&backend);
                    let barrier = Arc::clone(&barrier);
                    let name = name.clone();
                    std::thread::spawn(move || {
                        let bytes = Bytes::from(vec![u8::try_from(contender).unwrap(); 1000]);
                        barrier.wait();
                        backend
                            .put(&name, bytes, PutMode::Create)
                            .ok()
                            .map(|()| contender)
                    })
                })
                .collect();
            let winners: Vec<usize> = handles
                .into_iter()
                .filter_map(|handle| handle.join().unwrap())
                .collect();
            assert_eq!(winners.len(), 1, "{kind}: trial {trial}: {winners:?}");
            let stored = backend.get(&name).unwrap();
            assert_eq!(
                stored[0] as usize, winners[0],
                "{kind}: the object holds the winner's bytes"
            );
        }
    }
}

/// The CLI's main job against a repository URL: init, tree and stream backups, restore, dump,
/// check --read-data; then a flipped byte in a pack is found and named.
fn cli_round_trip(workspace: &Workspace, url: &str) {
    let source = workspace.path("source");
    std::fs::create_dir_all(source.join("sub/deeper")).unwrap();
    std::fs::write(source.join("a.env"), b"SECRET=1\n").unwrap();
    std::fs::write(source.join("sub/big.bin"), random_bytes(3, 3_000_000)).unwrap();
    std::fs::write(source.join("sub/deeper/empty"), b"").unwrap();
    std::os::unix::fs::symlink("../a.env", source.join("sub/link")).unwrap();
    let repo = ["--repo", url];
    let with = |args: &[&str]| -> Vec<String> {
        repo.iter()
            .chain(args.iter())
            .map(|arg| (*arg).to_owned())
            .collect()
    };
    let run = |args: &[&str]| {
        let args = with(args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        workspace.cairn(&args)
    };
    run(&CHEAP_INIT).ok();
    run(&["backup", source.to_str().unwrap(), "--tag", "nightly"]).ok();
    let stream = random_bytes(4, 2_500_000);
    {
        let args = with(&["backup", "--stdin", "--stdin-name", "app.archive"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        workspace.cairn_stdin(&args, &stream).ok();
    }
    let snapshots = run(&["snapshots", "--json"]).ok().json_lines();
    assert_eq!(snapshots.len(), 2, "{url}");
    let tree_snapshot = snapshots
        .iter()
        .find(|snapshot| snapshot["stdin"] == false)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let target = workspace.path("restored");
    let spec = format!("{tree_snapshot}:{}", source.display());
    run(&["restore", &spec, "--target", target.to_str().unwrap()]).ok();
    assert_same_tree(&source, &target);
    let dumped = run(&["dump", "latest", "app.archive"]).ok();
    assert!(dumped.stdout == stream, "{url}: dump differs");
    run(&["check", "--read-data"]).ok();
    let accounted = run(&["check", "--read-data", "--verbose", "--json"]).ok();
    let requests = accounted
        .json_lines()
        .into_iter()
        .find(|line| line["message_type"] == "requests")
        .expect("a requests line with --verbose --json");
    assert!(
        requests["get"].as_u64().unwrap() >= 3
            && requests["bytes_received"].as_u64().unwrap() > 5_000_000,
        "{url}: {requests}"
    );
    assert_eq!(requests["put"], 0, "{url}: check writes nothing");

    // Damage one pack on the store itself and expect check to name it.
    let backend = ObjectStoreBackend::open(url, &[], CreateDirectory::No).unwrap();
    let pack = backend
        .list("data")
        .unwrap()
        .into_iter()
        .max_by_key(|info| info.size)
        .unwrap();
    let mut bytes = backend.get(&pack.name).unwrap().to_vec();
    bytes[1000] ^= 0x40;
    backend
        .put(&pack.name, Bytes::from(bytes), PutMode::Overwrite)
        .unwrap();
    let pack_hex = pack.name.rsplit('/').next().unwrap().to_owned();
    // Named by its short id, as every id in a damage report.
    run(&["check", "--read-data"])
        .failed()
        .stderr_contains(&pack_hex[..8]);
}

fn assert_same_tree(expected: &Path, actual: &Path) {
    for entry in std::fs::read_dir(expected).unwrap() {
        let entry = entry.unwrap();
        let other = actual.join(entry.file_name());
        let metadata = std::fs::symlink_metadata(entry.path()).unwrap();
        if metadata.is_dir() {
            assert_same_tree(&entry.path(), &other);
        } else if metadata.file_type().is_symlink() {
            assert_eq!(
                std::fs::read_link(entry.path()).unwrap(),
                std::fs::read_link(&other).unwrap()
            );
        } else {
            assert!(
                std::fs::read(entry.path()).unwrap() == std::fs::read(&other).unwrap(),
                "{} differs",
                other.display()
            );
        }
    }
}

#[test]
fn cli_round_trip_on_s3() {
    if let Some(url) = remote_url("CAIRN_TEST_S3_URL", "cli") {
        cli_round_trip(&Workspace::new(), &url);
    }
}

#[test]
fn cli_round_trip_on_azure() {
    if let Some(url) = remote_url("CAIRN_TEST_AZURE_URL", "cli") {
        cli_round_trip(&Workspace::new(), &url);
    }
}

/// Stores `bytes` as object `name` of bucket `cairn-test` through fake-gcs-server's JSON upload
/// API (`uploadType=media`), which it supports, unlike the XML API's `PUT`.
fn gcs_json_upload(endpoint: &str, name: &str, file: &Path) {
    let status = std::process::Command::new("curl")
        .args(["-sf", "-o", "/dev/null", "-X", "POST", "--data-binary"])
        .arg(format!("@{}", file.display()))
        .arg(format!(
            "{endpoint}/upload/storage/v1/b/cairn-test/o?uploadType=media&name={name}"
        ))
        .status()
        .expect("curl runs");
    assert!(status.success(), "upload of {name} failed");
}

/// GCS through fake-gcs-server, the emulator `tests/servers.sh` installs from the Python package
/// index. Upstream fake-gcs-server has no XML API upload (`fsouza/fake-gcs-server#331`;
/// `object_store`'s own CI runs a fork with it), and `object_store`'s GCS client writes every object with an XML API
/// `PUT` (create-only through `x-goog-if-generation-match: 0`): so cairn cannot write there, and
/// that failure must be clean. Everything else is tested: a repository written locally is
/// uploaded through the JSON API, then cairn lists, reads ranges, restores, dumps and checks
/// every byte on GCS, and the backend deletes.
#[test]
fn gcs_reads_a_repository_uploaded_through_the_json_api() {
    let Some(url) = remote_url("CAIRN_TEST_GCS_URL", "gcs-read") else {
        return;
    };
    let endpoint = std::env::var("CAIRN_TEST_GCS_ENDPOINT").expect("set with CAIRN_TEST_GCS_URL");
    let prefix = url.strip_prefix("gs://cairn-test/").unwrap().to_owned();
    let workspace = Workspace::initialized();
    let source = workspace.path("source");
    std::fs::create_dir_all(source.join("sub")).unwrap();
    std::fs::write(source.join("a.txt"), b"alpha\n").unwrap();
    std::fs::write(source.join("sub/big.bin"), random_bytes(3, 3_000_000)).unwrap();
    std::os::unix::fs::symlink("../a.txt", source.join("sub/link")).unwrap();
    workspace.backup(&[&source]);
    let stream = random_bytes(4, 1_500_000);
    workspace.backup_stdin("app.archive", &stream, &[]);
    let local = open(workspace.repo.to_str().unwrap());
    for file in crate::support::files_below(&workspace.repo) {
        let relative = file
            .strip_prefix(&workspace.repo)
            .unwrap()
            .to_str()
            .unwrap();
        gcs_json_upload(&endpoint, &format!("{prefix}/{relative}"), &file);
    }

    // The backend's reads: list with sizes, get, ranged get, head.
    let gcs = open(&url);
    for kind in ["data", "index", "snapshots", "keys"] {
        let mut on_gcs: Vec<(String, u64)> = gcs
            .list(kind)
            .unwrap()
            .into_iter()
            .map(|info| (info.name, info.size))
            .collect();
        let mut here: Vec<(String, u64)> = local
            .list(kind)
            .unwrap()
            .into_iter()
            .map(|info| (info.name, info.size))
            .collect();
        on_gcs.sort();
        here.sort();
        assert_eq!(on_gcs, here, "{kind}");
    }
    let pack = local
        .list("data")
        .unwrap()
        .into_iter()
        .max_by_key(|info| info.size)
        .unwrap();
    let whole = local.get(&pack.name).unwrap();
    assert_eq!(gcs.get(&pack.name).unwrap(), whole);
    assert_eq!(
        gcs.get_range(&pack.name, 1000..5000).unwrap(),
        whole.slice(1000..5000)
    );
    assert_eq!(gcs.head(&pack.name).unwrap(), Some(pack.size));
    assert_eq!(gcs.head("data/00/absent").unwrap(), None);
    assert!(matches!(
        gcs.get("data/00/absent"),
        Err(BackendError::NotFound { .. })
    ));

    // The CLI reads everything from GCS.
    let repo = ["--repo", url.as_str()];
    let run = |args: &[&str]| {
        let args: Vec<&str> = repo.iter().chain(args).copied().collect();
        workspace.cairn(&args)
    };
    assert_eq!(
        run(&["snapshots", "--json"]).ok().json_lines(),
        workspace.cairn(&["snapshots", "--json"]).ok().json_lines()
    );
    let target = workspace.path("restored");
    let spec = format!("latest:{}", source.display());
    run(&[
        "restore",
        &spec,
        "--path",
        source.to_str().unwrap(),
        "--target",
        target.to_str().unwrap(),
    ])
    .ok();
    assert_same_tree(&source, &target);
    assert!(run(&["dump", "latest", "app.archive"]).ok().stdout == stream);
    run(&["check", "--read-data"]).ok();

    // Deleting works (prune and forget rely on it).
    gcs.delete(&pack.name).unwrap();
    assert_eq!(gcs.head(&pack.name).unwrap(), None);

    // Writing does not, and says so in one line instead of retrying forever or panicking.
    run(&["backup", source.to_str().unwrap(), "-o", "retries=0"])
        .failed()
        .stderr_contains("put ");
}

#[test]
fn cli_round_trip_on_local_file_url() {
    let workspace = Workspace::new();
    let url = format!("file://{}", workspace.path("file-url-repo").display());
    std::fs::create_dir_all(workspace.path("file-url-repo")).unwrap();
    cli_round_trip(&workspace, &url);
}

/// Against a server that checks signatures (opt-in: `CAIRN_TEST_SIGNED_S3=1 tests/run-all.sh`),
/// wrong credentials fail at once with "access denied" and exit 1, without a retry loop; the
/// right ones work.
#[test]
fn wrong_credentials_give_a_clear_access_denied() {
    let Ok(endpoint) = std::env::var("CAIRN_TEST_SIGNED_S3_ENDPOINT") else {
        eprintln!("skipping: opt in with CAIRN_TEST_SIGNED_S3=1 tests/run-all.sh");
        return;
    };
    let workspace = Workspace::new();
    let url = "s3://cairn-signed/repo";
    let with_key = |secret: &str, args: &[&str]| {
        let mut all = vec![
            "--repo",
            url,
            "-o",
            "access_key_id=cairn-signed",
            "-o",
            "region=us-east-1",
            "-o",
            "allow_http=true",
        ];
        let endpoint_option = format!("endpoint={endpoint}");
        let secret_option = format!("secret_access_key={secret}");
        all.extend_from_slice(&["-o", &endpoint_option, "-o", &secret_option]);
        all.extend_from_slice(args);
        let started = std::time::Instant::now();
        let run = workspace.cairn(&all);
        (run, started.elapsed())
    };
    let (denied, elapsed) = with_key("wrong-secret", &["init", "--kdf-memory-mib", "1"]);
    let denied = denied.code(1).stderr_contains("access denied");
    assert!(
        elapsed < std::time::Duration::from_secs(10),
        "no retry loop on a refusal: took {elapsed:?}"
    );
    assert!(
        !denied.stderr.contains("object not found"),
        "{}",
        denied.stderr
    );
    let (created, _) = with_key("cairn-signed-secret", &["init", "--kdf-memory-mib", "1"]);
    created.ok();
    let (listed, _) = with_key("cairn-signed-secret", &["snapshots"]);
    listed.ok();
}
