//! Disaster recovery end to end: a config with a directory source, a file tree and two command
//! sources (a real `sqlite3` dump, and a real `pg_dump` of a throwaway Postgres cluster on a
//! unix socket when Debian's Postgres is installed and the test runs as root, else a generated
//! stream, said on stderr) runs through two simulated days of an hourly timer
//! (`CAIRN_SCHEDULE_NOW`, start times jittered by minutes): each source runs as often as its
//! schedule says, the drill covers every source, the config is stored once. Then the data, the
//! cache, the state and the config are deleted, and `cairn recover` from the URL and the password
//! alone brings everything back: the databases compared by their own dumps, the files byte for
//! byte. A failing restore command fails its source (exit 19) and the others are recovered.
//! Also what a careless recovery meets (no stored config, a wrong password, two hosts' configs, a
//! source never backed up, a stream with nowhere to go) and a stream cut short by the file-size
//! limit (no part of it left under its name).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use crate::support::{
    TreeBuilder, Workspace, assert_same_tree, compressible_text, effective_uid, random_bytes,
    run_command,
};

/// Exit code of `cairn recover` when a source could not be recovered.
const EXIT_RECOVER_FAILED: i32 = 19;

/// Runs a program, asserting success, and returns its standard output.
#[track_caller]
fn output_of(command: &mut Command) -> Vec<u8> {
    let output = command.output().expect("start program");
    assert!(
        output.status.success(),
        "{command:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// A throwaway Postgres cluster, reachable only on a unix socket in its own directory, run as
/// the `postgres` user; stopped (immediate) and removed on drop.
struct Postgres {
    directory: tempfile::TempDir,
    bin: PathBuf,
}

impl Postgres {
    /// Starts a cluster, or says why it cannot.
    fn start() -> Result<Self, String> {
        if effective_uid() != 0 {
            return Err("not root (initdb and pg_ctl run as the postgres user)".into());
        }
        let bin = fs::read_dir("/usr/lib/postgresql")
            .map_err(|error| {
                format!("no /usr/lib/postgresql ({error}): apt-get install -y postgresql")
            })?
            .filter_map(Result::ok)
            .map(|entry| entry.path().join("bin"))
            .filter(|bin| bin.join("pg_ctl").exists())
            .max()
            .ok_or("no /usr/lib/postgresql/*/bin/pg_ctl")?;
        let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
        let Some(ids) = passwd
            .lines()
            .find(|line| line.starts_with("postgres:"))
            .map(|line| {
                line.split(':')
                    .skip(2)
                    .take(2)
                    .map(str::parse::<u32>)
                    .collect::<Vec<_>>()
            })
        else {
            return Err("no postgres user".into());
        };
        let (Some(Ok(uid)), Some(Ok(gid))) = (ids.first().cloned(), ids.get(1).cloned()) else {
            return Err("unreadable postgres user".into());
        };
        let directory = tempfile::Builder::new()
            .prefix("cairn-pg-")
            .tempdir()
            .map_err(|error| error.to_string())?;
        std::os::unix::fs::chown(directory.path(), Some(uid), Some(gid))
            .map_err(|error| error.to_string())?;
        let cluster = Self { directory, bin };
        let data = cluster.directory.path().join("data");
        let initdb = cluster
            .as_postgres(
                "initdb",
                &[
                    "-D",
                    data.to_str().expect("utf-8"),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-N",
                ],
            )
            .output()
            .map_err(|error| error.to_string())?;
        if !initdb.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&initdb.stderr)
            ));
        }
        let options = format!("-k {} -c listen_addresses=''", cluster.socket());
        let log = cluster.directory.path().join("log");
        let started = cluster
            .as_postgres(
                "pg_ctl",
                &[
                    "-D",
                    data.to_str().expect("utf-8"),
                    "-o",
                    &options,
                    "-l",
                    log.to_str().expect("utf-8"),
                    "-w",
                    "start",
                ],
            )
            .output()
            .map_err(|error| error.to_string())?;
        if !started.status.success() {
            return Err(format!(
                "pg_ctl start failed: {}",
                fs::read_to_string(&log).unwrap_or_default()
            ));
        }
        Ok(cluster)
    }

    /// The socket directory, as `-h` takes it.
    fn socket(&self) -> String {
        self.directory.path().display().to_string()
    }

    /// A Postgres program run as the `postgres` user.
    fn as_postgres(&self, program: &str, args: &[&str]) -> Command {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(program))
            .args(args)
            .current_dir("/");
        command
    }

    /// The shell line of a program run as `postgres` against this cluster (for the config).
    fn line(&self, program: &str, args: &str) -> String {
        format!(
            "runuser -u postgres -- {} -h {} {args}",
            self.bin.join(program).display(),
            self.socket()
        )
    }

    /// Runs SQL in database `database`.
    fn sql(&self, database: &str, sql: &str) {
        output_of(&mut self.as_postgres(
            "psql",
            &[
                "-h",
                &self.socket(),
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-q",
                "-c",
                sql,
            ],
        ));
    }

    /// The database's own plain dump, without the `\restrict KEY` and `\unrestrict KEY` lines
    /// (`pg_dump` since 15.14 draws a new random key for each dump).
    fn dump(&self, database: &str) -> Vec<u8> {
        let dump = output_of(&mut self.as_postgres("pg_dump", &["-h", &self.socket(), database]));
        String::from_utf8_lossy(&dump)
            .lines()
            .filter(|line| !line.starts_with("\\restrict ") && !line.starts_with("\\unrestrict "))
            .flat_map(|line| [line, "\n"])
            .collect::<String>()
            .into_bytes()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.directory.path().join("data");
        let _ = self
            .as_postgres(
                "pg_ctl",
                &[
                    "-D",
                    data.to_str().unwrap_or_default(),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
            )
            .output();
    }
}

/// The second command source: a real Postgres database, or a generated stream.
enum SecondDatabase {
    Postgres(Postgres),
    Generated { data: PathBuf, restored: PathBuf },
}

impl SecondDatabase {
    fn source_keys(&self) -> String {
        match self {
            Self::Postgres(cluster) => format!(
                "command = {:?}\nstream_name = \"app.dump\"\nrestore = {:?}\n",
                cluster.line("pg_dump", "-Fc app"),
                cluster.line("pg_restore", "--exit-on-error -d app")
            ),
            Self::Generated { data, restored } => format!(
                "command = \"cat {}\"\nstream_name = \"app.dump\"\nrestore = \"cat > {}\"\n",
                data.display(),
                restored.display()
            ),
        }
    }

    /// Adds rows (or bytes) so the next dump differs.
    fn change(&self, round: u64) {
        match self {
            Self::Postgres(cluster) => cluster.sql(
                "app",
                &format!(
                    "INSERT INTO orders (customer, note) SELECT 'customer ' || n, repeat('note {round} ', n % 40) FROM generate_series(1, 500) AS n"
                ),
            ),
            Self::Generated { data, .. } => {
                fs::write(data, random_bytes(900 + round, 300_000)).expect("generated stream");
            }
        }
    }

    /// What the database holds, by its own dump.
    fn state(&self) -> Vec<u8> {
        match self {
            Self::Postgres(cluster) => cluster.dump("app"),
            Self::Generated { data, .. } => fs::read(data).expect("generated stream"),
        }
    }

    /// Deletes the data and leaves what the runbook's step 4 prepares: an empty database.
    fn lose(&self) {
        match self {
            Self::Postgres(cluster) => {
                output_of(&mut cluster.as_postgres("dropdb", &["-h", &cluster.socket(), "app"]));
                output_of(&mut cluster.as_postgres("createdb", &["-h", &cluster.socket(), "app"]));
            }
            Self::Generated { data, .. } => fs::remove_file(data).expect("remove"),
        }
    }

    /// What the recovery brought back.
    fn recovered(&self) -> Vec<u8> {
        match self {
            Self::Postgres(cluster) => cluster.dump("app"),
            Self::Generated { restored, .. } => fs::read(restored).expect("restored stream"),
        }
    }
}

/// `sqlite3 ARGS` with `input` on stdin; its stdout.
fn sqlite3(args: &[&str], input: &str) -> Vec<u8> {
    let mut command = Command::new("sqlite3");
    command.args(args);
    let run = run_command(command, Some(input.as_bytes())).ok();
    run.stdout
}

/// The workspace's cairn with only the URL and password of the repository (and an empty cache
/// directory): what a new machine has.
fn bare_cairn(workspace: &Workspace, args: &[&str], env: &[(&str, &str)]) -> crate::support::Run {
    let mut command = workspace.command(args, &[]);
    command.env_remove("CAIRN_CONFIG").env("TZ", "UTC");
    for (key, value) in env {
        command.env(key, value);
    }
    run_command(command, None)
}

#[test]
fn recover_brings_back_every_source_from_the_url_and_password_alone() {
    if Command::new("sqlite3").arg("--version").output().is_err() {
        eprintln!(
            "note: sqlite3 is not installed (apt-get install -y sqlite3): recover test skipped"
        );
        return;
    }
    let workspace = Workspace::initialized();
    let site = TreeBuilder::new(workspace.path("srv/site"));
    site.file("index.html", &compressible_text(1, 20_000));
    site.file("assets/app.js", &compressible_text(2, 150_000));
    site.file("assets/logo.png", &random_bytes(3, 700_000));
    site.file("empty", b"");
    site.symlink("current", "assets/app.js");
    site.mode("assets/app.js", 0o640);
    let conf = TreeBuilder::new(workspace.path("etc/app"));
    conf.file("app.ini", b"[server]\nport = 3000\n");
    conf.file("secrets/.env", b"TOKEN=abc\n");
    conf.mode("secrets/.env", 0o600);
    let gitea_db = workspace.path("gitea/gitea.db");
    fs::create_dir_all(gitea_db.parent().expect("parent")).expect("gitea dir");
    let gitea = gitea_db.to_str().expect("utf-8").to_owned();
    sqlite3(
        &[&gitea],
        "CREATE TABLE repos (id INTEGER PRIMARY KEY, name TEXT, body BLOB);\n\
         INSERT INTO repos (name, body) VALUES ('cairn', randomblob(2000)), ('ops', zeroblob(100));\n",
    );
    let second = match Postgres::start() {
        Ok(cluster) => {
            output_of(&mut cluster.as_postgres("createdb", &["-h", &cluster.socket(), "app"]));
            cluster.sql(
                "app",
                "CREATE TABLE orders (id serial PRIMARY KEY, customer text NOT NULL, note text, placed timestamptz DEFAULT '2026-03-01 12:00+00');",
            );
            SecondDatabase::Postgres(cluster)
        }
        Err(reason) => {
            eprintln!(
                "note: no PostgreSQL ({reason}): the second command source is a generated stream"
            );
            SecondDatabase::Generated {
                data: workspace.path("app.dump"),
                restored: workspace.path("restored-app.dump"),
            }
        }
    };
    second.change(0);

    let config = workspace.path("cairn.toml");
    let config_text = format!(
        "state_dir = {state:?}\n\n[repository]\nurl = {repo:?}\ncache_dir = {cache:?}\n\n\
         [sources.site]\npaths = [{site:?}]\nevery = \"1d\"\n\n\
         [sources.conf]\npaths = [{conf:?}]\nevery = \"1d\"\nwindow = \"02:00-04:00\"\n\n\
         [sources.gitea]\ncommand = \"sqlite3 {gitea} .dump\"\nstream_name = \"gitea.sql\"\n\
         restore = \"sqlite3 {gitea}\"\nevery = \"6h\"\n\n\
         [sources.app]\n{app}every = \"6h\"\n\n\
         [check]\nevery = \"1d\"\n\n[drill]\nevery = \"1d\"\n",
        state = workspace.path("state").display().to_string(),
        repo = workspace.repo.display().to_string(),
        cache = workspace.cache.display().to_string(),
        site = site.root().display().to_string(),
        conf = conf.root().display().to_string(),
        app = second.source_keys(),
    );
    fs::write(&config, &config_text).expect("config");
    let config_arg = config.to_str().expect("utf-8");

    // Two days of an hourly timer, each start a few minutes off the hour (deterministic jitter).
    let start = jiff::Timestamp::from_second(1_772_409_900).expect("2026-03-02T00:05:00Z");
    for hour in 0_i64..48 {
        if hour == 20 {
            site.file("index.html", &compressible_text(11, 21_000));
            site.file("assets/new.css", &compressible_text(12, 5_000));
            conf.file("app.ini", b"[server]\nport = 3001\n");
            sqlite3(
                &[&gitea],
                "INSERT INTO repos (name, body) VALUES ('docs', randomblob(5000));\n",
            );
            second.change(20);
        }
        if hour == 40 {
            sqlite3(
                &[&gitea],
                "UPDATE repos SET name = 'cairn-main' WHERE name = 'cairn';\n",
            );
            second.change(40);
        }
        let jitter_minutes = (hour * 7) % 11 - 5;
        let now = start
            .checked_add(jiff::SignedDuration::from_mins(hour * 60 + jitter_minutes))
            .expect("time");
        bare_cairn(
            &workspace,
            &["--config", config_arg, "run", "-q"],
            &[("CAIRN_SCHEDULE_NOW", &now.to_string())],
        )
        .ok();
    }
    let count = |source: &str| {
        workspace
            .snapshots_tagged(&format!("source:{source}"))
            .len()
    };
    assert_eq!(count("site"), 2, "a daily source, once a day");
    assert_eq!(count("conf"), 2, "a daily source in a window, once a day");
    assert_eq!(count("gitea"), 8, "a 6-hour source, four times a day");
    assert_eq!(count("app"), 8, "a 6-hour source, four times a day");
    assert_eq!(
        workspace.snapshots_tagged("cairn:config").len(),
        1,
        "an unchanged config is stored once"
    );
    let status = bare_cairn(
        &workspace,
        &["--config", config_arg, "status", "--json"],
        &[],
    )
    .ok();
    let summary = status.summary();
    for source in ["site", "conf", "gitea", "app"] {
        let drilled = &summary["drills"][source];
        assert_eq!(
            drilled["ok"], true,
            "{source} drilled within the period: {summary}"
        );
        assert!(
            drilled["rto_seconds"]
                .as_f64()
                .is_some_and(|rto| rto >= 0.0),
            "{drilled}"
        );
    }
    let latest: Vec<String> = ["site", "conf", "gitea", "app"]
        .iter()
        .map(|source| {
            workspace
                .snapshots_tagged(&format!("source:{source}"))
                .last()
                .and_then(|snapshot| snapshot["id"].as_str().map(str::to_owned))
                .expect("latest snapshot id")
        })
        .collect();

    // What must come back, then the disaster: data, cache, state and config gone.
    let expected = workspace.path("expected");
    fs::create_dir_all(&expected).expect("expected dir");
    for (tree, name) in [(&site, "site"), (&conf, "conf")] {
        output_of(
            Command::new("cp")
                .arg("-a")
                .arg(tree.root())
                .arg(expected.join(name)),
        );
    }
    let gitea_before = sqlite3(&[&gitea, ".dump"], "");
    let app_before = second.state();
    fs::remove_dir_all(workspace.path("srv")).expect("remove site");
    fs::remove_dir_all(workspace.path("etc")).expect("remove conf");
    fs::remove_dir_all(workspace.path("gitea")).expect("remove gitea");
    fs::create_dir_all(workspace.path("gitea")).expect("an empty gitea directory");
    second.lose();
    fs::remove_dir_all(&workspace.cache).expect("remove cache");
    fs::remove_dir_all(workspace.path("state")).expect("remove state");
    fs::remove_file(&config).expect("remove config");

    let plan = bare_cairn(&workspace, &["recover", "--dry-run", "--json"], &[]).ok();
    let lines: Vec<serde_json::Value> = plan
        .json_lines()
        .into_iter()
        .filter(|line| line["message_type"] == "plan")
        .collect();
    let planned: Vec<(&str, &str)> = lines
        .iter()
        .map(|line| {
            (
                line["source"].as_str().expect("source"),
                line["snapshot_id"].as_str().expect("snapshot id"),
            )
        })
        .collect();
    assert_eq!(
        planned,
        ["site", "conf", "gitea", "app"]
            .into_iter()
            .zip(latest.iter().map(String::as_str))
            .collect::<Vec<_>>(),
        "the plan takes each source's latest snapshot"
    );
    assert!(!site.root().exists(), "a dry run writes nothing");
    let human_plan = bare_cairn(&workspace, &["recover", "--dry-run"], &[]).ok();
    eprintln!("$ cairn recover --dry-run\n{}", human_plan.text());

    let recovered_config = workspace.path("recovered.toml");
    let recovery = bare_cairn(
        &workspace,
        &[
            "recover",
            "--save-config",
            recovered_config.to_str().expect("utf-8"),
        ],
        &[],
    )
    .ok();
    eprintln!("$ cairn recover\n{}{}", recovery.text(), recovery.stderr);
    assert!(
        recovery.text().contains("recovered 4 of 4 sources"),
        "{}",
        recovery.text()
    );
    assert!(recovery.text().contains("(RTO"), "{}", recovery.text());
    assert_eq!(
        fs::read_to_string(&recovered_config).expect("saved config"),
        config_text
    );
    assert_eq!(
        fs::metadata(&recovered_config)
            .expect("saved config")
            .permissions()
            .mode()
            & 0o777,
        0o600,
        "a config may hold secrets: owner only"
    );
    assert_same_tree(&expected.join("site"), site.root());
    assert_same_tree(&expected.join("conf"), conf.root());
    assert_same_text(
        &sqlite3(&[&gitea, ".dump"], ""),
        &gitea_before,
        "gitea by its own dump",
    );
    assert_same_text(
        &second.recovered(),
        &app_before,
        "the second database by its own dump",
    );

    // --json: the same, with the RTO as a number (the file sources again: restore skips what
    // already matches).
    let json = bare_cairn(
        &workspace,
        &["recover", "--json", "--source", "site", "--source", "conf"],
        &[],
    )
    .ok();
    let summary = json.summary();
    assert_eq!(summary["sources_recovered"], 2, "{summary}");
    assert!(
        summary["rto_seconds"].as_f64().is_some_and(|rto| rto > 0.0),
        "{summary}"
    );

    // A failing restore command fails its source alone: exit 19, the others recovered.
    let failing = workspace.path("failing.toml");
    let app_restore = second
        .source_keys()
        .lines()
        .find(|line| line.starts_with("restore = "))
        .map(|line| format!("{line}\n"))
        .expect("the app's restore line");
    fs::write(
        &failing,
        config_text.replace(&app_restore, "").replace(
            &format!("restore = \"sqlite3 {gitea}\""),
            "restore = \"cat > /dev/null; exit 3\"",
        ),
    )
    .expect("failing config");
    let scratch = workspace.path("scratch");
    let run = bare_cairn(
        &workspace,
        &[
            "--config",
            failing.to_str().expect("utf-8"),
            "recover",
            "--json",
            "--target",
            scratch.to_str().expect("utf-8"),
        ],
        &[],
    )
    .code(EXIT_RECOVER_FAILED);
    let sources: Vec<serde_json::Value> = run
        .json_lines()
        .into_iter()
        .filter(|line| line["message_type"] == "source")
        .collect();
    let outcome = |name: &str| {
        sources
            .iter()
            .find(|line| line["source"] == name)
            .unwrap_or_else(|| panic!("no {name} line: {sources:?}"))
            .clone()
    };
    let gitea_line = outcome("gitea");
    assert_eq!(gitea_line["ok"], false, "{gitea_line}");
    assert!(
        gitea_line["error"]
            .as_str()
            .is_some_and(|error| error.contains("exit status: 3")),
        "{gitea_line}"
    );
    for name in ["site", "conf", "app"] {
        assert_eq!(outcome(name)["ok"], true, "{sources:?}");
    }
    assert_same_tree(
        &expected.join("site"),
        &crate::support::restored_path(&scratch, site.root()),
    );
    assert_eq!(
        fs::read(scratch.join("app.dump")).expect("the app stream as a file"),
        run_dump(&workspace, &latest[3], "app.dump"),
        "a stream without a restore command goes to a file below --target"
    );
}

/// Asserts two dumps are equal, naming the first line that differs (not every byte).
#[track_caller]
fn assert_same_text(actual: &[u8], expected: &[u8], what: &str) {
    if actual == expected {
        return;
    }
    let (actual, expected) = (
        String::from_utf8_lossy(actual),
        String::from_utf8_lossy(expected),
    );
    let difference = actual
        .lines()
        .zip(expected.lines())
        .enumerate()
        .find(|(_, (left, right))| left != right)
        .map_or_else(
            || {
                format!(
                    "{} lines, expected {}",
                    actual.lines().count(),
                    expected.lines().count()
                )
            },
            |(index, (left, right))| format!("line {}: {left:?}, expected {right:?}", index + 1),
        );
    panic!("{what}: differs at {difference}");
}

/// `cairn dump SNAPSHOT NAME`'s bytes.
fn run_dump(workspace: &Workspace, snapshot: &str, name: &str) -> Vec<u8> {
    let mut command = workspace.command(&["dump", snapshot, name], &[]);
    output_of(&mut command)
}

/// What a careless recovery meets: no stored config, a wrong password, configs of two hosts in
/// one repository, a source never backed up, a stream with nowhere to go.
#[test]
fn recover_refuses_what_it_cannot_do_and_says_what_to_give() {
    let workspace = Workspace::initialized();
    let message = bare_cairn(&workspace, &["recover", "--dry-run"], &[])
        .code(1)
        .stderr;
    assert!(
        message.contains("no config stored in the repository: give --config FILE"),
        "{message}"
    );

    let data = TreeBuilder::new(workspace.path("data"));
    data.file("a.txt", b"alpha\n");
    let dump = workspace.path("dump.sql");
    fs::write(&dump, b"-- a dump\n").expect("dump");
    let write_config = |name: &str, host: &str| {
        let path = workspace.path(name);
        fs::write(
            &path,
            format!(
                "state_dir = {state:?}\n\n[repository]\nurl = {repo:?}\n\n[defaults]\nhost = {host:?}\n\n\
                 [sources.data]\npaths = [{data:?}]\n\n\
                 [sources.db]\ncommand = \"cat {dump}\"\nstream_name = \"dump.sql\"\n\n\
                 [sources.never]\ncommand = \"exit 1\"\nstream_name = \"never.sql\"\n",
                state = workspace.path(&format!("state-{host}")).display().to_string(),
                repo = workspace.repo.display().to_string(),
                data = data.root().display().to_string(),
                dump = dump.display(),
            ),
        )
        .expect("config");
        path
    };
    let web1 = write_config("web1.toml", "web1");
    let web2 = write_config("web2.toml", "web2");
    for config in [&web1, &web2] {
        // The `never` source fails: exit 17, the others are backed up.
        bare_cairn(
            &workspace,
            &["--config", config.to_str().expect("utf-8"), "run", "-q"],
            &[],
        )
        .code(17);
    }

    bare_cairn(
        &workspace,
        &["recover", "--dry-run"],
        &[("CAIRN_PASSWORD", "wrong")],
    )
    .code(12);
    let message = bare_cairn(&workspace, &["recover", "--dry-run"], &[])
        .code(1)
        .stderr;
    assert!(
        message.contains("the configs of several hosts (web1, web2): choose one with --from-host"),
        "{message}"
    );

    let plan = bare_cairn(
        &workspace,
        &["recover", "--dry-run", "--json", "--from-host", "web2"],
        &[],
    )
    .code(EXIT_RECOVER_FAILED);
    let lines = plan.json_lines();
    let line = |source: &str| {
        lines
            .iter()
            .find(|line| line["message_type"] == "plan" && line["source"] == source)
            .unwrap_or_else(|| panic!("no plan line for {source}: {lines:?}"))
            .clone()
    };
    let data_line = line("data");
    assert_eq!(data_line["host"], "web2", "{data_line}");
    assert_eq!(
        data_line["destination"], "its recorded paths",
        "{data_line}"
    );
    let web2_data = workspace
        .snapshots_tagged("source:data")
        .into_iter()
        .find(|snapshot| snapshot["host"] == "web2")
        .expect("web2's data snapshot");
    assert_eq!(data_line["snapshot_id"], web2_data["id"], "{data_line}");
    assert!(
        line("db")["error"]
            .as_str()
            .is_some_and(|error| error.contains("give --streams-to DIR")),
        "{lines:?}"
    );
    assert!(
        line("never")["error"]
            .as_str()
            .is_some_and(|error| error.contains("no snapshot tagged source:never of host web2")),
        "{lines:?}"
    );
    assert_eq!(
        lines
            .last()
            .map(|summary| summary["sources_failed"].clone()),
        Some(serde_json::json!(2))
    );

    // With somewhere to put the stream, only the source never backed up fails; the others are
    // recovered (below --target: the real paths stay untouched).
    let target = workspace.path("target");
    let run = bare_cairn(
        &workspace,
        &[
            "recover",
            "--from-host",
            "web1",
            "--target",
            target.to_str().expect("utf-8"),
        ],
        &[],
    )
    .code(EXIT_RECOVER_FAILED);
    assert!(
        run.stderr.contains("never: CANNOT RECOVER"),
        "{}",
        run.stderr
    );
    assert!(
        run.text().contains("recovered 2 of 3 sources"),
        "{}",
        run.text()
    );
    assert_eq!(
        fs::read(target.join("dump.sql")).expect("stream"),
        b"-- a dump\n"
    );
    assert_same_tree(
        data.root(),
        &crate::support::restored_path(&target, data.root()),
    );
}

/// A stream that cannot be written whole (past the file-size limit, `ulimit -f`: no root
/// needed) fails its source alone and leaves neither a part of it under its name nor a
/// temporary file; the next recover of that source writes it whole.
#[test]
fn a_stream_cut_short_by_the_file_size_limit_fails_alone_and_leaves_no_file() {
    let mut workspace = Workspace::initialized();
    let data = TreeBuilder::new(workspace.path("data"));
    data.file("small.txt", b"fits anywhere\n");
    let big = workspace.path("big.bin");
    // Past 2048 blocks in either block size (1 MiB in dash, 2 MiB in bash).
    fs::write(&big, random_bytes(77, 3 << 20)).expect("big stream");
    let config = workspace.path("cairn.toml");
    fs::write(
        &config,
        format!(
            "state_dir = {state:?}\n\n[repository]\nurl = {repo:?}\n\n\
             [sources.small]\npaths = [{data:?}]\n\n\
             [sources.big]\ncommand = \"cat {big}\"\nstream_name = \"big.bin\"\n",
            state = workspace.path("state").display().to_string(),
            repo = workspace.repo.display().to_string(),
            data = data.root().display().to_string(),
            big = big.display(),
        ),
    )
    .expect("config");
    bare_cairn(
        &workspace,
        &["--config", config.to_str().expect("utf-8"), "run", "-q"],
        &[],
    )
    .ok();

    let streams = workspace.path("streams");
    let target = workspace.path("target");
    let args = [
        "--no-cache",
        "recover",
        "--streams-to",
        streams.to_str().expect("utf-8"),
        "--target",
        target.to_str().expect("utf-8"),
    ];
    workspace.prefix = ["sh", "-c", "ulimit -f 2048 && exec \"$0\" \"$@\""]
        .into_iter()
        .map(std::ffi::OsString::from)
        .collect();
    let limited = bare_cairn(&workspace, &args, &[]).code(EXIT_RECOVER_FAILED);
    assert!(
        limited.stderr.contains("big: FAILED") && limited.stderr.contains("File too large"),
        "{}",
        limited.stderr
    );
    assert!(
        limited.text().contains("recovered 1 of 2 sources"),
        "{}",
        limited.text()
    );
    let left: Vec<_> = fs::read_dir(&streams)
        .map(|listing| {
            listing
                .map(|entry| entry.expect("entry").file_name())
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "nothing of the stream is left: {left:?}");
    assert_same_tree(
        data.root(),
        &crate::support::restored_path(&target, data.root()),
    );

    workspace.prefix.clear();
    bare_cairn(&workspace, &args, &[]).ok();
    assert_eq!(
        fs::read(streams.join("big.bin")).expect("the stream, whole"),
        fs::read(&big).expect("the original")
    );
}
