//! `cairn tag`: add, remove and set tags over snapshots with no, one and many tags; selection
//! by host, tag, path, id and `latest`; no match (exit 20), usage errors (exit 2), append-only
//! (exit 13); a repeated run changes nothing; a run interrupted between writing the new
//! snapshot and deleting the old one is finished by the next run without a duplicate.

use std::collections::BTreeMap;

use cairn_store::Id;
use cairn_store::tag::derived_snapshot;

use crate::support::{TreeBuilder, Workspace, restored_path, scan_tree};

/// A workspace with three snapshots of one tree, tagged with no, one and many tags.
fn three_snapshots() -> (Workspace, TreeBuilder) {
    let workspace = Workspace::initialized();
    let tree = TreeBuilder::new(workspace.path("source"));
    tree.file("a.txt", b"alpha");
    tree.file("dir/b.bin", &crate::support::random_bytes(3, 50_000));
    let root = tree.root().to_str().unwrap().to_owned();
    workspace.cairn(&["backup", "-q", "--force", &root]).ok();
    workspace
        .cairn(&["backup", "-q", "--force", "--tag", "a", &root])
        .ok();
    workspace
        .cairn(&["backup", "-q", "--force", "--tag", "a,b,c", &root])
        .ok();
    (workspace, tree)
}

/// Tags of every snapshot, by the original's position: follows `rewritten_from` so each
/// current snapshot is matched with the snapshot it replaced.
fn tags_of(workspace: &Workspace) -> Vec<Vec<String>> {
    workspace
        .snapshots()
        .iter()
        .map(|snapshot| {
            snapshot["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|tag| tag.as_str().unwrap().to_owned())
                .collect()
        })
        .collect()
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|item| (*item).to_owned()).collect()
}

#[test]
fn add_remove_and_set_over_zero_one_and_many_tags() {
    let cases: Vec<(Vec<&str>, [Vec<String>; 3])> = vec![
        (
            vec!["--add", "x"],
            [
                strings(&["x"]),
                strings(&["a", "x"]),
                strings(&["a", "b", "c", "x"]),
            ],
        ),
        (
            vec!["--remove", "a"],
            [strings(&[]), strings(&[]), strings(&["b", "c"])],
        ),
        (
            vec!["--set", "s,t"],
            [
                strings(&["s", "t"]),
                strings(&["s", "t"]),
                strings(&["s", "t"]),
            ],
        ),
        (
            vec!["--set", ""],
            [strings(&[]), strings(&[]), strings(&[])],
        ),
        (
            vec!["--add", "with space", "--add", "p,q"],
            [
                strings(&["with space", "p", "q"]),
                strings(&["a", "with space", "p", "q"]),
                strings(&["a", "b", "c", "with space", "p", "q"]),
            ],
        ),
        (
            vec!["--remove", "b", "--add", "b2", "--remove", "c"],
            [
                strings(&["b2"]),
                strings(&["a", "b2"]),
                strings(&["a", "b2"]),
            ],
        ),
    ];
    for (change, expected) in cases {
        let (workspace, _tree) = three_snapshots();
        let before = workspace.snapshots();
        let mut args = vec!["tag", "--json"];
        args.extend_from_slice(&change);
        let lines = workspace.cairn(&args).ok().json_lines();
        let after = workspace.snapshots();
        assert_eq!(after.len(), 3, "{change:?}");
        assert_eq!(tags_of(&workspace), expected, "{change:?}");
        let mut changed = 0;
        for (old, new) in before.iter().zip(&after) {
            // Snapshots stay in time order: everything but the tags and the id is kept.
            for field in [
                "time", "host", "username", "paths", "root", "summary", "stdin",
            ] {
                assert_eq!(old[field], new[field], "{change:?}: {field}");
            }
            if old["id"] == new["id"] {
                assert_eq!(old["tags"], new["tags"], "{change:?}");
                assert!(new["rewritten_from"].is_null());
            } else {
                changed += 1;
                assert_eq!(new["rewritten_from"], old["id"], "{change:?}");
            }
        }
        let summary = lines.last().unwrap();
        assert_eq!(summary["snapshots_changed"], changed, "{change:?}");
        assert_eq!(summary["snapshots_chosen"], 3, "{change:?}");
        for line in &lines[..3] {
            let unchanged = line["old_tags"] == line["new_tags"];
            assert_eq!(
                line["action"],
                if unchanged { "unchanged" } else { "retagged" },
                "{change:?}: {line}"
            );
        }
        workspace.cairn(&["check", "--read-data"]).ok();
    }
}

#[test]
fn a_repeated_run_changes_nothing() {
    let (workspace, _tree) = three_snapshots();
    workspace.cairn(&["tag", "--add", "keep"]).ok();
    let first = workspace.snapshots();
    let again = workspace.cairn(&["tag", "--add", "keep", "--json"]).ok();
    assert_eq!(again.summary()["snapshots_changed"], 0);
    assert!(
        again.json_lines()[..3]
            .iter()
            .all(|line| line["action"] == "unchanged")
    );
    assert_eq!(workspace.snapshots(), first);
}

#[test]
fn dry_run_writes_and_deletes_nothing() {
    let (workspace, _tree) = three_snapshots();
    let before = workspace.snapshots();
    let run = workspace
        .cairn(&["tag", "--remove", "a", "--dry-run", "--json"])
        .ok();
    assert_eq!(run.summary()["snapshots_changed"], 2);
    assert_eq!(run.summary()["dry_run"], true);
    assert_eq!(workspace.snapshots(), before);
    let text = workspace
        .cairn(&["tag", "--remove", "a", "--dry-run"])
        .ok()
        .text();
    assert!(text.contains("would become"), "{text}");
}

#[test]
fn selection_by_host_tag_path_id_and_latest() {
    let workspace = Workspace::initialized();
    let one = TreeBuilder::new(workspace.path("one"));
    one.file("f", b"1");
    let two = TreeBuilder::new(workspace.path("two"));
    two.file("f", b"2");
    let one_path = one.root().to_str().unwrap().to_owned();
    let two_path = two.root().to_str().unwrap().to_owned();
    let backups: [&[&str]; 4] = [
        &["--host", "h1", "--tag", "t", &one_path],
        &["--host", "h2", &one_path],
        &["--host", "h1", &two_path],
        &["--host", "h2", "--tag", "t", &two_path],
    ];
    for extra in backups {
        let mut args = vec!["backup", "-q", "--force"];
        args.extend_from_slice(extra);
        workspace.cairn(&args).ok();
    }
    let ids = |workspace: &Workspace| -> Vec<String> {
        workspace
            .snapshots()
            .iter()
            .map(|snapshot| snapshot["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let original = ids(&workspace);
    // Which of the four (in time order) each selection changes.
    let second_prefix = original[1][..10].to_owned();
    let cases: Vec<(Vec<&str>, [bool; 4])> = vec![
        (vec!["--host", "h1"], [true, false, true, false]),
        (vec!["--tag", "t"], [true, false, false, true]),
        (vec!["--path", &two_path], [false, false, true, true]),
        (vec![&second_prefix], [false, true, false, false]),
        (vec!["latest"], [false, false, false, true]),
        (vec!["--host", "h1", "latest"], [false, false, true, false]),
    ];
    for (selection, expected) in cases {
        let before = ids(&workspace);
        let mut args = vec!["tag", "--add", "picked"];
        args.extend_from_slice(&selection);
        workspace.cairn(&args).ok();
        let snapshots = workspace.snapshots();
        let picked: Vec<bool> = snapshots
            .iter()
            .map(|snapshot| {
                snapshot["tags"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|tag| tag == "picked")
            })
            .collect();
        assert_eq!(picked, expected, "{selection:?}");
        // Put it back for the next case.
        workspace.cairn(&["tag", "--remove", "picked"]).ok();
        let after: Vec<String> = ids(&workspace);
        assert_eq!(after.len(), before.len());
    }
}

#[test]
fn no_match_exits_20_and_usage_errors_exit_2() {
    let (workspace, _tree) = three_snapshots();
    let before = workspace.snapshots();
    workspace
        .cairn(&["tag", "--host", "nobody", "--add", "x"])
        .code(20)
        .stderr_contains("no snapshot");
    workspace
        .cairn(&["tag", "deadbeef", "--add", "x"])
        .code(20)
        .stderr_contains("deadbeef");
    workspace.cairn(&["tag", "latest"]).code(2);
    workspace
        .cairn(&["tag", "latest", "--set", "a", "--add", "b"])
        .code(2);
    workspace.cairn(&["tag", "latest", "--add", ""]).code(2);
    workspace.cairn(&["tag", "latest", "--add", "a,,b"]).code(2);
    assert_eq!(workspace.snapshots(), before);
}

#[test]
fn append_only_refuses_with_13_before_writing() {
    let workspace = Workspace::initialized_with(&["--append-only"]);
    let tree = TreeBuilder::new(workspace.path("source"));
    tree.file("f", b"data");
    workspace
        .cairn(&["backup", "-q", tree.root().to_str().unwrap()])
        .ok();
    let before = workspace.snapshots();
    workspace
        .cairn(&["tag", "--add", "x"])
        .code(13)
        .stderr_contains("append-only");
    assert_eq!(workspace.snapshots(), before, "nothing written either");
    // A dry run and a change that changes nothing are fine.
    workspace.cairn(&["tag", "--add", "x", "--dry-run"]).ok();
    workspace.cairn(&["tag", "--remove", "absent"]).ok();
    // The client flag refuses the same way on an ordinary repository.
    let (ordinary, _tree) = three_snapshots();
    ordinary
        .cairn(&["--append-only", "tag", "--add", "x"])
        .code(13);
}

/// The crash window: the new snapshot is stored, the old one not yet deleted. Both exist (a
/// listing shows two snapshots of the same time); the next run deletes the old one and writes
/// nothing new.
#[test]
fn an_interrupted_retag_is_finished_by_the_next_run() {
    let (workspace, tree) = three_snapshots();
    let before = workspace.snapshots();
    let newest = before.last().unwrap();
    let original_id = newest["id"].as_str().unwrap().parse::<Id>().unwrap();
    {
        let repository = workspace.open_repository();
        let (_, original) = repository.resolve_snapshot(&original_id.to_hex()).unwrap();
        let mut tags = original.tags.clone();
        tags.push("x".into());
        let planned = derived_snapshot(
            original_id,
            &original,
            tags,
            original.root,
            original.summary,
            "0.0.0-interrupted",
        );
        repository.save_snapshot(&planned).unwrap();
    }
    assert_eq!(workspace.snapshots().len(), 4, "both exist after the crash");
    let run = workspace
        .cairn(&["tag", "--add", "x", "--json"])
        .ok()
        .json_lines();
    let finished = run
        .iter()
        .find(|line| line["snapshot_id"] == newest["id"])
        .unwrap();
    assert_eq!(finished["action"], "retagged");
    assert_eq!(finished["already_written"], true);
    let after = workspace.snapshots();
    assert_eq!(after.len(), 3, "no duplicate: {after:#?}");
    let by_original: BTreeMap<String, &serde_json::Value> = after
        .iter()
        .filter(|snapshot| !snapshot["rewritten_from"].is_null())
        .map(|snapshot| {
            (
                snapshot["rewritten_from"].as_str().unwrap().to_owned(),
                snapshot,
            )
        })
        .collect();
    assert_eq!(by_original.len(), 3);
    assert!(after.iter().all(|snapshot| {
        snapshot["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|tag| tag == "x")
    }));
    // The data is untouched: check reads it all, and the re-tagged snapshot restores.
    workspace.cairn(&["check", "--read-data"]).ok();
    let target = workspace.path("restored");
    workspace
        .cairn(&["restore", "latest", "--target", target.to_str().unwrap()])
        .ok();
    let restored = scan_tree(&restored_path(&target, tree.root()));
    assert_eq!(restored, scan_tree(tree.root()));
}
