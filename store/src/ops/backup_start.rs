//! How a backup starts (FORMAT.md section 14, backup step 1, and section 21.2 step 1) with as few
//! round trips as the protocol allows: its session marker first; then, together, the prune
//! records, the listing of `sessions/` (ending this machine's provably dead sessions), the
//! listing of `index/` and what the caller needs besides (its parent snapshot); then the index
//! sync; then a listing of `data/` to adopt orphan packs only when `policy::orphan_scan` finds
//! evidence that an unfinished run may have left some. Also records, once the backup committed,
//! that its own session left nothing unindexed.
//!
//! Writes nothing but the session marker, end markers of dead sessions and the index object of
//! adopted packs; never prints.

use std::collections::BTreeSet;

use crate::backend::ObjectInfo;
use crate::error::Result;
use crate::format::lifecycle::PruneState;
use crate::policy::orphan_scan::{self, Evidence, ListedSession};
use crate::repo::lifecycle::BackupSession;
use crate::repo::repository::{INDEX_PREFIX, Repository};

/// A backup's session, registered, with the repository state it starts from.
#[derive(Debug)]
pub struct BackupStart<'repo, T> {
    /// The running session (the caller ends it).
    pub session: BackupSession<'repo>,
    /// The prune records read after the marker was written.
    pub prune_state: PruneState,
    /// Orphan packs adopted (0 when no scan was needed).
    pub recovered_packs: usize,
    /// Whether `data/` was listed.
    pub scanned: bool,
    /// What the caller's `alongside` returned.
    pub alongside: T,
    /// The settled sessions as of this start (see [`BackupStart::settle`]).
    settled: BTreeSet<[u8; 16]>,
}

/// Registers a backup session for `host` and brings the cache up to date, running `alongside`
/// together with the listings that follow the marker. On any failure after the marker was
/// written, the session is abandoned (FORMAT.md section 21.2 step 5).
///
/// # Errors
/// Backend or cache failures, or what `alongside` fails with.
pub fn start_backup<'repo, T: Send>(
    repository: &'repo Repository,
    host: &str,
    alongside: impl FnOnce() -> Result<T> + Send,
) -> Result<BackupStart<'repo, T>> {
    let (mut session, prune_state, (sessions, index_listing, alongside)) = repository
        .begin_session_with(host, |own| {
            std::thread::scope(|scope| {
                let sessions = scope.spawn(move || {
                    crate::ops::sessions::list_ending_dead_sessions(repository, own)
                });
                let index_listing = scope.spawn(|| repository.backend().list(INDEX_PREFIX));
                let alongside = alongside();
                (
                    join(sessions),
                    join(index_listing).map_err(crate::error::Error::from),
                    alongside,
                )
            })
        })?;
    let listing: Option<Vec<ListedSession>> = sessions.map(|sessions| {
        sessions
            .values()
            .map(|status| ListedSession {
                session: status.session,
                ended: status.ended,
            })
            .collect()
    });
    let outcome = alongside.and_then(|alongside| {
        let index_listing: Vec<ObjectInfo> = index_listing?;
        let report = repository.sync_index_listed(&prune_state, &index_listing)?;
        let evidence = Evidence {
            listing: listing.as_deref(),
            own: session.id,
            index_damaged: !report.damaged.is_empty(),
        };
        let (recovered_packs, scanned, settled) = adopt_orphans_on_evidence(repository, &evidence)?;
        Ok((alongside, recovered_packs, scanned, settled))
    });
    match outcome {
        Ok((alongside, recovered_packs, scanned, settled)) => Ok(BackupStart {
            session,
            prune_state,
            recovered_packs,
            scanned,
            alongside,
            settled,
        }),
        Err(error) => {
            session.abandon(&error);
            Err(error)
        }
    }
}

impl<T> BackupStart<'_, T> {
    /// Records that this backup's own session is settled: call it once its snapshot is
    /// committed (every pack it wrote is then indexed). Best effort: a cache that cannot
    /// record it only makes the next backup list `data/` once more.
    pub fn settle(&self, repository: &Repository) {
        let mut settled = self.settled.clone();
        settled.insert(self.session.id.0);
        let _ = repository.cache().set_settled_sessions(&settled);
    }
}

/// Lists `data/` and adopts orphan packs when `evidence` calls for it, and keeps the settled
/// set up to date. Returns the packs adopted, whether it scanned, and the settled set now.
fn adopt_orphans_on_evidence(
    repository: &Repository,
    evidence: &Evidence<'_>,
) -> Result<(usize, bool, BTreeSet<[u8; 16]>)> {
    // A cache that cannot say what is settled settles nothing: the scan runs.
    let settled = repository.cache().settled_sessions().unwrap_or_default();
    if !orphan_scan::scan_needed(evidence, &settled) {
        let kept = evidence.listing.map_or_else(BTreeSet::new, |listing| {
            orphan_scan::settled_still_listed(listing, &settled)
        });
        if kept != settled {
            let _ = repository.cache().set_settled_sessions(&kept);
        }
        return Ok((0, false, kept));
    }
    let scan = repository.scan_orphan_packs()?;
    let now_settled = match evidence.listing {
        Some(listing) if scan.complete => orphan_scan::settled_after_scan(listing),
        _ => BTreeSet::new(),
    };
    let _ = repository.cache().set_settled_sessions(&now_settled);
    Ok((scan.recovered, true, now_settled))
}

fn join<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
