//! One module per command: parse-free glue from arguments to the library and back to the screen.

pub mod backup;
pub mod check;
pub mod completions;
pub mod copy;
pub mod diff;
pub mod drill;
pub mod dump;
pub mod find;
pub mod forget;
pub mod index;
pub mod init;
pub mod key;
pub mod ls;
pub mod metrics;
pub mod mount;
pub mod prune;
pub mod recover;
pub mod repair;
pub mod restore;
pub mod rewrite;
pub mod run;
pub mod run_copies;
pub mod snapshots;
pub mod stats;
pub mod status;
pub mod tag;

use std::cell::OnceCell;
use std::fmt::Write;
use std::path::Path;

use anyhow::Result;
use cairn_store::format::snapshot::Snapshot;
use cairn_store::retention::{SnapshotFilter, SnapshotInfo};
use cairn_store::select::{self, Selection, SourceSelector};
use cairn_store::{Id, Repository};

use crate::args::SelectionArgs;
use crate::config::{Config, ConfigError, source_tag};

/// How a command that did not fail ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// Everything done.
    Done,
    /// Backup done, some source entries unreadable (exit 3).
    Partial,
    /// `cairn run`: a source, hook or step failed; the others ran (exit 17).
    RunFailed,
    /// `cairn recover`: a source could not be recovered (no snapshot, no destination, its
    /// restore command failed, or it did not verify); the others were (exit 19).
    RecoverFailed,
    /// `cairn status`: a source is overdue or never succeeded, or the last check or drill
    /// failed (exit 16).
    Unhealthy,
}

/// No snapshot matches the id, `latest` or the selection, or the snapshot does not hold the
/// named path (exit 20). The message names the snapshot and the selection searched.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NoMatch(pub String);

/// The [`Selection`] the flags make; `--source` names sources of `config` (its host and tag).
///
/// # Errors
/// `--source` without a config, or naming a source the config does not have (usage errors).
pub fn selection(args: &SelectionArgs, config: Option<&Config>) -> Result<Selection> {
    let mut sources = Vec::new();
    if !args.sources.is_empty() {
        let Some(config) = config else {
            return Err(ConfigError::usage(
                Path::new(""),
                "",
                format!(
                    "--source names a source of a config file: give --config (or select its \
                     snapshots with --tag {})",
                    source_tag(&args.sources[0])
                ),
            )
            .into());
        };
        let host = metrics::config_host(config);
        let named = config
            .select(&args.sources)
            .map_err(|message| ConfigError::usage(Path::new(""), "--source", message))?;
        sources = named
            .into_iter()
            .map(|(name, _)| SourceSelector {
                name: name.to_owned(),
                host: host.clone(),
                tag: source_tag(name),
            })
            .collect();
    }
    Ok(Selection {
        filter: SnapshotFilter {
            hosts: args.hosts.clone(),
            tags: args.tags.clone(),
            paths: args.paths.clone(),
        },
        sources,
    })
}

/// A decoded snapshot and its id.
pub type ChosenSnapshot = (Id, Snapshot);

/// Resolves snapshot specs (`latest`, an id, a unique id prefix) within a selection: the one
/// place every command turns its arguments into snapshots. Lists the repository's snapshots
/// once, when first needed.
pub struct Chooser<'repo> {
    repository: &'repo Repository,
    selection: Selection,
    listing: OnceCell<(Vec<ChosenSnapshot>, Vec<SnapshotInfo>)>,
    /// Set once the index is synced: reading a tree needs it (a fresh or absent cache knows no
    /// blob until then).
    index_synced: OnceCell<()>,
}

impl<'repo> Chooser<'repo> {
    /// A chooser of `repository`'s snapshots within `selection`.
    pub fn new(repository: &'repo Repository, selection: Selection) -> Self {
        Self {
            repository,
            selection,
            listing: OnceCell::new(),
            index_synced: OnceCell::new(),
        }
    }

    /// Every readable snapshot (oldest first) and its facts; damaged snapshot objects are
    /// warned about once and skipped.
    fn listing(&self) -> Result<&(Vec<ChosenSnapshot>, Vec<SnapshotInfo>)> {
        if let Some(listing) = self.listing.get() {
            return Ok(listing);
        }
        let (snapshots, errors) = self.repository.list_snapshots()?;
        for error in &errors {
            eprintln!(
                "warning: {error} (`cairn forget {}` removes it)",
                forget::unreadable_id(error)
            );
        }
        let infos = snapshots
            .iter()
            .map(|(id, snapshot)| SnapshotInfo::from_snapshot(*id, snapshot))
            .collect();
        Ok(self.listing.get_or_init(|| (snapshots, infos)))
    }

    /// Every selected snapshot, oldest first (stored configs included: they are snapshots).
    ///
    /// # Errors
    /// Listing the snapshots failed.
    pub fn selected(&self) -> Result<Vec<ChosenSnapshot>> {
        let (snapshots, infos) = self.listing()?;
        Ok(snapshots
            .iter()
            .zip(infos)
            .filter(|(_, info)| self.selection.matches(info))
            .map(|(chosen, _)| chosen.clone())
            .collect())
    }

    /// The snapshots named by `specs` (each once, oldest first), or every selected snapshot
    /// when none is named.
    ///
    /// # Errors
    /// A spec that resolves to no selected snapshot ([`NoMatch`]), or a failure listing them.
    pub fn named_or_selected(&self, specs: &[String]) -> Result<Vec<ChosenSnapshot>> {
        if specs.is_empty() {
            return self.selected();
        }
        let mut chosen = Vec::new();
        for spec in specs {
            chosen.push(self.one(spec)?);
        }
        chosen.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        chosen.dedup_by(|a, b| a.0 == b.0);
        Ok(chosen)
    }

    /// The snapshot `spec` names: `latest` is the newest selected one (never a stored config
    /// unless `--tag cairn:config` asks for it); an id must be selected.
    ///
    /// # Errors
    /// [`NoMatch`] naming the spec and the selection, an ambiguous prefix, or a failure reading
    /// the snapshots.
    pub fn one(&self, spec: &str) -> Result<ChosenSnapshot> {
        self.holding(spec, None)
    }

    /// The snapshot `spec` names that holds `path` (a file, directory or stream name; none: the
    /// whole snapshot). `latest` is the newest selected snapshot that holds it.
    ///
    /// # Errors
    /// [`NoMatch`] naming the snapshot, the path and the selection searched; an ambiguous
    /// prefix; or a failure reading snapshots or trees.
    pub fn holding(&self, spec: &str, path: Option<&str>) -> Result<ChosenSnapshot> {
        let path = path.filter(|path| !path.trim_matches('/').is_empty());
        if spec == "latest" {
            return self.latest_holding(path);
        }
        let (id, snapshot) =
            self.repository
                .resolve_snapshot(spec)
                .map_err(|error| match error {
                    cairn_store::Error::SnapshotNotFound(_) => {
                        anyhow::Error::new(NoMatch(format!("no snapshot matches {spec:?}")))
                    }
                    other => other.into(),
                })?;
        if !self
            .selection
            .matches(&SnapshotInfo::from_snapshot(id, &snapshot))
        {
            return Err(NoMatch(format!(
                "snapshot {} (host {}, tags {}, paths {}) is not among {}",
                id.short(),
                snapshot.host,
                shown_list(&snapshot.tags, ","),
                shown_list(&snapshot.source.names(), " "),
                self.selection.describe()
            ))
            .into());
        }
        if let Some(path) = path
            && !self.holds(&snapshot, path)?
        {
            return Err(NoMatch(format!(
                "snapshot {} holds no {path} (its paths: {})",
                id.short(),
                shown_list(&snapshot.source.names(), " ")
            ))
            .into());
        }
        Ok((id, snapshot))
    }

    /// `latest`, or the newest selected snapshot that holds `path`.
    fn latest_holding(&self, path: Option<&str>) -> Result<ChosenSnapshot> {
        let (snapshots, infos) = self.listing()?;
        for position in select::latest_candidates(&self.selection, infos, path) {
            let (id, snapshot) = &snapshots[position];
            if let Some(path) = path
                && !self.holds(snapshot, path)?
            {
                continue;
            }
            return Ok((*id, snapshot.clone()));
        }
        let selected = infos
            .iter()
            .filter(|info| self.selection.may_be_latest(info))
            .count();
        let what = match path {
            None => "no snapshot".to_owned(),
            Some(path) => format!("no snapshot holds {path}"),
        };
        let mut message = format!(
            "latest: {what} among {} ({selected} of {} snapshots selected)",
            self.selection.describe(),
            infos.len()
        );
        let config_would_do = !self.selection.names_config()
            && infos.iter().any(|info| {
                info.tags.iter().any(|tag| tag == select::CONFIG_TAG)
                    && self.selection.matches(info)
                    && path.is_none_or(|path| select::may_hold(&info.paths, path))
            });
        if config_would_do {
            let _ = write!(
                message,
                "; `latest` passes stored configs over: add --tag {} to choose them",
                select::CONFIG_TAG
            );
        }
        Err(NoMatch(message).into())
    }

    /// Whether `path` is in `snapshot`'s tree.
    fn holds(&self, snapshot: &Snapshot, path: &str) -> Result<bool> {
        if !select::may_hold(&snapshot.source.names(), path) {
            return Ok(false);
        }
        if self.index_synced.get().is_none() {
            self.repository.sync_index()?;
            let _ = self.index_synced.set(());
        }
        match self.repository.find_node(&snapshot.root, path) {
            Ok(_) => Ok(true),
            Err(cairn_store::Error::PathNotFound(_)) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }
}

/// `a,b` (or `-` when empty) for a message.
fn shown_list(items: &[String], separator: &str) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(separator)
    }
}
