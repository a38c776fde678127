//! Per-stage time of the backup pipeline, for profiling (`CAIRN_PIPELINE_STATS=1`): where the
//! cores spend a backup and which bounded queue waits. Process-wide relaxed atomics, off unless
//! [`enable`] is called; when off, a stage costs one atomic load and no clock read.
//!
//! The pipeline of one file or stream: a reading thread reads and cuts blocks and hands them over
//! a queue of one ([`Stage::ReadBlocked`] when it is full, [`Stage::BatchWait`] on the other side
//! when it is empty), and over another to a hashing thread that feeds the content hash; the
//! saving thread computes chunk ids, looks them up and submits the new chunks to the
//! pool, which probes and seals them while the saving thread goes on ([`Stage::SealWall`] when
//! it waits for them); it packs the sealed chunks in order and hands packs to the upload
//! threads over a queue of `UPLOAD_QUEUE` packs ([`Stage::UploadBlocked`] when full,
//! [`Stage::UploadIdle`] on the upload side when empty). Parallel stages sum the time of every
//! worker (CPU time on an idle machine); serial ones are the saving or reading thread's wall time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A stage of the backup pipeline whose time is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Reading thread: reading a block and cutting it into chunks.
    ReadChunk,
    /// Reading thread: blocked handing a block to the saving thread (the queue is full).
    ReadBlocked,
    /// Saving thread: waiting for the next block (the queue is empty).
    BatchWait,
    /// Small files: reading, hashing and cutting, summed over the parallel workers.
    SmallFiles,
    /// Hashing thread: the whole-content hash of a large file or stream.
    ContentHash,
    /// Saving thread: chunk ids (keyed BLAKE3).
    BlobIds,
    /// Saving thread: looking the ids up in the index cache.
    DedupLookup,
    /// The compressibility probe, summed over the parallel workers.
    Probe,
    /// zstd and XChaCha20-Poly1305 of new blobs, summed over the parallel workers.
    Seal,
    /// Saving thread: waiting for sealing batches to finish, past the bound of batches out and
    /// at the end of a file (the workers' time is `Seal`).
    SealWall,
    /// Saving thread: building packs (shuffle, trailer, header).
    PackBuild,
    /// Saving thread: blocked handing a pack to the upload threads (the queue is full).
    UploadBlocked,
    /// Upload threads: putting packs, summed over the threads.
    Upload,
    /// Upload threads: waiting for a pack (the queue is empty), summed over the threads.
    UploadIdle,
    /// Saving thread: writing index objects.
    IndexWrite,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 15] = [
        Stage::ReadChunk,
        Stage::ReadBlocked,
        Stage::BatchWait,
        Stage::SmallFiles,
        Stage::ContentHash,
        Stage::BlobIds,
        Stage::DedupLookup,
        Stage::Probe,
        Stage::Seal,
        Stage::SealWall,
        Stage::PackBuild,
        Stage::UploadBlocked,
        Stage::Upload,
        Stage::UploadIdle,
        Stage::IndexWrite,
    ];

    /// A short stable name (`read_chunk`, `seal`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Stage::ReadChunk => "read_chunk",
            Stage::ReadBlocked => "read_blocked",
            Stage::BatchWait => "batch_wait",
            Stage::SmallFiles => "small_files",
            Stage::ContentHash => "content_hash",
            Stage::BlobIds => "blob_ids",
            Stage::DedupLookup => "dedup_lookup",
            Stage::Probe => "probe",
            Stage::Seal => "seal",
            Stage::SealWall => "seal_wall",
            Stage::PackBuild => "pack_build",
            Stage::UploadBlocked => "upload_blocked",
            Stage::Upload => "upload",
            Stage::UploadIdle => "upload_idle",
            Stage::IndexWrite => "index_write",
        }
    }

    fn index(self) -> usize {
        Stage::ALL
            .iter()
            .position(|stage| *stage == self)
            .expect("every stage is listed")
    }
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static NANOS: [AtomicU64; Stage::ALL.len()] = [const { AtomicU64::new(0) }; Stage::ALL.len()];
static PROBED_BYTES: AtomicU64 = AtomicU64::new(0);
static PROBE_RAW_BYTES: AtomicU64 = AtomicU64::new(0);

/// Starts counting (for the rest of the process).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// A running measurement of one stage: its time is added when it is stopped or dropped (so an
/// early return through `?` still counts).
#[must_use]
pub struct StageTimer {
    stage: Stage,
    started: Option<Instant>,
}

impl StageTimer {
    /// Adds the time since [`start`] to the stage (nothing when counting is off).
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for StageTimer {
    fn drop(&mut self) {
        if let Some(started) = self.started {
            let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            NANOS[self.stage.index()].fetch_add(nanos, Ordering::Relaxed);
        }
    }
}

/// Starts timing `stage`.
pub fn start(stage: Stage) -> StageTimer {
    StageTimer {
        stage,
        started: ENABLED.load(Ordering::Relaxed).then(Instant::now),
    }
}

/// Runs `work`, counting its time under `stage`.
pub fn time<T>(stage: Stage, work: impl FnOnce() -> T) -> T {
    let timer = start(stage);
    let out = work();
    timer.stop();
    out
}

/// Counts a new data chunk of `length` bytes the compressibility probe judged, and whether it
/// was stored raw without a zstd pass.
pub fn count_probed(length: u64, stored_raw: bool) {
    if ENABLED.load(Ordering::Relaxed) {
        PROBED_BYTES.fetch_add(length, Ordering::Relaxed);
        if stored_raw {
            PROBE_RAW_BYTES.fetch_add(length, Ordering::Relaxed);
        }
    }
}

/// Bytes of new data chunks the probe judged, and of those it stored raw, so far.
pub fn probed_bytes() -> (u64, u64) {
    (
        PROBED_BYTES.load(Ordering::Relaxed),
        PROBE_RAW_BYTES.load(Ordering::Relaxed),
    )
}

/// Every stage's time so far.
pub fn totals() -> Vec<(Stage, Duration)> {
    Stage::ALL
        .iter()
        .map(|stage| {
            (
                *stage,
                Duration::from_nanos(NANOS[stage.index()].load(Ordering::Relaxed)),
            )
        })
        .collect()
}
