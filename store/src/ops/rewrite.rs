//! `cairn rewrite`: remove paths from existing snapshots (a secret backed up by mistake, a
//! cache that should have been excluded). Each snapshot's trees are walked, entries an exclude
//! pattern matches are dropped (a directory with everything below it), only the trees that
//! change are written again (an unchanged subtree keeps its id), and a new snapshot is written
//! with the original's id as "rewritten from" (FORMAT.md sections 12 and 14). The original
//! stays unless `forget` is asked; then prune reclaims what only it referenced.
//!
//! The tree walk ([`TreePruner`]) does no I/O: trees come from, and new trees go to, a
//! [`PrunerTrees`]. [`rewrite_snapshots`] runs it inside a backup session. Never prints.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::crypto::id::{BlobType, Id};
use crate::error::{Error, Result};
use crate::format::snapshot::{Snapshot, Source, Summary};
use crate::format::tree::{NodeKind, Tree};
use crate::ops::tag::{DerivedSnapshots, derived_snapshot, original_exists};
use crate::policy::exclude::ExcludeRules;
use crate::repo::repository::Repository;
use crate::repo::saver::BlobSaver;

/// What kind of entry was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovedKind {
    /// A regular file (or a stream).
    File,
    /// A directory, with everything below it.
    Directory,
    /// A symbolic link, FIFO or device node.
    Other,
}

/// An entry an exclude pattern matched, with what it held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedEntry {
    /// Its absolute path in the snapshot (lossy UTF-8).
    pub path: String,
    /// File, directory or other.
    pub kind: RemovedKind,
    /// Regular files removed with it (itself included).
    pub files: u64,
    /// Directories removed with it (itself included).
    pub directories: u64,
    /// Bytes of file content removed with it.
    pub bytes: u64,
}

/// Trees a [`TreePruner`] reads and writes.
pub trait PrunerTrees {
    /// Reads tree `id`.
    ///
    /// # Errors
    /// The tree cannot be read (the rewrite stops: `check` says why).
    fn tree(&mut self, id: &Id) -> Result<Tree>;

    /// Stores (or, on a dry run, only names) a rewritten tree and returns its id.
    ///
    /// # Errors
    /// Failures that stop the rewrite.
    fn save_tree(&mut self, tree: &Tree) -> Result<Id>;
}

/// One tree after the walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunedTree {
    /// The new tree's id, or `None` when nothing below it matched (it is kept as it is).
    pub rewritten: Option<Id>,
    /// Entries removed at or below it, outermost only (what is below a removed directory is
    /// counted in it), by absolute path.
    pub removed: Vec<RemovedEntry>,
    /// Entries left directly in it.
    pub kept_entries: usize,
}

/// Totals of a tree that is removed whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Totals {
    files: u64,
    directories: u64,
    bytes: u64,
}

/// Walks trees and drops what the exclude rules match. Trees met at the same path in several
/// snapshots are walked once (patterns depend on the path, so the path is part of the key).
pub struct TreePruner<'rules> {
    rules: &'rules ExcludeRules,
    memo: HashMap<(Id, PathBuf), Arc<PrunedTree>>,
    totals: HashMap<Id, Totals>,
    links_held: HashMap<Id, Arc<LinksHeld>>,
}

/// Hard-linked files (recorded link count above 1) a tree holds: (device, inode) → the number of
/// its links below the tree.
type LinksHeld = HashMap<(u64, u64), u64>;

impl<'rules> TreePruner<'rules> {
    /// A pruner applying `rules` (see [`ExcludeRules::excludes`]; markers, cache tags and
    /// sizes play no part here).
    pub fn new(rules: &'rules ExcludeRules) -> Self {
        Self {
            rules,
            memo: HashMap::new(),
            totals: HashMap::new(),
            links_held: HashMap::new(),
        }
    }

    /// Prunes tree `id`, the directory at absolute `path` (`/` for a snapshot's root), and
    /// first every tree below it.
    ///
    /// # Errors
    /// The source's failures.
    pub fn prune(
        &mut self,
        trees: &mut dyn PrunerTrees,
        id: &Id,
        path: &Path,
    ) -> Result<Arc<PrunedTree>> {
        let key = (*id, path.to_path_buf());
        if let Some(known) = self.memo.get(&key) {
            return Ok(Arc::clone(known));
        }
        let tree = trees.tree(id)?;
        let mut nodes = Vec::with_capacity(tree.nodes.len());
        let mut removed = Vec::new();
        let mut changed = false;
        for mut node in tree.nodes {
            let node_path = path.join(OsStr::from_bytes(&node.name));
            let is_directory = matches!(node.kind, NodeKind::Directory { .. });
            if self.rules.excludes(&node_path, is_directory) {
                let (kind, totals) = match &node.kind {
                    NodeKind::Directory { subtree } => {
                        let below = self.totals_of(trees, subtree)?;
                        (
                            RemovedKind::Directory,
                            Totals {
                                directories: below.directories + 1,
                                ..below
                            },
                        )
                    }
                    NodeKind::File { .. } => (
                        RemovedKind::File,
                        Totals {
                            files: 1,
                            directories: 0,
                            bytes: node.size,
                        },
                    ),
                    _ => (RemovedKind::Other, Totals::default()),
                };
                removed.push(RemovedEntry {
                    path: node_path.to_string_lossy().into_owned(),
                    kind,
                    files: totals.files,
                    directories: totals.directories,
                    bytes: totals.bytes,
                });
                changed = true;
                continue;
            }
            if let NodeKind::Directory { subtree } = &node.kind {
                let below = self.prune(trees, subtree, &node_path)?;
                if let Some(new_subtree) = below.rewritten {
                    removed.extend(below.removed.iter().cloned());
                    node.kind = NodeKind::Directory {
                        subtree: new_subtree,
                    };
                    changed = true;
                }
            }
            nodes.push(node);
        }
        let kept_entries = nodes.len();
        let rewritten = if changed {
            Some(trees.save_tree(&Tree { nodes })?)
        } else {
            None
        };
        let pruned = Arc::new(PrunedTree {
            rewritten,
            removed,
            kept_entries,
        });
        self.memo.insert(key, Arc::clone(&pruned));
        Ok(pruned)
    }

    /// The rewritten root `new_root` (of the original `original_root`) with the recorded link
    /// count of each hard-linked file lowered by the links the rewrite removed, so a restore
    /// finds every link the snapshot records (and does not warn of links left outside). Returns
    /// `new_root` itself when no link was removed.
    ///
    /// # Errors
    /// The source's failures.
    pub fn fix_link_counts(
        &mut self,
        trees: &mut dyn PrunerTrees,
        original_root: &Id,
        new_root: &Id,
    ) -> Result<Id> {
        let before = self.links_held_by(trees, original_root)?;
        let after = self.links_held_by(trees, new_root)?;
        let lost: LinksHeld = before
            .iter()
            .filter_map(|(key, count)| {
                let left = after.get(key).copied().unwrap_or(0);
                (left < *count).then_some((*key, count - left))
            })
            .collect();
        if lost.is_empty() {
            return Ok(*new_root);
        }
        let mut relinked = HashMap::new();
        Ok(relink(trees, new_root, &lost, &mut relinked)?.unwrap_or(*new_root))
    }

    fn links_held_by(&mut self, trees: &mut dyn PrunerTrees, id: &Id) -> Result<Arc<LinksHeld>> {
        if let Some(known) = self.links_held.get(id) {
            return Ok(Arc::clone(known));
        }
        let mut held = LinksHeld::new();
        for node in trees.tree(id)?.nodes {
            match &node.kind {
                NodeKind::File { .. } if node.link_count().unwrap_or(1) > 1 => {
                    *held.entry((node.device, node.inode)).or_default() += 1;
                }
                NodeKind::Directory { subtree } => {
                    for (key, count) in self.links_held_by(trees, subtree)?.iter() {
                        *held.entry(*key).or_default() += count;
                    }
                }
                _ => {}
            }
        }
        let held = Arc::new(held);
        self.links_held.insert(*id, Arc::clone(&held));
        Ok(held)
    }

    /// Files, directories and bytes below tree `id` (the directory itself not counted).
    fn totals_of(&mut self, trees: &mut dyn PrunerTrees, id: &Id) -> Result<Totals> {
        if let Some(known) = self.totals.get(id) {
            return Ok(*known);
        }
        let mut totals = Totals::default();
        for node in trees.tree(id)?.nodes {
            match &node.kind {
                NodeKind::File { .. } => {
                    totals.files += 1;
                    totals.bytes += node.size;
                }
                NodeKind::Directory { subtree } => {
                    let below = self.totals_of(trees, subtree)?;
                    totals.files += below.files;
                    totals.directories += below.directories + 1;
                    totals.bytes += below.bytes;
                }
                _ => {}
            }
        }
        self.totals.insert(*id, totals);
        Ok(totals)
    }
}

/// Tree `id` with the link counts of the files in `lost` lowered (`None`: nothing below it
/// changes). Memoised by tree id in `relinked`.
fn relink(
    trees: &mut dyn PrunerTrees,
    id: &Id,
    lost: &LinksHeld,
    relinked: &mut HashMap<Id, Option<Id>>,
) -> Result<Option<Id>> {
    if let Some(known) = relinked.get(id) {
        return Ok(*known);
    }
    let mut tree = trees.tree(id)?;
    let mut changed = false;
    for node in &mut tree.nodes {
        match &node.kind {
            NodeKind::File { .. } => {
                if let Some(removed) = lost.get(&(node.device, node.inode)) {
                    let links = node.link_count().unwrap_or(1);
                    if links > 1 {
                        node.set_link_count(links.saturating_sub(*removed).max(1));
                        changed = true;
                    }
                }
            }
            NodeKind::Directory { subtree } => {
                if let Some(new_subtree) = relink(trees, subtree, lost, relinked)? {
                    node.kind = NodeKind::Directory {
                        subtree: new_subtree,
                    };
                    changed = true;
                }
            }
            _ => {}
        }
    }
    let outcome = if changed {
        Some(trees.save_tree(&tree)?)
    } else {
        None
    };
    relinked.insert(*id, outcome);
    Ok(outcome)
}

/// Why a snapshot that patterns match is not rewritten.
pub fn refusal(snapshot: &Snapshot, pruned: &PrunedTree) -> Option<String> {
    pruned.rewritten?;
    match &snapshot.source {
        Source::Stdin(name) => Some(format!(
            "it is the stream {name:?} and the patterns would remove the stream itself"
        )),
        Source::Paths(paths) => {
            let gone = |source: &String| {
                pruned.removed.iter().any(|entry| {
                    *source == entry.path || source.starts_with(&format!("{}/", entry.path))
                })
            };
            let whole_root = paths.iter().any(|source| source == "/");
            let empty = if whole_root {
                pruned.kept_entries == 0
            } else {
                paths.iter().all(gone)
            };
            empty.then(|| {
                "the patterns remove everything it holds and cairn writes no empty snapshot"
                    .to_owned()
            })
        }
    }
}

/// The summary of the rewritten snapshot: the original's counts less what was removed; the
/// bytes and blobs "added" are the rewrite's own trees, not the backup's.
pub fn rewritten_summary(original: &Summary, removed: &[RemovedEntry]) -> Summary {
    let files: u64 = removed.iter().map(|entry| entry.files).sum();
    let directories: u64 = removed.iter().map(|entry| entry.directories).sum();
    let bytes: u64 = removed.iter().map(|entry| entry.bytes).sum();
    Summary {
        files: original.files.saturating_sub(files),
        directories: original.directories.saturating_sub(directories),
        bytes_processed: original.bytes_processed.saturating_sub(bytes),
        bytes_added: 0,
        blobs_added: 0,
        entries_unreadable: original.entries_unreadable,
    }
}

/// How `rewrite` runs.
#[derive(Debug, Clone, Default)]
pub struct RewriteOptions {
    /// Delete each original once its rewritten snapshot is stored.
    pub forget: bool,
    /// Report what would be removed; write and delete nothing.
    pub dry_run: bool,
    /// Host recorded in the session marker.
    pub host: String,
    /// The cairn version recorded in new snapshots.
    pub program_version: String,
}

/// What happened to one chosen snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RewriteOutcome {
    /// No pattern matches anything in it: left alone.
    Unchanged,
    /// Would be rewritten (dry run).
    WouldRewrite,
    /// Rewritten: the new snapshot is stored.
    Rewritten {
        /// The new snapshot.
        new_id: Id,
        /// An earlier, interrupted run had already stored it.
        already_written: bool,
        /// The original was deleted (`forget`).
        forgotten: bool,
    },
    /// The original disappeared before this run could rewrite it: nothing written.
    Vanished,
}

/// One chosen snapshot and what `rewrite` did with it.
#[derive(Debug, Clone)]
pub struct SnapshotRewrite {
    /// The original's id.
    pub original: Id,
    /// The original snapshot.
    pub snapshot: Snapshot,
    /// What the patterns removed (outermost entries).
    pub removed: Vec<RemovedEntry>,
    /// The rewritten snapshot's summary.
    pub summary: Summary,
    /// The rewritten root tree (`None` when nothing matched).
    pub new_root: Option<Id>,
    /// What was done.
    pub outcome: RewriteOutcome,
}

/// What `rewrite` did.
#[derive(Debug, Clone, Default)]
pub struct RewriteReport {
    /// Every chosen snapshot, oldest first.
    pub snapshots: Vec<SnapshotRewrite>,
    /// Rewritten trees (new tree blobs; on a dry run, those that would be).
    pub trees_written: u64,
    /// Bytes of packs and index objects written.
    pub bytes_added: u64,
}

/// Rewritten trees not yet stored: id and encoded bytes.
type NewTrees = Vec<(Id, Vec<u8>)>;

/// Names rewritten trees without storing them, keeping their bytes until they are stored.
struct PlannedTrees<'repo> {
    repository: &'repo Repository,
    new_trees: NewTrees,
    /// Position of each new tree in `new_trees`.
    named: HashMap<Id, usize>,
}

impl PrunerTrees for PlannedTrees<'_> {
    fn tree(&mut self, id: &Id) -> Result<Tree> {
        match self.named.get(id) {
            Some(&position) => {
                Tree::decode(&self.new_trees[position].1).map_err(|error| Error::Damaged {
                    object: format!("new tree blob {id}"),
                    reason: error.to_string(),
                })
            }
            None => self.repository.load_tree(id),
        }
    }

    fn save_tree(&mut self, tree: &Tree) -> Result<Id> {
        let encoded = tree.encode();
        let id = self.repository.keys().blob_id(BlobType::Tree, &encoded);
        if !self.named.contains_key(&id) {
            self.named.insert(id, self.new_trees.len());
            self.new_trees.push((id, encoded));
        }
        Ok(id)
    }
}

/// Removes what `rules` match from the `chosen` snapshots (FORMAT.md section 14, `rewrite`).
/// Every snapshot is walked before anything is written, so a refusal (a stream the patterns
/// would remove, a snapshot they would empty) stops the run with nothing written. New trees
/// go through a [`BlobSaver`] inside a backup session; each new snapshot is written
/// create-only; with `forget`, each original is deleted only after its new snapshot is
/// stored. A second run after an interruption finds the snapshots already written.
///
/// # Errors
/// [`Error::Usage`] naming the refused snapshots, [`Error::AppendOnly`] with `forget` (before
/// anything is written), failures reading trees, backend or cache failures.
pub fn rewrite_snapshots(
    repository: &Repository,
    chosen: &[(Id, Snapshot)],
    rules: &ExcludeRules,
    options: &RewriteOptions,
) -> Result<RewriteReport> {
    if options.forget && !options.dry_run {
        repository.ensure_may_delete("rewrite --forget")?;
    }
    // Walking only reads trees, so it comes first: a refusal then leaves no trace, not even a
    // session marker. What the new snapshots keep of the originals is protected by the check
    // that each original still exists after the marker; the new trees are stored after it.
    let state = repository.load_prune_state()?;
    repository.sync_index_with(&state)?;
    let (mut report, new_trees) = plan(repository, chosen, rules)?;
    if options.dry_run {
        return Ok(report);
    }
    repository.with_session(&options.host, |session, state| {
        repository.sync_index_with(state)?;
        let (snapshots, _) = repository.list_snapshots()?;
        let derived = DerivedSnapshots::from_listing(&snapshots);
        let mut saver = BlobSaver::new(repository);
        for (_, encoded) in &new_trees {
            saver.save(BlobType::Tree, &[encoded])?;
        }
        let (stats, mut relied) = saver.finish_relied()?;
        let rescued = repository.rescue_relied_packs(session, &mut relied)?;
        report.bytes_added = stats.bytes_added + rescued.bytes_written;
        report.trees_written = stats.blobs_added;
        let mut last_written = None;
        for entry in &mut report.snapshots {
            if entry.outcome != RewriteOutcome::WouldRewrite {
                continue;
            }
            if !original_exists(repository, &entry.original)? {
                entry.outcome = RewriteOutcome::Vanished;
                continue;
            }
            let Some(root) = entry.new_root else {
                continue;
            };
            let planned = derived_snapshot(
                entry.original,
                &entry.snapshot,
                entry.snapshot.tags.clone(),
                root,
                entry.summary,
                &options.program_version,
            );
            let (new_id, already_written) = match derived.find(&planned) {
                Some(existing) => (existing, true),
                None => (repository.save_snapshot(&planned)?, false),
            };
            last_written = Some(new_id);
            entry.outcome = RewriteOutcome::Rewritten {
                new_id,
                already_written,
                forgotten: false,
            };
        }
        if options.forget {
            for entry in &mut report.snapshots {
                if let RewriteOutcome::Rewritten { forgotten, .. } = &mut entry.outcome {
                    let outcome = repository.forget_snapshots(&[entry.original])?;
                    if let Some((_, error)) = outcome.failed.into_iter().next() {
                        return Err(error);
                    }
                    *forgotten = true;
                }
            }
        }
        let _ = session.end(last_written);
        Ok(report)
    })
}

/// Walks every chosen snapshot: what each loses, and the new trees (not yet stored).
fn plan(
    repository: &Repository,
    chosen: &[(Id, Snapshot)],
    rules: &ExcludeRules,
) -> Result<(RewriteReport, NewTrees)> {
    let mut trees = PlannedTrees {
        repository,
        new_trees: Vec::new(),
        named: HashMap::new(),
    };
    let mut pruner = TreePruner::new(rules);
    let mut report = RewriteReport::default();
    let mut refused = Vec::new();
    for (original, snapshot) in chosen {
        let pruned = pruner.prune(&mut trees, &snapshot.root, Path::new("/"))?;
        let new_root = match pruned.rewritten {
            Some(new_root) => {
                Some(pruner.fix_link_counts(&mut trees, &snapshot.root, &new_root)?)
            }
            None => None,
        };
        if let Some(reason) = refusal(snapshot, &pruned) {
            refused.push(format!(
                "snapshot {}: {reason} (`cairn forget {}` removes it whole)",
                original.short(),
                original.short()
            ));
        }
        report.snapshots.push(SnapshotRewrite {
            original: *original,
            snapshot: snapshot.clone(),
            removed: pruned.removed.clone(),
            summary: rewritten_summary(&snapshot.summary, &pruned.removed),
            new_root,
            outcome: if pruned.rewritten.is_some() {
                RewriteOutcome::WouldRewrite
            } else {
                RewriteOutcome::Unchanged
            },
        });
    }
    if !refused.is_empty() {
        return Err(Error::Usage(format!(
            "nothing rewritten: {}",
            refused.join("; ")
        )));
    }
    report.trees_written = trees.new_trees.len() as u64;
    Ok((report, trees.new_trees))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::tree::{Node, Timestamp, test_node as node};

    /// Trees in memory; stored trees are named by a counter and kept.
    #[derive(Default)]
    struct MemoryTrees {
        trees: HashMap<Id, Tree>,
        saved: Vec<Tree>,
        reads: usize,
    }

    impl PrunerTrees for MemoryTrees {
        fn tree(&mut self, id: &Id) -> Result<Tree> {
            self.reads += 1;
            if let Some(tree) = self.trees.get(id) {
                return Ok(tree.clone());
            }
            let saved = usize::from(id.0[0]).checked_sub(200);
            saved
                .and_then(|position| self.saved.get(position).cloned())
                .ok_or_else(|| Error::Usage(format!("no tree {id}")))
        }

        fn save_tree(&mut self, tree: &Tree) -> Result<Id> {
            self.saved.push(tree.clone());
            Ok(Id([199 + u8::try_from(self.saved.len()).unwrap(); 32]))
        }
    }

    fn file(name: &str, size: u64) -> Node {
        node(
            name,
            NodeKind::File {
                content_hash: Id([0; 32]),
                chunks: vec![Id([9; 32])],
            },
            size,
        )
    }

    fn directory(name: &str, subtree: u8) -> Node {
        node(
            name,
            NodeKind::Directory {
                subtree: Id([subtree; 32]),
            },
            0,
        )
    }

    /// root(1) = { srv → 2 { app → 3 { .env (10), logs → 4 { a.log (5), b.log (7) }, main (100),
    /// link } } }
    fn sample() -> MemoryTrees {
        let mut trees = MemoryTrees::default();
        trees.trees.insert(
            Id([4; 32]),
            Tree {
                nodes: vec![file("a.log", 5), file("b.log", 7)],
            },
        );
        trees.trees.insert(
            Id([3; 32]),
            Tree {
                nodes: vec![
                    file(".env", 10),
                    node(
                        "link",
                        NodeKind::Symlink {
                            target: b"main".to_vec(),
                        },
                        4,
                    ),
                    directory("logs", 4),
                    file("main", 100),
                ],
            },
        );
        trees.trees.insert(
            Id([2; 32]),
            Tree {
                nodes: vec![directory("app", 3)],
            },
        );
        trees.trees.insert(
            Id([1; 32]),
            Tree {
                nodes: vec![directory("srv", 2)],
            },
        );
        trees
    }

    fn rules(patterns: &[&str]) -> ExcludeRules {
        let patterns: Vec<String> = patterns.iter().map(|pattern| (*pattern).into()).collect();
        ExcludeRules::new(&patterns, &[]).unwrap()
    }

    fn names(tree: &Tree) -> Vec<String> {
        tree.nodes
            .iter()
            .map(|node| String::from_utf8_lossy(&node.name).into_owned())
            .collect()
    }

    #[test]
    fn nothing_matches_nothing_is_written() {
        let mut trees = sample();
        let rules = rules(&["*.tmp", "/etc"]);
        let pruned = TreePruner::new(&rules)
            .prune(&mut trees, &Id([1; 32]), Path::new("/"))
            .unwrap();
        assert_eq!(pruned.rewritten, None);
        assert!(pruned.removed.is_empty());
        assert!(trees.saved.is_empty());
    }

    #[test]
    fn a_nested_file_rewrites_only_its_ancestors() {
        let mut trees = sample();
        let rules = rules(&["/srv/app/.env"]);
        let pruned = TreePruner::new(&rules)
            .prune(&mut trees, &Id([1; 32]), Path::new("/"))
            .unwrap();
        assert_eq!(
            pruned.removed,
            vec![RemovedEntry {
                path: "/srv/app/.env".into(),
                kind: RemovedKind::File,
                files: 1,
                directories: 0,
                bytes: 10,
            }]
        );
        // app, srv and the root are new; logs keeps its id.
        assert_eq!(trees.saved.len(), 3);
        assert_eq!(names(&trees.saved[0]), ["link", "logs", "main"]);
        assert!(matches!(
            trees.saved[0].nodes[1].kind,
            NodeKind::Directory { subtree } if subtree == Id([4; 32])
        ));
        assert_eq!(pruned.rewritten, Some(Id([202; 32])));
    }

    #[test]
    fn globs_directories_and_the_last_file_of_a_directory() {
        for (patterns, removed, last_tree) in [
            (
                vec!["*.log"],
                vec!["/srv/app/logs/a.log", "/srv/app/logs/b.log"],
                vec![],
            ),
            (
                vec!["logs/"],
                vec!["/srv/app/logs"],
                vec![".env", "link", "main"],
            ),
            (
                vec!["link"],
                vec!["/srv/app/link"],
                vec![".env", "logs", "main"],
            ),
        ] {
            let mut trees = sample();
            let rules = rules(&patterns);
            let pruned = TreePruner::new(&rules)
                .prune(&mut trees, &Id([1; 32]), Path::new("/"))
                .unwrap();
            let paths: Vec<&str> = pruned
                .removed
                .iter()
                .map(|entry| entry.path.as_str())
                .collect();
            assert_eq!(paths, removed, "{patterns:?}");
            assert_eq!(names(&trees.saved[0]), last_tree, "{patterns:?}");
        }
    }

    #[test]
    fn a_removed_directory_counts_everything_below_it() {
        let mut trees = sample();
        let rules = rules(&["/srv/app"]);
        let pruned = TreePruner::new(&rules)
            .prune(&mut trees, &Id([1; 32]), Path::new("/"))
            .unwrap();
        assert_eq!(
            pruned.removed,
            vec![RemovedEntry {
                path: "/srv/app".into(),
                kind: RemovedKind::Directory,
                files: 4,
                directories: 2,
                bytes: 122,
            }]
        );
        let original = Summary {
            files: 4,
            directories: 3,
            bytes_processed: 122,
            bytes_added: 50,
            blobs_added: 2,
            entries_unreadable: 1,
        };
        assert_eq!(
            rewritten_summary(&original, &pruned.removed),
            Summary {
                files: 0,
                directories: 1,
                bytes_processed: 0,
                bytes_added: 0,
                blobs_added: 0,
                entries_unreadable: 1,
            }
        );
        let snapshot = |source: Source| Snapshot {
            time: Timestamp::default(),
            host: "h".into(),
            username: "u".into(),
            tags: Vec::new(),
            source,
            root: Id([1; 32]),
            parent: None,
            summary: original,
            program_version: "t".into(),
            extensions: Vec::new(),
        };
        // Everything the snapshot was taken of is gone: refused.
        assert!(refusal(&snapshot(Source::Paths(vec!["/srv/app".into()])), &pruned).is_some());
        // A second path survives: written.
        assert!(
            refusal(
                &snapshot(Source::Paths(vec!["/srv/app".into(), "/srv/other".into()])),
                &pruned
            )
            .is_none()
        );
        // Of `/`, the root still holds srv.
        assert!(refusal(&snapshot(Source::Paths(vec!["/".into()])), &pruned).is_none());
        assert!(refusal(&snapshot(Source::Stdin("s".into())), &pruned).is_some());
    }

    #[test]
    fn removing_one_link_of_a_hard_linked_file_lowers_the_others_count() {
        let mut trees = MemoryTrees::default();
        let linked = |name: &str| {
            let mut node = file(name, 3);
            node.set_link_count(3);
            node
        };
        trees.trees.insert(
            Id([5; 32]),
            Tree {
                nodes: vec![linked("h1"), file("plain", 1)],
            },
        );
        trees.trees.insert(
            Id([6; 32]),
            Tree {
                nodes: vec![linked("h2"), linked("h3")],
            },
        );
        trees.trees.insert(
            Id([1; 32]),
            Tree {
                nodes: vec![directory("a", 5), directory("b", 6)],
            },
        );
        let rules = rules(&["/a/h1"]);
        let mut pruner = TreePruner::new(&rules);
        let pruned = pruner
            .prune(&mut trees, &Id([1; 32]), Path::new("/"))
            .unwrap();
        let new_root = pruned.rewritten.unwrap();
        let fixed = pruner
            .fix_link_counts(&mut trees, &Id([1; 32]), &new_root)
            .unwrap();
        assert_ne!(fixed, new_root);
        let root = trees.tree(&fixed).unwrap();
        let NodeKind::Directory { subtree } = root.nodes[1].kind else {
            panic!("b is a directory");
        };
        let b = trees.tree(&subtree).unwrap();
        let counts: Vec<u64> = b
            .nodes
            .iter()
            .map(|node| node.link_count().unwrap())
            .collect();
        assert_eq!(counts, [2, 2]);
        // Nothing linked removed: the root stays.
        let rules = self::rules(&["plain"]);
        let mut pruner = TreePruner::new(&rules);
        let pruned = pruner
            .prune(&mut trees, &Id([1; 32]), Path::new("/"))
            .unwrap();
        let new_root = pruned.rewritten.unwrap();
        assert_eq!(
            pruner
                .fix_link_counts(&mut trees, &Id([1; 32]), &new_root)
                .unwrap(),
            new_root
        );
    }

    #[test]
    fn shared_trees_are_walked_once_per_path() {
        let mut trees = sample();
        let rules = rules(&["*.log"]);
        let mut pruner = TreePruner::new(&rules);
        let first = pruner
            .prune(&mut trees, &Id([1; 32]), Path::new("/"))
            .unwrap();
        let reads = trees.reads;
        let second = pruner
            .prune(&mut trees, &Id([1; 32]), Path::new("/"))
            .unwrap();
        assert_eq!(first, second);
        assert_eq!(trees.reads, reads);
    }
}
