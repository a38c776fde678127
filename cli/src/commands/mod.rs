//! One module per command: parse-free glue from arguments to the library and back to the screen.

pub mod backup;
pub mod check;
pub mod drill;
pub mod dump;
pub mod forget;
pub mod index;
pub mod init;
pub mod key;
pub mod ls;
pub mod metrics;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod run;
pub mod snapshots;
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
    /// `cairn status`: a source is overdue or never succeeded, or the last check or drill
    /// failed (exit 16).
    Unhealthy,
}
