//! Names and secrets: ids (keyed BLAKE3 of blobs, plain BLAKE3 of stored objects), the key
//! hierarchy and password-wrapped key objects (Argon2id), and sealing (zstd, then
//! XChaCha20-Poly1305 with associated data) with the probe that decides whether a chunk is worth
//! zstd at all (`compressibility`), and file content hashes assembled from ranges hashed out of
//! order (`hashed_range`).
//!
//! Must not import: the backend, the index cache, `repo`, `ops`, rayon, tokio or `std::fs`, nor
//! any of the format but its codec (key objects are encoded with it).
//! Everything here is a deterministic function of its inputs and the random nonces or secrets
//! it is given or draws. `tests/it/layers.rs` checks these rules.

pub mod compressibility;
pub mod hashed_range;
pub mod id;
pub mod keys;
pub mod seal;
