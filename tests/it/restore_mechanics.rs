//! Restore and walk mechanics of issue 13: owner-only local repositories, short temporary names,
//! private-by-construction restores, restoring into a non-empty target, honest summaries,
//! missing source paths and sparse files whatever the chunker seed.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::support::{CHEAP_INIT, TreeBuilder, Workspace};

/// A command prefix that runs `cairn` under `umask`.
fn umask_prefix(umask: &str) -> Vec<OsString> {
    [
        "/bin/sh",
        "-c",
        &format!("umask {umask}; exec \"$0\" \"$@\""),
    ]
    .into_iter()
    .map(OsString::from)
    .collect()
}

/// Every entry below `root` (and `root` itself) with its permission bits.
fn modes_below(root: &Path) -> Vec<(std::path::PathBuf, bool, u32)> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(path) = pending.pop() {
        let metadata = fs::symlink_metadata(&path).expect("stat");
        if metadata.is_dir() {
            for entry in fs::read_dir(&path).expect("list") {
                pending.push(entry.expect("entry").path());
            }
        }
        found.push((path, metadata.is_dir(), metadata.mode() & 0o7777));
    }
    found
}

/// Regression: under umask 022 a local repository's key objects and config were 0644, so any
/// local user could copy them and guess the password offline. Under umask 022 and 000 every
/// object is 0600 and every folder 0700, after init, a backup and a password change.
#[test]
fn local_repository_is_owner_only_whatever_the_umask() {
    for umask in ["022", "000"] {
        let mut workspace = Workspace::new();
        workspace.prefix = umask_prefix(umask);
        workspace.cairn(&CHEAP_INIT).ok();
        let tree = TreeBuilder::new(workspace.path("source"));
        tree.file("a.txt", b"some content");
        tree.file("sub/b.bin", &vec![7u8; 100_000]);
        workspace.backup(&[tree.root()]);
        let found = modes_below(&workspace.repo);
        assert!(found.len() > 8, "{found:?}");
        assert!(
            found
                .iter()
                .any(|(path, _, _)| path.starts_with(workspace.repo.join("keys"))),
            "no key object in {found:?}"
        );
        for (path, is_dir, mode) in found {
            let wanted = if is_dir { 0o700 } else { 0o600 };
            assert_eq!(
                mode,
                wanted,
                "umask {umask}: {} is {mode:o}",
                path.display()
            );
        }
    }
}
