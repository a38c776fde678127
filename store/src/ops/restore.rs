//! The restore and dump use cases: recreate a snapshot (or a path in it) below a target
//! directory, or stream one file; every chunk is authenticated and every file is compared with its
//! recorded hash before it takes its final name.
//!
//! Never prints. A file that cannot be restored is reported in the outcome and the others are
//! still restored (salvage); the caller decides the exit code.
//!
//! Private by construction: files are created 0600 under short temporary names and directories
//! 0700, whatever the umask; recorded metadata is applied last (`apply_final_metadata`: a file
//! just before it takes its final name, directories after everything below them, deepest
//! first), so a stopped or killed restore never shows another user what the snapshot kept
//! private. What already stands in the target is handled by [`Overwrite`] (see
//! [`crate::policy::overwrite`]), `delete` and `dry_run` of [`RestoreOptions`].

use std::collections::HashSet;
use std::fs::{self, File, FileTimes};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::crypto::id::{BlobType, Id};
use crate::error::{Error, Result};
use crate::format::tree::{Node, NodeKind, Timestamp};
use crate::ops::fsmeta::{self, MetadataWarning, OwnerMap, OwnerMapping};
use crate::ops::longpath;
use crate::ops::restore_packs;
use crate::policy::overwrite::{self, Decision, EntryKind, Existing, Overwrite};
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
    /// What the restore does (or, with `dry_run`, would do) at `path`, decided before it acts.
    fn entry(&self, _path: &Path, _action: EntryAction) {}
}

/// What a restore does with one path of its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryAction {
    /// Nothing stood there: the snapshot's entry is created.
    Create,
    /// Something stood there and is replaced by the snapshot's entry.
    Replace,
    /// What stands there stays: it already holds the snapshot's content, it is a directory
    /// restored into, or the overwrite mode forbids replacing it.
    Keep,
    /// Not in the snapshot, removed (`delete`).
    Delete,
}

/// An entry of one kind found where the snapshot has another kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindChange {
    /// The path in the target.
    pub path: PathBuf,
    /// What stood there.
    pub found: EntryKind,
    /// What the snapshot has there.
    pub wanted: EntryKind,
    /// Whether it was (with `dry_run`: would be) replaced; otherwise it was kept.
    pub replaced: bool,
}

/// How a restore treats the target and what it takes from the snapshot.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Which entries of the snapshot to take.
    pub filter: RestoreFilter,
    /// What to do with entries that already exist in the target.
    pub overwrite: Overwrite,
    /// Remove entries of the target that the snapshot does not have, in the directories the
    /// restore takes whole (never above the restored paths, never what the filter leaves out).
    pub delete: bool,
    /// Decide and report everything, write nothing.
    pub dry_run: bool,
    /// How owners and groups are chosen (by recorded name, or the recorded ids).
    pub owners: OwnerMapping,
}

/// Progress sink that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoRestoreProgress;

impl RestoreProgress for NoRestoreProgress {}

/// What a restore did.
#[derive(Debug, Default)]
pub struct RestoreOutcome {
    /// Files written and verified (files kept with the same content are counted in `kept`).
    pub files: u64,
    /// Directories created or restored into (not those left alone by `Overwrite::Never`).
    pub directories: u64,
    /// Symlinks created or kept with the same target.
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
    /// Entries created where nothing stood (with `dry_run`: that would be).
    pub created: u64,
    /// Entries that replaced what stood at their place.
    pub replaced: u64,
    /// Entries left as they stood (same content, a directory restored into, or not to be
    /// overwritten).
    pub kept: u64,
    /// Entries of the target removed because the snapshot does not have them.
    pub deleted: u64,
    /// Entries of one kind found where the snapshot has another, replaced or kept.
    pub kind_changes: Vec<KindChange>,
}

impl RestoreOutcome {
    fn count(&mut self, action: EntryAction) {
        match action {
            EntryAction::Create => self.created += 1,
            EntryAction::Replace => self.replaced += 1,
            EntryAction::Keep => self.kept += 1,
            EntryAction::Delete => self.deleted += 1,
        }
    }
}

fn system_time(timestamp: Timestamp) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(timestamp.nanos));
    if timestamp.seconds >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(timestamp.seconds.unsigned_abs()) + nanos
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(timestamp.seconds.unsigned_abs()) + nanos
    }
}

/// Creates a directory 0700 (whatever the umask): its recorded mode is applied only after
/// everything below it is restored.
fn create_private_directory(path: &Path) -> Result<()> {
    longpath::create_dir(path, 0o700).map_err(|error| Error::local("create directory", path, error))
}

/// A directory of the target restored into: while the restore runs, it grants group and others
/// no more than both its present mode and the recorded one (an existing 0755 directory recorded
/// 0700 becomes 0700 at once, not at the end), and its owner full access. Its recorded mode is
/// applied at the end, as for created directories.
fn narrow_existing_directory(path: &Path, recorded_mode: u32) -> Result<()> {
    let present = longpath::symlink_metadata(path)
        .map_err(|error| Error::local("read metadata of", path, error))?
        .mode()
        & 0o7777;
    let narrowed = 0o700 | (present & recorded_mode & 0o077);
    if narrowed == present {
        return Ok(());
    }
    longpath::set_mode(path, narrowed)
        .map_err(|error| Error::local("set permissions of", path, error))
}

/// The kind of a node.
fn node_kind(node: &Node) -> EntryKind {
    match node.kind {
        NodeKind::File { .. } => EntryKind::File,
        NodeKind::Directory { .. } => EntryKind::Directory,
        NodeKind::Symlink { .. } => EntryKind::Symlink,
        NodeKind::Fifo | NodeKind::Device { .. } => EntryKind::Other,
    }
}

/// What stands at `path` (not following a symlink there).
fn existing_at(path: &Path) -> Option<Existing> {
    let metadata = longpath::symlink_metadata(path).ok()?;
    let file_type = metadata.file_type();
    let kind = if file_type.is_file() {
        EntryKind::File
    } else if file_type.is_dir() {
        EntryKind::Directory
    } else if file_type.is_symlink() {
        EntryKind::Symlink
    } else {
        EntryKind::Other
    };
    Some(Existing {
        kind,
        mtime: Timestamp {
            seconds: metadata.mtime(),
            nanos: u32::try_from(metadata.mtime_nsec()).unwrap_or(0),
        },
    })
}

/// Whether the entry at `path` (of the node's kind) already holds the node's content: a file of
/// the same size and keyed hash, or a symlink with the same target.
fn holds_content(repository: &Repository, path: &Path, node: &Node) -> bool {
    match &node.kind {
        NodeKind::File { content_hash, .. } => {
            let Ok(mut file) = longpath::open(path) else {
                return false;
            };
            if file.metadata().map(|metadata| metadata.len()).ok() != Some(node.size) {
                return false;
            }
            let mut hasher = repository.keys().file_hasher();
            let mut buffer = vec![0u8; 1 << 20];
            loop {
                match file.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(read) => {
                        hasher.update(&buffer[..read]);
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
            Id(*hasher.finalize().as_bytes()) == *content_hash
        }
        NodeKind::Symlink { target } => longpath::read_link(path)
            .is_ok_and(|found| found.as_os_str().as_bytes() == target.as_slice()),
        // Recreated rather than compared (opening a FIFO to read it would block).
        NodeKind::Fifo | NodeKind::Device { .. } | NodeKind::Directory { .. } => false,
    }
}

/// Removes what stands at `path` (a whole directory tree when it is one; never follows a
/// symlink).
fn remove_entry(path: &Path, existing: Existing) -> Result<()> {
    let removed = if existing.kind == EntryKind::Directory {
        longpath::remove_dir_all(path)
    } else {
        longpath::remove_file(path)
    };
    removed.map_err(|error| Error::local("remove", path, error))
}

/// A file to restore.
pub(crate) struct FileJob {
    /// Its final path.
    pub(crate) path: PathBuf,
    /// Its snapshot node.
    pub(crate) node: Node,
    /// Created or replaced, counted once the file is in place.
    action: EntryAction,
}

/// A later link of a hard-linked file: linked to the first one restored, once files are
/// written.
struct LinkJob {
    first: PathBuf,
    path: PathBuf,
    node: Node,
    /// Created or replaced, counted once the link is made.
    action: EntryAction,
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
    node: Node,
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
    overwrite: Overwrite,
    delete: bool,
    dry_run: bool,
    progress: &'repo dyn RestoreProgress,
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
        options: &'repo RestoreOptions,
        progress: &'repo dyn RestoreProgress,
    ) -> Self {
        Self {
            repository,
            filter: Some(&options.filter).filter(|filter| !filter.is_everything()),
            overwrite: options.overwrite,
            delete: options.delete,
            dry_run: options.dry_run,
            progress,
            pending: Vec::new(),
            files: Vec::new(),
            directories: Vec::new(),
            outcome: RestoreOutcome::default(),
            owners: OwnerMap::new(options.owners),
            link_groups: std::collections::HashMap::new(),
            links: Vec::new(),
        }
    }

    /// Queues a file, or a link to an earlier file of its hard link group.
    fn plan_file(&mut self, path: PathBuf, node: Node, action: EntryAction) {
        let recorded = node.link_count().unwrap_or(1);
        if recorded < 2 {
            self.files.push(FileJob { path, node, action });
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
                    action,
                });
            }
            std::collections::hash_map::Entry::Vacant(vacant) => {
                vacant.insert(LinkGroup {
                    first: path.clone(),
                    restored: 1,
                    recorded,
                });
                self.files.push(FileJob { path, node, action });
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

    /// Decides what happens at `path` for `node`, reports it, and (unless a dry run) clears
    /// the way: removes what is replaced, except a file or symlink over a file, which the
    /// final rename replaces at once. `None`: nothing is to be written there (kept, or the
    /// removal failed and is reported).
    fn clear_the_way(&mut self, path: &Path, node: &Node) -> Option<Decision> {
        let wanted = node_kind(node);
        let existing = existing_at(path);
        let repository = self.repository;
        let decision = overwrite::decide(self.overwrite, wanted, node.mtime, existing, || {
            holds_content(repository, path, node)
        });
        if let Some(found) = existing
            && found.kind != wanted
        {
            self.outcome.kind_changes.push(KindChange {
                path: path.to_owned(),
                found: found.kind,
                wanted,
                replaced: decision == Decision::Replace,
            });
        }
        let action = match decision {
            Decision::Create => EntryAction::Create,
            Decision::Replace => EntryAction::Replace,
            Decision::Reuse | Decision::Keep => EntryAction::Keep,
        };
        self.progress.entry(path, action);
        // A file to write is counted once it is in place.
        if wanted != EntryKind::File || self.dry_run || action == EntryAction::Keep {
            self.outcome.count(action);
        }
        if decision == Decision::Replace
            && !self.dry_run
            && let Some(found) = existing
            && !(wanted == EntryKind::File && found.kind == EntryKind::File)
            && let Err(error) = remove_entry(path, found)
        {
            self.outcome.failed.push((path.to_owned(), error));
            return None;
        }
        if decision == Decision::Keep
            && !(wanted == EntryKind::Directory
                && existing.is_some_and(|found| found.kind == EntryKind::Directory))
        {
            return None;
        }
        Some(decision)
    }

    /// Makes `path` a directory to restore into, as `decision` says; `false` when it cannot be
    /// (reported).
    fn make_directory(&mut self, path: &Path, node: &Node, decision: Decision) -> bool {
        if self.dry_run || decision == Decision::Keep {
            return true;
        }
        if decision == Decision::Reuse {
            if let Err(error) = narrow_existing_directory(path, node.mode) {
                self.outcome.failed.push((path.to_owned(), error));
                return false;
            }
            return true;
        }
        match create_private_directory(path) {
            Ok(()) => true,
            Err(error) => {
                self.outcome.failed.push((path.to_owned(), error));
                false
            }
        }
    }

    /// In a directory that stood in the target before the restore: removes temporary files an
    /// interrupted restore left, and with `delete` every entry the snapshot's directory does
    /// not have (`names`) and the filter would take.
    fn tidy_directory(&mut self, path: &Path, names: &HashSet<Vec<u8>>, position: &Position) {
        let Ok(listing) = longpath::list_names(path) else {
            return;
        };
        for name in listing {
            let entry_path = path.join(&name);
            let name = name.as_bytes();
            if name.starts_with(TEMPORARY_PREFIX.as_bytes()) {
                if !self.dry_run {
                    let _ = longpath::remove_file(&entry_path);
                }
                continue;
            }
            if !self.delete || names.contains(name) {
                continue;
            }
            if let Some(filter) = self.filter {
                let snapshot_path = format!(
                    "{}/{}",
                    position.snapshot_path,
                    String::from_utf8_lossy(name)
                );
                if filter.excludes.matches(&snapshot_path)
                    || !(position.included || filter.includes.matches(&snapshot_path))
                {
                    continue;
                }
            }
            let Some(found) = existing_at(&entry_path) else {
                continue;
            };
            self.progress.entry(&entry_path, EntryAction::Delete);
            if !self.dry_run
                && let Err(error) = remove_entry(&entry_path, found)
            {
                self.outcome.failed.push((entry_path, error));
                continue;
            }
            self.outcome.count(EntryAction::Delete);
        }
    }

    /// Plans the entries of `tree` below `destination`; `existed`: the directory stood there
    /// before the restore (so it may hold leftovers and, with `delete`, extra entries).
    fn plan_nodes(
        &mut self,
        tree: crate::format::tree::Tree,
        destination: &Path,
        parent: &Position,
        existed: bool,
    ) {
        if existed && parent.included {
            let names: HashSet<Vec<u8>> = tree.nodes.iter().map(|node| node.name.clone()).collect();
            self.tidy_directory(destination, &names, parent);
        }
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
        // Directories are created top-down, so the created ones are the bottom of the stack:
        // start above them (a deep chain of waiting directories is not walked per entry).
        let first = self
            .pending
            .iter()
            .rposition(|pending| pending.state == PendingState::Created)
            .map_or(0, |created| created + 1);
        for index in first..self.pending.len() {
            let pending = &self.pending[index];
            match pending.state {
                PendingState::Created => {}
                PendingState::Failed => return false,
                PendingState::Waiting => {
                    let path = pending.path.clone();
                    let node = pending.node.clone();
                    let made = self
                        .clear_the_way(&path, &node)
                        .is_some_and(|decision| self.make_directory(&path, &node, decision));
                    let pending = &mut self.pending[index];
                    if !made {
                        pending.state = PendingState::Failed;
                        return false;
                    }
                    pending.state = PendingState::Created;
                    self.outcome.directories += 1;
                }
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
                    node: node.clone(),
                    state: PendingState::Waiting,
                });
                self.plan_nodes(tree, &path, &position, false);
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
            let Some(decision) = self.clear_the_way(&path, &node) else {
                return;
            };
            if !self.make_directory(&path, &node, decision) {
                return;
            }
            if decision != Decision::Keep {
                self.outcome.directories += 1;
            }
            let existed = matches!(decision, Decision::Reuse | Decision::Keep);
            self.plan_nodes(tree, &path, &position, existed);
            if decision != Decision::Keep {
                self.directories.push((path, node));
            }
            return;
        }
        if !position.included || !self.create_pending() {
            return;
        }
        let Some(decision) = self.clear_the_way(&path, &node) else {
            return;
        };
        if self.dry_run {
            return;
        }
        match (&node.kind, decision) {
            (_, Decision::Keep) | (NodeKind::Directory { .. }, _) => {}
            (NodeKind::Symlink { .. }, Decision::Reuse) => self.outcome.symlinks += 1,
            (NodeKind::Symlink { target }, _) => {
                let target = PathBuf::from(std::ffi::OsStr::from_bytes(target));
                // A symlink replacing a file: the file is still there (see clear_the_way).
                if decision == Decision::Replace
                    && existing_at(&path).is_some()
                    && let Err(error) = longpath::remove_file(&path)
                {
                    self.outcome
                        .failed
                        .push((path.clone(), Error::local("replace", &path, error)));
                    return;
                }
                match longpath::symlink(&target, &path) {
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
            (NodeKind::Fifo | NodeKind::Device { .. }, _) => {
                match fsmeta::create_special(&path, &node) {
                    Ok(()) => {
                        self.outcome.specials += 1;
                        let warnings = fsmeta::apply_path_metadata(&path, &node);
                        self.outcome.warnings.extend(warnings);
                    }
                    Err(warning) => self.outcome.warnings.push(warning),
                }
            }
            (NodeKind::File { .. }, Decision::Reuse) => {
                // Same content: only the recorded metadata is set again.
                let applied = longpath::open(&path)
                    .map_err(|error| Error::local("open", &path, error))
                    .and_then(|file| apply_final_metadata(&file, &path, &node));
                match applied {
                    Ok(warnings) => self.outcome.warnings.extend(warnings),
                    Err(error) => self.outcome.failed.push((path, error)),
                }
            }
            (NodeKind::File { .. }, _) => {
                let action = if decision == Decision::Create {
                    EntryAction::Create
                } else {
                    EntryAction::Replace
                };
                self.plan_file(path, node, action);
            }
        }
    }
}

/// Applies a directory's recorded metadata once everything below it is restored; returns what
/// the target could not hold.
fn apply_metadata(path: &Path, node: &Node) -> Result<Vec<MetadataWarning>> {
    let file = longpath::open(path).map_err(|error| Error::local("open", path, error))?;
    apply_final_metadata(&file, path, node)
}

/// The one place that gives a restored entry its recorded metadata (owner when permitted, mode,
/// extended attributes and ACLs, times), through an open handle; returns what the target could
/// not hold. Called last for each entry: a file's just before it takes its final name, a
/// directory's after everything below it (deepest first), so nothing is ever wider open than
/// the snapshot says, even mid-restore.
pub(crate) fn apply_final_metadata(
    file: &File,
    path: &Path,
    node: &Node,
) -> Result<Vec<MetadataWarning>> {
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

/// The start of every temporary name: short, so that a temporary name is never longer than
/// the longest final name (a 255-byte name restores), and recognisable, so that the next
/// restore into the same directory removes what a killed one left.
const TEMPORARY_PREFIX: &str = ".cairn-partial-";

/// A file node's chunk ids (none for other nodes).
pub(crate) fn file_chunks(node: &Node) -> &[Id] {
    match &node.kind {
        NodeKind::File { chunks, .. } => chunks,
        _ => &[],
    }
}

/// A temporary name beside `path`: the prefix, this process's id and a counter (at most 48
/// bytes, whatever the length of the final name).
pub(crate) fn temporary_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let directory = path.parent().unwrap_or(Path::new("."));
    let number = COUNTER.fetch_add(1, Ordering::Relaxed);
    directory.join(format!(
        "{TEMPORARY_PREFIX}{:x}-{number:x}",
        std::process::id()
    ))
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

/// Restores every queued file: content read pack by pack and written in place
/// ([`crate::ops::restore_packs`]), each file verified and named when its last chunk lands;
/// outcomes are counted in the order of `files`.
fn restore_files(
    repository: &Repository,
    files: &[FileJob],
    progress: &dyn RestoreProgress,
    outcome: &mut RestoreOutcome,
) -> Result<()> {
    progress.planned(
        files.len() as u64,
        files.iter().map(|file| file.node.size).sum(),
    );
    let results = restore_packs::write_files(repository, files, progress)?;
    for (job, result) in files.iter().zip(results) {
        match result {
            Ok((bytes, warnings)) => {
                outcome.files += 1;
                outcome.bytes += bytes;
                outcome.warnings.extend(warnings);
                outcome.count(job.action);
            }
            Err(error) => outcome.failed.push((job.path.clone(), error)),
        }
    }
    Ok(())
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
    restore_with(
        repository,
        root,
        path,
        target,
        &RestoreOptions::default(),
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
    let options = RestoreOptions {
        filter: filter.clone(),
        owners,
        ..RestoreOptions::default()
    };
    restore_with(repository, root, path, target, &options, progress)
}

/// As [`restore`], with a filter, an overwrite mode, `delete` and `dry_run` (see
/// [`RestoreOptions`]). A dry run reads the snapshot's trees and the target (and, for
/// `if-changed`, the content of same-sized files), and writes nothing.
///
/// # Errors
/// As [`restore`].
pub fn restore_with(
    repository: &Repository,
    root: &Id,
    path: &str,
    target: &Path,
    options: &RestoreOptions,
    progress: &dyn RestoreProgress,
) -> Result<RestoreOutcome> {
    repository.sync_index()?;
    let start = repository.find_node(root, path)?;
    let target_existed = longpath::metadata(target).is_ok_and(|metadata| metadata.is_dir());
    if !options.dry_run {
        longpath::create_dir_all(target, 0o700)
            .map_err(|error| Error::local("create target", target, error))?;
    }
    let mut planner = Planner::new(repository, options, progress);
    let components: Vec<&str> = path.split('/').filter(|part| !part.is_empty()).collect();
    let start_path = if components.is_empty() {
        String::new()
    } else {
        format!("/{}", components.join("/"))
    };
    match start {
        None => {
            let tree = repository.load_tree(root)?;
            let position = Position {
                snapshot_path: start_path,
                included: planner
                    .filter
                    .is_none_or(|filter| filter.includes.is_empty()),
            };
            planner.plan_nodes(tree, target, &position, target_existed);
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
                    None => Some(Position {
                        included: true,
                        ..position
                    }),
                };
                if let Some(inside) = inside {
                    match repository.load_tree(&subtree) {
                        Ok(tree) => planner.plan_nodes(tree, target, &inside, target_existed),
                        Err(error) => planner.outcome.failed.push((target.to_owned(), error)),
                    }
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
        dry_run,
        ..
    } = planner;
    if dry_run {
        return Ok(outcome);
    }
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
            if let Ok(metadata) = longpath::symlink_metadata(&link.path)
                && !metadata.is_dir()
            {
                let _ = longpath::remove_file(&link.path);
            }
            longpath::hard_link(&link.first, &link.path).map_err(|error| error.to_string())
        };
        match linked {
            Ok(()) => {
                outcome.hard_links += 1;
                outcome.count(link.action);
            }
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
                    action: link.action,
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
    longpath::create_dir_all(target, 0o700)
        .map_err(|error| Error::local("create target", target, error))?;
    let options = RestoreOptions::default();
    let mut planner = Planner::new(repository, &options, progress);
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
            && let Err(error) = longpath::create_dir_all(parent, 0o700)
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
    let written = write_file_content(repository, &node, Path::new(path), out)?;
    out.flush()
        .map_err(|error| Error::local("write", Path::new(path), error))?;
    Ok(written)
}

/// Writes the content of the file `node` to `out`, verifying every chunk and, at the end, the
/// whole-file hash and size; `label` names it in errors. Not flushed. The index must be synced.
///
/// # Errors
/// [`Error::PathNotFound`] when `node` is not a file, [`Error::ContentMismatch`] or
/// [`Error::Damaged`] when content does not verify (bytes already written stay written), or
/// write failures.
pub(crate) fn write_file_content(
    repository: &Repository,
    node: &Node,
    label: &Path,
    out: &mut dyn Write,
) -> Result<u64> {
    let NodeKind::File {
        content_hash,
        chunks,
    } = &node.kind
    else {
        return Err(Error::PathNotFound(label.display().to_string()));
    };
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
    Ok(written)
}

#[cfg(test)]
mod tests {
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::MetadataExt;
    use std::sync::Arc;

    use super::*;
    use crate::backend::Backend;
    use crate::backend::object_store::ObjectStoreBackend;
    use crate::crypto::keys::{KdfParams, MasterSecret, RepositoryKeys};
    use crate::ops::backup::{BackupOptions, BackupSource, NoProgress, backup};
    use crate::repo::repository::{CacheLocation, InitOptions};

    /// Repository options with a cheap key derivation.
    fn cheap_options() -> InitOptions {
        InitOptions {
            kdf: KdfParams {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            },
            ..InitOptions::default()
        }
    }

    /// Backs up `source` and restores it into `target`, asserting no file failed; returns the
    /// backup's snapshot and the restore's outcome.
    fn backed_up_and_restored(
        repository: &Repository,
        source: &Path,
        target: &Path,
    ) -> (crate::format::snapshot::Snapshot, RestoreOutcome) {
        let outcome = backup(
            repository,
            BackupSource::Paths(vec![source.to_owned()]),
            &BackupOptions::default(),
            &NoProgress,
        )
        .unwrap();
        let restored = restore(
            repository,
            &outcome.snapshot.root,
            &source.display().to_string(),
            target,
            &NoRestoreProgress,
        )
        .unwrap();
        assert!(restored.failed.is_empty(), "{:?}", restored.failed);
        (outcome.snapshot, restored)
    }

    /// A master secret whose chunker seed cuts runs of zeros into short chunks (what `init`
    /// now refuses, and what older repositories may have).
    fn degenerate_master(params: cairn_chunker::ChunkerParams) -> MasterSecret {
        let zeros = vec![0u8; 64 * 1024];
        // About one seed in 500 cuts zeros short: 100,000 candidates leave no doubt.
        (0u64..100_000)
            .map(|counter| {
                let mut bytes = [0u8; 32];
                bytes[..8].copy_from_slice(&counter.to_le_bytes());
                MasterSecret(bytes)
            })
            .find(|master| {
                let seed = RepositoryKeys::derive(master).chunker_seed;
                let chunker = cairn_chunker::Chunker::new(params, seed).unwrap();
                chunker.chunk_slice(&zeros).len() > 4
            })
            .unwrap()
    }

    /// Regression (issue 13): in a repository whose seed cuts zeros into ~2 KiB chunks, restore
    /// wrote sparse files fully allocated, since only all-zero chunks of 4 KiB or more became
    /// holes. Holes now come from aligned zero blocks where the restore writes.
    #[test]
    fn sparse_file_stays_sparse_with_a_degenerate_seed() {
        let options = cheap_options();
        let master = degenerate_master(options.chunker);
        let backend: Arc<dyn Backend> = Arc::new(ObjectStoreBackend::in_memory());
        let repository = Repository::init_with_master(
            backend,
            b"password",
            &options,
            &CacheLocation::Memory,
            &master,
        )
        .unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let source = scratch.path().join("source");
        fs::create_dir(&source).unwrap();
        let image = source.join("disk.img");
        let mut file = File::create(&image).unwrap();
        // Data at unaligned places between long holes, and a trailing hole.
        for (offset, byte) in [(1_000_001u64, 0x11u8), (5_000_003, 0x22), (9_999_999, 0x33)] {
            file.seek(SeekFrom::Start(offset)).unwrap();
            file.write_all(&vec![byte; 70_001]).unwrap();
        }
        file.set_len(16 * 1024 * 1024).unwrap();
        drop(file);
        let original = fs::metadata(&image).unwrap();
        assert!(
            original.blocks() * 512 < original.len() / 8,
            "no sparse files here"
        );
        let target = scratch.path().join("target");
        let (snapshot, _) = backed_up_and_restored(&repository, &source, &target);
        let node = repository
            .find_node(&snapshot.root, &format!("{}/disk.img", source.display()))
            .unwrap()
            .unwrap();
        assert!(
            file_chunks(&node).len() > 2000,
            "the seed cuts zeros short: {} chunks",
            file_chunks(&node).len()
        );
        let copy = target.join("disk.img");
        assert_eq!(fs::read(&copy).unwrap(), fs::read(&image).unwrap());
        let metadata = fs::metadata(&copy).unwrap();
        assert!(
            metadata.blocks() * 512 <= original.blocks() * 512 + 64 * 1024,
            "restored with {} blocks, the source had {}",
            metadata.blocks(),
            original.blocks()
        );
    }

    /// A blob used by several files and at several offsets of one file is written to each
    /// place from one read; empty and one-chunk files are verified from what is in hand.
    #[test]
    fn shared_and_repeated_chunks_restore_to_every_place() {
        let options = cheap_options();
        let backend: Arc<dyn Backend> = Arc::new(ObjectStoreBackend::in_memory());
        let repository =
            Repository::init(backend, b"password", &options, &CacheLocation::Memory).unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let source = scratch.path().join("source");
        fs::create_dir(&source).unwrap();
        // 300 KiB of pseudo-random bytes, repeated: the same chunks recur inside each file.
        let mut state = 7u64;
        let block: Vec<u8> = (0..300 * 1024)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                state.to_le_bytes()[7]
            })
            .collect();
        let repeated = block.repeat(4);
        fs::write(source.join("a"), &repeated).unwrap();
        fs::write(source.join("b"), &repeated).unwrap();
        fs::write(source.join("empty"), b"").unwrap();
        fs::write(source.join("small"), b"one chunk").unwrap();
        let target = scratch.path().join("target");
        let (_, restored) = backed_up_and_restored(&repository, &source, &target);
        assert_eq!(restored.files, 4);
        for name in ["a", "b", "empty", "small"] {
            assert_eq!(
                fs::read(target.join(name)).unwrap(),
                fs::read(source.join(name)).unwrap(),
                "{name}"
            );
        }
        let leftovers: Vec<_> = fs::read_dir(&target)
            .unwrap()
            .filter_map(std::result::Result::ok)
            .filter(|entry| {
                entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(TEMPORARY_PREFIX)
            })
            .collect();
        assert!(leftovers.is_empty());
    }
}
