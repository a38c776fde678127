//! The layers of `store/src/` (ARCHITECTURE.md, each folder's `mod.rs`): which folder may import
//! which. A pure module that started reading files or the cache, or a machinery module that
//! reached up into a use case, fails here with the file and line.

use std::fs;
use std::path::{Path, PathBuf};

/// One rule: no source file below `folder` (a folder or one file) may contain `forbidden` in a
/// line of code.
struct Rule {
    folder: &'static str,
    forbidden: &'static [&'static str],
}

/// What no pure module may use: I/O, threads, async, the cache or the store.
const IMPURE: &[&str] = &[
    "std::fs",
    "std::net",
    "std::process",
    "rayon",
    "tokio",
    "object_store",
    "redb",
    "crate::backend",
    "crate::index",
    "crate::repo",
    "crate::ops",
    "SystemTime::now",
    "Timestamp::now",
    "Zoned::now",
];

const RULES: &[Rule] = &[
    Rule {
        folder: "format",
        forbidden: IMPURE,
    },
    Rule {
        folder: "crypto",
        forbidden: IMPURE,
    },
    Rule {
        folder: "policy",
        forbidden: IMPURE,
    },
    // The simulation of the garbage-collection protocol: pure, so a seed replays its schedule.
    Rule {
        folder: "sim",
        forbidden: IMPURE,
    },
    // The crate's error wraps retention's error; retention must not import it back.
    Rule {
        folder: "policy/retention.rs",
        forbidden: &["crate::error"],
    },
    Rule {
        folder: "format",
        forbidden: &["crate::policy"],
    },
    Rule {
        folder: "crypto",
        // Key objects are encoded with the format's codec; nothing else of the format.
        forbidden: &[
            "crate::policy",
            "crate::format::config",
            "crate::format::envelope",
            "crate::format::index",
            "crate::format::lifecycle",
            "crate::format::pack",
            "crate::format::snapshot",
            "crate::format::tree",
        ],
    },
    Rule {
        folder: "repo",
        forbidden: &["crate::ops", "crate::policy"],
    },
    Rule {
        folder: "backend",
        forbidden: &["crate::repo", "crate::ops", "crate::policy", "crate::index"],
    },
    // The cache stores values the policies define (a pack's last verification), nothing more.
    Rule {
        folder: "index",
        forbidden: &["crate::repo", "crate::ops"],
    },
];

fn store_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../store/src")
}

fn rust_files(folder: &Path) -> Vec<PathBuf> {
    if folder.is_file() {
        return vec![folder.to_path_buf()];
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(folder).expect("read a store folder") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The lines of `file` that are code (comment lines dropped), numbered from 1.
fn code_lines(file: &Path) -> Vec<(usize, String)> {
    let text = fs::read_to_string(file).expect("read a source file");
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
        .map(|(index, line)| (index + 1, line.to_owned()))
        .collect()
}

/// Every `(file:line, what)` below `folder` that breaks `forbidden`.
fn violations(folder: &Path, forbidden: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for file in rust_files(folder) {
        for (number, line) in code_lines(&file) {
            for word in forbidden {
                if line.contains(word) {
                    found.push(format!("{}:{number}: uses {word}", file.display()));
                }
            }
        }
    }
    found
}

#[test]
fn every_layer_imports_only_what_it_may() {
    let root = store_src();
    let mut found = Vec::new();
    for rule in RULES {
        let folder = root.join(rule.folder);
        assert!(folder.exists(), "the layer {} is missing", rule.folder);
        found.extend(violations(&folder, rule.forbidden));
    }
    assert!(
        found.is_empty(),
        "layer rules broken:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_repository_does_not_import_what_is_built_on_it() {
    let file = store_src().join("repo/repository.rs");
    let mut found = Vec::new();
    for (number, line) in code_lines(&file) {
        for word in [
            "crate::repo::lifecycle",
            "crate::repo::saver",
            "crate::repo::fetch",
            "crate::repo::keyring",
        ] {
            if line.contains(word) {
                found.push(format!("repository.rs:{number}: uses {word}"));
            }
        }
    }
    assert!(found.is_empty(), "import circle:\n{}", found.join("\n"));
}

#[test]
fn the_rule_checker_sees_a_forbidden_import() {
    // The checker itself: a folder holding a pure-looking file that reads a file is caught.
    let scratch = tempfile::tempdir().expect("a scratch directory");
    fs::write(
        scratch.path().join("bad.rs"),
        "//! Pure, it says.\n// std::fs in a comment is fine\nuse std::fs::read;\n",
    )
    .expect("write the sample");
    let found = violations(scratch.path(), IMPURE);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].ends_with("bad.rs:3: uses std::fs"), "{found:?}");
}
