//! `cairn forget` end to end: backups with chosen hosts and times (`backup --time`), a policy
//! applied per group, exactly the expected snapshots kept, the removed ones gone, the kept ones
//! still restoring byte for byte; `--dry-run` removes nothing; an empty policy is refused; the
//! time zone decides where days begin.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::support::{
    TreeBuilder, Workspace, assert_same_tree, object_id, objects, random_bytes, restored_path,
};

/// The stored snapshot object ids of the workspace's repository.
fn stored_snapshot_ids(workspace: &Workspace) -> BTreeSet<String> {
    objects(&workspace.repo, "snapshots")
        .iter()
        .map(|path| object_id(path))
        .collect()
}

/// The content of the stream backed up as snapshot `label`.
fn stream_content(label: &str) -> Vec<u8> {
    let mut content = format!("stream of snapshot {label}\n")
        .repeat(500)
        .into_bytes();
    content.extend(random_bytes(
        label.len() as u64 * 7 + u64::from(label.as_bytes()[1]),
        40_000,
    ));
    content
}

/// Backs up `stream_content(label)` as `db.archive` for `host` at `time`; returns the snapshot id.
fn backup_stream(workspace: &Workspace, label: &str, host: &str, time: &str) -> String {
    let summary = workspace.backup_stdin(
        "db.archive",
        &stream_content(label),
        &["--host", host, "--time", time],
    );
    summary["snapshot_id"]
        .as_str()
        .expect("snapshot id")
        .to_owned()
}

fn text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// The `--json` lines of one `message_type`.
fn lines_of(run: &crate::support::Run, message_type: &str) -> Vec<serde_json::Value> {
    run.json_lines()
        .into_iter()
        .filter(|line| line["message_type"] == message_type)
        .collect()
}

#[test]
fn forget_keeps_exactly_what_the_policy_says_and_the_kept_snapshots_restore() {
    let workspace = Workspace::initialized();
    let mut ids: BTreeMap<&str, String> = BTreeMap::new();
    // Host alpha, stream db.archive. ISO weeks: 6 May is in week 19, 13 and 19 May in week 20,
    // 20 and 21 May in week 21.
    for (label, time) in [
        ("a1", "2024-05-06T10:00:00Z"),
        ("a2", "2024-05-13T10:00:00Z"),
        ("a3", "2024-05-19T10:00:00Z"),
        ("a4", "2024-05-20T09:00:00Z"),
        ("a5", "2024-05-20T21:00:00Z"),
        ("a6", "2024-05-21T10:00:00Z"),
    ] {
        ids.insert(label, backup_stream(&workspace, label, "alpha", time));
    }
    // Host beta: its own group, whose two snapshots are both kept.
    ids.insert(
        "b1",
        backup_stream(&workspace, "b1", "beta", "2024-05-01T10:00:00Z"),
    );
    ids.insert(
        "b2",
        backup_stream(&workspace, "b2", "beta", "2024-05-21T11:00:00Z"),
    );
    // A directory on alpha: another group (other paths).
    let source = workspace.path("source");
    let tree = TreeBuilder::new(&source);
    tree.file("etc/app.conf", b"port = 8080\n");
    tree.file("var/data.bin", &random_bytes(11, 300_000));
    let directory_backup = workspace
        .cairn(&[
            "backup",
            "--json",
            "--host",
            "alpha",
            "--time",
            "2024-05-21T12:00:00Z",
            &text(&source),
        ])
        .ok()
        .summary();
    ids.insert(
        "d1",
        directory_backup["snapshot_id"].as_str().unwrap().to_owned(),
    );
    assert_eq!(stored_snapshot_ids(&workspace).len(), 9);

    let run = workspace
        .cairn(&[
            "forget",
            "--keep-daily",
            "2",
            "--keep-weekly",
            "3",
            "--time-zone",
            "UTC",
            "--json",
        ])
        .ok();

    // alpha/db.archive, newest first: a6 daily 1 + weekly 1 (week 21); a5 daily 2 (20 May);
    // a4 same day and week as a5; a3 weekly 2 (week 20); a2 same week as a3; a1 weekly 3.
    let expected_kept: BTreeSet<String> = ["a1", "a3", "a5", "a6", "b1", "b2", "d1"]
        .iter()
        .map(|label| ids[label].clone())
        .collect();
    let expected_removed: BTreeSet<String> = ["a2", "a4"]
        .iter()
        .map(|label| ids[label].clone())
        .collect();
    assert_eq!(stored_snapshot_ids(&workspace), expected_kept);
    let listed: BTreeSet<String> = workspace
        .snapshots()
        .iter()
        .map(|snapshot| snapshot["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, expected_kept);

    // The JSON lines: one per snapshot with the action and reasons, then a summary.
    let decisions = lines_of(&run, "snapshot");
    assert_eq!(decisions.len(), 9);
    let by_id: BTreeMap<String, &serde_json::Value> = decisions
        .iter()
        .map(|line| (line["id"].as_str().unwrap().to_owned(), line))
        .collect();
    let reasons = |label: &str| -> Vec<String> {
        by_id[&ids[label]]["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|reason| reason.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(reasons("a6"), ["daily 1", "weekly 1"]);
    assert_eq!(reasons("a5"), ["daily 2"]);
    assert_eq!(reasons("a3"), ["weekly 2"]);
    assert_eq!(reasons("a1"), ["weekly 3"]);
    assert!(reasons("a4").is_empty());
    for (id, line) in &by_id {
        let expected_action = if expected_removed.contains(id) {
            "remove"
        } else {
            "keep"
        };
        assert_eq!(line["action"], expected_action, "{line}");
        assert_eq!(line["short_id"].as_str().unwrap(), &id[..8]);
    }
    let a6 = by_id[&ids["a6"]];
    assert_eq!(a6["time"], "2024-05-21T10:00:00Z");
    assert_eq!(a6["host"], "alpha");
    assert_eq!(a6["paths"], serde_json::json!(["db.archive"]));
    assert_eq!(
        a6["group"],
        serde_json::json!({"host": "alpha", "paths": ["db.archive"]})
    );
    let summary = run.summary();
    assert_eq!(summary["dry_run"], false);
    assert_eq!(summary["groups"], 3);
    assert_eq!(summary["kept"], 7);
    assert_eq!(summary["remove"], 2);
    assert_eq!(summary["removed"], 2);
    assert_eq!(summary["failed"], 0);

    // Every kept snapshot still restores its own bytes; the removed ones are gone.
    for label in ["a1", "a3", "a5", "a6", "b1", "b2"] {
        let dumped = workspace.cairn(&["dump", &ids[label], "db.archive"]).ok();
        assert!(
            dumped.stdout == stream_content(label),
            "snapshot {label} dumps other bytes"
        );
    }
    let target = workspace.path("restored");
    workspace
        .cairn(&["restore", &ids["d1"], "--target", &text(&target)])
        .ok();
    assert_same_tree(&source, &restored_path(&target, &source));
    for label in ["a2", "a4"] {
        workspace
            .cairn(&["dump", &ids[label], "db.archive"])
            .failed()
            .stderr_contains("no snapshot matches");
    }
    workspace.cairn(&["check"]).ok();

    // Applying the same policy again removes nothing more.
    let again = workspace
        .cairn(&[
            "forget",
            "--keep-daily",
            "2",
            "--keep-weekly",
            "3",
            "--time-zone",
            "UTC",
            "--json",
        ])
        .ok();
    assert_eq!(again.summary()["remove"], 0);
    assert_eq!(stored_snapshot_ids(&workspace), expected_kept);
}

#[test]
fn dry_run_shows_what_and_why_and_removes_nothing() {
    let workspace = Workspace::initialized();
    let old = backup_stream(&workspace, "o1", "alpha", "2024-01-01T10:00:00Z");
    let new = backup_stream(&workspace, "n1", "alpha", "2024-01-02T10:00:00Z");
    let before = stored_snapshot_ids(&workspace);

    let run = workspace
        .cairn(&["forget", "--keep-last", "1", "--dry-run"])
        .ok();
    let output = run.text();
    assert!(
        output.contains("snapshots of host alpha, paths db.archive"),
        "{output}"
    );
    assert!(output.contains("keep 1 snapshot:"), "{output}");
    assert!(output.contains("remove 1 snapshot:"), "{output}");
    assert!(output.contains("reasons"), "{output}");
    assert!(output.contains("last 1"), "{output}");
    assert!(
        output.contains(&new[..8]) && output.contains(&old[..8]),
        "{output}"
    );
    assert!(
        output.contains("would remove 1 snapshot and keep 1 (dry run: nothing removed)"),
        "{output}"
    );
    assert_eq!(stored_snapshot_ids(&workspace), before);

    let json = workspace
        .cairn(&["forget", "--keep-last", "1", "-n", "--json"])
        .ok();
    let summary = json.summary();
    assert_eq!(summary["dry_run"], true);
    assert_eq!(summary["remove"], 1);
    assert_eq!(summary["removed"], 0);
    assert_eq!(stored_snapshot_ids(&workspace), before);
}

#[test]
fn an_empty_policy_is_refused_with_a_clear_error() {
    let workspace = Workspace::initialized();
    backup_stream(&workspace, "e1", "alpha", "2024-01-01T10:00:00Z");
    let before = stored_snapshot_ids(&workspace);
    for args in [
        vec!["forget"],
        vec!["forget", "--host", "alpha", "--group-by", ""],
        vec!["forget", "--keep-daily", "0", "--keep-last", "0"],
    ] {
        workspace
            .cairn(&args)
            .code(1)
            .stderr_contains("refusing to forget every snapshot: the policy has no keep rule");
    }
    assert_eq!(stored_snapshot_ids(&workspace), before);
    workspace
        .cairn(&["forget", "--keep-within", "7x"])
        .code(2)
        .stderr_contains("invalid duration");
    workspace
        .cairn(&["forget", "--keep-daily=-1"])
        .code(2)
        .stderr_contains("is not a count: give a whole number or `unlimited`");
    workspace
        .cairn(&["forget", "--keep-daily", "1", "--group-by", "hostname"])
        .code(2)
        .stderr_contains("invalid grouping");
    assert_eq!(stored_snapshot_ids(&workspace), before);
}

#[test]
fn group_by_nothing_applies_the_policy_across_hosts() {
    let workspace = Workspace::initialized();
    let alpha = backup_stream(&workspace, "g1", "alpha", "2024-03-01T10:00:00Z");
    let beta = backup_stream(&workspace, "g2", "beta", "2024-03-02T10:00:00Z");
    // Per host (the default), each host keeps its newest.
    let per_host = workspace
        .cairn(&["forget", "--keep-last", "1", "-n", "--json"])
        .ok();
    assert_eq!(per_host.summary()["groups"], 2);
    assert_eq!(per_host.summary()["remove"], 0);
    // One group: only the newest of all is kept.
    workspace
        .cairn(&["forget", "--keep-last", "1", "--group-by", ""])
        .ok();
    assert_eq!(stored_snapshot_ids(&workspace), BTreeSet::from([beta]));
    assert!(!stored_snapshot_ids(&workspace).contains(&alpha));
}

#[test]
fn filters_leave_other_snapshots_alone() {
    let workspace = Workspace::initialized();
    let alpha_old = backup_stream(&workspace, "f1", "alpha", "2024-03-01T10:00:00Z");
    let alpha_new = backup_stream(&workspace, "f2", "alpha", "2024-03-02T10:00:00Z");
    let beta_old = backup_stream(&workspace, "f3", "beta", "2024-03-01T10:00:00Z");
    let beta_new = backup_stream(&workspace, "f4", "beta", "2024-03-02T10:00:00Z");
    workspace
        .cairn(&["forget", "--keep-last", "1", "--host", "beta"])
        .ok();
    assert_eq!(
        stored_snapshot_ids(&workspace),
        BTreeSet::from([alpha_old, alpha_new, beta_new])
    );
    assert!(!stored_snapshot_ids(&workspace).contains(&beta_old));
}

#[test]
fn days_begin_at_midnight_in_the_chosen_time_zone() {
    let workspace = Workspace::initialized();
    // 13:00 and 23:30 on 31 December and 00:30 on 1 January in Berlin; all on 31 December UTC.
    let noon = backup_stream(&workspace, "z1", "alpha", "2023-12-31T12:00:00Z");
    let evening = backup_stream(&workspace, "z2", "alpha", "2023-12-31T22:30:00Z");
    let new_year = backup_stream(&workspace, "z3", "alpha", "2023-12-31T23:30:00Z");
    let kept = |run: crate::support::Run| -> BTreeSet<String> {
        lines_of(&run, "snapshot")
            .iter()
            .filter(|line| line["action"] == "keep")
            .map(|line| line["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let berlin = Path::new("Europe/Berlin");
    let from_tz = workspace
        .cairn_env(
            &["forget", "--keep-daily", "2", "-n", "--json"],
            &[("TZ", berlin)],
        )
        .ok();
    assert_eq!(from_tz.summary()["time_zone"], "Europe/Berlin");
    assert_eq!(
        kept(from_tz),
        BTreeSet::from([evening.clone(), new_year.clone()])
    );
    let overridden = workspace
        .cairn_env(
            &[
                "forget",
                "--keep-daily",
                "2",
                "-n",
                "--json",
                "--time-zone",
                "UTC",
            ],
            &[("TZ", berlin)],
        )
        .ok();
    assert_eq!(kept(overridden), BTreeSet::from([new_year]));
    assert!(stored_snapshot_ids(&workspace).contains(&noon));
    workspace
        .cairn(&["forget", "--keep-daily", "2", "--time-zone", "Mars/Olympus"])
        .code(1)
        .stderr_contains("unknown time zone \"Mars/Olympus\"");
}

#[test]
fn backup_time_sets_the_snapshot_time() {
    let workspace = Workspace::initialized();
    backup_stream(&workspace, "t1", "alpha", "2024-06-01T05:00:00+02:00");
    let snapshots = workspace.snapshots();
    assert_eq!(snapshots.len(), 1);
    assert_eq!(snapshots[0]["time"], "2024-06-01T03:00:00Z");
    workspace
        .cairn_stdin(
            &[
                "backup",
                "--stdin",
                "--stdin-name",
                "x",
                "--time",
                "yesterday",
            ],
            b"data",
        )
        .code(2)
        .stderr_contains("--time");
    assert_eq!(workspace.snapshots().len(), 1);
}
