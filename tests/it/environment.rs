//! cairn in a bad environment, with the real binary: a restore target that fills up or hits the
//! file-size limit.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{TreeBuilder, Workspace, effective_uid, files_below, random_bytes};

/// Asserts that `directory` holds no file called `name` and no partial (temporary) file.
#[track_caller]
fn assert_nothing_left(directory: &Path, name: &str) {
    let left: Vec<PathBuf> = files_below(directory)
        .into_iter()
        .filter(|path| {
            let file_name = path.file_name().unwrap().to_string_lossy();
            file_name == name || file_name.contains("cairn-partial")
        })
        .collect();
    assert!(
        left.is_empty(),
        "a failed restore left files behind: {left:?}"
    );
}

/// A tmpfs of `size` mounted on a directory, unmounted on drop.
struct SmallFileSystem {
    mount_point: PathBuf,
}

impl SmallFileSystem {
    /// Mounts it, or `None` (with a note) where tmpfs cannot be mounted: not root, or no
    /// `CAP_SYS_ADMIN` in this container.
    fn mount(mount_point: PathBuf, size: &str) -> Option<Self> {
        if effective_uid() != 0 {
            eprintln!("skipping the full-disk restore: mounting a tmpfs needs root");
            return None;
        }
        fs::create_dir_all(&mount_point).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mount_point)
            .status();
        if !status.as_ref().is_ok_and(std::process::ExitStatus::success) {
            eprintln!("skipping the full-disk restore: mount -t tmpfs failed ({status:?})");
            return None;
        }
        Some(Self { mount_point })
    }
}

impl Drop for SmallFileSystem {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount_point).status();
    }
}

/// A workspace with a backup of a small file, a 700 kB file and a 3 MB file; returns the
/// workspace and the source directory.
fn workspace_with_files() -> (Workspace, PathBuf) {
    let workspace = Workspace::initialized();
    let source = workspace.path("source");
    let tree = TreeBuilder::new(&source);
    tree.file("small.txt", b"fits anywhere\n");
    tree.file("medium.bin", &random_bytes(0x3ed, 700_000));
    tree.file("big.bin", &random_bytes(0xb16, 3_000_000));
    workspace.backup(&[&source]);
    (workspace, source)
}

/// Restores one file of the latest snapshot into `target`.
fn restore_file(
    workspace: &Workspace,
    source: &Path,
    name: &str,
    target: &Path,
) -> crate::support::Run {
    workspace.cairn(&[
        "restore",
        &format!("latest:{}", source.join(name).display()),
        "--target",
        target.to_str().unwrap(),
    ])
}

/// A restore into a file system that fills up fails with an error naming the file and the cause,
/// and leaves neither a file under the final name nor a temporary one; both when a write fails
/// midway (a file larger than the disk) and when only the final flush fails (a file smaller than
/// the write buffer, on a nearly full disk).
#[test]
fn restore_into_a_full_file_system_fails_and_leaves_no_file_behind() {
    let (workspace, source) = workspace_with_files();
    let Some(disk) = SmallFileSystem::mount(workspace.path("small-disk"), "2m") else {
        return;
    };
    let target = &disk.mount_point;
    let run = restore_file(&workspace, &source, "big.bin", target).failed();
    assert!(
        run.stderr.contains("No space left on device")
            && run
                .stderr
                .contains(&target.join("big.bin").to_string_lossy().into_owned()),
        "the error does not name the file and the cause:\n{}",
        run.stderr
    );
    assert_nothing_left(target, "big.bin");

    // Leave about 400 kB free: the 700 kB file is buffered whole and fails at the last flush.
    fs::write(target.join("filler"), vec![1u8; 1_700_000]).unwrap();
    restore_file(&workspace, &source, "medium.bin", target)
        .failed()
        .stderr_contains("No space left on device");
    assert_nothing_left(target, "medium.bin");

    // Once there is room again, the same restore succeeds.
    fs::remove_file(target.join("filler")).unwrap();
    restore_file(&workspace, &source, "medium.bin", target).ok();
    assert!(fs::read(target.join("medium.bin")).unwrap() == random_bytes(0x3ed, 700_000));
}

/// The same with the file-size limit (`ulimit -f`, no root needed): writing past it is an error
/// (EFBIG), not a fatal SIGXFSZ that would leave the temporary file behind.
#[test]
fn restore_past_the_file_size_limit_fails_and_leaves_no_file_behind() {
    let (mut workspace, source) = workspace_with_files();
    // 2048 blocks: 1 MiB in dash's 512-byte blocks, 2 MiB in bash's 1024-byte ones.
    workspace.prefix = ["sh", "-c", "ulimit -f 2048 && exec \"$0\" \"$@\""]
        .into_iter()
        .map(OsString::from)
        .collect();
    let target = workspace.path("limited");
    let mut args = vec!["--no-cache"];
    let spec = format!("latest:{}", source.join("big.bin").display());
    args.extend_from_slice(&["restore", &spec, "--target", target.to_str().unwrap()]);
    let run = workspace.cairn(&args).failed();
    assert!(
        run.stderr.contains("File too large"),
        "expected EFBIG, exit {:?}:\n{}",
        run.code,
        run.stderr
    );
    assert_nothing_left(&target, "big.bin");
    // Files within the limit restore as usual.
    let spec = format!("latest:{}", source.join("small.txt").display());
    workspace
        .cairn(&[
            "--no-cache",
            "restore",
            &spec,
            "--target",
            target.to_str().unwrap(),
        ])
        .ok();
    assert_eq!(
        fs::read(target.join("small.txt")).unwrap(),
        b"fits anywhere\n"
    );
}
