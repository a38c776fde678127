//! The order in which `copy` reads file contents and feeds their content hashes: which chunk
//! references are planned together ([`plan_groups`]), in which order a group's pack reads run
//! ([`read_order`]), and how each file's hash is fed in file order from blobs that arrive in
//! pack order ([`Reorder`]).
//!
//! Must not import I/O, the cache or the repository machinery (see `policy`): values in,
//! decisions out.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::ops::Range;

use crate::crypto::id::Id;

/// A run of one file's chunks planned in one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Index of the file in the caller's list.
    pub file: usize,
    /// Positions of its chunks (in the file's chunk list) this segment covers.
    pub chunks: Range<usize>,
}

/// Splits files, given by their chunk counts in copy order, into groups of at most `max_chunks`
/// chunk references (at least one segment each). A file with more chunks than fit is split
/// into consecutive segments over consecutive groups; a file of no chunks is an empty segment.
/// Every chunk position of every file is in exactly one segment, in order. Pure.
pub fn plan_groups(chunk_counts: &[usize], max_chunks: usize) -> Vec<Vec<Segment>> {
    let max_chunks = max_chunks.max(1);
    let mut groups: Vec<Vec<Segment>> = Vec::new();
    let mut group: Vec<Segment> = Vec::new();
    let mut in_group = 0usize;
    for (file, &count) in chunk_counts.iter().enumerate() {
        let mut start = 0;
        loop {
            if in_group >= max_chunks && !group.is_empty() {
                groups.push(std::mem::take(&mut group));
                in_group = 0;
            }
            let end = count.min(start + (max_chunks - in_group));
            group.push(Segment {
                file,
                chunks: start..end,
            });
            in_group += end - start;
            start = end;
            if start >= count {
                break;
            }
        }
    }
    if !group.is_empty() {
        groups.push(group);
    }
    groups
}

/// The order to run reads in: by the earliest use of any blob each read holds (`first_use`:
/// blob → rank of its first reference in the group's file order; a blob without a rank comes
/// last), ties in the given order. Reading so lets each file's hash advance as soon as the
/// blobs it needs next arrive. Returns indices into `reads`. Pure.
pub fn read_order<S: BuildHasher>(
    reads: &[Vec<Id>],
    first_use: &HashMap<Id, usize, S>,
) -> Vec<usize> {
    let mut order: Vec<(usize, usize)> = reads
        .iter()
        .enumerate()
        .map(|(index, blobs)| {
            let earliest = blobs
                .iter()
                .map(|id| first_use.get(id).copied().unwrap_or(usize::MAX))
                .min()
                .unwrap_or(usize::MAX);
            (earliest, index)
        })
        .collect();
    order.sort_unstable();
    order.into_iter().map(|(_, index)| index).collect()
}

/// What [`Reorder::land`] did with a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Landing {
    /// It is the next chunk the segment's hash needs: hash it now, then every chunk
    /// [`Reorder::next_held`] gives.
    Now,
    /// It arrived early and is held until the chunks before it land.
    Held,
    /// The segment gave up holding (the budget was full, or it gave up before): its hash is
    /// fed later from [`Reorder::resume_at`] by reading the rest again in order.
    Dropped,
}

/// One segment's hash frontier.
#[derive(Debug)]
struct Frontier<P> {
    /// The position the hash needs next.
    next: usize,
    /// One past its last position.
    end: usize,
    /// Chunks that arrived early, with the bytes each counts against the budget.
    held: BTreeMap<usize, (P, usize)>,
    /// Set once the segment stopped holding.
    dropped: bool,
}

/// Feeds segments' hashes in file order from chunks landing in any order, holding early chunks
/// (payload `P`, weighed in bytes by the caller) up to a shared byte budget. A chunk that
/// would overflow the budget drops its segment's held chunks, and the segment is then fed by
/// the caller from [`Reorder::resume_at`] on: memory stays within the budget whatever the
/// order of arrival. Pure.
#[derive(Debug)]
pub struct Reorder<P> {
    segments: Vec<Frontier<P>>,
    held_bytes: usize,
    budget: usize,
}

impl<P> Reorder<P> {
    /// Frontiers for `segments` (their chunk position ranges), holding at most `budget` bytes.
    pub fn new(segments: &[Range<usize>], budget: usize) -> Self {
        Self {
            segments: segments
                .iter()
                .map(|range| Frontier {
                    next: range.start,
                    end: range.end,
                    held: BTreeMap::new(),
                    dropped: false,
                })
                .collect(),
            held_bytes: 0,
            budget,
        }
    }

    /// The chunk at `position` of `segment` arrived; `payload` makes what is held if it came
    /// early, weighing `bytes`. A position that landed already is [`Landing::Dropped`]
    /// (nothing to do).
    pub fn land(
        &mut self,
        segment: usize,
        position: usize,
        payload: impl FnOnce() -> P,
        bytes: usize,
    ) -> Landing {
        let frontier = &mut self.segments[segment];
        if frontier.dropped || position < frontier.next || position >= frontier.end {
            return Landing::Dropped;
        }
        if position == frontier.next {
            frontier.next += 1;
            return Landing::Now;
        }
        if frontier.held.contains_key(&position) {
            return Landing::Dropped;
        }
        if self.held_bytes + bytes > self.budget {
            let freed: usize = frontier.held.values().map(|(_, weight)| *weight).sum();
            frontier.held.clear();
            frontier.dropped = true;
            self.held_bytes -= freed;
            return Landing::Dropped;
        }
        frontier.held.insert(position, (payload(), bytes));
        self.held_bytes += bytes;
        Landing::Held
    }

    /// The held chunk the segment's hash needs next, if it has arrived (the frontier moves past
    /// it).
    pub fn next_held(&mut self, segment: usize) -> Option<P> {
        let frontier = &mut self.segments[segment];
        let (payload, bytes) = frontier.held.remove(&frontier.next)?;
        frontier.next += 1;
        self.held_bytes -= bytes;
        Some(payload)
    }

    /// Where a dropped segment's hash must resume (its chunks from there on are read again in
    /// order); `None` for a segment still holding.
    pub fn resume_at(&self, segment: usize) -> Option<usize> {
        let frontier = &self.segments[segment];
        frontier.dropped.then_some(frontier.next)
    }

    /// Whether every chunk of the segment has been fed to its hash.
    pub fn is_complete(&self, segment: usize) -> bool {
        let frontier = &self.segments[segment];
        !frontier.dropped && frontier.next == frontier.end
    }

    /// Bytes held now.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(byte: u8) -> Id {
        Id([byte; 32])
    }

    #[test]
    fn groups_cover_every_position_once_in_order() {
        let counts_matrix: [&[usize]; 6] = [
            &[],
            &[0],
            &[0, 0, 3],
            &[5, 0, 7, 1],
            &[25],
            &[3, 9, 0, 4, 4, 11, 2],
        ];
        for counts in counts_matrix {
            for max_chunks in [1, 2, 4, 5, 100] {
                let groups = plan_groups(counts, max_chunks);
                let mut seen: Vec<(usize, usize)> = Vec::new();
                let mut files_seen: Vec<usize> = Vec::new();
                for group in &groups {
                    assert!(!group.is_empty());
                    let references: usize = group.iter().map(|segment| segment.chunks.len()).sum();
                    assert!(references <= max_chunks, "{counts:?} max {max_chunks}");
                    for segment in group {
                        files_seen.push(segment.file);
                        seen.extend(
                            segment
                                .chunks
                                .clone()
                                .map(|position| (segment.file, position)),
                        );
                    }
                }
                let expected: Vec<(usize, usize)> = counts
                    .iter()
                    .enumerate()
                    .flat_map(|(file, &count)| (0..count).map(move |position| (file, position)))
                    .collect();
                assert_eq!(seen, expected, "{counts:?} max {max_chunks}");
                // Every file (an empty one too) has a segment, in order.
                files_seen.dedup();
                assert_eq!(files_seen, (0..counts.len()).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn a_file_larger_than_a_group_spans_consecutive_groups() {
        let groups = plan_groups(&[2, 10, 1], 4);
        let flat: Vec<(usize, usize, usize)> = groups
            .iter()
            .enumerate()
            .flat_map(|(group, segments)| {
                segments
                    .iter()
                    .map(move |segment| (group, segment.file, segment.chunks.start))
            })
            .collect();
        assert_eq!(
            flat,
            vec![(0, 0, 0), (0, 1, 0), (1, 1, 2), (2, 1, 6), (3, 2, 0)]
        );
    }

    #[test]
    fn reads_run_by_the_earliest_use_of_their_blobs() {
        // Blobs used at ranks: 1 → 0, 2 → 5, 3 → 2, 4 → 9; 9 has no rank.
        let first_use: HashMap<Id, usize> = [(id(1), 0), (id(2), 5), (id(3), 2), (id(4), 9)]
            .into_iter()
            .collect();
        let reads = vec![
            vec![id(4)],
            vec![id(2), id(9)],
            vec![id(9)],
            vec![id(4), id(1)],
            vec![id(3)],
            vec![],
        ];
        assert_eq!(read_order(&reads, &first_use), vec![3, 4, 1, 0, 2, 5]);
    }

    /// Lands `arrivals` (segment, position) with unit weights; returns each segment's hashed
    /// positions in the order fed, and the segments dropped.
    fn feed(
        ranges: &[Range<usize>],
        arrivals: &[(usize, usize)],
        budget: usize,
    ) -> (Vec<Vec<usize>>, Vec<usize>) {
        let mut reorder: Reorder<usize> = Reorder::new(ranges, budget);
        let mut fed: Vec<Vec<usize>> = vec![Vec::new(); ranges.len()];
        for &(segment, position) in arrivals {
            if reorder.land(segment, position, || position, 1) == Landing::Now {
                fed[segment].push(position);
                while let Some(held) = reorder.next_held(segment) {
                    fed[segment].push(held);
                }
            }
            assert!(reorder.held_bytes() <= budget);
        }
        let dropped = (0..ranges.len())
            .filter(|&segment| reorder.resume_at(segment).is_some())
            .collect();
        for (segment, range) in ranges.iter().enumerate() {
            if reorder.resume_at(segment).is_none() {
                assert!(reorder.is_complete(segment), "segment {segment} {range:?}");
            }
        }
        (fed, dropped)
    }

    /// A deterministic shuffle of `items`.
    fn shuffled<T>(mut items: Vec<T>, seed: u64) -> Vec<T> {
        let mut state = seed | 1;
        for index in (1..items.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            items.swap(index, usize::try_from(state % (index as u64 + 1)).unwrap());
        }
        items
    }

    #[test]
    fn hashes_are_fed_in_file_order_whatever_the_arrival_order() {
        // Segments: an empty file, one chunk, a file split mid-way (positions 3..40), many.
        let ranges = vec![0..0, 0..1, 3..40, 0..200];
        let all: Vec<(usize, usize)> = ranges
            .iter()
            .enumerate()
            .flat_map(|(segment, range)| range.clone().map(move |position| (segment, position)))
            .collect();
        let backward: Vec<(usize, usize)> = all.iter().rev().copied().collect();
        // Pack order: chunks of neighbouring regions shuffled within "packs" of 16.
        let packed: Vec<(usize, usize)> = all
            .chunks(16)
            .enumerate()
            .flat_map(|(pack, chunk)| shuffled(chunk.to_vec(), pack as u64 + 3))
            .collect();
        for (name, order) in [
            ("forward", all.clone()),
            ("backward", backward),
            ("packed", packed),
            ("shuffled", shuffled(all.clone(), 99)),
        ] {
            let (fed, dropped) = feed(&ranges, &order, usize::MAX);
            assert!(dropped.is_empty(), "{name}");
            for (segment, range) in ranges.iter().enumerate() {
                assert_eq!(fed[segment], range.clone().collect::<Vec<_>>(), "{name}");
            }
        }
    }

    #[test]
    fn a_full_budget_drops_the_segment_that_overflows_and_keeps_the_others_exact() {
        let ranges = vec![0..50, 0..50];
        // Segment 1 arrives backward (everything early); segment 0 in order, interleaved.
        let order: Vec<(usize, usize)> = (0..50)
            .flat_map(|index| [(0, index), (1, 49 - index)])
            .collect();
        // Segment 1 needs 49 held at once (positions 49 down to 1 wait for 0).
        for budget in [0, 1, 10, 48] {
            let (fed, dropped) = feed(&ranges, &order, budget);
            assert_eq!(dropped, vec![1], "budget {budget}");
            assert_eq!(fed[0], (0..50).collect::<Vec<_>>());
            // Nothing of the dropped segment was fed out of order (it resumes at 0).
            assert!(fed[1].is_empty());
        }
        let (fed, dropped) = feed(&ranges, &order, 49);
        assert!(dropped.is_empty());
        assert_eq!(fed[1], (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn a_dropped_segment_resumes_where_its_hash_stopped() {
        let mut reorder: Reorder<u8> = Reorder::new(std::slice::from_ref(&(0..10)), 2);
        assert_eq!(reorder.land(0, 0, || 0, 1), Landing::Now);
        assert_eq!(reorder.land(0, 1, || 1, 1), Landing::Now);
        assert_eq!(reorder.land(0, 5, || 5, 1), Landing::Held);
        assert_eq!(reorder.land(0, 6, || 6, 1), Landing::Held);
        assert_eq!(reorder.land(0, 7, || 7, 1), Landing::Dropped);
        assert_eq!(reorder.held_bytes(), 0);
        assert_eq!(reorder.resume_at(0), Some(2));
        // Later arrivals, even the one it needed next, are dropped: it resumes by reading.
        assert_eq!(reorder.land(0, 2, || 2, 1), Landing::Dropped);
        assert!(!reorder.is_complete(0));
    }

    #[test]
    fn a_chunk_used_twice_in_a_file_lands_at_both_positions() {
        // Positions 0 and 3 hold the same blob: the caller lands it at each.
        let (fed, dropped) = feed(
            std::slice::from_ref(&(0..4)),
            &[(0, 3), (0, 0), (0, 2), (0, 1)],
            8,
        );
        assert!(dropped.is_empty());
        assert_eq!(fed[0], vec![0, 1, 2, 3]);
        // Landing a position twice changes nothing.
        let mut reorder: Reorder<u8> = Reorder::new(std::slice::from_ref(&(0..4)), 8);
        assert_eq!(reorder.land(0, 2, || 2, 1), Landing::Held);
        assert_eq!(reorder.land(0, 2, || 2, 1), Landing::Dropped);
        assert_eq!(reorder.held_bytes(), 1);
    }
}
