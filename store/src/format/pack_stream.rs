//! Cutting a pack's bytes, as they arrive in pieces of any size, into the sealed blobs at known
//! byte ranges, so a reader never holds more than one piece and one blob instead of the whole
//! range it reads. A blob that lies inside one piece is handed over without a copy; one that
//! straddles pieces is gathered in a buffer of its own length.
//!
//! Pure: no I/O.

use std::ops::Range;

/// Splits a byte stream that starts at pack offset `start` into the blobs at `ranges`.
///
/// `ranges` are pack offsets sorted by start. A range that starts before the end of the
/// previous one (which no valid pack has) or before `start` is never handed over; neither is
/// one the stream ends before: [`BlobCutter::undelivered`] names them afterwards, so the
/// caller can fail each of them.
#[derive(Debug)]
pub struct BlobCutter<'ranges> {
    ranges: &'ranges [Range<u64>],
    /// Index of the next range to deliver (or skip).
    next: usize,
    /// Pack offset of the next byte to arrive.
    position: u64,
    /// Bytes of `ranges[next]` gathered so far, when it straddles pieces.
    partial: Vec<u8>,
    /// Ranges skipped because they overlap an earlier one or start before `start`.
    skipped: Vec<usize>,
    /// Where the next range may start: the end of the last range handed over, or `start`.
    floor: u64,
}

impl<'ranges> BlobCutter<'ranges> {
    /// A cutter for a stream whose first byte is at pack offset `start`.
    pub fn new(start: u64, ranges: &'ranges [Range<u64>]) -> Self {
        let mut cutter = Self {
            ranges,
            next: 0,
            position: start,
            partial: Vec::new(),
            skipped: Vec::new(),
            floor: start,
        };
        cutter.skip_unreachable();
        cutter
    }

    /// Pack offset of the next byte the cutter expects.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Whether every range has been handed over or skipped (later bytes are not needed).
    pub fn is_done(&self) -> bool {
        self.next >= self.ranges.len()
    }

    /// Feeds the next piece of the stream; calls `blob(index, sealed)` for every range it
    /// completes, in order.
    pub fn push(&mut self, piece: &[u8], blob: &mut dyn FnMut(usize, &[u8])) {
        let piece_start = self.position;
        let piece_end = piece_start + piece.len() as u64;
        while let Some(range) = self.ranges.get(self.next) {
            if range.start >= piece_end {
                break;
            }
            // The part of this blob inside the piece: from where the piece (or the blob)
            // starts to where the piece (or the blob) ends.
            let from = range.start.max(piece_start);
            let to = range.end.min(piece_end);
            let slice = &piece[offset(from - piece_start)..offset(to - piece_start)];
            if to < range.end {
                if self.partial.is_empty() {
                    self.partial.reserve_exact(offset(range.end - range.start));
                }
                self.partial.extend_from_slice(slice);
                break;
            }
            if self.partial.is_empty() {
                blob(self.next, slice);
            } else {
                self.partial.extend_from_slice(slice);
                blob(self.next, &self.partial);
                self.partial = Vec::new();
            }
            self.floor = range.end;
            self.next += 1;
            self.skip_unreachable();
        }
        self.position = piece_end;
    }

    /// The indexes of the ranges never handed over (skipped, or not reached by the stream), in
    /// order. Empty when every blob was delivered.
    pub fn undelivered(&self) -> Vec<usize> {
        let mut out = self.skipped.clone();
        out.extend(self.next..self.ranges.len());
        out.sort_unstable();
        out
    }

    /// Skips the ranges from `next` on that can no longer be served: they start before the
    /// end of the blob last handed over (an overlap) or before the stream.
    fn skip_unreachable(&mut self) {
        while let Some(range) = self.ranges.get(self.next) {
            if range.start >= self.floor {
                break;
            }
            self.skipped.push(self.next);
            self.next += 1;
        }
    }
}

#[allow(clippy::cast_possible_truncation)]
fn offset(value: u64) -> usize {
    value as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream of `length` bytes from pack offset `start` where byte `i` is `i % 251`.
    fn stream(start: u64, length: usize) -> Vec<u8> {
        (0..length)
            .map(|i| u8::try_from((start + i as u64) % 251).unwrap())
            .collect()
    }

    /// Feeds `bytes` (starting at pack offset `start`) in pieces of `piece` bytes and returns
    /// what was handed over and what was not.
    fn cut(
        start: u64,
        bytes: &[u8],
        piece: usize,
        ranges: &[Range<u64>],
    ) -> (Vec<(usize, Vec<u8>)>, Vec<usize>) {
        let mut cutter = BlobCutter::new(start, ranges);
        let mut delivered = Vec::new();
        for chunk in bytes.chunks(piece) {
            cutter.push(chunk, &mut |index, sealed| {
                delivered.push((index, sealed.to_vec()));
            });
        }
        assert_eq!(cutter.position(), start + bytes.len() as u64);
        (delivered, cutter.undelivered())
    }

    #[test]
    fn every_blob_arrives_whole_whatever_the_piece_size() {
        // Blobs touching each other, separated by gaps, one byte long, longer than most pieces.
        let start = 6;
        let ranges = [6..10, 10..11, 20..100, 100..1000, 1001..1002, 1500..4000];
        let bytes = stream(start, 4000 - 6);
        for piece in [1, 2, 3, 7, 64, 89, 90, 100, 999, 4096, 100_000] {
            let (delivered, undelivered) = cut(start, &bytes, piece, &ranges);
            assert!(undelivered.is_empty(), "piece {piece}");
            assert_eq!(delivered.len(), ranges.len(), "piece {piece}");
            for (index, sealed) in delivered.iter().enumerate() {
                assert_eq!(sealed.0, index);
                let range = &ranges[index];
                assert_eq!(
                    sealed.1,
                    stream(
                        range.start,
                        usize::try_from(range.end - range.start).unwrap()
                    ),
                    "piece {piece} blob {index}"
                );
            }
        }
    }

    #[test]
    fn a_short_stream_leaves_the_blobs_it_did_not_reach_undelivered() {
        let ranges = [0..10, 10..30, 30..31, 40..50];
        for (length, delivered_count) in [(0, 0), (9, 0), (10, 1), (29, 1), (31, 3), (45, 3)] {
            for piece in [1, 4, 100] {
                let (delivered, undelivered) = cut(0, &stream(0, length), piece, &ranges);
                assert_eq!(
                    delivered.len(),
                    delivered_count,
                    "length {length} piece {piece}"
                );
                let expected: Vec<usize> = (delivered_count..ranges.len()).collect();
                assert_eq!(undelivered, expected, "length {length} piece {piece}");
            }
        }
    }

    #[test]
    fn overlapping_ranges_and_ranges_before_the_stream_are_skipped_not_misread() {
        // 5..8 starts before the stream; 15..25 overlaps 10..20; 20..30 follows 10..20.
        let ranges = [5..8, 10..20, 15..25, 20..30];
        for piece in [1, 3, 50] {
            let (delivered, undelivered) = cut(8, &stream(8, 22), piece, &ranges);
            let indexes: Vec<usize> = delivered.iter().map(|(index, _)| *index).collect();
            assert_eq!(indexes, [1, 3], "piece {piece}");
            assert_eq!(delivered[1].1, stream(20, 10));
            assert_eq!(undelivered, [0, 2], "piece {piece}");
        }
    }

    #[test]
    fn no_ranges_means_nothing_to_deliver() {
        let mut cutter = BlobCutter::new(0, &[]);
        assert!(cutter.is_done());
        cutter.push(&[1, 2, 3], &mut |_, _| panic!("nothing to hand over"));
        assert!(cutter.undelivered().is_empty());
    }
}
