//! cairn's repository library, in layers (ARCHITECTURE.md has the map, FORMAT.md the bytes):
//!
//! - [`mod@format`] and [`crypto`]: the bytes of every object, ids, keys and sealing. Pure.
//! - [`policy`]: pure decisions (retention, check sweeps, excludes, path globs, diff, find).
//! - [`backend`] (object stores) and [`index`] (the local redb cache): the I/O edges.
//! - [`repo`]: an open repository and its machinery (lifecycle protocol, saver, fetch, keys).
//! - [`ops`]: the use cases (backup, restore and dump, check, drill, forget, prune, repair,
//!   stats).
//!
//! It never prints; callers render results. The modules are also re-exported at the crate root
//! under their short names (`cairn_store::backup`, `cairn_store::retention`, ...).

pub mod backend;
pub mod crypto;
pub mod error;
pub mod format;
pub mod index;
pub mod ops;
pub mod policy;
pub mod repo;
pub mod sim;
#[cfg(test)]
pub(crate) mod test_data;
pub mod units;

pub use crypto::{compressibility, id, keys, seal};
pub use format::packer;
pub use ops::{
    archive, backup, check, copy, drill, forget, fsmeta, prune, repair, repair_config, restore,
    rewrite, sessions, stats, tag,
};
pub use policy::{
    dedup_hostile, diff, exclude, find, overwrite, pathmatch, retention, select, size_drop, sweep,
    time_sanity,
};
pub use repo::{fetch, keyring, lifecycle, pipeline_stats, repository, saver};

pub use error::{Error, ErrorKind, Result};
pub use id::{BlobType, Id};
pub use repository::{CacheLocation, InitOptions, Repository};
