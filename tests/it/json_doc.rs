//! docs/json.md against real output: its `shapes` block lists, per command and message type,
//! the fields every line has and the ones some lines have (`?`); every command is run with
//! `--json` and each line must match its documented shape, with no field left undocumented, so
//! the documented schema cannot drift from the code.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

use crate::support::{CHEAP_INIT, PASSWORD, TreeBuilder, Workspace};

/// One documented shape: the fields every line has, and the fields some lines have.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Shape {
    required: BTreeSet<String>,
    optional: BTreeSet<String>,
}

/// The shapes of docs/json.md's ```` ```shapes ```` block, by (command, message type). A line
/// reads `COMMAND | MESSAGE_TYPE | field field? ...`; the command `*` stands for every command.
fn documented_shapes() -> BTreeMap<(String, String), Shape> {
    let doc = include_str!("../../docs/json.md");
    let block = doc
        .split("```shapes\n")
        .nth(1)
        .expect("docs/json.md has a ```shapes block")
        .split("\n```")
        .next()
        .unwrap();
    let mut shapes = BTreeMap::new();
    for line in block.lines().filter(|line| !line.trim().is_empty()) {
        let parts: Vec<&str> = line.split('|').map(str::trim).collect();
        assert_eq!(parts.len(), 3, "docs/json.md shape line: {line}");
        let mut shape = Shape::default();
        for field in parts[2].split_whitespace() {
            match field.strip_suffix('?') {
                Some(optional) => shape.optional.insert(optional.to_owned()),
                None => shape.required.insert(field.to_owned()),
            };
        }
        let key = (parts[0].to_owned(), parts[1].to_owned());
        assert!(
            shapes.insert(key.clone(), shape).is_none(),
            "docs/json.md lists {key:?} twice"
        );
    }
    shapes
}

/// Every `--json` line of every run, by (command, message type): the field sets seen.
type Observed = BTreeMap<(String, String), Vec<BTreeSet<String>>>;

/// The command words of `args` (`key list`, `repair index`): the leading words that are no
/// option, up to the first argument that is no subcommand name.
fn command_of(args: &[&str]) -> String {
    const NESTED: [&str; 3] = ["key", "repair", "index"];
    let words: Vec<&str> = args
        .iter()
        .copied()
        .filter(|word| !word.starts_with('-'))
        .collect();
    if NESTED.contains(&words[0]) {
        format!("{} {}", words[0], words[1])
    } else {
        words[0].to_owned()
    }
}

fn record(observed: &mut Observed, workspace: &Workspace, args: &[&str]) {
    record_with(observed, workspace, args, &[]);
}

/// Like [`record`], with extra environment variables.
fn record_with(
    observed: &mut Observed,
    workspace: &Workspace,
    args: &[&str],
    env: &[(&str, &str)],
) {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let mut process = workspace.command(&full, &[]);
    process.env("CAIRN_PASSWORD", PASSWORD);
    for (name, value) in env {
        process.env(name, value);
    }
    let run = crate::support::run_command(process, None).ok();
    let command = command_of(args);
    for line in run.json_lines() {
        let kind = line["message_type"]
            .as_str()
            .unwrap_or_else(|| panic!("cairn {args:?}: no message_type: {line}"))
            .to_owned();
        let fields: BTreeSet<String> = line
            .as_object()
            .unwrap()
            .keys()
            .filter(|key| *key != "message_type")
            .cloned()
            .collect();
        let command = if kind == "requests" || kind == "pipeline_stats" {
            "*".to_owned()
        } else {
            command.clone()
        };
        observed.entry((command, kind)).or_default().push(fields);
    }
}

/// Runs every command that prints JSON, in an order that gives each something to report.
fn observe_every_command() -> Observed {
    let workspace = Workspace::new();
    let mut observed = Observed::new();
    let mut init: Vec<&str> = CHEAP_INIT.to_vec();
    init.push("-q");
    record(&mut observed, &workspace, &init);
    let tree = TreeBuilder::new(workspace.path("source"));
    tree.file("a.txt", b"alpha");
    tree.file("sub/b.log", b"beta");
    tree.symlink("link", "a.txt");
    let root = tree.root().to_string_lossy().into_owned();
    let target = workspace.path("target").to_string_lossy().into_owned();
    let scratch = workspace.path("scratch");
    fs::create_dir(&scratch).unwrap();
    let scratch = scratch.to_string_lossy().into_owned();
    let new_password = workspace.path("new-password");
    fs::write(&new_password, "another password\n").unwrap();
    let new_password = new_password.to_string_lossy().into_owned();
    let cheap_kdf = &CHEAP_INIT[1..];
    let mut key_add = vec!["key", "add", "--new-password-file", new_password.as_str()];
    key_add.extend_from_slice(cheap_kdf);
    let runs: Vec<Vec<&str>> = vec![
        vec!["backup", &root],
        vec!["backup", "--tag", "t", "--force", &root],
        vec!["snapshots"],
        vec!["snapshots", "--group-by", "host,tags", "--latest", "1"],
        vec!["ls", "latest"],
        vec!["restore", "latest", "--target", &target],
        vec![
            "restore",
            "latest",
            "--target",
            &target,
            "--dry-run",
            "--overwrite",
            "always",
        ],
        vec!["check"],
        vec!["check", "--read-data-subset", "1/2"],
        vec!["drill", "--scratch", &scratch],
        vec!["diff", "latest", "latest"],
        vec!["find", "*.log"],
        vec!["stats"],
        vec!["tag", "latest", "--add", "x", "--dry-run"],
        vec!["tag", "latest", "--add", "x"],
        vec!["rewrite", "--exclude", "*.log", "--dry-run"],
        vec!["rewrite", "--exclude", "*.log"],
        vec!["index", "rebuild"],
        vec!["key", "list"],
        key_add,
        vec!["forget", "--keep-last", "1", "--dry-run"],
        vec!["forget", "--keep-last", "1"],
        vec!["prune", "--dry-run"],
        vec!["prune"],
        vec!["repair", "index"],
        vec!["repair", "snapshots"],
        vec!["--verbose", "snapshots"],
        vec!["exit-codes"],
    ];
    for args in &runs {
        record(&mut observed, &workspace, args);
    }
    record_with(
        &mut observed,
        &workspace,
        &["snapshots"],
        &[("CAIRN_PIPELINE_STATS", "1")],
    );
    let added = workspace
        .cairn(&["key", "list", "--json"])
        .ok()
        .json_lines()
        .into_iter()
        .find(|key| key["current"] == false)
        .expect("the added key");
    let added_id = added["id"].as_str().unwrap().to_owned();
    record(&mut observed, &workspace, &["key", "remove", &added_id]);
    let mut passwd = vec![
        "key",
        "passwd",
        "--new-password-file",
        new_password.as_str(),
    ];
    passwd.extend_from_slice(cheap_kdf);
    record(&mut observed, &workspace, &passwd);
    observed
}

/// The shapes observed, in the doc's notation (to paste when output changes on purpose).
fn as_doc_lines(observed: &Observed) -> String {
    observed
        .iter()
        .map(|((command, kind), lines)| {
            let all: BTreeSet<&String> = lines.iter().flatten().collect();
            let fields: Vec<String> = all
                .into_iter()
                .map(|field| {
                    if lines.iter().all(|line| line.contains(field)) {
                        field.clone()
                    } else {
                        format!("{field}?")
                    }
                })
                .collect();
            format!("{command} | {kind} | {}", fields.join(" "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_json_line_matches_the_shape_docs_json_md_documents() {
    let documented = documented_shapes();
    let observed = observe_every_command();
    let mut problems = Vec::new();
    for ((command, kind), lines) in &observed {
        let Some(shape) = documented.get(&(command.clone(), kind.clone())) else {
            problems.push(format!("undocumented: {command} | {kind}"));
            continue;
        };
        for fields in lines {
            for missing in shape.required.difference(fields) {
                problems.push(format!("{command} | {kind}: no {missing}"));
            }
            for extra in fields {
                if !shape.required.contains(extra) && !shape.optional.contains(extra) {
                    problems.push(format!("{command} | {kind}: undocumented field {extra}"));
                }
            }
        }
    }
    // Every command run is documented, and nothing documented for them is unseen.
    let commands: BTreeSet<&String> = observed.keys().map(|(command, _)| command).collect();
    for (command, kind) in documented.keys() {
        if commands.contains(command) && !observed.contains_key(&(command.clone(), kind.clone())) {
            // Shapes of failures and warnings need a failure to appear: listed, not run.
            let rare = ["warning", "error", "dry_run"];
            if !rare.contains(&kind.as_str()) {
                problems.push(format!("documented but never printed: {command} | {kind}"));
            }
        }
    }
    problems.sort();
    problems.dedup();
    assert!(
        problems.is_empty(),
        "docs/json.md and real output disagree:\n{}\n\nobserved shapes:\n{}",
        problems.join("\n"),
        as_doc_lines(&observed)
    );
}

#[test]
fn the_shapes_block_rejects_what_it_does_not_list() {
    // The check above can fail: a field or message type missing from the doc is reported.
    let documented = documented_shapes();
    let snapshot = documented
        .get(&("snapshots".to_owned(), "snapshot".to_owned()))
        .expect("snapshots | snapshot is documented");
    assert!(snapshot.required.contains("id"));
    assert!(!snapshot.required.contains("no_such_field"));
    assert!(!documented.contains_key(&("snapshots".to_owned(), "no_such_type".to_owned())));
}
