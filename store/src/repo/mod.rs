//! The repository machinery: an open repository (config, keys, object reads and writes, blob
//! reads with verification, index sync, snapshot listing), the garbage-collection protocol
//! (`lifecycle`: sessions, prune records, the lease, append-only; `place`: where this process
//! runs and which sessions this machine started), the blob saver (dedup, parallel
//! sealing, packing, background uploads) and its per-stage timing (`pipeline_stats`), many-blob
//! fetches, and key management.
//!
//! May import the format, crypto, the backend and the index cache. Must not import the use
//! cases (`ops`) or the pure policies (`policy`): the use cases put those together. Nothing here
//! prints. `repository` does not import the modules built on it (`lifecycle`, `saver`, `fetch`,
//! `keyring`); `tests/it/layers.rs` checks these rules.

pub mod fetch;
pub mod in_order;
pub mod keyring;
pub mod lifecycle;
pub mod pipeline_stats;
pub mod place;
pub mod repository;
pub mod saver;
