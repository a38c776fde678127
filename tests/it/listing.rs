//! `ls` and `dump --archive`: one level or everything below, several paths, the `--long`
//! header and mode strings (setuid, setgid, sticky, FIFOs, symlinks); directories streamed as
//! tar and zip archives that the real `tar` and a zip reader unpack to the backed-up bytes,
//! modes, times, symlinks and hard links.

use std::collections::BTreeSet;
use std::process::Command;

use crate::support::{TreeBuilder, Workspace};

/// A tree with nested directories, special mode bits, a FIFO and a symlink, backed up once.
fn listed_tree(workspace: &Workspace) -> TreeBuilder {
    let tree = TreeBuilder::new(workspace.path("top"));
    tree.file("a.txt", b"alpha");
    tree.file("sub/b.txt", b"beta");
    tree.file("sub/deeper/c.txt", b"gamma");
    tree.file("setuid", b"#!/bin/sh\n");
    tree.file("setgid-no-x", b"x");
    tree.dir("sticky");
    tree.mode("setuid", 0o4755)
        .mode("setgid-no-x", 0o2644)
        .mode("sticky", 0o1777);
    tree.symlink("link", "sub/b.txt");
    let status = Command::new("mkfifo")
        .arg(tree.path("pipe"))
        .status()
        .expect("mkfifo runs");
    assert!(status.success());
    workspace.backup(&[tree.root()]);
    tree
}

fn lines(text: &str) -> BTreeSet<String> {
    text.lines().map(str::to_owned).collect()
}

#[test]
fn ls_lists_one_level_of_a_path_everything_with_recursive_or_without_a_path() {
    let workspace = Workspace::initialized();
    let tree = listed_tree(&workspace);
    let top = tree.root().to_string_lossy().into_owned();
    let below = |relative: &str| format!("{top}/{relative}");
    let first_level: BTreeSet<String> = [
        top.clone(),
        below("a.txt"),
        below("sub"),
        below("setuid"),
        below("setgid-no-x"),
        below("sticky"),
        below("link"),
        below("pipe"),
    ]
    .into();
    let mut everything = first_level.clone();
    everything.extend([
        below("sub/b.txt"),
        below("sub/deeper"),
        below("sub/deeper/c.txt"),
    ]);

    let one_level = workspace.cairn(&["ls", "latest", &top]).ok().text();
    assert_eq!(lines(&one_level), first_level, "{one_level}");
    // A trailing slash names the same directory.
    let slashed = workspace.cairn(&["ls", "latest", &format!("{top}/")]).ok();
    assert_eq!(lines(&slashed.text()), first_level);

    for args in [
        vec!["ls", "latest", &top, "--recursive"],
        vec!["ls", "-R", "latest", &top],
    ] {
        let recursive = workspace.cairn(&args).ok().text();
        assert_eq!(lines(&recursive), everything, "{args:?}: {recursive}");
    }
    // Without a path: the whole snapshot, parents of the backed-up directory included.
    let whole = lines(&workspace.cairn(&["ls", "latest"]).ok().text());
    assert!(whole.is_superset(&everything), "{whole:?}");
    assert!(whole.contains(&top[..top.rfind('/').unwrap()]));

    // Several paths: each one, in the order given; a file is listed alone.
    let several = workspace
        .cairn(&["ls", "latest", &below("sub"), &below("a.txt")])
        .ok()
        .text();
    let expected = [
        below("sub"),
        below("sub/b.txt"),
        below("sub/deeper"),
        below("a.txt"),
    ];
    assert_eq!(several.lines().collect::<Vec<_>>(), expected, "{several}");

    workspace
        .cairn(&["ls", "latest", &below("no-such-entry")])
        .failed()
        .stderr_contains("no-such-entry");
}

#[test]
fn ls_long_has_a_header_and_shows_special_bits_and_type_characters() {
    let workspace = Workspace::initialized();
    let tree = listed_tree(&workspace);
    let top = tree.root().to_string_lossy().into_owned();
    let listing = workspace.cairn(&["ls", "-l", "latest", &top]).ok().text();
    let mut rows = listing.lines();
    let header = rows.next().unwrap();
    assert!(header.starts_with("mode"), "{listing}");
    assert!(header.ends_with("path"), "{listing}");
    let path_column = header.find("path").unwrap();
    let mode_of = |relative: &str| -> String {
        let wanted = format!("{top}/{relative}");
        let row = listing
            .lines()
            .find(|row| {
                row.get(path_column..)
                    .is_some_and(|path| path.starts_with(&wanted))
            })
            .unwrap_or_else(|| panic!("{wanted} not listed:\n{listing}"));
        row[..10].to_owned()
    };
    assert_eq!(mode_of("setuid"), "-rwsr-xr-x");
    assert_eq!(mode_of("setgid-no-x"), "-rw-r-Sr--");
    assert_eq!(mode_of("sticky"), "drwxrwxrwt");
    assert_eq!(mode_of("pipe"), "prw-r--r--");
    assert_eq!(mode_of("link"), "lrwxrwxrwx");
    assert_eq!(mode_of("sub"), "drwxr-xr-x");
    assert!(
        listing.contains(&format!("{top}/link -> sub/b.txt")),
        "{listing}"
    );
    // Every row lines up with the header: the path starts in the header's path column.
    for row in rows {
        assert!(row[path_column..].starts_with('/'), "{row}\n{listing}");
    }

    let json = workspace.cairn(&["ls", "--json", "latest", &top]).ok();
    let setuid = json
        .json_lines()
        .into_iter()
        .find(|node| node["path"] == format!("{top}/setuid"))
        .unwrap();
    assert_eq!(setuid["permissions"], "-rwsr-xr-x");
    assert_eq!(setuid["mode"], 0o4755);
    // --json has no header line.
    assert!(
        json.json_lines()
            .iter()
            .all(|line| line["message_type"] == "node")
    );
}
