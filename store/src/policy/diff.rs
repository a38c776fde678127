//! The comparison of two snapshots' trees for `cairn diff`: which entries were added, removed,
//! changed in content, changed in type, or changed only in metadata. Pure: trees come from a
//! loader the caller passes, so the walk is tested on trees in memory.
//!
//! Identical subtrees (the same tree id) are skipped without being read, so comparing two
//! snapshots of a large, mostly unchanged tree reads only the changed directories.

use crate::crypto::id::Id;
use crate::error::Result;
use crate::format::tree::{EXTENSION_XATTRS, Node, NodeKind, Tree};

/// How an entry differs between the old and the new snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// Only in the new snapshot (`+`).
    Added,
    /// Only in the old snapshot (`-`).
    Removed,
    /// A file's content or a symlink's target changed (`M`).
    Modified,
    /// The entry changed kind, for example a file became a directory (`T`).
    TypeChanged,
    /// Same content, other mode, owner, modification time or extended attributes (ACLs
    /// included) (`U`).
    Metadata,
}

impl ChangeKind {
    /// The one-character marker of the human listing.
    pub fn marker(self) -> char {
        match self {
            Self::Added => '+',
            Self::Removed => '-',
            Self::Modified => 'M',
            Self::TypeChanged => 'T',
            Self::Metadata => 'U',
        }
    }

    /// The name used in JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Removed => "removed",
            Self::Modified => "modified",
            Self::TypeChanged => "type_changed",
            Self::Metadata => "metadata",
        }
    }
}

/// One changed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The entry's path in the snapshots (`/`-separated, absolute).
    pub path: String,
    /// How it changed.
    pub kind: ChangeKind,
    /// Whether the entry is (in the new snapshot, else the old) a directory.
    pub directory: bool,
    /// Content size in the old snapshot (files; 0 otherwise or when absent).
    pub old_size: u64,
    /// Content size in the new snapshot (files; 0 otherwise or when absent).
    pub new_size: u64,
}

/// Counts of a comparison.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiffTotals {
    /// Entries added (below an added directory too).
    pub added: u64,
    /// Entries removed (below a removed directory too).
    pub removed: u64,
    /// Files and symlinks whose content changed.
    pub modified: u64,
    /// Entries that changed kind.
    pub type_changed: u64,
    /// Entries whose metadata alone changed (directories only when asked for).
    pub metadata: u64,
    /// Content bytes of added files, plus growth of modified files.
    pub bytes_added: u64,
    /// Content bytes of removed files, plus shrinkage of modified files.
    pub bytes_removed: u64,
}

impl DiffTotals {
    fn count(&mut self, change: &Change) {
        match change.kind {
            ChangeKind::Added => self.added += 1,
            ChangeKind::Removed => self.removed += 1,
            ChangeKind::Modified => self.modified += 1,
            ChangeKind::TypeChanged => self.type_changed += 1,
            ChangeKind::Metadata => self.metadata += 1,
        }
        self.bytes_added += change.new_size.saturating_sub(change.old_size);
        self.bytes_removed += change.old_size.saturating_sub(change.new_size);
    }
}

/// What to report.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiffOptions {
    /// Also report directories whose own metadata changed (their mtime changes whenever an entry
    /// inside does, so this is noisy and off by default).
    pub directory_metadata: bool,
}

/// Whether two nodes of the same name differ, and how; `None` when they are the same for a
/// user (ctime, inode and device are ignored: they change without the entry changing).
pub fn classify(old: &Node, new: &Node) -> Option<ChangeKind> {
    let metadata_differs = old.mode != new.mode
        || old.uid != new.uid
        || old.gid != new.gid
        || old.mtime != new.mtime
        || old.extension(EXTENSION_XATTRS) != new.extension(EXTENSION_XATTRS);
    let content_differs = match (&old.kind, &new.kind) {
        (
            NodeKind::File {
                content_hash: old_hash,
                ..
            },
            NodeKind::File {
                content_hash: new_hash,
                ..
            },
        ) => old_hash != new_hash || old.size != new.size,
        (NodeKind::Symlink { target: old_target }, NodeKind::Symlink { target: new_target }) => {
            old_target != new_target
        }
        (NodeKind::Directory { .. }, NodeKind::Directory { .. })
        | (NodeKind::Fifo, NodeKind::Fifo) => false,
        (
            NodeKind::Device {
                kind: old_kind,
                major: old_major,
                minor: old_minor,
            },
            NodeKind::Device {
                kind: new_kind,
                major: new_major,
                minor: new_minor,
            },
        ) if old_kind == new_kind => (old_major, old_minor) != (new_major, new_minor),
        _ => return Some(ChangeKind::TypeChanged),
    };
    if content_differs {
        Some(ChangeKind::Modified)
    } else if metadata_differs {
        Some(ChangeKind::Metadata)
    } else {
        None
    }
}

/// The two sides of one name in two listings.
type Pair<'nodes> = (Option<&'nodes Node>, Option<&'nodes Node>);

/// Pairs the entries of two listings sorted by name (as trees store them), name by name.
pub fn pair_listings<'nodes>(old: &'nodes [Node], new: &'nodes [Node]) -> Vec<Pair<'nodes>> {
    let mut pairs = Vec::with_capacity(old.len().max(new.len()));
    let (mut old_at, mut new_at) = (0, 0);
    while old_at < old.len() || new_at < new.len() {
        match (old.get(old_at), new.get(new_at)) {
            (Some(before), Some(after)) => match before.name.cmp(&after.name) {
                std::cmp::Ordering::Less => {
                    pairs.push((Some(before), None));
                    old_at += 1;
                }
                std::cmp::Ordering::Greater => {
                    pairs.push((None, Some(after)));
                    new_at += 1;
                }
                std::cmp::Ordering::Equal => {
                    pairs.push((Some(before), Some(after)));
                    old_at += 1;
                    new_at += 1;
                }
            },
            (Some(before), None) => {
                pairs.push((Some(before), None));
                old_at += 1;
            }
            (None, Some(after)) => {
                pairs.push((None, Some(after)));
                new_at += 1;
            }
            (None, None) => break,
        }
    }
    pairs
}

fn file_size(node: Option<&Node>) -> u64 {
    node.filter(|node| matches!(node.kind, NodeKind::File { .. }))
        .map_or(0, |node| node.size)
}

fn subtree(node: Option<&Node>) -> Option<Id> {
    match node.map(|node| &node.kind) {
        Some(NodeKind::Directory { subtree }) => Some(*subtree),
        _ => None,
    }
}

/// The walk's state: the loader, what to report, where to report it.
struct Walk<'call> {
    load: &'call mut dyn FnMut(&Id) -> Result<Tree>,
    options: DiffOptions,
    report: &'call mut dyn FnMut(&Change),
    totals: DiffTotals,
}

impl Walk<'_> {
    fn emit(&mut self, change: &Change) {
        self.totals.count(change);
        (self.report)(change);
    }

    /// Compares two directories' trees (either absent: everything on the other side is added
    /// or removed).
    fn compare(&mut self, old: Option<Id>, new: Option<Id>, prefix: &str) -> Result<()> {
        if old.is_some() && old == new {
            return Ok(());
        }
        let old_tree = old
            .map(|id| (self.load)(&id))
            .transpose()?
            .unwrap_or_default();
        let new_tree = new
            .map(|id| (self.load)(&id))
            .transpose()?
            .unwrap_or_default();
        for (before, after) in pair_listings(&old_tree.nodes, &new_tree.nodes) {
            let name = before
                .or(after)
                .map(|node| node.name.as_slice())
                .unwrap_or_default();
            let path = format!("{prefix}/{}", String::from_utf8_lossy(name));
            let kind = match (before, after) {
                (Some(before), Some(after)) => classify(before, after),
                (None, _) => Some(ChangeKind::Added),
                (_, None) => Some(ChangeKind::Removed),
            };
            let directory = subtree(after.or(before)).is_some();
            let shown = match kind {
                Some(ChangeKind::Metadata) => !directory || self.options.directory_metadata,
                Some(_) => true,
                None => false,
            };
            if let (Some(kind), true) = (kind, shown) {
                self.emit(&Change {
                    path: path.clone(),
                    kind,
                    directory,
                    old_size: file_size(before),
                    new_size: file_size(after),
                });
            }
            let (old_subtree, new_subtree) = (subtree(before), subtree(after));
            if old_subtree.is_some() || new_subtree.is_some() {
                self.compare(old_subtree, new_subtree, &path)?;
            }
        }
        Ok(())
    }
}

/// Compares the trees `old_root` and `new_root`, reporting each change in tree order (an entry
/// before what is below it) and returning the totals. Subtrees with equal ids are not read.
///
/// # Errors
/// The loader's failures.
pub fn diff_trees(
    load: &mut dyn FnMut(&Id) -> Result<Tree>,
    old_root: &Id,
    new_root: &Id,
    options: DiffOptions,
    report: &mut dyn FnMut(&Change),
) -> Result<DiffTotals> {
    let mut walk = Walk {
        load,
        options,
        report,
        totals: DiffTotals::default(),
    };
    walk.compare(Some(*old_root), Some(*new_root), "")?;
    Ok(walk.totals)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    use crate::format::tree::test_node as node;

    fn file(name: &str, content: u8, size: u64) -> Node {
        node(
            name,
            NodeKind::File {
                content_hash: Id([content; 32]),
                chunks: vec![Id([content; 32])],
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

    /// Trees by id, and a loader that records which ids it read.
    struct Store {
        trees: HashMap<Id, Tree>,
        read: Vec<Id>,
    }

    impl Store {
        fn new(trees: Vec<(u8, Vec<Node>)>) -> Self {
            Self {
                trees: trees
                    .into_iter()
                    .map(|(id, nodes)| (Id([id; 32]), Tree { nodes }))
                    .collect(),
                read: Vec::new(),
            }
        }

        fn diff(&mut self, old: u8, new: u8, options: DiffOptions) -> (Vec<String>, DiffTotals) {
            let mut lines = Vec::new();
            let trees = &self.trees;
            let read = &mut self.read;
            let mut load = |id: &Id| {
                read.push(*id);
                Ok(trees[id].clone())
            };
            let totals = diff_trees(
                &mut load,
                &Id([old; 32]),
                &Id([new; 32]),
                options,
                &mut |change| {
                    lines.push(format!("{} {}", change.kind.marker(), change.path));
                },
            )
            .unwrap();
            (lines, totals)
        }
    }

    #[test]
    fn special_files_and_extended_attributes_are_classified() {
        use crate::format::tree::{DeviceKind, Xattr};
        let special = |kind| crate::format::tree::test_node("s", kind, 0);
        let fifo = special(NodeKind::Fifo);
        assert_eq!(classify(&fifo, &fifo.clone()), None);
        let device = |kind, minor| NodeKind::Device {
            kind,
            major: 1,
            minor,
        };
        let null = special(device(DeviceKind::Character, 3));
        assert_eq!(classify(&null, &null.clone()), None);
        assert_eq!(
            classify(&null, &special(device(DeviceKind::Character, 5))),
            Some(ChangeKind::Modified)
        );
        assert_eq!(
            classify(&null, &special(device(DeviceKind::Block, 3))),
            Some(ChangeKind::TypeChanged)
        );
        assert_eq!(classify(&null, &fifo), Some(ChangeKind::TypeChanged));
        let mut labelled = fifo.clone();
        labelled.set_xattrs(&[Xattr {
            name: b"system.posix_acl_access".to_vec(),
            value: vec![2, 0, 0, 0],
        }]);
        assert_eq!(classify(&fifo, &labelled), Some(ChangeKind::Metadata));
    }

    #[test]
    fn classify_tells_content_type_and_metadata_apart() {
        let base = file("a", 1, 10);
        assert_eq!(classify(&base, &base.clone()), None);
        assert_eq!(
            classify(&base, &file("a", 2, 10)),
            Some(ChangeKind::Modified)
        );
        let mut touched = base.clone();
        touched.mtime.seconds += 1;
        assert_eq!(classify(&base, &touched), Some(ChangeKind::Metadata));
        let mut moved = base.clone();
        moved.inode = 99;
        moved.ctime.seconds = 5;
        assert_eq!(
            classify(&base, &moved),
            None,
            "inode and ctime are not changes"
        );
        assert_eq!(
            classify(&base, &directory("a", 3)),
            Some(ChangeKind::TypeChanged)
        );
        let link = |target: &[u8]| {
            node(
                "a",
                NodeKind::Symlink {
                    target: target.to_vec(),
                },
                0,
            )
        };
        assert_eq!(
            classify(&link(b"x"), &link(b"y")),
            Some(ChangeKind::Modified)
        );
        assert_eq!(classify(&directory("a", 3), &directory("a", 4)), None);
    }

    #[test]
    fn pairing_follows_name_order() {
        let old = [file("a", 1, 1), file("c", 1, 1), file("d", 1, 1)];
        let new = [file("b", 1, 1), file("c", 2, 1), file("e", 1, 1)];
        let name =
            |node: Option<&Node>| node.map(|node| String::from_utf8_lossy(&node.name).into_owned());
        let names: Vec<_> = pair_listings(&old, &new)
            .into_iter()
            .map(|(before, after)| (name(before), name(after)))
            .collect();
        let some = |text: &str| Some(text.to_owned());
        assert_eq!(
            names,
            vec![
                (some("a"), None),
                (None, some("b")),
                (some("c"), some("c")),
                (some("d"), None),
                (None, some("e")),
            ]
        );
    }

    #[test]
    fn a_diff_lists_every_change_and_skips_identical_subtrees() {
        let mut touched = file("touched", 5, 5);
        touched.mode = 0o100_600;
        let mut store = Store::new(vec![
            // old root: same/, gone/ (with one file), kept.txt, edit.txt, swap, touched
            (
                1,
                vec![
                    file("edit.txt", 1, 100),
                    directory("gone", 11),
                    file("kept.txt", 2, 7),
                    directory("same", 10),
                    file("swap", 3, 4),
                    file("touched", 5, 5),
                ],
            ),
            (10, vec![file("inside", 9, 1)]),
            (11, vec![file("lost", 8, 30)]),
            // new root: edit.txt changed, new/ with a file, swap became a directory
            (
                2,
                vec![
                    file("edit.txt", 4, 160),
                    file("kept.txt", 2, 7),
                    directory("new", 12),
                    directory("same", 10),
                    directory("swap", 13),
                    touched,
                ],
            ),
            (12, vec![file("fresh", 7, 50)]),
            (13, vec![]),
        ]);
        let (lines, totals) = store.diff(1, 2, DiffOptions::default());
        assert_eq!(
            lines,
            vec![
                "M /edit.txt",
                "- /gone",
                "- /gone/lost",
                "+ /new",
                "+ /new/fresh",
                "T /swap",
                "U /touched",
            ]
        );
        assert_eq!(
            totals,
            DiffTotals {
                added: 2,
                removed: 2,
                modified: 1,
                type_changed: 1,
                metadata: 1,
                bytes_added: 60 + 50,
                bytes_removed: 30 + 4,
            }
        );
        assert!(
            !store.read.contains(&Id([10; 32])),
            "the identical subtree is not read"
        );
        let (same, totals) = store.diff(1, 1, DiffOptions::default());
        assert!(same.is_empty() && totals == DiffTotals::default());
    }

    #[test]
    fn directory_metadata_only_when_asked() {
        let mut newer = directory("d", 20);
        newer.mtime.seconds += 60;
        let mut store = Store::new(vec![
            (1, vec![directory("d", 20)]),
            (2, vec![newer]),
            (20, vec![]),
        ]);
        assert!(store.diff(1, 2, DiffOptions::default()).0.is_empty());
        let options = DiffOptions {
            directory_metadata: true,
        };
        assert_eq!(store.diff(1, 2, options).0, vec!["U /d"]);
    }
}
