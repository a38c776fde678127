//! The check use case: verify that every snapshot's trees and chunks are indexed, every indexed
//! pack exists with the recorded size, and (with a [`DataSelection`]) that the chosen packs'
//! bytes match their names and every blob in them authenticates. Damage is reported as objects →
//! snapshots → files.
//!
//! Works from the remote index objects, never from the local cache's index, so a stale or
//! damaged cache cannot hide damage. The cache only remembers when each pack was last verified
//! whole, to choose the packs of the rotating sweep ([`crate::policy::sweep`]). Never prints.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::ControlFlow;

use rayon::prelude::*;

use crate::crypto::id::{BlobType, Id};
use crate::error::{Error, Result};
use crate::format::pack::{self, PackEntry};
use crate::format::pack_stream::BlobCutter;
use crate::format::tree::{NodeKind, Tree};
use crate::index::cache::BlobLocation;
use crate::policy::sweep::{self, Coverage, PackSize, Slice};
use crate::repo::repository::{
    DATA_PREFIX, INDEX_PREFIX, Repository, SNAPSHOTS_PREFIX, id_from_name, pack_name,
};

/// Which packs a check downloads and verifies whole (blob by blob) besides the structure.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum DataSelection {
    /// None: structure only (indexes, trees, pack sizes).
    #[default]
    Structure,
    /// Every pack.
    All,
    /// A random share of the packs (by count, at least one), chosen by `seed`.
    Sample {
        /// The share, above 0 and at most 1.
        fraction: f64,
        /// Chooses which packs.
        seed: u64,
    },
    /// A deterministic slice: `of` checks with every part read every pack once.
    Slice(Slice),
    /// The rotating sweep: the packs verified longest ago (per the local cache), about
    /// `1/days` of the bytes, so that daily runs re-read everything every `days` days.
    Rotate {
        /// The period of the sweep, in days (at least 1).
        days: u32,
    },
}

/// How thorough a check is.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CheckOptions {
    /// Which packs to download and verify.
    pub data: DataSelection,
}

impl CheckOptions {
    /// Structure and every byte (`--read-data`).
    pub fn read_all() -> Self {
        Self {
            data: DataSelection::All,
        }
    }
}

/// A file or directory of a snapshot whose content cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AffectedPath {
    /// The snapshot.
    pub snapshot: Id,
    /// The path inside it.
    pub path: String,
    /// The damaged or missing object it depends on.
    pub object: String,
}

/// The findings of a check.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Snapshots checked.
    pub snapshots: usize,
    /// Distinct trees walked.
    pub trees: usize,
    /// Packs listed.
    pub packs: usize,
    /// Packs the data selection chose to download (intact ones only: packs already missing or
    /// of the wrong size are damaged without a download).
    pub packs_selected: usize,
    /// Packs downloaded and verified without damage.
    pub packs_read: usize,
    /// Bytes of the packs downloaded and verified without damage.
    pub bytes_read: u64,
    /// With [`DataSelection::Rotate`]: how much of the repository has now been verified within
    /// the sweep's period.
    pub coverage: Option<Coverage>,
    /// Why the verification times could not be saved to the local cache, if they could not (the
    /// check's findings stand; the next sweep may repeat packs).
    pub history_not_saved: Option<String>,
    /// Damaged or missing objects → what is wrong.
    pub damaged: BTreeMap<String, String>,
    /// Snapshot paths that depend on damaged or missing objects.
    pub affected: BTreeSet<AffectedPath>,
    /// Packs present but in no index, not read by `check`: an interrupted backup leaves such
    /// packs (the next backup indexes those whose trailer reads), but what they hold is unknown.
    pub unindexed_packs: Vec<String>,
    /// Files interrupted uploads left in a local directory (not objects, not damage; `prune`
    /// removes them once [`crate::backend::StagingFile::is_abandoned`]).
    pub staging_files: Vec<crate::backend::StagingFile>,
}

impl CheckReport {
    /// Whether nothing is damaged.
    pub fn is_ok(&self) -> bool {
        self.damaged.is_empty() && self.affected.is_empty()
    }
}

/// Damage found inside one tree, relative to it: `(path, object)`.
type TreeDamage = Vec<(String, String)>;

struct Checker<'repo> {
    repository: &'repo Repository,
    index: HashMap<Id, BlobLocation>,
    /// Blobs that exist in the index but whose pack is missing or damaged → the object to blame.
    bad_blobs: HashMap<Id, String>,
    memo: HashMap<Id, std::sync::Arc<TreeDamage>>,
    report: CheckReport,
    /// Pack lengths from the index, to decide whether a tree pack is read whole.
    pack_lengths: HashMap<Id, u64>,
    /// The last few tree packs read whole: trees of one pack are visited in no particular order,
    /// so one download serves them all instead of one request per directory.
    tree_packs: std::collections::VecDeque<(Id, bytes::Bytes)>,
    /// A store failure that stops the check (as opposed to damage, which is reported).
    failure: Option<Error>,
}

/// Tree packs up to this size are read whole by `check`.
const WHOLE_TREE_PACK: u64 = 32 * 1024 * 1024;
/// Tree packs kept in memory at once by `check`.
const TREE_PACKS_KEPT: usize = 4;

impl Checker<'_> {
    /// The sealed bytes of a tree blob: from a tree pack read whole, or a ranged read.
    fn sealed_tree(&mut self, location: &BlobLocation) -> crate::Result<bytes::Bytes> {
        let range = location.entry.range();
        #[allow(clippy::cast_possible_truncation)]
        let slice = |pack: &bytes::Bytes| pack.slice(range.start as usize..range.end as usize);
        if let Some((_, pack)) = self
            .tree_packs
            .iter()
            .find(|(pack_id, _)| *pack_id == location.pack_id)
        {
            return Ok(slice(pack));
        }
        let name = pack_name(&location.pack_id);
        let length = self.pack_lengths.get(&location.pack_id).copied();
        match length {
            Some(length) if length <= WHOLE_TREE_PACK => {
                let pack = self.repository.backend().get(&name)?;
                if (pack.len() as u64) < range.end {
                    return Err(Error::Damaged {
                        object: name,
                        reason: "shorter than its index says".into(),
                    });
                }
                let sealed = slice(&pack);
                if self.tree_packs.len() == TREE_PACKS_KEPT {
                    self.tree_packs.pop_front();
                }
                self.tree_packs.push_back((location.pack_id, pack));
                Ok(sealed)
            }
            _ => Ok(self.repository.backend().get_range(&name, range)?),
        }
    }

    /// Reads and decodes a tree; `Err(object)` names what is damaged or missing. A store
    /// failure other than a missing object is kept in `failure` and stops the check.
    fn read_tree(&mut self, id: &Id) -> std::result::Result<Tree, String> {
        let location = *self
            .index
            .get(id)
            .filter(|location| location.entry.blob_type == BlobType::Tree)
            .ok_or_else(|| format!("tree blob {id}"))?;
        let name = pack_name(&location.pack_id);
        let sealed = match self.sealed_tree(&location) {
            Ok(sealed) => sealed,
            Err(
                error @ Error::Backend(
                    crate::backend::BackendError::Failed { .. }
                    | crate::backend::BackendError::AccessDenied { .. },
                ),
            ) => {
                self.failure.get_or_insert(error);
                return Err(name);
            }
            Err(_) => return Err(name),
        };
        let plaintext = self
            .repository
            .open_blob_bytes(&location, &sealed)
            .map_err(|_| format!("tree blob {id} in {name}"))?;
        Tree::decode(&plaintext).map_err(|_| format!("tree blob {id} in {name}"))
    }

    /// Damage below tree `id`, memoised so shared trees are walked once.
    fn tree_damage(&mut self, id: &Id) -> std::sync::Arc<TreeDamage> {
        if let Some(known) = self.memo.get(id) {
            return std::sync::Arc::clone(known);
        }
        self.report.trees += 1;
        let mut damage = TreeDamage::new();
        if let Some(object) = self.bad_blobs.get(id) {
            damage.push((String::new(), object.clone()));
        } else {
            match self.read_tree(id) {
                Err(object) => {
                    let reason = if self.index.contains_key(id) {
                        "unreadable or does not decode"
                    } else {
                        "missing from the index"
                    };
                    self.report
                        .damaged
                        .entry(object.clone())
                        .or_insert_with(|| reason.into());
                    damage.push((String::new(), object));
                }
                Ok(tree) => {
                    for node in tree.nodes {
                        let name = String::from_utf8_lossy(&node.name).into_owned();
                        match node.kind {
                            NodeKind::Directory { subtree } => {
                                for (path, object) in self.tree_damage(&subtree).iter() {
                                    let joined = if path.is_empty() {
                                        name.clone()
                                    } else {
                                        format!("{name}/{path}")
                                    };
                                    damage.push((joined, object.clone()));
                                }
                            }
                            NodeKind::File { chunks, .. } => {
                                if let Some(object) = self.first_bad_chunk(&chunks) {
                                    damage.push((name, object));
                                }
                            }
                            NodeKind::Symlink { .. } | NodeKind::Fifo | NodeKind::Device { .. } => {
                            }
                        }
                    }
                }
            }
        }
        let damage = std::sync::Arc::new(damage);
        self.memo.insert(*id, std::sync::Arc::clone(&damage));
        damage
    }

    fn first_bad_chunk(&mut self, chunks: &[Id]) -> Option<String> {
        let mut first = None;
        for chunk in chunks {
            let object = match self.index.get(chunk) {
                Some(location) if location.entry.blob_type == BlobType::Data => {
                    match self.bad_blobs.get(chunk) {
                        Some(object) => object.clone(),
                        None => continue,
                    }
                }
                _ => {
                    let object = format!("data blob {chunk}");
                    self.report
                        .damaged
                        .entry(object.clone())
                        .or_insert_with(|| "missing from the index".into());
                    object
                }
            };
            first.get_or_insert(object);
        }
        first
    }
}

/// Downloads one pack of `length` bytes and verifies its name, trailer and every blob against
/// the index entries `indexed` (sorted by offset). The pack streams by
/// ([`crate::backend::Backend::get_range_pieces`]): it is hashed as it arrives, its indexed
/// blobs are cut out and opened on the way ([`BlobCutter`]), and only its header and its tail
/// (after the last indexed blob: the trailer) are kept, so memory is a piece, a blob and the
/// trailer, not the pack. Failures are reported in the order a whole-pack read finds them:
/// name, trailer, index disagreement, then the first bad blob.
fn verify_pack(
    repository: &Repository,
    pack_id: &Id,
    indexed: &[PackEntry],
    length: u64,
) -> std::result::Result<u64, String> {
    let name = pack_name(pack_id);
    let header_length = crate::format::codec::ObjectHeader::LEN;
    let ranges: Vec<std::ops::Range<u64>> = indexed.iter().map(PackEntry::range).collect();
    let tail_start = ranges
        .iter()
        .map(|range| range.end)
        .max()
        .unwrap_or(0)
        .max(header_length as u64)
        .min(length);
    let mut cutter = BlobCutter::new(0, &ranges);
    let mut hasher = blake3::Hasher::new();
    let mut head: Vec<u8> = Vec::with_capacity(header_length);
    let mut tail: Vec<u8> = Vec::new();
    let mut position = 0u64;
    // The first blob (by offset) that fails to open, and why.
    let mut bad_blob: Option<(u64, String)> = None;
    let open = |entry: &PackEntry, sealed: &[u8]| {
        let location = BlobLocation {
            pack_id: *pack_id,
            entry: *entry,
        };
        repository
            .open_blob_with(&location, sealed, |_| ())
            .err()
            .map(|error| (u64::from(entry.offset), error.to_string()))
    };
    repository
        .backend()
        .get_range_pieces(&name, 0..length, &mut |piece| {
            hasher.update(piece);
            let piece_start = position;
            position += piece.len() as u64;
            let head_missing = header_length.saturating_sub(head.len());
            head.extend_from_slice(&piece[..head_missing.min(piece.len())]);
            if position > tail_start {
                let from = usize::try_from(tail_start.saturating_sub(piece_start)).unwrap_or(0);
                tail.extend_from_slice(&piece[from..]);
            }
            cutter.push(piece, &mut |index, sealed| {
                if bad_blob.is_none() {
                    bad_blob = open(&indexed[index], sealed);
                }
            });
            ControlFlow::Continue(())
        })
        .map_err(|error| format!("cannot read: {error}"))?;
    if Id(*hasher.finalize().as_bytes()) != *pack_id {
        return Err("content does not match its name".into());
    }
    let entries = pack::read_pack_entries_from_tail(
        &repository.keys().data_key,
        &head,
        &tail,
        tail_start,
        length,
    )
    .map_err(|error| format!("trailer: {error}"))?;
    let by_id: HashMap<Id, &PackEntry> = entries.iter().map(|entry| (entry.id, entry)).collect();
    for expected in indexed {
        if by_id.get(&expected.id).copied() != Some(expected) {
            return Err(format!(
                "index entry of blob {} disagrees with the pack trailer",
                expected.id
            ));
        }
    }
    if !cutter.undelivered().is_empty() {
        return Err("shorter than its index says".into());
    }
    // Blobs the trailer lists and the index does not (rare: an index object lost): from the
    // tail when they lie in it, else with a read of their own.
    let indexed_ids: HashSet<Id> = indexed.iter().map(|entry| entry.id).collect();
    for entry in entries
        .iter()
        .filter(|entry| !indexed_ids.contains(&entry.id))
    {
        let range = entry.range();
        let from_tail = range
            .start
            .checked_sub(tail_start)
            .and_then(|start| usize::try_from(start).ok())
            .and_then(|start| {
                let length = usize::try_from(range.end - range.start).ok()?;
                tail.get(start..start.checked_add(length)?)
            });
        let outcome = match from_tail {
            Some(sealed) => open(entry, sealed),
            None => match repository.backend().get_range(&name, range) {
                Ok(sealed) => open(entry, &sealed),
                Err(error) => return Err(format!("cannot read: {error}")),
            },
        };
        if let Some(failure) = outcome
            && bad_blob
                .as_ref()
                .is_none_or(|(offset, _)| failure.0 < *offset)
        {
            bad_blob = Some(failure);
        }
    }
    match bad_blob {
        Some((_, reason)) => Err(reason),
        None => Ok(length),
    }
}

/// The packs `selection` downloads, among the `intact` ones (sorted by id), given when each
/// was last verified (`history`, used by the rotation only).
fn choose_packs(
    selection: DataSelection,
    intact: &[PackSize],
    history: &HashMap<Id, sweep::PackVerification>,
) -> Vec<Id> {
    let ids = || intact.iter().map(|pack| pack.id);
    match selection {
        DataSelection::Structure => Vec::new(),
        DataSelection::All => ids().collect(),
        DataSelection::Sample { fraction, seed } => {
            sweep::sample_packs(&ids().collect::<Vec<_>>(), fraction, seed)
        }
        DataSelection::Slice(slice) => ids().filter(|id| slice.contains(id)).collect(),
        DataSelection::Rotate { days } => sweep::rotation_choice(intact, history, days),
    }
}

/// `packs` ordered by `length`, longest first (ties by id, so the order is deterministic):
/// handed out one at a time to whichever thread is free, the longest jobs start first and the
/// short ones fill the end.
fn longest_first(packs: &[Id], length: impl Fn(&Id) -> u64) -> Vec<Id> {
    let mut ordered = packs.to_vec();
    ordered.sort_unstable_by_key(|id| (std::cmp::Reverse(length(id)), *id));
    ordered
}

/// Seconds since the Unix epoch (0 if the clock is before it).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Receives progress while `check` downloads packs. Every method has a no-op default.
pub trait CheckProgress: Sync {
    /// The packs chosen for download: how many, and their total bytes (known upfront).
    fn packs_chosen(&self, _packs: u64, _bytes: u64) {}
    /// One pack was downloaded and verified (or found damaged); its length.
    fn pack_done(&self, _bytes: u64) {}
}

/// Progress sink that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCheckProgress;

impl CheckProgress for NoCheckProgress {}

/// Checks the repository.
///
/// # Errors
/// Backend failures while listing, or a cache failure reading the rotation's history; damage is
/// reported in the [`CheckReport`], not as an error.
pub fn check(repository: &Repository, options: CheckOptions) -> Result<CheckReport> {
    check_with_progress(repository, options, &NoCheckProgress)
}

/// As [`check`], reporting the pack downloads to `progress`.
///
/// # Errors
/// As [`check`].
pub fn check_with_progress(
    repository: &Repository,
    options: CheckOptions,
    progress: &dyn CheckProgress,
) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let backend = repository.backend();
    // Each machine cleans up after itself (FORMAT.md section 21.3): best effort, so that a
    // check with read-only credentials still runs.
    crate::ops::sessions::end_dead_sessions_best_effort(repository);
    // Packs a prune condemned may be gone or unindexed: neither is damage by itself (a blob a
    // snapshot needs that is nowhere else still is).
    let condemned = repository.load_prune_state()?.condemned;
    let packs: HashMap<Id, u64> = backend
        .list(DATA_PREFIX)?
        .into_iter()
        .filter_map(|info| id_from_name(&info.name).map(|id| (id, info.size)))
        .collect();
    report.packs = packs.len();
    for (name, reason) in repository.damaged_key_objects()? {
        report.damaged.insert(name, reason);
    }

    let index_names = backend.list(INDEX_PREFIX)?;
    let loaded: Vec<(String, Result<(Id, crate::format::index::IndexObject)>)> = index_names
        .par_iter()
        .map(|info| (info.name.clone(), repository.load_index_object(&info.name)))
        .collect();
    let mut index: HashMap<Id, BlobLocation> = HashMap::new();
    let mut pack_entries: HashMap<Id, Vec<PackEntry>> = HashMap::new();
    let mut indexed_lengths: HashMap<Id, u64> = HashMap::new();
    for (name, outcome) in loaded {
        match outcome {
            Ok((_, object)) => {
                for pack in object.packs {
                    if condemned.contains(&pack.pack_id) && !packs.contains_key(&pack.pack_id) {
                        continue; // deleted by a prune; listed by an index object not yet rewritten
                    }
                    indexed_lengths.insert(pack.pack_id, pack.pack_length);
                    let entries = pack_entries.entry(pack.pack_id).or_default();
                    for entry in pack.entries {
                        index.entry(entry.id).or_insert(BlobLocation {
                            pack_id: pack.pack_id,
                            entry,
                        });
                        entries.push(entry);
                    }
                }
            }
            Err(error @ Error::Backend(_)) => return Err(error),
            Err(error) => {
                report.damaged.insert(name, error.to_string());
            }
        }
    }
    for entries in pack_entries.values_mut() {
        entries.sort_by_key(|entry| entry.offset);
        entries.dedup();
    }

    let mut bad_packs: HashMap<Id, String> = HashMap::new();
    for (pack_id, indexed_length) in &indexed_lengths {
        let name = pack_name(pack_id);
        match packs.get(pack_id) {
            None => {
                report.damaged.insert(name.clone(), "missing".into());
                bad_packs.insert(*pack_id, name);
            }
            Some(size) if size != indexed_length => {
                report.damaged.insert(
                    name.clone(),
                    format!("size {size} but the index says {indexed_length}"),
                );
                bad_packs.insert(*pack_id, name);
            }
            Some(_) => {}
        }
    }
    let mut unindexed: Vec<String> = packs
        .keys()
        .filter(|id| !indexed_lengths.contains_key(id) && !condemned.contains(id))
        .map(pack_name)
        .collect();
    unindexed.sort();
    report.unindexed_packs = unindexed;
    report.staging_files = repository.backend().staging_files()?;

    let intact: Vec<PackSize> = {
        let mut intact: Vec<PackSize> = pack_entries
            .keys()
            .filter(|id| !bad_packs.contains_key(id))
            .map(|id| PackSize {
                id: *id,
                length: indexed_lengths.get(id).copied().unwrap_or(0),
            })
            .collect();
        intact.sort_unstable_by_key(|pack| pack.id);
        intact
    };
    let history = match options.data {
        DataSelection::Rotate { .. } => repository.cache().pack_verifications()?,
        _ => HashMap::new(),
    };
    let chosen = choose_packs(options.data, &intact, &history);
    report.packs_selected = chosen.len();
    let chosen_length = |id: &Id| indexed_lengths.get(id).copied().unwrap_or(0);
    progress.packs_chosen(chosen.len() as u64, chosen.iter().map(chosen_length).sum());
    // Downloads run on the I/O pool (as many as restore runs at once, `--download-concurrency`), one pack
    // per task: a pack is verified as it streams, so a download in flight is also a core busy
    // verifying, and more packs in flight than cores keeps a core busy while another's bytes
    // wait for the store. Each free thread takes the longest pack not yet started
    // ([`longest_first`]), so the run does not end with one core verifying a full pack alone
    // while the others finished small ones.
    let mut verified: Vec<(Id, std::result::Result<u64, String>)> =
        repository.io_pool().install(|| {
            longest_first(&chosen, chosen_length)
                .into_iter()
                .par_bridge()
                .map(|id| {
                    let entries = pack_entries.get(&id).map_or(&[][..], Vec::as_slice);
                    let outcome = verify_pack(repository, &id, entries, chosen_length(&id));
                    progress.pack_done(chosen_length(&id));
                    (id, outcome)
                })
                .collect()
        });
    verified.sort_unstable_by_key(|(id, _)| *id);
    let mut verified_ok = Vec::new();
    for (pack_id, outcome) in verified {
        match outcome {
            Ok(bytes) => {
                report.packs_read += 1;
                report.bytes_read += bytes;
                verified_ok.push(pack_id);
            }
            Err(reason) => {
                let name = pack_name(&pack_id);
                report.damaged.insert(name.clone(), reason);
                bad_packs.insert(pack_id, name);
            }
        }
    }
    let now = unix_now();
    let mut sweep_number = None;
    if !verified_ok.is_empty() {
        let existing: HashSet<Id> = packs.keys().copied().collect();
        match repository
            .cache()
            .record_pack_verifications(&verified_ok, now, &existing)
        {
            Ok(number) => sweep_number = Some(number),
            Err(error) => report.history_not_saved = Some(error.to_string()),
        }
    }
    if let DataSelection::Rotate { days } = options.data {
        let mut history = history;
        for pack_id in &verified_ok {
            let verification = sweep::PackVerification {
                sweep: sweep_number.unwrap_or(u64::MAX),
                unix_seconds: now,
            };
            history.insert(*pack_id, verification);
        }
        report.coverage = Some(sweep::coverage(&intact, &history, days, now));
    }

    let bad_blobs: HashMap<Id, String> = index
        .values()
        .filter_map(|location| {
            bad_packs
                .get(&location.pack_id)
                .map(|name| (location.entry.id, name.clone()))
        })
        .collect();
    let mut checker = Checker {
        repository,
        index,
        bad_blobs,
        memo: HashMap::new(),
        report,
        pack_lengths: indexed_lengths,
        tree_packs: std::collections::VecDeque::new(),
        failure: None,
    };
    let snapshot_names = backend.list(SNAPSHOTS_PREFIX)?;
    let mut seen_roots = HashSet::new();
    for info in snapshot_names {
        match repository.load_snapshot(&info.name) {
            Ok((snapshot_id, snapshot)) => {
                checker.report.snapshots += 1;
                seen_roots.insert(snapshot.root);
                for (path, object) in checker.tree_damage(&snapshot.root).iter() {
                    checker.report.affected.insert(AffectedPath {
                        snapshot: snapshot_id,
                        path: format!("/{path}"),
                        object: object.clone(),
                    });
                }
            }
            Err(error @ Error::Backend(_)) => return Err(error),
            Err(error) => {
                checker.report.damaged.insert(info.name, error.to_string());
            }
        }
    }
    if let Some(failure) = checker.failure {
        return Err(failure);
    }
    Ok(checker.report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_are_verified_longest_first_and_ties_keep_a_fixed_order() {
        let lengths: HashMap<Id, u64> = [(1, 5), (2, 17), (3, 0), (4, 17), (5, 9), (6, 17)]
            .into_iter()
            .map(|(byte, length)| (Id([byte; 32]), length))
            .collect();
        let length = |id: &Id| lengths[id];
        for rotation in 0..lengths.len() {
            let mut packs: Vec<Id> = lengths.keys().copied().collect();
            packs.sort_unstable();
            packs.rotate_left(rotation);
            let order: Vec<u8> = longest_first(&packs, length)
                .iter()
                .map(|id| id.0[0])
                .collect();
            assert_eq!(order, [2, 4, 6, 5, 1, 3], "rotation {rotation}");
        }
        assert!(longest_first(&[], length).is_empty());
    }
}
