//! Stuck and slow object stores (issue 12, "no command hangs"): a store that accepts connections
//! and answers nothing, or never accepts them, fails a command in bounded time with one line;
//! a slow link whose bytes keep moving never does, however long the transfer takes; the limits
//! come from `-o` and `cairn.toml`, and unusable values are usage errors (exit 2).
//!
//! Through the fault proxy of `netfaults.rs` in front of moto (skipped with a note without the
//! servers, like `netfaults.rs`). The limits are set small with `-o`, so no test takes minutes.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use crate::netfaults::{
    Fault, FaultProxy, Repo, SERIAL, assert_clean_failure, lock, report, s3_server, text,
};
use crate::support::{CHEAP_INIT, Workspace, listing, random_bytes};

/// The stall limit of these tests, and cairn's retries on top of the HTTP client's.
const STALL: [&str; 2] = ["stall_timeout=1s", "retries=1"];

/// The longest a request may take to fail under [`STALL`] when nothing answers: 2 attempts of
/// 1 s each (a stalled attempt is not retried by the HTTP layer), cairn's backoff (at most
/// 0.2 s), and generous slack for a loaded machine. The old client took 300 s.
const STALL_BOUND: Duration = Duration::from_secs(15);

/// Exit code of a store that stopped answering: fatal (README, "Exit codes").
const EXIT_FATAL: i32 = 1;

/// Asserts the one-line error of a store that stopped answering.
#[track_caller]
fn assert_stuck_failure(run: crate::support::Run, took: Duration, cause: &str) -> String {
    assert_eq!(run.code, Some(EXIT_FATAL), "{}", run.stderr);
    let line = assert_clean_failure(run, took, STALL_BOUND);
    assert!(
        line.contains(cause),
        "the error names the cause {cause:?}: {line}"
    );
    line
}

/// A store that accepts every connection and answers nothing: from the first request (`snapshots`
/// reading the config) and in the middle of pack uploads (`backup`, no whole-request timeout
/// given, so only the stall limit can end the uploads the proxy keeps swallowing).
#[test]
fn a_store_that_accepts_and_never_answers_fails_in_bounded_time() {
    let Some(s3) = s3_server("a_store_that_accepts_and_never_answers_fails_in_bounded_time") else {
        return;
    };
    let _serial = lock(&SERIAL);
    let workspace = Workspace::new();
    let repo = Repo::fresh(&workspace, &s3, "stuck-blackhole");
    repo.init();

    let proxy = FaultProxy::start(s3.upstream);
    proxy.set_plan(&[(Fault::Blackhole, None)]);
    let (run, took) = repo.via(&proxy, &STALL, &["snapshots"]);
    let line = assert_stuck_failure(run, took, "no data moved for 1s");
    let stats = proxy.stats();
    report("stall: blackhole from the start", "snapshots", &line, took);
    assert!(
        stats.blackholed >= 2,
        "the stalled request was retried on a new connection: {stats:?}"
    );
    drop(proxy);

    let source = workspace.path("source");
    std::fs::create_dir_all(&source).expect("create source");
    std::fs::write(source.join("data.bin"), random_bytes(7, 5_000_000)).expect("write");
    let proxy = FaultProxy::start(s3.upstream);
    proxy.trip_after(2_500_000, Fault::Blackhole);
    let (run, took) = repo.via(&proxy, &STALL, &["backup", text(&source)]);
    assert!(proxy.tripped(), "the store went silent during the backup");
    let line = assert_stuck_failure(run, took, "no data moved for 1s");
    report("stall: blackhole after 2.5 MB", "backup", &line, took);
    drop(proxy);
    assert!(repo.snapshots().is_empty(), "no snapshot was committed");
    repo.direct(&["check"]).ok();
}

/// A listener whose accept queue is full: the kernel drops new connection attempts, so
/// connecting hangs (a store behind a firewall that drops packets).
fn never_accepting_endpoint() -> (TcpListener, TcpStream, SocketAddr) {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let address: SocketAddr = "127.0.0.1:0".parse().expect("address");
    socket.bind(&address.into()).expect("bind");
    socket.listen(0).expect("listen");
    let listener: TcpListener = socket.into();
    let address = listener.local_addr().expect("address");
    // Fills the queue of one; the listener never accepts it.
    let filler = TcpStream::connect(address).expect("the first connection is queued");
    (listener, filler, address)
}

/// A store that never accepts a connection fails within the connect limit's budget.
#[test]
fn a_store_that_never_accepts_fails_in_bounded_time() {
    let Some(s3) = s3_server("a_store_that_never_accepts_fails_in_bounded_time") else {
        return;
    };
    let _serial = lock(&SERIAL);
    let workspace = Workspace::new();
    let repo = Repo::fresh(&workspace, &s3, "stuck-never-accepts");
    let (_listener, _filler, address) = never_accepting_endpoint();
    let endpoint = format!("http://{address}");
    let (run, took) = repo.run(
        Some(&endpoint),
        &["connect_timeout=1s", "stall_timeout=2s", "retries=1"],
        &["snapshots"],
    );
    let line = assert_stuck_failure(run, took, "get config");
    report("connect: never accepted", "snapshots", &line, took);
}

/// A 16 MiB pack uploaded and downloaded over a link slow enough that each transfer takes
/// several times the stall limit succeeds, with no retry allowed; the same upload under a
/// whole-request limit shorter than the transfer fails, so the link really is that slow.
#[test]
fn slow_transfers_that_keep_moving_complete() {
    let Some(s3) = s3_server("slow_transfers_that_keep_moving_complete") else {
        return;
    };
    let _serial = lock(&SERIAL);
    let workspace = Workspace::new();
    let repo = Repo::fresh(&workspace, &s3, "slow-link");
    let mut init = CHEAP_INIT.to_vec();
    init.extend(["--pack-size-mib", "16"]);
    repo.direct(&init).ok();
    let source = workspace.path("source");
    std::fs::create_dir_all(&source).expect("create source");
    std::fs::write(source.join("big.bin"), random_bytes(11, 17 * 1024 * 1024)).expect("write");

    // 2 MiB/s each way: the 16 MiB pack takes over 8 s, four times the 2 s stall limit.
    let rate = 2 * 1024 * 1024;
    let slow = ["stall_timeout=2s", "retries=0"];
    let proxy = FaultProxy::start(s3.upstream);
    proxy.set_plan(&[(Fault::Throttle(rate), None)]);
    let (run, took) = repo.via(&proxy, &slow, &["backup", "--json", text(&source)]);
    let summary = run.ok().summary();
    report(
        "slow link 2 MiB/s, stall limit 2 s",
        "backup",
        &format!("ok, {} B added", summary["bytes_added"]),
        took,
    );
    assert!(proxy.stats().throttled > 0);
    assert!(
        took >= Duration::from_secs(8),
        "the throttled upload of a 16 MiB pack cannot take less than 8 s: the proxy did not slow it"
    );
    assert_eq!(repo.snapshots().len(), 1);

    let target = workspace.path("restored");
    let spec = format!("latest:{}", text(&source));
    let (run, took) = repo.via(
        &proxy,
        &slow,
        &["restore", &spec, "--target", text(&target)],
    );
    run.ok();
    report(
        "slow link 2 MiB/s, stall limit 2 s",
        "restore",
        "ok, identical",
        took,
    );
    assert_eq!(
        listing(&source),
        listing(&target),
        "restored bytes are identical"
    );

    // The control: a whole-request limit of 4 s cuts the same upload.
    let control = Repo::fresh(&workspace, &s3, "slow-link-control");
    control.direct(&init).ok();
    let (run, took) = control.via(
        &proxy,
        &["timeout=4s", "retries=0", "stall_timeout=2s"],
        &["backup", text(&source)],
    );
    let run = run.failed();
    report(
        "slow link 2 MiB/s, whole-request limit 4 s",
        "backup",
        &format!("fails: {}", run.stderr.trim()),
        took,
    );
    assert!(
        !run.stderr.contains("no data moved"),
        "the whole-request limit cut it, not the stall limit: {}",
        run.stderr
    );
    assert!(control.snapshots().is_empty());
}

/// Unusable limits are usage errors (exit 2) with a one-line message naming the option, on the
/// command line and in `cairn.toml`, for local and cloud repositories alike; the spelling with
/// `-` is accepted.
#[test]
fn unusable_store_limits_are_usage_errors() {
    let workspace = Workspace::initialized();
    for option in [
        "stall_timeout=abc",
        "stall_timeout=0s",
        "stall-timeout=15",
        "connect-timeout=soon",
        "timeout=",
        "retries=-1",
        "retries=1000",
    ] {
        let run = workspace.cairn(&["-o", option, "snapshots"]).code(2);
        let key = option
            .split_once('=')
            .expect("key=value")
            .0
            .replace('-', "_");
        assert!(
            run.stderr.trim().lines().count() == 1
                && run.stderr.contains(&format!("option {key}=")),
            "{option}: {}",
            run.stderr
        );
    }
    workspace
        .cairn(&[
            "-r",
            "s3://bucket/prefix",
            "-o",
            "no_such_option=1",
            "snapshots",
        ])
        .code(2)
        .stderr_contains("option no_such_option=1: unknown option for s3://");
    // Good values in either spelling are accepted.
    workspace
        .cairn(&[
            "-o",
            "stall-timeout=2m",
            "-o",
            "connect_timeout=10s",
            "snapshots",
        ])
        .ok();

    let config = workspace.path("cairn.toml");
    std::fs::write(
        &config,
        "[repository]\noptions = { stall_timeout = \"never\" }\n",
    )
    .expect("write config");
    workspace
        .cairn(&["--config", text(&config), "snapshots"])
        .code(2)
        .stderr_contains("option stall_timeout=never");
    std::fs::write(
        &config,
        "[repository]\noptions = { stall_timeout = \"30s\" }\n",
    )
    .expect("write config");
    workspace
        .cairn(&["--config", text(&config), "snapshots"])
        .ok();
}

/// The limits in `cairn.toml` apply: a stall limit of 1 s from the file ends a request to a
/// silent store as fast as the same `-o` option.
#[test]
fn store_limits_from_the_config_file_apply() {
    let Some(s3) = s3_server("store_limits_from_the_config_file_apply") else {
        return;
    };
    let _serial = lock(&SERIAL);
    let workspace = Workspace::new();
    let repo = Repo::fresh(&workspace, &s3, "stuck-config");
    repo.init();
    let proxy = FaultProxy::start(s3.upstream);
    proxy.set_plan(&[(Fault::Blackhole, None)]);
    let config = workspace.path("cairn.toml");
    std::fs::write(
        &config,
        "[repository]\noptions = { stall_timeout = \"1s\", retries = \"1\" }\n",
    )
    .expect("write config");
    let (run, took) = repo.via(&proxy, &[], &["--config", text(&config), "snapshots"]);
    let line = assert_stuck_failure(run, took, "no data moved for 1s");
    report("stall limit from cairn.toml", "snapshots", &line, took);
}
