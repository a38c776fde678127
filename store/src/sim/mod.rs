//! A deterministic simulation of the garbage-collection protocol (FORMAT.md section 21, 21.9
//! describes it): an in-memory object store, machines with boots, PID namespaces and pids, and
//! backup, forget and prune clients whose every step is one store request. A seeded scheduler
//! interleaves them, crashes processes, reboots machines, fails requests (before or after the
//! store applied them) and delays clients; the invariants are checked after every step.
//!
//! The liveness rule (when a prune may end another client's session) and the protocol variant are
//! parameters, so the simulation also shows that it catches the old rule and broken protocols.
//!
//! Pure: no I/O, no clock, no threads; a seed replays the same schedule forever.

mod clients;
pub mod store;
pub mod world;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::ops::Range;

use crate::policy::liveness::{self, LocalPlace, PidProbe};

use clients::{Backup, Flow, Forget, Prune};
use store::{Blob, IndexedPack, Marker, Name, Object, Prefix, Reply, Request, Store};
use world::{Machine, Process, Rng};

/// What a liveness rule sees when a prune judges another session.
pub struct Judgement<'a> {
    /// The session's marker.
    pub marker: &'a Marker,
    /// Where the judging prune runs.
    pub local: LocalPlace,
    /// The judging machine's kernel host name.
    pub host_name: &'static str,
    /// Whether the judging installation's local record lists the session.
    pub started_here: bool,
    /// `/proc` in the judging prune's PID namespace.
    pub probe: &'a dyn Fn(u32) -> PidProbe,
}

/// A liveness rule: true when the session's process is proven gone (the prune may end it).
pub type LivenessRule = fn(&Judgement<'_>) -> bool;

/// The rule cairn uses: [`liveness::judge`] (same boot and PID namespace, pid absent or reused;
/// an earlier boot of this machine only with its local record).
pub fn proven_gone(judgement: &Judgement<'_>) -> bool {
    liveness::judge(
        &judgement.marker.place,
        &judgement.local,
        judgement.started_here,
        |pid| (judgement.probe)(pid),
    )
    .is_gone()
}

/// The rule that lost data: the marker's host label equals this machine's host name and its
/// pid is absent in this PID namespace.
pub fn old_host_and_pid_rule(judgement: &Judgement<'_>) -> bool {
    judgement.marker.host == judgement.host_name
        && (judgement.probe)(judgement.marker.place.pid) == PidProbe::Absent
}

/// The protocol the clients follow: the specification, or a deliberately changed variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// FORMAT.md section 21, with the corrections of 21.9: 21.3 step 1 reads the records before
    /// listing S0, step 3 takes back every copy of a blob with no live location, and run g
    /// releases its own record's packs only if no snapshot appeared since its step 2.
    Spec,
    /// Broken: 21.3 step 1 in its first wording, S0 listed before the records are read. A
    /// session that starts after S0 and is in the in-flight list of a record written before
    /// the records are read counts as ended (absent from S0) while it runs.
    SessionsThenRecords,
    /// Broken: 21.3 step 6 in its first wording, record g's packs released by run g whenever
    /// F(g) is empty. A session that commits after step 2, ends, and whose markers a concurrent
    /// prune deletes before S1, is in no list, and its snapshot was not marked.
    ReleaseOwnRecordAtOnce,
    /// Broken: 21.3 step 3 in its first wording, one copy of a blob with no live location taken
    /// back (the first pack found). A concurrent prune that did not read this run's record
    /// deletes that copy, and this run deletes the others.
    ResurrectOneCopy,
    /// Broken: prune releases condemned packs without consulting the in-flight lists.
    ReleaseIgnoringInflight,
    /// Broken: a backup reads the prune records before writing its session marker.
    ListRecordsBeforeMarker,
    /// Safe by 21.4: a backup never rescues (21.2 step 3 is only an optimisation).
    NoRescue,
}

/// What the scheduler varies, and which rule and protocol the clients follow.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// When a prune may end another session.
    pub rule: LivenessRule,
    /// The protocol the clients follow.
    pub protocol: Protocol,
    /// Chance per request (per mille) that it fails, before or after the store applied it.
    pub fail_per_mille: u32,
    /// Chance per scheduling step (per mille) that a running client's process is killed.
    pub crash_per_mille: u32,
    /// Chance per scheduling step (per mille) that a machine reboots.
    pub reboot_per_mille: u32,
    /// Chance per scheduling step (per mille) that a running client is suspended (a stopped
    /// process, a suspended machine) for 20 to 200 steps.
    pub stall_per_mille: u32,
    /// Whether prunes take the lease (21.5). Off, prunes overlap freely: 21.4 must hold without
    /// it.
    pub lease: bool,
    /// The lease's TTL in scheduling steps (the store's clock).
    pub lease_ttl: u64,
    /// Whether a machine's disk image (machine id and cairn's local record included) may be
    /// cloned and booted during the schedule.
    pub clones: bool,
    /// A schedule stops after this many scheduling steps (a guard: schedules end well before).
    pub max_steps: u64,
}

impl Default for Config {
    /// The specification with [`proven_gone`], and every fault but clones.
    fn default() -> Self {
        Self {
            rule: proven_gone,
            protocol: Protocol::Spec,
            fail_per_mille: 15,
            crash_per_mille: 5,
            reboot_per_mille: 3,
            stall_per_mille: 3,
            lease: false,
            lease_ttl: 40,
            clones: false,
            max_steps: 1000,
        }
    }
}

/// An invariant of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invariant {
    /// Every snapshot in the store restores: each blob it references lies in a pack that exists.
    SnapshotRestores,
    /// Every backup that reported success committed a snapshot that is still there (or that a
    /// forget deleted).
    SuccessCommitted,
    /// A running backup never finds a pack it relies on deleted (the pack was condemned after
    /// the backup read the records, so it must stay until the backup ends).
    RunningBackupLostPack,
    /// Each machine cleans up after itself: once every client is done, every PID namespace of
    /// every machine has ended its dead sessions and a prune has run, no session is left unended (but those
    /// of old-format markers, which prove nothing) and, with none of those, no condemned pack
    /// is left.
    MachinesCleanUp,
}

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which one.
    pub invariant: Invariant,
    /// The scheduling step after which it was found.
    pub step: u64,
    /// What broke, naming objects and clients as the trace does.
    pub detail: String,
}

/// Counts over one or many schedules: what they exercised.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Schedules run.
    pub schedules: u64,
    /// Store requests sent.
    pub requests: u64,
    /// Requests that failed.
    pub failed_requests: u64,
    /// Backups that committed a snapshot.
    pub backups_committed: u64,
    /// Backups that failed (a request failed, or a relied pack was gone).
    pub backups_failed: u64,
    /// Processes killed mid-run (crashes and reboots).
    pub crashes: u64,
    /// Machine reboots.
    pub reboots: u64,
    /// Sessions a prune ended because the rule proved their process gone.
    pub sessions_ended_by_prune: u64,
    /// Packs condemned by a written record.
    pub packs_condemned: u64,
    /// Packs resurrected by a written record.
    pub packs_resurrected: u64,
    /// Packs deleted.
    pub packs_deleted: u64,
    /// Backups' relied blobs whose pack a newer record condemned (21.2 step 3).
    pub relied_condemned: u64,
    /// Rescue packs backups wrote.
    pub packs_rescued: u64,
    /// Prunes that ran to their end.
    pub prunes_finished: u64,
    /// Clients suspended for a while.
    pub stalls: u64,
    /// Leases taken over from their holder.
    pub leases_taken_over: u64,
}

impl Stats {
    fn add(&mut self, other: &Self) {
        self.schedules += other.schedules;
        self.requests += other.requests;
        self.failed_requests += other.failed_requests;
        self.backups_committed += other.backups_committed;
        self.backups_failed += other.backups_failed;
        self.crashes += other.crashes;
        self.reboots += other.reboots;
        self.sessions_ended_by_prune += other.sessions_ended_by_prune;
        self.packs_condemned += other.packs_condemned;
        self.packs_resurrected += other.packs_resurrected;
        self.packs_deleted += other.packs_deleted;
        self.relied_condemned += other.relied_condemned;
        self.packs_rescued += other.packs_rescued;
        self.prunes_finished += other.prunes_finished;
        self.stalls += other.stalls;
        self.leases_taken_over += other.leases_taken_over;
    }
}

/// The result of one schedule.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Its seed.
    pub seed: u64,
    /// Scheduling steps taken.
    pub steps: u64,
    /// What it exercised.
    pub stats: Stats,
    /// The first invariant it broke.
    pub violation: Option<Violation>,
}

/// The result of many schedules.
#[derive(Debug, Clone)]
pub struct Exploration {
    /// What they exercised, summed.
    pub stats: Stats,
    /// The first schedule that broke an invariant (the exploration stops there).
    pub failure: Option<Outcome>,
}

/// Runs the schedule of `seed`.
pub fn run(seed: u64, config: &Config) -> Outcome {
    simulate(seed, config, false).0
}

/// Runs the schedule of `seed` and returns its trace too: one line per request and event.
pub fn replay(seed: u64, config: &Config) -> (Outcome, Vec<String>) {
    simulate(seed, config, true)
}

/// Runs the schedules of `seeds` until one breaks an invariant.
pub fn explore(seeds: Range<u64>, config: &Config) -> Exploration {
    let mut stats = Stats::default();
    for seed in seeds {
        let outcome = run(seed, config);
        stats.add(&outcome.stats);
        if outcome.violation.is_some() {
            return Exploration {
                stats,
                failure: Some(outcome),
            };
        }
    }
    Exploration {
        stats,
        failure: None,
    }
}

/// A violation's report: the invariant, the seed, how to replay it, and the schedule's trace
/// (its last `tail` lines).
pub fn report(seed: u64, config: &Config, tail: usize) -> String {
    let (outcome, trace) = replay(seed, config);
    let mut text = String::new();
    match &outcome.violation {
        Some(violation) => {
            let _ = writeln!(
                text,
                "lifecycle simulation: seed {seed} breaks {:?} at step {}: {}",
                violation.invariant, violation.step, violation.detail
            );
        }
        None => {
            let _ = writeln!(
                text,
                "lifecycle simulation: seed {seed} breaks no invariant"
            );
        }
    }
    let _ = writeln!(
        text,
        "replay: CAIRN_SIM_SEED={seed} cargo test -p cairn-store --lib sim::tests::replay_seed \
         -- --nocapture"
    );
    let skip = trace.len().saturating_sub(tail);
    if skip > 0 {
        let _ = writeln!(text, "  ... {skip} earlier lines");
    }
    for line in &trace[skip..] {
        let _ = writeln!(text, "  {line}");
    }
    text
}

/// Host names drawn for machines and `--host` labels: few, so they are shared often.
const HOST_NAMES: [&str; 3] = ["ubuntu", "localhost", "web1"];

/// Blobs the repository's files are made of: few, so backups share many.
const BLOBS: u32 = 10;

/// The simulated world a client steps in: the store, the machines, the generator, and what the
/// invariants need to know.
pub struct World {
    config: Config,
    store: Store,
    machines: Vec<Machine>,
    rng: Rng,
    step: u64,
    next_id: u32,
    stats: Stats,
    /// Snapshots whose backup reported success: (client, snapshot id).
    committed: Vec<(usize, u32)>,
    forgotten: BTreeSet<u32>,
    deleted_packs: BTreeMap<u32, Vec<Blob>>,
    snapshots_dirty: bool,
    violation: Option<Violation>,
    trace: Option<Vec<String>>,
    labels: Vec<String>,
}

impl World {
    fn fresh_id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    /// Sends one request for `client`; it may fail before or after the store applies it.
    fn request(&mut self, client: usize, request: Request) -> Reply {
        self.stats.requests += 1;
        let shown = self.trace.as_ref().map(|_| request.to_string());
        let fails = self.rng.chance(self.config.fail_per_mille);
        let mutates = matches!(
            request,
            Request::Put(..) | Request::Delete(_) | Request::Overwrite(..)
        );
        let reply = if fails && !(mutates && self.rng.chance(500)) {
            Reply::Failed
        } else {
            match &request {
                Request::Put(Name::Snapshot(_), _) => self.snapshots_dirty = true,
                // A forget's delete counts even when its reply is lost.
                Request::Delete(Name::Snapshot(snapshot)) => {
                    self.forgotten.insert(*snapshot);
                }
                Request::Delete(Name::Pack(pack)) => {
                    if let Some(Object::Pack(blobs)) = self.store.peek(Name::Pack(*pack)) {
                        self.deleted_packs.insert(*pack, blobs.clone());
                        self.snapshots_dirty = true;
                    }
                }
                _ => {}
            }
            let reply = self.store.apply(request);
            if fails { Reply::Failed } else { reply }
        };
        if reply == Reply::Failed {
            self.stats.failed_requests += 1;
        }
        if let Some(shown) = shown {
            let answer = match &reply {
                Reply::Done => "ok".to_owned(),
                Reply::Object(_) => "found".to_owned(),
                Reply::Names(names) => {
                    let names: Vec<String> = names.iter().map(ToString::to_string).collect();
                    format!("[{}]", names.join(" "))
                }
                Reply::Exists => "exists".to_owned(),
                Reply::NotFound => "not found".to_owned(),
                Reply::Failed => "FAILED".to_owned(),
            };
            let line = format!(
                "{:>4} {}: {shown} -> {answer}",
                self.step, self.labels[client]
            );
            self.event(line);
        }
        reply
    }

    fn event(&mut self, line: String) {
        if let Some(trace) = &mut self.trace {
            trace.push(line);
        }
    }

    fn violate(&mut self, invariant: Invariant, detail: String) {
        if self.violation.is_none() {
            self.violation = Some(Violation {
                invariant,
                step: self.step,
                detail,
            });
        }
    }

    /// Every snapshot in the store restores.
    fn check_snapshots(&mut self) {
        let held: BTreeSet<Blob> = self
            .store
            .scan(Prefix::Packs)
            .flat_map(|(_, object)| match object {
                Object::Pack(blobs) => blobs.clone(),
                _ => Vec::new(),
            })
            .collect();
        let broken = self
            .store
            .scan(Prefix::Snapshots)
            .find_map(|(name, object)| {
                let Object::Snapshot(blobs) = object else {
                    return None;
                };
                let missing = blobs.iter().find(|blob| !held.contains(blob))?;
                Some((*name, *missing))
            });
        if let Some((name, blob)) = broken {
            let Name::Snapshot(snapshot) = name else {
                unreachable!("a snapshots/ scan holds snapshots")
            };
            let by = self
                .committed
                .iter()
                .find(|(_, committed)| *committed == snapshot)
                .map_or_else(
                    || "a backup whose snapshot write was reported failed".to_owned(),
                    |(client, _)| format!("backup c{client}, which reported success"),
                );
            let holders: Vec<String> = self
                .deleted_packs
                .iter()
                .filter(|(_, blobs)| blobs.contains(&blob))
                .map(|(pack, _)| format!("data/{pack}"))
                .collect();
            self.violate(
                Invariant::SnapshotRestores,
                format!(
                    "{name} (written by {by}) needs blob {blob}, which no existing pack holds \
                     (deleted packs that held it: {})",
                    holders.join(", ")
                ),
            );
        }
    }

    /// Every backup that reported success committed a snapshot that is still there, or that a
    /// forget deleted.
    fn check_committed(&mut self) {
        let lost = self.committed.iter().find(|(_, snapshot)| {
            self.store.peek(Name::Snapshot(*snapshot)).is_none()
                && !self.forgotten.contains(snapshot)
        });
        if let Some((client, snapshot)) = lost.copied() {
            self.violate(
                Invariant::SuccessCommitted,
                format!("backup c{client} reported success, and snapshots/{snapshot} is gone"),
            );
        }
    }
}

/// A client's state machine.
enum Role {
    Backup(Box<Backup>),
    Forget(Forget),
    Prune(Box<Prune>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Waiting,
    Running(Process),
    Over,
}

struct Client {
    role: Role,
    machine: usize,
    namespace: usize,
    weight: usize,
    /// The client starts no earlier than this step (late prunes find the backups ended).
    not_before: u64,
    /// A suspended client does nothing until this step.
    stalled_until: u64,
    life: Life,
}

fn pick_blobs(rng: &mut Rng, count: usize) -> Vec<Blob> {
    let mut blobs = Vec::new();
    while blobs.len() < count {
        let blob = u32::try_from(rng.below(BLOBS as usize)).expect("a small blob number");
        if !blobs.contains(&blob) {
            blobs.push(blob);
        }
    }
    blobs
}

/// The repository before the schedule: a few committed snapshots, their packs (two blobs each,
/// deduplicated) and one index object per snapshot. No session is left.
fn seed_history(world: &mut World) {
    let mut held: BTreeSet<Blob> = BTreeSet::new();
    for _ in 0..=world.rng.below(3) {
        let count = 3 + world.rng.below(2);
        let blobs = pick_blobs(&mut world.rng, count);
        let fresh: Vec<Blob> = blobs
            .iter()
            .filter(|blob| !held.contains(blob))
            .copied()
            .collect();
        let mut packs = Vec::new();
        for chunk in fresh.chunks(2) {
            let pack = world.fresh_id();
            world
                .store
                .seed(Name::Pack(pack), Object::Pack(chunk.to_vec()));
            packs.push(IndexedPack {
                pack,
                blobs: chunk.to_vec(),
            });
        }
        held.extend(fresh);
        if !packs.is_empty() {
            let index = world.fresh_id();
            world.store.seed(Name::Index(index), Object::Index(packs));
        }
        let snapshot = world.fresh_id();
        world
            .store
            .seed(Name::Snapshot(snapshot), Object::Snapshot(blobs));
    }
}

fn make_world(seed: u64, config: &Config, trace: bool) -> (World, Vec<Client>, Option<u64>) {
    let mut world = World {
        config: *config,
        store: Store::default(),
        machines: Vec::new(),
        rng: Rng::new(seed),
        step: 0,
        next_id: 0,
        stats: Stats {
            schedules: 1,
            ..Stats::default()
        },
        committed: Vec::new(),
        forgotten: BTreeSet::new(),
        deleted_packs: BTreeMap::new(),
        snapshots_dirty: false,
        violation: None,
        trace: trace.then(Vec::new),
        labels: Vec::new(),
    };
    for _ in 0..=world.rng.below(3) {
        let hostname = HOST_NAMES[world.rng.below(HOST_NAMES.len())];
        let containers = world.rng.below(3);
        let machine = Machine::new(hostname, containers, &mut world.rng, 0);
        world.machines.push(machine);
    }
    let clone_at = if config.clones {
        let mut clone = world.machines[0].clone_image(&mut world.rng, 0);
        clone.up = false;
        world.machines.push(clone);
        Some(1 + world.rng.below(60) as u64)
    } else {
        None
    };
    seed_history(&mut world);

    let mut clients = Vec::new();
    let backups = 2 + world.rng.below(3);
    let forgets = world.rng.below(3);
    let prunes = 1 + world.rng.below(3);
    for number in 0..backups + forgets + prunes {
        let machine = world.rng.below(world.machines.len());
        let namespace = world.rng.below(world.machines[machine].namespaces.len());
        let role = if number < backups {
            let host = if world.rng.chance(200) {
                HOST_NAMES[world.rng.below(HOST_NAMES.len())]
            } else {
                world.machines[machine].hostname
            };
            let old_marker = world.rng.chance(100);
            let count = 2 + world.rng.below(3);
            let wants = pick_blobs(&mut world.rng, count);
            let session = world.fresh_id();
            let mut backup = Backup::new(session, host, old_marker, wants);
            backup.start(config.protocol);
            Role::Backup(Box::new(backup))
        } else if number < backups + forgets {
            Role::Forget(Forget::default())
        } else {
            Role::Prune(Box::new(Prune::new(config.protocol, config.lease)))
        };
        if trace {
            let kind = match &role {
                Role::Backup(_) => "backup",
                Role::Forget(_) => "forget",
                Role::Prune(_) => "prune",
            };
            let place = &world.machines[machine];
            world.labels.push(format!(
                "c{number} {kind} m{machine}({})/ns{namespace}",
                place.hostname
            ));
        }
        let not_before = if matches!(role, Role::Prune(_)) && world.rng.chance(500) {
            20 + world.rng.below(80) as u64
        } else {
            0
        };
        clients.push(Client {
            not_before,
            stalled_until: 0,
            role,
            machine,
            namespace,
            weight: 1 + world.rng.below(4),
            life: Life::Waiting,
        });
    }
    if trace {
        let machines: Vec<String> = world
            .machines
            .iter()
            .enumerate()
            .map(|(number, machine)| {
                format!(
                    "m{number} host {:?} machine-id {:02x} boot {:02x} namespaces {:?}{}",
                    machine.hostname,
                    machine.machine_id[0],
                    machine.boot_id[0],
                    machine
                        .namespaces
                        .iter()
                        .map(|space| space.inode)
                        .collect::<Vec<_>>(),
                    if machine.up {
                        ""
                    } else {
                        " (a clone of m0, not booted yet)"
                    }
                )
            })
            .collect();
        for line in machines {
            world.event(line);
        }
    }
    (world, clients, clone_at)
}

/// The lease holders' helper threads: each running prune that is not suspended rewrites its
/// lease every third of the TTL, if the lease is still its own.
fn renew_leases(world: &mut World, clients: &mut [Client], now: u64) {
    if !world.config.lease {
        return;
    }
    for (number, client) in clients.iter_mut().enumerate() {
        let (Role::Prune(prune), Life::Running(_)) = (&mut client.role, client.life) else {
            continue;
        };
        if client.stalled_until > now {
            continue;
        }
        let Some(token) = prune.renewal_due(now, world.config.lease_ttl) else {
            continue;
        };
        prune.renewed(now);
        if let Reply::Object(Object::Lease {
            token: holder_token,
            holder,
            ..
        }) = world.request(number, Request::Get(Name::Lease))
            && holder_token == token
        {
            let lease = Object::Lease {
                token,
                holder,
                written_at: now,
            };
            world.request(number, Request::Overwrite(Name::Lease, lease));
        }
    }
}

/// The epilogue: with no faults, every namespace of every machine ends its dead sessions (as
/// its next backup, prune or check would), then one prune runs; then every session must have
/// ended and every condemned pack be gone.
fn clean_up_everywhere(world: &mut World, first_number: usize) {
    world.config.fail_per_mille = 0;
    world.event("     epilogue: every namespace ends its dead sessions, then a prune".to_owned());
    let mut runs: Vec<(usize, usize, Prune)> = Vec::new();
    for machine in 0..world.machines.len() {
        for namespace in 0..world.machines[machine].namespaces.len() {
            runs.push((machine, namespace, Prune::sweep()));
        }
    }
    runs.push((0, 0, Prune::new(world.config.protocol, false)));
    for (offset, (machine, namespace, mut prune)) in runs.into_iter().enumerate() {
        let number = first_number + offset;
        let process = world.machines[machine].spawn(machine, namespace, world.step);
        if world.trace.is_some() {
            let hostname = world.machines[machine].hostname;
            world.labels.push(format!(
                "c{number} prune m{machine}({hostname})/ns{namespace}"
            ));
        }
        while prune.step(world, number, &process) == Flow::Continue {
            world.step += 1;
        }
        world.machines[machine].end(&process);
        world.check_snapshots();
        if world.violation.is_some() {
            return;
        }
    }
    let mut started: BTreeMap<u32, Marker> = BTreeMap::new();
    let mut ended: BTreeSet<u32> = BTreeSet::new();
    let mut records: BTreeMap<u64, (Vec<u32>, Vec<u32>)> = BTreeMap::new();
    for (name, object) in world
        .store
        .scan(Prefix::Sessions)
        .chain(world.store.scan(Prefix::Prune))
    {
        match (name, object) {
            (Name::Session(session), Object::Session(marker)) => {
                started.insert(*session, *marker);
            }
            (Name::SessionEnd(session), _) => {
                ended.insert(*session);
            }
            (
                Name::Record(generation),
                Object::Record {
                    condemned,
                    resurrected,
                },
            ) => {
                records.insert(*generation, (condemned.clone(), resurrected.clone()));
            }
            _ => {}
        }
    }
    let unended: Vec<(u32, Marker)> = started
        .into_iter()
        .filter(|(session, _)| !ended.contains(session))
        .collect();
    if let Some((session, marker)) = unended
        .iter()
        .find(|(_, marker)| marker.place.boot_id != [0; 16])
    {
        world.violate(
            Invariant::MachinesCleanUp,
            format!(
                "sessions/{session} (host {:?}, pid {}) is still unended after every machine pruned",
                marker.host, marker.place.pid
            ),
        );
        return;
    }
    if !unended.is_empty() {
        return;
    }
    let mut condemned: BTreeSet<u32> = BTreeSet::new();
    for (condemns, resurrects) in records.values() {
        condemned.extend(condemns);
        for pack in resurrects {
            condemned.remove(pack);
        }
    }
    if let Some(pack) = condemned
        .iter()
        .find(|pack| world.store.peek(Name::Pack(**pack)).is_some())
    {
        world.violate(
            Invariant::MachinesCleanUp,
            format!("data/{pack} is still condemned and stored after every machine pruned"),
        );
    }
}

fn simulate(seed: u64, config: &Config, trace: bool) -> (Outcome, Vec<String>) {
    let (mut world, mut clients, mut clone_at) = make_world(seed, config, trace);
    while world.step < config.max_steps && world.violation.is_none() {
        world.step += 1;
        let now = world.step;
        if clone_at == Some(now) {
            clone_at = None;
            // The clone takes m0's disk as it is now: its local records too.
            let last = world.machines.len() - 1;
            world.machines[last] = world.machines[0].clone_image(&mut world.rng, now);
            world.event(format!("{now:>4} m{last} boots: a clone of m0's disk"));
            continue;
        }
        if world.rng.chance(config.reboot_per_mille) {
            let machine = world.rng.below(world.machines.len());
            if world.machines[machine].up {
                world.machines[machine].reboot(&mut world.rng, now);
                world.stats.reboots += 1;
                for client in &mut clients {
                    if client.machine == machine && matches!(client.life, Life::Running(_)) {
                        client.life = Life::Over;
                        world.stats.crashes += 1;
                    }
                }
                world.event(format!("{now:>4} m{machine} reboots"));
                continue;
            }
        }
        if world.rng.chance(config.crash_per_mille) {
            let running: Vec<usize> = (0..clients.len())
                .filter(|number| matches!(clients[*number].life, Life::Running(_)))
                .collect();
            if !running.is_empty() {
                let number = running[world.rng.below(running.len())];
                if let Life::Running(process) = clients[number].life {
                    world.machines[process.machine].end(&process);
                }
                clients[number].life = Life::Over;
                world.stats.crashes += 1;
                world.event(format!("{now:>4} c{number} is killed"));
                continue;
            }
        }
        if world.rng.chance(config.stall_per_mille) {
            let running: Vec<usize> = (0..clients.len())
                .filter(|number| matches!(clients[*number].life, Life::Running(_)))
                .collect();
            if !running.is_empty() {
                let number = running[world.rng.below(running.len())];
                let pause = 20 + world.rng.below(180) as u64;
                clients[number].stalled_until = now + pause;
                world.stats.stalls += 1;
                world.event(format!("{now:>4} c{number} is suspended for {pause} steps"));
                continue;
            }
        }
        renew_leases(&mut world, &mut clients, now);
        let ready: Vec<usize> = (0..clients.len())
            .filter(|number| {
                let client = &clients[*number];
                match client.life {
                    Life::Waiting => world.machines[client.machine].up && client.not_before <= now,
                    Life::Running(_) => client.stalled_until <= now,
                    Life::Over => false,
                }
            })
            .collect();
        if ready.is_empty() {
            // Waiting for a late client or a clone to boot; time passes.
            if clients.iter().all(|client| client.life == Life::Over) {
                break;
            }
            continue;
        }
        let total: usize = ready.iter().map(|number| clients[*number].weight).sum();
        let mut pick = world.rng.below(total);
        let mut number = ready[0];
        for candidate in &ready {
            if pick < clients[*candidate].weight {
                number = *candidate;
                break;
            }
            pick -= clients[*candidate].weight;
        }
        let client = &mut clients[number];
        let process = match client.life {
            Life::Waiting => {
                let process =
                    world.machines[client.machine].spawn(client.machine, client.namespace, now);
                client.life = Life::Running(process);
                let line = format!("{now:>4} c{number} starts as pid {}", process.pid);
                world.event(line);
                continue;
            }
            Life::Running(process) => process,
            Life::Over => unreachable!("only ready clients are picked"),
        };
        let flow = match &mut client.role {
            Role::Backup(backup) => backup.step(&mut world, number, &process),
            Role::Forget(forget) => forget.step(&mut world, number),
            Role::Prune(prune) => prune.step(&mut world, number, &process),
        };
        if flow == Flow::Exit {
            world.machines[process.machine].end(&process);
            client.life = Life::Over;
        }
        if world.snapshots_dirty {
            world.snapshots_dirty = false;
            world.check_snapshots();
        }
    }
    world.check_snapshots();
    world.check_committed();
    let all_over = clients.iter().all(|client| client.life == Life::Over);
    if world.violation.is_none() && all_over && !config.clones {
        clean_up_everywhere(&mut world, clients.len());
    }
    let outcome = Outcome {
        seed,
        steps: world.step,
        stats: world.stats,
        violation: world.violation.clone(),
    };
    (outcome, world.trace.unwrap_or_default())
}
