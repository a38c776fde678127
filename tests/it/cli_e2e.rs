//! The `cairn` binary end to end on real files and processes: round trips of awkward trees and
//! of streams, deduplication, confidentiality of the stored bytes, detection of damage by `check`
//! and `restore`, exit codes, and recovery after a killed backup.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::{
    EntryKind, MongoArchive, PASSWORD, TreeBuilder, Workspace, assert_same_entries,
    assert_same_tree, chown_tree, compressible_text, contains, copy_dir, docker_save_tar,
    effective_uid, files_below, flip_byte, json_u64, listing, object_id, objects,
    open_local_repository, random_bytes, restored_path, scan_tree, set_mtime, unprivileged_prefix,
};

const MIB: usize = 1 << 20;

fn text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Gives every file and directory below `root` (and `root`) a distinct, fixed mtime with
/// nanoseconds, so that a restore that drops or rounds times is caught.
fn stamp_mtimes(root: &Path) {
    let entries = scan_tree(root);
    for (position, (relative, entry)) in entries.iter().enumerate() {
        if matches!(entry.kind, EntryKind::Symlink(_)) {
            continue;
        }
        let offset = i64::try_from(position).expect("small");
        let nanos = u32::try_from((offset * 7_919_113) % 1_000_000_000).expect("below 1e9");
        set_mtime(&root.join(relative), 1_500_000_000 + offset * 3_600, nanos);
    }
}

/// Test 1: a tree with every awkward kind of entry survives backup and restore byte for byte,
/// with modes, mtimes and symlink targets, and `SNAPSHOT:PATH` restores a subdirectory's
/// contents directly into the target.
#[test]
fn round_trip_of_an_awkward_tree() {
    let workspace = Workspace::initialized();
    let source = workspace.path("source");
    let tree = TreeBuilder::new(&source);
    tree.file("empty.txt", b"");
    tree.file("nested/also empty", b"");
    tree.dir("empty dir");
    tree.dir("nested/empty inner dir");
    tree.file("héllo wörld.txt", b"unicode and a space in the name\n");
    tree.file(
        "日本語 ディレクトリ/データ ファイル.bin",
        &random_bytes(1, 5_000),
    );
    tree.file("emoji 🎉/party 🎈 time.txt", b"balloons\n");
    tree.file("  leading and trailing spaces  ", b"spaces\n");
    tree.file(
        "nested/tab\tand\nnewline",
        b"control characters in a name\n",
    );
    tree.file("big/random.bin", &random_bytes(2, 8 * MIB));
    tree.file("big/text.log", &compressible_text(3, 8 * MIB));
    tree.file("bin/tool", b"#!/bin/sh\necho tool\n");
    tree.mode("bin/tool", 0o755);
    tree.file("private/key", b"not really a key\n");
    tree.mode("private/key", 0o600).mode("private", 0o700);
    tree.file("readonly.txt", b"read only\n");
    tree.mode("readonly.txt", 0o444);
    tree.file("shared/group-writable", b"g+w\n");
    tree.mode("shared/group-writable", 0o664)
        .mode("shared", 0o2775);
    tree.symlink("links/relative", "../héllo wörld.txt");
    tree.symlink("links/to directory", "../nested");
    tree.symlink("links/dangling", "does/not/exist");
    tree.symlink("links/absolute", &text(&source.join("big/text.log")));
    tree.symlink("links/unicode ✓", "日本語 ディレクトリ/データ ファイル.bin");
    let mut deep = String::from("deep");
    for level in 0..45 {
        write!(deep, "/level {level:02}").expect("write to string");
    }
    tree.file(&format!("{deep}/bottom.txt"), b"45 levels down\n");
    tree.file("nested/sub/file-a", &compressible_text(4, 20_000));
    tree.file("nested/sub/deeper/file-b", &random_bytes(5, 70_000));
    tree.symlink("nested/sub/link-to-a", "file-a");
    tree.file("bin/setuid-tool", b"#!/bin/sh\n");
    tree.mode("bin/setuid-tool", 0o4755);
    tree.dir("sticky");
    tree.mode("sticky", 0o1777);
    // A name that is not UTF-8 (Latin-1 "été"), stored and restored as raw bytes.
    let latin1 = std::ffi::OsStr::from_bytes(b"latin1-\xe9t\xe9.txt");
    fs::write(source.join(latin1), b"latin-1 name\n").expect("write latin-1 name");
    stamp_mtimes(&source);
    // Times before 1970 and at the very start of a second.
    tree.file("old/before-1970.txt", b"from 1969\n");
    tree.mtime("old/before-1970.txt", -15_000_000, 250_000_000);
    tree.mtime("old", 0, 0);
    let expected = scan_tree(&source);
    let files = expected
        .values()
        .filter(|entry| matches!(entry.kind, EntryKind::File { .. }))
        .count() as u64;

    let summary = workspace.backup(&[&source]);
    assert_eq!(json_u64(&summary, "files_processed"), files);
    assert_eq!(json_u64(&summary, "entries_unreadable"), 0);
    assert!(json_u64(&summary, "bytes_processed") > (16 * MIB) as u64);

    let target = workspace.path("restored");
    workspace
        .cairn(&["restore", "latest", "--target", &text(&target)])
        .ok();
    assert_same_entries(&expected, &scan_tree(&restored_path(&target, &source)));

    // SNAPSHOT:PATH puts the directory's contents (and its metadata) directly in the target.
    let sub_target = workspace.path("restored-sub");
    let spec = format!("latest:{}", text(&source.join("nested")));
    workspace
        .cairn(&["restore", &spec, "--target", &text(&sub_target)])
        .ok();
    assert_same_tree(&source.join("nested"), &sub_target);

    // A file path lands as target/<name>.
    let file_target = workspace.path("restored-file");
    let spec = format!("latest:{}", text(&source.join("héllo wörld.txt")));
    workspace
        .cairn(&["restore", &spec, "--target", &text(&file_target)])
        .ok();
    let restored = scan_tree(&file_target);
    assert_eq!(
        restored.get(Path::new("héllo wörld.txt")),
        expected.get(Path::new("héllo wörld.txt"))
    );
}

/// Test 2: streams read from standard input (a mongodump-like archive, a docker-save-like tar
/// and an empty stream) come back byte for byte through `dump`, and `snapshots --json` shows
/// the stream name, tags and host.
#[test]
fn stdin_streams_round_trip_through_dump() {
    let workspace = Workspace::initialized();
    let mongo = MongoArchive::generate(10, 1_200).to_bytes();
    let docker = docker_save_tar(11, 3, MIB);
    assert!(mongo.len() > 2 * MIB && docker.len() > 2 * MIB);

    let mongo_summary = workspace.backup_stdin(
        "shop.archive",
        &mongo,
        &["--tag", "mongo", "--tag", "nightly", "--host", "db-01"],
    );
    assert_eq!(
        json_u64(&mongo_summary, "bytes_processed"),
        mongo.len() as u64
    );
    assert_eq!(json_u64(&mongo_summary, "files_processed"), 1);
    let docker_summary = workspace.backup_stdin(
        "app image.tar",
        &docker,
        &["--tag", "docker", "--host", "build-07"],
    );
    let empty_summary = workspace.backup_stdin("empty.stream", b"", &[]);
    assert_eq!(json_u64(&empty_summary, "bytes_processed"), 0);

    let mongo_id = mongo_summary["snapshot_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let docker_id = docker_summary["snapshot_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let dumped = workspace
        .cairn(&["dump", &mongo_id[..12], "shop.archive"])
        .ok();
    assert!(
        dumped.stdout == mongo,
        "mongodump-like stream differs after dump"
    );
    let dumped = workspace.cairn(&["dump", &docker_id, "app image.tar"]).ok();
    assert!(
        dumped.stdout == docker,
        "docker-save-like stream differs after dump"
    );
    let dumped = workspace.cairn(&["dump", "latest", "empty.stream"]).ok();
    assert!(dumped.stdout.is_empty());
    // The wrong name for a snapshot is an error, not an empty stream.
    workspace
        .cairn(&["dump", &mongo_id, "app image.tar"])
        .failed();

    let snapshots = workspace.snapshots();
    assert_eq!(snapshots.len(), 3);
    let by_id: BTreeMap<&str, &serde_json::Value> = snapshots
        .iter()
        .map(|snapshot| (snapshot["id"].as_str().expect("id"), snapshot))
        .collect();
    let mongo_snapshot = by_id[mongo_id.as_str()];
    assert_eq!(mongo_snapshot["paths"], serde_json::json!(["shop.archive"]));
    assert_eq!(mongo_snapshot["stdin"], true);
    assert_eq!(
        mongo_snapshot["tags"],
        serde_json::json!(["mongo", "nightly"])
    );
    assert_eq!(mongo_snapshot["host"], "db-01");
    assert_eq!(
        json_u64(&mongo_snapshot["summary"], "bytes_processed"),
        mongo.len() as u64
    );
    let docker_snapshot = by_id[docker_id.as_str()];
    assert_eq!(
        docker_snapshot["paths"],
        serde_json::json!(["app image.tar"])
    );
    assert_eq!(docker_snapshot["tags"], serde_json::json!(["docker"]));
    assert_eq!(docker_snapshot["host"], "build-07");
}

/// Test 3: backing up unchanged data again adds under 1% of its size, and a stream with a few
/// documents changed in place adds far less than its size.
#[test]
fn unchanged_and_slightly_changed_data_deduplicate() {
    let workspace = Workspace::initialized();
    let source = workspace.path("data");
    let tree = TreeBuilder::new(&source);
    tree.file("random-1.bin", &random_bytes(20, 2 * MIB));
    tree.file("logs/app.log", &compressible_text(21, MIB));
    for index in 0..12 {
        tree.file(
            &format!("small/file-{index:02}.txt"),
            &compressible_text(100 + index, 3_000),
        );
    }
    let first = workspace.backup(&[&source]);
    let processed = json_u64(&first, "bytes_processed");
    assert!(json_u64(&first, "bytes_added") > processed / 3);
    let second = workspace.backup(&[&source]);
    assert_eq!(json_u64(&second, "bytes_processed"), processed);
    assert!(
        json_u64(&second, "bytes_added") * 100 < processed,
        "unchanged tree added {} of {processed} bytes",
        json_u64(&second, "bytes_added")
    );

    let mut archive = MongoArchive::generate(22, 700);
    let original = archive.to_bytes();
    let first = workspace.backup_stdin("shop.archive", &original, &[]);
    assert!(json_u64(&first, "bytes_added") > original.len() as u64 / 3);
    let again = workspace.backup_stdin("shop.archive", &original, &[]);
    assert!(
        json_u64(&again, "bytes_added") * 100 < original.len() as u64,
        "unchanged stream added {} of {} bytes",
        json_u64(&again, "bytes_added"),
        original.len()
    );
    let changed_documents = archive.modify_documents(23, 5);
    let modified = archive.to_bytes();
    assert_eq!(modified.len(), original.len());
    assert_ne!(modified, original);
    let changed = workspace.backup_stdin("shop.archive", &modified, &[]);
    let added = json_u64(&changed, "bytes_added");
    assert!(
        added * 10 < modified.len() as u64,
        "{} documents changed in place added {added} of {} bytes",
        changed_documents.len(),
        modified.len()
    );
    let dumped = workspace.cairn(&["dump", "latest", "shop.archive"]).ok();
    assert!(
        dumped.stdout == modified,
        "modified stream differs after dump"
    );
}

fn assert_no_plaintext(repo: &Path, markers: &[Vec<u8>]) {
    let files = files_below(repo);
    assert!(files.len() >= 5, "too few repository files: {files:?}");
    for file in files {
        let name = file
            .strip_prefix(repo)
            .expect("below repo")
            .to_string_lossy()
            .into_owned();
        let bytes = fs::read(&file).expect("read repository file");
        for marker in markers {
            assert!(
                !contains(&bytes, marker),
                "plaintext {:?} found in repository file {name}",
                String::from_utf8_lossy(marker)
            );
            assert!(
                !contains(name.as_bytes(), marker),
                "plaintext {:?} found in repository file name {name}",
                String::from_utf8_lossy(marker)
            );
        }
    }
}

/// Test 4: no content, file name, symlink target, host, tag or stream name appears in any byte
/// of the repository, with and without compression.
#[test]
fn plaintext_never_reaches_the_repository() {
    let content_marker = "CAIRN-CONTENT-MARKER-Q7X9Z2";
    let names = [
        "Top-Secret-Filename-Ocelot.txt",
        "Confidential-Directory-Pangolin",
        "Symlink-Target-Narwhal",
        "Hostname-Marker-Axolotl",
        "Tag-Marker-Quetzal",
        "Stream-Name-Marker-Okapi.dump",
    ];
    let pattern: Vec<u8> = b"0123456789abcdefFEDCBA9876543210"
        .iter()
        .copied()
        .cycle()
        .take(256 * 1024)
        .collect();
    for compression in ["3", "0"] {
        let workspace = Workspace::initialized_with(&["--compression", compression]);
        let source = workspace.path("source");
        let tree = TreeBuilder::new(&source);
        let mut text = compressible_text(30, 200_000);
        for position in (0..text.len() - 64).step_by(9_000) {
            text[position..position + content_marker.len()]
                .copy_from_slice(content_marker.as_bytes());
        }
        tree.file("notes.txt", &text);
        tree.file(
            &format!("{}/{}", names[1], names[0]),
            content_marker.as_bytes(),
        );
        tree.file("pattern.bin", &pattern);
        tree.symlink("link", names[2]);
        workspace
            .cairn(&[
                "backup",
                &source.to_string_lossy(),
                "--host",
                names[3],
                "--tag",
                names[4],
            ])
            .ok();
        let mut stream = compressible_text(31, 50_000);
        stream.extend_from_slice(content_marker.as_bytes());
        workspace.backup_stdin(names[5], &stream, &["--host", names[3]]);

        let mut markers: Vec<Vec<u8>> = names.iter().map(|name| name.as_bytes().to_vec()).collect();
        markers.push(content_marker.as_bytes().to_vec());
        markers.push(pattern[..32].to_vec());
        markers.push(pattern[1_000..1_016].to_vec());
        let workspace_name = workspace
            .root()
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        markers.push(workspace_name.into_bytes());
        assert_no_plaintext(&workspace.repo, &markers);
        // The markers are really there to be found: the restore shows them.
        let target = workspace.path("restored");
        workspace
            .cairn(&["restore", "latest", "--target", &target.to_string_lossy()])
            .ok();
        assert_eq!(
            fs::read(target.join(names[5])).expect("restored stream"),
            stream
        );
    }
}

/// A repository with two snapshots, several data packs, a tree pack and two index objects.
fn damage_fixture() -> (Workspace, PathBuf) {
    let workspace = Workspace::initialized_with(&["--pack-size-mib", "1"]);
    let source = workspace.path("source");
    let tree = TreeBuilder::new(&source);
    tree.file("one.bin", &random_bytes(40, 1_500_000));
    tree.file("two.txt", &compressible_text(41, 300_000));
    tree.file("dir/three.bin", &random_bytes(42, 200_000));
    workspace.backup(&[&source]);
    tree.file("four.bin", &random_bytes(43, 100_000));
    workspace.backup(&[&source]);
    (workspace, source)
}

/// A fresh copy of the fixture's repository with `damage` applied; runs `check` (with
/// `--read-data` when asked) on it and asserts a failure that names `object`.
fn assert_check_catches(
    workspace: &Workspace,
    trial: &str,
    read_data: bool,
    object: &str,
    damage: impl FnOnce(&Path),
) {
    let copy = workspace.path(&format!("copy-{trial}"));
    copy_dir(&workspace.repo, &copy);
    damage(&copy);
    let cache = workspace.path(&format!("cache-{trial}"));
    let args: &[&str] = if read_data {
        &["check", "--read-data"]
    } else {
        &["check"]
    };
    let run = workspace
        .cairn_env(
            args,
            &[("CAIRN_REPOSITORY", &copy), ("CAIRN_CACHE_DIR", &cache)],
        )
        .failed();
    assert!(
        // Damage reports name objects by their short ids.
        run.stderr.contains(&object[..object.len().min(8)]),
        "trial {trial}: check did not name {object}:\n{}",
        run.stderr
    );
    fs::remove_dir_all(&copy).expect("remove copy");
}

/// Test 5: one flipped byte in any pack (header, inside a data or tree blob, trailer, footer),
/// index or snapshot object makes `check --read-data` fail and name the object; a truncated or
/// missing pack is caught by a plain `check`.
#[test]
fn check_names_every_damaged_object() {
    let (workspace, _) = damage_fixture();
    workspace.cairn(&["check", "--read-data"]).ok();
    let repository = open_local_repository(&workspace.repo);
    let mut packs = Vec::new();
    for index in objects(&workspace.repo, "index") {
        let name = format!("index/{}", object_id(&index));
        let (_, object) = repository.load_index_object(&name).expect("index object");
        packs.extend(object.packs);
    }
    let data_pack = packs
        .iter()
        .filter(|pack| {
            pack.entries
                .iter()
                .all(|entry| entry.blob_type == cairn_store::BlobType::Data)
        })
        .max_by_key(|pack| pack.entries.len())
        .expect("a data pack");
    let tree_pack = packs
        .iter()
        .find(|pack| {
            pack.entries
                .iter()
                .all(|entry| entry.blob_type == cairn_store::BlobType::Tree)
        })
        .expect("a tree pack");
    let pack_path = |pack: &cairn_store::format::index::IndexedPack| {
        let hex = pack.pack_id.to_hex();
        PathBuf::from("data").join(&hex[..2]).join(hex)
    };
    let middle_of_blob = |pack: &cairn_store::format::index::IndexedPack, which: usize| {
        let entry = pack.entries[which % pack.entries.len()];
        i64::from(entry.offset) + i64::from(entry.length) / 2
    };
    let mut trials: Vec<(String, PathBuf, i64)> = vec![
        ("pack-header".into(), pack_path(data_pack), 1),
        (
            "pack-first-blob".into(),
            pack_path(data_pack),
            middle_of_blob(data_pack, 0),
        ),
        (
            "pack-last-blob".into(),
            pack_path(data_pack),
            middle_of_blob(data_pack, usize::MAX),
        ),
        ("pack-trailer".into(), pack_path(data_pack), -10),
        ("pack-footer".into(), pack_path(data_pack), -1),
        (
            "tree-pack-blob".into(),
            pack_path(tree_pack),
            middle_of_blob(tree_pack, 0),
        ),
        ("tree-pack-trailer".into(), pack_path(tree_pack), -20),
    ];
    for (position, index) in objects(&workspace.repo, "index").into_iter().enumerate() {
        let relative = index
            .strip_prefix(&workspace.repo)
            .expect("below")
            .to_owned();
        trials.push((format!("index-{position}-start"), relative.clone(), 0));
        trials.push((format!("index-{position}-middle"), relative, 100));
    }
    for (position, snapshot) in objects(&workspace.repo, "snapshots")
        .into_iter()
        .enumerate()
    {
        let relative = snapshot
            .strip_prefix(&workspace.repo)
            .expect("below")
            .to_owned();
        trials.push((format!("snapshot-{position}-body"), relative.clone(), 60));
        trials.push((format!("snapshot-{position}-tag"), relative, -1));
    }
    assert!(trials.len() >= 13);
    for (trial, relative, offset) in &trials {
        let object = object_id(relative);
        assert_check_catches(&workspace, trial, true, &object, |copy| {
            flip_byte(&copy.join(relative), *offset);
        });
    }

    // Size damage is caught without reading data.
    let data = pack_path(data_pack);
    let object = object_id(&data);
    assert_check_catches(
        &workspace,
        "pack-truncated-by-one",
        false,
        &object,
        |copy| {
            let path = copy.join(&data);
            let length = fs::metadata(&path).expect("pack").len();
            fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|file| file.set_len(length - 1))
                .expect("truncate");
        },
    );
    assert_check_catches(
        &workspace,
        "pack-truncated-to-half",
        false,
        &object,
        |copy| {
            let path = copy.join(&data);
            let length = fs::metadata(&path).expect("pack").len();
            fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|file| file.set_len(length / 2))
                .expect("truncate");
        },
    );
    assert_check_catches(&workspace, "pack-missing", false, &object, |copy| {
        fs::remove_file(copy.join(&data)).expect("remove pack");
    });
    // The original was never touched.
    workspace.cairn(&["check", "--read-data"]).ok();
}

/// Every command a user might run against a damaged key or config object.
fn every_command(workspace: &Workspace, source: &Path) -> Vec<Vec<String>> {
    let target = workspace.path("restore-target");
    [
        vec!["snapshots"],
        vec!["ls", "latest"],
        vec!["restore", "latest", "--target", &target.to_string_lossy()],
        vec!["dump", "latest", &source.join("two.txt").to_string_lossy()],
        vec!["check"],
        vec!["check", "--read-data"],
        vec!["backup", &source.to_string_lossy()],
        vec!["index", "rebuild"],
    ]
    .into_iter()
    .map(|args| args.into_iter().map(str::to_owned).collect())
    .collect()
}

/// Test 5 (continued): a flipped byte anywhere in the key object or the config makes every
/// command fail; the messages are collected and checked to be errors, never a panic.
#[test]
fn damaged_key_or_config_stops_every_command() {
    let (workspace, source) = damage_fixture();
    let key = objects(&workspace.repo, "keys")
        .pop()
        .expect("a key object");
    let key = key.strip_prefix(&workspace.repo).expect("below").to_owned();
    let config = PathBuf::from("config");
    let commands = every_command(&workspace, &source);
    let mut messages: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (object, positions) in [
        (&key, vec![0, 5, 7, 20, 40, -40, -1]),
        (&config, vec![0, 5, 10, 30, -30, -1]),
    ] {
        let length = i64::try_from(
            fs::metadata(workspace.repo.join(object))
                .expect("object")
                .len(),
        )
        .expect("small");
        for offset in positions {
            let copy = workspace.path("damaged-copy");
            copy_dir(&workspace.repo, &copy);
            flip_byte(&copy.join(object), offset);
            let before = listing(&copy);
            for args in &commands {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let cache = workspace.path("damaged-cache");
                let run = workspace
                    .cairn_env(
                        &args,
                        &[("CAIRN_REPOSITORY", &copy), ("CAIRN_CACHE_DIR", &cache)],
                    )
                    .failed();
                let message = run.stderr.lines().last().unwrap_or_default().to_owned();
                let position = if offset < 0 { length + offset } else { offset };
                if object == &key {
                    // The user is told which key object is damaged, not only "wrong password".
                    assert!(
                        message.contains(&object.to_string_lossy().into_owned()),
                        "key byte {position} flipped, {}: the message does not name the key: {message}",
                        args[0]
                    );
                } else {
                    // A damaged config is never reported as a wrong password.
                    assert_ne!(run.code, Some(12), "config byte {position}: {message}");
                    assert!(
                        message.contains("config"),
                        "config byte {position}: {message}"
                    );
                }
                messages
                    .entry(format!(
                        "{} (code {:?}): {message}",
                        object.display(),
                        run.code
                    ))
                    .or_default()
                    .push(format!("byte {position}: {}", args[0]));
                let _ = fs::remove_dir_all(&cache);
            }
            assert_eq!(
                before,
                listing(&copy),
                "a failed command changed the repository"
            );
            fs::remove_dir_all(&copy).expect("remove copy");
        }
    }
    for (message, cases) in &messages {
        eprintln!("{message}\n    {}", cases.join(", "));
    }
}

/// Test 5 (continued): through the library, every single-byte flip of the key object and of
/// the config makes opening the repository fail.
#[test]
fn every_flipped_byte_of_key_or_config_prevents_opening() {
    let workspace = Workspace::initialized();
    let key = objects(&workspace.repo, "keys")
        .pop()
        .expect("a key object");
    let config = workspace.repo.join("config");
    for object in [key, config] {
        let original = fs::read(&object).expect("read");
        for position in 0..original.len() {
            let mut damaged = original.clone();
            damaged[position] ^= 0x01;
            fs::write(&object, &damaged).expect("write");
            let backend: std::sync::Arc<dyn cairn_store::backend::Backend> = std::sync::Arc::new(
                cairn_store::backend::object_store::ObjectStoreBackend::open(
                    &workspace.repo.to_string_lossy(),
                    &[],
                    cairn_store::backend::object_store::CreateDirectory::No,
                )
                .expect("backend"),
            );
            let opened = cairn_store::Repository::open(
                backend,
                PASSWORD.as_bytes(),
                &cairn_store::CacheLocation::Memory,
            );
            assert!(
                opened.is_err(),
                "{} with byte {position} flipped still opens",
                object.display()
            );
        }
        fs::write(&object, &original).expect("restore object");
    }
    workspace.cairn(&["snapshots"]).ok();
}

/// Test 6: a wrong password exits 12 with the documented message and leaves the repository
/// byte-identical, whatever the command.
#[test]
fn wrong_password_exits_12_and_changes_nothing() {
    let workspace = Workspace::initialized();
    let source = workspace.path("source");
    TreeBuilder::new(&source).file("a.txt", b"some data\n");
    workspace.backup(&[&source]);
    let before = listing(&workspace.repo);
    let target = workspace.path("target");
    for args in [
        vec!["snapshots".to_owned()],
        vec!["backup".to_owned(), source.to_string_lossy().into_owned()],
        vec![
            "restore".to_owned(),
            "latest".to_owned(),
            "--target".to_owned(),
            target.to_string_lossy().into_owned(),
        ],
        vec!["check".to_owned(), "--read-data".to_owned()],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        workspace
            .cairn_password(&args, "not the password")
            .code(12)
            .stderr_contains("wrong password or no key matches");
    }
    assert_eq!(before, listing(&workspace.repo), "the repository changed");
    assert!(
        !target.exists(),
        "restore with a wrong password created the target"
    );
    assert_eq!(workspace.snapshots().len(), 1);
}

/// Test 6: no repository at the location exits 10, for a missing directory and for an empty
/// one.
#[test]
fn missing_repository_exits_10() {
    let workspace = Workspace::new();
    let missing = workspace.path("does-not-exist");
    workspace
        .cairn_env(&["snapshots"], &[("CAIRN_REPOSITORY", &missing)])
        .code(10);
    let source = workspace.path("source");
    TreeBuilder::new(&source).file("a", b"a");
    workspace
        .cairn_env(
            &["backup", &source.to_string_lossy()],
            &[("CAIRN_REPOSITORY", &missing)],
        )
        .code(10);
    assert!(!missing.exists(), "backup created a repository directory");
    let empty = workspace.path("empty");
    fs::create_dir(&empty).expect("mkdir");
    workspace
        .cairn_env(&["check"], &[("CAIRN_REPOSITORY", &empty)])
        .code(10)
        .stderr_contains("no repository");
}

/// Test 6: `init` on an existing repository fails and leaves it untouched, whatever the
/// password.
#[test]
fn init_twice_fails_and_leaves_the_repository_untouched() {
    let workspace = Workspace::initialized();
    let source = workspace.path("source");
    TreeBuilder::new(&source).file("a.txt", b"data\n");
    workspace.backup(&[&source]);
    let before = listing(&workspace.repo);
    let mut args: Vec<&str> = crate::support::CHEAP_INIT.to_vec();
    workspace
        .cairn(&args)
        .failed()
        .stderr_contains("already holds a repository");
    args.push("--json");
    workspace.cairn_password(&args, "another password").failed();
    assert_eq!(before, listing(&workspace.repo), "the repository changed");
    workspace.cairn(&["check", "--read-data"]).ok();
    assert_eq!(workspace.snapshots().len(), 1);
}

/// Test 6: files and directories that cannot be read are skipped with a warning naming them,
/// the snapshot of everything else is written and restores, and the exit code is 3.
#[test]
fn unreadable_source_entries_exit_3_and_the_rest_is_saved() {
    let mut workspace = Workspace::new();
    let source = workspace.path("source");
    let tree = TreeBuilder::new(&source);
    tree.file("readable/a.txt", b"readable a\n");
    tree.file("readable/b.bin", &random_bytes(50, 100_000));
    tree.file("top.txt", b"top\n");
    let unreadable_file = tree.file("readable/secret.txt", b"you cannot read me\n");
    // Big enough for the large-file path (small files are read in parallel groups).
    let unreadable_big = tree.file("readable/z-big-secret.bin", &random_bytes(51, 1_500_000));
    let unreadable_dir = tree.dir("locked");
    tree.file("locked/inside.txt", b"inside a locked directory\n");
    let root = effective_uid() == 0;
    if root {
        // Run cairn as `nobody`, so permission bits apply; it owns the workspace.
        chown_tree(workspace.root(), 65_534, 65_534);
    }
    tree.mode("readable/secret.txt", 0o000)
        .mode("readable/z-big-secret.bin", 0o000)
        .mode("locked", 0o000);
    workspace.prefix = unprivileged_prefix();
    let mut init: Vec<&str> = crate::support::CHEAP_INIT.to_vec();
    init.push("--quiet");
    workspace.cairn(&init).ok();

    let run = workspace
        .cairn(&["backup", "--json", &source.to_string_lossy()])
        .code(3)
        .stderr_contains("could not be read");
    let warnings: Vec<String> = run
        .json_lines()
        .into_iter()
        .filter(|line| line["message_type"] == "warning")
        .map(|line| line["path"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        warnings.contains(&unreadable_file.to_string_lossy().into_owned()),
        "{warnings:?}"
    );
    assert!(
        warnings.contains(&unreadable_big.to_string_lossy().into_owned()),
        "{warnings:?}"
    );
    assert!(
        warnings.contains(&unreadable_dir.to_string_lossy().into_owned()),
        "{warnings:?}"
    );
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert_eq!(json_u64(&run.summary(), "entries_unreadable"), 3);
    // Without --json the warning names the file on stderr.
    workspace
        .cairn(&["backup", &source.to_string_lossy()])
        .code(3)
        .stderr_contains(&unreadable_file.to_string_lossy())
        .stderr_contains(&unreadable_big.to_string_lossy())
        .stderr_contains("Permission denied")
        .stderr_contains("3 source entries could not be read");

    // Compare what was saved with the source, minus what could not be read.
    tree.mode("locked", 0o755)
        .mode("readable/secret.txt", 0o644)
        .mode("readable/z-big-secret.bin", 0o644);
    let complete = scan_tree(&source);
    let mut expected = complete.clone();
    expected.remove(Path::new("readable/secret.txt"));
    expected.remove(Path::new("readable/z-big-secret.bin"));
    expected.remove(Path::new("locked"));
    expected.remove(Path::new("locked/inside.txt"));
    workspace.prefix = Vec::new();
    assert_eq!(workspace.snapshots().len(), 2);
    let target = workspace.path("restored");
    workspace
        .cairn(&["restore", "latest", "--target", &target.to_string_lossy()])
        .ok();
    assert_same_entries(&expected, &scan_tree(&restored_path(&target, &source)));

    // Readable again: the next backup (whose parent lacks them) saves them and exits 0.
    workspace.prefix = unprivileged_prefix();
    let summary = workspace
        .cairn(&["backup", "--json", &source.to_string_lossy()])
        .ok()
        .summary();
    assert_eq!(json_u64(&summary, "entries_unreadable"), 0, "{summary}");
    workspace.prefix = Vec::new();
    let target = workspace.path("restored-complete");
    workspace
        .cairn(&["restore", "latest", "--target", &target.to_string_lossy()])
        .ok();
    assert_same_entries(&complete, &scan_tree(&restored_path(&target, &source)));
}

/// Test 6: a path given on the command line that does not exist (it vanished) is a warning and
/// exit 3; the other paths are saved.
#[test]
fn vanished_command_line_path_exits_3() {
    let workspace = Workspace::initialized();
    let source = workspace.path("source");
    TreeBuilder::new(&source).file("kept.txt", b"kept\n");
    let vanished = workspace.path("vanished-before-backup");
    let vanished_deeper = workspace.path("gone/with/parents");
    let run = workspace
        .cairn(&[
            "backup",
            &source.to_string_lossy(),
            &vanished.to_string_lossy(),
            &vanished_deeper.to_string_lossy(),
        ])
        .code(3)
        .stderr_contains(&vanished.to_string_lossy());
    assert!(
        run.stderr.contains("gone"),
        "the missing parent of the second path is not named:\n{}",
        run.stderr
    );
    let target = workspace.path("restored");
    workspace
        .cairn(&["restore", "latest", "--target", &target.to_string_lossy()])
        .ok();
    assert_same_tree(&source, &restored_path(&target, &source));
    assert!(!restored_path(&target, &vanished).exists());
}

/// Test 7: restore with a damaged data blob fails (non-zero), names the damaged file, leaves no
/// file under its final name (nor a partial one), and restores every other file correctly.
#[test]
fn restore_salvages_around_a_damaged_blob() {
    let workspace = Workspace::initialized();
    let source = workspace.path("source");
    let tree = TreeBuilder::new(&source);
    tree.file("good/one.bin", &random_bytes(60, 300_000));
    tree.file("good/two.txt", &compressible_text(61, 200_000));
    let victim = tree.file("victim.bin", &random_bytes(62, 150_000));
    tree.file("good/three.bin", &random_bytes(63, 50_000));
    tree.file("zz-after.txt", b"sorted after the victim\n");
    stamp_mtimes(&source);
    let expected = scan_tree(&source);
    workspace.backup(&[&source]);

    // Find the victim's second chunk in its pack and flip a byte in the middle of it.
    let repository = open_local_repository(&workspace.repo);
    let (_, snapshot) = repository.resolve_snapshot("latest").expect("snapshot");
    let node = repository
        .find_node(&snapshot.root, &victim.to_string_lossy())
        .expect("find")
        .expect("victim in snapshot");
    let cairn_store::format::tree::NodeKind::File { chunks, .. } = node.kind else {
        panic!("victim is not a file");
    };
    assert!(chunks.len() >= 2, "victim should span several chunks");
    let location = repository
        .locate_blob(&chunks[1])
        .expect("cache")
        .expect("indexed");
    let hex = location.pack_id.to_hex();
    let pack = workspace.repo.join("data").join(&hex[..2]).join(&hex);
    flip_byte(
        &pack,
        i64::from(location.entry.offset) + i64::from(location.entry.length) / 2,
    );
    drop(repository);

    let target = workspace.path("restored");
    let run = workspace
        .cairn(&["restore", "latest", "--target", &target.to_string_lossy()])
        .failed();
    let restored_victim = restored_path(&target, &victim);
    assert!(
        run.stderr
            .contains(&restored_victim.to_string_lossy().into_owned()),
        "restore did not name the damaged file {}:\n{}",
        restored_victim.display(),
        run.stderr
    );
    assert!(
        run.stderr.contains(&location.pack_id.to_hex()),
        "restore did not name the damaged pack:\n{}",
        run.stderr
    );
    assert!(
        fs::symlink_metadata(&restored_victim).is_err(),
        "a file with the damaged file's final name was left behind"
    );
    let restored = scan_tree(&restored_path(&target, &source));
    let leftovers: Vec<&PathBuf> = restored
        .keys()
        .filter(|path| path.to_string_lossy().contains("cairn-partial"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "partial files left behind: {leftovers:?}"
    );
    let mut expected = expected;
    expected.remove(Path::new("victim.bin"));
    assert_same_entries(&expected, &restored);

    // dump of the damaged file fails too; of a good file it works.
    workspace
        .cairn(&["dump", "latest", &victim.to_string_lossy()])
        .failed();
    let good = workspace
        .cairn(&[
            "dump",
            "latest",
            &source.join("good/two.txt").to_string_lossy(),
        ])
        .ok();
    assert!(good.stdout == compressible_text(61, 200_000));
}

/// Bytes of the packs stored in the local repository `repo`.
pub(crate) fn pack_bytes(repo: &Path) -> u64 {
    files_below(&repo.join("data"))
        .iter()
        .filter(|path| object_id(path).len() == 64)
        .filter_map(|path| fs::metadata(path).ok())
        .map(|metadata| metadata.len())
        .sum()
}

/// Runs `backup` of `source` with `env` overrides and SIGKILLs it once `threshold` more bytes
/// of packs are stored in the local repository.
#[track_caller]
pub(crate) fn kill_backup_mid_upload(
    workspace: &Workspace,
    env: &[(&str, &Path)],
    source: &Path,
    threshold: u64,
) {
    let before = pack_bytes(&workspace.repo);
    let mut command = workspace.command(&["backup", "--json", &source.to_string_lossy()], env);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = command.spawn().expect("start backup");
    let started = Instant::now();
    while pack_bytes(&workspace.repo) < before + threshold {
        assert!(
            child.try_wait().expect("poll child").is_none(),
            "the backup finished before it could be interrupted"
        );
        assert!(
            started.elapsed() < Duration::from_mins(2),
            "the backup stored too little in two minutes"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("kill backup");
    let status = child.wait().expect("wait for backup");
    assert_eq!(
        status.signal(),
        Some(9),
        "the backup was not killed mid-run: {status:?}"
    );
}

/// Test 8: a backup killed with SIGKILL after uploading some packs leaves no snapshot, a
/// repository that passes `check`, and packs the next backup recovers instead of uploading
/// again.
#[test]
fn killed_backup_leaves_a_consistent_repository_and_reusable_packs() {
    let workspace = Workspace::initialized_with(&["--pack-size-mib", "1"]);
    let source = workspace.path("source");
    let tree = TreeBuilder::new(&source);
    let files = 8;
    let file_size = 3 * MIB;
    for index in 0..files {
        tree.file(
            &format!("file-{index}.bin"),
            &random_bytes(70 + index as u64, file_size),
        );
    }
    let source_size = (files * file_size) as u64;

    let threshold = source_size / 3;
    kill_backup_mid_upload(&workspace, &[], &source, threshold);
    let packs_left = pack_bytes(&workspace.repo);
    assert!(packs_left >= threshold && packs_left < source_size);

    assert!(
        workspace.snapshots().is_empty(),
        "a killed backup left a snapshot"
    );
    workspace.cairn(&["check"]).ok();

    let summary = workspace.backup(&[&source]);
    assert!(json_u64(&summary, "recovered_packs") > 0, "{summary}");
    let added = json_u64(&summary, "bytes_added");
    assert!(
        added < source_size * 3 / 4,
        "the resumed backup added {added} of {source_size} bytes; {packs_left} were already uploaded"
    );
    workspace.cairn(&["check"]).ok();
    let dumped = workspace
        .cairn(&[
            "dump",
            "latest",
            &source.join("file-0.bin").to_string_lossy(),
        ])
        .ok();
    assert!(
        dumped.stdout == random_bytes(70, file_size),
        "file-0.bin differs after dump"
    );
}
