//! One module per command: parse-free glue from arguments to the library and back to the screen.

pub mod backup;
pub mod check;
pub mod completions;
pub mod diff;
pub mod drill;
pub mod dump;
pub mod forget;
pub mod index;
pub mod init;
pub mod key;
pub mod ls;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod snapshots;
pub mod stats;

/// How a command that did not fail ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// Everything done.
    Done,
    /// Backup done, some source entries unreadable (exit 3).
    Partial,
}
