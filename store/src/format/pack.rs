//! Pack objects: sealed blobs back to back, followed by a sealed trailer that lists them, so the
//! index can always be rebuilt from the packs alone.
//!
//! Layout: `"CRNP" || version u16 || blob... || sealed trailer || trailer length u32`.
//! The trailer's associated data is `"cairn pack trailer" || magic || version`.
//!
//! Pure: no I/O.

use bytes::Bytes;

use crate::crypto::id::{BlobType, Id};
use crate::crypto::seal::{self, NONCE_LEN, SEAL_OVERHEAD, SealKey};
use crate::format::codec::{DecodeError, ObjectHeader, Reader, Writer};
use crate::format::envelope::ObjectError;

/// Magic bytes of a pack.
pub const PACK_MAGIC: [u8; 4] = *b"CRNP";
/// Newest pack version this build writes and reads.
pub const PACK_VERSION: u16 = 1;
/// Bytes of one encoded trailer or index entry: type, id, offset, length, raw length.
pub const ENTRY_LEN: usize = 1 + 32 + 4 + 4 + 4;
/// Length of the footer holding the sealed trailer's length.
pub const FOOTER_LEN: usize = 4;
/// Largest plaintext of any blob (a tree of a huge directory is the largest kind).
pub const MAX_BLOB_SIZE: u32 = 256 * 1024 * 1024;

const HEADER: ObjectHeader = ObjectHeader {
    magic: PACK_MAGIC,
    version: PACK_VERSION,
};

/// A blob sealed and ready to be packed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedBlob {
    /// What the blob holds.
    pub blob_type: BlobType,
    /// The blob's id (keyed hash of its plaintext).
    pub id: Id,
    /// Length of the plaintext.
    pub raw_length: u32,
    /// `nonce || ciphertext || tag`.
    pub sealed: Vec<u8>,
}

/// Where one blob sits in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    /// What the blob holds.
    pub blob_type: BlobType,
    /// The blob's id.
    pub id: Id,
    /// Offset of the sealed blob from the start of the pack.
    pub offset: u32,
    /// Length of the sealed blob.
    pub length: u32,
    /// Length of the blob's plaintext.
    pub raw_length: u32,
}

impl PackEntry {
    /// Appends the 45-byte encoding.
    pub fn encode_into(&self, writer: &mut Writer) {
        writer
            .u8(self.blob_type.to_byte())
            .id(&self.id)
            .u32(self.offset)
            .u32(self.length)
            .u32(self.raw_length);
    }

    /// Reads one entry.
    ///
    /// # Errors
    /// [`DecodeError`] when truncated or the type or lengths are invalid.
    pub fn decode_from(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let blob_type =
            BlobType::from_byte(reader.u8("blob type")?).ok_or(DecodeError::Invalid {
                field: "blob type",
                reason: "unknown",
            })?;
        let entry = Self {
            blob_type,
            id: reader.id("blob id")?,
            offset: reader.u32("blob offset")?,
            length: reader.u32("blob length")?,
            raw_length: reader.u32("blob raw length")?,
        };
        if (entry.length as usize) < SEAL_OVERHEAD || entry.raw_length > MAX_BLOB_SIZE {
            return Err(DecodeError::Invalid {
                field: "blob length",
                reason: "out of range",
            });
        }
        if (entry.offset as usize) < ObjectHeader::LEN {
            return Err(DecodeError::Invalid {
                field: "blob offset",
                reason: "inside the pack header",
            });
        }
        Ok(entry)
    }

    /// The byte range of the sealed blob within its pack.
    pub fn range(&self) -> std::ops::Range<u64> {
        u64::from(self.offset)..u64::from(self.offset) + u64::from(self.length)
    }
}

/// Associated data of a pack trailer.
fn trailer_associated_data() -> Vec<u8> {
    let mut out = b"cairn pack trailer".to_vec();
    out.extend_from_slice(&HEADER.encode());
    out
}

/// Builds a pack from blobs in the order given. Returns the pack bytes, its id (BLAKE3 of the
/// bytes) and the entries.
///
/// # Panics
/// If the pack would reach 4 GiB (packs are closed at tens of MiB).
pub fn build_pack(
    key: &SealKey,
    blobs: &[SealedBlob],
    nonce: [u8; NONCE_LEN],
) -> (Vec<u8>, Id, Vec<PackEntry>) {
    let (pieces, id, entries) = build_pack_pieces(key, blobs.to_vec(), nonce);
    (pieces.concat(), id, entries)
}

/// Like [`build_pack`], but the pack is returned as the pieces whose concatenation it is (the
/// header, each blob's own buffer, the trailer with its footer), so building a pack copies no
/// blob and never holds the pack twice.
///
/// # Panics
/// If the pack would reach 4 GiB (packs are closed at tens of MiB).
pub fn build_pack_pieces(
    key: &SealKey,
    blobs: Vec<SealedBlob>,
    nonce: [u8; NONCE_LEN],
) -> (Vec<Bytes>, Id, Vec<PackEntry>) {
    let mut hasher = blake3::Hasher::new();
    let mut pieces = Vec::with_capacity(blobs.len() + 2);
    let header = Bytes::copy_from_slice(&HEADER.encode());
    let mut length = header.len();
    hasher.update(&header);
    pieces.push(header);
    let mut entries = Vec::with_capacity(blobs.len());
    for blob in blobs {
        entries.push(PackEntry {
            blob_type: blob.blob_type,
            id: blob.id,
            offset: u32::try_from(length).expect("pack under 4 GiB"),
            length: u32::try_from(blob.sealed.len()).expect("blob under 4 GiB"),
            raw_length: blob.raw_length,
        });
        length += blob.sealed.len();
        hasher.update(&blob.sealed);
        pieces.push(Bytes::from(blob.sealed));
    }
    let mut trailer = Writer::new();
    trailer.count(entries.len());
    for entry in &entries {
        entry.encode_into(&mut trailer);
    }
    let mut sealed_trailer = seal::seal(
        key,
        nonce,
        &trailer_associated_data(),
        trailer.as_slice(),
        None,
    );
    let footer = u32::try_from(sealed_trailer.len())
        .expect("trailer under 4 GiB")
        .to_le_bytes();
    sealed_trailer.extend_from_slice(&footer);
    hasher.update(&sealed_trailer);
    pieces.push(Bytes::from(sealed_trailer));
    (pieces, Id(*hasher.finalize().as_bytes()), entries)
}

/// The byte range of the sealed trailer, given the pack length and its last 4 bytes.
///
/// # Errors
/// [`DecodeError`] when the footer points outside the pack.
pub fn trailer_range(
    pack_length: u64,
    footer: [u8; 4],
) -> Result<std::ops::Range<u64>, DecodeError> {
    let trailer_length = u64::from(u32::from_le_bytes(footer));
    let end = pack_length
        .checked_sub(FOOTER_LEN as u64)
        .ok_or(DecodeError::Truncated("pack footer"))?;
    let start = end
        .checked_sub(trailer_length)
        .filter(|start| *start >= ObjectHeader::LEN as u64)
        .ok_or(DecodeError::Invalid {
            field: "trailer length",
            reason: "points outside the pack",
        })?;
    if trailer_length < SEAL_OVERHEAD as u64 {
        return Err(DecodeError::Invalid {
            field: "trailer length",
            reason: "too short",
        });
    }
    Ok(start..end)
}

/// Opens a sealed trailer whose first byte sits at `trailer_start` in the pack, and checks that
/// every entry lies between the header and the trailer without overlapping another.
///
/// # Errors
/// [`ObjectError`] when it does not verify or an entry is out of bounds.
pub fn open_trailer(
    key: &SealKey,
    sealed_trailer: &[u8],
    trailer_start: u64,
) -> Result<Vec<PackEntry>, ObjectError> {
    let max_entries = usize::try_from(trailer_start).unwrap_or(usize::MAX) / SEAL_OVERHEAD + 1;
    let plaintext = seal::open(
        key,
        &trailer_associated_data(),
        sealed_trailer,
        None,
        4 + max_entries.saturating_mul(ENTRY_LEN),
    )?;
    Ok(decode_trailer(&plaintext, trailer_start)?)
}

/// Parses the decrypted plaintext of a trailer whose sealed form starts at `trailer_start`, and
/// checks that every entry lies between the header and the trailer without overlapping another.
/// The second half of [`open_trailer`], public so the fuzzer reaches it without a valid tag.
///
/// # Errors
/// [`DecodeError`] when it is malformed or an entry is out of bounds.
#[doc(hidden)]
pub fn decode_trailer(plaintext: &[u8], trailer_start: u64) -> Result<Vec<PackEntry>, DecodeError> {
    let mut reader = Reader::new(plaintext);
    let count = reader.count(ENTRY_LEN, "trailer entries")?;
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        entries.push(PackEntry::decode_from(&mut reader)?);
    }
    reader.finish()?;
    let mut sorted: Vec<_> = entries.iter().map(PackEntry::range).collect();
    sorted.sort_by_key(|range| range.start);
    let mut previous_end = ObjectHeader::LEN as u64;
    for range in sorted {
        if range.start < previous_end || range.end > trailer_start {
            return Err(DecodeError::Invalid {
                field: "trailer entry",
                reason: "overlaps or lies outside the blob area",
            });
        }
        previous_end = range.end;
    }
    Ok(entries)
}

/// Parses a whole pack: checks its header and returns the entries of its trailer.
///
/// # Errors
/// [`ObjectError`] for any framing or verification failure.
pub fn read_pack_entries(key: &SealKey, pack: &[u8]) -> Result<Vec<PackEntry>, ObjectError> {
    read_pack_entries_from_tail(key, pack, pack, 0, pack.len() as u64)
}

/// Like [`read_pack_entries`] for a pack read as a stream, which kept only its first bytes
/// (`head`, at least the header) and its bytes from offset `tail_start` to the end (`tail`):
/// enough when the trailer lies inside the tail.
///
/// # Errors
/// [`ObjectError`] for any framing or verification failure, including a trailer that starts
/// before `tail_start`.
pub fn read_pack_entries_from_tail(
    key: &SealKey,
    head: &[u8],
    tail: &[u8],
    tail_start: u64,
    pack_length: u64,
) -> Result<Vec<PackEntry>, ObjectError> {
    ObjectHeader::read_expected(&mut Reader::new(head), PACK_MAGIC, PACK_VERSION, "pack")?;
    let footer: [u8; 4] = tail
        .get(tail.len().saturating_sub(FOOTER_LEN)..)
        .and_then(|footer| footer.try_into().ok())
        .ok_or(DecodeError::Truncated("pack footer"))?;
    let range = trailer_range(pack_length, footer)?;
    let in_tail = |offset: u64| {
        offset
            .checked_sub(tail_start)
            .and_then(|offset| usize::try_from(offset).ok())
    };
    let sealed = in_tail(range.start)
        .zip(in_tail(range.end))
        .and_then(|(start, end)| tail.get(start..end))
        .ok_or(DecodeError::Invalid {
            field: "trailer length",
            reason: "points into the blobs",
        })?;
    open_trailer(key, sealed, range.start)
}

/// Opens one sealed blob and checks that its plaintext hashes to its id.
///
/// # Errors
/// [`seal::OpenError`] when it does not verify; the caller checks the id.
pub fn open_blob(
    key: &SealKey,
    entry: &PackEntry,
    sealed: &[u8],
) -> Result<Vec<u8>, seal::OpenError> {
    open_blob_with(key, entry, sealed, <[u8]>::to_vec)
}

/// As [`open_blob`], lending the plaintext to `use_plaintext` ([`seal::open_with`]: no
/// allocation per blob).
///
/// # Errors
/// As [`open_blob`].
pub fn open_blob_with<T>(
    key: &SealKey,
    entry: &PackEntry,
    sealed: &[u8],
    use_plaintext: impl FnOnce(&[u8]) -> T,
) -> Result<T, seal::OpenError> {
    seal::open_with(
        key,
        &seal::blob_associated_data(entry.blob_type, &entry.id),
        sealed,
        Some(entry.raw_length as usize),
        MAX_BLOB_SIZE as usize,
        use_plaintext,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(key: &SealKey, byte: u8, length: usize) -> SealedBlob {
        let plaintext = vec![byte; length];
        let id = Id([byte; 32]);
        SealedBlob {
            blob_type: BlobType::Data,
            id,
            raw_length: u32::try_from(length).unwrap(),
            sealed: seal::seal(
                key,
                [byte; 24],
                &seal::blob_associated_data(BlobType::Data, &id),
                &plaintext,
                Some(3),
            ),
        }
    }

    #[test]
    fn pack_round_trip_and_blob_open() {
        let key = SealKey::new(&[5; 32]);
        let blobs = vec![blob(&key, 1, 100), blob(&key, 2, 5000)];
        let (bytes, id, entries) = build_pack(&key, &blobs, [9; 24]);
        assert_eq!(id, Id::of_stored_bytes(&bytes));
        assert_eq!(read_pack_entries(&key, &bytes).unwrap(), entries);
        for entry in &entries {
            let range = entry.range();
            #[allow(clippy::cast_possible_truncation)]
            let plain = open_blob(
                &key,
                entry,
                &bytes[range.start as usize..range.end as usize],
            )
            .unwrap();
            assert_eq!(plain.len(), entry.raw_length as usize);
        }
    }

    #[test]
    fn truncated_or_flipped_pack_is_rejected() {
        let key = SealKey::new(&[5; 32]);
        let (bytes, _, _) = build_pack(&key, &[blob(&key, 1, 100)], [9; 24]);
        for cut in 0..bytes.len() {
            assert!(read_pack_entries(&key, &bytes[..cut]).is_err());
        }
        let trailer_start = bytes.len() - 4 - 10;
        let mut flipped = bytes.clone();
        flipped[trailer_start] ^= 1;
        assert!(read_pack_entries(&key, &flipped).is_err());
    }
}
