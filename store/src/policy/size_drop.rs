//! The size-drop rule: a file or stream at least [`FACTOR`] times smaller than the same file
//! (same path) or stream (same name) in the parent snapshot is worth a warning. A dump command
//! that found nothing to dump (`sqlite3 /typo/path .dump`) prints an empty dump and exits 0; a
//! truncated file looks like any other change. Neither is an error a backup can prove, but a
//! backup that shrank tenfold overnight should be noticed the next morning, not on the day of
//! the restore. Judged from sizes the backup has anyway.
//!
//! Pure: no I/O.

use std::path::PathBuf;

/// The new size must be at most the previous size divided by this for a warning.
pub const FACTOR: u64 = 10;
/// Previous sizes below this are not judged: a small file that empties (a lock file, a
/// rotated log) is ordinary.
pub const MIN_PREVIOUS_BYTES: u64 = 4096;

/// A file or stream much smaller than in the parent snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeDrop {
    /// The file's path, or the stream's name.
    pub path: PathBuf,
    /// Its size in the parent snapshot.
    pub previous_bytes: u64,
    /// Its size now.
    pub bytes: u64,
}

/// Judges one file or stream: `previous_bytes` is its size in the parent snapshot, `bytes` what
/// was read now.
pub fn judge(path: PathBuf, previous_bytes: u64, bytes: u64) -> Option<SizeDrop> {
    (previous_bytes >= MIN_PREVIOUS_BYTES && bytes <= previous_bytes / FACTOR).then_some(SizeDrop {
        path,
        previous_bytes,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drops(previous: u64, now: u64) -> bool {
        judge(PathBuf::from("db.sql"), previous, now).is_some()
    }

    #[test]
    fn an_empty_dump_after_a_large_one_is_a_drop() {
        assert!(drops(30_000_000, 52));
        assert!(drops(30_000_000, 0));
    }

    #[test]
    fn the_factor_is_inclusive_at_ten() {
        assert!(drops(100_000, 10_000), "exactly ten times smaller");
        assert!(!drops(100_000, 10_001), "a little less than ten times");
        assert!(!drops(100_000, 100_000));
        assert!(!drops(100_000, 200_000), "growth is never a drop");
    }

    #[test]
    fn small_previous_sizes_are_not_judged() {
        assert!(!drops(MIN_PREVIOUS_BYTES - 1, 0));
        assert!(drops(MIN_PREVIOUS_BYTES, 0));
    }

    #[test]
    fn huge_sizes_do_not_overflow() {
        assert!(!drops(u64::MAX, u64::MAX / 2));
        assert!(drops(u64::MAX, u64::MAX / 10));
        assert!(!drops(10_000, u64::MAX));
    }
}
