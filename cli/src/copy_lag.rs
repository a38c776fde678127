//! How far a `[[copy]]` destination is behind the repository: which snapshots of its sources
//! `cairn run` still has to copy into it. Pure: works on snapshot listings handed in, reads and
//! writes nothing.
//!
//! A source snapshot is pending when it is one of the source's (this host, tag `source:NAME`),
//! the destination holds no copy of it (by the "copy of" record), and it is not older than the
//! newest copy of that source the destination holds. An older snapshot without a copy was
//! copied and then removed by the destination's own retention: copying it again would undo that
//! retention. A source the destination holds no copy of yet is pending whole (the first copy
//! takes its history).

use std::collections::BTreeMap;

use cairn_store::Id;
use cairn_store::copy::copies_in;
use cairn_store::format::snapshot::Snapshot;
use jiff::Timestamp;

use crate::config::source_tag;
use crate::render::jiff_time;

/// What a destination lacks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestinationLag {
    /// Source snapshots to copy, oldest first.
    pub pending: Vec<(Id, Snapshot)>,
    /// Per source: the time of the newest source snapshot the destination holds a copy of.
    pub newest_copied: BTreeMap<String, Timestamp>,
}

/// Whether a snapshot belongs to the source `name` of this host.
fn of_source(snapshot: &Snapshot, host: &str, name: &str) -> bool {
    snapshot.host == host && snapshot.tags.iter().any(|tag| *tag == source_tag(name))
}

/// The snapshots of `sources` (of `host`) in the repository `source_repository_id` that the
/// destination (its listing: `destination_snapshots`) lacks; see the module documentation.
pub fn destination_lag(
    source_repository_id: [u8; 16],
    source_snapshots: &[(Id, Snapshot)],
    destination_snapshots: &[(Id, Snapshot)],
    host: &str,
    sources: &[&str],
) -> DestinationLag {
    let copies = copies_in(source_repository_id, destination_snapshots);
    let mut lag = DestinationLag::default();
    for name in sources {
        let newest = source_snapshots
            .iter()
            .filter(|(id, snapshot)| copies.contains_key(id) && of_source(snapshot, host, name))
            .map(|(_, snapshot)| snapshot.time)
            .max();
        if let Some(newest) = newest {
            lag.newest_copied
                .insert((*name).to_owned(), jiff_time(newest));
        }
        lag.pending.extend(
            source_snapshots
                .iter()
                .filter(|(id, snapshot)| {
                    of_source(snapshot, host, name)
                        && !copies.contains_key(id)
                        && newest.is_none_or(|newest| snapshot.time >= newest)
                })
                .cloned(),
        );
    }
    lag.pending
        .sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
    lag.pending.dedup_by(|a, b| a.0 == b.0);
    lag
}

/// How many snapshots of `sources` a destination that could not be listed lacks, by the newest
/// copy of each source it was last known to hold (`newest_copied`): the source's snapshots
/// newer than that, or all of them when none was copied.
pub fn behind_by_last_known(
    source_snapshots: &[(Id, Snapshot)],
    newest_copied: &BTreeMap<String, Timestamp>,
    host: &str,
    sources: &[&str],
) -> u64 {
    let pending = source_snapshots.iter().filter(|(_, snapshot)| {
        sources.iter().any(|name| {
            of_source(snapshot, host, name)
                && newest_copied
                    .get(*name)
                    .is_none_or(|newest| jiff_time(snapshot.time) > *newest)
        })
    });
    pending.count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_store::format::snapshot::{Source, Summary};

    const SOURCE_REPOSITORY: [u8; 16] = [7; 16];

    fn snapshot(host: &str, tags: &[&str], hour: i64) -> Snapshot {
        Snapshot {
            time: cairn_store::format::tree::Timestamp {
                seconds: 1_700_000_000 + hour * 3600,
                nanos: 0,
            },
            host: host.into(),
            username: "root".into(),
            tags: tags.iter().map(|tag| (*tag).to_owned()).collect(),
            source: Source::Stdin("dump".into()),
            root: id(0),
            parent: None,
            summary: Summary::default(),
            program_version: String::new(),
            extensions: Vec::new(),
        }
    }

    fn id(byte: u8) -> Id {
        Id([byte; 32])
    }

    /// The destination's copy of `source` (id `source_id`), made in the repository `from`.
    fn copy_of(from: [u8; 16], source_id: Id, source: &Snapshot) -> Snapshot {
        cairn_store::copy::copied_snapshot(from, source_id, source, id(0), None)
    }

    #[test]
    fn pending_are_the_uncopied_snapshots_not_older_than_the_newest_copy() {
        let db = |hour| snapshot("web1", &["nightly", "source:db"], hour);
        let source = vec![
            (id(1), db(1)),
            (id(2), db(2)),
            (id(3), db(3)),
            (id(4), db(4)),
            (id(5), snapshot("web2", &["source:db"], 5)),
            (id(6), snapshot("web1", &["source:etc"], 6)),
        ];
        // Snapshot 1 was copied and then thinned by the destination's retention; 3 is the
        // newest copy; 2 and 4 were never copied.
        let destination = vec![(id(13), copy_of(SOURCE_REPOSITORY, id(3), &db(3)))];
        let lag = destination_lag(SOURCE_REPOSITORY, &source, &destination, "web1", &["db"]);
        let pending: Vec<Id> = lag.pending.iter().map(|(id, _)| *id).collect();
        assert_eq!(pending, [id(4)]);
        assert_eq!(lag.newest_copied["db"], jiff_time(db(3).time));
        assert_eq!(
            behind_by_last_known(&source, &lag.newest_copied, "web1", &["db"]),
            1
        );
    }

    #[test]
    fn a_source_never_copied_is_pending_whole_and_copies_of_another_repository_do_not_count() {
        let etc = |hour| snapshot("web1", &["source:etc"], hour);
        let db = |hour| snapshot("web1", &["source:db"], hour);
        let source = vec![(id(2), etc(2)), (id(1), db(1)), (id(3), db(3))];
        let destination = vec![(id(11), copy_of([9; 16], id(3), &db(3)))];
        let lag = destination_lag(
            SOURCE_REPOSITORY,
            &source,
            &destination,
            "web1",
            &["db", "etc"],
        );
        let pending: Vec<Id> = lag.pending.iter().map(|(id, _)| *id).collect();
        assert_eq!(pending, [id(1), id(2), id(3)], "oldest first, both sources");
        assert!(lag.newest_copied.is_empty());
        assert_eq!(
            behind_by_last_known(&source, &BTreeMap::new(), "web1", &["db", "etc"]),
            3
        );
        assert_eq!(
            behind_by_last_known(&source, &BTreeMap::new(), "web1", &["etc"]),
            1
        );
    }

    #[test]
    fn a_snapshot_tagged_for_two_selected_sources_is_pending_once() {
        let both = snapshot("web1", &["source:a", "source:b"], 1);
        let source = vec![(id(1), both)];
        let lag = destination_lag(SOURCE_REPOSITORY, &source, &[], "web1", &["a", "b"]);
        assert_eq!(lag.pending.len(), 1);
        assert_eq!(
            behind_by_last_known(&source, &BTreeMap::new(), "web1", &["a", "b"]),
            1
        );
    }
}
