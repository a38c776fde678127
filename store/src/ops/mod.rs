//! The use cases: backup (and how it starts: `backup_start`), restore and dump, check, drill, forget, prune, repair, rewrite, stats
//! and tag, and
//! the backup sessions this machine can prove ended (`sessions`). Each
//! orchestrates the repository machinery (`repo`) and the pure policies (`policy`), and reports
//! through callback traits and returned outcomes.
//!
//! Must not print (no stdout or stderr) and must not depend on the command line. Nothing below
//! `ops` imports it; `tests/it/layers.rs` checks that rule.

pub mod archive;
pub mod backup;
pub mod backup_start;
pub mod check;
pub mod copy;
pub(crate) mod copy_packs;
pub mod drill;
pub mod forget;
pub mod fsmeta;
pub mod longpath;
pub mod prune;
pub mod repair;
pub mod repair_config;
pub mod restore;
pub(crate) mod restore_packs;
pub mod rewrite;
pub mod sessions;
pub mod stats;
pub mod tag;
