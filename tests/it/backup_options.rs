//! `cairn backup` options of issue 19 with the real binary: `--iexclude`/`--iexclude-file`
//! (case-insensitive), `--exclude-caches` (only the standard signature tags), a matrix of
//! `--exclude-larger-than` sizes, `--files-from` and `--files-from-raw` (names with spaces,
//! newlines and non-UTF-8 bytes, standard input), `--dry-run` (the repository's objects are the
//! same before and after, and it predicts what the real backup then adds), the same keys in
//! `cairn.toml`, `--tag a,b`, restic's local `--time` form, and the user name without `$USER`.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::support::{TreeBuilder, Workspace, json_u64, listed_below, random_bytes, run_command};

/// The standard cache directory tag (bford.info/cachedir).
const CACHE_TAG: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55\n# a cache\n";

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

/// `backup --json ARGS...` (paths are strings already).
fn backup(workspace: &Workspace, args: &[&str]) -> crate::support::Run {
    let mut full = vec!["backup", "--json"];
    full.extend_from_slice(args);
    workspace.cairn(&full)
}

/// Every file below `root` with its size and modification time: the repository's objects as
/// the store holds them.
fn objects(root: &Path) -> BTreeSet<(PathBuf, u64, std::time::SystemTime)> {
    let mut found = BTreeSet::new();
    let mut pending = vec![root.to_owned()];
    while let Some(directory) = pending.pop() {
        for entry in fs::read_dir(&directory).unwrap() {
            let entry = entry.unwrap();
            let metadata = entry.metadata().unwrap();
            if metadata.is_dir() {
                pending.push(entry.path());
            } else {
                found.insert((entry.path(), metadata.len(), metadata.modified().unwrap()));
            }
        }
    }
    found
}

#[test]
fn iexclude_ignores_case_and_exclude_keeps_it() {
    let workspace = Workspace::initialized();
    let source = workspace.path("photos");
    let tree = TreeBuilder::new(&source);
    for name in [
        "a.jpg",
        "B.JPG",
        "c.Jpg",
        "d.png",
        "e.LOG",
        "f.log",
        "Thumbs/x.bin",
        "raw.TMP",
    ] {
        tree.file(name, name.as_bytes());
    }
    let patterns = workspace.path("ipatterns.txt");
    fs::write(&patterns, "# thumbnails\nthumbs/\n\n*.tmp\n").unwrap();
    let source_arg = source.to_string_lossy();
    let run = backup(
        &workspace,
        &[
            &source_arg,
            "--iexclude",
            "*.jpg",
            "--exclude",
            "*.log",
            "--iexclude-file",
            &patterns.to_string_lossy(),
        ],
    )
    .ok();
    assert_eq!(json_u64(&run.summary(), "entries_excluded"), 6);
    assert_eq!(
        listed_below(&workspace, &source),
        set(&["d.png", "e.LOG"]),
        "--exclude '*.log' keeps e.LOG; --iexclude takes every case"
    );
    backup(&workspace, &[&source_arg, "--iexclude", "a[b"])
        .failed()
        .stderr_contains("a[b");
}

#[test]
fn exclude_caches_takes_only_directories_with_the_standard_signature() {
    let workspace = Workspace::initialized();
    let source = workspace.path("home");
    let tree = TreeBuilder::new(&source);
    tree.file("tagged/CACHEDIR.TAG", CACHE_TAG);
    tree.file("tagged/blob", b"cached bytes");
    tree.file("tagged_bare/CACHEDIR.TAG", &CACHE_TAG[..43]);
    tree.file("tagged_bare/blob", b"cached too");
    tree.file("unsigned/CACHEDIR.TAG", b"just a file with that name\n");
    tree.file("unsigned/keep", b"kept");
    tree.file("short/CACHEDIR.TAG", &CACHE_TAG[..42]);
    tree.file("short/keep", b"kept: the signature is cut short");
    tree.file("lowercase/cachedir.tag", CACHE_TAG);
    tree.file("lowercase/keep", b"kept: the name is CACHEDIR.TAG exactly");
    tree.dir("tag_is_a_directory/CACHEDIR.TAG");
    tree.file("docs/readme", b"kept");
    let source_arg = source.to_string_lossy();
    let without = backup(&workspace, &[&source_arg]).ok().summary();
    assert_eq!(json_u64(&without, "entries_excluded"), 0);
    let with = backup(&workspace, &[&source_arg, "--exclude-caches"])
        .ok()
        .summary();
    assert_eq!(json_u64(&with, "entries_excluded"), 2);
    let listed = listed_below(&workspace, &source);
    assert!(
        !listed.iter().any(|path| path.starts_with("tagged")),
        "{listed:?}"
    );
    for kept in [
        "unsigned/keep",
        "short/keep",
        "lowercase/keep",
        "tag_is_a_directory/CACHEDIR.TAG",
        "docs/readme",
    ] {
        assert!(listed.contains(kept), "{kept} missing from {listed:?}");
    }
}

#[test]
fn exclude_larger_than_leaves_out_exactly_the_files_above_the_limit() {
    let workspace = Workspace::initialized();
    let source = workspace.path("sizes");
    let tree = TreeBuilder::new(&source);
    for (name, size) in [
        ("empty", 0),
        ("below", 1023),
        ("at", 1024),
        ("above", 1025),
        ("big", 300_000),
    ] {
        tree.file(name, &random_bytes(size as u64, size));
    }
    tree.file("nested/above", &random_bytes(9, 2000));
    tree.symlink("link_to_big", "big");
    let source_arg = source.to_string_lossy();
    for (limit, kept) in [
        ("1K", vec!["at", "below", "empty", "link_to_big", "nested"]),
        (
            "1024",
            vec!["at", "below", "empty", "link_to_big", "nested"],
        ),
        ("1023", vec!["below", "empty", "link_to_big", "nested"]),
        (
            "1.5KiB",
            vec!["above", "at", "below", "empty", "link_to_big", "nested"],
        ),
        (
            "1M",
            vec![
                "above",
                "at",
                "below",
                "big",
                "empty",
                "link_to_big",
                "nested",
                "nested/above",
            ],
        ),
    ] {
        backup(&workspace, &[&source_arg, "--exclude-larger-than", limit]).ok();
        assert_eq!(
            listed_below(&workspace, &source),
            set(&kept),
            "--exclude-larger-than {limit}"
        );
    }
    for bad in ["0", "ten", "1X", "-1", ""] {
        let flag = format!("--exclude-larger-than={bad}");
        let run = backup(&workspace, &[&source_arg, &flag]).code(2);
        assert!(
            run.stderr.contains("--exclude-larger-than"),
            "{}",
            run.stderr
        );
    }
}

#[test]
fn files_from_lists_add_paths_whatever_their_names() {
    let workspace = Workspace::initialized();
    let source = workspace.path("data");
    let tree = TreeBuilder::new(&source);
    tree.file("plain.txt", b"plain");
    tree.file("with space .txt", b"spaces kept");
    tree.file("line\nbreak", b"a newline in the name");
    tree.file("#hash", b"not a comment in a raw list");
    tree.file("given/on_the_command_line", b"positional");
    tree.file("left/out", b"not listed");
    let odd = PathBuf::from(OsStr::from_bytes(b"latin1-\xe9t\xe9"));
    fs::write(source.join(&odd), b"non-UTF-8 name").unwrap();

    let lines = workspace.path("list.txt");
    let mut text = format!(
        "# a comment line\n\n{}\n{}\r\n{}/missing\n",
        source.join("plain.txt").display(),
        source.join("with space .txt").display(),
        source.display(),
    )
    .into_bytes();
    text.extend_from_slice(source.join(&odd).as_os_str().as_bytes());
    text.push(b'\n');
    fs::write(&lines, text).unwrap();
    let raw = workspace.path("list.raw");
    let mut nul = Vec::new();
    for name in ["line\nbreak", "#hash"] {
        nul.extend_from_slice(source.join(name).as_os_str().as_bytes());
        nul.push(0);
    }
    fs::write(&raw, nul).unwrap();

    let given = source.join("given").to_string_lossy().into_owned();
    let run = backup(
        &workspace,
        &[
            &given,
            "--files-from",
            &lines.to_string_lossy(),
            "--files-from-raw",
            &raw.to_string_lossy(),
        ],
    )
    .code(3); // the missing listed path is a warning, as a missing positional path
    assert!(run.stderr.contains("missing"), "{}", run.stderr);
    let mut listed = listed_below(&workspace, &source);
    // ls shows the non-UTF-8 name lossily; that it is there is what counts here.
    let odd_listed = listed
        .iter()
        .find(|path| path.starts_with("latin1-"))
        .cloned();
    assert!(
        odd_listed.is_some_and(|path| listed.remove(&path)),
        "{listed:?}"
    );
    let expected = set(&[
        "plain.txt",
        "with space .txt",
        "line\nbreak",
        "#hash",
        "given",
        "given/on_the_command_line",
    ]);
    assert_eq!(listed, expected);

    // Standard input, without positional paths.
    let list = format!("{}\n", source.join("left").display());
    let run = workspace
        .cairn_stdin(&["backup", "--json", "--files-from", "-"], list.as_bytes())
        .ok();
    assert_eq!(json_u64(&run.summary(), "files_processed"), 1);
    assert_eq!(
        listed_below(&workspace, &source),
        set(&["left", "left/out"])
    );

    // An empty list and nothing else is an error, as is an unreadable list.
    let empty = workspace.path("empty.txt");
    fs::write(&empty, "# nothing\n\n").unwrap();
    workspace
        .cairn(&["backup", "--files-from", &empty.to_string_lossy()])
        .failed()
        .stderr_contains("no paths to back up");
    workspace
        .cairn(&["backup", "--files-from-raw", "/nonexistent/list"])
        .failed()
        .stderr_contains("cannot read --files-from-raw /nonexistent/list");
    workspace
        .cairn(&["backup", "--files-from", "-", "--files-from-raw", "-"])
        .failed()
        .stderr_contains("standard input can be read only once");
    // Neither paths nor a list: a usage error.
    workspace.cairn(&["backup"]).code(2);
}

#[test]
fn dry_run_writes_nothing_and_predicts_the_backup() {
    let workspace = Workspace::initialized();
    let source = workspace.path("data");
    let tree = TreeBuilder::new(&source);
    tree.file("small.txt", b"small file\n");
    tree.file("large.bin", &random_bytes(1, 3 * 1024 * 1024));
    tree.file("dup1.bin", &random_bytes(2, 200_000));
    tree.file("dup2.bin", &random_bytes(2, 200_000));
    tree.file("skip.log", b"excluded");
    let source_arg = source.to_string_lossy();
    for round in 0..2 {
        let before = objects(&workspace.repo);
        let snapshots = workspace.snapshots().len();
        let dry = backup(
            &workspace,
            &[&source_arg, "--dry-run", "--exclude", "*.log", "--verbose"],
        )
        .ok();
        assert_eq!(
            objects(&workspace.repo),
            before,
            "round {round}: the repository changed"
        );
        assert_eq!(workspace.snapshots().len(), snapshots);
        let lines = dry.json_lines();
        let read: BTreeSet<(String, u64)> = lines
            .iter()
            .filter(|line| line["message_type"] == "would_read")
            .map(|line| {
                let path = line["path"].as_str().unwrap();
                let name = path.rsplit('/').next().unwrap().to_owned();
                (name, json_u64(line, "bytes"))
            })
            .collect();
        let prediction = lines
            .iter()
            .find(|line| line["message_type"] == "dry_run_summary")
            .expect("a dry_run_summary line")
            .clone();
        assert!(!lines.iter().any(|line| line["message_type"] == "summary"));
        let requests = lines
            .iter()
            .find(|line| line["message_type"] == "requests")
            .expect("a requests line with --verbose");
        assert_eq!(json_u64(requests, "put"), 0, "round {round}: {requests}");
        assert_eq!(json_u64(requests, "delete"), 0, "round {round}: {requests}");
        assert_eq!(
            json_u64(requests, "bytes_sent"),
            0,
            "round {round}: {requests}"
        );
        assert_eq!(json_u64(&prediction, "entries_excluded"), 1);
        if round == 0 {
            assert_eq!(
                read,
                [
                    ("dup1.bin".to_owned(), 200_000),
                    ("dup2.bin".to_owned(), 200_000),
                    ("large.bin".to_owned(), 3 * 1024 * 1024),
                    ("small.txt".to_owned(), 11),
                ]
                .into()
            );
        } else {
            // Only the changed file is read again.
            assert_eq!(read, [("small.txt".to_owned(), 20)].into());
            assert_eq!(json_u64(&prediction, "files_unchanged"), 3);
        }
        let real = backup(&workspace, &[&source_arg, "--exclude", "*.log"])
            .ok()
            .summary();
        for field in [
            "files_processed",
            "directories_processed",
            "bytes_processed",
            "files_unchanged",
            "blobs_added",
            "data_added",
        ] {
            assert_eq!(
                json_u64(&prediction, field),
                json_u64(&real, field),
                "round {round}: {field}"
            );
        }
        assert!(json_u64(&prediction, "bytes_added") <= json_u64(&real, "bytes_added"));
        tree.file("small.txt", b"small file, edited\n\n");
    }
    // Human output lists the reads with sizes and says nothing was written.
    let human = workspace
        .cairn(&["backup", "--dry-run", &source_arg])
        .ok()
        .text();
    assert!(
        human.contains("would read ") && human.contains("skip.log (8 B)"),
        "{human}"
    );
    assert!(human.contains("dry run: nothing was written"), "{human}");
    // A stream is read and measured, and not stored either.
    let before = objects(&workspace.repo);
    let stream = workspace
        .cairn_stdin(
            &[
                "backup",
                "--json",
                "--dry-run",
                "--stdin",
                "--name",
                "s.bin",
            ],
            &random_bytes(5, 50_000),
        )
        .ok();
    assert!(stream.text().contains("\"dry_run_summary\""));
    assert_eq!(objects(&workspace.repo), before);
    workspace
        .cairn(&["backup", "--dry-run", "--command", "true", "--name", "x"])
        .failed()
        .stderr_contains("--dry-run does not run a --command");
}

#[test]
fn config_sources_take_the_same_options() {
    let workspace = Workspace::initialized();
    let source = workspace.path("srv");
    let tree = TreeBuilder::new(&source);
    tree.file("app/IMG.JPG", b"photo");
    tree.file("app/notes.txt", b"notes");
    tree.file("app/huge.bin", &random_bytes(3, 5000));
    tree.file("cache/CACHEDIR.TAG", CACHE_TAG);
    tree.file("cache/x", b"x");
    tree.file("extra/listed.txt", b"from the list");
    let list = workspace.path("list.txt");
    fs::write(&list, format!("{}\n", source.join("extra").display())).unwrap();
    let config = workspace.path("cairn.toml");
    let write_config = |keys: &str| {
        fs::write(
            &config,
            format!(
                "state_dir = {state:?}\n[repository]\nurl = {repo:?}\ncache_dir = {cache:?}\n\n\
                 [sources.srv]\npaths = [{app:?}, {cache_dir:?}]\n{keys}\n",
                state = workspace.path("state"),
                repo = workspace.repo,
                cache = workspace.cache,
                app = source.join("app"),
                cache_dir = source.join("cache"),
            ),
        )
        .unwrap();
    };
    write_config(&format!(
        "iexclude = [\"*.jpg\"]\nexclude_caches = true\nexclude_larger_than = \"4K\"\n\
         files_from = [{list:?}]\n"
    ));
    let config_arg = config.to_string_lossy().into_owned();
    let run = |args: &[&str]| {
        let mut full = vec!["--config", &config_arg];
        full.extend_from_slice(args);
        run_command(workspace.command(&full, &[]), None)
    };
    run(&["run", "--no-check", "--no-drill"]).ok();
    assert_eq!(
        listed_below(&workspace, &source),
        set(&["app", "app/notes.txt", "extra", "extra/listed.txt"])
    );
    for (keys, needle) in [
        ("exclude_larger_than = \"big\"", "exclude_larger_than"),
        ("exclude_larger_than = 4096", "exclude_larger_than"),
        ("exclude_cache = true", "exclude_cache"),
        ("files_from = [\"relative.txt\"]", "relative"),
    ] {
        write_config(keys);
        let failed = run(&["run", "--no-check", "--no-drill"]).code(2);
        assert!(failed.stderr.contains(needle), "{keys}: {}", failed.stderr);
        assert_eq!(failed.stderr.trim().lines().count(), 1, "{}", failed.stderr);
    }
}

#[test]
fn tags_split_on_commas_times_take_restic_local_form_and_users_fall_back_to_the_uid() {
    let workspace = Workspace::initialized();
    let source = workspace.path("d");
    TreeBuilder::new(&source).file("f", b"f");
    let source_arg = source.to_string_lossy();
    backup(&workspace, &[&source_arg, "--tag", "a,b", "--tag", "c"]).ok();
    assert_eq!(
        workspace.snapshots()[0]["tags"],
        serde_json::json!(["a", "b", "c"])
    );
    for bad in ["a,,b", "a,", ","] {
        let run = backup(&workspace, &[&source_arg, "--tag", bad]).code(2);
        assert!(run.stderr.contains("tag cannot be empty"), "{}", run.stderr);
    }

    let backup_at = |time: &str, zone: &str| {
        let mut command =
            workspace.command(&["backup", "--json", &source_arg, "--time", time], &[]);
        command.env("TZ", zone);
        run_command(command, None)
    };
    for (time, zone, expected) in [
        (
            "2026-12-01 03:00:00",
            "Europe/Berlin",
            "2026-12-01T02:00:00Z",
        ),
        (
            "2026-07-01 03:00:00",
            "Europe/Berlin",
            "2026-07-01T01:00:00Z",
        ),
        ("2026-12-01 03:00:00", "UTC", "2026-12-01T03:00:00Z"),
        (
            "2026-12-01T03:00:00+05:00",
            "Europe/Berlin",
            "2026-11-30T22:00:00Z",
        ),
        (
            "2026-12-01T03:00:00Z",
            "America/New_York",
            "2026-12-01T03:00:00Z",
        ),
    ] {
        let id = backup_at(time, zone).ok().summary()["snapshot_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let snapshot = workspace
            .snapshots()
            .into_iter()
            .find(|snapshot| snapshot["id"] == id.as_str())
            .unwrap();
        let recorded: jiff::Timestamp = snapshot["time"].as_str().unwrap().parse().unwrap();
        assert_eq!(recorded, expected.parse().unwrap(), "{time} in {zone}");
    }
    for bad in [
        "2026-12-01",
        "2026-13-01 03:00:00",
        "yesterday",
        "2026-12-01 03:00",
    ] {
        let run = backup_at(bad, "UTC").code(2);
        assert!(run.stderr.contains("not a time"), "{bad}: {}", run.stderr);
    }

    let mut command = workspace.command(&["backup", "--json", &source_arg], &[]);
    command.env_remove("USER").env_remove("LOGNAME");
    let id = run_command(command, None).ok().summary()["snapshot_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let expected = nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .expect("the test user has a passwd entry")
        .name;
    let snapshot = workspace
        .snapshots()
        .into_iter()
        .find(|snapshot| snapshot["id"] == id.as_str())
        .unwrap();
    assert_eq!(snapshot["username"], expected.as_str());
}
