//! The key hierarchy: a random 32-byte master secret, the keys derived from it, and key objects
//! that wrap the master secret under a password-derived key (Argon2id).
//!
//! Pure: no I/O. Randomness (salt, nonce, master secret) is passed in or drawn from the OS
//! generator by the explicit `generate`/`random_*` constructors.

use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;

use crate::crypto::hashed_range::HashedRange;
use crate::crypto::id::{BlobType, Id};
use crate::crypto::seal::{self, NONCE_LEN, OpenError, SealKey};
use crate::format::codec::{DecodeError, ObjectHeader, Reader, Writer};

/// BLAKE3 `derive_key` context of the blob and object encryption key.
pub const CONTEXT_DATA_KEY: &str = "cairn 2026-11 data encryption key";
/// BLAKE3 `derive_key` context of the key that names data chunks (and whole-file hashes).
pub const CONTEXT_CHUNK_ID_KEY: &str = "cairn 2026-11 chunk id key";
/// BLAKE3 `derive_key` context of the key that names tree blobs.
pub const CONTEXT_TREE_ID_KEY: &str = "cairn 2026-11 tree id key";
/// BLAKE3 `derive_key` context of the chunker seed (first 8 bytes, little-endian).
pub const CONTEXT_CHUNKER_SEED: &str = "cairn 2026-11 chunker seed";

/// The secret every other key of a repository is derived from.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterSecret(pub [u8; 32]);

impl MasterSecret {
    /// A fresh random master secret.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }
}

impl std::fmt::Debug for MasterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterSecret(..)")
    }
}

/// The working keys of an open repository.
#[derive(Debug, Clone)]
pub struct RepositoryKeys {
    /// Encrypts every blob and object.
    pub data_key: SealKey,
    chunk_id_key: [u8; 32],
    tree_id_key: [u8; 32],
    /// Seeds the chunker's gear table.
    pub chunker_seed: u64,
}

impl RepositoryKeys {
    /// Derives the working keys from the master secret.
    pub fn derive(master: &MasterSecret) -> Self {
        let data_key = blake3::derive_key(CONTEXT_DATA_KEY, &master.0);
        let seed_bytes = blake3::derive_key(CONTEXT_CHUNKER_SEED, &master.0);
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&seed_bytes[..8]);
        Self {
            data_key: SealKey::new(&data_key),
            chunk_id_key: blake3::derive_key(CONTEXT_CHUNK_ID_KEY, &master.0),
            tree_id_key: blake3::derive_key(CONTEXT_TREE_ID_KEY, &master.0),
            chunker_seed: u64::from_le_bytes(seed),
        }
    }

    /// The id of a blob: keyed BLAKE3 of its plaintext, with a key per blob type so that a data
    /// chunk and a tree with identical bytes never share an id.
    pub fn blob_id(&self, blob_type: BlobType, plaintext: &[u8]) -> Id {
        let key = match blob_type {
            BlobType::Data => &self.chunk_id_key,
            BlobType::Tree => &self.tree_id_key,
        };
        Id(*blake3::keyed_hash(key, plaintext).as_bytes())
    }

    /// A hasher for whole-file content hashes (keyed like data chunks).
    pub fn file_hasher(&self) -> blake3::Hasher {
        blake3::Hasher::new_keyed(&self.chunk_id_key)
    }

    /// An empty range at byte `start` of a file's content, hashed like
    /// [`RepositoryKeys::file_hasher`] but out of order (see [`HashedRange`]).
    pub fn file_hash_range(&self, start: u64) -> HashedRange {
        HashedRange::new(&self.chunk_id_key, start)
    }
}

/// Argon2id cost parameters of a key object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl KdfParams {
    /// Defaults for new keys; FORMAT.md records the measurement behind them.
    pub const DEFAULT: Self = Self {
        memory_kib: 64 * 1024,
        iterations: 3,
        parallelism: 4,
    };
    /// Upper bound on memory accepted from a stored key object (1 GiB), so a hostile key object
    /// cannot make opening allocate without bound.
    pub const MAX_MEMORY_KIB: u32 = 1024 * 1024;
    /// Upper bound on iterations accepted from a stored key object.
    pub const MAX_ITERATIONS: u32 = 64;
    /// Upper bound on lanes accepted from a stored key object.
    pub const MAX_PARALLELISM: u32 = 64;

    fn check(self) -> Result<Params, DecodeError> {
        let invalid = |reason| DecodeError::Invalid {
            field: "kdf parameters",
            reason,
        };
        if self.memory_kib > Self::MAX_MEMORY_KIB
            || self.iterations > Self::MAX_ITERATIONS
            || self.parallelism > Self::MAX_PARALLELISM
        {
            return Err(invalid("above the accepted maximum"));
        }
        Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|_| invalid("rejected by Argon2id"))
    }
}

impl Default for KdfParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a key object could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The password does not unwrap this key object (or the object was altered).
    #[error("wrong password")]
    WrongPassword,
    /// The key object's bytes do not decode.
    #[error("malformed key object: {0}")]
    Malformed(#[from] DecodeError),
}

/// Magic bytes of a key object.
pub const KEY_MAGIC: [u8; 4] = *b"CRNK";
/// Newest key object version this build writes and reads.
pub const KEY_VERSION: u16 = 1;
/// KDF identifier of Argon2id version 0x13.
const KDF_ARGON2ID: u8 = 1;
/// Length of the wrapped master secret: 32 bytes, the compression byte, the tag.
const WRAPPED_LEN: usize = 32 + 1 + seal::TAG_LEN;

/// A key object: the master secret wrapped under a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyObject {
    /// Argon2id cost parameters.
    pub kdf: KdfParams,
    /// Argon2id salt.
    pub salt: [u8; 16],
    /// When the key was added (Unix seconds).
    pub created_unix: i64,
    /// Host name of the machine that added the key (for `key list`).
    pub host: String,
    /// `nonce || wrapped master secret || tag`.
    sealed_secret: Vec<u8>,
}

impl KeyObject {
    /// Wraps `master` under `password` with fresh random salt and nonce.
    ///
    /// # Errors
    /// [`KeyError::Malformed`] when `kdf` is outside the accepted bounds.
    pub fn wrap(
        master: &MasterSecret,
        password: &[u8],
        kdf: KdfParams,
        host: &str,
        created_unix: i64,
    ) -> Result<Self, KeyError> {
        let mut salt = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        Self::wrap_with(
            master,
            password,
            kdf,
            host,
            created_unix,
            salt,
            seal::random_nonce(),
        )
    }

    /// [`KeyObject::wrap`] with explicit salt and nonce (test vectors).
    ///
    /// # Errors
    /// [`KeyError::Malformed`] when `kdf` is outside the accepted bounds.
    pub fn wrap_with(
        master: &MasterSecret,
        password: &[u8],
        kdf: KdfParams,
        host: &str,
        created_unix: i64,
        salt: [u8; 16],
        nonce: [u8; NONCE_LEN],
    ) -> Result<Self, KeyError> {
        let host: String = host.chars().take(255).collect();
        let mut object = Self {
            kdf,
            salt,
            created_unix,
            host,
            sealed_secret: Vec::new(),
        };
        let wrapping_key = derive_wrapping_key(password, kdf, &salt)?;
        object.sealed_secret = seal::seal(
            &wrapping_key,
            nonce,
            &object.associated_data(),
            &master.0,
            None,
        );
        Ok(object)
    }

    /// Unwraps the master secret with `password`.
    ///
    /// # Errors
    /// [`KeyError::WrongPassword`] when the password (or any byte of the object) is wrong.
    pub fn unwrap(&self, password: &[u8]) -> Result<MasterSecret, KeyError> {
        let wrapping_key = derive_wrapping_key(password, self.kdf, &self.salt)?;
        let secret = seal::open(
            &wrapping_key,
            &self.associated_data(),
            &self.sealed_secret,
            None,
            32,
        )
        .map_err(|_: OpenError| KeyError::WrongPassword)?;
        let secret: [u8; 32] = secret.try_into().map_err(|_| KeyError::WrongPassword)?;
        Ok(MasterSecret(secret))
    }

    /// Everything before the sealed secret; bound as associated data so no field can be altered.
    fn associated_data(&self) -> Vec<u8> {
        let mut writer = Writer::new();
        writer
            .raw(
                &ObjectHeader {
                    magic: KEY_MAGIC,
                    version: KEY_VERSION,
                }
                .encode(),
            )
            .u8(KDF_ARGON2ID)
            .u32(self.kdf.memory_kib)
            .u32(self.kdf.iterations)
            .u32(self.kdf.parallelism)
            .raw(&self.salt)
            .i64(self.created_unix)
            .bytes(self.host.as_bytes());
        writer.finish()
    }

    /// The stored bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::with_bytes(self.associated_data());
        writer.raw(&self.sealed_secret);
        writer.finish()
    }

    /// Parses stored bytes.
    ///
    /// # Errors
    /// [`DecodeError`] for any malformed field or a newer version.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        ObjectHeader::read_expected(&mut reader, KEY_MAGIC, KEY_VERSION, "key object")?;
        if reader.u8("kdf")? != KDF_ARGON2ID {
            return Err(DecodeError::Invalid {
                field: "kdf",
                reason: "unknown key derivation function",
            });
        }
        let kdf = KdfParams {
            memory_kib: reader.u32("kdf memory")?,
            iterations: reader.u32("kdf iterations")?,
            parallelism: reader.u32("kdf parallelism")?,
        };
        kdf.check()?;
        let mut salt = [0u8; 16];
        salt.copy_from_slice(reader.take(16, "salt")?);
        let created_unix = reader.i64("created")?;
        let host = reader.string("host")?;
        if host.chars().count() > 255 {
            return Err(DecodeError::Invalid {
                field: "host",
                reason: "longer than 255 characters",
            });
        }
        let sealed_secret = reader
            .take(NONCE_LEN + WRAPPED_LEN, "wrapped secret")?
            .to_vec();
        reader.finish()?;
        Ok(Self {
            kdf,
            salt,
            created_unix,
            host,
            sealed_secret,
        })
    }
}

fn derive_wrapping_key(
    password: &[u8],
    kdf: KdfParams,
    salt: &[u8; 16],
) -> Result<SealKey, KeyError> {
    let params = kdf.check()?;
    let mut out = [0u8; 32];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(password, salt, &mut out)
        .map_err(|_| {
            KeyError::Malformed(DecodeError::Invalid {
                field: "kdf parameters",
                reason: "rejected by Argon2id",
            })
        })?;
    Ok(SealKey::new(&out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: KdfParams = KdfParams {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };

    #[test]
    fn wrap_unwrap_round_trip_and_wrong_password() {
        let master = MasterSecret::generate();
        let object = KeyObject::wrap(&master, b"pw", CHEAP, "host", 5).unwrap();
        let decoded = KeyObject::decode(&object.encode()).unwrap();
        assert_eq!(decoded, object);
        assert_eq!(decoded.unwrap(b"pw").unwrap(), master);
        assert_eq!(decoded.unwrap(b"px"), Err(KeyError::WrongPassword));
    }

    #[test]
    fn altered_fields_are_caught() {
        let master = MasterSecret::generate();
        let bytes = KeyObject::wrap(&master, b"pw", CHEAP, "h", 5)
            .unwrap()
            .encode();
        for index in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[index] ^= 0x01;
            let outcome = KeyObject::decode(&damaged).map(|object| object.unwrap(b"pw"));
            assert!(
                !matches!(outcome, Ok(Ok(_))),
                "flip at {index} went unnoticed"
            );
        }
    }

    #[test]
    fn hostile_kdf_cost_is_refused() {
        let master = MasterSecret::generate();
        let mut bytes = KeyObject::wrap(&master, b"pw", CHEAP, "h", 5)
            .unwrap()
            .encode();
        bytes[7..11].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(KeyObject::decode(&bytes).is_err());
    }

    #[test]
    fn blob_ids_are_separated_by_type() {
        let keys = RepositoryKeys::derive(&MasterSecret([1; 32]));
        assert_ne!(
            keys.blob_id(BlobType::Data, b"x"),
            keys.blob_id(BlobType::Tree, b"x")
        );
    }
}
