//! An open repository: the backend, the keys, the config and the local index cache, with the
//! object-level operations every use case builds on (read and write objects, read blobs, sync the
//! index, list and resolve snapshots).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use cairn_chunker::ChunkerParams;
use rayon::prelude::*;

use crate::backend::{Backend, BackendError, ObjectInfo, PutMode};
use crate::crypto::compressibility::CompressionProbe;
use crate::crypto::id::{BlobType, Id};
use crate::crypto::keys::{KdfParams, KeyObject, MasterSecret, RepositoryKeys};
use crate::crypto::seal;
use crate::error::{Error, Result};
use crate::format::config::{
    self, Config, DEFAULT_COMPRESSION_LEVEL, DEFAULT_PACK_TARGET_SIZE, FORMAT_VERSION,
};
use crate::format::index::{IndexObject, IndexedPack};
use crate::format::pack::{self, FOOTER_LEN};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind, Tree};
use crate::index::cache::{BlobLocation, IndexCache};

/// Tree packs up to this size are downloaded whole on a tree cache miss.
const WHOLE_TREE_PACK: u64 = 32 * 1024 * 1024;

/// Name of the config object.
pub const CONFIG_NAME: &str = "config";
/// Prefix of key objects.
pub const KEYS_PREFIX: &str = "keys";
/// Prefix of snapshot objects.
pub const SNAPSHOTS_PREFIX: &str = "snapshots";
/// Prefix of index objects.
pub const INDEX_PREFIX: &str = "index";
/// Prefix of packs.
pub const DATA_PREFIX: &str = "data";

/// The object name of a pack: `data/<first two hex digits>/<hex id>`.
pub fn pack_name(id: &Id) -> String {
    let hex = id.to_hex();
    format!("{DATA_PREFIX}/{}/{hex}", &hex[..2])
}

/// The object name of a snapshot, index or key object: `<prefix>/<hex id>`.
pub fn object_name(prefix: &str, id: &Id) -> String {
    format!("{prefix}/{id}")
}

/// The id in an object name (its last component), if it is one.
pub fn id_from_name(name: &str) -> Option<Id> {
    name.rsplit('/').next()?.parse().ok()
}

/// Parameters of a new repository.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Argon2id cost of the first key.
    pub kdf: KdfParams,
    /// Chunk size bounds.
    pub chunker: ChunkerParams,
    /// Pack target size in bytes.
    pub pack_target_size: u32,
    /// zstd level; 0 disables compression.
    pub compression_level: i32,
    /// Host name recorded in the first key object.
    pub host: String,
    /// Creation time (Unix seconds).
    pub created_unix: i64,
    /// A chunker seed to record in the config instead of deriving it from the master secret
    /// (`init --copy-chunker-params-from`: chunk exactly like another repository).
    pub chunker_seed: Option<u64>,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            kdf: KdfParams::DEFAULT,
            chunker: ChunkerParams::DEFAULT,
            pack_target_size: DEFAULT_PACK_TARGET_SIZE,
            compression_level: DEFAULT_COMPRESSION_LEVEL,
            host: String::new(),
            created_unix: 0,
            chunker_seed: None,
        }
    }
}

#[cfg(test)]
impl InitOptions {
    /// The defaults with the cheapest key derivation (64 KiB, one pass, one lane), so tests
    /// open repositories at once.
    pub(crate) fn with_cheapest_kdf() -> Self {
        Self {
            kdf: KdfParams {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            },
            ..Self::default()
        }
    }
}

/// A repository initialised with `options` in the local directory `directory`, with no retries
/// and its index cache in memory (for tests).
#[cfg(test)]
pub(crate) fn local_test_repository(
    directory: &std::path::Path,
    options: &InitOptions,
) -> Repository {
    use crate::backend::object_store::{CreateDirectory, ObjectStoreBackend, RetryPolicy};
    let backend: Arc<dyn Backend> = Arc::new(
        ObjectStoreBackend::open(&directory.display().to_string(), &[], CreateDirectory::No)
            .unwrap()
            .with_retry_policy(RetryPolicy {
                retries: 0,
                ..RetryPolicy::default()
            }),
    );
    Repository::init(backend, b"password", options, &CacheLocation::Memory).unwrap()
}

/// Where the local index cache lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheLocation {
    /// Under this directory, in `<repository id>/index.redb`.
    Directory(PathBuf),
    /// In memory only, rebuilt on every open.
    Memory,
}

/// How many requests run at once. Defaults measured on moto (loopback, 0.4 GB): 1, 2 or 4
/// uploads all back up in 2.2–2.4 s; 2, 8 or 16 downloads restore in 2.0–2.2 s while peak memory
/// grows 135 → 180 → 205 MiB. Real links need some concurrency to hide latency, so downloads
/// default to 4 and uploads to 2 (each upload holds a pack in memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concurrency {
    /// Pack uploads in flight during a backup (each holds one pack in memory).
    pub uploads: usize,
    /// Ranged reads in flight during restore and dump, and packs verified at once by `check`
    /// (each read holds a piece and a blob: reads stream).
    pub downloads: usize,
}

impl Default for Concurrency {
    fn default() -> Self {
        Self {
            uploads: 2,
            downloads: 4,
        }
    }
}

/// What an index sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Index objects read and merged.
    pub merged: usize,
    /// The cache was dropped and rebuilt (an index object it knew disappeared).
    pub rebuilt: bool,
    /// Index objects that could not be read or verified (their packs stay unknown).
    pub damaged: Vec<String>,
}

/// What an orphan scan did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrphanScan {
    /// Unindexed packs found and indexed.
    pub recovered: usize,
    /// Whether every unindexed pack was read or found damaged (none failed for a reason that
    /// may pass, such as an unreachable store).
    pub complete: bool,
}

/// Index entries decoded before they are merged into the cache in one transaction (about 100
/// bytes each in memory while decoded and sorted).
const MERGE_ENTRIES: usize = 200_000;

/// Snapshots that loaded (oldest first) and errors of those that did not.
pub type SnapshotListing = (Vec<(Id, Snapshot)>, Vec<Error>);

/// An open repository.
#[derive(Debug)]
pub struct Repository {
    backend: Arc<dyn Backend>,
    config: Config,
    keys: RepositoryKeys,
    key_id: Id,
    cache: IndexCache,
    concurrency: Concurrency,
    io_pool: std::sync::OnceLock<rayon::ThreadPool>,
    /// Packs condemned by prune records: never used for lookups, orphan recovery or reads.
    condemned: std::sync::RwLock<HashSet<Id>>,
    /// This client refuses to delete (`--append-only`).
    client_append_only: bool,
    /// The repository carries the `append-only` marker.
    marked_append_only: bool,
    /// zstd level for new blobs chosen by this client, overriding the config's default.
    compression_override: Option<i32>,
    /// Whether data chunks that look incompressible skip zstd (FORMAT.md section 5 lets a
    /// writer store any blob raw).
    compression_probe: CompressionProbe,
    /// This machine's record of the sessions it started here (FORMAT.md section 21.3).
    session_record: crate::repo::place::SessionRecord,
}

/// What repository objects `backend` holds, one phrase per kind (`config`, `2 key objects`,
/// `3 snapshots`, `1 index object`, `14 packs`, `5 garbage-collection objects`), cheapest first;
/// empty when it holds none. Packs are listed only when nothing else is there.
///
/// # Errors
/// Backend failures while listing.
pub fn objects_present(backend: &dyn Backend) -> Result<Vec<String>> {
    let mut found = Vec::new();
    if backend.head(CONFIG_NAME)?.is_some() {
        found.push(CONFIG_NAME.to_owned());
    }
    let kinds: [(&[&str], &str, &str); 4] = [
        (&[KEYS_PREFIX], "key object", "key objects"),
        (&[SNAPSHOTS_PREFIX], "snapshot", "snapshots"),
        (&[INDEX_PREFIX], "index object", "index objects"),
        (
            &["sessions", "prune", "locks"],
            "garbage-collection object",
            "garbage-collection objects",
        ),
    ];
    for (prefixes, one, many) in kinds {
        let mut count = 0;
        for prefix in prefixes {
            count += backend.list(prefix)?.len();
        }
        if count > 0 {
            found.push(count_phrase(count, one, many));
        }
    }
    if found.is_empty() {
        let packs = backend.list(DATA_PREFIX)?.len();
        if packs > 0 {
            found.push(count_phrase(packs, "pack", "packs"));
        }
    }
    Ok(found)
}

/// Checks the chunker bounds and pack target size a new config would record.
///
/// # Errors
/// [`Error::Usage`] naming what is out of bounds.
pub fn validate_parameters(chunker: ChunkerParams, pack_target_size: u32) -> Result<()> {
    chunker
        .validate()
        .map_err(|error| Error::Usage(error.to_string()))?;
    if !(config::MIN_PACK_TARGET_SIZE..=config::MAX_PACK_TARGET_SIZE).contains(&pack_target_size) {
        return Err(Error::Usage(
            "pack target size must be between 1 MiB and 1 GiB".into(),
        ));
    }
    Ok(())
}

fn count_phrase(count: usize, one: &str, many: &str) -> String {
    if count == 1 {
        format!("1 {one}")
    } else {
        format!("{count} {many}")
    }
}

fn verify_name(name: &str, bytes: &[u8]) -> Result<Id> {
    let id = Id::of_stored_bytes(bytes);
    if id_from_name(name) != Some(id) {
        return Err(Error::Damaged {
            object: name.to_owned(),
            reason: "content does not match its name".into(),
        });
    }
    Ok(id)
}

/// Draws master secrets until the chunker seed derived from one cuts every run of one byte
/// value at the maximum chunk size (FORMAT.md section 13, "Degenerate seeds"). About half of all
/// seeds cut some byte value's runs short, so this takes about two draws.
fn draw_master_secret(params: ChunkerParams) -> Result<MasterSecret> {
    loop {
        let master = MasterSecret::generate();
        let seed = RepositoryKeys::derive(&master).chunker_seed;
        let chunker = cairn_chunker::Chunker::new(params, seed)
            .map_err(|error| Error::Usage(error.to_string()))?;
        if chunker.degenerate_run_byte().is_none() {
            return Ok(master);
        }
    }
}

impl Repository {
    /// Creates a repository: a key object wrapping a fresh master secret, then the config (the
    /// commit point of `init`).
    ///
    /// # Errors
    /// [`Error::AlreadyInitialised`] when the location holds any repository object,
    /// [`Error::Usage`] for an empty password or invalid options,
    /// or backend failures.
    pub fn init(
        backend: Arc<dyn Backend>,
        password: &[u8],
        options: &InitOptions,
        cache: &CacheLocation,
    ) -> Result<Self> {
        if password.is_empty() {
            return Err(Error::Usage(
                "the password is empty: choose a non-empty password".into(),
            ));
        }
        validate_parameters(options.chunker, options.pack_target_size)?;
        let found = objects_present(backend.as_ref())?;
        if !found.is_empty() {
            return Err(Error::AlreadyInitialised {
                location: backend.location(),
                found: found.join(", "),
            });
        }
        let master = draw_master_secret(options.chunker)?;
        Self::init_with_master(backend, password, options, cache, &master)
    }

    /// [`Self::init`] with a given master secret (tests use it to build a repository whose
    /// chunker seed `init` would refuse). Expects validated options and an empty location.
    pub(crate) fn init_with_master(
        backend: Arc<dyn Backend>,
        password: &[u8],
        options: &InitOptions,
        cache: &CacheLocation,
        master: &MasterSecret,
    ) -> Result<Self> {
        if backend.head(CONFIG_NAME)?.is_some() {
            return Err(Error::AlreadyInitialised {
                location: backend.location(),
                found: "config".into(),
            });
        }
        let keys = RepositoryKeys::derive(master);
        let mut repository_id = [0u8; config::REPOSITORY_ID_LEN];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut repository_id);
        let config = Config {
            version: FORMAT_VERSION,
            repository_id,
            chunker: options.chunker,
            pack_target_size: options.pack_target_size,
            compression_level: options.compression_level,
            created_unix: options.created_unix,
            chunker_seed: options.chunker_seed,
        };
        let key_object = KeyObject::wrap(
            master,
            password,
            options.kdf,
            &options.host,
            options.created_unix,
        )
        .map_err(|error| Error::Usage(error.to_string()))?;
        let key_bytes = key_object.encode();
        let key_id = Id::of_stored_bytes(&key_bytes);
        backend.put(
            &object_name(KEYS_PREFIX, &key_id),
            Bytes::from(key_bytes),
            PutMode::Create,
        )?;
        let config_bytes = config.encode(&keys.data_key, seal::random_nonce());
        match backend.put(CONFIG_NAME, Bytes::from(config_bytes), PutMode::Create) {
            Err(BackendError::AlreadyExists { .. }) => {
                return Err(Error::AlreadyInitialised {
                    location: backend.location(),
                    found: "config".into(),
                });
            }
            other => other?,
        }
        let session_record = Self::session_record_in(cache, &repository_id);
        let cache = Self::open_cache(cache, &repository_id)?;
        Ok(Self {
            backend,
            config,
            keys,
            key_id,
            cache,
            concurrency: Concurrency::default(),
            io_pool: std::sync::OnceLock::new(),
            condemned: std::sync::RwLock::default(),
            client_append_only: false,
            marked_append_only: false,
            compression_override: None,
            compression_probe: CompressionProbe::default(),
            session_record,
        })
    }

    /// Opens a repository with `password` and its local index cache. Call
    /// [`Repository::sync_index`] before relying on the cache (the use cases do).
    ///
    /// # Errors
    /// [`Error::RepositoryNotFound`], [`Error::ConfigMissing`] when other repository objects are
    /// there, [`Error::Unsupported`] for a newer format, [`Error::WrongPassword`], or backend and
    /// cache failures.
    pub fn open(backend: Arc<dyn Backend>, password: &[u8], cache: &CacheLocation) -> Result<Self> {
        // The requests that need no key go out together: the config, the key listing and the
        // append-only marker are one round trip instead of three.
        let (config_bytes, key_listing, append_only) = std::thread::scope(|scope| {
            let key_listing = scope.spawn(|| backend.list(KEYS_PREFIX));
            let append_only =
                scope.spawn(|| backend.head(crate::format::lifecycle::APPEND_ONLY_NAME));
            let config_bytes = backend.get(CONFIG_NAME);
            (
                config_bytes,
                key_listing
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                append_only
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            )
        });
        let config_bytes = match config_bytes {
            Err(BackendError::NotFound { .. }) => {
                let found = objects_present(backend.as_ref())?;
                return Err(if found.is_empty() {
                    Error::RepositoryNotFound(backend.location())
                } else {
                    Error::ConfigMissing {
                        location: backend.location(),
                        found: found.join(", "),
                    }
                });
            }
            other => other?,
        };
        let (_, repository_id) = Config::peek(&config_bytes).map_err(|error| match error {
            decode @ crate::format::codec::DecodeError::UnsupportedVersion { .. } => {
                Error::Unsupported(decode)
            }
            other => Error::Damaged {
                object: CONFIG_NAME.into(),
                reason: format!("{other}; `cairn repair config` rebuilds it"),
            },
        })?;
        let mut key_names: Vec<ObjectInfo> = key_listing?;
        key_names.sort_by(|a, b| a.name.cmp(&b.name));
        let marked_append_only = append_only?.is_some();
        // The local cache opens while the password is stretched (it needs only the repository
        // id): the key derivation is the longest step of opening.
        let (unlocked, opened_cache) = std::thread::scope(|scope| {
            let opened_cache = scope.spawn(|| Self::open_cache(cache, &repository_id));
            let unlocked = Self::unlock(backend.as_ref(), password, &config_bytes, key_names);
            (
                unlocked,
                opened_cache
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            )
        });
        let (keys, config, key_id) = unlocked?;
        Ok(Self {
            backend,
            config,
            keys,
            key_id,
            cache: opened_cache?,
            concurrency: Concurrency::default(),
            io_pool: std::sync::OnceLock::new(),
            condemned: std::sync::RwLock::default(),
            client_append_only: false,
            marked_append_only,
            compression_override: None,
            compression_probe: CompressionProbe::default(),
            session_record: Self::session_record_in(cache, &repository_id),
        })
    }

    /// Tries the key objects `key_names` in order with `password`: the keys, config and key id
    /// of the first one that unwraps and opens the config.
    fn unlock(
        backend: &dyn Backend,
        password: &[u8],
        config_bytes: &[u8],
        key_names: Vec<ObjectInfo>,
    ) -> Result<(RepositoryKeys, Config, Id)> {
        let mut damaged_keys = Vec::new();
        let mut config_failure = None;
        for info in key_names {
            let bytes = backend.get(&info.name)?;
            let decoded = verify_name(&info.name, &bytes)
                .ok()
                .and_then(|_| KeyObject::decode(&bytes).ok());
            let Some(key_object) = decoded else {
                damaged_keys.push(info.name);
                continue;
            };
            let Ok(master) = key_object.unwrap(password) else {
                continue;
            };
            let keys = RepositoryKeys::derive(&master);
            // A key left by an interrupted `init` unwraps but does not open this config; so does
            // any key when the config is damaged.
            match Config::decode(&keys.data_key, config_bytes) {
                Ok(config) => return Ok((keys, config, Id::of_stored_bytes(&bytes))),
                Err(error) => {
                    config_failure = Some(match Error::from_object(CONFIG_NAME, error) {
                        Error::Damaged { object, reason } => Error::Damaged {
                            object,
                            reason: format!(
                                "{reason}; if no other password opens it, `cairn repair config` \
                                 rebuilds it"
                            ),
                        },
                        other => other,
                    });
                }
            }
        }
        Err(config_failure.unwrap_or(Error::WrongPassword { damaged_keys }))
    }

    /// The record of sessions started here: next to `index.redb`, none without a cache
    /// directory (`--no-cache`).
    fn session_record_in(
        location: &CacheLocation,
        repository_id: &[u8],
    ) -> crate::repo::place::SessionRecord {
        let directory = match location {
            CacheLocation::Directory(directory) => Some(directory.join(hex::encode(repository_id))),
            CacheLocation::Memory => None,
        };
        crate::repo::place::SessionRecord::in_directory(directory.as_deref())
    }

    fn open_cache(location: &CacheLocation, repository_id: &[u8]) -> Result<IndexCache> {
        match location {
            // A temporary file rather than memory, so that memory does not grow with the index;
            // memory only when no such file can be made (a read-only or full temporary
            // directory, a file-size limit).
            CacheLocation::Memory => {
                IndexCache::temporary(&std::env::temp_dir()).or_else(|_| IndexCache::in_memory())
            }
            CacheLocation::Directory(directory) => {
                let directory = directory.join(hex::encode(repository_id));
                // Another cairn process may hold the file: fall back to a private temporary
                // cache, which is slower to fill but always correct. A damaged file is moved
                // aside and rebuilt (`open_healing`); when even that fails, the fallback says
                // why, so that a cache bypassed on every run does not go unnoticed.
                let path = directory.join("index.redb");
                let temporary =
                    || IndexCache::temporary(&directory).or_else(|_| IndexCache::in_memory());
                match IndexCache::open_healing(&path) {
                    Ok(Some(cache)) => Ok(cache),
                    Ok(None) => temporary(),
                    Err(error) => Ok(temporary()?.with_notice(format!(
                        "the local index cache cannot be used ({error}): this run uses a \
                         temporary one and downloads the index again; fix or remove {}",
                        path.display()
                    ))),
                }
            }
        }
    }

    /// Sets how many uploads and downloads run at once (at least one each).
    #[must_use]
    pub fn with_concurrency(mut self, concurrency: Concurrency) -> Self {
        self.concurrency = Concurrency {
            uploads: concurrency.uploads.max(1),
            downloads: concurrency.downloads.max(1),
        };
        self
    }

    /// Compresses the blobs this client writes at zstd `level` (0: not at all) instead of the
    /// repository's default level; `None` keeps the default. Readers need no setting: every blob
    /// says whether it is compressed.
    #[must_use]
    pub fn with_compression(mut self, level: Option<i32>) -> Self {
        self.compression_override = level;
        self
    }

    /// Whether new data chunks go through the compressibility probe first
    /// ([`crate::crypto::compressibility`]); on unless turned off here.
    #[must_use]
    pub fn with_compression_probe(mut self, probe: CompressionProbe) -> Self {
        self.compression_probe = probe;
        self
    }

    /// Whether new data chunks go through the compressibility probe before zstd.
    pub fn compression_probe(&self) -> CompressionProbe {
        self.compression_probe
    }

    /// The zstd level for new blobs and metadata: this client's choice, else the repository's
    /// default; `None` means uncompressed.
    pub fn compression(&self) -> Option<i32> {
        match self.compression_override {
            Some(0) => None,
            Some(level) => Some(level),
            None => self.config.compression(),
        }
    }

    /// Makes this client append-only: it refuses every command that deletes.
    #[must_use]
    pub fn with_client_append_only(mut self, append_only: bool) -> Self {
        self.client_append_only = append_only;
        self
    }

    /// Whether this client was made append-only.
    pub fn client_append_only(&self) -> bool {
        self.client_append_only
    }

    /// Whether the repository carries the `append-only` marker.
    pub fn repository_append_only(&self) -> bool {
        self.marked_append_only
    }

    /// Replaces the set of condemned packs (from the prune records).
    pub fn set_condemned(&self, condemned: HashSet<Id>) {
        if let Ok(mut guard) = self.condemned.write() {
            *guard = condemned;
        }
    }

    /// Whether a prune record condemned `pack_id`.
    pub fn is_condemned(&self, pack_id: &Id) -> bool {
        self.condemned
            .read()
            .is_ok_and(|condemned| condemned.contains(pack_id))
    }

    /// How many uploads and downloads run at once.
    pub fn concurrency(&self) -> Concurrency {
        self.concurrency
    }

    /// The thread pool for blocking I/O fan-out (fetches and restored-file writes), sized by
    /// [`Concurrency::downloads`].
    ///
    /// # Panics
    /// If the operating system refuses to start threads.
    pub fn io_pool(&self) -> &rayon::ThreadPool {
        self.io_pool.get_or_init(|| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(self.concurrency.downloads)
                .thread_name(|index| format!("cairn-io-{index}"))
                .build()
                .expect("I/O thread pool starts")
        })
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The seed of this repository's chunker gear table: the one its config records, else the
    /// one derived from the master secret.
    pub fn chunker_seed(&self) -> u64 {
        self.config.chunker_seed.unwrap_or(self.keys.chunker_seed)
    }

    /// The working keys.
    pub fn keys(&self) -> &RepositoryKeys {
        &self.keys
    }

    /// The id of the key object this repository was opened with.
    pub fn key_id(&self) -> Id {
        self.key_id
    }

    /// The index cache.
    pub fn cache(&self) -> &IndexCache {
        &self.cache
    }

    /// This machine's record of the sessions it started in this repository.
    pub fn session_record(&self) -> &crate::repo::place::SessionRecord {
        &self.session_record
    }

    /// Keeps the record of the sessions this machine starts under `directory` (in
    /// `<directory>/<repository id>/`), also when the index cache lives in memory
    /// (`--no-cache`): without it, a session of an earlier boot of this machine is never
    /// proven gone.
    #[must_use]
    pub fn with_session_record_under(mut self, directory: &std::path::Path) -> Self {
        let directory = directory.join(self.id_hex());
        self.session_record = crate::repo::place::SessionRecord::in_directory(Some(&directory));
        self
    }

    /// The repository id as hex.
    pub fn id_hex(&self) -> String {
        hex::encode(self.config.repository_id)
    }

    /// Merges remote index objects the cache has not seen; drops and rebuilds the cache when an
    /// index object it merged has disappeared.
    ///
    /// # Errors
    /// Backend or cache failures (a damaged index object is reported, not an error).
    pub fn sync_index(&self) -> Result<SyncReport> {
        let state = self.load_prune_state()?;
        self.sync_index_with(&state)
    }

    /// [`Repository::sync_index`] with prune records the caller has just read (so they are not
    /// listed twice).
    ///
    /// # Errors
    /// Backend or cache failures (a damaged index object is reported, not an error).
    pub fn sync_index_with(
        &self,
        state: &crate::format::lifecycle::PruneState,
    ) -> Result<SyncReport> {
        self.sync_index_listed(state, &self.backend.list(INDEX_PREFIX)?)
    }

    /// [`Repository::sync_index_with`] with a listing of `index/` the caller made after
    /// registering its session (so it can overlap with reading the prune records).
    ///
    /// # Errors
    /// Backend or cache failures (a damaged index object is reported, not an error).
    pub fn sync_index_listed(
        &self,
        state: &crate::format::lifecycle::PruneState,
        remote: &[ObjectInfo],
    ) -> Result<SyncReport> {
        self.apply_prune_state(state)?;
        let remote_ids: HashSet<Id> = remote
            .iter()
            .filter_map(|info| id_from_name(&info.name))
            .collect();
        let mut merged = self.cache.merged_index_objects()?;
        let mut report = SyncReport::default();
        if !merged.is_subset(&remote_ids) {
            self.cache.clear()?;
            merged.clear();
            report.rebuilt = true;
        }
        let missing: Vec<&ObjectInfo> = remote
            .iter()
            .filter(|info| id_from_name(&info.name).is_some_and(|id| !merged.contains(&id)))
            .collect();
        // Objects are downloaded a few at a time and merged once about MERGE_ENTRIES entries are
        // decoded, so memory stays bounded however large the index is.
        let mut good: Vec<(Id, IndexObject)> = Vec::new();
        let mut entries = 0usize;
        for batch in missing.chunks(self.concurrency.downloads.max(2)) {
            let loaded: Vec<(String, Result<(Id, IndexObject)>)> = batch
                .par_iter()
                .map(|info| (info.name.clone(), self.load_index_object(&info.name)))
                .collect();
            for (name, outcome) in loaded {
                match outcome {
                    Ok(object) => {
                        entries += object
                            .1
                            .packs
                            .iter()
                            .map(|pack| pack.entries.len())
                            .sum::<usize>();
                        good.push(object);
                    }
                    Err(error) if error.kind() == crate::error::ErrorKind::BadData => {
                        report.damaged.push(name);
                    }
                    Err(error) => return Err(error),
                }
            }
            if entries >= MERGE_ENTRIES {
                report.merged += good.len();
                self.cache
                    .merge_preferring(&std::mem::take(&mut good), &state.condemned)?;
                entries = 0;
            }
        }
        if !good.is_empty() {
            report.merged += good.len();
            self.cache.merge_preferring(&good, &state.condemned)?;
        }
        Ok(report)
    }

    /// Downloads, verifies and decodes one index object.
    ///
    /// # Errors
    /// [`Error::Damaged`] when it does not verify, or backend failures.
    pub fn load_index_object(&self, name: &str) -> Result<(Id, IndexObject)> {
        let bytes = self.backend.get(name)?;
        let id = verify_name(name, &bytes)?;
        let index = IndexObject::decode(&self.keys.data_key, &bytes)
            .map_err(|error| Error::from_object(name, error))?;
        Ok((id, index))
    }

    /// Writes an index object for `packs` (which must already be stored) and merges it into the
    /// cache. Returns its id and stored size.
    ///
    /// # Errors
    /// Backend or cache failures.
    pub fn save_index(&self, packs: Vec<IndexedPack>) -> Result<(Id, u64)> {
        let index = IndexObject {
            superseded: Vec::new(),
            packs,
        };
        let bytes = index.encode(
            &self.keys.data_key,
            self.compression(),
            seal::random_nonce(),
        );
        let id = Id::of_stored_bytes(&bytes);
        let size = bytes.len() as u64;
        self.backend.put(
            &object_name(INDEX_PREFIX, &id),
            Bytes::from(bytes),
            PutMode::Overwrite,
        )?;
        self.cache.merge(&[(id, index)])?;
        Ok((id, size))
    }

    /// Finds packs that exist but are in no index (an interrupted backup leaves them), reads their
    /// trailers and indexes them, so their blobs are reused instead of uploaded again. Returns
    /// how many packs were recovered; packs whose trailer does not read are skipped (`repair
    /// index` names them).
    ///
    /// # Errors
    /// Backend or cache failures while listing or writing the index.
    pub fn index_orphan_packs(&self) -> Result<usize> {
        self.scan_orphan_packs().map(|scan| scan.recovered)
    }

    /// [`Repository::index_orphan_packs`], also telling whether every orphan's trailer was
    /// read (a trailer that could not be fetched leaves its pack for a later scan).
    ///
    /// # Errors
    /// Backend or cache failures while listing or writing the index.
    pub fn scan_orphan_packs(&self) -> Result<OrphanScan> {
        let known = self.cache.known_packs()?;
        let orphans: Vec<ObjectInfo> = self
            .backend
            .list(DATA_PREFIX)?
            .into_iter()
            .filter(|info| {
                id_from_name(&info.name)
                    .is_some_and(|id| !known.contains(&id) && !self.is_condemned(&id))
            })
            .collect();
        if orphans.is_empty() {
            return Ok(OrphanScan {
                recovered: 0,
                complete: true,
            });
        }
        let trailers: Vec<Result<IndexedPack>> = orphans
            .par_iter()
            .map(|info| self.read_pack_trailer(info))
            .collect();
        // A damaged trailer is for `repair index`; any other failure may pass next time.
        let complete = trailers.iter().all(|trailer| {
            trailer
                .as_ref()
                .err()
                .is_none_or(|error| error.kind() == crate::error::ErrorKind::BadData)
        });
        let recovered: Vec<IndexedPack> = trailers.into_iter().filter_map(Result::ok).collect();
        let count = recovered.len();
        if count > 0 {
            self.save_index(recovered)?;
        }
        Ok(OrphanScan {
            recovered: count,
            complete,
        })
    }

    /// Reads a pack's trailer with two ranged reads (footer, then trailer).
    ///
    /// # Errors
    /// [`Error::Damaged`] when the trailer does not verify, or backend failures.
    pub fn read_pack_trailer(&self, info: &ObjectInfo) -> Result<IndexedPack> {
        let damaged = |reason: String| Error::Damaged {
            object: info.name.clone(),
            reason,
        };
        let pack_id = id_from_name(&info.name).ok_or_else(|| damaged("not a pack name".into()))?;
        if info.size < (FOOTER_LEN + crate::format::codec::ObjectHeader::LEN) as u64 {
            return Err(damaged("shorter than a pack header and footer".into()));
        }
        let footer = self
            .backend
            .get_range(&info.name, info.size - FOOTER_LEN as u64..info.size)?;
        let footer: [u8; 4] = footer
            .as_ref()
            .try_into()
            .map_err(|_| damaged("short footer".into()))?;
        let range = pack::trailer_range(info.size, footer).map_err(|e| damaged(e.to_string()))?;
        let start = range.start;
        let sealed = self.backend.get_range(&info.name, range)?;
        let entries = pack::open_trailer(&self.keys.data_key, &sealed, start)
            .map_err(|error| damaged(error.to_string()))?;
        Ok(IndexedPack {
            pack_id,
            pack_length: info.size,
            entries,
        })
    }

    /// Where a blob is stored, according to the cache.
    ///
    /// # Errors
    /// Cache failures.
    pub fn locate_blob(&self, id: &Id) -> Result<Option<BlobLocation>> {
        self.cache.lookup(id)
    }

    /// Reads, authenticates and verifies one blob.
    ///
    /// # Errors
    /// [`Error::BlobMissing`] when no index lists it, [`Error::Damaged`] when it does not verify,
    /// or backend failures.
    pub fn read_blob(&self, blob_type: BlobType, id: &Id) -> Result<Vec<u8>> {
        let location = self
            .cache
            .lookup(id)?
            .filter(|location| location.entry.blob_type == blob_type)
            .ok_or(Error::BlobMissing {
                blob_type: blob_type.name(),
                id: *id,
            })?;
        // Trees are read by every incremental backup, restore and ls: keep their sealed bytes
        // (still encrypted, still authenticated on every read) in the local cache.
        if blob_type == BlobType::Tree
            && let Some(sealed) = self.cache.cached_tree(id)?
            && let Ok(plaintext) = self.open_blob_bytes(&location, &sealed)
        {
            return Ok(plaintext);
        }
        let name = pack_name(&location.pack_id);
        if blob_type == BlobType::Tree
            && let Some(length) = self.cache.pack_length(&location.pack_id)?
            && length <= WHOLE_TREE_PACK
        {
            // One request brings every tree of the pack into the cache: the next directories
            // of the walk are very likely in it.
            let pack = self.backend.get(&name)?;
            if let Ok(entries) = pack::read_pack_entries(&self.keys.data_key, &pack) {
                #[allow(clippy::cast_possible_truncation)]
                let trees: Vec<(Id, &[u8])> = entries
                    .iter()
                    .filter(|entry| entry.blob_type == BlobType::Tree)
                    .map(|entry| {
                        let range = entry.range();
                        (entry.id, &pack[range.start as usize..range.end as usize])
                    })
                    .collect();
                self.cache.cache_trees(&trees)?;
                if let Some((_, sealed)) = trees.iter().find(|(tree_id, _)| tree_id == id) {
                    return self.open_blob_bytes(&location, sealed);
                }
            }
        }
        let sealed = self.backend.get_range(&name, location.entry.range())?;
        let plaintext = self.open_blob_bytes(&location, &sealed)?;
        if blob_type == BlobType::Tree {
            self.cache.cache_tree(id, &sealed)?;
        }
        Ok(plaintext)
    }

    /// Authenticates sealed blob bytes read from its pack and checks the plaintext's id.
    ///
    /// # Errors
    /// [`Error::Damaged`] naming the blob and its pack.
    pub fn open_blob_bytes(&self, location: &BlobLocation, sealed: &[u8]) -> Result<Vec<u8>> {
        self.open_blob_with(location, sealed, <[u8]>::to_vec)
    }

    /// As [`Repository::open_blob_bytes`], lending the verified plaintext to `use_plaintext`
    /// instead of returning it (no allocation per blob: [`crate::crypto::seal::open_with`]).
    /// `use_plaintext` runs only when the blob authenticates and its plaintext matches its id.
    ///
    /// # Errors
    /// As [`Repository::open_blob_bytes`].
    pub fn open_blob_with<T>(
        &self,
        location: &BlobLocation,
        sealed: &[u8],
        use_plaintext: impl FnOnce(&[u8]) -> T,
    ) -> Result<T> {
        let entry = &location.entry;
        let damaged = |reason: &str| Error::Damaged {
            object: format!(
                "{} blob {} in pack {}",
                entry.blob_type.name(),
                entry.id,
                location.pack_id
            ),
            reason: reason.to_owned(),
        };
        pack::open_blob_with(&self.keys.data_key, entry, sealed, |plaintext| {
            if self.keys.blob_id(entry.blob_type, plaintext) == entry.id {
                Ok(use_plaintext(plaintext))
            } else {
                Err(damaged("plaintext does not match its id"))
            }
        })
        .map_err(|error| damaged(&error.to_string()))?
    }

    /// Reads and decodes a tree blob.
    ///
    /// # Errors
    /// As [`Repository::read_blob`], or [`Error::Damaged`] when it does not decode.
    pub fn load_tree(&self, id: &Id) -> Result<Tree> {
        self.load_tree_versioned(id).map(|(tree, _)| tree)
    }

    /// Reads and decodes a tree blob, with the encoding version it was written in (version 1
    /// trees record no extended attributes, owner names or hard links).
    ///
    /// # Errors
    /// As [`Repository::load_tree`].
    pub fn load_tree_versioned(&self, id: &Id) -> Result<(Tree, u16)> {
        let bytes = self.read_blob(BlobType::Tree, id)?;
        let tree = Tree::decode(&bytes).map_err(|error| Error::Damaged {
            object: format!("tree blob {id}"),
            reason: error.to_string(),
        })?;
        let version = Tree::encoded_version(&bytes).unwrap_or_default();
        Ok((tree, version))
    }

    /// Writes a snapshot object with create-only semantics; its id is the hash of its bytes.
    ///
    /// # Errors
    /// Backend failures.
    pub fn save_snapshot(&self, snapshot: &Snapshot) -> Result<Id> {
        let bytes = snapshot.encode(
            &self.keys.data_key,
            self.compression(),
            seal::random_nonce(),
        );
        let id = Id::of_stored_bytes(&bytes);
        let name = object_name(SNAPSHOTS_PREFIX, &id);
        self.backend
            .put(&name, Bytes::from(bytes.clone()), PutMode::Create)?;
        // The next backup of the same source takes this snapshot as its parent: keeping its
        // bytes saves that run a download (best effort: the snapshot is committed).
        let _ = self.cache.cache_snapshot(&name, &bytes);
        Ok(id)
    }

    /// Reads one snapshot object by name.
    ///
    /// # Errors
    /// [`Error::Damaged`] when it does not verify, or backend failures.
    pub fn load_snapshot(&self, name: &str) -> Result<(Id, Snapshot)> {
        let bytes = self.backend.get(name)?;
        let id = verify_name(name, &bytes)?;
        let snapshot = Snapshot::decode(&self.keys.data_key, &bytes)
            .map_err(|error| Error::from_object(name, error))?;
        Ok((id, snapshot))
    }

    /// Reads one snapshot object, from the local cache when it holds it (the bytes are checked
    /// against the name and authenticated either way). For listings; `check` reads the store.
    fn load_snapshot_cached(&self, name: &str) -> Result<(Id, Snapshot)> {
        if let Some(bytes) = self.cache.cached_snapshot(name)?
            && let Ok(id) = verify_name(name, &bytes)
            && let Ok(snapshot) = Snapshot::decode(&self.keys.data_key, &bytes)
        {
            return Ok((id, snapshot));
        }
        let bytes = self.backend.get(name)?;
        let id = verify_name(name, &bytes)?;
        let snapshot = Snapshot::decode(&self.keys.data_key, &bytes)
            .map_err(|error| Error::from_object(name, error))?;
        self.cache.cache_snapshot(name, &bytes)?;
        Ok((id, snapshot))
    }

    /// All snapshots, oldest first. Damaged snapshot objects are returned as errors beside them.
    ///
    /// # Errors
    /// Backend failures while listing.
    pub fn list_snapshots(&self) -> Result<SnapshotListing> {
        let names = self.backend.list(SNAPSHOTS_PREFIX)?;
        let loaded: Vec<Result<(Id, Snapshot)>> = names
            .par_iter()
            .filter(|info| id_from_name(&info.name).is_some())
            .map(|info| self.load_snapshot_cached(&info.name))
            .collect();
        let mut snapshots = Vec::new();
        let mut errors = Vec::new();
        for outcome in loaded {
            match outcome {
                Ok(pair) => snapshots.push(pair),
                Err(error) => errors.push(error),
            }
        }
        snapshots.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok((snapshots, errors))
    }

    /// Resolves `latest`, a full id or a unique id prefix to a snapshot.
    ///
    /// # Errors
    /// [`Error::SnapshotNotFound`], [`Error::AmbiguousSnapshot`], or backend failures.
    pub fn resolve_snapshot(&self, spec: &str) -> Result<(Id, Snapshot)> {
        if spec == "latest" {
            let (snapshots, _) = self.list_snapshots()?;
            return snapshots
                .into_iter()
                .last()
                .ok_or_else(|| Error::SnapshotNotFound(spec.to_owned()));
        }
        let lowered = spec.to_ascii_lowercase();
        if lowered.is_empty() || !lowered.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::SnapshotNotFound(spec.to_owned()));
        }
        let names = self.backend.list(SNAPSHOTS_PREFIX)?;
        let matches: Vec<&ObjectInfo> = names
            .iter()
            .filter(|info| {
                id_from_name(&info.name).is_some_and(|id| id.to_hex().starts_with(&lowered))
            })
            .collect();
        match matches.as_slice() {
            [] => Err(Error::SnapshotNotFound(spec.to_owned())),
            [one] => self.load_snapshot_cached(&one.name),
            _ => Err(Error::AmbiguousSnapshot(spec.to_owned())),
        }
    }

    /// Finds the node at `path` (components separated by `/`, leading `/` optional) below the
    /// tree `root`. The empty path or `/` yields `None` (the root itself).
    ///
    /// # Errors
    /// [`Error::PathNotFound`], or failures reading trees.
    pub fn find_node(&self, root: &Id, path: &str) -> Result<Option<Node>> {
        let components: Vec<&str> = path.split('/').filter(|part| !part.is_empty()).collect();
        let mut tree_id = *root;
        let mut found = None;
        for (position, component) in components.iter().enumerate() {
            let tree = self.load_tree(&tree_id)?;
            let node = tree
                .find(component.as_bytes())
                .cloned()
                .ok_or_else(|| Error::PathNotFound(path.to_owned()))?;
            if position + 1 < components.len() {
                match &node.kind {
                    NodeKind::Directory { subtree } => tree_id = *subtree,
                    _ => return Err(Error::PathNotFound(path.to_owned())),
                }
            }
            found = Some(node);
        }
        Ok(found)
    }
}
