//! The repository side of the garbage-collection protocol (FORMAT.md section 21): backup
//! sessions, the prune records every client honours, the rescue a backup performs when a prune
//! condemned packs it relies on, the prune lease, and append-only mode.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use rayon::prelude::*;

use crate::backend::{BackendError, PutMode};
use crate::crypto::id::Id;
use crate::crypto::seal;
use crate::error::{Error, Result};
use crate::format::lifecycle::{
    self, InflightList, LEASE_NAME, ProcessPlace, PruneLease, PruneRecord, SessionEnd, SessionId,
    SessionMarker,
};
pub use crate::format::lifecycle::{APPEND_ONLY_NAME, PruneState};
use crate::repo::repository::{Repository, pack_name};
use crate::repo::saver::BlobSaver;

/// What is known about one backup session from the `sessions/` listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStatus {
    /// Its id.
    pub session: SessionId,
    /// The start marker, if it exists and opens.
    pub marker: Option<SessionMarker>,
    /// Whether an end marker exists.
    pub ended: bool,
}

/// A running backup's registration: created before the backup reads the prune records, ended
/// (committed or not) when it finishes. Dropping it unended writes an end marker without a
/// snapshot, best effort.
#[derive(Debug)]
pub struct BackupSession<'repo> {
    repository: &'repo Repository,
    /// The session id.
    pub id: SessionId,
    /// The newest prune generation whose record this session has taken into account.
    pub generation_seen: u64,
    ended: bool,
}

/// What a rescue did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RescueReport {
    /// Condemned packs the backup relied on.
    pub packs_checked: usize,
    /// Blobs copied into new packs.
    pub blobs_copied: u64,
    /// Bytes of packs and index objects written.
    pub bytes_written: u64,
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}

/// Whether the process recorded in a prune lease is proven gone: the liveness rule, which the
/// use cases supply (`ops::liveness`).
pub type HolderGone<'a> = &'a dyn Fn(&ProcessPlace) -> bool;

/// This machine's name, the default snapshot host label (never used to decide liveness).
pub fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map_or_else(|_| "localhost".into(), |name| name.trim().to_owned())
}

impl Repository {
    /// Refuses when this client or the repository is append-only.
    ///
    /// # Errors
    /// [`Error::AppendOnly`].
    pub fn ensure_may_delete(&self, command: &'static str) -> Result<()> {
        if self.client_append_only() {
            return Err(Error::AppendOnly(command, "client"));
        }
        if self.repository_append_only() {
            return Err(Error::AppendOnly(command, "repository"));
        }
        Ok(())
    }

    /// Marks the repository append-only: every client then refuses to delete anything. Only
    /// someone allowed to delete the `append-only` object can undo it.
    ///
    /// # Errors
    /// Backend failures.
    pub fn make_append_only(&self) -> Result<()> {
        match self.backend().put(
            APPEND_ONLY_NAME,
            Bytes::from_static(b"cairn: this repository is append-only\n"),
            PutMode::Create,
        ) {
            Ok(()) | Err(BackendError::AlreadyExists { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Reads every prune record and in-flight list (records are cached locally: they never
    /// change).
    ///
    /// # Errors
    /// Backend failures, or a damaged record (a record that cannot be read could condemn packs
    /// this client would otherwise use, so nothing proceeds without it).
    pub fn load_prune_state(&self) -> Result<PruneState> {
        let listing = self.backend().list("prune")?;
        let mut names: Vec<(u64, bool, String)> = listing
            .into_iter()
            .filter_map(|info| {
                lifecycle::parse_prune_name(&info.name)
                    .map(|(generation, inflight)| (generation, inflight, info.name))
            })
            .collect();
        names.sort();
        let loaded: Vec<Result<(u64, bool, Vec<u8>)>> = names
            .par_iter()
            .map(|(generation, inflight, name)| {
                if let Some(bytes) = self.cache().cached_snapshot(name)? {
                    return Ok((*generation, *inflight, bytes));
                }
                let bytes = self.backend().get(name)?.to_vec();
                Ok((*generation, *inflight, bytes))
            })
            .collect();
        let mut state = PruneState::default();
        for (outcome, (_, _, name)) in loaded.into_iter().zip(&names) {
            let (generation, inflight, bytes) = outcome?;
            let key = &self.keys().data_key;
            if inflight {
                let list = InflightList::decode(key, &bytes)
                    .map_err(|error| Error::from_object(name, error))?;
                if list.generation != generation {
                    return Err(Error::Damaged {
                        object: name.clone(),
                        reason: "generation does not match its name".into(),
                    });
                }
                state.inflight.insert(generation, list);
            } else {
                let record = PruneRecord::decode(key, &bytes)
                    .map_err(|error| Error::from_object(name, error))?;
                if record.generation != generation {
                    return Err(Error::Damaged {
                        object: name.clone(),
                        reason: "generation does not match its name".into(),
                    });
                }
                state.latest_generation = state.latest_generation.max(generation);
                state.records.insert(generation, record);
            }
            self.cache().cache_snapshot(name, &bytes)?;
        }
        for record in state.records.values() {
            for id in &record.resurrected {
                state.condemned.remove(id);
            }
            state.condemned.extend(record.condemned.iter().copied());
        }
        Ok(state)
    }

    /// Every backup session in the repository.
    ///
    /// # Errors
    /// Backend failures.
    pub fn list_sessions(&self) -> Result<BTreeMap<SessionId, SessionStatus>> {
        self.list_sessions_but(None)
    }

    /// [`Repository::list_sessions`] that does not read the start marker of `own` (the
    /// caller's own running session: its status shows no marker).
    ///
    /// # Errors
    /// Backend failures.
    pub fn list_sessions_but(
        &self,
        own: Option<SessionId>,
    ) -> Result<BTreeMap<SessionId, SessionStatus>> {
        let mut sessions: BTreeMap<SessionId, SessionStatus> = BTreeMap::new();
        let mut starts = Vec::new();
        for info in self.backend().list("sessions")? {
            let Some((session, end)) = lifecycle::parse_session_name(&info.name) else {
                continue;
            };
            let status = sessions.entry(session).or_insert(SessionStatus {
                session,
                marker: None,
                ended: false,
            });
            if end {
                status.ended = true;
            } else {
                starts.push((session, info.name));
            }
        }
        let markers: Vec<(SessionId, Option<SessionMarker>)> = starts
            .par_iter()
            .filter(|(session, _)| !sessions[session].ended && Some(*session) != own)
            .map(|(session, name)| {
                let marker =
                    self.backend().get(name).ok().and_then(|bytes| {
                        SessionMarker::decode(&self.keys().data_key, &bytes).ok()
                    });
                (*session, marker)
            })
            .collect();
        for (session, marker) in markers {
            if let Some(status) = sessions.get_mut(&session) {
                status.marker = marker;
            }
        }
        Ok(sessions)
    }

    /// Writes the end marker of `session` (create-only; an existing one is kept).
    ///
    /// # Errors
    /// Backend failures.
    pub fn end_session(
        &self,
        session: SessionId,
        snapshot: Option<Id>,
        ended_by: u8,
    ) -> Result<()> {
        let bytes = SessionEnd {
            session,
            snapshot,
            ended_by,
        }
        .encode(&self.keys().data_key, seal::random_nonce());
        match self.backend().put(
            &lifecycle::session_end_name(&session),
            Bytes::from(bytes),
            PutMode::Create,
        ) {
            Ok(()) | Err(BackendError::AlreadyExists { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Registers a backup session: lists it in this machine's local record, writes its start
    /// marker (with where this process runs), then loads the prune records (in that order,
    /// which the protocol relies on) and returns them for the index sync.
    ///
    /// # Errors
    /// Backend or cache failures.
    pub fn begin_session(&self, host: &str) -> Result<(BackupSession<'_>, PruneState)> {
        self.begin_session_at(host, crate::repo::place::this_process())
    }

    /// [`Repository::begin_session`] with the place recorded in the marker given: tests use it
    /// to pose as another machine, boot or PID namespace.
    ///
    /// # Errors
    /// Backend or cache failures.
    #[doc(hidden)]
    pub fn begin_session_at(
        &self,
        host: &str,
        place: ProcessPlace,
    ) -> Result<(BackupSession<'_>, PruneState)> {
        let mut session = self.register_session(host, place)?;
        let state = self.load_prune_state()?;
        session.generation_seen = state.latest_generation;
        Ok((session, state))
    }

    /// [`Repository::begin_session`] that also runs `alongside` (given the new session's id)
    /// while the prune records are read: requests that need only the marker to be written
    /// first, such as listings for the index sync, go out together with the prune listing.
    ///
    /// # Errors
    /// Backend or cache failures registering the session or reading the prune records.
    pub fn begin_session_with<T: Send>(
        &self,
        host: &str,
        alongside: impl FnOnce(SessionId) -> T + Send,
    ) -> Result<(BackupSession<'_>, PruneState, T)> {
        let mut session = self.register_session(host, crate::repo::place::this_process())?;
        let id = session.id;
        let (state, other) = std::thread::scope(|scope| {
            let other = scope.spawn(move || alongside(id));
            let state = self.load_prune_state();
            (
                state,
                other
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            )
        });
        let state = state?;
        session.generation_seen = state.latest_generation;
        Ok((session, state, other))
    }

    /// Lists a new session in this machine's local record and writes its start marker: after
    /// this, and only after, the prune records may be read.
    fn register_session(&self, host: &str, place: ProcessPlace) -> Result<BackupSession<'_>> {
        let mut id = [0u8; lifecycle::SESSION_ID_LEN];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
        let id = SessionId(id);
        // Best effort: without its line the session is only never proven gone after a reboot.
        let _ = self.session_record().add(&place.machine_id, &id);
        let marker = SessionMarker {
            session: id,
            host: host.to_owned(),
            place,
            started_unix: now_unix(),
        };
        self.backend().put(
            &lifecycle::session_name(&id),
            Bytes::from(marker.encode(&self.keys().data_key, seal::random_nonce())),
            PutMode::Create,
        )?;
        Ok(BackupSession {
            repository: self,
            id,
            generation_seen: 0,
            ended: false,
        })
    }

    /// Runs `work` inside a backup session registered for `host` (FORMAT.md section 21.2):
    /// the marker is written and the prune records read before `work` starts, and `work` ends
    /// the session itself when it commits. When `work` fails, the session is ended without a
    /// snapshot, or left unended when the store is unreachable (writing the end marker would
    /// only add another round of retries; an unended session merely delays deletions).
    ///
    /// # Errors
    /// Failures registering the session, or what `work` fails with.
    pub fn with_session<T>(
        &self,
        host: &str,
        work: impl FnOnce(&mut BackupSession<'_>, &PruneState) -> Result<T>,
    ) -> Result<T> {
        let (mut session, state) = self.begin_session(host)?;
        work(&mut session, &state).inspect_err(|error| session.abandon(error))
    }

    /// Makes sure every blob the backup relies on survives prunes that ran since the session
    /// last looked: for each pack it relied on that a newer record condemned, every blob of that
    /// pack not held by a live pack is copied into a new pack (the condemned pack is still
    /// there: it is deleted only after this session ends). Returns what was done.
    ///
    /// # Errors
    /// Backend or cache failures; a condemned pack that is already gone means the protocol was
    /// broken (for example by a forced session expiry) and is reported as damage.
    pub fn rescue_relied_packs(
        &self,
        session: &mut BackupSession<'_>,
        relied: &mut HashSet<Id>,
    ) -> Result<RescueReport> {
        let state = self.load_prune_state()?;
        let newly = state.condemned_after(session.generation_seen);
        session.generation_seen = state.latest_generation;
        let hits: Vec<Id> = relied.intersection(&newly).copied().collect();
        let mut report = RescueReport::default();
        if hits.is_empty() {
            return Ok(report);
        }
        self.sync_index_with(&state)?;
        report.packs_checked = hits.len();
        let mut saver = BlobSaver::new(self);
        for pack_id in hits {
            let name = pack_name(&pack_id);
            let size = self.backend().head(&name)?.ok_or_else(|| Error::Damaged {
                object: name.clone(),
                reason: "a pack this backup relies on was deleted by a concurrent prune".into(),
            })?;
            let pack = self.read_pack_trailer(&crate::backend::ObjectInfo {
                name: name.clone(),
                size,
                modified: 0,
            })?;
            let wanted: Vec<_> = pack
                .entries
                .iter()
                .filter(|entry| {
                    self.locate_blob(&entry.id)
                        .ok()
                        .flatten()
                        .is_none_or(|location| state.condemned.contains(&location.pack_id))
                })
                .copied()
                .collect();
            if wanted.is_empty() {
                continue;
            }
            report.blobs_copied += wanted.len() as u64;
            let locations = wanted
                .into_iter()
                .map(|entry| crate::index::cache::BlobLocation { pack_id, entry })
                .collect();
            crate::repo::fetch::for_each_sealed_blob(self, locations, |blob| {
                saver.save_sealed(vec![blob])
            })?;
        }
        let (stats, new_packs) = saver.finish_relied()?;
        report.bytes_written = stats.bytes_added;
        relied.extend(new_packs);
        Ok(report)
    }

    /// Tells the cache which packs are condemned: a cache built before a newer record is
    /// dropped and rebuilt without them, so no lookup ever answers with a condemned pack.
    ///
    /// # Errors
    /// Cache failures.
    pub fn apply_prune_state(&self, state: &PruneState) -> Result<()> {
        self.set_condemned(state.condemned.clone());
        if self.cache().prune_generation()? != state.latest_generation {
            self.cache().clear()?;
            self.cache().set_prune_generation(state.latest_generation)?;
        }
        Ok(())
    }

    /// Takes the prune lease (FORMAT.md section 21.5): created only if absent; an existing lease
    /// is taken over when `holder_gone` proves its process gone, or it has not been renewed for
    /// its TTL by the store's clock.
    ///
    /// # Errors
    /// [`Error::PruneLeaseHeld`] when another prune holds it, or backend failures.
    pub fn acquire_prune_lease(
        &self,
        ttl: Duration,
        holder_gone: HolderGone<'_>,
    ) -> Result<PruneLease> {
        let lease = PruneLease {
            token: rand::random(),
            host: this_host(),
            place: crate::repo::place::this_process(),
            started_unix: now_unix(),
            ttl_seconds: ttl.as_secs().max(1),
        };
        let bytes = Bytes::from(lease.encode(&self.keys().data_key, seal::random_nonce()));
        for _ in 0..2 {
            match self
                .backend()
                .put(LEASE_NAME, bytes.clone(), PutMode::Create)
            {
                Ok(()) => return Ok(lease),
                Err(BackendError::AlreadyExists { .. }) => {}
                Err(error) => return Err(error.into()),
            }
            if !self.lease_is_stale(holder_gone)? {
                continue;
            }
            self.backend().delete(LEASE_NAME)?;
        }
        let description = self
            .backend()
            .get(LEASE_NAME)
            .ok()
            .and_then(|bytes| PruneLease::decode(&self.keys().data_key, &bytes).ok())
            .map_or_else(
                || "lease unreadable".to_owned(),
                |holder| {
                    format!(
                        "host {}, machine {}, pid {}",
                        holder.host,
                        holder.place.short_machine(),
                        holder.place.pid
                    )
                },
            );
        Err(Error::PruneLeaseHeld(description))
    }

    /// Whether the current lease may be taken over: its holder's process is proven gone, or it
    /// has not been renewed for its TTL (one hour if it cannot be read) by the store's clock. A
    /// lease that vanished meanwhile is not stale (the create is retried).
    fn lease_is_stale(&self, holder_gone: HolderGone<'_>) -> Result<bool> {
        let bytes = match self.backend().get(LEASE_NAME) {
            Ok(bytes) => bytes,
            Err(BackendError::NotFound { .. }) => return Ok(false),
            Err(error) => return Err(error.into()),
        };
        let holder = PruneLease::decode(&self.keys().data_key, &bytes).ok();
        if let Some(holder) = &holder
            && holder_gone(&holder.place)
        {
            return Ok(true);
        }
        let ttl = holder.map_or(3600, |holder| holder.ttl_seconds);
        Ok(self
            .lease_age_seconds()?
            .is_some_and(|age| u64::try_from(age).unwrap_or(0) > ttl))
    }

    /// How long ago the lease was last written, by the store's own clock: a probe object is
    /// written next to it and the two modification times compared, so clients' clocks never
    /// matter.
    fn lease_age_seconds(&self) -> Result<Option<i64>> {
        let probe = format!("locks/clock-{}", hex::encode(rand::random::<[u8; 8]>()));
        self.backend()
            .put(&probe, Bytes::from_static(b"clock"), PutMode::Overwrite)?;
        let listing = self.backend().list("locks");
        self.backend().delete(&probe)?;
        let listing = listing?;
        let now = listing.iter().find(|info| info.name == probe);
        let lease = listing.iter().find(|info| info.name == LEASE_NAME);
        Ok(match (now, lease) {
            (Some(now), Some(lease)) if now.modified > 0 && lease.modified > 0 => {
                Some(now.modified - lease.modified)
            }
            _ => None,
        })
    }

    /// Runs `work` holding the prune lease: takes it, renews it every third of `ttl` on a
    /// helper thread while `work` runs, and gives it back afterwards.
    ///
    /// # Errors
    /// [`Error::PruneLeaseHeld`], or what `work` or the release fail with.
    pub fn with_prune_lease<T>(
        &self,
        ttl: Duration,
        holder_gone: HolderGone<'_>,
        work: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let lease = self.acquire_prune_lease(ttl, holder_gone)?;
        let (stop_sender, stop_receiver) = std::sync::mpsc::channel::<()>();
        let lease_ref = &lease;
        let outcome = std::thread::scope(|scope| {
            scope.spawn(move || {
                let period = (ttl / 3).max(Duration::from_secs(1));
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stop_receiver.recv_timeout(period)
                {
                    let _ = self.renew_prune_lease(lease_ref);
                }
            });
            let outcome = work();
            let _ = stop_sender.send(());
            outcome
        });
        let released = self.release_prune_lease(&lease);
        let value = outcome?;
        released?;
        Ok(value)
    }

    /// Renews the lease (rewrites it, which moves its modification time), if it is still ours.
    ///
    /// # Errors
    /// [`Error::PruneLeaseHeld`] when another prune took it over, or backend failures.
    pub fn renew_prune_lease(&self, lease: &PruneLease) -> Result<()> {
        let current = self.backend().get(LEASE_NAME)?;
        let holder = PruneLease::decode(&self.keys().data_key, &current)
            .map_err(|error| Error::from_object(LEASE_NAME, error))?;
        if holder.token != lease.token {
            return Err(Error::PruneLeaseHeld(format!(
                "taken over by host {}, pid {}",
                holder.host, holder.place.pid
            )));
        }
        self.backend().put(
            LEASE_NAME,
            Bytes::from(lease.encode(&self.keys().data_key, seal::random_nonce())),
            PutMode::Overwrite,
        )?;
        Ok(())
    }

    /// Gives the lease back, if it is still ours.
    ///
    /// # Errors
    /// Backend failures.
    pub fn release_prune_lease(&self, lease: &PruneLease) -> Result<()> {
        let Ok(current) = self.backend().get(LEASE_NAME) else {
            return Ok(());
        };
        if PruneLease::decode(&self.keys().data_key, &current)
            .is_ok_and(|holder| holder.token == lease.token)
        {
            self.backend().delete(LEASE_NAME)?;
        }
        Ok(())
    }
}

impl BackupSession<'_> {
    /// Ends the session, recording the snapshot it committed (if any).
    ///
    /// # Errors
    /// Backend failures.
    pub fn end(&mut self, snapshot: Option<Id>) -> Result<()> {
        self.ended = true;
        self.repository.end_session(self.id, snapshot, 0)
    }

    /// Ends the session of a run that failed with `error`: without an end marker when the
    /// store is unreachable ([`ErrorKind::Transient`](crate::error::ErrorKind::Transient): see
    /// [`BackupSession::leave_unended`]), else with one that records no snapshot.
    pub fn abandon(&mut self, error: &Error) {
        if error.kind() == crate::error::ErrorKind::Transient {
            self.leave_unended();
        } else {
            let _ = self.end(None);
        }
    }

    /// Leaves the session without an end marker (when the store is unreachable, trying to
    /// write one would only add another round of retries). An unended session is safe: it only
    /// delays deletions until a prune sees its process gone or an operator ends it.
    pub fn leave_unended(&mut self) {
        self.ended = true;
    }
}

impl Drop for BackupSession<'_> {
    fn drop(&mut self) {
        if !self.ended {
            let _ = self.repository.end_session(self.id, None, 0);
        }
    }
}
