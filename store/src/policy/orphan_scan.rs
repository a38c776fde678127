//! When a backup must list `data/` to adopt the packs an unfinished run left unindexed (FORMAT.md
//! section 14, backup step 1), and which sessions need no such scan afterwards.
//!
//! A pack that exists, is not condemned and is in no index object was uploaded by a session that
//! did not finish normally: a session that ends normally writes the index objects of all its
//! packs before its end marker. Such a session is unended in a listing of `sessions/` made
//! before the scan, or ended without a snapshot. So a session that a scan has seen ended, or
//! that this client saw commit, is *settled*: all its packs are indexed or were adopted by that
//! scan (its end marker, hence every upload it made, came before the listing, which came before
//! the scan's listing of `data/`). A new scan is needed only when the listing names a session
//! that is not settled (other than the running backup's own), when the index sync found a
//! damaged index object (the packs it listed now look unindexed), or when there is no listing.
//!
//! Pure: the caller lists the sessions, keeps the settled set in its cache and scans.

use std::collections::BTreeSet;

use crate::format::lifecycle::SessionId;

/// A session as a listing of `sessions/` shows it: its id and whether its end marker exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedSession {
    /// The session id.
    pub session: SessionId,
    /// Whether it had ended (an end marker existed, or this client just wrote one).
    pub ended: bool,
}

/// What the backup knows when it decides.
#[derive(Debug, Clone, Copy)]
pub struct Evidence<'a> {
    /// The listing of `sessions/` made after this backup's own marker, or `None` when it failed.
    pub listing: Option<&'a [ListedSession]>,
    /// The running backup's own session (its packs come later, and it indexes them itself).
    pub own: SessionId,
    /// Whether the index sync found index objects it could not read.
    pub index_damaged: bool,
}

/// Whether `data/` must be listed to adopt orphan packs, given the sessions already `settled`.
pub fn scan_needed(evidence: &Evidence<'_>, settled: &BTreeSet<[u8; 16]>) -> bool {
    let Some(listing) = evidence.listing else {
        return true;
    };
    evidence.index_damaged
        || listing
            .iter()
            .any(|listed| listed.session != evidence.own && !settled.contains(&listed.session.0))
}

/// The settled set after a complete scan made after `listing`: the sessions ended in it (an
/// unended one may still upload).
pub fn settled_after_scan(listing: &[ListedSession]) -> BTreeSet<[u8; 16]> {
    listing
        .iter()
        .filter(|listed| listed.ended)
        .map(|listed| listed.session.0)
        .collect()
}

/// The settled set kept without a scan: the settled sessions still listed (a session whose
/// markers a prune deleted never comes back, ids being random).
pub fn settled_still_listed(
    listing: &[ListedSession],
    settled: &BTreeSet<[u8; 16]>,
) -> BTreeSet<[u8; 16]> {
    listing
        .iter()
        .filter(|listed| settled.contains(&listed.session.0))
        .map(|listed| listed.session.0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(id: u8, ended: bool) -> ListedSession {
        ListedSession {
            session: SessionId([id; 16]),
            ended,
        }
    }

    fn evidence(listing: Option<&[ListedSession]>, index_damaged: bool) -> Evidence<'_> {
        Evidence {
            listing,
            own: SessionId([9; 16]),
            index_damaged,
        }
    }

    #[test]
    fn scans_for_every_session_not_settled_whether_ended_or_not() {
        let settled: BTreeSet<[u8; 16]> = [[1; 16]].into();
        for (listing, expected) in [
            (vec![], false),
            (vec![listed(9, false)], false),
            (vec![listed(1, true), listed(9, false)], false),
            (vec![listed(1, true), listed(2, true)], true),
            (vec![listed(1, true), listed(2, false)], true),
            (vec![listed(3, false), listed(9, false)], true),
        ] {
            assert_eq!(
                scan_needed(&evidence(Some(&listing), false), &settled),
                expected,
                "{listing:?}"
            );
        }
    }

    #[test]
    fn scans_without_a_listing_or_with_a_damaged_index() {
        let settled: BTreeSet<[u8; 16]> = [[1; 16]].into();
        assert!(scan_needed(&evidence(None, false), &settled));
        assert!(scan_needed(
            &evidence(Some(&[listed(1, true)]), true),
            &settled
        ));
    }

    #[test]
    fn a_scan_settles_only_the_sessions_ended_before_it() {
        let listing = [listed(1, true), listed(2, false), listed(3, true)];
        let settled = settled_after_scan(&listing);
        assert_eq!(settled, [[1; 16], [3; 16]].into());
        // The unended one is evidence again next time.
        assert!(scan_needed(&evidence(Some(&listing), false), &settled));
    }

    #[test]
    fn settled_sessions_no_longer_listed_are_forgotten() {
        let settled: BTreeSet<[u8; 16]> = [[1; 16], [2; 16]].into();
        let kept = settled_still_listed(&[listed(2, true), listed(4, true)], &settled);
        assert_eq!(kept, [[2; 16]].into());
    }
}
