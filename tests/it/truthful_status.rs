//! `cairn status` tells what happened: a source whose last run wrote a snapshot without some
//! entries (backup exit 3) shows "PARTIAL" with the count, not "ok"; an object-store failure
//! takes one line with each cause once (`object_store` repeats its inner errors' text at every
//! level of the chain); and the tables of `status` and `snapshots` stay aligned whatever the
//! length of hosts, tags, paths and source names.

use std::fs;
use std::path::Path;

use crate::support::{Run, TreeBuilder, Workspace, run_command};

/// Exit code of a backup that left out unreadable entries.
const EXIT_PARTIAL: i32 = 3;

/// `cairn --config CONFIG args...`.
fn with_config(workspace: &Workspace, config: &Path, args: &[&str]) -> Run {
    let mut full = vec!["--config", config.to_str().expect("utf-8")];
    full.extend_from_slice(args);
    run_command(workspace.command(&full, &[]), None)
}

/// The character column at which `needle` starts in `line`.
fn column(line: &str, needle: &str) -> Option<usize> {
    line.find(needle).map(|byte| line[..byte].chars().count())
}

#[test]
fn a_partial_run_shows_as_partial_in_status_and_its_json() {
    let workspace = Workspace::initialized();
    let tree = TreeBuilder::new(workspace.path("src"));
    tree.file("a.txt", b"kept\n");
    let missing = workspace.path("not-yet");
    let config = workspace.path("cairn.toml");
    fs::write(
        &config,
        format!(
            "state_dir = {state:?}\n\n[repository]\nurl = {repo:?}\ncache_dir = {cache:?}\n\
             store_config = false\n\n\
             [sources.files-of-a-source-with-a-long-name]\npaths = [{src:?}, {missing:?}]\n",
            state = workspace.path("state").display().to_string(),
            repo = workspace.repo.display().to_string(),
            cache = workspace.cache.display().to_string(),
            src = tree.root().display().to_string(),
            missing = missing.display().to_string(),
        ),
    )
    .expect("config");
    // Root reads every file, so the unreadable entry is a source path that is not there.
    with_config(&workspace, &config, &["run"]).code(EXIT_PARTIAL);
    let status = with_config(&workspace, &config, &["status"]).ok();
    let text = status.text();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[1].ends_with("PARTIAL: 1 entry unreadable (backup exit 3)"),
        "{text}"
    );
    assert_eq!(column(lines[1], "ok"), column(lines[0], "state"), "{text}");
    assert_eq!(
        column(lines[1], "PARTIAL"),
        column(lines[0], "last run"),
        "{text}"
    );
    let json = with_config(&workspace, &config, &["status", "--json"])
        .ok()
        .json_lines();
    let source = &json[0];
    assert_eq!(source["last_partial"], true, "{source}");
    assert_eq!(source["last_unreadable"], 1, "{source}");
    assert_eq!(source["last_ok"], true, "{source}");

    // Once every path is there, the run is whole and status says ok.
    fs::create_dir_all(&missing).expect("create");
    with_config(&workspace, &config, &["run"]).ok();
    let text = with_config(&workspace, &config, &["status"]).ok().text();
    assert!(text.lines().nth(1).unwrap().ends_with(" ok"), "{text}");
    let json = with_config(&workspace, &config, &["status", "--json"])
        .ok()
        .json_lines();
    assert_eq!(json[0]["last_partial"], false);
    assert_eq!(json[0]["last_unreadable"], 0);
}

#[test]
fn a_store_failure_takes_one_line_with_each_cause_once() {
    let workspace = Workspace::new();
    // Nothing listens on port 1: every request is refused at once.
    let config = workspace.path("cairn.toml");
    fs::write(
        &config,
        format!(
            "state_dir = {state:?}\n\n[repository]\nurl = \"s3://bucket/cairn\"\n\
             cache_dir = {cache:?}\n\
             options = {{ endpoint = \"http://127.0.0.1:1\", region = \"us-east-1\", \
             allow_http = \"true\", retries = \"0\" }}\n\n\
             [sources.files]\npaths = [\"/etc/hostname\"]\n",
            state = workspace.path("state").display().to_string(),
            cache = workspace.cache.display().to_string(),
        ),
    )
    .expect("config");
    let at_the_store = |args: &[&str]| {
        let mut full = vec!["--config", config.to_str().expect("utf-8")];
        full.extend_from_slice(args);
        let mut command = workspace.command(&full, &[]);
        command
            .env_remove("CAIRN_REPOSITORY")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test");
        run_command(command, None)
    };
    let run = at_the_store(&["run"]).failed();
    let last = run.stderr.lines().last().expect("an error line").to_owned();
    assert_eq!(last.matches("Connection refused").count(), 1, "{last}");
    let status = at_the_store(&["status"]).code(16);
    let text = status.text();
    let row = text
        .lines()
        .find(|line| line.starts_with("files"))
        .expect("the source's row");
    assert!(row.contains("FAILED: "), "{text}");
    assert_eq!(row.matches("Connection refused").count(), 1, "{row}");
    // The warning about the repository is one line too, its cause said once.
    let warning = status
        .stderr
        .lines()
        .find(|line| line.starts_with("warning: cannot read the repository"))
        .expect("warning");
    assert_eq!(
        warning.matches("Connection refused").count(),
        1,
        "{warning}"
    );
}

#[test]
fn snapshots_columns_fit_long_hosts_tags_and_paths() {
    let workspace = Workspace::initialized();
    let cases: [(&str, &[&str], &str); 3] = [
        ("h", &[], "s.dump"),
        (
            "a-host-name-much-longer-than-sixteen-characters.example",
            &["nightly"],
            "db.archive",
        ),
        (
            "db1",
            &["source:postgres-main-cluster", "nightly", "weekly"],
            "a-stream-with-a-long-name.sql",
        ),
    ];
    for (host, tags, name) in cases {
        let mut extra = vec!["--host", host];
        for tag in tags {
            extra.extend(["--tag", tag]);
        }
        workspace.backup_stdin(name, name.as_bytes(), &extra);
    }
    let text = workspace.cairn(&["snapshots"]).ok().text();
    let lines: Vec<&str> = text.lines().collect();
    let paths_at = column(lines[0], "paths");
    let tags_at = column(lines[0], "tags");
    for ((host, tags, name), line) in cases.iter().zip(&lines[1..]) {
        assert_eq!(column(line, name), paths_at, "{text}");
        assert_eq!(column(line, host), column(lines[0], "host"), "{text}");
        if let Some(first) = tags.first() {
            assert_eq!(column(line, first), tags_at, "{text}");
        }
    }
}
