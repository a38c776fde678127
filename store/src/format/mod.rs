//! Everything about the bytes of a repository: encodings of config, key, pack, index, tree and
//! snapshot objects, the lifecycle objects of the garbage-collection protocol, and the packer that
//! gathers sealed blobs into packs. FORMAT.md is the normative description of these modules.
//!
//! Pure: nothing here does I/O. Must not import the backend, the index cache, `repo`, `ops`,
//! `policy`, rayon, tokio or `std::fs`; may import `crypto`. `tests/it/layers.rs` checks these
//! rules.

pub mod codec;
pub mod config;
pub mod envelope;
pub mod index;
pub mod lifecycle;
pub mod pack;
pub mod pack_stream;
pub mod packer;
pub mod snapshot;
pub mod tree;
