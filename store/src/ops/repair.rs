//! Repair: rebuild the index from the packs' trailers ([`repair_index`]), and write repaired
//! copies of snapshots that reference lost or damaged data ([`repair_snapshots`]).
//!
//! Owns no bytes of its own: index objects, trees and snapshots are written exactly as prune and
//! backup write them. Deletes only what FORMAT.md sections 14 and 21 allow: superseded index
//! objects (under the prune lease, after their replacements are stored) and, when asked, an
//! original snapshot after its repaired copy is stored. Never prints.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rayon::prelude::*;

use crate::backend::{BackendError, ObjectInfo, PutMode};
use crate::crypto::id::{BlobType, Id};
use crate::crypto::seal;
use crate::error::{Error, ErrorKind, Result};
use crate::format::index::{IndexObject, IndexedPack};
use crate::format::pack::SealedBlob;
use crate::format::snapshot::{Snapshot, Summary};
use crate::format::tree::{NodeKind, Tree};
use crate::index::cache::BlobLocation;
use crate::repo::lifecycle::BackupSession;
use crate::repo::repository::{
    DATA_PREFIX, INDEX_PREFIX, Repository, id_from_name, object_name, pack_name,
};
use crate::repo::saver::BlobSaver;

/// Index entries per index object written by `repair index` (as prune: about 45 MiB of body).
const ENTRIES_PER_INDEX: usize = 1_000_000;
/// Tree packs up to this size are read whole while walking trees.
const WHOLE_TREE_PACK: u64 = 32 * 1024 * 1024;
/// Tree packs kept in memory at once while walking trees.
const TREE_PACKS_KEPT: usize = 4;

/// The tag every repaired snapshot carries.
pub const REPAIRED_TAG: &str = "repaired";

/// The text of an error without the object name it repeats.
fn reason_of(error: &Error) -> String {
    match error {
        Error::Damaged { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

/// Whether an error means the store could not be asked (retry later), as opposed to damage.
fn is_store_failure(error: &Error) -> bool {
    match error {
        Error::Backend(BackendError::NotFound { .. }) => false,
        Error::Backend(_) => true,
        other => other.kind() != ErrorKind::BadData,
    }
}

// ---------------------------------------------------------------------------------------------
// repair index
// ---------------------------------------------------------------------------------------------

/// How `repair index` runs.
#[derive(Debug, Clone)]
pub struct RepairIndexOptions {
    /// The prune lease's time to live without renewal (renewed every third of it).
    pub lease_ttl: Duration,
}

impl Default for RepairIndexOptions {
    fn default() -> Self {
        Self {
            lease_ttl: Duration::from_mins(15),
        }
    }
}

/// A pack whose trailer could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadablePack {
    /// Its object name.
    pub name: String,
    /// What failed.
    pub reason: String,
    /// An index object being replaced listed it with its exact length: its entries were carried
    /// into the new index (the trailer may be the only damaged part), so nothing known is lost.
    pub entries_kept: bool,
}

/// What `repair index` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairIndexReport {
    /// Packs whose trailer was read and indexed.
    pub packs_read: u64,
    /// Packs whose trailer could not be read.
    pub packs_unreadable: Vec<UnreadablePack>,
    /// Indexed packs that a prune record condemns (listed, as prune lists them until it deletes
    /// them; the records still condemn them, so nobody relies on them).
    pub packs_condemned: u64,
    /// Blob entries in the new index objects.
    pub blobs_indexed: u64,
    /// Index objects written.
    pub index_written: u64,
    /// Superseded index objects deleted.
    pub index_removed: u64,
    /// Superseded index objects left in place because deleting is refused (append-only).
    pub index_kept: u64,
}

/// Rebuilds the repository's index from the packs: lists `index/` then `data/`, reads every
/// pack's trailer (two ranged reads each, on the I/O pool), writes new index objects that
/// supersede every index object listed, then deletes those. Holds the prune lease so that no
/// prune rewrites the index meanwhile. When deleting is refused (append-only) it takes no lease
/// (it deletes nothing), and the old index objects stay beside the new ones (harmless
/// duplicates).
///
/// # Errors
/// [`Error::PruneLeaseHeld`], backend failures (a pack that cannot be *reached* stops the repair
/// before anything is written, so no pack is left out of the index for a network error), or
/// cache failures. Damaged packs are reported, not errors.
pub fn repair_index(
    repository: &Repository,
    options: &RepairIndexOptions,
) -> Result<RepairIndexReport> {
    let may_delete = repository.ensure_may_delete("repair index").is_ok();
    let report = if may_delete {
        repository.with_prune_lease(
            options.lease_ttl,
            &crate::ops::sessions::lease_holder_gone,
            || rebuild_index(repository, true),
        )?
    } else {
        rebuild_index(repository, false)?
    };
    repository.sync_index()?;
    Ok(report)
}

fn rebuild_index(repository: &Repository, delete_superseded: bool) -> Result<RepairIndexReport> {
    let backend = repository.backend();
    let state = repository.load_prune_state()?;
    repository.apply_prune_state(&state)?;
    // Index objects first, then packs: a pack is stored before any index object lists it, so
    // every pack a superseded index object lists is in the pack listing. Index objects written
    // after this listing are not superseded and stay.
    let superseded: Vec<Id> = backend
        .list(INDEX_PREFIX)?
        .iter()
        .filter_map(|info| id_from_name(&info.name))
        .collect();
    let packs: Vec<ObjectInfo> = backend
        .list(DATA_PREFIX)?
        .into_iter()
        .filter(|info| id_from_name(&info.name).is_some())
        .collect();
    let trailers: Vec<Result<IndexedPack>> = repository.io_pool().install(|| {
        packs
            .par_iter()
            .map(|info| repository.read_pack_trailer(info))
            .collect()
    });
    let mut report = RepairIndexReport::default();
    let mut indexed: Vec<IndexedPack> = Vec::with_capacity(packs.len());
    let mut unreadable: Vec<(&ObjectInfo, String)> = Vec::new();
    for (info, outcome) in packs.iter().zip(trailers) {
        match outcome {
            Ok(pack) => {
                report.packs_read += 1;
                indexed.push(pack);
            }
            // Deleted since the listing: there is nothing to index.
            Err(Error::Backend(BackendError::NotFound { .. })) => {}
            Err(error) if is_store_failure(&error) => return Err(error),
            Err(error) => unreadable.push((info, reason_of(&error))),
        }
    }
    if !unreadable.is_empty() {
        let mut listed = listed_packs(repository, &superseded)?;
        for (info, reason) in unreadable {
            let kept = id_from_name(&info.name)
                .and_then(|id| listed.remove(&id))
                .filter(|pack| pack.pack_length == info.size);
            report.packs_unreadable.push(UnreadablePack {
                name: info.name.clone(),
                reason,
                entries_kept: kept.is_some(),
            });
            indexed.extend(kept);
        }
    }
    indexed.sort_by_key(|pack| pack.pack_id);
    report.packs_condemned = indexed
        .iter()
        .filter(|pack| state.condemned.contains(&pack.pack_id))
        .count() as u64;
    report.blobs_indexed = indexed.iter().map(|pack| pack.entries.len() as u64).sum();
    if indexed.is_empty() && superseded.is_empty() {
        return Ok(report);
    }

    let mut batches: Vec<Vec<IndexedPack>> = vec![Vec::new()];
    let mut entries_in_batch = 0;
    for pack in indexed {
        if entries_in_batch + pack.entries.len() > ENTRIES_PER_INDEX && entries_in_batch > 0 {
            batches.push(Vec::new());
            entries_in_batch = 0;
        }
        entries_in_batch += pack.entries.len();
        batches.last_mut().expect("one batch").push(pack);
    }
    let mut written: HashSet<Id> = HashSet::new();
    for (position, packs) in batches.into_iter().enumerate() {
        let object = IndexObject {
            superseded: if position == 0 {
                superseded.clone()
            } else {
                Vec::new()
            },
            packs,
        };
        let bytes = object.encode(
            &repository.keys().data_key,
            repository.compression(),
            seal::random_nonce(),
        );
        let id = Id::of_stored_bytes(&bytes);
        backend.put(
            &object_name(INDEX_PREFIX, &id),
            Bytes::from(bytes),
            PutMode::Overwrite,
        )?;
        written.insert(id);
        report.index_written += 1;
    }

    // Only now that every replacement is stored: a crash before this leaves duplicates.
    let old: Vec<Id> = superseded
        .into_iter()
        .filter(|id| !written.contains(id))
        .collect();
    if !delete_superseded {
        report.index_kept = old.len() as u64;
        return Ok(report);
    }
    let removed: Vec<Result<()>> = repository.io_pool().install(|| {
        old.par_iter()
            .map(|id| match backend.delete(&object_name(INDEX_PREFIX, id)) {
                Ok(()) | Err(BackendError::NotFound { .. }) => Ok(()),
                Err(error) => Err(error.into()),
            })
            .collect()
    });
    for outcome in removed {
        outcome?;
        report.index_removed += 1;
    }
    Ok(report)
}

/// The packs the index objects `ids` list (the first listing of each pack wins); index objects
/// that are damaged are skipped.
fn listed_packs(repository: &Repository, ids: &[Id]) -> Result<HashMap<Id, IndexedPack>> {
    let loaded: Vec<Result<(Id, IndexObject)>> = repository.io_pool().install(|| {
        ids.par_iter()
            .map(|id| repository.load_index_object(&object_name(INDEX_PREFIX, id)))
            .collect()
    });
    let mut listed = HashMap::new();
    for outcome in loaded {
        match outcome {
            Ok((_, object)) => {
                for pack in object.packs {
                    listed.entry(pack.pack_id).or_insert(pack);
                }
            }
            Err(error) if is_store_failure(&error) => return Err(error),
            Err(_) => {}
        }
    }
    Ok(listed)
}

// ---------------------------------------------------------------------------------------------
// Rewriting trees without what is lost (no I/O: the source supplies trees and stores new ones)
// ---------------------------------------------------------------------------------------------

/// Whether a dropped entry was a file or a whole directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DroppedKind {
    /// A file one of whose chunks is lost or damaged.
    File,
    /// A directory whose tree is lost or damaged (with everything below it).
    Directory,
}

/// An entry left out of a repaired tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedEntry {
    /// Its path: relative to the tree repaired, or from the snapshot's root (`/…`) in reports.
    pub path: String,
    /// A file or a directory.
    pub kind: DroppedKind,
    /// The recorded size of a file (0 for directories).
    pub size: u64,
    /// The lost or damaged object it needs.
    pub object: String,
}

/// What repairing one tree gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeRepair {
    /// Nothing below it is lost: it is kept as it is.
    Intact,
    /// Entries below it were dropped: the id of the rewritten tree.
    Rewritten(Id),
    /// The tree itself is lost (the named object): its directory is dropped.
    Lost(String),
}

/// One repaired tree and what was dropped below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairedTree {
    /// Kept, rewritten or lost.
    pub outcome: TreeRepair,
    /// Entries dropped below it, with paths relative to it.
    pub dropped: Vec<DroppedEntry>,
    /// Entries kept directly in it.
    pub kept_entries: usize,
}

/// What a tree repair reads and writes through.
pub trait TreeSource {
    /// Reads tree `id`: `Ok(Err(object))` names the lost or damaged object when it cannot be
    /// read.
    ///
    /// # Errors
    /// Failures that stop the repair (the store unreachable), as opposed to damage.
    fn tree(&mut self, id: &Id) -> Result<std::result::Result<Tree, String>>;

    /// The first lost or damaged chunk among `chunks` (named), or `None` when all are intact.
    ///
    /// # Errors
    /// Failures that stop the repair.
    fn lost_chunk(&mut self, chunks: &[Id]) -> Result<Option<String>>;

    /// Stores a rewritten tree and returns its id.
    ///
    /// # Errors
    /// Failures that stop the repair.
    fn save_tree(&mut self, tree: &Tree) -> Result<Id>;
}

/// Rewrites trees without their lost entries: a file with a lost or damaged chunk is dropped, a
/// directory whose tree is lost is dropped whole, every other entry keeps its metadata. Trees
/// shared by several snapshots are repaired once.
#[derive(Debug, Default)]
pub struct TreeRepairer {
    memo: HashMap<Id, Arc<RepairedTree>>,
}

impl TreeRepairer {
    /// Repairs tree `id` and, first, every tree below it (trees are stored bottom-up).
    ///
    /// # Errors
    /// The source's failures.
    pub fn repair(&mut self, source: &mut dyn TreeSource, id: &Id) -> Result<Arc<RepairedTree>> {
        if let Some(known) = self.memo.get(id) {
            return Ok(Arc::clone(known));
        }
        let repaired = match source.tree(id)? {
            Err(object) => RepairedTree {
                outcome: TreeRepair::Lost(object),
                dropped: Vec::new(),
                kept_entries: 0,
            },
            Ok(tree) => {
                let mut nodes = Vec::with_capacity(tree.nodes.len());
                let mut dropped = Vec::new();
                let mut changed = false;
                for mut node in tree.nodes {
                    let name = String::from_utf8_lossy(&node.name).into_owned();
                    match &node.kind {
                        NodeKind::File { chunks, .. } => {
                            if let Some(object) = source.lost_chunk(chunks)? {
                                dropped.push(DroppedEntry {
                                    path: name,
                                    kind: DroppedKind::File,
                                    size: node.size,
                                    object,
                                });
                                changed = true;
                                continue;
                            }
                        }
                        NodeKind::Directory { subtree } => {
                            let below = self.repair(source, subtree)?;
                            match &below.outcome {
                                TreeRepair::Intact => {}
                                TreeRepair::Rewritten(new_subtree) => {
                                    dropped.extend(below.dropped.iter().map(|entry| {
                                        DroppedEntry {
                                            path: format!("{name}/{}", entry.path),
                                            ..entry.clone()
                                        }
                                    }));
                                    node.kind = NodeKind::Directory {
                                        subtree: *new_subtree,
                                    };
                                    changed = true;
                                }
                                TreeRepair::Lost(object) => {
                                    dropped.push(DroppedEntry {
                                        path: name,
                                        kind: DroppedKind::Directory,
                                        size: 0,
                                        object: object.clone(),
                                    });
                                    changed = true;
                                    continue;
                                }
                            }
                        }
                        NodeKind::Symlink { .. } | NodeKind::Fifo | NodeKind::Device { .. } => {}
                    }
                    nodes.push(node);
                }
                let kept_entries = nodes.len();
                let outcome = if changed {
                    TreeRepair::Rewritten(source.save_tree(&Tree { nodes })?)
                } else {
                    TreeRepair::Intact
                };
                RepairedTree {
                    outcome,
                    dropped,
                    kept_entries,
                }
            }
        };
        let repaired = Arc::new(repaired);
        self.memo.insert(*id, Arc::clone(&repaired));
        Ok(repaired)
    }
}

// ---------------------------------------------------------------------------------------------
// repair snapshots
// ---------------------------------------------------------------------------------------------

/// How `repair snapshots` runs.
#[derive(Debug, Clone, Default)]
pub struct RepairSnapshotsOptions {
    /// Snapshots to repair (ids, prefixes or `latest`); empty means every snapshot.
    pub snapshots: Vec<String>,
    /// Also download every indexed pack and authenticate every blob, so damaged content (not
    /// only missing content) is found.
    pub read_data: bool,
    /// Delete each original after its repaired snapshot is stored.
    pub forget: bool,
    /// Report what would change; write and delete nothing.
    pub dry_run: bool,
    /// Host recorded in the session marker.
    pub host: String,
    /// The cairn version recorded in repaired snapshots.
    pub program_version: String,
}

/// One damaged snapshot and what was done about it.
#[derive(Debug, Clone)]
pub struct SnapshotRepair {
    /// The original snapshot's id.
    pub original: Id,
    /// The original snapshot.
    pub snapshot: Snapshot,
    /// What the repaired snapshot leaves out, with paths from its root.
    pub dropped: Vec<DroppedEntry>,
    /// The repaired snapshot: written now, or found from an earlier repair. `None` on a dry run
    /// or when nothing could be salvaged.
    pub repaired: Option<Id>,
    /// An earlier `repair snapshots` already wrote the repaired snapshot `repaired`.
    pub already_repaired: bool,
    /// Why no repaired snapshot could be written (the original is then left as it is).
    pub unrepairable: Option<String>,
    /// The original was deleted (`forget`).
    pub forgotten: bool,
}

/// What `repair snapshots` found and did.
#[derive(Debug, Clone, Default)]
pub struct RepairSnapshotsReport {
    /// Snapshots walked.
    pub snapshots_checked: usize,
    /// The damaged ones.
    pub damaged: Vec<SnapshotRepair>,
    /// Snapshot objects that cannot be read at all (name, reason): nothing to repair from.
    pub unreadable_snapshots: Vec<(String, String)>,
    /// Index objects that cannot be read: their packs' blobs count as lost; `repair index`
    /// first recovers them.
    pub damaged_index: Vec<String>,
    /// Packs downloaded and verified (with `read_data`).
    pub packs_read: u64,
    /// Bytes downloaded for verification.
    pub bytes_read: u64,
    /// Rewritten trees stored.
    pub trees_written: u64,
    /// Blobs copied out of condemned packs so the repaired snapshots do not rely on them.
    pub blobs_copied: u64,
    /// Bytes of packs and index objects written.
    pub bytes_added: u64,
}

/// Where blobs are according to the index objects in the store (not the local cache, which
/// could hide damage), and which copies cannot be used.
#[derive(Debug, Default)]
struct BlobMap {
    locations: HashMap<Id, Vec<BlobLocation>>,
    pack_lengths: HashMap<Id, u64>,
    /// Packs missing, of another length than indexed, or unreadable → reason.
    bad_packs: HashMap<Id, String>,
    /// `(pack, blob)` copies that failed verification (`read_data`).
    bad_copies: HashSet<(Id, Id)>,
    condemned: HashSet<Id>,
}

impl BlobMap {
    /// A usable copy of the blob: in a pack that is not condemned if there is one.
    fn usable(&self, blob_type: BlobType, id: &Id) -> Option<BlobLocation> {
        let mut fallback = None;
        for location in self.locations.get(id)? {
            if location.entry.blob_type != blob_type
                || self.bad_packs.contains_key(&location.pack_id)
                || self.bad_copies.contains(&(location.pack_id, *id))
            {
                continue;
            }
            if !self.condemned.contains(&location.pack_id) {
                return Some(*location);
            }
            fallback.get_or_insert(*location);
        }
        fallback
    }

    /// Names what makes a blob unusable, as `check` names it.
    fn lost_object(&self, blob_type: BlobType, id: &Id) -> String {
        let copy = self
            .locations
            .get(id)
            .and_then(|copies| copies.iter().find(|copy| copy.entry.blob_type == blob_type));
        match copy {
            None => format!("{} blob {id}", blob_type.name()),
            Some(copy) if self.bad_packs.contains_key(&copy.pack_id) => pack_name(&copy.pack_id),
            Some(copy) => format!(
                "{} blob {id} in {}",
                blob_type.name(),
                pack_name(&copy.pack_id)
            ),
        }
    }
}

/// Reads the index objects in the store and, with `read_data`, verifies every blob of every
/// indexed pack.
fn build_blob_map(
    repository: &Repository,
    read_data: bool,
    report: &mut RepairSnapshotsReport,
) -> Result<BlobMap> {
    let backend = repository.backend();
    let mut map = BlobMap {
        condemned: repository.load_prune_state()?.condemned,
        ..BlobMap::default()
    };
    let existing: HashMap<Id, u64> = backend
        .list(DATA_PREFIX)?
        .into_iter()
        .filter_map(|info| id_from_name(&info.name).map(|id| (id, info.size)))
        .collect();
    let names: Vec<ObjectInfo> = backend
        .list(INDEX_PREFIX)?
        .into_iter()
        .filter(|info| id_from_name(&info.name).is_some())
        .collect();
    let loaded: Vec<Result<(Id, IndexObject)>> = repository.io_pool().install(|| {
        names
            .par_iter()
            .map(|info| repository.load_index_object(&info.name))
            .collect()
    });
    for (outcome, info) in loaded.into_iter().zip(&names) {
        match outcome {
            Ok((_, object)) => {
                for pack in object.packs {
                    map.pack_lengths.insert(pack.pack_id, pack.pack_length);
                    for entry in pack.entries {
                        map.locations
                            .entry(entry.id)
                            .or_default()
                            .push(BlobLocation {
                                pack_id: pack.pack_id,
                                entry,
                            });
                    }
                }
            }
            Err(error) if is_store_failure(&error) => return Err(error),
            Err(_) => report.damaged_index.push(info.name.clone()),
        }
    }
    for copies in map.locations.values_mut() {
        copies.sort_by_key(|copy| (copy.pack_id, copy.entry.offset));
        copies.dedup();
    }
    for (pack_id, length) in &map.pack_lengths {
        match existing.get(pack_id) {
            None => {
                map.bad_packs.insert(*pack_id, "missing".into());
            }
            Some(size) if size != length => {
                map.bad_packs
                    .insert(*pack_id, format!("size {size} but the index says {length}"));
            }
            Some(_) => {}
        }
    }
    if read_data {
        verify_packs(repository, &mut map, report)?;
    }
    Ok(map)
}

/// A pack's verification: its length and the blobs that failed, or why it could not be read;
/// `Err` when the store could not be reached.
type Verified = Result<std::result::Result<(u64, Vec<Id>), String>>;

/// Downloads every indexed pack that exists and authenticates each indexed blob in it: a blob
/// that fails is unusable on its own, the pack's other blobs stay usable.
fn verify_packs(
    repository: &Repository,
    map: &mut BlobMap,
    report: &mut RepairSnapshotsReport,
) -> Result<()> {
    let mut by_pack: HashMap<Id, Vec<BlobLocation>> = HashMap::new();
    for copy in map.locations.values().flatten() {
        if !map.bad_packs.contains_key(&copy.pack_id) {
            by_pack.entry(copy.pack_id).or_default().push(*copy);
        }
    }
    let by_pack: Vec<(Id, Vec<BlobLocation>)> = by_pack.into_iter().collect();
    let verified: Vec<Verified> = repository.io_pool().install(|| {
        by_pack
            .par_iter()
            .map(|(pack_id, copies)| {
                let bytes = match repository.backend().get(&pack_name(pack_id)) {
                    Ok(bytes) => bytes,
                    Err(BackendError::NotFound { .. }) => return Ok(Err("missing".into())),
                    Err(error) => return Err(error.into()),
                };
                let mut bad = Vec::new();
                for copy in copies {
                    let range = copy.entry.range();
                    let sealed = usize::try_from(range.start)
                        .ok()
                        .zip(usize::try_from(range.end).ok())
                        .and_then(|(start, end)| bytes.get(start..end));
                    let intact = sealed
                        .is_some_and(|sealed| repository.open_blob_bytes(copy, sealed).is_ok());
                    if !intact {
                        bad.push(copy.entry.id);
                    }
                }
                Ok(Ok((bytes.len() as u64, bad)))
            })
            .collect()
    });
    for ((pack_id, _), outcome) in by_pack.iter().zip(verified) {
        match outcome? {
            Ok((length, bad)) => {
                report.packs_read += 1;
                report.bytes_read += length;
                map.bad_copies
                    .extend(bad.into_iter().map(|blob_id| (*pack_id, blob_id)));
            }
            Err(reason) => {
                map.bad_packs.insert(*pack_id, reason);
            }
        }
    }
    Ok(())
}

/// The [`TreeSource`] of a real repository: reads trees from the store (never the cache),
/// checks chunks against the [`BlobMap`], stores rewritten trees through a [`BlobSaver`] (none
/// on a dry run), and remembers the packs the repaired snapshots rely on.
struct StoreSource<'map, 'repo> {
    repository: &'repo Repository,
    map: &'map BlobMap,
    saver: Option<BlobSaver<'repo>>,
    relied: HashSet<Id>,
    trees_written: u64,
    blobs_copied: u64,
    tree_packs: VecDeque<(Id, Bytes)>,
}

impl StoreSource<'_, '_> {
    /// The sealed bytes of a blob copy: from a tree pack read whole, or a ranged read.
    fn sealed(&mut self, location: &BlobLocation) -> std::result::Result<Bytes, BackendError> {
        let range = location.entry.range();
        #[allow(clippy::cast_possible_truncation)] // packs are < 4 GiB (FORMAT.md section 9)
        let slice = |pack: &Bytes| {
            (range.end <= pack.len() as u64)
                .then(|| pack.slice(range.start as usize..range.end as usize))
        };
        if let Some((_, pack)) = self
            .tree_packs
            .iter()
            .find(|(pack_id, _)| *pack_id == location.pack_id)
        {
            return Ok(slice(pack).unwrap_or_default());
        }
        let name = pack_name(&location.pack_id);
        let length = self.map.pack_lengths.get(&location.pack_id).copied();
        if location.entry.blob_type == BlobType::Tree
            && length.is_some_and(|length| length <= WHOLE_TREE_PACK)
        {
            let pack = self.repository.backend().get(&name)?;
            let sealed = slice(&pack).unwrap_or_default();
            if self.tree_packs.len() == TREE_PACKS_KEPT {
                self.tree_packs.pop_front();
            }
            self.tree_packs.push_back((location.pack_id, pack));
            return Ok(sealed);
        }
        self.repository.backend().get_range(&name, range)
    }

    /// Notes that a repaired snapshot relies on this copy. A copy in a condemned pack is copied
    /// into a new pack first (as a backup's dedup never relies on a condemned pack).
    fn rely(&mut self, location: &BlobLocation, sealed: Option<Bytes>) -> Result<()> {
        if !self.map.condemned.contains(&location.pack_id) {
            self.relied.insert(location.pack_id);
            return Ok(());
        }
        let Some(saver) = self.saver.as_mut() else {
            return Ok(());
        };
        let sealed = match sealed {
            Some(sealed) => sealed,
            None => self
                .repository
                .backend()
                .get_range(&pack_name(&location.pack_id), location.entry.range())?,
        };
        saver.save_sealed(vec![SealedBlob {
            blob_type: location.entry.blob_type,
            id: location.entry.id,
            raw_length: location.entry.raw_length,
            sealed: sealed.to_vec(),
        }])?;
        self.blobs_copied += 1;
        Ok(())
    }
}

impl TreeSource for StoreSource<'_, '_> {
    fn tree(&mut self, id: &Id) -> Result<std::result::Result<Tree, String>> {
        let Some(location) = self.map.usable(BlobType::Tree, id) else {
            return Ok(Err(self.map.lost_object(BlobType::Tree, id)));
        };
        let damaged = format!("tree blob {id} in {}", pack_name(&location.pack_id));
        let sealed = match self.sealed(&location) {
            Ok(sealed) => sealed,
            Err(BackendError::NotFound { .. }) => return Ok(Err(pack_name(&location.pack_id))),
            Err(error) => return Err(error.into()),
        };
        let Ok(plaintext) = self.repository.open_blob_bytes(&location, &sealed) else {
            return Ok(Err(damaged));
        };
        let Ok(tree) = Tree::decode(&plaintext) else {
            return Ok(Err(damaged));
        };
        self.rely(&location, Some(sealed))?;
        Ok(Ok(tree))
    }

    fn lost_chunk(&mut self, chunks: &[Id]) -> Result<Option<String>> {
        let mut copies = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            match self.map.usable(BlobType::Data, chunk) {
                Some(location) => copies.push(location),
                None => return Ok(Some(self.map.lost_object(BlobType::Data, chunk))),
            }
        }
        for location in &copies {
            self.rely(location, None)?;
        }
        Ok(None)
    }

    fn save_tree(&mut self, tree: &Tree) -> Result<Id> {
        let encoded = tree.encode();
        let id = self.repository.keys().blob_id(BlobType::Tree, &encoded);
        if let Some(location) = self.map.usable(BlobType::Tree, &id)
            && !self.map.condemned.contains(&location.pack_id)
        {
            self.relied.insert(location.pack_id);
            return Ok(id);
        }
        if let Some(saver) = self.saver.as_mut() {
            // Its id may be indexed in a lost or condemned pack: store it again regardless.
            saver.save_replacing(BlobType::Tree, &[&encoded], &|_| true)?;
            self.trees_written += 1;
        }
        Ok(id)
    }
}

/// The repaired snapshot of `original`: same time, host, user and paths, tag `repaired` added,
/// parent = the original, summary counts without the dropped entries.
fn repaired_snapshot(
    original_id: Id,
    original: &Snapshot,
    root: Id,
    dropped: &[DroppedEntry],
    program_version: &str,
) -> Snapshot {
    let dropped_files = dropped
        .iter()
        .filter(|entry| entry.kind == DroppedKind::File)
        .count() as u64;
    let dropped_directories = dropped.len() as u64 - dropped_files;
    let dropped_bytes: u64 = dropped.iter().map(|entry| entry.size).sum();
    let mut tags = original.tags.clone();
    if !tags.iter().any(|tag| tag == REPAIRED_TAG) {
        tags.push(REPAIRED_TAG.to_owned());
    }
    let summary = Summary {
        files: original.summary.files.saturating_sub(dropped_files),
        directories: original
            .summary
            .directories
            .saturating_sub(dropped_directories),
        bytes_processed: original
            .summary
            .bytes_processed
            .saturating_sub(dropped_bytes),
        bytes_added: 0,
        blobs_added: 0,
        entries_unreadable: original.summary.entries_unreadable + dropped.len() as u64,
    };
    Snapshot {
        tags,
        parent: Some(original_id),
        extensions: Vec::new(),
        ..original.derived(root, summary, program_version)
    }
}

/// Finds snapshots that reference lost or damaged data and writes, for each, a new snapshot
/// (create-only) whose trees leave out the damaged files and lost directories. New trees go
/// through a [`BlobSaver`] inside a backup session, so they are packed, indexed and protected
/// from concurrent prunes exactly like a backup's. Originals stay unless `forget` is set; then
/// each is deleted only after its repaired snapshot is stored.
///
/// # Errors
/// [`Error::AppendOnly`] with `forget` (before anything is written), backend failures (the
/// store unreachable never counts as damage), or cache failures.
pub fn repair_snapshots(
    repository: &Repository,
    options: &RepairSnapshotsOptions,
) -> Result<RepairSnapshotsReport> {
    if options.forget && !options.dry_run {
        repository.ensure_may_delete("repair snapshots --forget")?;
    }
    if options.dry_run {
        let state = repository.load_prune_state()?;
        repository.apply_prune_state(&state)?;
        return run_repair(repository, options, None);
    }
    // The session marker first, as a backup's (FORMAT.md section 21.2).
    repository.with_session(&options.host, |session, _| {
        run_repair(repository, options, Some(session))
    })
}

#[allow(clippy::too_many_lines)] // one procedure in the order FORMAT.md section 14 gives
fn run_repair(
    repository: &Repository,
    options: &RepairSnapshotsOptions,
    session: Option<&mut BackupSession<'_>>,
) -> Result<RepairSnapshotsReport> {
    let mut report = RepairSnapshotsReport::default();
    // Snapshots first, then the index: every blob of a listed snapshot is indexed by then.
    let (snapshots, errors) = repository.list_snapshots()?;
    for error in errors {
        match error {
            Error::Damaged { object, reason } => {
                report.unreadable_snapshots.push((object, reason));
            }
            other => return Err(other),
        }
    }
    let selected: Option<HashSet<Id>> = if options.snapshots.is_empty() {
        None
    } else {
        let mut ids = HashSet::new();
        for spec in &options.snapshots {
            ids.insert(repository.resolve_snapshot(spec)?.0);
        }
        Some(ids)
    };
    let repaired_children: HashMap<Id, Id> = snapshots
        .iter()
        .filter(|(_, snapshot)| snapshot.tags.iter().any(|tag| tag == REPAIRED_TAG))
        .filter_map(|(id, snapshot)| snapshot.parent.map(|parent| (parent, *id)))
        .collect();
    repository.sync_index()?;
    let map = build_blob_map(repository, options.read_data, &mut report)?;

    let mut source = StoreSource {
        repository,
        map: &map,
        saver: (!options.dry_run).then(|| BlobSaver::new(repository)),
        relied: HashSet::new(),
        trees_written: 0,
        blobs_copied: 0,
        tree_packs: VecDeque::new(),
    };
    let mut repairer = TreeRepairer::default();
    let mut to_write: Vec<(usize, Snapshot)> = Vec::new();
    for (original, snapshot) in &snapshots {
        if selected
            .as_ref()
            .is_some_and(|selected| !selected.contains(original))
        {
            continue;
        }
        report.snapshots_checked += 1;
        let repaired = repairer.repair(&mut source, &snapshot.root)?;
        let mut entry = SnapshotRepair {
            original: *original,
            snapshot: snapshot.clone(),
            dropped: Vec::new(),
            repaired: None,
            already_repaired: false,
            unrepairable: None,
            forgotten: false,
        };
        match &repaired.outcome {
            TreeRepair::Intact => continue,
            TreeRepair::Lost(object) => {
                entry.dropped.push(DroppedEntry {
                    path: "/".into(),
                    kind: DroppedKind::Directory,
                    size: 0,
                    object: object.clone(),
                });
                entry.unrepairable = Some("its root tree is lost: nothing can be salvaged".into());
            }
            TreeRepair::Rewritten(root) => {
                entry.dropped = repaired
                    .dropped
                    .iter()
                    .map(|dropped| DroppedEntry {
                        path: format!("/{}", dropped.path),
                        ..dropped.clone()
                    })
                    .collect();
                if let Some(existing) = repaired_children.get(original) {
                    entry.repaired = Some(*existing);
                    entry.already_repaired = true;
                } else if repaired.kept_entries == 0 {
                    entry.unrepairable = Some("nothing intact remains".into());
                } else {
                    to_write.push((
                        report.damaged.len(),
                        repaired_snapshot(
                            *original,
                            snapshot,
                            *root,
                            &entry.dropped,
                            &options.program_version,
                        ),
                    ));
                }
            }
        }
        report.damaged.push(entry);
    }
    report.trees_written = source.trees_written;
    report.blobs_copied = source.blobs_copied;
    let StoreSource { saver, relied, .. } = source;
    let Some(saver) = saver else {
        return Ok(report); // dry run
    };
    let Some(session) = session else {
        return Ok(report);
    };

    // Every new tree is stored and indexed before a snapshot names it.
    let (stats, mut relied_packs) = saver.finish_relied()?;
    relied_packs.extend(relied);
    let rescued = repository.rescue_relied_packs(session, &mut relied_packs)?;
    report.bytes_added = stats.bytes_added + rescued.bytes_written;
    report.blobs_copied += rescued.blobs_copied;

    let mut last_written = None;
    for (position, snapshot) in to_write {
        let id = repository.save_snapshot(&snapshot)?;
        report.damaged[position].repaired = Some(id);
        last_written = Some(id);
    }
    if options.forget {
        for entry in &mut report.damaged {
            if entry.repaired.is_none() {
                continue;
            }
            let outcome = repository.forget_snapshots(&[entry.original])?;
            if let Some((_, error)) = outcome.failed.into_iter().next() {
                return Err(error);
            }
            entry.forgotten = true;
        }
    }
    let _ = session.end(last_written);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::tree::{Node, Timestamp};

    /// Trees and chunks in memory; stored trees are named by a counter.
    #[derive(Default)]
    struct MemorySource {
        trees: HashMap<Id, Tree>,
        lost_chunks: HashSet<Id>,
        saved: Vec<Tree>,
        reads: usize,
    }

    impl TreeSource for MemorySource {
        fn tree(&mut self, id: &Id) -> Result<std::result::Result<Tree, String>> {
            self.reads += 1;
            Ok(self
                .trees
                .get(id)
                .cloned()
                .ok_or_else(|| format!("tree blob {id}")))
        }

        fn lost_chunk(&mut self, chunks: &[Id]) -> Result<Option<String>> {
            Ok(chunks
                .iter()
                .find(|chunk| self.lost_chunks.contains(chunk))
                .map(|chunk| format!("data blob {chunk}")))
        }

        fn save_tree(&mut self, tree: &Tree) -> Result<Id> {
            self.saved.push(tree.clone());
            Ok(Id([200 + u8::try_from(self.saved.len()).unwrap(); 32]))
        }
    }

    use crate::format::tree::test_node as node;

    fn file(name: &str, chunks: &[u8]) -> Node {
        node(
            name,
            NodeKind::File {
                content_hash: Id([0; 32]),
                chunks: chunks.iter().map(|byte| Id([*byte; 32])).collect(),
            },
            chunks.len() as u64 * 10,
        )
    }

    fn directory(name: &str, subtree: u8) -> Node {
        node(
            name,
            NodeKind::Directory {
                subtree: Id([subtree; 32]),
            },
            0,
        )
    }

    /// root(1) = { a.txt [10], dir → 2 { b.bin [11, 12], deep → 3 { c [13] } }, gone → 4 (lost),
    /// link }
    fn sample() -> MemorySource {
        let mut source = MemorySource::default();
        source.trees.insert(
            Id([3; 32]),
            Tree {
                nodes: vec![file("c", &[13])],
            },
        );
        source.trees.insert(
            Id([2; 32]),
            Tree {
                nodes: vec![file("b.bin", &[11, 12]), directory("deep", 3)],
            },
        );
        source.trees.insert(
            Id([1; 32]),
            Tree {
                nodes: vec![
                    file("a.txt", &[10]),
                    directory("dir", 2),
                    directory("gone", 4),
                    node(
                        "link",
                        NodeKind::Symlink {
                            target: b"a.txt".to_vec(),
                        },
                        0,
                    ),
                ],
            },
        );
        source
    }

    #[test]
    fn an_intact_tree_is_kept_and_nothing_is_stored() {
        let mut source = sample();
        source.trees.get_mut(&Id([1; 32])).unwrap().nodes.remove(2);
        let repaired = TreeRepairer::default()
            .repair(&mut source, &Id([1; 32]))
            .unwrap();
        assert_eq!(repaired.outcome, TreeRepair::Intact);
        assert!(repaired.dropped.is_empty());
        assert!(source.saved.is_empty());
    }

    #[test]
    fn damaged_files_and_lost_directories_are_dropped_and_ancestors_rewritten() {
        let mut source = sample();
        source.lost_chunks.insert(Id([12; 32]));
        let repaired = TreeRepairer::default()
            .repair(&mut source, &Id([1; 32]))
            .unwrap();
        assert_eq!(
            repaired.dropped,
            vec![
                DroppedEntry {
                    path: "dir/b.bin".into(),
                    kind: DroppedKind::File,
                    size: 20,
                    object: format!("data blob {}", Id([12; 32])),
                },
                DroppedEntry {
                    path: "gone".into(),
                    kind: DroppedKind::Directory,
                    size: 0,
                    object: format!("tree blob {}", Id([4; 32])),
                },
            ]
        );
        // Bottom-up: dir's tree, then the root; deep (intact) keeps its id.
        assert_eq!(source.saved.len(), 2);
        assert_eq!(source.saved[0].nodes, vec![directory("deep", 3)]);
        let root = &source.saved[1];
        assert_eq!(
            root.nodes
                .iter()
                .map(|node| node.name.clone())
                .collect::<Vec<_>>(),
            vec![b"a.txt".to_vec(), b"dir".to_vec(), b"link".to_vec()]
        );
        assert_eq!(
            root.nodes[1].kind,
            NodeKind::Directory {
                subtree: Id([201; 32])
            }
        );
        // Metadata of kept entries is untouched.
        assert_eq!(root.nodes[1].mtime, directory("dir", 2).mtime);
        assert_eq!(repaired.outcome, TreeRepair::Rewritten(Id([202; 32])));
        assert_eq!(repaired.kept_entries, 3);
    }

    #[test]
    fn shared_trees_are_repaired_once() {
        let mut source = sample();
        source.lost_chunks.insert(Id([13; 32]));
        let mut repairer = TreeRepairer::default();
        let first = repairer.repair(&mut source, &Id([1; 32])).unwrap();
        let reads = source.reads;
        let again = repairer.repair(&mut source, &Id([2; 32])).unwrap();
        let second = repairer.repair(&mut source, &Id([1; 32])).unwrap();
        assert_eq!(source.reads, reads);
        assert_eq!(first, second);
        assert_eq!(again.dropped[0].path, "deep/c");
        assert_eq!(source.saved.len(), 3);
    }

    #[test]
    fn a_lost_root_is_reported_lost() {
        let mut source = MemorySource::default();
        let repaired = TreeRepairer::default()
            .repair(&mut source, &Id([9; 32]))
            .unwrap();
        assert_eq!(
            repaired.outcome,
            TreeRepair::Lost(format!("tree blob {}", Id([9; 32])))
        );
    }

    #[test]
    fn the_repaired_snapshot_keeps_identity_and_counts_without_dropped_entries() {
        let original = Snapshot {
            time: Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            },
            host: "db1".into(),
            username: "backup".into(),
            tags: vec!["nightly".into()],
            source: crate::format::snapshot::Source::Paths(vec!["/srv".into()]),
            root: Id([1; 32]),
            parent: None,
            summary: Summary {
                files: 10,
                directories: 3,
                bytes_processed: 1000,
                bytes_added: 400,
                blobs_added: 9,
                entries_unreadable: 1,
            },
            program_version: "0.1.0".into(),
            extensions: Vec::new(),
        };
        let dropped = vec![
            DroppedEntry {
                path: "/srv/a".into(),
                kind: DroppedKind::File,
                size: 100,
                object: "x".into(),
            },
            DroppedEntry {
                path: "/srv/d".into(),
                kind: DroppedKind::Directory,
                size: 0,
                object: "y".into(),
            },
        ];
        let repaired = repaired_snapshot(Id([7; 32]), &original, Id([8; 32]), &dropped, "0.2.0");
        assert_eq!(repaired.time, original.time);
        assert_eq!(repaired.host, "db1");
        assert_eq!(repaired.source, original.source);
        assert_eq!(
            repaired.tags,
            vec!["nightly".to_owned(), "repaired".to_owned()]
        );
        assert_eq!(repaired.parent, Some(Id([7; 32])));
        assert_eq!(repaired.root, Id([8; 32]));
        assert_eq!(repaired.summary.files, 9);
        assert_eq!(repaired.summary.directories, 2);
        assert_eq!(repaired.summary.bytes_processed, 900);
        assert_eq!(repaired.summary.entries_unreadable, 3);
        assert_eq!(repaired.summary.bytes_added, 0);
    }
}
