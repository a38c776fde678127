//! Backup sessions as this machine sees them: which recorded processes it can prove gone (the
//! rule of `policy::liveness`, fed with what `repo::place` reads), ending this machine's own
//! provably dead sessions (FORMAT.md section 21.3 step 1), and describing the sessions that are
//! still unended (for prune's report, `status` and metrics).
//!
//! Never ends a session on anything short of proof: the host label plays no part.

use std::collections::{BTreeMap, HashSet};

use crate::error::Result;
use crate::format::lifecycle::{ProcessPlace, SessionId, SessionMarker};
use crate::policy::liveness::{self, Liveness, LocalPlace, PidProbe, UnprovenBecause};
use crate::repo::lifecycle::SessionStatus;
use crate::repo::place;
use crate::repo::repository::Repository;

/// What this process knows to judge recorded processes: where it runs, and which sessions this
/// machine's local record says it started.
#[derive(Debug, Clone)]
pub struct Judge {
    local: LocalPlace,
    started_here: HashSet<SessionId>,
}

impl Judge {
    /// The judge of this process, with the local record of `repository`.
    pub fn here(repository: &Repository) -> Self {
        let local = LocalPlace::of(&place::this_process());
        let started_here = repository.session_record().sessions_of(&local.machine_id);
        Self {
            local,
            started_here,
        }
    }

    /// A judge standing at `local` with `started_here` as its record (tests and simulations).
    pub fn at(local: LocalPlace, started_here: HashSet<SessionId>) -> Self {
        Self {
            local,
            started_here,
        }
    }

    /// The verdict on a session's recorded process (the pid is probed only when it matters).
    pub fn session(&self, session: &SessionId, marker: &SessionMarker) -> Liveness {
        liveness::judge(
            &marker.place,
            &self.local,
            self.started_here.contains(session),
            probe_pid,
        )
    }

    /// The verdict on a prune lease holder (leases are not in the local record).
    pub fn lease_holder(&self, holder: &ProcessPlace) -> Liveness {
        liveness::judge(holder, &self.local, false, probe_pid)
    }
}

/// What this machine's kernel says about `pid`.
pub fn probe_pid(pid: u32) -> PidProbe {
    match place::pid_exists(pid) {
        Some(false) => PidProbe::Absent,
        // Read after the existence check: a process that exits in between reads as unreadable,
        // which proves nothing.
        Some(true) => place::start_ticks(pid).map_or(PidProbe::Unreadable, |start_ticks| {
            PidProbe::Running { start_ticks }
        }),
        None => PidProbe::Unreadable,
    }
}

/// Whether the process holding a prune lease is proven gone, judged from here: what
/// [`Repository::with_prune_lease`] needs.
pub fn lease_holder_gone(holder: &ProcessPlace) -> bool {
    Judge::at(LocalPlace::of(&place::this_process()), HashSet::new())
        .lease_holder(holder)
        .is_gone()
}

/// Ends (`ended_by` = 1) every unended session in `sessions` whose process `judge` proves gone,
/// marks them ended in the map, and drops from the local record the sessions that no longer
/// need it (ended or no longer listed). With `write` false nothing is written: the map shows
/// what a real run would end. Returns the sessions ended.
///
/// # Errors
/// Backend failures writing an end marker.
pub fn end_dead_sessions(
    repository: &Repository,
    judge: &Judge,
    sessions: &mut BTreeMap<SessionId, SessionStatus>,
    write: bool,
) -> Result<Vec<SessionId>> {
    let mut ended = Vec::new();
    for status in sessions.values_mut() {
        let gone = !status.ended
            && status
                .marker
                .as_ref()
                .is_some_and(|marker| judge.session(&status.session, marker).is_gone());
        if gone {
            if write {
                repository.end_session(status.session, None, 1)?;
            }
            status.ended = true;
            ended.push(status.session);
        }
    }
    if write {
        // Best effort: a record that cannot be rewritten only keeps a few stale lines.
        let _ = repository
            .session_record()
            .retain(|session| sessions.get(session).is_some_and(|status| !status.ended));
    }
    Ok(ended)
}

/// Lists the sessions and ends this machine's provably dead ones, best effort (what backup and
/// check do at start: a store that refuses the end marker, for example with read-only
/// credentials, does not stop them). Returns how many were ended.
pub fn end_dead_sessions_best_effort(repository: &Repository) -> usize {
    let Ok(mut sessions) = repository.list_sessions() else {
        return 0;
    };
    let judge = Judge::here(repository);
    end_dead_sessions(repository, &judge, &mut sessions, true).map_or(0, |ended| ended.len())
}

/// What a running backup does with the sessions at its start (after writing its own marker
/// `own`): lists them and ends this machine's provably dead ones, best effort. Returns the
/// listing with those counted as ended, or `None` when the listing failed.
pub fn list_ending_dead_sessions(
    repository: &Repository,
    own: SessionId,
) -> Option<BTreeMap<SessionId, SessionStatus>> {
    let mut sessions = repository.list_sessions_but(Some(own)).ok()?;
    let judge = Judge::here(repository);
    // A refused end marker (read-only credentials) leaves that session unended in the map,
    // which is what the store shows.
    let _ = end_dead_sessions(repository, &judge, &mut sessions, true);
    Some(sessions)
}

/// Why an unended session is waiting, in words for people.
pub fn waiting_reason(verdict: Liveness, marker: Option<&SessionMarker>) -> &'static str {
    match (marker, verdict) {
        (None, _) => "its start marker cannot be read",
        (Some(marker), _) if !marker.place.is_recorded() => {
            "written by an older cairn (format 1): never proven gone"
        }
        (Some(_), Liveness::Unproven(UnprovenBecause::Running)) => "its process is running",
        (Some(_), Liveness::Unproven(UnprovenBecause::OtherNamespace)) => {
            "runs in another PID namespace (container) on this machine"
        }
        (Some(_), Liveness::Unproven(UnprovenBecause::ElsewhereOrUnknownBoot)) => {
            "runs on another machine (or an earlier boot not recorded here)"
        }
        (Some(_), Liveness::Unproven(UnprovenBecause::Unrecorded)) => {
            "where it runs is not recorded"
        }
        (Some(_), Liveness::Gone(_)) => "its process is gone",
    }
}

/// An unended session, described for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingSession {
    /// Its id (32 hex digits).
    pub session: String,
    /// The snapshot host label, when its marker could be read.
    pub host: Option<String>,
    /// The first 8 hex digits of its machine id (`?` when unknown or not recorded).
    pub machine: String,
    /// Its process id, when its marker could be read.
    pub pid: Option<u32>,
    /// When it started (its client's clock), when its marker could be read.
    pub started_unix: Option<i64>,
    /// Why it is not proven gone.
    pub reason: &'static str,
    /// Whether the marker is of the old format (version 1): only an operator ends it.
    pub old_format: bool,
}

/// Describes an unended session as seen by `judge`.
pub fn describe(judge: &Judge, status: &SessionStatus) -> WaitingSession {
    let marker = status.marker.as_ref();
    let verdict = marker.map_or(Liveness::Unproven(UnprovenBecause::Unrecorded), |marker| {
        judge.session(&status.session, marker)
    });
    WaitingSession {
        session: status.session.to_hex(),
        host: marker.map(|marker| marker.host.clone()),
        machine: marker.map_or_else(|| "?".into(), |marker| marker.place.short_machine()),
        pid: marker.map(|marker| marker.place.pid),
        started_unix: marker.map(|marker| marker.started_unix),
        reason: waiting_reason(verdict, marker),
        old_format: marker.is_some_and(|marker| !marker.place.is_recorded()),
    }
}

/// Unended sessions older than `max_age_seconds` at `now_unix` (by their client's start time;
/// a session whose marker cannot be read counts as stale, since its age is unknown), described.
pub fn stale_sessions(
    judge: &Judge,
    sessions: &BTreeMap<SessionId, SessionStatus>,
    now_unix: i64,
    max_age_seconds: u64,
) -> Vec<WaitingSession> {
    let max_age = i64::try_from(max_age_seconds).unwrap_or(i64::MAX);
    sessions
        .values()
        .filter(|status| !status.ended)
        .filter(|status| {
            status
                .marker
                .as_ref()
                .is_none_or(|marker| now_unix.saturating_sub(marker.started_unix) > max_age)
        })
        .map(|status| describe(judge, status))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(id: u8, started_unix: i64, ended: bool) -> SessionStatus {
        SessionStatus {
            session: SessionId([id; 16]),
            marker: Some(SessionMarker {
                session: SessionId([id; 16]),
                host: "h".into(),
                place: ProcessPlace::pid_only(1),
                started_unix,
            }),
            ended,
        }
    }

    #[test]
    fn stale_means_unended_and_older_than_the_age() {
        let judge = Judge::at(LocalPlace::default(), HashSet::new());
        let mut sessions = BTreeMap::new();
        for (id, started, ended) in [(1, 0, false), (2, 950, false), (3, 0, true)] {
            sessions.insert(SessionId([id; 16]), status(id, started, ended));
        }
        sessions.insert(
            SessionId([4; 16]),
            SessionStatus {
                session: SessionId([4; 16]),
                marker: None,
                ended: false,
            },
        );
        let stale = stale_sessions(&judge, &sessions, 1000, 100);
        let ids: Vec<&str> = stale.iter().map(|session| &session.session[..2]).collect();
        assert_eq!(ids, ["01", "04"]);
        assert!(stale[0].old_format);
        assert_eq!(stale[1].reason, "its start marker cannot be read");
        assert!(stale_sessions(&judge, &sessions, 1000, 2000).len() == 1);
    }
}
