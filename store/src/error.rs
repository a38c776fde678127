//! The library's error type and the classification callers act on.

use std::path::PathBuf;

use crate::backend::BackendError;
use crate::crypto::id::Id;
use crate::format::codec::DecodeError;
use crate::format::envelope::ObjectError;

/// What a caller should do about an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Stored bytes are damaged or forged: never retry; report and run `check`.
    BadData,
    /// The backend failed in a way that may pass: retry later.
    Transient,
    /// The request itself is wrong (bad argument, unknown snapshot): fix the command.
    User,
    /// The repository needs a newer cairn.
    Unsupported,
    /// The repository does not exist.
    NotFound,
    /// No key object opens with the password given.
    WrongPassword,
    /// Local files could not be read or written.
    LocalIo,
    /// Another process holds what this one needs (the prune lease): retry later.
    Busy,
    /// The repository or client is append-only and the command would delete something.
    AppendOnly,
    /// None of the paths given to a backup exists: fix the command.
    NoSource,
    /// No snapshot matches the id, `latest` or selection given, or the snapshot does not hold
    /// the named path: fix the command.
    NoMatch,
}

/// Everything that can go wrong in the library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No repository at the location.
    #[error("no repository at {0}: run `cairn init` first or check --repo")]
    RepositoryNotFound(String),
    /// `init` on a location that already holds repository objects.
    #[error(
        "{location} already holds a repository ({found}): init never writes over one; open it \
         with its password, or if `cairn snapshots` says its config is lost, run `cairn repair config`"
    )]
    AlreadyInitialised {
        /// The location.
        location: String,
        /// What it holds, as `config, 2 key objects, 14 packs`.
        found: String,
    },
    /// The location holds repository objects but no config: the config was lost.
    #[error(
        "no config at {location}, but it holds {found}: the config is lost, the data need not be; \
         run `cairn repair config` to rebuild it with a password of the repository (never `cairn init` here)"
    )]
    ConfigMissing {
        /// The location.
        location: String,
        /// What it holds, as `2 key objects, 3 snapshots, 14 packs`.
        found: String,
    },
    /// No key object opens with the password.
    #[error("wrong password or no key matches{}", damaged_note(.damaged_keys))]
    WrongPassword {
        /// Key objects that could not be read or verified (they may hold the matching key).
        damaged_keys: Vec<String>,
    },
    /// The repository or an object in it needs a newer build.
    #[error("{0}: upgrade cairn to read this repository")]
    Unsupported(DecodeError),
    /// A stored object failed authentication or decoding.
    #[error("object {object} is damaged: {reason}")]
    Damaged {
        /// The object's name (or `blob <id> in <pack>`).
        object: String,
        /// What failed.
        reason: String,
    },
    /// An object could not be read from the store (network, server, permissions) after retries;
    /// says nothing about its integrity.
    #[error("cannot read {object}: {reason}")]
    ReadFailed {
        /// What was being read.
        object: String,
        /// The store's error, with its causes.
        reason: String,
    },
    /// A blob the snapshot needs is in no index.
    #[error("{blob_type} blob {id} is not in the repository index")]
    BlobMissing {
        /// Its type name.
        blob_type: &'static str,
        /// Its id.
        id: Id,
    },
    /// A backend request failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A local file operation failed.
    #[error("{action} {}: {source}", path.display())]
    LocalIo {
        /// What was being done.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The local index cache failed.
    #[error("local index cache at {}: {reason}", path.display())]
    Cache {
        /// Where the cache lives.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// No snapshot matches the given id, prefix or `latest`.
    #[error("no snapshot matches {0:?}")]
    SnapshotNotFound(String),
    /// The id prefix matches more than one snapshot.
    #[error("snapshot prefix {0:?} is ambiguous: give more digits")]
    AmbiguousSnapshot(String),
    /// The path is not in the snapshot.
    #[error("path {0:?} not found in the snapshot")]
    PathNotFound(String),
    /// None of the paths given to a backup exists; no snapshot is written.
    #[error("no source path exists ({}): check the paths; nothing was backed up", .0.join(", "))]
    NoSourcePath(Vec<String>),
    /// A restored file does not match its recorded hash.
    #[error("restored file {} does not match its recorded hash", .0.display())]
    ContentMismatch(PathBuf),
    /// Invalid argument.
    #[error("{0}")]
    Usage(String),
    /// Another prune holds the repository's prune lease.
    #[error("another prune is running ({0}); try again later")]
    PruneLeaseHeld(String),
    /// Deleting is refused: the client or the repository is append-only.
    #[error("refused: {0} would delete objects, and this {1} is append-only")]
    AppendOnly(&'static str, &'static str),
    /// A retention policy or one of its parts is unusable (for example it keeps nothing).
    #[error(transparent)]
    Retention(#[from] crate::policy::retention::RetentionError),
}

fn damaged_note(damaged_keys: &[String]) -> String {
    if damaged_keys.is_empty() {
        String::new()
    } else {
        format!(
            " (damaged key objects: {}; a password kept only in them cannot open the repository: \
             open it with another password, then `cairn key list` or `cairn check` shows them)",
            damaged_keys.join(", ")
        )
    }
}

impl Error {
    /// How the caller should treat this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::RepositoryNotFound(_) => ErrorKind::NotFound,
            Self::WrongPassword { .. } => ErrorKind::WrongPassword,
            Self::Unsupported(_) => ErrorKind::Unsupported,
            Self::Damaged { .. }
            | Self::BlobMissing { .. }
            | Self::ContentMismatch(_)
            | Self::ConfigMissing { .. }
            | Self::Backend(BackendError::NotFound { .. }) => ErrorKind::BadData,
            Self::Backend(BackendError::Failed { .. }) | Self::ReadFailed { .. } => {
                ErrorKind::Transient
            }
            Self::LocalIo { .. } | Self::Cache { .. } => ErrorKind::LocalIo,
            Self::PruneLeaseHeld(_) => ErrorKind::Busy,
            Self::AppendOnly(..) => ErrorKind::AppendOnly,
            Self::NoSourcePath(_) => ErrorKind::NoSource,
            Self::SnapshotNotFound(_) | Self::PathNotFound(_) => ErrorKind::NoMatch,
            _ => ErrorKind::User,
        }
    }

    /// A damaged-object error from a decode failure; newer versions become [`Error::Unsupported`].
    pub fn from_object(object: impl Into<String>, error: ObjectError) -> Self {
        match error {
            ObjectError::Decode(decode @ DecodeError::UnsupportedVersion { .. }) => {
                Self::Unsupported(decode)
            }
            other => Self::Damaged {
                object: object.into(),
                reason: other.to_string(),
            },
        }
    }

    /// The error a reader of `object` reports for a fetch failure `error`: a store failure stays
    /// a read failure (with its causes), anything else means the stored bytes are damaged.
    pub fn for_fetched(object: String, error: &Self) -> Self {
        let mut reason = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            reason.push_str(": ");
            reason.push_str(&cause.to_string());
            source = cause.source();
        }
        match error {
            Self::Backend(_) | Self::ReadFailed { .. } => Self::ReadFailed { object, reason },
            Self::Damaged {
                object: damaged,
                reason: why,
            } => Self::Damaged {
                object: damaged.clone(),
                reason: why.clone(),
            },
            Self::BlobMissing { blob_type, id } => Self::BlobMissing { blob_type, id: *id },
            _ => Self::Damaged { object, reason },
        }
    }

    /// A local I/O error on `path`.
    pub fn local(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::LocalIo {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Shorthand for results of this library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::retention::RetentionError;

    #[test]
    fn retention_errors_are_user_errors() {
        let error = Error::from(RetentionError::EmptyPolicy);
        assert_eq!(error.kind(), ErrorKind::User);
    }

    #[test]
    fn an_unknown_snapshot_or_path_is_no_match_and_ambiguity_a_user_error() {
        assert_eq!(
            Error::SnapshotNotFound("ab".into()).kind(),
            ErrorKind::NoMatch
        );
        assert_eq!(Error::PathNotFound("/x".into()).kind(), ErrorKind::NoMatch);
        assert_eq!(Error::AmbiguousSnapshot("a".into()).kind(), ErrorKind::User);
    }
}
