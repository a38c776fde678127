//! Snapshot selection on every command that takes snapshots: a matrix of hosts × tags × paths ×
//! commands where `latest` (with and without a named path) must be the newest snapshot the
//! flags select that holds the path, and the lists exactly the selected ones; no match is exit
//! 20 with a message naming the snapshot and the selection; `--source` means a config source's
//! tag and host; the stored config is never `latest` unless `--tag cairn:config` asks for it;
//! and `dump latest app.archive` works with the README's multi-source config when another
//! source ran last.

use std::fs;

use crate::support::{Run, Workspace, run_command};

/// Exit code when no snapshot matches the id, `latest` or selection, or the named path.
const EXIT_NO_MATCH: i32 = 20;
/// Exit code of a usage error.
const EXIT_USAGE: i32 = 2;
/// The stream every stream snapshot of the matrix holds.
const STREAM: &str = "s1.dump";

/// One snapshot of the matrix, as the test knows it.
#[derive(Debug, Clone)]
struct Made {
    id: String,
    host: &'static str,
    tags: &'static [&'static str],
    /// A stream snapshot (of [`STREAM`]) or one of the data directory.
    stream: bool,
    /// What its stream or `data/file.txt` holds: unique per snapshot.
    content: Vec<u8>,
}

/// A selection as flags, and the same rules written out plainly.
#[derive(Debug, Clone, Copy)]
struct Choice {
    hosts: &'static [&'static str],
    /// Each entry is one `--tag` flag (comma-separated: all of them).
    tags: &'static [&'static str],
    /// `--path` flags: the backed-up paths must include each (`DATA` is the data directory).
    paths: &'static [&'static str],
}

impl Choice {
    fn flags(&self, data: &str) -> Vec<String> {
        let mut flags = Vec::new();
        for host in self.hosts {
            flags.extend(["--host".to_owned(), (*host).to_owned()]);
        }
        for tags in self.tags {
            flags.extend(["--tag".to_owned(), (*tags).to_owned()]);
        }
        for path in self.paths {
            let path = if *path == "DATA" { data } else { path };
            flags.extend(["--path".to_owned(), path.to_owned()]);
        }
        flags
    }

    fn selects(&self, made: &Made) -> bool {
        let host = self.hosts.is_empty() || self.hosts.contains(&made.host);
        let tags = self.tags.is_empty()
            || self.tags.iter().any(|list| {
                list.split(',')
                    .filter(|tag| !tag.is_empty())
                    .all(|tag| made.tags.contains(&tag))
                    && (!list.is_empty() || made.tags.is_empty())
            });
        let paths = self.paths.iter().all(|path| match *path {
            "DATA" => !made.stream,
            STREAM => made.stream,
            _ => false,
        });
        host && tags && paths
    }
}

/// Runs `cairn args... flags...`.
fn cairn_with(workspace: &Workspace, args: &[&str], flags: &[String]) -> Run {
    let mut full: Vec<&str> = args.to_vec();
    full.extend(flags.iter().map(String::as_str));
    workspace.cairn(&full)
}

/// Backs up 12 snapshots, an hour apart: hosts h1, h2 × tags none, `a`, `a,b` × a stream and
/// the data directory, in an interleaved order.
fn matrix(workspace: &Workspace) -> Vec<Made> {
    let data = workspace.path("data");
    fs::create_dir_all(&data).expect("data dir");
    let mut made = Vec::new();
    let tag_lists: [&'static [&'static str]; 3] = [&[], &["a"], &["a", "b"]];
    let mut hour = 0;
    for tags in tag_lists {
        for stream in [true, false] {
            for host in ["h1", "h2"] {
                hour += 1;
                // Lengths differ, so the directory backup never takes a file as unchanged.
                let content = format!("snapshot {hour}\n").repeat(hour).into_bytes();
                let time = format!("2026-01-01T{hour:02}:00:00Z");
                let mut args = vec!["backup", "--json", "--host", host, "--time", &time];
                for tag in tags {
                    args.extend(["--tag", tag]);
                }
                let summary = if stream {
                    args.extend(["--stdin", "--name", STREAM]);
                    workspace.cairn_stdin(&args, &content).ok().summary()
                } else {
                    fs::write(data.join("file.txt"), &content).expect("data file");
                    let data = data.to_str().expect("utf-8");
                    args.push(data);
                    workspace.cairn(&args).ok().summary()
                };
                made.push(Made {
                    id: summary["snapshot_id"].as_str().expect("id").to_owned(),
                    host,
                    tags,
                    stream,
                    content,
                });
            }
        }
    }
    made
}

const CHOICES: [Choice; 9] = [
    Choice {
        hosts: &[],
        tags: &[],
        paths: &[],
    },
    Choice {
        hosts: &["h1"],
        tags: &[],
        paths: &[],
    },
    Choice {
        hosts: &["h1", "h2"],
        tags: &["a"],
        paths: &[],
    },
    Choice {
        hosts: &[],
        tags: &["a,b"],
        paths: &[],
    },
    Choice {
        hosts: &["h2"],
        tags: &["b", ""],
        paths: &[],
    },
    Choice {
        hosts: &[],
        tags: &[],
        paths: &["DATA"],
    },
    Choice {
        hosts: &["h1"],
        tags: &["a"],
        paths: &[STREAM],
    },
    Choice {
        hosts: &["h3"],
        tags: &[],
        paths: &[],
    },
    Choice {
        hosts: &[],
        tags: &["a,c"],
        paths: &[],
    },
];

#[test]
fn every_command_takes_the_selection_and_latest_is_the_newest_selected_snapshot_holding_the_path() {
    let workspace = Workspace::initialized();
    let made = matrix(&workspace);
    let data = workspace.path("data");
    let data_text = data.to_str().expect("utf-8").to_owned();
    let file = format!("{data_text}/file.txt");
    for choice in CHOICES {
        let flags = choice.flags(&data_text);
        let selected: Vec<&Made> = made.iter().filter(|made| choice.selects(made)).collect();
        let context = format!("{choice:?}");

        // The lists: snapshots, stats, find.
        let listed: Vec<String> = cairn_with(&workspace, &["snapshots", "--json"], &flags)
            .ok()
            .json_lines()
            .iter()
            .map(|line| line["id"].as_str().expect("id").to_owned())
            .collect();
        let expected: Vec<String> = selected.iter().map(|made| made.id.clone()).collect();
        assert_eq!(listed, expected, "{context}");
        let stats = cairn_with(&workspace, &["stats", "--json"], &flags)
            .ok()
            .summary();
        assert_eq!(stats["snapshots"], selected.len(), "{context}");
        let found = cairn_with(&workspace, &["find", "--json", "file.txt"], &flags)
            .ok()
            .summary();
        assert_eq!(found["snapshots_searched"], selected.len(), "{context}");
        assert_eq!(
            found["matches"],
            selected.iter().filter(|made| !made.stream).count(),
            "{context}"
        );

        // `latest` with no path: the newest selected snapshot.
        let newest = selected.last();
        let drilled = cairn_with(
            &workspace,
            &[
                "drill",
                "--json",
                "--scratch",
                workspace.root().to_str().unwrap(),
            ],
            &flags,
        );
        let diffed = cairn_with(&workspace, &["diff", "--json", "latest", "latest"], &flags);
        let counted = cairn_with(&workspace, &["stats", "--json", "latest"], &flags);
        if let Some(newest) = newest {
            assert_eq!(
                drilled.ok().summary()["snapshot_id"],
                *newest.id,
                "{context}"
            );
            assert_eq!(
                diffed.ok().summary()["new_snapshot"],
                *newest.id,
                "{context}"
            );
            assert_eq!(counted.ok().summary()["snapshots"], 1, "{context}");
        } else {
            let wanted = format!("latest: no snapshot among {}", flags.join(" "));
            for run in [drilled, diffed, counted] {
                run.code(EXIT_NO_MATCH).stderr_contains(&wanted);
            }
        }

        // `latest` with a path or stream: the newest selected snapshot that holds it.
        for (path, stream) in [(STREAM, true), (file.as_str(), false)] {
            let holder = selected.iter().rev().find(|made| made.stream == stream);
            let dumped = cairn_with(&workspace, &["dump", "latest", path], &flags);
            let listed = cairn_with(&workspace, &["ls", "--json", "latest", path], &flags);
            let target = workspace.path(&format!("restored-{}", listed.args.len()));
            let _ = fs::remove_dir_all(&target);
            let restored = cairn_with(
                &workspace,
                &[
                    "restore",
                    &format!("latest:{path}"),
                    "--target",
                    target.to_str().unwrap(),
                ],
                &flags,
            );
            match holder {
                Some(holder) => {
                    assert_eq!(dumped.ok().stdout, holder.content, "{context} {path}");
                    let nodes = listed.ok().json_lines();
                    assert_eq!(nodes.len(), 1, "{context} {path}");
                    assert_eq!(nodes[0]["size"], holder.content.len(), "{context} {path}");
                    restored.ok();
                    // A restored path lands directly in the target.
                    let back = target.join(if stream { STREAM } else { "file.txt" });
                    assert_eq!(fs::read(&back).expect("restored"), holder.content);
                }
                None => {
                    for run in [dumped, listed, restored] {
                        run.code(EXIT_NO_MATCH)
                            .stderr_contains(&format!("latest: no snapshot holds {path} among"));
                    }
                }
            }
        }

        // An id outside the selection is refused, naming the snapshot and the selection.
        if let Some(outside) = made.iter().find(|made| !choice.selects(made)) {
            let short = &outside.id[..8];
            for args in [
                &["dump", &outside.id, STREAM][..],
                &["ls", &outside.id],
                &["diff", &outside.id, &outside.id],
                &["stats", &outside.id],
                &["forget", "--dry-run", &outside.id],
            ] {
                cairn_with(&workspace, args, &flags)
                    .code(EXIT_NO_MATCH)
                    .stderr_contains(&format!("snapshot {short} "))
                    .stderr_contains("is not among --");
            }
        }
    }
    // Nothing was removed by the dry runs.
    assert_eq!(workspace.snapshots().len(), made.len());
}

#[test]
fn forget_takes_the_selection_for_its_policy_and_for_latest() {
    let workspace = Workspace::initialized();
    let made = matrix(&workspace);
    // The policy sees only the selected snapshots: h1's stream snapshots tagged a (two of
    // them), keeps the newest.
    let plan = workspace
        .cairn(&[
            "forget",
            "--json",
            "--dry-run",
            "--keep-last",
            "1",
            "--host",
            "h1",
            "--tag",
            "a",
            "--path",
            STREAM,
        ])
        .ok()
        .summary();
    assert_eq!(
        (plan["kept"].as_u64(), plan["remove"].as_u64()),
        (Some(1), Some(1))
    );
    // `forget latest --host h1` removes h1's newest snapshot, not h2's newer one.
    let h1_newest = made.iter().rev().find(|made| made.host == "h1").unwrap();
    workspace.cairn(&["forget", "latest", "--host", "h1"]).ok();
    let left: Vec<String> = workspace
        .snapshots()
        .iter()
        .map(|line| line["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(left.len(), made.len() - 1);
    assert!(!left.contains(&h1_newest.id));
    workspace
        .cairn(&["forget", "latest", "--host", "nobody"])
        .code(EXIT_NO_MATCH)
        .stderr_contains("latest: no snapshot among --host nobody");
    assert_eq!(workspace.snapshots().len(), made.len() - 1);
}

#[test]
fn unknown_ids_and_paths_not_held_are_exit_20_naming_the_snapshot() {
    let workspace = Workspace::initialized();
    let made = matrix(&workspace);
    let stream_snapshot = made.iter().find(|made| made.stream).unwrap();
    workspace
        .cairn(&["dump", "ffffffffff", STREAM])
        .code(EXIT_NO_MATCH)
        .stderr_contains("no snapshot matches \"ffffffffff\"");
    workspace
        .cairn(&["dump", &stream_snapshot.id, "nothing.here"])
        .code(EXIT_NO_MATCH)
        .stderr_contains(&format!(
            "snapshot {} holds no nothing.here (its paths: {STREAM})",
            &stream_snapshot.id[..8]
        ));
    // Regression: with no cache (or a fresh one), proving a path is held reads trees, which
    // needs the index synced first; `restore latest:PATH --no-cache` failed with a missing blob.
    let stream_holder = made.iter().rev().find(|made| made.stream).unwrap();
    assert_eq!(
        workspace
            .cairn(&["--no-cache", "dump", "latest", STREAM])
            .ok()
            .stdout,
        stream_holder.content
    );
    workspace
        .cairn(&["ls", "latest", "/no/such/dir"])
        .code(EXIT_NO_MATCH)
        .stderr_contains("latest: no snapshot holds /no/such/dir among all snapshots (12 of 12 snapshots selected)");
    // A path below a backed-up directory that was never there: searched, not found.
    let missing = format!("{}/missing.txt", workspace.path("data").display());
    workspace
        .cairn(&["dump", "latest", &missing])
        .code(EXIT_NO_MATCH)
        .stderr_contains(&format!(
            "latest: no snapshot holds {missing} among all snapshots (12 of 12"
        ));
}

/// The README's multi-source config, cut to what runs in a test: a command source streaming
/// `app.archive`, then a directory source, in that file order, and the config stored.
pub(crate) fn readme_config(workspace: &Workspace) -> (String, Vec<u8>) {
    let archive = b"mongodump --archive, pretend\n".repeat(300);
    fs::write(workspace.path("archive.bin"), &archive).expect("archive");
    let system = workspace.path("system");
    fs::create_dir_all(system.join("etc")).expect("system");
    fs::write(system.join("etc/hosts"), b"127.0.0.1 localhost\n").expect("hosts");
    let config = workspace.path("cairn.toml");
    fs::write(
        &config,
        format!(
            "state_dir = {state:?}\n\n[repository]\nurl = {repo:?}\ncache_dir = {cache:?}\n\n\
             [defaults]\ntags = [\"nightly\"]\nhost = \"web1\"\n\
             retention = {{ keep_daily = 7, keep_weekly = 5 }}\n\n\
             [sources.db]\ncommand = \"cat {archive}\"\nstream_name = \"app.archive\"\n\
             restore = \"cat > /dev/null\"\n\n\
             [sources.system]\npaths = [{system:?}]\nexclude = [\"*.tmp\"]\n",
            state = workspace.path("state").display().to_string(),
            repo = workspace.repo.display().to_string(),
            cache = workspace.cache.display().to_string(),
            archive = workspace.path("archive.bin").display(),
            system = system.display().to_string(),
        ),
    )
    .expect("config");
    (config.to_str().expect("utf-8").to_owned(), archive)
}

/// `cairn --config CONFIG args...`.
fn with_config(workspace: &Workspace, config: &str, args: &[&str]) -> Run {
    let mut full = vec!["--config", config];
    full.extend_from_slice(args);
    run_command(workspace.command(&full, &[]), None)
}

#[test]
fn dump_latest_app_archive_works_with_the_readme_config_when_another_source_ran_last() {
    let workspace = Workspace::initialized();
    let (config, archive) = readme_config(&workspace);
    with_config(&workspace, &config, &["run", "--no-check", "--no-drill"]).ok();
    // The directory source ran last, and the config was stored: neither holds app.archive.
    let snapshots = workspace.snapshots();
    assert_eq!(snapshots.len(), 3, "{snapshots:?}");
    assert_eq!(
        with_config(&workspace, &config, &["dump", "latest", "app.archive"])
            .ok()
            .stdout,
        archive
    );
    assert_eq!(
        with_config(
            &workspace,
            &config,
            &["dump", "--source", "db", "latest", "app.archive"]
        )
        .ok()
        .stdout,
        archive
    );
    // The source's snapshots only: the directory source holds no stream.
    with_config(
        &workspace,
        &config,
        &["dump", "--source", "system", "latest", "app.archive"],
    )
    .code(EXIT_NO_MATCH)
    .stderr_contains(
        "latest: no snapshot holds app.archive among --source system (host web1, tag source:system)",
    );
    // Repeated --source: either source.
    let both = with_config(
        &workspace,
        &config,
        &[
            "snapshots",
            "--json",
            "--source",
            "db",
            "--source",
            "system",
        ],
    )
    .ok()
    .json_lines();
    assert_eq!(both.len(), 2);
    // --source with another host selects nothing; an unknown source or no config is a usage
    // error.
    with_config(
        &workspace,
        &config,
        &["ls", "--source", "db", "--host", "db9", "latest"],
    )
    .code(EXIT_NO_MATCH);
    with_config(&workspace, &config, &["ls", "--source", "nope", "latest"])
        .code(EXIT_USAGE)
        .stderr_contains("no source \"nope\" in the config (sources: db, system)");
    workspace
        .cairn(&["ls", "--source", "db", "latest"])
        .code(EXIT_USAGE)
        .stderr_contains("--tag source:db");
    // recover takes the same flags: --source, and --host for --from-host.
    let plan = with_config(
        &workspace,
        &config,
        &[
            "recover",
            "--dry-run",
            "--json",
            "--source",
            "db",
            "--host",
            "web1",
        ],
    )
    .ok()
    .summary();
    assert_eq!(plan["sources"], 1, "{plan}");
    with_config(
        &workspace,
        &config,
        &["recover", "--dry-run", "--source", "db", "--tag", "weekly"],
    )
    .code(19)
    .stderr_contains("no snapshot tagged source:db of host web1 with --tag weekly");
    with_config(
        &workspace,
        &config,
        &[
            "recover",
            "--dry-run",
            "--host",
            "web1",
            "--from-host",
            "web1",
        ],
    )
    .code(EXIT_USAGE);
}

#[test]
fn the_stored_config_is_never_latest_unless_its_tag_is_asked_for() {
    let workspace = Workspace::initialized();
    let (config, archive) = readme_config(&workspace);
    with_config(&workspace, &config, &["run", "--no-check", "--no-drill"]).ok();
    // A changed config is stored by the next run, before its source, which fails: the stored
    // config is now the newest snapshot.
    let changed = fs::read_to_string(&config).unwrap()
        + "\n[sources.flaky]\ncommand = \"exit 1\"\nstream_name = \"flaky.bin\"\n";
    fs::write(&config, &changed).unwrap();
    with_config(
        &workspace,
        &config,
        &["run", "--no-check", "--no-drill", "flaky"],
    )
    .code(17);
    let snapshots = workspace.snapshots();
    let newest = snapshots.last().unwrap();
    assert_eq!(newest["tags"][0], "cairn:config", "{snapshots:?}");
    assert_eq!(newest["paths"][0], "cairn.toml", "{snapshots:?}");

    // `latest` without a path is the newest data snapshot: the system source's.
    let listed = with_config(&workspace, &config, &["ls", "--json", "latest"])
        .ok()
        .json_lines();
    assert!(
        listed
            .iter()
            .any(|node| node["path"].as_str().unwrap().ends_with("/etc/hosts")),
        "{listed:?}"
    );
    let drilled = with_config(
        &workspace,
        &config,
        &[
            "drill",
            "--json",
            "--scratch",
            workspace.root().to_str().unwrap(),
        ],
    )
    .ok()
    .summary();
    assert_ne!(drilled["snapshot_id"], newest["id"]);
    // Named by its stream, it is found only when asked for, and the error says how.
    with_config(&workspace, &config, &["dump", "latest", "cairn.toml"])
        .code(EXIT_NO_MATCH)
        .stderr_contains("add --tag cairn:config to choose them");
    let stored = with_config(
        &workspace,
        &config,
        &["dump", "--tag", "cairn:config", "latest", "cairn.toml"],
    )
    .ok()
    .stdout;
    assert_eq!(stored, changed.as_bytes());
    assert_eq!(
        with_config(&workspace, &config, &["dump", "latest", "app.archive"])
            .ok()
            .stdout,
        archive
    );
    // Lists show it: it is a snapshot like the others.
    let tagged = with_config(
        &workspace,
        &config,
        &["snapshots", "--json", "--tag", "cairn:config"],
    )
    .ok()
    .json_lines();
    assert_eq!(tagged.len(), 2);
}
