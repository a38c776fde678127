//! Key management on an open repository: list, add and remove key objects (`keys/<id>`) and
//! change a password, plus the pure rules that decide which key object may be removed.
//!
//! The master secret never changes: adding a key wraps the same secret under another password;
//! removing one deletes a key object. Every change keeps at least one key object that opens the
//! repository at every moment (FORMAT.md section 14). This module never prints and never touches
//! the local cache; it reaches the store only through [`Repository::backend`].

use std::sync::Arc;

use bytes::Bytes;

use crate::backend::{BackendError, PutMode};
use crate::crypto::id::{BlobType, Id};
use crate::crypto::keys::{KdfParams, KeyError, KeyObject, MasterSecret, RepositoryKeys};
use crate::error::{Error, ErrorKind};
use crate::repo::repository::{CacheLocation, KEYS_PREFIX, Repository, id_from_name, object_name};

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyringError {
    /// No key object's id starts with the given text.
    #[error("no key object matches {0:?}: see `cairn key list`")]
    NoSuchKey(String),
    /// More than one key object's id starts with the given text.
    #[error("key id prefix {0:?} is ambiguous: give more digits")]
    AmbiguousKey(String),
    /// Removing this key object would leave no other key object that decodes.
    #[error("key {0} is the last usable key object: add another key first (`cairn key add`)")]
    LastKey(String),
    /// The key object to remove is the one the current password opened.
    #[error(
        "key {0} is the one this password opened: use `cairn key passwd`, or --force once another password is known to work"
    )]
    CurrentKey(String),
    /// The new password is empty.
    #[error("the new password is empty: choose a non-empty password")]
    EmptyPassword,
    /// The new password equals the one the repository was opened with.
    #[error("the new password is the same as the current one")]
    SamePassword,
    /// The Argon2id parameters for the new key are outside the accepted bounds.
    #[error("invalid key derivation parameters: {0}")]
    InvalidKdf(#[source] KeyError),
    /// The key object the repository was opened with no longer yields this repository's master
    /// secret with the current password (changed or removed since opening).
    #[error(
        "key object {id} no longer opens this repository ({reason}): open the repository again"
    )]
    CurrentKeyUnavailable {
        /// The key object's id.
        id: Id,
        /// What failed.
        reason: &'static str,
    },
    /// A new key object was stored but the repository does not open with the new password.
    #[error(
        "key {id} was stored but does not open the repository: remove it with `cairn key remove {id}`"
    )]
    NotVerified {
        /// The stored key object's id.
        id: Id,
        /// Why opening failed.
        #[source]
        source: Box<Error>,
    },
    /// The new key is stored and verified, but the old key object could not be deleted.
    #[error(
        "new key {added} works, but old key {old} could not be removed: run `cairn key remove {old}`"
    )]
    OldKeyKept {
        /// The new, verified key object.
        added: Id,
        /// The key object that is still stored.
        old: Id,
        /// Why deleting failed.
        #[source]
        source: Box<Error>,
    },
    /// A repository or backend failure.
    #[error(transparent)]
    Store(#[from] Error),
}

impl From<BackendError> for KeyringError {
    fn from(error: BackendError) -> Self {
        Self::Store(Error::Backend(error))
    }
}

impl KeyringError {
    /// How the caller should treat this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Store(error) => error.kind(),
            Self::NotVerified { source, .. } | Self::OldKeyKept { source, .. } => source.kind(),
            Self::CurrentKeyUnavailable { .. } => ErrorKind::BadData,
            _ => ErrorKind::User,
        }
    }
}

/// What a listed key object holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    /// The key object the repository was opened with.
    Current(KeyObject),
    /// A key object that decodes. Whether it wraps this repository's master secret is known
    /// only to the holder of its password.
    Readable(KeyObject),
    /// The name is not the hash of the bytes, or the bytes do not decode.
    Damaged(String),
}

/// One object under `keys/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    /// The object's name, `keys/<hex id>`.
    pub name: String,
    /// The id in the name, when the name is one.
    pub id: Option<Id>,
    /// What the object holds.
    pub state: KeyState,
}

impl KeyEntry {
    /// The decoded key object, unless damaged.
    pub fn object(&self) -> Option<&KeyObject> {
        match &self.state {
            KeyState::Current(object) | KeyState::Readable(object) => Some(object),
            KeyState::Damaged(_) => None,
        }
    }

    /// Whether this is the key object the repository was opened with.
    pub fn is_current(&self) -> bool {
        matches!(self.state, KeyState::Current(_))
    }

    /// The short id for messages (the name's last component when it is not an id).
    pub fn short(&self) -> String {
        self.id.map_or_else(
            || self.name.rsplit('/').next().unwrap_or_default().to_owned(),
            |id| id.short(),
        )
    }
}

/// Whether a removal may take the key object the current password opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovalPolicy {
    /// Refuse to remove the current key object.
    KeepCurrent,
    /// Allow it (`--force`), as long as another key object decodes.
    AllowCurrent,
}

/// Parameters of a new key object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    /// Argon2id cost.
    pub kdf: KdfParams,
    /// Host name recorded in the key object.
    pub host: String,
    /// Creation time recorded in the key object (Unix seconds).
    pub created_unix: i64,
}

/// What `passwd` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordChange {
    /// The new key object, verified to open the repository.
    pub added: Id,
    /// The removed key object (the one the old password opened).
    pub removed: Id,
}

/// Finds the entry whose id is `spec` or starts with it (hex, case-insensitive).
///
/// # Errors
/// [`KeyringError::NoSuchKey`] or [`KeyringError::AmbiguousKey`].
pub fn resolve_key<'a>(entries: &'a [KeyEntry], spec: &str) -> Result<&'a KeyEntry, KeyringError> {
    let lowered = spec.to_ascii_lowercase();
    if lowered.is_empty() || !lowered.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(KeyringError::NoSuchKey(spec.to_owned()));
    }
    let mut matches = entries
        .iter()
        .filter(|entry| entry.id.is_some_and(|id| id.to_hex().starts_with(&lowered)));
    match (matches.next(), matches.next()) {
        (None, _) => Err(KeyringError::NoSuchKey(spec.to_owned())),
        (Some(entry), None) => Ok(entry),
        (Some(_), Some(_)) => Err(KeyringError::AmbiguousKey(spec.to_owned())),
    }
}

/// Decides whether `target` may be removed from `entries`: another key object must decode, and
/// the current key object is kept unless `policy` allows it.
///
/// When the target is not the current key object, the current one (proven to work) remains.
/// When it is, the remaining key objects can only be shown to decode, not to open the repository,
/// hence the explicit policy.
///
/// # Errors
/// [`KeyringError::CurrentKey`] or [`KeyringError::LastKey`].
pub fn check_removal(
    entries: &[KeyEntry],
    target: &KeyEntry,
    policy: RemovalPolicy,
) -> Result<(), KeyringError> {
    let others_readable = entries
        .iter()
        .filter(|entry| entry.name != target.name && entry.object().is_some())
        .count();
    if others_readable == 0 {
        return Err(KeyringError::LastKey(target.short()));
    }
    if target.is_current() && policy == RemovalPolicy::KeepCurrent {
        return Err(KeyringError::CurrentKey(target.short()));
    }
    Ok(())
}

/// Classifies the stored bytes of key object `name`.
fn classify(name: &str, bytes: &[u8], current: Id) -> KeyState {
    let stored_id = Id::of_stored_bytes(bytes);
    if id_from_name(name) != Some(stored_id) {
        return KeyState::Damaged("content does not match its name".into());
    }
    match KeyObject::decode(bytes) {
        Ok(object) if stored_id == current => KeyState::Current(object),
        Ok(object) => KeyState::Readable(object),
        Err(error) => KeyState::Damaged(error.to_string()),
    }
}

/// Whether `candidate` are the same working keys as `keys` (equal chunk and tree id keys and
/// chunker seed, all derived from the master secret).
fn same_keys(candidate: &RepositoryKeys, keys: &RepositoryKeys) -> bool {
    const PROBE: &[u8] = b"cairn keyring probe";
    candidate.chunker_seed == keys.chunker_seed
        && candidate.blob_id(BlobType::Data, PROBE) == keys.blob_id(BlobType::Data, PROBE)
        && candidate.blob_id(BlobType::Tree, PROBE) == keys.blob_id(BlobType::Tree, PROBE)
}

impl Repository {
    /// The objects under `keys/` that cannot be used (their content does not match their name,
    /// or they do not decode), with what is wrong with each, in name order. `check` reports them.
    ///
    /// # Errors
    /// Backend failures while listing or reading.
    pub fn damaged_key_objects(&self) -> Result<Vec<(String, String)>, Error> {
        let mut infos = self.backend().list(KEYS_PREFIX)?;
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        let mut damaged = Vec::new();
        for info in infos {
            let bytes = self.backend().get(&info.name)?;
            if let KeyState::Damaged(reason) = classify(&info.name, &bytes, self.key_id()) {
                damaged.push((info.name, reason));
            }
        }
        Ok(damaged)
    }

    /// Every object under `keys/`, in name order (the order `open` tries them). Damaged objects
    /// are listed as such, not returned as errors.
    ///
    /// # Errors
    /// Backend failures while listing or reading.
    pub fn list_keys(&self) -> Result<Vec<KeyEntry>, KeyringError> {
        let mut infos = self.backend().list(KEYS_PREFIX)?;
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        let current = self.key_id();
        let mut entries = Vec::with_capacity(infos.len());
        for info in infos {
            let bytes = self.backend().get(&info.name)?;
            entries.push(KeyEntry {
                id: id_from_name(&info.name),
                state: classify(&info.name, &bytes, current),
                name: info.name,
            });
        }
        Ok(entries)
    }

    /// Wraps this repository's master secret under `new_password` in a new key object, stores it
    /// create-only, and proves it by opening the repository with `new_password`. Returns its id.
    ///
    /// `current_password` must be the password this repository was opened with: the master
    /// secret is not kept in memory, so it is unwrapped again from the current key object.
    ///
    /// # Errors
    /// [`KeyringError::EmptyPassword`], [`KeyringError::SamePassword`],
    /// [`KeyringError::InvalidKdf`], [`KeyringError::CurrentKeyUnavailable`],
    /// [`KeyringError::NotVerified`] (the object is stored but does not open the repository), or
    /// backend failures.
    pub fn add_key(
        &self,
        current_password: &[u8],
        new_password: &[u8],
        new_key: &NewKey,
    ) -> Result<Id, KeyringError> {
        if new_password.is_empty() {
            return Err(KeyringError::EmptyPassword);
        }
        if new_password == current_password {
            return Err(KeyringError::SamePassword);
        }
        let master = self.current_master_secret(current_password)?;
        let object = KeyObject::wrap(
            &master,
            new_password,
            new_key.kdf,
            &new_key.host,
            new_key.created_unix,
        )
        .map_err(KeyringError::InvalidKdf)?;
        let bytes = object.encode();
        let id = Id::of_stored_bytes(&bytes);
        self.backend().put(
            &object_name(KEYS_PREFIX, &id),
            Bytes::from(bytes),
            PutMode::Create,
        )?;
        self.verify_new_key(id, new_password)?;
        Ok(id)
    }

    /// Removes the key object `spec` (a full id or a unique prefix) under the rules of
    /// [`check_removal`], after reading every key object again. Returns the removed entry.
    ///
    /// # Errors
    /// Whatever [`Repository::ensure_may_delete`] refuses, [`KeyringError::NoSuchKey`],
    /// [`KeyringError::AmbiguousKey`], [`KeyringError::LastKey`], [`KeyringError::CurrentKey`],
    /// or backend failures.
    pub fn remove_key(&self, spec: &str, policy: RemovalPolicy) -> Result<KeyEntry, KeyringError> {
        self.ensure_may_delete("key remove")?;
        let entries = self.list_keys()?;
        let target = resolve_key(&entries, spec)?;
        check_removal(&entries, target, policy)?;
        self.backend().delete(&target.name)?;
        Ok(target.clone())
    }

    /// Changes the password: adds a key object for `new_password` ([`Repository::add_key`],
    /// which proves it opens the repository), then deletes the key object the current password
    /// opened. At no moment is there no working key object.
    ///
    /// # Errors
    /// Whatever [`Repository::ensure_may_delete`] or [`Repository::add_key`] refuse, or
    /// [`KeyringError::OldKeyKept`] when the new key works but the old one could not be deleted.
    pub fn change_password(
        &self,
        current_password: &[u8],
        new_password: &[u8],
        new_key: &NewKey,
    ) -> Result<PasswordChange, KeyringError> {
        self.ensure_may_delete("key passwd")?;
        let old = self.key_id();
        let added = self.add_key(current_password, new_password, new_key)?;
        self.backend()
            .delete(&object_name(KEYS_PREFIX, &old))
            .map_err(|error| KeyringError::OldKeyKept {
                added,
                old,
                source: Box::new(Error::Backend(error)),
            })?;
        Ok(PasswordChange {
            added,
            removed: old,
        })
    }

    /// Unwraps the master secret from the key object this repository was opened with, and checks
    /// it still derives this repository's keys.
    fn current_master_secret(&self, password: &[u8]) -> Result<MasterSecret, KeyringError> {
        let id = self.key_id();
        let bytes = self.backend().get(&object_name(KEYS_PREFIX, &id))?;
        let unavailable = |reason| KeyringError::CurrentKeyUnavailable { id, reason };
        if Id::of_stored_bytes(&bytes) != id {
            return Err(unavailable("content does not match its name"));
        }
        let object = KeyObject::decode(&bytes).map_err(|_| unavailable("does not decode"))?;
        let master = object
            .unwrap(password)
            .map_err(|_| unavailable("the password does not unwrap it"))?;
        if !same_keys(&RepositoryKeys::derive(&master), self.keys()) {
            return Err(unavailable("it wraps another master secret"));
        }
        Ok(master)
    }

    /// Opens the repository afresh with `password` (in-memory cache, nothing written) and checks
    /// that key object `id` is what opens it. When another key object has the same password and
    /// comes first, `id` itself is unwrapped and checked instead.
    fn verify_new_key(&self, id: Id, password: &[u8]) -> Result<(), KeyringError> {
        let not_verified = |source: Error| KeyringError::NotVerified {
            id,
            source: Box::new(source),
        };
        let reopened =
            Repository::open(Arc::clone(self.backend()), password, &CacheLocation::Memory)
                .map_err(not_verified)?;
        if reopened.config().repository_id != self.config().repository_id
            || !same_keys(reopened.keys(), self.keys())
        {
            return Err(not_verified(Error::WrongPassword {
                damaged_keys: Vec::new(),
            }));
        }
        if reopened.key_id() == id {
            return Ok(());
        }
        let name = object_name(KEYS_PREFIX, &id);
        let bytes = self.backend().get(&name)?;
        let opens = Id::of_stored_bytes(&bytes) == id
            && KeyObject::decode(&bytes)
                .ok()
                .and_then(|object| object.unwrap(password).ok())
                .is_some_and(|master| same_keys(&RepositoryKeys::derive(&master), self.keys()));
        if opens {
            Ok(())
        } else {
            Err(not_verified(Error::Damaged {
                object: name,
                reason: "does not unwrap with the new password".into(),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::backend::object_store::ObjectStoreBackend;
    use crate::repo::repository::InitOptions;

    const CHEAP: KdfParams = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    fn new_key() -> NewKey {
        NewKey {
            kdf: CHEAP,
            host: "test".into(),
            created_unix: 7,
        }
    }

    fn init(password: &[u8]) -> (Arc<dyn Backend>, Repository) {
        let backend: Arc<dyn Backend> = Arc::new(ObjectStoreBackend::in_memory());
        let options = InitOptions {
            kdf: CHEAP,
            ..InitOptions::default()
        };
        let repository = Repository::init(
            Arc::clone(&backend),
            password,
            &options,
            &CacheLocation::Memory,
        )
        .unwrap();
        (backend, repository)
    }

    fn open(backend: &Arc<dyn Backend>, password: &[u8]) -> crate::error::Result<Repository> {
        Repository::open(Arc::clone(backend), password, &CacheLocation::Memory)
    }

    fn entry(name_id: u8, state: KeyState) -> KeyEntry {
        let id = Id([name_id; 32]);
        KeyEntry {
            name: object_name(KEYS_PREFIX, &id),
            id: Some(id),
            state,
        }
    }

    fn object() -> KeyObject {
        KeyObject::wrap(&MasterSecret([3; 32]), b"pw", CHEAP, "h", 1).unwrap()
    }

    #[test]
    fn prefixes_resolve_uniquely() {
        let entries = [
            entry(0xab, KeyState::Readable(object())),
            entry(0xac, KeyState::Damaged("x".into())),
        ];
        assert_eq!(resolve_key(&entries, "AB").unwrap().name, entries[0].name);
        assert_eq!(resolve_key(&entries, "acac").unwrap().name, entries[1].name);
        assert!(matches!(
            resolve_key(&entries, "a"),
            Err(KeyringError::AmbiguousKey(_))
        ));
        for missing in ["ad", "", "keys/ab", "zz"] {
            assert!(matches!(
                resolve_key(&entries, missing),
                Err(KeyringError::NoSuchKey(_))
            ));
        }
    }

    #[test]
    fn removal_rules() {
        let current = entry(1, KeyState::Current(object()));
        let other = entry(2, KeyState::Readable(object()));
        let damaged = entry(3, KeyState::Damaged("x".into()));
        let all = [current.clone(), other.clone(), damaged.clone()];
        let keep = RemovalPolicy::KeepCurrent;
        let force = RemovalPolicy::AllowCurrent;
        assert!(check_removal(&all, &other, keep).is_ok());
        assert!(check_removal(&all, &damaged, keep).is_ok());
        assert!(matches!(
            check_removal(&all, &current, keep),
            Err(KeyringError::CurrentKey(_))
        ));
        assert!(check_removal(&all, &current, force).is_ok());
        // Only a damaged object beside the current one: the current one is the last usable key.
        let alone = [current.clone(), damaged.clone()];
        assert!(matches!(
            check_removal(&alone, &current, force),
            Err(KeyringError::LastKey(_))
        ));
        assert!(check_removal(&alone, &damaged, keep).is_ok());
    }

    #[test]
    fn add_list_remove_and_passwd() {
        let (backend, repository) = init(b"old");
        let added = repository.add_key(b"old", b"new", &new_key()).unwrap();
        let listed = repository.list_keys().unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed.iter().filter(|entry| entry.is_current()).count(), 1);
        let with_new = open(&backend, b"new").unwrap();
        assert_eq!(with_new.key_id(), added);
        assert_eq!(with_new.config(), repository.config());

        let removed = repository
            .remove_key(
                &repository.key_id().to_hex()[..12],
                RemovalPolicy::AllowCurrent,
            )
            .unwrap();
        assert_eq!(removed.id, Some(repository.key_id()));
        assert!(matches!(
            open(&backend, b"old"),
            Err(Error::WrongPassword { .. })
        ));
        assert!(matches!(
            with_new.remove_key(&added.to_hex(), RemovalPolicy::AllowCurrent),
            Err(KeyringError::LastKey(_))
        ));

        let change = with_new
            .change_password(b"new", b"newer", &new_key())
            .unwrap();
        assert_eq!(change.removed, added);
        assert!(open(&backend, b"new").is_err());
        assert_eq!(open(&backend, b"newer").unwrap().key_id(), change.added);
        assert_eq!(backend.list(KEYS_PREFIX).unwrap().len(), 1);
    }

    #[test]
    fn bad_new_passwords_are_refused_before_writing() {
        let (backend, repository) = init(b"pw");
        for (new, expected) in [(&b""[..], "empty"), (b"pw", "same")] {
            let error = repository.add_key(b"pw", new, &new_key()).unwrap_err();
            assert!(error.to_string().contains(expected), "{error}");
            assert_eq!(error.kind(), ErrorKind::User);
        }
        let hostile = NewKey {
            kdf: KdfParams {
                memory_kib: u32::MAX,
                ..CHEAP
            },
            ..new_key()
        };
        assert!(matches!(
            repository.add_key(b"pw", b"other", &hostile),
            Err(KeyringError::InvalidKdf(_))
        ));
        assert_eq!(backend.list(KEYS_PREFIX).unwrap().len(), 1);
    }

    #[test]
    fn damaged_key_objects_are_listed_and_skipped() {
        let (backend, repository) = init(b"pw");
        let added = repository.add_key(b"pw", b"two", &new_key()).unwrap();
        let name = object_name(KEYS_PREFIX, &added);
        let mut bytes = backend.get(&name).unwrap().to_vec();
        bytes[20] ^= 1;
        backend.delete(&name).unwrap();
        backend
            .put(&name, Bytes::from(bytes), PutMode::Create)
            .unwrap();
        let listed = repository.list_keys().unwrap();
        let damaged = listed.iter().find(|entry| entry.name == name).unwrap();
        assert!(matches!(damaged.state, KeyState::Damaged(_)));
        assert!(open(&backend, b"pw").is_ok());
        assert!(matches!(
            repository.remove_key(&repository.key_id().to_hex(), RemovalPolicy::AllowCurrent),
            Err(KeyringError::LastKey(_))
        ));
        repository
            .remove_key(&added.to_hex()[..10], RemovalPolicy::KeepCurrent)
            .unwrap();
        assert_eq!(repository.list_keys().unwrap().len(), 1);
    }
}
