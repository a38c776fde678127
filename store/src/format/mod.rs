//! Everything about the bytes of a repository: encodings of config, key, pack, index, tree and
//! snapshot objects. FORMAT.md is the normative description of these modules.
//!
//! Pure: nothing here does I/O, touches the backend, the cache, rayon, tokio or `std::fs`.

pub mod codec;
pub mod config;
pub mod envelope;
pub mod index;
pub mod lifecycle;
pub mod pack;
pub mod snapshot;
pub mod tree;
