//! The restore and dump use cases: recreate a snapshot (or a path in it) below a target
//! directory, or stream one file; every chunk is authenticated and every file is compared with its
//! recorded hash before it takes its final name.
//!
//! Never prints. A file that cannot be restored is reported in the outcome and the others are
//! still restored (salvage); the caller decides the exit code.

use std::fs::{self, File, FileTimes, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::tree::{Node, NodeKind, Timestamp};
use crate::id::{BlobType, Id};
use crate::repository::Repository;

/// Receives progress during a restore. Every method has a no-op default.
pub trait RestoreProgress: Sync {
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
    /// Bytes of file content written.
    pub bytes: u64,
    /// Entries that could not be restored, with the reason. Non-empty means the restore is
    /// incomplete.
    pub failed: Vec<(PathBuf, Error)>,
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

struct Planner<'repo> {
    repository: &'repo Repository,
    files: Vec<FileJob>,
    directories: Vec<(PathBuf, Node)>,
    outcome: RestoreOutcome,
}

impl Planner<'_> {
    /// Creates directories and symlinks below `destination` for the tree `tree_id`, queuing files.
    fn plan_tree(&mut self, tree_id: &Id, destination: &Path) {
        let tree = match self.repository.load_tree(tree_id) {
            Ok(tree) => tree,
            Err(error) => {
                self.outcome.failed.push((destination.to_owned(), error));
                return;
            }
        };
        for node in tree.nodes {
            let path = destination.join(std::ffi::OsStr::from_bytes(&node.name));
            self.plan_node(node, path);
        }
    }

    fn plan_node(&mut self, node: Node, path: PathBuf) {
        match &node.kind {
            NodeKind::Directory { subtree } => {
                let subtree = *subtree;
                if let Err(error) = make_directory(&path) {
                    self.outcome.failed.push((path, error));
                    return;
                }
                self.outcome.directories += 1;
                self.plan_tree(&subtree, &path);
                self.directories.push((path, node));
            }
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
                    Ok(()) => self.outcome.symlinks += 1,
                    Err(error) => self
                        .outcome
                        .failed
                        .push((path.clone(), Error::local("create symlink", &path, error))),
                }
            }
            NodeKind::File { .. } => self.files.push(FileJob { path, node }),
        }
    }
}

/// Applies mode, owner (when permitted) and times to a restored entry.
fn apply_metadata(path: &Path, node: &Node) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(node.mode & 0o7777))
        .map_err(|error| Error::local("set permissions of", path, error))?;
    // Only root may give files away; for everyone else keeping their own ownership is right.
    let _ = std::os::unix::fs::chown(path, Some(node.uid), Some(node.gid));
    let file = File::open(path).map_err(|error| Error::local("open", path, error))?;
    file.set_times(
        FileTimes::new()
            .set_modified(system_time(node.mtime))
            .set_accessed(system_time(node.mtime)),
    )
    .map_err(|error| Error::local("set times of", path, error))
}

/// Writes a file's content to `out` chunk by chunk and checks the whole-file hash.
fn write_content(
    repository: &Repository,
    node: &Node,
    out: &mut dyn Write,
    label: &Path,
) -> Result<u64> {
    let NodeKind::File {
        content_hash,
        chunks,
    } = &node.kind
    else {
        return Err(Error::Usage(format!("{} is not a file", label.display())));
    };
    let mut hasher = repository.keys().file_hasher();
    let mut written = 0u64;
    for chunk in chunks {
        let plaintext = repository.read_blob(BlobType::Data, chunk)?;
        hasher.update(&plaintext);
        out.write_all(&plaintext)
            .map_err(|error| Error::local("write", label, error))?;
        written += plaintext.len() as u64;
    }
    if Id(*hasher.finalize().as_bytes()) != *content_hash || written != node.size {
        return Err(Error::ContentMismatch(label.to_owned()));
    }
    Ok(written)
}

/// Restores one file through a temporary name, so a partial or unverified file never carries
/// the final name.
fn restore_file(repository: &Repository, job: &FileJob) -> Result<u64> {
    let directory = job.path.parent().unwrap_or(Path::new("."));
    let mut temporary_name = std::ffi::OsString::from(".");
    temporary_name.push(job.path.file_name().unwrap_or_default());
    temporary_name.push(".cairn-partial");
    let temporary = directory.join(temporary_name);
    let _ = fs::remove_file(&temporary);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temporary)
        .map_err(|error| Error::local("create", &temporary, error))?;
    let mut writer = std::io::BufWriter::with_capacity(1 << 20, file);
    let outcome = write_content(repository, &job.node, &mut writer, &job.path).and_then(|bytes| {
        let file = writer
            .into_inner()
            .map_err(|error| Error::local("write", &job.path, error.into_error()))?;
        file.sync_data()
            .map_err(|error| Error::local("sync", &job.path, error))?;
        Ok(bytes)
    });
    match outcome {
        Ok(bytes) => {
            apply_metadata(&temporary, &job.node)?;
            fs::rename(&temporary, &job.path)
                .map_err(|error| Error::local("rename into place", &job.path, error))?;
            Ok(bytes)
        }
        Err(error) => {
            let _ = fs::remove_file(&temporary);
            Err(error)
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
    repository.sync_index()?;
    fs::create_dir_all(target).map_err(|error| Error::local("create target", target, error))?;
    let start = repository.find_node(root, path)?;
    let mut planner = Planner {
        repository,
        files: Vec::new(),
        directories: Vec::new(),
        outcome: RestoreOutcome::default(),
    };
    match start {
        None => {
            repository.load_tree(root)?;
            planner.plan_tree(root, target);
        }
        Some(node) => {
            if let NodeKind::Directory { subtree } = &node.kind {
                let subtree = *subtree;
                planner.plan_tree(&subtree, target);
                planner.directories.push((target.to_owned(), node));
            } else {
                let name = std::ffi::OsStr::from_bytes(&node.name).to_owned();
                planner.plan_node(node, target.join(name));
            }
        }
    }
    let Planner {
        files,
        directories,
        mut outcome,
        ..
    } = planner;
    let results: Vec<(usize, Result<u64>)> = files
        .par_iter()
        .enumerate()
        .map(|(position, job)| {
            let result = restore_file(repository, job);
            if let Ok(bytes) = &result {
                progress.file_done(&job.path, *bytes);
            }
            (position, result)
        })
        .collect();
    for (position, result) in results {
        match result {
            Ok(bytes) => {
                outcome.files += 1;
                outcome.bytes += bytes;
            }
            Err(error) => outcome.failed.push((files[position].path.clone(), error)),
        }
    }
    // Children first, so setting a directory's mtime is not undone by writing into it.
    for (path, node) in &directories {
        if let Err(error) = apply_metadata(path, node) {
            outcome.failed.push((path.clone(), error));
        }
    }
    Ok(outcome)
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
    let written = write_content(repository, &node, out, Path::new(path))?;
    out.flush()
        .map_err(|error| Error::local("write", Path::new(path), error))?;
    Ok(written)
}
