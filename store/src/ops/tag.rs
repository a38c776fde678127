//! `cairn tag`: change the tags of existing snapshots. Snapshots are immutable, so a changed
//! snapshot is written anew (create-only, inside a backup session) with the same time, host,
//! user, source, root tree, parent and summary, the new tags and the original's id as
//! "rewritten from" (FORMAT.md section 12); then the original object is deleted. Only snapshot
//! objects are written and deleted: the data stays referenced throughout.
//!
//! Also home of what `tag` and `rewrite` share: the derived snapshot ([`derived_snapshot`]),
//! finding one an interrupted run already wrote ([`DerivedSnapshots`]), and the check that an
//! original still exists once the session is registered ([`original_exists`]). Never prints.

use std::collections::HashMap;

use crate::crypto::id::Id;
use crate::error::Result;
use crate::format::snapshot::{Snapshot, Summary};
use crate::repo::repository::{Repository, SNAPSHOTS_PREFIX, object_name};

/// How tags change: `set` replaces them all, else `remove` then `add` apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagEdit {
    /// Tags to add (kept in the order given, after the existing ones).
    pub add: Vec<String>,
    /// Tags to remove (every occurrence).
    pub remove: Vec<String>,
    /// The complete new list of tags (an empty list removes every tag).
    pub set: Option<Vec<String>>,
}

impl TagEdit {
    /// The tags `tags` become: no tag twice, the existing order kept.
    pub fn apply(&self, tags: &[String]) -> Vec<String> {
        let mut result: Vec<String> = Vec::new();
        let mut push = |tag: &String| {
            if !result.contains(tag) {
                result.push(tag.clone());
            }
        };
        if let Some(set) = &self.set {
            set.iter().for_each(&mut push);
        } else {
            tags.iter()
                .filter(|tag| !self.remove.contains(tag))
                .for_each(&mut push);
            self.add.iter().for_each(&mut push);
        }
        result
    }
}

/// The snapshot `tag` or `rewrite` writes in place of `original`: the same time, host, user,
/// source and parent, the given tags, root and summary, `original_id` as "rewritten from".
pub fn derived_snapshot(
    original_id: Id,
    original: &Snapshot,
    tags: Vec<String>,
    root: Id,
    summary: Summary,
    program_version: &str,
) -> Snapshot {
    // The original's other extensions stay (a re-tagged copy is still a copy, FORMAT.md 12).
    let mut derived = Snapshot {
        tags,
        ..original.derived(root, summary, program_version)
    };
    derived.set_rewritten_from(Some(original_id));
    derived
}

/// Snapshots that record being written from another, by that other's id: what an earlier,
/// interrupted `tag` or `rewrite` already wrote.
#[derive(Debug, Default)]
pub struct DerivedSnapshots {
    by_original: HashMap<Id, Vec<(Id, Snapshot)>>,
}

impl DerivedSnapshots {
    /// Collects them from a listing of the repository's snapshots.
    pub fn from_listing(snapshots: &[(Id, Snapshot)]) -> Self {
        let mut by_original: HashMap<Id, Vec<(Id, Snapshot)>> = HashMap::new();
        for (id, snapshot) in snapshots {
            if let Some(original) = snapshot.rewritten_from() {
                by_original
                    .entry(original)
                    .or_default()
                    .push((*id, snapshot.clone()));
            }
        }
        Self { by_original }
    }

    /// A snapshot already written for `planned`: from the same original with the same content
    /// (everything but the program version). Finding it makes a second run write nothing new.
    pub fn find(&self, planned: &Snapshot) -> Option<Id> {
        let original = planned.rewritten_from()?;
        self.by_original
            .get(&original)?
            .iter()
            .find_map(|(id, existing)| {
                let same = Snapshot {
                    program_version: planned.program_version.clone(),
                    ..existing.clone()
                };
                (same == *planned).then_some(*id)
            })
    }
}

/// Whether snapshot `id` still exists. Asked after the session is registered: an original
/// present then was present at every earlier prune's listing (snapshot objects are never
/// recreated), so everything it references is still stored, and the session protects it from
/// then on (FORMAT.md section 21.4).
///
/// # Errors
/// Backend failures.
pub fn original_exists(repository: &Repository, id: &Id) -> Result<bool> {
    Ok(repository
        .backend()
        .head(&object_name(SNAPSHOTS_PREFIX, id))?
        .is_some())
}

/// How `tag` runs.
#[derive(Debug, Clone, Default)]
pub struct TagOptions {
    /// The change.
    pub edit: TagEdit,
    /// Report what would change; write and delete nothing.
    pub dry_run: bool,
    /// Host recorded in the session marker.
    pub host: String,
    /// The cairn version recorded in new snapshots.
    pub program_version: String,
}

/// What happened to one chosen snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagOutcome {
    /// Its tags would not change: left alone.
    Unchanged,
    /// Would be re-tagged (dry run).
    WouldRetag,
    /// Re-tagged: the new snapshot is stored and the original deleted.
    Retagged {
        /// The new snapshot.
        new_id: Id,
        /// An earlier, interrupted run had already stored it; this run only deleted the
        /// original.
        already_written: bool,
    },
    /// The original disappeared before this run could re-tag it (removed meanwhile by
    /// another client): nothing written.
    Vanished,
}

/// One chosen snapshot and what `tag` did with it.
#[derive(Debug, Clone)]
pub struct SnapshotRetag {
    /// The original's id.
    pub original: Id,
    /// The original snapshot.
    pub snapshot: Snapshot,
    /// Its tags after the change.
    pub new_tags: Vec<String>,
    /// What was done.
    pub outcome: TagOutcome,
}

/// Changes the tags of `chosen` snapshots: each whose tags change is written anew and then
/// deleted (FORMAT.md section 14, `tag`). A snapshot whose tags would not change is left
/// alone. Interrupted between the write and the delete, both snapshots exist (harmless); a
/// second run finds the new one and only deletes the original.
///
/// # Errors
/// [`crate::Error::AppendOnly`] (before anything is written) when a snapshot would change,
/// backend failures (snapshots already handled stay handled), or cache failures.
pub fn tag_snapshots(
    repository: &Repository,
    chosen: &[(Id, Snapshot)],
    options: &TagOptions,
) -> Result<Vec<SnapshotRetag>> {
    let mut retags: Vec<SnapshotRetag> = chosen
        .iter()
        .map(|(id, snapshot)| {
            let new_tags = options.edit.apply(&snapshot.tags);
            let outcome = if new_tags == snapshot.tags {
                TagOutcome::Unchanged
            } else {
                TagOutcome::WouldRetag
            };
            SnapshotRetag {
                original: *id,
                snapshot: snapshot.clone(),
                new_tags,
                outcome,
            }
        })
        .collect();
    let changing = retags
        .iter()
        .any(|retag| retag.outcome == TagOutcome::WouldRetag);
    if options.dry_run || !changing {
        return Ok(retags);
    }
    repository.ensure_may_delete("tag")?;
    repository.with_session(&options.host, |session, _| {
        let (snapshots, _) = repository.list_snapshots()?;
        let derived = DerivedSnapshots::from_listing(&snapshots);
        let mut last_written = None;
        for retag in &mut retags {
            if retag.outcome != TagOutcome::WouldRetag {
                continue;
            }
            if !original_exists(repository, &retag.original)? {
                retag.outcome = TagOutcome::Vanished;
                continue;
            }
            let planned = derived_snapshot(
                retag.original,
                &retag.snapshot,
                retag.new_tags.clone(),
                retag.snapshot.root,
                retag.snapshot.summary,
                &options.program_version,
            );
            let (new_id, already_written) = match derived.find(&planned) {
                Some(existing) => (existing, true),
                None => (repository.save_snapshot(&planned)?, false),
            };
            last_written = Some(new_id);
            // The new snapshot is stored: only now may the original go.
            let outcome = repository.forget_snapshots(&[retag.original])?;
            if let Some((_, error)) = outcome.failed.into_iter().next() {
                return Err(error);
            }
            retag.outcome = TagOutcome::Retagged {
                new_id,
                already_written,
            };
        }
        let _ = session.end(last_written);
        Ok(retags)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::snapshot::Source;
    use crate::format::tree::Timestamp;

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|tag| (*tag).to_owned()).collect()
    }

    #[test]
    fn edits_over_zero_one_and_many_tags() {
        let add = TagEdit {
            add: tags(&["x", "a"]),
            ..TagEdit::default()
        };
        let remove = TagEdit {
            remove: tags(&["a", "missing"]),
            ..TagEdit::default()
        };
        let both = TagEdit {
            add: tags(&["n"]),
            remove: tags(&["n", "b"]),
            set: None,
        };
        let set = TagEdit {
            set: Some(tags(&["s", "s", "t"])),
            ..TagEdit::default()
        };
        let clear = TagEdit {
            set: Some(Vec::new()),
            ..TagEdit::default()
        };
        for (before, edit, after) in [
            (tags(&[]), &add, tags(&["x", "a"])),
            (tags(&["a"]), &add, tags(&["a", "x"])),
            (tags(&["a", "b", "c"]), &add, tags(&["a", "b", "c", "x"])),
            (tags(&[]), &remove, tags(&[])),
            (tags(&["a"]), &remove, tags(&[])),
            (tags(&["a", "b", "a"]), &remove, tags(&["b"])),
            (tags(&["b", "c"]), &both, tags(&["c", "n"])),
            (tags(&[]), &set, tags(&["s", "t"])),
            (tags(&["a", "b"]), &set, tags(&["s", "t"])),
            (tags(&["a", "b"]), &clear, tags(&[])),
            (tags(&["a, b", "c d"]), &remove, tags(&["a, b", "c d"])),
        ] {
            assert_eq!(edit.apply(&before), after, "{before:?} {edit:?}");
        }
    }

    fn snapshot(tags_given: &[&str]) -> Snapshot {
        Snapshot {
            time: Timestamp {
                seconds: 10,
                nanos: 0,
            },
            host: "h".into(),
            username: "u".into(),
            tags: tags(tags_given),
            source: Source::Paths(vec!["/a".into()]),
            root: Id([1; 32]),
            parent: Some(Id([2; 32])),
            summary: Summary::default(),
            program_version: "0.1.0".into(),
            extensions: Vec::new(),
        }
    }

    #[test]
    fn a_second_run_finds_what_an_interrupted_run_wrote() {
        let original = snapshot(&["a"]);
        let planned = derived_snapshot(
            Id([7; 32]),
            &original,
            tags(&["a", "b"]),
            original.root,
            original.summary,
            "9.9.9",
        );
        assert_eq!(planned.parent, original.parent);
        let written = Snapshot {
            program_version: "0.2.0".into(),
            ..planned.clone()
        };
        let other_tags = Snapshot {
            tags: tags(&["a", "c"]),
            ..planned.clone()
        };
        let listing = vec![
            (Id([7; 32]), original.clone()),
            (Id([9; 32]), other_tags),
            (Id([8; 32]), written),
        ];
        let derived = DerivedSnapshots::from_listing(&listing);
        assert_eq!(derived.find(&planned), Some(Id([8; 32])));
        let mut from_elsewhere = planned;
        from_elsewhere.set_rewritten_from(Some(Id([6; 32])));
        assert_eq!(derived.find(&from_elsewhere), None);
    }
}
