//! Reading many blobs at once: look them up in the index, group them by pack, coalesce
//! neighbouring ranges into one ranged read, fetch the reads concurrently, then authenticate
//! and decompress every blob in parallel. Restore and dump use it so that a pack is read with a
//! handful of requests instead of one request per chunk.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rayon::prelude::*;

use crate::crypto::id::{BlobType, Id};
use crate::error::{Error, Result};
use crate::format::pack::PackEntry;
use crate::index::cache::BlobLocation;
use crate::repo::repository::{Repository, pack_name};

/// Neighbouring blobs of a pack closer than this are read with one request (the bytes between
/// them are cheaper than another request's latency and price).
pub const COALESCE_GAP: u64 = 512 * 1024;
/// No single read is longer than this.
pub const MAX_READ: u64 = 4 * 1024 * 1024;
/// A blob's plaintext, or why it could not be read (shared by every file that needs it).
pub type FetchedBlob = std::result::Result<Arc<Vec<u8>>, Arc<Error>>;

/// One ranged read of a pack covering several blobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackRead {
    /// The pack.
    pub pack_id: Id,
    /// First byte read.
    pub start: u64,
    /// One past the last byte read.
    pub end: u64,
    /// The blobs inside the range.
    pub blobs: Vec<BlobLocation>,
}

/// Groups blob locations into coalesced reads: per pack, sorted by offset, merging neighbours
/// closer than `gap` while a read stays within `max_read`.
pub fn plan_reads(mut locations: Vec<BlobLocation>, gap: u64, max_read: u64) -> Vec<PackRead> {
    locations.sort_by_key(|location| (location.pack_id, location.entry.offset));
    locations.dedup_by_key(|location| (location.pack_id, location.entry.offset));
    let mut reads: Vec<PackRead> = Vec::new();
    for location in locations {
        let range = location.entry.range();
        if let Some(last) = reads.last_mut()
            && last.pack_id == location.pack_id
            && range.start <= last.end.saturating_add(gap)
            && range.end.saturating_sub(last.start) <= max_read
        {
            last.end = last.end.max(range.end);
            last.blobs.push(location);
            continue;
        }
        reads.push(PackRead {
            pack_id: location.pack_id,
            start: range.start,
            end: range.end,
            blobs: vec![location],
        });
    }
    reads
}

/// Blobs that arrived inside a coalesced read before anyone asked for them. Blobs are shuffled
/// inside their pack, so a read for one batch of files covers blobs that later batches need;
/// keeping them (up to a byte budget, oldest dropped first) turns that over-read into prefetch, so
/// a restore reads each pack about once.
#[derive(Debug)]
pub struct Prefetch {
    budget: usize,
    trailers: std::sync::Mutex<HashMap<Id, Arc<Vec<PackEntry>>>>,
    stash: std::sync::Mutex<Stash>,
}

#[derive(Debug, Default)]
struct Stash {
    blobs: HashMap<Id, Arc<Vec<u8>>>,
    order: std::collections::VecDeque<Id>,
    bytes: usize,
}

impl Prefetch {
    /// An empty stash holding at most `budget` bytes of plaintext.
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            trailers: std::sync::Mutex::new(HashMap::new()),
            stash: std::sync::Mutex::new(Stash::default()),
        }
    }

    fn take(&self, id: &Id) -> Option<Arc<Vec<u8>>> {
        self.stash.lock().ok()?.blobs.get(id).cloned()
    }

    fn keep(&self, id: Id, plaintext: Arc<Vec<u8>>) {
        let Ok(mut stash) = self.stash.lock() else {
            return;
        };
        if stash.blobs.contains_key(&id) || plaintext.len() > self.budget {
            return;
        }
        stash.bytes += plaintext.len();
        stash.blobs.insert(id, plaintext);
        stash.order.push_back(id);
        while stash.bytes > self.budget {
            let Some(oldest) = stash.order.pop_front() else {
                break;
            };
            if let Some(dropped) = stash.blobs.remove(&oldest) {
                stash.bytes -= dropped.len();
            }
        }
    }

    /// The entries of a pack, from its trailer (read once per pack and remembered).
    fn entries(&self, repository: &Repository, pack_id: &Id) -> Option<Arc<Vec<PackEntry>>> {
        if let Some(entries) = self.trailers.lock().ok()?.get(pack_id) {
            return Some(Arc::clone(entries));
        }
        let size = repository.cache().pack_length(pack_id).ok()??;
        let info = crate::backend::ObjectInfo {
            name: pack_name(pack_id),
            size,
            modified: 0,
        };
        let entries = Arc::new(repository.read_pack_trailer(&info).ok()?.entries);
        self.trailers
            .lock()
            .ok()?
            .insert(*pack_id, Arc::clone(&entries));
        Some(entries)
    }
}

/// Fetches the data blobs `ids` (duplicates allowed) and returns each one's plaintext or error.
/// With a [`Prefetch`], blobs it holds are served without a request, and the other blobs that a
/// read happens to cover are kept in it.
///
/// # Errors
/// Only index cache failures; missing, unreadable or damaged blobs are per-blob errors.
pub fn fetch_data_blobs(
    repository: &Repository,
    ids: &[Id],
    prefetch: Option<&Prefetch>,
) -> Result<HashMap<Id, FetchedBlob>> {
    let mut unique: Vec<Id> = ids.to_vec();
    unique.sort_unstable();
    unique.dedup();
    let mut out: HashMap<Id, FetchedBlob> = HashMap::with_capacity(unique.len());
    if let Some(prefetch) = prefetch {
        unique.retain(|id| match prefetch.take(id) {
            Some(plaintext) => {
                out.insert(*id, Ok(plaintext));
                false
            }
            None => true,
        });
    }
    let locations = repository.cache().lookup_many(&unique)?;
    let mut found = Vec::with_capacity(unique.len());
    for (id, location) in unique.iter().zip(locations) {
        match location.filter(|location| location.entry.blob_type == BlobType::Data) {
            Some(location) => found.push(location),
            None => {
                out.insert(
                    *id,
                    Err(Arc::new(Error::BlobMissing {
                        blob_type: BlobType::Data.name(),
                        id: *id,
                    })),
                );
            }
        }
    }
    let reads = plan_reads(found, COALESCE_GAP, MAX_READ);
    let fetched: Vec<Vec<(Id, FetchedBlob)>> = repository.io_pool().install(|| {
        reads
            .par_iter()
            .map(|read| fetch_read(repository, read, prefetch))
            .collect()
    });
    out.extend(fetched.into_iter().flatten());
    Ok(out)
}

fn fetch_read(
    repository: &Repository,
    read: &PackRead,
    prefetch: Option<&Prefetch>,
) -> Vec<(Id, FetchedBlob)> {
    let bytes = match repository
        .backend()
        .get_range(&pack_name(&read.pack_id), read.start..read.end)
    {
        Ok(bytes) => bytes,
        Err(error) => {
            let error = Arc::new(Error::from(error));
            return read
                .blobs
                .iter()
                .map(|location| (location.entry.id, Err(Arc::clone(&error))))
                .collect();
        }
    };
    #[allow(clippy::cast_possible_truncation)]
    let open = |location: &BlobLocation| {
        let range = location.entry.range();
        let sealed = &bytes[(range.start - read.start) as usize..(range.end - read.start) as usize];
        repository
            .open_blob_bytes(location, sealed)
            .map(Arc::new)
            .map_err(Arc::new)
    };
    if let Some(prefetch) = prefetch
        && let Some(entries) = prefetch.entries(repository, &read.pack_id)
    {
        let wanted: std::collections::HashSet<Id> = read
            .blobs
            .iter()
            .map(|location| location.entry.id)
            .collect();
        let bonus: Vec<BlobLocation> = entries
            .iter()
            .filter(|entry| {
                entry.blob_type == BlobType::Data
                    && !wanted.contains(&entry.id)
                    && entry.range().start >= read.start
                    && entry.range().end <= read.end
            })
            .map(|entry| BlobLocation {
                pack_id: read.pack_id,
                entry: *entry,
            })
            .collect();
        bonus.par_iter().for_each(|location| {
            if let Ok(plaintext) = open(location) {
                prefetch.keep(location.entry.id, plaintext);
            }
        });
    }
    read.blobs
        .par_iter()
        .map(|location| (location.entry.id, open(location)))
        .collect()
}

/// The byte budget of a pack-ordered read ([`for_each_blob`]): each thread of the I/O pool
/// holds at most one read of `max_read` bytes, so the reads in flight never exceed the pool's
/// size times `max_read`, whatever the number of blobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadWindow {
    /// Neighbouring blobs of a pack closer than this are read with one request.
    pub gap: u64,
    /// No single read is longer than this.
    pub max_read: u64,
}

impl ReadWindow {
    /// Restore's window: reads of up to 8 MiB (half a default pack, so a pack needed whole is
    /// two requests), bridging gaps up to 1 MiB (about one round trip's worth of bytes at
    /// 50 MB/s). With four download threads, at most 32 MiB of sealed bytes are in flight.
    pub const RESTORE: Self = Self {
        gap: 1024 * 1024,
        max_read: 8 * 1024 * 1024,
    };
}

/// Receives each blob of [`for_each_blob`]: its location and its plaintext, or why it could not
/// be read.
pub type BlobSink<'sink> = dyn Fn(&BlobLocation, std::result::Result<&[u8], &Error>) + Sync + 'sink;

/// Reads the blobs at `locations` (each once; duplicates are dropped) in pack order: reads are
/// planned per pack ([`plan_reads`] with `window`), run on the I/O pool, and each blob is
/// authenticated and handed to `take` with its plaintext, or with the error that kept it from
/// being read (a failed read, bytes that do not verify). Blobs are handed over as each read
/// arrives, from several threads, in no particular order; nothing is kept after `take` returns,
/// so memory stays within the window whatever the number of blobs.
pub fn for_each_blob(
    repository: &Repository,
    locations: Vec<BlobLocation>,
    window: ReadWindow,
    take: &BlobSink<'_>,
) {
    let reads = plan_reads(locations, window.gap, window.max_read);
    repository.io_pool().install(|| {
        reads.par_iter().with_max_len(1).for_each(|read| {
            let bytes = match repository
                .backend()
                .get_range(&pack_name(&read.pack_id), read.start..read.end)
            {
                Ok(bytes) => bytes,
                Err(error) => {
                    let error = Error::from(error);
                    for location in &read.blobs {
                        take(location, Err(&error));
                    }
                    return;
                }
            };
            for location in &read.blobs {
                let range = location.entry.range();
                let start = usize::try_from(range.start - read.start).unwrap_or(usize::MAX);
                let end = usize::try_from(range.end - read.start).unwrap_or(usize::MAX);
                let opened = match bytes.get(start..end) {
                    Some(sealed) => repository.open_blob_bytes(location, sealed),
                    None => Err(Error::Damaged {
                        object: pack_name(&read.pack_id),
                        reason: "shorter than its index says".into(),
                    }),
                };
                match opened {
                    Ok(plaintext) => take(location, Ok(&plaintext)),
                    Err(error) => take(location, Err(&error)),
                }
            }
        });
    });
}

/// Splits a sequence of chunk ids into consecutive windows whose plaintext totals at most about
/// `budget` bytes (every window holds at least one chunk), using the cached raw lengths. Returns
/// each window with its plaintext size.
///
/// # Errors
/// Index cache failures.
pub fn windows(
    repository: &Repository,
    chunks: &[Id],
    budget: u64,
) -> Result<Vec<(std::ops::Range<usize>, u64)>> {
    let locations = repository.cache().lookup_many(chunks)?;
    let mut windows = Vec::new();
    let mut start = 0;
    let mut size = 0u64;
    for (position, location) in locations.iter().enumerate() {
        let length = location.map_or(0, |location| u64::from(location.entry.raw_length));
        if position > start && size + length > budget {
            windows.push((start..position, size));
            start = position;
            size = 0;
        }
        size += length;
    }
    if start < chunks.len() {
        windows.push((start..chunks.len(), size));
    }
    Ok(windows)
}

/// Counts how many blobs each pack contributes; used by callers to report reads per pack.
pub fn blobs_per_pack(reads: &[PackRead]) -> BTreeMap<Id, usize> {
    let mut counts = BTreeMap::new();
    for read in reads {
        *counts.entry(read.pack_id).or_insert(0) += read.blobs.len();
    }
    counts
}

/// Reads the sealed bytes of `locations` (not decrypted: they are copied as they are, by a repack
/// or a rescue) with coalesced ranged reads, handing each blob to `take` in pack order. Memory
/// stays within one read ([`MAX_READ`]) whatever the number of blobs.
///
/// # Errors
/// Backend failures, [`Error::Damaged`] when a read comes back short, or what `take` fails with.
pub fn for_each_sealed_blob(
    repository: &Repository,
    locations: Vec<BlobLocation>,
    mut take: impl FnMut(crate::format::pack::SealedBlob) -> Result<()>,
) -> Result<()> {
    for read in plan_reads(locations, COALESCE_GAP, MAX_READ) {
        let name = pack_name(&read.pack_id);
        let bytes = repository
            .backend()
            .get_range(&name, read.start..read.end)?;
        for location in read.blobs {
            let range = location.entry.range();
            let start = usize::try_from(range.start - read.start).unwrap_or(usize::MAX);
            let end = usize::try_from(range.end - read.start).unwrap_or(usize::MAX);
            let sealed = bytes.get(start..end).ok_or_else(|| Error::Damaged {
                object: name.clone(),
                reason: "shorter than its index says".into(),
            })?;
            take(crate::format::pack::SealedBlob {
                blob_type: location.entry.blob_type,
                id: location.entry.id,
                raw_length: location.entry.raw_length,
                sealed: sealed.to_vec(),
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::PackEntry;

    fn location(pack: u8, offset: u32, length: u32) -> BlobLocation {
        BlobLocation {
            pack_id: Id([pack; 32]),
            entry: PackEntry {
                blob_type: BlobType::Data,
                id: Id([offset.to_le_bytes()[0]; 32]),
                offset,
                length,
                raw_length: length,
            },
        }
    }

    #[test]
    fn neighbours_coalesce_and_far_blobs_do_not() {
        let reads = plan_reads(
            vec![
                location(1, 5000, 100),
                location(1, 6, 100),
                location(1, 200, 100),
                location(2, 6, 100),
                location(1, 10_000_000, 100),
            ],
            1024,
            1 << 30,
        );
        // Pack 1: [6, 300) holds two blobs; 5000 is more than 1024 past 300 and 10 MB is far.
        assert_eq!(reads.len(), 4);
        assert_eq!((reads[0].start, reads[0].end), (6, 300));
        assert_eq!(reads[0].blobs.len(), 2);
        assert_eq!(
            reads
                .iter()
                .filter(|read| read.pack_id == Id([1; 32]))
                .count(),
            3
        );
        assert_eq!(blobs_per_pack(&reads)[&Id([1; 32])], 4);
    }

    #[test]
    fn reads_never_exceed_the_maximum() {
        let locations: Vec<_> = (0..100)
            .map(|index| location(1, 6 + index * 100, 100))
            .collect();
        let reads = plan_reads(locations, 1 << 20, 1000);
        assert!(reads.iter().all(|read| read.end - read.start <= 1000));
        assert_eq!(
            reads.iter().map(|read| read.blobs.len()).sum::<usize>(),
            100
        );
    }
}
