//! The primitive encoding every cairn structure is built from: little-endian fixed-width integers,
//! 32-byte ids, and byte strings prefixed with a `u32` length.
//!
//! Pure: no I/O. The reader never allocates more than the bytes it was given, so a hostile length
//! field cannot make it allocate without bound.

use crate::crypto::id::Id;

/// Why stored bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before a field did.
    #[error("truncated: {0} needs more bytes than are left")]
    Truncated(&'static str),
    /// Bytes were left after the last field.
    #[error("{0} unexpected trailing bytes")]
    TrailingBytes(usize),
    /// A field holds a value outside its domain.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The magic bytes do not name the expected kind of object.
    #[error("wrong magic: not a {0}")]
    WrongMagic(&'static str),
    /// The object was written by a newer format version than this build reads.
    #[error("format version {found} of {what} is newer than this build supports ({supported})")]
    UnsupportedVersion {
        /// What kind of object.
        what: &'static str,
        /// The version found.
        found: u16,
        /// The newest version this build reads.
        supported: u16,
    },
}

/// Appends encoded fields to a byte vector.
#[derive(Debug, Default)]
pub struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// A writer that appends to `bytes`.
    pub fn with_bytes(bytes: Vec<u8>) -> Self {
        Self { bytes }
    }

    /// Appends one byte.
    pub fn u8(&mut self, value: u8) -> &mut Self {
        self.bytes.push(value);
        self
    }

    /// Appends a little-endian `u16`.
    pub fn u16(&mut self, value: u16) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// Appends a little-endian `u32`.
    pub fn u32(&mut self, value: u32) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// Appends a little-endian `u64`.
    pub fn u64(&mut self, value: u64) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// Appends a little-endian two's complement `i64`.
    pub fn i64(&mut self, value: i64) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// Appends a 32-byte id.
    pub fn id(&mut self, id: &Id) -> &mut Self {
        self.bytes.extend_from_slice(&id.0);
        self
    }

    /// Appends bytes as they are, with no length.
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(bytes);
        self
    }

    /// Appends a `u32` length and then the bytes.
    ///
    /// # Panics
    /// If `bytes` is 4 GiB or longer (no cairn structure holds such a field).
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        let length = u32::try_from(bytes.len()).expect("field shorter than 4 GiB");
        self.u32(length);
        self.raw(bytes)
    }

    /// Appends a `u32` count.
    ///
    /// # Panics
    /// If `count` does not fit in a `u32`.
    pub fn count(&mut self, count: usize) -> &mut Self {
        self.u32(u32::try_from(count).expect("count fits in u32"))
    }

    /// The bytes written so far.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes
    }

    /// The finished encoding.
    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

/// Reads encoded fields from a byte slice, front to back, with bounds checks on every field.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.bytes.len()
    }

    /// Takes the next `length` bytes.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`] naming `field` when fewer are left.
    pub fn take(&mut self, length: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if length > self.bytes.len() {
            return Err(DecodeError::Truncated(field));
        }
        let (head, tail) = self.bytes.split_at(length);
        self.bytes = tail;
        Ok(head)
    }

    /// Reads a fixed number of bytes.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`].
    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    /// Reads one byte.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`].
    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    /// Reads a little-endian `u16`.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`].
    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    /// Reads a little-endian `u32`.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`].
    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    /// Reads a little-endian `u64`.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`].
    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// Reads a little-endian `i64`.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`].
    pub fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array(field)?))
    }

    /// Reads a 32-byte id.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`].
    pub fn id(&mut self, field: &'static str) -> Result<Id, DecodeError> {
        Ok(Id(self.array(field)?))
    }

    /// Reads a `u32`-length-prefixed byte string.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`] when the length exceeds what is left.
    pub fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let length = self.u32(field)? as usize;
        self.take(length, field)
    }

    /// Reads a `u32`-length-prefixed UTF-8 string.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`], or [`DecodeError::Invalid`] when not UTF-8.
    pub fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let bytes = self.bytes(field)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Invalid {
            field,
            reason: "not UTF-8",
        })
    }

    /// Reads a `u32` element count and checks that `count * min_element_size` bytes are left, so
    /// that a hostile count cannot drive an allocation.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`] when the elements cannot fit in what is left.
    pub fn count(
        &mut self,
        min_element_size: usize,
        field: &'static str,
    ) -> Result<usize, DecodeError> {
        let count = self.u32(field)? as usize;
        if count.saturating_mul(min_element_size.max(1)) > self.bytes.len() {
            return Err(DecodeError::Truncated(field));
        }
        Ok(count)
    }

    /// Checks that every byte was read.
    ///
    /// # Errors
    /// [`DecodeError::TrailingBytes`].
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.bytes.len()))
        }
    }
}

/// The 6-byte header every standalone object and pack starts with: 4 magic bytes and a `u16`
/// format version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectHeader {
    /// The 4 magic bytes naming the kind of object.
    pub magic: [u8; 4],
    /// The format version of the object.
    pub version: u16,
}

impl ObjectHeader {
    /// Length of the header in bytes.
    pub const LEN: usize = 6;

    /// Encodes the header.
    pub fn encode(&self) -> [u8; 6] {
        let mut out = [0u8; 6];
        out[..4].copy_from_slice(&self.magic);
        out[4..].copy_from_slice(&self.version.to_le_bytes());
        out
    }

    /// Reads and checks a header: the magic must be `magic` and the version at most `supported`.
    ///
    /// # Errors
    /// [`DecodeError::WrongMagic`], [`DecodeError::UnsupportedVersion`] or
    /// [`DecodeError::Truncated`].
    pub fn read_expected(
        reader: &mut Reader<'_>,
        magic: [u8; 4],
        supported: u16,
        what: &'static str,
    ) -> Result<Self, DecodeError> {
        let found_magic: [u8; 4] = reader.array("header")?;
        if found_magic != magic {
            return Err(DecodeError::WrongMagic(what));
        }
        let version = reader.u16("version")?;
        if version == 0 {
            return Err(DecodeError::Invalid {
                field: "version",
                reason: "zero",
            });
        }
        if version > supported {
            return Err(DecodeError::UnsupportedVersion {
                what,
                found: version,
                supported,
            });
        }
        Ok(Self {
            magic: found_magic,
            version,
        })
    }
}

/// The payload of extension `tag` in a tag-sorted extension list (of a tree node or a
/// snapshot), if present.
pub fn find_extension(extensions: &[(u16, Vec<u8>)], tag: u16) -> Option<&[u8]> {
    extensions
        .iter()
        .find(|(present, _)| *present == tag)
        .map(|(_, bytes)| bytes.as_slice())
}

/// Sets (or with `None` removes) extension `tag` in a tag-sorted extension list, keeping it
/// sorted.
pub fn set_extension(extensions: &mut Vec<(u16, Vec<u8>)>, tag: u16, bytes: Option<Vec<u8>>) {
    extensions.retain(|(present, _)| *present != tag);
    if let Some(bytes) = bytes {
        let position = extensions.partition_point(|(present, _)| *present < tag);
        extensions.insert(position, (tag, bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        let mut writer = Writer::new();
        writer
            .u8(1)
            .u16(2)
            .u32(3)
            .u64(4)
            .i64(-5)
            .id(&Id([9; 32]))
            .bytes(b"hi");
        let bytes = writer.finish();
        let mut reader = Reader::new(&bytes);
        assert_eq!(reader.u8("a").unwrap(), 1);
        assert_eq!(reader.u16("b").unwrap(), 2);
        assert_eq!(reader.u32("c").unwrap(), 3);
        assert_eq!(reader.u64("d").unwrap(), 4);
        assert_eq!(reader.i64("e").unwrap(), -5);
        assert_eq!(reader.id("f").unwrap(), Id([9; 32]));
        assert_eq!(reader.bytes("g").unwrap(), b"hi");
        reader.finish().unwrap();
    }

    #[test]
    fn hostile_lengths_and_counts_are_rejected_without_allocating() {
        let bytes = u32::MAX.to_le_bytes();
        assert_eq!(
            Reader::new(&bytes).bytes("name"),
            Err(DecodeError::Truncated("name"))
        );
        assert_eq!(
            Reader::new(&bytes).count(1, "entries"),
            Err(DecodeError::Truncated("entries"))
        );
    }

    #[test]
    fn header_checks_magic_and_version() {
        let header = ObjectHeader {
            magic: *b"CRNX",
            version: 2,
        }
        .encode();
        assert!(matches!(
            ObjectHeader::read_expected(&mut Reader::new(&header), *b"CRNY", 2, "y"),
            Err(DecodeError::WrongMagic("y"))
        ));
        assert!(matches!(
            ObjectHeader::read_expected(&mut Reader::new(&header), *b"CRNX", 1, "x"),
            Err(DecodeError::UnsupportedVersion { found: 2, .. })
        ));
        assert!(ObjectHeader::read_expected(&mut Reader::new(&header), *b"CRNX", 2, "x").is_ok());
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut reader = Reader::new(&[1, 2]);
        reader.u8("a").unwrap();
        assert_eq!(reader.finish(), Err(DecodeError::TrailingBytes(1)));
    }
}
