//! Key management end to end through the binary: `key add`, `key list`, `key remove` and
//! `key passwd` on a local repository, with the exit codes and the restored bytes after each.

use std::fs;
use std::path::Path;

use crate::support::{
    PASSWORD, TreeBuilder, Workspace, assert_same_tree, compressible_text, flip_byte, listing,
    objects, random_bytes, restored_path,
};

/// A second password.
const SECOND: &str = "a second, entirely different password";
/// A third password.
const THIRD: &str = "third password";

/// Key cost options that keep Argon2id cheap.
const CHEAP_KDF: [&str; 6] = [
    "--kdf-memory-mib",
    "1",
    "--kdf-iterations",
    "1",
    "--kdf-parallelism",
    "1",
];

fn text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Writes `password` to a file in the workspace and returns its path.
fn password_file(workspace: &Workspace, password: &str) -> String {
    let path = workspace.path(&format!("password-{}", blake3::hash(password.as_bytes())));
    fs::write(&path, format!("{password}\n")).expect("write password file");
    text(&path)
}

/// Runs `key <command> --json` with a new password (given in a file), opened with `current`;
/// returns its one JSON line.
#[track_caller]
fn key_change(workspace: &Workspace, command: &str, current: &str, new: &str) -> serde_json::Value {
    let file = password_file(workspace, new);
    let mut args = vec!["key", command, "--json", "--new-password-file", &file];
    args.extend_from_slice(&CHEAP_KDF);
    let mut lines = workspace.cairn_password(&args, current).ok().json_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    lines.remove(0)
}

/// Adds a key for `new`, opened with `current`; returns the new key's full id.
#[track_caller]
fn add_key(workspace: &Workspace, current: &str, new: &str) -> String {
    let line = key_change(workspace, "add", current, new);
    assert_eq!(line["message_type"], "key_added");
    line["id"].as_str().expect("id").to_owned()
}

/// `key list --json` opened with `password`.
#[track_caller]
fn list_keys(workspace: &Workspace, password: &str) -> Vec<serde_json::Value> {
    workspace
        .cairn_password(&["key", "list", "--json"], password)
        .ok()
        .json_lines()
}

/// The id of the key `password` opens, from `key list --json`.
#[track_caller]
fn current_key(workspace: &Workspace, password: &str) -> String {
    let keys = list_keys(workspace, password);
    let current: Vec<&serde_json::Value> =
        keys.iter().filter(|key| key["current"] == true).collect();
    assert_eq!(current.len(), 1, "{keys:?}");
    current[0]["id"].as_str().expect("id").to_owned()
}

/// A workspace with one backup of a small tree; returns it and the source directory.
fn backed_up() -> (Workspace, std::path::PathBuf) {
    let workspace = Workspace::initialized();
    let source = workspace.path("source");
    let tree = TreeBuilder::new(&source);
    tree.file("random.bin", &random_bytes(11, 300_000));
    tree.file("notes/text.log", &compressible_text(12, 100_000));
    workspace.backup(&[&source]);
    (workspace, source)
}

/// Restores the latest snapshot with `password` into a fresh target and compares it to
/// `source`.
#[track_caller]
fn assert_restores(workspace: &Workspace, password: &str, source: &Path, target_name: &str) {
    let target = workspace.path(target_name);
    workspace
        .cairn_password(&["restore", "latest", "--target", &text(&target)], password)
        .ok();
    assert_same_tree(source, &restored_path(&target, source));
}

#[test]
fn added_key_opens_the_same_data_and_is_listed() {
    let (workspace, source) = backed_up();
    let first = current_key(&workspace, PASSWORD);
    let second = add_key(&workspace, PASSWORD, SECOND);
    assert_ne!(first, second);

    let keys = list_keys(&workspace, PASSWORD);
    assert_eq!(keys.len(), 2, "{keys:?}");
    for key in &keys {
        assert_ne!(key["status"], "damaged", "{key}");
        assert_eq!(key["kdf"]["memory_kib"], 1024);
        assert_eq!(key["short_id"].as_str().map(str::len), Some(8));
    }
    assert_eq!(current_key(&workspace, SECOND), second);

    // The human listing marks the current key with `*`.
    let human = workspace
        .cairn_password(&["key", "list"], SECOND)
        .ok()
        .text();
    let marked: Vec<&str> = human.lines().filter(|line| line.starts_with('*')).collect();
    assert_eq!(marked.len(), 1, "{human}");
    assert!(marked[0].contains(&second[..8]), "{human}");

    assert_restores(&workspace, PASSWORD, &source, "restored-first");
    assert_restores(&workspace, SECOND, &source, "restored-second");
    workspace
        .cairn_password(&["check", "--read-data"], SECOND)
        .ok();
}

#[test]
fn removing_a_key_locks_out_its_password_only() {
    let (workspace, source) = backed_up();
    let first = current_key(&workspace, PASSWORD);
    let second = add_key(&workspace, PASSWORD, SECOND);

    // The current key is refused without --force, and nothing is deleted.
    let before = listing(&workspace.repo);
    workspace
        .cairn_password(&["key", "remove", &first[..10]], PASSWORD)
        .code(1)
        .stderr_contains("is the one this password opened");
    assert_eq!(before, listing(&workspace.repo));

    // Removing the other key (opened with the second password) works by prefix.
    workspace
        .cairn_password(&["key", "remove", &first[..10]], SECOND)
        .ok();
    workspace
        .cairn_password(&["snapshots"], PASSWORD)
        .code(12)
        .stderr_contains("wrong password or no key matches");
    assert_eq!(list_keys(&workspace, SECOND).len(), 1);
    assert_restores(&workspace, SECOND, &source, "restored");

    // The last key is never removed, not even with --force.
    let before = listing(&workspace.repo);
    for extra in [None, Some("--force")] {
        let mut args = vec!["key", "remove", &second];
        args.extend(extra);
        workspace
            .cairn_password(&args, SECOND)
            .code(1)
            .stderr_contains("last usable key object");
    }
    assert_eq!(before, listing(&workspace.repo));
}

#[test]
fn forced_removal_of_the_current_key() {
    let workspace = Workspace::initialized();
    let first = current_key(&workspace, PASSWORD);
    add_key(&workspace, PASSWORD, SECOND);
    let run = workspace
        .cairn_password(&["key", "remove", "--force", &first], PASSWORD)
        .ok();
    assert!(run.stderr.contains("no longer opens"), "{}", run.stderr);
    workspace.cairn_password(&["snapshots"], PASSWORD).code(12);
    workspace.cairn_password(&["snapshots"], SECOND).ok();
}

#[test]
fn passwd_replaces_the_password() {
    let (workspace, source) = backed_up();
    let old = current_key(&workspace, PASSWORD);
    let change = key_change(&workspace, "passwd", PASSWORD, SECOND);
    assert_eq!(change["message_type"], "password_changed");
    assert_eq!(change["removed"], old.as_str());
    workspace
        .cairn_password(&["snapshots"], PASSWORD)
        .code(12)
        .stderr_contains("wrong password or no key matches");
    assert_eq!(objects(&workspace.repo, "keys").len(), 1);
    assert_eq!(
        current_key(&workspace, SECOND),
        change["added"].as_str().unwrap()
    );
    assert_restores(&workspace, SECOND, &source, "restored");

    // A second change, and the refusals that write nothing.
    key_change(&workspace, "passwd", SECOND, THIRD);
    workspace.cairn_password(&["snapshots"], SECOND).code(12);
    let before = listing(&workspace.repo);
    let empty = password_file(&workspace, "");
    let same = password_file(&workspace, THIRD);
    for (file, message) in [(&empty, "empty"), (&same, "same as the current")] {
        workspace
            .cairn_password(&["key", "passwd", "--new-password-file", file], THIRD)
            .code(1)
            .stderr_contains(message);
    }
    // No new password and no terminal to ask on.
    workspace
        .cairn_password(&["key", "add"], THIRD)
        .code(1)
        .stderr_contains("no new password given");
    workspace
        .cairn_password(&["key", "passwd", "--new-password-file", &empty], "wrong")
        .code(12);
    assert_eq!(before, listing(&workspace.repo));
}

#[test]
fn damaged_key_object_is_listed_and_does_not_break_open() {
    let (workspace, source) = backed_up();
    let second = add_key(&workspace, PASSWORD, SECOND);
    let damaged_path = workspace.repo.join("keys").join(&second);
    flip_byte(&damaged_path, 30);

    let keys = list_keys(&workspace, PASSWORD);
    assert_eq!(keys.len(), 2, "{keys:?}");
    let damaged = keys
        .iter()
        .find(|key| key["id"] == second.as_str())
        .expect("the damaged key is listed");
    assert_eq!(damaged["status"], "damaged", "{damaged}");
    assert_eq!(damaged["current"], false);
    let human = workspace
        .cairn_password(&["key", "list"], PASSWORD)
        .ok()
        .text();
    assert!(human.contains("damaged"), "{human}");

    assert_restores(&workspace, PASSWORD, &source, "restored");
    // Its password no longer opens, and the message names the damaged key object.
    workspace
        .cairn_password(&["snapshots"], SECOND)
        .code(12)
        .stderr_contains(&second);
    // The damaged object does not count as a usable key, and can be removed.
    let first = current_key(&workspace, PASSWORD);
    workspace
        .cairn_password(&["key", "remove", "--force", &first], PASSWORD)
        .code(1)
        .stderr_contains("last usable key object");
    workspace
        .cairn_password(&["key", "remove", &second[..12]], PASSWORD)
        .ok();
    assert!(!damaged_path.exists());
    workspace.cairn(&["snapshots"]).ok();
}
