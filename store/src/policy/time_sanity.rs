//! Snapshot times that cannot be right: a snapshot dated after the clock (`--time`, a host whose
//! clock is wrong) becomes `latest` for good and, without care, the reference of `keep_within`.
//! This module says when a backup's time deserves a warning and when a snapshot counts as dated
//! in the future; the clock is always the caller's argument.
//!
//! Pure: no I/O, no clock.

use jiff::{SignedDuration, Timestamp};

/// How far ahead of a clock a time may be before it counts as in the future: hosts' clocks
/// drift by seconds or minutes, not by an hour.
pub const FUTURE_TOLERANCE: SignedDuration = SignedDuration::from_hours(1);
/// How far ahead of the repository's newest snapshot a backup may be dated without a warning:
/// a longer gap is more often a wrong clock than a year without backups.
pub const AHEAD_OF_NEWEST: SignedDuration = SignedDuration::from_hours(366 * 24);

/// Whether `time` is dated in the future of `now` (beyond [`FUTURE_TOLERANCE`]).
pub fn is_future(time: Timestamp, now: Timestamp) -> bool {
    time.duration_since(now) > FUTURE_TOLERANCE
}

/// Why a backup's time looks wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeWarning {
    /// Dated ahead of the clock (beyond [`FUTURE_TOLERANCE`]).
    AheadOfClock {
        /// By how much.
        by: SignedDuration,
    },
    /// Dated far ahead (beyond [`AHEAD_OF_NEWEST`]) of the newest snapshot already in the
    /// repository: the clock of this host may be wrong.
    AheadOfNewest {
        /// The newest snapshot's time.
        newest: Timestamp,
    },
    /// Dated before the newest snapshot of the same host and source, which therefore stays
    /// `latest` (and may itself be dated in the future).
    BeforeNewest {
        /// That snapshot's time.
        newest: Timestamp,
    },
}

impl TimeWarning {
    /// A stable name for machine-readable output.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::AheadOfClock { .. } => "time_ahead_of_clock",
            Self::AheadOfNewest { .. } => "time_ahead_of_newest",
            Self::BeforeNewest { .. } => "time_before_newest",
        }
    }
}

/// The warnings a backup dated `time` deserves, given the clock `now`, the newest snapshot time
/// in the repository before it (`newest`), and the newest of the same host and source
/// (`newest_same`).
pub fn backup_time_warnings(
    time: Timestamp,
    now: Timestamp,
    newest: Option<Timestamp>,
    newest_same: Option<Timestamp>,
) -> Vec<TimeWarning> {
    let mut warnings = Vec::new();
    if is_future(time, now) {
        warnings.push(TimeWarning::AheadOfClock {
            by: time.duration_since(now),
        });
    }
    if let Some(newest) = newest
        && time.duration_since(newest) > AHEAD_OF_NEWEST
    {
        warnings.push(TimeWarning::AheadOfNewest { newest });
    }
    if let Some(newest_same) = newest_same
        && newest_same > time
    {
        warnings.push(TimeWarning::BeforeNewest {
            newest: newest_same,
        });
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    #[test]
    fn the_future_starts_an_hour_after_the_clock() {
        let now = at("2026-12-07T04:00:00Z");
        assert!(!is_future(at("2026-12-07T05:00:00Z"), now));
        assert!(is_future(at("2026-12-07T05:00:01Z"), now));
        assert!(!is_future(at("2020-01-01T00:00:00Z"), now));
    }

    #[test]
    fn an_ordinary_nightly_backup_has_no_warning() {
        let now = at("2026-12-07T04:00:00Z");
        let warnings = backup_time_warnings(
            now,
            now,
            Some(at("2026-12-06T04:00:00Z")),
            Some(at("2026-12-06T04:00:00Z")),
        );
        assert_eq!(warnings, []);
        assert_eq!(backup_time_warnings(now, now, None, None), []);
    }

    #[test]
    fn a_backup_dated_2099_warns_ahead_of_clock_and_newest() {
        let now = at("2026-12-07T04:00:00Z");
        let kinds: Vec<&str> = backup_time_warnings(
            at("2099-01-01T00:00:00Z"),
            now,
            Some(at("2026-12-06T04:00:00Z")),
            Some(at("2026-12-06T04:00:00Z")),
        )
        .iter()
        .map(TimeWarning::kind)
        .collect();
        assert_eq!(kinds, ["time_ahead_of_clock", "time_ahead_of_newest"]);
    }

    #[test]
    fn a_host_whose_clock_is_in_2099_warns_ahead_of_newest_only() {
        let clock = at("2099-01-01T00:00:00Z");
        let warnings = backup_time_warnings(clock, clock, Some(at("2026-12-06T04:00:00Z")), None);
        assert_eq!(
            warnings,
            [TimeWarning::AheadOfNewest {
                newest: at("2026-12-06T04:00:00Z")
            }]
        );
    }

    #[test]
    fn a_backup_older_than_its_latest_says_latest_stays() {
        let now = at("2026-12-07T04:00:00Z");
        let future = at("2099-01-01T00:00:00Z");
        let warnings = backup_time_warnings(now, now, Some(future), Some(future));
        assert_eq!(warnings, [TimeWarning::BeforeNewest { newest: future }]);
    }
}
