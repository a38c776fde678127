//! Regression: `cairn snapshots | head -1` panicked ("failed printing to stdout: Broken pipe")
//! and exited 101; so did `ls`, `ls --json`, `find --json` and `forget --json`. Output to a reader
//! that went away is now dropped quietly and the command finishes as it would have; output that
//! cannot be written for another reason (a full disk behind a redirect) is one line on stderr
//! and exit 1, never a panic.

use std::fs::File;
use std::io::Read;
use std::process::Stdio;

use crate::support::{TreeBuilder, Workspace, run_command};

/// Every command that writes lines to standard output, human and `--json`.
fn listing_commands() -> Vec<Vec<&'static str>> {
    vec![
        vec!["snapshots"],
        vec!["snapshots", "--json"],
        vec!["ls", "latest"],
        vec!["ls", "--json", "latest"],
        vec!["find", "*.txt"],
        vec!["find", "--json", "*.txt"],
        vec!["forget", "--json", "--dry-run", "--keep-last", "1"],
        vec!["forget", "--dry-run", "--keep-last", "1"],
        vec!["key", "list"],
        vec!["stats"],
        vec!["check"],
        vec!["diff", "latest", "latest"],
        vec!["diff", "--json", "latest", "latest"],
        vec!["stats", "--json"],
        vec!["check", "--json"],
        vec!["key", "list", "--json"],
        vec!["prune", "--dry-run"],
        vec!["prune", "--dry-run", "--json"],
        vec!["drill"],
        vec!["drill", "--json"],
        vec!["completions", "bash"],
        vec!["man"],
    ]
}

/// The listing commands that name files of the workspace: a backup's dry run lists every file
/// it would read, a restore's what it would create; status and metrics read a config. (`dump`
/// is no listing: a reader that goes away before the end of a dump means the stream was not
/// delivered, which it reports with exit 1.)
fn commands_on(source: &str, target: &str, config: &str) -> Vec<Vec<String>> {
    [
        vec!["backup", "--dry-run", "--force", source],
        vec!["backup", "--dry-run", "--force", "--json", source],
        vec!["restore", "--dry-run", "latest", "--target", target],
        vec![
            "restore",
            "--dry-run",
            "--json",
            "latest",
            "--target",
            target,
        ],
        vec!["--config", config, "status"],
        vec!["--config", config, "status", "--json"],
        vec!["--config", config, "metrics"],
    ]
    .iter()
    .map(|args| args.iter().map(|arg| (*arg).to_owned()).collect())
    .collect()
}

/// A repository with two snapshots of a tree of 300 files.
fn workspace_with_snapshots() -> Workspace {
    let workspace = Workspace::initialized();
    let source = workspace.path("source");
    let tree = TreeBuilder::new(&source);
    for index in 0..300 {
        tree.file(&format!("dir-{}/file-{index}.txt", index % 7), b"line\n");
    }
    workspace.backup(&[&source]);
    tree.file("late.txt", b"late\n");
    workspace.backup(&[&source]);
    workspace
}

#[test]
fn a_closed_pipe_ends_no_command_with_a_panic() {
    let workspace = workspace_with_snapshots();
    let source = workspace.path("source").to_string_lossy().into_owned();
    let target = workspace.path("target").to_string_lossy().into_owned();
    let config = workspace.path("cairn.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\n[repository]\nurl = {:?}\n\n[sources.tree]\npaths = [{source:?}]\n",
            workspace.path("state"),
            workspace.repo,
        ),
    )
    .unwrap();
    let named = commands_on(&source, &target, &config.to_string_lossy());
    let named = named
        .iter()
        .map(|args| args.iter().map(String::as_str).collect::<Vec<&str>>());
    for args in listing_commands().into_iter().chain(named) {
        // The reader goes away before cairn writes its first line: every write gets EPIPE.
        let mut child = workspace
            .command(&args, &[])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cairn starts");
        drop(child.stdout.take());
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        let status = child.wait().unwrap();
        assert!(
            !stderr.contains("panicked"),
            "cairn {args:?} panicked on a closed pipe: {stderr}"
        );
        // It ends as it would have with a reader (0, or status's 16 for a source never
        // backed up), and with output to read.
        let read = run_command(workspace.command(&args, &[]), None);
        assert!(!read.stdout.is_empty(), "cairn {args:?} printed nothing");
        assert!(
            matches!(read.code, Some(0 | 16)),
            "cairn {args:?}: {}",
            read.stderr
        );
        assert_eq!(
            status.code(),
            read.code,
            "cairn {args:?} into a closed pipe: {stderr}"
        );
    }
    // The dry runs removed and added nothing.
    assert_eq!(workspace.snapshots().len(), 2);
}

#[test]
fn a_full_disk_behind_standard_output_is_one_line_and_exit_1() {
    let workspace = workspace_with_snapshots();
    for args in [vec!["snapshots"], vec!["ls", "--json", "latest"]] {
        let output = workspace
            .command(&args, &[])
            .stdin(Stdio::null())
            .stdout(File::create("/dev/full").expect("/dev/full opens"))
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(
            stderr
                .lines()
                .filter(|line| line.contains("cannot write to standard output"))
                .count(),
            1,
            "{args:?}: {stderr}"
        );
    }
}
