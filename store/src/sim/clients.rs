//! The clients: backups, forgets and prunes as state machines. Each call of `step` sends exactly
//! one store request (work without a request happens in the same call, before it), so the
//! scheduler interleaves clients at the granularity of single requests. The steps follow FORMAT.md
//! 21.2 (backup) and 21.3 (prune); the comments give the step numbers.

use std::collections::{BTreeMap, BTreeSet};

use super::store::SessionId;
use super::store::{Blob, EndedBy, IndexedPack, Marker, Name, Object, Prefix, Reply, Request};
use super::world::Process;
use super::{Invariant, Judgement, Protocol, World};

/// What a step left to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// The client has more steps.
    Continue,
    /// The client is done (its process exits).
    Exit,
}

/// The records a client read: generation to (condemned, resurrected).
type Records = BTreeMap<u64, (Vec<u32>, Vec<u32>)>;

/// Packs condemned by `records` (condemned by some record and not resurrected by a later one),
/// with the generation that condemned them last.
fn condemned_by(records: &Records) -> BTreeMap<u32, u64> {
    let mut condemned = BTreeMap::new();
    for (generation, (condemns, resurrects)) in records {
        for pack in condemns {
            condemned.insert(*pack, *generation);
        }
        for pack in resurrects {
            condemned.remove(pack);
        }
    }
    condemned
}

fn highest(records: &Records) -> u64 {
    records.keys().next_back().copied().unwrap_or(0)
}

/// Queues gets of the records a `prune/` listing shows that `records` lacks.
fn new_records(names: &[Name], records: &Records) -> Vec<Name> {
    names
        .iter()
        .filter(
            |name| matches!(name, Name::Record(generation) if !records.contains_key(generation)),
        )
        .rev()
        .copied()
        .collect()
}

/// A backup (FORMAT.md 21.2).
#[derive(Debug, Clone)]
pub struct Backup {
    session: SessionId,
    host: &'static str,
    old_marker: bool,
    wants: Vec<Blob>,
    phase: BackupPhase,
    queue: Vec<Name>,
    records: Records,
    generation_at_start: u64,
    index: BTreeMap<Blob, Vec<u32>>,
    relied: BTreeMap<Blob, u32>,
    to_upload: Vec<Vec<Blob>>,
    own_packs: Vec<IndexedPack>,
    rescue: Vec<(u32, Vec<Blob>)>,
    copy: Option<Vec<Blob>>,
    rescued: Vec<IndexedPack>,
    marker_written: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BackupPhase {
    Marker,
    ListRecords { again: bool },
    GetRecords { again: bool },
    ListIndex,
    GetIndex,
    Upload,
    WriteIndex,
    Rescue,
    RescueIndex,
    Snapshot,
    End,
}

impl Backup {
    /// A backup of `wants` in session `session`, labelled `host`; `old_marker` writes a marker in
    /// the old format (host and pid only).
    pub fn new(session: SessionId, host: &'static str, old_marker: bool, wants: Vec<Blob>) -> Self {
        Self {
            session,
            host,
            old_marker,
            wants,
            phase: BackupPhase::Marker,
            queue: Vec::new(),
            records: Records::new(),
            generation_at_start: 0,
            index: BTreeMap::new(),
            relied: BTreeMap::new(),
            to_upload: Vec::new(),
            own_packs: Vec::new(),
            rescue: Vec::new(),
            copy: None,
            rescued: Vec::new(),
            marker_written: false,
        }
    }

    /// The first phase, which depends on the protocol variant.
    pub fn start(&mut self, protocol: Protocol) {
        if protocol == Protocol::ListRecordsBeforeMarker {
            self.phase = BackupPhase::ListRecords { again: false };
        }
    }

    /// One request.
    #[allow(clippy::too_many_lines)] // one protocol, step by step, in FORMAT.md order
    pub fn step(&mut self, world: &mut World, client: usize, process: &Process) -> Flow {
        loop {
            match self.phase {
                // 21.2 step 1: the marker (create-only), then the records.
                BackupPhase::Marker => {
                    let machine = &mut world.machines[process.machine];
                    let mut place = machine.place(process);
                    if self.old_marker {
                        place = crate::policy::liveness::ProcessPlace {
                            pid: process.pid,
                            ..Default::default()
                        };
                    } else {
                        machine.namespaces[process.namespace]
                            .local_record
                            .insert(self.session);
                    }
                    let marker = Marker {
                        host: self.host,
                        place,
                    };
                    let request =
                        Request::Put(Name::Session(self.session), Object::Session(marker));
                    if world.request(client, request) != Reply::Done {
                        return self.abort(world);
                    }
                    self.marker_written = true;
                    self.phase = if world.config.protocol == Protocol::ListRecordsBeforeMarker {
                        BackupPhase::ListIndex
                    } else {
                        BackupPhase::ListRecords { again: false }
                    };
                    return Flow::Continue;
                }
                BackupPhase::ListRecords { again } => {
                    let Reply::Names(names) = world.request(client, Request::List(Prefix::Prune))
                    else {
                        return self.abort(world);
                    };
                    self.queue = new_records(&names, &self.records);
                    self.phase = BackupPhase::GetRecords { again };
                    return Flow::Continue;
                }
                BackupPhase::GetRecords { again } => {
                    if let Some(name) = self.queue.pop() {
                        let Name::Record(generation) = name else {
                            unreachable!("only records are queued")
                        };
                        match world.request(client, Request::Get(name)) {
                            Reply::Object(Object::Record {
                                condemned,
                                resurrected,
                            }) => {
                                self.records.insert(generation, (condemned, resurrected));
                            }
                            Reply::NotFound => {}
                            _ => return self.abort(world),
                        }
                        return Flow::Continue;
                    }
                    if again {
                        self.plan_rescue(world);
                        self.phase = BackupPhase::Rescue;
                    } else {
                        // G: the highest generation seen after the marker.
                        self.generation_at_start = highest(&self.records);
                        self.phase = if world.config.protocol == Protocol::ListRecordsBeforeMarker {
                            BackupPhase::Marker
                        } else {
                            BackupPhase::ListIndex
                        };
                    }
                }
                BackupPhase::ListIndex => {
                    let Reply::Names(names) = world.request(client, Request::List(Prefix::Indexes))
                    else {
                        return self.abort(world);
                    };
                    self.queue = names.into_iter().rev().collect();
                    self.phase = BackupPhase::GetIndex;
                    return Flow::Continue;
                }
                BackupPhase::GetIndex => {
                    if let Some(name) = self.queue.pop() {
                        match world.request(client, Request::Get(name)) {
                            Reply::Object(Object::Index(packs)) => {
                                for pack in packs {
                                    for blob in pack.blobs {
                                        self.index.entry(blob).or_default().push(pack.pack);
                                    }
                                }
                            }
                            // Superseded and deleted by a prune since the listing: the index
                            // that replaced it lists the same live packs.
                            Reply::NotFound => {}
                            _ => return self.abort(world),
                        }
                        return Flow::Continue;
                    }
                    self.deduplicate();
                    self.phase = BackupPhase::Upload;
                }
                // 21.2 step 2: new packs for the blobs no pack outside the condemned ones holds.
                BackupPhase::Upload => {
                    let Some(blobs) = self.to_upload.pop() else {
                        self.phase = BackupPhase::WriteIndex;
                        continue;
                    };
                    let pack = world.fresh_id();
                    let request = Request::Put(Name::Pack(pack), Object::Pack(blobs.clone()));
                    if world.request(client, request) != Reply::Done {
                        return self.abort(world);
                    }
                    for blob in &blobs {
                        self.relied.insert(*blob, pack);
                    }
                    self.own_packs.push(IndexedPack { pack, blobs });
                    return Flow::Continue;
                }
                BackupPhase::WriteIndex => {
                    if !self.own_packs.is_empty() {
                        let index = world.fresh_id();
                        let request =
                            Request::Put(Name::Index(index), Object::Index(self.own_packs.clone()));
                        if world.request(client, request) != Reply::Done {
                            return self.abort(world);
                        }
                        self.phase = BackupPhase::ListRecords { again: true };
                        return Flow::Continue;
                    }
                    self.phase = BackupPhase::ListRecords { again: true };
                }
                // 21.2 step 3: rescue what a record newer than G condemned.
                BackupPhase::Rescue => {
                    if let Some(blobs) = self.copy.take() {
                        let pack = world.fresh_id();
                        let request = Request::Put(Name::Pack(pack), Object::Pack(blobs.clone()));
                        if world.request(client, request) != Reply::Done {
                            return self.abort(world);
                        }
                        world.stats.packs_rescued += 1;
                        for blob in &blobs {
                            self.relied.insert(*blob, pack);
                        }
                        self.rescued.push(IndexedPack { pack, blobs });
                        return Flow::Continue;
                    }
                    let Some((pack, blobs)) = self.rescue.pop() else {
                        self.phase = BackupPhase::RescueIndex;
                        continue;
                    };
                    match world.request(client, Request::Get(Name::Pack(pack))) {
                        Reply::Object(Object::Pack(held)) => {
                            assert!(
                                blobs.iter().all(|blob| held.contains(blob)),
                                "a pack holds what its index says"
                            );
                            self.copy = Some(blobs);
                        }
                        Reply::NotFound => {
                            world.violate(
                                Invariant::RunningBackupLostPack,
                                format!(
                                    "backup c{client} (session {}) relies on data/{pack}, which a \
                                     prune deleted while the backup ran",
                                    self.session
                                ),
                            );
                            return self.abort(world);
                        }
                        _ => return self.abort(world),
                    }
                    return Flow::Continue;
                }
                BackupPhase::RescueIndex => {
                    if !self.rescued.is_empty() {
                        let index = world.fresh_id();
                        let request =
                            Request::Put(Name::Index(index), Object::Index(self.rescued.clone()));
                        if world.request(client, request) != Reply::Done {
                            return self.abort(world);
                        }
                        self.phase = BackupPhase::Snapshot;
                        return Flow::Continue;
                    }
                    self.phase = BackupPhase::Snapshot;
                }
                // 21.2 step 4: the commit point.
                BackupPhase::Snapshot => {
                    let snapshot = world.fresh_id();
                    let request = Request::Put(
                        Name::Snapshot(snapshot),
                        Object::Snapshot(self.wants.clone()),
                    );
                    if world.request(client, request) != Reply::Done {
                        return self.abort(world);
                    }
                    world.committed.push((client, snapshot));
                    world.stats.backups_committed += 1;
                    self.phase = BackupPhase::End;
                    return Flow::Continue;
                }
                // 21.2 step 5: the end marker, best effort.
                BackupPhase::End => {
                    let request = Request::Put(
                        Name::SessionEnd(self.session),
                        Object::SessionEnd(EndedBy::Session),
                    );
                    world.request(client, request);
                    return Flow::Exit;
                }
            }
        }
    }

    /// 21.2 step 2: rely on packs not condemned as of G; the rest is uploaded again.
    fn deduplicate(&mut self) {
        let condemned = condemned_by(&self.records);
        let mut fresh = Vec::new();
        for blob in &self.wants {
            let live = self
                .index
                .get(blob)
                .and_then(|packs| packs.iter().find(|pack| !condemned.contains_key(pack)));
            match live {
                Some(pack) => {
                    self.relied.insert(*blob, *pack);
                }
                None => fresh.push(*blob),
            }
        }
        self.to_upload = fresh.chunks(2).map(<[Blob]>::to_vec).collect();
    }

    /// 21.2 step 3: the relied packs a record newer than G condemned. A blob another live pack
    /// holds moves there; the others are copied.
    fn plan_rescue(&mut self, world: &mut World) {
        let condemned = condemned_by(&self.records);
        let newly = |pack: &u32| {
            condemned
                .get(pack)
                .is_some_and(|generation| *generation > self.generation_at_start)
        };
        let mut copies: BTreeMap<u32, Vec<Blob>> = BTreeMap::new();
        let relied: Vec<(Blob, u32)> = self.relied.iter().map(|(b, p)| (*b, *p)).collect();
        for (blob, pack) in relied {
            if !newly(&pack) {
                continue;
            }
            world.stats.relied_condemned += 1;
            if world.config.protocol == Protocol::NoRescue {
                continue;
            }
            let elsewhere = self.index.get(&blob).and_then(|packs| {
                packs
                    .iter()
                    .find(|other| **other != pack && !condemned.contains_key(other))
            });
            match elsewhere {
                Some(other) => {
                    self.relied.insert(blob, *other);
                }
                None => copies.entry(pack).or_default().push(blob),
            }
        }
        self.rescue = copies.into_iter().collect();
    }

    /// A failed request: the backup fails, and writes its end marker or not (best effort).
    fn abort(&mut self, world: &mut World) -> Flow {
        world.stats.backups_failed += 1;
        if self.marker_written && world.rng.chance(500) {
            self.phase = BackupPhase::End;
            Flow::Continue
        } else {
            Flow::Exit
        }
    }
}

/// A forget: deletes one snapshot object.
#[derive(Debug, Clone, Default)]
pub struct Forget {
    chosen: Option<u32>,
}

impl Forget {
    /// One request.
    pub fn step(&mut self, world: &mut World, client: usize) -> Flow {
        if let Some(snapshot) = self.chosen {
            world.request(client, Request::Delete(Name::Snapshot(snapshot)));
            return Flow::Exit;
        }
        let Reply::Names(names) = world.request(client, Request::List(Prefix::Snapshots)) else {
            return Flow::Exit;
        };
        if names.is_empty() {
            return Flow::Exit;
        }
        let Name::Snapshot(snapshot) = names[world.rng.below(names.len())] else {
            unreachable!("a snapshots/ listing holds snapshots")
        };
        self.chosen = Some(snapshot);
        Flow::Continue
    }
}

/// What S0 or S1 says of a session.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    ended: bool,
    marker: Option<Marker>,
}

fn sessions_from(names: &[Name]) -> BTreeMap<SessionId, Seen> {
    let mut sessions: BTreeMap<SessionId, Seen> = BTreeMap::new();
    for name in names {
        match name {
            Name::Session(session) => {
                sessions.entry(*session).or_default();
            }
            Name::SessionEnd(session) => sessions.entry(*session).or_default().ended = true,
            _ => {}
        }
    }
    sessions
}

/// A prune run (FORMAT.md 21.3). Prunes may overlap: the lease is an optimisation (21.4).
#[derive(Debug, Clone, Default)]
pub struct Prune {
    phase: PrunePhase,
    first: PrunePhase,
    lease_token: Option<u32>,
    renewed_at: u64,
    releasing: bool,
    sweep_only: bool,
    queue: Vec<Name>,
    sessions_at_start: BTreeMap<SessionId, Seen>,
    to_judge: Vec<SessionId>,
    records: Records,
    inflight: BTreeMap<u64, Vec<SessionId>>,
    generation: u64,
    marked: BTreeSet<Name>,
    referenced: BTreeSet<Blob>,
    index_names: Vec<Name>,
    indexed: Vec<IndexedPack>,
    existing: BTreeSet<u32>,
    chosen: BTreeMap<Blob, u32>,
    placed_live: BTreeSet<Blob>,
    live: BTreeSet<u32>,
    resurrected: Vec<IndexedPack>,
    orphans: Vec<u32>,
    condemned: Vec<u32>,
    repack: Vec<(u32, Vec<Blob>)>,
    copy: Option<Vec<Blob>>,
    copies: Vec<IndexedPack>,
    earlier_releasable: Vec<u32>,
    deletable: Vec<u32>,
    rewrite: bool,
    removable: Vec<SessionId>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum PrunePhase {
    TakeLease {
        attempt: u8,
    },
    CheckLease {
        attempt: u8,
    },
    DeleteLease,
    ReleaseLease,
    DeleteOwnLease,
    #[default]
    ListSessions,
    GetMarkers,
    EndDead,
    ListRecords,
    GetRecords,
    ListSnapshots,
    GetSnapshots,
    ListIndex,
    GetIndex,
    ListPacks,
    Search,
    Repack,
    RepackIndex,
    Record,
    ListSessionsAgain,
    Inflight,
    ListSnapshotsAgain,
    Index,
    DeleteIndex,
    DeletePacks,
    DeleteMarkers,
}

impl Prune {
    /// A prune run. Step 1 reads the records and in-flight lists first and lists S0 after them
    /// (FORMAT.md 21.9 says why); [`Protocol::SessionsThenRecords`] lists S0 first.
    /// With `lease`, the run first takes the prune lease (21.5) and gives it back at its end.
    pub fn new(protocol: Protocol, lease: bool) -> Self {
        let first = if protocol == Protocol::SessionsThenRecords {
            PrunePhase::ListSessions
        } else {
            PrunePhase::ListRecords
        };
        Self {
            phase: if lease {
                PrunePhase::TakeLease { attempt: 0 }
            } else {
                first
            },
            first,
            ..Self::default()
        }
    }

    /// Only 21.3 step 1's session part: list S0, end the sessions the rule proves gone, stop
    /// (each machine cleaning up after itself, as a backup or check does at its start).
    pub fn sweep() -> Self {
        Self {
            phase: PrunePhase::ListSessions,
            sweep_only: true,
            ..Self::default()
        }
    }

    /// The lease token this run holds, if it holds one and its renewal is due at `now` (a
    /// helper thread renews every third of the TTL while the run is not suspended).
    pub fn renewal_due(&self, now: u64, ttl: u64) -> Option<u32> {
        self.lease_token
            .filter(|_| now >= self.renewed_at + (ttl / 3).max(1))
    }

    /// Notes a renewal at `now`.
    pub fn renewed(&mut self, now: u64) {
        self.renewed_at = now;
    }

    /// One request.
    pub fn step(&mut self, world: &mut World, client: usize, process: &Process) -> Flow {
        let flow = self.protocol_step(world, client, process);
        if flow == Flow::Exit && self.lease_token.is_some() && !self.releasing {
            // Done or failed: give the lease back (21.5), as `with_prune_lease` does.
            self.releasing = true;
            self.phase = PrunePhase::ReleaseLease;
            return Flow::Continue;
        }
        flow
    }

    fn lease_step(&mut self, world: &mut World, client: usize, process: &Process) -> Flow {
        let token = u32::try_from(client).expect("few clients") + 1;
        match self.phase {
            PrunePhase::TakeLease { attempt } => {
                let machine = &world.machines[process.machine];
                let lease = Object::Lease {
                    token,
                    holder: Marker {
                        host: machine.hostname,
                        place: machine.place(process),
                    },
                    written_at: world.step,
                };
                match world.request(client, Request::Put(Name::Lease, lease)) {
                    Reply::Done => {
                        self.lease_token = Some(token);
                        self.renewed_at = world.step;
                        self.phase = self.first;
                        Flow::Continue
                    }
                    Reply::Exists => {
                        self.phase = PrunePhase::CheckLease { attempt };
                        Flow::Continue
                    }
                    _ => Flow::Exit,
                }
            }
            // Stale: the rule proves the holder gone, or the store's clock says it was not
            // renewed for the TTL.
            PrunePhase::CheckLease { attempt } => {
                match world.request(client, Request::Get(Name::Lease)) {
                    Reply::Object(Object::Lease {
                        holder, written_at, ..
                    }) => {
                        let machine = &world.machines[process.machine];
                        let probe = |pid| machine.probe(process.namespace, pid);
                        let judgement = Judgement {
                            marker: &holder,
                            local: machine.local(process.namespace),
                            host_name: machine.hostname,
                            started_here: false,
                            probe: &probe,
                        };
                        let stale = (world.config.rule)(&judgement)
                            || world.step > written_at + world.config.lease_ttl;
                        if stale && attempt == 0 {
                            self.phase = PrunePhase::DeleteLease;
                            Flow::Continue
                        } else {
                            Flow::Exit
                        }
                    }
                    Reply::NotFound if attempt == 0 => {
                        self.phase = PrunePhase::TakeLease { attempt: 1 };
                        Flow::Continue
                    }
                    _ => Flow::Exit,
                }
            }
            PrunePhase::DeleteLease => {
                if world.request(client, Request::Delete(Name::Lease)) != Reply::Done {
                    return Flow::Exit;
                }
                world.stats.leases_taken_over += 1;
                self.phase = PrunePhase::TakeLease { attempt: 1 };
                Flow::Continue
            }
            PrunePhase::ReleaseLease => match world.request(client, Request::Get(Name::Lease)) {
                Reply::Object(Object::Lease { token: holder, .. }) if holder == token => {
                    self.phase = PrunePhase::DeleteOwnLease;
                    Flow::Continue
                }
                _ => Flow::Exit,
            },
            PrunePhase::DeleteOwnLease => {
                world.request(client, Request::Delete(Name::Lease));
                Flow::Exit
            }
            _ => unreachable!("only lease phases"),
        }
    }

    #[allow(clippy::too_many_lines)] // one protocol, step by step, in FORMAT.md order
    fn protocol_step(&mut self, world: &mut World, client: usize, process: &Process) -> Flow {
        loop {
            match self.phase {
                PrunePhase::TakeLease { .. }
                | PrunePhase::CheckLease { .. }
                | PrunePhase::DeleteLease
                | PrunePhase::ReleaseLease
                | PrunePhase::DeleteOwnLease => return self.lease_step(world, client, process),
                // 21.3 step 1: S0 (after the records), then end the sessions whose process is
                // proven gone.
                PrunePhase::ListSessions => {
                    let Reply::Names(names) =
                        world.request(client, Request::List(Prefix::Sessions))
                    else {
                        return Flow::Exit;
                    };
                    self.sessions_at_start = sessions_from(&names);
                    self.queue = self
                        .sessions_at_start
                        .iter()
                        .filter(|(_, seen)| !seen.ended)
                        .map(|(session, _)| Name::Session(*session))
                        .rev()
                        .collect();
                    self.phase = PrunePhase::GetMarkers;
                    return Flow::Continue;
                }
                PrunePhase::GetMarkers => {
                    let Some(name) = self.queue.pop() else {
                        self.to_judge = self
                            .sessions_at_start
                            .iter()
                            .filter(|(_, seen)| !seen.ended && seen.marker.is_some())
                            .map(|(session, _)| *session)
                            .rev()
                            .collect();
                        self.phase = PrunePhase::EndDead;
                        continue;
                    };
                    let Name::Session(session) = name else {
                        unreachable!("only markers are queued")
                    };
                    match world.request(client, Request::Get(name)) {
                        Reply::Object(Object::Session(marker)) => {
                            if let Some(seen) = self.sessions_at_start.get_mut(&session) {
                                seen.marker = Some(marker);
                            }
                        }
                        // Deleted since the listing (it had ended): without its marker it
                        // cannot be judged, and counts as running.
                        Reply::NotFound => {}
                        _ => return Flow::Exit,
                    }
                    return Flow::Continue;
                }
                PrunePhase::EndDead => {
                    let Some(session) = self.to_judge.pop() else {
                        if self.sweep_only {
                            return Flow::Exit;
                        }
                        self.phase = if world.config.protocol == Protocol::SessionsThenRecords {
                            PrunePhase::ListRecords
                        } else {
                            PrunePhase::ListSnapshots
                        };
                        continue;
                    };
                    let marker = self.sessions_at_start[&session]
                        .marker
                        .expect("only sessions with a marker are judged");
                    let machine = &world.machines[process.machine];
                    let probe = |pid| machine.probe(process.namespace, pid);
                    let judgement = Judgement {
                        marker: &marker,
                        local: machine.local(process.namespace),
                        host_name: machine.hostname,
                        started_here: machine.namespaces[process.namespace]
                            .local_record
                            .contains(&session),
                        probe: &probe,
                    };
                    if !(world.config.rule)(&judgement) {
                        continue;
                    }
                    let request = Request::Put(
                        Name::SessionEnd(session),
                        Object::SessionEnd(EndedBy::Prune),
                    );
                    match world.request(client, request) {
                        Reply::Done | Reply::Exists => {
                            world.stats.sessions_ended_by_prune += 1;
                            if let Some(seen) = self.sessions_at_start.get_mut(&session) {
                                seen.ended = true;
                            }
                        }
                        _ => return Flow::Exit,
                    }
                    return Flow::Continue;
                }
                // 21.3 step 1: every record (and in-flight list); g = highest + 1. Then S0.
                PrunePhase::ListRecords => {
                    let Reply::Names(names) = world.request(client, Request::List(Prefix::Prune))
                    else {
                        return Flow::Exit;
                    };
                    self.queue = names.into_iter().rev().collect();
                    self.phase = PrunePhase::GetRecords;
                    return Flow::Continue;
                }
                PrunePhase::GetRecords => {
                    let Some(name) = self.queue.pop() else {
                        self.generation = highest(&self.records)
                            .max(self.inflight.keys().next_back().copied().unwrap_or(0))
                            + 1;
                        self.phase = if world.config.protocol == Protocol::SessionsThenRecords {
                            PrunePhase::ListSnapshots
                        } else {
                            PrunePhase::ListSessions
                        };
                        continue;
                    };
                    match (name, world.request(client, Request::Get(name))) {
                        (
                            Name::Record(generation),
                            Reply::Object(Object::Record {
                                condemned,
                                resurrected,
                            }),
                        ) => {
                            self.records.insert(generation, (condemned, resurrected));
                        }
                        (Name::Inflight(generation), Reply::Object(Object::Inflight(sessions))) => {
                            self.inflight.insert(generation, sessions);
                        }
                        _ => return Flow::Exit,
                    }
                    return Flow::Continue;
                }
                // 21.3 step 2: mark: the snapshots, then the index.
                PrunePhase::ListSnapshots => {
                    let Reply::Names(names) =
                        world.request(client, Request::List(Prefix::Snapshots))
                    else {
                        return Flow::Exit;
                    };
                    self.marked = names.iter().copied().collect();
                    self.queue = names.into_iter().rev().collect();
                    self.phase = PrunePhase::GetSnapshots;
                    return Flow::Continue;
                }
                PrunePhase::GetSnapshots => {
                    let Some(name) = self.queue.pop() else {
                        self.phase = PrunePhase::ListIndex;
                        continue;
                    };
                    match world.request(client, Request::Get(name)) {
                        Reply::Object(Object::Snapshot(blobs)) => self.referenced.extend(blobs),
                        // Forgotten since the listing.
                        Reply::NotFound => {}
                        _ => return Flow::Exit,
                    }
                    return Flow::Continue;
                }
                PrunePhase::ListIndex => {
                    let Reply::Names(names) = world.request(client, Request::List(Prefix::Indexes))
                    else {
                        return Flow::Exit;
                    };
                    self.index_names.clone_from(&names);
                    self.queue = names.into_iter().rev().collect();
                    self.phase = PrunePhase::GetIndex;
                    return Flow::Continue;
                }
                PrunePhase::GetIndex => {
                    let Some(name) = self.queue.pop() else {
                        self.phase = PrunePhase::ListPacks;
                        continue;
                    };
                    match world.request(client, Request::Get(name)) {
                        Reply::Object(Object::Index(packs)) => self.indexed.extend(packs),
                        // An index object that vanished (another prune superseded it) stops the
                        // prune, as `load_index_object` does.
                        _ => return Flow::Exit,
                    }
                    return Flow::Continue;
                }
                // 21.3 step 3: a location for every referenced blob.
                PrunePhase::ListPacks => {
                    let Reply::Names(names) = world.request(client, Request::List(Prefix::Packs))
                    else {
                        return Flow::Exit;
                    };
                    self.existing = names
                        .iter()
                        .filter_map(|name| match name {
                            Name::Pack(pack) => Some(*pack),
                            _ => None,
                        })
                        .collect();
                    self.choose_live();
                    self.phase = PrunePhase::Search;
                    return Flow::Continue;
                }
                PrunePhase::Search => {
                    let Some(name) = self.queue.pop() else {
                        if self
                            .referenced
                            .iter()
                            .any(|blob| !self.chosen.contains_key(blob))
                        {
                            // Damage: a referenced blob is in no pack. The prune stops; the
                            // invariants have already reported the broken snapshot.
                            return Flow::Exit;
                        }
                        self.condemn(world);
                        self.phase = PrunePhase::Repack;
                        continue;
                    };
                    let Name::Pack(pack) = name else {
                        unreachable!("only packs are searched")
                    };
                    match world.request(client, Request::Get(name)) {
                        Reply::Object(Object::Pack(blobs)) => {
                            let claimed = self.claim(pack, &blobs);
                            // 21.9: every copy of a blob with no live location is taken back,
                            // not only the first: a concurrent prune that did not read this
                            // run's record may be deleting any one of them.
                            let holds_unplaced = blobs.iter().any(|blob| {
                                self.referenced.contains(blob) && !self.placed_live.contains(blob)
                            });
                            let resurrect = if world.config.protocol == Protocol::ResurrectOneCopy {
                                claimed > 0
                            } else {
                                holds_unplaced
                            };
                            if resurrect {
                                self.live.insert(pack);
                                self.resurrected.push(IndexedPack { pack, blobs });
                            } else if !self.running()
                                && !condemned_by(&self.records).contains_key(&pack)
                            {
                                self.orphans.push(pack);
                            }
                        }
                        Reply::NotFound => {}
                        _ => return Flow::Exit,
                    }
                    return Flow::Continue;
                }
                // 21.3 step 4: repacked blobs are copied and indexed before the record.
                PrunePhase::Repack => {
                    if let Some(blobs) = self.copy.take() {
                        let pack = world.fresh_id();
                        let request = Request::Put(Name::Pack(pack), Object::Pack(blobs.clone()));
                        if world.request(client, request) != Reply::Done {
                            return Flow::Exit;
                        }
                        self.copies.push(IndexedPack { pack, blobs });
                        return Flow::Continue;
                    }
                    let Some((pack, blobs)) = self.repack.pop() else {
                        self.phase = PrunePhase::RepackIndex;
                        continue;
                    };
                    self.condemned.push(pack);
                    match world.request(client, Request::Get(Name::Pack(pack))) {
                        Reply::Object(Object::Pack(_)) => self.copy = Some(blobs),
                        _ => return Flow::Exit,
                    }
                    return Flow::Continue;
                }
                PrunePhase::RepackIndex => {
                    self.phase = PrunePhase::Record;
                    if !self.copies.is_empty() {
                        let index = world.fresh_id();
                        let request =
                            Request::Put(Name::Index(index), Object::Index(self.copies.clone()));
                        if world.request(client, request) != Reply::Done {
                            return Flow::Exit;
                        }
                        return Flow::Continue;
                    }
                }
                // 21.3 step 5: record g (create-only), S1, F(g).
                PrunePhase::Record => {
                    self.deletable.clone_from(&self.earlier_releasable);
                    if self.condemned.is_empty() && self.resurrected.is_empty() {
                        self.plan_rewrite();
                        self.phase = PrunePhase::Index;
                        continue;
                    }
                    let request = Request::Put(
                        Name::Record(self.generation),
                        Object::Record {
                            condemned: self.condemned.clone(),
                            resurrected: self.resurrected.iter().map(|pack| pack.pack).collect(),
                        },
                    );
                    if world.request(client, request) != Reply::Done {
                        // Another prune won generation g (or the request failed): stop before
                        // deleting anything.
                        return Flow::Exit;
                    }
                    world.stats.packs_condemned += self.condemned.len() as u64;
                    world.stats.packs_resurrected += self.resurrected.len() as u64;
                    self.phase = PrunePhase::ListSessionsAgain;
                    return Flow::Continue;
                }
                PrunePhase::ListSessionsAgain => {
                    let Reply::Names(names) =
                        world.request(client, Request::List(Prefix::Sessions))
                    else {
                        return Flow::Exit;
                    };
                    let at_start = &self.sessions_at_start;
                    let inflight: BTreeSet<SessionId> = sessions_from(&names)
                        .into_iter()
                        .filter(|(session, now)| {
                            !now.ended || at_start.get(session).is_none_or(|seen| !seen.ended)
                        })
                        .map(|(session, _)| session)
                        .collect();
                    self.inflight
                        .insert(self.generation, inflight.into_iter().collect());
                    self.phase = PrunePhase::Inflight;
                    return Flow::Continue;
                }
                PrunePhase::Inflight => {
                    let sessions = self.inflight[&self.generation].clone();
                    let empty = sessions.is_empty();
                    let request =
                        Request::Put(Name::Inflight(self.generation), Object::Inflight(sessions));
                    if !matches!(world.request(client, request), Reply::Done | Reply::Exists) {
                        return Flow::Exit;
                    }
                    // 21.3 step 6: record g's packs are releasable if F(g) is empty, and (21.9)
                    // if no snapshot appeared since step 2.
                    let protocol = world.config.protocol;
                    if protocol == Protocol::ReleaseIgnoringInflight
                        || (empty && protocol == Protocol::ReleaseOwnRecordAtOnce)
                    {
                        self.deletable.extend(self.condemned.iter().copied());
                    } else if empty && !self.condemned.is_empty() {
                        self.phase = PrunePhase::ListSnapshotsAgain;
                        return Flow::Continue;
                    }
                    self.plan_rewrite();
                    self.phase = PrunePhase::Index;
                    return Flow::Continue;
                }
                PrunePhase::ListSnapshotsAgain => {
                    let Reply::Names(names) =
                        world.request(client, Request::List(Prefix::Snapshots))
                    else {
                        return Flow::Exit;
                    };
                    // A snapshot step 2 did not read was committed by a session that S1 may not
                    // show any more (it ended, and a concurrent prune deleted its markers).
                    if names.iter().all(|name| self.marked.contains(name)) {
                        self.deletable.extend(self.condemned.iter().copied());
                    }
                    self.plan_rewrite();
                    self.phase = PrunePhase::Index;
                    return Flow::Continue;
                }
                // 21.3 step 7: the new index, then delete the superseded ones, then the packs.
                PrunePhase::Index => {
                    self.phase = PrunePhase::DeleteIndex;
                    if self.rewrite {
                        let deleted: BTreeSet<u32> = self.deletable.iter().copied().collect();
                        let mut listed = BTreeSet::new();
                        let packs: Vec<IndexedPack> = self
                            .resurrected
                            .iter()
                            .chain(&self.indexed)
                            .filter(|pack| {
                                self.existing.contains(&pack.pack)
                                    && !deleted.contains(&pack.pack)
                                    && listed.insert(pack.pack)
                            })
                            .cloned()
                            .collect();
                        let index = world.fresh_id();
                        let request = Request::Put(Name::Index(index), Object::Index(packs));
                        if world.request(client, request) != Reply::Done {
                            return Flow::Exit;
                        }
                        self.queue = self.index_names.iter().rev().copied().collect();
                        return Flow::Continue;
                    }
                }
                PrunePhase::DeleteIndex => {
                    let Some(name) = self.queue.pop() else {
                        self.queue = self
                            .deletable
                            .iter()
                            .rev()
                            .map(|pack| Name::Pack(*pack))
                            .collect();
                        self.phase = PrunePhase::DeletePacks;
                        continue;
                    };
                    if world.request(client, Request::Delete(name)) != Reply::Done {
                        return Flow::Exit;
                    }
                    return Flow::Continue;
                }
                PrunePhase::DeletePacks => {
                    let Some(name) = self.queue.pop() else {
                        self.plan_session_cleanup();
                        self.phase = PrunePhase::DeleteMarkers;
                        continue;
                    };
                    if world.request(client, Request::Delete(name)) != Reply::Done {
                        return Flow::Exit;
                    }
                    world.stats.packs_deleted += 1;
                    return Flow::Continue;
                }
                // 21.3 step 8: markers of sessions ended in S0 that no pending record needs;
                // the start marker first.
                PrunePhase::DeleteMarkers => {
                    if let Some(name) = self.queue.pop() {
                        if world.request(client, Request::Delete(name)) != Reply::Done {
                            return Flow::Exit;
                        }
                        return Flow::Continue;
                    }
                    let Some(session) = self.removable.pop() else {
                        world.stats.prunes_finished += 1;
                        return Flow::Exit;
                    };
                    self.queue = vec![Name::SessionEnd(session), Name::Session(session)];
                }
            }
        }
    }

    fn running(&self) -> bool {
        self.sessions_at_start.values().any(|seen| !seen.ended)
    }

    /// Claims for `pack` the referenced blobs no earlier pack claimed; how many it claimed.
    fn claim(&mut self, pack: u32, blobs: &[Blob]) -> usize {
        let mut claimed = 0;
        for blob in blobs {
            if self.referenced.contains(blob) && !self.chosen.contains_key(blob) {
                self.chosen.insert(*blob, pack);
                claimed += 1;
            }
        }
        claimed
    }

    /// 21.3 step 3: live packs (indexed, existing, not condemned) claim blobs in index order;
    /// the packs left over are read when a blob is still unplaced (resurrection) or, with no
    /// session running, to find orphans.
    fn choose_live(&mut self) {
        let condemned = condemned_by(&self.records);
        let indexed = std::mem::take(&mut self.indexed);
        for pack in &indexed {
            if self.existing.contains(&pack.pack)
                && !condemned.contains_key(&pack.pack)
                && self.live.insert(pack.pack)
            {
                self.claim(pack.pack, &pack.blobs);
            }
        }
        self.indexed = indexed;
        self.placed_live = self.chosen.keys().copied().collect();
        let needs_search = self
            .referenced
            .iter()
            .any(|blob| !self.chosen.contains_key(blob));
        let running = self.running();
        self.queue = self
            .existing
            .iter()
            .filter(|pack| !self.live.contains(pack))
            .filter(|pack| needs_search || (!running && !condemned.contains_key(pack)))
            .rev()
            .map(|pack| Name::Pack(*pack))
            .collect();
    }

    /// 21.3 step 4 and the releasable packs of earlier records (step 6).
    fn condemn(&mut self, world: &mut World) {
        let resurrected: BTreeSet<u32> = self.resurrected.iter().map(|pack| pack.pack).collect();
        let mut used: BTreeMap<u32, Vec<Blob>> = BTreeMap::new();
        for (blob, pack) in &self.chosen {
            used.entry(*pack).or_default().push(*blob);
        }
        self.condemned = self.orphans.clone();
        let repack_now = world.rng.chance(400);
        let mut seen = BTreeSet::new();
        for pack in &self.indexed {
            if !self.live.contains(&pack.pack)
                || resurrected.contains(&pack.pack)
                || !seen.insert(pack.pack)
            {
                continue;
            }
            match used.get(&pack.pack) {
                None => self.condemned.push(pack.pack),
                Some(blobs)
                    if repack_now
                        && blobs.len() < pack.blobs.len()
                        && !resurrected.contains(&pack.pack) =>
                {
                    self.repack.push((pack.pack, blobs.clone()));
                }
                Some(_) => {}
            }
        }
        self.repack.reverse();
        let condemned = condemned_by(&self.records);
        let protocol = world.config.protocol;
        self.earlier_releasable = condemned
            .iter()
            .filter(|(pack, _)| self.existing.contains(pack) && !resurrected.contains(pack))
            .filter(|(_, generation)| {
                protocol == Protocol::ReleaseIgnoringInflight || self.released(**generation)
            })
            .map(|(pack, _)| *pack)
            .collect();
    }

    /// 21.3 step 6: the packs of record `generation` may go if every session of its in-flight
    /// list had ended in S0 (absent counts as ended); with no list, if no session was unended.
    fn released(&self, generation: u64) -> bool {
        match self.inflight.get(&generation) {
            Some(sessions) => sessions.iter().all(|session| {
                self.sessions_at_start
                    .get(session)
                    .is_none_or(|seen| seen.ended)
            }),
            None => !self.running(),
        }
    }

    fn plan_rewrite(&mut self) {
        self.deletable.sort_unstable();
        self.deletable.dedup();
        let dangling = self
            .indexed
            .iter()
            .any(|pack| !self.existing.contains(&pack.pack));
        self.rewrite = !self.resurrected.is_empty() || !self.deletable.is_empty() || dangling;
    }

    /// 21.3 step 8: sessions ended in S0 that no in-flight list of a record with packs left
    /// names.
    fn plan_session_cleanup(&mut self) {
        let deleted: BTreeSet<u32> = self.deletable.iter().copied().collect();
        let still_there = |pack: &u32| self.existing.contains(pack) && !deleted.contains(pack);
        let mut needed: BTreeSet<SessionId> = BTreeSet::new();
        let this_record = (self.generation, (self.condemned.clone(), Vec::new()));
        for (generation, (condemned, _)) in self
            .records
            .iter()
            .chain(std::iter::once((&this_record.0, &this_record.1)))
        {
            if condemned.iter().any(still_there)
                && let Some(sessions) = self.inflight.get(generation)
            {
                needed.extend(sessions.iter().copied());
            }
        }
        self.removable = self
            .sessions_at_start
            .iter()
            .filter(|(session, seen)| seen.ended && !needed.contains(session))
            .map(|(session, _)| *session)
            .collect();
    }
}
