//! Reading many blobs at once: look them up in the index, group them by pack, coalesce
//! neighbouring ranges into one ranged read, fetch the reads concurrently, then authenticate
//! and decompress every blob in parallel. Restore and dump use it so that a pack is read with a
//! handful of requests instead of one request per chunk.

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use std::sync::Arc;

use rayon::prelude::*;

use crate::crypto::id::{BlobType, Id};
use crate::error::{Error, Result};
use crate::format::pack::PackEntry;
use crate::format::pack_stream::BlobCutter;
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

impl PackRead {
    /// The byte ranges of its blobs in the pack, in its order (what a [`BlobCutter`] cuts).
    pub fn blob_ranges(&self) -> Vec<std::ops::Range<u64>> {
        self.blobs
            .iter()
            .map(|location| location.entry.range())
            .collect()
    }
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

/// One coalesced read of [`fetch_data_blobs`], streamed: the wanted blobs (and, with a
/// [`Prefetch`], the other data blobs the range covers, which are kept in it) are cut out and
/// opened as the bytes arrive, so no buffer of the whole read is held.
fn fetch_read(
    repository: &Repository,
    read: &PackRead,
    prefetch: Option<&Prefetch>,
) -> Vec<(Id, FetchedBlob)> {
    // (location, wanted): the read's blobs, then the bonus blobs it covers, in pack order.
    let mut blobs: Vec<(BlobLocation, bool)> = read
        .blobs
        .iter()
        .map(|location| (*location, true))
        .collect();
    if let Some(prefetch) = prefetch
        && let Some(entries) = prefetch.entries(repository, &read.pack_id)
    {
        let wanted: std::collections::HashSet<Id> = read
            .blobs
            .iter()
            .map(|location| location.entry.id)
            .collect();
        blobs.extend(
            entries
                .iter()
                .filter(|entry| {
                    entry.blob_type == BlobType::Data
                        && !wanted.contains(&entry.id)
                        && entry.range().start >= read.start
                        && entry.range().end <= read.end
                })
                .map(|entry| {
                    let location = BlobLocation {
                        pack_id: read.pack_id,
                        entry: *entry,
                    };
                    (location, false)
                }),
        );
        blobs.sort_by_key(|(location, _)| location.entry.offset);
    }
    let ranges: Vec<std::ops::Range<u64>> = blobs
        .iter()
        .map(|(location, _)| location.entry.range())
        .collect();
    let mut cutter = BlobCutter::new(read.start, &ranges);
    let mut out = Vec::with_capacity(read.blobs.len());
    let outcome = repository.backend().get_range_pieces(
        &pack_name(&read.pack_id),
        read.start..read.end,
        &mut |piece| {
            cutter.push(piece, &mut |index, sealed| {
                let (location, wanted) = &blobs[index];
                let opened = repository.open_blob_bytes(location, sealed);
                if *wanted {
                    out.push((location.entry.id, opened.map(Arc::new).map_err(Arc::new)));
                } else if let (Ok(plaintext), Some(prefetch)) = (opened, prefetch) {
                    prefetch.keep(location.entry.id, Arc::new(plaintext));
                }
            });
            ControlFlow::Continue(())
        },
    );
    let undelivered: Vec<usize> = cutter
        .undelivered()
        .into_iter()
        .filter(|&index| blobs[index].1)
        .collect();
    if !undelivered.is_empty() {
        let error = Arc::new(match outcome {
            Err(error) => Error::from(error),
            Ok(()) => Error::Damaged {
                object: pack_name(&read.pack_id),
                reason: "shorter than its index says".into(),
            },
        });
        for index in undelivered {
            out.push((blobs[index].0.entry.id, Err(Arc::clone(&error))));
        }
    }
    out
}

/// The shape of a pack-ordered read ([`for_each_blob`]): how far apart blobs may be and still
/// share a request, and how long one request may be. A read is streamed (handed over blob by
/// blob as its bytes arrive), so its length sets the number of requests, not the memory: each
/// thread of the I/O pool holds one piece of its read and at most one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadWindow {
    /// Neighbouring blobs of a pack closer than this are read with one request.
    pub gap: u64,
    /// No single read is longer than this.
    pub max_read: u64,
}

impl ReadWindow {
    /// Restore's window: a pack needed whole is one request (reads stream, so a long read
    /// costs no memory; 64 MiB is four default packs, so only an oversized pack is split),
    /// bridging gaps up to 1 MiB (about one round trip's worth of bytes at 50 MB/s). Blobs are
    /// shuffled inside a pack, so the blobs a later snapshot no longer needs are scattered one
    /// or two at a time: measured (`plan_probe`, night 2 of the 0.5 GiB corpus, 294 MB needed
    /// in 21 packs) every gap from 64 KiB up gives the same 21 reads and 36 MB over-read, while
    /// 16 KiB gives 397 reads to save 8.5 MB (0.17 s at 50 MB/s against 376 more round trips)
    /// and 0 gives 4825. A smaller gap only buys requests, on any link.
    pub const RESTORE: Self = Self {
        gap: 1024 * 1024,
        max_read: 64 * 1024 * 1024,
    };
}

/// Receives each blob of [`for_each_blob`]: its location and its plaintext, or why it could not
/// be read.
pub type BlobSink<'sink> = dyn Fn(&BlobLocation, std::result::Result<&[u8], &Error>) + Sync + 'sink;

/// Reads the blobs at `locations` (each once; duplicates are dropped) in pack order: reads are
/// planned per pack ([`plan_reads`] with `window`), run on the I/O pool, and each blob is
/// authenticated and handed to `take` with its plaintext, or with the error that kept it from
/// being read (a failed read, bytes that do not verify). Blobs are handed over as their bytes
/// arrive ([`crate::backend::Backend::get_range_pieces`], cut by [`BlobCutter`]), from several
/// threads, in no particular order; nothing is kept after `take` returns, so memory stays at a
/// piece and a blob per I/O thread whatever the number of blobs and the length of a read.
pub fn for_each_blob(
    repository: &Repository,
    locations: Vec<BlobLocation>,
    window: ReadWindow,
    take: &BlobSink<'_>,
) {
    let reads = plan_reads(locations, window.gap, window.max_read);
    repository.io_pool().install(|| {
        reads.par_iter().with_max_len(1).for_each(|read| {
            let ranges = read.blob_ranges();
            let mut cutter = BlobCutter::new(read.start, &ranges);
            let outcome = repository.backend().get_range_pieces(
                &pack_name(&read.pack_id),
                read.start..read.end,
                &mut |piece| {
                    cutter.push(piece, &mut |index, sealed| {
                        let location = &read.blobs[index];
                        let opened = repository.open_blob_with(location, sealed, |plaintext| {
                            take(location, Ok(plaintext));
                        });
                        if let Err(error) = opened {
                            take(location, Err(&error));
                        }
                    });
                    ControlFlow::Continue(())
                },
            );
            let undelivered = cutter.undelivered();
            if undelivered.is_empty() {
                return;
            }
            let error = match outcome {
                Err(error) => Error::from(error),
                Ok(()) => Error::Damaged {
                    object: pack_name(&read.pack_id),
                    reason: "shorter than its index says".into(),
                },
            };
            for index in undelivered {
                take(&read.blobs[index], Err(&error));
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
/// or a rescue) with coalesced ranged reads, handing each blob to `take` in pack order. Reads
/// are streamed and cut blob by blob ([`BlobCutter`]), so memory stays at a piece and a blob
/// whatever the number of blobs.
///
/// # Errors
/// Backend failures, [`Error::Damaged`] when a read comes back short, or what `take` fails with.
pub fn for_each_sealed_blob(
    repository: &Repository,
    locations: Vec<BlobLocation>,
    mut take: impl FnMut(crate::format::pack::SealedBlob) -> Result<()>,
) -> Result<()> {
    let reads = plan_reads(locations, COALESCE_GAP, MAX_READ);
    stream_sealed_reads(repository, &reads, &mut |location, sealed| {
        let entry = &location.entry;
        take(crate::format::pack::SealedBlob {
            blob_type: entry.blob_type,
            id: entry.id,
            raw_length: entry.raw_length,
            sealed: sealed.to_vec(),
        })
    })
}

/// Runs `reads` one after the other, in the given order, streamed: each blob's sealed bytes
/// (not decrypted) are handed to `take` as they arrive, cut blob by blob ([`BlobCutter`]).
///
/// # Errors
/// Backend failures, [`Error::Damaged`] when a read comes back short, or the first error of
/// `take` (which stops the reads).
pub fn stream_sealed_reads(
    repository: &Repository,
    reads: &[PackRead],
    take: &mut dyn FnMut(&BlobLocation, &[u8]) -> Result<()>,
) -> Result<()> {
    for read in reads {
        let name = pack_name(&read.pack_id);
        let ranges = read.blob_ranges();
        let mut cutter = BlobCutter::new(read.start, &ranges);
        let mut failure = None;
        repository
            .backend()
            .get_range_pieces(&name, read.start..read.end, &mut |piece| {
                cutter.push(piece, &mut |index, sealed| {
                    if failure.is_none() {
                        failure = take(&read.blobs[index], sealed).err();
                    }
                });
                if failure.is_some() {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })?;
        if let Some(error) = failure {
            return Err(error);
        }
        if !cutter.undelivered().is_empty() {
            return Err(Error::Damaged {
                object: name,
                reason: "shorter than its index says".into(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::PackEntry;
    use crate::repo::repository::InitOptions;
    use crate::repo::saver::BlobSaver;

    /// A repository in a local directory (no retries) holding `count` data blobs of 1 to about
    /// 150 KiB of incompressible bytes in one pack, so pieces of a read cut through blobs.
    /// Returns the directory, the repository, and each blob's location and plaintext in pack
    /// order.
    fn repository_with_blobs(
        count: usize,
    ) -> (tempfile::TempDir, Repository, Vec<(BlobLocation, Vec<u8>)>) {
        let directory = tempfile::tempdir().unwrap();
        let repository = crate::repo::repository::local_test_repository(
            directory.path(),
            &InitOptions::with_cheapest_kdf(),
        );
        let blobs = crate::test_data::incompressible_blobs(
            11,
            (0..count).map(|index| index * 37 * 1024 % (150 * 1024) + 1),
        );
        let mut saver = BlobSaver::new(&repository);
        let slices: Vec<&[u8]> = blobs.iter().map(Vec::as_slice).collect();
        let ids = saver.save(BlobType::Data, &slices).unwrap();
        saver.finish().unwrap();
        let locations = repository.cache().lookup_many(&ids).unwrap();
        let mut placed: Vec<(BlobLocation, Vec<u8>)> = locations
            .into_iter()
            .map(Option::unwrap)
            .zip(blobs)
            .collect();
        placed.sort_by_key(|(location, _)| location.entry.offset);
        assert!(
            placed
                .iter()
                .all(|(location, _)| location.pack_id == placed[0].0.pack_id)
        );
        (directory, repository, placed)
    }

    /// Runs [`for_each_blob`] over every blob in one read; returns each blob's plaintext or
    /// error message, by id.
    fn read_all(
        repository: &Repository,
        placed: &[(BlobLocation, Vec<u8>)],
    ) -> HashMap<Id, std::result::Result<Vec<u8>, String>> {
        let seen = std::sync::Mutex::new(HashMap::new());
        let window = ReadWindow {
            gap: u64::MAX / 4,
            max_read: u64::MAX / 4,
        };
        let locations = placed.iter().map(|(location, _)| *location).collect();
        for_each_blob(repository, locations, window, &|location, outcome| {
            let previous = seen.lock().unwrap().insert(
                location.entry.id,
                outcome.map(<[u8]>::to_vec).map_err(ToString::to_string),
            );
            assert!(previous.is_none(), "a blob is handed over once");
        });
        seen.into_inner().unwrap()
    }

    fn pack_path(directory: &tempfile::TempDir, location: &BlobLocation) -> std::path::PathBuf {
        directory.path().join(pack_name(&location.pack_id))
    }

    #[test]
    fn a_streamed_read_hands_over_every_blob_whole() {
        let (_directory, repository, placed) = repository_with_blobs(24);
        let seen = read_all(&repository, &placed);
        assert_eq!(seen.len(), placed.len());
        for (location, plaintext) in &placed {
            assert_eq!(seen[&location.entry.id].as_ref().unwrap(), plaintext);
        }
    }

    #[test]
    fn a_blob_failing_authentication_mid_read_fails_alone() {
        for damaged in [0, 5, 12, 23] {
            let (directory, repository, placed) = repository_with_blobs(24);
            let path = pack_path(&directory, &placed[damaged].0);
            let mut pack = std::fs::read(&path).unwrap();
            let range = placed[damaged].0.entry.range();
            pack[usize::try_from(u64::midpoint(range.start, range.end)).unwrap()] ^= 0x40;
            std::fs::write(&path, pack).unwrap();
            let seen = read_all(&repository, &placed);
            assert_eq!(seen.len(), placed.len());
            for (index, (location, plaintext)) in placed.iter().enumerate() {
                match &seen[&location.entry.id] {
                    Ok(read) if index != damaged => assert_eq!(read, plaintext),
                    Err(message) if index == damaged => {
                        assert!(message.contains("damaged"), "{message}");
                    }
                    other => panic!("blob {index} (damaged {damaged}): {other:?}"),
                }
            }
        }
    }

    #[test]
    fn a_truncated_pack_fails_the_blobs_it_cuts_and_keeps_the_ones_before() {
        for cut_in in [0, 7, 23] {
            let (directory, repository, placed) = repository_with_blobs(24);
            let path = pack_path(&directory, &placed[cut_in].0);
            let range = placed[cut_in].0.entry.range();
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            file.set_len(range.start + 3).unwrap();
            let seen = read_all(&repository, &placed);
            assert_eq!(seen.len(), placed.len());
            for (index, (location, plaintext)) in placed.iter().enumerate() {
                match &seen[&location.entry.id] {
                    Ok(read) if index < cut_in => assert_eq!(read, plaintext),
                    Err(message) if index >= cut_in => {
                        assert!(message.contains("get"), "{message}");
                    }
                    other => panic!("blob {index} (cut in {cut_in}): {other:?}"),
                }
            }
        }
    }

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
    /// Packs of `blobs` back-to-back blobs of 1 to 32 KiB (seeded), with each blob needed with
    /// probability `needed_percent`, as a restore of a later snapshot sees a pack whose blobs
    /// were shuffled: returns every blob (needed or not) and the needed ones.
    fn shuffled_packs(
        packs: u8,
        blobs: u32,
        needed_percent: u64,
        seed: u64,
    ) -> (Vec<BlobLocation>, Vec<BlobLocation>) {
        let mut state = seed;
        let mut next = |modulus: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) % modulus
        };
        let mut all = Vec::new();
        let mut needed = Vec::new();
        for pack in 0..packs {
            let mut offset = 6u32;
            for index in 0..blobs {
                let length = 1024 + u32::try_from(next(31 * 1024)).unwrap();
                let mut id = [pack; 32];
                id[1..5].copy_from_slice(&index.to_le_bytes());
                let location = BlobLocation {
                    pack_id: Id([pack; 32]),
                    entry: PackEntry {
                        blob_type: BlobType::Data,
                        id: Id(id),
                        offset,
                        length,
                        raw_length: length,
                    },
                };
                if next(100) < needed_percent {
                    needed.push(location);
                }
                all.push(location);
                offset += length;
            }
        }
        (all, needed)
    }

    #[test]
    fn a_plan_reads_every_needed_blob_once_and_bridges_only_gaps_within_its_window() {
        for needed_percent in [0, 3, 50, 90, 100] {
            for gap in [0u64, 4 * 1024, 64 * 1024, 1 << 20, u64::MAX / 4] {
                for max_read in [32 * 1024u64, 1 << 20, 64 << 20] {
                    let (all, needed) = shuffled_packs(3, 400, needed_percent, needed_percent + 7);
                    let case = format!("{needed_percent}% needed, gap {gap}, max {max_read}");
                    let reads = plan_reads(needed.clone(), gap, max_read);
                    // Every needed blob exactly once, inside a read of its pack.
                    let mut planned: Vec<Id> = reads
                        .iter()
                        .flat_map(|read| read.blobs.iter().map(|location| location.entry.id))
                        .collect();
                    planned.sort_unstable();
                    let mut expected: Vec<Id> =
                        needed.iter().map(|location| location.entry.id).collect();
                    expected.sort_unstable();
                    assert_eq!(planned, expected, "{case}");
                    for read in &reads {
                        let ranges = read.blob_ranges();
                        assert!(read.blobs.iter().all(|l| l.pack_id == read.pack_id));
                        // No byte before the first blob or after the last one.
                        assert_eq!(read.start, ranges[0].start, "{case}");
                        assert_eq!(read.end, ranges[ranges.len() - 1].end, "{case}");
                        // Only gaps within the window are bridged, and the read stays within
                        // its maximum unless one blob is longer.
                        for pair in ranges.windows(2) {
                            assert!(pair[1].start - pair[0].end <= gap, "{case}");
                        }
                        assert!(read.end - read.start <= max_read || ranges.len() == 1);
                    }
                    // A read stops only where the next blob is too far or would make it too
                    // long: consecutive reads of a pack could not have been one.
                    for pair in reads.windows(2) {
                        if pair[0].pack_id == pair[1].pack_id {
                            let apart = pair[1].start - pair[0].end;
                            let first_blob_end = pair[1].blob_ranges()[0].end;
                            assert!(
                                apart > gap || first_blob_end - pair[0].start > max_read,
                                "{case}"
                            );
                        }
                    }
                    // What is read beyond the needed bytes is exactly the unneeded blobs the
                    // reads cover (blobs are back to back): the over-read a capped link pays.
                    let needed_bytes: u64 = needed.iter().map(|l| u64::from(l.entry.length)).sum();
                    let read_bytes: u64 = reads.iter().map(|read| read.end - read.start).sum();
                    let needed_ids: std::collections::HashSet<Id> =
                        needed.iter().map(|l| l.entry.id).collect();
                    let covered_unneeded: u64 = all
                        .iter()
                        .filter(|l| !needed_ids.contains(&l.entry.id))
                        .filter(|l| {
                            reads.iter().any(|read| {
                                read.pack_id == l.pack_id
                                    && read.start <= l.entry.range().start
                                    && l.entry.range().end <= read.end
                            })
                        })
                        .map(|l| u64::from(l.entry.length))
                        .sum();
                    assert_eq!(read_bytes, needed_bytes + covered_unneeded, "{case}");
                    if gap == 0 {
                        assert_eq!(covered_unneeded, 0, "{case}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_wider_gap_never_adds_reads_when_reads_are_unbounded() {
        for needed_percent in [3, 50, 90] {
            let (_, needed) = shuffled_packs(2, 500, needed_percent, needed_percent);
            let counts: Vec<usize> = [0u64, 1024, 8 * 1024, 64 * 1024, 1 << 20]
                .into_iter()
                .map(|gap| plan_reads(needed.clone(), gap, u64::MAX / 4).len())
                .collect();
            assert!(
                counts.windows(2).all(|pair| pair[1] <= pair[0]),
                "{counts:?}"
            );
            // A 1 MiB gap (32 blobs or more in a row unneeded) joins each pack into one read
            // unless most of it is unneeded.
            if needed_percent >= 50 {
                assert_eq!(counts[4], 2, "{needed_percent}%: {counts:?}");
            }
        }
    }
}
