//! `--limit-upload` and `--limit-download` end to end: every way of giving them (flags, their
//! environment variables, `-o limit_upload=`, `[repository]` keys of cairn.toml) is accepted,
//! and backup, restore and check succeed with both limits against a local directory and the
//! real S3 server (moto), restoring byte for byte; bad values exit 2 with one line naming the
//! setting. That the limits hold a rate is shown by the token bucket's tests with a fake clock
//! (store/src/backend/bandwidth.rs) and measured by benches/bandwidth.sh, never timed here.

use std::fs;

use crate::backends::remote_url;
use crate::support::{CHEAP_INIT, Repo, TreeBuilder, Workspace, random_bytes, scan_tree};

/// Backs up a small tree into `location` with both limits, restores it with both limits and
/// checks the restored bytes; `how` picks how the limits are given.
fn round_trip(workspace: &Workspace, location: &str, how: &str) {
    let repo = Repo {
        workspace,
        location: location.to_owned(),
    };
    let mut init = vec!["--limit-upload", "64M"];
    init.extend_from_slice(&CHEAP_INIT);
    repo.cairn(&init).ok();
    let source = workspace.path(&format!("source-{how}"));
    let tree = TreeBuilder::new(&source);
    tree.file("big.bin", &random_bytes(1, 3 << 20));
    tree.file("small.txt", b"small");
    let target = workspace.path(&format!("restored-{how}"));
    let source_arg = source.to_string_lossy();
    let target_arg = target.to_string_lossy();
    let limits: Vec<&str> = match how {
        "flags" => vec!["--limit-upload", "32M", "--limit-download", "32768"],
        "options" => vec!["-o", "limit_upload=32MiB/s", "-o", "limit-download=32M"],
        other => panic!("unknown way {other}"),
    };
    let with = |args: &[&str]| {
        let mut full = limits.clone();
        full.extend_from_slice(args);
        repo.cairn(&full)
    };
    with(&["backup", &source_arg]).ok();
    with(&["restore", "latest", "--target", &target_arg]).ok();
    with(&["check", "--read-data"]).ok();
    let original = scan_tree(&source);
    let restored = scan_tree(&target.join(source.strip_prefix("/").unwrap()));
    assert_eq!(original, restored, "{location} ({how})");
}

#[test]
fn limits_are_accepted_and_backups_restore_under_them_locally_and_on_s3() {
    let workspace = Workspace::new();
    let local = workspace.repo.to_string_lossy().into_owned();
    round_trip(&workspace, &local, "flags");
    let second = workspace.path("repo2").to_string_lossy().into_owned();
    round_trip(&workspace, &second, "options");
    if let Some(url) = remote_url("CAIRN_TEST_S3_URL", "bandwidth-flags") {
        round_trip(&workspace, &url, "flags");
    }
    if let Some(url) = remote_url("CAIRN_TEST_S3_URL", "bandwidth-options") {
        round_trip(&workspace, &url, "options");
    }
}

#[test]
fn limits_from_the_environment_and_the_config_file_are_used() {
    let workspace = Workspace::initialized();
    let source = workspace.path("d");
    TreeBuilder::new(&source).file("f", &random_bytes(2, 100_000));
    let source_arg = source.to_string_lossy();
    let mut command = workspace.command(&["backup", &source_arg], &[]);
    command
        .env("CAIRN_LIMIT_UPLOAD", "10M")
        .env("CAIRN_LIMIT_DOWNLOAD", "10M");
    crate::support::run_command(command, None).ok();
    let config = workspace.path("cairn.toml");
    fs::write(
        &config,
        format!(
            "[repository]\nurl = {:?}\nlimit_upload = \"20M\"\nlimit_download = \"4096\"\n",
            workspace.repo
        ),
    )
    .unwrap();
    let config_arg = config.to_string_lossy();
    workspace
        .cairn(&["--config", &config_arg, "backup", &source_arg])
        .ok();
    workspace
        .cairn(&["--config", &config_arg, "check", "--read-data"])
        .ok();
}

#[test]
fn bad_limits_exit_2_with_one_line() {
    let workspace = Workspace::initialized();
    let source = workspace.path("d");
    TreeBuilder::new(&source).file("f", b"f");
    let source_arg = source.to_string_lossy();
    let one_line = |run: crate::support::Run, needle: &str| {
        let run = run.code(2);
        let lines: Vec<&str> = run
            .stderr
            .lines()
            .filter(|line| !line.trim().is_empty() && !line.starts_with("For more information"))
            .collect();
        assert_eq!(lines.len(), 1, "{}", run.stderr);
        assert!(lines[0].contains(needle), "{needle}: {}", run.stderr);
    };
    for bad in ["0", "fast", "-1", "2Mbit", ""] {
        for flag in ["--limit-upload", "--limit-download"] {
            let given = format!("{flag}={bad}");
            one_line(workspace.cairn(&["backup", &given, &source_arg]), flag);
        }
        let option = format!("limit_download={bad}");
        one_line(
            workspace.cairn(&["-o", &option, "restore", "latest", "--target", "unused"]),
            "limit_download",
        );
        let mut command = workspace.command(&["snapshots"], &[]);
        command.env("CAIRN_LIMIT_DOWNLOAD", bad);
        if !bad.is_empty() {
            one_line(crate::support::run_command(command, None), "limit-download");
        }
        let config = workspace.path("bad.toml");
        fs::write(&config, format!("[repository]\nlimit_upload = {bad:?}\n")).unwrap();
        one_line(
            workspace.cairn(&["--config", &config.to_string_lossy(), "snapshots"]),
            "limit_upload",
        );
    }
}
