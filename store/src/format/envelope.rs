//! The envelope of standalone objects (config, snapshot, index): a header, public fields, and a
//! sealed body whose associated data binds the header and the public fields.
//!
//! Layout: `magic(4) || version u16 || public fields || nonce(24) || ciphertext || tag(16)`.
//! Associated data: `"cairn object" || magic || version || public fields`.
//!
//! Pure: no I/O.

use crate::crypto::seal::{self, NONCE_LEN, OpenError, SEAL_OVERHEAD, SealKey};
use crate::format::codec::{DecodeError, ObjectHeader, Reader};

/// Why a standalone object could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectError {
    /// The bytes do not decode (wrong magic, newer version, truncated, invalid field).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The sealed body failed verification or decompression.
    #[error(transparent)]
    Open(#[from] OpenError),
}

fn associated_data(header: ObjectHeader, public: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + ObjectHeader::LEN + public.len());
    out.extend_from_slice(b"cairn object");
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(public);
    out
}

/// Builds an object: header, `public` fields in clear, and `body` sealed with `nonce`.
pub fn seal_object(
    key: &SealKey,
    header: ObjectHeader,
    public: &[u8],
    body: &[u8],
    level: Option<i32>,
    nonce: [u8; NONCE_LEN],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(ObjectHeader::LEN + public.len() + body.len() + 64);
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(public);
    out.extend_from_slice(&seal::seal(
        key,
        nonce,
        &associated_data(header, public),
        body,
        level,
    ));
    out
}

/// An opened object: its header, public fields and decrypted body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedObject {
    /// The header as stored.
    pub header: ObjectHeader,
    /// The public fields as stored.
    pub public: Vec<u8>,
    /// The decrypted, decompressed body.
    pub body: Vec<u8>,
}

/// Reads the header and public fields of `bytes` without decrypting (for fields needed before a
/// key is known, such as the repository id and format version of the config).
///
/// # Errors
/// [`DecodeError`] for wrong magic, a newer version or truncation.
pub fn read_public(
    bytes: &[u8],
    magic: [u8; 4],
    supported_version: u16,
    what: &'static str,
    public_len: usize,
) -> Result<(ObjectHeader, Vec<u8>), DecodeError> {
    let mut reader = Reader::new(bytes);
    let header = ObjectHeader::read_expected(&mut reader, magic, supported_version, what)?;
    let public = reader.take(public_len, "public fields")?.to_vec();
    if reader.remaining() < SEAL_OVERHEAD {
        return Err(DecodeError::Truncated("sealed body"));
    }
    Ok((header, public))
}

/// Opens an object of kind `magic`, with `public_len` bytes of public fields and a body of at
/// most `max_body` bytes.
///
/// # Errors
/// [`ObjectError::Decode`] for framing problems, [`ObjectError::Open`] when verification fails.
pub fn open_object(
    key: &SealKey,
    bytes: &[u8],
    magic: [u8; 4],
    supported_version: u16,
    what: &'static str,
    public_len: usize,
    max_body: usize,
) -> Result<OpenedObject, ObjectError> {
    let (header, public) = read_public(bytes, magic, supported_version, what, public_len)?;
    let sealed = &bytes[ObjectHeader::LEN + public_len..];
    let body = seal::open(
        key,
        &associated_data(header, &public),
        sealed,
        None,
        max_body,
    )?;
    Ok(OpenedObject {
        header,
        public,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_public_fields_are_bound() {
        let key = SealKey::new(&[1; 32]);
        let header = ObjectHeader {
            magic: *b"CRNT",
            version: 1,
        };
        let bytes = seal_object(&key, header, b"pub", b"body", Some(3), [2; 24]);
        let opened = open_object(&key, &bytes, *b"CRNT", 1, "test", 3, 100).unwrap();
        assert_eq!(opened.body, b"body");
        assert_eq!(opened.public, b"pub");
        let mut altered = bytes.clone();
        altered[6] ^= 1;
        assert_eq!(
            open_object(&key, &altered, *b"CRNT", 1, "test", 3, 100),
            Err(ObjectError::Open(OpenError::Authentication))
        );
        assert!(matches!(
            open_object(&key, &bytes, *b"CRNS", 1, "test", 3, 100),
            Err(ObjectError::Decode(DecodeError::WrongMagic(_)))
        ));
    }
}
