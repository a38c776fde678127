//! The virtual top of the mount: what each snapshot is called under `snapshots/`, which
//! snapshots `hosts/<host>/`, `tags/<tag>/` and `sources/<source>/` hold, and which one each
//! folder's `latest` link names. Pure: no I/O, no clock; the snapshots come listed.

use std::collections::BTreeMap;

use cairn_store::Id;
use cairn_store::format::snapshot::Snapshot;
use cairn_store::format::tree::Timestamp;
use cairn_store::retention::SnapshotInfo;
use cairn_store::select::{CONFIG_TAG, SourceSelector};

/// One snapshot as the mount shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShownSnapshot {
    /// The snapshot object's id.
    pub id: Id,
    /// Its directory name: the local start time (`2026-12-07T14:30:05`), with `-1`, `-2`, ...
    /// for the second, third, ... snapshot of the same second.
    pub name: String,
    /// When the backup started.
    pub time: Timestamp,
    /// The root tree.
    pub root: Id,
    /// Whether it holds a stored config (tag `cairn:config`), which `latest` passes over.
    pub stored_config: bool,
}

/// The snapshots of one folder (`hosts/<host>`, `tags/<tag>`, `sources/<source>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Folder {
    /// Positions in [`Layout::snapshots`], oldest first.
    pub members: Vec<usize>,
    /// The position `latest` names, if any member may be latest.
    pub latest: Option<usize>,
}

/// The whole virtual top.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// Every shown snapshot, oldest first; names are unique.
    pub snapshots: Vec<ShownSnapshot>,
    /// `snapshots/` itself as a folder of all of them.
    pub all: Folder,
    /// `hosts/<host>` by directory name.
    pub hosts: BTreeMap<String, Folder>,
    /// `tags/<tag>` by directory name.
    pub tags: BTreeMap<String, Folder>,
    /// `sources/<source>` by directory name; `None` without a config (no `sources/`).
    pub sources: Option<BTreeMap<String, Folder>>,
}

/// Which folder of the top a [`Folder`] belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    /// `hosts/`.
    Hosts,
    /// `tags/`.
    Tags,
    /// `sources/`.
    Sources,
}

impl Group {
    /// The directory name under the mount's root.
    pub fn directory(self) -> &'static str {
        match self {
            Self::Hosts => "hosts",
            Self::Tags => "tags",
            Self::Sources => "sources",
        }
    }
}

impl Layout {
    /// Lays out `snapshots` (oldest first, as `Repository::list_snapshots` returns them),
    /// naming them by their start time in `zone`. With `sources` (from a config), `sources/`
    /// holds each source's snapshots.
    pub fn new(
        snapshots: &[(Id, Snapshot)],
        sources: Option<&[SourceSelector]>,
        zone: &jiff::tz::TimeZone,
    ) -> Self {
        let mut layout = Self::default();
        let mut previous: Option<(String, usize)> = None;
        let mut infos = Vec::with_capacity(snapshots.len());
        for (position, (id, snapshot)) in snapshots.iter().enumerate() {
            let info = SnapshotInfo::from_snapshot(*id, snapshot);
            let second = time_name(&info, zone);
            let name = match &mut previous {
                Some((last, repeats)) if *last == second => {
                    *repeats += 1;
                    format!("{second}-{repeats}")
                }
                _ => {
                    previous = Some((second.clone(), 0));
                    second
                }
            };
            let stored_config = info.tags.iter().any(|tag| tag == CONFIG_TAG);
            layout.snapshots.push(ShownSnapshot {
                id: *id,
                name,
                time: snapshot.time,
                root: snapshot.root,
                stored_config,
            });
            layout.all.members.push(position);
            layout
                .hosts
                .entry(directory_name(&info.host))
                .or_default()
                .members
                .push(position);
            for tag in &info.tags {
                layout
                    .tags
                    .entry(directory_name(tag))
                    .or_default()
                    .members
                    .push(position);
            }
            infos.push(info);
        }
        if let Some(sources) = sources {
            let mut folders = BTreeMap::new();
            for source in sources {
                let members = (0..infos.len())
                    .filter(|&position| source.matches(&infos[position]))
                    .collect();
                folders.insert(
                    directory_name(&source.name),
                    Folder {
                        members,
                        latest: None,
                    },
                );
            }
            layout.sources = Some(folders);
        }
        let shown = layout.snapshots.clone();
        let newest = |folder: &mut Folder, configs_too: bool| {
            folder.latest = folder
                .members
                .iter()
                .rev()
                .copied()
                .find(|&position| configs_too || !shown[position].stored_config);
        };
        newest(&mut layout.all, false);
        for folder in layout.hosts.values_mut() {
            newest(folder, false);
        }
        for (name, folder) in &mut layout.tags {
            newest(folder, *name == directory_name(CONFIG_TAG));
        }
        for folder in layout.sources.iter_mut().flat_map(BTreeMap::values_mut) {
            newest(folder, false);
        }
        layout
    }

    /// The folders of `group`, if the mount shows it.
    pub fn group(&self, group: Group) -> Option<&BTreeMap<String, Folder>> {
        match group {
            Group::Hosts => Some(&self.hosts),
            Group::Tags => Some(&self.tags),
            Group::Sources => self.sources.as_ref(),
        }
    }
}

/// A snapshot's start time in `zone` as a directory name, to the second.
fn time_name(info: &SnapshotInfo, zone: &jiff::tz::TimeZone) -> String {
    info.time
        .to_zoned(zone.clone())
        .strftime("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

/// A host, tag or source name as one directory name: `%` and `/` (and NUL) are written as
/// `%25`, `%2F` (and `%00`); `.` and `..` as `%2E` and `%2E%2E`; the empty name as `%`.
pub fn directory_name(text: &str) -> String {
    match text {
        "" => return "%".into(),
        "." => return "%2E".into(),
        ".." => return "%2E%2E".into(),
        _ => {}
    }
    let mut name = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '%' => name.push_str("%25"),
            '/' => name.push_str("%2F"),
            '\0' => name.push_str("%00"),
            other => name.push(other),
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_store::format::snapshot::{Source, Summary};

    fn snapshot(seconds: i64, host: &str, tags: &[&str]) -> Snapshot {
        Snapshot {
            time: Timestamp { seconds, nanos: 0 },
            host: host.into(),
            username: "u".into(),
            tags: tags.iter().map(|tag| (*tag).to_owned()).collect(),
            source: Source::Paths(vec!["/srv".into()]),
            root: Id([7; 32]),
            parent: None,
            summary: Summary::default(),
            program_version: "t".into(),
            extensions: Vec::new(),
        }
    }

    fn listed(snapshots: Vec<Snapshot>) -> Vec<(Id, Snapshot)> {
        snapshots
            .into_iter()
            .enumerate()
            .map(|(position, snapshot)| (Id([u8::try_from(position).unwrap(); 32]), snapshot))
            .collect()
    }

    #[test]
    fn names_are_times_and_a_shared_second_is_told_apart() {
        let snapshots = listed(vec![
            snapshot(1_796_650_205, "db1", &[]),
            snapshot(1_796_650_205, "db1", &[]),
            snapshot(1_796_650_205, "db1", &[]),
            snapshot(1_796_650_206, "db1", &[]),
        ]);
        let layout = Layout::new(&snapshots, None, &jiff::tz::TimeZone::UTC);
        let names: Vec<&str> = layout.snapshots.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "2026-12-07T13:30:05",
                "2026-12-07T13:30:05-1",
                "2026-12-07T13:30:05-2",
                "2026-12-07T13:30:06"
            ]
        );
        assert_eq!(layout.all.latest, Some(3));
        assert!(layout.sources.is_none());
    }

    #[test]
    fn latest_passes_stored_configs_over_except_in_their_own_tag() {
        let snapshots = listed(vec![
            snapshot(100, "db1", &["nightly"]),
            snapshot(200, "web", &["nightly", "source:www"]),
            snapshot(300, "db1", &[CONFIG_TAG]),
        ]);
        let sources = [SourceSelector {
            name: "www".into(),
            host: "web".into(),
            tag: "source:www".into(),
        }];
        let layout = Layout::new(&snapshots, Some(&sources), &jiff::tz::TimeZone::UTC);
        assert_eq!(layout.all.latest, Some(1));
        assert_eq!(layout.hosts["db1"].members, [0, 2]);
        assert_eq!(layout.hosts["db1"].latest, Some(0));
        assert_eq!(layout.tags["nightly"].latest, Some(1));
        assert_eq!(layout.tags[CONFIG_TAG].latest, Some(2));
        assert_eq!(layout.sources.as_ref().unwrap()["www"].members, [1]);
    }

    #[test]
    fn folder_with_only_stored_configs_has_no_latest() {
        let snapshots = listed(vec![snapshot(300, "cfg", &[CONFIG_TAG])]);
        let layout = Layout::new(&snapshots, None, &jiff::tz::TimeZone::UTC);
        assert_eq!(layout.hosts["cfg"].latest, None);
        assert_eq!(layout.all.latest, None);
    }

    #[test]
    fn directory_names_never_hold_a_slash_or_a_dot_name() {
        assert_eq!(directory_name("a/b%c"), "a%2Fb%25c");
        assert_eq!(directory_name(""), "%");
        assert_eq!(directory_name("."), "%2E");
        assert_eq!(directory_name(".."), "%2E%2E");
        assert_eq!(directory_name("source:db"), "source:db");
    }
}
