//! Prune: mark what live snapshots reference, condemn unreferenced packs, repack mostly-unused
//! ones, rewrite the index and delete what the protocol of FORMAT.md section 21 allows: without
//! an exclusive lock on backups, and without ever deleting a pack a committed snapshot needs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use rayon::prelude::*;

use crate::backend::{BackendError, ObjectInfo, PutMode, RequestStats};
use crate::crypto::id::Id;
use crate::crypto::seal;
use crate::error::{Error, Result};
use crate::format::index::{IndexObject, IndexedPack};
use crate::format::lifecycle::{self, InflightList, PruneRecord, SessionId};
use crate::format::tree::NodeKind;
use crate::index::cache::BlobLocation;
use crate::index::marks::MarkSet;
use crate::ops::sessions::{self, Judge, WaitingSession};
use crate::repo::fetch;
use crate::repo::lifecycle::{PruneState, SessionStatus};
use crate::repo::repository::{Repository, id_from_name, object_name, pack_name};
use crate::repo::saver::BlobSaver;

/// Index entries per rewritten index object (about 9 MiB of body at most, so that reading one
/// back stays cheap in memory).
const ENTRIES_PER_INDEX: usize = 200_000;

/// How a prune runs.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Repack packs, most-unused first, until unused bytes in kept packs are at most this share
    /// of all pack bytes (0.0..=1.0).
    pub max_unused: f64,
    /// Decide and report, change nothing.
    pub dry_run: bool,
    /// The lease's time to live without renewal (renewed every third of it while running).
    pub lease_ttl: Duration,
}

impl Default for PruneOptions {
    fn default() -> Self {
        Self {
            max_unused: 0.10,
            dry_run: false,
            lease_ttl: Duration::from_mins(15),
        }
    }
}

/// An unended backup session prune waits for: it keeps condemned packs from being deleted
/// until it ends (or an operator ends it with `prune --end-session`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockingSession {
    /// The session: who, where, since when, and why it is not proven gone.
    pub waiting: WaitingSession,
    /// Condemned packs it holds back from deletion (a pack held by several sessions counts
    /// for each).
    pub packs_held: u64,
    /// Bytes of those packs.
    pub bytes_held: u64,
}

/// What a prune did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PruneReport {
    /// The generation of the record written (0 on a dry run or when nothing changed).
    pub generation: u64,
    /// Snapshots whose references were marked.
    pub snapshots: usize,
    /// Blobs they reference.
    pub referenced_blobs: u64,
    /// Packs in the repository before the run, and their bytes.
    pub packs_before: u64,
    /// Bytes of packs before the run.
    pub bytes_before: u64,
    /// Packs condemned by this run (unused, repacked or orphaned).
    pub packs_condemned: u64,
    /// Bytes of those packs.
    pub bytes_condemned: u64,
    /// Packs repacked (their used blobs copied into new packs).
    pub packs_repacked: u64,
    /// Bytes written by the repack (new packs and index).
    pub bytes_repacked: u64,
    /// Earlier-condemned packs taken back because a snapshot needs them.
    pub packs_resurrected: u64,
    /// Packs deleted by this run.
    pub packs_deleted: u64,
    /// Bytes freed by this run.
    pub bytes_freed: u64,
    /// Condemned packs left for a later prune (sessions still running).
    pub packs_pending: u64,
    /// Bytes of those.
    pub bytes_pending: u64,
    /// Index objects written and removed.
    pub index_written: u64,
    /// Index objects removed.
    pub index_removed: u64,
    /// Sessions of this machine's backups whose process is proven gone, ended by this run
    /// (with `dry_run`: that a real run would end).
    pub sessions_ended: usize,
    /// Every unended backup session prune waits for, with the condemned packs it holds back.
    pub blocking_sessions: Vec<BlockingSession>,
    /// Unused bytes left in kept packs.
    pub unused_bytes_kept: u64,
    /// Requests made.
    pub requests: RequestStats,
    /// Staging files of interrupted uploads deleted (would be, on a dry run): those
    /// [`crate::backend::StagingFile::is_abandoned`].
    pub staging_files_removed: u64,
    /// Their bytes.
    pub staging_bytes_removed: u64,
    /// Staging files kept because an upload may still be writing them (younger than
    /// [`crate::backend::STAGING_ABANDONED_AFTER`], or changed while the prune ran).
    pub staging_files_kept: u64,
}

/// Everything the mark phase learned.
struct Marked {
    marks: MarkSet,
    /// The snapshots the walk read (FORMAT.md 21.3 step 6 compares a later listing with them).
    snapshots: HashSet<Id>,
}

/// Trees loaded at once during the mark walk (bounds memory on wide repositories).
const TREES_PER_STEP: usize = 256;

fn mark(repository: &Repository, state: &PruneState) -> Result<Marked> {
    // Snapshots first, then the index: a backup writes its index objects before its snapshot,
    // so every blob of every snapshot listed here is in an index object read after.
    let (snapshots, errors) = repository.list_snapshots()?;
    repository.sync_index_with(state)?;
    if let Some(error) = errors.into_iter().next() {
        if error.kind() == crate::error::ErrorKind::Transient {
            return Err(error);
        }
        let id = match &error {
            Error::Damaged { object, .. } => id_from_name(object),
            _ => None,
        };
        let forget = id.map_or_else(
            || "cairn forget ID".to_owned(),
            |id| format!("cairn forget {id}"),
        );
        return Err(Error::Usage(format!(
            "a snapshot cannot be read ({error}); prune stops so that nothing it references is \
             deleted: remove the snapshot with `{forget}` (what only it holds is then lost), \
             or restore what you still can from the repository first"
        )));
    }
    let marks = MarkSet::create(repository.cache().directory())?;
    let roots: Vec<Id> = snapshots
        .iter()
        .map(|(_, snapshot)| snapshot.root)
        .collect();
    let fresh = marks.insert_all(&roots)?;
    let mut frontier: Vec<Id> = roots
        .into_iter()
        .zip(fresh)
        .filter_map(|(id, fresh)| fresh.then_some(id))
        .collect();
    while !frontier.is_empty() {
        let step = frontier.split_off(frontier.len().saturating_sub(TREES_PER_STEP));
        let trees = step
            .par_iter()
            .map(|id| repository.load_tree(id))
            .collect::<Result<Vec<_>>>()
            .map_err(|error| {
                Error::Usage(format!(
                    "a tree cannot be read ({error}); prune stops so that nothing is deleted \
                     on a damaged repository's word: run `cairn check`, then `cairn repair \
                     snapshots`"
                ))
            })?;
        let mut chunks = Vec::new();
        let mut subtrees = Vec::new();
        for tree in trees {
            for node in tree.nodes {
                match node.kind {
                    NodeKind::File { chunks: ids, .. } => chunks.extend(ids),
                    NodeKind::Directory { subtree } => subtrees.push(subtree),
                    NodeKind::Symlink { .. } | NodeKind::Fifo | NodeKind::Device { .. } => {}
                }
            }
        }
        marks.insert_all(&chunks)?;
        let fresh = marks.insert_all(&subtrees)?;
        frontier.extend(
            subtrees
                .into_iter()
                .zip(fresh)
                .filter_map(|(id, fresh)| fresh.then_some(id)),
        );
    }
    Ok(Marked {
        marks,
        snapshots: snapshots.iter().map(|(id, _)| *id).collect(),
    })
}

/// How a pack's blob bytes are used, from the claim pass.
#[derive(Debug, Clone, Copy, Default)]
struct PackUse {
    /// Bytes of blobs chosen in this pack.
    used: u64,
    /// Bytes of all its blobs.
    total: u64,
}

fn blob_bytes(pack: &IndexedPack) -> u64 {
    pack.entries
        .iter()
        .map(|entry| u64::from(entry.length))
        .sum()
}

/// Claims the marked blobs of `pack` for it; returns its use.
fn claim_pack(marks: &MarkSet, pack: &IndexedPack) -> Result<PackUse> {
    let ids: Vec<Id> = pack.entries.iter().map(|entry| entry.id).collect();
    let claimed = marks.claim(&pack.pack_id, &ids)?;
    let used = pack
        .entries
        .iter()
        .zip(claimed)
        .filter(|(_, claimed)| *claimed)
        .map(|(entry, _)| u64::from(entry.length))
        .sum();
    Ok(PackUse {
        used,
        total: blob_bytes(pack),
    })
}

/// Every session prune waits for: those unended at the start of the run (after this machine's
/// dead ones were ended) and those holding condemned packs, described from the newest listing
/// that has them, with what each holds.
fn blocking_sessions(
    judge: &Judge,
    held: &BTreeMap<SessionId, (u64, u64)>,
    sessions_at_start: &BTreeMap<SessionId, SessionStatus>,
    sessions_later: Option<&BTreeMap<SessionId, SessionStatus>>,
) -> Vec<BlockingSession> {
    let mut ids: Vec<SessionId> = unfinished(sessions_at_start)
        .into_iter()
        .map(|status| status.session)
        .chain(held.keys().copied())
        .collect();
    ids.sort();
    ids.dedup();
    ids.into_iter()
        .map(|session| {
            let status = sessions_later
                .and_then(|later| later.get(&session))
                .filter(|status| status.marker.is_some())
                .or_else(|| sessions_at_start.get(&session))
                .cloned()
                .unwrap_or(SessionStatus {
                    session,
                    marker: None,
                    ended: false,
                });
            let (packs_held, bytes_held) = held.get(&session).copied().unwrap_or_default();
            BlockingSession {
                waiting: sessions::describe(judge, &status),
                packs_held,
                bytes_held,
            }
        })
        .collect()
}

/// The sessions that keep the packs of record `generation` from being released (21.3 step 6):
/// those of its in-flight list still unended at the start of this run (a session absent from the
/// listing counts as ended), or, without a list (the prune that wrote the record died before
/// listing the sessions), every session unended then, since any of them could have missed the
/// record. Empty exactly when the generation's packs may be deleted.
fn generation_holders(
    state: &PruneState,
    generation: u64,
    sessions_at_start: &BTreeMap<SessionId, SessionStatus>,
) -> Vec<SessionId> {
    match state.inflight.get(&generation) {
        Some(list) => list
            .sessions
            .iter()
            .filter(|session| {
                sessions_at_start
                    .get(session)
                    .is_some_and(|status| !status.ended)
            })
            .copied()
            .collect(),
        None => unfinished(sessions_at_start)
            .into_iter()
            .map(|status| status.session)
            .collect(),
    }
}

fn unfinished(sessions: &BTreeMap<SessionId, SessionStatus>) -> Vec<&SessionStatus> {
    sessions.values().filter(|status| !status.ended).collect()
}

/// Runs a prune. See the module documentation and FORMAT.md section 21.
///
/// # Errors
/// [`Error::AppendOnly`], [`Error::PruneLeaseHeld`], [`Error::Usage`] when the repository is
/// damaged in a way that makes marking unsafe, or backend and cache failures. A failure at any
/// point leaves the repository consistent: the next prune completes the job.
pub fn prune(repository: &Repository, options: &PruneOptions) -> Result<PruneReport> {
    repository.ensure_may_delete("prune")?;
    if !(0.0..=1.0).contains(&options.max_unused) {
        return Err(Error::Usage(
            "--max-unused must be between 0% and 100%".into(),
        ));
    }
    if options.dry_run {
        let mut report = run(repository, options)?;
        remove_staging_files(repository, options.dry_run, &mut report)?;
        return Ok(report);
    }
    repository.with_prune_lease(options.lease_ttl, &sessions::lease_holder_gone, || {
        let mut report = run(repository, options)?;
        remove_staging_files(repository, options.dry_run, &mut report)?;
        Ok(report)
    })
}

/// Deletes the staging files interrupted uploads left, once abandoned (FORMAT.md section 14),
/// each only if unchanged since it was found; counts them all.
fn remove_staging_files(
    repository: &Repository,
    dry_run: bool,
    report: &mut PruneReport,
) -> Result<()> {
    let backend = repository.backend();
    for file in backend.staging_files()? {
        let removed = file.is_abandoned() && (dry_run || backend.delete_staging_file(&file)?);
        if removed {
            report.staging_files_removed += 1;
            report.staging_bytes_removed += file.size;
        } else {
            report.staging_files_kept += 1;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_lines)] // one protocol, step by step, in FORMAT.md order
fn run(repository: &Repository, options: &PruneOptions) -> Result<PruneReport> {
    let backend = repository.backend();
    let key = &repository.keys().data_key;
    let mut report = PruneReport::default();

    // Step 1: records and in-flight lists, *then* sessions (this machine's provably dead ones
    // ended). In this order S0 lists every session of every in-flight list read here unless it
    // has ended, so step 6 may count a session absent from S0 as ended (FORMAT.md 21.3; the
    // other order lost packs in the simulation, 21.9).
    let state = repository.load_prune_state()?;
    let generation = state.latest_generation + 1;
    let judge = Judge::here(repository);
    let mut sessions_at_start = repository.list_sessions()?;
    report.sessions_ended =
        sessions::end_dead_sessions(repository, &judge, &mut sessions_at_start, !options.dry_run)?
            .len();
    let running = !unfinished(&sessions_at_start).is_empty();

    // Step 2: mark.
    let marked = mark(repository, &state)?;
    let marks = &marked.marks;
    report.snapshots = marked.snapshots.len();
    report.referenced_blobs = marks.len()?;

    // Step 3: the index as stored (not the cache), one object at a time, and the packs that
    // exist. Each live pack claims the marked blobs no earlier pack claimed.
    let index_names: Vec<Id> = backend
        .list("index")?
        .into_iter()
        .filter_map(|info| id_from_name(&info.name))
        .collect();
    let existing: HashMap<Id, u64> = backend
        .list("data")?
        .into_iter()
        .filter_map(|info| id_from_name(&info.name).map(|id| (id, info.size)))
        .collect();
    report.packs_before = existing.len() as u64;
    report.bytes_before = existing.values().sum();
    let load = |id: &Id| {
        repository
            .load_index_object(&object_name("index", id))
            .map(|(_, object)| object)
            .map_err(|error| {
                Error::Usage(format!(
                    "an index object cannot be read ({error}); run `cairn repair index` or \
                     `cairn check` before pruning"
                ))
            })
    };
    let mut uses: HashMap<Id, PackUse> = HashMap::new();
    let mut condemned_indexed: HashSet<Id> = HashSet::new();
    let mut dangling = false;
    for index_id in &index_names {
        for pack in load(index_id)?.packs {
            if !existing.contains_key(&pack.pack_id) {
                dangling = true;
            } else if state.condemned.contains(&pack.pack_id) {
                condemned_indexed.insert(pack.pack_id);
            } else if let std::collections::hash_map::Entry::Vacant(slot) = uses.entry(pack.pack_id)
            {
                slot.insert(claim_pack(marks, &pack)?);
            }
        }
    }

    // Step 4: blobs with no live location: look in condemned packs that still exist, and in
    // packs no index lists; take back (resurrect) the packs that hold them.
    let mut resurrected: Vec<IndexedPack> = Vec::new();
    let mut orphans: Vec<Id> = Vec::new();
    {
        let mut others: Vec<(Id, u64)> = existing
            .iter()
            .filter(|(id, _)| !uses.contains_key(id))
            .map(|(id, size)| (*id, *size))
            .collect();
        others.sort();
        let needs_search = marks.unchosen()? > 0;
        let must_read: Vec<(Id, u64)> = others
            .into_iter()
            .filter(|(id, _)| needs_search || (!running && !state.condemned.contains(id)))
            .collect();
        // Every pack holding a blob that has no live location is taken back, not only the
        // first one found: a concurrent prune that has not read this run's record may delete
        // the copy chosen here, and the others must then still exist (FORMAT.md 21.3 step 3).
        // So the blobs still needed are judged before any of these packs claims one.
        let mut to_resurrect: Vec<(IndexedPack, u64)> = Vec::new();
        for batch in must_read.chunks(64) {
            let trailers: Vec<(Id, Option<IndexedPack>)> = batch
                .par_iter()
                .map(|(id, size)| {
                    let info = ObjectInfo {
                        name: pack_name(id),
                        size: *size,
                        modified: 0,
                    };
                    (*id, repository.read_pack_trailer(&info).ok())
                })
                .collect();
            for (pack_id, trailer) in trailers {
                let Some(pack) = trailer else { continue };
                let ids: Vec<Id> = pack.entries.iter().map(|entry| entry.id).collect();
                let needed_bytes: u64 = pack
                    .entries
                    .iter()
                    .zip(marks.unchosen_among(&ids)?)
                    .filter(|(_, needed)| *needed)
                    .map(|(entry, _)| u64::from(entry.length))
                    .sum();
                if needed_bytes > 0 {
                    to_resurrect.push((pack, needed_bytes));
                } else if !running && !state.condemned.contains(&pack_id) {
                    orphans.push(pack_id);
                }
            }
        }
        for (pack, needed_bytes) in to_resurrect {
            claim_pack(marks, &pack)?;
            uses.insert(
                pack.pack_id,
                PackUse {
                    used: needed_bytes,
                    total: blob_bytes(&pack),
                },
            );
            resurrected.push(pack);
        }
    }
    let missing = marks.unchosen()?;
    if missing > 0 {
        return Err(Error::Usage(format!(
            "{missing} blobs that snapshots reference are in no pack; prune stops: run `cairn check`"
        )));
    }
    report.packs_resurrected = resurrected.len() as u64;
    let resurrected_ids: HashSet<Id> = resurrected.iter().map(|pack| pack.pack_id).collect();

    // Step 5: classify live packs by use; pick repack candidates.
    let mut condemned: Vec<Id> = orphans;
    let mut candidates: Vec<(Id, u64, u64)> = Vec::new(); // id, used, total
    let mut total_length = 0u64;
    let mut total_unused = 0u64;
    let mut live_ids: Vec<Id> = uses.keys().copied().collect();
    live_ids.sort();
    for pack_id in &live_ids {
        let PackUse { used, total } = uses[pack_id];
        if used == 0 {
            condemned.push(*pack_id);
            continue;
        }
        total_length += total;
        let unused = total.saturating_sub(used);
        total_unused += unused;
        if unused > 0 && !resurrected_ids.contains(pack_id) {
            candidates.push((*pack_id, used, total));
        }
    }
    // Most unused first: compare (total - used) / total without floating point.
    candidates.sort_by(|a, b| {
        let left = u128::from(a.2 - a.1) * u128::from(b.2);
        let right = u128::from(b.2 - b.1) * u128::from(a.2);
        right.cmp(&left).then(a.0.cmp(&b.0))
    });
    #[allow(clippy::cast_precision_loss)]
    let over_budget =
        |unused: u64, total: u64| total > 0 && unused as f64 > options.max_unused * total as f64;
    let mut repack: Vec<Id> = Vec::new();
    for (pack_id, used, total) in &candidates {
        if !over_budget(total_unused, total_length) {
            break;
        }
        repack.push(*pack_id);
        total_unused -= total - used;
        total_length -= total - used;
    }
    report.unused_bytes_kept = total_unused;
    report.packs_repacked = repack.len() as u64;
    for pack_id in condemned.iter().chain(&repack) {
        report.bytes_condemned += existing[pack_id];
    }
    report.packs_condemned = (condemned.len() + repack.len()) as u64;

    // What earlier records condemned that may go now.
    // Each still-condemned pack's newest condemning record, and who holds each record's packs.
    let mut condemned_by: HashMap<Id, u64> = HashMap::new();
    for (generation, record) in &state.records {
        for id in &record.condemned {
            condemned_by.insert(*id, *generation);
        }
    }
    let holders: HashMap<u64, Vec<SessionId>> = state
        .records
        .keys()
        .map(|generation| {
            (
                *generation,
                generation_holders(&state, *generation, &sessions_at_start),
            )
        })
        .collect();
    let earlier_condemned: Vec<(Id, &[SessionId])> = state
        .condemned
        .iter()
        .filter(|id| existing.contains_key(id) && !resurrected_ids.contains(id))
        .filter_map(|id| {
            let generation = condemned_by.get(id)?;
            Some((*id, holders.get(generation)?.as_slice()))
        })
        .collect();
    let earlier_releasable: Vec<Id> = {
        let mut out: Vec<Id> = earlier_condemned
            .iter()
            .filter(|(_, holders)| holders.is_empty())
            .map(|(id, _)| *id)
            .collect();
        out.sort();
        out
    };

    // What earlier records condemned that must wait, and which sessions hold it.
    let mut held: BTreeMap<SessionId, (u64, u64)> = BTreeMap::new();
    let mut hold = |holders: &[SessionId], size: u64| {
        for session in holders {
            let entry = held.entry(*session).or_default();
            entry.0 += 1;
            entry.1 += size;
        }
    };
    for (id, holders) in earlier_condemned
        .iter()
        .filter(|(_, holders)| !holders.is_empty())
    {
        report.packs_pending += 1;
        report.bytes_pending += existing[id];
        hold(holders, existing[id]);
    }

    if options.dry_run {
        // A real run deletes what it condemns at once when no session is unended (its in-flight
        // list is then empty, unless a backup starts meanwhile).
        let unended: Vec<SessionId> = unfinished(&sessions_at_start)
            .into_iter()
            .map(|status| status.session)
            .collect();
        let mut deletable = earlier_releasable.clone();
        for pack_id in condemned.iter().chain(&repack) {
            if unended.is_empty() {
                deletable.push(*pack_id);
            } else {
                report.packs_pending += 1;
                report.bytes_pending += existing[pack_id];
                hold(&unended, existing[pack_id]);
            }
        }
        report.packs_deleted = deletable.len() as u64;
        report.bytes_freed = deletable.iter().map(|id| existing[id]).sum();
        report.blocking_sessions = blocking_sessions(&judge, &held, &sessions_at_start, None);
        report.requests = backend.stats();
        return Ok(report);
    }

    // Step 6: repack: copy each candidate's chosen blobs (found through its trailer) into new
    // packs, indexed by the saver.
    if !repack.is_empty() {
        let mut saver = BlobSaver::new(repository);
        for pack_id in &repack {
            let name = pack_name(pack_id);
            let pack = repository.read_pack_trailer(&ObjectInfo {
                name: name.clone(),
                size: existing[pack_id],
                modified: 0,
            })?;
            let ids: Vec<Id> = pack.entries.iter().map(|entry| entry.id).collect();
            let chosen = marks.chosen_in(pack_id, &ids)?;
            let locations: Vec<BlobLocation> = pack
                .entries
                .iter()
                .zip(chosen)
                .filter(|(_, chosen)| *chosen)
                .map(|(entry, _)| BlobLocation {
                    pack_id: *pack_id,
                    entry: *entry,
                })
                .collect();
            fetch::for_each_sealed_blob(repository, locations, |blob| {
                saver.save_sealed(vec![blob])
            })?;
        }
        report.bytes_repacked = saver.finish()?.bytes_added;
    }

    // Step 7: the record (create-only: of two racing prunes, one wins), then the sessions.
    let condemned_now: HashSet<Id> = condemned.iter().chain(&repack).copied().collect();
    let mut record = PruneRecord {
        generation,
        condemned: condemned_now.iter().copied().collect(),
        resurrected: resurrected_ids.iter().copied().collect(),
    };
    record.condemned.sort();
    record.resurrected.sort();
    let record_written = !record.condemned.is_empty() || !record.resurrected.is_empty();
    let mut sessions_later = None;
    let mut deletable: Vec<Id> = earlier_releasable.clone();
    if record_written {
        match backend.put(
            &lifecycle::record_name(generation),
            Bytes::from(record.encode(key, seal::random_nonce())),
            PutMode::Create,
        ) {
            Ok(()) => {}
            Err(BackendError::AlreadyExists { .. }) => {
                return Err(Error::PruneLeaseHeld(format!(
                    "another prune wrote generation {generation} first"
                )));
            }
            Err(error) => return Err(error.into()),
        }
        report.generation = generation;
        let sessions_now = repository.list_sessions()?;
        let inflight: Vec<SessionId> = sessions_now
            .values()
            .filter(|status| {
                !status.ended
                    || sessions_at_start
                        .get(&status.session)
                        .is_none_or(|at_start| !at_start.ended)
            })
            .map(|status| status.session)
            .collect();
        let list = InflightList {
            generation,
            sessions: inflight.clone(),
        };
        match backend.put(
            &lifecycle::inflight_name(generation),
            Bytes::from(list.encode(key, seal::random_nonce())),
            PutMode::Create,
        ) {
            Ok(()) | Err(BackendError::AlreadyExists { .. }) => {}
            Err(error) => return Err(error.into()),
        }
        // Step 6 for record g: releasable now only if F(g) is empty and no snapshot appeared
        // since the mark. A session that committed after the mark, ended, and whose markers a
        // concurrent prune deleted before S1 is in no list (FORMAT.md 21.3 step 6, 21.9). Later
        // runs need no such check: they read F(g) before their S0.
        let releasable_now = inflight.is_empty()
            && backend
                .list("snapshots")?
                .iter()
                .filter_map(|info| id_from_name(&info.name))
                .all(|id| marked.snapshots.contains(&id));
        if releasable_now {
            deletable.extend(record.condemned.iter().copied());
        } else {
            for id in &record.condemned {
                let size = existing.get(id).copied().unwrap_or(0);
                report.packs_pending += 1;
                report.bytes_pending += size;
                hold(&inflight, size);
            }
        }
        sessions_later = Some(sessions_now);
    }
    report.blocking_sessions =
        blocking_sessions(&judge, &held, &sessions_at_start, sessions_later.as_ref());
    deletable.sort();
    deletable.dedup();

    // Step 8: rewrite the index, streaming: every pack that exists and is not deleted by this
    // run (condemned packs stay listed until they are deleted: a snapshot committed in the window
    // before the record may still read from them), plus the resurrected ones. Index objects
    // written by others since the listing stay; the repack's own stay.
    let deleted_now: HashSet<Id> = deletable.iter().copied().collect();
    let rewrite_needed = !resurrected.is_empty() || !deletable.is_empty() || dangling;
    if rewrite_needed {
        let mut writer = IndexWriter {
            repository,
            superseded: index_names.clone(),
            batch: Vec::new(),
            entries: 0,
            written: 0,
        };
        let mut listed: HashSet<Id> = HashSet::new();
        let keep = |pack: &IndexedPack, listed: &mut HashSet<Id>| {
            existing.contains_key(&pack.pack_id)
                && !deleted_now.contains(&pack.pack_id)
                && listed.insert(pack.pack_id)
        };
        for pack in resurrected {
            if keep(&pack, &mut listed) {
                writer.push(pack)?;
            }
        }
        for index_id in &index_names {
            for pack in load(index_id)?.packs {
                if keep(&pack, &mut listed) {
                    writer.push(pack)?;
                }
            }
        }
        report.index_written = writer.finish()?;
    }

    // Step 9: delete superseded index objects, then the packs the protocol releases.
    if rewrite_needed {
        let removed: Vec<Result<()>> = index_names
            .par_iter()
            .map(|id| {
                backend
                    .delete(&object_name("index", id))
                    .map_err(Error::from)
            })
            .collect();
        for outcome in removed {
            outcome?;
            report.index_removed += 1;
        }
    }
    let deleted: Vec<Result<u64>> = deletable
        .par_iter()
        .map(|id| {
            backend.delete(&pack_name(id))?;
            Ok(existing.get(id).copied().unwrap_or(0))
        })
        .collect();
    for outcome in deleted {
        report.bytes_freed += outcome?;
        report.packs_deleted += 1;
    }

    // Step 10: forget sessions nobody needs any more.
    clean_sessions(
        repository,
        &state,
        &record,
        &sessions_at_start,
        &deletable,
        &existing,
    )?;
    repository.apply_prune_state(&repository.load_prune_state()?)?;
    report.requests = backend.stats();
    Ok(report)
}

/// Writes the rewritten index in objects of at most [`ENTRIES_PER_INDEX`] entries, the first
/// one superseding every index object the prune read.
struct IndexWriter<'repo> {
    repository: &'repo Repository,
    superseded: Vec<Id>,
    batch: Vec<IndexedPack>,
    entries: usize,
    written: u64,
}

impl IndexWriter<'_> {
    fn push(&mut self, pack: IndexedPack) -> Result<()> {
        if self.entries + pack.entries.len() > ENTRIES_PER_INDEX && !self.batch.is_empty() {
            self.flush()?;
        }
        self.entries += pack.entries.len();
        self.batch.push(pack);
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let object = IndexObject {
            superseded: std::mem::take(&mut self.superseded),
            packs: std::mem::take(&mut self.batch),
        };
        self.entries = 0;
        let bytes = object.encode(
            &self.repository.keys().data_key,
            self.repository.compression(),
            seal::random_nonce(),
        );
        let id = Id::of_stored_bytes(&bytes);
        self.repository.backend().put(
            &object_name("index", &id),
            Bytes::from(bytes),
            PutMode::Overwrite,
        )?;
        self.written += 1;
        Ok(())
    }

    /// Writes the last object (always one, so the superseded list is recorded); returns how
    /// many were written.
    fn finish(mut self) -> Result<u64> {
        if !self.batch.is_empty() || self.written == 0 {
            self.flush()?;
        }
        Ok(self.written)
    }
}

/// Deletes the markers of sessions that had ended when this run started and that no record with
/// packs still to delete names.
fn clean_sessions(
    repository: &Repository,
    state: &PruneState,
    record: &PruneRecord,
    sessions_at_start: &BTreeMap<SessionId, SessionStatus>,
    deleted: &[Id],
    existing: &HashMap<Id, u64>,
) -> Result<()> {
    let deleted: HashSet<&Id> = deleted.iter().collect();
    let still_there = |id: &Id| existing.contains_key(id) && !deleted.contains(id);
    let mut needed: HashSet<SessionId> = HashSet::new();
    for (generation, earlier) in state
        .records
        .iter()
        .chain(std::iter::once((&record.generation, record)))
    {
        if earlier.condemned.iter().any(still_there)
            && let Some(list) = state.inflight.get(generation)
        {
            needed.extend(list.sessions.iter().copied());
        }
    }
    let removable: Vec<SessionId> = sessions_at_start
        .values()
        .filter(|status| status.ended && !needed.contains(&status.session))
        .map(|status| status.session)
        .collect();
    let outcomes: Vec<Result<()>> = removable
        .par_iter()
        .map(|session| {
            // The start marker first: a session with only an end marker is still "ended".
            repository
                .backend()
                .delete(&lifecycle::session_name(session))?;
            repository
                .backend()
                .delete(&lifecycle::session_end_name(session))?;
            Ok(())
        })
        .collect();
    outcomes.into_iter().collect()
}
