//! The liveness rule end to end (FORMAT.md section 21.3): a backup session is ended by another
//! client only on proof that its process is gone, whatever its host label. Regression tests for
//! the data loss of issue 12 (a prune on a machine sharing the host name `ubuntu` ended a running
//! backup and deleted packs it relied on) and for its reverse (a `--host web1` backup killed with
//! `kill -9` held its condemned packs forever, reported as "0 B").

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_store::backend::object_store::{CreateDirectory, ObjectStoreBackend};
use cairn_store::backend::{Backend, PutMode};
use cairn_store::format::lifecycle::{self, ProcessPlace, SessionId, SessionMarker};
use cairn_store::repo::place;
use cairn_store::{CacheLocation, Repository};

use crate::support::{PASSWORD, Workspace, random_bytes};

/// A pid no process has: a child that ran and was reaped (the kernel hands pids out in
/// increasing order, so it is not reused within the test).
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().expect("run true");
    let pid = child.id();
    child.wait().expect("reap true");
    pid
}

/// This process's place with some fields replaced.
fn here() -> ProcessPlace {
    place::this_process()
}

/// Backs up 700 kB tagged `garbage` and forgets it: the next prune condemns its pack.
fn add_garbage(workspace: &Workspace, seed: u64) {
    let source = workspace.path(&format!("garbage-{seed}"));
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("g.bin"), random_bytes(seed, 700_000)).unwrap();
    workspace
        .cairn(&["backup", source.to_str().unwrap(), "--tag", "garbage"])
        .ok();
    workspace
        .cairn(&[
            "forget",
            "--tag",
            "garbage",
            "--keep-tag",
            "keep",
            "--allow-empty-group",
        ])
        .ok();
}

/// A workspace with one kept snapshot.
fn workspace_with_a_kept_snapshot() -> Workspace {
    let workspace = Workspace::initialized();
    let kept = workspace.path("kept");
    std::fs::create_dir_all(&kept).unwrap();
    std::fs::write(kept.join("k.bin"), random_bytes(1, 300_000)).unwrap();
    workspace
        .cairn(&["backup", kept.to_str().unwrap(), "--tag", "keep"])
        .ok();
    workspace
}

/// The `prune` line of `prune --json args...`.
#[track_caller]
fn prune_json(workspace: &Workspace, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["prune", "--json"];
    all.extend_from_slice(args);
    workspace
        .cairn(&all)
        .ok()
        .json_lines()
        .into_iter()
        .find(|line| line["message_type"] == "prune")
        .expect("a prune line")
}

/// Registers a session as if started at `place` under `host`, and leaves it unended.
fn fake_session(repository: &Repository, host: &str, place: ProcessPlace) -> SessionId {
    let (mut session, _) = repository
        .begin_session_at(host, place)
        .expect("begin a session");
    session.leave_unended();
    session.id
}

/// Writes a session marker as cairn 0.1 (format version 1) did, started at `started_unix`.
fn old_marker(repository: &Repository, host: &str, pid: u32, started_unix: i64) -> SessionId {
    let session = SessionId(rand_id());
    let marker = SessionMarker {
        session,
        host: host.to_owned(),
        place: ProcessPlace::pid_only(pid),
        started_unix,
    };
    repository
        .backend()
        .put(
            &lifecycle::session_name(&session),
            marker
                .encode_v1(
                    &repository.keys().data_key,
                    cairn_store::seal::random_nonce(),
                )
                .into(),
            PutMode::Create,
        )
        .unwrap();
    session
}

fn rand_id() -> [u8; 16] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mut id = [0u8; 16];
    id.copy_from_slice(&blake3::hash(&nanos.to_le_bytes()).as_bytes()[..16]);
    id
}

/// Whether `session` has ended, and who ended it (`ended_by` of its end marker).
fn ended_by(repository: &Repository, session: &SessionId) -> Option<u8> {
    let bytes = repository
        .backend()
        .get(&lifecycle::session_end_name(session))
        .ok()?;
    let end = lifecycle::SessionEnd::decode(&repository.keys().data_key, &bytes).unwrap();
    Some(end.ended_by)
}

/// Whether `session` is listed and not ended (a prune deletes the markers of sessions that
/// ended and hold nothing, so "ended" reads as "not unended").
fn unended(repository: &Repository, session: &SessionId) -> bool {
    repository
        .list_sessions()
        .unwrap()
        .get(session)
        .is_some_and(|status| !status.ended)
}

/// The blocking session `session` of a prune line.
fn blocking<'a>(line: &'a serde_json::Value, session: &SessionId) -> &'a serde_json::Value {
    line["blocking_sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|blocking| blocking["session"] == session.to_hex())
        .unwrap_or_else(|| panic!("session {} not listed in {line}", session.to_hex()))
}

/// Sessions from another machine, another boot, another PID namespace or an old cairn are never
/// ended by this machine's prune, backup or check, whatever their host label (this machine's
/// own name, `ubuntu`) and whatever their pid (a pid that is dead here, this very process): the
/// packs condemned meanwhile wait, and prune names each session with the bytes it holds.
#[test]
fn sessions_not_proven_gone_are_never_ended_whatever_the_host_label() {
    let workspace = workspace_with_a_kept_snapshot();
    let repository = workspace.open_repository();
    let dead = dead_pid();
    let local = here();
    let other_machine = [0x42; 16];
    let other_boot = [0x43; 16];
    let mut cases: Vec<(&str, SessionId)> = Vec::new();
    for host in [cairn_store::lifecycle::this_host(), "ubuntu".to_owned()] {
        for pid in [dead, std::process::id()] {
            let elsewhere = ProcessPlace {
                machine_id: other_machine,
                boot_id: other_boot,
                pid,
                ..local
            };
            cases.push((
                "another machine",
                fake_session(&repository, &host, elsewhere),
            ));
            // A clone of this machine's image (same machine id), booted elsewhere; this
            // machine's record (none: an in-memory cache) does not list the session.
            let clone = ProcessPlace {
                boot_id: other_boot,
                pid,
                ..local
            };
            cases.push(("a cloned image", fake_session(&repository, &host, clone)));
            let container = ProcessPlace {
                pid_namespace: local.pid_namespace ^ 0x5a5a,
                pid,
                ..local
            };
            cases.push((
                "another PID namespace",
                fake_session(&repository, &host, container),
            ));
            cases.push((
                "an old cairn",
                old_marker(&repository, &host, pid, 1_767_225_600),
            ));
        }
    }
    // This very process, with its true start time: running.
    cases.push((
        "a running process",
        fake_session(&repository, "ubuntu", local),
    ));
    add_garbage(&workspace, 77);

    let first = prune_json(&workspace, &[]);
    assert_eq!(first["packs_deleted"], 0, "{first}");
    assert_eq!(first["sessions_ended"], 0, "{first}");
    assert!(first["bytes_pending"].as_u64().unwrap() > 0, "{first}");
    for (what, session) in &cases {
        let listed = blocking(&first, session);
        assert!(
            listed["bytes_held"].as_u64().unwrap() > 0,
            "{what}: {listed}"
        );
        assert_eq!(
            listed["end_command"],
            format!("cairn prune --end-session {}", session.to_hex())
        );
    }
    let source = workspace.path("kept");
    for command in [
        vec!["backup", source.to_str().unwrap()],
        vec!["check"],
        vec!["prune"],
    ] {
        workspace.cairn(&command).ok();
    }
    let dry = prune_json(&workspace, &["--dry-run"]);
    for (what, session) in &cases {
        assert!(unended(&repository, session), "{what} was ended");
        assert!(
            blocking(&dry, session)["bytes_held"].as_u64().unwrap() > 0,
            "{what}: {dry}"
        );
    }
    assert_eq!(dry["packs_deleted"], 0, "{dry}");
    assert!(dry["bytes_pending"].as_u64().unwrap() > 0, "{dry}");
    workspace.cairn(&["check", "--read-data"]).ok();
}

/// A marker recording this machine, this boot and this PID namespace is ended (`ended_by` 1)
/// when its pid is absent, or when the pid now belongs to a process that started at another time
/// (pid reuse: here, this test process with a wrong start time) — whatever the host label.
#[test]
fn a_dead_or_reused_pid_on_this_machine_is_ended_whatever_the_host_label() {
    let workspace = workspace_with_a_kept_snapshot();
    let repository = workspace.open_repository();
    let local = here();
    assert_ne!(local.start_ticks, 0, "this system exposes start times");
    // First the garbage: its backup would already end the sessions below (each machine cleans
    // up at the start of a backup too).
    add_garbage(&workspace, 78);
    let absent = fake_session(
        &repository,
        "web1",
        ProcessPlace {
            pid: dead_pid(),
            ..local
        },
    );
    let reused = fake_session(
        &repository,
        "ubuntu",
        ProcessPlace {
            start_ticks: local.start_ticks + 1,
            ..local
        },
    );
    let pruned = prune_json(&workspace, &[]);
    assert_eq!(pruned["sessions_ended"], 2, "{pruned}");
    assert!(pruned["packs_deleted"].as_u64().unwrap() > 0, "{pruned}");
    assert_eq!(pruned["packs_pending"], 0, "{pruned}");
    assert!(
        pruned["blocking_sessions"].as_array().unwrap().is_empty(),
        "{pruned}"
    );
    assert!(!unended(&repository, &absent));
    assert!(!unended(&repository, &reused));
    workspace.cairn(&["check", "--read-data"]).ok();
}

/// A dry run reports the sessions a real prune would end, and ends none.
#[test]
fn a_dry_run_ends_nothing_and_reports_what_it_would_end() {
    let workspace = workspace_with_a_kept_snapshot();
    let repository = workspace.open_repository();
    add_garbage(&workspace, 79);
    let dead = fake_session(
        &repository,
        "web1",
        ProcessPlace {
            pid: dead_pid(),
            ..here()
        },
    );
    let dry = prune_json(&workspace, &["--dry-run"]);
    assert_eq!(dry["sessions_ended"], 1, "{dry}");
    assert!(dry["packs_deleted"].as_u64().unwrap() > 0, "{dry}");
    assert!(unended(&repository, &dead));
    let text = workspace.cairn(&["prune", "--dry-run"]).ok().text();
    assert!(text.contains("would end 1 sessions"), "{text}");
}

/// After a reboot, this machine proves its own sessions of the earlier boot gone, but only those
/// its local record lists (in the cache directory, kept there also with `--no-cache`): a clone of
/// its image cannot.
#[test]
fn an_earlier_boot_of_this_machine_is_gone_only_with_the_local_record() {
    let workspace = workspace_with_a_kept_snapshot();
    let local = here();
    if local.machine_id == [0; 16] {
        eprintln!("skipped: this system has no machine id");
        return;
    }
    let earlier_boot = ProcessPlace {
        boot_id: [0x77; 16],
        ..local
    };
    // Opened with the CLI's cache directory, so that begin_session writes the record the CLI
    // reads.
    let backend: Arc<dyn Backend> = Arc::new(
        ObjectStoreBackend::open(&workspace.repo.to_string_lossy(), &[], CreateDirectory::No)
            .unwrap(),
    );
    let recorded = {
        let repository = Repository::open(
            backend,
            PASSWORD.as_bytes(),
            &CacheLocation::Directory(workspace.cache.clone()),
        )
        .unwrap();
        fake_session(&repository, "db", earlier_boot)
    };
    let repository = workspace.open_repository();
    let unrecorded = fake_session(&repository, "db", earlier_boot);
    // An in-memory cache keeps the record under the cache directory too (as `--no-cache` does).
    let recorded_without_cache = fake_session(
        &workspace
            .open_repository()
            .with_session_record_under(&workspace.cache),
        "db",
        earlier_boot,
    );
    add_garbage(&workspace, 80);
    workspace.cairn(&["--no-cache", "check"]).ok();
    assert_eq!(ended_by(&repository, &recorded), Some(1));
    assert_eq!(ended_by(&repository, &recorded_without_cache), Some(1));
    assert_eq!(ended_by(&repository, &unrecorded), None);
    let pruned = prune_json(&workspace, &[]);
    let listed = blocking(&pruned, &unrecorded);
    assert!(
        listed["reason"]
            .as_str()
            .unwrap()
            .contains("another machine"),
        "{listed}"
    );
}

/// `cairn backup --stdin` (after `prefix`) fed from a pipe this test holds open: it runs until
/// the pipe closes.
fn hanging_backup(workspace: &Workspace, extra: &[&str], prefix: &[&str]) -> Child {
    let mut command = match prefix.split_first() {
        Some((program, arguments)) => {
            let mut command = Command::new(program);
            command.args(arguments).arg(crate::support::cairn_binary());
            command
        }
        None => Command::new(crate::support::cairn_binary()),
    };
    let mut child = command
        .args(["backup", "--stdin", "--stdin-name", "stream"])
        .args(extra)
        .env("CAIRN_REPOSITORY", &workspace.repo)
        .env("CAIRN_PASSWORD", PASSWORD)
        .env("CAIRN_CACHE_DIR", &workspace.cache)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the backup");
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(&random_bytes(5, 200_000))
        .unwrap();
    child
}

/// The line of a prune text naming `session`.
fn session_line(text: &str, session: &SessionId) -> String {
    text.lines()
        .find(|line| line.contains(&session.to_hex()) && line.contains("holds"))
        .unwrap_or_else(|| panic!("no line for {} in\n{text}", session.to_hex()))
        .to_owned()
}

/// Waits until an unended session labelled `host` exists (the backup registered), and returns
/// it; fails if the backup exits first.
fn wait_for_session(repository: &Repository, host: &str, child: &mut Child) -> SessionId {
    let deadline = Instant::now() + Duration::from_mins(2);
    loop {
        let sessions = repository.list_sessions().unwrap();
        if let Some(status) = sessions.values().find(|status| {
            !status.ended
                && status
                    .marker
                    .as_ref()
                    .is_some_and(|marker| marker.host == host)
        }) {
            return status.session;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup exited before registering"
        );
        assert!(Instant::now() < deadline, "the backup never registered");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A backup labelled `--host web1` (not this machine's name) and killed with `kill -9` holds the
/// packs a prune condemned while it ran; the next prune, backup or check on this machine proves
/// its process gone, ends its session, and the packs are then deleted.
#[test]
fn a_killed_backup_with_another_host_label_is_ended_by_the_next_command_here() {
    for ender in ["prune", "backup", "check"] {
        let workspace = workspace_with_a_kept_snapshot();
        let repository = workspace.open_repository();
        add_garbage(&workspace, 81);
        let mut child = hanging_backup(&workspace, &["--host", "web1"], &[]);
        let session = wait_for_session(&repository, "web1", &mut child);
        let held = prune_json(&workspace, &[]);
        assert_eq!(held["packs_deleted"], 0, "{held}");
        let listed = blocking(&held, &session);
        assert_eq!(listed["host"], "web1", "{listed}");
        assert_eq!(listed["reason"], "its process is running", "{listed}");
        assert!(listed["bytes_held"].as_u64().unwrap() > 0, "{listed}");
        assert_eq!(listed["bytes_held"], held["bytes_pending"], "{held}");
        let text = workspace.cairn(&["prune", "--dry-run"]).ok().text();
        let line = session_line(&text, &session);
        assert!(line.contains("host web1"), "{text}");
        assert!(!line.contains("(0 B)"), "{text}");
        assert!(text.contains("cairn prune --end-session ID"), "{text}");

        child.kill().unwrap();
        child.wait().unwrap();
        match ender {
            "prune" => {}
            "backup" => {
                let kept = workspace.path("kept");
                workspace.cairn(&["backup", kept.to_str().unwrap()]).ok();
            }
            _ => {
                workspace.cairn(&["check"]).ok();
            }
        }
        if ender != "prune" {
            assert_eq!(ended_by(&repository, &session), Some(1), "{ender}");
        }
        let released = prune_json(&workspace, &[]);
        assert!(!unended(&repository, &session), "{ender}");
        assert!(
            released["packs_deleted"].as_u64().unwrap() > 0,
            "{ender}: {released}"
        );
        assert_eq!(released["packs_pending"], 0, "{ender}: {released}");
        workspace.cairn(&["check", "--read-data"]).ok();
    }
}

/// A real backup running in another PID namespace (`unshare --pid --fork --mount-proc`, as a
/// container would) is never ended by a prune outside it, even though its pid (1 or 2 inside)
/// means another process out here; after it is killed, only an operator's `--end-session`
/// releases what it held.
#[test]
fn a_backup_in_another_pid_namespace_is_never_ended_from_outside() {
    let probe = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status();
    if !probe.is_ok_and(|status| status.success()) {
        eprintln!("skipped: unshare --pid is not available here (needs root)");
        return;
    }
    let workspace = workspace_with_a_kept_snapshot();
    let repository = workspace.open_repository();
    add_garbage(&workspace, 82);
    let mut child = hanging_backup(
        &workspace,
        &["--host", &cairn_store::lifecycle::this_host()],
        &["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"],
    );
    let session = wait_for_session(
        &repository,
        &cairn_store::lifecycle::this_host(),
        &mut child,
    );
    let held = prune_json(&workspace, &[]);
    let listed = blocking(&held, &session);
    assert_eq!(
        listed["reason"], "runs in another PID namespace (container) on this machine",
        "{listed}"
    );
    assert!(listed["bytes_held"].as_u64().unwrap() > 0, "{listed}");
    assert_eq!(held["packs_deleted"], 0, "{held}");
    // Killing unshare's child kills the namespace's init, and with it the backup.
    child.kill().unwrap();
    child.wait().unwrap();
    let after = prune_json(&workspace, &[]);
    assert!(unended(&repository, &session));
    assert_eq!(after["packs_deleted"], 0, "{after}");
    let released = prune_json(&workspace, &["--end-session", &session.to_hex()]);
    assert!(!unended(&repository, &session));
    assert!(
        released["packs_deleted"].as_u64().unwrap() > 0,
        "{released}"
    );
    workspace.cairn(&["check", "--read-data"]).ok();
}

/// A session marker written by cairn 0.1 (format 1: host and pid only) is never ended
/// automatically, even with this machine's name and a dead pid; prune's text names it as old and
/// gives the command that ends it, which then releases its packs.
#[test]
fn an_old_marker_waits_for_the_operator_and_prune_says_how() {
    let workspace = workspace_with_a_kept_snapshot();
    let repository = workspace.open_repository();
    let old = old_marker(
        &repository,
        &cairn_store::lifecycle::this_host(),
        dead_pid(),
        1_767_225_600,
    );
    add_garbage(&workspace, 83);
    let text = workspace.cairn(&["prune"]).ok().text();
    let line = session_line(&text, &old);
    assert!(line.contains("older cairn"), "{text}");
    assert!(!line.contains("(0 B)"), "{text}");
    assert!(text.contains("cairn prune --end-session ID"), "{text}");
    workspace
        .cairn(&["backup", "--stdin", "--stdin-name", "x"])
        .ok();
    workspace.cairn(&["check"]).ok();
    assert!(unended(&repository, &old));
    let released = prune_json(&workspace, &["--end-session", &old.to_hex()]);
    assert!(
        released["packs_deleted"].as_u64().unwrap() > 0,
        "{released}"
    );
    assert!(!unended(&repository, &old));
}

fn write_config(workspace: &Workspace, extra: &str) -> PathBuf {
    let path = workspace.path("cairn.toml");
    let text = format!(
        "state_dir = {state:?}\n\n[repository]\nurl = {repo:?}\ncache_dir = {cache:?}\n{extra}\n\n\
         [sources.etc]\npaths = [{source:?}]\n",
        state = workspace.path("state").display().to_string(),
        repo = workspace.repo.display().to_string(),
        cache = workspace.cache.display().to_string(),
        source = workspace.path("kept").display().to_string(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A session unended for longer than the stale age (24h by default, `stale_session_age` in the
/// config, `--stale-session-age`) shows up in `status` (exit 16) and in the metrics, and is not
/// ended by showing it.
#[test]
fn stale_sessions_show_in_status_and_metrics() {
    let workspace = workspace_with_a_kept_snapshot();
    let repository = workspace.open_repository();
    let config = write_config(&workspace, "");
    let config = config.to_str().unwrap();
    workspace.cairn(&["--config", config, "run"]).ok();
    let fresh = workspace.cairn(&["--config", config, "status"]).ok().text();
    assert!(!fresh.contains("STALE"), "{fresh}");

    let two_days_ago = jiff::Timestamp::now().as_second() - 2 * 86_400;
    let stale = old_marker(&repository, "web1", dead_pid(), two_days_ago);
    let status = workspace
        .cairn(&["--config", config, "status"])
        .code(16)
        .text();
    assert!(status.contains("STALE: 1 backup sessions"), "{status}");
    assert!(status.contains(&stale.to_hex()), "{status}");
    assert!(status.contains("host web1"), "{status}");
    let json = workspace
        .cairn(&["--config", config, "status", "--json"])
        .code(16)
        .json_lines();
    let summary = json
        .iter()
        .find(|line| line["message_type"] == "summary")
        .unwrap();
    assert_eq!(summary["stale_sessions"][0]["session"], stale.to_hex());
    assert_eq!(summary["stale_sessions"][0]["old_format"], true);
    let metrics = workspace
        .cairn(&["--config", config, "metrics"])
        .ok()
        .text();
    assert!(
        metrics.lines().any(|line| line == "cairn_stale_sessions 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|line| line == "cairn_unended_sessions 1"),
        "{metrics}"
    );
    let longer = workspace
        .cairn(&["--config", config, "metrics", "--stale-session-age", "3d"])
        .ok()
        .text();
    assert!(
        longer.lines().any(|line| line == "cairn_stale_sessions 0"),
        "{longer}"
    );
    workspace
        .cairn(&["--config", config, "status", "--stale-session-age", "3d"])
        .ok();
    let configured = write_config(&workspace, "stale_session_age = \"1h\"");
    let configured = configured.to_str().unwrap();
    let recent = jiff::Timestamp::now().as_second() - 2 * 3_600;
    old_marker(&repository, "db", dead_pid(), recent);
    let two = workspace
        .cairn(&["--config", configured, "status"])
        .code(16)
        .text();
    assert!(two.contains("STALE: 2 backup sessions"), "{two}");
    assert_eq!(ended_by(&repository, &stale), None, "status ends nothing");
}

/// Writes `lease` as the prune lease, in format `version` (1 or 2).
fn put_lease(repository: &Repository, lease: &lifecycle::PruneLease, version: u16) {
    let key = &repository.keys().data_key;
    let nonce = cairn_store::seal::random_nonce();
    let bytes = if version == 1 {
        lease.encode_v1(key, nonce)
    } else {
        lease.encode(key, nonce)
    };
    let _ = repository.backend().delete(lifecycle::LEASE_NAME);
    repository
        .backend()
        .put(lifecycle::LEASE_NAME, bytes.into(), PutMode::Create)
        .unwrap();
}

/// The prune lease follows the same rule: a lease whose holder is proven gone (this machine,
/// boot and namespace, pid absent) is taken over at once; one from another machine or PID
/// namespace, or written by an older cairn, is not, whatever its host label and pid, until its
/// TTL runs out by the store's clock (exit 11 meanwhile).
#[test]
fn a_prune_lease_is_taken_over_only_from_a_holder_proven_gone() {
    let workspace = workspace_with_a_kept_snapshot();
    let repository = workspace.open_repository();
    let local = here();
    let dead = dead_pid();
    let lease = |place: ProcessPlace| lifecycle::PruneLease {
        token: [9; 16],
        host: cairn_store::lifecycle::this_host(),
        place,
        started_unix: 0,
        ttl_seconds: 3600,
    };
    let held_elsewhere = [
        (
            ProcessPlace {
                machine_id: [0x42; 16],
                boot_id: [0x43; 16],
                pid: dead,
                ..local
            },
            2,
        ),
        (
            ProcessPlace {
                pid_namespace: local.pid_namespace ^ 1,
                pid: dead,
                ..local
            },
            2,
        ),
        (ProcessPlace::pid_only(dead), 1),
    ];
    for (place, version) in held_elsewhere {
        put_lease(&repository, &lease(place), version);
        workspace
            .cairn(&["prune"])
            .code(11)
            .stderr_contains("another prune is running");
    }
    put_lease(&repository, &lease(ProcessPlace { pid: dead, ..local }), 2);
    workspace.cairn(&["prune"]).ok();
    assert!(
        repository
            .backend()
            .head(lifecycle::LEASE_NAME)
            .unwrap()
            .is_none(),
        "the lease was taken over and released"
    );
}

/// A backup in another time namespace with a shifted boot clock (`unshare --time --boottime`),
/// but in this PID namespace, reads its own start time shifted; a prune out here must still see
/// the same process running, not a reused pid. Regression test: the start time is normalised to
/// the root time namespace.
#[test]
fn a_backup_in_another_time_namespace_is_seen_running() {
    let probe = Command::new("unshare")
        .args(["--time", "--boottime", "1000", "true"])
        .status();
    if !probe.is_ok_and(|status| status.success()) {
        eprintln!("skipped: unshare --time is not available here (needs root and Linux 5.6)");
        return;
    }
    let workspace = workspace_with_a_kept_snapshot();
    let repository = workspace.open_repository();
    add_garbage(&workspace, 84);
    let mut child = hanging_backup(
        &workspace,
        &["--host", "timens"],
        &["unshare", "--time", "--boottime", "1000"],
    );
    let session = wait_for_session(&repository, "timens", &mut child);
    for command in [vec!["check"], vec!["prune"]] {
        workspace.cairn(&command).ok();
    }
    let held = prune_json(&workspace, &["--dry-run"]);
    let listed = blocking(&held, &session);
    assert_eq!(listed["reason"], "its process is running", "{listed}");
    assert!(unended(&repository, &session));
    assert_eq!(held["packs_deleted"], 0, "{held}");
    child.kill().unwrap();
    child.wait().unwrap();
    let released = prune_json(&workspace, &[]);
    assert!(!unended(&repository, &session));
    assert!(
        released["packs_deleted"].as_u64().unwrap() > 0,
        "{released}"
    );
}
