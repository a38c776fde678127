//! `[[copy]]` destinations in `cairn run`: each destination receives the new snapshots of its
//! sources after the backups (only those, night after night), restores byte for byte, keeps its
//! own retention (never undone by the next copy); a destination with a wrong password or an
//! unreachable location fails alone (the sources are backed up, the other destination copied,
//! exit 17, `status` says how far behind it is and why); `status` and the metrics report each
//! destination; and a bad `[[copy]]` table is a config error (exit 2) naming its line.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use crate::support::{
    CHEAP_INIT, Run, TreeBuilder, Workspace, assert_same_entries, random_bytes, run_command,
    scan_tree,
};

/// Exit code of a run where a source or step failed.
const EXIT_RUN_FAILED: i32 = 17;
/// Exit code of `status` when something is unhealthy.
const EXIT_UNHEALTHY: i32 = 16;
/// Exit code of a config error.
const EXIT_USAGE: i32 = 2;

/// A second repository with its own password.
struct Destination {
    name: &'static str,
    url: String,
    password: String,
    password_file: PathBuf,
}

impl Destination {
    /// Creates a repository at `url` with a password of its own, written to a file.
    fn init(workspace: &Workspace, name: &'static str, url: String) -> Self {
        let password = format!("password of {name}");
        let password_file = workspace.path(&format!("{name}.pass"));
        fs::write(&password_file, format!("{password}\n")).unwrap();
        let mut args = vec!["-r", url.as_str()];
        args.extend_from_slice(&CHEAP_INIT);
        workspace.cairn_password(&args, &password).ok();
        Self {
            name,
            url,
            password,
            password_file,
        }
    }

    /// A local destination below the workspace.
    fn local(workspace: &Workspace, name: &'static str) -> Self {
        let url = workspace.path(name).display().to_string();
        Self::init(workspace, name, url)
    }

    /// Runs `cairn -r <destination> args...` with its password.
    fn cairn(&self, workspace: &Workspace, args: &[&str]) -> Run {
        let mut full = vec!["-r", self.url.as_str()];
        full.extend_from_slice(args);
        workspace.cairn_password(&full, &self.password)
    }

    /// Its snapshots of `source` (tag `source:NAME`), oldest first.
    fn snapshots_of(&self, workspace: &Workspace, source: &str) -> Vec<serde_json::Value> {
        let tag = format!("source:{source}");
        self.cairn(workspace, &["snapshots", "--json"])
            .ok()
            .json_lines()
            .into_iter()
            .filter(|snapshot| {
                snapshot["tags"]
                    .as_array()
                    .is_some_and(|tags| tags.iter().any(|found| *found == tag))
            })
            .collect()
    }

    /// Its `[[copy]]` table, with `extra` lines.
    fn table(&self, extra: &str) -> String {
        format!(
            "\n[[copy]]\nname = {:?}\nurl = {:?}\npassword_file = {:?}\n{extra}",
            self.name,
            self.url,
            self.password_file.display().to_string()
        )
    }
}

/// A repository with two sources (`files`: a directory; `db`: a command's output) and a config
/// for them, the `[[copy]]` tables appended later.
struct Setup {
    workspace: Workspace,
    tree: TreeBuilder,
    dump: PathBuf,
    config: PathBuf,
    metrics: PathBuf,
    failures: PathBuf,
}

impl Setup {
    fn new() -> Self {
        let workspace = Workspace::initialized();
        let tree = TreeBuilder::new(workspace.path("files"));
        tree.file("a/steady.bin", &random_bytes(1, 40_000));
        tree.file("changing.txt", b"first night\n");
        let dump = workspace.path("db.dump");
        fs::write(&dump, random_bytes(2, 30_000)).unwrap();
        let config = workspace.path("cairn.toml");
        let metrics = workspace.path("cairn.prom");
        let failures = workspace.path("failed-destinations");
        Self {
            workspace,
            tree,
            dump,
            config,
            metrics,
            failures,
        }
    }

    /// Writes the config with these `[[copy]]` tables.
    fn write_config(&self, copies: &[String]) {
        let mut text = format!(
            "state_dir = {state:?}\n\n[repository]\nurl = {repo:?}\ncache_dir = {cache:?}\n\n\
             [hooks]\non_failure = [\"echo \\\"$CAIRN_FAILED_DESTINATIONS\\\" > {failures}\"]\n\n\
             [metrics]\nfile = {metrics:?}\n\n\
             [sources.files]\npaths = [{files:?}]\n\n\
             [sources.db]\ncommand = \"cat {dump}\"\nstream_name = \"db.dump\"\n",
            state = self.workspace.path("state").display().to_string(),
            repo = self.workspace.repo.display().to_string(),
            cache = self.workspace.cache.display().to_string(),
            failures = self.failures.display(),
            metrics = self.metrics.display().to_string(),
            files = self.tree.root().display().to_string(),
            dump = self.dump.display(),
        );
        for table in copies {
            text.push_str(table);
        }
        fs::write(&self.config, text).unwrap();
    }

    /// `cairn --config CONFIG args...` (the repository's password in the environment only).
    fn cairn(&self, args: &[&str]) -> Run {
        let mut full = vec!["--config", self.config.to_str().unwrap()];
        full.extend_from_slice(args);
        run_command(self.workspace.command(&full, &[]), None)
    }

    /// `run --json`'s `copy` line of a destination.
    fn copy_line(run: &Run, name: &str) -> serde_json::Value {
        run.json_lines()
            .into_iter()
            .find(|line| line["message_type"] == "copy" && line["destination"] == name)
            .unwrap_or_else(|| panic!("no copy line for {name}: {}", run.text()))
    }

    /// `status --json`'s `destination` line of a destination.
    fn status_line(status: &Run, name: &str) -> serde_json::Value {
        status
            .json_lines()
            .into_iter()
            .find(|line| line["message_type"] == "destination" && line["destination"] == name)
            .unwrap_or_else(|| panic!("no destination line for {name}: {}", status.text()))
    }
}

/// Restores `copy_id` from the destination and `source_id` from the repository and asserts the
/// trees are identical; returns the restored copy's `changing.txt`.
fn assert_copy_restores(
    setup: &Setup,
    destination: &Destination,
    source_id: &str,
    copy_id: &str,
) -> Vec<u8> {
    let expected = setup.workspace.path("expected");
    let actual = setup.workspace.path("actual");
    setup
        .workspace
        .cairn(&["restore", source_id, "--target", expected.to_str().unwrap()])
        .ok();
    destination
        .cairn(
            &setup.workspace,
            &["restore", copy_id, "--target", actual.to_str().unwrap()],
        )
        .ok();
    // The target directories themselves are not part of the snapshots.
    let mut expected_entries = scan_tree(&expected);
    let mut actual_entries = scan_tree(&actual);
    expected_entries.remove(Path::new(""));
    actual_entries.remove(Path::new(""));
    assert_same_entries(&expected_entries, &actual_entries);
    let changing = actual_entries
        .keys()
        .find(|path| path.ends_with("changing.txt"))
        .expect("changing.txt restored");
    let bytes = fs::read(actual.join(changing)).unwrap();
    fs::remove_dir_all(&expected).unwrap();
    fs::remove_dir_all(&actual).unwrap();
    bytes
}

/// The sample of `metric{destination="NAME"}` in a metrics file, as written.
fn metric(text: &str, metric: &str, name: &str) -> String {
    let prefix = format!("{metric}{{destination=\"{name}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix}in:\n{text}"))
        .to_owned()
}

/// Whether a metric's sample is a time after 2020.
fn is_recent_time(sample: &str) -> bool {
    sample
        .parse::<f64>()
        .is_ok_and(|seconds| seconds > 1_577_836_800.0)
}

#[test]
fn destinations_receive_only_new_snapshots_of_their_sources_and_keep_their_own_retention() {
    let setup = Setup::new();
    let everything = Destination::local(&setup.workspace, "everything");
    let newest_db = Destination::local(&setup.workspace, "newest-db");
    setup.write_config(&[
        everything.table(""),
        newest_db.table("sources = [\"db\"]\nretention = { keep_last = 1 }\n"),
    ]);

    // Three nights; the file and the dump change before the second.
    let mut copied = Vec::new();
    for night in 1..=3 {
        if night == 2 {
            fs::write(setup.tree.path("changing.txt"), b"second night, longer\n").unwrap();
            fs::write(&setup.dump, random_bytes(3, 30_000)).unwrap();
        }
        let run = setup.cairn(&["run", "--json"]).ok();
        let all = Setup::copy_line(&run, "everything");
        let db_only = Setup::copy_line(&run, "newest-db");
        for line in [&all, &db_only] {
            assert_eq!(line["ok"], true, "{line}");
            assert_eq!(line["behind"], 0, "{line}");
        }
        copied.push((
            all["snapshots_copied"].as_u64().unwrap(),
            db_only["snapshots_copied"].as_u64().unwrap(),
            db_only["snapshots_removed"].as_u64().unwrap(),
        ));
        assert_eq!(run.summary()["destinations_failed"], serde_json::json!([]));
    }
    // Each night copies that night's snapshots only: the destination's own retention removes
    // the older db copy, and the next night does not bring it back.
    assert_eq!(copied, [(2, 1, 0), (2, 1, 1), (2, 1, 1)]);

    // The repository keeps everything (no retention there); each destination what it should.
    assert_eq!(setup.workspace.snapshots_tagged("source:db").len(), 3);
    assert_eq!(everything.snapshots_of(&setup.workspace, "files").len(), 3);
    assert_eq!(everything.snapshots_of(&setup.workspace, "db").len(), 3);
    assert!(newest_db.snapshots_of(&setup.workspace, "files").is_empty());
    let kept = newest_db.snapshots_of(&setup.workspace, "db");
    assert_eq!(kept.len(), 1);
    let newest_source = setup.workspace.snapshots_tagged("source:db").pop().unwrap();
    assert_eq!(kept[0]["copy_of"]["snapshot"], newest_source["id"]);
    // The stored config went along, so a destination alone is enough to recover.
    assert!(
        newest_db
            .cairn(
                &setup.workspace,
                &["snapshots", "--json", "--tag", "cairn:config"]
            )
            .ok()
            .json_lines()
            .len()
            == 1
    );

    // Byte for byte: the newest files snapshot, and the newest dump.
    let source_files = setup
        .workspace
        .snapshots_tagged("source:files")
        .pop()
        .unwrap();
    let copy = everything
        .snapshots_of(&setup.workspace, "files")
        .pop()
        .unwrap();
    assert_eq!(copy["copy_of"]["snapshot"], source_files["id"]);
    let changing = assert_copy_restores(
        &setup,
        &everything,
        source_files["id"].as_str().unwrap(),
        copy["id"].as_str().unwrap(),
    );
    assert_eq!(changing, b"second night, longer\n");
    let dumped = newest_db
        .cairn(
            &setup.workspace,
            &["dump", kept[0]["id"].as_str().unwrap(), "db.dump"],
        )
        .ok();
    assert!(
        dumped.stdout == fs::read(&setup.dump).unwrap(),
        "the dump differs"
    );

    // Status and the metrics: both destinations in step.
    let status = setup.cairn(&["status", "--json"]).ok();
    for name in ["everything", "newest-db"] {
        let line = Setup::status_line(&status, name);
        assert_eq!(line["health"], "in_step", "{line}");
        assert_eq!(line["behind"], 0, "{line}");
        assert_eq!(line["last_ok"], true, "{line}");
    }
    let text = setup.cairn(&["status"]).ok().text();
    assert!(
        text.lines().any(
            |line| line.starts_with("copy everything: ok, behind by 0 snapshots, newest copy ")
        ),
        "{text}"
    );
    let metrics = fs::read_to_string(&setup.metrics).unwrap();
    for name in ["everything", "newest-db"] {
        assert_eq!(metric(&metrics, "cairn_copy_snapshots_behind", name), "0");
        assert_eq!(metric(&metrics, "cairn_copy_last_run_success", name), "1");
        assert!(is_recent_time(&metric(
            &metrics,
            "cairn_copy_last_success_timestamp_seconds",
            name
        )));
        assert!(is_recent_time(&metric(
            &metrics,
            "cairn_copy_newest_copy_timestamp_seconds",
            name
        )));
    }
}

#[test]
fn a_failing_destination_fails_alone_and_catches_up_once_fixed() {
    let setup = Setup::new();
    let good = Destination::local(&setup.workspace, "good");
    let locked = Destination::local(&setup.workspace, "locked");
    fs::write(&locked.password_file, "not the password\n").unwrap();
    let gone = Destination {
        name: "gone",
        url: setup.workspace.path("never-created").display().to_string(),
        password: String::new(),
        password_file: good.password_file.clone(),
    };
    setup.write_config(&[good.table(""), locked.table(""), gone.table("")]);

    for night in 1..=2 {
        let run = setup.cairn(&["run", "--json"]).code(EXIT_RUN_FAILED);
        // The sources are backed up whatever happens to the copies.
        let sources: Vec<serde_json::Value> = run
            .json_lines()
            .into_iter()
            .filter(|line| line["message_type"] == "source")
            .collect();
        assert_eq!(sources.len(), 2);
        assert!(sources.iter().all(|line| line["ok"] == true), "{sources:?}");
        assert_eq!(Setup::copy_line(&run, "good")["ok"], true);
        assert_eq!(Setup::copy_line(&run, "good")["snapshots_copied"], 2);
        let wrong = Setup::copy_line(&run, "locked");
        assert_eq!(wrong["ok"], false);
        assert!(
            wrong["error"].as_str().unwrap().contains("password"),
            "{wrong}"
        );
        assert_eq!(wrong["behind"], 2 * night, "{wrong}");
        assert_eq!(Setup::copy_line(&run, "gone")["ok"], false);
        assert_eq!(
            run.summary()["destinations_failed"],
            serde_json::json!(["locked", "gone"])
        );
        assert_eq!(
            fs::read_to_string(&setup.failures).unwrap().trim(),
            "locked gone"
        );
    }
    assert_eq!(setup.workspace.snapshots_tagged("source:db").len(), 2);

    let status = setup.cairn(&["status", "--json"]).code(EXIT_UNHEALTHY);
    assert_eq!(Setup::status_line(&status, "good")["health"], "in_step");
    let locked_line = Setup::status_line(&status, "locked");
    assert_eq!(locked_line["health"], "never", "{locked_line}");
    assert_eq!(locked_line["behind"], 4, "{locked_line}");
    assert!(
        locked_line["last_error"]
            .as_str()
            .unwrap()
            .contains("password"),
        "{locked_line}"
    );
    let text = setup.cairn(&["status"]).code(EXIT_UNHEALTHY).text();
    let row = text
        .lines()
        .find(|line| line.starts_with("copy locked: "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        row.starts_with(
            "copy locked: NEVER COPIED, behind by 4 snapshots, no copy yet, last copy FAILED at "
        ),
        "{row}"
    );
    let metrics = fs::read_to_string(&setup.metrics).unwrap();
    assert_eq!(
        metric(&metrics, "cairn_copy_snapshots_behind", "locked"),
        "4"
    );
    assert_eq!(
        metric(&metrics, "cairn_copy_last_run_success", "locked"),
        "0"
    );
    assert_eq!(
        metric(
            &metrics,
            "cairn_copy_last_success_timestamp_seconds",
            "locked"
        ),
        "0"
    );
    assert_eq!(metric(&metrics, "cairn_copy_snapshots_behind", "good"), "0");

    // The right password: the next run copies every snapshot it missed.
    fs::write(&locked.password_file, format!("{}\n", locked.password)).unwrap();
    let run = setup.cairn(&["run", "--json"]).code(EXIT_RUN_FAILED);
    let caught_up = Setup::copy_line(&run, "locked");
    assert_eq!(caught_up["ok"], true, "{caught_up}");
    assert_eq!(caught_up["snapshots_copied"], 6, "{caught_up}");
    assert_eq!(caught_up["behind"], 0, "{caught_up}");
    assert_eq!(locked.snapshots_of(&setup.workspace, "files").len(), 3);
    let status = setup.cairn(&["status", "--json"]).code(EXIT_UNHEALTHY);
    assert_eq!(Setup::status_line(&status, "locked")["health"], "in_step");
    assert_eq!(Setup::status_line(&status, "gone")["health"], "never");
}

#[test]
fn an_s3_destination_receives_the_snapshots() {
    let Some(url) = crate::backends::remote_url("CAIRN_TEST_S3_URL", "copy-run") else {
        return;
    };
    let setup = Setup::new();
    let offsite = Destination::init(&setup.workspace, "offsite", url);
    setup.write_config(&[offsite.table("retention = { keep_last = 1 }\n")]);
    for _ in 0..2 {
        let run = setup.cairn(&["run", "--json"]).ok();
        let line = Setup::copy_line(&run, "offsite");
        assert_eq!(line["snapshots_copied"], 2, "{line}");
    }
    for source in ["files", "db"] {
        assert_eq!(offsite.snapshots_of(&setup.workspace, source).len(), 1);
    }
    offsite
        .cairn(&setup.workspace, &["check", "--read-data"])
        .ok();
}

/// A config with `[[copy]]` tables after a repository and one source, and the expected line
/// and words of its error.
fn bad_copy_config(copies: &str) -> String {
    let mut text = String::from(
        "[repository]\nurl = \"/srv/backup/\"\n\n[sources.db]\ncommand = \"true\"\nstream_name = \"db.dump\"\n",
    );
    let _ = write!(text, "{copies}");
    text
}

#[test]
fn a_bad_copy_table_is_a_config_error_naming_its_line() {
    let workspace = Workspace::new();
    let good = "[[copy]]\nname = \"a\"\nurl = \"/srv/a\"\npassword_file = \"/p\"\n";
    let cases: [(&str, String, &str, &str); 7] = [
        (
            "missing url",
            "[[copy]]\nname = \"a\"\npassword_file = \"/p\"\n".into(),
            ":7:",
            "missing field `url`",
        ),
        (
            "duplicate name",
            format!("{good}[[copy]]\nname = \"a\"\nurl = \"/srv/b\"\npassword_file = \"/p\"\n"),
            ":11: copy[1].name",
            "names must be unique",
        ),
        (
            "unknown source",
            format!("{good}sources = [\"web\"]\n"),
            ":7: copy[0].sources",
            "no source \"web\"",
        ),
        (
            "the repository itself",
            "[[copy]]\nname = \"a\"\nurl = \"file:///srv/backup\"\npassword_file = \"/p\"\n".into(),
            ":7: copy[0].url",
            "the repository itself",
        ),
        (
            "unknown key",
            format!("{good}retension = {{ keep_last = 1 }}\n"),
            ":11:",
            "unknown field `retension`",
        ),
        (
            "no password",
            "[[copy]]\nname = \"a\"\nurl = \"/srv/a\"\n".into(),
            ":7:",
            "give password_file or password_command",
        ),
        (
            "empty retention",
            format!("{good}retention = {{}}\n"),
            ":11:",
            "retention keeps nothing",
        ),
    ];
    let config = workspace.path("cairn.toml");
    for (what, copies, location, words) in cases {
        fs::write(&config, bad_copy_config(&copies)).unwrap();
        for command in [["run", "--json"].as_slice(), &["status"]] {
            let mut args = vec!["--config", config.to_str().unwrap()];
            args.extend_from_slice(command);
            let run = workspace.cairn(&args).code(EXIT_USAGE);
            let line = run.stderr.lines().next().unwrap_or_default().to_owned();
            let expected = format!("{}{location}", config.display());
            assert!(
                line.contains(&expected) && line.contains(words),
                "{what}: expected {expected:?} and {words:?} in: {}",
                run.stderr
            );
        }
    }
}
