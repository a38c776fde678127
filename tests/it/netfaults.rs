//! Network faults between the `cairn` binary and a real S3 server (moto, started on loopback by
//! `tests/servers.sh`): a small fault-injecting TCP proxy sits between them and resets, cuts,
//! delays or swallows connections according to a changeable plan. Transient faults must be
//! retried away without a trace; persistent faults must fail a run cleanly (bounded time, one
//! line naming the operation and the object, no snapshot, a consistent repository), and the next
//! run without the fault must upload only what is missing.
//!
//! Without `CAIRN_TEST_S3_ENDPOINT` the tests skip with a note, unless
//! `CAIRN_TEST_REQUIRE_SERVERS=1`, when they fail.

use std::collections::{BTreeMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cairn_store::backend::Backend;
use cairn_store::backend::object_store::{CreateDirectory, ObjectStoreBackend};

use crate::support::{CHEAP_INIT, Run, Workspace, files_below, json_u64, listing, random_bytes};

// ---------------------------------------------------------------------------------------------
// The fault-injecting proxy
// ---------------------------------------------------------------------------------------------

/// What the proxy does to one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward both ways untouched.
    Pass,
    /// Reset the connection as soon as it is accepted (`SO_LINGER` 0, so the close is an RST).
    Reset,
    /// Forward the first `n` bytes of the server's answers, then close both sides.
    Cut(u64),
    /// Sleep this long before forwarding each chunk, both ways.
    Delay(Duration),
    /// Accept and never answer: whatever the client sends is read and dropped.
    Blackhole,
    /// Forward both ways at this many bytes a second each, in small steps, so bytes keep
    /// moving (a slow link, not a stalled one).
    Throttle(u64),
}

/// How often blocked reads wake up to look at the stop flag and the plan.
const POLL: Duration = Duration::from_millis(20);

/// One step of a plan: a fault and how many times to deliver it.
#[derive(Debug, Clone, Copy)]
struct Step {
    /// Tells the step's connections apart from later steps'.
    id: u64,
    fault: Fault,
    /// Deliveries left (`None`: for ever). Resets, blackholes and delays are delivered when a
    /// connection is accepted; a cut when it actually cuts an answer short, so the step stays
    /// armed for new connections until its cuts have happened.
    budget: Option<u32>,
    /// Cut only answers to requests with this method and a path containing this text.
    only: Option<(&'static str, &'static str)>,
}

/// Whether the request `head` (its first bytes) has `method` and a path containing `part`.
fn request_matches(head: &[u8], (method, part): (&str, &str)) -> bool {
    let head = String::from_utf8_lossy(head);
    let line = head.lines().next().unwrap_or_default();
    let mut words = line.split(' ');
    words.next() == Some(method) && words.next().is_some_and(|path| path.contains(part))
}

/// The proxy's changeable plan.
#[derive(Debug, Default)]
struct Plan {
    /// The steps, in order; when none is left, connections pass.
    steps: VecDeque<Step>,
    /// The id of the next step added.
    next_id: u64,
    /// Once this many bytes have been forwarded (both ways, all connections), switch to this
    /// fault for good, for open connections too: a partition in the middle of a run.
    trip: Option<(u64, Fault)>,
    /// The fault the proxy tripped into.
    tripped: Option<Fault>,
    /// When it tripped.
    tripped_at: Option<Instant>,
}

/// See [`Shared::deliver_cut`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CutDecision {
    /// Cut the answer short now.
    Cut,
    /// Arm with this step's cut (id, limit) instead.
    Rearm(u64, u64),
    /// Pass from now on.
    Disarm,
}

/// What the proxy did, for assertions and the report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted.
    pub connections: u32,
    /// Connections reset on accept.
    pub resets: u32,
    /// Connections given a cut budget.
    pub cut_connections: u32,
    /// Answers actually cut short.
    pub cuts: u32,
    /// Connections whose chunks were delayed.
    pub delayed: u32,
    /// Connections swallowed whole.
    pub blackholed: u32,
    /// Connections slowed to a rate.
    pub throttled: u32,
    /// Open connections reset or stalled when the proxy tripped.
    pub severed: u32,
}

/// State shared by the acceptor and the connection threads.
#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    plan: Mutex<Plan>,
    stats: Mutex<ProxyStats>,
    stop: AtomicBool,
    forwarded: AtomicU64,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// The fault (and its step) for a newly accepted connection, delivering it unless it is a
    /// cut (delivered when it happens, see [`Shared::deliver_cut`]).
    fn next_fault(&self) -> (Fault, u64) {
        let mut plan = lock(&self.plan);
        if let Some(fault) = plan.tripped {
            return (fault, u64::MAX);
        }
        while let Some(step) = plan.steps.front_mut() {
            match step.budget {
                Some(0) => {
                    plan.steps.pop_front();
                }
                None => return (step.fault, step.id),
                Some(_) if matches!(step.fault, Fault::Cut(_)) => return (step.fault, step.id),
                Some(left) => {
                    let taken = (step.fault, step.id);
                    step.budget = Some(left - 1);
                    if left == 1 {
                        plan.steps.pop_front();
                    }
                    return taken;
                }
            }
        }
        (Fault::Pass, u64::MAX)
    }

    /// What a connection armed with the cut of step `id` does once its limit is reached: cut
    /// when that step is current and has budget left (which this spends); when the step is over
    /// but the current one is a cut too (connections opened together, one of them cut), take
    /// that one on; otherwise pass.
    fn deliver_cut(&self, id: u64, request_head: &[u8]) -> CutDecision {
        let mut plan = lock(&self.plan);
        let Some(step) = plan.steps.front_mut() else {
            return CutDecision::Disarm;
        };
        if step.id == id
            && step
                .only
                .is_some_and(|only| !request_matches(request_head, only))
        {
            return CutDecision::Disarm;
        }
        match (step.id == id, step.fault, step.budget) {
            (true, _, None) => CutDecision::Cut,
            (true, _, Some(left)) if left > 0 => {
                step.budget = Some(left - 1);
                if left == 1 {
                    plan.steps.pop_front();
                }
                CutDecision::Cut
            }
            (false, Fault::Cut(limit), _) => CutDecision::Rearm(step.id, limit),
            _ => CutDecision::Disarm,
        }
    }

    /// Counts forwarded bytes and trips the plan when its threshold is crossed; returns the
    /// fault the proxy has tripped into, if any.
    fn forwarded(&self, bytes: usize) -> Option<Fault> {
        let total = self.forwarded.fetch_add(bytes as u64, Ordering::SeqCst) + bytes as u64;
        let mut plan = lock(&self.plan);
        if let Some((after, fault)) = plan.trip
            && total >= after
        {
            plan.trip = None;
            plan.tripped = Some(fault);
            plan.tripped_at = Some(Instant::now());
        }
        plan.tripped
    }

    fn tripped(&self) -> Option<Fault> {
        lock(&self.plan).tripped
    }

    fn count(&self, update: impl FnOnce(&mut ProxyStats)) {
        update(&mut lock(&self.stats));
    }
}

/// A TCP proxy on `127.0.0.1:0` in front of `upstream` that injects [`Fault`]s. Stops (and joins
/// every thread it started) when dropped.
pub struct FaultProxy {
    shared: Arc<Shared>,
    address: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy that passes everything until given a plan.
    pub fn start(upstream: SocketAddr) -> Self {
        assert!(
            upstream.ip().is_loopback(),
            "the proxy only forwards to loopback"
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy binds on loopback");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let address = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            upstream,
            plan: Mutex::new(Plan::default()),
            stats: Mutex::new(ProxyStats::default()),
            stop: AtomicBool::new(false),
            forwarded: AtomicU64::new(0),
            threads: Mutex::new(Vec::new()),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || accept_loop(&listener, &shared))
        };
        Self {
            shared,
            address,
            acceptor: Some(acceptor),
        }
    }

    /// The endpoint URL to give cairn (`-o endpoint=...`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Replaces the plan: each fault for its budget of new connections (`None`: for ever), in
    /// order, then pass-through. Clears a trip.
    pub fn set_plan(&self, steps: &[(Fault, Option<u32>)]) {
        let mut plan = lock(&self.shared.plan);
        let first = plan.next_id;
        *plan = Plan {
            steps: (first..)
                .zip(steps)
                .map(|(id, &(fault, budget))| Step {
                    id,
                    fault,
                    budget,
                    only: None,
                })
                .collect(),
            next_id: first + steps.len() as u64,
            ..Plan::default()
        };
    }

    /// Replaces the plan: the answers to the next `count` requests with `method` and a path
    /// containing `part` are cut after `limit` bytes; everything else passes.
    pub fn cut_answers_to(&self, method: &'static str, part: &'static str, limit: u64, count: u32) {
        self.set_plan(&[]);
        self.then_cut_answers_to(method, part, limit, count);
    }

    /// Appends to the plan: then the answers to the next `count` requests with `method` and a
    /// path containing `part` are cut after `limit` bytes.
    pub fn then_cut_answers_to(
        &self,
        method: &'static str,
        part: &'static str,
        limit: u64,
        count: u32,
    ) {
        let mut plan = lock(&self.shared.plan);
        let id = plan.next_id;
        plan.next_id += 1;
        plan.steps.push_back(Step {
            id,
            fault: Fault::Cut(limit),
            budget: Some(count),
            only: Some((method, part)),
        });
    }

    /// Passes everything until `bytes` more have been forwarded, then applies `fault` to every
    /// connection, open ones included.
    pub fn trip_after(&self, bytes: u64, fault: Fault) {
        let already = self.shared.forwarded.load(Ordering::SeqCst);
        let mut plan = lock(&self.shared.plan);
        *plan = Plan {
            trip: Some((already + bytes, fault)),
            next_id: plan.next_id,
            ..Plan::default()
        };
    }

    /// Faults of the plan not delivered yet (`u32::MAX` for an unbounded step).
    pub fn budget_left(&self) -> u32 {
        lock(&self.shared.plan)
            .steps
            .iter()
            .map(|step| step.budget.unwrap_or(u32::MAX))
            .fold(0, u32::saturating_add)
    }

    /// Whether the proxy has tripped into its persistent fault.
    pub fn tripped(&self) -> bool {
        self.shared.tripped().is_some()
    }

    /// How long ago the proxy tripped into its persistent fault, if it did.
    pub fn since_trip(&self) -> Option<Duration> {
        lock(&self.shared.plan)
            .tripped_at
            .map(|tripped_at| tripped_at.elapsed())
    }

    /// What the proxy did so far.
    pub fn stats(&self) -> ProxyStats {
        *lock(&self.shared.stats)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let threads = std::mem::take(&mut *lock(&self.shared.threads));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.stopping() {
        match listener.accept() {
            Ok((client, _)) => {
                let (fault, step) = shared.next_fault();
                shared.count(|stats| stats.connections += 1);
                let connection_shared = Arc::clone(shared);
                let handle = std::thread::spawn(move || {
                    handle_connection(client, fault, step, &connection_shared);
                });
                let mut threads = lock(&shared.threads);
                threads.retain(|thread| !thread.is_finished());
                threads.push(handle);
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL / 4),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Closes `stream` with an RST instead of a FIN.
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// Reads and drops whatever arrives until the peer closes or the proxy stops.
fn swallow(stream: &TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(POLL));
    let mut buffer = [0u8; 16 * 1024];
    let mut reader = stream;
    while !shared.stopping() {
        match reader.read(&mut buffer) {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

fn handle_connection(client: TcpStream, fault: Fault, step: u64, shared: &Shared) {
    let _ = client.set_nonblocking(false);
    match fault {
        Fault::Reset => {
            shared.count(|stats| stats.resets += 1);
            reset(client);
            return;
        }
        Fault::Blackhole => {
            shared.count(|stats| stats.blackholed += 1);
            swallow(&client, shared);
            return;
        }
        Fault::Cut(_) => shared.count(|stats| stats.cut_connections += 1),
        Fault::Delay(_) => shared.count(|stats| stats.delayed += 1),
        Fault::Throttle(_) => shared.count(|stats| stats.throttled += 1),
        Fault::Pass => {}
    }
    let Ok(server) = TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(2)) else {
        reset(client);
        return;
    };
    for stream in [&client, &server] {
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(POLL));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    }
    let severed = AtomicBool::new(false);
    let request_head = Mutex::new(Vec::new());
    let pumps = Pumps {
        request_head: &request_head,
        client: &client,
        server: &server,
        fault,
        step,
        shared,
        severed: &severed,
    };
    std::thread::scope(|scope| {
        scope.spawn(|| pumps.pump(Direction::Request));
        pumps.pump(Direction::Response);
    });
    if severed.load(Ordering::SeqCst) {
        reset(client);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Client to server.
    Request,
    /// Server to client.
    Response,
}

/// The two sockets of one proxied connection.
struct Pumps<'a> {
    client: &'a TcpStream,
    server: &'a TcpStream,
    fault: Fault,
    /// The plan step that armed `fault`.
    step: u64,
    shared: &'a Shared,
    /// The first bytes of the request (moto answers one request per connection).
    request_head: &'a Mutex<Vec<u8>>,
    /// Set when the connection ends with a reset (the trip fault was [`Fault::Reset`]).
    severed: &'a AtomicBool,
}

impl Pumps<'_> {
    fn close_both(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
    }

    /// Copies one direction until end of stream, an error, the fault or the proxy's stop.
    fn pump(&self, direction: Direction) {
        let (mut from, mut to) = match direction {
            Direction::Request => (self.client, self.server),
            Direction::Response => (self.server, self.client),
        };
        let mut buffer = vec![0u8; 64 * 1024];
        let mut forwarded = 0u64;
        let mut stalled = false;
        // The armed cut: its plan step and how many answer bytes pass before it.
        let mut cut = match self.fault {
            Fault::Cut(limit) if direction == Direction::Response => Some((self.step, limit)),
            _ => None,
        };
        while !self.shared.stopping() {
            // A throttled connection moves 16 KiB at a time, each followed by its share of a
            // second.
            let room = match self.fault {
                Fault::Throttle(_) => 16 * 1024,
                _ => buffer.len(),
            };
            let length = match from.read(&mut buffer[..room]) {
                Ok(0) => break,
                Ok(length) => length,
                Err(error)
                    if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    continue;
                }
                Err(_) => break,
            };
            match self.shared.forwarded(length) {
                Some(Fault::Reset) => {
                    if !self.severed.swap(true, Ordering::SeqCst) {
                        self.shared.count(|stats| stats.severed += 1);
                    }
                    self.close_both();
                    return;
                }
                Some(Fault::Blackhole) => {
                    // Keep the connection open and drop everything, both ways.
                    if !stalled && direction == Direction::Request {
                        self.shared.count(|stats| stats.severed += 1);
                    }
                    stalled = true;
                    continue;
                }
                _ => {}
            }
            let chunk = &buffer[..length];
            if direction == Direction::Request {
                let mut head = lock(self.request_head);
                let room = 2048usize.saturating_sub(head.len());
                head.extend_from_slice(&chunk[..room.min(chunk.len())]);
            }
            if let Fault::Delay(delay) = self.fault {
                std::thread::sleep(delay);
            }
            if let Fault::Throttle(rate) = self.fault {
                std::thread::sleep(Duration::from_micros(length as u64 * 1_000_000 / rate));
            }
            while let Some((step, limit)) = cut {
                let room = usize::try_from(limit.saturating_sub(forwarded)).unwrap_or(usize::MAX);
                if chunk.len() < room {
                    break;
                }
                let head = lock(self.request_head).clone();
                match self.shared.deliver_cut(step, &head) {
                    CutDecision::Cut => {
                        let _ = to.write_all(&chunk[..room]);
                        let _ = to.flush();
                        self.shared.count(|stats| stats.cuts += 1);
                        self.close_both();
                        return;
                    }
                    CutDecision::Rearm(step, limit) => cut = Some((step, limit)),
                    CutDecision::Disarm => cut = None,
                }
            }
            if to.write_all(chunk).is_err() {
                break;
            }
            forwarded += chunk.len() as u64;
        }
        let _ = to.shutdown(Shutdown::Write);
    }
}

// ---------------------------------------------------------------------------------------------
// The S3 server and the repository under test
// ---------------------------------------------------------------------------------------------

static PREFIX_COUNTER: AtomicU32 = AtomicU32::new(0);

/// The tests in this module run one at a time, so their timings mean something.
pub(crate) static SERIAL: Mutex<()> = Mutex::new(());

/// Where moto is, from the environment `tests/servers.sh` exports.
pub(crate) struct S3 {
    /// `s3://cairn-test`.
    base: String,
    /// moto's address.
    pub(crate) upstream: SocketAddr,
}

/// moto's address, or `None` (with a note) when the servers are not running. With
/// `CAIRN_TEST_REQUIRE_SERVERS=1` a missing server fails the test instead.
pub(crate) fn s3_server(test: &str) -> Option<S3> {
    let (Ok(base), Ok(endpoint)) = (
        std::env::var("CAIRN_TEST_S3_URL"),
        std::env::var("CAIRN_TEST_S3_ENDPOINT"),
    ) else {
        assert!(
            std::env::var("CAIRN_TEST_REQUIRE_SERVERS").is_err(),
            "CAIRN_TEST_S3_ENDPOINT is not set but servers are required: run tests/run-all.sh"
        );
        eprintln!("skipping {test}: no S3 server (start servers with tests/servers.sh)");
        return None;
    };
    let address = endpoint
        .strip_prefix("http://")
        .unwrap_or(&endpoint)
        .trim_end_matches('/');
    let upstream: SocketAddr = address
        .parse()
        .unwrap_or_else(|error| panic!("CAIRN_TEST_S3_ENDPOINT {endpoint:?}: {error}"));
    assert!(
        upstream.ip().is_loopback(),
        "CAIRN_TEST_S3_ENDPOINT must be on loopback: {endpoint}"
    );
    Some(S3 { base, upstream })
}

/// One repository at a fresh prefix of the test bucket, driven through the `cairn` binary.
pub(crate) struct Repo<'a> {
    workspace: &'a Workspace,
    url: String,
}

impl<'a> Repo<'a> {
    pub(crate) fn fresh(workspace: &'a Workspace, s3: &S3, test: &str) -> Self {
        let url = format!(
            "{}/netfaults-{test}-{}-{}",
            s3.base,
            std::process::id(),
            PREFIX_COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        Self { workspace, url }
    }

    /// Runs `cairn --repo URL [-o endpoint=ENDPOINT] [-o OPTION]... ARGS`, timed.
    pub(crate) fn run(
        &self,
        endpoint: Option<&str>,
        options: &[&str],
        args: &[&str],
    ) -> (Run, Duration) {
        let mut full: Vec<String> = vec!["--repo".into(), self.url.clone()];
        if let Some(endpoint) = endpoint {
            full.extend(["-o".into(), format!("endpoint={endpoint}")]);
        }
        for option in options {
            full.extend(["-o".into(), (*option).to_owned()]);
        }
        full.extend(args.iter().map(|arg| (*arg).to_owned()));
        let full: Vec<&str> = full.iter().map(String::as_str).collect();
        let started = Instant::now();
        let run = self.workspace.cairn(&full);
        (run, started.elapsed())
    }

    /// Runs against moto directly (the endpoint from the environment).
    pub(crate) fn direct(&self, args: &[&str]) -> Run {
        self.run(None, &[], args).0
    }

    /// Runs through `proxy` with extra backend options.
    pub(crate) fn via(
        &self,
        proxy: &FaultProxy,
        options: &[&str],
        args: &[&str],
    ) -> (Run, Duration) {
        self.run(Some(&proxy.endpoint()), options, args)
    }

    /// `init` with cheap key derivation and 1 MiB packs, directly.
    pub(crate) fn init(&self) {
        let mut args = CHEAP_INIT.to_vec();
        args.extend(["--pack-size-mib", "1"]);
        self.direct(&args).ok();
    }

    /// The snapshots, listed directly.
    pub(crate) fn snapshots(&self) -> Vec<serde_json::Value> {
        self.direct(&["snapshots", "--json"]).ok().json_lines()
    }

    /// The repository's objects below `prefix` (`data`, `index`, ...), with their sizes, read
    /// through the library directly.
    fn objects(&self, prefix: &str) -> Vec<(String, u64)> {
        let backend =
            ObjectStoreBackend::open(&self.url, &[], CreateDirectory::No).expect("backend opens");
        backend
            .list(prefix)
            .expect("list")
            .into_iter()
            .map(|info| (info.name, info.size))
            .collect()
    }
}

/// A source tree of about 5 MiB of incompressible data in files of several sizes, so that a
/// 1 MiB pack size gives several packs and a restore several files.
fn make_source(workspace: &Workspace, seed: u64) -> PathBuf {
    let source = workspace.path("source");
    std::fs::create_dir_all(source.join("small")).expect("create source");
    std::fs::write(source.join("big.bin"), random_bytes(seed, 2_500_000)).expect("write");
    std::fs::write(source.join("mid.bin"), random_bytes(seed + 1, 1_500_000)).expect("write");
    for index in 0..8u64 {
        std::fs::write(
            source.join(format!("small/part-{index}.bin")),
            random_bytes(seed + 10 + index, 128 * 1024),
        )
        .expect("write");
    }
    std::fs::write(source.join("notes.txt"), b"network faults test\n").expect("write");
    source
}

pub(crate) fn text(path: &Path) -> &str {
    path.to_str().expect("UTF-8 test path")
}

/// One row of the report matrix, printed for `--nocapture`.
pub(crate) fn report(fault: &str, operation: &str, outcome: &str, took: Duration) {
    let mut outcome = outcome.to_owned();
    if let Some((cut, _)) = outcome.char_indices().nth(160) {
        outcome.truncate(cut);
        outcome.push('…');
    }
    eprintln!(
        "netfaults matrix | {fault:<44} | {operation:<8} | {:>5.1} s | {outcome}",
        took.as_secs_f64()
    );
}

/// Asserts a clean failure: a non-zero exit (no panic, no signal) within `limit`, and exactly one
/// line on standard error naming the failed operation and the object. Returns that line.
#[track_caller]
pub(crate) fn assert_clean_failure(run: Run, took: Duration, limit: Duration) -> String {
    let run = run.failed();
    assert!(
        took < limit,
        "the failure took {took:?} (limit {limit:?}):\n{}",
        run.stderr
    );
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "expected a one-line error, got:\n{}",
        run.stderr
    );
    let line = lines[0].to_owned();
    assert!(line.starts_with("cairn: "), "{line}");
    let names_object = ["put", "get", "list", "head", "delete"]
        .iter()
        .any(|operation| {
            ["config", "keys", "data", "index", "snapshots"]
                .iter()
                .any(|prefix| line.contains(&format!("{operation} {prefix}")))
        });
    assert!(
        names_object,
        "the error names no operation and object: {line}"
    );
    line
}

/// `-o` options that keep persistent faults short: a request times out after 1 s, and cairn
/// retries once on top of the store's own three quick retries.
const SHORT_FUSE: [&str; 3] = ["timeout=1s", "connect_timeout=1s", "retries=1"];

// ---------------------------------------------------------------------------------------------
// Transient faults
// ---------------------------------------------------------------------------------------------

/// Resets, cut answers and slow chunks on some connections are retried away: backup and restore
/// through the proxy succeed, the restored bytes are identical and the data verifies.
#[test]
fn transient_faults_are_retried_away() {
    let Some(s3) = s3_server("transient_faults_are_retried_away") else {
        return;
    };
    let _serial = lock(&SERIAL);
    let workspace = Workspace::new();
    let repo = Repo::fresh(&workspace, &s3, "transient");
    repo.init();
    let source = make_source(&workspace, 100);
    let proxy = FaultProxy::start(s3.upstream);

    let delay = Fault::Delay(Duration::from_millis(50));
    proxy.set_plan(&[
        (Fault::Reset, Some(3)),
        (delay, Some(3)),
        (Fault::Cut(150), Some(2)),
        (Fault::Cut(300), Some(2)),
    ]);
    proxy.then_cut_answers_to("PUT", "/data/", 100, 2);
    let (run, took) = repo.via(&proxy, &[], &["backup", "--json", text(&source)]);
    let summary = run.ok().summary();
    let backup_stats = proxy.stats();
    report(
        "transient: 3 resets, 3 slow, 4 cut answers, 2 cut pack-put answers",
        "backup",
        &format!(
            "ok; {} connections, {} put attempts",
            backup_stats.connections, summary["requests"]["put"]
        ),
        took,
    );
    assert_eq!(proxy.budget_left(), 0, "every planned fault happened");
    assert_eq!(backup_stats.resets, 3, "{backup_stats:?}");
    assert_eq!(backup_stats.cuts, 6, "{backup_stats:?}");
    assert_eq!(backup_stats.delayed, 3, "{backup_stats:?}");
    assert_eq!(repo.snapshots().len(), 1);

    proxy.set_plan(&[
        (Fault::Reset, Some(2)),
        (delay, Some(3)),
        (Fault::Cut(150), Some(1)),
        (Fault::Cut(200_000), Some(2)),
    ]);
    let target = workspace.path("restored");
    let spec = format!("latest:{}", text(&source));
    let (run, took) = repo.via(&proxy, &[], &["restore", &spec, "--target", text(&target)]);
    run.ok();
    let restore_stats = proxy.stats();
    report(
        "transient: 2 resets, 3 slow, 1 cut@150B, 2 cuts@200kB",
        "restore",
        &format!(
            "ok, identical; {} connections",
            restore_stats.connections - backup_stats.connections
        ),
        took,
    );
    assert_eq!(
        proxy.budget_left(),
        0,
        "every planned fault happened: {restore_stats:?} {:?}",
        lock(&proxy.shared.plan)
    );
    assert_eq!(
        restore_stats.cuts - backup_stats.cuts,
        3,
        "{restore_stats:?}"
    );
    assert_eq!(
        restore_stats.resets - backup_stats.resets,
        2,
        "{restore_stats:?}"
    );
    assert_eq!(
        listing(&source),
        listing(&target),
        "restored bytes are identical"
    );
    drop(proxy);
    repo.direct(&["check", "--read-data"]).ok();
}

/// Regression (fixed; commit puts): the answer to the snapshot's create-only put is lost after the
/// snapshot landed. The store's own HTTP layer sends the put again, gets "precondition failed"
/// and reports `AlreadyExists` on cairn's *first* attempt, so `ObjectStoreBackend::put`'s check
/// ("an earlier attempt landed": only when `attempts > 1`) never runs: the backup fails with
/// "object already exists" although its snapshot was committed. Correct: success, one snapshot.
#[test]
fn regression_lost_answer_to_the_snapshot_put_is_recognised() {
    let Some(s3) = s3_server("bug_a_lost_answer_to_the_snapshot_put_fails_a_committed_backup")
    else {
        return;
    };
    let _serial = lock(&SERIAL);
    let workspace = Workspace::new();
    let repo = Repo::fresh(&workspace, &s3, "lost-snapshot-answer");
    repo.init();
    let source = make_source(&workspace, 600);
    let proxy = FaultProxy::start(s3.upstream);
    proxy.cut_answers_to("PUT", "/snapshots/", 100, 1);
    let (run, took) = repo.via(&proxy, &[], &["backup", "--json", text(&source)]);
    assert_eq!(proxy.budget_left(), 0, "the snapshot put's answer was cut");
    drop(proxy);
    let snapshots = repo.snapshots().len();
    let outcome = if run.code == Some(0) {
        "ok".to_owned()
    } else {
        format!(
            "FAILS ({snapshots} snapshot committed): {}",
            run.stderr.trim()
        )
    };
    report("answer to the snapshot put cut", "backup", &outcome, took);
    repo.direct(&["check"]).ok();
    assert_eq!(snapshots, 1, "the snapshot was committed once");
    run.ok();
}

/// Regression (fixed; commit puts, as above): the answers to `init`'s create-only puts (the key, the
/// config) are lost after the objects landed; `init` fails ("object already exists", "a
/// repository already exists") instead of succeeding.
#[test]
fn regression_lost_answers_to_the_init_puts_are_recognised() {
    let Some(s3) = s3_server("bug_lost_answers_to_the_init_puts_fail_init") else {
        return;
    };
    let _serial = lock(&SERIAL);
    let mut failures = Vec::new();
    for part in ["/keys/", "/config"] {
        let workspace = Workspace::new();
        let repo = Repo::fresh(&workspace, &s3, "lost-init-answer");
        let proxy = FaultProxy::start(s3.upstream);
        proxy.cut_answers_to("PUT", part, 100, 1);
        let mut args = CHEAP_INIT.to_vec();
        args.extend(["--pack-size-mib", "1"]);
        let (run, took) = repo.via(&proxy, &[], &args);
        assert_eq!(proxy.budget_left(), 0, "the answer to PUT {part} was cut");
        drop(proxy);
        let outcome = if run.code == Some(0) {
            "ok".to_owned()
        } else {
            format!("FAILS: {}", run.stderr.trim())
        };
        let opens = repo.run(None, &[], &["snapshots"]).0.code == Some(0);
        report(
            &format!("answer to PUT {part} cut"),
            "init",
            &format!("{outcome}; repository opens: {opens}"),
            took,
        );
        if run.code != Some(0) || !opens {
            failures.push(format!("{part}: {outcome}; repository opens: {opens}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// ---------------------------------------------------------------------------------------------
// Persistent faults during a backup
// ---------------------------------------------------------------------------------------------

/// A backup through a proxy that passes about 2.5 MiB and then applies `fault` for good: the run
/// fails cleanly, commits no snapshot, leaves a repository that checks, and the rerun without
/// the fault recovers the stored packs and uploads only the rest.
fn persistent_fault_mid_backup(test: &str, fault: Fault, label: &str) {
    let Some(s3) = s3_server(test) else {
        return;
    };
    let _serial = lock(&SERIAL);
    let workspace = Workspace::new();
    let repo = Repo::fresh(&workspace, &s3, test);
    repo.init();
    let source = make_source(&workspace, 200);

    // What a from-scratch backup of the same data adds, in a repository of its own.
    let reference_workspace = Workspace::new();
    let reference = Repo::fresh(&reference_workspace, &s3, &format!("{test}-reference"));
    reference.init();
    let from_scratch = json_u64(
        &reference
            .direct(&["backup", "--json", text(&source)])
            .ok()
            .summary(),
        "bytes_added",
    );

    let proxy = FaultProxy::start(s3.upstream);
    proxy.trip_after(2_500_000, fault);
    let (run, took) = repo.via(&proxy, &SHORT_FUSE, &["backup", "--json", text(&source)]);
    let line = assert_clean_failure(run, took, Duration::from_secs(30));
    assert!(proxy.tripped(), "the fault was applied");
    let stats = proxy.stats();
    drop(proxy);

    assert!(repo.snapshots().is_empty(), "no snapshot was committed");
    let stored = repo.objects("data");
    let stored_bytes: u64 = stored.iter().map(|(_, size)| size).sum();
    assert!(
        !stored.is_empty(),
        "the failed run stored packs before the fault ({stats:?})"
    );
    report(
        label,
        "backup",
        &format!("fails, {} packs stored: {line}", stored.len()),
        took,
    );
    let check = repo.direct(&["check", "--json"]).ok();
    let check_summary = check.summary();
    assert_eq!(
        check_summary["unindexed_packs"]
            .as_array()
            .map_or(0, Vec::len),
        stored.len(),
        "check reports the failed run's packs as unindexed: {check_summary}"
    );

    let (rerun, took) = repo.run(None, &[], &["backup", "--json", text(&source)]);
    let summary = rerun.ok().summary();
    let added = json_u64(&summary, "bytes_added");
    let recovered = json_u64(&summary, "recovered_packs");
    report(
        "  rerun without the fault",
        "backup",
        &format!("ok, {recovered} packs recovered, {added} of {from_scratch} B added"),
        took,
    );
    assert_eq!(
        recovered,
        stored.len() as u64,
        "every pack of the failed run is recovered: {summary}"
    );
    assert!(
        added + stored_bytes / 2 <= from_scratch,
        "the rerun uploaded only what was missing: added {added}, stored before {stored_bytes}, \
         from scratch {from_scratch}"
    );
    assert!(
        added + stored_bytes >= from_scratch * 9 / 10,
        "the recovered packs and the rerun's uploads account for the data: added {added}, stored \
         before {stored_bytes}, from scratch {from_scratch}"
    );
    assert_eq!(repo.snapshots().len(), 1);
    repo.direct(&["check", "--read-data"]).ok();
    let target = workspace.path("restored");
    let spec = format!("latest:{}", text(&source));
    repo.direct(&["restore", &spec, "--target", text(&target)])
        .ok();
    assert_eq!(listing(&source), listing(&target));
}

/// The network goes silent in the middle of a backup (every connection, open ones included).
#[test]
fn blackhole_mid_backup_fails_cleanly_and_the_rerun_resumes() {
    persistent_fault_mid_backup(
        "blackhole-mid-backup",
        Fault::Blackhole,
        "persistent: blackhole after 2.5 MB",
    );
}

/// Every connection is reset from the middle of a backup on.
#[test]
fn resets_mid_backup_fail_cleanly_and_the_rerun_resumes() {
    persistent_fault_mid_backup(
        "reset-mid-backup",
        Fault::Reset,
        "persistent: reset after 2.5 MB",
    );
}

/// Persistent faults from the first connection: the backup fails fast and writes nothing.
#[test]
fn persistent_faults_from_the_start_fail_a_backup_cleanly() {
    let Some(s3) = s3_server("persistent_faults_from_the_start_fail_a_backup_cleanly") else {
        return;
    };
    let _serial = lock(&SERIAL);
    let workspace = Workspace::new();
    let repo = Repo::fresh(&workspace, &s3, "from-start");
    repo.init();
    let source = make_source(&workspace, 300);
    for (fault, label) in [
        (Fault::Blackhole, "persistent: blackhole every connection"),
        (Fault::Reset, "persistent: reset every connection"),
    ] {
        let proxy = FaultProxy::start(s3.upstream);
        proxy.set_plan(&[(fault, None)]);
        let (run, took) = repo.via(&proxy, &SHORT_FUSE, &["backup", "--json", text(&source)]);
        let line = assert_clean_failure(run, took, Duration::from_secs(30));
        assert!(proxy.stats().connections > 0);
        drop(proxy);
        report(label, "backup", &format!("fails: {line}"), took);
        assert!(repo.snapshots().is_empty(), "no snapshot was committed");
        assert!(repo.objects("data").is_empty(), "nothing was stored");
        repo.direct(&["check"]).ok();
    }
}

/// Regression (fixed; backup): once a pack upload has failed for good, the backup does not stop. The
/// packs still queued for the upload threads are uploaded first, each with the full retry
/// budget (`BlobSaver`'s drop and `finish` join the workers, which drain the job queue). Counted
/// by the connections the proxy swallowed.
#[test]
fn regression_a_failed_upload_stops_the_queued_uploads() {
    let Some(s3) = s3_server("bug_backup_keeps_uploading_queued_packs_after_a_failed_upload")
    else {
        return;
    };
    let _serial = lock(&SERIAL);
    let workspace = Workspace::new();
    let repo = Repo::fresh(&workspace, &s3, "queued-uploads");
    repo.init();
    let source = make_source(&workspace, 500);
    let proxy = FaultProxy::start(s3.upstream);
    proxy.trip_after(2_500_000, Fault::Blackhole);
    let (run, _) = repo.via(&proxy, &SHORT_FUSE, &["backup", text(&source)]);
    // For the message only: how long after the partition the backup gave up.
    let took = proxy.since_trip().expect("the proxy tripped");
    run.failed();
    let stats = proxy.stats();
    // Under SHORT_FUSE one request makes at most 2 × 4 attempts before it fails for good. The
    // two upload threads' requests in flight at the partition may use them all; a pack still
    // queued behind them must not be tried at all (it would add up to 8 more). Counted, not
    // timed: a loaded machine makes every request slower but never adds connections.
    let attempts_per_request = 2 * 4;
    let upload_threads = 2;
    assert!(
        stats.blackholed <= upload_threads * attempts_per_request,
        "queued packs were still tried after an upload failed for good: {} connections \
         swallowed, at most {} expected ({} connections, failed after {took:?})",
        stats.blackholed,
        upload_threads * attempts_per_request,
        stats.connections
    );
}

// ---------------------------------------------------------------------------------------------
// Persistent faults during a restore
// ---------------------------------------------------------------------------------------------

/// Files below `target` under their final names (not the `.cairn-partial` temporaries), by
/// relative path, and the temporaries left behind.
fn final_and_partial(target: &Path) -> (BTreeMap<PathBuf, Vec<u8>>, Vec<PathBuf>) {
    let mut finals = BTreeMap::new();
    let mut partials = Vec::new();
    for path in files_below(target) {
        let relative = path.strip_prefix(target).expect("below").to_owned();
        let temporary = path
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with(".cairn-partial"));
        if temporary {
            partials.push(relative);
        } else {
            finals.insert(relative, std::fs::read(&path).expect("read restored file"));
        }
    }
    (finals, partials)
}

/// A restore through `proxy` (already planned) into a fresh target: the run, its duration, the
/// files under their final names (each asserted to be the complete original) and the
/// temporaries left behind.
fn restore_through(
    repo: &Repo<'_>,
    proxy: &FaultProxy,
    source: &Path,
    target: &Path,
) -> (Run, Duration, usize, usize) {
    let spec = format!("latest:{}", text(source));
    let (run, took) = repo.via(
        proxy,
        &SHORT_FUSE,
        &["restore", &spec, "--target", text(target)],
    );
    let run = run.failed();
    let (finals, partials) = final_and_partial(target);
    for (relative, bytes) in &finals {
        let original = std::fs::read(source.join(relative)).unwrap_or_default();
        assert!(
            *bytes == original,
            "{} stands under its final name but is not the verified original",
            relative.display()
        );
    }
    (run, took, finals.len(), partials.len())
}

/// A repository holding a backup of [`make_source`], and the source.
fn backed_up<'a>(workspace: &'a Workspace, s3: &S3, test: &str) -> (Repo<'a>, PathBuf) {
    let repo = Repo::fresh(workspace, s3, test);
    repo.init();
    let source = make_source(workspace, 400);
    repo.direct(&["backup", text(&source)]).ok();
    (repo, source)
}

/// A restore through a proxy that swallows everything fails cleanly, from the start and in the
/// middle of the download: a non-zero exit in bounded time, an error naming the failed get, and
/// no file under its final name unless it is the verified, complete original.
#[test]
fn restore_through_a_blackhole_fails_cleanly() {
    let Some(s3) = s3_server("restore_through_a_blackhole_fails_cleanly") else {
        return;
    };
    let _serial = lock(&SERIAL);
    let workspace = Workspace::new();
    let (repo, source) = backed_up(&workspace, &s3, "restore-blackhole");
    for (case, trip) in [("from the start", None), ("after 1.5 MB", Some(1_500_000))] {
        let proxy = FaultProxy::start(s3.upstream);
        match trip {
            None => proxy.set_plan(&[(Fault::Blackhole, None)]),
            Some(bytes) => proxy.trip_after(bytes, Fault::Blackhole),
        }
        let target = workspace.path(&format!("restored-{}", trip.unwrap_or(0)));
        let (run, took, verified, partials) = restore_through(&repo, &proxy, &source, &target);
        if trip.is_some() {
            assert!(proxy.tripped(), "the partition happened during the restore");
        }
        drop(proxy);
        let last_line = run.stderr.lines().last().unwrap_or_default().to_owned();
        report(
            &format!("persistent: blackhole {case}"),
            "restore",
            &format!("fails; {verified} files verified, {partials} partials: {last_line}"),
            took,
        );
        assert!(took < Duration::from_secs(30), "took {took:?}");
        assert_eq!(partials, 0, "no temporaries are left behind");
        assert!(
            run.stderr.contains("get config") || run.stderr.contains("get data/"),
            "the error names the failed get and its object:\n{}",
            run.stderr
        );
    }
}

/// Regression (fixed; restore): when the store becomes unreachable in the middle of a restore, every
/// file is reported as "object data blob … is damaged: get data/… failed" — a network failure
/// is presented as repository damage (and the cause, a timeout, is dropped).
#[test]
fn regression_an_unreachable_store_is_not_reported_as_damage() {
    let Some(s3) = s3_server("bug_restore_reports_an_unreachable_store_as_damage") else {
        return;
    };
    let _serial = lock(&SERIAL);
    let workspace = Workspace::new();
    let (repo, source) = backed_up(&workspace, &s3, "restore-damage-wording");
    let proxy = FaultProxy::start(s3.upstream);
    proxy.trip_after(1_500_000, Fault::Blackhole);
    let (run, ..) = restore_through(&repo, &proxy, &source, &workspace.path("restored"));
    assert!(proxy.tripped());
    assert!(
        !run.stderr.contains("damaged"),
        "an unreachable store is reported as damage:\n{}",
        run.stderr
    );
}
