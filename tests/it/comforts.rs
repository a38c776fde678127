//! Everyday comforts end to end: shell completions and man pages generated from the command-line
//! definitions, restore filters, diff, find, stats, `--json` on every command and progress bars.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::support::Workspace;

/// Whether `program` runs here (`program --version` exits 0).
fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success())
}

/// Asserts that a shell accepts `script` syntactically (`SHELL -n FILE`).
#[track_caller]
fn assert_shell_parses(shell: &str, script: &str, directory: &Path) {
    let path = directory.join(format!("cairn.{shell}"));
    fs::write(&path, script).unwrap();
    let output = Command::new(shell).arg("-n").arg(&path).output().unwrap();
    assert!(
        output.status.success(),
        "{shell} -n rejects the completion script: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `cairn completions SHELL` prints a script for bash, zsh and fish that names the subcommands
/// and their options, and that the shell parses (bash always; zsh and fish where installed).
#[test]
fn completions_for_bash_zsh_and_fish() {
    let workspace = Workspace::new();
    for shell in ["bash", "zsh", "fish"] {
        let script = workspace.cairn(&["completions", shell]).ok().text();
        for word in [
            "backup",
            "restore",
            "snapshots",
            "forget",
            "completions",
            "keep-daily",
        ] {
            assert!(
                script.contains(word),
                "the {shell} script does not mention {word}"
            );
        }
        if shell == "bash" || installed(shell) {
            assert_shell_parses(shell, &script, workspace.root());
        }
    }
    assert!(
        workspace
            .cairn(&["completions", "bash"])
            .ok()
            .text()
            .contains("complete -F _cairn"),
        "the bash script registers its completion function"
    );
    workspace
        .cairn(&["completions", "tcsh"])
        .code(2)
        .stderr_contains("invalid value");
}

/// `cairn man` prints a roff page naming the commands; `--dir` writes one page per command.
#[test]
fn man_pages_from_the_command_definitions() {
    let workspace = Workspace::new();
    let page = workspace.cairn(&["man"]).ok().text();
    let title = page
        .lines()
        .find(|line| line.starts_with(".TH"))
        .expect("a .TH line");
    assert!(title.starts_with(".TH cairn 1"), "{title}");
    assert!(page.contains("backup") && page.contains("restore"));
    let directory = workspace.path("man");
    workspace
        .cairn(&["man", "--dir", &directory.to_string_lossy()])
        .ok();
    for name in [
        "cairn.1",
        "cairn-backup.1",
        "cairn-restore.1",
        "cairn-key-add.1",
    ] {
        let text = fs::read_to_string(directory.join(name)).unwrap();
        assert!(text.contains(".TH"), "{name} is a man page");
    }
    let restore = fs::read_to_string(directory.join("cairn-restore.1")).unwrap();
    assert!(
        restore.contains("target"),
        "the restore page lists its options"
    );
}
