//! Incremental backups: files whose metadata matches the parent snapshot are not read again,
//! changed files are, and every snapshot still restores its own content.

use crate::support::{Workspace, json_u64, random_bytes};

#[test]
fn unchanged_files_are_reused_and_changed_files_are_read() {
    let workspace = Workspace::initialized();
    let source = workspace.path("source");
    std::fs::create_dir_all(source.join("conf")).unwrap();
    for index in 0..20 {
        std::fs::write(
            source.join(format!("conf/file-{index}.env")),
            random_bytes(index, 5000),
        )
        .unwrap();
    }
    std::fs::write(source.join("dump.bin"), random_bytes(99, 2_000_000)).unwrap();
    let first = workspace.backup(&[&source]);
    assert_eq!(json_u64(&first, "files_unchanged"), 0);

    let second = workspace.backup(&[&source]);
    assert_eq!(json_u64(&second, "files_unchanged"), 21, "{second}");
    assert_eq!(second["parent"], first["snapshot_id"]);
    assert!(json_u64(&second, "bytes_added") < 20_000, "{second}");
    // The parent's trees come from the local cache: only config, key and snapshot reads.
    assert!(
        second["requests"]["get"].as_u64().unwrap() <= 4,
        "an unchanged re-backup reads no trees or data from the store: {second}"
    );

    // Same size, new content: mtime and ctime move, so the file is read again.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(source.join("conf/file-3.env"), random_bytes(1000, 5000)).unwrap();
    let third = workspace.backup(&[&source]);
    assert_eq!(json_u64(&third, "files_unchanged"), 20, "{third}");

    let forced = workspace
        .cairn(&["backup", "--json", "--force", source.to_str().unwrap()])
        .ok()
        .summary();
    assert_eq!(json_u64(&forced, "files_unchanged"), 0, "{forced}");
    assert!(forced["parent"].is_null());

    let target = workspace.path("restored");
    let spec = format!(
        "{}:{}",
        third["snapshot_id"].as_str().unwrap(),
        source.display()
    );
    workspace
        .cairn(&["restore", &spec, "--target", target.to_str().unwrap()])
        .ok();
    assert!(
        std::fs::read(target.join("conf/file-3.env")).unwrap() == random_bytes(1000, 5000),
        "the changed file restores with its new content"
    );
    assert!(
        std::fs::read(target.join("dump.bin")).unwrap() == random_bytes(99, 2_000_000),
        "an unchanged file restores from the reused chunk list"
    );
}

/// A sparse source file restores sparse (its holes stay holes) and byte for byte.
#[test]
fn sparse_files_restore_with_their_holes() {
    use std::os::unix::fs::MetadataExt;
    let workspace = Workspace::initialized();
    let source = workspace.path("source");
    std::fs::create_dir_all(&source).unwrap();
    let path = source.join("disk.img");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = std::fs::File::create(&path).unwrap();
        file.seek(SeekFrom::Start(8 * 1024 * 1024)).unwrap();
        file.write_all(&random_bytes(5, 100_000)).unwrap();
        file.set_len(20 * 1024 * 1024).unwrap();
    }
    let original = std::fs::metadata(&path).unwrap();
    assert!(
        original.blocks() * 512 < original.len() / 4,
        "the test file system must support sparse files"
    );
    std::fs::write(source.join("zeros.bin"), vec![0u8; 1024 * 1024]).unwrap();
    workspace.backup(&[&source]);
    let target = workspace.path("restored");
    let spec = format!("latest:{}", source.display());
    workspace
        .cairn(&["restore", &spec, "--target", target.to_str().unwrap()])
        .ok();
    let restored = std::fs::metadata(target.join("disk.img")).unwrap();
    assert_eq!(restored.len(), original.len());
    assert!(
        restored.blocks() * 512 < restored.len() / 4,
        "holes are preserved: {} blocks for {} bytes",
        restored.blocks(),
        restored.len()
    );
    assert!(std::fs::read(target.join("disk.img")).unwrap() == std::fs::read(&path).unwrap());
    // A dense file of zeros stays dense: only sources that were sparse get holes.
    let dense = std::fs::metadata(target.join("zeros.bin")).unwrap();
    assert!(
        dense.blocks() * 512 >= dense.len(),
        "{} blocks",
        dense.blocks()
    );
}

/// `check` reads a small tree pack once instead of one ranged request per directory (object
/// stores bill per request).
#[test]
fn check_reads_tree_packs_not_one_request_per_directory() {
    let workspace = Workspace::initialized();
    let source = workspace.path("source");
    for index in 0..60 {
        let directory = source.join(format!("d{index}/e{index}"));
        std::fs::create_dir_all(&directory).unwrap();
        std::fs::write(directory.join("f"), random_bytes(index, 100)).unwrap();
    }
    workspace.backup(&[&source]);
    let run = workspace
        .cairn(&["check", "--verbose", "--json"])
        .ok()
        .json_lines();
    let requests = run
        .iter()
        .find(|line| line["message_type"] == "requests")
        .expect("a requests line");
    assert!(
        requests["get"].as_u64().unwrap() <= 8,
        "120+ trees should cost a few GETs: {requests}"
    );
    let summary = run
        .iter()
        .find(|line| line["message_type"] == "summary")
        .unwrap();
    assert!(summary["trees"].as_u64().unwrap() >= 120, "{summary}");

    // A restore on a machine without the local cache reads the tree pack once too.
    let target = workspace.path("restored");
    let restored = workspace
        .cairn(&[
            "--no-cache",
            "--verbose",
            "--json",
            "restore",
            "latest",
            "--target",
            target.to_str().unwrap(),
        ])
        .ok()
        .json_lines();
    let requests = restored
        .iter()
        .find(|line| line["message_type"] == "requests")
        .expect("a requests line");
    assert!(
        requests["get"].as_u64().unwrap() <= 10,
        "trees of a fresh restore come from one tree-pack read: {requests}"
    );
}

/// A restore downloads each pack about once, although blobs are shuffled inside packs and files
/// are restored in order: ranges read for one batch keep their other blobs for later batches.
#[test]
fn restore_reads_each_pack_about_once() {
    // 48 MB in 16 MiB packs: several restore batches share each pack.
    let workspace = Workspace::initialized();
    let source = workspace.path("source");
    std::fs::create_dir_all(&source).unwrap();
    for index in 0..48 {
        std::fs::write(
            source.join(format!("file-{index:02}.bin")),
            random_bytes(500 + index, 1_000_000),
        )
        .unwrap();
    }
    workspace.backup(&[&source]);
    let repository_bytes: u64 = walk_sizes(&workspace.repo.join("data"));
    let target = workspace.path("restored");
    let lines = workspace
        .cairn(&[
            "--no-cache",
            "--verbose",
            "--json",
            "restore",
            "latest",
            "--target",
            target.to_str().unwrap(),
        ])
        .ok()
        .json_lines();
    let requests = lines
        .iter()
        .find(|line| line["message_type"] == "requests")
        .expect("a requests line");
    let received = requests["bytes_received"].as_u64().unwrap();
    assert!(
        received * 10 <= repository_bytes * 13,
        "restore read {received} bytes of a {repository_bytes}-byte repository"
    );
    for index in 0..48 {
        let restored = target
            .join(source.strip_prefix("/").unwrap())
            .join(format!("file-{index:02}.bin"));
        assert!(std::fs::read(restored).unwrap() == random_bytes(500 + index, 1_000_000));
    }
}

fn walk_sizes(directory: &std::path::Path) -> u64 {
    std::fs::read_dir(directory)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                walk_sizes(&entry.path())
            } else {
                entry.metadata().unwrap().len()
            }
        })
        .sum()
}
