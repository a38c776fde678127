//! Damaged repositories beyond flipped bits: every stored object kind is truncated, zeroed,
//! extended, swapped with another object of its kind, and replaced by (replayed as) an object of
//! another kind under its name. Each damage must be found and named by `check --read-data`, or,
//! for the objects every command needs first (config, keys), stop commands with a clear error;
//! never a panic, never a silent success.

use std::path::{Path, PathBuf};

use crate::support::{CHEAP_INIT, Workspace, copy_dir, objects, random_bytes};

/// How an object is damaged.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// Cut to half its length.
    TruncateHalf,
    /// Cut to zero bytes.
    Empty,
    /// Same length, every byte zero.
    Zeroed,
    /// Garbage appended.
    Extended,
    /// Replaced by another valid object of the same kind (its name no longer matches).
    Swapped,
    /// Replaced by a valid object of another kind, kept under this name.
    Replayed,
}

const DAMAGES: [Damage; 6] = [
    Damage::TruncateHalf,
    Damage::Empty,
    Damage::Zeroed,
    Damage::Extended,
    Damage::Swapped,
    Damage::Replayed,
];

/// A repository with two snapshots of a tree and a stream, small packs (so every kind has at
/// least two objects), and two prune records.
fn fixture() -> Workspace {
    let workspace = Workspace::new();
    let mut init = CHEAP_INIT.to_vec();
    init.extend_from_slice(&["--pack-size-mib", "1"]);
    workspace.cairn(&init).ok();
    let source = workspace.path("source");
    std::fs::create_dir_all(source.join("sub")).unwrap();
    std::fs::write(source.join("big.bin"), random_bytes(1, 2_500_000)).unwrap();
    std::fs::write(source.join("sub/a.env"), b"A=1\n").unwrap();
    workspace.backup(&[&source]);
    workspace.backup_stdin("app.archive", &random_bytes(2, 1_500_000), &[]);
    std::fs::write(source.join("big.bin"), random_bytes(3, 1_000_000)).unwrap();
    workspace.backup(&[&source]);
    // A prune record: forget the first tree snapshot and prune.
    for round in 0..2 {
        workspace
            .cairn(&["forget", "--keep-last", "1", "--prune"])
            .ok();
        std::fs::write(source.join("big.bin"), random_bytes(4 + round, 1_000_000)).unwrap();
        workspace.backup(&[&source]);
    }
    workspace
}

fn first_two(repo: &Path, prefix: &str) -> (PathBuf, PathBuf) {
    let mut found = objects(repo, prefix);
    found.retain(|path| {
        !path
            .file_name()
            .is_some_and(|name| name.to_string_lossy().ends_with(".inflight"))
    });
    found.sort();
    assert!(
        found.len() >= 2,
        "need two {prefix} objects, have {found:?}"
    );
    (found[0].clone(), found[1].clone())
}

fn damage(target: &Path, same_kind: &Path, other_kind: &Path, how: Damage) {
    let bytes = std::fs::read(target).unwrap();
    let new = match how {
        Damage::TruncateHalf => bytes[..bytes.len() / 2].to_vec(),
        Damage::Empty => Vec::new(),
        Damage::Zeroed => vec![0; bytes.len()],
        Damage::Extended => {
            let mut longer = bytes;
            longer.extend_from_slice(&random_bytes(9, 100));
            longer
        }
        Damage::Swapped => std::fs::read(same_kind).unwrap(),
        Damage::Replayed => std::fs::read(other_kind).unwrap(),
    };
    std::fs::write(target, new).unwrap();
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn every_damage_of_every_object_kind_is_detected_and_named() {
    let pristine = fixture();
    pristine.cairn(&["check", "--read-data"]).ok();
    let kinds = ["data", "index", "snapshots", "prune"];
    let mut tried = 0;
    let mut detected = 0;
    let mut missed = Vec::new();
    for (position, kind) in kinds.iter().enumerate() {
        let other_kind = kinds[(position + 1) % kinds.len()];
        for how in DAMAGES {
            let workspace = Workspace::new();
            copy_dir(&pristine.repo, &workspace.repo);
            let (target, same) = first_two(&workspace.repo, kind);
            let (other, _) = first_two(&workspace.repo, other_kind);
            damage(&target, &same, &other, how);
            tried += 1;
            let run = workspace.cairn(&["check", "--read-data"]);
            // Damage reports name objects by their short ids (stderr); --json has them whole.
            let name = file_name(&target);
            let named = run.stderr.contains(&name[..name.len().min(8)])
                || String::from_utf8_lossy(&run.stdout).contains(&file_name(&target));
            assert!(
                !run.stderr.contains("panicked"),
                "{kind} {how:?}: panic: {}",
                run.stderr
            );
            if run.code == Some(1) && named {
                detected += 1;
            } else {
                missed.push(format!(
                    "{kind} {how:?}: exit {:?}, stderr {}",
                    run.code, run.stderr
                ));
            }
        }
    }
    // The config and key objects: every command stops with a clear error.
    for object in ["config", "keys"] {
        for how in DAMAGES {
            let workspace = Workspace::new();
            copy_dir(&pristine.repo, &workspace.repo);
            let target = if object == "config" {
                workspace.repo.join("config")
            } else {
                objects(&workspace.repo, "keys")[0].clone()
            };
            let (same_kind, other) = first_two(&workspace.repo, "snapshots");
            if matches!(how, Damage::Swapped) && object != "config" {
                // The only key object swapped with itself is no damage: use a snapshot's
                // bytes instead (replayed covers the other kind).
                std::fs::write(&target, std::fs::read(&same_kind).unwrap()).unwrap();
            } else {
                damage(&target, &other, &same_kind, how);
            }
            tried += 1;
            let run = workspace.cairn(&["snapshots"]);
            let clear = run.stderr.starts_with("cairn: ") && run.stderr.lines().count() == 1;
            if run.code.is_some_and(|code| code != 0) && clear {
                detected += 1;
            } else {
                missed.push(format!(
                    "{object} {how:?}: exit {:?}, stderr {}",
                    run.code, run.stderr
                ));
            }
        }
    }
    eprintln!("corruption matrix: {detected} of {tried} damages detected");
    assert!(
        missed.is_empty(),
        "undetected damage:\n{}",
        missed.join("\n")
    );
}
