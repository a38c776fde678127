//! cairn's repository library: the format (pure), crypto (pure), backends, the local index cache,
//! and the use cases backup, restore, dump, check (with its pure pack selection, `sweep`), drill,
//! forget (with its pure retention policy), prune and repair. It never prints; callers render
//! results.
//!
//! See ARCHITECTURE.md for the map and FORMAT.md for the bytes.

pub mod backend;
pub mod backup;
pub mod check;
pub mod dedup_hostile;
pub mod diff;
pub mod drill;
pub mod error;
pub mod exclude;
pub mod fetch;
pub mod find;
pub mod forget;
pub mod format;
pub mod id;
pub mod index;
pub mod keyring;
pub mod keys;
pub mod lifecycle;
pub mod packer;
pub mod pathmatch;
pub mod prune;
pub mod repair;
pub mod repository;
pub mod restore;
pub mod retention;
pub mod saver;
pub mod seal;
pub mod stats;
pub mod sweep;

pub use error::{Error, ErrorKind, Result};
pub use id::{BlobType, Id};
pub use repository::{CacheLocation, InitOptions, Repository};
