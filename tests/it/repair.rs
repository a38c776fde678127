//! `cairn repair index`, `cairn repair snapshots` and salvage restores, with the real binary on
//! local-directory repositories: a lost index, a lost pack and a bit-flipped blob.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use cairn_store::format::tree::NodeKind;
use cairn_store::{Id, Repository};

use crate::support::{
    Workspace, compressible_text, files_below, flip_byte, json_u64, listing, objects,
    open_local_repository, random_bytes, restored_path,
};

fn text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// A repository with 1 MiB packs and two snapshots of a tree of a dozen files (several data
/// packs, one tree pack).
fn fixture() -> (Workspace, PathBuf) {
    let workspace = Workspace::initialized_with(&["--pack-size-mib", "1"]);
    let source = workspace.path("source");
    for index in 0..10u64 {
        let name = source.join(format!("dir{}/file{index:02}.bin", index % 3));
        fs::create_dir_all(name.parent().expect("parent")).expect("mkdir");
        fs::write(&name, random_bytes(100 + index, 250_000)).expect("write");
    }
    fs::write(source.join("notes.txt"), compressible_text(7, 50_000)).expect("write");
    workspace.backup(&[&source]);
    fs::write(source.join("later.bin"), random_bytes(99, 120_000)).expect("write");
    workspace.backup(&[&source]);
    (workspace, source)
}

/// Every file of the tree `root` (paths from the snapshot's root) with its chunks.
fn file_chunks(repository: &Repository, root: &Id, prefix: &str) -> Vec<(String, Vec<Id>)> {
    let mut out = Vec::new();
    for node in repository.load_tree(root).expect("tree").nodes {
        let path = format!("{prefix}/{}", String::from_utf8_lossy(&node.name));
        match node.kind {
            NodeKind::File { chunks, .. } => out.push((path, chunks)),
            NodeKind::Directory { subtree } => {
                out.extend(file_chunks(repository, &subtree, &path));
            }
            NodeKind::Symlink { .. } | NodeKind::Fifo | NodeKind::Device { .. } => {}
        }
    }
    out
}

/// The pack holding the first chunk of `victim` in the latest snapshot.
fn pack_of(workspace: &Workspace, victim: &Path) -> Id {
    let repository = open_local_repository(&workspace.repo);
    let (_, snapshot) = repository.resolve_snapshot("latest").expect("latest");
    let node = repository
        .find_node(&snapshot.root, &text(victim))
        .expect("find")
        .expect("victim in snapshot");
    let NodeKind::File { chunks, .. } = node.kind else {
        panic!("victim is not a file")
    };
    repository
        .locate_blob(&chunks[0])
        .expect("cache")
        .expect("indexed")
        .pack_id
}

/// Paths of the latest snapshot with at least one chunk in `pack`, and all its file paths.
fn files_needing(workspace: &Workspace, pack: &Id) -> (BTreeSet<String>, BTreeSet<String>) {
    let repository = open_local_repository(&workspace.repo);
    let (_, snapshot) = repository.resolve_snapshot("latest").expect("latest");
    let mut lost = BTreeSet::new();
    let mut all = BTreeSet::new();
    for (path, chunks) in file_chunks(&repository, &snapshot.root, "") {
        let needs = chunks.iter().any(|chunk| {
            repository
                .locate_blob(chunk)
                .expect("cache")
                .is_some_and(|location| location.pack_id == *pack)
        });
        if needs {
            lost.insert(path.clone());
        }
        all.insert(path);
    }
    (lost, all)
}

fn pack_path(repo: &Path, pack: &Id) -> PathBuf {
    let hex = pack.to_hex();
    repo.join("data").join(&hex[..2]).join(hex)
}

/// Asserts that `target` holds exactly the files of `source` except `lost` (absolute source
/// paths), byte for byte, and no partial file.
#[track_caller]
fn assert_restored_except(source: &Path, target: &Path, lost: &BTreeSet<String>) {
    let mut expected: BTreeMap<PathBuf, (u64, String)> = listing(source);
    for path in lost {
        let relative = Path::new(path).strip_prefix(source).expect("below source");
        assert!(expected.remove(relative).is_some(), "{path} not in source");
    }
    let restored_root = restored_path(target, source);
    let restored = listing(&restored_root);
    let partial: Vec<&PathBuf> = restored
        .keys()
        .filter(|path| path.to_string_lossy().contains("cairn-partial"))
        .collect();
    assert!(partial.is_empty(), "partial files left behind: {partial:?}");
    assert_eq!(restored, expected, "restored files differ from the source");
}

/// Deleting every index object makes restore fail; `repair index` rebuilds the index from the
/// packs' trailers, after which `check --read-data` passes and restore is byte-identical. A
/// second repair replaces the index objects it wrote (superseded ones removed); append-only
/// keeps the old ones beside the new.
#[test]
fn repair_index_rebuilds_a_deleted_index() {
    let (workspace, source) = fixture();
    let packs = objects(&workspace.repo, "data").len() as u64;
    for index in objects(&workspace.repo, "index") {
        fs::remove_file(index).expect("delete index object");
    }
    let target = workspace.path("before");
    workspace
        .cairn(&["restore", "latest", "--target", &text(&target)])
        .failed();

    let summary = workspace
        .cairn(&["repair", "index", "--json"])
        .ok()
        .summary();
    assert_eq!(json_u64(&summary, "packs_read"), packs);
    assert_eq!(
        summary["packs_unreadable"].as_array().map(Vec::len),
        Some(0)
    );
    assert_eq!(json_u64(&summary, "index_removed"), 0);
    assert!(json_u64(&summary, "blobs_indexed") > 0);
    let written = json_u64(&summary, "index_written");
    assert_eq!(objects(&workspace.repo, "index").len() as u64, written);
    assert!(
        fs::read_dir(workspace.repo.join("locks")).is_ok_and(|listing| listing.count() == 0)
            || !workspace.repo.join("locks").exists(),
        "the prune lease was not released"
    );

    workspace.cairn(&["check", "--read-data"]).ok();
    let target = workspace.path("after");
    workspace
        .cairn(&["restore", "latest", "--target", &text(&target)])
        .ok();
    assert_restored_except(&source, &target, &BTreeSet::new());

    // Again: every index object it finds is superseded and removed.
    let before: BTreeSet<PathBuf> = objects(&workspace.repo, "index").into_iter().collect();
    let summary = workspace
        .cairn(&["repair", "index", "--json"])
        .ok()
        .summary();
    assert_eq!(json_u64(&summary, "index_removed"), before.len() as u64);
    let after: BTreeSet<PathBuf> = objects(&workspace.repo, "index").into_iter().collect();
    assert!(before.is_disjoint(&after));
    workspace.cairn(&["check"]).ok();

    // Append-only: the new index is written, the old is kept.
    let summary = workspace
        .cairn(&["--append-only", "repair", "index", "--json"])
        .ok()
        .summary();
    assert_eq!(json_u64(&summary, "index_removed"), 0);
    assert_eq!(json_u64(&summary, "index_kept"), after.len() as u64);
    let kept: BTreeSet<PathBuf> = objects(&workspace.repo, "index").into_iter().collect();
    assert!(kept.is_superset(&after));
    workspace.cairn(&["check", "--read-data"]).ok();
}

/// With one data pack deleted, restore writes every other file byte for byte, names each lost
/// file (on stderr, and in `--json`), leaves nothing under a lost file's name and exits 1.
/// `repair snapshots` then writes repaired snapshots that restore completely; the originals stay
/// until `--forget`; after `repair index` the repository checks clean.
#[test]
fn lost_pack_salvage_restore_and_repair_snapshots() {
    let (workspace, source) = fixture();
    let victim = source.join("dir1/file04.bin");
    let pack = pack_of(&workspace, &victim);
    let (lost, all) = files_needing(&workspace, &pack);
    assert!(
        !lost.is_empty() && lost.len() < all.len(),
        "the pack should hold some files, not all: {lost:?}"
    );
    fs::remove_file(pack_path(&workspace.repo, &pack)).expect("delete pack");

    // Salvage restore.
    let target = workspace.path("salvaged");
    let run = workspace
        .cairn(&["restore", "latest", "--target", &text(&target)])
        .code(1);
    for path in &lost {
        let restored = restored_path(&target, Path::new(path));
        assert!(
            run.stderr.contains(&text(&restored)),
            "restore did not name {}:\n{}",
            restored.display(),
            run.stderr
        );
        assert!(
            fs::symlink_metadata(&restored).is_err(),
            "a lost file was left under its name: {}",
            restored.display()
        );
    }
    assert_restored_except(&source, &target, &lost);
    let json_target = workspace.path("salvaged-json");
    let run = workspace
        .cairn(&[
            "restore",
            "latest",
            "--json",
            "--target",
            &text(&json_target),
        ])
        .code(1);
    let failed: BTreeSet<String> = run.summary()["failed_paths"]
        .as_array()
        .expect("failed_paths")
        .iter()
        .map(|path| path.as_str().expect("string").to_owned())
        .collect();
    let expected: BTreeSet<String> = lost
        .iter()
        .map(|path| text(&restored_path(&json_target, Path::new(path))))
        .collect();
    assert_eq!(failed, expected);

    // Dry run: reports, writes nothing.
    let snapshots_before = objects(&workspace.repo, "snapshots");
    let dry = workspace
        .cairn(&["repair", "snapshots", "--dry-run"])
        .ok()
        .text();
    for path in &lost {
        assert!(
            dry.contains(path.as_str()),
            "dry run did not list {path}:\n{dry}"
        );
    }
    assert_eq!(objects(&workspace.repo, "snapshots"), snapshots_before);

    // Repair: one repaired snapshot per damaged original, originals untouched.
    let latest_original = workspace.snapshots().last().expect("snapshots")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let run = workspace.cairn(&["repair", "snapshots", "--json"]).ok();
    let summary = run.summary();
    let damaged = json_u64(&summary, "snapshots_damaged");
    assert_eq!(damaged, 2, "both snapshots hold the victim");
    assert_eq!(json_u64(&summary, "snapshots_written"), 2);
    let lines: Vec<serde_json::Value> = run
        .json_lines()
        .into_iter()
        .filter(|line| line["message_type"] == "snapshot")
        .collect();
    let latest_line = lines
        .iter()
        .find(|line| line["snapshot_id"] == latest_original.as_str())
        .expect("a line for the latest snapshot");
    let dropped: BTreeSet<String> = latest_line["dropped"]
        .as_array()
        .expect("dropped")
        .iter()
        .map(|entry| entry["path"].as_str().expect("path").to_owned())
        .collect();
    assert_eq!(dropped, lost);
    let repaired_id = latest_line["repaired_snapshot_id"]
        .as_str()
        .expect("repaired id")
        .to_owned();
    assert_eq!(objects(&workspace.repo, "snapshots").len(), 4);
    let listed = workspace.snapshots();
    let repaired = listed
        .iter()
        .find(|snapshot| snapshot["id"] == repaired_id.as_str())
        .expect("repaired snapshot listed");
    assert!(
        repaired["tags"]
            .as_array()
            .is_some_and(|tags| tags.iter().any(|tag| tag == "repaired")),
        "{repaired}"
    );

    // The repaired snapshot is clean in check and restores everything it keeps.
    let check = workspace.cairn(&["check", "--json"]).failed().summary();
    let affected: Vec<&serde_json::Value> = check["affected"]
        .as_array()
        .expect("affected")
        .iter()
        .filter(|entry| entry["snapshot"] == repaired_id.as_str())
        .collect();
    assert!(
        affected.is_empty(),
        "repaired snapshot affected: {affected:?}"
    );
    let target = workspace.path("repaired");
    workspace
        .cairn(&["restore", &repaired_id, "--target", &text(&target)])
        .ok();
    assert_restored_except(&source, &target, &lost);

    // Running it again writes nothing new; --forget removes the originals.
    let summary = workspace
        .cairn(&["repair", "snapshots", "--forget", "--json"])
        .ok()
        .summary();
    assert_eq!(json_u64(&summary, "snapshots_written"), 0);
    assert_eq!(json_u64(&summary, "snapshots_forgotten"), 2);
    assert_eq!(objects(&workspace.repo, "snapshots").len(), 2);

    // The index still lists the lost pack until it is rebuilt.
    workspace.cairn(&["check"]).failed();
    workspace.cairn(&["repair", "index"]).ok();
    workspace.cairn(&["check", "--read-data"]).ok();
    let target = workspace.path("final");
    workspace
        .cairn(&["restore", "latest", "--target", &text(&target)])
        .ok();
    assert_restored_except(&source, &target, &lost);
}

/// A flipped byte inside one data blob is invisible to `repair snapshots` without
/// `--read-data`; with it the damaged file is dropped, the original forgotten at once, and after
/// a prune that repacks the damaged pack `check --read-data` passes.
#[test]
fn flipped_blob_is_repaired_with_read_data_and_forget() {
    let (workspace, source) = fixture();
    let victim = source.join("dir2/file05.bin");
    let repository = open_local_repository(&workspace.repo);
    let (_, snapshot) = repository.resolve_snapshot("latest").expect("latest");
    let node = repository
        .find_node(&snapshot.root, &text(&victim))
        .expect("find")
        .expect("victim");
    let NodeKind::File { chunks, .. } = node.kind else {
        panic!("not a file")
    };
    let location = repository
        .locate_blob(&chunks[1])
        .expect("cache")
        .expect("indexed");
    drop(repository);
    flip_byte(
        &pack_path(&workspace.repo, &location.pack_id),
        i64::from(location.entry.offset) + i64::from(location.entry.length) / 2,
    );
    let lost: BTreeSet<String> = [text(&victim)].into_iter().collect();

    let summary = workspace
        .cairn(&["repair", "snapshots", "--json"])
        .ok()
        .summary();
    assert_eq!(json_u64(&summary, "snapshots_damaged"), 0);

    // Restore salvages around it as well.
    let target = workspace.path("salvaged");
    workspace
        .cairn(&["restore", "latest", "--target", &text(&target)])
        .code(1)
        .stderr_contains(&text(&restored_path(&target, &victim)));
    assert_restored_except(&source, &target, &lost);

    let summary = workspace
        .cairn(&["repair", "snapshots", "--read-data", "--forget", "--json"])
        .ok()
        .summary();
    assert_eq!(json_u64(&summary, "snapshots_damaged"), 2);
    assert_eq!(json_u64(&summary, "snapshots_written"), 2);
    assert_eq!(json_u64(&summary, "snapshots_forgotten"), 2);
    assert!(json_u64(&summary, "packs_read") > 0);
    let listed = workspace.snapshots();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|snapshot| {
        snapshot["tags"]
            .as_array()
            .is_some_and(|tags| tags.iter().any(|tag| tag == "repaired"))
    }));
    workspace.cairn(&["check"]).ok();
    let target = workspace.path("repaired");
    workspace
        .cairn(&["restore", "latest", "--target", &text(&target)])
        .ok();
    assert_restored_except(&source, &target, &lost);

    // The damaged blob is now unreferenced: a prune repacks its pack away.
    workspace.cairn(&["prune", "--max-unused", "0"]).ok();
    workspace.cairn(&["check", "--read-data"]).ok();
    assert!(
        files_below(&workspace.repo.join("data"))
            .iter()
            .all(|path| !path.ends_with(location.pack_id.to_hex())),
        "the damaged pack is still there"
    );
}

/// `repair snapshots --forget` on an append-only repository is refused (exit 13) before anything
/// is written.
#[test]
fn repair_snapshots_forget_is_refused_when_append_only() {
    let (workspace, source) = fixture();
    let pack = pack_of(&workspace, &source.join("dir0/file00.bin"));
    fs::remove_file(pack_path(&workspace.repo, &pack)).expect("delete pack");
    let before = objects(&workspace.repo, "snapshots");
    workspace
        .cairn(&["--append-only", "repair", "snapshots", "--forget"])
        .code(13);
    assert_eq!(objects(&workspace.repo, "snapshots"), before);
    // Without --forget it only adds.
    workspace
        .cairn(&["--append-only", "repair", "snapshots"])
        .ok();
    assert_eq!(
        objects(&workspace.repo, "snapshots").len(),
        before.len() + 2
    );
}
