//! Inode numbers and the table of the inodes the kernel holds. Pure.
//!
//! A number is derived from where the entry is (its parent's number and its name), so the same
//! path gets the same number after the kernel forgot it, and a directory listing can name
//! numbers without remembering anything. Both names of a hard-linked file get one number,
//! derived from the snapshot and the file's recorded device and inode. The table holds only
//! what the kernel looked up and has not forgotten: its size follows the kernel's inode cache,
//! not the repository.

use std::collections::HashMap;

use cairn_store::Id;

use crate::layout::Group;

/// The root directory.
pub const ROOT: u64 = 1;
/// `snapshots/`.
pub const SNAPSHOTS: u64 = 2;
/// `hosts/`.
pub const HOSTS: u64 = 3;
/// `tags/`.
pub const TAGS: u64 = 4;
/// `sources/`.
pub const SOURCES: u64 = 5;
/// Numbers below this are fixed; derived numbers start here.
const FIRST_DERIVED: u64 = 16;

/// What an inode stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The root, `snapshots/`, `hosts/`, `tags/` or `sources/`.
    Fixed(u64),
    /// `hosts/<name>`, `tags/<name>` or `sources/<name>`.
    Folder(Group, String),
    /// A snapshot's directory (its root tree), by position in the layout.
    Snapshot(usize),
    /// A `latest` link naming the snapshot at this position.
    Latest(usize),
    /// Entry `index` of the tree `tree` of the snapshot at position `snapshot`.
    Node {
        /// Position of the snapshot in the layout.
        snapshot: usize,
        /// The tree that lists the entry.
        tree: Id,
        /// Its position in that tree.
        index: usize,
    },
}

/// What identifies an inode, to tell a reuse of its number from a collision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// The name `name` in the directory `parent`.
    Child {
        /// The directory's inode.
        parent: u64,
        /// The entry's name.
        name: Vec<u8>,
    },
    /// A hard-linked file: its recorded device and inode inside one snapshot directory.
    Link {
        /// The snapshot directory's inode.
        snapshot: u64,
        /// Recorded device.
        device: u64,
        /// Recorded inode.
        inode: u64,
    },
}

impl Key {
    /// The number this key gets unless another key holds it.
    pub fn derived(&self) -> u64 {
        let mut hasher = blake3::Hasher::new();
        match self {
            Self::Child { parent, name } => {
                hasher
                    .update(b"child")
                    .update(&parent.to_le_bytes())
                    .update(name);
            }
            Self::Link {
                snapshot,
                device,
                inode,
            } => {
                hasher
                    .update(b"link")
                    .update(&snapshot.to_le_bytes())
                    .update(&device.to_le_bytes())
                    .update(&inode.to_le_bytes());
            }
        }
        let mut first = [0u8; 8];
        first.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
        u64::from_le_bytes(first).max(FIRST_DERIVED)
    }
}

/// One inode the kernel knows.
#[derive(Debug, Clone)]
pub struct Inode {
    /// What it stands for.
    pub target: Target,
    /// Its parent directory (itself for the root), for `..`.
    pub parent: u64,
    key: Option<Key>,
    lookups: u64,
}

/// The inodes the kernel holds: fixed ones always, the others from lookup to forget.
#[derive(Debug)]
pub struct InodeTable {
    inodes: HashMap<u64, Inode>,
}

impl InodeTable {
    /// The fixed inodes; `sources/` only when `with_sources`.
    pub fn new(with_sources: bool) -> Self {
        let mut inodes = HashMap::new();
        let mut fixed = vec![ROOT, SNAPSHOTS, HOSTS, TAGS];
        if with_sources {
            fixed.push(SOURCES);
        }
        for number in fixed {
            inodes.insert(
                number,
                Inode {
                    target: Target::Fixed(number),
                    parent: ROOT,
                    key: None,
                    lookups: u64::MAX / 2,
                },
            );
        }
        Self { inodes }
    }

    /// The inode `number`, if the kernel holds it.
    pub fn get(&self, number: u64) -> Option<&Inode> {
        self.inodes.get(&number)
    }

    /// Counts one kernel lookup of `key` and returns its number: the derived one, or the next
    /// free one when another key holds that (never the same number for two entries).
    pub fn remember(&mut self, key: Key, target: Target, parent: u64) -> u64 {
        let mut number = key.derived();
        loop {
            match self.inodes.get_mut(&number) {
                Some(inode) if inode.key.as_ref() == Some(&key) => {
                    inode.lookups += 1;
                    return number;
                }
                Some(_) => number = number.wrapping_add(1).max(FIRST_DERIVED),
                None => {
                    self.inodes.insert(
                        number,
                        Inode {
                            target,
                            parent,
                            key: Some(key),
                            lookups: 1,
                        },
                    );
                    return number;
                }
            }
        }
    }

    /// The kernel dropped `lookups` references to `number`; at none left it is removed.
    pub fn forget(&mut self, number: u64, lookups: u64) {
        if let Some(inode) = self.inodes.get_mut(&number) {
            inode.lookups = inode.lookups.saturating_sub(lookups);
            if inode.lookups == 0 && inode.key.is_some() {
                self.inodes.remove(&number);
            }
        }
    }

    /// How many inodes are held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child(parent: u64, name: &str) -> Key {
        Key::Child {
            parent,
            name: name.as_bytes().to_vec(),
        }
    }

    #[test]
    fn numbers_are_stable_across_forget_and_inodes_go_at_their_last_forget() {
        let mut table = InodeTable::new(false);
        let first = table.remember(child(ROOT, "a"), Target::Snapshot(0), ROOT);
        assert_eq!(
            table.remember(child(ROOT, "a"), Target::Snapshot(0), ROOT),
            first
        );
        assert_eq!(table.len(), 5);
        table.forget(first, 1);
        assert!(table.get(first).is_some());
        table.forget(first, 1);
        assert!(table.get(first).is_none());
        assert_eq!(table.len(), 4);
        assert_eq!(
            table.remember(child(ROOT, "a"), Target::Snapshot(0), ROOT),
            first
        );
        table.forget(ROOT, 1_000);
        assert!(table.get(ROOT).is_some());
    }

    #[test]
    fn a_collision_gets_another_number_never_the_other_entry() {
        let mut table = InodeTable::new(true);
        let key = child(ROOT, "a");
        let number = key.derived();
        // Pretend another entry already holds the number.
        table.inodes.insert(
            number,
            Inode {
                target: Target::Latest(9),
                parent: ROOT,
                key: Some(child(7, "other")),
                lookups: 1,
            },
        );
        let given = table.remember(key, Target::Snapshot(0), ROOT);
        assert_ne!(given, number);
        assert_eq!(table.get(given).unwrap().target, Target::Snapshot(0));
        assert_eq!(table.get(number).unwrap().target, Target::Latest(9));
    }

    #[test]
    fn derived_numbers_skip_the_fixed_ones_and_differ_by_place() {
        assert!(child(ROOT, "a").derived() >= FIRST_DERIVED);
        assert_ne!(child(ROOT, "a").derived(), child(SNAPSHOTS, "a").derived());
        let link = |snapshot| Key::Link {
            snapshot,
            device: 1,
            inode: 2,
        };
        assert_ne!(link(40).derived(), link(41).derived());
    }
}
