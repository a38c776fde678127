//! File content through the mount: where each chunk of an open file starts, which chunks a read
//! needs, and fetching them (authenticated by the repository, as a restore does) into a small
//! cache of plaintext blobs, with a read-ahead window for sequential readers.

use std::sync::{Arc, Mutex};

use cairn_store::fetch::{self, Prefetch};
use cairn_store::{Error, Id, Repository};

use crate::lru::Lru;

/// Plaintext blobs kept for the next reads (a FUSE read is at most 128 KiB and a chunk a few
/// KiB to a few hundred, so the blobs of one read-ahead window are read many times over). Holds
/// a full read-ahead window and the reads the kernel has in flight around it.
pub const BLOB_CACHE_BYTES: usize = 16 << 20;
/// How far a sequential reader is read ahead at most, in plaintext bytes.
pub const READ_AHEAD_BYTES: u64 = 8 << 20;
/// How many bytes a reader must have read in order before anything is read ahead for it: more
/// than one 1 MiB read, which the kernel splits into 128 KiB reads that continue each other.
pub const SEQUENTIAL_RUN_BEFORE_READ_AHEAD: u64 = 2 << 20;
/// Blobs a ranged read covered before they were asked for (they are shuffled in their pack):
/// about the rest of the packs a read-ahead window touches.
pub const PREFETCH_BYTES: usize = 16 << 20;
/// After this many plaintext bytes fetched the prefetch stash (and its remembered pack
/// trailers) starts anew, so a long session does not collect every trailer it met.
const PREFETCH_RENEWAL_BYTES: u64 = 2 << 30;
/// A read starting within this distance of where the run of reads ends continues it (the
/// kernel sends reads of several threads slightly out of order).
const SEQUENTIAL_SLACK: u64 = 1 << 20;

/// The bytes a reader has read in order: from `start` to `end` (the furthest byte read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SequentialRun {
    start: u64,
    end: u64,
}

/// The run a read of `[offset, end)` makes after `previous` (`None` before the first read), and
/// how far to read ahead of it in bytes.
///
/// A read starting within [`SEQUENTIAL_SLACK`] of where the run ends continues it; any other
/// read (a first read, a jump forwards or backwards) starts a new run. Nothing is read ahead
/// until the run covers [`SEQUENTIAL_RUN_BEFORE_READ_AHEAD`], so a random reader, even one
/// reading 1 MiB at a time, never triggers read-ahead; from there the window is the run's
/// length up to [`READ_AHEAD_BYTES`], growing as the reader proves sequential, as the kernel's
/// own read-ahead does. Re-reading bytes the run covers does not lengthen it. Pure.
fn read_ahead(previous: Option<SequentialRun>, offset: u64, end: u64) -> (SequentialRun, u64) {
    let run = match previous {
        Some(run)
            if offset >= run.end.saturating_sub(SEQUENTIAL_SLACK)
                && offset <= run.end.saturating_add(SEQUENTIAL_SLACK) =>
        {
            SequentialRun {
                start: run.start.min(offset),
                end: run.end.max(end),
            }
        }
        _ => SequentialRun { start: offset, end },
    };
    let length = run.end - run.start;
    let ahead = if length >= SEQUENTIAL_RUN_BEFORE_READ_AHEAD {
        length.min(READ_AHEAD_BYTES)
    } else {
        0
    };
    (run, ahead)
}

/// An open file: its chunks and where each one ends.
#[derive(Debug)]
pub struct OpenFile {
    chunks: Vec<Id>,
    /// `ends[i]` is one past the last byte of chunk `i`.
    ends: Vec<u64>,
    /// The run of reads in order so far (`None` before the first read): to tell sequential
    /// readers.
    run: Mutex<Option<SequentialRun>>,
    /// Held while this file's chunks are fetched: the kernel's concurrent reads of one region
    /// wait for one fetch instead of each fetching the same read-ahead window.
    fetching: Mutex<()>,
}

impl OpenFile {
    /// The file whose chunks are `chunks` and whose recorded size is `size`, with chunk
    /// lengths from the index cache.
    ///
    /// # Errors
    /// A chunk the index does not know, lengths that do not add up to `size`, or cache failures.
    pub fn new(repository: &Repository, chunks: &[Id], size: u64) -> Result<Self, Error> {
        let locations = repository.cache().lookup_many(chunks)?;
        let mut ends = Vec::with_capacity(chunks.len());
        let mut end = 0u64;
        for (id, location) in chunks.iter().zip(locations) {
            let location = location.ok_or(Error::BlobMissing {
                blob_type: cairn_store::BlobType::Data.name(),
                id: *id,
            })?;
            end += u64::from(location.entry.raw_length);
            ends.push(end);
        }
        if end != size {
            return Err(Error::Damaged {
                object: format!("file of {} chunks", chunks.len()),
                reason: format!("its chunks hold {end} bytes, its entry says {size}"),
            });
        }
        Ok(Self {
            chunks: chunks.to_vec(),
            ends,
            run: Mutex::new(None),
            fetching: Mutex::new(()),
        })
    }

    /// The file's size.
    pub fn size(&self) -> u64 {
        self.ends.last().copied().unwrap_or(0)
    }

    fn start(&self, chunk_index: usize) -> u64 {
        if chunk_index == 0 {
            0
        } else {
            self.ends[chunk_index - 1]
        }
    }

    /// The positions of the chunks holding `[offset, end)` (`end` > `offset`, within the file).
    fn chunks_covering(&self, offset: u64, end: u64) -> std::ops::Range<usize> {
        let first = self.ends.partition_point(|&chunk_end| chunk_end <= offset);
        let last = self.ends.partition_point(|&chunk_end| chunk_end < end);
        first..last + 1
    }
}

/// The blob cache and read-ahead shared by every open file of a mount.
#[derive(Debug)]
pub struct ContentReader {
    repository: Arc<Repository>,
    blobs: Mutex<Lru<Id, Arc<Vec<u8>>>>,
    prefetch: Mutex<(Arc<Prefetch>, u64)>,
}

impl ContentReader {
    /// A reader of `repository`'s blobs with empty caches.
    pub fn new(repository: Arc<Repository>) -> Self {
        Self {
            repository,
            blobs: Mutex::new(Lru::new(BLOB_CACHE_BYTES)),
            prefetch: Mutex::new((Arc::new(Prefetch::new(PREFETCH_BYTES)), 0)),
        }
    }

    /// Up to `length` bytes of `file` from `offset`: fewer only at its end, none past it.
    /// Fetches only the chunks the range needs, plus a read-ahead window when the reads of this
    /// file follow each other. Every chunk is authenticated and checked against its id.
    ///
    /// # Errors
    /// A chunk that cannot be read or does not verify, or cache failures.
    pub fn read(&self, file: &OpenFile, offset: u64, length: u32) -> Result<Vec<u8>, Arc<Error>> {
        let size = file.size();
        if offset >= size || length == 0 {
            return Ok(Vec::new());
        }
        let end = size.min(offset + u64::from(length));
        let needed = file.chunks_covering(offset, end);
        let ahead = {
            let mut run = file
                .run
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let (next, ahead) = read_ahead(*run, offset, end);
            *run = Some(next);
            ahead
        };
        let mut wanted = needed.clone();
        while ahead > 0
            && wanted.end < file.chunks.len()
            && file.ends[wanted.end - 1] - file.start(needed.end) < ahead
        {
            wanted.end += 1;
        }
        let mut plaintexts: Vec<Option<Arc<Vec<u8>>>> = {
            let mut blobs = self
                .blobs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            needed
                .clone()
                .map(|index| blobs.get(&file.chunks[index]))
                .collect()
        };
        if plaintexts.iter().any(Option::is_none) {
            let _fetching = file
                .fetching
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let missing: Vec<Id> = {
                let mut blobs = self
                    .blobs
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                wanted
                    .clone()
                    .map(|index| file.chunks[index])
                    .filter(|id| blobs.get(id).is_none())
                    .collect()
            };
            let fetched = if missing.is_empty() {
                std::collections::HashMap::new()
            } else {
                let prefetch = self.prefetch();
                fetch::fetch_data_blobs(&self.repository, &missing, Some(&prefetch))
                    .map_err(Arc::new)?
            };
            let mut fetched_bytes = 0u64;
            let mut blobs = self
                .blobs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for id in &missing {
                match fetched.get(id) {
                    Some(Ok(plaintext)) => {
                        fetched_bytes += plaintext.len() as u64;
                        blobs.insert(*id, Arc::clone(plaintext), plaintext.len());
                    }
                    Some(Err(error)) if file.chunks[needed.clone()].contains(id) => {
                        return Err(Arc::clone(error));
                    }
                    _ => {}
                }
            }
            // A read that waited for another's fetch finds its chunks in the cache.
            for (slot, index) in plaintexts.iter_mut().zip(needed.clone()) {
                if slot.is_none() {
                    let id = &file.chunks[index];
                    *slot = fetched
                        .get(id)
                        .and_then(|outcome| outcome.as_ref().ok())
                        .cloned()
                        .or_else(|| blobs.get(id));
                }
            }
            drop(blobs);
            self.count_fetched(fetched_bytes);
        }
        let mut out = Vec::with_capacity(usize::try_from(end - offset).unwrap_or(0));
        for (plaintext, index) in plaintexts.into_iter().zip(needed) {
            let id = file.chunks[index];
            let plaintext = plaintext.ok_or_else(|| {
                Arc::new(Error::BlobMissing {
                    blob_type: cairn_store::BlobType::Data.name(),
                    id,
                })
            })?;
            let start = file.start(index);
            if plaintext.len() as u64 != file.ends[index] - start {
                return Err(Arc::new(Error::Damaged {
                    object: format!("data blob {id}"),
                    reason: "its length differs from the index's".into(),
                }));
            }
            let from = usize::try_from(offset.max(start) - start).unwrap_or(usize::MAX);
            let to = usize::try_from(end.min(file.ends[index]) - start).unwrap_or(usize::MAX);
            out.extend_from_slice(&plaintext[from..to]);
        }
        Ok(out)
    }

    fn prefetch(&self) -> Arc<Prefetch> {
        let guard = self
            .prefetch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(&guard.0)
    }

    fn count_fetched(&self, bytes: u64) {
        let mut guard = self
            .prefetch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        guard.1 += bytes;
        if guard.1 > PREFETCH_RENEWAL_BYTES {
            *guard = (Arc::new(Prefetch::new(PREFETCH_BYTES)), 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(lengths: &[u64]) -> OpenFile {
        let mut end = 0;
        OpenFile {
            chunks: (0..lengths.len())
                .map(|index| Id([u8::try_from(index).unwrap(); 32]))
                .collect(),
            ends: lengths
                .iter()
                .map(|length| {
                    end += length;
                    end
                })
                .collect(),
            run: Mutex::new(None),
            fetching: Mutex::new(()),
        }
    }

    #[test]
    fn a_range_needs_exactly_the_chunks_it_touches() {
        let file = file(&[10, 10, 10]);
        assert_eq!(file.chunks_covering(0, 1), 0..1);
        assert_eq!(file.chunks_covering(9, 10), 0..1);
        assert_eq!(file.chunks_covering(9, 11), 0..2);
        assert_eq!(file.chunks_covering(10, 20), 1..2);
        assert_eq!(file.chunks_covering(10, 21), 1..3);
        assert_eq!(file.chunks_covering(29, 30), 2..3);
        assert_eq!(file.chunks_covering(0, 30), 0..3);
        assert_eq!(file.size(), 30);
        assert_eq!(self::file(&[]).size(), 0);
    }

    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;

    /// The read-ahead of each read of `reads` (`(offset, length)`), from a fresh file.
    fn read_aheads(reads: &[(u64, u64)]) -> Vec<u64> {
        let mut run = None;
        reads
            .iter()
            .map(|&(offset, length)| {
                let (next, ahead) = read_ahead(run, offset, offset + length);
                run = Some(next);
                ahead
            })
            .collect()
    }

    /// A read of `length` bytes at `offset` as the kernel sends it: reads of at most `piece`
    /// bytes, in order or with neighbours swapped (two threads answering out of order).
    fn kernel_reads(offset: u64, length: u64, piece: u64, swapped: bool) -> Vec<(u64, u64)> {
        let mut reads: Vec<(u64, u64)> = (offset..offset + length)
            .step_by(usize::try_from(piece).unwrap())
            .map(|start| (start, piece.min(offset + length - start)))
            .collect();
        if swapped {
            for pair in reads.chunks_mut(2) {
                pair.reverse();
            }
        }
        reads
    }

    #[test]
    fn random_reads_never_read_ahead_whatever_their_size() {
        for length in [4 * KIB, 128 * KIB, MIB, 2 * MIB - 1] {
            for piece in [4 * KIB, 128 * KIB] {
                for swapped in [false, true] {
                    // 64 reads at distinct 4 MiB slots of a 256 MiB file, each far from the last.
                    let reads: Vec<(u64, u64)> = (0..64u64)
                        .flat_map(|index| {
                            kernel_reads((index * 37 % 64) * 4 * MIB + 5, length, piece, swapped)
                        })
                        .collect();
                    assert!(
                        read_aheads(&reads).iter().all(|&ahead| ahead == 0),
                        "{length} bytes in reads of {piece} (swapped: {swapped})"
                    );
                }
            }
        }
    }

    #[test]
    fn a_sequential_run_reads_ahead_once_it_is_long_enough_and_grows_to_the_cap() {
        for start in [0, 100 * MIB + 3] {
            // The kernel's reads are at most 128 KiB; only those come out of order.
            for (piece, swapped) in [
                (4 * KIB, false),
                (4 * KIB, true),
                (128 * KIB, false),
                (128 * KIB, true),
                (MIB, false),
            ] {
                let reads = kernel_reads(start, 32 * MIB, piece, swapped);
                let aheads = read_aheads(&reads);
                let case = format!("start {start}, reads of {piece}, swapped: {swapped}");
                for (index, (&(offset, length), &ahead)) in reads.iter().zip(&aheads).enumerate() {
                    // The furthest byte read so far, from the run's start.
                    let covered = reads[..=index]
                        .iter()
                        .map(|&(offset, length)| offset + length)
                        .max()
                        .unwrap()
                        - start;
                    if covered < SEQUENTIAL_RUN_BEFORE_READ_AHEAD {
                        assert_eq!(ahead, 0, "{case}: read at {offset}+{length}");
                    } else {
                        assert_eq!(
                            ahead,
                            covered.min(READ_AHEAD_BYTES),
                            "{case}: read at {offset}+{length}"
                        );
                    }
                }
                assert_eq!(aheads.last(), Some(&READ_AHEAD_BYTES), "{case}");
            }
        }
    }

    #[test]
    fn a_jump_starts_a_new_run_with_nothing_read_ahead() {
        let run_end = 50 * MIB;
        // Backwards past the slack, to the start, forwards past the slack, far forwards.
        for jump_to in [run_end - 3 * MIB, 0, run_end + 2 * MIB, 10 << 30] {
            let mut reads = kernel_reads(run_end - 16 * MIB, 16 * MIB, 128 * KIB, false);
            let before = reads.len();
            reads.extend(kernel_reads(jump_to, 4 * MIB, 128 * KIB, false));
            let aheads = read_aheads(&reads);
            assert_eq!(aheads[before - 1], READ_AHEAD_BYTES, "jump to {jump_to}");
            let after = &aheads[before..];
            // 16 reads of 128 KiB make the 2 MiB a new run needs.
            assert!(
                after[..15].iter().all(|&ahead| ahead == 0),
                "jump to {jump_to}: {after:?}"
            );
            assert!(
                after[15..].iter().all(|&ahead| ahead > 0),
                "jump to {jump_to}"
            );
        }
    }

    #[test]
    fn reading_the_same_bytes_again_does_not_lengthen_the_run() {
        for piece in [4 * KIB, 128 * KIB, MIB] {
            let reads = vec![(7 * MIB, piece); 100];
            assert!(
                read_aheads(&reads).iter().all(|&ahead| ahead == 0),
                "{piece}"
            );
        }
    }
}
