//! `cairn copy`: snapshots copied between repositories restore byte for byte, a second copy
//! sends nothing, copies already made are skipped, bad input gets its own exit code, and a
//! copy killed with SIGKILL resumes without sending again what arrived.
//!
//! The kill-and-resume tests run a small cell in CI (a few MiB, two kills, 1 MiB packs so a kill
//! lands between packs); `tests/soak/copy-kill.sh` (`CAIRN_TEST_SOAK=1`) runs the full matrix:
//! a corpus with a file larger than a copy's read batch (32 MiB) and four kills per run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{
    Ending, PASSWORD, Workspace, assert_same_entries, json_u64, kill_after, random_bytes, scan_tree,
};

/// Two repositories: the source (backed up into) and the destination (copied into), each
/// with its own workspace and cache; `from` holds the source's password file.
struct Pair {
    source: Workspace,
    destination: Workspace,
    password_file: PathBuf,
}

/// Chunk bounds of the source repositories: large chunks keep the tests quick.
const LARGE_CHUNKS: [&str; 6] = [
    "--chunk-min",
    "65536",
    "--chunk-avg",
    "262144",
    "--chunk-max",
    "1048576",
];

/// Chunk bounds of a destination that chunks differently from its source.
const SMALLER_CHUNKS: [&str; 6] = [
    "--chunk-min",
    "16384",
    "--chunk-avg",
    "65536",
    "--chunk-max",
    "262144",
];

impl Pair {
    /// A source and a destination made with `init --copy-chunker-params-from` the source (so
    /// the copy never re-chunks) and `extra` init options.
    fn alike(extra: &[&str]) -> Self {
        let mut init = LARGE_CHUNKS.to_vec();
        init.extend_from_slice(extra);
        let source = Workspace::initialized_with(&init);
        let destination = Workspace::new();
        let password_file = source.path("source-password");
        std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
        init_alike(&destination, &source, &password_file, extra);
        Self {
            source,
            destination,
            password_file,
        }
    }

    /// A source and a destination made independently (its own chunker seed, and the
    /// `destination_init` options): the copy re-chunks.
    fn unlike(destination_init: &[&str]) -> Self {
        let source = Workspace::initialized_with(&LARGE_CHUNKS);
        let destination = Workspace::initialized_with(destination_init);
        let password_file = source.path("source-password");
        std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
        Self {
            source,
            destination,
            password_file,
        }
    }

    /// Runs `cairn args...` against the destination with the source given by environment.
    fn cairn(&self, args: &[&str]) -> crate::support::Run {
        self.destination.cairn_env(
            args,
            &[
                ("CAIRN_FROM_REPOSITORY", &self.source.repo),
                ("CAIRN_FROM_PASSWORD_FILE", &self.password_file),
            ],
        )
    }

    fn copy(&self, extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["copy", "--json"];
        args.extend_from_slice(extra);
        self.cairn(&args).ok().summary()
    }
}

/// Creates `destination` with `init --copy-chunker-params-from` the source and `extra`.
fn init_alike(destination: &Workspace, source: &Workspace, password_file: &Path, extra: &[&str]) {
    let location = source.repo.to_str().unwrap().to_owned();
    let mut init: Vec<&str> = crate::support::CHEAP_INIT.to_vec();
    init.extend_from_slice(extra);
    init.extend_from_slice(&["--copy-chunker-params-from", &location]);
    let run = destination
        .cairn_env(&init, &[("CAIRN_FROM_PASSWORD_FILE", password_file)])
        .ok();
    assert!(run.text().contains("chunks like"), "{}", run.text());
}

/// Files of many sizes and kinds: empty, one byte, small, several chunks, one file larger than
/// a copy's read batch (32 MiB), a duplicate, a symlink, nested directories.
fn write_corpus(root: &Path, seed: u64, large: bool) {
    std::fs::create_dir_all(root.join("a/b/c")).unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
    std::fs::write(root.join("one"), b"x").unwrap();
    for index in 0..30 {
        std::fs::write(
            root.join(format!("a/small-{index}")),
            random_bytes(seed + index, 100 + 997 * usize::try_from(index).unwrap()),
        )
        .unwrap();
    }
    std::fs::write(root.join("a/b/medium"), random_bytes(seed + 100, 3_000_000)).unwrap();
    std::fs::write(root.join("a/b/c/same"), random_bytes(seed + 100, 3_000_000)).unwrap();
    if large {
        std::fs::write(root.join("large"), random_bytes(seed + 200, 33 << 20)).unwrap();
    }
    let _ = std::fs::remove_file(root.join("link"));
    std::os::unix::fs::symlink("a/b/medium", root.join("link")).unwrap();
}

/// Restores `source_id` from the source and `copy_id` from the destination and asserts the two
/// trees are identical (content, modes, times, links).
fn assert_copy_restores(pair: &Pair, source_id: &str, copy_id: &str, tag: &str) {
    let expected = pair.destination.path(&format!("expected-{tag}"));
    let actual = pair.destination.path(&format!("actual-{tag}"));
    pair.source
        .cairn(&["restore", source_id, "--target", expected.to_str().unwrap()])
        .ok();
    pair.destination
        .cairn(&["restore", copy_id, "--target", actual.to_str().unwrap()])
        .ok();
    // The target directories themselves are not part of the snapshots.
    let mut expected_entries = scan_tree(&expected);
    let mut actual_entries = scan_tree(&actual);
    expected_entries.remove(Path::new(""));
    actual_entries.remove(Path::new(""));
    assert_same_entries(&expected_entries, &actual_entries);
    std::fs::remove_dir_all(&expected).unwrap();
    std::fs::remove_dir_all(&actual).unwrap();
}

/// Source snapshot id → destination snapshot id, from the destination's listing.
fn copies_of(pair: &Pair) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for snapshot in pair.destination.snapshots() {
        if let Some(copy_of) = snapshot["copy_of"]["snapshot"].as_str() {
            pairs.push((
                copy_of.to_owned(),
                snapshot["id"].as_str().unwrap().to_owned(),
            ));
        }
    }
    pairs
}

/// Whether the full soak matrix runs (`CAIRN_TEST_SOAK=1`, `tests/soak/copy-kill.sh`) rather
/// than CI's small cell.
fn soak() -> bool {
    std::env::var("CAIRN_TEST_SOAK").is_ok_and(|value| value == "1")
}

/// When to kill the copies: CI's `ci` delays, or the soak's `full` ones.
fn kill_delays_ms(ci: &'static [u64], full: &'static [u64]) -> &'static [u64] {
    if soak() { full } else { ci }
}

fn check_clean(workspace: &Workspace) {
    workspace.cairn(&["check", "--read-data"]).ok();
}

#[test]
fn copies_restore_byte_for_byte_and_a_second_copy_sends_nothing() {
    let pair = Pair::alike(&[]);
    let data = pair.source.path("data");
    write_corpus(&data, 1, false);
    pair.source.backup(&[&data]);
    std::fs::write(data.join("a/small-3"), random_bytes(77, 5000)).unwrap();
    pair.source.backup(&[&data]);
    pair.source
        .backup_stdin("db.archive", &random_bytes(5, 2_500_000), &["--tag", "db"]);

    let first = pair.copy(&[]);
    assert_eq!(json_u64(&first, "snapshots_copied"), 3, "{first}");
    assert_eq!(json_u64(&first, "snapshots_already_copied"), 0);
    assert_eq!(first["rechunked"], false, "{first}");

    // The copies keep time, host, user, tags, paths and summary, and name their source.
    let sources = pair.source.snapshots();
    let copies = pair.destination.snapshots();
    assert_eq!(copies.len(), 3);
    assert_eq!(copies_of(&pair).len(), 3, "every copy names its source");
    for copy in &copies {
        let original = sources
            .iter()
            .find(|source| source["id"] == copy["copy_of"]["snapshot"])
            .unwrap_or_else(|| panic!("{copy} names no source snapshot"));
        for field in ["time", "host", "username", "tags", "paths", "summary"] {
            assert_eq!(copy[field], original[field], "{field} of {copy}");
        }
    }
    for (source_id, copy_id) in copies_of(&pair) {
        assert_copy_restores(&pair, &source_id, &copy_id, &source_id[..8]);
    }
    let stream = pair
        .destination
        .cairn(&["dump", "latest", "db.archive", "--tag", "db"])
        .ok();
    assert!(stream.stdout == random_bytes(5, 2_500_000));

    // Nothing new: every snapshot is skipped, nothing is read or written.
    let packs_before = crate::support::files_below(&pair.destination.repo.join("data")).len();
    let objects_before = crate::support::files_below(&pair.destination.repo).len();
    let second = pair.copy(&[]);
    assert_eq!(
        crate::support::files_below(&pair.destination.repo).len(),
        objects_before,
        "a copy with nothing to copy writes nothing, not even a session marker"
    );
    assert_eq!(json_u64(&second, "snapshots_copied"), 0, "{second}");
    assert_eq!(json_u64(&second, "snapshots_already_copied"), 3);
    assert_eq!(json_u64(&second, "bytes_added"), 0);
    assert_eq!(json_u64(&second, "bytes_read"), 0);
    assert_eq!(
        crate::support::files_below(&pair.destination.repo.join("data")).len(),
        packs_before
    );

    // One changed file: unchanged subtrees and files come from the copy map, unread.
    std::fs::write(data.join("a/b/c/new"), random_bytes(88, 70_000)).unwrap();
    pair.source.backup(&[&data]);
    let third = pair.copy(&["--verify"]);
    assert_eq!(json_u64(&third, "snapshots_copied"), 1, "{third}");
    assert_eq!(json_u64(&third, "bytes_read"), 70_000, "{third}");
    assert!(json_u64(&third, "files_reused") >= 30, "{third}");
    assert!(json_u64(&third, "bytes_added") < 200_000, "{third}");
    check_clean(&pair.destination);
}

#[test]
fn a_lost_copy_map_reads_the_source_again_but_sends_nothing() {
    let pair = Pair::alike(&[]);
    let data = pair.source.path("data");
    write_corpus(&data, 2, false);
    pair.source.backup(&[&data]);
    pair.copy(&[]);
    let copy_id = pair.destination.snapshots()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    pair.destination.cairn(&["forget", &copy_id]).ok();
    std::fs::remove_dir_all(&pair.destination.cache).unwrap();
    let again = pair.copy(&[]);
    assert_eq!(json_u64(&again, "snapshots_copied"), 1, "{again}");
    // "same" duplicates "medium": its content is read once.
    assert!(json_u64(&again, "bytes_read") > 3_000_000, "{again}");
    assert_eq!(json_u64(&again, "packs_added"), 0, "{again}");
    let (source_id, copy_id) = copies_of(&pair).pop().unwrap();
    assert_copy_restores(&pair, &source_id, &copy_id, "again");
}

#[test]
fn filters_and_dry_run_choose_what_is_copied() {
    let pair = Pair::alike(&[]);
    pair.source
        .backup_stdin("one", b"first stream", &["--tag", "keep"]);
    pair.source.backup_stdin("two", b"second stream", &[]);
    let plan = pair
        .cairn(&["copy", "--json", "--dry-run", "--tag", "keep"])
        .ok()
        .json_lines();
    assert_eq!(plan[0]["to_copy"].as_array().unwrap().len(), 1, "{plan:?}");
    assert!(
        pair.destination.snapshots().is_empty(),
        "a dry run writes nothing"
    );
    let copied = pair.copy(&["--tag", "keep"]);
    assert_eq!(json_u64(&copied, "snapshots_copied"), 1);
    let rest = pair.copy(&[]);
    assert_eq!(json_u64(&rest, "snapshots_copied"), 1);
    assert_eq!(json_u64(&rest, "snapshots_already_copied"), 1);
}

#[test]
fn bad_input_gets_its_own_exit_code_and_changes_nothing() {
    let pair = Pair::alike(&[]);
    pair.source.backup_stdin("s", b"stream", &[]);
    // Wrong source password: exit 12, naming the source.
    let wrong = pair.destination.path("wrong");
    std::fs::write(&wrong, "not the password\n").unwrap();
    let run = pair
        .destination
        .cairn_env(
            &["copy"],
            &[
                ("CAIRN_FROM_REPOSITORY", &pair.source.repo),
                ("CAIRN_FROM_PASSWORD_FILE", &wrong),
            ],
        )
        .code(12);
    assert!(
        run.stderr.contains(&pair.source.repo.display().to_string()),
        "{}",
        run.stderr
    );
    // The destination's own password is never tried on the source.
    pair.destination
        .cairn_env(&["copy"], &[("CAIRN_FROM_REPOSITORY", &pair.source.repo)])
        .failed();
    // Same repository: a usage error.
    pair.destination
        .cairn_env(
            &["copy"],
            &[
                ("CAIRN_FROM_REPOSITORY", &pair.destination.repo),
                ("CAIRN_FROM_PASSWORD_FILE", &pair.password_file),
            ],
        )
        .code(2)
        .stderr_contains("same repository");
    // No source at all: usage; a source that is no repository: exit 10.
    pair.destination.cairn(&["copy"]).code(2);
    let nowhere = pair.destination.path("nowhere");
    std::fs::create_dir_all(&nowhere).unwrap();
    pair.destination
        .cairn_env(
            &["copy"],
            &[
                ("CAIRN_FROM_REPOSITORY", &nowhere),
                ("CAIRN_FROM_PASSWORD_FILE", &pair.password_file),
            ],
        )
        .code(10);
    assert!(pair.destination.snapshots().is_empty());
    check_clean(&pair.destination);
}

/// Kills `cairn copy` at spread-out points, then lets it finish: each resumed copy completes,
/// the destination checks clean, restores byte for byte, and holds about what one
/// uninterrupted copy stores (what arrived before a kill is not sent again).
fn killed_and_resumed(pair: &Pair, delays_ms: &[u64]) {
    for &delay in delays_ms {
        let child = pair
            .destination
            .command(
                &["copy", "--json"],
                &[
                    ("CAIRN_FROM_REPOSITORY", &pair.source.repo),
                    ("CAIRN_FROM_PASSWORD_FILE", &pair.password_file),
                ],
            )
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        if let Ending::Completed(_) = kill_after(child, Duration::from_millis(delay)) {
            break;
        }
    }
    let resumed = pair.copy(&[]);
    eprintln!("resumed: {resumed}");
    check_clean(&pair.destination);
    for (source_id, copy_id) in copies_of(pair) {
        assert_copy_restores(pair, &source_id, &copy_id, &source_id[..8]);
    }
}

fn directory_bytes(directory: &Path) -> u64 {
    crate::support::files_below(directory)
        .iter()
        .map(|path| std::fs::metadata(path).unwrap().len())
        .sum()
}

#[test]
fn a_copy_killed_mid_way_resumes_without_sending_again() {
    let pair = Pair::alike(&["--pack-size-mib", "1"]);
    let data = pair.source.path("data");
    write_corpus(&data, 3, soak());
    pair.source.backup(&[&data]);
    std::fs::write(data.join("a/b/extra"), random_bytes(9, 4_000_000)).unwrap();
    pair.source.backup(&[&data]);
    killed_and_resumed(&pair, kill_delays_ms(&[300, 900], &[300, 900, 1500, 2500]));
    assert_eq!(pair.destination.snapshots().len(), 2);

    // One uninterrupted copy into a fresh destination, for the size it stores.
    let fresh = Workspace::new();
    init_alike(
        &fresh,
        &pair.source,
        &pair.password_file,
        &["--pack-size-mib", "1"],
    );
    fresh
        .cairn_env(
            &["copy"],
            &[
                ("CAIRN_FROM_REPOSITORY", &pair.source.repo),
                ("CAIRN_FROM_PASSWORD_FILE", &pair.password_file),
            ],
        )
        .ok();
    let resumed_bytes = directory_bytes(&pair.destination.repo.join("data"));
    let fresh_bytes = directory_bytes(&fresh.repo.join("data"));
    assert!(
        resumed_bytes <= fresh_bytes + fresh_bytes / 5,
        "the killed runs' packs were adopted, not sent again: {resumed_bytes} vs {fresh_bytes}"
    );
}

#[test]
fn a_destination_that_chunks_alike_never_rechunks_and_dedups_with_backups() {
    let pair = Pair::alike(&[]);
    let data = pair.source.path("data");
    write_corpus(&data, 4, false);
    pair.source.backup(&[&data]);
    let copied = pair.cairn(&["copy", "--json"]).ok();
    assert!(!copied.stderr.contains("re-chunk"), "{}", copied.stderr);
    assert_eq!(copied.summary()["rechunked"], false);
    // A backup of the same files straight into the destination finds every chunk there.
    let direct = pair.destination.backup(&[&data]);
    assert!(
        json_u64(&direct, "bytes_added") < 50_000,
        "the destination chunks like the source: {direct}"
    );
    let (source_id, copy_id) = copies_of(&pair).remove(0);
    assert_copy_restores(&pair, &source_id, &copy_id, "alike");
}

#[test]
fn a_destination_that_chunks_differently_rechunks_and_says_so() {
    let pair = Pair::unlike(&SMALLER_CHUNKS);
    let data = pair.source.path("data");
    write_corpus(&data, 5, soak());
    pair.source.backup(&[&data]);
    pair.source
        .backup_stdin("stream", &random_bytes(6, 5_000_000), &[]);
    let copied = pair.cairn(&["copy", "--json", "--verify"]).ok();
    let summary = copied.summary();
    assert_eq!(summary["rechunked"], true, "{summary}");
    let human = pair.cairn(&["copy", "--verify"]).ok();
    assert!(
        human.stderr.is_empty(),
        "nothing to copy, no notice: {}",
        human.stderr
    );
    for (source_id, copy_id) in copies_of(&pair) {
        assert_copy_restores(&pair, &source_id, &copy_id, &source_id[..8]);
    }
    // The destination's chunks follow its own bounds: a direct backup deduplicates fully.
    let direct = pair.destination.backup(&[&data]);
    assert!(json_u64(&direct, "bytes_added") < 50_000, "{direct}");
    check_clean(&pair.destination);
}

#[test]
fn the_rechunk_notice_is_one_line_on_stderr() {
    let pair = Pair::unlike(&SMALLER_CHUNKS);
    pair.source
        .backup_stdin("s", &random_bytes(1, 300_000), &[]);
    let run = pair.cairn(&["copy"]).ok();
    let notices: Vec<&str> = run
        .stderr
        .lines()
        .filter(|line| line.contains("re-chunk"))
        .collect();
    assert_eq!(notices.len(), 1, "{}", run.stderr);
}

/// A pair whose source and destination live at `source_url` and `destination_url` (a store
/// URL, or `None` for the workspace's local directory), the destination chunking alike.
fn pair_at(source_url: Option<String>, destination_url: Option<String>) -> Pair {
    let mut source = Workspace::new();
    if let Some(url) = source_url {
        source.repo = PathBuf::from(url);
    }
    let mut init: Vec<&str> = crate::support::CHEAP_INIT.to_vec();
    init.extend_from_slice(&LARGE_CHUNKS);
    source.cairn(&init).ok();
    let mut destination = Workspace::new();
    if let Some(url) = destination_url {
        destination.repo = PathBuf::from(url);
    }
    let password_file = source.path("source-password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    // Small packs: a few MiB make enough packs for a kill to land between two of them.
    init_alike(
        &destination,
        &source,
        &password_file,
        &["--pack-size-mib", "1"],
    );
    Pair {
        source,
        destination,
        password_file,
    }
}

/// Backs up two snapshots into the pair's source, copies them with SIGKILL at spread-out
/// points and resumes: the destination checks clean and restores byte for byte.
fn copy_across_stores(pair: &Pair) {
    let data = pair.source.path("data");
    write_corpus(&data, 11, false);
    let big = if soak() { 12_000_000 } else { 2_000_000 };
    std::fs::write(data.join("a/big"), random_bytes(12, big)).unwrap();
    pair.source.backup(&[&data]);
    std::fs::write(data.join("a/b/changed"), random_bytes(13, 3_000_000)).unwrap();
    pair.source.backup(&[&data]);
    killed_and_resumed(pair, kill_delays_ms(&[400, 1200], &[400, 1200, 2500]));
    assert_eq!(pair.destination.snapshots().len(), 2);
    let again = pair.copy(&[]);
    assert_eq!(json_u64(&again, "bytes_added"), 0, "{again}");
}

#[test]
fn local_to_s3_is_killed_resumed_and_restores() {
    let Some(url) = crate::backends::remote_url("CAIRN_TEST_S3_URL", "copy-to-s3") else {
        return;
    };
    copy_across_stores(&pair_at(None, Some(url)));
}

#[test]
fn s3_to_azure_is_killed_resumed_and_restores() {
    let Some(source) = crate::backends::remote_url("CAIRN_TEST_S3_URL", "copy-from-s3") else {
        return;
    };
    let Some(destination) = crate::backends::remote_url("CAIRN_TEST_AZURE_URL", "copy-to-azure")
    else {
        return;
    };
    copy_across_stores(&pair_at(Some(source), Some(destination)));
}
