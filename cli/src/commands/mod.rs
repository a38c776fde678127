//! One module per command: parse-free glue from arguments to the library and back to the screen.

pub mod backup;
pub mod check;
pub mod completions;
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
pub mod prune;
pub mod recover;
pub mod repair;
pub mod restore;
pub mod run;
pub mod snapshots;
pub mod stats;
pub mod status;

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

/// The snapshots named by `specs` (ID, unique prefix or `latest`; each once, oldest first), or
/// every snapshot when none is named (damaged snapshot objects are warned about and skipped).
///
/// # Errors
/// A spec that resolves to no snapshot, or a failure listing them.
pub fn chosen_snapshots(
    repository: &cairn_store::Repository,
    specs: &[String],
) -> anyhow::Result<Vec<(cairn_store::Id, cairn_store::format::snapshot::Snapshot)>> {
    if specs.is_empty() {
        let (snapshots, errors) = repository.list_snapshots()?;
        for error in &errors {
            eprintln!("warning: {error}");
        }
        return Ok(snapshots);
    }
    let mut chosen = Vec::new();
    for spec in specs {
        chosen.push(repository.resolve_snapshot(spec)?);
    }
    chosen.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
    chosen.dedup_by(|a, b| a.0 == b.0);
    Ok(chosen)
}
