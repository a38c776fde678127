//! Crash safety of `cairn backup` (FORMAT.md section 14): the real binary killed with SIGKILL at
//! seeded random points, on the local directory and on the S3 server. After every kill `check`
//! passes; at the end a backup uploads only what the killed runs had not stored, and its snapshot
//! restores byte for byte.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::backends::remote_url;
use crate::support::{
    CHEAP_INIT, Ending, Prng, Repo, TreeBuilder, Workspace, assert_same_tree, compressible_text,
    elapsed_ms, json_u64, kill_after, random_bytes,
};

/// Writes the source of trial `trial`: a big random file, a compressible log and many small
/// files shared by every trial (about 1.4 MB, written once, stored by the first trials that get
/// far enough, killed or not), plus a random file and a few small files of the trial's own, so
/// that every trial has data of its own to upload. Sizes suit a debug build, where sealing new
/// data costs about half a second per MB.
fn write_source(root: &Path, trial: u64) {
    let tree = TreeBuilder::new(root);
    if !tree.path("big.bin").exists() {
        // Above the small-file limit (1 MiB) and the pack size: read on its own, fills a pack.
        tree.file("big.bin", &random_bytes(0xb16, 1_100_000));
        tree.file("app.log", &compressible_text(0x106, 200_000));
        for index in 0..150 {
            tree.file(
                &format!("etc/conf-{index:03}.env"),
                format!("NAME=service-{index}\nPORT={}\n", 8000 + index).as_bytes(),
            );
        }
    }
    tree.file("nightly.bin", &random_bytes(0x7_0000 + trial, 250_000));
    for index in 0..5 {
        tree.file(
            &format!("etc/trial-{index}.env"),
            format!("TRIAL={trial}\nINDEX={index}\n").as_bytes(),
        );
    }
}

/// Runs `backup --force --json source` to completion and returns its summary.
fn full_backup(repo: &Repo<'_>, source: &Path) -> serde_json::Value {
    repo.cairn(&["backup", "--force", "--json", source.to_str().unwrap()])
        .ok()
        .summary()
}

/// Kills `trials` backups at random points, the delays drawn alternately from the two spans;
/// returns (trials killed mid-run, packs recovered by
/// the runs that completed).
fn kill_backups(repo: &Repo<'_>, source: &Path, trials: u64, spans_ms: [u64; 2]) -> (u64, u64) {
    let mut prng = Prng::new(0xdead_0009);
    let mut killed = 0;
    let mut recovered = 0;
    for trial in 0..trials {
        write_source(source, trial);
        let child = repo.spawn(&["backup", "--force", "--json", source.to_str().unwrap()]);
        let span_ms = spans_ms[usize::from(trial % 2 == 1)];
        let delay = Duration::from_millis(prng.next_u64() % span_ms);
        match kill_after(child, delay) {
            Ending::Killed => killed += 1,
            Ending::Completed(stdout) => {
                let summary: serde_json::Value = String::from_utf8_lossy(&stdout)
                    .lines()
                    .filter_map(|line| serde_json::from_str(line).ok())
                    .find(|line: &serde_json::Value| line["message_type"] == "summary")
                    .expect("a completed backup prints its summary");
                recovered += json_u64(&summary, "recovered_packs");
            }
        }
        repo.cairn(&["check"]).ok();
    }
    (killed, recovered)
}

/// The test proper, on `repo` (the kills) and `fresh` (an empty repository for the reference
/// backup).
fn backup_killed_at_random_points(repo: &Repo<'_>, fresh: &Repo<'_>, trials: u64) {
    let mut init = CHEAP_INIT.to_vec();
    // Small packs, so that a run uploads several before it is killed.
    init.extend_from_slice(&["--pack-size-mib", "1"]);
    repo.cairn(&init).ok();
    fresh.cairn(&init).ok();
    let source = repo.workspace.path("source");
    // The reference: a full backup, into an empty repository, of the data the last trial and
    // the final backup see; then another there, after the trial's own files changed, which has
    // the shape of a trial once the shared data is stored. Kill delays alternate between two
    // spans: twice the full backup, so that early trials get far enough (killed after some
    // uploads, or not at all) to store the shared data, and the trial-shaped backup, so that
    // later kills land anywhere inside a trial.
    write_source(&source, trials - 1);
    let started = Instant::now();
    let reference = full_backup(fresh, &source);
    let full_ms = elapsed_ms(started, 50);
    write_source(&source, trials);
    let started = Instant::now();
    full_backup(fresh, &source);
    let trial_ms = elapsed_ms(started, 50);
    let (killed, recovered) = kill_backups(repo, &source, trials, [2 * full_ms, trial_ms]);

    let last = full_backup(repo, &source);
    repo.cairn(&["check", "--read-data"]).ok();
    let target = repo.workspace.path("restored");
    repo.cairn(&[
        "restore",
        &format!(
            "{}:{}",
            last["snapshot_id"].as_str().unwrap(),
            source.display()
        ),
        "--target",
        target.to_str().unwrap(),
    ])
    .ok();
    assert_same_tree(&source, &target);

    let (fresh_added, last_added) = (
        json_u64(&reference, "bytes_added"),
        json_u64(&last, "bytes_added"),
    );
    let (fresh_sent, last_sent) = (
        json_u64(&reference["requests"], "bytes_sent"),
        json_u64(&last["requests"], "bytes_sent"),
    );
    eprintln!(
        "backup kill test on {}: {killed} of {trials} backups killed mid-run (a full backup took \
         {full_ms} ms, one like a trial {trial_ms} ms); completed trials recovered {recovered} packs, the final backup {}; final \
         backup added {last_added} bytes ({last_sent} sent) against {fresh_added} ({fresh_sent} \
         sent) for a fresh backup of the same data",
        repo.location,
        json_u64(&last, "recovered_packs"),
    );
    assert!(
        killed >= trials / 4,
        "only {killed} of {trials} backups were killed mid-run"
    );
    // The shared data (four fifths) was stored by earlier runs, killed or not: at most the last
    // trial's own files are missing.
    assert!(
        last_added * 2 < fresh_added,
        "the final backup added {last_added} bytes, a fresh one {fresh_added}"
    );
    assert!(
        last_sent * 2 < fresh_sent,
        "the final backup sent {last_sent} bytes, a fresh one {fresh_sent}"
    );
}

/// Kill -9 of backup at 50 random points on the local directory.
#[test]
fn backup_killed_at_random_points_on_the_local_directory() {
    let workspace = Workspace::new();
    let fresh = Workspace::new();
    backup_killed_at_random_points(&Repo::local(&workspace), &Repo::local(&fresh), 50);
}

/// Kill -9 of backup at 30 random points on the S3 server.
#[test]
fn backup_killed_at_random_points_on_s3() {
    let (Some(location), Some(fresh_location)) = (
        remote_url("CAIRN_TEST_S3_URL", "backup-killed"),
        remote_url("CAIRN_TEST_S3_URL", "backup-killed-fresh"),
    ) else {
        return;
    };
    let workspace = Workspace::new();
    let fresh = Workspace::new();
    backup_killed_at_random_points(
        &Repo {
            workspace: &workspace,
            location,
        },
        &Repo {
            workspace: &fresh,
            location: fresh_location,
        },
        30,
    );
}
