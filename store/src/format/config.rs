//! The repository config object: format version, repository id, chunker and packing parameters.
//!
//! Pure: no I/O. Stored at the object name `config`, written once at `init` with create-only
//! semantics.

use cairn_chunker::ChunkerParams;

use crate::crypto::seal::{NONCE_LEN, SealKey};
use crate::format::codec::{DecodeError, ObjectHeader, Reader, Writer};
use crate::format::envelope::{self, ObjectError};

/// Magic bytes of the config object.
pub const CONFIG_MAGIC: [u8; 4] = *b"CRNC";
/// The repository format version this build writes and the newest it reads.
pub const FORMAT_VERSION: u16 = 2;
/// Largest config body accepted.
const MAX_CONFIG_BODY: usize = 64 * 1024;
/// Length of the repository id.
pub const REPOSITORY_ID_LEN: usize = 16;

/// Flag byte before a recorded chunker seed in the config body.
const CHUNKER_SEED_RECORDED: u8 = 1;

/// Default target size of a pack in bytes; FORMAT.md records the reasoning.
pub const DEFAULT_PACK_TARGET_SIZE: u32 = 16 * 1024 * 1024;
/// Smallest pack target size accepted.
pub const MIN_PACK_TARGET_SIZE: u32 = 1024 * 1024;
/// Largest pack target size accepted.
pub const MAX_PACK_TARGET_SIZE: u32 = 1024 * 1024 * 1024;
/// Default zstd level for blobs.
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 3;

/// The decoded config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Format version the repository was written with.
    pub version: u16,
    /// Random id of the repository; names its local cache.
    pub repository_id: [u8; REPOSITORY_ID_LEN],
    /// Chunk size bounds.
    pub chunker: ChunkerParams,
    /// Packs are closed once they reach this many bytes.
    pub pack_target_size: u32,
    /// zstd level for blobs and objects; 0 disables compression.
    pub compression_level: i32,
    /// When the repository was created (Unix seconds).
    pub created_unix: i64,
    /// The chunker's gear-table seed when it is recorded here rather than derived from the
    /// master secret: a repository made with `init --copy-chunker-params-from` chunks exactly
    /// like its source (FORMAT.md section 8). `None`: derived, as in every repository before it.
    pub chunker_seed: Option<u64>,
}

impl Config {
    /// The zstd level to pass to sealing, `None` when compression is off.
    pub fn compression(&self) -> Option<i32> {
        (self.compression_level != 0).then_some(self.compression_level)
    }

    fn encode_body(&self) -> Vec<u8> {
        let mut writer = Writer::new();
        writer
            .u32(self.chunker.min_size)
            .u32(self.chunker.avg_size)
            .u32(self.chunker.max_size)
            .u32(self.pack_target_size)
            .i64(i64::from(self.compression_level))
            .i64(self.created_unix);
        // Optional trailing field: absent in configs that derive the seed, so those keep the
        // exact bytes every earlier build wrote and reads.
        if let Some(seed) = self.chunker_seed {
            writer.u8(CHUNKER_SEED_RECORDED).u64(seed);
        }
        writer.finish()
    }

    /// Seals the config into its stored bytes.
    pub fn encode(&self, key: &SealKey, nonce: [u8; NONCE_LEN]) -> Vec<u8> {
        envelope::seal_object(
            key,
            ObjectHeader {
                magic: CONFIG_MAGIC,
                version: self.version,
            },
            &self.repository_id,
            &self.encode_body(),
            None,
            nonce,
        )
    }

    /// Reads the format version and repository id without a key.
    ///
    /// # Errors
    /// [`DecodeError`], including [`DecodeError::UnsupportedVersion`] for a newer repository.
    pub fn peek(bytes: &[u8]) -> Result<(u16, [u8; REPOSITORY_ID_LEN]), DecodeError> {
        let (header, public) = envelope::read_public(
            bytes,
            CONFIG_MAGIC,
            FORMAT_VERSION,
            "config",
            REPOSITORY_ID_LEN,
        )?;
        let mut repository_id = [0u8; REPOSITORY_ID_LEN];
        repository_id.copy_from_slice(&public);
        Ok((header.version, repository_id))
    }

    /// Opens and parses the stored config.
    ///
    /// # Errors
    /// [`ObjectError`] when it does not verify or decode.
    pub fn decode(key: &SealKey, bytes: &[u8]) -> Result<Self, ObjectError> {
        let opened = envelope::open_object(
            key,
            bytes,
            CONFIG_MAGIC,
            FORMAT_VERSION,
            "config",
            REPOSITORY_ID_LEN,
            MAX_CONFIG_BODY,
        )?;
        let mut repository_id = [0u8; REPOSITORY_ID_LEN];
        repository_id.copy_from_slice(&opened.public);
        Ok(Self::decode_body(
            opened.header.version,
            repository_id,
            &opened.body,
        )?)
    }

    /// Parses the decrypted body of a config whose header and public fields were `version` and
    /// `repository_id`: the second half of [`Config::decode`], public so the fuzzer reaches it
    /// without a valid tag.
    ///
    /// # Errors
    /// [`DecodeError`] for any malformed or out-of-range field.
    #[doc(hidden)]
    pub fn decode_body(
        version: u16,
        repository_id: [u8; REPOSITORY_ID_LEN],
        body: &[u8],
    ) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body);
        let chunker = ChunkerParams {
            min_size: reader.u32("chunker min")?,
            avg_size: reader.u32("chunker avg")?,
            max_size: reader.u32("chunker max")?,
        };
        chunker.validate().map_err(|_| DecodeError::Invalid {
            field: "chunker",
            reason: "parameters out of range",
        })?;
        let pack_target_size = reader.u32("pack target size")?;
        if !(MIN_PACK_TARGET_SIZE..=MAX_PACK_TARGET_SIZE).contains(&pack_target_size) {
            return Err(DecodeError::Invalid {
                field: "pack target size",
                reason: "outside 1 MiB ..= 1 GiB",
            });
        }
        let compression_level =
            i32::try_from(reader.i64("compression level")?).map_err(|_| DecodeError::Invalid {
                field: "compression level",
                reason: "out of range",
            })?;
        let created_unix = reader.i64("created")?;
        let chunker_seed = if reader.remaining() == 0 {
            None
        } else {
            match reader.u8("chunker seed flag")? {
                CHUNKER_SEED_RECORDED => Some(reader.u64("chunker seed")?),
                _ => {
                    return Err(DecodeError::Invalid {
                        field: "chunker seed flag",
                        reason: "unknown",
                    });
                }
            }
        };
        reader.finish()?;
        Ok(Self {
            version,
            repository_id,
            chunker,
            pack_target_size,
            compression_level,
            created_unix,
            chunker_seed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_newer_version_refused() {
        let key = SealKey::new(&[4; 32]);
        let config = Config {
            version: FORMAT_VERSION,
            repository_id: [9; 16],
            chunker: ChunkerParams::DEFAULT,
            pack_target_size: DEFAULT_PACK_TARGET_SIZE,
            compression_level: 3,
            created_unix: 1,
            chunker_seed: None,
        };
        let bytes = config.encode(&key, [0; 24]);
        assert_eq!(Config::decode(&key, &bytes).unwrap(), config);
        let seeded = Config {
            chunker_seed: Some(0x0123_4567_89ab_cdef),
            ..config.clone()
        };
        assert_eq!(
            Config::decode(&key, &seeded.encode(&key, [0; 24])).unwrap(),
            seeded
        );
        assert_eq!(Config::peek(&bytes).unwrap(), (FORMAT_VERSION, [9; 16]));
        let mut newer = bytes.clone();
        newer[4] = 3;
        assert!(matches!(
            Config::peek(&newer),
            Err(DecodeError::UnsupportedVersion { found: 3, .. })
        ));
    }

    #[test]
    fn every_version_up_to_this_builds_is_read() {
        let key = SealKey::new(&[4; 32]);
        for version in 1..=FORMAT_VERSION {
            let config = Config {
                version,
                repository_id: [9; 16],
                chunker: ChunkerParams::DEFAULT,
                pack_target_size: DEFAULT_PACK_TARGET_SIZE,
                compression_level: 3,
                created_unix: 1,
                chunker_seed: None,
            };
            let bytes = config.encode(&key, [0; 24]);
            assert_eq!(Config::peek(&bytes).unwrap(), (version, [9; 16]));
            assert_eq!(Config::decode(&key, &bytes).unwrap(), config);
        }
    }
}
