//! Index objects: which blobs live in which pack, written only after those packs are stored.
//!
//! Body: `superseded count u32 || superseded index ids || pack count u32 || per pack: pack id,
//! pack length u64, entry count u32, entries`. Pure: no I/O.

use crate::crypto::id::Id;
use crate::crypto::seal::{NONCE_LEN, SealKey};
use crate::format::codec::{DecodeError, ObjectHeader, Reader, Writer};
use crate::format::envelope::{self, ObjectError};
use crate::format::pack::{ENTRY_LEN, PackEntry};

/// Magic bytes of an index object.
pub const INDEX_MAGIC: [u8; 4] = *b"CRNI";
/// Newest index version this build writes and reads.
pub const INDEX_VERSION: u16 = 1;
/// Largest index body accepted (256 MiB: about 5.9 million entries).
const MAX_INDEX_BODY: usize = 256 * 1024 * 1024;

/// One pack and its blobs, as listed in an index object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedPack {
    /// The pack's id (BLAKE3 of its bytes).
    pub pack_id: Id,
    /// The pack's length in bytes, so `check` can compare it with the listing.
    pub pack_length: u64,
    /// The blobs in the pack.
    pub entries: Vec<PackEntry>,
}

/// The decoded body of an index object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndexObject {
    /// Index objects this one replaces (written by index rewrites; empty for backups).
    pub superseded: Vec<Id>,
    /// The packs it describes.
    pub packs: Vec<IndexedPack>,
}

impl IndexObject {
    /// Seals the index into its stored bytes.
    pub fn encode(&self, key: &SealKey, level: Option<i32>, nonce: [u8; NONCE_LEN]) -> Vec<u8> {
        let mut writer = Writer::new();
        writer.count(self.superseded.len());
        for id in &self.superseded {
            writer.id(id);
        }
        writer.count(self.packs.len());
        for pack in &self.packs {
            writer
                .id(&pack.pack_id)
                .u64(pack.pack_length)
                .count(pack.entries.len());
            for entry in &pack.entries {
                entry.encode_into(&mut writer);
            }
        }
        envelope::seal_object(
            key,
            ObjectHeader {
                magic: INDEX_MAGIC,
                version: INDEX_VERSION,
            },
            &[],
            writer.as_slice(),
            level,
            nonce,
        )
    }

    /// Opens and parses a stored index object.
    ///
    /// # Errors
    /// [`ObjectError`] when it does not verify or decode.
    pub fn decode(key: &SealKey, bytes: &[u8]) -> Result<Self, ObjectError> {
        let opened = envelope::open_object(
            key,
            bytes,
            INDEX_MAGIC,
            INDEX_VERSION,
            "index",
            0,
            MAX_INDEX_BODY,
        )?;
        Ok(Self::decode_body(&opened.body)?)
    }

    /// Parses the decrypted body of an index object: the second half of [`IndexObject::decode`],
    /// public so the fuzzer reaches it without a valid tag.
    ///
    /// # Errors
    /// [`DecodeError`] for any malformed field or an entry beyond its pack.
    #[doc(hidden)]
    pub fn decode_body(body: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body);
        let superseded_count = reader.count(32, "superseded")?;
        let mut superseded = Vec::with_capacity(superseded_count);
        for _ in 0..superseded_count {
            superseded.push(reader.id("superseded id")?);
        }
        let pack_count = reader.count(32 + 8 + 4, "packs")?;
        let mut packs = Vec::with_capacity(pack_count);
        for _ in 0..pack_count {
            let pack_id = reader.id("pack id")?;
            let pack_length = reader.u64("pack length")?;
            let entry_count = reader.count(ENTRY_LEN, "entries")?;
            let mut entries = Vec::with_capacity(entry_count);
            for _ in 0..entry_count {
                let entry = PackEntry::decode_from(&mut reader)?;
                if entry.range().end > pack_length {
                    return Err(DecodeError::Invalid {
                        field: "index entry",
                        reason: "beyond the end of its pack",
                    });
                }
                entries.push(entry);
            }
            packs.push(IndexedPack {
                pack_id,
                pack_length,
                entries,
            });
        }
        reader.finish()?;
        Ok(Self { superseded, packs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::id::BlobType;

    #[test]
    fn round_trip() {
        let key = SealKey::new(&[3; 32]);
        let index = IndexObject {
            superseded: vec![Id([1; 32])],
            packs: vec![IndexedPack {
                pack_id: Id([2; 32]),
                pack_length: 1000,
                entries: vec![PackEntry {
                    blob_type: BlobType::Tree,
                    id: Id([3; 32]),
                    offset: 6,
                    length: 100,
                    raw_length: 80,
                }],
            }],
        };
        let bytes = index.encode(&key, Some(3), [0; 24]);
        assert_eq!(IndexObject::decode(&key, &bytes).unwrap(), index);
    }
}
