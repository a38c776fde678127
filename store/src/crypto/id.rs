//! Identifiers: 32-byte names of blobs, packs and repository objects, and their hex form.
//!
//! Pure: no I/O, no crypto beyond computing an unkeyed BLAKE3 name of stored bytes.

use std::fmt;
use std::str::FromStr;

/// A 32-byte identifier: a keyed BLAKE3 hash (blobs) or an unkeyed BLAKE3 hash of stored bytes
/// (packs, index, snapshot and key objects).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Id(pub [u8; 32]);

impl Id {
    /// Length of an id in bytes.
    pub const LEN: usize = 32;

    /// The unkeyed BLAKE3 hash of stored object bytes: the name of packs and standalone objects.
    pub fn of_stored_bytes(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// The id as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 hex digits, as shown in listings.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

/// The text is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a 64-digit hex id: {0:?}")]
pub struct ParseIdError(pub String);

impl FromStr for Id {
    type Err = ParseIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| ParseIdError(text.to_owned()))?;
        Ok(Self(bytes))
    }
}

/// What a blob holds; part of the blob's associated data and of every index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlobType {
    /// A chunk of file or stream content.
    Data,
    /// An encoded directory tree.
    Tree,
}

impl BlobType {
    /// The byte that stands for this type on disk.
    pub fn to_byte(self) -> u8 {
        match self {
            Self::Data => 0,
            Self::Tree => 1,
        }
    }

    /// The type a stored byte stands for, if any.
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(Self::Data),
            1 => Some(Self::Tree),
            _ => None,
        }
    }

    /// A lowercase name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Data => "data",
            Self::Tree => "tree",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects_bad_text() {
        let id = Id::of_stored_bytes(b"abc");
        assert_eq!(id.to_hex().parse::<Id>().unwrap(), id);
        assert!("xyz".parse::<Id>().is_err());
        assert!(id.to_hex()[..63].parse::<Id>().is_err());
        assert_eq!(id.short().len(), 8);
    }

    #[test]
    fn blob_type_bytes_round_trip() {
        for blob_type in [BlobType::Data, BlobType::Tree] {
            assert_eq!(BlobType::from_byte(blob_type.to_byte()), Some(blob_type));
        }
        assert_eq!(BlobType::from_byte(7), None);
    }
}
