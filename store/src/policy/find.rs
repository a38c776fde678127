//! `cairn find`: the entries of snapshots whose path matches glob patterns. Pure: trees come from
//! a loader the caller passes.
//!
//! Snapshots of the same sources share most subtrees. A [`Finder`] remembers the subtrees in
//! which nothing matched (by tree id, and by path too unless the patterns look at names only) and
//! does not read them again in later snapshots.

use std::collections::HashSet;

use crate::crypto::id::Id;
use crate::error::Result;
use crate::format::tree::{Node, NodeKind, Tree};
use crate::policy::pathmatch::PathMatcher;

/// Searches snapshots' trees for matching entries, remembering matchless subtrees across calls.
#[derive(Debug)]
pub struct Finder {
    matcher: PathMatcher,
    /// Keys (see [`Finder::subtree_key`]) of subtrees known to hold no match.
    matchless: HashSet<Id>,
}

impl Finder {
    /// A finder for `matcher`'s patterns.
    pub fn new(matcher: PathMatcher) -> Self {
        Self {
            matcher,
            matchless: HashSet::new(),
        }
    }

    /// A subtree's memo key: its id alone when only names are matched, else its id and path.
    fn subtree_key(&self, tree: &Id, path: &str) -> Id {
        if self.matcher.matches_names_only() {
            return *tree;
        }
        let mut hasher = blake3::Hasher::new();
        hasher.update(&tree.0);
        hasher.update(path.as_bytes());
        Id(*hasher.finalize().as_bytes())
    }

    /// Reports every entry below `root` whose path matches, in tree order; returns how many.
    ///
    /// # Errors
    /// The loader's failures.
    pub fn search(
        &mut self,
        load: &mut dyn FnMut(&Id) -> Result<Tree>,
        root: &Id,
        report: &mut dyn FnMut(&str, &Node),
    ) -> Result<u64> {
        self.walk(load, root, "", report)
    }

    fn walk(
        &mut self,
        load: &mut dyn FnMut(&Id) -> Result<Tree>,
        tree_id: &Id,
        prefix: &str,
        report: &mut dyn FnMut(&str, &Node),
    ) -> Result<u64> {
        let key = self.subtree_key(tree_id, prefix);
        if self.matchless.contains(&key) {
            return Ok(0);
        }
        let tree = load(tree_id)?;
        let mut matches = 0;
        for node in &tree.nodes {
            let path = format!("{prefix}/{}", String::from_utf8_lossy(&node.name));
            if self.matcher.matches(&path) {
                report(&path, node);
                matches += 1;
            }
            if let NodeKind::Directory { subtree } = &node.kind {
                matches += self.walk(load, subtree, &path, report)?;
            }
        }
        if matches == 0 {
            self.matchless.insert(key);
        }
        Ok(matches)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::format::tree::test_node;

    fn file(name: &str) -> Node {
        test_node(
            name,
            NodeKind::File {
                content_hash: Id([0; 32]),
                chunks: Vec::new(),
            },
            1,
        )
    }

    fn directory(name: &str, subtree: u8) -> Node {
        test_node(
            name,
            NodeKind::Directory {
                subtree: Id([subtree; 32]),
            },
            0,
        )
    }

    fn search(finder: &mut Finder, trees: &HashMap<Id, Tree>, root: u8) -> (Vec<String>, Vec<Id>) {
        let mut read = Vec::new();
        let mut found = Vec::new();
        let mut load = |id: &Id| {
            read.push(*id);
            Ok(trees[id].clone())
        };
        finder
            .search(&mut load, &Id([root; 32]), &mut |path, _| {
                found.push(path.to_owned());
            })
            .unwrap();
        (found, read)
    }

    fn trees() -> HashMap<Id, Tree> {
        [
            // two snapshots' roots sharing the subtree 10 (no match) under different names
            (1, vec![directory("etc", 10), directory("home", 11)]),
            (
                2,
                vec![
                    directory("etc", 10),
                    directory("srv", 10),
                    directory("home", 12),
                ],
            ),
            (10, vec![file("hosts"), file("passwd")]),
            (11, vec![file("notes.txt"), file("a.log")]),
            (12, vec![file("notes.txt"), directory("logs", 13)]),
            (13, vec![file("b.log")]),
        ]
        .into_iter()
        .map(|(id, nodes)| (Id([id; 32]), Tree { nodes }))
        .collect()
    }

    #[test]
    fn name_patterns_find_at_any_depth_and_skip_known_matchless_subtrees() {
        let trees = trees();
        let mut finder = Finder::new(PathMatcher::new(&["*.log".to_owned()]).unwrap());
        let (found, _) = search(&mut finder, &trees, 1);
        assert_eq!(found, vec!["/home/a.log"]);
        let (found, read) = search(&mut finder, &trees, 2);
        assert_eq!(found, vec!["/home/logs/b.log"]);
        assert!(
            !read.contains(&Id([10; 32])),
            "subtree 10 held no match: not read again"
        );
    }

    #[test]
    fn path_patterns_remember_matchless_subtrees_per_path() {
        let trees = trees();
        let mut finder = Finder::new(PathMatcher::new(&["srv/hosts".to_owned()]).unwrap());
        assert!(search(&mut finder, &trees, 1).0.is_empty());
        let (found, read) = search(&mut finder, &trees, 2);
        assert_eq!(
            found,
            vec!["/srv/hosts"],
            "the same tree under another path is searched"
        );
        assert_eq!(
            read.iter().filter(|id| **id == Id([10; 32])).count(),
            1,
            "only under /srv"
        );
        let mut directories = Finder::new(PathMatcher::new(&["logs".to_owned()]).unwrap());
        assert_eq!(search(&mut directories, &trees, 2).0, vec!["/home/logs"]);
    }
}
