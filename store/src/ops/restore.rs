//! The restore and dump use cases: recreate a snapshot (or a path in it) below a target
//! directory, or stream one file; every chunk is authenticated and every file is compared with its
//! recorded hash before it takes its final name.
//!
//! Never prints. A file that cannot be restored is reported in the outcome and the others are
//! still restored (salvage); the caller decides the exit code.

use std::fs::{self, File, FileTimes, OpenOptions};
use std::io::{Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rayon::prelude::*;

use crate::crypto::id::{BlobType, Id};
use crate::error::{Error, Result};
use crate::format::tree::{Node, NodeKind, Timestamp};
use crate::ops::fsmeta::{self, MetadataWarning, OwnerMap, OwnerMapping};
use crate::policy::pathmatch::PathMatcher;
use crate::repo::fetch::{self, FetchedBlob};
use crate::repo::repository::Repository;

/// Receives progress during a restore. Every method has a no-op default.
pub trait RestoreProgress: Sync {
    /// The restore will write this many files and content bytes (known before the first write).
    fn planned(&self, _files: u64, _bytes: u64) {}
    /// Content bytes were written (called per written run of chunks, from several threads).
    fn bytes_written(&self, _bytes: u64) {}
    /// A file was restored and verified.
    fn file_done(&self, _path: &Path, _bytes: u64) {}
}

/// Progress sink that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoRestoreProgress;

impl RestoreProgress for NoRestoreProgress {}

/// What a restore did.
#[derive(Debug, Default)]
pub struct RestoreOutcome {
    /// Files restored and verified.
    pub files: u64,
    /// Directories created.
    pub directories: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// FIFOs and device nodes created.
    pub specials: u64,
    /// Hard links made to a file restored earlier in this restore.
    pub hard_links: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Entries that could not be restored, with the reason. Non-empty means the restore is
    /// incomplete.
    pub failed: Vec<(PathBuf, Error)>,
    /// Metadata or special files the target could not hold (no extended attributes or ACLs on
    /// its file system, no privilege for device nodes), hard links restored as copies or whose
    /// other links were not restored. Every file's content is restored and verified regardless.
    pub warnings: Vec<MetadataWarning>,
}

fn system_time(timestamp: Timestamp) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(timestamp.nanos));
    if timestamp.seconds >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(timestamp.seconds.unsigned_abs()) + nanos
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(timestamp.seconds.unsigned_abs()) + nanos
    }
}

/// Removes whatever non-directory sits at `path`, so that creating a directory there never
/// follows a symlink out of the target.
fn make_directory(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(metadata) if metadata.is_dir() => return Ok(()),
        Ok(_) => {
            fs::remove_file(path).map_err(|error| Error::local("replace", path, error))?;
        }
        Err(_) => {}
    }
    fs::create_dir(path).map_err(|error| Error::local("create directory", path, error))
}

struct FileJob {
    path: PathBuf,
    node: Node,
}

/// A later link of a hard-linked file: linked to the first one restored, once files are
/// written.
struct LinkJob {
    first: PathBuf,
    path: PathBuf,
    node: Node,
}

/// The links of one hard-linked file (same recorded device and inode) met in this restore.
struct LinkGroup {
    first: PathBuf,
    restored: u64,
    recorded: u64,
}

/// Which entries of a snapshot a restore takes, by their snapshot paths (see
/// [`crate::policy::pathmatch`]). An entry is restored when it or a directory above it matches an include
/// pattern (or there are none) and neither it nor a directory above it matches an exclude
/// pattern. Directories on the way to a restored entry are created with their recorded metadata.
#[derive(Debug, Clone, Default)]
pub struct RestoreFilter {
    /// Entries to take (empty: everything).
    pub includes: PathMatcher,
    /// Entries to leave out, with everything below them.
    pub excludes: PathMatcher,
}

impl RestoreFilter {
    /// Whether the filter takes everything.
    fn is_everything(&self) -> bool {
        self.includes.is_empty() && self.excludes.is_empty()
    }
}

/// Where a planned entry sits: its path in the snapshot (kept only while a filter is in effect)
/// and whether an include pattern already matched it or a directory above it.
#[derive(Debug, Clone)]
struct Position {
    snapshot_path: String,
    included: bool,
}

/// A directory on the way to entries a filter may or may not take: created only once something
/// below it is.
struct PendingDirectory {
    path: PathBuf,
    state: PendingState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PendingState {
    Waiting,
    Created,
    Failed,
}

struct Planner<'repo> {
    repository: &'repo Repository,
    filter: Option<&'repo RestoreFilter>,
    pending: Vec<PendingDirectory>,
    files: Vec<FileJob>,
    directories: Vec<(PathBuf, Node)>,
    outcome: RestoreOutcome,
    owners: OwnerMap,
    link_groups: std::collections::HashMap<(u64, u64), LinkGroup>,
    links: Vec<LinkJob>,
}

impl<'repo> Planner<'repo> {
    fn new(
        repository: &'repo Repository,
        filter: Option<&'repo RestoreFilter>,
        owners: OwnerMapping,
    ) -> Self {
        Self {
            repository,
            filter: filter.filter(|filter| !filter.is_everything()),
            pending: Vec::new(),
            files: Vec::new(),
            directories: Vec::new(),
            outcome: RestoreOutcome::default(),
            owners: OwnerMap::new(owners),
            link_groups: std::collections::HashMap::new(),
            links: Vec::new(),
        }
    }

    /// Queues a file, or a link to an earlier file of its hard link group.
    fn plan_file(&mut self, path: PathBuf, node: Node) {
        let recorded = node.link_count().unwrap_or(1);
        if recorded < 2 {
            self.files.push(FileJob { path, node });
            return;
        }
        match self.link_groups.entry((node.device, node.inode)) {
            std::collections::hash_map::Entry::Occupied(mut group) => {
                let group = group.get_mut();
                group.restored += 1;
                self.links.push(LinkJob {
                    first: group.first.clone(),
                    path,
                    node,
                });
            }
            std::collections::hash_map::Entry::Vacant(vacant) => {
                vacant.insert(LinkGroup {
                    first: path.clone(),
                    restored: 1,
                    recorded,
                });
                self.files.push(FileJob { path, node });
            }
        }
    }

    /// Warns about hard-linked files whose other links this restore does not hold (outside
    /// the restored path or filter, or outside what the backup read).
    fn warn_partial_link_groups(&mut self) {
        let mut partial: Vec<&LinkGroup> = self
            .link_groups
            .values()
            .filter(|group| group.restored < group.recorded)
            .collect();
        partial.sort_by(|a, b| a.first.cmp(&b.first));
        for group in partial {
            self.outcome.warnings.push(MetadataWarning {
                path: group.first.clone(),
                message: format!(
                    "had {} hard links, {} restored here: the others are outside what was \
                     restored",
                    group.recorded, group.restored
                ),
            });
        }
    }

    /// Creates directories and symlinks below `destination` for the tree `tree_id`, queuing files.
    fn plan_tree(&mut self, tree_id: &Id, destination: &Path, position: &Position) {
        let tree = match self.repository.load_tree(tree_id) {
            Ok(tree) => tree,
            Err(error) => {
                self.outcome.failed.push((destination.to_owned(), error));
                return;
            }
        };
        self.plan_nodes(tree, destination, position);
    }

    fn plan_nodes(
        &mut self,
        tree: crate::format::tree::Tree,
        destination: &Path,
        parent: &Position,
    ) {
        for node in tree.nodes {
            let path = destination.join(std::ffi::OsStr::from_bytes(&node.name));
            let snapshot_path = if self.filter.is_some() {
                format!(
                    "{}/{}",
                    parent.snapshot_path,
                    String::from_utf8_lossy(&node.name)
                )
            } else {
                String::new()
            };
            let position = Position {
                snapshot_path,
                included: parent.included,
            };
            self.plan_node(node, path, position);
        }
    }

    /// Creates the directories still waiting above the next restored entry; `false` when one
    /// cannot be created (already reported), so the entry is skipped.
    fn create_pending(&mut self) -> bool {
        for pending in &mut self.pending {
            match pending.state {
                PendingState::Created => {}
                PendingState::Failed => return false,
                PendingState::Waiting => match make_directory(&pending.path) {
                    Ok(()) => {
                        pending.state = PendingState::Created;
                        self.outcome.directories += 1;
                    }
                    Err(error) => {
                        pending.state = PendingState::Failed;
                        self.outcome.failed.push((pending.path.clone(), error));
                        return false;
                    }
                },
            }
        }
        true
    }

    fn plan_node(&mut self, mut node: Node, path: PathBuf, mut position: Position) {
        self.owners.map(&mut node);
        if let Some(filter) = self.filter {
            if filter.excludes.matches(&position.snapshot_path) {
                return;
            }
            position.included = position.included
                || filter.includes.is_empty()
                || filter.includes.matches(&position.snapshot_path);
        } else {
            position.included = true;
        }
        if let NodeKind::Directory { subtree } = &node.kind {
            // The listing first: a directory whose tree is lost is reported and not
            // created, so nothing empty stands in for it.
            let tree = match self.repository.load_tree(subtree) {
                Ok(tree) => tree,
                Err(error) => {
                    self.outcome.failed.push((path, error));
                    return;
                }
            };
            if !position.included {
                self.pending.push(PendingDirectory {
                    path: path.clone(),
                    state: PendingState::Waiting,
                });
                self.plan_nodes(tree, &path, &position);
                if self
                    .pending
                    .pop()
                    .is_some_and(|pending| pending.state == PendingState::Created)
                {
                    self.directories.push((path, node));
                }
                return;
            }
            if !self.create_pending() {
                return;
            }
            if let Err(error) = make_directory(&path) {
                self.outcome.failed.push((path, error));
                return;
            }
            self.outcome.directories += 1;
            self.plan_nodes(tree, &path, &position);
            self.directories.push((path, node));
            return;
        }
        if !position.included || !self.create_pending() {
            return;
        }
        match &node.kind {
            NodeKind::Symlink { target } => {
                let target = PathBuf::from(std::ffi::OsStr::from_bytes(target));
                if fs::symlink_metadata(&path).is_ok()
                    && let Err(error) = fs::remove_file(&path)
                {
                    self.outcome
                        .failed
                        .push((path.clone(), Error::local("replace", &path, error)));
                    return;
                }
                match std::os::unix::fs::symlink(&target, &path) {
                    Ok(()) => {
                        self.outcome.symlinks += 1;
                        let warnings = fsmeta::apply_path_metadata(&path, &node);
                        self.outcome.warnings.extend(warnings);
                    }
                    Err(error) => self
                        .outcome
                        .failed
                        .push((path.clone(), Error::local("create symlink", &path, error))),
                }
            }
            NodeKind::Fifo | NodeKind::Device { .. } => {
                match fsmeta::create_special(&path, &node) {
                    Ok(()) => {
                        self.outcome.specials += 1;
                        let warnings = fsmeta::apply_path_metadata(&path, &node);
                        self.outcome.warnings.extend(warnings);
                    }
                    Err(warning) => self.outcome.warnings.push(warning),
                }
            }
            NodeKind::File { .. } => self.plan_file(path, node),
            NodeKind::Directory { .. } => {}
        }
    }
}

/// Applies mode, owner (when permitted), extended attributes and times to a restored entry.
fn apply_metadata(path: &Path, node: &Node) -> Result<Vec<MetadataWarning>> {
    let file = File::open(path).map_err(|error| Error::local("open", path, error))?;
    apply_file_metadata(&file, path, node)
}

/// Applies mode, owner (when permitted), extended attributes and times through an open
/// handle; returns what the target could not hold.
fn apply_file_metadata(file: &File, path: &Path, node: &Node) -> Result<Vec<MetadataWarning>> {
    // Only root may give files away; for everyone else keeping their own ownership is right.
    // Ownership first: changing the owner clears set-id bits that the mode then restores, and
    // `security.capability`, which the attributes then restore. The access ACL comes after
    // the mode: setting it makes the group bits its mask, as they were recorded.
    let _ = std::os::unix::fs::fchown(file, Some(node.uid), Some(node.gid));
    file.set_permissions(fs::Permissions::from_mode(node.mode & 0o7777))
        .map_err(|error| Error::local("set permissions of", path, error))?;
    let warnings = fsmeta::apply_xattrs(fsmeta::Target::Open(file, path), node);
    file.set_times(
        FileTimes::new()
            .set_modified(system_time(node.mtime))
            .set_accessed(system_time(node.mtime)),
    )
    .map_err(|error| Error::local("set times of", path, error))?;
    Ok(warnings)
}

/// Plaintext bytes fetched per batch: bounds restore memory whatever the snapshot's size.
const BATCH_BYTES: u64 = 16 * 1024 * 1024;
/// Plaintext of blobs read ahead of need (see [`fetch::Prefetch`]): about two packs' worth, so
/// each pack is downloaded about once even though its blobs are shuffled.
const PREFETCH_BYTES: usize = 64 * 1024 * 1024;

/// A consecutive run of one file's chunks, restored within one batch.
#[derive(Debug, Clone)]
struct Segment {
    job: usize,
    chunks: std::ops::Range<usize>,
    last: bool,
}

/// A file being written through its temporary name.
struct OpenFile {
    temporary: PathBuf,
    writer: std::io::BufWriter<File>,
    hasher: blake3::Hasher,
    written: u64,
    /// The source was sparse: all-zero chunks are skipped over, leaving holes.
    sparse: bool,
}

/// All-zero chunks at least this long become holes in files that were sparse.
const HOLE_MIN: usize = 4096;

fn file_chunks(node: &Node) -> &[Id] {
    match &node.kind {
        NodeKind::File { chunks, .. } => chunks,
        _ => &[],
    }
}

fn temporary_path(path: &Path) -> PathBuf {
    let directory = path.parent().unwrap_or(Path::new("."));
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(".cairn-partial");
    directory.join(name)
}

fn open_file(repository: &Repository, path: &Path, sparse: bool) -> Result<OpenFile> {
    let temporary = temporary_path(path);
    let _ = fs::remove_file(&temporary);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temporary)
        .map_err(|error| Error::local("create", &temporary, error))?;
    Ok(OpenFile {
        temporary,
        writer: std::io::BufWriter::with_capacity(1 << 20, file),
        hasher: repository.keys().file_hasher(),
        written: 0,
        sparse,
    })
}

/// A chunk's plaintext from a fetch, or the error that names it.
fn fetched_plaintext<'blobs>(
    blobs: &'blobs std::collections::HashMap<Id, FetchedBlob>,
    chunk: &Id,
) -> Result<&'blobs [u8]> {
    match blobs.get(chunk) {
        Some(Ok(plaintext)) => Ok(plaintext),
        Some(Err(error)) => Err(Error::for_fetched(format!("data blob {chunk}"), error)),
        None => Err(Error::BlobMissing {
            blob_type: BlobType::Data.name(),
            id: *chunk,
        }),
    }
}

/// Appends fetched chunks to an open file.
fn write_chunks(
    open: &mut OpenFile,
    chunks: &[Id],
    blobs: &std::collections::HashMap<Id, FetchedBlob>,
    label: &Path,
) -> Result<()> {
    for chunk in chunks {
        let plaintext = fetched_plaintext(blobs, chunk)?;
        open.hasher.update(plaintext);
        if open.sparse && plaintext.len() >= HOLE_MIN && plaintext.iter().all(|byte| *byte == 0) {
            let length = i64::try_from(plaintext.len()).unwrap_or(i64::MAX);
            open.writer
                .seek(std::io::SeekFrom::Current(length))
                .map_err(|error| Error::local("write", label, error))?;
        } else {
            open.writer
                .write_all(plaintext)
                .map_err(|error| Error::local("write", label, error))?;
        }
        open.written += plaintext.len() as u64;
    }
    Ok(())
}

/// Checks the whole-file hash and size, then gives the file its metadata and final name. On
/// any failure (the last flush can be the write that finds the disk full) the temporary file
/// is removed: a failed file leaves nothing behind.
fn finish_file(open: OpenFile, job: &FileJob) -> Result<(u64, Vec<MetadataWarning>)> {
    let temporary = open.temporary.clone();
    let finished = verify_and_rename(open, job);
    if finished.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    finished
}

fn verify_and_rename(open: OpenFile, job: &FileJob) -> Result<(u64, Vec<MetadataWarning>)> {
    let NodeKind::File { content_hash, .. } = &job.node.kind else {
        return Err(Error::Usage(format!(
            "{} is not a file",
            job.path.display()
        )));
    };
    let OpenFile {
        temporary,
        writer,
        hasher,
        written,
        ..
    } = open;
    let file = writer
        .into_inner()
        .map_err(|error| Error::local("write", &job.path, error.into_error()))?;
    // A trailing hole is only a seek: give the file its full length.
    file.set_len(written)
        .map_err(|error| Error::local("write", &job.path, error))?;
    if Id(*hasher.finalize().as_bytes()) != *content_hash || written != job.node.size {
        return Err(Error::ContentMismatch(job.path.clone()));
    }
    let mut warnings = match apply_file_metadata(&file, &temporary, &job.node) {
        Ok(warnings) => warnings,
        Err(error) => {
            let _ = fs::remove_file(&temporary);
            return Err(error);
        }
    };
    drop(file);
    fs::rename(&temporary, &job.path)
        .map_err(|error| Error::local("rename into place", &job.path, error))?;
    // Warnings name the final path, not the temporary one.
    for warning in &mut warnings {
        warning.path.clone_from(&job.path);
    }
    Ok((written, warnings))
}

/// Splits the files into batches of segments of at most about [`BATCH_BYTES`] of plaintext.
fn plan_batches(repository: &Repository, files: &[FileJob]) -> Result<Vec<Vec<Segment>>> {
    let mut batches = Vec::new();
    let mut batch: Vec<Segment> = Vec::new();
    let mut batch_bytes = 0u64;
    for (job, file) in files.iter().enumerate() {
        let chunks = file_chunks(&file.node);
        let windows = if chunks.is_empty() {
            vec![(0..0, 0)]
        } else {
            fetch::windows(repository, chunks, BATCH_BYTES)?
        };
        let count = windows.len();
        for (position, (window, bytes)) in windows.into_iter().enumerate() {
            // A file never has two segments in one batch, so each segment owns its open file.
            if !batch.is_empty() && (batch_bytes + bytes > BATCH_BYTES || position > 0) {
                batches.push(std::mem::take(&mut batch));
                batch_bytes = 0;
            }
            batch_bytes += bytes;
            batch.push(Segment {
                job,
                chunks: window,
                last: position + 1 == count,
            });
        }
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    Ok(batches)
}

/// Restores every queued file, batch by batch: one coalesced fetch per batch, then the batch's
/// files written in parallel.
fn restore_files(
    repository: &Repository,
    files: &[FileJob],
    progress: &dyn RestoreProgress,
    outcome: &mut RestoreOutcome,
) -> Result<()> {
    let mut open_files: std::collections::HashMap<usize, OpenFile> =
        std::collections::HashMap::new();
    let mut failed: std::collections::HashSet<usize> = std::collections::HashSet::new();
    let batches = plan_batches(repository, files)?;
    progress.planned(
        files.len() as u64,
        files.iter().map(|file| file.node.size).sum(),
    );
    let prefetch = fetch::Prefetch::new(PREFETCH_BYTES);
    // Fetch the next batch while the current one is written: one batch in the channel, one being
    // fetched, one being written bound the memory.
    let (sender, receiver) = std::sync::mpsc::sync_channel::<Result<FetchedBatch>>(1);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for batch in batches {
                let ids: Vec<Id> = batch
                    .iter()
                    .flat_map(|segment| {
                        file_chunks(&files[segment.job].node)[segment.chunks.clone()]
                            .iter()
                            .copied()
                    })
                    .collect();
                let fetched = fetch::fetch_data_blobs(repository, &ids, Some(&prefetch))
                    .map(|blobs| (batch, blobs));
                let stop = fetched.is_err();
                if sender.send(fetched).is_err() || stop {
                    return;
                }
            }
        });
        for fetched in receiver {
            let (batch, blobs) = fetched?;
            write_batch(
                repository,
                files,
                progress,
                outcome,
                &mut open_files,
                &mut failed,
                batch,
                &blobs,
            );
        }
        Ok(())
    })
}

/// A file finished by a segment: its bytes and the metadata its target could not hold.
type FinishedFile = Option<(u64, Vec<MetadataWarning>)>;

/// A batch's segments with the blobs they need.
type FetchedBatch = (Vec<Segment>, std::collections::HashMap<Id, FetchedBlob>);

/// Writes one fetched batch: every segment's chunks appended to its file, files finished when
/// their last segment is written.
#[allow(clippy::too_many_arguments)]
fn write_batch(
    repository: &Repository,
    files: &[FileJob],
    progress: &dyn RestoreProgress,
    outcome: &mut RestoreOutcome,
    open_files: &mut std::collections::HashMap<usize, OpenFile>,
    failed: &mut std::collections::HashSet<usize>,
    batch: Vec<Segment>,
    blobs: &std::collections::HashMap<Id, FetchedBlob>,
) {
    {
        let segments: Vec<Segment> = batch
            .into_iter()
            .filter(|segment| !failed.contains(&segment.job))
            .collect();
        let work: Vec<(Segment, Option<OpenFile>)> = segments
            .into_iter()
            .map(|segment| {
                let open = open_files.remove(&segment.job);
                (segment, open)
            })
            .collect();
        let results: Vec<(Segment, Result<Option<OpenFile>>, FinishedFile)> =
            repository.io_pool().install(|| {
                work.into_par_iter()
                    .map(|(segment, open)| {
                        let job = &files[segment.job];
                        let step = (|| {
                            let mut open = match open {
                                Some(open) => open,
                                None => open_file(repository, &job.path, job.node.is_sparse())?,
                            };
                            let chunks = &file_chunks(&job.node)[segment.chunks.clone()];
                            let before = open.written;
                            if let Err(error) = write_chunks(&mut open, chunks, blobs, &job.path) {
                                let _ = fs::remove_file(&open.temporary);
                                return Err(error);
                            }
                            progress.bytes_written(open.written - before);
                            if segment.last {
                                let (bytes, warnings) = finish_file(open, job)?;
                                progress.file_done(&job.path, bytes);
                                return Ok((None, Some((bytes, warnings))));
                            }
                            Ok((Some(open), None))
                        })();
                        match step {
                            Ok((open, done)) => (segment, Ok(open), done),
                            Err(error) => (segment, Err(error), None),
                        }
                    })
                    .collect()
            });
        for (segment, result, done) in results {
            match result {
                Ok(Some(open)) => {
                    open_files.insert(segment.job, open);
                }
                Ok(None) => {
                    if let Some((bytes, warnings)) = done {
                        outcome.files += 1;
                        outcome.bytes += bytes;
                        outcome.warnings.extend(warnings);
                    }
                }
                Err(error) => {
                    failed.insert(segment.job);
                    outcome
                        .failed
                        .push((files[segment.job].path.clone(), error));
                }
            }
        }
    }
}

/// Restores `path` of the snapshot whose root tree is `root` into `target`. With an empty path
/// the snapshot's whole tree is recreated below `target`; with a directory path its contents
/// land directly in `target`; a file or symlink path lands as `target/<name>`.
///
/// # Errors
/// [`Error::PathNotFound`], failure to create `target`, or failure to read the first tree.
/// Per-entry failures are collected in [`RestoreOutcome::failed`] instead.
pub fn restore(
    repository: &Repository,
    root: &Id,
    path: &str,
    target: &Path,
    progress: &dyn RestoreProgress,
) -> Result<RestoreOutcome> {
    restore_filtered(
        repository,
        root,
        path,
        target,
        &RestoreFilter::default(),
        OwnerMapping::default(),
        progress,
    )
}

/// As [`restore`], taking only the entries `filter` selects (matched on their full snapshot
/// paths, also when `path` names a directory inside the snapshot), with owners chosen by
/// `owners`.
///
/// # Errors
/// As [`restore`].
pub fn restore_filtered(
    repository: &Repository,
    root: &Id,
    path: &str,
    target: &Path,
    filter: &RestoreFilter,
    owners: OwnerMapping,
    progress: &dyn RestoreProgress,
) -> Result<RestoreOutcome> {
    repository.sync_index()?;
    let start = repository.find_node(root, path)?;
    fs::create_dir_all(target).map_err(|error| Error::local("create target", target, error))?;
    let mut planner = Planner::new(repository, Some(filter), owners);
    let components: Vec<&str> = path.split('/').filter(|part| !part.is_empty()).collect();
    let start_path = if components.is_empty() {
        String::new()
    } else {
        format!("/{}", components.join("/"))
    };
    match start {
        None => {
            repository.load_tree(root)?;
            let position = Position {
                snapshot_path: start_path,
                included: false,
            };
            planner.plan_tree(root, target, &position);
        }
        Some(node) => {
            let position = Position {
                snapshot_path: start_path,
                included: false,
            };
            if let NodeKind::Directory { subtree } = &node.kind {
                let subtree = *subtree;
                // The start directory itself is the target: a filter judges what is inside it.
                let inside = match planner.filter {
                    Some(filter) if filter.excludes.matches(&position.snapshot_path) => None,
                    Some(filter) => Some(Position {
                        included: filter.includes.is_empty()
                            || filter.includes.matches(&position.snapshot_path),
                        ..position
                    }),
                    None => Some(position),
                };
                if let Some(inside) = inside {
                    planner.plan_tree(&subtree, target, &inside);
                    planner.directories.push((target.to_owned(), node));
                }
            } else {
                let name = std::ffi::OsStr::from_bytes(&node.name).to_owned();
                planner.plan_node(node, target.join(name), position);
            }
        }
    }
    complete(repository, planner, progress)
}

/// Writes the planned files, makes the planned hard links, then applies the directories'
/// metadata, children first, so setting a directory's mtime is not undone by writing into it.
fn complete(
    repository: &Repository,
    mut planner: Planner<'_>,
    progress: &dyn RestoreProgress,
) -> Result<RestoreOutcome> {
    planner.warn_partial_link_groups();
    let Planner {
        files,
        directories,
        mut outcome,
        links,
        ..
    } = planner;
    restore_files(repository, &files, progress, &mut outcome)?;
    let copies = make_links(links, &mut outcome);
    if !copies.is_empty() {
        restore_files(repository, &copies, progress, &mut outcome)?;
    }
    for (path, node) in &directories {
        match apply_metadata(path, node) {
            Ok(warnings) => outcome.warnings.extend(warnings),
            Err(error) => outcome.failed.push((path.clone(), error)),
        }
    }
    Ok(outcome)
}

/// Links each later link of a hard-linked file to its first link restored. A link that cannot
/// be made (the first link failed, a file system without hard links) is returned as a file to
/// restore as a separate copy, with a warning.
fn make_links(links: Vec<LinkJob>, outcome: &mut RestoreOutcome) -> Vec<FileJob> {
    let failed: std::collections::HashSet<PathBuf> = outcome
        .failed
        .iter()
        .map(|(path, _)| path.clone())
        .collect();
    let mut copies = Vec::new();
    for link in links {
        let linked = if failed.contains(&link.first) {
            Err("its first link was not restored".to_owned())
        } else {
            if let Ok(metadata) = fs::symlink_metadata(&link.path)
                && !metadata.is_dir()
            {
                let _ = fs::remove_file(&link.path);
            }
            fs::hard_link(&link.first, &link.path).map_err(|error| error.to_string())
        };
        match linked {
            Ok(()) => outcome.hard_links += 1,
            Err(reason) => {
                outcome.warnings.push(MetadataWarning {
                    path: link.path.clone(),
                    message: format!(
                        "cannot hard-link to {}: {reason}; restored as a separate copy",
                        link.first.display()
                    ),
                });
                copies.push(FileJob {
                    path: link.path,
                    node: link.node,
                });
            }
        }
    }
    copies
}

/// Restores chosen entries of a snapshot, each at `target/<relative path>` (a path of plain
/// names; parent directories are created plainly, without their recorded metadata), with the
/// batching and verification of
/// [`restore`]. For a sample of files (see [`crate::ops::drill`]) without walking the trees again.
///
/// # Errors
/// Failure to create `target`, or a store failure that stops the fetches. Per-entry failures
/// (including parents that cannot be created) are collected in [`RestoreOutcome::failed`].
pub fn restore_nodes(
    repository: &Repository,
    nodes: Vec<(PathBuf, Node)>,
    target: &Path,
    progress: &dyn RestoreProgress,
) -> Result<RestoreOutcome> {
    repository.sync_index()?;
    fs::create_dir_all(target).map_err(|error| Error::local("create target", target, error))?;
    let mut planner = Planner::new(repository, None, OwnerMapping::default());
    for (relative, node) in nodes {
        let path = target.join(&relative);
        // Never outside `target`: only plain names (no root, `..` or `.`).
        if !relative
            .components()
            .all(|component| matches!(component, std::path::Component::Normal(_)))
        {
            let reason = format!("{} is not a relative path", relative.display());
            planner.outcome.failed.push((path, Error::Usage(reason)));
            continue;
        }
        if let Some(parent) = path.parent()
            && let Err(error) = fs::create_dir_all(parent)
        {
            planner.outcome.failed.push((
                path.clone(),
                Error::local("create directory", parent, error),
            ));
            continue;
        }
        let position = Position {
            snapshot_path: String::new(),
            included: true,
        };
        planner.plan_node(node, path, position);
    }
    complete(repository, planner, progress)
}

/// Writes the file at `path` in the snapshot to `out`, verifying every chunk and, at the end, the
/// whole-file hash.
///
/// # Errors
/// [`Error::PathNotFound`] when `path` is not a file of the snapshot, [`Error::ContentMismatch`]
/// or [`Error::Damaged`] when content does not verify (bytes already written stay written), or
/// write failures.
pub fn dump(repository: &Repository, root: &Id, path: &str, out: &mut dyn Write) -> Result<u64> {
    repository.sync_index()?;
    let node = repository
        .find_node(root, path)?
        .filter(|node| matches!(node.kind, NodeKind::File { .. }))
        .ok_or_else(|| Error::PathNotFound(path.to_owned()))?;
    let NodeKind::File {
        content_hash,
        chunks,
    } = &node.kind
    else {
        return Err(Error::PathNotFound(path.to_owned()));
    };
    let label = Path::new(path);
    let prefetch = fetch::Prefetch::new(PREFETCH_BYTES);
    let mut hasher = repository.keys().file_hasher();
    let mut written = 0u64;
    for (window, _) in fetch::windows(repository, chunks, BATCH_BYTES)? {
        let blobs = fetch::fetch_data_blobs(repository, &chunks[window.clone()], Some(&prefetch))?;
        for chunk in &chunks[window] {
            let plaintext = fetched_plaintext(&blobs, chunk)?;
            hasher.update(plaintext);
            out.write_all(plaintext)
                .map_err(|error| Error::local("write", label, error))?;
            written += plaintext.len() as u64;
        }
    }
    if Id(*hasher.finalize().as_bytes()) != *content_hash || written != node.size {
        return Err(Error::ContentMismatch(label.to_owned()));
    }
    out.flush()
        .map_err(|error| Error::local("write", Path::new(path), error))?;
    Ok(written)
}
