//! Content-defined chunking for cairn: `FastCDC` v2020 (normalized chunking, level 1) with a gear table
//! seeded from the repository key.
//!
//! This crate owns cut-point selection only. It knows nothing of hashing, encryption or storage; it
//! reads bytes and says where chunks end. Inputs are read in large blocks and handed out as
//! [`ChunkBatch`]es (one allocation holding many whole chunks), so that callers can hash, compress and
//! seal the chunks of one batch in parallel while the next block is read.

use std::io::{self, Read};
use std::ops::Range;

use fastcdc::v2020;

/// Errors from building a chunker.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChunkerError {
    /// The size parameters are outside what `FastCDC` supports or not ordered `min <= avg <= max`.
    #[error("invalid chunker parameters min={min} avg={avg} max={max}: {reason}")]
    InvalidParams {
        /// Minimum chunk size asked for.
        min: u32,
        /// Average chunk size asked for.
        avg: u32,
        /// Maximum chunk size asked for.
        max: u32,
        /// What is wrong with them.
        reason: &'static str,
    },
}

/// Chunk size bounds, as stored in the repository config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkerParams {
    /// No chunk is shorter than this, except the last chunk of an input.
    pub min_size: u32,
    /// The average chunk size `FastCDC` aims for (a power of two works best).
    pub avg_size: u32,
    /// No chunk is longer than this.
    pub max_size: u32,
}

impl ChunkerParams {
    /// The defaults for new repositories; FORMAT.md ("Chunker parameters") explains the measurement
    /// behind them.
    pub const DEFAULT: Self = Self {
        min_size: 2 * 1024,
        avg_size: 8 * 1024,
        max_size: 32 * 1024,
    };

    /// Checks the bounds against what `FastCDC` v2020 accepts and that `min <= avg <= max`.
    ///
    /// # Errors
    /// [`ChunkerError::InvalidParams`] naming the violated bound.
    pub fn validate(&self) -> Result<(), ChunkerError> {
        let fail = |reason| {
            Err(ChunkerError::InvalidParams {
                min: self.min_size,
                avg: self.avg_size,
                max: self.max_size,
                reason,
            })
        };
        if !(v2020::MINIMUM_MIN..=v2020::MINIMUM_MAX).contains(&self.min_size) {
            return fail("min out of range 64..=1 MiB");
        }
        if !(v2020::AVERAGE_MIN..=v2020::AVERAGE_MAX).contains(&self.avg_size) {
            return fail("avg out of range 256..=4 MiB");
        }
        if !(v2020::MAXIMUM_MIN..=v2020::MAXIMUM_MAX).contains(&self.max_size) {
            return fail("max out of range 1 KiB..=16 MiB");
        }
        if !self.min_size.is_multiple_of(2) {
            // The cut search steps two bytes at a time from min/2; an odd min would allow a
            // chunk one byte shorter than min.
            return fail("min must be even");
        }
        if !(self.min_size <= self.avg_size && self.avg_size <= self.max_size) {
            return fail("sizes must satisfy min <= avg <= max");
        }
        // Normalization level 1 uses masks of log2(avg) +- 1 bits.
        let bits = v2020::logarithm2(self.avg_size);
        if !(2..=24).contains(&bits) {
            return fail("avg gives no usable mask");
        }
        Ok(())
    }
}

impl Default for ChunkerParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A `FastCDC` v2020 cut-point finder with a seeded gear table.
///
/// Cheap to clone; holds two 2 KiB gear tables.
#[derive(Debug, Clone)]
pub struct Chunker {
    params: ChunkerParams,
    mask_s: u64,
    mask_l: u64,
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
}

impl Chunker {
    /// Builds a chunker for `params` whose gear table is XOR-ed with `seed` (the repository's
    /// chunker seed, so that cut points differ between repositories).
    ///
    /// # Errors
    /// [`ChunkerError::InvalidParams`] when `params` do not validate.
    pub fn new(params: ChunkerParams, seed: u64) -> Result<Self, ChunkerError> {
        params.validate()?;
        let bits = v2020::logarithm2(params.avg_size);
        let normalization = v2020::Normalization::Level1.bits();
        let (gear, gear_ls) = v2020::get_gear_with_seed(seed);
        Ok(Self {
            params,
            mask_s: v2020::MASKS[(bits + normalization) as usize],
            mask_l: v2020::MASKS[(bits - normalization) as usize],
            gear,
            gear_ls,
        })
    }

    /// The size bounds of this chunker.
    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// Length of the next chunk at the start of `data`. `data` must hold at least `max_size` bytes
    /// unless it is the end of the input, in which case the whole remainder may be returned.
    fn next_cut(&self, data: &[u8]) -> usize {
        let (_, length) = v2020::cut_gear(
            data,
            self.params.min_size as usize,
            self.params.avg_size as usize,
            self.params.max_size as usize,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
            &self.gear,
            &self.gear_ls,
        );
        // cut_gear never returns 0 for non-empty input, but guard against a zero-length chunk,
        // which would loop forever.
        length.max(1).min(data.len())
    }

    /// The first byte value (0x00 to 0xFF) whose long runs this chunker cuts shorter than
    /// `max_size`, or `None` when every run of one byte value is cut at `max_size`.
    ///
    /// Inside a run of one value `b` the gear hash forgets everything but the run: starting from 0
    /// at each chunk's `min`, it takes at most 64 steps to settle on the fixed point
    /// `h = -GEAR[b]` (mod 2^64), since every step shifts it left. If any of those values passes
    /// a cut mask, every chunk of the run is cut at that same short length: a run of zeros in a
    /// sparse file or a disk image then becomes thousands of tiny chunks. This walks the cut
    /// search of `next_cut` over a virtual run of `b` (stopping once the hash is
    /// settled and checked against both masks), so it costs about 64 steps per value instead of
    /// hashing `max_size` bytes. FORMAT.md section 13 ("Degenerate seeds") makes `init` draw
    /// again until this returns `None`.
    pub fn degenerate_run_byte(&self) -> Option<u8> {
        (0..=u8::MAX).find(|byte| self.cut_in_run(*byte) < self.params.max_size as usize)
    }

    /// Length of the first chunk of an input made of at least `max_size` copies of `byte`.
    fn cut_in_run(&self, byte: u8) -> usize {
        let min = self.params.min_size as usize;
        let center = self.params.avg_size as usize;
        let limit = self.params.max_size as usize;
        let gear = self.gear[usize::from(byte)];
        let gear_ls = self.gear_ls[usize::from(byte)];
        let mut hash = 0u64;
        let mut index = min / 2;
        while index < limit / 2 {
            let mask = if index < center / 2 {
                self.mask_s
            } else {
                self.mask_l
            };
            let before = hash;
            hash = (hash << 2).wrapping_add(gear_ls);
            if hash & (mask << 1) == 0 {
                return 2 * index;
            }
            hash = hash.wrapping_add(gear);
            if hash & mask == 0 {
                return 2 * index + 1;
            }
            if hash == before {
                // Settled: the same two values repeat to the end; only a mask change (at the
                // center) can still cut, so jump there, or to the end.
                if index < center / 2 && self.mask_l != self.mask_s {
                    index = center / 2;
                    continue;
                }
                return limit;
            }
            index += 1;
        }
        limit
    }

    /// Splits a complete in-memory input into chunk ranges.
    pub fn chunk_slice(&self, data: &[u8]) -> Vec<Range<usize>> {
        let mut ranges = Vec::new();
        let mut start = 0;
        while start < data.len() {
            let length = self.next_cut(&data[start..]);
            ranges.push(start..start + length);
            start += length;
        }
        ranges
    }

    /// Wraps a reader into a stream of chunk batches of about `block_size` bytes each.
    pub fn stream<R: Read>(&self, reader: R, block_size: usize) -> ChunkStream<R> {
        ChunkStream {
            chunker: self.clone(),
            reader,
            block_size: block_size.max(self.params.max_size as usize * 2),
            carry: Vec::new(),
            eof: false,
            offset: 0,
        }
    }
}

/// A block of input holding whole chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkBatch {
    /// The bytes of the chunks, back to back.
    pub data: Vec<u8>,
    /// Chunk ranges within `data`, in input order, covering it exactly.
    pub chunks: Vec<Range<usize>>,
    /// Offset of `data[0]` within the whole input.
    pub input_offset: u64,
}

/// Reads an input in blocks and yields [`ChunkBatch`]es; see [`Chunker::stream`].
#[derive(Debug)]
pub struct ChunkStream<R> {
    chunker: Chunker,
    reader: R,
    block_size: usize,
    /// Bytes read but not yet assigned to a chunk (less than `max_size` of them).
    carry: Vec<u8>,
    eof: bool,
    offset: u64,
}

impl<R: Read> ChunkStream<R> {
    /// The next batch, or `None` at the end of the input. Empty inputs yield no batch.
    ///
    /// # Errors
    /// Any read error of the underlying reader (interrupted reads are retried).
    pub fn next_batch(&mut self) -> io::Result<Option<ChunkBatch>> {
        let mut data = std::mem::take(&mut self.carry);
        data.reserve(self.block_size.saturating_sub(data.len()));
        if !self.eof {
            // `read_to_end` appends into spare capacity without zero-filling it first, which
            // matters for pipes that deliver a few KiB per read.
            let wanted = self.block_size.saturating_sub(data.len()) as u64;
            match (&mut self.reader).take(wanted).read_to_end(&mut data) {
                Ok(read) => {
                    if (read as u64) < wanted {
                        self.eof = true;
                    }
                }
                Err(error) => {
                    self.carry = data;
                    return Err(error);
                }
            }
        }
        if data.is_empty() {
            return Ok(None);
        }
        let max_size = self.chunker.params.max_size as usize;
        let mut chunks = Vec::new();
        let mut start = 0;
        // Cut only where a full max_size window is available, unless the input has ended: a cut
        // found with less look-ahead could differ from the one found with more.
        while start < data.len() && (self.eof || data.len() - start >= max_size) {
            let length = self.chunker.next_cut(&data[start..]);
            chunks.push(start..start + length);
            start += length;
        }
        self.carry = data[start..].to_vec();
        data.truncate(start);
        let batch = ChunkBatch {
            data,
            chunks,
            input_offset: self.offset,
        };
        self.offset += batch.data.len() as u64;
        if batch.chunks.is_empty() {
            return self.next_batch();
        }
        Ok(Some(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()[3]
            })
            .collect()
    }

    fn small_chunker(seed: u64) -> Chunker {
        Chunker::new(
            ChunkerParams {
                min_size: 256,
                avg_size: 1024,
                max_size: 4096,
            },
            seed,
        )
        .unwrap()
    }

    fn stream_ranges(chunker: &Chunker, data: &[u8], block: usize) -> Vec<Vec<u8>> {
        let mut stream = chunker.stream(data, block);
        let mut out = Vec::new();
        while let Some(batch) = stream.next_batch().unwrap() {
            for range in batch.chunks {
                out.push(batch.data[range].to_vec());
            }
        }
        out
    }

    #[test]
    fn invalid_params_are_rejected() {
        let bad = ChunkerParams {
            min_size: 8192,
            avg_size: 4096,
            max_size: 65536,
        };
        assert!(matches!(
            Chunker::new(bad, 0),
            Err(ChunkerError::InvalidParams { .. })
        ));
        let tiny = ChunkerParams {
            min_size: 1,
            avg_size: 4096,
            max_size: 65536,
        };
        assert!(tiny.validate().is_err());
        assert!(ChunkerParams::DEFAULT.validate().is_ok());
    }

    #[test]
    fn empty_input_has_no_chunks() {
        let chunker = small_chunker(1);
        assert!(chunker.chunk_slice(&[]).is_empty());
        assert!(stream_ranges(&chunker, &[], 1 << 16).is_empty());
    }

    #[test]
    fn seed_changes_cut_points() {
        let data = pseudo_random(200_000, 7);
        let a = small_chunker(1).chunk_slice(&data);
        let b = small_chunker(2).chunk_slice(&data);
        assert_ne!(a, b);
    }

    #[test]
    fn shifted_input_resynchronises() {
        let data = pseudo_random(300_000, 9);
        let mut shifted = vec![0xAB; 100];
        shifted.extend_from_slice(&data);
        let chunker = small_chunker(3);
        let original: std::collections::HashSet<Vec<u8>> = chunker
            .chunk_slice(&data)
            .into_iter()
            .map(|r| data[r].to_vec())
            .collect();
        let moved = chunker.chunk_slice(&shifted);
        let shared = moved
            .iter()
            .filter(|r| original.contains(&shifted[(*r).clone()]))
            .count();
        assert!(
            shared * 10 >= moved.len() * 9,
            "{shared} of {}",
            moved.len()
        );
    }

    /// The virtual walk of `cut_in_run` agrees with the real cut search on real runs, for the
    /// default and the small parameters, over many seeds and byte values.
    #[test]
    fn run_walk_matches_the_real_cut_search() {
        for seed in 0..300u64 {
            let seed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            for params in [ChunkerParams::DEFAULT, small_chunker(0).params()] {
                let chunker = Chunker::new(params, seed).unwrap();
                let bytes = [0x00, 0xFF, 0x20, seed.to_le_bytes()[7]];
                for byte in bytes {
                    let run = vec![byte; params.max_size as usize * 2];
                    assert_eq!(
                        chunker.cut_in_run(byte),
                        chunker.next_cut(&run),
                        "seed {seed:#x} byte {byte:#04x}"
                    );
                }
            }
        }
    }

    /// Degenerate seeds exist (about one in a few hundred for zeros alone, the bug of issue 13)
    /// and the check finds every one of them: over 2000 seeds, a seed passes exactly when runs
    /// of zeros and of 0xFF are cut at `max_size` by the real chunker too.
    #[test]
    fn degenerate_seeds_are_found_over_many_seeds() {
        let mut zero_degenerate = 0;
        let mut any_degenerate = 0;
        let zeros = vec![0u8; 64 * 1024];
        let ones = vec![0xFFu8; 64 * 1024];
        for seed in 0..2000u64 {
            let seed = seed.wrapping_mul(0xD6E8_FEB8_6659_FD93) ^ 0x5851_F42D_4C95_7F2D;
            let chunker = Chunker::new(ChunkerParams::DEFAULT, seed).unwrap();
            let found = chunker.degenerate_run_byte();
            let zero_chunks = chunker.chunk_slice(&zeros).len();
            let ones_chunks = chunker.chunk_slice(&ones).len();
            if found.is_none() {
                assert_eq!((zero_chunks, ones_chunks), (2, 2), "seed {seed:#x}");
            }
            if zero_chunks > 2 {
                zero_degenerate += 1;
                assert!(found.is_some(), "seed {seed:#x}");
                assert!(zero_chunks >= 8, "seed {seed:#x}: {zero_chunks} chunks");
            }
            any_degenerate += usize::from(found.is_some());
        }
        eprintln!(
            "degenerate seeds of 2000: {zero_degenerate} on zeros, {any_degenerate} on some byte value"
        );
        assert!(zero_degenerate >= 1, "no seed degenerates on zeros");
        // Most seeds pass, so drawing again until one does ends quickly.
        assert!(
            any_degenerate < 1400,
            "{any_degenerate} of 2000 seeds degenerate"
        );
    }

    proptest! {
        #[test]
        fn stream_matches_slice_and_respects_bounds(len in 0usize..60_000, seed in any::<u64>(), block in 8192usize..40_000) {
            let data = pseudo_random(len, seed);
            let chunker = small_chunker(seed);
            let from_slice: Vec<Vec<u8>> = chunker.chunk_slice(&data).into_iter().map(|r| data[r].to_vec()).collect();
            let from_stream = stream_ranges(&chunker, &data, block);
            prop_assert_eq!(&from_slice, &from_stream);
            prop_assert_eq!(from_stream.concat(), data);
            let count = from_stream.len();
            for (index, chunk) in from_stream.iter().enumerate() {
                prop_assert!(chunk.len() <= 4096);
                if index + 1 < count {
                    prop_assert!(chunk.len() >= 256);
                }
            }
        }
    }
}
