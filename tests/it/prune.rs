//! Prune and the garbage-collection protocol (FORMAT.md section 21), end to end with the real
//! binary: concurrent backups beside a prune loop on the local directory and on the S3 server,
//! prunes killed at random points, the space actually freed, append-only refusals and the lease.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cairn_store::format::lifecycle::ProcessPlace;

use crate::backends::remote_url;
use crate::support::{
    CHEAP_INIT, Ending, Prng, Repo, Workspace, elapsed_ms, kill_after, random_bytes,
};

/// Sum of the sizes of every file below `path`.
fn tree_size(path: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(path).unwrap() {
        let entry = entry.unwrap();
        let metadata = entry.metadata().unwrap();
        total += if metadata.is_dir() {
            tree_size(&entry.path())
        } else {
            metadata.len()
        };
    }
    total
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.metadata().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn assert_same_tree(expected: &Path, actual: &Path) {
    let mut names: Vec<_> = std::fs::read_dir(expected)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    names.sort();
    let mut actual_names: Vec<_> = std::fs::read_dir(actual)
        .unwrap_or_else(|error| panic!("{}: {error}", actual.display()))
        .map(|entry| entry.unwrap().file_name())
        .collect();
    actual_names.sort();
    assert_eq!(names, actual_names, "{}", actual.display());
    for name in names {
        let (left, right) = (expected.join(&name), actual.join(&name));
        if left.is_dir() {
            assert_same_tree(&left, &right);
        } else {
            assert!(
                std::fs::read(&left).unwrap() == std::fs::read(&right).unwrap(),
                "{} differs from what was backed up",
                right.display()
            );
        }
    }
}

/// Writes one round of a worker's source: a file shared by every worker (cross-source dedup),
/// a file shared with the previous round (cross-night dedup), a new file, and small files.
fn write_source(source: &Path, worker: u64, round: u64) {
    std::fs::create_dir_all(source.join("etc")).unwrap();
    std::fs::write(source.join("shared.bin"), random_bytes(1, 600_000)).unwrap();
    std::fs::write(
        source.join("stable.bin"),
        random_bytes(100 + worker, 400_000),
    )
    .unwrap();
    std::fs::write(
        source.join("nightly.bin"),
        random_bytes(1000 + worker * 10 + round, 500_000),
    )
    .unwrap();
    for index in 0..20 {
        std::fs::write(
            source.join(format!("etc/conf{index}.env")),
            format!("WORKER={worker}\nROUND={round}\nINDEX={index}\n"),
        )
        .unwrap();
    }
}

/// Restores every snapshot and compares it with the copy of its source taken at backup time.
fn verify_every_snapshot(repo: &Repo<'_>, expected: &HashMap<(String, String), PathBuf>) {
    let snapshots = repo.cairn(&["snapshots", "--json"]).ok().json_lines();
    assert!(!snapshots.is_empty());
    for snapshot in &snapshots {
        let id = snapshot["id"].as_str().unwrap();
        let host = snapshot["host"].as_str().unwrap().to_owned();
        let tag = snapshot["tags"][0].as_str().unwrap().to_owned();
        let source = snapshot["paths"][0].as_str().unwrap();
        let target = repo.workspace.path(&format!("restored/{id}"));
        repo.cairn(&[
            "restore",
            &format!("{id}:{source}"),
            "--target",
            target.to_str().unwrap(),
        ])
        .ok();
        assert_same_tree(&expected[&(host, tag)], &target);
        std::fs::remove_dir_all(&target).unwrap();
    }
}

/// Four backup processes per round (different sources, overlapping data) while a loop forgets
/// and prunes; every snapshot left restores byte for byte and `check --read-data` passes.
fn concurrent_backups_beside_a_prune_loop(repo: &Repo<'_>) {
    const WORKERS: u64 = 4;
    const ROUNDS: u64 = 3;
    let mut init = CHEAP_INIT.to_vec();
    init.extend_from_slice(&["--pack-size-mib", "1"]);
    repo.cairn(&init).ok();
    let mut expected: HashMap<(String, String), PathBuf> = HashMap::new();
    let mut prunes = 0;
    let mut freed = 0;
    let mut rescued = 0;
    for round in 0..ROUNDS {
        let mut children = Vec::new();
        for worker in 0..WORKERS {
            let source = repo.workspace.path(&format!("source{worker}"));
            write_source(&source, worker, round);
            let copy = repo.workspace.path(&format!("expected/{worker}-{round}"));
            copy_tree(&source, &copy);
            expected.insert((format!("w{worker}"), format!("r{round}")), copy);
            let host = format!("w{worker}");
            let tag = format!("r{round}");
            children.push(repo.spawn(&[
                "backup",
                source.to_str().unwrap(),
                "--host",
                &host,
                "--tag",
                &tag,
                "--json",
            ]));
        }
        // Prune (with forget) until every backup of the round has ended.
        let deadline = Instant::now() + Duration::from_mins(5);
        let mut running = children.len();
        while running > 0 {
            assert!(Instant::now() < deadline, "backups did not finish");
            let run = repo.cairn(&["forget", "--keep-last", "1", "--prune", "--json"]);
            assert!(
                run.code == Some(0) || run.code == Some(11),
                "prune failed: {}",
                run.stderr
            );
            if run.code == Some(0) {
                prunes += 1;
                if let Some(line) = run
                    .json_lines()
                    .into_iter()
                    .find(|line| line["message_type"] == "prune")
                {
                    freed += line["bytes_freed"].as_u64().unwrap();
                }
            }
            running = 0;
            for child in &mut children {
                if child.try_wait().unwrap().is_none() {
                    running += 1;
                }
            }
        }
        for child in children {
            let output = child.wait_with_output().unwrap();
            assert!(
                output.status.success(),
                "a backup beside prune failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let summary: serde_json::Value = String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter_map(|line| serde_json::from_str(line).ok())
                .find(|line: &serde_json::Value| line["message_type"] == "summary")
                .expect("a backup summary");
            rescued += summary["blobs_rescued"].as_u64().unwrap_or(0);
        }
    }
    let freed_during = freed;
    // Once no backup runs, prune deletes everything condemned.
    for _ in 0..2 {
        let last = repo.cairn(&["prune", "--json"]).ok().json_lines();
        let last = last
            .iter()
            .find(|line| line["message_type"] == "prune")
            .unwrap();
        freed += last["bytes_freed"].as_u64().unwrap();
        assert!(
            last["blocking_sessions"].as_array().unwrap().is_empty(),
            "{last}"
        );
    }
    let last = repo.cairn(&["prune", "--json"]).ok().json_lines();
    let last = last
        .iter()
        .find(|line| line["message_type"] == "prune")
        .unwrap();
    assert_eq!(last["packs_pending"], 0, "{last}");
    eprintln!(
        "{}: {prunes} prunes beside {} backups freed {freed_during} bytes while backups ran, \
         {freed} in all; backups rescued {rescued} blobs",
        repo.location,
        WORKERS * ROUNDS
    );
    assert!(prunes >= 2, "the prune loop ran only {prunes} times");
    assert!(freed > 0, "prune never freed anything");
    let snapshots = repo.cairn(&["snapshots", "--json"]).ok().json_lines();
    assert!(
        snapshots.len() >= usize::try_from(WORKERS).unwrap(),
        "forget --keep-last 1 per host leaves one snapshot per worker: {}",
        snapshots.len()
    );
    verify_every_snapshot(repo, &expected);
    repo.cairn(&["check", "--read-data"]).ok();
}

#[test]
fn concurrent_backups_beside_a_prune_loop_on_the_local_directory() {
    let workspace = Workspace::new();
    let location = workspace.repo.to_string_lossy().into_owned();
    concurrent_backups_beside_a_prune_loop(&Repo {
        workspace: &workspace,
        location,
    });
}

#[test]
fn concurrent_backups_beside_a_prune_loop_on_s3() {
    if let Some(location) = remote_url("CAIRN_TEST_S3_URL", "prune-concurrent") {
        let workspace = Workspace::new();
        concurrent_backups_beside_a_prune_loop(&Repo {
            workspace: &workspace,
            location,
        });
    }
}

/// A repository with one kept snapshot ("keep") and garbage from forgotten ones.
fn add_garbage(repo: &Repo<'_>, seed: u64) {
    let source = repo.workspace.path("garbage");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("g.bin"), random_bytes(seed, 700_000)).unwrap();
    repo.cairn(&["backup", source.to_str().unwrap(), "--tag", "garbage"])
        .ok();
    repo.cairn(&[
        "forget",
        "--tag",
        "garbage",
        "--keep-tag",
        "keep",
        "--allow-empty-group",
    ])
    .ok();
}

/// Kill -9 of prune at random points, dozens of times: `check` passes after each, the kept
/// snapshot restores, and a final prune completes the job.
#[test]
fn prune_killed_at_random_points_never_loses_data() {
    let workspace = Workspace::new();
    let repo = Repo {
        location: workspace.repo.to_string_lossy().into_owned(),
        workspace: &workspace,
    };
    let kept = prune_killed_at_random_points(&repo, 50);
    let fresh = Workspace::new();
    let fresh_repo = Repo {
        location: fresh.repo.to_string_lossy().into_owned(),
        workspace: &fresh,
    };
    let mut init = CHEAP_INIT.to_vec();
    init.extend_from_slice(&["--pack-size-mib", "1"]);
    fresh_repo.cairn(&init).ok();
    fresh_repo
        .cairn(&["backup", kept.to_str().unwrap(), "--tag", "keep"])
        .ok();
    let (pruned, minimal) = (
        tree_size(&workspace.repo.join("data")),
        tree_size(&fresh.repo.join("data")),
    );
    assert!(
        pruned * 10 <= minimal * 11,
        "after killed prunes and a final one, data is {pruned} bytes against {minimal} fresh"
    );
}

#[test]
fn prune_killed_at_random_points_on_s3_never_loses_data() {
    if let Some(location) = remote_url("CAIRN_TEST_S3_URL", "prune-killed") {
        let workspace = Workspace::new();
        prune_killed_at_random_points(
            &Repo {
                workspace: &workspace,
                location,
            },
            15,
        );
    }
}

/// `trials` prunes killed with SIGKILL at seeded random points, each after new garbage; `check`
/// after every kill, the kept snapshot restored every 10 trials, and a final prune that leaves
/// nothing pending. Returns the kept source directory.
fn prune_killed_at_random_points(repo: &Repo<'_>, trials: u64) -> PathBuf {
    let workspace = repo.workspace;
    let mut init = CHEAP_INIT.to_vec();
    init.extend_from_slice(&["--pack-size-mib", "1"]);
    repo.cairn(&init).ok();
    let kept = workspace.path("kept");
    write_source(&kept, 9, 9);
    repo.cairn(&["backup", kept.to_str().unwrap(), "--tag", "keep"])
        .ok();
    // How long a whole prune takes here, so the kills land anywhere inside one.
    add_garbage(repo, 9_999);
    let started = Instant::now();
    repo.cairn(&["prune", "--max-unused", "0%"]).ok();
    let full_ms = elapsed_ms(started, 20);
    let mut prng = Prng::new(0x5eed);
    let mut killed = 0;
    for trial in 0..trials {
        add_garbage(repo, 10_000 + trial);
        let child = repo.spawn(&["prune", "--max-unused", "0%"]);
        let delay = Duration::from_millis(prng.next_u64() % (full_ms * 3 / 4));
        if matches!(kill_after(child, delay), Ending::Killed) {
            killed += 1;
        }
        repo.cairn(&["check"]).ok();
        if trial % 10 == 9 {
            let target = workspace.path(&format!("restored-{trial}"));
            repo.cairn(&[
                "restore",
                &format!("latest:{}", kept.display()),
                "--target",
                target.to_str().unwrap(),
            ])
            .ok();
            assert_same_tree(&kept, &target);
        }
    }
    eprintln!(
        "prune kill test on {}: {killed} of {trials} prunes killed (a full prune took {full_ms} ms)",
        repo.location
    );
    assert!(
        killed >= trials / 4,
        "only {killed} of {trials} prunes were killed mid-run"
    );
    repo.cairn(&["prune", "--max-unused", "0%"]).ok();
    let report = repo
        .cairn(&["prune", "--max-unused", "0%", "--json"])
        .ok()
        .json_lines();
    let report = report
        .iter()
        .find(|line| line["message_type"] == "prune")
        .unwrap();
    assert_eq!(report["packs_pending"], 0, "{report}");
    assert_eq!(report["packs_condemned"], 0, "{report}");
    repo.cairn(&["check", "--read-data"]).ok();
    kept
}

/// After forgetting all but the last snapshot and pruning, the repository is within 10% of a
/// fresh repository holding only that snapshot.
#[test]
fn forget_all_but_last_and_prune_is_as_small_as_a_fresh_repository() {
    let workspace = Workspace::initialized();
    let source = workspace.path("source");
    for night in 0..4 {
        write_source(&source, 0, night);
        std::fs::write(
            source.join("dump.bin"),
            random_bytes(500 + night, 2_000_000),
        )
        .unwrap();
        workspace.backup(&[&source]);
    }
    let before = tree_size(&workspace.repo);
    let run = workspace
        .cairn(&["forget", "--keep-last", "1", "--prune", "--json"])
        .ok();
    let prune = run
        .json_lines()
        .into_iter()
        .find(|line| line["message_type"] == "prune")
        .unwrap();
    assert!(prune["bytes_freed"].as_u64().unwrap() > 0, "{prune}");
    let after = tree_size(&workspace.repo);
    let fresh = Workspace::initialized();
    fresh.backup(&[&source]);
    let minimal = tree_size(&fresh.repo);
    assert!(
        after * 10 <= minimal * 11,
        "pruned {after} bytes (from {before}) against {minimal} for a fresh repository"
    );
    workspace.cairn(&["check", "--read-data"]).ok();
    let target = workspace.path("restored");
    workspace
        .cairn(&[
            "restore",
            &format!("latest:{}", source.display()),
            "--target",
            target.to_str().unwrap(),
        ])
        .ok();
    assert_same_tree(&source, &target);
}

/// Append-only clients and repositories refuse everything that deletes (exit 13), and nothing
/// is deleted; backups still work.
#[test]
fn append_only_refuses_deletion() {
    let workspace = Workspace::initialized();
    let source = workspace.path("source");
    write_source(&source, 0, 0);
    workspace.backup(&[&source]);
    write_source(&source, 0, 1);
    workspace.backup(&[&source]);
    let before = tree_size(&workspace.repo);
    for args in [
        &["--append-only", "prune"][..],
        &["--append-only", "forget", "--keep-last", "1"][..],
    ] {
        workspace
            .cairn(args)
            .code(13)
            .stderr_contains("append-only");
    }
    assert_eq!(tree_size(&workspace.repo), before);

    let marked = Workspace::initialized_with(&["--append-only"]);
    write_source(&source, 0, 2);
    marked.backup(&[&source]);
    marked.backup(&[&source]);
    marked
        .cairn(&["prune"])
        .code(13)
        .stderr_contains("repository is append-only");
    marked
        .cairn(&["forget", "--keep-last", "1"])
        .code(13)
        .stderr_contains("append-only");
    assert_eq!(marked.snapshots().len(), 2);
}

/// A live prune lease makes a second prune exit 11 without changing anything; a lease left by
/// a killed prune on this host is taken over.
#[test]
fn prune_lease_is_exclusive_and_a_dead_holders_lease_is_taken_over() {
    let workspace = Workspace::initialized();
    let source = workspace.path("source");
    write_source(&source, 0, 0);
    workspace.backup(&[&source]);
    let repository = workspace.open_repository();
    // Held by this (live) test process.
    let lease = repository
        .acquire_prune_lease(Duration::from_mins(10), &|_| false)
        .expect("lease");
    workspace
        .cairn(&["prune"])
        .code(11)
        .stderr_contains("another prune is running");
    repository.release_prune_lease(&lease).unwrap();
    workspace.cairn(&["prune"]).ok();

    // A lease whose process is gone: a prune killed with SIGKILL.
    let mut child = Command::new(crate::support::cairn_binary())
        .arg("--version")
        .spawn()
        .unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    let stale = cairn_store::format::lifecycle::PruneLease {
        token: [7; 16],
        host: cairn_store::lifecycle::this_host(),
        place: ProcessPlace {
            pid: dead_pid,
            ..cairn_store::repo::place::this_process()
        },
        started_unix: 0,
        ttl_seconds: 3600,
    };
    repository
        .backend()
        .put(
            cairn_store::format::lifecycle::LEASE_NAME,
            stale
                .encode(
                    &repository.keys().data_key,
                    cairn_store::seal::random_nonce(),
                )
                .into(),
            cairn_store::backend::PutMode::Create,
        )
        .unwrap();
    workspace.cairn(&["prune"]).ok();
}

/// A backup session still running (here: registered from "another machine") keeps what a prune
/// condemns from being deleted; once it is declared ended, the next prune deletes it.
#[test]
fn a_running_session_defers_deletion_until_it_ends() {
    let workspace = Workspace::initialized();
    let repo = Repo {
        location: workspace.repo.to_string_lossy().into_owned(),
        workspace: &workspace,
    };
    let kept = workspace.path("kept");
    write_source(&kept, 1, 1);
    repo.cairn(&["backup", kept.to_str().unwrap(), "--tag", "keep"])
        .ok();
    let repository = workspace.open_repository();
    let (session, _) = repository.begin_session("elsewhere").expect("session");
    add_garbage(&repo, 77);
    let prune_json = |args: &[&str]| {
        let mut all = vec!["prune", "--json"];
        all.extend_from_slice(args);
        repo.cairn(&all)
            .ok()
            .json_lines()
            .into_iter()
            .find(|line| line["message_type"] == "prune")
            .unwrap()
    };
    let deferred = prune_json(&[]);
    assert_eq!(deferred["packs_deleted"], 0, "{deferred}");
    assert!(
        deferred["packs_pending"].as_u64().unwrap() > 0,
        "{deferred}"
    );
    assert_eq!(
        deferred["blocking_sessions"][0]["session"],
        session.id.to_hex(),
        "{deferred}"
    );
    repo.cairn(&["check", "--read-data"]).ok();
    let still = prune_json(&[]);
    assert_eq!(still["packs_deleted"], 0, "{still}");
    let released = prune_json(&["--end-session", &session.id.to_hex()]);
    assert!(
        released["packs_deleted"].as_u64().unwrap() > 0,
        "{released}"
    );
    assert_eq!(released["packs_pending"], 0, "{released}");
    repo.cairn(&["check", "--read-data"]).ok();
    drop(session);
}
