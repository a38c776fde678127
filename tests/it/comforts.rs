//! Everyday comforts end to end: shell completions and man pages generated from the command-line
//! definitions, restore filters, diff, find, stats, `--json` on every command and progress bars.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{
    TreeBuilder, Workspace, compressible_text, files_below, json_u64, objects, random_bytes,
    scan_tree,
};

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

/// A small tree for the filter, diff and find tests; returns its root.
fn filter_tree(workspace: &Workspace) -> PathBuf {
    let source = workspace.path("source");
    let tree = TreeBuilder::new(&source);
    tree.file("top.txt", b"top\n");
    tree.file("docs/guide.txt", b"guide\n");
    tree.file("docs/build.log", &random_bytes(1, 3_000));
    tree.file("src/deep/main.rs", b"fn main() {}\n");
    tree.file("src/deep/notes.txt", b"notes\n");
    tree.file("src/run.log", b"log\n");
    tree.file("logs/a.log", b"a\n");
    tree.dir("empty");
    tree.symlink("src/link", "deep/main.rs");
    source
}

/// The snapshot id of a backup's `--json` summary.
fn snapshot_id(summary: &serde_json::Value) -> String {
    summary["snapshot_id"].as_str().unwrap().to_owned()
}

/// [`filter_tree`] backed up once: the tree's root and the snapshot id.
fn backed_up_filter_tree(workspace: &Workspace) -> (PathBuf, String) {
    let source = filter_tree(workspace);
    let id = snapshot_id(&workspace.backup(&[&source]));
    (source, id)
}

/// Restores `snapshot:source` into a fresh target with `filters`; returns the restored entries
/// (relative paths, the target itself left out), each checked to equal the source's entry
/// (content, mode, mtime: directories on the way keep their recorded metadata).
#[track_caller]
fn restore_with(
    workspace: &Workspace,
    source: &Path,
    name: &str,
    filters: &[&str],
) -> BTreeSet<String> {
    let target = workspace.path(name);
    let spec = format!("latest:{}", source.display());
    let mut args = vec!["restore", spec.as_str(), "--target"];
    let target_text = target.to_string_lossy().into_owned();
    args.push(&target_text);
    args.extend_from_slice(filters);
    workspace.cairn(&args).ok();
    let original = scan_tree(source);
    scan_tree(&target)
        .into_iter()
        .filter(|(relative, _)| !relative.as_os_str().is_empty())
        .map(|(relative, entry)| {
            let expected = &original[&relative];
            assert_eq!(&entry, expected, "{}", relative.display());
            relative.to_string_lossy().into_owned()
        })
        .collect()
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|name| (*name).to_owned()).collect()
}

/// `restore --include` takes exactly the matching entries (a subtree by anchored path, files by a
/// name glob) with the directories on the way; `--exclude` leaves matches and everything below
/// them out; both combine; every restored file is still verified byte for byte.
#[test]
fn restore_include_and_exclude() {
    let workspace = Workspace::initialized();
    let source = filter_tree(&workspace);
    workspace.backup(&[&source]);
    let src = format!("{}/src", source.display());

    assert_eq!(
        restore_with(&workspace, &source, "subtree", &["--include", &src]),
        names(&[
            "src",
            "src/deep",
            "src/deep/main.rs",
            "src/deep/notes.txt",
            "src/link",
            "src/run.log"
        ])
    );
    assert_eq!(
        restore_with(&workspace, &source, "texts", &["--include", "*.txt"]),
        names(&[
            "top.txt",
            "docs",
            "docs/guide.txt",
            "src",
            "src/deep",
            "src/deep/notes.txt"
        ]),
        "directories on the way are created, nothing else"
    );
    assert_eq!(
        restore_with(
            &workspace,
            &source,
            "no-logs",
            &["--exclude", "*.log", "--exclude", "deep"]
        ),
        names(&[
            "top.txt",
            "docs",
            "docs/guide.txt",
            "src",
            "src/link",
            "logs",
            "empty"
        ])
    );
    assert_eq!(
        restore_with(
            &workspace,
            &source,
            "combined",
            &[
                "--include",
                &src,
                "--include",
                "docs/*.txt",
                "--exclude",
                "*.log",
                "--exclude",
                "link"
            ]
        ),
        names(&[
            "docs",
            "docs/guide.txt",
            "src",
            "src/deep",
            "src/deep/main.rs",
            "src/deep/notes.txt"
        ])
    );
    let unmatched = workspace.path("unmatched").to_string_lossy().into_owned();
    let restore_including = |pattern: &str| {
        workspace.cairn(&[
            "restore",
            "latest",
            "--target",
            &unmatched,
            "--include",
            pattern,
        ])
    };
    restore_including("*.nothing")
        .ok()
        .stderr_contains("no entry of the snapshot matches");
    restore_including("a[")
        .code(1)
        .stderr_contains("invalid pattern");
}

/// `cairn diff` between two backups lists exactly the added (+), removed (-), modified (M),
/// type-changed (T) and metadata-only (U) entries with totals; `--json` gives the same as
/// `change` lines and a summary.
#[test]
fn diff_of_two_snapshots() {
    let workspace = Workspace::initialized();
    let (source, first) = backed_up_filter_tree(&workspace);
    fs::write(source.join("docs/guide.txt"), b"a longer guide\n").unwrap();
    fs::remove_dir_all(source.join("logs")).unwrap();
    fs::create_dir(source.join("new")).unwrap();
    fs::write(source.join("new/file"), b"12345").unwrap();
    fs::remove_file(source.join("src/link")).unwrap();
    fs::write(source.join("src/link"), b"").unwrap();
    fs::set_permissions(source.join("top.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    let second = snapshot_id(&workspace.backup(&[&source]));
    let root = source.display().to_string();
    let text = workspace.cairn(&["diff", &first, &second]).ok().text();
    let lines: Vec<&str> = text.lines().collect();
    let expected: Vec<String> = [
        ("M", "/docs/guide.txt"),
        ("-", "/logs/"),
        ("-", "/logs/a.log"),
        ("+", "/new/"),
        ("+", "/new/file"),
        ("T", "/src/link"),
        ("U", "/top.txt"),
    ]
    .iter()
    .map(|(marker, path)| format!("{marker}    {root}{path}"))
    .collect();
    assert_eq!(&lines[..lines.len() - 1], expected.as_slice(), "{text}");
    assert!(
        lines[lines.len() - 1]
            .contains("2 added, 2 removed, 1 modified, 1 type changed, 1 metadata only"),
        "{text}"
    );
    let run = workspace.cairn(&["diff", "--json", &first, &second]).ok();
    let json = run.json_lines();
    let changes: Vec<(&str, &str)> = json
        .iter()
        .filter(|line| line["message_type"] == "change")
        .map(|line| {
            (
                line["change"].as_str().unwrap(),
                line["path"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(changes.len(), 7);
    assert!(changes.contains(&("type_changed", &*format!("{root}/src/link"))));
    let summary = run.summary();
    assert_eq!(summary["added"], 2);
    assert_eq!(summary["bytes_added"], 5 + 15 - 6);
    assert_eq!(
        workspace
            .cairn(&["diff", &second, &second])
            .ok()
            .text()
            .lines()
            .count(),
        1,
        "identical snapshots: the totals line alone"
    );
}

/// `cairn stats`: raw size counts every snapshot, unique files count a content once, the
/// deduplicated size is the distinct blobs' plaintext (the unique contents plus the small trees),
/// the stored size is less for compressible data, and the repository totals match the files on
/// disk; a snapshot argument narrows the count.
#[test]
fn stats_of_raw_deduplicated_and_stored_sizes() {
    let workspace = Workspace::initialized();
    let source = workspace.path("source");
    let tree = TreeBuilder::new(&source);
    let random = random_bytes(3, 200_000);
    let text = compressible_text(4, 300_000);
    tree.file("random", &random);
    tree.file("copy of random", &random);
    tree.file("log.txt", &text);
    workspace.backup(&[&source]);
    fs::write(source.join("added.txt"), b"twelve bytes").unwrap();
    workspace.backup(&[&source]);

    let all = workspace.cairn(&["stats", "--json"]).ok().summary();
    let one_snapshot = 200_000 * 2 + 300_000;
    assert_eq!(json_u64(&all, "snapshots"), 2);
    assert_eq!(json_u64(&all, "files"), 3 + 4);
    assert_eq!(json_u64(&all, "raw_bytes"), one_snapshot * 2 + 12);
    assert_eq!(json_u64(&all, "unique_files"), 3);
    let unique = 200_000 + 300_000 + 12;
    assert_eq!(json_u64(&all, "unique_files_bytes"), unique);
    let deduplicated = json_u64(&all, "deduplicated_bytes");
    assert!(
        (unique..unique + 16_384).contains(&deduplicated),
        "contents plus trees: {deduplicated}"
    );
    let stored = json_u64(&all, "stored_bytes");
    assert!(stored < deduplicated - 100_000, "the log compresses: {all}");
    assert!(json_u64(&all, "tree_blobs") >= 2);
    assert_eq!(json_u64(&all, "blobs_not_indexed"), 0);
    let ratio = all["deduplication_ratio"].as_f64().unwrap();
    #[allow(clippy::cast_precision_loss)]
    let expected_ratio = (one_snapshot * 2 + 12) as f64 / deduplicated as f64;
    assert!((ratio - expected_ratio).abs() < 1e-9, "{all}");
    let packs = objects(&workspace.repo, "data");
    assert_eq!(json_u64(&all, "packs"), packs.len() as u64);
    let on_disk: u64 = files_below(&workspace.repo)
        .iter()
        .map(|path| fs::metadata(path).unwrap().len())
        .sum();
    assert_eq!(json_u64(&all, "repository_bytes"), on_disk);

    let latest = workspace
        .cairn(&["stats", "--json", "latest"])
        .ok()
        .summary();
    assert_eq!(json_u64(&latest, "snapshots"), 1);
    assert_eq!(json_u64(&latest, "raw_bytes"), one_snapshot + 12);
    let text_output = workspace.cairn(&["stats"]).ok().text();
    assert!(text_output.contains("deduplicated size") && text_output.contains("stored size"));
}

/// `cairn find` lists every matching entry of every snapshot (name globs at any depth, anchored
/// paths), narrowed by `--snapshot`, `--host` and `--path`; `--json` gives `match` lines.
#[test]
fn find_in_snapshots() {
    let workspace = Workspace::initialized();
    let (source, first) = backed_up_filter_tree(&workspace);
    fs::write(source.join("docs/second.log"), b"second\n").unwrap();
    let root = source.display().to_string();
    workspace
        .cairn(&["backup", "-q", "--host", "elsewhere", &root])
        .ok();
    let matches = |args: &[&str]| -> Vec<(String, String)> {
        let mut full = vec!["find", "--json"];
        full.extend_from_slice(args);
        workspace
            .cairn(&full)
            .ok()
            .json_lines()
            .into_iter()
            .filter(|line| line["message_type"] == "match")
            .map(|line| {
                (
                    line["snapshot_id"].as_str().unwrap()[..8].to_owned(),
                    line["path"].as_str().unwrap().replacen(&root, "", 1),
                )
            })
            .collect()
    };
    let logs = matches(&["*.log"]);
    let short = &first[..8];
    let in_first: Vec<&str> = logs
        .iter()
        .filter(|(id, _)| id == short)
        .map(|(_, path)| path.as_str())
        .collect();
    assert_eq!(
        in_first,
        vec!["/docs/build.log", "/logs/a.log", "/src/run.log"]
    );
    assert_eq!(logs.len(), 3 + 4, "{logs:?}");
    assert_eq!(matches(&["*.log", "--host", "elsewhere"]).len(), 4);
    assert_eq!(matches(&["*.log", "--snapshot", &first]).len(), 3);
    assert_eq!(matches(&["*.log", "--path", "/nowhere"]).len(), 0);
    let anchored = format!("{root}/src/*");
    assert_eq!(
        matches(&[&anchored, "--snapshot", &first]),
        vec![
            (short.to_owned(), "/src/deep".to_owned()),
            (short.to_owned(), "/src/link".to_owned()),
            (short.to_owned(), "/src/run.log".to_owned()),
        ]
    );
    let run = workspace.cairn(&["find", "main.rs", "deep/notes.txt"]).ok();
    let text = run.text();
    assert_eq!(text.lines().count(), 2 * 2 + 1, "{text}");
    assert!(text.ends_with("4 matches in 2 snapshots\n"), "{text}");
}

/// Runs `cairn --json args...` (with `password`), asserts success, that every stdout line is a
/// JSON object with a string `message_type` and that the types are among `types` (documented in
/// docs/json.md), each at least once.
#[track_caller]
fn assert_json_lines(workspace: &Workspace, password: &str, args: &[&str], types: &[&str]) {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let run = workspace.cairn_password(&full, password).ok();
    let mut seen = BTreeSet::new();
    for line in run.json_lines() {
        let kind = line["message_type"]
            .as_str()
            .unwrap_or_else(|| panic!("cairn {args:?}: no message_type in {line}"));
        assert!(line.is_object());
        assert!(
            types.contains(&kind),
            "cairn {args:?}: undocumented {kind}: {line}"
        );
        seen.insert(kind.to_owned());
    }
    assert_eq!(seen, names(types), "cairn {args:?}");
}

/// Every command prints, with `--json`, only JSON objects with a `message_type`, one a line, of
/// the types docs/json.md documents (`dump` writes the file's bytes; `completions` and `man`
/// write scripts and pages).
#[test]
fn json_output_of_every_command() {
    let workspace = Workspace::new();
    let mut init: Vec<&str> = crate::support::CHEAP_INIT.to_vec();
    init.push("-q");
    let password = crate::support::PASSWORD;
    assert_json_lines(&workspace, password, &init, &["initialized"]);
    let source = filter_tree(&workspace);
    let root = source.to_string_lossy().into_owned();
    let target = workspace.path("target").to_string_lossy().into_owned();
    let scratch = workspace.path("scratch");
    fs::create_dir(&scratch).unwrap();
    let scratch = scratch.to_string_lossy().into_owned();
    let new_password = workspace.path("new-password");
    fs::write(&new_password, "another password\n").unwrap();
    let new_password = new_password.to_string_lossy().into_owned();
    // The key cost options of `init` (everything after the command name).
    let cheap_kdf = &crate::support::CHEAP_INIT[1..];
    let mut key_add = vec!["key", "add", "--new-password-file", new_password.as_str()];
    key_add.extend_from_slice(cheap_kdf);

    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["backup", &root], vec!["summary"]),
        (vec!["backup", "--tag", "t", &root], vec!["summary"]),
        (vec!["snapshots"], vec!["snapshot"]),
        (vec!["ls", "latest"], vec!["node"]),
        (
            vec!["restore", "latest", "--target", &target],
            vec!["summary"],
        ),
        (vec!["check"], vec!["summary"]),
        (vec!["check", "--read-data"], vec!["summary"]),
        (vec!["drill", "--scratch", &scratch], vec!["summary"]),
        (vec!["diff", "latest", "latest"], vec!["summary"]),
        (vec!["find", "*.log"], vec!["match", "summary"]),
        (vec!["stats"], vec!["summary"]),
        (vec!["index", "rebuild"], vec!["summary"]),
        (vec!["key", "list"], vec!["key"]),
        (key_add, vec!["key_added"]),
        (
            vec!["forget", "--keep-last", "1", "--dry-run"],
            vec!["snapshot", "summary"],
        ),
        (
            vec!["forget", "--keep-last", "1"],
            vec!["snapshot", "summary"],
        ),
        (vec!["prune", "--dry-run"], vec!["prune"]),
        (vec!["prune"], vec!["prune"]),
        (vec!["repair", "index"], vec!["summary"]),
        (vec!["repair", "snapshots"], vec!["summary"]),
        (vec!["--verbose", "snapshots"], vec!["snapshot", "requests"]),
    ];
    for (args, types) in &cases {
        assert_json_lines(&workspace, password, args, types);
    }
    let added = workspace
        .cairn(&["key", "list", "--json"])
        .ok()
        .json_lines()
        .into_iter()
        .find(|key| key["current"] == false)
        .expect("the added key");
    let added_id = added["id"].as_str().unwrap().to_owned();
    assert_json_lines(
        &workspace,
        password,
        &["key", "remove", &added_id],
        &["key_removed"],
    );
    let mut passwd = vec![
        "key",
        "passwd",
        "--new-password-file",
        new_password.as_str(),
    ];
    passwd.extend_from_slice(cheap_kdf);
    assert_json_lines(&workspace, password, &passwd, &["password_changed"]);
}

/// Without a terminal no progress is drawn: a backup prints its three summary lines on stdout and
/// nothing on stderr; restore and `check --read-data` print nothing on stderr either.
#[test]
fn no_progress_without_a_terminal() {
    let workspace = Workspace::initialized();
    let source = filter_tree(&workspace);
    let root = source.to_string_lossy().into_owned();
    let backup = workspace.cairn(&["backup", &root]).ok();
    assert_eq!(backup.stderr, "");
    let lines: Vec<String> = backup.text().lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].starts_with("processed ") && lines[2].starts_with("snapshot "));
    let target = workspace.path("target").to_string_lossy().into_owned();
    let restore = workspace
        .cairn(&["restore", "latest", "--target", &target])
        .ok();
    assert_eq!(restore.stderr, "");
    assert_eq!(restore.text().lines().count(), 1);
    let check = workspace.cairn(&["check", "--read-data"]).ok();
    assert_eq!(check.stderr, "");
}

/// Runs `cairn args...` under a pseudo-terminal (`script` from util-linux); returns everything
/// the terminal received.
fn on_terminal(workspace: &Workspace, args: &[&str]) -> String {
    let command_line = std::iter::once(crate::support::cairn_binary())
        .chain(args.iter().copied())
        .map(|word| format!("'{word}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let output = Command::new("script")
        .args(["-qec", &command_line, "/dev/null"])
        .env("CAIRN_REPOSITORY", &workspace.repo)
        .env("CAIRN_PASSWORD", crate::support::PASSWORD)
        .env("CAIRN_CACHE_DIR", &workspace.cache)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run script");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "cairn {args:?} on a terminal: {text}"
    );
    text
}

/// On a terminal, backup, restore and `check --read-data` draw a progress line (files, bytes,
/// rate); `--quiet` and `--json` draw none.
#[test]
fn progress_on_a_terminal() {
    if !installed("script") {
        eprintln!("skipped: no `script` (util-linux) to give cairn a terminal");
        return;
    }
    let workspace = Workspace::initialized();
    let source = workspace.path("source");
    TreeBuilder::new(&source).file("data", &random_bytes(9, 4 << 20));
    let root = source.to_string_lossy().into_owned();
    let drawn = |text: &str| text.contains("B/s");
    let backup = on_terminal(&workspace, &["backup", &root]);
    assert!(drawn(&backup), "no progress line: {backup}");
    assert!(
        backup.contains("1 file") && !backup.contains("1 files"),
        "{backup}"
    );
    let target = workspace.path("target").to_string_lossy().into_owned();
    let restore = on_terminal(&workspace, &["restore", "latest", "--target", &target]);
    assert!(drawn(&restore) && restore.contains("4.00 MiB"), "{restore}");
    let check = on_terminal(&workspace, &["check", "--read-data"]);
    assert!(drawn(&check) && check.contains("packs"), "{check}");
    let quiet = on_terminal(&workspace, &["backup", "--quiet", "--force", &root]);
    assert!(!drawn(&quiet), "--quiet draws nothing: {quiet}");
    let json = on_terminal(&workspace, &["backup", "--json", "--force", &root]);
    assert!(!drawn(&json), "--json draws nothing: {json}");
    for line in json.lines().filter(|line| !line.trim().is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line.trim()).expect("a JSON line");
        assert!(value["message_type"].is_string());
    }
}
