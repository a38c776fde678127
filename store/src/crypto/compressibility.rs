//! The compressibility probe: decides, from one cheap pass over a chunk's bytes, whether zstd is
//! worth running on it. Already-compressed content (gzip layers, JPEG, zstd archives, encrypted
//! files) costs zstd a full pass at level 3 and comes back no shorter; such chunks are stored raw
//! (compression byte 0, FORMAT.md section 5), which every reader already opens. A wrong
//! "compress" costs only time (zstd then fails to shrink the chunk and it is stored raw anyway);
//! a wrong "store raw" costs bytes, so the rule errs towards compressing.
//!
//! The estimate is the byte histogram's collision entropy (Rényi order 2): with `c_i` the count
//! of byte value `i` among `n` sampled bytes, `sum c_i (c_i - 1) / (n (n - 1))` estimates without
//! bias the chance that two bytes drawn at random are equal, and its inverse is the "effective
//! alphabet" the bytes use. Collision entropy never exceeds Shannon entropy, and Shannon entropy
//! bounds what an order-0 coder (zstd's Huffman literals) can save, so an effective alphabet of at
//! least [`EFFECTIVE_ALPHABET_RAW`] (log2 217 = 7.76 bits a byte) means literal coding saves
//! under 3 %. Long repeats inside one chunk would still compress and the histogram cannot see
//! them; benches/results/compression-probe.md measures what that costs on the corpus. Integers
//! only: no logarithm per chunk.
//!
//! Pure: no I/O, no clock; the same bytes always get the same verdict.

/// Chunks shorter than this are always given to zstd: their histogram is too noisy to judge, and
/// zstd's cost on them is small anyway.
pub const MIN_PROBED_BYTES: usize = 1024;
/// Bytes of a chunk the histogram reads at most; longer chunks are sampled in
/// [`SAMPLE_WINDOWS`] evenly spread windows, so the probe's cost stays bounded for any chunker
/// maximum (up to 16 MiB).
pub const MAX_SAMPLED_BYTES: usize = 64 * 1024;
/// Windows a chunk longer than [`MAX_SAMPLED_BYTES`] is sampled in.
pub const SAMPLE_WINDOWS: usize = 16;
/// An effective alphabet of at least this many byte values (of 256) means "store raw".
pub const EFFECTIVE_ALPHABET_RAW: u64 = 217;

/// Whether a writer runs the probe on new data chunks (a client setting, `--compression-probe`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CompressionProbe {
    /// Data chunks the probe judges incompressible are stored raw without a zstd pass.
    #[default]
    On,
    /// Every chunk is given to zstd (when compression is on at all).
    Off,
}

/// What to do with a chunk before sealing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Give it to zstd (which may still find it does not shrink).
    Compress,
    /// Store it raw without trying: its bytes look like compressed or random data.
    StoreRaw,
}

/// Judges one chunk; see the module documentation.
pub fn judge(chunk: &[u8]) -> Verdict {
    if chunk.len() < MIN_PROBED_BYTES {
        return Verdict::Compress;
    }
    let histogram = if chunk.len() <= MAX_SAMPLED_BYTES {
        Histogram::of(chunk)
    } else {
        let window = MAX_SAMPLED_BYTES / SAMPLE_WINDOWS;
        let stride = (chunk.len() - window) / (SAMPLE_WINDOWS - 1);
        let mut histogram = Histogram::default();
        for window_index in 0..SAMPLE_WINDOWS {
            let start = window_index * stride;
            histogram.add(&chunk[start..start + window]);
        }
        histogram
    };
    if histogram.effective_alphabet_at_least(EFFECTIVE_ALPHABET_RAW) {
        Verdict::StoreRaw
    } else {
        Verdict::Compress
    }
}

/// Byte counts, kept in four interleaved tables so that runs of one byte value do not serialise
/// on a single counter.
struct Histogram {
    counts: [[u32; 256]; 4],
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: [[0; 256]; 4],
            total: 0,
        }
    }
}

impl Histogram {
    fn of(bytes: &[u8]) -> Self {
        let mut histogram = Self::default();
        histogram.add(bytes);
        histogram
    }

    fn add(&mut self, bytes: &[u8]) {
        let mut quads = bytes.chunks_exact(4);
        for quad in &mut quads {
            self.counts[0][usize::from(quad[0])] += 1;
            self.counts[1][usize::from(quad[1])] += 1;
            self.counts[2][usize::from(quad[2])] += 1;
            self.counts[3][usize::from(quad[3])] += 1;
        }
        for &byte in quads.remainder() {
            self.counts[0][usize::from(byte)] += 1;
        }
        self.total += bytes.len() as u64;
    }

    /// Whether `n (n - 1) / sum c (c - 1)` is at least `alphabet` (no collision at all counts as
    /// an unbounded alphabet).
    fn effective_alphabet_at_least(&self, alphabet: u64) -> bool {
        let collisions: u64 = (0..256)
            .map(|value| {
                let count = self
                    .counts
                    .iter()
                    .map(|table| u64::from(table[value]))
                    .sum::<u64>();
                count * count.saturating_sub(1)
            })
            .sum();
        // At most 64 KiB sampled: n (n - 1) < 2^32 and collisions * 256 < 2^40, no overflow.
        collisions * alphabet <= self.total * self.total.saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chunker's default bounds (min, avg, max) and sizes around the probe's own limits.
    const SIZES: [usize; 9] = [
        0,
        100,
        MIN_PROBED_BYTES - 1,
        MIN_PROBED_BYTES,
        2 * 1024,
        8 * 1024,
        32 * 1024,
        MAX_SAMPLED_BYTES + 1,
        1 << 20,
    ];

    fn random(length: usize, seed: u8) -> Vec<u8> {
        let mut out = vec![0u8; length];
        blake3::Hasher::new_keyed(&[seed; 32])
            .finalize_xof()
            .fill(&mut out);
        out
    }

    fn text(length: usize) -> Vec<u8> {
        text_seeded(length, 5)
    }

    fn text_seeded(length: usize, seed: u8) -> Vec<u8> {
        let words = [
            "backup ", "restore ", "the ", "chunk ", "of ", "night ", "2026 ",
        ];
        let noise = random(length.max(1), seed);
        let mut out = Vec::with_capacity(length + 8);
        let mut index = 0;
        while out.len() < length {
            out.extend_from_slice(
                words[usize::from(noise[index % noise.len()]) % words.len()].as_bytes(),
            );
            index += 1;
        }
        out.truncate(length);
        out
    }

    /// BSON-like records: little-endian lengths and counters, field names, random ids.
    fn records(length: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(length + 64);
        let mut record = 0u32;
        while out.len() < length {
            out.extend_from_slice(&58u32.to_le_bytes());
            out.extend_from_slice(b"\x07_id\x00");
            out.extend_from_slice(&random(12, (record % 251) as u8)[..]);
            out.extend_from_slice(b"\x10count\x00");
            out.extend_from_slice(&record.to_le_bytes());
            out.extend_from_slice(b"\x02name\x00\x06\x00\x00\x00tenant\x00\x00");
            record += 1;
        }
        out.truncate(length);
        out
    }

    fn zstd_frame(length: usize) -> Vec<u8> {
        // Compressed text: what a gzip or zstd layer inside a tarball looks like.
        let mut frame = Vec::new();
        let mut seed = 0u8;
        while frame.len() < length {
            // Fresh text per frame: repeats between frames would let zstd shrink the result.
            let mut source = text_seeded(64 * 1024, seed.wrapping_add(100));
            source.extend_from_slice(&random(4096, seed));
            frame.extend(zstd::bulk::compress(&source, 3).unwrap());
            seed = seed.wrapping_add(1);
        }
        frame.truncate(length);
        frame
    }

    /// What zstd level 3 saves on a non-empty `chunk`, in thousandths of its length.
    fn zstd_saving_permille(chunk: &[u8]) -> usize {
        let compressed = zstd::bulk::compress(chunk, 3).unwrap();
        1000 - compressed.len().min(chunk.len()) * 1000 / chunk.len()
    }

    fn kinds(length: usize) -> Vec<(&'static str, Vec<u8>)> {
        let half = length / 2;
        let head_text_tail_random = [text(half), random(length - half, 3)].concat();
        let head_random_tail_text = [random(half, 4), text(length - half)].concat();
        let head_random_tail_zeros =
            [random(length - length / 10, 6), vec![0; length / 10]].concat();
        vec![
            ("random", random(length, 1)),
            ("zeros", vec![0; length]),
            ("text", text(length)),
            ("records", records(length)),
            ("zstd frame", zstd_frame(length)),
            ("text then random", head_text_tail_random),
            ("random then text", head_random_tail_text),
            ("random then 10% zeros", head_random_tail_zeros),
        ]
    }

    #[test]
    fn incompressible_kinds_are_stored_raw_from_the_minimum_probed_size() {
        for length in SIZES
            .into_iter()
            .filter(|length| *length >= MIN_PROBED_BYTES)
        {
            assert_eq!(
                judge(&random(length, 9)),
                Verdict::StoreRaw,
                "random, {length} bytes"
            );
            assert_eq!(
                judge(&zstd_frame(length)),
                Verdict::StoreRaw,
                "zstd frame, {length} bytes"
            );
        }
    }

    #[test]
    fn compressible_kinds_and_mixtures_are_compressed() {
        for length in SIZES
            .into_iter()
            .filter(|length| *length >= MIN_PROBED_BYTES)
        {
            for (name, chunk) in kinds(length) {
                if name == "random" || name == "zstd frame" {
                    continue;
                }
                assert_eq!(judge(&chunk), Verdict::Compress, "{name}, {length} bytes");
            }
        }
    }

    #[test]
    fn chunks_below_the_probed_size_are_always_given_to_zstd() {
        for length in SIZES
            .into_iter()
            .filter(|length| *length < MIN_PROBED_BYTES)
        {
            for (name, chunk) in kinds(length) {
                assert_eq!(judge(&chunk), Verdict::Compress, "{name}, {length} bytes");
            }
        }
    }

    #[test]
    fn a_chunk_stored_raw_is_one_zstd_saves_under_three_percent_of() {
        // The bound on a wrong "store raw" over the whole matrix.
        for length in SIZES {
            for (name, chunk) in kinds(length) {
                if judge(&chunk) == Verdict::StoreRaw {
                    let saving = zstd_saving_permille(&chunk);
                    assert!(
                        saving < 30,
                        "{name}, {length} bytes: zstd saves {saving} per mille"
                    );
                }
            }
        }
    }

    #[test]
    fn long_chunks_are_judged_on_spread_samples() {
        // Random with a compressible stretch in the middle: the middle window sees it.
        let length = 4 << 20;
        let mut chunk = random(length, 2);
        let middle = length / 2;
        chunk[middle - 256 * 1024..middle + 256 * 1024].fill(b'a');
        assert_eq!(judge(&chunk), Verdict::Compress);
        assert_eq!(judge(&random(length, 2)), Verdict::StoreRaw);
    }
}
