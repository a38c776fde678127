//! `repair config`: rebuild a lost or damaged config object from a key object the password opens
//! and the repository's own objects, so that a lost config never costs the data.
//!
//! What a config holds and where each field comes back from (FORMAT.md section 8): the format
//! version is this build's; the repository id only names the local cache, so it is read back from
//! a damaged config when its clear header survives and drawn anew otherwise; the chunker bounds,
//! the pack target size and the compression level are choices that only shape what new backups
//! write (every stored object records what reading it needs), so they are taken from the caller
//! (the `init` defaults unless told otherwise) and checked against the largest data chunk the
//! index lists; the creation time is the oldest key object's. The keys themselves are not in the
//! config: they derive from the master secret in the key objects (FORMAT.md section 4).
//!
//! Writes one object, `config`, create-only; a damaged config is first copied aside to
//! `config.damaged-<first 16 hex digits of its BLAKE3>` and then deleted. Never prints.

use std::sync::Arc;

use bytes::Bytes;
use cairn_chunker::ChunkerParams;

use crate::backend::{Backend, BackendError, PutMode};
use crate::crypto::id::{BlobType, Id};
use crate::crypto::keys::{KeyObject, RepositoryKeys};
use crate::crypto::seal;
use crate::error::{Error, Result};
use crate::format::config::{
    self, Config, DEFAULT_COMPRESSION_LEVEL, DEFAULT_PACK_TARGET_SIZE, FORMAT_VERSION,
};
use crate::format::index::IndexObject;
use crate::format::lifecycle::APPEND_ONLY_NAME;
use crate::format::pack;
use crate::format::snapshot::Snapshot;
use crate::repo::repository::{
    CONFIG_NAME, DATA_PREFIX, INDEX_PREFIX, KEYS_PREFIX, SNAPSHOTS_PREFIX, id_from_name,
    validate_parameters,
};

/// The writer's choices a new config records: they cannot be read back from the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepairConfigOptions {
    /// Chunk size bounds for new backups; the largest data chunk the index lists must fit.
    pub chunker: ChunkerParams,
    /// Pack target size in bytes.
    pub pack_target_size: u32,
    /// Default zstd level; 0 turns compression off.
    pub compression_level: i32,
    /// This client refuses to delete (`--append-only`): a damaged config, which must be deleted
    /// before a new one is written, is then left alone.
    pub client_append_only: bool,
}

impl Default for RepairConfigOptions {
    /// The `init` defaults.
    fn default() -> Self {
        Self {
            chunker: ChunkerParams::DEFAULT,
            pack_target_size: DEFAULT_PACK_TARGET_SIZE,
            compression_level: DEFAULT_COMPRESSION_LEVEL,
            client_append_only: false,
        }
    }
}

/// What `repair config` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairConfigOutcome {
    /// The key object whose master secret the new config is sealed with.
    pub key: Id,
    /// The object that authenticated under that master secret's data key (an index object,
    /// snapshot or pack), proving the key belongs to the data; `None` when the location held
    /// none of them.
    pub proven_by: Option<String>,
    /// The repository id written (hex): the damaged config's when its header was readable.
    pub repository_id: String,
    /// Whether the repository id was read back from the damaged config (the local cache is
    /// reused) rather than drawn anew.
    pub repository_id_kept: bool,
    /// The largest data chunk the readable index objects list, in bytes.
    pub largest_data_chunk: u32,
    /// Where the damaged config was copied before it was replaced.
    pub damaged_config_kept: Option<String>,
}

/// The keys of a master secret a key object yields with the password.
#[derive(Clone)]
struct Candidate {
    key: Id,
    keys: RepositoryKeys,
}

/// Rebuilds the config of the repository at `backend` with `password`.
///
/// # Errors
/// [`Error::Usage`] when the config is intact and opens with the password, for invalid options,
/// or when the index lists a data chunk larger than `options.chunker.max_size`;
/// [`Error::WrongPassword`] when no key object the password opens seals the repository's
/// objects; [`Error::AppendOnly`] when a damaged config would have to be deleted from an
/// append-only repository or by an append-only client; backend failures.
pub fn repair_config(
    backend: &Arc<dyn Backend>,
    password: &[u8],
    options: &RepairConfigOptions,
) -> Result<RepairConfigOutcome> {
    validate_parameters(options.chunker, options.pack_target_size)?;
    let existing = match backend.get(CONFIG_NAME) {
        Ok(bytes) => Some(bytes),
        Err(BackendError::NotFound { .. }) => None,
        Err(error) => return Err(error.into()),
    };
    let (candidates, damaged_keys, oldest_key) = candidates(backend.as_ref(), password)?;
    if let Some(bytes) = &existing
        && candidates
            .iter()
            .any(|candidate| Config::decode(&candidate.keys.data_key, bytes).is_ok())
    {
        return Err(Error::Usage(format!(
            "the config at {} is intact and opens with this password: nothing to repair",
            backend.location()
        )));
    }
    let (chosen, proven_by) =
        prove(backend.as_ref(), &candidates)?.ok_or(Error::WrongPassword { damaged_keys })?;
    let largest_data_chunk = largest_data_chunk(backend.as_ref(), &chosen.keys)?;
    if largest_data_chunk > options.chunker.max_size {
        return Err(Error::Usage(format!(
            "the index lists data chunks of up to {largest_data_chunk} bytes, more than the \
             maximum chunk size {}: give --chunk-min/--chunk-avg/--chunk-max as the repository \
             was made with (the init defaults are 2048/8192/32768)",
            options.chunker.max_size
        )));
    }
    let kept_id = existing
        .as_deref()
        .and_then(|bytes| Config::peek(bytes).ok())
        .map(|(_, id)| id);
    let repository_id = kept_id.unwrap_or_else(|| {
        let mut id = [0u8; config::REPOSITORY_ID_LEN];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
        id
    });
    let new_config = Config {
        version: FORMAT_VERSION,
        repository_id,
        chunker: options.chunker,
        pack_target_size: options.pack_target_size,
        compression_level: options.compression_level,
        created_unix: oldest_key,
        chunker_seed: None,
    };
    let mut damaged_config_kept = None;
    if let Some(bytes) = existing {
        if options.client_append_only {
            return Err(Error::AppendOnly("repair config", "client"));
        }
        if backend.head(APPEND_ONLY_NAME)?.is_some() {
            return Err(Error::AppendOnly("repair config", "repository"));
        }
        let aside = format!(
            "{CONFIG_NAME}.damaged-{}",
            &Id::of_stored_bytes(&bytes).to_hex()[..16]
        );
        match backend.put(&aside, bytes, PutMode::Create) {
            Ok(()) | Err(BackendError::AlreadyExists { .. }) => {}
            Err(error) => return Err(error.into()),
        }
        backend.delete(CONFIG_NAME)?;
        damaged_config_kept = Some(aside);
    }
    let sealed = new_config.encode(&chosen.keys.data_key, seal::random_nonce());
    backend.put(CONFIG_NAME, Bytes::from(sealed), PutMode::Create)?;
    Ok(RepairConfigOutcome {
        key: chosen.key,
        proven_by,
        repository_id: hex::encode(repository_id),
        repository_id_kept: kept_id.is_some(),
        largest_data_chunk,
        damaged_config_kept,
    })
}

/// Every distinct master secret the key objects yield with `password` (name order), the names
/// of key objects that do not decode, and the oldest creation time of the decodable ones.
fn candidates(
    backend: &dyn Backend,
    password: &[u8],
) -> Result<(Vec<Candidate>, Vec<String>, i64)> {
    let mut infos = backend.list(KEYS_PREFIX)?;
    infos.sort_by(|a, b| a.name.cmp(&b.name));
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut damaged = Vec::new();
    let mut oldest = None;
    for info in infos {
        let bytes = backend.get(&info.name)?;
        let id = Id::of_stored_bytes(&bytes);
        let object = (id_from_name(&info.name) == Some(id))
            .then(|| KeyObject::decode(&bytes).ok())
            .flatten();
        let Some(object) = object else {
            damaged.push(info.name);
            continue;
        };
        oldest = Some(oldest.map_or(object.created_unix, |oldest: i64| {
            oldest.min(object.created_unix)
        }));
        let Ok(master) = object.unwrap(password) else {
            continue;
        };
        let keys = RepositoryKeys::derive(&master);
        let probe = keys.blob_id(BlobType::Data, b"cairn repair config probe");
        if candidates.iter().any(|known| {
            known
                .keys
                .blob_id(BlobType::Data, b"cairn repair config probe")
                == probe
        }) {
            continue;
        }
        candidates.push(Candidate { key: id, keys });
    }
    Ok((candidates, damaged, oldest.unwrap_or(0)))
}

/// Whether an object's bytes open with a candidate's keys.
type Opens<'a> = &'a dyn Fn(&RepositoryKeys, &[u8]) -> bool;

/// The candidate whose data key opens the repository's objects, and the object that proved it:
/// the first index object, else the first snapshot, else the first pack's trailer that one of
/// the candidates opens. With none of those objects, the first candidate (nothing to prove it
/// against). `None` when objects exist and no candidate opens any of them.
fn prove(
    backend: &dyn Backend,
    candidates: &[Candidate],
) -> Result<Option<(Candidate, Option<String>)>> {
    let opens_index =
        |keys: &RepositoryKeys, bytes: &[u8]| IndexObject::decode(&keys.data_key, bytes).is_ok();
    let opens_snapshot =
        |keys: &RepositoryKeys, bytes: &[u8]| Snapshot::decode(&keys.data_key, bytes).is_ok();
    let opens_pack = |keys: &RepositoryKeys, bytes: &[u8]| {
        pack::read_pack_entries(&keys.data_key, bytes).is_ok()
    };
    let kinds: [(&str, Opens<'_>); 3] = [
        (INDEX_PREFIX, &opens_index),
        (SNAPSHOTS_PREFIX, &opens_snapshot),
        (DATA_PREFIX, &opens_pack),
    ];
    let mut any_object = false;
    for (prefix, opens) in kinds {
        let mut names: Vec<String> = backend
            .list(prefix)?
            .into_iter()
            .map(|info| info.name)
            .filter(|name| id_from_name(name).is_some())
            .collect();
        names.sort();
        // A few objects of each kind: one damaged object must not hide the proof.
        for name in names.into_iter().take(4) {
            any_object = true;
            let bytes = backend.get(&name)?;
            if let Some(position) = candidates
                .iter()
                .position(|candidate| opens(&candidate.keys, &bytes))
            {
                return Ok(Some((candidates[position].clone(), Some(name))));
            }
        }
    }
    if any_object || candidates.is_empty() {
        return Ok(None);
    }
    Ok(Some((candidates[0].clone(), None)))
}

/// The largest plaintext length of a data blob in the index objects that open with `keys`
/// (damaged ones are skipped: `check` reports them).
fn largest_data_chunk(backend: &dyn Backend, keys: &RepositoryKeys) -> Result<u32> {
    let mut largest = 0;
    for info in backend.list(INDEX_PREFIX)? {
        let bytes = backend.get(&info.name)?;
        let Ok(index) = IndexObject::decode(&keys.data_key, &bytes) else {
            continue;
        };
        for entry in index.packs.iter().flat_map(|pack| &pack.entries) {
            if entry.blob_type == BlobType::Data {
                largest = largest.max(entry.raw_length);
            }
        }
    }
    Ok(largest)
}
