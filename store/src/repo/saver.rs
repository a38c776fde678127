//! The blob saver: deduplicates blobs against the index, seals new ones in parallel, packs them by
//! type and uploads finished packs on background threads, writing an index object after every few
//! packs and at the end. Memory is bounded: at most one open pack per type, `UPLOAD_QUEUE` packs
//! waiting, one per upload thread in flight (`Concurrency::uploads`), and the ids of blobs not yet indexed.
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
use crate::repo::pipeline_stats::{self, Stage};
use crate::repo::repository::{Repository, pack_name};

/// Packs waiting for an upload thread before `save` blocks (backpressure).
const UPLOAD_QUEUE: usize = 2;
/// Packs per index object written during a run.
const PACKS_PER_INDEX: usize = 16;

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
    /// Blobs sealed in this run whose index object is not yet written.
    pending: HashSet<Id>,
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

    /// Saves blobs of one type (deduplicated) and returns their ids in order.
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
        let keys = self.repository.keys();
        let ids: Vec<Id> = blobs
            .par_iter()
            .map(|plaintext| {
                pipeline_stats::time(Stage::BlobIds, || keys.blob_id(blob_type, plaintext))
            })
            .collect();
        let known = pipeline_stats::time(Stage::DedupLookup, || {
            self.repository.cache().lookup_many(&ids)
        })?;
        let mut fresh: Vec<usize> = Vec::new();
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
                        fresh.push(position);
                    }
                }
            }
        }
        if fresh.is_empty() {
            return Ok(ids);
        }
        let level = self.repository.compression();
        // Trees are small, few and compress well: only data chunks are probed.
        let probing = level.is_some()
            && blob_type == BlobType::Data
            && self.repository.compression_probe() == CompressionProbe::On;
        let seal_wall = pipeline_stats::start(Stage::SealWall);
        let sealed: Vec<(SealedBlob, bool)> = fresh
            .par_iter()
            .map(|&position| {
                let plaintext = blobs[position];
                let id = ids[position];
                let stored_raw_by_probe = probing
                    && pipeline_stats::time(Stage::Probe, || compressibility::judge(plaintext))
                        == Verdict::StoreRaw;
                let sealing = pipeline_stats::start(Stage::Seal);
                let blob = SealedBlob {
                    blob_type,
                    id,
                    raw_length: u32::try_from(plaintext.len()).expect("blob under 4 GiB"),
                    sealed: seal::seal(
                        &keys.data_key,
                        seal::random_nonce(),
                        &seal::blob_associated_data(blob_type, &id),
                        plaintext,
                        level.filter(|_| !stored_raw_by_probe),
                    ),
                };
                sealing.stop();
                (blob, stored_raw_by_probe)
            })
            .collect();
        seal_wall.stop();
        for ((blob, stored_raw_by_probe), &position) in sealed.into_iter().zip(&fresh) {
            self.stats.blobs_added += 1;
            if probing {
                pipeline_stats::count_probed(blobs[position].len() as u64, stored_raw_by_probe);
            }
            self.stats.raw_bytes_added += blobs[position].len() as u64;
            self.stats.compressed_bytes_added +=
                blob.sealed.len().saturating_sub(seal::SEAL_OVERHEAD) as u64;
            if self.writing == Writing::Count {
                self.stats.bytes_added += blob.sealed.len() as u64;
                continue;
            }
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
        }
        self.collect_results(false)?;
        Ok(ids)
    }

    /// Adds blobs that are already sealed (copied from another pack by a repack or a rescue),
    /// without a dedup lookup: the caller decided they are needed. Blobs this saver already
    /// holds are skipped.
    ///
    /// # Errors
    /// Backend failures of earlier uploads.
    pub fn save_sealed(&mut self, blobs: Vec<SealedBlob>) -> Result<()> {
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

    /// What the saver added so far (packs still queued included).
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
            .flush_packer(BlobType::Data)
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
