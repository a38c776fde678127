//! Recognising input that defeats deduplication: an already compressed or encrypted dump
//! (`mongodump --gzip`, `pg_dump -Fc`, a `.tar.gz`) changes almost every byte when a little of
//! its content changes, so each backup stores it anew. Judged from counts the backup keeps
//! anyway (bytes read, bytes of new chunks before and after compression).
//!
//! Pure: no I/O.

use std::path::PathBuf;

/// Files and streams shorter than this are never judged: their cost is small either way.
pub const MIN_BYTES: u64 = 8 * 1024 * 1024;
/// New chunks whose compressed size is at least this many percent of their raw size look
/// compressed or encrypted already.
pub const INCOMPRESSIBLE_PERCENT: u64 = 95;
/// An input of which less than this many percent was already stored shares almost nothing with
/// its previous backup.
pub const SHARED_PERCENT: u64 = 5;

/// What one file or stream cost: counted while its chunks were saved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContentCounts {
    /// Bytes read.
    pub length: u64,
    /// Bytes of the chunks that were not stored yet.
    pub new_raw: u64,
    /// The same chunks after compression (before encryption).
    pub new_compressed: u64,
}

/// A file or stream that looks compressed or encrypted and shared almost nothing with its
/// previous backup.
#[derive(Debug, Clone, PartialEq)]
pub struct DedupHostile {
    /// The file's path, or the stream's name.
    pub path: PathBuf,
    /// Bytes read.
    pub length: u64,
    /// The share of the new chunks' bytes that compression saved (0.0 to 1.0).
    pub compression_saved: f64,
    /// The share of the input that was already stored (0.0 to 1.0).
    pub already_stored: f64,
}

/// `part / whole` as a fraction (0 when `whole` is 0).
#[allow(clippy::cast_precision_loss)] // a ratio for display; 53 bits are plenty
fn fraction(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Judges one file or stream. `repeat`: the same source (file path, or stream name) was in the
/// parent snapshot, so an unchanged or slightly changed input would have been found stored.
/// `compressing`: the repository compresses (without compression, nothing tells high entropy).
/// A first backup of new incompressible data is not judged: nothing says it will not dedup next
/// time.
pub fn judge(
    path: PathBuf,
    counts: ContentCounts,
    repeat: bool,
    compressing: bool,
) -> Option<DedupHostile> {
    let ContentCounts {
        length,
        new_raw,
        new_compressed,
    } = counts;
    let stored = length.saturating_sub(new_raw);
    let incompressible = u128::from(new_compressed) * 100
        >= u128::from(new_raw) * u128::from(INCOMPRESSIBLE_PERCENT);
    let unshared = u128::from(stored) * 100 < u128::from(length) * u128::from(SHARED_PERCENT);
    (repeat && compressing && length >= MIN_BYTES && new_raw > 0 && incompressible && unshared)
        .then(|| DedupHostile {
            path,
            length,
            compression_saved: 1.0 - fraction(new_compressed, new_raw).min(1.0),
            already_stored: fraction(stored, length),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn counts(length: u64, new_raw: u64, new_compressed: u64) -> ContentCounts {
        ContentCounts {
            length,
            new_raw,
            new_compressed,
        }
    }

    fn verdict(counts: ContentCounts, repeat: bool) -> Option<DedupHostile> {
        judge(PathBuf::from("app.archive"), counts, repeat, true)
    }

    #[test]
    fn a_repeated_incompressible_input_that_shares_nothing_is_flagged() {
        let flagged = verdict(counts(100 * MIB, 99_700_000, 99_000_000), true).unwrap();
        assert_eq!(flagged.length, 100 * MIB);
        assert!((flagged.compression_saved - 0.007_02).abs() < 1e-4);
        assert!((flagged.already_stored - 0.049_21).abs() < 1e-4);
        assert_eq!(flagged.path, PathBuf::from("app.archive"));
    }

    #[test]
    fn thresholds_are_inclusive_where_documented() {
        // exactly 95 % of the raw size after compression: still incompressible
        assert!(verdict(counts(20 * MIB, 20 * MIB, 19 * MIB), true).is_some());
        // 94.9 %: compressible enough
        assert!(verdict(counts(20 * MIB, 1000 * MIB / 50, 949 * MIB / 50), true).is_none());
        // exactly 5 % stored: shares enough
        assert!(verdict(counts(20 * MIB, 19 * MIB, 19 * MIB), true).is_none());
        // just under the size floor
        assert!(verdict(counts(MIN_BYTES - 1, MIN_BYTES - 1, MIN_BYTES - 1), true).is_none());
        assert!(verdict(counts(MIN_BYTES, MIN_BYTES, MIN_BYTES), true).is_some());
    }

    #[test]
    fn first_backups_compressible_or_shared_inputs_and_no_compression_pass() {
        let hostile = counts(50 * MIB, 50 * MIB, 50 * MIB);
        assert!(verdict(hostile, false).is_none(), "no previous backup");
        assert!(judge(PathBuf::from("x"), hostile, true, false).is_none());
        assert!(verdict(counts(50 * MIB, 50 * MIB, 10 * MIB), true).is_none());
        assert!(verdict(counts(50 * MIB, 40 * MIB, 40 * MIB), true).is_none());
        assert!(
            verdict(counts(50 * MIB, 0, 0), true).is_none(),
            "all stored"
        );
    }
}
