//! The blob saver: deduplicates blobs against the index, seals new ones in parallel, packs them by
//! type and uploads finished packs on background threads, writing an index object after every few
//! packs and at the end. Memory is bounded: at most `SEALING_BATCHES` batches of new blobs being
//! sealed (or `SEALING_BYTES`), one open pack per type, `UPLOAD_QUEUE` packs waiting, one per
//! upload thread in flight (`Concurrency::uploads`), and the ids of blobs not yet indexed.
//!
//! Sealing does not hold up the saving thread: a `save` call computes ids, looks them up and
//! submits the new blobs as one batch to the rayon pool ([`InOrder`]), then packs the batches
//! that finished, oldest first, so blobs reach the packs in the order they were saved while the
//! caller reads and chunks the next block. It waits for the oldest batch only past the bound,
//! in `settle` and in `finish`.
//!
//! No cycle of waits (the invariant that keeps the saver from deadlocking, whatever the pack
//! size, the upload concurrency and the number of packs one `save` call fills): an upload
//! thread blocks only on the job queue (waiting for work) and in the backend; it never blocks
//! on the main thread to send a result, because the results channel is unbounded. The main
//! thread blocks only on sending a job (which an upload thread takes as soon as its current
//! put returns, or skips at once after a failure) and, in `finish` and on drop, on receiving
//! results once the job queue is closed (which ends when every thread has returned). So every
//! wait of the main thread is on progress the upload threads make on their own. Results stay
//! small (a pack's index entries, no pack bytes) and are taken after every job sent, so at
//! most `UPLOAD_QUEUE` + uploads + 1 of them wait at any time.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, channel, sync_channel};
use std::thread::JoinHandle;

use bytes::Bytes;
use rayon::prelude::*;

use crate::backend::{self, Backend, PutMode};
use crate::crypto::compressibility::{self, CompressionProbe, Verdict};
use crate::crypto::id::{BlobType, Id};
use crate::crypto::seal;
use crate::error::{Error, Result};
use crate::format::index::IndexedPack;
use crate::format::pack::{self, SealedBlob};
use crate::format::packer::Packer;
use crate::repo::in_order::{InOrder, Wait};
use crate::repo::pipeline_stats::{self, Stage};
use crate::repo::repository::{Repository, pack_name};

/// Packs waiting for an upload thread before `save` blocks (backpressure).
const UPLOAD_QUEUE: usize = 2;
/// Packs per index object written during a run.
const PACKS_PER_INDEX: usize = 16;
/// Batches of new blobs being sealed before `save` waits for the oldest (besides the one it
/// just submitted): enough to keep the pool busy while the saving thread packs and looks up.
const SEALING_BATCHES: usize = 1;
/// Plaintext bytes of new blobs being sealed before `save` waits for the oldest batch (a single
/// batch may hold more: a group of small files).
const SEALING_BYTES: usize = 4 * 1024 * 1024;

/// What the saver added to the repository.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SaverStats {
    /// Blobs sealed and uploaded.
    pub blobs_added: u64,
    /// Plaintext bytes of those blobs.
    pub raw_bytes_added: u64,
    /// The same blobs after compression, before encryption (equal to the plaintext for blobs
    /// that did not compress).
    pub compressed_bytes_added: u64,
    /// Bytes of packs and index objects uploaded.
    pub bytes_added: u64,
    /// Packs uploaded.
    pub packs_added: u64,
}

/// New blobs of one `save` call, sealed together on the rayon pool.
struct SealingBatch {
    key: seal::SealKey,
    blob_type: BlobType,
    level: Option<i32>,
    probing: bool,
    blobs: Vec<(Id, Bytes)>,
}

/// One blob of a [`SealingBatch`], sealed.
struct Sealed {
    blob: SealedBlob,
    /// Whether the compressibility probe judged it (and counts it).
    probed: bool,
    /// Whether the probe chose to store it without compression.
    stored_raw_by_probe: bool,
}

impl SealingBatch {
    /// Probes and seals every blob, in parallel, keeping their order.
    fn seal(self) -> Vec<Sealed> {
        let SealingBatch {
            key,
            blob_type,
            level,
            probing,
            blobs,
        } = self;
        blobs
            .par_iter()
            .map(|(id, plaintext)| {
                let stored_raw_by_probe = probing
                    && pipeline_stats::time(Stage::Probe, || compressibility::judge(plaintext))
                        == Verdict::StoreRaw;
                let sealing = pipeline_stats::start(Stage::Seal);
                let blob = SealedBlob {
                    blob_type,
                    id: *id,
                    raw_length: u32::try_from(plaintext.len()).expect("blob under 4 GiB"),
                    sealed: seal::seal(
                        &key,
                        seal::random_nonce(),
                        &seal::blob_associated_data(blob_type, id),
                        plaintext,
                        level.filter(|_| !stored_raw_by_probe),
                    ),
                };
                sealing.stop();
                Sealed {
                    blob,
                    probed: probing,
                    stored_raw_by_probe,
                }
            })
            .collect()
    }
}

/// How far [`BlobSaver::pack_sealed`] waits for sealing batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drain {
    /// Pack the finished batches; wait for the oldest only while more than the bound are out.
    Bounded,
    /// Wait for every batch.
    All,
}

struct UploadJob {
    /// The pack as the slices whose concatenation it is ([`backend::coalesce`] of
    /// [`pack::build_pack_pieces`]).
    pieces: Vec<Bytes>,
    pack: IndexedPack,
}

/// Saves blobs into a repository; see the module documentation.
pub struct BlobSaver<'repo> {
    repository: &'repo Repository,
    data_packer: Packer,
    tree_packer: Packer,
    /// Blobs saved in this run whose index object is not yet written (being sealed, packed or
    /// uploaded).
    pending: HashSet<Id>,
    /// Batches of new blobs being sealed, oldest first.
    sealing: InOrder<Vec<Sealed>>,
    uploads: Option<SyncSender<UploadJob>>,
    results: Receiver<Result<IndexedPack>>,
    workers: Vec<JoinHandle<()>>,
    /// Set when an upload failed or the saver is dropped early: queued packs are not uploaded.
    stop: Arc<AtomicBool>,
    uploaded: Vec<IndexedPack>,
    /// Packs this run's snapshot depends on (see [`BlobSaver::relied_packs`]).
    relied: HashSet<Id>,
    stats: SaverStats,
    rng: rand::rngs::StdRng,
    /// Whether sealed blobs are packed and uploaded, or only counted (a dry run).
    writing: Writing,
}

/// Whether a saver writes to the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writing {
    /// Pack, upload and index new blobs.
    Store,
    /// Seal new blobs to measure them, then drop them: nothing reaches the repository or the
    /// local tree cache.
    Count,
}

impl<'repo> BlobSaver<'repo> {
    /// A saver for `repository`, with its upload threads started.
    pub fn new(repository: &'repo Repository) -> Self {
        let target = repository.config().pack_target_size as usize;
        let (job_sender, job_receiver) = sync_channel::<UploadJob>(UPLOAD_QUEUE);
        let job_receiver = Arc::new(std::sync::Mutex::new(job_receiver));
        let upload_threads = repository.concurrency().uploads;
        // Unbounded on purpose: see the module documentation.
        let (result_sender, results) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..upload_threads)
            .map(|_| {
                let backend: Arc<dyn Backend> = Arc::clone(repository.backend());
                let jobs = Arc::clone(&job_receiver);
                let results = result_sender.clone();
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    loop {
                        let idle = pipeline_stats::start(Stage::UploadIdle);
                        let job = match jobs.lock() {
                            Ok(receiver) => receiver.recv(),
                            Err(_) => return,
                        };
                        idle.stop();
                        let Ok(job) = job else { return };
                        // Once one upload has failed for good the run is lost: drop queued
                        // packs instead of spending every retry on each of them.
                        if stop.load(Ordering::SeqCst) {
                            continue;
                        }
                        let outcome = pipeline_stats::time(Stage::Upload, || {
                            backend.put_pieces(
                                &pack_name(&job.pack.pack_id),
                                job.pieces,
                                PutMode::Overwrite,
                            )
                        })
                        .map(|()| job.pack)
                        .map_err(Error::from);
                        if outcome.is_err() {
                            stop.store(true, Ordering::SeqCst);
                        }
                        if results.send(outcome).is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        Self {
            repository,
            data_packer: Packer::new(BlobType::Data, target),
            tree_packer: Packer::new(BlobType::Tree, target),
            pending: HashSet::new(),
            sealing: InOrder::default(),
            uploads: Some(job_sender),
            results,
            workers,
            stop,
            uploaded: Vec::new(),
            relied: HashSet::new(),
            stats: SaverStats::default(),
            rng: rand::SeedableRng::from_entropy(),
            writing: Writing::Store,
        }
    }

    /// A saver for a dry run: it deduplicates against the index and within the run, and
    /// compresses and seals new blobs to count them ([`SaverStats::bytes_added`] is then their
    /// sealed size, without pack headers or index objects), but writes nothing anywhere.
    pub fn dry_run(repository: &'repo Repository) -> Self {
        let target = repository.config().pack_target_size as usize;
        let (_, results) = channel();
        Self {
            repository,
            data_packer: Packer::new(BlobType::Data, target),
            tree_packer: Packer::new(BlobType::Tree, target),
            pending: HashSet::new(),
            sealing: InOrder::default(),
            uploads: None,
            results,
            workers: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            uploaded: Vec::new(),
            relied: HashSet::new(),
            stats: SaverStats::default(),
            rng: rand::SeedableRng::from_entropy(),
            writing: Writing::Count,
        }
    }

    /// Saves blobs of one type (deduplicated) and returns their ids in order. New blobs are
    /// copied and sealed in the background: see [`BlobSaver::save_shared`].
    ///
    /// # Errors
    /// Cache or backend failures, including a failed upload of an earlier pack.
    pub fn save(&mut self, blob_type: BlobType, blobs: &[&[u8]]) -> Result<Vec<Id>> {
        self.save_replacing(blob_type, blobs, &|_| false)
    }

    /// Like [`BlobSaver::save`], but a blob for which `unusable` holds is stored again even
    /// when the index lists it: its known copies are lost or damaged (`repair snapshots`).
    ///
    /// # Errors
    /// Cache or backend failures, including a failed upload of an earlier pack.
    pub fn save_replacing(
        &mut self,
        blob_type: BlobType,
        blobs: &[&[u8]],
        unusable: &dyn Fn(&Id) -> bool,
    ) -> Result<Vec<Id>> {
        let owned = |position: usize| Bytes::copy_from_slice(blobs[position]);
        self.save_deduplicated(blob_type, blobs, &owned, unusable)
    }

    /// Saves the blobs `data[range]` of one type (deduplicated) and returns their ids in order.
    ///
    /// Returns once the ids are known and looked up: new blobs are sealed on the rayon pool,
    /// from slices of `data` (no copy), while the caller reads on, and packed in order by later
    /// calls (at most `SEALING_BATCHES` calls' worth or `SEALING_BYTES` of new blobs wait);
    /// [`BlobSaver::settle`] waits for them.
    ///
    /// # Errors
    /// Cache or backend failures, including a failed upload of an earlier pack.
    pub fn save_shared(
        &mut self,
        blob_type: BlobType,
        data: &Bytes,
        ranges: &[Range<usize>],
    ) -> Result<Vec<Id>> {
        let blobs: Vec<&[u8]> = ranges.iter().map(|range| &data[range.clone()]).collect();
        let owned = |position: usize| data.slice(ranges[position].clone());
        self.save_deduplicated(blob_type, &blobs, &owned, &|_| false)
    }

    /// Computes the ids of `blobs`, looks them up and submits the new ones for sealing;
    /// `owned(position)`: the blob at `position` as bytes the sealing batch can keep.
    fn save_deduplicated(
        &mut self,
        blob_type: BlobType,
        blobs: &[&[u8]],
        owned: &dyn Fn(usize) -> Bytes,
        unusable: &dyn Fn(&Id) -> bool,
    ) -> Result<Vec<Id>> {
        let keys = self.repository.keys();
        // On this thread, not the pool: queued behind the sealing batches there, the ids would
        // wait for them, and the next batch with them. A block's ids take a fraction of the
        // time its reading and chunking take, so this thread keeps up.
        let ids: Vec<Id> = pipeline_stats::time(Stage::BlobIds, || {
            blobs
                .iter()
                .map(|plaintext| keys.blob_id(blob_type, plaintext))
                .collect()
        });
        let known = pipeline_stats::time(Stage::DedupLookup, || {
            self.repository.cache().lookup_many(&ids)
        })?;
        let mut fresh: Vec<(Id, Bytes)> = Vec::new();
        for (position, (id, location)) in ids.iter().zip(&known).enumerate() {
            // A condemned pack may be deleted once this run ends: store the blob again.
            match location.filter(|location| {
                !self.repository.is_condemned(&location.pack_id) && !unusable(id)
            }) {
                Some(location) => {
                    self.relied.insert(location.pack_id);
                }
                None => {
                    if self.pending.insert(*id) {
                        fresh.push((*id, owned(position)));
                    }
                }
            }
        }
        if !fresh.is_empty() {
            let level = self.repository.compression();
            // Trees are small, few and compress well: only data chunks are probed.
            let probing = level.is_some()
                && blob_type == BlobType::Data
                && self.repository.compression_probe() == CompressionProbe::On;
            let batch = SealingBatch {
                key: keys.data_key.clone(),
                blob_type,
                level,
                probing,
                blobs: fresh,
            };
            let bytes = batch
                .blobs
                .iter()
                .map(|(_, plaintext)| plaintext.len())
                .sum();
            self.sealing.submit(bytes, move || batch.seal());
        }
        self.pack_sealed(Drain::Bounded)?;
        self.collect_results(false)?;
        Ok(ids)
    }

    /// Packs the sealed blobs of finished batches, oldest first; waits for the oldest while
    /// `drain` asks it to.
    fn pack_sealed(&mut self, drain: Drain) -> Result<()> {
        loop {
            let wait = match drain {
                Drain::Bounded => {
                    self.sealing.len() > SEALING_BATCHES
                        || (self.sealing.len() > 1 && self.sealing.bytes() > SEALING_BYTES)
                }
                Drain::All => true,
            };
            let sealed = if wait {
                pipeline_stats::time(Stage::SealWall, || self.sealing.next(Wait::Yes))
            } else {
                self.sealing.next(Wait::No)
            };
            let Some(sealed) = sealed else {
                return Ok(());
            };
            for blob in sealed {
                self.pack_blob(blob)?;
            }
        }
    }

    /// Waits until every blob given to [`BlobSaver::save`] so far is sealed and packed (its
    /// pack may still be open or uploading), so [`BlobSaver::stats`] counts them all.
    ///
    /// # Errors
    /// Cache or backend failures, including a failed upload of an earlier pack.
    pub fn settle(&mut self) -> Result<()> {
        self.pack_sealed(Drain::All)
    }

    /// Counts one sealed blob and adds it to its type's pack.
    fn pack_blob(&mut self, sealed: Sealed) -> Result<()> {
        let Sealed {
            blob,
            stored_raw_by_probe,
            probed,
        } = sealed;
        let raw_length = u64::from(blob.raw_length);
        self.stats.blobs_added += 1;
        if probed {
            pipeline_stats::count_probed(raw_length, stored_raw_by_probe);
        }
        self.stats.raw_bytes_added += raw_length;
        self.stats.compressed_bytes_added +=
            blob.sealed.len().saturating_sub(seal::SEAL_OVERHEAD) as u64;
        if self.writing == Writing::Count {
            self.stats.bytes_added += blob.sealed.len() as u64;
            return Ok(());
        }
        let blob_type = blob.blob_type;
        if blob_type == BlobType::Tree {
            // The next backup reads this tree as its parent: keep it locally. The cache is
            // consulted only for blobs an index lists, so an upload that fails leaves an
            // entry nobody reads.
            self.repository.cache().cache_tree(&blob.id, &blob.sealed)?;
        }
        let packer = match blob_type {
            BlobType::Data => &mut self.data_packer,
            BlobType::Tree => &mut self.tree_packer,
        };
        if packer.push(blob) {
            self.flush_packer(blob_type)?;
        }
        Ok(())
    }

    /// Adds blobs that are already sealed (copied from another pack by a repack or a rescue),
    /// without a dedup lookup: the caller decided they are needed. Blobs this saver already
    /// holds are skipped.
    ///
    /// # Errors
    /// Backend failures of earlier uploads.
    pub fn save_sealed(&mut self, blobs: Vec<SealedBlob>) -> Result<()> {
        self.settle()?;
        for blob in blobs {
            if !self.pending.insert(blob.id) {
                continue;
            }
            let blob_type = blob.blob_type;
            self.stats.blobs_added += 1;
            self.stats.raw_bytes_added += u64::from(blob.raw_length);
            self.stats.compressed_bytes_added +=
                blob.sealed.len().saturating_sub(seal::SEAL_OVERHEAD) as u64;
            let packer = match blob_type {
                BlobType::Data => &mut self.data_packer,
                BlobType::Tree => &mut self.tree_packer,
            };
            if packer.push(blob) {
                self.flush_packer(blob_type)?;
            }
        }
        self.collect_results(false)
    }

    /// What the saver added so far (packs still queued included; blobs still being sealed only
    /// after [`BlobSaver::settle`]).
    pub fn stats(&self) -> SaverStats {
        self.stats
    }

    /// Whether `id` is a blob this saver stored that no index object lists yet (it is in a pack
    /// this run queued or uploaded, and in the index once the saver finishes).
    pub fn holds(&self, id: &Id) -> bool {
        self.pending.contains(id)
    }

    /// Packs this saver relied on: those its dedup hits were found in, and those it uploaded.
    pub fn relied_packs(&self) -> &HashSet<Id> {
        &self.relied
    }

    /// Records packs the caller relied on outside [`BlobSaver::save`] (reused unchanged files).
    pub fn note_relied(&mut self, packs: impl IntoIterator<Item = Id>) {
        self.relied.extend(packs);
    }

    fn flush_packer(&mut self, blob_type: BlobType) -> Result<()> {
        let packer = match blob_type {
            BlobType::Data => &mut self.data_packer,
            BlobType::Tree => &mut self.tree_packer,
        };
        if packer.is_empty() {
            return Ok(());
        }
        let building = pipeline_stats::start(Stage::PackBuild);
        let blobs = packer.take_shuffled(&mut self.rng);
        let (pieces, pack_id, entries) = pack::build_pack_pieces(
            &self.repository.keys().data_key,
            blobs,
            seal::random_nonce(),
        );
        // Coalesced here, not in the upload thread: each blob is freed as it is copied, and the
        // slices of pack after pack come from this thread's allocator arena, so the memory of
        // one pack is reused by the next instead of growing an arena per upload thread.
        let pieces = backend::coalesce(pieces);
        building.stop();
        let pack = IndexedPack {
            pack_id,
            pack_length: pieces.iter().map(|piece| piece.len() as u64).sum(),
            entries,
        };
        self.stats.bytes_added += pack.pack_length;
        self.stats.packs_added += 1;
        let sender = self.uploads.as_ref().expect("saver not finished");
        let sent = pipeline_stats::time(Stage::UploadBlocked, || {
            sender.send(UploadJob { pieces, pack })
        });
        if sent.is_err() {
            // Every worker has exited: the reason is waiting in the results channel.
            self.collect_results(true)?;
            return Err(Error::Usage("upload threads stopped unexpectedly".into()));
        }
        // Keeps the results (and the index entries not yet written) few however many packs
        // one call fills, and reports a failed upload at the next pack.
        self.collect_results(false)
    }

    /// Takes finished uploads; with `wait`, until every worker has exited. Writes an index
    /// object once enough packs are stored.
    fn collect_results(&mut self, wait: bool) -> Result<()> {
        loop {
            let outcome = if wait {
                match self.results.recv() {
                    Ok(outcome) => outcome,
                    Err(_) => break,
                }
            } else {
                match self.results.try_recv() {
                    Ok(outcome) => outcome,
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            };
            let pack = outcome?;
            self.relied.insert(pack.pack_id);
            self.uploaded.push(pack);
        }
        if self.uploaded.len() >= PACKS_PER_INDEX || (wait && !self.uploaded.is_empty()) {
            self.write_index()?;
        }
        Ok(())
    }

    fn write_index(&mut self) -> Result<()> {
        let packs = std::mem::take(&mut self.uploaded);
        let indexed: Vec<Id> = packs
            .iter()
            .flat_map(|pack| pack.entries.iter().map(|entry| entry.id))
            .collect();
        let (_, size) =
            pipeline_stats::time(Stage::IndexWrite, || self.repository.save_index(packs))?;
        self.stats.bytes_added += size;
        for id in indexed {
            self.pending.remove(&id);
        }
        Ok(())
    }

    /// Flushes the open packs, waits for every upload and writes the last index object. After
    /// this returns `Ok`, every blob saved is stored and indexed.
    ///
    /// # Errors
    /// The first upload, index or cache failure.
    pub fn finish(self) -> Result<SaverStats> {
        self.finish_relied().map(|(stats, _)| stats)
    }

    /// Like [`BlobSaver::finish`], also returning the packs relied on.
    ///
    /// # Errors
    /// The first upload, index or cache failure.
    pub fn finish_relied(mut self) -> Result<(SaverStats, HashSet<Id>)> {
        let flushed = self
            .settle()
            .and_then(|()| self.flush_packer(BlobType::Data))
            .and_then(|()| self.flush_packer(BlobType::Tree));
        if flushed.is_err() {
            self.stop.store(true, Ordering::SeqCst);
        }
        self.uploads = None;
        let collected = self.collect_results(true);
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        flushed?;
        collected?;
        Ok((self.stats, std::mem::take(&mut self.relied)))
    }
}

impl Drop for BlobSaver<'_> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.uploads = None;
        while self.results.recv().is_ok() {}
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::repository::InitOptions;

    /// Deterministic incompressible bytes (the crate's shared test generator).
    fn noise(seed: u64, length: usize) -> Vec<u8> {
        crate::test_data::incompressible_blobs(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15), [length])
            .remove(0)
    }

    /// Saves `calls` (each a list of blobs, some repeated across calls) through one saver,
    /// half of them as slices of one shared buffer, and checks what a backup relies on: the
    /// ids in order, every distinct blob stored once and readable after `finish`, and counts
    /// that include the blobs still being sealed once `settle` returns.
    fn saves_every_blob_once(calls: &[Vec<Vec<u8>>], writing: Writing) {
        let directory = tempfile::tempdir().unwrap();
        let options = InitOptions {
            pack_target_size: 1024 * 1024,
            ..InitOptions::with_cheapest_kdf()
        };
        let repository = crate::repo::repository::local_test_repository(directory.path(), &options);
        let mut saver = match writing {
            Writing::Store => BlobSaver::new(&repository),
            Writing::Count => BlobSaver::dry_run(&repository),
        };
        let mut distinct: HashSet<Id> = HashSet::new();
        let mut distinct_bytes = 0u64;
        for (index, blobs) in calls.iter().enumerate() {
            let ids = if index % 2 == 0 {
                let slices: Vec<&[u8]> = blobs.iter().map(Vec::as_slice).collect();
                saver.save(BlobType::Data, &slices).unwrap()
            } else {
                let data = Bytes::from(blobs.concat());
                let mut ranges = Vec::new();
                let mut start = 0;
                for blob in blobs {
                    ranges.push(start..start + blob.len());
                    start += blob.len();
                }
                saver.save_shared(BlobType::Data, &data, &ranges).unwrap()
            };
            let expected: Vec<Id> = blobs
                .iter()
                .map(|blob| repository.keys().blob_id(BlobType::Data, blob))
                .collect();
            assert_eq!(ids, expected, "call {index}");
            for (id, blob) in ids.iter().zip(blobs) {
                assert!(saver.holds(id));
                if distinct.insert(*id) {
                    distinct_bytes += blob.len() as u64;
                }
            }
        }
        saver.settle().unwrap();
        let settled = saver.stats();
        assert_eq!(settled.blobs_added, distinct.len() as u64);
        assert_eq!(settled.raw_bytes_added, distinct_bytes);
        let stats = saver.finish().unwrap();
        assert_eq!(stats.blobs_added, settled.blobs_added);
        for blobs in calls {
            for blob in blobs {
                let id = repository.keys().blob_id(BlobType::Data, blob);
                match writing {
                    Writing::Store => {
                        assert_eq!(&repository.read_blob(BlobType::Data, &id).unwrap(), blob);
                    }
                    Writing::Count => {
                        assert!(repository.cache().lookup(&id).unwrap().is_none());
                    }
                }
            }
        }
        if writing == Writing::Store {
            let indexed: usize = repository
                .cache()
                .lookup_many(&distinct.iter().copied().collect::<Vec<_>>())
                .unwrap()
                .iter()
                .filter(|location| location.is_some())
                .count();
            assert_eq!(indexed, distinct.len());
        }
    }

    /// Layouts of `save` calls: one blob; many tiny calls; one call past the byte bound between
    /// small ones; the same blobs again while their first copies may still be being sealed;
    /// empty calls.
    fn layouts() -> [Vec<Vec<Vec<u8>>>; 5] {
        let one_blob = vec![vec![noise(1, 1000)]];
        let many_tiny: Vec<Vec<Vec<u8>>> = (0..60u64)
            .map(|call| {
                (0..=(call % 3))
                    .map(|blob| noise(call * 8 + blob, 17))
                    .collect()
            })
            .collect();
        // One call past the byte bound, between small ones: 144 distinct 64 KiB blobs (one
        // noise block stamped with the blob's number, cheap to make and to compress).
        let base = noise(9, 64 * 1024);
        let stamped = |number: u64| {
            let mut blob = base.clone();
            blob[..8].copy_from_slice(&number.to_le_bytes());
            blob
        };
        let huge: Vec<Vec<Vec<u8>>> = vec![
            vec![noise(7, 300)],
            (0..144u64).map(stamped).collect(),
            vec![noise(8, 300)],
        ];
        // The same blobs again while their first copies may still be being sealed.
        let repeated: Vec<Vec<Vec<u8>>> = (0..6u64)
            .map(|call| {
                (0..10u64)
                    .map(|blob| noise((call % 3) * 100 + blob, 5000))
                    .collect()
            })
            .collect();
        let empty_calls = vec![Vec::new(), vec![noise(3, 10)], Vec::new()];
        [one_blob, many_tiny, huge, repeated, empty_calls]
    }

    #[test]
    fn blobs_sealed_in_the_background_are_all_stored_once_in_every_layout() {
        for layout in layouts() {
            saves_every_blob_once(&layout, Writing::Store);
        }
    }

    #[test]
    fn a_dry_run_counts_blobs_sealed_in_the_background_and_stores_none() {
        for layout in layouts() {
            saves_every_blob_once(&layout, Writing::Count);
        }
    }
}
