//! File content through the mount: where each chunk of an open file starts, which chunks a read
//! needs, and fetching them (authenticated by the repository, as a restore does) into a small
//! cache of plaintext blobs, with a read-ahead window for sequential readers.

use std::sync::{Arc, Mutex};

use cairn_store::fetch::{self, Prefetch};
use cairn_store::{Error, Id, Repository};

use crate::lru::Lru;

/// Plaintext blobs kept for the next reads (a FUSE read is at most 128 KiB; a chunk is about
/// 1 MiB, so a sequential reader asks for each chunk several times).
pub const BLOB_CACHE_BYTES: usize = 32 << 20;
/// How far a sequential reader is read ahead, in plaintext bytes.
pub const READ_AHEAD_BYTES: u64 = 16 << 20;
/// Blobs a ranged read covered before they were asked for (they are shuffled in their pack).
pub const PREFETCH_BYTES: usize = 32 << 20;
/// After this many plaintext bytes fetched the prefetch stash (and its remembered pack
/// trailers) starts anew, so a long session does not collect every trailer it met.
const PREFETCH_RENEWAL_BYTES: u64 = 2 << 30;
/// A read within this distance of where the last one ended counts as sequential (the kernel
/// sends reads of several threads slightly out of order).
const SEQUENTIAL_SLACK: u64 = 1 << 20;

/// No read of the file yet (where [`OpenFile`]'s last read ended before the first).
const NO_READ_YET: u64 = u64::MAX;

/// How far to read ahead of a read of `[offset, end)` that follows one ending at `previous_end`
/// ([`NO_READ_YET`] before the first) after a sequential run of `run` bytes (the reads that
/// continued each other before this one). Returns the new run and the read-ahead in bytes.
///
/// A first read or a read elsewhere (a random reader) reads nothing ahead and starts a new run;
/// a read continuing the last one reads ahead as far as the run has gone, up to
/// [`READ_AHEAD_BYTES`]: a window that grows as a reader proves sequential, as the kernel's own
/// read-ahead does. Pure.
fn read_ahead(previous_end: u64, run: u64, offset: u64, end: u64) -> (u64, u64) {
    let continues =
        previous_end != NO_READ_YET && offset.abs_diff(previous_end) <= SEQUENTIAL_SLACK;
    if continues {
        let run = run.saturating_add(end - offset);
        (run, run.min(READ_AHEAD_BYTES))
    } else {
        (end - offset, 0)
    }
}

/// An open file: its chunks and where each one ends.
#[derive(Debug)]
pub struct OpenFile {
    chunks: Vec<Id>,
    /// `ends[i]` is one past the last byte of chunk `i`.
    ends: Vec<u64>,
    /// Where the last read ended ([`NO_READ_YET`] before the first), and how many bytes the
    /// reads that continued each other up to it covered: to tell sequential readers.
    last_read: Mutex<(u64, u64)>,
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
            last_read: Mutex::new((NO_READ_YET, 0)),
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
            let mut last_read = file
                .last_read
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let (run, ahead) = read_ahead(last_read.0, last_read.1, offset, end);
            *last_read = (end, run);
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
            last_read: Mutex::new((NO_READ_YET, 0)),
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

    #[test]
    fn read_ahead_starts_with_the_second_sequential_read_and_grows_with_the_run() {
        const READ: u64 = 128 << 10;
        // The first read, at the start or in the middle, reads nothing ahead.
        assert_eq!(read_ahead(NO_READ_YET, 0, 0, READ), (READ, 0));
        assert_eq!(
            read_ahead(NO_READ_YET, 0, 100 << 20, (100 << 20) + READ),
            (READ, 0)
        );
        // The second read that continues the first reads ahead as far as the run went.
        assert_eq!(read_ahead(READ, READ, READ, 2 * READ), (2 * READ, 2 * READ));
        // Slightly out of order (the kernel's concurrent reads) still continues the run.
        assert_eq!(
            read_ahead(4 * READ, 4 * READ, 3 * READ, 4 * READ),
            (5 * READ, 5 * READ)
        );
        // A long run reads ahead at most READ_AHEAD_BYTES.
        let (run, ahead) = read_ahead(1 << 30, 1 << 30, 1 << 30, (1 << 30) + READ);
        assert_eq!((run, ahead), ((1 << 30) + READ, READ_AHEAD_BYTES));
        // A jump elsewhere starts a new run with nothing read ahead.
        assert_eq!(
            read_ahead(1 << 30, 1 << 30, 5 << 30, (5 << 30) + READ),
            (READ, 0)
        );
        assert_eq!(read_ahead(5 << 30, 5 << 30, 0, READ), (READ, 0));
    }
}
