//! `cairn stats`: how big snapshots are as files, after deduplication and as stored, from the
//! trees and the local index (no pack is downloaded).
//!
//! Memory: blob ids and file content hashes already counted are kept in disk-backed
//! [`MarkSet`]s beside the cache (bounded page cache), not in hash sets, so the repository size
//! does not set the memory use; the per-tree totals memo holds one small entry per distinct tree.

use std::collections::HashMap;

use crate::crypto::id::Id;
use crate::error::Result;
use crate::format::snapshot::Snapshot;
use crate::format::tree::NodeKind;
use crate::index::marks::MarkSet;
use crate::repo::repository::{DATA_PREFIX, Repository};

/// Sizes and counts of a set of snapshots and of the repository.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Snapshots counted.
    pub snapshots: u64,
    /// Files in the snapshots, each snapshot counted (what restoring all of them would write).
    pub files: u64,
    /// Sum of the file sizes in the snapshots, each snapshot counted.
    pub raw_bytes: u64,
    /// Distinct file contents (by content hash) across the snapshots.
    pub unique_files: u64,
    /// Sum of the sizes of the distinct file contents.
    pub unique_files_bytes: u64,
    /// Distinct data blobs the snapshots reference.
    pub data_blobs: u64,
    /// Distinct tree blobs the snapshots reference.
    pub tree_blobs: u64,
    /// Plaintext bytes of those blobs: the snapshots' size after deduplication.
    pub deduplicated_bytes: u64,
    /// Stored (compressed, encrypted) bytes of those blobs in packs.
    pub stored_bytes: u64,
    /// Referenced blobs the local index does not know (lost or not yet indexed).
    pub blobs_not_indexed: u64,
    /// Pack objects in the repository.
    pub packs: u64,
    /// Bytes of all objects in the repository (packs, index, snapshots, keys, ...).
    pub repository_bytes: u64,
    /// Objects in the repository.
    pub repository_objects: u64,
}

impl Stats {
    /// Raw bytes per deduplicated byte (1 when nothing is shared; 0 for no data).
    pub fn deduplication_ratio(&self) -> f64 {
        ratio(self.raw_bytes, self.deduplicated_bytes)
    }

    /// Deduplicated bytes per stored byte (above 1 when compression helps).
    pub fn compression_ratio(&self) -> f64 {
        ratio(self.deduplicated_bytes, self.stored_bytes)
    }
}

#[allow(clippy::cast_precision_loss)]
fn ratio(numerator: u64, denominator: u64) -> f64 {
    if denominator == 0 {
        0.0
    } else {
        numerator as f64 / denominator as f64
    }
}

/// Files and bytes below one tree.
#[derive(Debug, Clone, Copy, Default)]
struct TreeTotals {
    files: u64,
    bytes: u64,
}

struct Counter<'repo> {
    repository: &'repo Repository,
    blobs: MarkSet,
    contents: MarkSet,
    trees: HashMap<Id, TreeTotals>,
    stats: Stats,
}

impl Counter<'_> {
    /// Counts a set of blob ids the first time they are seen: their raw and stored lengths from
    /// the index.
    fn count_blobs(&mut self, ids: &[Id], tree: bool) -> Result<()> {
        let fresh: Vec<Id> = ids
            .iter()
            .zip(self.blobs.insert_all(ids)?)
            .filter_map(|(id, fresh)| fresh.then_some(*id))
            .collect();
        for location in self.repository.cache().lookup_many(&fresh)? {
            match location {
                Some(location) => {
                    self.stats.deduplicated_bytes += u64::from(location.entry.raw_length);
                    self.stats.stored_bytes += u64::from(location.entry.length);
                }
                None => self.stats.blobs_not_indexed += 1,
            }
        }
        let added = fresh.len() as u64;
        if tree {
            self.stats.tree_blobs += added;
        } else {
            self.stats.data_blobs += added;
        }
        Ok(())
    }

    /// The files and bytes below tree `id`; the first visit of a tree also counts its distinct
    /// contents and blobs.
    fn visit(&mut self, id: &Id) -> Result<TreeTotals> {
        if let Some(totals) = self.trees.get(id) {
            return Ok(*totals);
        }
        self.count_blobs(&[*id], true)?;
        let tree = self.repository.load_tree(id)?;
        let mut totals = TreeTotals::default();
        let mut hashes = Vec::new();
        let mut sizes = Vec::new();
        let mut chunks = Vec::new();
        for node in &tree.nodes {
            match &node.kind {
                NodeKind::File {
                    content_hash,
                    chunks: file_chunks,
                } => {
                    totals.files += 1;
                    totals.bytes += node.size;
                    hashes.push(*content_hash);
                    sizes.push(node.size);
                    chunks.extend_from_slice(file_chunks);
                }
                NodeKind::Directory { subtree } => {
                    let below = self.visit(subtree)?;
                    totals.files += below.files;
                    totals.bytes += below.bytes;
                }
                NodeKind::Symlink { .. } | NodeKind::Fifo | NodeKind::Device { .. } => {}
            }
        }
        for (fresh, size) in self.contents.insert_all(&hashes)?.into_iter().zip(sizes) {
            if fresh {
                self.stats.unique_files += 1;
                self.stats.unique_files_bytes += size;
            }
        }
        self.count_blobs(&chunks, false)?;
        self.trees.insert(*id, totals);
        Ok(totals)
    }
}

/// Counts `snapshots` (usually all of the repository's) and lists the repository's objects.
///
/// # Errors
/// Failures reading trees, of the mark sets' files, or of the listing.
pub fn stats(repository: &Repository, snapshots: &[(Id, Snapshot)]) -> Result<Stats> {
    repository.sync_index()?;
    let directory = repository.cache().directory();
    let mut counter = Counter {
        repository,
        blobs: MarkSet::create(directory)?,
        contents: MarkSet::create(directory)?,
        trees: HashMap::new(),
        stats: Stats::default(),
    };
    for (_, snapshot) in snapshots {
        let totals = counter.visit(&snapshot.root)?;
        counter.stats.snapshots += 1;
        counter.stats.files += totals.files;
        counter.stats.raw_bytes += totals.bytes;
    }
    let mut stats = counter.stats;
    for object in repository.backend().list("")? {
        stats.repository_objects += 1;
        stats.repository_bytes += object.size;
        if object
            .name
            .strip_prefix(DATA_PREFIX)
            .is_some_and(|rest| rest.starts_with('/'))
        {
            stats.packs += 1;
        }
    }
    Ok(stats)
}
