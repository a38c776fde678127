//! Sealing: optional zstd compression, then XChaCha20-Poly1305 with a random 192-bit nonce.
//!
//! Pure: no I/O. Callers choose the associated data, which binds what a sealed byte string is
//! (a blob of some type and id, a snapshot, an index, ...) so that it cannot be replayed under
//! another name. The nonce is a parameter so that test vectors are reproducible; production code
//! uses [`random_nonce`].

use std::io::Read;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
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
    // One buffer of the exact final size, `nonce || compression byte || payload`, encrypted in
    // place and closed by the tag: a chunk is copied once on its way out (its zstd frame, or
    // itself when stored raw), and a sealed blob waiting in a pack holds no unused room.
    let assemble = |compression: u8, payload: &[u8]| {
        let mut out = Vec::with_capacity(SEAL_OVERHEAD + payload.len());
        out.extend_from_slice(&nonce);
        out.push(compression);
        out.extend_from_slice(payload);
        encrypt_in_place(key, associated_data, &mut out);
        out
    };
    level
        .and_then(|level| {
            with_shrinking_frame(plaintext, level, |frame| assemble(COMPRESSION_ZSTD, frame))
        })
        .unwrap_or_else(|| assemble(COMPRESSION_NONE, plaintext))
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
    let mut out = Vec::with_capacity(NONCE_LEN + message.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(message);
    encrypt_in_place(key, associated_data, &mut out);
    out
}

/// Encrypts `buffer[NONCE_LEN..]` in place under the nonce `buffer[..NONCE_LEN]` and appends the
/// tag: the same bytes [`seal_message`] returns, without a second buffer.
fn encrypt_in_place(key: &SealKey, associated_data: &[u8], buffer: &mut Vec<u8>) {
    let (nonce, message) = buffer.split_at_mut(NONCE_LEN);
    let tag = key
        .0
        .encrypt_in_place_detached(XNonce::from_slice(nonce), associated_data, message)
        .expect("XChaCha20-Poly1305 encrypts any message under 256 GiB");
    buffer.extend_from_slice(&tag);
}

thread_local! {
    /// One zstd compression context per thread and level: creating a context costs far more than
    /// compressing one small chunk.
    /// The frame buffer beside it is reused too.
    #[allow(clippy::type_complexity)]
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>, Vec<u8>)>> =
        const { std::cell::RefCell::new(None) };
}

thread_local! {
    /// One zstd decompression context per thread, for the same reason.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Calls `use_frame` with the zstd frame of `plaintext` at `level` when that frame is shorter
/// than `plaintext`; `None` when it is not (or zstd fails).
fn with_shrinking_frame<T>(
    plaintext: &[u8],
    level: i32,
    use_frame: impl FnOnce(&[u8]) -> T,
) -> Option<T> {
    /// A frame buffer at most this large stays with its thread for the next chunk.
    const KEEP_FRAME_BUFFER: usize = 1 << 20;
    if plaintext.is_empty() {
        return None;
    }
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(cached, _, _)| *cached != level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level).ok()?, Vec::new()));
        }
        let (_, compressor, frame) = slot.as_mut()?;
        // zstd writes into the buffer's capacity and stops with an error when the frame does
        // not fit: room for one byte less than the plaintext is all a useful frame needs.
        frame.clear();
        frame.reserve_exact(plaintext.len() - 1);
        let written = compressor.compress_to_buffer(plaintext, frame).ok();
        let result = written
            .filter(|&written| written < plaintext.len())
            .map(|_| use_frame(frame));
        if frame.capacity() > KEEP_FRAME_BUFFER {
            *frame = Vec::new();
        }
        result
    })
}

thread_local! {
    /// The buffers [`open_with`] decrypts and decompresses into, reused by the thread's next
    /// blob: opening 8 KiB blobs by the ten thousand, an allocation, a copy and the page faults
    /// of fresh memory per blob are a visible share of the work. Taken out while in use, so a
    /// nested open on the same thread (a callback that opens another blob) gets buffers of its
    /// own instead of a second borrow.
    static OPEN_BUFFERS: std::cell::Cell<OpenBuffers> = const { std::cell::Cell::new(OpenBuffers::EMPTY) };
}

/// The message (decrypted in place) and plaintext (decompressed into) buffers of [`open_with`].
#[derive(Default)]
struct OpenBuffers {
    message: Vec<u8>,
    plaintext: Vec<u8>,
}

impl OpenBuffers {
    const EMPTY: Self = Self {
        message: Vec::new(),
        plaintext: Vec::new(),
    };

    /// A buffer at most this large stays with its thread for the next blob.
    const KEEP: usize = 4 << 20;

    /// Drops a buffer grown past [`Self::KEEP`] (one oversized blob does not pin its memory).
    fn trimmed(mut self) -> Self {
        for buffer in [&mut self.message, &mut self.plaintext] {
            if buffer.capacity() > Self::KEEP {
                *buffer = Vec::new();
            }
        }
        self
    }
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
    open_with(
        key,
        associated_data,
        sealed,
        expected_len,
        max_plaintext,
        <[u8]>::to_vec,
    )
}

/// As [`open`], but lends the plaintext to `use_plaintext` instead of returning it: the
/// ciphertext is decrypted in place in a buffer of the thread's and decompressed into another,
/// both kept for the thread's next call, so a caller that only looks at the plaintext (hashes
/// it, writes it) costs no allocation per call. `use_plaintext` runs only on authentic,
/// decodable plaintext of the expected length.
///
/// # Errors
/// As [`open`].
pub fn open_with<T>(
    key: &SealKey,
    associated_data: &[u8],
    sealed: &[u8],
    expected_len: Option<usize>,
    max_plaintext: usize,
    use_plaintext: impl FnOnce(&[u8]) -> T,
) -> Result<T, OpenError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(OpenError::Authentication);
    }
    let mut buffers = OPEN_BUFFERS.take();
    let result = open_in(
        key,
        associated_data,
        sealed,
        expected_len,
        max_plaintext,
        &mut buffers,
    )
    .map(use_plaintext);
    OPEN_BUFFERS.set(buffers.trimmed());
    result
}

/// The work of [`open_with`] in `buffers`: the plaintext it returns lies in one of them.
fn open_in<'buffers>(
    key: &SealKey,
    associated_data: &[u8],
    sealed: &[u8],
    expected_len: Option<usize>,
    max_plaintext: usize,
    buffers: &'buffers mut OpenBuffers,
) -> Result<&'buffers [u8], OpenError> {
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    let message = &mut buffers.message;
    message.clear();
    message.extend_from_slice(ciphertext);
    key.0
        .decrypt_in_place_detached(
            XNonce::from_slice(nonce),
            associated_data,
            message,
            chacha20poly1305::Tag::from_slice(tag),
        )
        .map_err(|_| OpenError::Authentication)?;
    match message.split_first() {
        Some((&COMPRESSION_NONE, payload)) => {
            if payload.len() > max_plaintext {
                return Err(OpenError::TooLarge(max_plaintext));
            }
            if expected_len.is_some_and(|expected| expected != payload.len()) {
                return Err(OpenError::Payload);
            }
            Ok(payload)
        }
        Some((&COMPRESSION_ZSTD, frame)) => {
            decompress_bounded(frame, expected_len, max_plaintext, &mut buffers.plaintext)?;
            Ok(&buffers.plaintext)
        }
        _ => Err(OpenError::Payload),
    }
}

/// Decompresses `frame` into `out` (replacing its content): exactly `expected_len` bytes when
/// that is known and allowed, else at most `max_plaintext`.
fn decompress_bounded(
    frame: &[u8],
    expected_len: Option<usize>,
    max_plaintext: usize,
    out: &mut Vec<u8>,
) -> Result<(), OpenError> {
    out.clear();
    if let Some(expected) = expected_len.filter(|expected| *expected <= max_plaintext) {
        // zstd writes into the buffer's capacity and fails when the frame holds more.
        out.reserve_exact(expected);
        let written = DECOMPRESSOR
            .with(|cell| {
                let mut slot = cell.borrow_mut();
                if slot.is_none() {
                    *slot = zstd::bulk::Decompressor::new().ok();
                }
                slot.as_mut()
                    .and_then(|decompressor| decompressor.decompress_to_buffer(frame, out).ok())
            })
            .ok_or(OpenError::Payload)?;
        return if written == expected {
            Ok(())
        } else {
            Err(OpenError::Payload)
        };
    }
    let decoder =
        zstd::stream::read::Decoder::with_buffer(frame).map_err(|_| OpenError::Payload)?;
    decoder
        .take(max_plaintext as u64 + 1)
        .read_to_end(out)
        .map_err(|_| OpenError::Payload)?;
    if out.len() > max_plaintext {
        return Err(OpenError::TooLarge(max_plaintext));
    }
    Ok(())
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

    /// Plaintexts of `len` bytes: compressible (zstd frame) and incompressible (stored raw).
    fn plaintexts(len: usize) -> [(Vec<u8>, &'static str); 2] {
        let compressible = (0..len)
            .map(|index| [0, 1, 2, 3, 4, 5, 6][index / 64 % 7])
            .collect();
        let mut random = vec![0u8; len];
        blake3::Hasher::new().finalize_xof().fill(&mut random);
        [(compressible, "compressible"), (random, "incompressible")]
    }

    const SIZES: [usize; 5] = [0, 1, 8 * 1024, 100 * 1024, 4 << 20];

    #[test]
    fn open_with_lends_the_same_plaintext_open_returns_for_every_size_and_kind() {
        for size in SIZES {
            for (plaintext, kind) in plaintexts(size) {
                let sealed = seal(&key(), [5; 24], b"ad", &plaintext, Some(3));
                let stored_raw = sealed.len() == plaintext.len() + SEAL_OVERHEAD;
                assert_eq!(
                    stored_raw,
                    size <= 1 || kind == "incompressible",
                    "{size} {kind}"
                );
                for expected in [None, Some(size)] {
                    let lent = open_with(&key(), b"ad", &sealed, expected, 8 << 20, <[u8]>::to_vec);
                    assert_eq!(lent.as_ref(), Ok(&plaintext), "{size} {kind} {expected:?}");
                    assert_eq!(
                        open(&key(), b"ad", &sealed, expected, 8 << 20),
                        lent,
                        "{size} {kind} {expected:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn open_with_rejects_tampering_and_wrong_lengths_without_calling_back() {
        for size in SIZES {
            for (plaintext, kind) in plaintexts(size) {
                let sealed = seal(&key(), [6; 24], b"ad", &plaintext, Some(3));
                let called = std::cell::Cell::new(false);
                let attempt = |sealed: &[u8], expected: Option<usize>, max: usize| {
                    open_with(&key(), b"ad", sealed, expected, max, |_| called.set(true))
                };
                let last = sealed.len() - 1;
                let mut damaged_tag = sealed.clone();
                damaged_tag[last] ^= 1;
                let mut damaged_nonce = sealed.clone();
                damaged_nonce[0] ^= 0x80;
                let mut damaged_ciphertext = sealed.clone();
                damaged_ciphertext[NONCE_LEN] ^= 4;
                for (damaged, what) in [
                    (&damaged_tag[..], "tag"),
                    (&damaged_nonce[..], "nonce"),
                    (&damaged_ciphertext[..], "ciphertext"),
                    (&sealed[..last], "truncated by one"),
                    (&sealed[..SEAL_OVERHEAD - 1], "shorter than the overhead"),
                    (&[sealed.as_slice(), &[0]].concat()[..], "one byte longer"),
                ] {
                    assert_eq!(
                        attempt(damaged, Some(size), 8 << 20),
                        Err(OpenError::Authentication),
                        "{size} {kind} {what}"
                    );
                }
                assert_eq!(
                    open_with(&key(), b"other", &sealed, Some(size), 8 << 20, |_| called
                        .set(true)),
                    Err(OpenError::Authentication),
                    "{size} {kind} associated data"
                );
                assert_eq!(
                    attempt(&sealed, Some(size + 1), 8 << 20),
                    Err(OpenError::Payload),
                    "{size} {kind} expected one more"
                );
                if size > 0 {
                    assert_eq!(
                        attempt(&sealed, Some(size - 1), 8 << 20),
                        Err(OpenError::Payload),
                        "{size} {kind} expected one less"
                    );
                    assert_eq!(
                        attempt(&sealed, None, size - 1),
                        Err(OpenError::TooLarge(size - 1)),
                        "{size} {kind} over the bound"
                    );
                }
                assert!(!called.get(), "{size} {kind}: called back on a failure");
            }
        }
    }

    #[test]
    fn a_nested_open_on_the_same_thread_gets_its_own_buffers() {
        let [(outer, _), _] = plaintexts(8 * 1024);
        let [_, (inner, _)] = plaintexts(100 * 1024);
        let sealed_outer = seal(&key(), [1; 24], b"", &outer, Some(3));
        let sealed_inner = seal(&key(), [2; 24], b"", &inner, Some(3));
        let both = open_with(
            &key(),
            b"",
            &sealed_outer,
            Some(outer.len()),
            1 << 20,
            |lent| {
                let nested = open(&key(), b"", &sealed_inner, Some(inner.len()), 1 << 20);
                (lent.to_vec(), nested)
            },
        );
        assert_eq!(both, Ok((outer, Ok(inner))));
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
