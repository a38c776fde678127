//! A file's content hash assembled out of order: the keyed BLAKE3 of a whole file (FORMAT.md
//! section 4) built from ranges of its bytes hashed separately, in any order, as they arrive.
//!
//! BLAKE3 is a binary tree over 1 KiB chunks ([`blake3::hazmat`]): every aligned run of a power
//! of two chunks that is not the whole input is a node of that tree, whatever the input's
//! length. So a range keeps only what it cannot hash without its neighbours: the bytes before
//! its first chunk boundary (`head`), the chaining values of the aligned subtrees after it
//! (merged pairwise as they complete, so a few per doubling of the range's length), and the
//! bytes of its last chunk (`tail`, kept as bytes even when whole: the last chunk of an input is
//! hashed differently when it is the root, and a range does not know whether input follows).
//! Joining two adjacent ranges completes the chunk between them and merges their subtrees; a
//! range that starts at 0 gives the hash.
//!
//! Pure: no I/O. Tests check every result against `blake3::keyed_hash` of the whole input.

use blake3::CHUNK_LEN;
use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};

/// [`CHUNK_LEN`] as a byte offset.
const CHUNK: u64 = CHUNK_LEN as u64;

/// An aligned subtree of the input: `chunks` (a power of two) BLAKE3 chunks from `first_chunk`
/// (a multiple of `chunks`), and its chaining value.
#[derive(Debug, Clone, Copy)]
struct Subtree {
    first_chunk: u64,
    chunks: u64,
    chaining_value: ChainingValue,
}

/// The bytes `start..end` of an input, hashed as far as they can be without the bytes around
/// them (see the module documentation).
#[derive(Debug, Clone)]
pub struct HashedRange {
    key: [u8; 32],
    start: u64,
    end: u64,
    /// The range's bytes before its first chunk boundary (all of them while the range has not
    /// reached it).
    head: Vec<u8>,
    /// Aligned subtrees from the first chunk boundary on, in order, no two of them siblings.
    subtrees: Vec<Subtree>,
    /// The bytes after the subtrees: the range's last chunk, whole or not (empty only while
    /// the range has not gone past its head).
    tail: Vec<u8>,
}

impl HashedRange {
    /// An empty range at byte `start` of an input hashed with `key`.
    pub fn new(key: &[u8; 32], start: u64) -> Self {
        Self {
            key: *key,
            start,
            end: start,
            head: Vec::new(),
            subtrees: Vec::new(),
            tail: Vec::new(),
        }
    }

    /// Where the range starts in the input.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Where the range ends (one past its last byte).
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Bytes of memory the range holds (what a caller holding many of them counts).
    pub fn weight(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.head.capacity()
            + self.tail.capacity()
            + self.subtrees.capacity() * std::mem::size_of::<Subtree>()
    }

    /// The first chunk boundary at or after `start`.
    fn first_boundary(&self) -> u64 {
        self.start.next_multiple_of(CHUNK)
    }

    /// Where the tail starts: the first boundary plus the subtrees.
    fn tail_start(&self) -> u64 {
        self.first_boundary() + self.subtrees.iter().map(|s| s.chunks).sum::<u64>() * CHUNK
    }

    /// Appends `bytes` (the input's bytes from [`HashedRange::end`] on).
    pub fn extend(&mut self, bytes: &[u8]) {
        let mut input = bytes;
        let head_room = self.first_boundary() - self.start - self.head.len() as u64;
        if head_room > 0 {
            let take = input
                .len()
                .min(usize::try_from(head_room).unwrap_or(usize::MAX));
            self.head.extend_from_slice(&input[..take]);
            input = &input[take..];
            self.end += take as u64;
        }
        while !input.is_empty() {
            if self.tail.len() == CHUNK_LEN {
                // More input follows: the tail is a whole chunk that does not end the input.
                self.push_tail();
            }
            if self.tail.is_empty() && input.len() > CHUNK_LEN {
                // Hash the largest aligned subtree that leaves at least one byte for the tail.
                let first_chunk = self.end / CHUNK;
                let whole_chunks = (input.len() as u64 - 1) / CHUNK;
                let mut chunks = 1u64 << whole_chunks.ilog2();
                if first_chunk > 0 {
                    chunks = chunks.min(1u64 << first_chunk.trailing_zeros());
                }
                let length = usize::try_from(chunks * CHUNK).expect("at most the input's length");
                let chaining_value = self.subtree_value(self.end, &input[..length]);
                self.push(Subtree {
                    first_chunk,
                    chunks,
                    chaining_value,
                });
                input = &input[length..];
                self.end += length as u64;
                continue;
            }
            let take = input.len().min(CHUNK_LEN - self.tail.len());
            self.tail.extend_from_slice(&input[..take]);
            input = &input[take..];
            self.end += take as u64;
        }
    }

    /// Appends `later`, the range of the same input that starts where this one ends.
    ///
    /// # Panics
    /// When `later` does not start at [`HashedRange::end`] or has another key: joining such
    /// ranges would give a wrong hash.
    pub fn append(&mut self, later: HashedRange) {
        assert_eq!(later.start, self.end, "ranges joined out of order");
        assert!(later.key == self.key, "ranges of different keys joined");
        self.extend(&later.head);
        if later.subtrees.is_empty() {
            self.extend(&later.tail);
            return;
        }
        // `later`'s subtrees start at a chunk boundary, where this range now ends: its tail is
        // a whole chunk, followed by them.
        if !self.tail.is_empty() {
            self.push_tail();
        }
        for subtree in later.subtrees {
            self.push(subtree);
        }
        self.tail = later.tail;
        self.end = later.end;
    }

    /// The keyed hash of the input, which this range covers whole.
    ///
    /// # Panics
    /// When the range does not start at 0.
    pub fn finalize(&self) -> [u8; 32] {
        assert_eq!(self.start, 0, "only a range from the start has a hash");
        let Some((first, rest)) = self.subtrees.split_first() else {
            // At most one chunk: the root is that chunk.
            return *blake3::keyed_hash(&self.key, &self.tail).as_bytes();
        };
        let mode = Mode::KeyedHash(&self.key);
        // The right edge of the tree, from the last chunk up: each subtree is the left child
        // of the node above what follows it.
        let mut right = self.subtree_value(self.tail_start(), &self.tail);
        for subtree in rest.iter().rev() {
            right = merge_subtrees_non_root(&subtree.chaining_value, &right, mode);
        }
        *merge_subtrees_root(&first.chaining_value, &right, mode).as_bytes()
    }

    /// Moves the tail (a whole chunk that more input follows) into the subtrees.
    fn push_tail(&mut self) {
        let offset = self.tail_start();
        let chaining_value = self.subtree_value(offset, &self.tail);
        self.tail.clear();
        self.push(Subtree {
            first_chunk: offset / CHUNK,
            chunks: 1,
            chaining_value,
        });
    }

    /// Adds the aligned subtree that follows the subtrees, merging it with its sibling while it
    /// has one (the merged node is never the root: more input follows it).
    fn push(&mut self, mut subtree: Subtree) {
        while let Some(last) = self.subtrees.last()
            && last.chunks == subtree.chunks
            && last.first_chunk % (2 * subtree.chunks) == 0
        {
            subtree = Subtree {
                first_chunk: last.first_chunk,
                chunks: 2 * subtree.chunks,
                chaining_value: merge_subtrees_non_root(
                    &last.chaining_value,
                    &subtree.chaining_value,
                    Mode::KeyedHash(&self.key),
                ),
            };
            self.subtrees.pop();
        }
        self.subtrees.push(subtree);
    }

    /// The chaining value of the aligned subtree `bytes` at byte `offset`.
    fn subtree_value(&self, offset: u64, bytes: &[u8]) -> ChainingValue {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.set_input_offset(offset);
        hasher.update(bytes);
        hasher.finalize_non_root()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    fn input(length: usize) -> Vec<u8> {
        crate::test_data::incompressible_blobs(3, [length]).remove(0)
    }

    /// Cuts `length` into pieces following `sizes` (repeated), the last piece shorter.
    fn cuts(length: usize, sizes: &[usize]) -> Vec<std::ops::Range<usize>> {
        let mut ranges = Vec::new();
        let mut start = 0;
        for size in sizes.iter().cycle() {
            if start >= length {
                break;
            }
            let end = (start + size).min(length);
            ranges.push(start..end);
            start = end;
        }
        ranges
    }

    /// A deterministic permutation of `0..count`.
    fn permutation(count: usize, seed: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..count).collect();
        let mut state = seed | 1;
        for index in (1..count).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            order.swap(index, usize::try_from(state % (index as u64 + 1)).unwrap());
        }
        order
    }

    /// Hashes `bytes` cut at `pieces`, each piece a range of its own, joined in the order the
    /// pieces arrive (`order`), each to its neighbours as soon as both are there.
    fn joined_out_of_order(
        bytes: &[u8],
        pieces: &[std::ops::Range<usize>],
        order: &[usize],
    ) -> [u8; 32] {
        // Runs by their first piece: (one past their last piece, the range).
        let mut runs: std::collections::BTreeMap<usize, (usize, HashedRange)> =
            std::collections::BTreeMap::new();
        for &piece in order {
            let range = &pieces[piece];
            let mut hashed = HashedRange::new(&KEY, range.start as u64);
            hashed.extend(&bytes[range.clone()]);
            let mut first = piece;
            let mut last = piece + 1;
            if let Some((&start, _)) = runs.range(..piece).next_back()
                && runs[&start].0 == piece
            {
                let (_, mut before) = runs.remove(&start).unwrap();
                before.append(hashed);
                hashed = before;
                first = start;
            }
            if let Some((end, after)) = runs.remove(&(piece + 1)) {
                hashed.append(after);
                last = end;
            }
            runs.insert(first, (last, hashed));
        }
        if bytes.is_empty() {
            return HashedRange::new(&KEY, 0).finalize();
        }
        assert_eq!(runs.len(), 1);
        let (end, whole) = runs.remove(&0).unwrap();
        assert_eq!(end, pieces.len());
        assert_eq!(whole.end(), bytes.len() as u64);
        whole.finalize()
    }

    #[test]
    fn any_cut_joined_in_any_order_hashes_as_blake3() {
        let lengths = [
            0, 1, 1023, 1024, 1025, 2047, 2048, 2049, 3072, 4095, 5000, 8192, 8193, 65_536,
            100_000, 300_007,
        ];
        let cut_sizes: [&[usize]; 8] = [
            &[1],
            &[1023],
            &[1024],
            &[1025],
            &[2048, 1],
            &[3000, 500, 9000],
            &[8192],
            &[usize::MAX / 2],
        ];
        for length in lengths {
            let bytes = input(length);
            let expected = *blake3::keyed_hash(&KEY, &bytes).as_bytes();
            for sizes in cut_sizes {
                if length > 10_000 && sizes == [1] {
                    continue;
                }
                let pieces = cuts(length, sizes);
                let forward: Vec<usize> = (0..pieces.len()).collect();
                let backward: Vec<usize> = forward.iter().rev().copied().collect();
                for (name, order) in [
                    ("forward", forward),
                    ("backward", backward),
                    ("shuffled", permutation(pieces.len(), length as u64 + 5)),
                ] {
                    assert_eq!(
                        joined_out_of_order(&bytes, &pieces, &order),
                        expected,
                        "length {length}, cuts {sizes:?}, {name}"
                    );
                }
            }
        }
    }

    #[test]
    fn extending_in_steps_hashes_as_one_update() {
        for length in [0, 1, 1024, 1025, 6000, 70_000] {
            let bytes = input(length);
            let expected = *blake3::keyed_hash(&KEY, &bytes).as_bytes();
            for step in [1, 7, 1024, 1500, 4096, 70_000] {
                let mut hashed = HashedRange::new(&KEY, 0);
                for piece in bytes.chunks(step) {
                    hashed.extend(piece);
                }
                assert_eq!(hashed.finalize(), expected, "length {length}, step {step}");
            }
        }
    }

    #[test]
    fn a_range_holds_its_edges_and_a_few_values_not_its_bytes() {
        let bytes = input(1 << 20);
        for start in [0u64, 1, 1000, 1024, 5000] {
            let mut hashed = HashedRange::new(&KEY, start);
            hashed.extend(&bytes);
            assert_eq!(hashed.end(), start + bytes.len() as u64);
            assert!(hashed.head.len() < CHUNK_LEN);
            assert!((1..=CHUNK_LEN).contains(&hashed.tail.len()));
            // Increasing then decreasing powers of two: at most two per doubling.
            assert!(hashed.subtrees.len() <= 2 * 20, "{}", hashed.subtrees.len());
            assert!(hashed.weight() < 8 * 1024, "{}", hashed.weight());
        }
    }

    #[test]
    #[should_panic(expected = "out of order")]
    fn joining_ranges_that_do_not_touch_panics() {
        let mut first = HashedRange::new(&KEY, 0);
        first.extend(&[1; 10]);
        let later = HashedRange::new(&KEY, 11);
        first.append(later);
    }
}
