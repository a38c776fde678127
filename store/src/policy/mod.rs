//! Pure decisions: which snapshots a policy keeps (`retention`), which packs a check reads
//! (`sweep`), which entries a backup leaves out or warns about (`exclude`, `dedup_hostile`,
//! `size_drop`), which snapshot times cannot be right (`time_sanity`), which snapshot
//! paths a glob matches (`pathmatch`), and how two trees or a pattern walk compare (`diff`,
//! `find`), which snapshots a command chooses and which of them is `latest` (`select`),
//! when another client's session is proven gone (`liveness`), what a restore does with what
//! already stands in its target (`overwrite`), when a backup must look for packs an unfinished
//! run left unindexed (`orphan_scan`), in which order `copy` reads and hashes file contents
//! (`copy_order`).
//!
//! Must not import: the backend, the index cache, the repository machinery (`repo`), the use
//! cases (`ops`), the crate's error type, rayon, tokio or `std::fs`, and must not read a clock.
//! Each module is a set of functions over values (snapshots, trees from a loader closure,
//! metadata the walker already read), tested with values built in memory. `tests/it/layers.rs`
//! checks these rules.

pub mod copy_order;
pub mod dedup_hostile;
pub mod diff;
pub mod exclude;
pub mod find;
pub mod liveness;
pub mod orphan_scan;
pub mod overwrite;
pub mod pathmatch;
pub mod retention;
pub mod select;
pub mod size_drop;
pub mod sweep;
pub mod time_sanity;
