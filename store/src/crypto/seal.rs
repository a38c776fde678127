//! Sealing: optional zstd compression, then XChaCha20-Poly1305 with a random 192-bit nonce.
//!
//! Pure: no I/O. Callers choose the associated data, which binds what a sealed byte string is
//! (a blob of some type and id, a snapshot, an index, ...) so that it cannot be replayed under
//! another name. The nonce is a parameter so that test vectors are reproducible; production code
//! uses [`random_nonce`].

use std::io::Read;

use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

use crate::crypto::id::{BlobType, Id};

/// Length of the `XChaCha20` nonce that starts every sealed byte string.
pub const NONCE_LEN: usize = 24;
/// Length of the Poly1305 tag that ends every sealed byte string.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed string has beyond its (possibly compressed) payload: nonce, compression byte, tag.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + 1 + TAG_LEN;

/// Compression byte: the payload is the plaintext itself.
const COMPRESSION_NONE: u8 = 0;
/// Compression byte: the payload is one zstd frame of the plaintext.
const COMPRESSION_ZSTD: u8 = 1;

/// Why a sealed byte string could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Wrong key, wrong associated data, or any changed byte. Deliberately carries no detail.
    #[error("failed verification")]
    Authentication,
    /// Authentic, but the payload does not decompress or has an unknown compression byte.
    #[error("authentic but undecodable payload")]
    Payload,
    /// The plaintext would be larger than the caller allows.
    #[error("plaintext larger than {0} bytes")]
    TooLarge(usize),
}

/// A 256-bit XChaCha20-Poly1305 key.
#[derive(Clone)]
pub struct SealKey(XChaCha20Poly1305);

impl SealKey {
    /// Wraps 32 key bytes.
    pub fn new(bytes: &[u8; 32]) -> Self {
        Self(XChaCha20Poly1305::new(bytes.into()))
    }
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

/// A fresh random nonce from the operating system's generator.
pub fn random_nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    nonce
}

/// Associated data of a blob: `"cairn blob" || type byte || id`.
pub fn blob_associated_data(blob_type: BlobType, id: &Id) -> [u8; 43] {
    let mut out = [0u8; 43];
    out[..10].copy_from_slice(b"cairn blob");
    out[10] = blob_type.to_byte();
    out[11..].copy_from_slice(&id.0);
    out
}

/// Seals `plaintext`: compresses it with zstd at `level` when that shrinks it (never when `level`
/// is `None`), prefixes the compression byte and encrypts under `key` with `nonce` and
/// `associated_data`. Output: `nonce || ciphertext || tag`.
///
/// # Panics
/// Never for inputs under 256 GiB (the AEAD's limit).
pub fn seal(
    key: &SealKey,
    nonce: [u8; NONCE_LEN],
    associated_data: &[u8],
    plaintext: &[u8],
    level: Option<i32>,
) -> Vec<u8> {
    let Some(level) = level else {
        return encrypt_parts(
            key,
            nonce,
            associated_data,
            &[&[COMPRESSION_NONE], plaintext],
        );
    };
    COMPRESSED.with(|cell| {
        let mut frame = cell.borrow_mut();
        let sealed = if compress_into(plaintext, level, &mut frame) && frame.len() < plaintext.len()
        {
            encrypt_parts(key, nonce, associated_data, &[&[COMPRESSION_ZSTD], &frame])
        } else {
            encrypt_parts(
                key,
                nonce,
                associated_data,
                &[&[COMPRESSION_NONE], plaintext],
            )
        };
        if frame.capacity() > COMPRESSED_SCRATCH_KEPT {
            *frame = Vec::new();
        }
        sealed
    })
}

/// Encrypts `message` (`compression byte || payload`, taken as it is) under `key`: the second half
/// of [`seal`], public so the fuzzer can hand [`open`] authentic but hostile payloads (unknown
/// compression bytes, zstd bombs). Writers use [`seal`].
///
/// # Panics
/// Never for inputs under 256 GiB (the AEAD's limit).
#[doc(hidden)]
pub fn seal_message(
    key: &SealKey,
    nonce: [u8; NONCE_LEN],
    associated_data: &[u8],
    message: &[u8],
) -> Vec<u8> {
    encrypt_parts(key, nonce, associated_data, &[message])
}

/// `nonce || ciphertext || tag` of the concatenation of `parts`, built in one allocation of
/// exactly its length and encrypted in place: a sealed blob waits in an open pack until the pack
/// is written, so no slack capacity and no temporary copies are left beside it.
fn encrypt_parts(
    key: &SealKey,
    nonce: [u8; NONCE_LEN],
    associated_data: &[u8],
    parts: &[&[u8]],
) -> Vec<u8> {
    let message_len: usize = parts.iter().map(|part| part.len()).sum();
    let mut out = Vec::with_capacity(NONCE_LEN + message_len + TAG_LEN);
    out.extend_from_slice(&nonce);
    for part in parts {
        out.extend_from_slice(part);
    }
    let tag = key
        .0
        .encrypt_in_place_detached(
            XNonce::from_slice(&nonce),
            associated_data,
            &mut out[NONCE_LEN..],
        )
        .expect("XChaCha20-Poly1305 encrypts any message under 256 GiB");
    out.extend_from_slice(&tag);
    out
}

/// A thread's zstd output buffer is kept for the next blob up to this capacity (a chunk's
/// compress bound); a larger one (a big tree) is freed after use.
const COMPRESSED_SCRATCH_KEPT: usize = 1 << 20;

thread_local! {
    /// One zstd output buffer per thread, reused blob after blob (see [`encrypt_parts`]).
    static COMPRESSED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

thread_local! {
    /// One zstd compression context per thread and level: creating a context costs far more than
    /// compressing one small chunk.
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

thread_local! {
    /// One zstd decompression context per thread, for the same reason.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Compresses `plaintext` into `frame` (replacing what it held); `false` when zstd fails.
fn compress_into(plaintext: &[u8], level: i32, frame: &mut Vec<u8>) -> bool {
    frame.clear();
    frame.reserve(zstd::zstd_safe::compress_bound(plaintext.len()));
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(cached, _)| *cached != level) {
            match zstd::bulk::Compressor::new(level) {
                Ok(compressor) => *slot = Some((level, compressor)),
                Err(_) => return false,
            }
        }
        slot.as_mut()
            .is_some_and(|(_, compressor)| compressor.compress_to_buffer(plaintext, frame).is_ok())
    })
}

/// Opens what [`seal`] produced. `max_plaintext` bounds the decompressed size (a hostile or
/// damaged frame cannot make this allocate more); `expected_len`, when known from an
/// authenticated index, lets decompression allocate once.
///
/// # Errors
/// [`OpenError::Authentication`] for any tampering or a wrong key, [`OpenError::Payload`] for an
/// authentic but undecodable payload, [`OpenError::TooLarge`] beyond `max_plaintext`.
pub fn open(
    key: &SealKey,
    associated_data: &[u8],
    sealed: &[u8],
    expected_len: Option<usize>,
    max_plaintext: usize,
) -> Result<Vec<u8>, OpenError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(OpenError::Authentication);
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let mut message = key
        .0
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: associated_data,
            },
        )
        .map_err(|_| OpenError::Authentication)?;
    match message.first().copied() {
        Some(COMPRESSION_NONE) => {
            if message.len() - 1 > max_plaintext {
                return Err(OpenError::TooLarge(max_plaintext));
            }
            if expected_len.is_some_and(|expected| expected != message.len() - 1) {
                return Err(OpenError::Payload);
            }
            message.remove(0);
            Ok(message)
        }
        Some(COMPRESSION_ZSTD) => decompress_bounded(&message[1..], expected_len, max_plaintext),
        _ => Err(OpenError::Payload),
    }
}

fn decompress_bounded(
    frame: &[u8],
    expected_len: Option<usize>,
    max_plaintext: usize,
) -> Result<Vec<u8>, OpenError> {
    if let Some(expected) = expected_len.filter(|expected| *expected <= max_plaintext) {
        let out = DECOMPRESSOR
            .with(|cell| {
                let mut slot = cell.borrow_mut();
                if slot.is_none() {
                    *slot = zstd::bulk::Decompressor::new().ok();
                }
                slot.as_mut()
                    .and_then(|decompressor| decompressor.decompress(frame, expected).ok())
            })
            .ok_or(OpenError::Payload)?;
        return if out.len() == expected {
            Ok(out)
        } else {
            Err(OpenError::Payload)
        };
    }
    let decoder =
        zstd::stream::read::Decoder::with_buffer(frame).map_err(|_| OpenError::Payload)?;
    let mut out = Vec::new();
    decoder
        .take(max_plaintext as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| OpenError::Payload)?;
    if out.len() > max_plaintext {
        return Err(OpenError::TooLarge(max_plaintext));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> SealKey {
        SealKey::new(&[7; 32])
    }

    #[test]
    fn compressible_input_is_compressed_and_round_trips() {
        let plaintext = vec![b'a'; 10_000];
        let sealed = seal(&key(), [1; 24], b"ad", &plaintext, Some(3));
        assert!(sealed.len() < 200);
        assert_eq!(
            open(&key(), b"ad", &sealed, None, 1 << 20).unwrap(),
            plaintext
        );
        assert_eq!(
            open(&key(), b"ad", &sealed, Some(10_000), 1 << 20).unwrap(),
            plaintext
        );
    }

    #[test]
    fn incompressible_input_is_stored_raw() {
        let mut plaintext = vec![0u8; 4096];
        blake3::Hasher::new().finalize_xof().fill(&mut plaintext);
        let sealed = seal(&key(), [1; 24], b"", &plaintext, Some(3));
        assert_eq!(sealed.len(), plaintext.len() + SEAL_OVERHEAD);
    }

    #[test]
    fn wrong_key_or_associated_data_fails() {
        let sealed = seal(&key(), [1; 24], b"ad", b"secret", Some(3));
        assert_eq!(
            open(&SealKey::new(&[8; 32]), b"ad", &sealed, None, 100),
            Err(OpenError::Authentication)
        );
        assert_eq!(
            open(&key(), b"other", &sealed, None, 100),
            Err(OpenError::Authentication)
        );
        assert_eq!(
            open(&key(), b"ad", &sealed[..10], None, 100),
            Err(OpenError::Authentication)
        );
    }

    #[test]
    fn decompression_bomb_is_bounded() {
        let plaintext = vec![0u8; 1 << 20];
        let sealed = seal(&key(), [1; 24], b"", &plaintext, Some(3));
        assert_eq!(
            open(&key(), b"", &sealed, None, 1000),
            Err(OpenError::TooLarge(1000))
        );
    }

    proptest! {
        #[test]
        fn any_flipped_bit_is_caught(plaintext in proptest::collection::vec(any::<u8>(), 0..300), position in any::<usize>(), bit in 0u8..8) {
            let sealed = seal(&key(), [3; 24], b"ad", &plaintext, Some(1));
            prop_assert_eq!(open(&key(), b"ad", &sealed, None, 1000).unwrap(), plaintext);
            let mut damaged = sealed.clone();
            let index = position % damaged.len();
            damaged[index] ^= 1 << bit;
            prop_assert_eq!(open(&key(), b"ad", &damaged, None, 1000), Err(OpenError::Authentication));
        }
    }
}
