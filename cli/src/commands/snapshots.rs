//! `cairn snapshots`.

use anyhow::Result;

use cairn_store::format::snapshot::Snapshot;
use cairn_store::retention::{self, GroupBy, GroupKey, SnapshotInfo};
use cairn_store::{Id, time_sanity};

use crate::args::{GlobalArgs, SnapshotsArgs};
use crate::render;
use crate::settings;

/// Lists snapshots, oldest first: all of them, the newest N of each group (`--latest`), or
/// group by group under headings (`--group-by`).
pub fn run(global: &GlobalArgs, args: &SnapshotsArgs) -> Result<()> {
    let repository = settings::open_repository(global)?;
    let (snapshots, errors) = repository.list_snapshots()?;
    for error in &errors {
        eprintln!(
            "warning: {error} (`cairn forget {}` removes it)",
            super::forget::unreadable_id(error)
        );
    }
    let now = jiff::Timestamp::now();
    let future =
        |snapshot: &Snapshot| time_sanity::is_future(render::jiff_time(snapshot.time), now);
    let infos: Vec<SnapshotInfo> = snapshots
        .iter()
        .map(|(id, snapshot)| SnapshotInfo::from_snapshot(*id, snapshot))
        .collect();
    // Without --group-by one list, in which --latest counts per host and paths, as restic.
    let group_by = args.group_by.unwrap_or(GroupBy {
        host: args.latest.is_some(),
        paths: args.latest.is_some(),
        tags: false,
    });
    let mut groups = retention::group_snapshots(&infos, group_by, args.latest);
    if args.group_by.is_none() {
        let mut members: Vec<usize> = groups
            .into_iter()
            .flat_map(|(_, members)| members)
            .collect();
        members.sort_unstable();
        let everything = GroupKey {
            host: None,
            paths: None,
            tags: None,
        };
        groups = vec![(everything, members)];
    }
    if global.json {
        for (key, members) in &groups {
            for &index in members {
                let (id, snapshot) = &snapshots[index];
                let mut line = snapshot_json(id, snapshot, future(snapshot));
                if args.group_by.is_some() {
                    line["group"] = super::forget::group_json(key);
                }
                render::json_line(&line);
            }
        }
        return Ok(());
    }
    let mut shown = 0;
    for (position, (key, members)) in groups.iter().enumerate() {
        if args.group_by.is_some() {
            if position > 0 {
                outln!();
            }
            outln!("{}:", super::forget::group_title(key));
        }
        print_table(&snapshots, members, args.compact, &future);
        if args.group_by.is_some() && !global.quiet {
            outln!(
                "{}",
                render::count(members.len() as u64, "snapshot", "snapshots")
            );
        }
        shown += members.len();
    }
    if args.group_by.is_none() && !global.quiet {
        outln!("{}", render::count(shown as u64, "snapshot", "snapshots"));
    }
    let in_future = snapshots
        .iter()
        .filter(|(_, snapshot)| future(snapshot))
        .count();
    if in_future > 0 {
        eprintln!(
            "warning: {} dated in the future of this machine's clock: the newest of them is \
             `latest` and forget keeps them until then; if a date is wrong, `cairn forget ID` \
             removes that snapshot",
            if in_future == 1 {
                "1 snapshot is".to_owned()
            } else {
                format!("{in_future} snapshots are")
            }
        );
    }
    Ok(())
}

/// The table of the snapshots `members` (indices into `snapshots`). A snapshot of several
/// paths takes one line per path unless `compact`, which leaves the paths out.
fn print_table(
    snapshots: &[(Id, Snapshot)],
    members: &[usize],
    compact: bool,
    future: &dyn Fn(&Snapshot) -> bool,
) {
    if compact {
        outln!("{:<10} {:<19} {:<16} tags", "ID", "time", "host");
    } else {
        outln!(
            "{:<10} {:<19} {:<16} {:<16} paths",
            "ID",
            "time",
            "host",
            "tags"
        );
    }
    for &index in members {
        let (id, snapshot) = &snapshots[index];
        let note = if future(snapshot) {
            "  (dated in the future)"
        } else {
            ""
        };
        let tags = render::tags(&snapshot.tags);
        if compact {
            outln!(
                "{:<10} {:<19} {:<16} {tags}{note}",
                id.short(),
                render::local_time(snapshot.time),
                snapshot.host,
            );
            continue;
        }
        let names = snapshot.source.names();
        let mut names = names.iter();
        outln!(
            "{:<10} {:<19} {:<16} {:<16} {}{note}",
            id.short(),
            render::local_time(snapshot.time),
            snapshot.host,
            tags,
            names.next().map_or("", String::as_str),
        );
        for more in names {
            outln!("{:<10} {:<19} {:<16} {:<16} {more}", "", "", "", "");
        }
    }
}

/// One `snapshot` JSON line (docs/json.md).
fn snapshot_json(id: &Id, snapshot: &Snapshot, future: bool) -> serde_json::Value {
    serde_json::json!({
        "message_type": "snapshot",
        "id": id.to_hex(),
        "short_id": id.short(),
        "time": render::rfc3339(snapshot.time),
        "host": snapshot.host,
        "username": snapshot.username,
        "tags": snapshot.tags,
        "paths": snapshot.source.names(),
        "stdin": matches!(snapshot.source, cairn_store::format::snapshot::Source::Stdin(_)),
        "root": snapshot.root.to_hex(),
        "future": future,
        "summary": {
            "files": snapshot.summary.files,
            "directories": snapshot.summary.directories,
            "bytes_processed": snapshot.summary.bytes_processed,
            "bytes_added": snapshot.summary.bytes_added,
        },
    })
}
