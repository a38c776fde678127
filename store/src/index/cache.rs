//! The local index cache: a redb database mapping blob ids to pack locations, mirroring the
//! remote index objects it has merged. A cache only: it can be deleted at any time and nothing is
//! ever deleted from the repository on its word alone.
//!
//! It also remembers when `check` last verified each pack (for the rotating sweep): local
//! history, not index, so a rebuild keeps it and losing it only makes the next sweep start over.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::crypto::id::{BlobType, Id};
use crate::error::{Error, Result};
use crate::format::index::IndexObject;
use crate::format::pack::PackEntry;
use crate::policy::sweep::PackVerification;

/// Blob id → `pack id (32) || type (1) || offset u32 || length u32 || raw length u32`.
const BLOBS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("blobs");
/// Remote index objects merged into this cache.
const INDEX_OBJECTS: TableDefinition<&[u8; 32], u8> = TableDefinition::new("index_objects");
/// Packs known from merged index objects → pack length.
const PACKS: TableDefinition<&[u8; 32], u64> = TableDefinition::new("packs");
/// Tree blob id → its sealed bytes as stored in its pack (encrypted; authenticated on use).
const TREES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("trees");
/// Snapshot object name → its stored bytes (encrypted; its name is checked on use).
const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");

/// Pack id → `(sweep, unix seconds)` of the last `check` that downloaded and verified it whole.
const PACK_VERIFICATIONS: TableDefinition<&[u8; 32], (u64, u64)> =
    TableDefinition::new("pack_verifications");

/// `cairn copy`'s memory of what it copied: `kind (1) || source repository id (16) || source id
/// (32)` → the destination ids (concatenated 32-byte ids; see [`CopyMapKind`]). Only a cache:
/// every entry is confirmed against the destination's index before use, and `clear` keeps it.
const COPY_MAP: TableDefinition<&[u8], &[u8]> = TableDefinition::new("copy_map");

/// What an entry of the copy map maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMapKind {
    /// A source tree id → the destination tree id (one id).
    Tree = 0,
    /// A source file content hash → the destination content hash followed by the destination
    /// chunk ids in order.
    FileContent = 1,
}

/// Backup sessions whose unindexed packs, if any, an orphan scan has already adopted (or that
/// ended after indexing every pack they wrote): session id → 1. A listing of `sessions/` that
/// names only such sessions is no reason to list `data/` again (FORMAT.md section 14, backup
/// step 1). Cleared with the index, so a rebuilt cache scans once.
const SETTLED_SESSIONS: TableDefinition<&[u8; 16], u8> = TableDefinition::new("settled_sessions");

/// Small named values: `prune_generation` → the newest prune record the cache reflects;
/// `verification_sweep` → the number of the last sweep recorded in [`PACK_VERIFICATIONS`].
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Default memory redb may use for its page cache: enough for the hot part of the index, and a
/// fixed bound whatever the repository size (see [`set_cache_memory`]).
pub const DEFAULT_CACHE_MEMORY: usize = 32 * 1024 * 1024;

/// The page-cache budget of caches opened from now on.
static CACHE_MEMORY: AtomicUsize = AtomicUsize::new(DEFAULT_CACHE_MEMORY);

/// Sets the memory (bytes) redb may use as page cache for index caches opened afterwards (one
/// budget per process, chosen once at start-up by the binary; at least 1 MiB). The index lives
/// on disk, so this bounds the process's memory whatever the repository size; a larger budget
/// only saves disk reads.
pub fn set_cache_memory(bytes: usize) {
    CACHE_MEMORY.store(bytes.max(1024 * 1024), Ordering::Relaxed);
}

fn cache_memory() -> usize {
    CACHE_MEMORY.load(Ordering::Relaxed)
}

/// Where a blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    /// The pack holding it.
    pub pack_id: Id,
    /// Its entry in that pack.
    pub entry: PackEntry,
}

impl BlobLocation {
    fn encode(&self) -> [u8; 45] {
        let mut out = [0u8; 45];
        out[..32].copy_from_slice(&self.pack_id.0);
        out[32] = self.entry.blob_type.to_byte();
        out[33..37].copy_from_slice(&self.entry.offset.to_le_bytes());
        out[37..41].copy_from_slice(&self.entry.length.to_le_bytes());
        out[41..45].copy_from_slice(&self.entry.raw_length.to_le_bytes());
        out
    }

    fn decode(id: Id, bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 45 {
            return None;
        }
        let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or([0; 4]));
        Some(Self {
            pack_id: Id(bytes[..32].try_into().ok()?),
            entry: PackEntry {
                blob_type: BlobType::from_byte(bytes[32])?,
                id,
                offset: word(33),
                length: word(37),
                raw_length: word(41),
            },
        })
    }
}

/// Blob locations as one read transaction sees them ([`IndexCache::blob_reader`]).
pub struct BlobReader<'cache> {
    cache: &'cache IndexCache,
    table: redb::ReadOnlyTable<&'static [u8; 32], &'static [u8]>,
}

impl BlobReader<'_> {
    /// Looks up many blobs; `None` for a blob the cache does not know.
    ///
    /// # Errors
    /// [`Error::Cache`] on a database failure.
    pub fn lookup_many(&self, ids: &[Id]) -> Result<Vec<Option<BlobLocation>>> {
        ids.iter()
            .map(|id| {
                let value = self.table.get(&id.0).map_err(self.cache.fail())?;
                Ok(value.and_then(|value| BlobLocation::decode(*id, value.value())))
            })
            .collect()
    }
}

/// The redb-backed cache.
#[derive(Debug)]
pub struct IndexCache {
    database: Database,
    path: PathBuf,
    /// A file that outlives the process (see [`IndexCache::is_persistent`]).
    persistent: bool,
    /// A temporary file, removed on drop.
    temporary: bool,
    /// What opening had to do about a damaged or unusable cache file (one line for the user).
    notice: Option<String>,
}

/// Why a cache file could not be used as it is.
enum OpenFailure {
    /// Another process holds it: use another cache for this run, leave the file alone.
    Busy,
    /// It is damaged or unwritable: move it aside and start a new one.
    Damaged(String),
}

fn cache_error(path: &Path, error: impl std::fmt::Display) -> Error {
    Error::Cache {
        path: path.to_owned(),
        reason: error.to_string(),
    }
}

impl IndexCache {
    /// Maps a redb error to [`Error::Cache`] naming this cache's file.
    fn fail<E: std::fmt::Display>(&self) -> impl Fn(E) -> Error + '_ {
        move |error| cache_error(&self.path, error)
    }

    /// Opens (creating if needed) the cache file at `path`.
    ///
    /// # Errors
    /// [`Error::Cache`] when the file cannot be created or opened (for example another process
    /// holds it).
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|error| Error::local("create cache directory", parent, error))?;
        }
        let database = Database::builder()
            .set_cache_size(cache_memory())
            .create(path)
            .map_err(|error| cache_error(path, error))?;
        let cache = Self {
            database,
            path: path.to_owned(),
            persistent: true,
            temporary: false,
            notice: None,
        };
        cache.ensure_tables()?;
        Ok(cache)
    }

    /// Opens the cache file at `path` after checking it: a file that is damaged (truncated,
    /// zero-filled, not a redb database, tables that do not read) or cannot be written is moved
    /// aside to `<path>.damaged` (replacing an older one) and a new, empty cache is created in
    /// its place, which the next index sync fills; [`IndexCache::notice`] says so once.
    ///
    /// `Ok(None)` when another process holds the file (it is left alone).
    ///
    /// # Errors
    /// [`Error::LocalIo`] or [`Error::Cache`] when the damaged file cannot be moved aside or a
    /// new one cannot be created.
    pub fn open_healing(path: &Path) -> Result<Option<Self>> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|error| Error::local("create cache directory", parent, error))?;
        }
        let reason = match Self::open_checked(path) {
            Ok(cache) => return Ok(Some(cache)),
            Err(OpenFailure::Busy) => return Ok(None),
            Err(OpenFailure::Damaged(reason)) => reason,
        };
        let aside = Self::move_aside(path)?;
        let mut cache = Self::open(path)?;
        cache.notice = Some(format!(
            "the local index cache {} was damaged or unwritable ({reason}): moved to {} and \
             rebuilt from the repository",
            path.display(),
            aside.display()
        ));
        Ok(Some(cache))
    }

    /// Moves a damaged cache file to `<path>.damaged` (replacing an older one) and returns that
    /// path; the next open creates a new file.
    ///
    /// # Errors
    /// [`Error::LocalIo`] when the file cannot be renamed.
    pub fn move_aside(path: &Path) -> Result<PathBuf> {
        let mut aside = path.as_os_str().to_owned();
        aside.push(".damaged");
        let aside = PathBuf::from(aside);
        std::fs::rename(path, &aside)
            .map_err(|error| Error::local("move the damaged cache aside", path, error))?;
        Ok(aside)
    }

    /// Opens the file and reads a little of every table: redb checks page checksums on read,
    /// so a damaged file fails here rather than in the middle of a command.
    fn open_checked(path: &Path) -> std::result::Result<Self, OpenFailure> {
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Database::builder()
                .set_cache_size(cache_memory())
                .create(path)
        }));
        let database = match opened {
            Err(_) => return Err(OpenFailure::Damaged("redb could not read it".into())),
            Ok(Err(
                redb::DatabaseError::DatabaseAlreadyOpen
                | redb::DatabaseError::LockProtocolMismatch,
            )) => return Err(OpenFailure::Busy),
            Ok(Err(error)) => return Err(OpenFailure::Damaged(error.to_string())),
            Ok(Ok(database)) => database,
        };
        let cache = Self {
            database,
            path: path.to_owned(),
            persistent: true,
            temporary: false,
            notice: None,
        };
        let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            cache.ensure_tables()?;
            cache.self_check()
        }));
        match checked {
            Ok(Ok(())) => Ok(cache),
            Ok(Err(error)) => Err(OpenFailure::Damaged(error.to_string())),
            Err(_) => Err(OpenFailure::Damaged("redb could not read it".into())),
        }
    }

    /// Reads the first and last entry of every table and the prune generation.
    fn self_check(&self) -> Result<()> {
        let transaction = self.database.begin_read().map_err(self.fail())?;
        let blobs = transaction.open_table(BLOBS).map_err(self.fail())?;
        blobs.first().map_err(self.fail())?;
        blobs.last().map_err(self.fail())?;
        let index_objects = transaction.open_table(INDEX_OBJECTS).map_err(self.fail())?;
        index_objects.first().map_err(self.fail())?;
        let packs = transaction.open_table(PACKS).map_err(self.fail())?;
        packs.first().map_err(self.fail())?;
        let trees = transaction.open_table(TREES).map_err(self.fail())?;
        trees.first().map_err(self.fail())?;
        trees.last().map_err(self.fail())?;
        let snapshots = transaction.open_table(SNAPSHOTS).map_err(self.fail())?;
        snapshots.first().map_err(self.fail())?;
        let verifications = transaction
            .open_table(PACK_VERIFICATIONS)
            .map_err(self.fail())?;
        verifications.first().map_err(self.fail())?;
        let meta = transaction.open_table(META).map_err(self.fail())?;
        meta.get("prune_generation").map_err(self.fail())?;
        Ok(())
    }

    /// What opening had to do about a damaged or unusable cache file, for the caller to tell
    /// the user once; `None` when the file was fine.
    pub fn notice(&self) -> Option<&str> {
        self.notice.as_deref()
    }

    /// Sets the notice (a fallback cache saying why the usual file was not used).
    #[must_use]
    pub fn with_notice(mut self, notice: String) -> Self {
        self.notice = Some(notice);
        self
    }

    /// The cache file's path (`<memory>` for a cache in memory).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A cache in a new temporary file in `directory`, removed when the cache is dropped: for
    /// `--no-cache` and when another process holds the cache file. Unlike a cache in memory, its
    /// memory use does not grow with the repository.
    ///
    /// # Errors
    /// [`Error::Cache`] when the file cannot be created.
    pub fn temporary(directory: &Path) -> Result<Self> {
        let path = super::temporary_file(directory, "index-temporary")?;
        let database = Database::builder()
            .set_cache_size(cache_memory())
            .create(&path)
            .map_err(|error| cache_error(&path, error))?;
        let cache = Self {
            database,
            path,
            persistent: false,
            temporary: true,
            notice: None,
        };
        cache.ensure_tables()?;
        Ok(cache)
    }

    /// The directory of the cache file, or `None` for a cache in memory.
    pub fn directory(&self) -> Option<&Path> {
        if self.path == Path::new("<memory>") {
            None
        } else {
            self.path.parent()
        }
    }

    /// A cache that lives in memory only (tests, or when the cache file is busy).
    ///
    /// # Errors
    /// [`Error::Cache`] if redb cannot create it.
    pub fn in_memory() -> Result<Self> {
        let path = PathBuf::from("<memory>");
        let database = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|error| cache_error(&path, error))?;
        let cache = Self {
            database,
            path,
            persistent: false,
            temporary: false,
            notice: None,
        };
        cache.ensure_tables()?;
        Ok(cache)
    }

    fn ensure_tables(&self) -> Result<()> {
        let transaction = self.database.begin_write().map_err(self.fail())?;
        transaction.open_table(BLOBS).map_err(self.fail())?;
        transaction.open_table(INDEX_OBJECTS).map_err(self.fail())?;
        transaction.open_table(PACKS).map_err(self.fail())?;
        transaction.open_table(TREES).map_err(self.fail())?;
        transaction.open_table(SNAPSHOTS).map_err(self.fail())?;
        transaction.open_table(META).map_err(self.fail())?;
        transaction
            .open_table(PACK_VERIFICATIONS)
            .map_err(self.fail())?;
        transaction.open_table(COPY_MAP).map_err(self.fail())?;
        transaction
            .open_table(SETTLED_SESSIONS)
            .map_err(self.fail())?;
        transaction.commit().map_err(self.fail())
    }

    fn copy_map_key(kind: CopyMapKind, source_repository: &[u8; 16], source: &Id) -> [u8; 49] {
        let mut key = [0u8; 49];
        key[0] = kind as u8;
        key[1..17].copy_from_slice(source_repository);
        key[17..].copy_from_slice(&source.0);
        key
    }

    /// The destination ids `cairn copy` recorded for `source` of the source repository, if any
    /// (unconfirmed: the caller checks the destination index still holds them).
    ///
    /// # Errors
    /// [`Error::Cache`] on a database failure.
    pub fn copied(
        &self,
        kind: CopyMapKind,
        source_repository: &[u8; 16],
        source: &Id,
    ) -> Result<Option<Vec<Id>>> {
        let transaction = self.database.begin_read().map_err(self.fail())?;
        let table = transaction.open_table(COPY_MAP).map_err(self.fail())?;
        let key = Self::copy_map_key(kind, source_repository, source);
        let value = table.get(key.as_slice()).map_err(self.fail())?;
        Ok(value.and_then(|value| {
            let bytes = value.value();
            (bytes.len() % 32 == 0).then(|| {
                bytes
                    .chunks_exact(32)
                    .map(|id| Id(id.try_into().unwrap_or([0; 32])))
                    .collect()
            })
        }))
    }

    /// Records what `source` of the source repository became in this repository (written
    /// without fsync: losing entries only makes the next copy read the source again).
    ///
    /// # Errors
    /// [`Error::Cache`] on a database failure.
    pub fn record_copied(
        &self,
        kind: CopyMapKind,
        source_repository: &[u8; 16],
        source: &Id,
        destination: &[Id],
    ) -> Result<()> {
        let mut transaction = self.database.begin_write().map_err(self.fail())?;
        transaction
            .set_durability(redb::Durability::None)
            .map_err(self.fail())?;
        let value: Vec<u8> = destination.iter().flat_map(|id| id.0).collect();
        transaction
            .open_table(COPY_MAP)
            .map_err(self.fail())?
            .insert(
                Self::copy_map_key(kind, source_repository, source).as_slice(),
                value.as_slice(),
            )
            .map_err(self.fail())?;
        transaction.commit().map_err(self.fail())
    }

    /// Whether this cache is a file that outlives the process (not [`IndexCache::in_memory`]).
    pub fn is_persistent(&self) -> bool {
        self.persistent
    }

    /// When `check` last verified each pack it remembers (packs since deleted included).
    ///
    /// # Errors
    /// [`Error::Cache`] on a database failure.
    pub fn pack_verifications(&self) -> Result<HashMap<Id, PackVerification>> {
        let transaction = self.database.begin_read().map_err(self.fail())?;
        let table = transaction
            .open_table(PACK_VERIFICATIONS)
            .map_err(self.fail())?;
        let mut out = HashMap::new();
        for row in table.iter().map_err(self.fail())? {
            let (key, value) = row.map_err(self.fail())?;
            let (sweep, unix_seconds) = value.value();
            out.insert(
                Id(*key.value()),
                PackVerification {
                    sweep,
                    unix_seconds,
                },
            );
        }
        Ok(out)
    }

    /// Records that `verified` packs were downloaded and verified at `unix_seconds`, as the next
    /// sweep, and forgets remembered packs not in `existing` (deleted since). Returns the sweep.
    ///
    /// # Errors
    /// [`Error::Cache`] on a database failure.
    pub fn record_pack_verifications(
        &self,
        verified: &[Id],
        unix_seconds: u64,
        existing: &HashSet<Id>,
    ) -> Result<u64> {
        let transaction = self.database.begin_write().map_err(self.fail())?;
        let sweep;
        {
            let mut meta = transaction.open_table(META).map_err(self.fail())?;
            let last = meta
                .get("verification_sweep")
                .map_err(self.fail())?
                .map_or(0, |value| value.value());
            sweep = last + 1;
            meta.insert("verification_sweep", sweep)
                .map_err(self.fail())?;
            let mut table = transaction
                .open_table(PACK_VERIFICATIONS)
                .map_err(self.fail())?;
            table
                .retain(|pack, _| existing.contains(&Id(*pack)))
                .map_err(self.fail())?;
            for pack in verified {
                table
                    .insert(&pack.0, (sweep, unix_seconds))
                    .map_err(self.fail())?;
            }
        }
        transaction.commit().map_err(self.fail())?;
        Ok(sweep)
    }

    /// The newest prune generation this cache's contents reflect (0 before any prune).
    ///
    /// # Errors
    /// [`Error::Cache`] on a database failure.
    pub fn prune_generation(&self) -> Result<u64> {
        let transaction = self.database.begin_read().map_err(self.fail())?;
        let table = transaction.open_table(META).map_err(self.fail())?;
        let value = table.get("prune_generation").map_err(self.fail())?;
        Ok(value.map_or(0, |value| value.value()))
    }

    /// Records the prune generation the cache now reflects.
    ///
    /// # Errors
    /// [`Error::Cache`] on a database failure.
    pub fn set_prune_generation(&self, generation: u64) -> Result<()> {
        let transaction = self.database.begin_write().map_err(self.fail())?;
        transaction
            .open_table(META)
            .map_err(self.fail())?
            .insert("prune_generation", generation)
            .map_err(self.fail())?;
        transaction.commit().map_err(self.fail())
    }

    /// The index objects merged so far.
    ///
    /// # Errors
    /// [`Error::Cache`] on a database failure.
    pub fn merged_index_objects(&self) -> Result<HashSet<Id>> {
        let transaction = self.database.begin_read().map_err(self.fail())?;
        let table = transaction.open_table(INDEX_OBJECTS).map_err(self.fail())?;
        let mut out = HashSet::new();
        for row in table.iter().map_err(self.fail())? {
            let (key, _) = row.map_err(self.fail())?;
            out.insert(Id(*key.value()));
        }
        Ok(out)
    }

    /// The packs known from merged index objects, with their lengths.
    ///
    /// # Errors
    /// [`Error::Cache`] on a database failure.
    pub fn known_packs(&self) -> Result<HashSet<Id>> {
        let transaction = self.database.begin_read().map_err(self.fail())?;
        let table = transaction.open_table(PACKS).map_err(self.fail())?;
        let mut out = HashSet::new();
        for row in table.iter().map_err(self.fail())? {
            let (key, _) = row.map_err(self.fail())?;
            out.insert(Id(*key.value()));
        }
        Ok(out)
    }

    /// Merges the index objects `index_id` → `index` in one transaction.
    ///
    /// # Errors
    /// [`Error::Cache`] on a database failure.
    pub fn merge(&self, objects: &[(Id, IndexObject)]) -> Result<()> {
        self.merge_preferring(objects, &HashSet::new())
    }

    /// Like [`IndexCache::merge`], but a location in one of the `condemned` packs never replaces
    /// a location the cache already has (it is only recorded for blobs found nowhere else, so
    /// they stay readable until the pack is deleted).
    ///
    /// # Errors
    /// [`Error::Cache`] on a database failure.
    pub fn merge_preferring(
        &self,
        objects: &[(Id, IndexObject)],
        condemned: &HashSet<Id>,
    ) -> Result<()> {
        let transaction = self.database.begin_write().map_err(self.fail())?;
        {
            let mut blobs = transaction.open_table(BLOBS).map_err(self.fail())?;
            let mut packs = transaction.open_table(PACKS).map_err(self.fail())?;
            let mut merged = transaction.open_table(INDEX_OBJECTS).map_err(self.fail())?;
            // Blob ids are random: inserting them in key order touches each B-tree page once per
            // merge instead of once per entry, which matters once the table outgrows the page
            // cache (1M entries: 72 s unsorted, a few seconds sorted).
            let mut locations: Vec<(BlobLocation, bool)> = Vec::new();
            for (index_id, index) in objects {
                for pack in &index.packs {
                    packs
                        .insert(&pack.pack_id.0, pack.pack_length)
                        .map_err(self.fail())?;
                    let second_choice = condemned.contains(&pack.pack_id);
                    locations.extend(pack.entries.iter().map(|entry| {
                        let location = BlobLocation {
                            pack_id: pack.pack_id,
                            entry: *entry,
                        };
                        (location, second_choice)
                    }));
                }
                merged.insert(&index_id.0, 1).map_err(self.fail())?;
            }
            // Stable: of two locations of one blob, the later one still wins, as before.
            locations.sort_by_key(|(location, _)| location.entry.id.0);
            for (location, second_choice) in locations {
                let id = &location.entry.id.0;
                if second_choice && blobs.get(id).map_err(self.fail())?.is_some() {
                    continue;
                }
                blobs
                    .insert(id, location.encode().as_slice())
                    .map_err(self.fail())?;
            }
        }
        transaction.commit().map_err(self.fail())
    }

    /// Removes everything (before a rebuild).
    ///
    /// # Errors
    /// [`Error::Cache`] on a database failure.
    pub fn clear(&self) -> Result<()> {
        let transaction = self.database.begin_write().map_err(self.fail())?;
        transaction.delete_table(BLOBS).map_err(self.fail())?;
        transaction.delete_table(PACKS).map_err(self.fail())?;
        transaction
            .delete_table(INDEX_OBJECTS)
            .map_err(self.fail())?;
        transaction.delete_table(TREES).map_err(self.fail())?;
        transaction
            .delete_table(SETTLED_SESSIONS)
            .map_err(self.fail())?;
        transaction.commit().map_err(self.fail())?;
        self.ensure_tables()
    }

    /// The sessions recorded by [`IndexCache::set_settled_sessions`] (raw 16-byte ids).
    ///
    /// # Errors
    /// [`Error::Cache`] on a database failure.
    pub fn settled_sessions(&self) -> Result<BTreeSet<[u8; 16]>> {
        let transaction = self.database.begin_read().map_err(self.fail())?;
        let table = transaction
            .open_table(SETTLED_SESSIONS)
            .map_err(self.fail())?;
        let mut out = BTreeSet::new();
        for row in table.iter().map_err(self.fail())? {
            let (key, _) = row.map_err(self.fail())?;
            out.insert(*key.value());
        }
        Ok(out)
    }

    /// Replaces the settled sessions with `sessions` (raw 16-byte ids).
    ///
    /// # Errors
    /// [`Error::Cache`] on a database failure.
    pub fn set_settled_sessions(&self, sessions: &BTreeSet<[u8; 16]>) -> Result<()> {
        let mut transaction = self.database.begin_write().map_err(self.fail())?;
        // Settling is permanent, so a lost write only leaves an older, still true set.
        transaction
            .set_durability(redb::Durability::None)
            .map_err(self.fail())?;
        transaction
            .delete_table(SETTLED_SESSIONS)
            .map_err(self.fail())?;
        {
            let mut table = transaction
                .open_table(SETTLED_SESSIONS)
                .map_err(self.fail())?;
            for session in sessions {
                table.insert(session, 1).map_err(self.fail())?;
            }
        }
        transaction.commit().map_err(self.fail())
    }

    /// Looks up many blobs in one read transaction.
    ///
    /// # Errors
    /// [`Error::Cache`] on a database failure.
    pub fn lookup_many(&self, ids: &[Id]) -> Result<Vec<Option<BlobLocation>>> {
        self.blob_reader()?.lookup_many(ids)
    }

    /// A read transaction on the blob locations, for many [`BlobReader::lookup_many`] calls
    /// that need not see what is written meanwhile (each transaction costs a database lock
    /// and a table lookup). It sees the cache as it was when made; while it lives, pages that
    /// later writes free are not reused, so hold it for a bounded stretch of work.
    ///
    /// # Errors
    /// [`Error::Cache`] on a database failure.
    pub fn blob_reader(&self) -> Result<BlobReader<'_>> {
        let transaction = self.database.begin_read().map_err(self.fail())?;
        let table = transaction.open_table(BLOBS).map_err(self.fail())?;
        Ok(BlobReader { cache: self, table })
    }

    /// The sealed bytes of a tree blob kept by [`IndexCache::cache_tree`], if any.
    ///
    /// # Errors
    /// [`Error::Cache`] on a database failure.
    pub fn cached_tree(&self, id: &Id) -> Result<Option<Vec<u8>>> {
        let transaction = self.database.begin_read().map_err(self.fail())?;
        let table = transaction.open_table(TREES).map_err(self.fail())?;
        let value = table.get(&id.0).map_err(self.fail())?;
        Ok(value.map(|value| value.value().to_vec()))
    }

    /// The length of a pack listed by a merged index object.
    ///
    /// # Errors
    /// [`Error::Cache`] on a database failure.
    pub fn pack_length(&self, pack_id: &Id) -> Result<Option<u64>> {
        let transaction = self.database.begin_read().map_err(self.fail())?;
        let table = transaction.open_table(PACKS).map_err(self.fail())?;
        let value = table.get(&pack_id.0).map_err(self.fail())?;
        Ok(value.map(|value| value.value()))
    }

    /// Keeps the sealed bytes of many tree blobs in one transaction.
    ///
    /// # Errors
    /// [`Error::Cache`] on a database failure.
    pub fn cache_trees(&self, trees: &[(Id, &[u8])]) -> Result<()> {
        let mut transaction = self.database.begin_write().map_err(self.fail())?;
        transaction
            .set_durability(redb::Durability::None)
            .map_err(self.fail())?;
        {
            let mut table = transaction.open_table(TREES).map_err(self.fail())?;
            for (id, sealed) in trees {
                table.insert(&id.0, *sealed).map_err(self.fail())?;
            }
        }
        transaction.commit().map_err(self.fail())
    }

    /// Keeps the sealed bytes of a tree blob (trees never change: ids are content hashes).
    ///
    /// # Errors
    /// [`Error::Cache`] on a database failure.
    pub fn cache_tree(&self, id: &Id, sealed: &[u8]) -> Result<()> {
        let mut transaction = self.database.begin_write().map_err(self.fail())?;
        // No fsync per tree: the next durable commit (an index merge, or closing the cache)
        // persists it, and a crash before that only loses cache entries.
        transaction
            .set_durability(redb::Durability::None)
            .map_err(self.fail())?;
        transaction
            .open_table(TREES)
            .map_err(self.fail())?
            .insert(&id.0, sealed)
            .map_err(self.fail())?;
        transaction.commit().map_err(self.fail())
    }

    /// The stored bytes of a snapshot object kept by [`IndexCache::cache_snapshot`], if any.
    ///
    /// # Errors
    /// [`Error::Cache`] on a database failure.
    pub fn cached_snapshot(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let transaction = self.database.begin_read().map_err(self.fail())?;
        let table = transaction.open_table(SNAPSHOTS).map_err(self.fail())?;
        let value = table.get(name).map_err(self.fail())?;
        Ok(value.map(|value| value.value().to_vec()))
    }

    /// Keeps the bytes of a snapshot object (objects never change; names are content hashes).
    ///
    /// # Errors
    /// [`Error::Cache`] on a database failure.
    pub fn cache_snapshot(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let mut transaction = self.database.begin_write().map_err(self.fail())?;
        transaction
            .set_durability(redb::Durability::None)
            .map_err(self.fail())?;
        transaction
            .open_table(SNAPSHOTS)
            .map_err(self.fail())?
            .insert(name, bytes)
            .map_err(self.fail())?;
        transaction.commit().map_err(self.fail())
    }

    /// Drops the cached bytes of deleted snapshot objects, in one transaction (names not cached
    /// are skipped).
    ///
    /// # Errors
    /// [`Error::Cache`] on a database failure.
    pub fn forget_snapshots(&self, names: &[String]) -> Result<()> {
        let transaction = self.database.begin_write().map_err(self.fail())?;
        {
            let mut table = transaction.open_table(SNAPSHOTS).map_err(self.fail())?;
            for name in names {
                table.remove(name.as_str()).map_err(self.fail())?;
            }
        }
        transaction.commit().map_err(self.fail())
    }

    /// Looks up one blob.
    ///
    /// # Errors
    /// [`Error::Cache`] on a database failure.
    pub fn lookup(&self, id: &Id) -> Result<Option<BlobLocation>> {
        Ok(self.lookup_many(std::slice::from_ref(id))?.pop().flatten())
    }
}

impl Drop for IndexCache {
    /// Persists cache entries written without durability (trees) with one durable commit, or
    /// removes a temporary cache's file (unlinking an open file is fine on Unix).
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_file(&self.path);
            return;
        }
        if let Ok(transaction) = self.database.begin_write() {
            let _ = transaction.commit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temporary_cache_works_and_removes_its_file() {
        let directory = tempfile::tempdir().unwrap();
        let cache = IndexCache::temporary(directory.path()).unwrap();
        assert!(!cache.is_persistent());
        assert_eq!(cache.directory(), Some(directory.path()));
        cache.set_prune_generation(7).unwrap();
        assert_eq!(cache.prune_generation().unwrap(), 7);
        assert_eq!(std::fs::read_dir(directory.path()).unwrap().count(), 1);
        drop(cache);
        assert_eq!(std::fs::read_dir(directory.path()).unwrap().count(), 0);
    }

    #[test]
    fn verifications_are_numbered_kept_across_clear_and_forget_deleted_packs() {
        let cache = IndexCache::in_memory().unwrap();
        assert!(!cache.is_persistent());
        assert!(cache.pack_verifications().unwrap().is_empty());
        let (one, two, three) = (Id([1; 32]), Id([2; 32]), Id([3; 32]));
        let all: HashSet<Id> = [one, two, three].into_iter().collect();
        assert_eq!(
            cache
                .record_pack_verifications(&[one, two], 100, &all)
                .unwrap(),
            1
        );
        cache.clear().unwrap();
        let only_two_and_three: HashSet<Id> = [two, three].into_iter().collect();
        assert_eq!(
            cache
                .record_pack_verifications(&[three], 90, &only_two_and_three)
                .unwrap(),
            2
        );
        let remembered = cache.pack_verifications().unwrap();
        assert_eq!(remembered.len(), 2, "the deleted pack is forgotten");
        assert_eq!(
            remembered[&two],
            PackVerification {
                sweep: 1,
                unix_seconds: 100
            }
        );
        assert_eq!(
            remembered[&three],
            PackVerification {
                sweep: 2,
                unix_seconds: 90
            }
        );
    }
}
