//! The one adapter from the async `object_store` crate to the blocking [`Backend`] trait, and the
//! parsing of repository locations (local paths, `file://`, `s3://`, `az://`, `azure://`,
//! `gs://`, `memory://`). The only module that knows tokio.

use std::ops::{ControlFlow, Range};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as StorePath;
use object_store::{
    BackoffConfig, GetOptions, GetResultPayload, ObjectStore, ObjectStoreExt, PutOptions,
    PutPayload, RetryConfig,
};
use rand::Rng;

use super::bandwidth::{RateLimitedStore, Rates};
use super::stall::StallConnector;
use super::{
    Backend, BackendError, ObjectInfo, Operation, PutMode, RequestCounters, RequestStats,
    StagingFile,
};

/// Whether opening a local location may create its directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateDirectory {
    /// Create the directory (for `init`).
    Yes,
    /// A missing directory means no repository.
    No,
}

/// How failed requests are retried on top of the store's own HTTP retries: exponential backoff
/// with full jitter, for failures that may pass (network, server, throttling). Not-found,
/// already-exists and access-denied answers are final and never retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts after the first.
    pub retries: u32,
    /// Upper bound of the first backoff.
    pub initial_backoff: Duration,
    /// Upper bound of any backoff.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retries: 4,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The sleep before retry number `attempt` (1-based): uniform in `[0, min(max, initial·2^(attempt-1))]`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_backoff);
        ceiling.mul_f64(rand::thread_rng().r#gen::<f64>())
    }
}

/// A [`Backend`] over any `object_store` store, below a path prefix.
pub struct ObjectStoreBackend {
    store: Arc<dyn ObjectStore>,
    prefix: StorePath,
    location: String,
    runtime: tokio::runtime::Runtime,
    counters: RequestCounters,
    retry: RetryPolicy,
    /// The directory of a local repository, whose writes are synced to disk.
    local_root: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for ObjectStoreBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStoreBackend")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, BackendError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("cairn-io")
        .enable_all()
        .build()
        .map_err(|error| BackendError::InvalidLocation {
            location: String::new(),
            reason: format!("cannot start the I/O runtime: {error}"),
        })
}

/// The mode of every object of a local repository: the `object_store` local backend creates
/// files as the umask allows (0644 under umask 022), which would let any local user copy the
/// key objects and attack the password offline.
const OBJECT_MODE: u32 = 0o600;
/// The mode of the folders of a local repository (`keys/`, `data/<xx>/`, ...).
const FOLDER_MODE: u32 = 0o700;

/// Gives an open file or folder `mode` unless it has it already (one `fstat`, and one `fchmod`
/// only for what the umask left wider).
fn owner_only(handle: &std::fs::File, mode: u32) -> std::io::Result<()> {
    if handle.metadata()?.permissions().mode() & 0o7777 != mode {
        handle.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

impl ObjectStoreBackend {
    /// Wraps a store; `prefix` is the repository's root within it.
    ///
    /// # Errors
    /// [`BackendError::InvalidLocation`] when the I/O runtime cannot start.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        prefix: StorePath,
        location: String,
    ) -> Result<Self, BackendError> {
        Ok(Self {
            store,
            prefix,
            location,
            runtime: runtime()?,
            counters: RequestCounters::default(),
            retry: RetryPolicy::default(),
            local_root: None,
        })
    }

    /// Makes a stored local object durable: the file's data, then its directory entry (the
    /// `object_store` local backend writes and renames but never syncs). Without this a power
    /// loss right after "snapshot saved" could lose packs the snapshot needs.
    fn sync_local(&self, name: &str) -> Result<(), BackendError> {
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        let failed = |source: std::io::Error| BackendError::Failed {
            operation: Operation::Put,
            name: name.to_owned(),
            source: Box::new(source),
        };
        let path = root.join(name);
        std::fs::File::open(&path)
            .and_then(|file| {
                owner_only(&file, OBJECT_MODE)?;
                file.sync_all()
            })
            .map_err(failed)?;
        // The object's directory, and its parent in case the directory itself is new
        // (`data/<xx>/`).
        for directory in path.ancestors().skip(1).take(2) {
            if !directory.starts_with(root) {
                break;
            }
            std::fs::File::open(directory)
                .and_then(|handle| {
                    if directory != root.as_path() {
                        owner_only(&handle, FOLDER_MODE)?;
                    }
                    handle.sync_all()
                })
                .map_err(failed)?;
        }
        Ok(())
    }

    /// Replaces the retry policy.
    #[must_use]
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// An in-memory repository (tests).
    ///
    /// # Panics
    /// If the I/O runtime cannot start.
    pub fn in_memory() -> Self {
        Self::new(
            Arc::new(InMemory::new()),
            StorePath::default(),
            "memory://".into(),
        )
        .expect("runtime starts")
    }

    /// Opens a repository location: a local path, `file://`, `memory://`, or a cloud URL
    /// (`s3://`, `az://`, `azure://`, `gs://`) configured from the environment the way
    /// `object_store` reads it, plus `options` (`key=value` pairs for the store's builder).
    ///
    /// # Errors
    /// [`BackendError::InvalidLocation`] for an unparsable URL, a missing local directory (with
    /// [`CreateDirectory::No`]) or a directory that cannot be created;
    /// [`BackendError::InvalidOption`] for an unknown option or an unusable value.
    pub fn open(
        location: &str,
        options: &[(String, String)],
        create: CreateDirectory,
    ) -> Result<Self, BackendError> {
        let invalid = |reason: String| BackendError::InvalidLocation {
            location: location.to_owned(),
            reason,
        };
        let (limits, builder_options) = StoreLimits::from_options(options)?;
        let scheme = location.split_once("://").map(|(scheme, _)| scheme);
        match scheme {
            None | Some("file") => {
                let path = match scheme {
                    None => std::path::PathBuf::from(location),
                    Some(_) => url::Url::parse(location)
                        .ok()
                        .and_then(|url| url.to_file_path().ok())
                        .ok_or_else(|| invalid("not a valid file:// URL".into()))?,
                };
                if create == CreateDirectory::Yes {
                    // Owner-only whatever the umask (FORMAT.md section 17): the root's mode
                    // is what keeps a just-written object unreadable before its own chmod.
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(&path)
                        .and_then(|()| {
                            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))
                        })
                        .map_err(|error| invalid(format!("cannot create directory: {error}")))?;
                }
                if !path.is_dir() {
                    return Err(BackendError::NotFound {
                        operation: Operation::List,
                        name: path.display().to_string(),
                    });
                }
                let store = LocalFileSystem::new_with_prefix(&path)
                    .map_err(|error| invalid(error.to_string()))?;
                let mut backend = Self::new(
                    RateLimitedStore::wrap(Arc::new(store), limits.rates),
                    StorePath::default(),
                    path.display().to_string(),
                )?
                .with_retry_policy(limits.retry);
                backend.local_root = Some(path);
                Ok(backend)
            }
            Some("memory") => Self::new(
                RateLimitedStore::wrap(Arc::new(InMemory::new()), limits.rates),
                StorePath::default(),
                "memory://".into(),
            ),
            Some(scheme @ ("s3" | "az" | "azure" | "abfs" | "abfss" | "gs")) => {
                let (store, prefix) = cloud_store(scheme, location, &limits, &builder_options)?;
                let store = RateLimitedStore::wrap(store, limits.rates);
                Ok(Self::new(store, prefix, location.to_owned())?.with_retry_policy(limits.retry))
            }
            Some(other) => Err(invalid(format!(
                "unknown scheme {other}:// (use a path, file://, s3://, az://, gs://)"
            ))),
        }
    }

    /// Runs `request` until it succeeds, fails finally, or the retries are spent.
    fn retrying<T>(
        &self,
        mut request: impl FnMut() -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let mut attempt = 0;
        loop {
            match request() {
                Err(BackendError::Failed { .. }) if attempt < self.retry.retries => {
                    attempt += 1;
                    std::thread::sleep(self.retry.backoff(attempt));
                }
                other => return other,
            }
        }
    }

    fn path(&self, name: &str) -> StorePath {
        self.prefix
            .parts()
            .chain(StorePath::from(name).parts())
            .collect()
    }

    fn classify(operation: Operation, name: &str, error: object_store::Error) -> BackendError {
        match error {
            object_store::Error::NotFound { .. } => BackendError::NotFound {
                operation,
                name: name.to_owned(),
            },
            object_store::Error::AlreadyExists { .. } if operation == Operation::Put => {
                BackendError::AlreadyExists {
                    name: name.to_owned(),
                }
            }
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => BackendError::AccessDenied {
                operation,
                name: name.to_owned(),
                source: Box::new(error),
            },
            other => BackendError::Failed {
                operation,
                name: name.to_owned(),
                source: Box::new(other),
            },
        }
    }
}

impl Backend for ObjectStoreBackend {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn put(&self, name: &str, bytes: Bytes, mode: PutMode) -> Result<(), BackendError> {
        self.put_pieces(name, vec![bytes], mode)
    }

    fn put_pieces(
        &self,
        name: &str,
        pieces: Vec<Bytes>,
        mode: PutMode,
    ) -> Result<(), BackendError> {
        let length: u64 = pieces.iter().map(|piece| piece.len() as u64).sum();
        let payload = coalesced(pieces);
        let options = PutOptions {
            mode: match mode {
                PutMode::Create => object_store::PutMode::Create,
                PutMode::Overwrite => object_store::PutMode::Overwrite,
            },
            ..PutOptions::default()
        };
        let path = self.path(name);
        let multipart = mode == PutMode::Overwrite && length >= MULTIPART_THRESHOLD;
        let outcome = self.retrying(|| {
            if multipart {
                // Parts upload concurrently and a failed part is retried alone by the store's
                // HTTP layer; every part, plus the create and complete calls, is a request.
                let parts = length.div_ceil(MULTIPART_PART as u64);
                self.counters.record(Operation::Put, length);
                for _ in 0..=parts {
                    self.counters.record(Operation::Put, 0);
                }
                return self
                    .runtime
                    .block_on(put_multipart(self.store.as_ref(), &path, &payload))
                    .map_err(|error| Self::classify(Operation::Put, name, error));
            }
            self.counters.record(Operation::Put, length);
            self.runtime
                .block_on(self.store.put_opts(&path, payload.clone(), options.clone()))
                .map(|_| ())
                .map_err(|error| Self::classify(Operation::Put, name, error))
        });
        let outcome = outcome.and_then(|()| self.sync_local(name));
        match outcome {
            // A create-only put whose earlier attempt landed but whose answer was lost (retried
            // here or inside the HTTP client): the object holds our bytes, so the put succeeded.
            // Another writer's object differs and stays a conflict.
            Err(BackendError::AlreadyExists { .. })
                if self
                    .get(name)
                    .is_ok_and(|stored| same_bytes(&stored, payload.iter())) =>
            {
                Ok(())
            }
            other => other,
        }
    }

    fn get(&self, name: &str) -> Result<Bytes, BackendError> {
        let path = self.path(name);
        self.retrying(|| {
            let bytes = self
                .runtime
                .block_on(async { self.store.get(&path).await?.bytes().await })
                .map_err(|error| Self::classify(Operation::Get, name, error));
            self.counters.record(
                Operation::Get,
                bytes.as_ref().map_or(0, |bytes| bytes.len() as u64),
            );
            bytes
        })
    }

    fn get_range(&self, name: &str, range: Range<u64>) -> Result<Bytes, BackendError> {
        let path = self.path(name);
        let expected = range.end.saturating_sub(range.start);
        self.retrying(|| {
            let bytes = self
                .runtime
                .block_on(self.store.get_range(&path, range.clone()))
                .map_err(|error| Self::classify(Operation::Get, name, error));
            self.counters.record(
                Operation::Get,
                bytes.as_ref().map_or(0, |bytes| bytes.len() as u64),
            );
            let bytes = bytes?;
            if bytes.len() as u64 != expected {
                return Err(BackendError::Failed {
                    operation: Operation::Get,
                    name: name.to_owned(),
                    source: format!("short read: {} of {expected} bytes", bytes.len()).into(),
                });
            }
            Ok(bytes)
        })
    }

    fn get_range_pieces(
        &self,
        name: &str,
        range: Range<u64>,
        take: &mut dyn FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<(), BackendError> {
        let path = self.path(name);
        // The first byte not yet handed to `take`: a retry asks for the rest only.
        let mut position = range.start;
        let mut stopped = false;
        self.retrying(|| {
            if stopped || position >= range.end {
                return Ok(());
            }
            let options = GetOptions::new().with_range(Some(position..range.end));
            let before = position;
            let outcome = self
                .runtime
                .block_on(self.store.get_opts(&path, options))
                .map_err(|error| Self::classify(Operation::Get, name, error))
                .and_then(|result| {
                    let mut hand_over = |piece: &[u8]| {
                        position += piece.len() as u64;
                        stopped = take(piece).is_break();
                        stopped
                    };
                    match result.payload {
                        GetResultPayload::File(file, _) => {
                            read_file_pieces(&file, before..range.end, &mut hand_over)
                                .map_err(|error| Self::classify(Operation::Get, name, error))
                        }
                        GetResultPayload::Stream(mut stream) => loop {
                            match self.runtime.block_on(stream.try_next()) {
                                Ok(Some(piece)) => {
                                    if hand_over(&piece) {
                                        break Ok(());
                                    }
                                }
                                Ok(None) => break Ok(()),
                                Err(error) => {
                                    break Err(Self::classify(Operation::Get, name, error));
                                }
                            }
                        },
                    }
                });
            self.counters.record(Operation::Get, position - before);
            outcome?;
            if !stopped && position < range.end {
                return Err(BackendError::Failed {
                    operation: Operation::Get,
                    name: name.to_owned(),
                    source: format!(
                        "short read: {} of {} bytes",
                        position - range.start,
                        range.end - range.start
                    )
                    .into(),
                });
            }
            Ok(())
        })
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
        let path = self.path(prefix);
        let metas: Vec<object_store::ObjectMeta> = self.retrying(|| {
            self.counters.record(Operation::List, 0);
            self.runtime
                .block_on(self.store.list(Some(&path)).try_collect())
                .map_err(|error| Self::classify(Operation::List, prefix, error))
        })?;
        Ok(metas
            .into_iter()
            .filter_map(|meta| {
                let parts: Vec<String> = meta
                    .location
                    .prefix_match(&self.prefix)?
                    .map(|part| part.as_ref().to_owned())
                    .collect();
                Some(ObjectInfo {
                    name: parts.join("/"),
                    size: meta.size,
                    modified: meta.last_modified.timestamp(),
                })
            })
            .collect())
    }

    fn head(&self, name: &str) -> Result<Option<u64>, BackendError> {
        let path = self.path(name);
        self.retrying(|| {
            self.counters.record(Operation::Head, 0);
            match self.runtime.block_on(self.store.head(&path)) {
                Ok(meta) => Ok(Some(meta.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(error) => Err(Self::classify(Operation::Head, name, error)),
            }
        })
    }

    fn delete(&self, name: &str) -> Result<(), BackendError> {
        let path = self.path(name);
        self.retrying(|| {
            self.counters.record(Operation::Delete, 0);
            match self.runtime.block_on(self.store.delete(&path)) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(error) => Err(Self::classify(Operation::Delete, name, error)),
            }
        })
    }

    fn stats(&self) -> RequestStats {
        self.counters.snapshot()
    }

    fn staging_files(&self) -> Result<Vec<StagingFile>, BackendError> {
        match &self.local_root {
            Some(root) => super::staging::scan(root),
            None => Ok(Vec::new()),
        }
    }

    fn delete_staging_file(&self, file: &StagingFile) -> Result<bool, BackendError> {
        match &self.local_root {
            Some(root) => super::staging::delete(root, file),
            None => Ok(false),
        }
    }
}

/// Bytes a local file's ranged read hands over at a time ([`Backend::get_range_pieces`]):
/// small enough that the buffer is an ordinary heap allocation, large enough that the system
/// calls cost nothing next to the bytes.
const FILE_PIECE: usize = 64 * 1024;

/// Reads `range` of a local file in [`FILE_PIECE`] pieces on the calling thread, handing each
/// to `hand_over` (which returns `true` to stop). Ends early, without an error, at the end of
/// the file: the caller checks the length.
fn read_file_pieces(
    file: &std::fs::File,
    range: Range<u64>,
    hand_over: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<(), object_store::Error> {
    use std::os::unix::fs::FileExt;
    let mut buffer = vec![0u8; FILE_PIECE];
    let mut position = range.start;
    while position < range.end {
        let wanted =
            usize::try_from(range.end - position).map_or(FILE_PIECE, |left| left.min(FILE_PIECE));
        let read = match file.read_at(&mut buffer[..wanted], position) {
            Ok(0) => return Ok(()),
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => {
                return Err(object_store::Error::Generic {
                    store: "LocalFileSystem",
                    source: Box::new(error),
                });
            }
        };
        position += read as u64;
        if hand_over(&buffer[..read]) {
            return Ok(());
        }
    }
    Ok(())
}

/// Objects at least this large are uploaded in parts (packs of `init --pack-size-mib 32` or more).
pub const MULTIPART_THRESHOLD: u64 = 32 * 1024 * 1024;
/// Size of one part of a multipart upload.
pub const MULTIPART_PART: usize = 8 * 1024 * 1024;
/// Parts of one object uploaded at once.
const MULTIPART_CONCURRENCY: usize = 4;

/// `pieces` as a payload of full upload slices ([`super::coalesce`]).
fn coalesced(pieces: Vec<Bytes>) -> PutPayload {
    super::coalesce(pieces).into_iter().collect()
}

/// Whether `stored` holds exactly the concatenation of `pieces`.
fn same_bytes<'piece>(stored: &[u8], pieces: impl Iterator<Item = &'piece Bytes>) -> bool {
    let mut rest = stored;
    for piece in pieces {
        match rest.strip_prefix(&piece[..]) {
            Some(after) => rest = after,
            None => return false,
        }
    }
    rest.is_empty()
}

/// Uploads `payload` in parts; a failed upload is aborted so no parts are left behind.
async fn put_multipart(
    store: &dyn ObjectStore,
    path: &StorePath,
    payload: &PutPayload,
) -> object_store::Result<()> {
    let upload = store.put_multipart(path).await?;
    let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, MULTIPART_PART);
    // Parts are made of slices, so a stalled part is seen like a stalled put.
    for slice in payload.iter().cloned() {
        if let Err(error) = writer.wait_for_capacity(MULTIPART_CONCURRENCY).await {
            let _ = writer.abort().await;
            return Err(error);
        }
        writer.put(slice);
    }
    writer.finish().await.map(|_| ())
}

/// Option keys cairn reads itself instead of passing them to the store's builder.
const OPTION_RETRIES: &str = "retries";
/// See [`StoreLimits::stall`].
const OPTION_STALL_TIMEOUT: &str = "stall_timeout";
/// The store builder's whole-request limit, which cairn applies itself (see
/// [`StoreLimits::overall`]).
const OPTION_TIMEOUT: &str = "timeout";
/// The store builder's connect limit; cairn sets its default.
const OPTION_CONNECT_TIMEOUT: &str = "connect_timeout";
/// The upload limit, which cairn applies itself ([`super::bandwidth`]).
const OPTION_LIMIT_UPLOAD: &str = "limit_upload";
/// The download limit, which cairn applies itself ([`super::bandwidth`]).
const OPTION_LIMIT_DOWNLOAD: &str = "limit_download";
/// Builder options whose values are durations, checked before the builder sees them.
const DURATION_OPTIONS: [&str; 6] = [
    OPTION_STALL_TIMEOUT,
    OPTION_TIMEOUT,
    OPTION_CONNECT_TIMEOUT,
    "read_timeout",
    "pool_idle_timeout",
    "http2_keep_alive_timeout",
];

/// Default of `-o stall_timeout`.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of `-o connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long cairn waits for a stuck store, from the `-o` options (client settings, not part of
/// the format). With the defaults (stall 10 s, connect 5 s, 4 retries) a request fails for good:
/// - to a store that accepts connections and answers nothing: after (retries + 1) × stall limit
///   plus at most 3 s of backoff, 53 s; an upload whose body the store swallowed whole may wait
///   one more stall limit per attempt for its buffered tail, 103 s;
/// - to a store that never accepts: after (retries + 1) × 2 connect limits plus backoff, 53 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Whole-request retries on top of the HTTP client's (`-o retries=N`).
    pub retry: RetryPolicy,
    /// How long a request may move no byte, either way, before it is dropped and retried
    /// (`-o stall_timeout=10s`). A slow transfer that keeps moving is never cut (see
    /// `backend/stall.rs` for the tail of an upload, which the client cannot watch).
    pub stall: Duration,
    /// A limit on each whole request, only when given (`-o timeout=`); none by default, so a
    /// large upload on a slow link completes.
    pub overall: Option<Duration>,
    /// How long connecting may take (`-o connect_timeout=5s`).
    pub connect: Duration,
    /// Bandwidth limits (`-o limit_upload=2M`, `--limit-upload`): see [`super::bandwidth`].
    pub rates: Rates,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            stall: DEFAULT_STALL_TIMEOUT,
            overall: None,
            connect: DEFAULT_CONNECT_TIMEOUT,
            rates: Rates::default(),
        }
    }
}

/// A duration option: a positive humantime duration (`30s`, `2m`, `1m 30s`).
fn duration_option(key: &str, value: &str) -> Result<Duration, BackendError> {
    let invalid = |reason: &str| BackendError::InvalidOption {
        key: key.to_owned(),
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    match humantime::parse_duration(value.trim()) {
        Ok(duration) if duration.is_zero() => Err(invalid("must be longer than zero")),
        Ok(duration) => Ok(duration),
        Err(_) => Err(invalid("not a duration: write it like 30s, 2m or 1m30s")),
    }
}

/// A rate option: KiB/s, or a size per second ([`crate::units::parse_rate`]).
fn rate_option(key: &str, value: &str) -> Result<u64, BackendError> {
    crate::units::parse_rate(value).map_err(|reason| BackendError::InvalidOption {
        key: key.to_owned(),
        value: value.to_owned(),
        reason,
    })
}

impl StoreLimits {
    /// Splits `-o` options into the limits cairn applies itself and the rest, for the store's
    /// builder. Keys may be written with `-` for `_` (`stall-timeout`). Pure.
    ///
    /// # Errors
    /// [`BackendError::InvalidOption`] for a duration option that is no positive duration, or a
    /// retry count that is no number up to 100.
    pub fn from_options(
        options: &[(String, String)],
    ) -> Result<(Self, Vec<(String, String)>), BackendError> {
        let mut limits = Self::default();
        let mut builder_options = Vec::new();
        for (key, value) in options {
            let key = key.trim().to_ascii_lowercase().replace('-', "_");
            if DURATION_OPTIONS.contains(&key.as_str()) {
                duration_option(&key, value)?;
            }
            match key.as_str() {
                OPTION_RETRIES => {
                    limits.retry.retries = value
                        .trim()
                        .parse()
                        .ok()
                        .filter(|retries| *retries <= 100)
                        .ok_or_else(|| BackendError::InvalidOption {
                            key: key.clone(),
                            value: value.clone(),
                            reason: "not a number of retries from 0 to 100".into(),
                        })?;
                }
                OPTION_STALL_TIMEOUT => limits.stall = duration_option(&key, value)?,
                OPTION_TIMEOUT => limits.overall = Some(duration_option(&key, value)?),
                OPTION_CONNECT_TIMEOUT => limits.connect = duration_option(&key, value)?,
                OPTION_LIMIT_UPLOAD => limits.rates.upload = Some(rate_option(&key, value)?),
                OPTION_LIMIT_DOWNLOAD => limits.rates.download = Some(rate_option(&key, value)?),
                _ => builder_options.push((key, value.clone())),
            }
        }
        Ok((limits, builder_options))
    }
}

/// The store's own HTTP retry policy: a few quick retries of a request that failed fast
/// (a reset, a 503); a request that stalled or timed out is not retried here (the retry
/// timeout is half the stall limit) but by cairn's [`RetryPolicy`], so the budget of a stuck
/// store is counted once.
fn http_retry_config(limits: &StoreLimits) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 3,
        retry_timeout: limits.stall / 2,
    }
}

/// Builds a cloud store for `location` from the environment (the way `object_store` reads it)
/// and `options` (builder keys such as `endpoint`, `region`, `allow_http`), with `limits`.
fn cloud_store(
    scheme: &str,
    location: &str,
    limits: &StoreLimits,
    options: &[(String, String)],
) -> Result<(Arc<dyn ObjectStore>, StorePath), BackendError> {
    let invalid = |reason: String| BackendError::InvalidLocation {
        location: location.to_owned(),
        reason,
    };
    let url = url::Url::parse(location).map_err(|error| invalid(error.to_string()))?;
    let unknown = |key: &str, value: &str| BackendError::InvalidOption {
        key: key.to_owned(),
        value: value.to_owned(),
        reason: format!("unknown option for {scheme}:// (see Object stores in the README)"),
    };
    let prefix =
        StorePath::from_url_path(url.path()).map_err(|error| invalid(error.to_string()))?;
    let connector = StallConnector {
        stall: limits.stall,
        overall: limits.overall,
    };
    let connect = humantime::format_duration(limits.connect).to_string();
    // The three builders share no trait, so one macro applies the options, the limits and the
    // HTTP client, and builds, the same way for each.
    macro_rules! build {
        ($builder:expr) => {{
            let mut builder = $builder.with_url(location);
            for (key, value) in options {
                let parsed = key.parse().map_err(|_| unknown(key, value))?;
                builder = builder.with_config(parsed, value);
            }
            let parsed = OPTION_CONNECT_TIMEOUT
                .parse()
                .map_err(|_| unknown(OPTION_CONNECT_TIMEOUT, &connect))?;
            Arc::new(
                builder
                    .with_config(parsed, &connect)
                    .with_retry(http_retry_config(limits))
                    .with_http_connector(connector)
                    .build()
                    .map_err(|error| invalid(error.to_string()))?,
            ) as Arc<dyn ObjectStore>
        }};
    }
    let store = match scheme {
        "s3" => build!(object_store::aws::AmazonS3Builder::from_env()),
        "gs" => build!(object_store::gcp::GoogleCloudStorageBuilder::from_env()),
        _ => build!(object_store::azure::MicrosoftAzureBuilder::from_env()),
    };
    Ok((store, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::UPLOAD_SLICE;

    #[test]
    fn backoff_is_bounded_and_grows() {
        let policy = RetryPolicy::default();
        for attempt in 1..20 {
            assert!(policy.backoff(attempt) <= policy.max_backoff);
        }
        assert!(policy.backoff(1) <= policy.initial_backoff);
    }

    #[test]
    fn unknown_scheme_and_bad_options_are_clear_errors() {
        let error = ObjectStoreBackend::open("ftp://x/y", &[], CreateDirectory::No).unwrap_err();
        assert!(error.to_string().contains("unknown scheme"), "{error}");
        let error = ObjectStoreBackend::open(
            "s3://bucket/prefix",
            &[("no_such_option".into(), "1".into())],
            CreateDirectory::No,
        )
        .unwrap_err();
        assert!(error.to_string().contains("no_such_option"), "{error}");
    }

    fn options(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn limits_default_fail_a_stuck_store_within_two_minutes() {
        let (limits, rest) = StoreLimits::from_options(&[]).unwrap();
        assert!(rest.is_empty());
        assert_eq!(
            limits.overall, None,
            "no whole-request limit: slow uploads complete"
        );
        let attempts = limits.retry.retries + 1;
        let backoff: Duration = (1..=limits.retry.retries)
            .map(|attempt| {
                limits
                    .retry
                    .initial_backoff
                    .saturating_mul(1 << (attempt - 1))
                    .min(limits.retry.max_backoff)
            })
            .sum();
        let accepts_never_answers = limits.stall * attempts + backoff;
        let swallows_uploads = limits.stall * 2 * attempts + backoff;
        let never_accepts = limits.connect * 2 * attempts + backoff;
        for worst in [accepts_never_answers, swallows_uploads, never_accepts] {
            assert!(worst < Duration::from_secs(110), "{worst:?}");
        }
        // An HTTP-level retry never follows a stalled attempt.
        assert!(http_retry_config(&limits).retry_timeout < limits.stall);
    }

    #[test]
    fn limits_are_read_from_options_in_either_spelling() {
        let (limits, rest) = StoreLimits::from_options(&options(&[
            ("stall-timeout", "2s"),
            ("Connect_Timeout", "1m 30s"),
            ("timeout", "10m"),
            ("retries", " 0"),
            ("region", "eu-west-1"),
            ("allow-http", "true"),
        ]))
        .unwrap();
        assert_eq!(limits.stall, Duration::from_secs(2));
        assert_eq!(limits.connect, Duration::from_secs(90));
        assert_eq!(limits.overall, Some(Duration::from_mins(10)));
        assert_eq!(limits.retry.retries, 0);
        assert_eq!(limits.rates, Rates::default());
        let (limited, none_left) = StoreLimits::from_options(&options(&[
            ("limit-upload", "512"),
            ("LIMIT_DOWNLOAD", "2MiB/s"),
        ]))
        .unwrap();
        assert!(none_left.is_empty());
        assert_eq!(limited.rates.upload, Some(512 * 1024));
        assert_eq!(limited.rates.download, Some(2 << 20));
        assert_eq!(
            rest,
            options(&[("region", "eu-west-1"), ("allow_http", "true")])
        );
    }

    #[test]
    fn unusable_limit_values_are_option_errors() {
        for (key, value) in [
            ("stall_timeout", "abc"),
            ("stall_timeout", "0s"),
            ("stall_timeout", ""),
            ("stall-timeout", "15"),
            ("connect_timeout", "-1s"),
            ("timeout", "soon"),
            ("read_timeout", "1 fortnight"),
            ("pool_idle_timeout", "0"),
            ("retries", "-1"),
            ("retries", "many"),
            ("retries", "101"),
            ("limit_upload", "0"),
            ("limit-download", "fast"),
            ("limit_upload", "-1"),
        ] {
            let error = StoreLimits::from_options(&options(&[(key, value)])).unwrap_err();
            assert!(
                matches!(error, BackendError::InvalidOption { .. }),
                "{key}={value}: {error:?}"
            );
            assert!(error.to_string().starts_with("option "), "{error}");
            // A local repository checks them too.
            let local = tempfile::tempdir().unwrap();
            let error = ObjectStoreBackend::open(
                local.path().to_str().unwrap(),
                &options(&[(key, value)]),
                CreateDirectory::No,
            )
            .unwrap_err();
            assert!(
                matches!(error, BackendError::InvalidOption { .. }),
                "{error:?}"
            );
        }
    }

    #[test]
    fn payloads_are_sliced_without_loss() {
        for length in [
            0,
            1,
            UPLOAD_SLICE - 1,
            UPLOAD_SLICE,
            UPLOAD_SLICE + 1,
            5 * UPLOAD_SLICE + 7,
        ] {
            let bytes = Bytes::from(
                (0..length)
                    .map(|index| u8::try_from(index % 251).unwrap())
                    .collect::<Vec<u8>>(),
            );
            let payload: PutPayload = crate::backend::slices(&bytes).collect();
            assert_eq!(payload.content_length(), length);
            assert!(
                payload
                    .iter()
                    .all(|slice| slice.len() <= UPLOAD_SLICE && !slice.is_empty())
            );
            let joined: Vec<u8> = payload
                .iter()
                .flat_map(|slice| slice.iter().copied())
                .collect();
            assert_eq!(joined, bytes);
        }
    }

    #[test]
    fn cloud_urls_parse_with_their_prefix() {
        let options = [
            ("region".to_owned(), "us-east-1".to_owned()),
            ("access_key_id".to_owned(), "k".to_owned()),
            ("secret_access_key".to_owned(), "s".to_owned()),
        ];
        let backend =
            ObjectStoreBackend::open("s3://bucket/a/b", &options, CreateDirectory::No).unwrap();
        assert_eq!(backend.prefix.as_ref(), "a/b");
        assert_eq!(backend.path("config").as_ref(), "a/b/config");
        for location in ["az://container/p", "gs://bucket/p"] {
            // Building may fail for lack of credentials, but never on the URL itself.
            if let Err(error) = ObjectStoreBackend::open(location, &[], CreateDirectory::No) {
                assert!(!error.to_string().contains("unknown scheme"), "{error}");
            }
        }
    }

    /// A local-directory backend (pieces come from the file, read on the calling thread) and
    /// an in-memory one (pieces come from a stream), neither retrying.
    fn piece_backends(directory: &std::path::Path) -> Vec<ObjectStoreBackend> {
        let no_retry = RetryPolicy {
            retries: 0,
            ..RetryPolicy::default()
        };
        vec![
            ObjectStoreBackend::open(&directory.display().to_string(), &[], CreateDirectory::No)
                .unwrap()
                .with_retry_policy(no_retry),
            ObjectStoreBackend::in_memory().with_retry_policy(no_retry),
        ]
    }

    fn numbered(length: usize) -> Vec<u8> {
        (0..length)
            .map(|index| u8::try_from(index % 251).unwrap())
            .collect()
    }

    /// Reads `range` of `name` in pieces and returns them joined, with the piece count.
    fn read_pieces(
        backend: &ObjectStoreBackend,
        name: &str,
        range: Range<u64>,
    ) -> (Result<(), BackendError>, Vec<u8>, usize) {
        let mut joined = Vec::new();
        let mut count = 0;
        let outcome = backend.get_range_pieces(name, range, &mut |piece| {
            joined.extend_from_slice(piece);
            count += 1;
            ControlFlow::Continue(())
        });
        (outcome, joined, count)
    }

    #[test]
    fn ranged_reads_in_pieces_hand_over_every_byte_once_in_order() {
        let directory = tempfile::tempdir().unwrap();
        let length = 3 * FILE_PIECE + 17;
        let bytes = numbered(length);
        for backend in piece_backends(directory.path()) {
            backend
                .put("data/object", Bytes::from(bytes.clone()), PutMode::Create)
                .unwrap();
            let length = length as u64;
            let piece = FILE_PIECE as u64;
            for range in [
                0..length,
                0..1,
                5..6,
                1..piece,
                piece - 1..piece + 1,
                piece..2 * piece,
                7..length - 3,
                length - 1..length,
            ] {
                let (outcome, joined, count) = read_pieces(&backend, "data/object", range.clone());
                outcome.unwrap();
                assert_eq!(
                    joined,
                    bytes[usize::try_from(range.start).unwrap()
                        ..usize::try_from(range.end).unwrap()],
                    "{range:?}"
                );
                assert!(count >= 1, "{range:?}");
            }
            assert_eq!(backend.stats().bytes_received, {
                let total: u64 = [length, 1, 1, piece - 1, 2, piece, length - 10, 1]
                    .iter()
                    .sum();
                total
            });
        }
    }

    #[test]
    fn a_reader_that_stops_ends_the_read_without_an_error() {
        let directory = tempfile::tempdir().unwrap();
        let bytes = numbered(4 * FILE_PIECE);
        for backend in piece_backends(directory.path()) {
            backend
                .put("data/object", Bytes::from(bytes.clone()), PutMode::Create)
                .unwrap();
            let mut pieces = 0;
            backend
                .get_range_pieces("data/object", 0..bytes.len() as u64, &mut |_| {
                    pieces += 1;
                    ControlFlow::Break(())
                })
                .unwrap();
            assert_eq!(pieces, 1);
        }
    }

    #[test]
    fn a_body_shorter_than_the_range_and_a_missing_object_are_typed_errors() {
        let directory = tempfile::tempdir().unwrap();
        let bytes = numbered(FILE_PIECE + 100);
        for backend in piece_backends(directory.path()) {
            backend
                .put("data/object", Bytes::from(bytes.clone()), PutMode::Create)
                .unwrap();
            // The range runs 50 bytes past the end: what exists is handed over, then it fails.
            let (outcome, joined, _) =
                read_pieces(&backend, "data/object", 10..bytes.len() as u64 + 50);
            assert!(
                matches!(
                    outcome,
                    Err(BackendError::Failed {
                        operation: Operation::Get,
                        ..
                    })
                ),
                "{outcome:?}"
            );
            assert_eq!(joined, bytes[10..]);
            let (outcome, joined, _) = read_pieces(&backend, "data/missing", 0..10);
            assert!(
                matches!(outcome, Err(BackendError::NotFound { .. })),
                "{outcome:?}"
            );
            assert!(joined.is_empty());
        }
    }

    #[test]
    fn coalesced_pieces_keep_every_byte_in_full_slices() {
        let bytes = numbered(5 * UPLOAD_SLICE + 9);
        for cuts in [
            vec![0, bytes.len()],
            vec![0, 1, 2, 3, bytes.len()],
            vec![0, 100, UPLOAD_SLICE + 100, 3 * UPLOAD_SLICE, bytes.len()],
            (0..=bytes.len())
                .step_by(8 * 1024 + 3)
                .chain([bytes.len()])
                .collect(),
        ] {
            let pieces: Vec<Bytes> = cuts
                .windows(2)
                .map(|pair| Bytes::copy_from_slice(&bytes[pair[0]..pair[1]]))
                .collect();
            let payload = coalesced(pieces);
            let slices: Vec<&Bytes> = payload.iter().collect();
            assert!(same_bytes(&bytes, slices.iter().copied()), "{cuts:?}");
            assert!(
                slices
                    .iter()
                    .all(|slice| slice.len() <= UPLOAD_SLICE && !slice.is_empty()),
                "{cuts:?}"
            );
            // Small pieces fill whole slices: at most one short slice per piece long enough
            // to be sliced in place, plus the last.
            let short = slices
                .iter()
                .filter(|slice| slice.len() < UPLOAD_SLICE)
                .count();
            assert!(short <= 3, "{cuts:?}: {short} short slices");
        }
    }

    #[test]
    fn pieces_are_stored_as_their_concatenation() {
        let directory = tempfile::tempdir().unwrap();
        let bytes = numbered(2 * UPLOAD_SLICE + 5);
        // Empty pieces, one-byte pieces, and pieces longer than an upload slice.
        let cuts = [0, 0, 1, 2, 100, UPLOAD_SLICE + 100, bytes.len()];
        let pieces: Vec<Bytes> = cuts
            .windows(2)
            .map(|pair| Bytes::copy_from_slice(&bytes[pair[0]..pair[1]]))
            .collect();
        for backend in piece_backends(directory.path()) {
            backend
                .put_pieces("data/pieces", pieces.clone(), PutMode::Create)
                .unwrap();
            assert_eq!(backend.get("data/pieces").unwrap(), bytes);
            // Create-only: the same bytes again are a put that already landed; others conflict.
            backend
                .put_pieces("data/pieces", pieces.clone(), PutMode::Create)
                .unwrap();
            let other = vec![Bytes::from_static(b"other")];
            assert!(matches!(
                backend.put_pieces("data/pieces", other, PutMode::Create),
                Err(BackendError::AlreadyExists { .. })
            ));
            backend
                .put_pieces("data/empty", Vec::new(), PutMode::Create)
                .unwrap();
            assert!(backend.get("data/empty").unwrap().is_empty());
        }
    }
}
