//! Operations end to end: `cairn run` from a `cairn.toml` (a directory source, a command source
//! that succeeds and one that fails: the failing one commits nothing, the others are saved and
//! restore, the run exits 17, hooks run in order and `on_failure` gets the error, the metrics
//! file says which failed and parses as Prometheus text), a run that cannot start (wrong
//! password, failing global hook) on record as failed, retention per source, `cairn status` exit
//! codes (never run, fresh, overdue), `cairn metrics`, config errors as usage errors (exit 2), the config file's
//! repository settings, and the shipped `contrib/` units, cron lines and example config.

// Metric values compared here are 0/1 flags and small counts: exact in f64.
#![allow(clippy::float_cmp)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{
    MongoArchive, PASSWORD, TreeBuilder, Workspace, assert_same_tree, compressible_text,
    random_bytes, restored_path, run_command,
};

/// Exit code of `cairn run` when a source or step failed.
const EXIT_RUN_FAILED: i32 = 17;
/// Exit code of `cairn status` when a source is overdue or never succeeded.
const EXIT_UNHEALTHY: i32 = 16;
/// Exit code of a usage error (command line or config file).
const EXIT_USAGE: i32 = 2;

/// Writes `cairn.toml` in the workspace: the workspace's repository, cache and a state directory,
/// then `body`. Returns its path.
fn write_config(workspace: &Workspace, body: &str) -> PathBuf {
    let path = workspace.path("cairn.toml");
    let text = format!(
        // store_config = false: these tests count snapshots; tests/it/recover.rs covers the
        // config `cairn run` stores.
        "state_dir = {state:?}\n\n[repository]\nurl = {repo:?}\ncache_dir = {cache:?}\nstore_config = false\n\n{body}",
        state = workspace.path("state").display().to_string(),
        repo = workspace.repo.display().to_string(),
        cache = workspace.cache.display().to_string(),
    );
    fs::write(&path, text).expect("write config");
    path
}

/// Runs `cairn --config CONFIG args...`.
fn cairn_config(workspace: &Workspace, config: &Path, args: &[&str]) -> crate::support::Run {
    let mut full = vec!["--config", config.to_str().expect("utf-8 path")];
    full.extend_from_slice(args);
    workspace.cairn(&full)
}

/// A parsed metrics text: `(metric name, source label or "") → value`. Fails the test unless
/// every sample line parses (prometheus-parse skips lines it cannot read, so they are counted)
/// and every metric has a HELP line and is a gauge.
fn parse_metrics(text: &str) -> BTreeMap<(String, String), f64> {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|line| Ok(line.to_owned())))
        .expect("metrics parse");
    let sample_lines = text
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .count();
    assert_eq!(
        scrape.samples.len(),
        sample_lines,
        "every sample line parses:\n{text}"
    );
    let mut values = BTreeMap::new();
    for sample in scrape.samples {
        assert!(
            scrape.docs.contains_key(&sample.metric),
            "{} has HELP",
            sample.metric
        );
        let prometheus_parse::Value::Gauge(value) = sample.value else {
            panic!("{} is not a gauge: {:?}", sample.metric, sample.value);
        };
        let source = sample.labels.get("source").unwrap_or_default().to_owned();
        values.insert((sample.metric, source), value);
    }
    values
}

fn metric(values: &BTreeMap<(String, String), f64>, name: &str, source: &str) -> f64 {
    *values
        .get(&(name.to_owned(), source.to_owned()))
        .unwrap_or_else(|| panic!("no {name}{{source={source:?}}} in {values:?}"))
}

/// The snapshots (from `snapshots --json`) tagged `source:NAME`.
fn snapshots_of(workspace: &Workspace, source: &str) -> Vec<serde_json::Value> {
    workspace.snapshots_tagged(&format!("source:{source}"))
}

/// Rewrites every source's last success in the run state to `time`.
fn age_the_state(workspace: &Workspace, time: &str) {
    let path = workspace.path("state/cairn.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&fs::read(&path).expect("state file")).expect("state JSON");
    for source in state["sources"]
        .as_object_mut()
        .expect("sources")
        .values_mut()
    {
        source["last_success"] = time.into();
        source["last_attempt"] = time.into();
    }
    fs::write(&path, serde_json::to_vec(&state).expect("encode")).expect("write state");
}

/// A repository, one file below `data/` and a config whose source `data` backs that directory up
/// with the keys `source_keys`, followed by the sections `sections`.
fn data_source(seed: u64, source_keys: &str, sections: &str) -> (Workspace, TreeBuilder, PathBuf) {
    let workspace = Workspace::initialized();
    let tree = TreeBuilder::new(workspace.path("data"));
    tree.file("a.txt", &compressible_text(seed, 5_000));
    let config = write_config(
        &workspace,
        &format!(
            "[sources.data]\npaths = [{:?}]\n{source_keys}\n{sections}",
            tree.root().display().to_string()
        ),
    );
    (workspace, tree, config)
}

#[test]
fn run_backs_up_every_source_and_a_failing_command_commits_nothing() {
    let workspace = Workspace::initialized();
    let tree = TreeBuilder::new(workspace.path("site"));
    tree.file("index.html", &compressible_text(1, 30_000));
    tree.file("assets/logo.bin", &random_bytes(2, 200_000));
    tree.file("notes/todo.txt", b"rotate the keys");
    let dump = MongoArchive::generate(3, 200).to_bytes();
    let dump_file = workspace.path("dump.archive");
    fs::write(&dump_file, &dump).expect("write dump");
    let log = workspace.path("hooks.log");
    let log_text = log.display().to_string();
    let metrics_file = workspace.path("textfile/cairn.prom");
    let config = write_config(
        &workspace,
        &format!(
            r#"[defaults]
tags = ["nightly"]
max_age = "26h"

[hooks]
before = ["echo \"global before $CAIRN_SOURCES\" >> {log_text}"]
after = ["echo \"global after\" >> {log_text}"]
on_failure = ["echo \"global on_failure $CAIRN_FAILED_SOURCES\" >> {log_text}"]

[sources.site]
paths = [{site:?}]
before = ["echo \"before $CAIRN_HOOK $CAIRN_SOURCE\" >> {log_text}"]
after = ["echo \"after $CAIRN_SOURCE $CAIRN_SNAPSHOT\" >> {log_text}"]

[sources.db]
command = "cat {dump}"
stream_name = "app.archive"

[sources.bad]
command = "printf 'half a dump'; exit 3"
stream_name = "bad.archive"
on_failure = ["echo \"on_failure $CAIRN_SOURCE: $CAIRN_ERROR\" >> {log_text}"]

[metrics]
file = {metrics:?}
"#,
            site = tree.root().display().to_string(),
            dump = dump_file.display(),
            metrics = metrics_file.display().to_string(),
        ),
    );

    let run = cairn_config(&workspace, &config, &["run", "--json"]).code(EXIT_RUN_FAILED);
    let lines = run.json_lines();
    let source_line = |name: &str| {
        lines
            .iter()
            .find(|line| line["message_type"] == "source" && line["source"] == name)
            .unwrap_or_else(|| panic!("no source line for {name}: {lines:?}"))
            .clone()
    };
    assert_eq!(source_line("site")["ok"], true, "{}", run.stderr);
    assert_eq!(source_line("db")["ok"], true, "{}", run.stderr);
    assert_eq!(source_line("bad")["ok"], false);
    let summary = run.summary();
    assert_eq!(summary["ok"], false);
    assert_eq!(summary["sources_failed"], serde_json::json!(["bad"]));

    // The failing command committed nothing; the others are there, tagged, and restore.
    assert!(snapshots_of(&workspace, "bad").is_empty());
    let site = snapshots_of(&workspace, "site");
    assert_eq!(site.len(), 1);
    assert!(
        site[0]["tags"]
            .as_array()
            .expect("tags")
            .contains(&"nightly".into())
    );
    assert_eq!(site[0]["id"], source_line("site")["snapshot_id"]);
    let target = workspace.path("restore");
    workspace
        .cairn(&[
            "restore",
            site[0]["id"].as_str().expect("id"),
            "--target",
            &target.to_string_lossy(),
        ])
        .ok();
    assert_same_tree(tree.root(), &restored_path(&target, tree.root()));
    let db = snapshots_of(&workspace, "db");
    assert_eq!(db.len(), 1);
    let dumped = workspace
        .cairn(&["dump", db[0]["id"].as_str().expect("id"), "app.archive"])
        .ok();
    assert!(
        dumped.stdout == dump,
        "the dumped stream is the command's output"
    );

    // Hooks ran in order; on_failure got the error; the global after hook did not run.
    let hooks = fs::read_to_string(&log).expect("hook log");
    let hook_lines: Vec<&str> = hooks.lines().collect();
    assert_eq!(hook_lines[0], "global before site db bad", "{hooks}");
    assert_eq!(hook_lines[1], "before before site", "{hooks}");
    assert_eq!(
        hook_lines[2],
        format!("after site {}", site[0]["id"].as_str().expect("id")),
        "{hooks}"
    );
    assert!(hook_lines[3].starts_with("on_failure bad: "), "{hooks}");
    assert!(hook_lines[3].len() > "on_failure bad: ".len(), "{hooks}");
    assert_eq!(hook_lines[4], "global on_failure bad", "{hooks}");
    assert_eq!(hook_lines.len(), 5, "{hooks}");

    // The metrics file says which source failed, and parses.
    let values = parse_metrics(&fs::read_to_string(&metrics_file).expect("metrics file"));
    assert_eq!(metric(&values, "cairn_source_last_run_success", "bad"), 0.0);
    assert_eq!(
        metric(&values, "cairn_source_last_run_success", "site"),
        1.0
    );
    assert_eq!(metric(&values, "cairn_source_last_run_success", "db"), 1.0);
    assert_eq!(
        metric(
            &values,
            "cairn_source_last_success_timestamp_seconds",
            "bad"
        ),
        0.0
    );
    assert!(
        metric(
            &values,
            "cairn_source_last_success_timestamp_seconds",
            "site"
        ) > 1.0e9
    );
    assert_eq!(metric(&values, "cairn_snapshots", "site"), 1.0);
    assert_eq!(metric(&values, "cairn_snapshots", "bad"), 0.0);
    #[allow(clippy::cast_precision_loss)]
    let dump_length = dump.len() as f64;
    assert_eq!(
        metric(&values, "cairn_source_bytes_processed", "db"),
        dump_length
    );
    assert!(metric(&values, "cairn_source_bytes_added", "site") > 0.0);
    assert!(metric(&values, "cairn_repository_size_bytes", "") > 0.0);
    assert!(metric(&values, "cairn_dedup_ratio", "") > 0.0);
    assert_eq!(metric(&values, "cairn_repository_up", ""), 1.0);

    // status: the never-successful source makes it fail; named sources run alone.
    let status = cairn_config(&workspace, &config, &["status"]).code(EXIT_UNHEALTHY);
    assert!(
        status.text().contains("NEVER SUCCEEDED"),
        "{}",
        status.text()
    );
    cairn_config(&workspace, &config, &["run", "site", "db"]).ok();
    assert_eq!(snapshots_of(&workspace, "site").len(), 2);
    assert!(snapshots_of(&workspace, "bad").is_empty());
}

#[test]
fn status_exit_codes_follow_max_age() {
    let (workspace, _tree, config) = data_source(10, "max_age = \"26h\"", "");

    let never = cairn_config(&workspace, &config, &["status", "--json"]).code(EXIT_UNHEALTHY);
    assert_eq!(never.json_lines()[0]["health"], "never");

    cairn_config(&workspace, &config, &["run"]).ok();
    let fresh = cairn_config(&workspace, &config, &["status", "--json"]).ok();
    let line = &fresh.json_lines()[0];
    assert_eq!(line["health"], "fresh");
    assert_eq!(line["snapshots"], 1);
    assert_eq!(line["max_age_seconds"], 26 * 3600);
    assert_eq!(fresh.summary()["ok"], true);
    let human = cairn_config(&workspace, &config, &["status"]).ok();
    assert!(human.text().contains("data "), "{}", human.text());

    age_the_state(&workspace, "2000-01-01T00:00:00Z");
    let overdue = cairn_config(&workspace, &config, &["status", "--json"]).code(EXIT_UNHEALTHY);
    assert_eq!(overdue.json_lines()[0]["health"], "overdue");
    let human = cairn_config(&workspace, &config, &["status"]).code(EXIT_UNHEALTHY);
    assert!(human.text().contains("OVERDUE"), "{}", human.text());

    // The next successful run makes it fresh again.
    cairn_config(&workspace, &config, &["run"]).ok();
    cairn_config(&workspace, &config, &["status"]).ok();
}

#[test]
fn a_run_that_cannot_start_is_recorded_as_failed() {
    let (workspace, _tree, config) = data_source(60, "", "");
    let metrics_file = workspace.path("textfile/cairn.prom");
    let metrics_arg = metrics_file.to_string_lossy().into_owned();
    let config_arg = config.to_string_lossy().into_owned();
    let run_args = [
        "--config",
        &config_arg,
        "run",
        "--metrics-file",
        &metrics_arg,
    ];
    let last_run_success = || {
        let values = parse_metrics(&fs::read_to_string(&metrics_file).expect("metrics file"));
        (
            metric(&values, "cairn_source_last_run_success", "data"),
            metric(&values, "cairn_repository_up", ""),
        )
    };

    // A wrong password: the exit code is the usual 12, and the failure is on record.
    let mut command = workspace.command(&run_args, &[]);
    command.env("CAIRN_PASSWORD", "wrong");
    run_command(command, None).code(12);
    assert_eq!(last_run_success(), (0.0, 0.0));
    let status = cairn_config(&workspace, &config, &["status", "--json"]).code(EXIT_UNHEALTHY);
    let line = &status.json_lines()[0];
    assert_eq!(line["health"], "never");
    assert!(
        line["last_error"]
            .as_str()
            .is_some_and(|error| error.contains("wrong password")),
        "{line}"
    );

    workspace.cairn(&run_args).ok();
    assert_eq!(last_run_success(), (1.0, 1.0));

    // A failing global before hook: no backup, exit 17, on record.
    let text = fs::read_to_string(&config).expect("config");
    fs::write(&config, format!("{text}\n[hooks]\nbefore = [\"exit 4\"]\n")).expect("config");
    workspace
        .cairn(&run_args)
        .code(EXIT_RUN_FAILED)
        .stderr_contains("before hook \"exit 4\" failed");
    assert_eq!(last_run_success(), (0.0, 0.0));
    assert_eq!(workspace.snapshots().len(), 1);
}

#[test]
fn retention_applies_per_source_and_prunes() {
    let workspace = Workspace::initialized();
    let tree = TreeBuilder::new(workspace.path("data"));
    tree.file("a.txt", &compressible_text(20, 5_000));
    let other = TreeBuilder::new(workspace.path("other"));
    other.file("b.txt", &compressible_text(21, 5_000));
    let config = write_config(
        &workspace,
        &format!(
            "[defaults]\nretention = {{ keep_last = 2 }}\n\n\
             [sources.data]\npaths = [{:?}]\n\n\
             [sources.other]\npaths = [{:?}]\nretention = {{ keep_last = 5 }}\n",
            tree.root().display().to_string(),
            other.root().display().to_string()
        ),
    );
    for night in 0..4 {
        tree.file("a.txt", &compressible_text(30 + night, 5_000));
        cairn_config(&workspace, &config, &["run"]).ok();
    }
    assert_eq!(snapshots_of(&workspace, "data").len(), 2);
    assert_eq!(snapshots_of(&workspace, "other").len(), 4);
    // Snapshots made outside `cairn run` are not the source's: retention leaves them alone.
    workspace.backup(&[tree.root()]);
    cairn_config(&workspace, &config, &["run", "--no-forget"]).ok();
    assert_eq!(snapshots_of(&workspace, "data").len(), 3);
    cairn_config(&workspace, &config, &["run"]).ok();
    assert_eq!(snapshots_of(&workspace, "data").len(), 2);
    assert_eq!(workspace.snapshots().len(), 2 + 5 + 1);
    workspace.cairn(&["check", "--read-data"]).ok();
}

#[test]
fn metrics_command_writes_parseable_text() {
    let (workspace, _tree, config) = data_source(40, "", "[check]\nread_data_subset = \"100%\"\n");
    cairn_config(&workspace, &config, &["run"]).ok();
    let stdout = cairn_config(&workspace, &config, &["metrics"]).ok().text();
    let values = parse_metrics(&stdout);
    assert_eq!(
        metric(&values, "cairn_source_last_run_success", "data"),
        1.0
    );
    assert_eq!(metric(&values, "cairn_check_last_success", ""), 1.0);
    assert!(metric(&values, "cairn_check_last_timestamp_seconds", "") > 1.0e9);
    let file = workspace.path("out/cairn.prom");
    cairn_config(
        &workspace,
        &config,
        &["metrics", "--metrics-file", &file.to_string_lossy()],
    )
    .ok();
    let written = fs::read_to_string(&file).expect("metrics file");
    assert_eq!(parse_metrics(&written).len(), values.len());
}

#[test]
fn config_errors_are_usage_errors_naming_file_line_and_key() {
    let workspace = Workspace::initialized();
    let config = write_config(
        &workspace,
        "[sources.data]\npaths = [\"/srv\"]\nexclud = [\"*.tmp\"]\n",
    );
    let run = cairn_config(&workspace, &config, &["run"]).code(EXIT_USAGE);
    let line = format!(
        "cairn: {}:10: sources.data.exclud: unknown field `exclud`",
        config.display()
    );
    assert!(run.stderr.starts_with(&line), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    // Every command reads --config, so a broken file stops them all before any work.
    cairn_config(&workspace, &config, &["snapshots"]).code(EXIT_USAGE);

    let config = write_config(&workspace, "[sources.data]\npaths = [\"/srv\"]\n");
    cairn_config(&workspace, &config, &["run", "nosuch"])
        .code(EXIT_USAGE)
        .stderr_contains("no source \"nosuch\" in the config (sources: data)");
    workspace
        .cairn(&["status"])
        .code(EXIT_USAGE)
        .stderr_contains("needs a config file");
    let missing = workspace.path("missing.toml");
    cairn_config(&workspace, &missing, &["status"])
        .code(EXIT_USAGE)
        .stderr_contains("cannot read the config file");
}

#[test]
fn the_config_file_supplies_repository_password_and_cache() {
    let (workspace, _tree, config) = data_source(50, "", "");
    let password_file = workspace.path("password");
    fs::write(&password_file, format!("{PASSWORD}\n")).expect("password file");
    let text = fs::read_to_string(&config).expect("config").replace(
        "[repository]\n",
        &format!(
            "[repository]\npassword_file = {:?}\n",
            password_file.display().to_string()
        ),
    );
    fs::write(&config, text).expect("config");
    let bare = |args: &[&str]| {
        let mut command = workspace.command(args, &[]);
        command
            .env_remove("CAIRN_REPOSITORY")
            .env_remove("CAIRN_PASSWORD")
            .env_remove("CAIRN_CACHE_DIR");
        run_command(command, None)
    };
    let config_text = config.to_string_lossy().into_owned();
    bare(&["--config", &config_text, "run"]).ok();
    let snapshots = bare(&["--config", &config_text, "snapshots", "--json"]).ok();
    assert_eq!(snapshots.json_lines().len(), 1);
    // The environment beats the file: a wrong password from CAIRN_PASSWORD is used (exit 12).
    let mut command = workspace.command(&["--config", &config_text, "snapshots"], &[]);
    command
        .env("CAIRN_PASSWORD", "wrong")
        .env_remove("CAIRN_REPOSITORY");
    run_command(command, None).code(12);
}

/// `contrib/` beside the workspace's root.
fn contrib(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../contrib")
        .join(name)
}

/// The `key=value` lines of an INI-style unit, per `[section]`.
fn unit_sections(text: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut sections: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
        {
            name.clone_into(&mut current);
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not key=value: {line}"));
        assert!(!current.is_empty(), "{line} outside a section");
        sections
            .entry(current.clone())
            .or_default()
            .push((key.trim().to_owned(), value.trim().to_owned()));
    }
    sections
}

fn unit_value<'a>(
    sections: &'a BTreeMap<String, Vec<(String, String)>>,
    section: &str,
    key: &str,
) -> &'a str {
    sections
        .get(section)
        .and_then(|pairs| pairs.iter().find(|(name, _)| name == key))
        .map_or_else(
            || panic!("[{section}] has no {key}"),
            |(_, value)| value.as_str(),
        )
}

#[test]
fn contrib_systemd_units_and_cron_lines_are_valid() {
    let service_text = fs::read_to_string(contrib("cairn.service")).expect("cairn.service");
    let timer_text = fs::read_to_string(contrib("cairn.timer")).expect("cairn.timer");
    let service = unit_sections(&service_text);
    let exec = unit_value(&service, "Service", "ExecStart");
    let words: Vec<&str> = exec.split_whitespace().collect();
    assert!(words[0].ends_with("/cairn"), "{exec}");
    let config_at = words
        .iter()
        .position(|word| *word == "--config")
        .expect("--config");
    assert_eq!(words[config_at + 1], "/etc/cairn/cairn.toml");
    assert_eq!(words.last(), Some(&"run"), "{exec}");
    assert_eq!(unit_value(&service, "Service", "Type"), "oneshot");
    assert_eq!(unit_value(&service, "Service", "ProtectSystem"), "strict");
    // The backup must still read home directories.
    assert_ne!(unit_value(&service, "Service", "ProtectHome"), "yes");
    let timer = unit_sections(&timer_text);
    assert!(!unit_value(&timer, "Timer", "OnCalendar").is_empty());
    assert_eq!(unit_value(&timer, "Timer", "Persistent"), "true");
    assert_eq!(unit_value(&timer, "Install", "WantedBy"), "timers.target");

    // systemd's own verdict, where it is installed (ExecStart pointed at the built binary).
    if let Ok(analyze) = which("systemd-analyze") {
        let directory = tempfile::tempdir().expect("temp dir");
        let binary = crate::support::cairn_binary();
        fs::write(
            directory.path().join("cairn.service"),
            service_text.replace("/usr/local/bin/cairn", binary),
        )
        .expect("write unit");
        fs::write(directory.path().join("cairn.timer"), &timer_text).expect("write timer");
        let output = Command::new(analyze)
            .arg("verify")
            .arg(directory.path().join("cairn.service"))
            .arg(directory.path().join("cairn.timer"))
            .output()
            .expect("systemd-analyze runs");
        assert!(
            output.status.success() && output.stderr.is_empty(),
            "systemd-analyze verify: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    } else {
        eprintln!("note: systemd-analyze not installed; the units were checked by parsing only");
    }

    let cron = fs::read_to_string(contrib("cairn.cron")).expect("cairn.cron");
    let entries: Vec<&str> = cron
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        .collect();
    assert!(!entries.is_empty());
    for entry in &entries {
        let fields: Vec<&str> = entry.split_whitespace().collect();
        assert!(fields.len() > 5, "{entry}");
        for field in &fields[..5] {
            assert!(
                field
                    .chars()
                    .all(|character| character.is_ascii_digit() || "*/,-".contains(character)),
                "time field {field:?} in {entry}"
            );
        }
        assert!(fields[5].ends_with("/cairn"), "{entry}");
        assert!(!entry.contains('%'), "cron turns % into a newline: {entry}");
    }
    assert!(entries[0].contains("--config /etc/cairn/cairn.toml run"));
    assert!(
        entries[0].contains(" || "),
        "an alert on failure: {}",
        entries[0]
    );
}

/// The path of a program on `PATH`.
fn which(program: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|directory| directory.join(program))
                .find(|candidate| candidate.is_file())
        })
        .ok_or(())
}
