//! The one adapter from the async `object_store` crate to the blocking [`Backend`] trait, and the
//! parsing of repository locations (local paths, `file://`, `s3://`, `az://`, `azure://`,
//! `gs://`, `memory://`). The only module that knows tokio.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutOptions, PutPayload};

use super::{Backend, BackendError, ObjectInfo, Operation, PutMode, RequestCounters, RequestStats};

/// Whether opening a local location may create its directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateDirectory {
    /// Create the directory (for `init`).
    Yes,
    /// A missing directory means no repository.
    No,
}

/// A [`Backend`] over any `object_store` store, below a path prefix.
pub struct ObjectStoreBackend {
    store: Arc<dyn ObjectStore>,
    prefix: StorePath,
    location: String,
    runtime: tokio::runtime::Runtime,
    counters: RequestCounters,
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
        })
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
                    std::fs::create_dir_all(&path)
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
                Self::new(
                    Arc::new(store),
                    StorePath::default(),
                    path.display().to_string(),
                )
            }
            Some("memory") => Ok(Self::in_memory()),
            Some("s3" | "az" | "azure" | "gs" | "abfs" | "abfss") => {
                let url = url::Url::parse(location).map_err(|error| invalid(error.to_string()))?;
                let mut config: Vec<(String, String)> = std::env::vars()
                    .filter(|(key, _)| {
                        key.starts_with("AWS_")
                            || key.starts_with("AZURE_")
                            || key.starts_with("GOOGLE_")
                    })
                    .map(|(key, value)| (key.to_ascii_lowercase(), value))
                    .collect();
                config.extend(options.iter().cloned());
                let (store, prefix) = object_store::parse_url_opts(&url, config)
                    .map_err(|error| invalid(error.to_string()))?;
                Self::new(Arc::from(store), prefix, location.to_owned())
            }
            Some(other) => Err(invalid(format!(
                "unknown scheme {other}:// (use a path, file://, s3://, az://, gs://)"
            ))),
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
        self.counters.record(Operation::Put, length);
        let path = self.path(name);
        self.runtime
            .block_on(self.store.put_opts(&path, PutPayload::from(bytes), options))
            .map(|_| ())
            .map_err(|error| Self::classify(Operation::Put, name, error))
    }

    fn get(&self, name: &str) -> Result<Bytes, BackendError> {
        let path = self.path(name);
        let bytes = self
            .runtime
            .block_on(async { self.store.get(&path).await?.bytes().await })
            .map_err(|error| Self::classify(Operation::Get, name, error))?;
        self.counters.record(Operation::Get, bytes.len() as u64);
        Ok(bytes)
    }

    fn get_range(&self, name: &str, range: Range<u64>) -> Result<Bytes, BackendError> {
        let path = self.path(name);
        let expected = range.end.saturating_sub(range.start);
        let bytes = self
            .runtime
            .block_on(self.store.get_range(&path, range))
            .map_err(|error| Self::classify(Operation::Get, name, error))?;
        self.counters.record(Operation::Get, bytes.len() as u64);
        if bytes.len() as u64 != expected {
            return Err(BackendError::Failed {
                operation: Operation::Get,
                name: name.to_owned(),
                source: format!("short read: {} of {expected} bytes", bytes.len()).into(),
            });
        }
        Ok(bytes)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, BackendError> {
        let path = self.path(prefix);
        self.counters.record(Operation::List, 0);
        let metas: Vec<object_store::ObjectMeta> = self
            .runtime
            .block_on(self.store.list(Some(&path)).try_collect())
            .map_err(|error| Self::classify(Operation::List, prefix, error))?;
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
                })
            })
            .collect())
    }

    fn head(&self, name: &str) -> Result<Option<u64>, BackendError> {
        let path = self.path(name);
        self.counters.record(Operation::Head, 0);
        match self.runtime.block_on(self.store.head(&path)) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(Self::classify(Operation::Head, name, error)),
        }
    }

    fn delete(&self, name: &str) -> Result<(), BackendError> {
        let path = self.path(name);
        self.counters.record(Operation::Delete, 0);
        match self.runtime.block_on(self.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(Self::classify(Operation::Delete, name, error)),
        }
    }

    fn stats(&self) -> RequestStats {
        self.counters.snapshot()
    }
}
