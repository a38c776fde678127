//! The speed options a user tunes: `--compression` (per run, or a repository's default at init),
//! `--threads` and `--cache-memory-mib`, and `--no-cache` leaving nothing behind.

use crate::support::{Workspace, compressible_text, json_u64, run_command};

/// Bytes a backup of `data` adds with the given global options.
fn added_with(workspace: &Workspace, name: &str, data: &[u8], options: &[&str]) -> u64 {
    let summary = workspace.backup_stdin(name, data, options);
    json_u64(&summary, "bytes_added")
}

#[test]
fn compression_levels_change_what_is_stored_and_everything_restores() {
    let workspace = Workspace::initialized();
    let data = compressible_text(7, 4 << 20);
    // Different seeds per stream so that no chunk deduplicates against an earlier stream.
    let off = added_with(&workspace, "off.txt", &data, &["--compression", "off"]);
    let other = compressible_text(8, 4 << 20);
    let default = added_with(&workspace, "default.txt", &other, &[]);
    let third = compressible_text(9, 4 << 20);
    let max = added_with(
        &workspace,
        "max.txt",
        &third,
        &["--compression", "max", "--threads", "1"],
    );
    assert!(
        off > data.len() as u64,
        "uncompressed: {off} bytes for {} of text",
        data.len()
    );
    assert!(default * 2 < off, "default level {default} vs off {off}");
    assert!(max <= default, "max level {max} vs default {default}");
    assert_eq!(
        workspace.cairn(&["dump", "latest", "max.txt"]).ok().stdout,
        third
    );
    // Every blob, whatever its level, authenticates and decompresses.
    workspace.cairn(&["check", "--read-data"]).ok();
}

#[test]
fn init_compression_sets_the_repository_default() {
    let workspace = Workspace::initialized_with(&["--compression", "off"]);
    let data = compressible_text(11, 2 << 20);
    let stored = added_with(&workspace, "plain.txt", &data, &[]);
    assert!(
        stored > data.len() as u64,
        "repository default off: {stored} bytes stored"
    );
    let again = compressible_text(12, 2 << 20);
    let compressed = added_with(
        &workspace,
        "packed.txt",
        &again,
        &["--compression", "fastest"],
    );
    assert!(
        compressed * 2 < stored,
        "fastest overrides the default: {compressed} vs {stored}"
    );
}

#[test]
fn bad_speed_options_are_refused_with_one_line() {
    let workspace = Workspace::initialized();
    workspace
        .cairn(&["--compression", "fast", "snapshots"])
        .code(2)
        .stderr_contains("give fastest, default, max, off or a zstd level");
    workspace
        .cairn(&["--compression", "23", "snapshots"])
        .code(2)
        .stderr_contains("zstd level from -7 to 22");
    workspace.cairn(&["--threads", "0", "snapshots"]).code(2);
    workspace
        .cairn(&["--compression-probe", "maybe", "snapshots"])
        .code(2)
        .stderr_contains("give on or off");
}

#[test]
fn no_cache_runs_leave_no_index_file_behind() {
    let workspace = Workspace::initialized();
    let temporary = workspace.path("tmp");
    std::fs::create_dir_all(&temporary).unwrap();
    let env = [("TMPDIR", temporary.as_path())];
    let data = compressible_text(13, 1 << 20);
    let backup = ["--no-cache", "backup", "--stdin", "--stdin-name", "a.txt"];
    run_command(workspace.command(&backup, &env), Some(&data)).ok();
    workspace
        .cairn_env(
            &[
                "--no-cache",
                "--cache-memory-mib",
                "1",
                "check",
                "--read-data",
            ],
            &env,
        )
        .ok();
    let left: Vec<_> = std::fs::read_dir(&temporary).unwrap().collect();
    assert!(
        left.is_empty(),
        "temporary index files left behind: {left:?}"
    );
}
