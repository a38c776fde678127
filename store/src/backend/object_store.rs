//! The one adapter from the async `object_store` crate to the blocking [`Backend`] trait, and the
//! parsing of repository locations (local paths, `file://`, `s3://`, `az://`, `azure://`,
//! `gs://`, `memory://`). The only module that knows tokio.

use std::ops::Range;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as StorePath;
use object_store::{
    BackoffConfig, ObjectStore, ObjectStoreExt, PutOptions, PutPayload, RetryConfig,
};
use rand::Rng;

use super::{Backend, BackendError, ObjectInfo, Operation, PutMode, RequestCounters, RequestStats};

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
    /// [`CreateDirectory::No`]) or a directory that cannot be created.
    pub fn open(
        location: &str,
        options: &[(String, String)],
        create: CreateDirectory,
    ) -> Result<Self, BackendError> {
        let invalid = |reason: String| BackendError::InvalidLocation {
            location: location.to_owned(),
            reason,
        };
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
                    Arc::new(store),
                    StorePath::default(),
                    path.display().to_string(),
                )?;
                backend.local_root = Some(path);
                Ok(backend)
            }
            Some("memory") => Ok(Self::in_memory()),
            Some(scheme @ ("s3" | "az" | "azure" | "abfs" | "abfss" | "gs")) => {
                let (store, prefix, retry) =
                    cloud_store(scheme, location, options).map_err(invalid)?;
                Ok(Self::new(store, prefix, location.to_owned())?.with_retry_policy(retry))
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
        let length = bytes.len() as u64;
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
                    .block_on(put_multipart(self.store.as_ref(), &path, bytes.clone()))
                    .map_err(|error| Self::classify(Operation::Put, name, error));
            }
            self.counters.record(Operation::Put, length);
            self.runtime
                .block_on(self.store.put_opts(
                    &path,
                    PutPayload::from(bytes.clone()),
                    options.clone(),
                ))
                .map(|_| ())
                .map_err(|error| Self::classify(Operation::Put, name, error))
        });
        let outcome = outcome.and_then(|()| self.sync_local(name));
        match outcome {
            // A create-only put whose earlier attempt landed but whose answer was lost (retried
            // here or inside the HTTP client): the object holds our bytes, so the put succeeded.
            // Another writer's object differs and stays a conflict.
            Err(BackendError::AlreadyExists { .. })
                if self.get(name).is_ok_and(|stored| stored == bytes) =>
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
}

/// Objects at least this large are uploaded in parts (packs of `init --pack-size-mib 32` or more).
pub const MULTIPART_THRESHOLD: u64 = 32 * 1024 * 1024;
/// Size of one part of a multipart upload.
pub const MULTIPART_PART: usize = 8 * 1024 * 1024;
/// Parts of one object uploaded at once.
const MULTIPART_CONCURRENCY: usize = 4;

/// Uploads `bytes` in parts; a failed upload is aborted so no parts are left behind.
async fn put_multipart(
    store: &dyn ObjectStore,
    path: &StorePath,
    bytes: Bytes,
) -> object_store::Result<()> {
    let upload = store.put_multipart(path).await?;
    let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, MULTIPART_PART);
    let mut offset = 0;
    while offset < bytes.len() {
        if let Err(error) = writer.wait_for_capacity(MULTIPART_CONCURRENCY).await {
            let _ = writer.abort().await;
            return Err(error);
        }
        let end = (offset + MULTIPART_PART).min(bytes.len());
        writer.put(bytes.slice(offset..end));
        offset = end;
    }
    writer.finish().await.map(|_| ())
}

/// Options cairn reads itself instead of passing them to the store's builder.
const OPTION_RETRIES: &str = "retries";

/// The store's own HTTP retry policy: a few quick retries per request; cairn's
/// [`RetryPolicy`] retries whole requests on top with longer, jittered backoff.
fn http_retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 3,
        retry_timeout: Duration::from_mins(1),
    }
}

/// Builds a cloud store for `location` from the environment (the way `object_store` reads it)
/// and `options` (builder keys such as `endpoint`, `region`, `allow_http`, `timeout`).
fn cloud_store(
    scheme: &str,
    location: &str,
    options: &[(String, String)],
) -> Result<(Arc<dyn ObjectStore>, StorePath, RetryPolicy), String> {
    let url = url::Url::parse(location).map_err(|error| error.to_string())?;
    let mut retry = RetryPolicy::default();
    let mut builder_options = Vec::new();
    for (key, value) in options {
        if key == OPTION_RETRIES {
            retry.retries = value
                .parse()
                .map_err(|_| format!("option retries={value} is not a number"))?;
        } else {
            builder_options.push((key.as_str(), value.as_str()));
        }
    }
    let unknown = |key: &str| format!("unknown option {key:?} for {scheme}://");
    let prefix = StorePath::from_url_path(url.path()).map_err(|error| error.to_string())?;
    // The three builders share no trait, so one macro applies the options, the HTTP retry
    // policy and builds, the same way for each.
    macro_rules! build {
        ($builder:expr) => {{
            let mut builder = $builder.with_url(location);
            for (key, value) in &builder_options {
                let parsed = key.parse().map_err(|_| unknown(key))?;
                builder = builder.with_config(parsed, *value);
            }
            Arc::new(
                builder
                    .with_retry(http_retry_config())
                    .build()
                    .map_err(|error| error.to_string())?,
            ) as Arc<dyn ObjectStore>
        }};
    }
    let store = match scheme {
        "s3" => build!(object_store::aws::AmazonS3Builder::from_env()),
        "gs" => build!(object_store::gcp::GoogleCloudStorageBuilder::from_env()),
        _ => build!(object_store::azure::MicrosoftAzureBuilder::from_env()),
    };
    Ok((store, prefix, retry))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
