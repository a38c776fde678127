//! The `forget` use case: decide with a [`RetentionPolicy`] which snapshots go
//! ([`plan_forget`], no deletion), then delete those snapshot objects and their cached copies
//! ([`Repository::forget_snapshots`]). Deletes nothing else: packs and index objects stay until
//! `prune`, so a forgotten snapshot's data is still in the repository. Never prints.

use jiff::tz::TimeZone;
use rayon::prelude::*;

use crate::crypto::id::Id;
use crate::error::{Error, ErrorKind, Result};
use crate::format::snapshot::Snapshot;
use crate::policy::retention::{
    self, GroupBy, GroupDecisions, RetentionError, RetentionPolicy, SnapshotInfo,
};
use crate::policy::select::Selection;
use crate::repo::repository::{Repository, SNAPSHOTS_PREFIX, id_from_name, object_name};

/// What `forget` applies, and to which snapshots.
#[derive(Debug, Clone)]
pub struct ForgetOptions {
    /// The rules that keep snapshots; must not be empty.
    pub policy: RetentionPolicy,
    /// Only the snapshots of this selection are considered (the others are left alone).
    pub filter: Selection,
    /// How snapshots are split into groups that the policy treats separately.
    pub group_by: GroupBy,
    /// The calendar that hourly, daily, weekly, monthly and yearly buckets are taken in.
    pub time_zone: TimeZone,
    /// The caller's clock: snapshots dated after it are kept and do not count for the other
    /// rules ([`RetentionPolicy::decide_groups_at`]); `None` puts no snapshot in the future.
    pub now: Option<jiff::Timestamp>,
}

/// The decisions of a `forget` run, before anything is deleted.
#[derive(Debug)]
pub struct ForgetPlan {
    /// Each group's decisions, newest snapshot first.
    pub groups: Vec<GroupDecisions>,
    /// Snapshot objects that could not be read or verified: the policy does not see them, and
    /// they are neither kept nor removed (`check` reports them).
    pub unreadable: Vec<Error>,
}

impl ForgetPlan {
    /// The snapshots the policy removes, group by group, newest first within a group.
    pub fn removals(&self) -> Vec<Id> {
        self.groups
            .iter()
            .flat_map(|group| &group.decisions)
            .filter(|decision| !decision.keep())
            .map(|decision| decision.snapshot.id)
            .collect()
    }

    /// Refuses a plan that removes every snapshot of a group: callers apply it unless the user
    /// asked for exactly that (`--allow-empty-group`).
    ///
    /// # Errors
    /// [`RetentionError::EmptiesGroup`] naming the first such group.
    pub fn ensure_no_group_emptied(&self) -> Result<()> {
        Ok(retention::ensure_no_group_emptied(&self.groups)?)
    }

    /// How many snapshots the policy keeps.
    pub fn kept_count(&self) -> usize {
        self.groups
            .iter()
            .flat_map(|group| &group.decisions)
            .filter(|decision| decision.keep())
            .count()
    }
}

/// What deleting snapshot objects did.
#[derive(Debug, Default)]
pub struct ForgetOutcome {
    /// Snapshots whose objects were deleted.
    pub removed: Vec<Id>,
    /// Snapshots whose deletion failed, with the error (the others were still deleted).
    pub failed: Vec<(Id, Error)>,
}

/// Lists the snapshots and decides, group by group, which ones `options.policy` keeps. Deletes
/// nothing.
///
/// Damaged snapshot objects are left out of the decision and returned in
/// [`ForgetPlan::unreadable`]; leaving snapshots out can only make the policy keep more of the
/// others, never fewer. A snapshot that could not be read because the store failed stops the
/// plan instead, so that a flaky network does not change what is kept.
///
/// # Errors
/// [`Error::Retention`] for an empty policy (checked before any request), backend failures
/// while listing or reading snapshots.
pub fn plan_forget(repository: &Repository, options: &ForgetOptions) -> Result<ForgetPlan> {
    if options.policy.is_empty() {
        return Err(RetentionError::EmptyPolicy.into());
    }
    let (snapshots, errors) = repository.list_snapshots()?;
    let mut unreadable = Vec::new();
    for error in errors {
        if error.kind() == ErrorKind::Transient {
            return Err(error);
        }
        unreadable.push(error);
    }
    let considered: Vec<SnapshotInfo> = snapshots
        .iter()
        .map(|(id, snapshot)| SnapshotInfo::from_snapshot(*id, snapshot))
        .filter(|info| options.filter.matches(info))
        .collect();
    let groups = options.policy.decide_groups_at(
        options.group_by,
        &considered,
        &options.time_zone,
        options.now,
    )?;
    Ok(ForgetPlan { groups, unreadable })
}

/// A snapshot named explicitly (`forget ID...`), and what could be read of it.
#[derive(Debug)]
pub struct NamedSnapshot {
    /// Its id (the name of its object).
    pub id: Id,
    /// Its contents, or why its object cannot be read or verified: such a snapshot can still be
    /// forgotten, which is the way out of a damaged snapshot object.
    pub snapshot: Result<Snapshot>,
}

/// Resolves each of `specs` (a full id, a unique id prefix, or `latest`) to a snapshot object by
/// its name alone, so that objects that cannot be read or decrypted can be named too; then
/// reads each one for display. The same snapshot named twice is listed once.
///
/// # Errors
/// [`Error::SnapshotNotFound`], [`Error::AmbiguousSnapshot`], or backend failures (listing, or
/// a read that failed for a reason other than damage).
pub fn resolve_named(repository: &Repository, specs: &[String]) -> Result<Vec<NamedSnapshot>> {
    let names = repository.backend().list(SNAPSHOTS_PREFIX)?;
    let ids: Vec<Id> = names
        .iter()
        .filter_map(|info| id_from_name(&info.name))
        .collect();
    let mut chosen: Vec<Id> = Vec::new();
    for spec in specs {
        let id = if spec == "latest" {
            repository.resolve_snapshot(spec)?.0
        } else {
            let lowered = spec.to_ascii_lowercase();
            if lowered.is_empty() || !lowered.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(Error::SnapshotNotFound(spec.clone()));
            }
            let matching: Vec<&Id> = ids
                .iter()
                .filter(|id| id.to_hex().starts_with(&lowered))
                .collect();
            match matching.as_slice() {
                [] => return Err(Error::SnapshotNotFound(spec.clone())),
                [one] => **one,
                _ => return Err(Error::AmbiguousSnapshot(spec.clone())),
            }
        };
        if !chosen.contains(&id) {
            chosen.push(id);
        }
    }
    chosen
        .into_iter()
        .map(|id| {
            // Damage (or a newer format) is what forgetting by id is for; a store failure
            // (network, permissions) says nothing about the object and stops the command.
            match repository.load_snapshot(&object_name(SNAPSHOTS_PREFIX, &id)) {
                Err(error)
                    if !matches!(error.kind(), ErrorKind::BadData | ErrorKind::Unsupported) =>
                {
                    Err(error)
                }
                outcome => Ok(NamedSnapshot {
                    id,
                    snapshot: outcome.map(|(_, snapshot)| snapshot),
                }),
            }
        })
        .collect()
}

impl Repository {
    /// Deletes the snapshot objects `snapshots/<hex id>` of `ids` (on the I/O pool) and drops
    /// their cached copies. Each deletion stands alone: a failed one is reported in
    /// [`ForgetOutcome::failed`] and the others still happen. Deleting a snapshot that is
    /// already gone succeeds. Packs and index objects are not touched.
    ///
    /// # Errors
    /// The refusal of [`Repository::ensure_may_delete`] (before any deletion), or a local cache
    /// failure after the deletions.
    pub fn forget_snapshots(&self, ids: &[Id]) -> Result<ForgetOutcome> {
        self.ensure_may_delete("forget")?;
        let results: Vec<(Id, Result<()>)> = self.io_pool().install(|| {
            ids.par_iter()
                .map(|id| {
                    let name = object_name(SNAPSHOTS_PREFIX, id);
                    (*id, self.backend().delete(&name).map_err(Error::from))
                })
                .collect()
        });
        let mut outcome = ForgetOutcome::default();
        for (id, result) in results {
            match result {
                Ok(()) => outcome.removed.push(id),
                Err(error) => outcome.failed.push((id, error)),
            }
        }
        let removed_names: Vec<String> = outcome
            .removed
            .iter()
            .map(|id| object_name(SNAPSHOTS_PREFIX, id))
            .collect();
        self.cache().forget_snapshots(&removed_names)?;
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::backend::faulty::{FaultPlan, FaultyBackend};
    use crate::backend::object_store::ObjectStoreBackend;
    use crate::backend::{Backend, PutMode};
    use crate::crypto::keys::KdfParams;
    use crate::format::snapshot::{Snapshot, Source, Summary};
    use crate::format::tree::Timestamp;
    use crate::repo::repository::{CacheLocation, InitOptions};

    const PASSWORD: &[u8] = b"forget";

    /// An in-memory repository holding snapshots taken one day apart (from 1 June 2024), the
    /// backend, and the snapshot ids oldest first.
    fn repository_with_snapshots(count: i64) -> (Arc<dyn Backend>, Vec<Id>) {
        let backend: Arc<dyn Backend> = Arc::new(ObjectStoreBackend::in_memory());
        let options = InitOptions {
            kdf: KdfParams {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            },
            ..InitOptions::default()
        };
        let repository = Repository::init(
            Arc::clone(&backend),
            PASSWORD,
            &options,
            &CacheLocation::Memory,
        )
        .expect("init");
        let ids = (0..count)
            .map(|day| {
                let snapshot = Snapshot {
                    time: Timestamp {
                        seconds: 1_717_243_200 + day * 86_400,
                        nanos: 0,
                    },
                    host: "host".into(),
                    username: "user".into(),
                    tags: Vec::new(),
                    source: Source::Stdin("db.archive".into()),
                    root: Id([9; 32]),
                    parent: None,
                    summary: Summary::default(),
                    program_version: "test".into(),
                    extensions: Vec::new(),
                };
                repository.save_snapshot(&snapshot).expect("save snapshot")
            })
            .collect();
        (backend, ids)
    }

    fn open(backend: &Arc<dyn Backend>) -> Repository {
        Repository::open(Arc::clone(backend), PASSWORD, &CacheLocation::Memory).expect("open")
    }

    fn options(keep_last: u32) -> ForgetOptions {
        ForgetOptions {
            policy: RetentionPolicy {
                keep_last,
                ..RetentionPolicy::default()
            },
            filter: Selection::default(),
            group_by: GroupBy::default(),
            time_zone: TimeZone::UTC,
            now: None,
        }
    }

    fn stored_snapshots(backend: &Arc<dyn Backend>) -> Vec<String> {
        let mut names: Vec<String> = backend
            .list(SNAPSHOTS_PREFIX)
            .expect("list")
            .into_iter()
            .map(|info| info.name)
            .collect();
        names.sort();
        names
    }

    #[test]
    fn an_empty_policy_is_refused_before_any_request() {
        let (backend, _) = repository_with_snapshots(2);
        let repository = open(&backend);
        let before = backend.stats();
        let error = plan_forget(&repository, &options(0)).unwrap_err();
        assert!(matches!(
            error,
            Error::Retention(RetentionError::EmptyPolicy)
        ));
        assert_eq!(error.kind(), ErrorKind::User);
        assert_eq!(backend.stats(), before);
        assert_eq!(stored_snapshots(&backend).len(), 2);
    }

    #[test]
    fn forget_deletes_only_the_removed_snapshot_objects_and_their_cached_copies() {
        let (backend, ids) = repository_with_snapshots(4);
        let repository = open(&backend);
        let other_objects = |backend: &Arc<dyn Backend>| {
            ["config", "keys", "index", "data"]
                .map(|prefix| backend.list(prefix).expect("list").len())
        };
        let others_before = other_objects(&backend);
        let plan = plan_forget(&repository, &options(1)).unwrap();
        assert!(plan.unreadable.is_empty());
        assert_eq!(plan.kept_count(), 1);
        assert_eq!(plan.removals(), [ids[2], ids[1], ids[0]]);
        // Listing cached every snapshot object.
        for id in &ids {
            let name = object_name(SNAPSHOTS_PREFIX, id);
            assert!(repository.cache().cached_snapshot(&name).unwrap().is_some());
        }

        let outcome = repository.forget_snapshots(&plan.removals()).unwrap();
        assert!(outcome.failed.is_empty());
        let mut removed = outcome.removed.clone();
        removed.sort();
        let mut expected = ids[..3].to_vec();
        expected.sort();
        assert_eq!(removed, expected);
        assert_eq!(
            stored_snapshots(&backend),
            [object_name(SNAPSHOTS_PREFIX, &ids[3])]
        );
        for (position, id) in ids.iter().enumerate() {
            let cached = repository
                .cache()
                .cached_snapshot(&object_name(SNAPSHOTS_PREFIX, id))
                .unwrap();
            assert_eq!(cached.is_some(), position == 3, "snapshot {position}");
        }
        assert_eq!(other_objects(&backend), others_before);
        let (left, errors) = repository.list_snapshots().unwrap();
        assert!(errors.is_empty());
        assert_eq!(left.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [ids[3]]);
        // Forgetting again is harmless: deleting a missing object succeeds.
        let again = repository.forget_snapshots(&[ids[0]]).unwrap();
        assert_eq!(again.removed, [ids[0]]);
    }

    #[test]
    fn a_failed_deletion_is_reported_and_the_others_still_happen() {
        let (backend, ids) = repository_with_snapshots(3);
        let counting = Arc::new(FaultyBackend::new(
            Arc::clone(&backend),
            FaultPlan::FailFrom(u64::MAX),
        ));
        drop(open(&(Arc::clone(&counting) as Arc<dyn Backend>)));
        let requests_to_open = counting.requests();
        let faulty: Arc<dyn Backend> = Arc::new(FaultyBackend::new(
            Arc::clone(&backend),
            FaultPlan::FailOnce(requests_to_open),
        ));
        let repository = open(&faulty);
        let outcome = repository.forget_snapshots(&ids).unwrap();
        assert_eq!(outcome.removed.len(), 2);
        assert_eq!(outcome.failed.len(), 1);
        let (failed_id, error) = &outcome.failed[0];
        assert_eq!(error.kind(), ErrorKind::Transient);
        assert_eq!(
            stored_snapshots(&backend),
            [object_name(SNAPSHOTS_PREFIX, failed_id)]
        );
    }

    #[test]
    fn damaged_snapshots_are_left_alone_and_unreadable_ones_stop_the_plan() {
        let (backend, ids) = repository_with_snapshots(3);
        let garbage = b"not a snapshot object".to_vec();
        let damaged_name = object_name(SNAPSHOTS_PREFIX, &Id::of_stored_bytes(&garbage));
        backend
            .put(&damaged_name, Bytes::from(garbage), PutMode::Create)
            .unwrap();
        let repository = open(&backend);
        let plan = plan_forget(&repository, &options(1)).unwrap();
        assert_eq!(plan.unreadable.len(), 1);
        assert_eq!(plan.unreadable[0].kind(), ErrorKind::BadData);
        assert_eq!(plan.removals(), [ids[1], ids[0]]);

        // A store failure while reading a snapshot (the first GET after the listing) stops
        // the plan instead of hiding that snapshot from the policy.
        let counting = Arc::new(FaultyBackend::new(
            Arc::clone(&backend),
            FaultPlan::FailFrom(u64::MAX),
        ));
        drop(open(&(Arc::clone(&counting) as Arc<dyn Backend>)));
        let faulty: Arc<dyn Backend> = Arc::new(FaultyBackend::new(
            Arc::clone(&backend),
            FaultPlan::FailOnce(counting.requests() + 1),
        ));
        let error = plan_forget(&open(&faulty), &options(1)).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Transient);
        assert_eq!(stored_snapshots(&backend).len(), 4);
    }

    #[test]
    fn the_filter_leaves_other_snapshots_alone() {
        let (backend, ids) = repository_with_snapshots(3);
        let repository = open(&backend);
        let mut only_other_host = options(1);
        only_other_host.filter.filter.hosts = vec!["elsewhere".into()];
        let plan = plan_forget(&repository, &only_other_host).unwrap();
        assert!(plan.groups.is_empty());
        assert!(plan.removals().is_empty());
        let mut this_host = options(2);
        this_host.filter.filter.hosts = vec!["host".into()];
        assert_eq!(
            plan_forget(&repository, &this_host).unwrap().removals(),
            [ids[0]]
        );
    }
}
