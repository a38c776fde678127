//! The storage seam: a small blocking [`Backend`] trait over object stores, its errors and
//! request accounting.
//!
//! `object_store` (and so tokio) lives only in [`object_store`]; everything above talks to this
//! trait. [`faulty`] wraps any backend to inject failures in tests. [`bandwidth`] keeps uploads
//! and downloads to `--limit-upload` and `--limit-download`.

pub mod bandwidth;
pub mod faulty;
pub mod object_store;
pub mod staging;
pub mod stall;

use std::ops::{ControlFlow, Range};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

pub use stall::UPLOAD_SLICE;

/// `bytes` as slices of at most [`UPLOAD_SLICE`] bytes (no copy): the HTTP client takes one
/// slice at a time, which is how a stalled upload is seen (`backend/stall.rs`).
pub(crate) fn slices(bytes: &Bytes) -> impl Iterator<Item = Bytes> + '_ {
    (0..bytes.len())
        .step_by(UPLOAD_SLICE)
        .map(|start| bytes.slice(start..(start + UPLOAD_SLICE).min(bytes.len())))
}

/// `pieces` as slices of [`UPLOAD_SLICE`] bytes (the last one shorter), in order: runs of small
/// pieces (a pack's blobs) are copied into slices, each piece dropped once copied, so the
/// object is written with few large writes and never held twice; a piece starting a slice that
/// is long enough is sliced without a copy (so coalescing slices again copies nothing). The
/// saver coalesces a pack on its own thread ([`crate::repo::saver`]), so the slices of pack
/// after pack reuse one allocator arena; a put coalesces whatever else it is handed. Pure.
pub fn coalesce(pieces: Vec<Bytes>) -> Vec<Bytes> {
    let mut payload: Vec<Bytes> = Vec::new();
    let mut slice: Vec<u8> = Vec::new();
    for piece in pieces {
        if slice.is_empty() && piece.len() >= UPLOAD_SLICE {
            let whole = piece.len() / UPLOAD_SLICE * UPLOAD_SLICE;
            payload.extend(slices(&piece.slice(..whole)));
            slice.extend_from_slice(&piece[whole..]);
            continue;
        }
        let mut rest = &piece[..];
        while !rest.is_empty() {
            if slice.capacity() == 0 {
                slice.reserve_exact(UPLOAD_SLICE);
            }
            let take = rest.len().min(UPLOAD_SLICE - slice.len());
            slice.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if slice.len() == UPLOAD_SLICE {
                payload.push(Bytes::from(std::mem::take(&mut slice)));
            }
        }
    }
    if !slice.is_empty() {
        payload.push(Bytes::from(slice));
    }
    payload
}

/// How a put treats an existing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Fail with [`BackendError::AlreadyExists`] when the object exists (commit points).
    Create,
    /// Replace silently (content-addressed objects, where a replacement has identical bytes).
    Overwrite,
}

/// An operation on the backend, for messages and accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Upload an object.
    Put,
    /// Download an object or a range of it.
    Get,
    /// List objects under a prefix.
    List,
    /// Read an object's size.
    Head,
    /// Delete an object.
    Delete,
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Put => "put",
            Self::Get => "get",
            Self::List => "list",
            Self::Head => "head",
            Self::Delete => "delete",
        })
    }
}

/// A failed backend request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The object does not exist.
    #[error("{operation} {name}: object not found")]
    NotFound {
        /// What was attempted.
        operation: Operation,
        /// The object's name in the repository.
        name: String,
    },
    /// A create-only put found the object already there.
    #[error("put {name}: object already exists")]
    AlreadyExists {
        /// The object's name in the repository.
        name: String,
    },
    /// Access was refused (credentials, permissions).
    #[error("{operation} {name}: access denied")]
    AccessDenied {
        /// What was attempted.
        operation: Operation,
        /// The object's name in the repository.
        name: String,
        /// The store's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Any other failure (network, server, local I/O), after the store's own retries.
    #[error("{operation} {name} failed")]
    Failed {
        /// What was attempted.
        operation: Operation,
        /// The object's name in the repository.
        name: String,
        /// The store's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A `-o key=value` option is unknown or its value unusable.
    #[error("option {key}={value}: {reason}")]
    InvalidOption {
        /// The option's key.
        key: String,
        /// The value given.
        value: String,
        /// What is wrong, and what would do.
        reason: String,
    },
    /// The repository location could not be understood or reached.
    #[error("invalid repository location {location}: {reason}")]
    InvalidLocation {
        /// The location as given.
        location: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// One object in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The name relative to the repository root, e.g. `data/ab/ab12…`.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// When the object was last written, in Unix seconds by the *store's* clock (0 if unknown).
    /// Only ever compared with other times from the same store (section 21 of FORMAT.md).
    pub modified: i64,
}

/// A file an interrupted upload left behind: a local-directory repository's `<name>#<n>`, which
/// `object_store` writes before it renames it into place. Not an object: listings skip it
/// (FORMAT.md section 14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagingFile {
    /// Its name relative to the repository root, e.g. `data/ab/ab12…#1`.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// How long ago it was last written, by the store's own clock.
    pub age: Duration,
    /// When it was last written; [`Backend::delete_staging_file`] deletes it only if unchanged.
    pub modified: SystemTime,
}

/// A staging file unwritten for this long is abandoned: an upload writes its file continuously
/// and renames it when done, so only a dead upload (or one stalled for an hour) leaves one this
/// old. Deleting the file of an upload that was merely stalled costs that upload a retry: its
/// rename then fails and the put is reported failed, never successful.
pub const STAGING_ABANDONED_AFTER: Duration = Duration::from_hours(1);

impl StagingFile {
    /// Whether it is older than [`STAGING_ABANDONED_AFTER`].
    pub fn is_abandoned(&self) -> bool {
        self.age >= STAGING_ABANDONED_AFTER
    }
}

/// A repository's storage: a flat namespace of immutable objects.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// A human description of where the repository lives.
    fn location(&self) -> String;

    /// Stores `bytes` under `name`.
    ///
    /// # Errors
    /// [`BackendError::AlreadyExists`] for [`PutMode::Create`] on an existing object, or any
    /// request failure.
    fn put(&self, name: &str, bytes: Bytes, mode: PutMode) -> Result<(), BackendError>;

    /// Stores the concatenation of `pieces` under `name`, as [`Backend::put`] does with one
    /// buffer: a pack is uploaded from its blobs' own buffers, never copied into one. The
    /// default joins the pieces and calls [`Backend::put`].
    ///
    /// # Errors
    /// As [`Backend::put`].
    fn put_pieces(
        &self,
        name: &str,
        pieces: Vec<Bytes>,
        mode: PutMode,
    ) -> Result<(), BackendError> {
        let bytes: Vec<u8> = pieces.concat();
        self.put(name, Bytes::from(bytes), mode)
    }

    /// Reads a whole object.
    ///
    /// # Errors
    /// [`BackendError::NotFound`] or any request failure.
    fn get(&self, name: &str) -> Result<Bytes, BackendError>;

    /// Reads `range` of an object.
    ///
    /// # Errors
    /// [`BackendError::NotFound`] or any request failure (including a range past the end).
    fn get_range(&self, name: &str, range: Range<u64>) -> Result<Bytes, BackendError>;

    /// Reads `range` of an object and hands its bytes to `take` in order, in pieces of any
    /// size as they arrive, so that no buffer of the whole range is needed. `take` returning
    /// [`ControlFlow::Break`] ends the read early (successfully). A request that fails after
    /// some pieces were handed over is retried from the first byte not yet handed over, so
    /// `take` sees every byte once. The default reads the range whole ([`Backend::get_range`])
    /// and hands it over as one piece.
    ///
    /// # Errors
    /// [`BackendError::NotFound`] or any request failure, including a body shorter than the
    /// range (after the bytes that did arrive were handed over).
    fn get_range_pieces(
        &self,
        name: &str,
        range: Range<u64>,
        take: &mut dyn FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<(), BackendError> {
        let bytes = self.get_range(name, range)?;
        let _ = take(&bytes);
        Ok(())
    }

    /// Lists the objects whose names start with `prefix` (a directory-like prefix such as
    /// `snapshots`), in no particular order.
    ///
    /// # Errors
    /// Any request failure.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError>;

    /// The size of an object, or `None` when it does not exist.
    ///
    /// # Errors
    /// Any request failure other than not-found.
    fn head(&self, name: &str) -> Result<Option<u64>, BackendError>;

    /// Deletes an object; deleting a missing object is not an error.
    ///
    /// # Errors
    /// Any request failure.
    fn delete(&self, name: &str) -> Result<(), BackendError>;

    /// Requests made and bytes moved so far.
    fn stats(&self) -> RequestStats;

    /// The files interrupted uploads left behind, with their age by the store's clock; none for
    /// stores whose uploads leave nothing visible (memory; the cloud stores, whose unfinished
    /// multipart uploads are not objects).
    ///
    /// # Errors
    /// Any failure to read the store.
    fn staging_files(&self) -> Result<Vec<StagingFile>, BackendError> {
        Ok(Vec::new())
    }

    /// Deletes `file` (from [`Backend::staging_files`]) if it is unchanged since; returns whether
    /// it did.
    ///
    /// # Errors
    /// Any failure to delete it.
    fn delete_staging_file(&self, file: &StagingFile) -> Result<bool, BackendError> {
        let _ = file;
        Ok(false)
    }
}

/// Counts of requests and bytes, for cost reporting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestStats {
    /// PUT requests.
    pub puts: u64,
    /// GET requests (whole or ranged).
    pub gets: u64,
    /// LIST requests.
    pub lists: u64,
    /// HEAD requests.
    pub heads: u64,
    /// DELETE requests.
    pub deletes: u64,
    /// Bytes uploaded.
    pub bytes_sent: u64,
    /// Bytes downloaded.
    pub bytes_received: u64,
}

/// Thread-safe counters behind [`RequestStats`].
#[derive(Debug, Default)]
pub struct RequestCounters {
    puts: AtomicU64,
    gets: AtomicU64,
    lists: AtomicU64,
    heads: AtomicU64,
    deletes: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
}

impl RequestCounters {
    /// Records one request of `operation` moving `bytes` bytes.
    pub fn record(&self, operation: Operation, bytes: u64) {
        let counter = match operation {
            Operation::Put => &self.puts,
            Operation::Get => &self.gets,
            Operation::List => &self.lists,
            Operation::Head => &self.heads,
            Operation::Delete => &self.deletes,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        match operation {
            Operation::Put => self.bytes_sent.fetch_add(bytes, Ordering::Relaxed),
            Operation::Get => self.bytes_received.fetch_add(bytes, Ordering::Relaxed),
            _ => 0,
        };
    }

    /// A snapshot of the counters.
    pub fn snapshot(&self) -> RequestStats {
        RequestStats {
            puts: self.puts.load(Ordering::Relaxed),
            gets: self.gets.load(Ordering::Relaxed),
            lists: self.lists.load(Ordering::Relaxed),
            heads: self.heads.load(Ordering::Relaxed),
            deletes: self.deletes.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
        }
    }
}
