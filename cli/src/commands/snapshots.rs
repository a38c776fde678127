//! `cairn snapshots`.

use anyhow::Result;

use cairn_store::format::snapshot::Snapshot;
use cairn_store::retention::{self, GroupBy, GroupKey, SnapshotInfo};
use cairn_store::{Id, time_sanity};

use crate::args::{GlobalArgs, SnapshotsArgs};
use crate::config::Config;
use crate::render;
use crate::settings;

/// Lists the selected snapshots, oldest first: all of them, the newest N of each group
/// (`--latest`), or group by group under headings (`--group-by`).
pub fn run(global: &GlobalArgs, config: Option<&Config>, args: &SnapshotsArgs) -> Result<()> {
    let selection = super::selection(&args.selection, config)?;
    let repository = settings::open_repository(global)?;
    let snapshots = super::Chooser::new(&repository, selection).selected()?;
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

/// The table of the snapshots `members` (indices into `snapshots`), columns sized to their
/// content. A snapshot of several paths takes one line per path unless `compact`, which leaves
/// the paths out.
fn print_table(
    snapshots: &[(Id, Snapshot)],
    members: &[usize],
    compact: bool,
    future: &dyn Fn(&Snapshot) -> bool,
) {
    let header: &[&str] = if compact {
        &["ID", "time", "host", "tags"]
    } else {
        &["ID", "time", "host", "tags", "paths"]
    };
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|&cell| cell.to_owned()).collect()];
    for &index in members {
        let (id, snapshot) = &snapshots[index];
        let note = if future(snapshot) {
            "  (dated in the future)"
        } else {
            ""
        };
        let tags = render::tags(&snapshot.tags);
        let mut row = vec![
            id.short(),
            render::local_time(snapshot.time),
            snapshot.host.clone(),
        ];
        if compact {
            row.push(format!("{tags}{note}"));
            rows.push(row);
            continue;
        }
        let names = snapshot.source.names();
        let mut names = names.iter();
        row.push(tags);
        row.push(format!("{}{note}", names.next().map_or("", String::as_str)));
        rows.push(row);
        for more in names {
            rows.push(vec![
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                more.clone(),
            ]);
        }
    }
    for line in render::aligned_rows(&rows) {
        outln!("{line}");
    }
}

/// One `snapshot` JSON line (docs/json.md).
fn snapshot_json(id: &Id, snapshot: &Snapshot, future: bool) -> serde_json::Value {
    let mut value = serde_json::json!({
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
        "rewritten_from": snapshot.rewritten_from().map(|original| original.to_hex()),
        "future": future,
        "summary": {
            "files": snapshot.summary.files,
            "directories": snapshot.summary.directories,
            "bytes_processed": snapshot.summary.bytes_processed,
            "bytes_added": snapshot.summary.bytes_added,
        },
    });
    if let Some(copy_of) = snapshot.copy_of() {
        value["copy_of"] = serde_json::json!({
            "repository": hex::encode(copy_of.repository_id),
            "snapshot": copy_of.snapshot.to_hex(),
        });
    }
    value
}
