//! The backup use case: walk sources (absolute paths, or one stream), chunk and save their
//! content, build and save trees bottom-up, then commit a snapshot object last.
//!
//! Never prints: warnings about unreadable source entries reach the caller through
//! [`BackupProgress`] and the outcome.
//!
//! Entries left out by [`BackupOptions::excludes`] are not read and not in the snapshot; with
//! [`BackupOptions::one_file_system`] a directory on another file system than the path given is
//! recorded empty (see [`crate::policy::exclude`]). A stream source ends well only if its reader returns
//! end-of-file: a reader that fails, also at the very end (a command that exited non-zero), makes
//! the backup return that error without writing a snapshot.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::Metadata;
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use cairn_chunker::Chunker;
use rayon::prelude::*;

use crate::backend::RequestStats;
use crate::crypto::id::{BlobType, Id};
use crate::error::{Error, Result};
use crate::format::snapshot::{Snapshot, Source, Summary};
use crate::format::tree::{
    DeviceKind, EXTENSION_SPARSE, EXTENSION_XATTRS, Node, NodeKind, Timestamp, Tree,
};
use crate::index::cache::{BlobLocation, BlobReader};
use crate::ops::fsmeta::{self, OwnerNameCache};
use crate::ops::longpath;
use crate::policy::dedup_hostile::{self, ContentCounts, DedupHostile};
use crate::policy::exclude::{
    CACHEDIR_TAG, CACHEDIR_TAG_SIGNATURE, ExcludeRules, FileSystemBoundary, file_system_boundary,
    is_cache_directory_tag,
};
use crate::policy::size_drop::{self, SizeDrop};
use crate::repo::pipeline_stats::{self, Stage};
use crate::repo::repository::Repository;
use crate::repo::saver::{BlobSaver, SaverStats};

/// Bytes read from a source per chunk batch; the chunks of one batch are hashed, compressed and
/// sealed in parallel. Three blocks exist at once (read, queued, saved): 2 MiB blocks (about
/// 250 chunks each, plenty for the sealing threads) keep that at 6 MiB.
const READ_BLOCK: usize = 2 * 1024 * 1024;

/// What to back up.
pub enum BackupSource<'a> {
    /// Files and directories; relative paths are made absolute.
    Paths(Vec<PathBuf>),
    /// One stream stored as a file called `name` at the snapshot root.
    Stream {
        /// The name to store it under (no `/`).
        name: String,
        /// The stream. An error from it, including one returned instead of end-of-file (a
        /// source command that failed), aborts the backup before the snapshot is written.
        reader: &'a mut (dyn Read + Send),
    },
}

/// Who, when and how a snapshot is labelled.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    /// Host name recorded in the snapshot.
    pub host: String,
    /// User name recorded in the snapshot.
    pub username: String,
    /// Tags.
    pub tags: Vec<String>,
    /// The snapshot time (normally now).
    pub time: Timestamp,
    /// The program version recorded in the snapshot.
    pub program_version: String,
    /// Which earlier snapshot lets unchanged files go unread.
    pub parent: ParentChoice,
    /// Paths and directories to leave out (paths only; streams have nothing to exclude).
    pub excludes: ExcludeRules,
    /// Do not descend into directories on another file system than the path given.
    pub one_file_system: bool,
}

/// How the parent snapshot of a backup is chosen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ParentChoice {
    /// The latest snapshot of the same host and the same paths (or stream name).
    #[default]
    Latest,
    /// This snapshot.
    Snapshot(Id),
    /// None: read every file (`--force`).
    None,
}

/// The parent snapshot chosen for a backup, and what the listing that found it saw.
#[derive(Default)]
struct ParentFound {
    parent: Option<(Id, Snapshot)>,
    /// The newest snapshot time in the repository (known only when it was listed).
    newest_time: Option<Timestamp>,
    /// Whether the parent is the latest of the same host and source.
    latest: bool,
}

/// Finds the parent snapshot for `source` according to `choice`.
fn find_parent(
    repository: &Repository,
    choice: &ParentChoice,
    host: &str,
    source: &Source,
) -> Result<ParentFound> {
    match choice {
        ParentChoice::None => Ok(ParentFound {
            parent: None,
            newest_time: None,
            latest: false,
        }),
        ParentChoice::Snapshot(id) => Ok(ParentFound {
            parent: Some(repository.resolve_snapshot(&id.to_hex())?),
            newest_time: None,
            latest: false,
        }),
        ParentChoice::Latest => {
            let (snapshots, _) = repository.list_snapshots()?;
            let newest_time = snapshots.last().map(|(_, snapshot)| snapshot.time);
            Ok(ParentFound {
                parent: snapshots
                    .into_iter()
                    .rev()
                    .find(|(_, snapshot)| snapshot.host == host && snapshot.source == *source),
                newest_time,
                latest: true,
            })
        }
    }
}

/// A source entry that could not be backed up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceWarning {
    /// The entry.
    pub path: PathBuf,
    /// Why, in words a user can act on.
    pub message: String,
}

/// Receives progress and warnings during a backup. Every method has a no-op default.
pub trait BackupProgress {
    /// A source entry was skipped.
    fn warning(&self, _warning: &SourceWarning) {}
    /// A file or stream was completely read.
    fn file_done(&self, _path: &Path, _bytes: u64) {}
    /// A file or stream of `bytes` bytes was read because the parent snapshot does not prove
    /// it unchanged (called before [`BackupProgress::file_done`]): what a dry run lists.
    fn file_read(&self, _path: &Path, _bytes: u64) {}
    /// Content bytes were processed: read and chunked, or proven unchanged by the parent. Called
    /// often (per read batch); the sum at the end is the summary's `bytes_processed`.
    fn bytes_processed(&self, _bytes: u64) {}
    /// The parent snapshot chosen processed this many bytes: an estimate of this run's total.
    fn expected_bytes(&self, _bytes: u64) {}
    /// A file or stream looks compressed or encrypted and shared almost nothing with its
    /// previous backup (reported once per file or stream).
    fn dedup_hostile(&self, _finding: &DedupHostile) {}
    /// A file or stream is at least ten times smaller than in the parent snapshot (reported
    /// once per file or stream).
    fn size_drop(&self, _finding: &SizeDrop) {}
}

/// Progress sink that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl BackupProgress for NoProgress {}

/// The result of a completed backup.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    /// The committed snapshot's id.
    pub snapshot_id: Id,
    /// The committed snapshot.
    pub snapshot: Snapshot,
    /// Entries that could not be read (the snapshot is incomplete without them).
    pub warnings: Vec<SourceWarning>,
    /// Special files (FIFOs, sockets, devices) left out by design.
    pub skipped: Vec<SourceWarning>,
    /// Files whose size or times changed while they were read. Each is saved as read: its
    /// recorded hash matches what was saved, but the content may mix old and new bytes.
    pub changed: Vec<SourceWarning>,
    /// Files not read because the parent snapshot proved them unchanged.
    pub files_unchanged: u64,
    /// Entries left out by an exclude pattern, a marker file or `one_file_system` (not counting
    /// what is below an excluded directory).
    pub entries_excluded: u64,
    /// Mount points recorded empty because of `one_file_system`.
    pub mount_points: u64,
    /// Files and streams that look compressed or encrypted and shared almost nothing with
    /// their previous backup.
    pub dedup_hostile: Vec<DedupHostile>,
    /// Files and streams at least ten times smaller than in the parent snapshot.
    pub size_drops: Vec<SizeDrop>,
    /// The snapshot compared against.
    pub parent: Option<Id>,
    /// The parent's time, when it was chosen as the latest snapshot of the same host and
    /// source (it then is the newest of them).
    pub latest_same_time: Option<Timestamp>,
    /// The newest snapshot time in the repository before this backup, when the parent was
    /// chosen as the latest (the listing that found it gave this too); for the time warnings of
    /// [`crate::policy::time_sanity`].
    pub newest_time: Option<Timestamp>,
    /// What was added.
    pub saver: SaverStats,
    /// Packs left by an earlier interrupted run that were indexed and reused.
    pub recovered_packs: usize,
    /// Blobs copied out of packs that a concurrent prune condemned (FORMAT.md section 21).
    pub blobs_rescued: u64,
    /// Backend requests of the whole run.
    pub requests: RequestStats,
}

/// A lexically normalised absolute path: `.` dropped, `..` applied.
fn absolute_normalised(path: &Path) -> Result<PathBuf> {
    let absolute =
        std::path::absolute(path).map_err(|error| Error::local("resolve path", path, error))?;
    let mut out = PathBuf::from("/");
    for component in absolute.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(out)
}

/// The tree of directories above the requested paths.
enum Selection {
    /// Back up this path and everything below it.
    Whole(PathBuf),
    /// A directory kept only as the parent of selected entries.
    Parent(PathBuf, BTreeMap<Vec<u8>, Selection>),
}

fn build_selection(paths: &[PathBuf]) -> Selection {
    let mut root = Selection::Parent(PathBuf::from("/"), BTreeMap::new());
    for path in paths {
        let mut node = &mut root;
        let parts: Vec<OsString> = path
            .components()
            .filter_map(|component| match component {
                Component::Normal(part) => Some(part.to_owned()),
                _ => None,
            })
            .collect();
        if parts.is_empty() {
            return Selection::Whole(PathBuf::from("/"));
        }
        let mut current = PathBuf::from("/");
        for (position, part) in parts.iter().enumerate() {
            current.push(part);
            let Selection::Parent(_, children) = node else {
                break; // an ancestor is already selected whole
            };
            let last = position + 1 == parts.len();
            let child = children.entry(part.as_bytes().to_vec()).or_insert_with(|| {
                if last {
                    Selection::Whole(current.clone())
                } else {
                    Selection::Parent(current.clone(), BTreeMap::new())
                }
            });
            if last {
                *child = Selection::Whole(current.clone());
            }
            node = child;
        }
    }
    root
}

fn timestamp(seconds: i64, nanos: i64) -> Timestamp {
    Timestamp {
        seconds,
        nanos: u32::try_from(nanos.clamp(0, 999_999_999)).unwrap_or(0),
    }
}

fn node_from_metadata(name: Vec<u8>, kind: NodeKind, metadata: &Metadata) -> Node {
    let mut node = Node {
        name,
        kind,
        mode: metadata.mode(),
        uid: metadata.uid(),
        gid: metadata.gid(),
        mtime: timestamp(metadata.mtime(), metadata.mtime_nsec()),
        ctime: timestamp(metadata.ctime(), metadata.ctime_nsec()),
        inode: metadata.ino(),
        device: metadata.dev(),
        size: if metadata.is_file() {
            metadata.len()
        } else {
            0
        },
        extensions: if metadata.is_file() && metadata.blocks().saturating_mul(512) < metadata.len()
        {
            vec![(EXTENSION_SPARSE, Vec::new())]
        } else {
            Vec::new()
        },
    };
    if metadata.is_file() {
        node.set_link_count(metadata.nlink());
    }
    node
}

/// Files up to this size are read whole and chunked in parallel groups.
const SMALL_FILE: u64 = 1024 * 1024;
/// A group of small files is saved once it holds this many bytes...
const GROUP_BYTES: u64 = 8 * 1024 * 1024;
/// ...or this many files.
const GROUP_FILES: usize = 512;

/// A small file waiting in a group.
struct SmallFile {
    slot: usize,
    path: PathBuf,
    name: Vec<u8>,
    /// Its size in the parent snapshot, when it was a file there.
    previous_size: Option<u64>,
}

/// The size of `node` when it is a file (for the size-drop warning).
fn file_size(node: Option<&Node>) -> Option<u64> {
    node.filter(|node| matches!(node.kind, NodeKind::File { .. }))
        .map(|node| node.size)
}

/// A small file read whole.
struct ReadSmallFile {
    metadata: Metadata,
    /// It changed while it was read (see [`changed_while_read`]).
    changed: bool,
    content_hash: Id,
    ranges: Vec<std::ops::Range<usize>>,
    data: Vec<u8>,
}

struct Walker<'saver, 'repo, 'progress> {
    saver: &'saver mut BlobSaver<'repo>,
    repository: &'repo Repository,
    chunker: Chunker,
    progress: &'progress dyn BackupProgress,
    warnings: Vec<SourceWarning>,
    skipped: Vec<SourceWarning>,
    changed: Vec<SourceWarning>,
    summary: Summary,
    /// Files whose metadata matched the parent snapshot and were not read.
    files_unchanged: u64,
    excludes: ExcludeRules,
    one_file_system: bool,
    /// With `one_file_system`: the device of the given path being walked.
    root_device: Option<u64>,
    entries_excluded: u64,
    mount_points: u64,
    dedup_hostile: Vec<DedupHostile>,
    size_drops: Vec<SizeDrop>,
    /// User and group names of the ids met so far.
    owner_names: OwnerNameCache,
    /// The first node saved of each hard-linked file, by (device, inode): later links reuse
    /// its content instead of reading the file again.
    hard_links: HashMap<(u64, u64), Node>,
    /// Whether the parent snapshot read every entry's extended attributes (it counted no
    /// unreadable entry), so its version 2 nodes can stand for an unchanged entry's.
    parent_read_every_entry: bool,
    /// The read transaction unchanged files' chunks are looked up in, and how many files it
    /// has served ([`Walker::lookup_unchanged`]).
    unchanged_reader: Option<(BlobReader<'repo>, usize)>,
}

/// Unchanged files whose chunks one cache read transaction looks up before a new one is
/// begun: a transaction per file costs a database lock and a table lookup (measurable on a
/// nightly re-backup of many small files), and one held for a whole walk would keep the pages
/// the saver's writes free from being reused.
const FILES_PER_READER: usize = 1024;

/// The parent snapshot's listing of a directory.
struct ParentListing {
    tree: Tree,
    /// Whether the listing's nodes record extended attributes that can stand for those of an
    /// entry whose inode and ctime are unchanged since (a version 2 tree of a parent snapshot
    /// that read every entry).
    xattrs_recorded: bool,
}

impl ParentListing {
    /// The parent's node named `name`, if any.
    fn find(&self, name: &[u8]) -> Option<&Node> {
        self.tree.find(name)
    }

    /// The parent's node named `name` when its extended attributes were recorded: the node
    /// [`Walker::add_fs_metadata`] may take them from.
    fn recorded(&self, name: &[u8]) -> Option<&Node> {
        self.xattrs_recorded.then(|| self.find(name)).flatten()
    }
}

/// Whether `previous` (a parent snapshot's node) and `current` are the same inode, of the
/// same kind, with the same ctime: then no extended attribute changed, since setting or
/// removing one (POSIX ACLs included) sets the ctime.
fn attributes_unchanged(previous: &Node, current: &Node) -> bool {
    previous.device == current.device
        && previous.inode == current.inode
        && previous.ctime == current.ctime
        && std::mem::discriminant(&previous.kind) == std::mem::discriminant(&current.kind)
}

/// What the walker does with an entry after the exclude rules and the file-system boundary.
enum Admission {
    /// Back it up.
    Walk,
    /// Leave it out.
    Leave,
    /// Record this node instead of walking the entry (an empty mount point).
    Record(Node),
}

/// Whether the directory at `path` holds a `CACHEDIR.TAG` with the standard signature (an
/// unreadable tag tags nothing: the directory is backed up).
fn tagged_as_cache(path: &Path) -> bool {
    let mut start = Vec::with_capacity(CACHEDIR_TAG_SIGNATURE.len());
    longpath::open(&path.join(CACHEDIR_TAG))
        .and_then(|file| {
            file.take(CACHEDIR_TAG_SIGNATURE.len() as u64)
                .read_to_end(&mut start)
        })
        .is_ok_and(|_| is_cache_directory_tag(&start))
}

/// Whether a file's current metadata proves it unchanged since `previous` was recorded:
/// same size, mtime, ctime, inode, device and mode. ctime catches edits that restore the mtime.
fn unchanged(metadata: &Metadata, previous: &Node) -> bool {
    let current = node_from_metadata(
        Vec::new(),
        NodeKind::Directory {
            subtree: Id::default(),
        },
        metadata,
    );
    matches!(previous.kind, NodeKind::File { .. })
        && metadata.is_file()
        && previous.size == metadata.len()
        && previous.mtime == current.mtime
        && previous.ctime == current.ctime
        && previous.inode == current.inode
        && previous.device == current.device
        && previous.mode == current.mode
}

/// Whether a file changed while it was read: its size, mtime or ctime when it was opened
/// differ from those after its last byte was read (ctime also catches a write that put the
/// mtime back).
fn changed_while_read(before: &Metadata, after: &Metadata) -> bool {
    (before.len(), before.mtime(), before.mtime_nsec())
        != (after.len(), after.mtime(), after.mtime_nsec())
        || (before.ctime(), before.ctime_nsec()) != (after.ctime(), after.ctime_nsec())
}

impl Walker<'_, '_, '_> {
    /// The parent snapshot's listing of a directory, if there is one and it can be read; a
    /// damaged or pruned parent tree only means the files are read again.
    fn parent_tree(&self, parent: Option<&Node>) -> Option<ParentListing> {
        match parent.map(|node| &node.kind) {
            Some(NodeKind::Directory { subtree }) => self.parent_listing(subtree),
            _ => None,
        }
    }

    /// The parent snapshot's tree `id`, if it can be read.
    fn parent_listing(&self, id: &Id) -> Option<ParentListing> {
        let (tree, version) = self.repository.load_tree_versioned(id).ok()?;
        Some(ParentListing {
            tree,
            xattrs_recorded: version >= 2 && self.parent_read_every_entry,
        })
    }

    /// Reuses the parent's record of an unchanged file when every chunk is still indexed.
    fn reuse_unchanged(
        &mut self,
        path: &Path,
        name: &[u8],
        metadata: &Metadata,
        previous: Option<&Node>,
    ) -> Result<Option<Node>> {
        let Some(previous) = previous.filter(|previous| unchanged(metadata, previous)) else {
            return Ok(None);
        };
        let NodeKind::File { chunks, .. } = &previous.kind else {
            return Ok(None);
        };
        let locations = self.lookup_unchanged(chunks)?;
        let usable = |location: &Option<BlobLocation>| {
            location
                .as_ref()
                .is_some_and(|location| !self.repository.is_condemned(&location.pack_id))
        };
        if !locations.iter().all(usable) {
            return Ok(None);
        }
        self.saver
            .note_relied(locations.iter().flatten().map(|location| location.pack_id));
        let mut node = node_from_metadata(name.to_vec(), previous.kind.clone(), metadata);
        node.size = previous.size;
        self.summary.files += 1;
        self.summary.bytes_processed += previous.size;
        self.files_unchanged += 1;
        self.progress.bytes_processed(previous.size);
        self.progress.file_done(path, previous.size);
        Ok(Some(node))
    }

    /// Looks up an unchanged file's chunks. Every chunk it can reuse was indexed before this
    /// run's walk began, so a read transaction begun earlier in the walk sees it.
    fn lookup_unchanged(&mut self, chunks: &[Id]) -> Result<Vec<Option<BlobLocation>>> {
        let renew = self
            .unchanged_reader
            .as_ref()
            .is_none_or(|(_, files)| *files >= FILES_PER_READER);
        if renew {
            self.unchanged_reader = Some((self.repository.cache().blob_reader()?, 0));
        }
        let (reader, files) = self
            .unchanged_reader
            .as_mut()
            .expect("a reader was just made");
        *files += 1;
        reader.lookup_many(chunks)
    }

    fn warn(&mut self, path: &Path, message: String) {
        let warning = SourceWarning {
            path: path.to_owned(),
            message,
        };
        self.progress.warning(&warning);
        self.warnings.push(warning);
        self.summary.entries_unreadable += 1;
    }

    /// Adds what the node holds beyond `lstat`: owner and group names, extended attributes
    /// (POSIX ACLs included), and remembers the first link of a hard-linked file. An
    /// unreadable attribute list is a warning; the entry is kept without it. The attributes
    /// are taken from `recorded` (the parent snapshot's node of the entry, when its attributes
    /// were recorded) instead of read when it is the same inode with the same ctime.
    fn add_fs_metadata(&mut self, path: &Path, node: &mut Node, recorded: Option<&Node>) {
        node.set_owner_names(&self.owner_names.names(node.uid, node.gid));
        match recorded.filter(|previous| attributes_unchanged(previous, node)) {
            Some(previous) => node.set_extension(
                EXTENSION_XATTRS,
                previous.extension(EXTENSION_XATTRS).map(<[u8]>::to_vec),
            ),
            None => match fsmeta::read_xattrs(path) {
                Ok(xattrs) => node.set_xattrs(&xattrs),
                Err(error) => self.warn(
                    path,
                    format!("cannot read extended attributes (saved without them): {error}"),
                ),
            },
        }
        if matches!(node.kind, NodeKind::File { .. }) && node.link_count().unwrap_or(1) > 1 {
            self.hard_links
                .entry((node.device, node.inode))
                .or_insert_with(|| node.clone());
        }
    }

    /// A later link of a hard-linked file already saved in this run, unchanged since: its
    /// node, with the content of the first link, without reading the file.
    fn reuse_hard_link(&mut self, path: &Path, name: &[u8], metadata: &Metadata) -> Option<Node> {
        if !metadata.is_file() || metadata.nlink() < 2 {
            return None;
        }
        let first = self
            .hard_links
            .get(&(metadata.dev(), metadata.ino()))?
            .clone();
        self.link_to(&first, path, name, metadata)
    }

    /// The node of a later link of the file `first` was saved from, when the file is unchanged
    /// since (same size and times).
    fn link_to(
        &mut self,
        first: &Node,
        path: &Path,
        name: &[u8],
        metadata: &Metadata,
    ) -> Option<Node> {
        if !matches!(first.kind, NodeKind::File { .. }) {
            return None;
        }
        let node = node_from_metadata(name.to_vec(), first.kind.clone(), metadata);
        if node.size != first.size || node.mtime != first.mtime || node.ctime != first.ctime {
            return None;
        }
        self.summary.files += 1;
        self.summary.bytes_processed += node.size;
        self.progress.bytes_processed(node.size);
        self.progress.file_done(path, node.size);
        Some(node)
    }

    /// Reports a file saved as read although it changed meanwhile. Its node keeps the metadata
    /// from before the read, so the next backup does not take it for unchanged.
    fn note_changed(&mut self, path: &Path) {
        let warning = SourceWarning {
            path: path.to_owned(),
            message: "changed while being read: saved as read, which may mix old and new \
                      content; back it up again when it is quiet"
                .into(),
        };
        self.progress.warning(&warning);
        self.changed.push(warning);
    }

    /// Chunks and saves a stream; returns its content hash, chunk ids, and its length with what
    /// its new chunks cost.
    ///
    /// A reading thread reads and chunks the next block, a hashing thread feeds the content
    /// hash with the one before, this thread computes chunk ids and looks them up, and the pool
    /// seals the new chunks of earlier blocks, so the disk (or the producing command) and the
    /// cores work at the same time. Blocks are shared, not copied: at most five are read and
    /// queued at once (one being read, one queued and one being hashed, one queued and one
    /// being saved; the same block may be in both queues), and the saver's bound limits those
    /// still being sealed.
    fn save_content(
        &mut self,
        reader: &mut (dyn Read + Send),
    ) -> Result<std::io::Result<(Id, Vec<Id>, ContentCounts)>> {
        // Counted from here: the new chunks of what was saved before are sealed first.
        self.saver.settle()?;
        let before = self.saver.stats();
        let chunker = self.chunker.clone();
        let mut hasher = self.repository.keys().file_hasher();
        let mut chunks = Vec::new();
        let mut length = 0u64;
        std::thread::scope(|scope| {
            let (sender, batches) = std::sync::mpsc::sync_channel(1);
            let (to_hash, blocks) = std::sync::mpsc::sync_channel::<Bytes>(1);
            // The content hash has a thread of its own, fed the same blocks (shared, not
            // copied): reading and chunking a block, hashing the one before and saving the
            // one before that run at the same time.
            let hashing = scope.spawn(move || {
                for block in blocks {
                    pipeline_stats::time(Stage::ContentHash, || hasher.update(&block));
                }
                hasher
            });
            let reading = scope.spawn(move || {
                let mut stream = chunker.stream(reader, READ_BLOCK);
                loop {
                    let next =
                        pipeline_stats::time(Stage::ReadChunk, || stream.next_batch().transpose());
                    let Some(next) = next else { break };
                    let next = next.map(|batch| (Bytes::from(batch.data), batch.chunks));
                    // The hashing thread takes every block until this thread drops `to_hash`.
                    if let Ok((data, _)) = &next
                        && to_hash.send(data.clone()).is_err()
                    {
                        break;
                    }
                    let failed = next.is_err();
                    // A closed channel means the saving side stopped: stop reading.
                    if pipeline_stats::time(Stage::ReadBlocked, || sender.send(next)).is_err()
                        || failed
                    {
                        break;
                    }
                }
            });
            // Returning drops `batches`, which ends the reading thread at its next block, and
            // with it the hashing thread.
            while let Some(next) = pipeline_stats::time(Stage::BatchWait, || batches.recv().ok()) {
                let (data, ranges) = match next {
                    Ok(batch) => batch,
                    Err(error) => return Ok(Err(error)),
                };
                length += data.len() as u64;
                self.progress.bytes_processed(data.len() as u64);
                // The new chunks are sealed from this block while the next one is read.
                chunks.extend(self.saver.save_shared(BlobType::Data, &data, &ranges)?);
            }
            // The counts below include the new chunks of the last blocks once they are sealed.
            self.saver.settle()?;
            let after = self.saver.stats();
            let counts = ContentCounts {
                length,
                new_raw: after.raw_bytes_added - before.raw_bytes_added,
                new_compressed: after.compressed_bytes_added - before.compressed_bytes_added,
            };
            // The reading thread ended (it closed the queue) and so did the hashing thread (the
            // reading thread dropped its queue), so joining does not wait.
            reading
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            let hasher = hashing
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            Ok(Ok((Id(*hasher.finalize().as_bytes()), chunks, counts)))
        })
    }

    /// Reports a file or stream that defeats deduplication (see [`crate::policy::dedup_hostile`]).
    /// `repeat`: the parent snapshot holds the same file or stream.
    fn judge_content(&mut self, path: &Path, counts: ContentCounts, repeat: bool) {
        let compressing = self.repository.compression().is_some();
        if let Some(finding) = dedup_hostile::judge(path.to_owned(), counts, repeat, compressing) {
            self.progress.dedup_hostile(&finding);
            self.dedup_hostile.push(finding);
        }
    }

    /// Reports a file or stream at least ten times smaller than in the parent snapshot (see
    /// [`crate::policy::size_drop`]).
    fn judge_size(&mut self, path: &Path, previous_size: Option<u64>, bytes: u64) {
        if let Some(previous_size) = previous_size
            && let Some(finding) = size_drop::judge(path.to_owned(), previous_size, bytes)
        {
            self.progress.size_drop(&finding);
            self.size_drops.push(finding);
        }
    }

    /// Applies the exclude rules, marker files and the file-system boundary to the entry at
    /// `path` (`metadata` is `None` when it could not be read: only path patterns apply then,
    /// and the caller reports the entry as unreadable if they keep it).
    fn admit(
        &mut self,
        path: &Path,
        name: &[u8],
        metadata: Option<&Metadata>,
    ) -> Result<Admission> {
        let is_directory = metadata.is_some_and(Metadata::is_dir);
        let marked = || {
            self.excludes
                .markers()
                .iter()
                .any(|marker| longpath::symlink_metadata(&path.join(marker)).is_ok())
                || (self.excludes.excludes_caches() && tagged_as_cache(path))
        };
        let too_large = metadata.is_some_and(|metadata| {
            metadata.is_file() && self.excludes.excludes_size(metadata.len())
        });
        if self.excludes.excludes(path, is_directory) || too_large || (is_directory && marked()) {
            self.entries_excluded += 1;
            return Ok(Admission::Leave);
        }
        let Some(metadata) = metadata else {
            return Ok(Admission::Walk);
        };
        match file_system_boundary(self.root_device, metadata.dev(), is_directory) {
            FileSystemBoundary::Inside => Ok(Admission::Walk),
            FileSystemBoundary::Outside => {
                self.entries_excluded += 1;
                Ok(Admission::Leave)
            }
            FileSystemBoundary::MountPoint => {
                let subtree = self.save_tree(Tree::default())?;
                self.mount_points += 1;
                self.summary.directories += 1;
                Ok(Admission::Record(node_from_metadata(
                    name.to_vec(),
                    NodeKind::Directory { subtree },
                    metadata,
                )))
            }
        }
    }

    /// With `one_file_system`, makes the file system of `path` (a path given to the backup) the
    /// one not to leave while walking below it.
    fn enter_given_path(&mut self, metadata: Option<&Metadata>) {
        self.root_device = if self.one_file_system {
            metadata.map(MetadataExt::dev)
        } else {
            None
        };
    }

    fn save_tree(&mut self, mut tree: Tree) -> Result<Id> {
        tree.sort();
        let encoded = tree.encode();
        Ok(self.saver.save(BlobType::Tree, &[&encoded])?[0])
    }

    /// Backs up one entry of the file system; `Ok(None)` when it was skipped with a warning.
    /// `metadata`: the entry's `symlink_metadata`, read once by the caller (which also used it
    /// for the exclude rules).
    fn save_entry(
        &mut self,
        path: &Path,
        name: Vec<u8>,
        metadata: std::io::Result<Metadata>,
        previous: Option<&Node>,
    ) -> Result<Option<Node>> {
        let metadata = match metadata {
            Ok(metadata) => metadata,
            Err(error) => {
                self.warn(path, format!("cannot read metadata: {error}"));
                return Ok(None);
            }
        };
        let file_type = metadata.file_type();
        if file_type.is_symlink() {
            return match longpath::read_link(path) {
                Ok(target) => Ok(Some(node_from_metadata(
                    name,
                    NodeKind::Symlink {
                        target: target.into_os_string().into_vec(),
                    },
                    &metadata,
                ))),
                Err(error) => {
                    self.warn(path, format!("cannot read symlink: {error}"));
                    Ok(None)
                }
            };
        }
        if file_type.is_dir() {
            let parent = self.parent_tree(previous);
            let Some(subtree) = self.save_directory(path, parent.as_ref())? else {
                return Ok(None);
            };
            self.summary.directories += 1;
            return Ok(Some(node_from_metadata(
                name,
                NodeKind::Directory { subtree },
                &metadata,
            )));
        }
        if !file_type.is_file() {
            let (major, minor) = fsmeta::device_numbers(metadata.rdev());
            let kind = if file_type.is_fifo() {
                NodeKind::Fifo
            } else if file_type.is_char_device() {
                NodeKind::Device {
                    kind: DeviceKind::Character,
                    major,
                    minor,
                }
            } else if file_type.is_block_device() {
                NodeKind::Device {
                    kind: DeviceKind::Block,
                    major,
                    minor,
                }
            } else {
                // A socket belongs to the program listening on it, which recreates it (as
                // restic does, it is left out); saying so is enough, it does not make the
                // snapshot incomplete.
                let note = SourceWarning {
                    path: path.to_owned(),
                    message: "skipped: socket (the program that listens on it recreates it)".into(),
                };
                self.progress.warning(&note);
                self.skipped.push(note);
                return Ok(None);
            };
            return Ok(Some(node_from_metadata(name, kind, &metadata)));
        }
        if let Some(node) = self.reuse_unchanged(path, &name, &metadata, previous)? {
            return Ok(Some(node));
        }
        let previous_size = file_size(previous);
        self.save_file(path, name, previous_size.is_some(), previous_size)
    }

    /// Reads and saves one file; `repeat`: judge it as a file the parent snapshot holds (for
    /// the dedup-hostile warning); `previous_size`: its size in the parent snapshot.
    fn save_file(
        &mut self,
        path: &Path,
        name: Vec<u8>,
        repeat: bool,
        previous_size: Option<u64>,
    ) -> Result<Option<Node>> {
        let mut file = match longpath::open(path) {
            Ok(file) => file,
            Err(error) => {
                self.warn(path, format!("cannot open: {error}"));
                return Ok(None);
            }
        };
        let before = match file.metadata() {
            Ok(metadata) => metadata,
            Err(error) => {
                self.warn(path, format!("cannot read metadata: {error}"));
                return Ok(None);
            }
        };
        let (content_hash, chunks, counts) = match self.save_content(&mut file)? {
            Ok(saved) => saved,
            Err(error) => {
                self.warn(path, format!("read failed: {error}"));
                return Ok(None);
            }
        };
        let length = counts.length;
        self.judge_content(path, counts, repeat);
        self.judge_size(path, previous_size, length);
        if file
            .metadata()
            .is_ok_and(|after| changed_while_read(&before, &after))
        {
            self.note_changed(path);
        }
        let mut node = node_from_metadata(
            name,
            NodeKind::File {
                content_hash,
                chunks,
            },
            &before,
        );
        // The recorded size is what was read, so restore verification always matches the
        // recorded hash even when the file grew or shrank meanwhile.
        node.size = length;
        self.summary.files += 1;
        self.summary.bytes_processed += length;
        self.progress.file_read(path, length);
        self.progress.file_done(path, length);
        Ok(Some(node))
    }

    /// Backs up a directory's entries; `Ok(None)` when it cannot be listed.
    fn save_directory(
        &mut self,
        path: &Path,
        parent: Option<&ParentListing>,
    ) -> Result<Option<Id>> {
        let mut names: Vec<OsString> = match longpath::list_names(path) {
            Ok(names) => names,
            Err(error) => {
                self.warn(path, format!("cannot list directory: {error}"));
                return Ok(None);
            }
        };
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let mut slots: Vec<Option<Node>> = vec![None; names.len()];
        let mut group: Vec<SmallFile> = Vec::new();
        let mut group_bytes = 0u64;
        // Hard links within this directory: the slot of the first link of each file, and the
        // later links, filled from it once it is saved.
        let mut first_links: HashMap<(u64, u64), usize> = HashMap::new();
        let mut later_links: Vec<(usize, usize, PathBuf, Vec<u8>, Metadata)> = Vec::new();
        for (slot, name) in names.into_iter().enumerate() {
            let child = path.join(&name);
            let name = name.into_vec();
            let previous = parent.and_then(|listing| listing.find(&name));
            let metadata = longpath::symlink_metadata(&child);
            match self.admit(&child, &name, metadata.as_ref().ok())? {
                Admission::Walk => {}
                Admission::Leave => continue,
                Admission::Record(node) => {
                    slots[slot] = Some(node);
                    continue;
                }
            }
            if let Ok(file_metadata) = &metadata
                && file_metadata.is_file()
                && file_metadata.nlink() > 1
            {
                if let Some(node) = self.reuse_hard_link(&child, &name, file_metadata) {
                    slots[slot] = Some(node);
                    continue;
                }
                let key = (file_metadata.dev(), file_metadata.ino());
                if let Some(first) = first_links.get(&key) {
                    later_links.push((slot, *first, child, name, file_metadata.clone()));
                    continue;
                }
                first_links.insert(key, slot);
            }
            // Small changed files are read and chunked in parallel groups; everything else
            // (directories, symlinks, large or unchanged files) goes one by one.
            if let Ok(file_metadata) = &metadata
                && file_metadata.is_file()
                && file_metadata.len() <= SMALL_FILE
            {
                if let Some(node) = self.reuse_unchanged(&child, &name, file_metadata, previous)? {
                    slots[slot] = Some(node);
                    continue;
                }
                group_bytes += file_metadata.len();
                group.push(SmallFile {
                    slot,
                    path: child,
                    name,
                    previous_size: file_size(previous),
                });
                if group_bytes >= GROUP_BYTES || group.len() >= GROUP_FILES {
                    self.save_small_files(std::mem::take(&mut group), &mut slots)?;
                    group_bytes = 0;
                }
                continue;
            }
            slots[slot] = self.save_entry(&child, name, metadata, previous)?;
        }
        self.save_small_files(group, &mut slots)?;
        for (slot, first, child, name, metadata) in later_links {
            let linked = match slots[first].clone() {
                Some(first) => self.link_to(&first, &child, &name, &metadata),
                None => None,
            };
            slots[slot] = match linked {
                Some(node) => Some(node),
                None => self.save_entry(&child, name, Ok(metadata), None)?,
            };
        }
        for node in slots.iter_mut().flatten() {
            let child = path.join(std::ffi::OsStr::from_bytes(&node.name));
            let recorded = parent.and_then(|listing| listing.recorded(&node.name));
            self.add_fs_metadata(&child, node, recorded);
        }
        let tree = Tree {
            nodes: slots.into_iter().flatten().collect(),
        };
        self.save_tree(tree).map(Some)
    }

    /// Reads, hashes and chunks a group of small files in parallel, then saves all their chunks
    /// with one call, so thousands of config files cost a few parallel batches instead of
    /// thousands of tiny ones. A file that grew past the small-file limit is saved on its own.
    fn save_small_files(
        &mut self,
        group: Vec<SmallFile>,
        slots: &mut [Option<Node>],
    ) -> Result<()> {
        if group.is_empty() {
            return Ok(());
        }
        let keys = self.repository.keys();
        let chunker = &self.chunker;
        let read: Vec<std::io::Result<ReadSmallFile>> = group
            .par_iter()
            .map(|file| {
                let _reading = pipeline_stats::start(Stage::SmallFiles);
                let mut handle = longpath::open(&file.path)?;
                let metadata = handle.metadata()?;
                let mut data = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
                (&mut handle).take(SMALL_FILE + 1).read_to_end(&mut data)?;
                let changed = changed_while_read(&metadata, &handle.metadata()?);
                let mut hasher = keys.file_hasher();
                hasher.update(&data);
                let ranges = chunker.chunk_slice(&data);
                Ok(ReadSmallFile {
                    metadata,
                    changed,
                    content_hash: Id(*hasher.finalize().as_bytes()),
                    ranges,
                    data,
                })
            })
            .collect();
        let mut slices: Vec<&[u8]> = Vec::new();
        for file in read.iter().flatten() {
            if file.data.len() as u64 <= SMALL_FILE {
                slices.extend(file.ranges.iter().map(|range| &file.data[range.clone()]));
            }
        }
        let mut ids = self.saver.save(BlobType::Data, &slices)?.into_iter();
        for (file, outcome) in group.into_iter().zip(read) {
            match outcome {
                Err(error) => self.warn(&file.path, format!("cannot read: {error}")),
                Ok(read) if read.data.len() as u64 > SMALL_FILE => {
                    // It grew while waiting in the group: read it on its own, without the
                    // dedup-hostile judgement (it was a small file a moment ago).
                    slots[file.slot] =
                        self.save_file(&file.path, file.name, false, file.previous_size)?;
                }
                Ok(read) => {
                    if read.changed {
                        self.note_changed(&file.path);
                    }
                    let chunks: Vec<Id> = ids.by_ref().take(read.ranges.len()).collect();
                    let mut node = node_from_metadata(
                        file.name,
                        NodeKind::File {
                            content_hash: read.content_hash,
                            chunks,
                        },
                        &read.metadata,
                    );
                    node.size = read.data.len() as u64;
                    self.judge_size(&file.path, file.previous_size, node.size);
                    self.summary.files += 1;
                    self.summary.bytes_processed += node.size;
                    self.progress.bytes_processed(node.size);
                    self.progress.file_read(&file.path, node.size);
                    self.progress.file_done(&file.path, node.size);
                    slots[file.slot] = Some(node);
                }
            }
        }
        Ok(())
    }

    /// Backs up a selection node into a tree node named `name`; `parent`: the parent
    /// snapshot's listing of the directory holding it.
    fn save_selection(
        &mut self,
        selection: &Selection,
        name: Vec<u8>,
        parent: Option<&ParentListing>,
    ) -> Result<Option<Node>> {
        let previous = parent.and_then(|listing| listing.find(&name));
        let recorded = parent.and_then(|listing| listing.recorded(&name));
        match selection {
            Selection::Whole(path) => {
                let metadata = longpath::symlink_metadata(path);
                if let Err(error) = &metadata
                    && error.kind() == std::io::ErrorKind::NotFound
                {
                    self.warn(path, "source path does not exist".into());
                    return Ok(None);
                }
                self.enter_given_path(metadata.as_ref().ok());
                let mut node = match self.admit(path, &name, metadata.as_ref().ok())? {
                    Admission::Walk => self.save_entry(path, name, metadata, previous)?,
                    Admission::Leave => None,
                    Admission::Record(node) => Some(node),
                };
                if let Some(node) = &mut node {
                    self.add_fs_metadata(path, node, recorded);
                }
                Ok(node)
            }
            Selection::Parent(path, children) => {
                let metadata = match longpath::metadata(path) {
                    Ok(metadata) => metadata,
                    Err(error) => {
                        self.warn(path, format!("cannot read metadata: {error}"));
                        return Ok(None);
                    }
                };
                let listing = self.parent_tree(previous);
                let subtree = self.save_children(children, listing.as_ref())?;
                let mut node = node_from_metadata(name, NodeKind::Directory { subtree }, &metadata);
                self.add_fs_metadata(path, &mut node, recorded);
                Ok(Some(node))
            }
        }
    }
}

impl Walker<'_, '_, '_> {
    /// Saves the selected children of a parent-only directory as a tree.
    fn save_children(
        &mut self,
        children: &BTreeMap<Vec<u8>, Selection>,
        parent: Option<&ParentListing>,
    ) -> Result<Id> {
        let mut tree = Tree::default();
        for (child_name, child) in children {
            if let Some(node) = self.save_selection(child, child_name.clone(), parent)? {
                tree.nodes.push(node);
            }
        }
        self.save_tree(tree)
    }
}

/// Validates a stream name: one path component, no `/` or NUL.
fn validate_stream_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(Error::Usage(format!(
            "invalid stream name {name:?}: use a plain file name such as app.archive"
        )));
    }
    Ok(())
}

/// The snapshot's record of what a source reads: absolute paths, or a stream's name.
///
/// # Errors
/// [`Error::Usage`] for no paths or an invalid stream name, [`Error::NoSourcePath`] when none of
/// the paths exists.
fn snapshot_source(source: &BackupSource<'_>) -> Result<Source> {
    match source {
        BackupSource::Paths(paths) => {
            if paths.is_empty() {
                return Err(Error::Usage("no paths to back up".into()));
            }
            let mut absolute = Vec::with_capacity(paths.len());
            for path in paths {
                absolute.push(absolute_normalised(path)?);
            }
            // As restic: a missing path is a warning (see save_selection), unless none exists.
            if absolute.iter().all(|path| {
                longpath::symlink_metadata(path)
                    .is_err_and(|error| error.kind() == std::io::ErrorKind::NotFound)
            }) {
                return Err(Error::NoSourcePath(
                    paths
                        .iter()
                        .map(|path| path.display().to_string())
                        .collect(),
                ));
            }
            Ok(Source::Paths(
                absolute
                    .iter()
                    .map(|path| path.to_string_lossy().into_owned())
                    .collect(),
            ))
        }
        BackupSource::Stream { name, .. } => {
            validate_stream_name(name)?;
            Ok(Source::Stdin(name.clone()))
        }
    }
}

/// Runs a backup and commits its snapshot.
///
/// # Errors
/// [`Error::Usage`] for invalid sources, backend, cache or local failures that stop the run. No
/// snapshot is written when this returns an error.
pub fn backup(
    repository: &Repository,
    source: BackupSource<'_>,
    options: &BackupOptions,
    progress: &dyn BackupProgress,
) -> Result<BackupOutcome> {
    let snapshot_source = snapshot_source(&source)?;
    // The session marker goes first: a prune that does not see it has already written its
    // record, which the session then reads (FORMAT.md section 21). The parent is looked for
    // while the prune records and the index are listed; this machine's own sessions whose
    // process is proven gone are ended meanwhile, so their condemned packs can go.
    let mut start = crate::ops::backup_start::start_backup(repository, &options.host, || {
        find_parent(repository, &options.parent, &options.host, &snapshot_source)
    })?;
    match backup_in_session(
        repository,
        &mut start,
        source,
        snapshot_source,
        options,
        progress,
    ) {
        Ok(outcome) => Ok(outcome),
        Err(error) => {
            start.session.abandon(&error);
            Err(error)
        }
    }
}

/// What a dry run found: the backup it would have made, written nowhere.
#[derive(Debug, Clone)]
pub struct DryRunOutcome {
    /// The snapshot that would be committed (its summary's `bytes_added` counts the sealed
    /// blobs, without pack headers and index objects).
    pub snapshot: Snapshot,
    /// Entries that could not be read.
    pub warnings: Vec<SourceWarning>,
    /// Special files left out by design.
    pub skipped: Vec<SourceWarning>,
    /// Files whose size or times changed while they were read.
    pub changed: Vec<SourceWarning>,
    /// Files the parent snapshot proves unchanged: they would not be read.
    pub files_unchanged: u64,
    /// Entries left out by excludes, marker files, cache tags, size or `one_file_system`.
    pub entries_excluded: u64,
    /// Mount points that would be recorded empty.
    pub mount_points: u64,
    /// The snapshot compared against.
    pub parent: Option<Id>,
    /// What would be added: new blobs, their plaintext and compressed bytes, and (in
    /// `bytes_added`) their sealed bytes; no packs are built.
    pub would_add: SaverStats,
    /// Backend requests of the dry run (reads and listings only).
    pub requests: RequestStats,
}

/// Reads the sources as [`backup`] would, deduplicates against the index and compresses and
/// seals what is new to measure it, but writes nothing to the repository: no session marker,
/// pack, index object nor snapshot (the local index cache is brought up to date, as by any
/// command that reads the repository). Packs an interrupted run left unindexed are not
/// adopted, so their blobs count as new.
///
/// # Errors
/// As [`backup`].
pub fn dry_run(
    repository: &Repository,
    source: BackupSource<'_>,
    options: &BackupOptions,
    progress: &dyn BackupProgress,
) -> Result<DryRunOutcome> {
    let snapshot_source = snapshot_source(&source)?;
    repository.sync_index_with(&repository.load_prune_state()?)?;
    let parent = find_parent(repository, &options.parent, &options.host, &snapshot_source)?;
    let walked = walk(
        repository,
        BlobSaver::dry_run(repository),
        parent,
        source,
        snapshot_source,
        options,
        progress,
    )?;
    let mut summary = walked.summary;
    summary.bytes_added = walked.saver.bytes_added;
    summary.blobs_added = walked.saver.blobs_added;
    Ok(DryRunOutcome {
        snapshot: Snapshot {
            time: options.time,
            host: options.host.clone(),
            username: options.username.clone(),
            tags: options.tags.clone(),
            source: walked.source,
            root: walked.root,
            parent: walked.parent.as_ref().map(|(id, _)| *id),
            summary,
            program_version: options.program_version.clone(),
            extensions: Vec::new(),
        },
        warnings: walked.warnings,
        skipped: walked.skipped,
        changed: walked.changed,
        files_unchanged: walked.files_unchanged,
        entries_excluded: walked.entries_excluded,
        mount_points: walked.mount_points,
        parent: walked.parent.map(|(id, _)| id),
        would_add: walked.saver,
        requests: repository.backend().stats(),
    })
}

/// What walking the sources produced, before a snapshot is committed.
struct Walked {
    source: Source,
    root: Id,
    warnings: Vec<SourceWarning>,
    skipped: Vec<SourceWarning>,
    changed: Vec<SourceWarning>,
    summary: Summary,
    files_unchanged: u64,
    entries_excluded: u64,
    mount_points: u64,
    dedup_hostile: Vec<DedupHostile>,
    size_drops: Vec<SizeDrop>,
    parent: Option<(Id, Snapshot)>,
    latest_same_time: Option<Timestamp>,
    newest_time: Option<Timestamp>,
    saver: SaverStats,
    relied: std::collections::HashSet<Id>,
}

/// The backup proper, inside its session (which it ends after committing the snapshot).
fn backup_in_session(
    repository: &Repository,
    start: &mut crate::ops::backup_start::BackupStart<'_, ParentFound>,
    source: BackupSource<'_>,
    snapshot_source: Source,
    options: &BackupOptions,
    progress: &dyn BackupProgress,
) -> Result<BackupOutcome> {
    let recovered_packs = start.recovered_packs;
    let parent_found = std::mem::take(&mut start.alongside);
    let Walked {
        source: snapshot_source,
        root,
        warnings,
        skipped,
        changed,
        mut summary,
        files_unchanged,
        entries_excluded,
        mount_points,
        dedup_hostile,
        size_drops,
        parent,
        latest_same_time,
        newest_time,
        saver: saver_stats,
        mut relied,
    } = walk(
        repository,
        BlobSaver::new(repository),
        parent_found,
        source,
        snapshot_source,
        options,
        progress,
    )?;
    // A prune that ran meanwhile may have condemned packs this snapshot relies on: copy what
    // it needs out of them before committing, so the prune can free them. (Safety does not
    // depend on this: a prune deletes condemned packs only after this session has ended, and
    // takes back any that a snapshot listed by then still needs; FORMAT.md section 21.)
    let rescued = repository.rescue_relied_packs(&mut start.session, &mut relied)?;
    summary.bytes_added = saver_stats.bytes_added + rescued.bytes_written;
    summary.blobs_added = saver_stats.blobs_added;
    let snapshot = Snapshot {
        time: options.time,
        host: options.host.clone(),
        username: options.username.clone(),
        tags: options.tags.clone(),
        source: snapshot_source,
        root,
        parent: parent.as_ref().map(|(id, _)| *id),
        summary,
        program_version: options.program_version.clone(),
        extensions: Vec::new(),
    };
    let snapshot_id = repository.save_snapshot(&snapshot)?;
    // Best effort: the snapshot is committed; a session left unended only delays deletions
    // until a prune on this host sees its process gone (or an operator ends it).
    let _ = start.session.end(Some(snapshot_id));
    start.settle(repository);
    Ok(BackupOutcome {
        snapshot_id,
        snapshot,
        warnings,
        skipped,
        changed,
        files_unchanged,
        entries_excluded,
        mount_points,
        dedup_hostile,
        size_drops,
        parent: parent.map(|(id, _)| id),
        latest_same_time,
        newest_time,
        saver: saver_stats,
        recovered_packs,
        blobs_rescued: rescued.blobs_copied,
        requests: repository.backend().stats(),
    })
}

/// Walks the sources into trees through `saver` (against `parent_found`) and finishes it.
fn walk<'repo>(
    repository: &'repo Repository,
    mut saver: BlobSaver<'repo>,
    parent_found: ParentFound,
    source: BackupSource<'_>,
    snapshot_source: Source,
    options: &BackupOptions,
    progress: &dyn BackupProgress,
) -> Result<Walked> {
    let ParentFound {
        parent,
        newest_time,
        latest,
    } = parent_found;
    let latest_same_time = parent
        .as_ref()
        .filter(|_| latest)
        .map(|(_, snapshot)| snapshot.time);
    if let Some((_, snapshot)) = &parent {
        progress.expected_bytes(snapshot.summary.bytes_processed);
    }
    let chunker = Chunker::new(repository.config().chunker, repository.chunker_seed())
        .map_err(|error| Error::Usage(error.to_string()))?;
    let mut walker = Walker {
        saver: &mut saver,
        repository,
        chunker,
        progress,
        warnings: Vec::new(),
        skipped: Vec::new(),
        changed: Vec::new(),
        summary: Summary::default(),
        files_unchanged: 0,
        excludes: options.excludes.clone(),
        one_file_system: options.one_file_system,
        root_device: None,
        entries_excluded: 0,
        mount_points: 0,
        dedup_hostile: Vec::new(),
        size_drops: Vec::new(),
        owner_names: OwnerNameCache::default(),
        hard_links: HashMap::new(),
        unchanged_reader: None,
        parent_read_every_entry: parent
            .as_ref()
            .is_some_and(|(_, snapshot)| snapshot.summary.entries_unreadable == 0),
    };
    let parent_root = parent
        .as_ref()
        .and_then(|(_, snapshot)| walker.parent_listing(&snapshot.root));
    let root = match source {
        BackupSource::Paths(paths) => {
            let absolute: Vec<PathBuf> = paths
                .iter()
                .map(|path| absolute_normalised(path))
                .collect::<Result<_>>()?;
            match build_selection(&absolute) {
                Selection::Whole(path) => {
                    walker.enter_given_path(longpath::symlink_metadata(&path).ok().as_ref());
                    walker
                        .save_directory(&path, parent_root.as_ref())?
                        .ok_or_else(|| Error::Usage(format!("cannot read {}", path.display())))?
                }
                Selection::Parent(_, children) => {
                    walker.save_children(&children, parent_root.as_ref())?
                }
            }
        }
        BackupSource::Stream { name, reader } => {
            let (content_hash, chunks, counts) = walker
                .save_content(reader)?
                .map_err(|error| Error::local("read stream", &name, error))?;
            let length = counts.length;
            let previous = parent_root
                .as_ref()
                .and_then(|listing| listing.find(name.as_bytes()));
            walker.judge_content(Path::new(&name), counts, previous.is_some());
            walker.judge_size(Path::new(&name), file_size(previous), length);
            walker.summary.files = 1;
            walker.summary.bytes_processed = length;
            progress.file_read(Path::new(&name), length);
            progress.file_done(Path::new(&name), length);
            let node = Node {
                name: name.into_bytes(),
                kind: NodeKind::File {
                    content_hash,
                    chunks,
                },
                mode: 0o100_600,
                uid: 0,
                gid: 0,
                mtime: options.time,
                ctime: options.time,
                inode: 0,
                device: 0,
                size: length,
                extensions: Vec::new(),
            };
            walker.save_tree(Tree { nodes: vec![node] })?
        }
    };
    let Walker {
        warnings,
        skipped,
        changed,
        summary,
        files_unchanged,
        entries_excluded,
        mount_points,
        dedup_hostile,
        size_drops,
        ..
    } = walker;
    let (saver_stats, relied) = saver.finish_relied()?;
    Ok(Walked {
        source: snapshot_source,
        root,
        warnings,
        skipped,
        changed,
        summary,
        files_unchanged,
        entries_excluded,
        mount_points,
        dedup_hostile,
        size_drops,
        parent,
        latest_same_time,
        newest_time,
        saver: saver_stats,
        relied,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_nests_selected_paths() {
        assert_eq!(
            absolute_normalised(Path::new("/a/./b/../c")).unwrap(),
            PathBuf::from("/a/c")
        );
        let selection = build_selection(&[
            PathBuf::from("/srv/app/data"),
            PathBuf::from("/srv/app"),
            PathBuf::from("/etc/hosts"),
        ]);
        let Selection::Parent(_, top) = selection else {
            panic!("root should be a parent")
        };
        assert_eq!(top.len(), 2);
        let Selection::Parent(_, srv) = &top[&b"srv".to_vec()] else {
            panic!("srv should be a parent")
        };
        assert!(matches!(srv[&b"app".to_vec()], Selection::Whole(_)));
        assert!(matches!(
            build_selection(&[PathBuf::from("/")]),
            Selection::Whole(_)
        ));
    }

    #[test]
    fn stream_names_are_single_components() {
        assert!(validate_stream_name("app.archive").is_ok());
        for bad in ["", "..", "a/b", "x\0"] {
            assert!(validate_stream_name(bad).is_err());
        }
    }
}
