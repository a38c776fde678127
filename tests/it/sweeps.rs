//! `cairn check` data levels end to end: slices `K/M` partition the packs, the rotating sweep
//! covers the repository in DAYS runs and then starts again with the oldest, and a flipped byte is
//! found by the slice and by the rotation that read its pack, naming pack, snapshot and file.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use cairn_store::Id;
use cairn_store::index::cache::IndexCache;
use cairn_store::sweep::PackVerification;

use crate::support::{
    TreeBuilder, Workspace, files_below, flip_byte, json_u64, object_id, open_local_repository,
    random_bytes,
};

/// A repository of about a dozen 1 MiB packs holding one snapshot of `source`.
fn many_packs() -> (Workspace, PathBuf) {
    let workspace = Workspace::initialized_with(&["--pack-size-mib", "1"]);
    let source = workspace.path("source");
    let tree = TreeBuilder::new(&source);
    for file in 0..6u64 {
        tree.file(
            &format!("dir{}/file{file}.bin", file % 2),
            &random_bytes(700 + file, 1_700_000),
        );
    }
    tree.file("small.txt", b"small\n");
    workspace.backup(&[&source]);
    (workspace, source)
}

/// Pack name (hex id) → size in bytes, from the repository directory.
fn packs_on_disk(repo: &Path) -> BTreeMap<String, u64> {
    files_below(&repo.join("data"))
        .iter()
        .map(|path| {
            (
                object_id(path),
                std::fs::metadata(path).expect("pack metadata").len(),
            )
        })
        .collect()
}

/// The slice (1-based) of `of` that the pack named `hex` belongs to, computed as the help text
/// tells a user to: its first 16 hex digits as a number, modulo `of`, plus one.
fn slice_of_name(hex: &str, of: u64) -> u64 {
    u64::from_str_radix(&hex[..16], 16).expect("hex") % of + 1
}

/// What the local cache below `cache_dir` remembers of verifications (the cache file is closed
/// again before returning, so the next `cairn` run can open it).
fn remembered_in(cache_dir: &Path) -> HashMap<Id, PackVerification> {
    let file = files_below(cache_dir)
        .into_iter()
        .find(|path| path.file_name().is_some_and(|name| name == "index.redb"))
        .expect("a cache file");
    let cache = IndexCache::open(&file).expect("open cache");
    cache.pack_verifications().expect("read verifications")
}

/// What the workspace's local cache remembers of verifications.
fn remembered(workspace: &Workspace) -> HashMap<Id, PackVerification> {
    remembered_in(&workspace.cache)
}

/// The object name `data/xx/<hex>` of the pack holding the second chunk of the file at `victim`,
/// after flipping a byte in the middle of that chunk.
fn damage_a_chunk_of(workspace: &Workspace, victim: &Path) -> String {
    let repository = open_local_repository(&workspace.repo);
    let (_, snapshot) = repository.resolve_snapshot("latest").expect("snapshot");
    let node = repository
        .find_node(&snapshot.root, &victim.to_string_lossy())
        .expect("find")
        .expect("victim in snapshot");
    let cairn_store::format::tree::NodeKind::File { chunks, .. } = node.kind else {
        panic!("victim is not a file");
    };
    let location = repository
        .locate_blob(&chunks[chunks.len() / 2])
        .expect("cache")
        .expect("indexed");
    let hex = location.pack_id.to_hex();
    flip_byte(
        &workspace.repo.join("data").join(&hex[..2]).join(&hex),
        i64::from(location.entry.offset) + i64::from(location.entry.length) / 2,
    );
    hex
}

/// `check --read-data-subset K/M` for K = 1..M reads every pack exactly once: each run reads
/// the packs its slice holds by name, and the runs add up to the pack count and bytes.
#[test]
fn slices_read_every_pack_exactly_once() {
    let (workspace, _) = many_packs();
    let on_disk = packs_on_disk(&workspace.repo);
    assert!(on_disk.len() >= 8, "want many packs, got {}", on_disk.len());
    for of in [1u64, 3, 5] {
        let mut packs_read = 0;
        let mut bytes_read = 0;
        for part in 1..=of {
            let summary = workspace
                .cairn(&[
                    "check",
                    "--json",
                    "--read-data-subset",
                    &format!("{part}/{of}"),
                ])
                .ok()
                .summary();
            assert_eq!(summary["level"], "read-data-subset");
            assert_eq!(summary["level_parameter"], format!("{part}/{of}"));
            assert_eq!(json_u64(&summary, "packs"), on_disk.len() as u64);
            let expected: Vec<u64> = on_disk
                .iter()
                .filter(|(hex, _)| slice_of_name(hex, of) == part)
                .map(|(_, size)| *size)
                .collect();
            assert_eq!(
                json_u64(&summary, "packs_read"),
                expected.len() as u64,
                "slice {part}/{of}"
            );
            assert_eq!(
                json_u64(&summary, "bytes_read"),
                expected.iter().sum::<u64>()
            );
            packs_read += json_u64(&summary, "packs_read");
            bytes_read += json_u64(&summary, "bytes_read");
        }
        assert_eq!(packs_read, on_disk.len() as u64, "{of} slices");
        assert_eq!(bytes_read, on_disk.values().sum::<u64>(), "{of} slices");
    }
    // A percentage reads at least its share; a bad slice is refused before opening anything.
    let summary = workspace
        .cairn(&["check", "--json", "--read-data-subset", "25%"])
        .ok()
        .summary();
    let quarter = on_disk.len().div_ceil(4) as u64;
    assert_eq!(json_u64(&summary, "packs_read"), quarter);
    let summary = workspace
        .cairn(&["check", "--json", "--read-data-subset", "7%"])
        .ok()
        .summary();
    assert_eq!(summary["level_parameter"], "7%");
    assert!(json_u64(&summary, "packs_read") >= 1);
    workspace
        .cairn(&["check", "--read-data-subset", "4/3"])
        .code(2);
    workspace
        .cairn(&["check", "--read-data", "--read-data-rotate", "3"])
        .code(2);
}

/// `--read-data-rotate 3` run three times reads every pack, reports the whole repository
/// verified within 3 days, and the fourth run starts again with the packs verified longest ago.
#[test]
fn rotation_covers_everything_in_days_runs_then_rereads_the_oldest() {
    let (workspace, _) = many_packs();
    let on_disk = packs_on_disk(&workspace.repo);
    let total: u64 = on_disk.values().sum();
    let mut read_so_far = BTreeSet::new();
    for run in 1..=3u64 {
        let summary = workspace
            .cairn(&["check", "--json", "--read-data-rotate", "3"])
            .ok()
            .summary();
        assert_eq!(summary["level"], "read-data-rotate");
        let bytes_read = json_u64(&summary, "bytes_read");
        assert!(
            bytes_read >= total.div_ceil(3),
            "run {run} read {bytes_read} of {total} bytes"
        );
        let verified = remembered(&workspace);
        let this_run: BTreeSet<Id> = verified
            .iter()
            .filter(|(_, verification)| verification.sweep == run)
            .map(|(pack, _)| *pack)
            .collect();
        assert_eq!(this_run.len() as u64, json_u64(&summary, "packs_read"));
        if read_so_far.len() < on_disk.len() {
            // Until everything is read once, no run re-reads a pack.
            let fresh = this_run.difference(&read_so_far).count();
            assert!(fresh > 0, "run {run} read nothing new");
        }
        read_so_far.extend(this_run);
        let within = &summary["verified_within_days"];
        assert_eq!(within["days"], 3);
        assert_eq!(json_u64(within, "bytes_total"), total);
        if run == 3 {
            assert_eq!(json_u64(within, "packs"), on_disk.len() as u64);
            assert_eq!(within["fraction"], 1.0);
        }
    }
    let names: BTreeSet<String> = read_so_far.iter().map(Id::to_hex).collect();
    assert_eq!(
        names,
        on_disk.keys().cloned().collect::<BTreeSet<_>>(),
        "three runs of a 3-day rotation read every pack"
    );

    let before = remembered(&workspace);
    workspace
        .cairn(&["check", "--json", "--read-data-rotate", "3"])
        .ok();
    let after = remembered(&workspace);
    let fourth: BTreeSet<Id> = after
        .iter()
        .filter(|(_, verification)| verification.sweep == 4)
        .map(|(pack, _)| *pack)
        .collect();
    assert!(!fourth.is_empty());
    let key = |pack: &Id| (before[pack].sweep, *pack);
    let oldest = before.keys().map(key).min().expect("packs");
    assert!(
        fourth.iter().map(key).any(|read| read == oldest),
        "the fourth run did not re-read the pack verified longest ago"
    );
    let newest_read = fourth.iter().map(key).max().expect("read something");
    for pack in before.keys().filter(|pack| !fourth.contains(pack)) {
        assert!(
            key(pack) > newest_read,
            "the fourth run skipped a pack verified earlier than one it read"
        );
    }
}

/// A flipped byte in one pack: the slice holding the pack fails naming pack, snapshot and file,
/// the other slices pass, and the rotation finds it within DAYS runs and keeps failing on the
/// next run (a damaged pack is never recorded as verified).
#[test]
fn a_flipped_byte_is_found_by_its_slice_and_by_the_rotation() {
    let (workspace, source) = many_packs();
    let victim = source.join("dir1/file3.bin");
    let pack = damage_a_chunk_of(&workspace, &victim);
    let snapshot_id = workspace.snapshots()[0]["id"]
        .as_str()
        .expect("snapshot id")
        .to_owned();
    let assert_names_everything = |run: &crate::support::Run, how: &str| {
        // check names objects by their short id (the first 8 hex digits).
        for needle in [&pack[..8], &snapshot_id[..8], &victim.to_string_lossy()] {
            assert!(
                run.stderr.contains(needle),
                "{how}: check did not name {needle}:\n{}",
                run.stderr
            );
        }
    };

    // The structure alone cannot see it.
    workspace.cairn(&["check"]).ok();
    let slice = slice_of_name(&pack, 3);
    for part in 1..=3 {
        let run = workspace.cairn(&["check", "--read-data-subset", &format!("{part}/3")]);
        if part == slice {
            assert_names_everything(&run.failed(), "its slice");
        } else {
            run.ok();
        }
    }

    // The rotation, from a fresh history (the slices above were remembered in the other cache).
    let fresh_cache = workspace.path("fresh-cache");
    let mut found = false;
    for run in 1..=3 {
        let outcome = workspace.cairn_env(
            &["check", "--read-data-rotate", "3"],
            &[("CAIRN_CACHE_DIR", &fresh_cache)],
        );
        if outcome.code == Some(0) {
            assert!(!found, "run {run} passed after the damage was found");
        } else {
            assert_names_everything(&outcome.failed(), &format!("rotation run {run}"));
            found = true;
        }
    }
    assert!(found, "three runs of a 3-day rotation missed the damage");
    assert!(
        remembered_in(&fresh_cache)
            .keys()
            .all(|verified| verified.to_hex() != pack),
        "the damaged pack was recorded as verified"
    );
}
