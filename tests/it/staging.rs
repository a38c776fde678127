//! Staging files left by killed uploads to a local directory (issue 12, "no leftovers"):
//! `object_store` writes `<name>#<n>` and renames it, so a `kill -9` in between leaves the file.
//! `check` counts it (not as damage), `prune` removes it once an hour old by the file system's
//! clock and unchanged, and never one a running upload may still write (FORMAT.md section 14).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::{CHEAP_INIT, Repo, Workspace, files_below, json_u64, random_bytes};

/// Whether `path` is a staging file: its name ends in `#` and digits.
fn is_staging(path: &Path) -> bool {
    path.file_name()
        .and_then(|name| name.to_str())
        .and_then(|name| name.rsplit_once('#'))
        .is_some_and(|(object, digits)| {
            !object.is_empty() && !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
        })
}

fn staging_files(repo: &Path) -> Vec<PathBuf> {
    files_below(repo)
        .into_iter()
        .filter(|path| is_staging(path))
        .collect()
}

/// Makes `path` look last written `age` ago.
fn backdate(path: &Path, age: Duration) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open staging file")
        .set_modified(SystemTime::now() - age)
        .expect("set mtime");
}

/// Runs backups of fresh data and kills one with SIGKILL while a pack's staging file exists:
/// polls the repository, stops the process (SIGSTOP) when a staging file shows, and kills it
/// if the file is still there (else lets it go on). Returns the staging files left.
fn kill_a_backup_mid_upload(workspace: &Workspace, repo: &Repo<'_>) -> Vec<PathBuf> {
    for trial in 0..12u64 {
        let source = workspace.path(&format!("source-{trial}"));
        std::fs::create_dir_all(&source).expect("create source");
        std::fs::write(
            source.join("data.bin"),
            random_bytes(0x5eed + trial, 9 << 20),
        )
        .expect("write source");
        let mut child = repo.spawn(&["backup", source.to_str().expect("UTF-8")]);
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        let started = Instant::now();
        while child.try_wait().expect("poll child").is_none()
            && started.elapsed() < Duration::from_mins(2)
        {
            if staging_files(&workspace.repo).is_empty() {
                // A pack's staging file lives for milliseconds (written in 64 KiB slices).
                std::thread::sleep(Duration::from_micros(300));
                continue;
            }
            kill(pid, Signal::SIGSTOP).expect("stop cairn");
            // Stopped: a staging file still there now stays until the kill.
            std::thread::sleep(Duration::from_millis(20));
            let left = staging_files(&workspace.repo);
            if left.is_empty() {
                kill(pid, Signal::SIGCONT).expect("continue cairn");
                continue;
            }
            child.kill().expect("kill cairn");
            child.wait().expect("reap cairn");
            return left;
        }
        let _ = child.kill();
        child.wait().expect("reap cairn");
    }
    panic!("no backup was caught in the middle of a pack upload in 12 trials");
}

/// A backup killed mid-upload leaves a staging file; `check` counts it and passes; `prune` keeps
/// it while it is young (an upload may still write it), removes it once an hour old (dry run
/// first: nothing removed); afterwards `check` finds none and the next backup succeeds.
#[test]
fn a_staging_file_left_by_a_killed_upload_is_counted_then_removed() {
    let workspace = Workspace::new();
    let repo = Repo::local(&workspace);
    let mut init = CHEAP_INIT.to_vec();
    init.extend(["--pack-size-mib", "4"]);
    workspace.cairn(&init).ok();
    let left = kill_a_backup_mid_upload(&workspace, &repo);
    let bytes: u64 = left
        .iter()
        .map(|path| std::fs::metadata(path).expect("stat").len())
        .sum();
    eprintln!(
        "killed mid-upload: {} staging files, {bytes} B: {left:?}",
        left.len()
    );

    let check = repo.cairn(&["check"]).ok();
    let text = check.text();
    assert!(
        text.contains(&format!(
            "{} staging files left by interrupted uploads",
            left.len()
        )) && text.contains("`cairn prune` removes them")
            && text.contains("no errors found"),
        "{text}"
    );
    let summary = repo.cairn(&["check", "--json"]).ok().summary();
    let listed = summary["staging_files"].as_array().expect("staging_files");
    assert_eq!(listed.len(), left.len(), "{summary}");
    assert!(listed.iter().all(|file| file["abandoned"] == false));
    assert_eq!(
        listed
            .iter()
            .map(|file| json_u64(file, "size"))
            .sum::<u64>(),
        bytes
    );

    // Young: kept, even by a real prune.
    let prune = repo.cairn(&["prune", "--json"]).ok().json_lines();
    let report = prune.last().expect("prune line");
    assert_eq!(json_u64(report, "staging_files_removed"), 0, "{report}");
    assert_eq!(
        json_u64(report, "staging_files_kept"),
        left.len() as u64,
        "{report}"
    );
    assert_eq!(staging_files(&workspace.repo), left);

    for path in &left {
        backdate(path, Duration::from_hours(2));
    }
    let dry = repo.cairn(&["prune", "--dry-run"]).ok().text();
    assert!(
        dry.contains(&format!(
            "would remove {} staging files left by interrupted uploads",
            left.len()
        )),
        "{dry}"
    );
    assert_eq!(
        staging_files(&workspace.repo),
        left,
        "a dry run removes nothing"
    );
    let prune = repo.cairn(&["prune", "--json"]).ok().json_lines();
    let report = prune.last().expect("prune line");
    assert_eq!(
        json_u64(report, "staging_files_removed"),
        left.len() as u64,
        "{report}"
    );
    assert_eq!(json_u64(report, "staging_bytes_removed"), bytes, "{report}");
    assert!(staging_files(&workspace.repo).is_empty());

    let check = repo.cairn(&["check", "--json"]).ok().summary();
    assert_eq!(check["staging_files"].as_array().map(Vec::len), Some(0));
    let source = workspace.path("source-0");
    repo.cairn(&["backup", source.to_str().expect("UTF-8")])
        .ok();
    repo.cairn(&["check", "--read-data"]).ok();
}

/// Staging files planted by hand next to a running backup: a prune during the backup removes
/// only the abandoned one (an hour old), keeps the young one and whatever the backup's own
/// uploads are writing; the backup succeeds and the repository checks.
#[test]
fn prune_next_to_a_running_upload_removes_only_abandoned_staging_files() {
    let workspace = Workspace::new();
    let repo = Repo::local(&workspace);
    let mut init = CHEAP_INIT.to_vec();
    init.extend(["--pack-size-mib", "1"]);
    workspace.cairn(&init).ok();
    let data = workspace.repo.join("data");
    for directory in ["ab", "cd"] {
        std::fs::create_dir_all(data.join(directory)).expect("create data dir");
    }
    let abandoned = data.join(format!("ab/{}#1", "ab".repeat(32)));
    let young = data.join(format!("cd/{}#2", "cd".repeat(32)));
    std::fs::write(&abandoned, vec![1u8; 300_000]).expect("plant");
    std::fs::write(&young, vec![2u8; 200_000]).expect("plant");
    backdate(&abandoned, Duration::from_hours(3));
    backdate(&young, Duration::from_mins(50));

    let summary = repo.cairn(&["check", "--json"]).ok().summary();
    let listed: Vec<(String, bool)> = summary["staging_files"]
        .as_array()
        .expect("staging_files")
        .iter()
        .map(|file| {
            (
                file["name"].as_str().expect("name").to_owned(),
                file["abandoned"] == true,
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (format!("data/ab/{}#1", "ab".repeat(32)), true),
            (format!("data/cd/{}#2", "cd".repeat(32)), false),
        ]
    );

    let source = workspace.path("source");
    std::fs::create_dir_all(&source).expect("create source");
    std::fs::write(source.join("data.bin"), random_bytes(0xc0c0, 6 << 20)).expect("write");
    let backup = repo.spawn(&["backup", "--json", source.to_str().expect("UTF-8")]);
    let prune = repo.cairn(&["prune", "--json"]).ok().json_lines();
    let report = prune.last().expect("prune line");
    let output = backup.wait_with_output().expect("backup ends");
    assert!(
        output.status.success(),
        "the backup beside the prune failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(json_u64(report, "staging_files_removed"), 1, "{report}");
    assert_eq!(
        json_u64(report, "staging_bytes_removed"),
        300_000,
        "{report}"
    );
    assert!(!abandoned.exists());
    assert!(
        young.exists(),
        "a staging file younger than an hour is kept"
    );
    repo.cairn(&["check", "--read-data"]).ok();
    assert_eq!(
        repo.cairn(&["snapshots", "--json"]).ok().json_lines().len(),
        1
    );
}
