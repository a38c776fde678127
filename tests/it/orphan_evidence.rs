//! A backup lists `data/` to adopt the packs an unfinished run left unindexed only when the
//! sessions listing names a session it has not settled (FORMAT.md section 14, backup step 1):
//! an unchanged re-backup after clean runs sends no such listing, and a backup killed mid-upload
//! (here, or by a client with another cache) is adopted by the next backup however many clean
//! runs came before it.

use std::path::Path;

use crate::cli_e2e::kill_backup_mid_upload;
use crate::support::{TreeBuilder, Workspace, json_u64, random_bytes};

const MIB: usize = 1024 * 1024;

/// LIST requests a backup summary reports.
fn lists(summary: &serde_json::Value) -> u64 {
    summary["requests"]["list"]
        .as_u64()
        .unwrap_or_else(|| panic!("no requests.list in {summary}"))
}

/// A workspace with 1 MiB packs, a small source backed up cleanly once, and an 8 MiB source.
fn workspace_after_a_clean_run() -> (Workspace, std::path::PathBuf, std::path::PathBuf) {
    let workspace = Workspace::initialized_with(&["--pack-size-mib", "1"]);
    let small = workspace.path("small");
    TreeBuilder::new(&small).file("a.txt", b"kept small\n");
    let big = workspace.path("big");
    let tree = TreeBuilder::new(&big);
    for index in 0..4 {
        tree.file(
            &format!("file-{index}.bin"),
            &random_bytes(300 + index, 2 * MIB),
        );
    }
    workspace.backup(&[&small]);
    (workspace, small, big)
}

#[test]
fn an_unchanged_backup_after_clean_runs_does_not_list_the_packs() {
    let (workspace, small, _) = workspace_after_a_clean_run();
    let warm = workspace.backup(&[&small]);
    assert_eq!(json_u64(&warm, "recovered_packs"), 0);
    // The same backup with an empty cache settles nothing yet, so it lists data/: one LIST more.
    let fresh_cache = workspace.path("fresh-cache");
    let cold = workspace
        .cairn_env(
            &["backup", "--json", &small.to_string_lossy()],
            &[("CAIRN_CACHE_DIR", &fresh_cache)],
        )
        .ok()
        .summary();
    assert_eq!(lists(&cold), lists(&warm) + 1, "cold {cold}\nwarm {warm}");
    // The warm cache has not seen the cold run's session settle: it scans once, then settles it.
    let after_foreign = workspace.backup(&[&small]);
    assert_eq!(lists(&after_foreign), lists(&warm) + 1, "{after_foreign}");
    let again = workspace.backup(&[&small]);
    assert_eq!(lists(&again), lists(&warm), "{again}");
}

/// The backup after a killed one adopts its packs, whichever cache the killed run had, and the
/// one after that lists no packs again.
fn killed_run_is_adopted_after_a_clean_run(killed_with_other_cache: bool) {
    let (workspace, _, big) = workspace_after_a_clean_run();
    let other_cache = workspace.path("other-cache");
    let env: Vec<(&str, &Path)> = if killed_with_other_cache {
        vec![("CAIRN_CACHE_DIR", &other_cache)]
    } else {
        Vec::new()
    };
    let source_size = (8 * MIB) as u64;
    kill_backup_mid_upload(&workspace, &env, &big, source_size / 3);

    let resumed = workspace.backup(&[&big]);
    assert!(json_u64(&resumed, "recovered_packs") > 0, "{resumed}");
    let added = json_u64(&resumed, "bytes_added");
    assert!(
        added < source_size * 3 / 4,
        "the resumed backup added {added} of {source_size} bytes"
    );
    let unchanged = workspace.backup(&[&big]);
    assert_eq!(json_u64(&unchanged, "recovered_packs"), 0);
    assert_eq!(
        lists(&resumed),
        lists(&unchanged) + 1,
        "{resumed}\n{unchanged}"
    );
    workspace.cairn(&["check"]).ok();
    let dumped = workspace
        .cairn(&["dump", "latest", &big.join("file-1.bin").to_string_lossy()])
        .ok();
    assert!(
        dumped.stdout == random_bytes(301, 2 * MIB),
        "file-1.bin differs"
    );
}

#[test]
fn a_backup_killed_here_after_a_clean_run_is_adopted_by_the_next() {
    killed_run_is_adopted_after_a_clean_run(false);
}

#[test]
fn a_backup_killed_by_another_client_is_adopted_by_the_next_here() {
    killed_run_is_adopted_after_a_clean_run(true);
}
