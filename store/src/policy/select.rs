//! Snapshot selection: which snapshots `--host`, `--tag`, `--path` and `--source` choose, which
//! of them `latest` may be, whether a snapshot can hold a named path, and how a selection is
//! named in messages. Owns the rules every command shares (README, "Choosing snapshots").
//!
//! Pure: no I/O, no clock; listing snapshots and reading their trees is the caller's business.
//!
//! Rules, as restic's: `--host` values are alternatives; one `--tag a,b` needs both tags and
//! several `--tag` are alternatives; every `--path` must be among the snapshot's paths; several
//! `--source` are alternatives, each meaning its host and its `source:NAME` tag; the kinds of
//! flag combine with AND. The stored config (tag [`CONFIG_TAG`]) is a snapshot like any other
//! for listings, but `latest` passes it over unless a `--tag` names [`CONFIG_TAG`].

use std::fmt::Write;

use crate::policy::retention::{SnapshotFilter, SnapshotInfo};

/// The tag of the snapshots that hold a config stored by `cairn run` (FORMAT.md "Stored
/// configs").
pub const CONFIG_TAG: &str = "cairn:config";

/// A source of a config: its snapshots carry `tag` and were recorded under `host`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSelector {
    /// The source's name in the config (for messages).
    pub name: String,
    /// The host the config records its snapshots under.
    pub host: String,
    /// The tag every snapshot of the source carries (`source:NAME`).
    pub tag: String,
}

impl SourceSelector {
    /// Whether `snapshot` is one of this source's.
    pub fn matches(&self, snapshot: &SnapshotInfo) -> bool {
        snapshot.host == self.host && snapshot.tags.contains(&self.tag)
    }
}

/// The snapshots a command looks at. The empty selection chooses every snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// `--host`, `--tag` and `--path`.
    pub filter: SnapshotFilter,
    /// `--source`: the snapshot belongs to one of these (any, when empty).
    pub sources: Vec<SourceSelector>,
}

impl From<SnapshotFilter> for Selection {
    fn from(filter: SnapshotFilter) -> Self {
        Self {
            filter,
            sources: Vec::new(),
        }
    }
}

impl Selection {
    /// Whether no flag narrows the selection.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Whether `snapshot` is selected.
    pub fn matches(&self, snapshot: &SnapshotInfo) -> bool {
        self.filter.matches(snapshot)
            && (self.sources.is_empty() || self.sources.iter().any(|s| s.matches(snapshot)))
    }

    /// Whether a `--tag` asks for the stored config by its tag.
    pub fn names_config(&self) -> bool {
        self.filter
            .tags
            .iter()
            .any(|set| set.0.iter().any(|tag| tag == CONFIG_TAG))
    }

    /// Whether `snapshot` may be `latest`: it is selected, and it is not a stored config unless
    /// the selection names the config's tag.
    pub fn may_be_latest(&self, snapshot: &SnapshotInfo) -> bool {
        self.matches(snapshot)
            && (self.names_config() || !snapshot.tags.iter().any(|tag| tag == CONFIG_TAG))
    }

    /// The selection as the flags that make it, for messages: `--host db1 --tag a,b`, or
    /// `all snapshots` when empty. A source shows what it stands for.
    pub fn describe(&self) -> String {
        if self.is_empty() {
            return "all snapshots".into();
        }
        let mut text = String::new();
        for host in &self.filter.hosts {
            let _ = write!(text, " --host {host}");
        }
        for tags in &self.filter.tags {
            let _ = write!(text, " --tag {}", quoted_if_empty(&tags.to_string()));
        }
        for path in &self.filter.paths {
            let _ = write!(text, " --path {}", quoted_if_empty(path));
        }
        for source in &self.sources {
            let _ = write!(
                text,
                " --source {} (host {}, tag {})",
                source.name, source.host, source.tag
            );
        }
        text.trim_start().to_owned()
    }
}

/// `''` for the empty string (`--tag ''` selects untagged snapshots), the text otherwise.
fn quoted_if_empty(text: &str) -> &str {
    if text.is_empty() { "''" } else { text }
}

/// The components of a snapshot path (`/srv/app/`, `srv/app` and `/srv//app` are the same).
fn components(path: &str) -> Vec<&str> {
    path.split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect()
}

/// Whether a snapshot of `snapshot_paths` (the backed-up paths, or a stream's name) can hold
/// `path`: it is one of them, lies below one, or is a directory above one (which the tree
/// records as the way down). The root (`/` or empty) is in every snapshot. Necessary, not
/// sufficient: a file below a backed-up directory may not have been there.
pub fn may_hold(snapshot_paths: &[String], path: &str) -> bool {
    let wanted = components(path);
    wanted.is_empty()
        || snapshot_paths.iter().any(|snapshot_path| {
            let backed_up = components(snapshot_path);
            wanted.starts_with(&backed_up) || backed_up.starts_with(&wanted)
        })
}

/// The positions in `snapshots` (oldest first, as listed) of those that may be `latest`, and
/// that may hold `path` when one is named: the order to try them in, newest first.
pub fn latest_candidates(
    selection: &Selection,
    snapshots: &[SnapshotInfo],
    path: Option<&str>,
) -> Vec<usize> {
    (0..snapshots.len())
        .rev()
        .filter(|&position| {
            let snapshot = &snapshots[position];
            selection.may_be_latest(snapshot)
                && path.is_none_or(|path| may_hold(&snapshot.paths, path))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::id::Id;
    use crate::policy::retention::TagSet;

    fn info(position: u8, host: &str, tags: &[&str], paths: &[&str]) -> SnapshotInfo {
        SnapshotInfo {
            id: Id([position; 32]),
            time: jiff::Timestamp::from_second(1_700_000_000 + i64::from(position) * 3600).unwrap(),
            host: host.into(),
            tags: tags.iter().map(|tag| (*tag).to_owned()).collect(),
            paths: paths.iter().map(|path| (*path).to_owned()).collect(),
        }
    }

    fn source(name: &str, host: &str) -> SourceSelector {
        SourceSelector {
            name: name.into(),
            host: host.into(),
            tag: format!("source:{name}"),
        }
    }

    fn tags(lists: &[&str]) -> Vec<TagSet> {
        lists.iter().map(|list| list.parse().unwrap()).collect()
    }

    #[test]
    fn one_tag_flag_needs_all_its_tags_and_several_flags_are_alternatives() {
        let both = info(1, "h", &["a", "b"], &["/srv"]);
        let only_a = info(2, "h", &["a"], &["/srv"]);
        let only_c = info(3, "h", &["c"], &["/srv"]);
        let and = Selection::from(SnapshotFilter {
            tags: tags(&["a,b"]),
            ..SnapshotFilter::default()
        });
        assert!(and.matches(&both));
        assert!(!and.matches(&only_a));
        let or = Selection::from(SnapshotFilter {
            tags: tags(&["b", "c"]),
            ..SnapshotFilter::default()
        });
        assert!(or.matches(&both));
        assert!(!or.matches(&only_a));
        assert!(or.matches(&only_c));
    }

    #[test]
    fn a_source_means_its_host_and_its_tag_and_combines_with_the_other_flags() {
        let app_here = info(1, "web1", &["source:app", "nightly"], &["app.archive"]);
        let app_elsewhere = info(2, "web2", &["source:app"], &["app.archive"]);
        let files_here = info(3, "web1", &["source:files"], &["/srv"]);
        let app = Selection {
            sources: vec![source("app", "web1")],
            ..Selection::default()
        };
        assert!(app.matches(&app_here));
        assert!(!app.matches(&app_elsewhere));
        assert!(!app.matches(&files_here));
        let either = Selection {
            sources: vec![source("app", "web1"), source("files", "web1")],
            ..Selection::default()
        };
        assert!(either.matches(&app_here) && either.matches(&files_here));
        assert!(!either.matches(&app_elsewhere));
        let app_nightly = Selection {
            filter: SnapshotFilter {
                tags: tags(&["nightly"]),
                ..SnapshotFilter::default()
            },
            sources: vec![source("app", "web1"), source("files", "web1")],
        };
        assert!(app_nightly.matches(&app_here));
        assert!(!app_nightly.matches(&files_here));
        let contradiction = Selection {
            filter: SnapshotFilter {
                hosts: vec!["web2".into()],
                ..SnapshotFilter::default()
            },
            sources: vec![source("app", "web1")],
        };
        for snapshot in [&app_here, &app_elsewhere, &files_here] {
            assert!(!contradiction.matches(snapshot));
        }
    }

    #[test]
    fn latest_passes_the_stored_config_over_unless_its_tag_is_named() {
        let data = info(1, "h", &["source:app"], &["app.archive"]);
        let config = info(2, "h", &[CONFIG_TAG], &["cairn.toml"]);
        let snapshots = [data.clone(), config.clone()];
        let everything = Selection::default();
        assert!(everything.matches(&config));
        assert!(!everything.may_be_latest(&config));
        assert_eq!(latest_candidates(&everything, &snapshots, None), [0]);
        assert!(latest_candidates(&everything, &snapshots, Some("cairn.toml")).is_empty());
        let named = Selection::from(SnapshotFilter {
            tags: tags(&[CONFIG_TAG]),
            ..SnapshotFilter::default()
        });
        assert_eq!(latest_candidates(&named, &snapshots, None), [1]);
        assert_eq!(
            latest_candidates(&named, &snapshots, Some("cairn.toml")),
            [1]
        );
        let named_among_others = Selection::from(SnapshotFilter {
            tags: tags(&["source:app", CONFIG_TAG]),
            ..SnapshotFilter::default()
        });
        assert_eq!(
            latest_candidates(&named_among_others, &snapshots, None),
            [1, 0]
        );
    }

    #[test]
    fn a_path_is_held_at_below_or_above_a_backed_up_path() {
        let paths = ["/srv/app".to_owned(), "db.archive".to_owned()];
        for held in [
            "/srv/app",
            "srv/app/",
            "/srv/app/data/x.db",
            "/srv",
            "/",
            "",
            "db.archive",
            "/db.archive",
        ] {
            assert!(may_hold(&paths, held), "{held}");
        }
        // A stream is one file and nothing lies below it, but the rule looks at paths alone:
        // the tree lookup that follows finds nothing there.
        assert!(may_hold(&paths, "db.archive/x/y"));
        for not_held in ["/srv/application", "/etc", "/srv/ap", "db"] {
            assert!(!may_hold(&paths, not_held), "{not_held}");
        }
        assert!(!may_hold(&[], "/srv"));
        assert!(may_hold(&[], "/"));
    }

    #[test]
    fn latest_candidates_are_newest_first_over_a_matrix_of_hosts_tags_and_paths() {
        let hosts = ["h1", "h2"];
        let tag_lists: [&[&str]; 3] = [&[], &["x"], &["x", "y"]];
        let path_lists: [&[&str]; 2] = [&["/a"], &["/b", "s.dump"]];
        let mut snapshots = Vec::new();
        for host in hosts {
            for tags in tag_lists {
                for paths in path_lists {
                    let position = u8::try_from(snapshots.len()).unwrap();
                    snapshots.push(info(position, host, tags, paths));
                }
            }
        }
        for host_choice in [
            vec![],
            vec!["h1".to_owned()],
            vec!["h1".into(), "h2".into()],
        ] {
            for tag_choice in [vec![], tags(&["x"]), tags(&["x,y"]), tags(&["y", ""])] {
                for path_choice in [None, Some("/a/f"), Some("s.dump"), Some("/nowhere")] {
                    let selection = Selection::from(SnapshotFilter {
                        hosts: host_choice.clone(),
                        tags: tag_choice.clone(),
                        paths: Vec::new(),
                    });
                    let chosen = latest_candidates(&selection, &snapshots, path_choice);
                    let expected: Vec<usize> = (0..snapshots.len())
                        .rev()
                        .filter(|&position| {
                            let snapshot = &snapshots[position];
                            let host_ok =
                                host_choice.is_empty() || host_choice.contains(&snapshot.host);
                            let tag_ok = tag_choice.is_empty()
                                || tag_choice.iter().any(|set| {
                                    if set.0.is_empty() {
                                        snapshot.tags.is_empty()
                                    } else {
                                        set.0.iter().all(|tag| snapshot.tags.contains(tag))
                                    }
                                });
                            let path_ok = match path_choice {
                                None => true,
                                Some("/a/f") => snapshot.paths == ["/a"],
                                Some("s.dump") => snapshot.paths.len() == 2,
                                Some(_) => false,
                            };
                            host_ok && tag_ok && path_ok
                        })
                        .collect();
                    assert_eq!(
                        chosen, expected,
                        "{host_choice:?} {tag_choice:?} {path_choice:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_selection_is_described_by_its_flags() {
        assert_eq!(Selection::default().describe(), "all snapshots");
        let selection = Selection {
            filter: SnapshotFilter {
                hosts: vec!["db1".into()],
                tags: tags(&["a,b", ""]),
                paths: vec!["/srv".into()],
            },
            sources: vec![source("app", "web1")],
        };
        assert_eq!(
            selection.describe(),
            "--host db1 --tag a,b --tag '' --path /srv --source app (host web1, tag source:app)"
        );
    }
}
