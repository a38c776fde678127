//! No dead ends (issue 14): every damaged or mistaken state a careless or unlucky user reaches has
//! a way out that the messages name, and no obvious command makes it worse. Each test reproduces
//! one of the states found: a garbage snapshot object that blocked prune, a lost or damaged
//! config, empty passwords, a damaged cache, snapshots dated in the future, a misspelled keep
//! rule, wrong advice about damaged keys, an empty dump stored in place of a large one.

use std::fs;
use std::path::{Path, PathBuf};

use crate::support::{
    CHEAP_INIT, Run, TreeBuilder, Workspace, assert_same_tree, chown_tree, effective_uid,
    files_below, objects, random_bytes, restored_path, run_command, unprivileged_prefix,
};

/// Exit code of a command-line usage error.
const EXIT_USAGE: i32 = 2;
/// Exit code when there is no repository.
const EXIT_NO_REPOSITORY: i32 = 10;
/// Exit code for a wrong password.
const EXIT_WRONG_PASSWORD: i32 = 12;
/// Exit code of `cairn run` when a source or step failed.
const EXIT_RUN_FAILED: i32 = 17;

fn text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// The `--json` lines of one `message_type`.
fn lines_of(run: &Run, message_type: &str) -> Vec<serde_json::Value> {
    run.json_lines()
        .into_iter()
        .filter(|line| line["message_type"] == message_type)
        .collect()
}

/// The `kind`s of a run's `--json` warnings.
fn warning_kinds(run: &Run) -> Vec<String> {
    lines_of(run, "warning")
        .iter()
        .filter_map(|line| line["kind"].as_str().map(str::to_owned))
        .collect()
}

/// The ids of the snapshots, oldest first.
fn snapshot_ids(workspace: &Workspace) -> Vec<String> {
    workspace
        .snapshots()
        .iter()
        .map(|line| line["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Backs up `data` as the stream `name` with `extra` options; returns the snapshot id.
fn backup_stream(workspace: &Workspace, name: &str, data: &[u8], extra: &[&str]) -> String {
    workspace.backup_stdin(name, data, extra)["snapshot_id"]
        .as_str()
        .expect("snapshot id")
        .to_owned()
}

/// An RFC 3339 time `days` before (negative: after) now.
fn days_ago(days: i64) -> String {
    (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * days)).to_string()
}

// ---------------------------------------------------------------------------------------------
// forget ID...
// ---------------------------------------------------------------------------------------------

#[test]
fn a_garbage_snapshot_object_is_forgotten_by_id_and_prune_runs_again() {
    let workspace = Workspace::initialized();
    backup_stream(&workspace, "db.sql", b"a good dump\n", &[]);
    let garbage_id = "ab".repeat(32);
    let garbage = workspace.repo.join("snapshots").join(&garbage_id);
    fs::write(&garbage, random_bytes(14, 300)).expect("write garbage");

    // Every message about it names the command that removes it.
    let forget_it = format!("cairn forget {garbage_id}");
    workspace
        .cairn(&["prune"])
        .failed()
        .stderr_contains(&forget_it);
    workspace
        .cairn(&["snapshots"])
        .ok()
        .stderr_contains(&forget_it);
    workspace
        .cairn(&["forget", "--keep-last", "5", "--dry-run"])
        .ok()
        .stderr_contains(&forget_it);
    workspace
        .cairn(&["repair", "snapshots"])
        .failed()
        .stderr_contains(&forget_it)
        .stderr_contains("cairn forget ID...");

    // A dry run names it and removes nothing; a prefix is enough.
    let dry = workspace
        .cairn(&["forget", "--dry-run", "--json", "abab"])
        .ok();
    let named = lines_of(&dry, "snapshot");
    assert_eq!(named.len(), 1, "{named:?}");
    assert_eq!(named[0]["id"], garbage_id.as_str());
    assert_eq!(named[0]["readable"], false);
    assert_eq!(dry.summary()["removed"], 0);
    assert!(garbage.exists(), "a dry run removes nothing");

    let run = workspace.cairn(&["forget", "--json", "abab"]).ok();
    assert_eq!(run.summary()["removed"], 1);
    assert!(!garbage.exists());
    workspace.cairn(&["prune"]).ok();
    assert_eq!(workspace.snapshots().len(), 1, "the good snapshot stays");
    workspace.cairn(&["check"]).ok();
}

#[test]
fn forget_by_id_prefix_and_latest_removes_exactly_those() {
    let workspace = Workspace::initialized();
    let first = backup_stream(&workspace, "a.dump", b"first\n", &["--time", &days_ago(3)]);
    let second = backup_stream(&workspace, "a.dump", b"second\n", &["--time", &days_ago(2)]);
    let third = backup_stream(&workspace, "a.dump", b"third\n", &["--time", &days_ago(1)]);
    let fourth = backup_stream(&workspace, "b.dump", b"fourth\n", &["--time", &days_ago(4)]);

    // The same snapshot named twice (full id and prefix) is removed once.
    let run = workspace
        .cairn(&["forget", "--json", &first, &first[..8]])
        .ok();
    assert_eq!(run.summary()["removed"], 1);
    assert_eq!(lines_of(&run, "snapshot")[0]["readable"], true);
    assert_eq!(
        snapshot_ids(&workspace),
        [fourth.clone(), second.clone(), third.clone()]
    );

    // `latest` is the snapshot with the newest time.
    workspace.cairn(&["forget", "latest"]).ok();
    assert_eq!(snapshot_ids(&workspace), [fourth.clone(), second.clone()]);

    // Unknown or malformed ids change nothing, and neither does one bad id among good ones.
    for bad in ["ffffffffffff", "xyz", ""] {
        workspace
            .cairn(&["forget", &second, bad])
            .failed()
            .stderr_contains("no snapshot matches");
    }
    assert_eq!(snapshot_ids(&workspace), [fourth.clone(), second.clone()]);

    // Ids and a policy do not mix: a usage error before anything is touched.
    for extra in [
        &["--keep-last", "1"][..],
        &["--keep-tag", "x"],
        &["--allow-empty-group"],
    ] {
        let mut args = vec!["forget", second.as_str()];
        args.extend_from_slice(extra);
        workspace.cairn(&args).code(EXIT_USAGE);
    }
    // With a selection, an id must be among the snapshots it selects.
    workspace
        .cairn(&["forget", second.as_str(), "--host", "h"])
        .code(20)
        .stderr_contains("is not among --host h");
    assert_eq!(snapshot_ids(&workspace), [fourth.clone(), second.clone()]);
    workspace.cairn(&["forget", &second[..10]]).ok();
    assert_eq!(snapshot_ids(&workspace), [fourth]);
}

// ---------------------------------------------------------------------------------------------
// init never writes on top of a repository; a lost config is rebuilt
// ---------------------------------------------------------------------------------------------

#[test]
fn init_refuses_any_location_holding_a_repository_object_and_open_says_what_is_there() {
    let id = "cd".repeat(32);
    let cases: [(&str, String, Option<&str>); 7] = [
        ("config", "config".into(), None),
        ("key", format!("keys/{id}"), Some("1 key object")),
        ("snapshot", format!("snapshots/{id}"), Some("1 snapshot")),
        ("index", format!("index/{id}"), Some("1 index object")),
        ("pack", format!("data/cd/{id}"), Some("1 pack")),
        (
            "session",
            format!("sessions/{id}"),
            Some("1 garbage-collection object"),
        ),
        (
            "lease",
            "locks/prune".into(),
            Some("1 garbage-collection object"),
        ),
    ];
    for (label, name, found) in cases {
        let workspace = Workspace::new();
        let object = workspace.repo.join(&name);
        fs::create_dir_all(object.parent().expect("parent")).expect("create dirs");
        let bytes = random_bytes(label.len() as u64, 95);
        fs::write(&object, &bytes).expect("write object");

        let run = workspace.cairn(&CHEAP_INIT).failed();
        assert!(
            run.stderr.contains("already holds a repository"),
            "{label}: {}",
            run.stderr
        );
        assert_eq!(
            fs::read(&object).expect("read"),
            bytes,
            "{label}: untouched"
        );
        assert_eq!(
            files_below(&workspace.repo).len(),
            1,
            "{label}: init wrote nothing"
        );
        if let Some(found) = found {
            workspace
                .cairn(&["snapshots"])
                .code(1)
                .stderr_contains(found)
                .stderr_contains("cairn repair config");
        }
    }
    // An empty location is still "no repository", exit 10.
    let workspace = Workspace::new();
    fs::create_dir_all(&workspace.repo).expect("empty repo dir");
    workspace
        .cairn(&["snapshots"])
        .code(EXIT_NO_REPOSITORY)
        .stderr_contains("no repository");
}

/// A repository with a directory and a stream snapshot, their sources, and the snapshot ids.
struct Populated {
    workspace: Workspace,
    tree: TreeBuilder,
    stream: Vec<u8>,
    ids: Vec<String>,
}

fn populated(init_extra: &[&str]) -> Populated {
    let workspace = Workspace::initialized_with(init_extra);
    let tree = TreeBuilder::new(workspace.path("source"));
    tree.file("a.txt", b"alpha\n");
    tree.file("sub/b.bin", &random_bytes(21, 300_000));
    tree.file("sub/deeper/c.txt", &b"gamma\n".repeat(5000));
    workspace.backup(&[tree.root()]);
    let stream = random_bytes(22, 2 * 1024 * 1024);
    backup_stream(&workspace, "db.archive", &stream, &[]);
    let ids = snapshot_ids(&workspace);
    Populated {
        workspace,
        tree,
        stream,
        ids,
    }
}

/// Every snapshot of `populated` lists, restores and dumps byte for byte, and check passes.
fn assert_everything_back(populated: &Populated) {
    let workspace = &populated.workspace;
    assert_eq!(snapshot_ids(workspace), populated.ids);
    let target = workspace.path(&format!("restore-{}", rand::random::<u32>()));
    workspace
        .cairn(&["restore", &populated.ids[0], "--target", &text(&target)])
        .ok();
    assert_same_tree(
        populated.tree.root(),
        &restored_path(&target, populated.tree.root()),
    );
    let dump = workspace
        .cairn(&["dump", &populated.ids[1], "db.archive"])
        .ok();
    assert!(
        dump.stdout == populated.stream,
        "the stream dumps byte for byte"
    );
    workspace.cairn(&["check", "--read-data"]).ok();
}

#[test]
fn a_deleted_config_is_rebuilt_and_every_snapshot_comes_back() {
    let populated = populated(&[]);
    let workspace = &populated.workspace;
    let config = workspace.repo.join("config");
    fs::remove_file(&config).expect("lose the config");

    // The advice leads to repair, never to init; init refuses to write next to the data.
    workspace
        .cairn(&["snapshots"])
        .code(1)
        .stderr_contains("no config")
        .stderr_contains("cairn repair config");
    workspace
        .cairn(&CHEAP_INIT)
        .failed()
        .stderr_contains("already holds a repository");
    assert!(!config.exists());

    // Only a password of the repository rebuilds it.
    let mut command = workspace.command(&["repair", "config"], &[]);
    command.env("CAIRN_PASSWORD", "not the password");
    run_command(command, None).code(EXIT_WRONG_PASSWORD);
    assert!(!config.exists());

    let run = workspace.cairn(&["repair", "config", "--json"]).ok();
    let summary = run.summary();
    assert_eq!(summary["snapshots"], 2, "{summary}");
    assert_eq!(summary["unreadable_snapshots"], 0);
    assert!(
        summary["proven_by"]
            .as_str()
            .is_some_and(|name| name.starts_with("index/")),
        "{summary}"
    );
    assert_eq!(summary["repository_id_kept"], false);
    assert_everything_back(&populated);

    // A second repair has nothing to do.
    workspace
        .cairn(&["repair", "config"])
        .failed()
        .stderr_contains("nothing to repair");
}

#[test]
fn a_damaged_config_is_kept_aside_and_rebuilt_with_the_same_cache() {
    let populated = populated(&[]);
    let workspace = &populated.workspace;
    let config = workspace.repo.join("config");
    let original = fs::read(&config).expect("config");
    // Keep the clear header (magic, version, repository id), damage the sealed body.
    let mut damaged = original.clone();
    for byte in &mut damaged[50..] {
        *byte ^= 0x5a;
    }
    fs::write(&config, &damaged).expect("damage the config");
    workspace
        .cairn(&["snapshots"])
        .failed()
        .stderr_contains("cairn repair config");
    // An append-only client does not delete the damaged config (exit 13), nor does anyone on an
    // append-only repository.
    workspace
        .cairn(&["--append-only", "repair", "config"])
        .code(13);
    let marker = workspace.repo.join("append-only");
    fs::write(&marker, b"").expect("append-only marker");
    workspace.cairn(&["repair", "config"]).code(13);
    fs::remove_file(&marker).expect("remove marker");
    assert_eq!(fs::read(&config).expect("config"), damaged, "left alone");

    let summary = workspace
        .cairn(&["repair", "config", "--json"])
        .ok()
        .summary();
    assert_eq!(summary["repository_id_kept"], true, "{summary}");
    let aside = summary["damaged_config_kept"]
        .as_str()
        .expect("damaged config kept")
        .to_owned();
    assert_eq!(
        fs::read(workspace.repo.join(&aside)).expect("aside"),
        damaged
    );
    assert_everything_back(&populated);
}

#[test]
fn an_init_interrupted_after_its_key_object_is_completed_by_repair_config() {
    let workspace = Workspace::initialized();
    fs::remove_file(workspace.repo.join("config")).expect("as if init died before the config");
    workspace
        .cairn(&CHEAP_INIT)
        .failed()
        .stderr_contains("1 key object");
    // Nothing to prove the key against: it is taken as it is, and the repository works.
    let summary = workspace
        .cairn(&["repair", "config", "--json"])
        .ok()
        .summary();
    assert_eq!(summary["proven_by"], serde_json::Value::Null, "{summary}");
    backup_stream(&workspace, "db.sql", b"first backup\n", &[]);
    workspace.cairn(&["check", "--read-data"]).ok();
}

#[test]
fn repair_config_checks_the_chunk_sizes_and_keeps_deduplication() {
    let populated = populated(&[
        "--chunk-min",
        "8192",
        "--chunk-avg",
        "32768",
        "--chunk-max",
        "131072",
    ]);
    let workspace = &populated.workspace;
    fs::remove_file(workspace.repo.join("config")).expect("lose the config");
    // The defaults (max 32 KiB) do not fit chunks of up to 128 KiB: refused, with the way out.
    workspace
        .cairn(&["repair", "config"])
        .failed()
        .stderr_contains("--chunk-max");
    assert!(!workspace.repo.join("config").exists());
    workspace
        .cairn(&[
            "repair",
            "config",
            "--chunk-min",
            "8192",
            "--chunk-avg",
            "32768",
            "--chunk-max",
            "131072",
        ])
        .ok();
    assert_everything_back(&populated);
    // Same bounds, same seed (derived from the master secret): the stream deduplicates.
    let summary = workspace.backup_stdin("db.archive", &populated.stream, &[]);
    assert!(
        summary["bytes_added"].as_u64().expect("bytes_added") < 20_000,
        "{summary}"
    );
}

// ---------------------------------------------------------------------------------------------
// Empty passwords
// ---------------------------------------------------------------------------------------------

#[test]
fn no_new_password_is_ever_empty_whatever_its_source() {
    // (environment, arguments) for init.
    let sources: [(&str, Option<&str>, &[&str]); 5] = [
        ("CAIRN_PASSWORD empty", Some(""), &[]),
        ("empty password file", None, &["--password-file", "EMPTY"]),
        (
            "newline password file",
            None,
            &["--password-file", "NEWLINE"],
        ),
        (
            "password command true",
            None,
            &["--password-command", "true"],
        ),
        (
            "password command printing nothing",
            None,
            &["--password-command", "printf ''"],
        ),
    ];
    for (label, environment, extra) in sources {
        let workspace = Workspace::new();
        let empty = workspace.path("empty");
        fs::write(&empty, b"").expect("empty file");
        let newline = workspace.path("newline");
        fs::write(&newline, b"\n").expect("newline file");
        let mut args: Vec<String> = CHEAP_INIT.iter().map(|arg| (*arg).to_owned()).collect();
        args.extend(extra.iter().map(|arg| match *arg {
            "EMPTY" => text(&empty),
            "NEWLINE" => text(&newline),
            other => other.to_owned(),
        }));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut command = workspace.command(&args, &[]);
        match environment {
            Some(value) => command.env("CAIRN_PASSWORD", value),
            None => command.env_remove("CAIRN_PASSWORD"),
        };
        let run = run_command(command, None).failed();
        assert!(
            run.stderr.contains("password is empty"),
            "{label}: {}",
            run.stderr
        );
        assert!(
            files_below(&workspace.repo).is_empty(),
            "{label}: nothing is written"
        );
    }

    let workspace = Workspace::initialized();
    let empty = workspace.path("empty");
    fs::write(&empty, b"").expect("empty file");
    for args in [
        vec![
            "key",
            "add",
            "--new-password-file",
            empty.to_str().expect("utf-8"),
        ],
        vec![
            "key",
            "passwd",
            "--new-password-file",
            empty.to_str().expect("utf-8"),
        ],
        vec!["key", "add", "--new-password-command", "true"],
        vec!["key", "passwd", "--new-password-command", "true"],
    ] {
        workspace
            .cairn(&args)
            .failed()
            .stderr_contains("password is empty");
    }
    assert_eq!(objects(&workspace.repo, "keys").len(), 1);
    workspace.cairn(&["snapshots"]).ok();
}

// ---------------------------------------------------------------------------------------------
// Wrong password, damaged keys: the advice is true
// ---------------------------------------------------------------------------------------------

#[test]
fn damaged_key_objects_are_named_and_the_commands_advised_find_them() {
    let workspace = Workspace::initialized();
    let damaged = workspace.repo.join("keys").join("ef".repeat(32));
    fs::write(&damaged, random_bytes(31, 150)).expect("damaged key object");
    let run = workspace
        .cairn_password(&["snapshots"], "not the password")
        .code(EXIT_WRONG_PASSWORD)
        .stderr_contains(&format!("keys/{}", "ef".repeat(32)));
    assert!(run.stderr.contains("cairn key list") && run.stderr.contains("cairn check"));

    // What the advice names does show it.
    let list = workspace.cairn(&["key", "list", "--json"]).ok();
    assert!(
        lines_of(&list, "key")
            .iter()
            .any(|key| key["status"] == "damaged"),
        "{}",
        list.text()
    );
    workspace
        .cairn(&["check"])
        .failed()
        .stderr_contains("damaged: keys/efefefef: ");
    // And the way out: remove it.
    workspace.cairn(&["key", "remove", "efef"]).ok();
    workspace.cairn(&["check"]).ok();
}

// ---------------------------------------------------------------------------------------------
// A cache that heals itself
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum CacheDamage {
    ZeroFill,
    Truncate,
    RandomBytes,
    ReadOnly,
}

fn damage_cache(path: &Path, damage: CacheDamage) {
    let length = fs::metadata(path).expect("cache file").len();
    match damage {
        CacheDamage::ZeroFill => {
            fs::write(path, vec![0u8; usize::try_from(length).expect("small")]).expect("zero");
        }
        CacheDamage::Truncate => {
            let file = fs::OpenOptions::new()
                .write(true)
                .open(path)
                .expect("open cache");
            file.set_len(length / 3).expect("truncate");
        }
        CacheDamage::RandomBytes => {
            fs::write(
                path,
                random_bytes(length, usize::try_from(length).expect("small")),
            )
            .expect("random");
        }
        CacheDamage::ReadOnly => {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(path, fs::Permissions::from_mode(0o444)).expect("chmod");
        }
    }
}

/// GET requests of a `--json --verbose` run.
fn gets(run: &Run) -> u64 {
    lines_of(run, "requests")
        .first()
        .and_then(|line| line["get"].as_u64())
        .unwrap_or_else(|| panic!("no request report: {}", run.text()))
}

fn cache_warnings(run: &Run) -> usize {
    run.stderr
        .lines()
        .filter(|line| line.contains("local index cache"))
        .count()
}

fn cache_file(workspace: &Workspace) -> PathBuf {
    files_below(&workspace.cache)
        .into_iter()
        .find(|path| path.file_name().is_some_and(|name| name == "index.redb"))
        .expect("index.redb in the cache directory")
}

#[test]
fn a_damaged_cache_is_reported_once_moved_aside_and_rebuilt() {
    for damage in [
        CacheDamage::ZeroFill,
        CacheDamage::Truncate,
        CacheDamage::RandomBytes,
        CacheDamage::ReadOnly,
    ] {
        let mut workspace = Workspace::new();
        if matches!(damage, CacheDamage::ReadOnly) && effective_uid() == 0 {
            // Permission bits apply only to an unprivileged user, who then owns the workspace.
            fs::create_dir_all(&workspace.cache).expect("cache dir");
            chown_tree(workspace.root(), 65_534, 65_534);
            workspace.prefix = unprivileged_prefix();
        }
        workspace.cairn(&CHEAP_INIT).ok();
        let tree = TreeBuilder::new(workspace.path("source"));
        for index in 0..40u64 {
            tree.file(
                &format!("dir{}/file{index}.bin", index % 4),
                &random_bytes(index, 20_000),
            );
        }
        workspace.backup(&[tree.root()]);
        workspace.backup(&[tree.root()]);
        let ls = ["ls", "latest", "--json", "--verbose"];
        let healthy = gets(&workspace.cairn(&ls).ok());

        let path = cache_file(&workspace);
        damage_cache(&path, damage);
        let healing = workspace.cairn(&ls).ok();
        assert_eq!(
            cache_warnings(&healing),
            1,
            "{damage:?}: {}",
            healing.stderr
        );
        let mut aside = path.clone().into_os_string();
        aside.push(".damaged");
        assert!(PathBuf::from(aside).exists(), "{damage:?}: moved aside");

        // Healed: no warning, and no more requests than with the healthy cache.
        for _ in 0..2 {
            let after = workspace.cairn(&ls).ok();
            assert_eq!(cache_warnings(&after), 0, "{damage:?}: {}", after.stderr);
            assert!(
                gets(&after) <= healthy,
                "{damage:?}: {} GETs after healing, {healthy} with a healthy cache",
                gets(&after)
            );
        }
        // `index rebuild` on a damaged file replaces it too.
        damage_cache(&path, CacheDamage::RandomBytes);
        let rebuild = workspace.cairn(&["index", "rebuild"]).ok();
        assert_eq!(
            cache_warnings(&rebuild),
            1,
            "{damage:?}: {}",
            rebuild.stderr
        );
        // The rebuild fetched the index; the first listing fetches the trees again, once.
        workspace.cairn(&ls).ok();
        let after = workspace.cairn(&ls).ok();
        assert_eq!(cache_warnings(&after), 0, "{damage:?}: {}", after.stderr);
        assert!(
            gets(&after) <= healthy,
            "{damage:?}: {} > {healthy}",
            gets(&after)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Time sanity
// ---------------------------------------------------------------------------------------------

/// The ids `forget --dry-run --json` keeps with `policy`, and the reasons of each.
fn kept_by(workspace: &Workspace, policy: &[&str]) -> Vec<(String, Vec<String>)> {
    let mut args = vec!["forget", "--dry-run", "--json", "--path", "db.sql"];
    args.extend_from_slice(policy);
    lines_of(&workspace.cairn(&args).ok(), "snapshot")
        .iter()
        .filter(|line| line["action"] == "keep")
        .map(|line| {
            (
                line["id"].as_str().expect("id").to_owned(),
                line["reasons"]
                    .as_array()
                    .expect("reasons")
                    .iter()
                    .map(|reason| reason.as_str().expect("reason").to_owned())
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn a_snapshot_dated_in_the_future_never_makes_forget_remove_more() {
    let workspace = Workspace::initialized();
    for (days, content) in [(40, "a"), (20, "b"), (9, "c"), (2, "d"), (1, "e")] {
        backup_stream(
            &workspace,
            "db.sql",
            content.repeat(100).as_bytes(),
            &["--time", &days_ago(days)],
        );
    }
    let policies: [&[&str]; 5] = [
        &["--keep-within", "7d"],
        &["--keep-last", "2"],
        &["--keep-daily", "3"],
        &["--keep-weekly", "2"],
        &["--keep-within", "30d", "--keep-last", "1"],
    ];
    let before: Vec<Vec<String>> = policies
        .iter()
        .map(|policy| {
            kept_by(&workspace, policy)
                .into_iter()
                .map(|(id, _)| id)
                .collect()
        })
        .collect();

    // `--time` in 2099: warned about, by kind.
    let run = workspace
        .cairn_stdin(
            &[
                "backup",
                "--json",
                "--stdin",
                "--name",
                "db.sql",
                "--time",
                "2099-01-01T00:00:00Z",
            ],
            b"from a wrong clock",
        )
        .ok();
    let kinds = warning_kinds(&run);
    assert!(
        kinds.contains(&"time_ahead_of_clock".to_owned())
            && kinds.contains(&"time_ahead_of_newest".to_owned()),
        "{kinds:?}"
    );
    let future = run.summary()["snapshot_id"]
        .as_str()
        .expect("id")
        .to_owned();
    // The human line too.
    workspace
        .cairn_stdin(
            &[
                "backup",
                "--stdin",
                "--name",
                "other.sql",
                "--time",
                "2098-01-01T00:00:00Z",
            ],
            b"x",
        )
        .ok()
        .stderr_contains("ahead of this machine's clock");

    for (policy, kept_before) in policies.iter().zip(&before) {
        let kept = kept_by(&workspace, policy);
        let mut expected = kept_before.clone();
        expected.insert(0, future.clone());
        assert_eq!(
            kept.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
            expected,
            "{policy:?}: the same snapshots and the future one"
        );
        assert_eq!(kept[0].1, ["dated in the future"], "{policy:?}");
    }

    // `snapshots` marks them; `latest` is the newest (documented), and the next real backup
    // says so.
    let listed = workspace.snapshots();
    let marked: Vec<&str> = listed
        .iter()
        .filter(|line| line["future"] == true)
        .map(|line| line["paths"][0].as_str().expect("path"))
        .collect();
    assert_eq!(marked, ["other.sql", "db.sql"]);
    workspace
        .cairn(&["snapshots"])
        .ok()
        .stderr_contains("dated in the future");
    assert!(
        workspace
            .cairn(&["snapshots"])
            .text()
            .contains("(dated in the future)")
    );
    let run = workspace
        .cairn_stdin(
            &["backup", "--json", "--stdin", "--name", "db.sql"],
            b"today",
        )
        .ok();
    assert_eq!(warning_kinds(&run), ["time_before_newest"]);

    // A real forget keeps the recent ones, the future one and today's.
    workspace.cairn(&["forget", "--keep-within", "7d"]).ok();
    let db_snapshots = workspace
        .snapshots()
        .iter()
        .filter(|line| line["paths"][0] == "db.sql")
        .count();
    assert_eq!(db_snapshots, 4, "2 and 1 days ago, today, and 2099");
}

// ---------------------------------------------------------------------------------------------
// No policy silently empties a group
// ---------------------------------------------------------------------------------------------

#[test]
fn a_misspelled_keep_rule_empties_no_group_unless_asked() {
    let workspace = Workspace::initialized();
    for (host, tag, day) in [
        ("a", "nightly", 3),
        ("a", "nightly", 2),
        ("a", "nightly", 1),
        ("b", "weekly", 2),
        ("b", "nightly", 1),
    ] {
        backup_stream(
            &workspace,
            "db.sql",
            format!("{host}{day}").as_bytes(),
            &["--host", host, "--tag", tag, "--time", &days_ago(day)],
        );
    }
    for policy in [
        &["--keep-tag", "nightlly"][..],
        &["--keep-tag", "nightlly", "--dry-run"],
        &["--keep-tag", "weekly"],
        &["--keep-tag", "weekly", "--host", "a"],
        &["--keep-tag", "nightlly", "--keep-tag", "monthly"],
    ] {
        let mut args = vec!["forget"];
        args.extend_from_slice(policy);
        workspace
            .cairn(&args)
            .failed()
            .stderr_contains("--allow-empty-group")
            .stderr_contains("host a");
        assert_eq!(workspace.snapshots().len(), 5, "{policy:?} removed nothing");
    }
    // A policy that keeps something in every group goes ahead.
    workspace.cairn(&["forget", "--keep-tag", "nightly"]).ok();
    assert_eq!(workspace.snapshots().len(), 4);
    // Asked for explicitly: done.
    workspace
        .cairn(&[
            "forget",
            "--keep-tag",
            "nightlly",
            "--allow-empty-group",
            "--host",
            "b",
        ])
        .ok();
    assert_eq!(workspace.snapshots().len(), 3);
}

/// Writes `cairn.toml` for the workspace: `body` after the repository section.
fn write_config(workspace: &Workspace, body: &str) -> PathBuf {
    let path = workspace.path("cairn.toml");
    let config = format!(
        // store_config = false: these tests count snapshots; tests/it/recover.rs covers the
        // config `cairn run` stores.
        "state_dir = {state:?}\n\n[repository]\nurl = {repo:?}\ncache_dir = {cache:?}\nstore_config = false\n\n{body}",
        state = text(&workspace.path("state")),
        repo = text(&workspace.repo),
        cache = text(&workspace.cache),
    );
    fs::write(&path, config).expect("write config");
    path
}

fn cairn_config(workspace: &Workspace, config: &Path, args: &[&str]) -> Run {
    let mut full = vec!["--config", config.to_str().expect("utf-8")];
    full.extend_from_slice(args);
    workspace.cairn(&full)
}

#[test]
fn cairn_run_never_empties_a_source_and_reports_its_retention_failed() {
    let workspace = Workspace::initialized();
    let dump = workspace.path("dump.sql");
    fs::write(&dump, b"dump\n").expect("dump");
    let config = write_config(
        &workspace,
        &format!(
            "[sources.db]\ncommand = \"cat {}\"\nstream_name = \"db.sql\"\n\
             retention = {{ keep_tags = [\"nightlly\"] }}\n",
            dump.display()
        ),
    );
    let run = cairn_config(
        &workspace,
        &config,
        &["run", "--json", "--no-check", "--no-drill"],
    )
    .code(EXIT_RUN_FAILED);
    let summary = run.summary();
    let step = summary["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|step| step["step"] == "retention db")
        .unwrap_or_else(|| panic!("no retention step: {summary}"))
        .clone();
    assert_eq!(step["ok"], false);
    assert!(
        step["error"]
            .as_str()
            .is_some_and(|error| error.contains("refusing to remove every snapshot")),
        "{step}"
    );
    assert_eq!(workspace.snapshots().len(), 1, "the new snapshot stays");
    // `status` shows the source as failed, with the reason.
    let status = cairn_config(&workspace, &config, &["status", "--json"]);
    let source = lines_of(&status, "source")[0].clone();
    assert_eq!(source["last_ok"], false, "{source}");
    assert!(
        source["last_error"]
            .as_str()
            .is_some_and(|error| error.starts_with("retention: refusing")),
        "{source}"
    );
}

// ---------------------------------------------------------------------------------------------
// The size-drop warning
// ---------------------------------------------------------------------------------------------

#[test]
fn an_empty_dump_after_a_large_one_is_warned_about() {
    let workspace = Workspace::initialized();
    workspace.backup_stdin("db.sql", &random_bytes(41, 3_000_000), &[]);
    let run = workspace
        .cairn_stdin(
            &["backup", "--json", "--stdin", "--name", "db.sql"],
            &[b'x'; 52],
        )
        .ok();
    let warnings = lines_of(&run, "warning");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0]["kind"], "size_drop");
    assert_eq!(warnings[0]["path"], "db.sql");
    assert_eq!(warnings[0]["bytes"], 52);
    assert_eq!(warnings[0]["previous_bytes"], 3_000_000);
    assert_eq!(run.summary()["size_drops"], 1);
    // One human line; a stream of another name is not compared.
    let human = workspace
        .cairn_stdin(&["backup", "--stdin", "--name", "db.sql"], b"")
        .ok();
    assert_eq!(
        human
            .stderr
            .lines()
            .filter(|line| line.starts_with("warning:"))
            .count(),
        0,
        "52 bytes to 0 is below the judged size: {}",
        human.stderr
    );
    workspace.backup_stdin("big.sql", &random_bytes(42, 100_000), &[]);
    workspace
        .cairn_stdin(&["backup", "--stdin", "--name", "big.sql"], b"{}")
        .ok()
        .stderr_contains("warning: big.sql:")
        .stderr_contains("times smaller");
    let other = workspace.backup_stdin("other.sql", b"", &[]);
    assert_eq!(other["size_drops"], 0);
}

#[test]
fn shrunken_files_are_warned_about_exactly_when_ten_times_smaller() {
    // (name, size before, size after, warned)
    let cases: [(&str, usize, usize, bool); 9] = [
        ("huge_to_tiny.bin", 1_500_000, 52, true),
        ("huge_to_small.bin", 3_000_000, 300_000, true),
        ("huge_a_bit_less.bin", 3_000_000, 300_001, false),
        ("exactly_ten.bin", 100_000, 10_000, true),
        ("just_under_ten.bin", 100_000, 10_001, false),
        ("small_emptied.bin", 4_095, 0, false),
        ("threshold_emptied.bin", 4_096, 0, true),
        ("grew.bin", 50_000, 600_000, false),
        ("same_size_changed.bin", 80_000, 80_000, false),
    ];
    let workspace = Workspace::initialized();
    let tree = TreeBuilder::new(workspace.path("source"));
    for (index, (name, before, _, _)) in cases.iter().enumerate() {
        tree.file(name, &random_bytes(index as u64, *before));
    }
    workspace.backup(&[tree.root()]);
    for (index, (name, _, after, _)) in cases.iter().enumerate() {
        tree.file(name, &random_bytes(100 + index as u64, *after));
    }
    let run = workspace
        .cairn(&["backup", "--json", &text(tree.root())])
        .ok();
    let mut warned: Vec<String> = lines_of(&run, "warning")
        .iter()
        .filter(|line| line["kind"] == "size_drop")
        .map(|line| {
            Path::new(line["path"].as_str().expect("path"))
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    warned.sort();
    let mut expected: Vec<String> = cases
        .iter()
        .filter(|case| case.3)
        .map(|case| case.0.to_owned())
        .collect();
    expected.sort();
    assert_eq!(warned, expected);
}

#[test]
fn cairn_run_shows_a_size_drop_in_status_and_metrics() {
    let workspace = Workspace::initialized();
    let dump = workspace.path("dump.sql");
    fs::write(&dump, random_bytes(51, 2_000_000)).expect("dump");
    let metrics = workspace.path("metrics.prom");
    let config = write_config(
        &workspace,
        &format!(
            "[sources.db]\ncommand = \"cat {}\"\nstream_name = \"db.sql\"\n\n[metrics]\nfile = {:?}\n",
            dump.display(),
            text(&metrics)
        ),
    );
    let args = ["run", "--no-check", "--no-drill"];
    cairn_config(&workspace, &config, &args).ok();
    let sample = |text: &str| {
        text.lines()
            .find(|line| line.starts_with("cairn_source_size_drops{source=\"db\"}"))
            .map(str::to_owned)
    };
    assert_eq!(
        sample(&fs::read_to_string(&metrics).expect("metrics")).as_deref(),
        Some("cairn_source_size_drops{source=\"db\"} 0")
    );
    fs::write(&dump, b"-- empty dump\n").expect("empty dump");
    cairn_config(&workspace, &config, &args)
        .ok()
        .stderr_contains("times smaller");
    assert_eq!(
        sample(&fs::read_to_string(&metrics).expect("metrics")).as_deref(),
        Some("cairn_source_size_drops{source=\"db\"} 1")
    );
    let status = cairn_config(&workspace, &config, &["status"]);
    assert!(
        status.text().contains("SIZE DROP: db.sql"),
        "{}",
        status.text()
    );
    let json = cairn_config(&workspace, &config, &["status", "--json"]);
    let source = lines_of(&json, "source")[0].clone();
    assert_eq!(
        source["size_drops"].as_array().map(Vec::len),
        Some(1),
        "{source}"
    );
    // The next good run clears it.
    fs::write(&dump, random_bytes(52, 2_000_000)).expect("dump");
    cairn_config(&workspace, &config, &args).ok();
    assert!(
        !cairn_config(&workspace, &config, &["status"])
            .text()
            .contains("SIZE DROP")
    );
}

#[test]
fn unindexed_packs_are_described_by_what_is_known() {
    let workspace = Workspace::initialized();
    backup_stream(&workspace, "db.sql", b"data", &[]);
    let pack = workspace.repo.join("data/aa").join("aa".repeat(32));
    fs::create_dir_all(pack.parent().expect("parent")).expect("dir");
    fs::write(&pack, random_bytes(61, 4000)).expect("garbage pack");
    let run = workspace.cairn(&["check"]).ok();
    let out = run.text();
    assert!(
        out.contains("1 pack is in no index and not read")
            && out.contains("cairn repair index")
            && !out.contains("left by an interrupted backup"),
        "{out}"
    );
    // `repair index` reads it, names it, and says what is true about it.
    workspace
        .cairn(&["repair", "index"])
        .ok()
        .stderr_contains(&format!("pack data/aa/{} cannot be read", "aa".repeat(32)))
        .stderr_contains("no index listed it as it is")
        .stderr_contains("no cairn command deletes it");
    workspace.cairn(&["check"]).ok();
}
