//! `copy`'s content path when both repositories chunk alike: the chunks of a list of files are
//! read from the source pack by pack, each needed pack range once, in the order the files first
//! need them ([`copy_order::read_order`]), streamed ([`fetch::stream_sealed_reads`] on a reader
//! thread). Each blob is authenticated, re-keyed and stored in the destination as it arrives
//! (the destination does not care about order); each file's destination content hash is
//! assembled in file order ([`copy_order::Reorder`]): a chunk that arrives early is hashed at
//! once where it lies in its file ([`HashedRange`]) and joined to the early chunks next to it,
//! so what waits for the chunks before it is a run's edges and a few chaining values (about
//! 2 KiB a run, whatever its length), not its bytes; every chunk is read once. Only a file
//! whose runs would overflow [`Budgets::held_bytes`] is hashed afterwards by reading its
//! remaining chunks again in order. Memory is the held budget, a few reads' batches and a few
//! dozen bytes per chunk reference of a group ([`Budgets::group_chunks`]), never the files'
//! content.
//!
//! Never prints. The caller records the results (copy map, trees); this module only stores
//! blobs through the caller's saver.

use std::collections::HashMap;
use std::sync::mpsc::sync_channel;

use rayon::prelude::*;

use crate::crypto::hashed_range::HashedRange;
use crate::crypto::id::{BlobType, Id};
use crate::error::{Error, Result};
use crate::index::cache::BlobLocation;
use crate::policy::copy_order::{self, HeldRun, Landing, Reorder, Segment};
use crate::repo::fetch::{self, ReadWindow};
use crate::repo::repository::Repository;
use crate::repo::saver::BlobSaver;

/// How much a content copy plans and holds at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Budgets {
    /// Chunk references planned at once (a location, a place and a destination id each).
    pub group_chunks: usize,
    /// Bytes of the early chunks' runs held for the hashes ([`HashedRange::weight`]).
    pub held_bytes: usize,
}

impl Budgets {
    /// 65,536 references (a few MiB of plan) and 4 MiB of held runs: about 2,000 runs apart
    /// from each other. Packs are read in the order the files need them and blobs are
    /// shuffled within their pack, so a file's hash waits for at most about a pack's chunks,
    /// most of them joined with their neighbours.
    pub(crate) const DEFAULT: Self = Self {
        group_chunks: 65_536,
        held_bytes: 4 * 1024 * 1024,
    };
}
/// Sealed bytes the reader hands over at once.
const BATCH_BYTES: usize = 1024 * 1024;
/// Batches waiting between the reader and the main thread.
const BATCHES_QUEUED: usize = 2;
/// Plaintext read at once when a dropped file's hash is fed by reading again.
const RESUME_WINDOW: u64 = 4 * 1024 * 1024;

/// Where a group's source blob goes: (segment index, position, byte offset in its file) for
/// each of its uses.
type Places = HashMap<Id, Vec<(usize, usize, u64)>>;

/// One copied file: its destination content hash and chunk ids.
pub(crate) type CopiedContent = (Id, Vec<Id>);

/// What [`copy_contents`] copied.
#[derive(Debug)]
pub(crate) struct CopiedContents {
    /// Each file's destination content hash and chunk ids, in order.
    pub files: Vec<CopiedContent>,
    /// Plaintext bytes read a second time to feed a hash (early chunks overflowed the budget).
    pub bytes_read_again: u64,
}

impl HeldRun for HashedRange {
    fn weight(&self) -> usize {
        HashedRange::weight(self)
    }

    fn append(&mut self, later: Self) {
        HashedRange::append(self, later);
    }
}

/// Copies the contents of `files` (each a list of source chunk ids) into the destination
/// through `saver`; returns each file's destination content hash and chunk ids, in order.
///
/// # Errors
/// A chunk the source index does not list, a chunk that fails authentication, backend, cache
/// or saver failures: the copy stops at the first.
pub(crate) fn copy_contents(
    source: &Repository,
    destination: &Repository,
    saver: &mut BlobSaver<'_>,
    files: &[&[Id]],
    budgets: Budgets,
) -> Result<CopiedContents> {
    let counts: Vec<usize> = files.iter().map(|chunks| chunks.len()).collect();
    let mut hashes: Vec<Option<Box<HashedRange>>> = (0..files.len()).map(|_| None).collect();
    let mut chunks: Vec<Vec<Id>> = counts
        .iter()
        .map(|&count| Vec::with_capacity(count))
        .collect();
    let mut bytes_read_again = 0;
    for group in copy_order::plan_groups(&counts, budgets.group_chunks) {
        let mut state = Group {
            source,
            destination,
            files,
            segments: &group,
            held_budget: budgets.held_bytes,
            hashes: &mut hashes,
            bytes_read_again: 0,
        };
        let copied = state.copy(saver)?;
        bytes_read_again += state.bytes_read_again;
        for (segment, ids) in group.iter().zip(copied) {
            chunks[segment.file].extend(ids);
        }
    }
    let files = hashes
        .into_iter()
        .zip(chunks)
        .map(|(hash, chunks)| {
            let hash = hash.unwrap_or_else(|| Box::new(destination.keys().file_hash_range(0)));
            (Id(hash.finalize()), chunks)
        })
        .collect();
    Ok(CopiedContents {
        files,
        bytes_read_again,
    })
}

/// One group of segments on its way.
struct Group<'a, 'repo> {
    source: &'repo Repository,
    destination: &'repo Repository,
    files: &'a [&'a [Id]],
    segments: &'a [Segment],
    held_budget: usize,
    /// Each file's destination content hash so far, from its start (created at its first
    /// chunk).
    hashes: &'a mut Vec<Option<Box<HashedRange>>>,
    /// Plaintext bytes read a second time by [`Group::hash_again`].
    bytes_read_again: u64,
}

impl Group<'_, '_> {
    /// Reads, stores and hashes the group's chunks; returns each segment's destination ids.
    fn copy(&mut self, saver: &mut BlobSaver<'_>) -> Result<Vec<Vec<Id>>> {
        // The rank of each source blob's first use.
        let mut first_use: HashMap<Id, usize> = HashMap::new();
        for segment in self.segments {
            for id in &self.files[segment.file][segment.chunks.clone()] {
                let rank = first_use.len();
                first_use.entry(*id).or_insert(rank);
            }
        }
        let unique: Vec<Id> = first_use.keys().copied().collect();
        let mut locations = Vec::with_capacity(unique.len());
        for (id, location) in unique.iter().zip(self.source.cache().lookup_many(&unique)?) {
            match location.filter(|location| location.entry.blob_type == BlobType::Data) {
                Some(location) => locations.push(location),
                None => {
                    return Err(Error::for_fetched(
                        format!("data blob {id}"),
                        &Error::BlobMissing {
                            blob_type: BlobType::Data.name(),
                            id: *id,
                        },
                    ));
                }
            }
        }
        let places = self.places(&locations);
        let window = ReadWindow::RESTORE;
        let reads = fetch::plan_reads(locations, window.gap, window.max_read);
        let read_blobs: Vec<Vec<Id>> = reads
            .iter()
            .map(|read| {
                read.blobs
                    .iter()
                    .map(|location| location.entry.id)
                    .collect()
            })
            .collect();
        let order = copy_order::read_order(&read_blobs, &first_use);
        drop(read_blobs);
        drop(first_use);
        let mut ordered = Vec::with_capacity(reads.len());
        let mut reads: Vec<Option<fetch::PackRead>> = reads.into_iter().map(Some).collect();
        for index in order {
            ordered.extend(reads[index].take());
        }
        drop(reads);
        let ranges: Vec<std::ops::Range<usize>> = self
            .segments
            .iter()
            .map(|segment| segment.chunks.clone())
            .collect();
        let mut reorder: Reorder<HashedRange> = Reorder::new(&ranges, self.held_budget);
        let mut destination_ids: HashMap<Id, Id> = HashMap::with_capacity(places.len());
        let source = self.source;
        let (sender, receiver) = sync_channel::<Vec<(BlobLocation, Vec<u8>)>>(BATCHES_QUEUED);
        let outcome = std::thread::scope(|scope| {
            let reader = scope.spawn(move || {
                let mut batch: Vec<(BlobLocation, Vec<u8>)> = Vec::new();
                let mut batch_bytes = 0;
                let streamed =
                    fetch::stream_sealed_reads(source, &ordered, &mut |location, sealed| {
                        batch_bytes += sealed.len();
                        batch.push((*location, sealed.to_vec()));
                        if batch_bytes >= BATCH_BYTES {
                            batch_bytes = 0;
                            sender
                                .send(std::mem::take(&mut batch))
                                .map_err(|_| Error::Usage("copy stopped".into()))?;
                        }
                        Ok(())
                    });
                if streamed.is_ok() && !batch.is_empty() {
                    let _ = sender.send(batch);
                }
                streamed
            });
            let mut taken = Ok(());
            for batch in &receiver {
                taken = self.take_batch(saver, batch, &places, &mut reorder, &mut destination_ids);
                if taken.is_err() {
                    break;
                }
            }
            // Ends the reader if it is still sending.
            drop(receiver);
            let read = reader
                .join()
                .unwrap_or_else(|_| Err(Error::Usage("the copy's reader panicked".into())));
            taken.and(read)
        });
        outcome?;
        for (segment_index, segment) in self.segments.iter().enumerate() {
            if let Some(resume) = reorder.resume_at(segment_index) {
                self.hash_again(segment.file, resume..segment.chunks.end)?;
            }
        }
        self.segments
            .iter()
            .map(|segment| {
                self.files[segment.file][segment.chunks.clone()]
                    .iter()
                    .map(|id| {
                        destination_ids
                            .get(id)
                            .copied()
                            .ok_or_else(|| Error::Damaged {
                                object: format!("data blob {id}"),
                                reason: "it was not delivered by its pack read".into(),
                            })
                    })
                    .collect()
            })
            .collect()
    }

    /// Where each source blob of the group goes: (segment index, position, byte offset in its
    /// file) for each of its uses, from the blobs' `locations` (their plaintext lengths).
    fn places(&self, locations: &[BlobLocation]) -> Places {
        let lengths: HashMap<Id, u64> = locations
            .iter()
            .map(|location| (location.entry.id, u64::from(location.entry.raw_length)))
            .collect();
        let mut places: Places = HashMap::with_capacity(lengths.len());
        for (segment_index, segment) in self.segments.iter().enumerate() {
            // Where the segment starts: what its file's hash holds so far (earlier groups).
            let mut offset = self.hashes[segment.file]
                .as_ref()
                .map_or(0, |hash| hash.end());
            for position in segment.chunks.clone() {
                let id = self.files[segment.file][position];
                places
                    .entry(id)
                    .or_default()
                    .push((segment_index, position, offset));
                offset += lengths[&id];
            }
        }
        places
    }

    /// One batch from the reader: opened (authenticated) in parallel, stored in the
    /// destination, and fed to the hashes of the files that need it: hashed into the file's
    /// hash when it is the chunk the hash needs next, else hashed where it lies and held.
    fn take_batch(
        &mut self,
        saver: &mut BlobSaver<'_>,
        batch: Vec<(BlobLocation, Vec<u8>)>,
        places: &Places,
        reorder: &mut Reorder<HashedRange>,
        destination_ids: &mut HashMap<Id, Id>,
    ) -> Result<()> {
        let source = self.source;
        let opened: Vec<Vec<u8>> = batch
            .par_iter()
            .map(|(location, sealed)| source.open_blob_bytes(location, sealed))
            .collect::<Result<_>>()?;
        let source_ids: Vec<Id> = batch
            .iter()
            .map(|(location, _)| location.entry.id)
            .collect();
        // The sealed bytes are not needed once opened.
        drop(batch);
        let slices: Vec<&[u8]> = opened.iter().map(Vec::as_slice).collect();
        let ids = saver.save(BlobType::Data, &slices)?;
        for ((source_id, plaintext), destination_id) in source_ids.into_iter().zip(&opened).zip(ids)
        {
            destination_ids.insert(source_id, destination_id);
            let Some(places) = places.get(&source_id) else {
                continue;
            };
            let keys = self.destination.keys();
            for &(segment_index, position, offset) in places {
                let landing = reorder.land(segment_index, position, || {
                    let mut run = keys.file_hash_range(offset);
                    run.extend(plaintext);
                    run
                });
                if landing != Landing::Now {
                    continue;
                }
                let file = self.segments[segment_index].file;
                let hash = self.hash(file);
                hash.extend(plaintext);
                while let Some(run) = reorder.next_held(segment_index) {
                    hash.append(run);
                }
            }
        }
        Ok(())
    }

    /// The file's content hash so far (from its start).
    fn hash(&mut self, file: usize) -> &mut HashedRange {
        let keys = self.destination.keys();
        self.hashes[file].get_or_insert_with(|| Box::new(keys.file_hash_range(0)))
    }

    /// Feeds a file's hash with its chunks `positions`, read again in order (its early chunks
    /// overflowed the held budget).
    fn hash_again(&mut self, file: usize, positions: std::ops::Range<usize>) -> Result<()> {
        let chunks = &self.files[file][positions];
        for (window, bytes) in fetch::windows(self.source, chunks, RESUME_WINDOW)? {
            self.bytes_read_again += bytes;
            let ids = &chunks[window];
            let fetched = fetch::fetch_data_blobs(self.source, ids, None)?;
            for id in ids {
                match &fetched[id] {
                    Ok(plaintext) => self.hash(file).extend(plaintext),
                    Err(error) => return Err(Error::for_fetched(format!("data blob {id}"), error)),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::repository::InitOptions;

    /// A repository in a local directory with 1 MiB packs.
    fn repository(directory: &tempfile::TempDir) -> Repository {
        let options = InitOptions {
            pack_target_size: 1024 * 1024,
            ..InitOptions::with_cheapest_kdf()
        };
        crate::repo::repository::local_test_repository(directory.path(), &options)
    }

    /// Copies one file of `chunks` from `source` into a new repository, which must fail; checks
    /// that the blob of plaintext `absent` was never stored, and returns the error.
    fn failed_copy(source: &Repository, chunks: &[Id], absent: &[u8]) -> Error {
        let destination_directory = tempfile::tempdir().unwrap();
        let destination = repository(&destination_directory);
        let mut saver = BlobSaver::new(&destination);
        let error = copy_contents(
            source,
            &destination,
            &mut saver,
            &[chunks],
            Budgets::DEFAULT,
        )
        .unwrap_err();
        let absent = destination.keys().blob_id(BlobType::Data, absent);
        assert!(!saver.holds(&absent));
        saver.finish().unwrap();
        assert!(destination.cache().lookup(&absent).unwrap().is_none());
        error
    }

    /// `count` blobs of 1 to 60 KiB of incompressible bytes, saved into `source` (several
    /// 1 MiB packs, shuffled within each); returns their ids and plaintexts in save order.
    fn saved_blobs(source: &Repository, count: usize) -> (Vec<Id>, Vec<Vec<u8>>) {
        let blobs = crate::test_data::incompressible_blobs(
            5,
            (0..count).map(|index| index * 7919 % (60 * 1024) + 1),
        );
        let mut saver = BlobSaver::new(source);
        let slices: Vec<&[u8]> = blobs.iter().map(Vec::as_slice).collect();
        let ids = saver.save(BlobType::Data, &slices).unwrap();
        saver.finish().unwrap();
        (ids, blobs)
    }

    #[test]
    fn every_file_is_copied_exactly_whatever_the_layout_and_budgets() {
        let source_directory = tempfile::tempdir().unwrap();
        let source = repository(&source_directory);
        let (ids, blobs) = saved_blobs(&source, 64);
        let plaintext: HashMap<Id, &[u8]> = ids
            .iter()
            .copied()
            .zip(blobs.iter().map(Vec::as_slice))
            .collect();
        let packs: std::collections::HashSet<Id> = source
            .cache()
            .lookup_many(&ids)
            .unwrap()
            .into_iter()
            .map(|location| location.unwrap().pack_id)
            .collect();
        assert!(packs.len() >= 2, "the blobs span several packs");
        let backward: Vec<Id> = ids.iter().rev().copied().collect();
        let interleaved: Vec<Id> = (0..4)
            .flat_map(|stream| ids.iter().skip(stream).step_by(4).copied())
            .collect();
        // A chunk used twice in one file, and chunks shared with the other files.
        let repeated = vec![ids[5], ids[50], ids[5], ids[0], ids[63], ids[50]];
        let files: Vec<Vec<Id>> = vec![
            ids.clone(),
            Vec::new(),
            backward,
            vec![ids[40]],
            interleaved,
            repeated,
            Vec::new(),
        ];
        let lists: Vec<&[Id]> = files.iter().map(Vec::as_slice).collect();
        // Groups of one chunk, groups cutting files, one group; nothing held, a few runs, enough
        // runs, everything.
        let budgets = [
            (1, 0),
            (7, 0),
            (7, usize::MAX / 2),
            (65_536, 0),
            (65_536, 16 * 1024),
            (65_536, 256 * 1024),
            (65_536, usize::MAX / 2),
        ];
        for (group_chunks, held_bytes) in budgets {
            let destination_directory = tempfile::tempdir().unwrap();
            let destination = repository(&destination_directory);
            let mut saver = BlobSaver::new(&destination);
            let budgets = Budgets {
                group_chunks,
                held_bytes,
            };
            let copied = copy_contents(&source, &destination, &mut saver, &lists, budgets).unwrap();
            saver.finish().unwrap();
            assert_eq!(copied.files.len(), files.len());
            if held_bytes == 0 && group_chunks == 65_536 {
                // The backward file's chunks cannot all arrive in its order.
                assert!(copied.bytes_read_again > 0);
            }
            if held_bytes >= 256 * 1024 {
                // Early chunks are held as runs of a few KiB, not as their bytes (the backward
                // file alone is about 1.9 MiB): every chunk is read once.
                assert_eq!(copied.bytes_read_again, 0, "group {group_chunks}");
            }
            for (file, (hash, chunks)) in files.iter().zip(&copied.files) {
                let content: Vec<u8> = file.iter().flat_map(|id| plaintext[id].to_vec()).collect();
                let mut expected = destination.keys().file_hasher();
                expected.update(&content);
                assert_eq!(
                    *hash,
                    Id(*expected.finalize().as_bytes()),
                    "group {group_chunks}, held {held_bytes}"
                );
                assert_eq!(chunks.len(), file.len());
                // Each chunk re-keyed with the destination's key, and stored there.
                for (source_id, destination_id) in file.iter().zip(chunks) {
                    assert_eq!(
                        *destination_id,
                        destination
                            .keys()
                            .blob_id(BlobType::Data, plaintext[source_id])
                    );
                }
                let stored = destination.cache().lookup_many(chunks).unwrap();
                assert!(stored.iter().all(Option::is_some));
            }
        }
    }

    #[test]
    fn a_chunk_the_source_does_not_list_fails_the_copy() {
        let source_directory = tempfile::tempdir().unwrap();
        let source = repository(&source_directory);
        let (ids, _) = saved_blobs(&source, 10);
        let file = vec![ids[0], Id([9; 32]), ids[1]];
        let error = failed_copy(&source, &file, b"not in the source");
        assert!(
            error.to_string().contains(&Id([9; 32]).to_string()),
            "{error}"
        );
    }

    #[test]
    fn a_damaged_pack_fails_the_copy_and_nothing_unverified_is_stored() {
        let source_directory = tempfile::tempdir().unwrap();
        let source = repository(&source_directory);
        let (ids, blobs) = saved_blobs(&source, 40);
        let location = source.cache().lookup(&ids[17]).unwrap().unwrap();
        let path = source_directory
            .path()
            .join(crate::repo::repository::pack_name(&location.pack_id));
        let mut pack = std::fs::read(&path).unwrap();
        let range = location.entry.range();
        pack[usize::try_from(u64::midpoint(range.start, range.end)).unwrap()] ^= 0x20;
        std::fs::write(&path, pack).unwrap();
        let error = failed_copy(&source, &ids, &blobs[17]);
        assert!(error.to_string().contains("damaged"), "{error}");
    }
}
