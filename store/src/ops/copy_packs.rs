//! `copy`'s content path when both repositories chunk alike: the chunks of a list of files are
//! read from the source pack by pack, each needed pack range once, in the order the files first
//! need them ([`copy_order::read_order`]), streamed ([`fetch::stream_sealed_reads`] on a reader
//! thread). Each blob is authenticated, re-keyed and stored in the destination as it arrives
//! (the destination does not care about order); each file's destination content hash is fed in
//! file order ([`copy_order::Reorder`]): a chunk that arrives early is held as its sealed source
//! bytes (opened again when its turn comes), up to [`HELD_BUDGET`]; a file that would overflow
//! it is hashed afterwards by reading its remaining chunks again in order. Memory is the held
//! budget, a few reads' batches and a few dozen bytes per chunk reference of a group
//! ([`GROUP_CHUNKS`]), never the files' content.
//!
//! Never prints. The caller records the results (copy map, trees); this module only stores
//! blobs through the caller's saver.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::sync_channel;

use rayon::prelude::*;

use crate::crypto::id::{BlobType, Id};
use crate::error::{Error, Result};
use crate::index::cache::BlobLocation;
use crate::policy::copy_order::{self, Landing, Reorder, Segment};
use crate::repo::fetch::{self, ReadWindow};
use crate::repo::repository::Repository;
use crate::repo::saver::BlobSaver;

/// Chunk references planned at once (a location, a place and a destination id each).
pub(crate) const GROUP_CHUNKS: usize = 65_536;
/// Sealed bytes of early chunks held for the hashes (about one default pack: blobs are
/// shuffled within their pack, so a file's hash waits for at most about one pack).
pub(crate) const HELD_BUDGET: usize = 24 * 1024 * 1024;
/// Sealed bytes the reader hands over at once.
const BATCH_BYTES: usize = 1024 * 1024;
/// Batches waiting between the reader and the main thread.
const BATCHES_QUEUED: usize = 2;
/// Plaintext read at once when a dropped file's hash is fed by reading again.
const RESUME_WINDOW: u64 = 4 * 1024 * 1024;

/// One copied file: its destination content hash and chunk ids.
pub(crate) type CopiedContent = (Id, Vec<Id>);

/// An early chunk held for a hash: where it was read from and its sealed bytes.
type Held = (BlobLocation, Arc<Vec<u8>>);

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
) -> Result<Vec<CopiedContent>> {
    let counts: Vec<usize> = files.iter().map(|chunks| chunks.len()).collect();
    let mut hashers: Vec<Option<Box<blake3::Hasher>>> = (0..files.len()).map(|_| None).collect();
    let mut chunks: Vec<Vec<Id>> = counts
        .iter()
        .map(|&count| Vec::with_capacity(count))
        .collect();
    for group in copy_order::plan_groups(&counts, GROUP_CHUNKS) {
        let mut state = Group {
            source,
            destination,
            files,
            segments: &group,
            hashers: &mut hashers,
        };
        let copied = state.copy(saver)?;
        for (segment, ids) in group.iter().zip(copied) {
            chunks[segment.file].extend(ids);
        }
    }
    Ok(hashers
        .into_iter()
        .zip(chunks)
        .map(|(hasher, chunks)| {
            let hasher = hasher.unwrap_or_else(|| Box::new(destination.keys().file_hasher()));
            (Id(*hasher.finalize().as_bytes()), chunks)
        })
        .collect())
}

/// One group of segments on its way.
struct Group<'a, 'repo> {
    source: &'repo Repository,
    destination: &'repo Repository,
    files: &'a [&'a [Id]],
    segments: &'a [Segment],
    /// Each file's destination content hash so far (created at its first chunk).
    hashers: &'a mut Vec<Option<Box<blake3::Hasher>>>,
}

impl Group<'_, '_> {
    /// Reads, stores and hashes the group's chunks; returns each segment's destination ids.
    fn copy(&mut self, saver: &mut BlobSaver<'_>) -> Result<Vec<Vec<Id>>> {
        // Where each source blob goes, and the rank of its first use.
        let mut places: HashMap<Id, Vec<(usize, usize)>> = HashMap::new();
        let mut first_use: HashMap<Id, usize> = HashMap::new();
        for (segment_index, segment) in self.segments.iter().enumerate() {
            for position in segment.chunks.clone() {
                let id = self.files[segment.file][position];
                let rank = first_use.len();
                first_use.entry(id).or_insert(rank);
                places
                    .entry(id)
                    .or_default()
                    .push((segment_index, position));
            }
        }
        let unique: Vec<Id> = places.keys().copied().collect();
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
        let mut reorder: Reorder<Held> = Reorder::new(&ranges, HELD_BUDGET);
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

    /// One batch from the reader: opened (authenticated) in parallel, stored in the
    /// destination, and fed to the hashes of the files that need it.
    fn take_batch(
        &mut self,
        saver: &mut BlobSaver<'_>,
        batch: Vec<(BlobLocation, Vec<u8>)>,
        places: &HashMap<Id, Vec<(usize, usize)>>,
        reorder: &mut Reorder<Held>,
        destination_ids: &mut HashMap<Id, Id>,
    ) -> Result<()> {
        let source = self.source;
        let opened: Vec<Vec<u8>> = batch
            .par_iter()
            .map(|(location, sealed)| source.open_blob_bytes(location, sealed))
            .collect::<Result<_>>()?;
        let slices: Vec<&[u8]> = opened.iter().map(Vec::as_slice).collect();
        let ids = saver.save(BlobType::Data, &slices)?;
        for (((location, sealed), plaintext), destination_id) in
            batch.into_iter().zip(&opened).zip(ids)
        {
            let source_id = location.entry.id;
            destination_ids.insert(source_id, destination_id);
            let Some(places) = places.get(&source_id) else {
                continue;
            };
            let sealed = Arc::new(sealed);
            for &(segment_index, position) in places {
                let weight = sealed.len();
                let landing = reorder.land(
                    segment_index,
                    position,
                    || (location, Arc::clone(&sealed)),
                    weight,
                );
                if landing != Landing::Now {
                    continue;
                }
                let file = self.segments[segment_index].file;
                self.hasher(file).update(plaintext);
                while let Some((held_location, held_sealed)) = reorder.next_held(segment_index) {
                    let held_plaintext = source.open_blob_bytes(&held_location, &held_sealed)?;
                    self.hasher(file).update(&held_plaintext);
                }
            }
        }
        Ok(())
    }

    fn hasher(&mut self, file: usize) -> &mut blake3::Hasher {
        let keys = self.destination.keys();
        self.hashers[file].get_or_insert_with(|| Box::new(keys.file_hasher()))
    }

    /// Feeds a file's hash with its chunks `positions`, read again in order (its early chunks
    /// overflowed the held budget).
    fn hash_again(&mut self, file: usize, positions: std::ops::Range<usize>) -> Result<()> {
        let chunks = &self.files[file][positions];
        for (window, _) in fetch::windows(self.source, chunks, RESUME_WINDOW)? {
            let ids = &chunks[window];
            let fetched = fetch::fetch_data_blobs(self.source, ids, None)?;
            for id in ids {
                match &fetched[id] {
                    Ok(plaintext) => self.hasher(file).update(plaintext),
                    Err(error) => return Err(Error::for_fetched(format!("data blob {id}"), error)),
                };
            }
        }
        Ok(())
    }
}
