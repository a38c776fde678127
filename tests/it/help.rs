//! Help and exit codes: every command's help has its global options under their own heading
//! (without the ones it ignores, which still parse) and two or more examples; `cairn
//! exit-codes`, `cairn help exit-codes` and `--help` list every exit code, and README's
//! exit-code table lists the same codes.

use std::collections::BTreeSet;

use crate::support::{TreeBuilder, Workspace};

/// The command names of `cairn --help`.
fn command_names(workspace: &Workspace) -> Vec<String> {
    let help = workspace.cairn(&["--help"]).ok().text();
    help.lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_command_shows_global_options_under_their_heading_and_examples() {
    let workspace = Workspace::new();
    let names = command_names(&workspace);
    assert!(names.len() > 20, "{names:?}");
    for name in &names {
        let help = workspace.cairn(&[name, "--help"]).ok().text();
        let examples: Vec<&str> = help
            .lines()
            .skip_while(|line| *line != "Examples:")
            .skip(1)
            .filter(|line| line.trim_start().starts_with("cairn ") || line.contains("| cairn "))
            .collect();
        assert!(examples.len() >= 2, "{name}: examples\n{help}");
        if name != "completions" && name != "man" {
            assert!(help.contains("\nGlobal options:\n"), "{name}:\n{help}");
            let options = help.split("\nGlobal options:\n").next().unwrap();
            assert!(
                !options.contains("--repo"),
                "{name}: globals outside their heading"
            );
        }
    }
}

#[test]
fn global_options_a_command_ignores_are_not_offered_but_still_accepted() {
    let workspace = Workspace::initialized();
    let help = |name: &str| workspace.cairn(&[name, "--help"]).ok().text();
    for name in ["ls", "snapshots", "find", "restore", "dump"] {
        let text = help(name);
        for ignored in ["--upload-concurrency", "--compression"] {
            assert!(!text.contains(ignored), "{name} offers {ignored}");
        }
    }
    assert!(!help("ls").contains("--append-only"));
    assert!(!help("ls").contains("--download-concurrency"));
    assert!(help("restore").contains("--download-concurrency"));
    assert!(!help("man").contains("--repo"));
    assert!(!help("exit-codes").contains("--password-file"));
    let backup = help("backup");
    assert!(backup.contains("--upload-concurrency") && backup.contains("--compression"));
    assert!(help("forget").contains("--append-only"));
    // Hidden, not removed: a script that passes them everywhere keeps working.
    let tree = TreeBuilder::new(workspace.path("data"));
    tree.file("a", b"a");
    workspace.backup(&[tree.root()]);
    workspace
        .cairn(&[
            "ls",
            "--upload-concurrency",
            "3",
            "--compression",
            "max",
            "latest",
        ])
        .ok();
    workspace.cairn(&["snapshots", "--append-only"]).ok();
}

/// The codes of README's "Exit codes" table.
fn readme_exit_codes() -> BTreeSet<u32> {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("\n## Exit codes\n")
        .nth(1)
        .expect("README has an Exit codes section");
    let section = section.split("\n## ").next().unwrap();
    section
        .lines()
        .filter_map(|line| line.strip_prefix("| "))
        .filter_map(|row| row.split(" |").next()?.trim().parse().ok())
        .collect()
}

#[test]
fn exit_codes_come_from_one_table_that_readme_matches() {
    let workspace = Workspace::new();
    let json = workspace.cairn(&["exit-codes", "--json"]).ok().json_lines();
    let codes: BTreeSet<u32> = json
        .iter()
        .map(|line| {
            assert_eq!(line["message_type"], "exit_code");
            assert!(!line["meaning"].as_str().unwrap().is_empty());
            u32::try_from(line["code"].as_u64().unwrap()).unwrap()
        })
        .collect();
    let mut expected: BTreeSet<u32> = [0, 1, 2, 3, 130, 143].into();
    expected.extend(10..=20);
    assert_eq!(codes, expected);
    assert_eq!(readme_exit_codes(), codes, "README's exit code table");

    let row_codes = |text: &str| -> BTreeSet<u32> {
        text.lines()
            .filter(|line| line.starts_with("  ") && !line.starts_with("   "))
            .filter_map(|line| line.split_whitespace().next()?.parse().ok())
            .collect()
    };
    let table = workspace.cairn(&["exit-codes"]).ok().text();
    assert_eq!(row_codes(&table), codes, "{table}");
    let help_topic = workspace.cairn(&["help", "exit-codes"]).ok().text();
    assert!(help_topic.contains(&table), "{help_topic}");
    let main_help = workspace.cairn(&["--help"]).ok().text();
    assert!(main_help.contains(&table), "{main_help}");
}

#[test]
fn the_page_for_restic_users_names_every_command() {
    let page = include_str!("../../docs/for-restic-users.md");
    let workspace = Workspace::new();
    for name in command_names(&workspace) {
        assert!(
            page.contains(&format!("`{name}")) || page.contains(&format!(" `{name} ")),
            "docs/for-restic-users.md does not mention `{name}`"
        );
    }
    // Every restic 0.14+ command has a row.
    let restic_commands = [
        "backup",
        "cache",
        "cat",
        "check",
        "copy",
        "diff",
        "dump",
        "find",
        "forget",
        "generate",
        "init",
        "key",
        "list",
        "ls",
        "migrate",
        "mount",
        "prune",
        "rebuild-index",
        "recover",
        "repair",
        "restore",
        "rewrite",
        "self-update",
        "snapshots",
        "stats",
        "tag",
        "unlock",
        "version",
    ];
    let commands_table = page
        .split("\n## Commands\n")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    for command in restic_commands {
        assert!(
            commands_table.lines().any(|row| row
                .split('|')
                .nth(1)
                .is_some_and(|cell| cell.contains(&format!("`{command}")))),
            "no row for restic's {command}"
        );
    }
}

/// Counts of one read in the singular, of several in the plural, and no `(s)`: backup,
/// restore, check, find, prune, stats and snapshots with exactly one of everything, then two.
#[test]
fn counts_agree_with_their_nouns() {
    let workspace = Workspace::initialized();
    let tree = TreeBuilder::new(workspace.path("one"));
    tree.file("only.txt", b"one file");
    let root = tree.root().to_string_lossy().into_owned();
    let target = workspace.path("target").to_string_lossy().into_owned();
    let mut said = String::new();
    let mut run = |args: &[&str]| {
        let run = workspace.cairn(args).ok();
        said.push_str(&run.text());
        said.push_str(&run.stderr);
        run.text()
    };
    let backup = run(&["backup", &root]);
    assert!(backup.starts_with("processed 1 file ("), "{backup}");
    assert!(backup.contains(", 1 directory, "), "{backup}");
    let restore = run(&["restore", "latest", "--target", &target]);
    // The directories on the way to the backed-up one are restored too.
    assert!(
        restore.starts_with("restored 1 file, 3 directories, 0 symlinks, "),
        "{restore}"
    );
    let check = run(&["check"]);
    assert!(check.starts_with("checked 1 snapshot, "), "{check}");
    assert_eq!(
        run(&["find", "only.txt"]).lines().last(),
        Some("1 match in 1 snapshot")
    );
    assert!(run(&["snapshots"]).ends_with("\n1 snapshot\n"));
    assert!(run(&["stats"]).contains(" in 1 file "));
    run(&["prune", "--dry-run"]);
    tree.file("second.txt", b"two files");
    let second = run(&["backup", &root]);
    assert!(second.starts_with("processed 2 files ("), "{second}");
    assert!(run(&["check"]).starts_with("checked 2 snapshots, "));
    assert_eq!(
        run(&["find", "*.txt"]).lines().last(),
        Some("3 matches in 2 snapshots")
    );
    for wrong in [
        "(s)",
        " 1 files",
        " 1 snapshots",
        " 1 packs",
        " 1 matches",
        " 1 directories",
        " 1 blobs",
    ] {
        assert!(!said.contains(wrong), "{wrong:?} in:\n{said}");
    }
}
