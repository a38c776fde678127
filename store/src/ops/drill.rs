//! The restore drill: restore a snapshot, or a deterministic sample of its files, into a fresh
//! scratch directory through [`crate::ops::restore`] (which verifies every chunk and every file's
//! recorded hash), measure how long it took, and remove the scratch directory whatever happened.
//!
//! Never prints. The sampling ([`sample_files`]) is pure; the rest orchestrates restore and the
//! scratch directory, and must not restore anything outside it.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::crypto::id::Id;
use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind, Timestamp};
use crate::ops::longpath;
use crate::ops::restore::{self, NoRestoreProgress};
use crate::policy::retention::{SnapshotFilter, SnapshotInfo};
use crate::policy::sweep;
use crate::repo::repository::Repository;

/// A share of a snapshot's files to restore instead of all of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// The share of the files, above 0 and at most 1 (at least one file is restored).
    pub fraction: f64,
    /// Chooses which files: the same seed and snapshot always give the same files.
    pub seed: u64,
}

/// How to drill.
#[derive(Debug, Clone, PartialEq)]
pub struct DrillOptions {
    /// An existing directory in which the drill creates (and removes) its scratch directory.
    pub scratch_parent: PathBuf,
    /// Restore only a sample of the files; `None` restores the whole snapshot.
    pub sample: Option<Sample>,
}

/// What a drill did and found.
#[derive(Debug)]
pub struct DrillReport {
    /// The snapshot drilled.
    pub snapshot: Id,
    /// When it was taken.
    pub snapshot_time: Timestamp,
    /// How old it was when the drill started (the recovery point: what a restore now would lose).
    pub snapshot_age: Duration,
    /// The sample, if the drill restored one.
    pub sample: Option<Sample>,
    /// Regular files in the snapshot.
    pub files_in_snapshot: u64,
    /// Their bytes.
    pub bytes_in_snapshot: u64,
    /// Files the drill set out to restore (all of them, or the sample).
    pub files_selected: u64,
    /// Their bytes.
    pub bytes_selected: u64,
    /// Files restored and verified against their recorded hashes.
    pub files_restored: u64,
    /// Their bytes.
    pub bytes_restored: u64,
    /// How long the restore took: fetching, decrypting, writing and verifying (the snapshot's
    /// trees were already walked, and the index synced, before the clock started).
    pub elapsed: Duration,
    /// Snapshot paths that could not be restored or did not verify → why.
    pub damaged: BTreeMap<String, Error>,
    /// The scratch directory used (removed by the time the report is returned, unless
    /// `cleanup_failed` says otherwise).
    pub scratch: PathBuf,
    /// Why the scratch directory could not be removed, if it could not.
    pub cleanup_failed: Option<Error>,
}

impl DrillReport {
    /// Whether every selected file was restored and verified, and the scratch directory is gone.
    pub fn is_ok(&self) -> bool {
        self.damaged.is_empty()
            && self.files_restored == self.files_selected
            && self.cleanup_failed.is_none()
    }

    /// Restore speed in bytes per second (0 when nothing took measurable time).
    #[allow(clippy::cast_precision_loss)]
    pub fn bytes_per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.bytes_restored as f64 / seconds
        } else {
            0.0
        }
    }
}

/// The positions (ascending) of the files a sample restores: the `ceil(fraction × count)` paths
/// (at least one when there are files) with the smallest seeded scores. Deterministic; a larger
/// fraction with the same seed restores a superset.
pub fn sample_files(paths: &[&[u8]], fraction: f64, seed: u64) -> Vec<usize> {
    let count = sweep::share_count(paths.len(), fraction);
    let mut scored: Vec<(u64, usize)> = paths
        .iter()
        .enumerate()
        .map(|(position, path)| (sweep::seeded_score(seed, path), position))
        .collect();
    scored.sort_unstable();
    let mut chosen: Vec<usize> = scored
        .into_iter()
        .take(count)
        .map(|(_, position)| position)
        .collect();
    chosen.sort_unstable();
    chosen
}

/// The snapshot to drill: `spec` (`latest`, an id or a unique prefix), or with a non-empty
/// `filter` the latest snapshot that matches it.
///
/// # Errors
/// [`Error::Usage`] for an id together with a filter, [`Error::SnapshotNotFound`],
/// [`Error::AmbiguousSnapshot`], or backend failures.
pub fn choose_snapshot(
    repository: &Repository,
    spec: &str,
    filter: &SnapshotFilter,
) -> Result<(Id, Snapshot)> {
    if *filter == SnapshotFilter::default() {
        return repository.resolve_snapshot(spec);
    }
    if spec != "latest" {
        return Err(Error::Usage(
            "--host and --path choose the latest matching snapshot: give no snapshot id with them"
                .into(),
        ));
    }
    let (snapshots, _) = repository.list_snapshots()?;
    snapshots
        .into_iter()
        .rev()
        .find(|(id, snapshot)| filter.matches(&SnapshotInfo::from_snapshot(*id, snapshot)))
        .ok_or_else(|| Error::SnapshotNotFound("latest (matching --host/--path)".into()))
}

/// A regular file found by [`walk_files`]: its path relative to the snapshot root, and its node.
type FoundFile = (PathBuf, Node);

/// Walks the tree `tree` (at `relative` below the root), handing every regular file to `found`
/// and recording trees that cannot be read in `damaged` (keyed by snapshot path).
fn walk_files(
    repository: &Repository,
    tree: &Id,
    relative: &Path,
    found: &mut dyn FnMut(FoundFile),
    damaged: &mut BTreeMap<String, Error>,
) {
    let nodes = match repository.load_tree(tree) {
        Ok(tree) => tree.nodes,
        Err(error) => {
            damaged.entry(snapshot_path(relative)).or_insert(error);
            return;
        }
    };
    for node in nodes {
        let path = relative.join(OsStr::from_bytes(&node.name));
        match &node.kind {
            NodeKind::Directory { subtree } => {
                let subtree = *subtree;
                walk_files(repository, &subtree, &path, found, damaged);
            }
            NodeKind::File { .. } => found((path, node)),
            NodeKind::Symlink { .. } | NodeKind::Fifo | NodeKind::Device { .. } => {}
        }
    }
}

/// `/relative`, as the snapshot shows a path.
fn snapshot_path(relative: &Path) -> String {
    format!("/{}", relative.to_string_lossy())
}

/// Restores `snapshot` (or a sample of its files) into a fresh scratch directory below
/// `options.scratch_parent`, verifying every byte, then removes the directory. Damage is
/// reported in the [`DrillReport`], not as an error.
///
/// # Errors
/// The scratch directory cannot be created, the index cannot be synced, or a store failure stops
/// the restore (the scratch directory is removed in every case).
pub fn drill(
    repository: &Repository,
    snapshot_id: Id,
    snapshot: &Snapshot,
    options: &DrillOptions,
) -> Result<DrillReport> {
    let snapshot_age = age(snapshot.time, SystemTime::now());
    repository.sync_index()?;
    let mut damaged = BTreeMap::new();
    let mut files_in_snapshot = 0u64;
    let mut bytes_in_snapshot = 0u64;
    let mut sampled: Vec<FoundFile> = Vec::new();
    walk_files(
        repository,
        &snapshot.root,
        Path::new(""),
        &mut |(path, node)| {
            files_in_snapshot += 1;
            bytes_in_snapshot += node.size;
            if options.sample.is_some() {
                sampled.push((path, node));
            }
        },
        &mut damaged,
    );
    let (files_selected, bytes_selected) = match options.sample {
        None => (files_in_snapshot, bytes_in_snapshot),
        Some(sample) => {
            let paths: Vec<&[u8]> = sampled
                .iter()
                .map(|(path, _)| path.as_os_str().as_bytes())
                .collect();
            let chosen = sample_files(&paths, sample.fraction, sample.seed);
            let mut keep = chosen.into_iter().peekable();
            sampled = sampled
                .into_iter()
                .enumerate()
                .filter(|(position, _)| keep.next_if_eq(position).is_some())
                .map(|(_, file)| file)
                .collect();
            let bytes = sampled.iter().map(|(_, node)| node.size).sum();
            (sampled.len() as u64, bytes)
        }
    };

    let scratch = Scratch::create(&options.scratch_parent)?;
    let started = Instant::now();
    let outcome = match options.sample {
        None => restore::restore(
            repository,
            &snapshot.root,
            "",
            scratch.path(),
            &NoRestoreProgress,
        ),
        Some(_) => restore::restore_nodes(repository, sampled, scratch.path(), &NoRestoreProgress),
    };
    let elapsed = started.elapsed();
    // On an error, dropping `scratch` removes the directory.
    let outcome = outcome?;
    for (path, error) in outcome.failed {
        let relative = path.strip_prefix(scratch.path()).unwrap_or(&path);
        damaged.entry(snapshot_path(relative)).or_insert(error);
    }
    let scratch_path = scratch.path().to_owned();
    let cleanup_failed = scratch.remove().err();
    Ok(DrillReport {
        snapshot: snapshot_id,
        snapshot_time: snapshot.time,
        snapshot_age,
        sample: options.sample,
        files_in_snapshot,
        bytes_in_snapshot,
        files_selected,
        bytes_selected,
        // A later hard link holds the content verified at its first link.
        files_restored: outcome.files + outcome.hard_links,
        bytes_restored: outcome.bytes,
        elapsed,
        damaged,
        scratch: scratch_path,
        cleanup_failed,
    })
}

/// How long before `now` a snapshot taken at `time` was (zero for a time in the future).
fn age(time: Timestamp, now: SystemTime) -> Duration {
    let taken = if time.seconds >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(time.seconds.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(time.seconds.unsigned_abs())
    } + Duration::from_nanos(u64::from(time.nanos));
    now.duration_since(taken).unwrap_or_default()
}

/// A directory only this drill uses (mode 0700: restored data is private), removed when
/// [`Scratch::remove`] is called or, failing that, when dropped.
struct Scratch {
    path: PathBuf,
    removed: bool,
}

impl Scratch {
    /// Creates `parent/cairn-drill-<random>`; `parent` must exist.
    fn create(parent: &Path) -> Result<Self> {
        let mut attempts = 0;
        loop {
            let path = parent.join(format!("cairn-drill-{:016x}", rand::random::<u64>()));
            match fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {
                    return Ok(Self {
                        path,
                        removed: false,
                    });
                }
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists && attempts < 8 => {
                    attempts += 1;
                }
                Err(error) => return Err(Error::local("create scratch directory", &path, error)),
            }
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the directory and everything in it (read-only directories included).
    fn remove(mut self) -> Result<()> {
        self.removed = true;
        remove_tree(&self.path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.removed {
            let _ = remove_tree(&self.path);
        }
    }
}

/// Removes `path` and everything below it without following symlinks, first giving the owner
/// write permission on directories restored read-only (which would otherwise stop the removal).
fn remove_tree(path: &Path) -> Result<()> {
    make_directories_writable(path);
    longpath::remove_dir_all(path)
        .map_err(|error| Error::local("remove scratch directory", path, error))
}

fn make_directories_writable(path: &Path) {
    let Ok(metadata) = longpath::symlink_metadata(path) else {
        return;
    };
    if !metadata.is_dir() {
        return;
    }
    let mode = metadata.permissions().mode();
    if mode & 0o700 != 0o700 {
        let _ = longpath::set_mode(path, mode | 0o700);
    }
    if let Ok(names) = longpath::list_names(path) {
        for name in names {
            make_directories_writable(&path.join(name));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn names(count: usize) -> Vec<Vec<u8>> {
        (0..count)
            .map(|position| format!("dir {}/file {position}", position % 7).into_bytes())
            .collect()
    }

    #[test]
    fn sample_of_nothing_is_empty_and_of_something_is_not() {
        assert!(sample_files(&[], 0.5, 1).is_empty());
        let paths = names(40);
        let borrowed: Vec<&[u8]> = paths.iter().map(Vec::as_slice).collect();
        assert_eq!(sample_files(&borrowed, 0.001, 1).len(), 1);
        assert_eq!(sample_files(&borrowed, 0.5, 1).len(), 20);
        assert_eq!(sample_files(&borrowed, 1.0, 1), (0..40).collect::<Vec<_>>());
    }

    #[test]
    fn different_seeds_choose_different_files() {
        let paths = names(200);
        let borrowed: Vec<&[u8]> = paths.iter().map(Vec::as_slice).collect();
        assert_ne!(
            sample_files(&borrowed, 0.1, 1),
            sample_files(&borrowed, 0.1, 2)
        );
    }

    #[test]
    fn age_is_zero_for_future_snapshots() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let at = |seconds| Timestamp { seconds, nanos: 0 };
        assert_eq!(age(at(400), now), Duration::from_mins(10));
        assert_eq!(age(at(2_000), now), Duration::ZERO);
        assert_eq!(age(at(-5), now), Duration::from_secs(1_005));
    }

    #[test]
    fn scratch_is_private_and_removed_even_when_read_only_inside() {
        let parent = tempfile::tempdir().unwrap();
        let scratch = Scratch::create(parent.path()).unwrap();
        let path = scratch.path().to_owned();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let locked = path.join("a/b");
        fs::create_dir_all(&locked).unwrap();
        fs::write(locked.join("file"), b"x").unwrap();
        std::os::unix::fs::symlink(parent.path(), path.join("a/out")).unwrap();
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o500)).unwrap();
        fs::set_permissions(path.join("a"), fs::Permissions::from_mode(0o500)).unwrap();
        scratch.remove().unwrap();
        assert!(!path.exists());
        assert!(parent.path().exists(), "a symlink was followed");
        // Dropped without `remove`: still removed.
        let dropped = Scratch::create(parent.path()).unwrap();
        let dropped_path = dropped.path().to_owned();
        drop(dropped);
        assert!(!dropped_path.exists());
    }

    proptest! {
        /// A sample has the promised size, ascending unique positions, is deterministic, and a
        /// larger share with the same seed contains it.
        #[test]
        fn samples_are_sized_deterministic_and_nested(count in 0usize..150, seed in any::<u64>(), percent in 1u32..=100) {
            let paths = names(count);
            let borrowed: Vec<&[u8]> = paths.iter().map(Vec::as_slice).collect();
            let fraction = f64::from(percent) / 100.0;
            let chosen = sample_files(&borrowed, fraction, seed);
            prop_assert_eq!(chosen.len(), sweep::share_count(count, fraction));
            prop_assert!(chosen.windows(2).all(|pair| pair[0] < pair[1]));
            prop_assert!(chosen.iter().all(|position| *position < count));
            prop_assert_eq!(&chosen, &sample_files(&borrowed, fraction, seed));
            let larger: BTreeSet<usize> = sample_files(&borrowed, (fraction * 2.0).min(1.0), seed).into_iter().collect();
            prop_assert!(chosen.iter().all(|position| larger.contains(position)));
        }
    }
}
