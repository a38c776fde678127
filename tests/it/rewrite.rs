//! `cairn rewrite`: removing paths from existing snapshots. A matrix of patterns (an absolute
//! file, a glob at any depth, a directory, one link of a hard-linked pair, the last file of a
//! directory, an exclude file) restored byte for byte against the source minus what was
//! removed; refusals (everything removed, a stream) write nothing; a repeated run writes
//! nothing new; after `rewrite --forget` and `prune` the secret's chunks are in no pack; a prune
//! running beside a rewrite loses none of the new snapshot's data; append-only.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Child;

use cairn_store::Id;
use cairn_store::format::tree::NodeKind;

use crate::support::{
    Entry, Repo, TreeBuilder, Workspace, contains, files_below, random_bytes, restored_path,
    scan_tree,
};

/// The secret's bytes: random, so its chunks are its own.
fn secret_bytes() -> Vec<u8> {
    random_bytes(77, 300_000)
}

/// A source tree with everything the matrix removes.
fn source(workspace: &Workspace) -> TreeBuilder {
    let tree = TreeBuilder::new(workspace.path("source"));
    tree.file("app/.env", &secret_bytes());
    tree.file("app/main.rs", b"fn main() {}\n");
    tree.file("app/keys/server.key", b"-----BEGIN KEY-----\n");
    tree.file("app/keys/readme", b"keys live here\n");
    tree.file("deep/a/b/c/id.key", b"deep key\n");
    tree.file("cache/blob1", &random_bytes(5, 20_000));
    tree.file("cache/sub/blob2", b"cached");
    tree.file("only/last", b"the last file of its directory");
    tree.file("big.bin", &random_bytes(6, 2_000_000));
    tree.file("links/h1", b"hard-linked content");
    std::fs::hard_link(tree.path("links/h1"), tree.path("links/h2")).unwrap();
    tree.symlink("app/link", "main.rs");
    tree
}

/// A repository made with `init` options `init` holding one backup of [`source`]: the
/// workspace, the source tree and the backup's summary.
fn backed_up_source(init: &[&str]) -> (Workspace, TreeBuilder, serde_json::Value) {
    let workspace = Workspace::initialized_with(init);
    let tree = source(&workspace);
    let backup = workspace.backup(&[tree.root()]);
    (workspace, tree, backup)
}

/// `scan` without the entries at or below the relative paths `removed`.
fn without(scan: &BTreeMap<PathBuf, Entry>, removed: &[&str]) -> BTreeMap<PathBuf, Entry> {
    scan.iter()
        .filter(|(path, _)| !removed.iter().any(|gone| path.starts_with(Path::new(gone))))
        .map(|(path, entry)| (path.clone(), entry.clone()))
        .collect()
}

fn restore(workspace: &Workspace, snapshot: &str, name: &str) -> PathBuf {
    let target = workspace.path(name);
    workspace
        .cairn(&["restore", snapshot, "--target", target.to_str().unwrap()])
        .ok();
    target
}

#[test]
fn the_matrix_restores_the_source_minus_what_was_removed() {
    let patterns_file_text = "# secrets\n/**/app/.env\n\n*.key\n";
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["--exclude", "app/.env"], vec!["app/.env"]),
        (
            vec!["--exclude", "*.key"],
            vec!["app/keys/server.key", "deep/a/b/c/id.key"],
        ),
        (vec!["--exclude", "cache/"], vec!["cache"]),
        (vec!["--exclude", "links/h1"], vec!["links/h1"]),
        (vec!["--exclude", "only/last"], vec!["only/last"]),
        (vec!["--exclude", "deep"], vec!["deep"]),
        (
            vec!["--iexclude", "*.KEY"],
            vec!["app/keys/server.key", "deep/a/b/c/id.key"],
        ),
        (
            vec!["--exclude-file", "PATTERNS", "--exclude", "app/link"],
            vec![
                "app/.env",
                "app/keys/server.key",
                "deep/a/b/c/id.key",
                "app/link",
            ],
        ),
    ];
    for (patterns, removed) in cases {
        let workspace = Workspace::initialized();
        let tree = source(&workspace);
        let patterns_file = workspace.path("patterns");
        std::fs::write(&patterns_file, patterns_file_text).unwrap();
        let scan = scan_tree(tree.root());
        let backup = workspace.backup(&[tree.root()]);
        let original_id = backup["snapshot_id"].as_str().unwrap().to_owned();
        let mut args = vec!["rewrite", "--json"];
        for pattern in &patterns {
            args.push(if *pattern == "PATTERNS" {
                patterns_file.to_str().unwrap()
            } else {
                pattern
            });
        }
        let lines = workspace.cairn(&args).ok().json_lines();
        let line = &lines[0];
        assert_eq!(line["action"], "rewritten", "{patterns:?}: {line}");
        let listed: HashSet<String> = line["removed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| entry["path"].as_str().unwrap().to_owned())
            .collect();
        let expected_listed: HashSet<String> = removed
            .iter()
            .map(|path| tree.path(path).to_string_lossy().into_owned())
            .collect();
        assert_eq!(listed, expected_listed, "{patterns:?}");
        let new_id = line["new_snapshot_id"].as_str().unwrap().to_owned();
        let snapshots = workspace.snapshots();
        assert_eq!(snapshots.len(), 2, "{patterns:?}: the original is kept");
        let new = snapshots.iter().find(|s| s["id"] == new_id).unwrap();
        assert_eq!(new["rewritten_from"], original_id);
        let original = snapshots.iter().find(|s| s["id"] == original_id).unwrap();
        assert_eq!(new["time"], original["time"]);
        assert_eq!(new["tags"], original["tags"]);
        assert_eq!(new["paths"], original["paths"]);
        let expected = without(&scan, &removed);
        let files_left = expected
            .values()
            .filter(|entry| matches!(entry.kind, crate::support::EntryKind::File { .. }))
            .count();
        assert_eq!(new["summary"]["files"], files_left, "{patterns:?}");

        let target = restore(&workspace, &new_id, "restored");
        let restored = scan_tree(&restored_path(&target, tree.root()));
        crate::support::assert_same_entries(&expected, &restored);
        // The original still restores whole.
        let target = restore(&workspace, &original_id, "original");
        crate::support::assert_same_entries(
            &scan,
            &scan_tree(&restored_path(&target, tree.root())),
        );
        workspace.cairn(&["check", "--read-data"]).ok();
    }
}

#[test]
fn unchanged_subtrees_keep_their_trees() {
    let (workspace, tree, _) = backed_up_source(&[]);
    let trees_before = workspace.cairn(&["stats", "--json"]).ok().summary()["tree_blobs"]
        .as_u64()
        .unwrap();
    let run = workspace
        .cairn(&["rewrite", "--exclude", "/**/deep/a/b/c/id.key", "--json"])
        .ok();
    // deep/a/b/c, deep/a/b, deep/a and deep, then the source directory, each of its ancestors
    // and `/` (one tree per component of the source path): nothing else.
    let depth = tree.root().components().count() as u64;
    let written = run.summary()["trees_written"].as_u64().unwrap();
    assert_eq!(written, 4 + depth, "{}", run.text());
    let trees_after = workspace.cairn(&["stats", "--json"]).ok().summary()["tree_blobs"]
        .as_u64()
        .unwrap();
    assert_eq!(trees_after, trees_before + written);
}

#[test]
fn refusals_write_nothing() {
    let (workspace, tree, _) = backed_up_source(&[]);
    workspace.backup_stdin("dump.sql", b"create table t;", &[]);
    let before = workspace.snapshots();
    let objects_before = files_below(&workspace.repo);
    // Everything of the paths snapshot: restic writes no empty snapshot, neither does cairn.
    let root_name = tree
        .root()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    workspace
        .cairn(&["rewrite", "--exclude", &root_name])
        .code(2)
        .stderr_contains("no empty snapshot");
    // The stream itself.
    workspace
        .cairn(&["rewrite", "--exclude", "dump.sql"])
        .code(2)
        .stderr_contains("the stream");
    // Even with --forget nothing is deleted.
    workspace
        .cairn(&["rewrite", "--exclude", "*.sql", "--forget"])
        .code(2);
    // Bad patterns are usage errors too.
    workspace.cairn(&["rewrite", "--exclude", "["]).code(2);
    workspace.cairn(&["rewrite", "--exclude", "!x"]).code(2);
    workspace.cairn(&["rewrite"]).code(2);
    workspace
        .cairn(&[
            "rewrite",
            "--exclude",
            "x",
            "--exclude-file",
            "/nonexistent/file",
        ])
        .failed()
        .stderr_contains("/nonexistent/file");
    workspace
        .cairn(&["rewrite", "--host", "nobody", "--exclude", "x"])
        .code(20);
    assert_eq!(workspace.snapshots(), before);
    // Nothing new at all: no pack, no index, no snapshot, not even a session marker.
    assert_eq!(files_below(&workspace.repo), objects_before);
    // A stream snapshot the patterns do not touch is simply left alone.
    let run = workspace
        .cairn(&["rewrite", "--exclude", "app/.env", "--json"])
        .ok()
        .json_lines();
    assert_eq!(run[0]["action"], "rewritten");
    assert_eq!(run[1]["action"], "unchanged");
}

#[test]
fn a_repeated_run_writes_nothing_new() {
    let (workspace, _, backup) = backed_up_source(&[]);
    let original = backup["snapshot_id"].clone();
    workspace.cairn(&["rewrite", "--exclude", "*.key"]).ok();
    let after_first = workspace.snapshots();
    let again = workspace
        .cairn(&["rewrite", "--exclude", "*.key", "--json"])
        .ok()
        .json_lines();
    // The original is found already rewritten, the rewritten one has nothing to remove (both
    // have the same time: their order is by id).
    for line in &again[..2] {
        if line["snapshot_id"] == original {
            assert_eq!(line["action"], "rewritten");
            assert_eq!(line["already_written"], true);
        } else {
            assert_eq!(line["action"], "unchanged");
        }
    }
    assert_eq!(workspace.snapshots(), after_first);
    let dry = workspace
        .cairn(&["rewrite", "--exclude", "*.rs", "--dry-run", "--json"])
        .ok();
    assert_eq!(dry.summary()["snapshots_rewritten"], 2);
    assert_eq!(workspace.snapshots(), after_first);
}

/// The data blob ids of the file at `path` in snapshot `spec`.
fn chunks_of(workspace: &Workspace, spec: &str, path: &Path) -> Vec<Id> {
    let repository = workspace.open_repository();
    repository.sync_index().unwrap();
    let (_, snapshot) = repository.resolve_snapshot(spec).unwrap();
    let node = repository
        .find_node(&snapshot.root, path.to_str().unwrap())
        .unwrap()
        .unwrap();
    match node.kind {
        NodeKind::File { chunks, .. } => chunks,
        other => panic!("not a file: {other:?}"),
    }
}

/// Every blob id listed by the trailer of any pack in the repository.
fn blobs_in_packs(workspace: &Workspace) -> HashSet<Id> {
    let repository = workspace.open_repository();
    let mut blobs = HashSet::new();
    for info in repository.backend().list("data").unwrap() {
        let pack = repository.read_pack_trailer(&info).unwrap();
        blobs.extend(pack.entries.iter().map(|entry| entry.id));
    }
    blobs
}

#[test]
fn the_secret_is_gone_after_rewrite_forget_and_prune() {
    let (workspace, tree, _) = backed_up_source(&[]);
    tree.file("app/main.rs", b"fn main() { changed(); }\n");
    workspace.backup(&[tree.root()]);
    let secret_path = tree.path("app/.env");
    let secret_chunks = chunks_of(&workspace, "latest", &secret_path);
    assert!(!secret_chunks.is_empty());
    assert!(
        secret_chunks
            .iter()
            .all(|chunk| blobs_in_packs(&workspace).contains(chunk))
    );
    let bytes_before = workspace.cairn(&["stats", "--json"]).ok().summary()["repository_bytes"]
        .as_u64()
        .unwrap();

    let run = workspace
        .cairn(&["rewrite", "--exclude", "/**/app/.env", "--forget", "--json"])
        .ok();
    assert_eq!(run.summary()["snapshots_forgotten"], 2);
    workspace.cairn(&["prune", "--max-unused", "0%"]).ok();

    let remaining = blobs_in_packs(&workspace);
    for chunk in &secret_chunks {
        assert!(
            !remaining.contains(chunk),
            "chunk {chunk} of the secret survived"
        );
    }
    let bytes_after = workspace.cairn(&["stats", "--json"]).ok().summary()["repository_bytes"]
        .as_u64()
        .unwrap();
    assert!(
        bytes_after + 250_000 < bytes_before,
        "{bytes_before} → {bytes_after}"
    );
    // Restore every remaining snapshot and look for the secret's bytes anywhere.
    let secret = secret_bytes();
    let probe = &secret[100_000..100_064];
    for (position, snapshot) in workspace.snapshots().iter().enumerate() {
        assert!(!snapshot["rewritten_from"].is_null());
        let target = restore(
            &workspace,
            snapshot["id"].as_str().unwrap(),
            &format!("restored-{position}"),
        );
        for file in files_below(&target) {
            assert!(
                !contains(&std::fs::read(&file).unwrap(), probe),
                "{} holds the secret",
                file.display()
            );
        }
        assert!(!restored_path(&target, &secret_path).exists());
    }
    workspace.cairn(&["check", "--read-data"]).ok();
}

#[test]
fn append_only_allows_rewrite_but_refuses_forget() {
    let (workspace, _, _) = backed_up_source(&["--append-only"]);
    let before = workspace.snapshots();
    workspace
        .cairn(&["rewrite", "--exclude", "*.key", "--forget"])
        .code(13)
        .stderr_contains("append-only");
    assert_eq!(workspace.snapshots(), before);
    // Without --forget it only adds (as a backup does): allowed.
    workspace.cairn(&["rewrite", "--exclude", "*.key"]).ok();
    assert_eq!(workspace.snapshots().len(), 2);
    workspace.cairn(&["check"]).ok();
}

fn wait(child: Child) -> (Option<i32>, String) {
    let output = child.wait_with_output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A prune that runs while a rewrite stores its trees and snapshot must not delete what the
/// new snapshot needs (FORMAT.md section 21): the rewrite runs inside a backup session.
#[test]
fn a_prune_beside_a_rewrite_loses_nothing_of_the_new_snapshot() {
    for round in 0..3 {
        let workspace = Workspace::initialized();
        let tree = source(&workspace);
        for extra in 0..3 {
            tree.file(
                &format!("extra/{extra}.bin"),
                &random_bytes(100 + extra, 200_000),
            );
            workspace.backup(&[tree.root()]);
        }
        // Something for prune to do: two snapshots forgotten.
        workspace.cairn(&["forget", "--keep-last", "1"]).ok();
        let repo = Repo::local(&workspace);
        let rewrite = repo.spawn(&["rewrite", "latest", "--exclude", "*.key", "--forget"]);
        let prune = repo.spawn(&["prune", "--max-unused", "0%"]);
        let (rewrite_code, rewrite_error) = wait(rewrite);
        let (prune_code, prune_error) = wait(prune);
        assert_eq!(rewrite_code, Some(0), "round {round}: {rewrite_error}");
        assert!(
            matches!(prune_code, Some(0 | 11)),
            "round {round}: {prune_error}"
        );
        workspace.cairn(&["prune"]).ok();
        workspace.cairn(&["check", "--read-data"]).ok();
        let snapshots = workspace.snapshots();
        assert_eq!(snapshots.len(), 1, "round {round}");
        let target = restore(&workspace, "latest", "restored");
        let expected = without(
            &scan_tree(tree.root()),
            &["app/keys/server.key", "deep/a/b/c/id.key"],
        );
        crate::support::assert_same_entries(
            &expected,
            &scan_tree(&restored_path(&target, tree.root())),
        );
    }
}
