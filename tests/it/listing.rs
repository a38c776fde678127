//! `ls` and `dump --archive`: one level or everything below, several paths, the `--long`
//! header and mode strings (setuid, setgid, sticky, FIFOs, symlinks); directories streamed as
//! tar and zip archives that the real `tar` and a zip reader unpack to the backed-up bytes,
//! modes, times, symlinks and hard links.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{
    Entry, TreeBuilder, Workspace, assert_same_entries, random_bytes, scan_tree, set_mtime,
};

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
    make_fifo(&tree, "pipe");
    workspace.backup(&[tree.root()]);
    tree
}

/// Makes a FIFO at `relative` below the tree (and its parent directories).
fn make_fifo(tree: &TreeBuilder, relative: &str) {
    let path = tree.path(relative);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let status = Command::new("mkfifo").arg(&path).status();
    assert!(status.expect("mkfifo runs").success(), "mkfifo {relative}");
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

/// A tree for the archive tests: files at block-boundary sizes, a long path, a long symlink
/// target, a hard link pair, special mode bits, and whole-second mtimes (what tar keeps).
fn archived_tree(workspace: &Workspace) -> TreeBuilder {
    let tree = TreeBuilder::new(workspace.path("src/top"));
    for (index, size) in [0usize, 1, 511, 512, 513, 70_000, 1_500_000]
        .into_iter()
        .enumerate()
    {
        tree.file(
            &format!("sizes/file-{size}"),
            &random_bytes(index as u64, size),
        );
    }
    let long_dir = format!("{}/{}", "d".repeat(60), "e".repeat(60));
    tree.file(&format!("{long_dir}/{}", "f".repeat(90)), b"long path");
    tree.symlink("long-link", &"t".repeat(150));
    tree.symlink("link", "sizes/file-1");
    tree.file("linked/first", b"one inode, two names");
    fs::hard_link(tree.path("linked/first"), tree.path("linked/second")).unwrap();
    tree.file("setuid", b"#!/bin/sh\n");
    tree.dir("private");
    tree.mode("setuid", 0o4755).mode("private", 0o750);
    // Deepest first, so that setting a directory's time comes after its entries are made.
    let mut paths: Vec<PathBuf> = scan_tree(tree.root()).into_keys().collect();
    paths.sort_by_key(|path| std::cmp::Reverse(path.components().count()));
    for (index, path) in paths.iter().enumerate() {
        if fs::symlink_metadata(tree.path(&path.to_string_lossy()))
            .unwrap()
            .is_symlink()
        {
            continue;
        }
        // Odd seconds: zip's 2-second steps must round them down.
        let step = i64::try_from(2 * index).unwrap();
        tree.mtime(&path.to_string_lossy(), 1_700_000_001 + step, 0);
    }
    tree
}

#[test]
fn dump_of_a_directory_is_a_tar_that_tar_unpacks_to_the_same_tree() {
    let workspace = Workspace::initialized();
    let tree = archived_tree(&workspace);
    // A FIFO in its own directory, taken out of both trees before comparing them.
    make_fifo(&tree, "special/pipe");
    tree.mtime("special", 1_600_000_000, 0)
        .mtime("", 1_600_000_002, 0);
    workspace.backup(&[tree.root()]);
    let top = tree.root().to_string_lossy().into_owned();
    let expected = scan_tree_without(tree.root(), "special/pipe");

    for args in [
        vec!["dump", "latest", top.as_str()],
        vec!["dump", "--archive", "tar", "latest", top.as_str()],
    ] {
        let run = workspace.cairn(&args).ok();
        assert!(
            run.stderr.contains(
                "archived 10 files, 7 directories, 2 symlinks, 1 hard link, 1 special file ("
            ),
            "{}",
            run.stderr
        );
        assert!(run.stderr.contains("1 hard link"), "{}", run.stderr);
        let archive = workspace.path("top.tar");
        fs::write(&archive, &run.stdout).unwrap();
        let extracted = workspace.path("extracted");
        let _ = fs::remove_dir_all(&extracted);
        fs::create_dir(&extracted).unwrap();
        let tar = Command::new("tar")
            .arg("-xpf")
            .arg(&archive)
            .arg("-C")
            .arg(&extracted)
            .output()
            .unwrap();
        assert!(
            tar.status.success(),
            "tar: {}",
            String::from_utf8_lossy(&tar.stderr)
        );
        let unpacked = extracted.join("top");
        assert!(
            fs::symlink_metadata(unpacked.join("special/pipe"))
                .unwrap()
                .file_type()
                .is_fifo()
        );
        let inode = |path: &Path| fs::metadata(path).unwrap().ino();
        assert_eq!(
            inode(&unpacked.join("linked/first")),
            inode(&unpacked.join("linked/second"))
        );
        // Leave the FIFO out of the comparison, as scan_tree reads only files, directories
        // and symlinks.
        assert_same_entries(&expected, &scan_tree_without(&unpacked, "special/pipe"));
    }
}

/// `scan_tree` of a root that holds a FIFO at `fifo` (relative): the FIFO is moved out of
/// the tree first and its directory's mtime put back.
fn scan_tree_without(root: &Path, fifo: &str) -> BTreeMap<PathBuf, Entry> {
    let fifo = root.join(fifo);
    let parent = fifo.parent().unwrap().to_owned();
    let (seconds, nanos) = {
        let metadata = fs::metadata(&parent).unwrap();
        (metadata.mtime(), metadata.mtime_nsec())
    };
    fs::remove_file(&fifo).unwrap();
    set_mtime(&parent, seconds, u32::try_from(nanos).unwrap());
    scan_tree(root)
}

/// Reads a zip with Python's `zipfile` (which checks every CRC): one JSON line per entry with
/// its name, Unix mode, DOS time and content as hex.
const ZIP_READER: &str = r#"
import json, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as archive:
    bad = archive.testzip()
    assert bad is None, "CRC failed: " + bad
    for info in archive.infolist():
        print(json.dumps({"name": info.filename, "mode": info.external_attr >> 16,
                          "time": list(info.date_time), "data": archive.read(info).hex()}))
"#;

#[test]
fn dump_archive_zip_streams_a_zip_that_a_reader_checks_with_modes_times_and_symlinks() {
    let workspace = Workspace::initialized();
    let tree = archived_tree(&workspace);
    make_fifo(&tree, "special/pipe");
    workspace.backup(&[tree.root()]);
    let top = tree.root().to_string_lossy().into_owned();
    let mut command = workspace.command(&["dump", "--archive", "zip", "latest", &top], &[]);
    command.env("TZ", "UTC");
    // A pipe, not a file: the zip is written without seeking.
    let run = crate::support::run_command(command, None).ok();
    assert!(
        run.stderr
            .contains("top/special/pipe left out: a zip archive cannot hold FIFOs"),
        "{}",
        run.stderr
    );
    let archive = workspace.path("top.zip");
    fs::write(&archive, &run.stdout).unwrap();
    let reader = Command::new("python3")
        .args(["-c", ZIP_READER])
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        reader.status.success(),
        "{}",
        String::from_utf8_lossy(&reader.stderr)
    );
    let entries: BTreeMap<String, serde_json::Value> = String::from_utf8(reader.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let entry: serde_json::Value = serde_json::from_str(line).unwrap();
            (entry["name"].as_str().unwrap().to_owned(), entry)
        })
        .collect();
    let source = scan_tree_without(tree.root(), "special/pipe");
    let mut expected_names = BTreeSet::new();
    for (relative, entry) in &source {
        let on_disk = tree.root().join(relative);
        let metadata = fs::symlink_metadata(&on_disk).unwrap();
        let mut name = Path::new("top")
            .join(relative)
            .to_string_lossy()
            .into_owned();
        if metadata.is_dir() && !name.ends_with('/') {
            name.push('/');
        }
        let Some(zipped) = entries.get(&name) else {
            panic!("{name} missing from {:?}", entries.keys());
        };
        expected_names.insert(name.clone());
        assert_eq!(zipped["mode"], metadata.mode(), "{name}: mode and type");
        let data = hex::decode(zipped["data"].as_str().unwrap()).unwrap();
        match &entry.kind {
            crate::support::EntryKind::File { .. } => {
                assert_eq!(data, fs::read(&on_disk).unwrap(), "{name}: content");
            }
            crate::support::EntryKind::Symlink(target) => {
                assert_eq!(
                    data,
                    target.as_os_str().as_encoded_bytes(),
                    "{name}: target"
                );
            }
            crate::support::EntryKind::Directory => assert!(data.is_empty()),
        }
        if !metadata.is_symlink() {
            // DOS times: civil time (TZ=UTC here) in 2-second steps.
            let time = jiff::Timestamp::from_second(metadata.mtime() / 2 * 2)
                .unwrap()
                .to_zoned(jiff::tz::TimeZone::UTC);
            let expected = serde_json::json!([
                time.year(),
                time.month(),
                time.day(),
                time.hour(),
                time.minute(),
                time.second()
            ]);
            assert_eq!(zipped["time"], expected, "{name}: time");
        }
    }
    // The FIFO is the one entry left out; the hard link pair is two full copies.
    let names: BTreeSet<String> = entries.keys().cloned().collect();
    assert_eq!(names, expected_names);
    assert!(!names.contains("top/special/pipe"));
}

#[test]
fn an_archive_of_damaged_data_fails_and_is_never_finished() {
    let workspace = Workspace::initialized();
    let tree = TreeBuilder::new(workspace.path("damaged"));
    tree.file("big.bin", &random_bytes(9, 3_000_000));
    workspace.backup(&[tree.root()]);
    let largest = crate::support::objects(&workspace.repo, "data")
        .into_iter()
        .max_by_key(|path| fs::metadata(path).unwrap().len())
        .unwrap();
    let length = i64::try_from(fs::metadata(&largest).unwrap().len()).unwrap();
    crate::support::flip_byte(&largest, length / 2);
    let top = tree.root().to_string_lossy().into_owned();
    for format in ["tar", "zip"] {
        let run = workspace
            .cairn(&["dump", "--archive", format, "latest", &top])
            .code(1);
        assert!(
            run.stderr.contains("cairn check"),
            "{format}: {}",
            run.stderr
        );
        let output = &run.stdout;
        match format {
            // No end-of-archive blocks: the last 1024 bytes are not all zero.
            "tar" => assert!(
                output.len() < 1024 || output[output.len() - 1024..].iter().any(|byte| *byte != 0),
                "a tar cut short must not end like a finished one"
            ),
            // No end of central directory record (signature PK\5\6).
            _ => assert!(
                !output.windows(4).any(|window| window == b"PK\x05\x06"),
                "a zip cut short must have no central directory"
            ),
        }
    }
}

/// Snapshots of two hosts, two streams and several tags at fixed times, oldest first: returns
/// their ids in the order made.
fn grouped_snapshots(workspace: &Workspace) -> Vec<String> {
    let made = [
        ("a", "db", "2024-01-01T00:00:00Z", vec!["nightly"]),
        ("a", "db", "2024-01-02T00:00:00Z", vec!["nightly"]),
        ("a", "db", "2024-01-03T00:00:00Z", vec!["nightly"]),
        // `--tag x,y` is two tags, as in restic.
        ("a", "web", "2024-01-01T01:00:00Z", vec!["two words", "x,y"]),
        ("a", "web", "2024-01-02T01:00:00Z", vec!["two words", "x,y"]),
        ("b", "db", "2024-01-01T02:00:00Z", vec![]),
    ];
    made.iter()
        .enumerate()
        .map(|(index, (host, name, time, tags))| {
            let mut extra = vec!["--host", host, "--time", time];
            for tag in tags {
                extra.extend(["--tag", tag]);
            }
            let summary = workspace.backup_stdin(name, &random_bytes(index as u64, 100), &extra);
            summary["snapshot_id"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[test]
fn snapshots_latest_group_by_and_compact() {
    let workspace = Workspace::initialized();
    let ids = grouped_snapshots(&workspace);
    let listed_ids = |args: &[&str]| -> Vec<String> {
        let mut full: Vec<&str> = vec!["snapshots", "--json"];
        full.extend_from_slice(args);
        workspace
            .cairn(&full)
            .ok()
            .json_lines()
            .iter()
            .map(|line| line["id"].as_str().unwrap().to_owned())
            .collect()
    };
    // --latest counts per host and paths: the newest of each, oldest first overall.
    assert_eq!(
        listed_ids(&["--latest", "1"]),
        [ids[5].as_str(), &ids[4], &ids[2]]
    );
    assert_eq!(
        listed_ids(&["--latest", "2"]),
        [ids[3].as_str(), &ids[5], &ids[1], &ids[4], &ids[2]]
    );
    assert_eq!(listed_ids(&["--latest", "9"]).len(), 6);
    // With --group-by, group by group (in key order), each oldest first.
    assert_eq!(
        listed_ids(&["--group-by", "host", "--latest", "1"]),
        [ids[2].as_str(), &ids[5]]
    );
    let by_tags = workspace
        .cairn(&["snapshots", "--json", "--group-by", "tags"])
        .ok()
        .json_lines();
    assert_eq!(by_tags.len(), 6);
    assert_eq!(by_tags[0]["group"], serde_json::json!({"tags": []}));
    assert!(
        by_tags
            .iter()
            .any(|line| line["group"] == serde_json::json!({"tags": ["two words", "x", "y"]}))
    );

    let grouped = workspace
        .cairn(&["snapshots", "--group-by", "host"])
        .ok()
        .text();
    let headings: Vec<&str> = grouped
        .lines()
        .filter(|line| line.starts_with("snapshots of"))
        .collect();
    assert_eq!(
        headings,
        ["snapshots of host a:", "snapshots of host b:"],
        "{grouped}"
    );
    assert!(grouped.contains("\n5 snapshots\n"), "{grouped}");
    assert!(grouped.ends_with("\n1 snapshot\n"), "{grouped}");

    // Tags holding a comma or a space are quoted, so the list reads one way only.
    let table = workspace.cairn(&["snapshots"]).ok().text();
    assert!(table.contains(r#""two words",x,y"#), "{table}");
    assert!(table.ends_with("\n6 snapshots\n"), "{table}");
    let latest = workspace.cairn(&["snapshots", "--latest", "1"]).ok().text();
    assert!(latest.ends_with("\n3 snapshots\n"), "{latest}");

    let compact = workspace.cairn(&["snapshots", "--compact"]).ok().text();
    let header = compact.lines().next().unwrap();
    assert!(
        header.ends_with("tags") && !header.contains("paths"),
        "{compact}"
    );
    assert!(
        !compact.contains(" web") && !compact.contains(" db"),
        "{compact}"
    );
    assert_eq!(compact.lines().count(), 1 + 6 + 1, "{compact}");

    workspace
        .cairn(&["snapshots", "--group-by", "colour"])
        .code(2);
}

#[test]
fn snapshots_of_several_paths_take_one_line_per_path() {
    let workspace = Workspace::initialized();
    let one = TreeBuilder::new(workspace.path("one"));
    let two = TreeBuilder::new(workspace.path("two"));
    one.file("a", b"a");
    two.file("b", b"b");
    workspace.backup(&[one.root(), two.root()]);
    let table = workspace.cairn(&["snapshots"]).ok().text();
    let rows: Vec<&str> = table.lines().collect();
    let paths_column = rows[0].find("paths").unwrap();
    assert_eq!(rows.len(), 4, "{table}");
    assert_eq!(&rows[1][paths_column..], one.root().to_string_lossy());
    assert_eq!(rows[2][..paths_column].trim(), "", "{table}");
    assert_eq!(&rows[2][paths_column..], two.root().to_string_lossy());
    assert_eq!(rows[3], "1 snapshot");
}

#[test]
fn tar_names_keep_their_bytes_and_zip_names_are_utf8() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let workspace = Workspace::initialized();
    let tree = TreeBuilder::new(workspace.path("names"));
    let latin1 = OsStr::from_bytes(b"caf\xe9.txt");
    fs::write(tree.root().join(latin1), b"not UTF-8").unwrap();
    workspace.backup(&[tree.root()]);
    let top = tree.root().to_string_lossy().into_owned();
    let tar = workspace.cairn(&["dump", "latest", &top]).ok();
    let archive = workspace.path("names.tar");
    fs::write(&archive, &tar.stdout).unwrap();
    let extracted = workspace.path("extracted");
    fs::create_dir(&extracted).unwrap();
    let status = Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&extracted)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        fs::read(extracted.join("names").join(latin1)).unwrap(),
        b"not UTF-8"
    );
    let zip = workspace
        .cairn(&["dump", "--archive", "zip", "latest", &top])
        .ok();
    let replaced = "caf\u{fffd}.txt".as_bytes();
    assert!(
        zip.stdout
            .windows(replaced.len())
            .any(|window| window == replaced)
    );
}
