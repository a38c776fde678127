//! The fuzz corpus replayed on stable: every file of `fuzz/corpus/<target>/` goes through the same
//! dispatch the libFuzzer target runs (`fuzz/src/lib.rs`, compiled here as a module) and must
//! decode or fail cleanly, never panic. A missing or empty corpus directory fails, so this cannot
//! pass by replaying nothing.
//!
//! It also checks that every seed the corpus grew from is accepted by its target's decoders. With
//! `CAIRN_WRITE_FUZZ_SEEDS=1` it is the seed generator: it writes those seeds and the objects of
//! the v1 fixture repository into `fuzz/corpus/` (then run the fuzzers and `cargo fuzz cmin`;
//! fuzz/README.md).

use std::path::{Path, PathBuf};

#[path = "../../fuzz/src/lib.rs"]
mod targets;

/// Set to `1` to write the seeds into the corpus directories instead of only checking them.
const WRITE_SEEDS_VARIABLE: &str = "CAIRN_WRITE_FUZZ_SEEDS";

fn corpus_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

fn fixture_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/repo-v1")
}

/// Regular files directly in `directory` or (for `data/<xx>/`) one level below, sorted.
fn files_under(directory: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![directory.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in
            std::fs::read_dir(&next).unwrap_or_else(|error| panic!("{}: {error}", next.display()))
        {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The objects of the v1 fixture, by the target that decodes them: real encodings written by
/// cairn 0.1.0 (sealed under the fixture's own key, so they exercise the framing).
fn fixture_seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let root = fixture_root();
    let mut seeds = Vec::new();
    for (directory, kinds) in [
        ("config", &["config", "envelope"][..]),
        ("keys", &["key_object"][..]),
        ("index", &["index_object", "envelope"][..]),
        ("snapshots", &["snapshot", "envelope"][..]),
        ("data", &["pack_trailer"][..]),
    ] {
        let path = root.join(directory);
        let files = if path.is_dir() {
            files_under(&path)
        } else {
            vec![path]
        };
        for file in files {
            let bytes = std::fs::read(&file).unwrap();
            let name = format!(
                "fixture-v1-{directory}-{}",
                &file.file_name().unwrap().to_string_lossy()
                    [..8.min(file.file_name().unwrap().len())]
            );
            for kind in kinds {
                seeds.push((*kind, name.clone(), bytes.clone()));
            }
        }
    }
    seeds
}

#[test]
fn every_corpus_file_replays_without_panic() {
    let root = corpus_root();
    let mut unknown: Vec<String> = std::fs::read_dir(&root)
        .unwrap_or_else(|error| panic!("corpus directory {} is missing: {error}", root.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !targets::TARGETS.iter().any(|(target, _)| target == name))
        .collect();
    unknown.sort();
    assert!(
        unknown.is_empty(),
        "corpus directories of no target: {unknown:?}"
    );
    for (name, run) in targets::TARGETS {
        let directory = root.join(name);
        assert!(
            directory.is_dir(),
            "target {name} has no corpus directory {}",
            directory.display()
        );
        let files = files_under(&directory);
        assert!(!files.is_empty(), "corpus of target {name} is empty");
        let mut accepted = 0usize;
        for file in &files {
            let bytes = std::fs::read(file).unwrap();
            // A panic inside names the file through this context line.
            eprintln!("replaying {name} {}", file.display());
            accepted += usize::from(run(&bytes).any());
        }
        println!(
            "{name}: {} files replayed, {accepted} accepted by a decoder",
            files.len()
        );
    }
}

#[test]
fn seeds_are_accepted_by_their_targets() {
    let seeds = targets::seeds();
    for (name, _) in targets::TARGETS {
        assert!(
            seeds.iter().any(|(target, _, _)| target == &name),
            "no seed for target {name}"
        );
    }
    for (target, seed, bytes) in &seeds {
        let (_, run) = targets::TARGETS
            .iter()
            .find(|(name, _)| name == target)
            .expect("seed of a known target");
        assert!(
            run(bytes).any(),
            "seed {target}/{seed} is rejected by every decoder"
        );
    }
    // Sealed seeds exercise the full open path past authentication.
    for (target, seed) in [
        ("pack_trailer", "tree-pack"),
        ("index_object", "stored"),
        ("snapshot", "stdin-stored"),
        ("key_object", "cheap"),
        ("config", "stored"),
        ("envelope", "config"),
        ("lifecycle", "prune-record"),
    ] {
        let (_, _, bytes) = seeds
            .iter()
            .find(|(name, label, _)| *name == target && label == seed)
            .unwrap();
        let (_, run) = targets::TARGETS
            .iter()
            .find(|(name, _)| *name == target)
            .unwrap();
        assert!(
            run(bytes).stored,
            "seed {target}/{seed} does not open under the fixed key"
        );
    }
    if std::env::var(WRITE_SEEDS_VARIABLE).as_deref() == Ok("1") {
        let root = corpus_root();
        for (target, seed, bytes) in seeds.into_iter().chain(fixture_seeds()) {
            let directory = root.join(target);
            std::fs::create_dir_all(&directory).unwrap();
            std::fs::write(directory.join(format!("seed-{seed}")), bytes).unwrap();
        }
    }
}
