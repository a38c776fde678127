//! SIGINT and SIGTERM end every command promptly (issue 12), and a `--command` source dies
//! whole, with the real binary: backup, restore, `check --read-data` and prune interrupted at
//! several points die by the signal (a shell reports 130 and 143), after which `check` passes
//! and the next backup succeeds; the processes a source command started (its children and
//! background processes) do not outlive cairn; a background process holding the command's
//! output does not hold up the backup.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::{TreeBuilder, Workspace, random_bytes};

/// How long an interrupted command may take to die, and a started process to show up: far
/// beyond what any needs on a loaded machine (a hang detector, not a speed measure).
const BOUND: Duration = Duration::from_mins(1);

/// A path quoted for `sh -c` (test paths hold no single quote).
fn quoted(path: &Path) -> String {
    format!("'{}'", path.display())
}

/// Waits up to [`BOUND`] for `child` to end.
#[track_caller]
fn wait_for(child: &mut Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + BOUND;
    loop {
        if let Some(status) = child.try_wait().expect("poll cairn") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: cairn did not end within {BOUND:?} of the signal"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether the process `pid` runs (zombies do not count).
fn runs(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|end| stat[end + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

/// Asserts that `pid` stops running (within [`BOUND`]: SIGKILL takes effect asynchronously).
#[track_caller]
fn assert_ends(pid: i32, what: &str) {
    let deadline = Instant::now() + BOUND;
    while runs(pid) {
        if Instant::now() >= deadline {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            panic!("{what}: process {pid} outlived cairn");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The pid written (with a newline) to `path`, once it is there.
#[track_caller]
fn pid_from(path: &Path) -> i32 {
    let deadline = Instant::now() + BOUND;
    loop {
        if let Ok(text) = fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text.trim().parse().expect("a pid");
        }
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn(workspace: &Workspace, args: &[&str]) -> Child {
    workspace
        .command(args, &[])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cairn starts")
}

/// Sends `signal` to `child` after `delay`; returns whether it was still running then (a
/// command that ended first must have succeeded) and checks that it then died by the signal.
#[track_caller]
fn interrupt(mut child: Child, delay: Duration, signal: Signal, what: &str) -> bool {
    let deadline = Instant::now() + delay;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("poll cairn") {
            let output = child.wait_with_output().expect("reap cairn");
            assert!(
                status.success(),
                "{what}: cairn failed before the signal ({status:?}):\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
    kill(pid, signal).expect("signal cairn");
    let status = wait_for(&mut child, what);
    // It may have completed between the last poll and the signal.
    if status.success() {
        return false;
    }
    let output = child.wait_with_output().expect("reap cairn");
    assert_eq!(
        status.signal(),
        Some(signal as i32),
        "{what}: cairn should die by {signal} (exit {} in a shell): {status:?}\n{}",
        128 + signal as i32,
        String::from_utf8_lossy(&output.stderr)
    );
    true
}

/// After an interruption: `check` passes and a backup of `source` succeeds.
#[track_caller]
fn assert_sound(workspace: &Workspace, source: &Path, what: &str) {
    let check = workspace.cairn(&["check"]);
    assert_eq!(
        check.code,
        Some(0),
        "{what}: check afterwards: {}",
        check.stderr
    );
    let backup = workspace.cairn(&["backup", &source.to_string_lossy()]);
    assert_eq!(
        backup.code,
        Some(0),
        "{what}: backup afterwards: {}",
        backup.stderr
    );
}

/// A source of about 6 MB in 24 files, with half of its files replaced by `generation`.
fn write_source(root: &Path, generation: u64) -> PathBuf {
    let tree = TreeBuilder::new(root);
    for index in 0..24u64 {
        let seed = if index % 2 == 0 {
            2000 + index
        } else {
            3000 + index + generation * 100
        };
        tree.file(
            &format!("part-{index:02}.bin"),
            &random_bytes(seed, 250_000),
        );
    }
    root.to_path_buf()
}

/// Every long-running command interrupted by SIGINT and SIGTERM at several points: cairn dies
/// by the signal, and leaves a repository that checks clean and takes the next backup.
#[test]
fn interrupted_commands_die_by_the_signal_and_leave_a_sound_repository() {
    let workspace = Workspace::initialized_with(&["--pack-size-mib", "1"]);
    let source = workspace.path("source");
    let mut generation = 0;
    write_source(&source, generation);
    workspace.cairn(&["backup", &source.to_string_lossy()]).ok();
    let mut interrupted = 0;
    let commands: [(&str, Vec<String>); 4] = [
        (
            "backup",
            vec!["backup".into(), source.to_string_lossy().into_owned()],
        ),
        (
            "restore",
            vec!["restore".into(), "latest".into(), "--target".into()],
        ),
        (
            "check --read-data",
            vec!["check".into(), "--read-data".into()],
        ),
        ("prune", vec!["prune".into()]),
    ];
    for (name, base_args) in &commands {
        for (trial, (signal, delay_ms)) in [
            (Signal::SIGINT, 0),
            (Signal::SIGTERM, 30),
            (Signal::SIGINT, 150),
            (Signal::SIGTERM, 600),
        ]
        .into_iter()
        .enumerate()
        {
            // Work for every trial: new content to back up, a snapshot to forget and prune.
            generation += 1;
            write_source(&source, generation);
            if *name != "backup" {
                workspace.cairn(&["backup", &source.to_string_lossy()]).ok();
                workspace.cairn(&["forget", "--keep-last", "1"]).ok();
            }
            let target = workspace.path(&format!("restored-{trial}"));
            let mut args: Vec<&str> = base_args.iter().map(String::as_str).collect();
            let target_text = target.to_string_lossy();
            if *name == "restore" {
                args.push(&target_text);
            }
            let what = format!("{name}, {signal} after {delay_ms} ms");
            let child = spawn(&workspace, &args);
            if interrupt(child, Duration::from_millis(delay_ms), signal, &what) {
                interrupted += 1;
            }
            assert_sound(&workspace, &source, &what);
        }
    }
    assert!(
        interrupted >= 8,
        "only {interrupted} of 16 runs were still running when signalled"
    );
}

/// A command source with a child and a background process, cairn interrupted by SIGINT and by
/// SIGTERM: no process the command started survives, no snapshot is written, and the
/// repository stays sound.
#[test]
fn a_command_source_dies_whole_when_cairn_is_interrupted() {
    let workspace = Workspace::initialized();
    let source = write_source(&workspace.path("source"), 0);
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        let child_pid = workspace.path(&format!("child-{signal}.pid"));
        let background_pid = workspace.path(&format!("background-{signal}.pid"));
        // A nested shell whose `sleep` is a child, not the shell itself (no exec), and a
        // background process of the outer shell that ignores SIGTERM.
        let command = format!(
            "(trap '' TERM; sleep 45) & echo $! > {}; sh -c 'echo x; sleep 45 & echo $! > {}; wait'",
            quoted(&background_pid),
            quoted(&child_pid)
        );
        let cairn = spawn(
            &workspace,
            &["backup", "--command", &command, "--name", "dump.sql"],
        );
        let child = pid_from(&child_pid);
        let background = pid_from(&background_pid);
        let what = format!("backup --command, {signal}");
        assert!(
            interrupt(cairn, Duration::ZERO, signal, &what),
            "{what}: ended by itself"
        );
        assert_ends(child, &what);
        assert_ends(background, &what);
        assert_sound(&workspace, &source, &what);
    }
    // Only the two backups of `source` that followed the interruptions.
    assert_eq!(
        workspace.snapshots().len(),
        2,
        "an interrupted command committed a snapshot"
    );
}

/// A command that leaves a silent background process holding its output: the backup ends
/// after the command exits (not when the background process would), with a warning, its
/// output complete, and the background process ended. One whose background process writes
/// after its exit, and one stopped on the terminal, fail without a snapshot.
#[test]
fn a_background_process_holding_the_output_does_not_hold_the_backup() {
    let workspace = Workspace::initialized();
    let pid_file = workspace.path("background.pid");
    let command = format!(
        "printf 'the whole dump'; sleep 300 & echo $! > {}",
        quoted(&pid_file)
    );
    let run = workspace
        .cairn(&[
            "backup",
            "--json",
            "--command",
            &command,
            "--name",
            "dump.sql",
        ])
        .ok();
    let warnings: Vec<serde_json::Value> = run
        .json_lines()
        .into_iter()
        .filter(|line| line["kind"] == "command_left_background_processes")
        .collect();
    assert_eq!(warnings.len(), 1, "{}", run.text());
    assert_ends(pid_from(&pid_file), "background process");
    let dumped = workspace.cairn(&["dump", "latest", "dump.sql"]).ok();
    assert_eq!(dumped.stdout, b"the whole dump");
    // Output still arriving from the background after the command exited, then cut off when
    // it goes quiet: the dump may be incomplete, so nothing is committed.
    let writer = "(sleep 1; printf more; exec sleep 300) & printf start";
    workspace
        .cairn(&["backup", "--command", writer, "--name", "cut.sql"])
        .code(15)
        .stderr_contains("kept writing to its output");
    // A command that stops to prompt on the terminal (here: stops itself as a prompt would)
    // fails instead of waiting forever.
    workspace
        .cairn(&[
            "backup",
            "--command",
            "printf x; kill -TTIN $$",
            "--name",
            "tty.sql",
        ])
        .code(15)
        .stderr_contains("stopped trying to use the terminal");
    assert_eq!(workspace.snapshots().len(), 1);
    workspace.cairn(&["check"]).ok();
}
