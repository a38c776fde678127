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

/// What [`Reorder`] holds for a run of consecutive early chunks of a segment: something that
/// joins with the run that follows it, and weighs some bytes against the budget.
pub trait HeldRun {
    /// Bytes of memory it holds.
    fn weight(&self) -> usize;
    /// Joins `later`, the run of the chunks that follow this run's last one.
    fn append(&mut self, later: Self);
}

/// What [`Reorder::land`] did with a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Landing {
    /// It is the next chunk the segment's hash needs: hash it now, then the run
    /// [`Reorder::next_held`] gives.
    Now,
    /// It arrived early and is held (joined to the held runs next to it) until the chunks
    /// before it land.
    Held,
    /// The segment gave up holding (the budget was full, or it gave up before): its hash is
    /// fed later from [`Reorder::resume_at`] by reading the rest again in order.
    Dropped,
}

/// A held run: one past its last position, the run, and its weight when last counted.
#[derive(Debug)]
struct Run<P> {
    end: usize,
    payload: P,
    weight: usize,
}

/// One segment's hash frontier.
#[derive(Debug)]
struct Frontier<P> {
    /// The position the hash needs next.
    next: usize,
    /// One past its last position.
    end: usize,
    /// Runs of chunks that arrived early, by their first position; two runs never touch (they
    /// are joined).
    held: BTreeMap<usize, Run<P>>,
    /// Set once the segment stopped holding.
    dropped: bool,
}

impl<P: HeldRun> Frontier<P> {
    /// Whether `position` is in a held run.
    fn holds(&self, position: usize) -> bool {
        self.held
            .range(..=position)
            .next_back()
            .is_some_and(|(_, run)| run.end > position)
    }

    /// Holds the chunk at `position` (not held yet, after the frontier), joined to the runs
    /// that end just before it and start just after it. Returns the bytes held before and after.
    fn hold(&mut self, position: usize, payload: P) -> (usize, usize) {
        let mut first = position;
        let mut payload = payload;
        let mut before = 0;
        let left = self
            .held
            .range(..position)
            .next_back()
            .filter(|(_, run)| run.end == position)
            .map(|(&start, _)| start);
        if let Some(start) = left {
            let run = self.held.remove(&start).expect("just found");
            before += run.weight;
            let mut joined = run.payload;
            joined.append(payload);
            payload = joined;
            first = start;
        }
        let mut end = position + 1;
        if let Some(run) = self.held.remove(&end) {
            before += run.weight;
            end = run.end;
            payload.append(run.payload);
        }
        let weight = payload.weight();
        self.held.insert(
            first,
            Run {
                end,
                payload,
                weight,
            },
        );
        (before, weight)
    }
}

/// Feeds segments' hashes in file order from chunks landing in any order, holding early chunks
/// as runs (payload `P`: consecutive early chunks are joined into one run, weighed by
/// [`HeldRun::weight`]) up to a shared byte budget. A chunk that would overflow the budget
/// drops its segment's held runs, and the segment is then fed by the caller from
/// [`Reorder::resume_at`] on: memory stays within the budget whatever the order of arrival.
/// Pure.
#[derive(Debug)]
pub struct Reorder<P> {
    segments: Vec<Frontier<P>>,
    held_bytes: usize,
    budget: usize,
}

impl<P: HeldRun> Reorder<P> {
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

    /// The chunk at `position` of `segment` arrived; `payload` makes the run of that one chunk
    /// if it came early. A position that landed already is [`Landing::Dropped`] (nothing to
    /// do).
    pub fn land(
        &mut self,
        segment: usize,
        position: usize,
        payload: impl FnOnce() -> P,
    ) -> Landing {
        let frontier = &mut self.segments[segment];
        if frontier.dropped || position < frontier.next || position >= frontier.end {
            return Landing::Dropped;
        }
        if position == frontier.next {
            frontier.next += 1;
            return Landing::Now;
        }
        if frontier.holds(position) {
            return Landing::Dropped;
        }
        let (before, after) = frontier.hold(position, payload());
        self.held_bytes = self.held_bytes - before + after;
        if self.held_bytes > self.budget {
            let freed: usize = frontier.held.values().map(|run| run.weight).sum();
            frontier.held.clear();
            frontier.dropped = true;
            self.held_bytes -= freed;
            return Landing::Dropped;
        }
        Landing::Held
    }

    /// The held run the segment's hash needs next, if its first chunk has arrived (the
    /// frontier moves past the run).
    pub fn next_held(&mut self, segment: usize) -> Option<P> {
        let frontier = &mut self.segments[segment];
        let run = frontier.held.remove(&frontier.next)?;
        frontier.next = run.end;
        self.held_bytes -= run.weight;
        Some(run.payload)
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

    /// Runs held now (over every segment).
    pub fn held_runs(&self) -> usize {
        self.segments
            .iter()
            .map(|frontier| frontier.held.len())
            .sum()
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

    /// A held run of the tests: its positions, weighing one byte each (`per_chunk`, as when
    /// each chunk's bytes are held) or one byte per run (as when a run is summarised).
    #[derive(Debug)]
    struct Positions {
        positions: Vec<usize>,
        per_chunk: bool,
    }

    impl HeldRun for Positions {
        fn weight(&self) -> usize {
            if self.per_chunk {
                self.positions.len()
            } else {
                1
            }
        }

        fn append(&mut self, later: Self) {
            // Only the run that follows is ever joined.
            assert_eq!(later.positions[0], self.positions.last().unwrap() + 1);
            self.positions.extend(later.positions);
        }
    }

    /// Weighing of the test runs.
    #[derive(Debug, Clone, Copy)]
    enum Weighing {
        PerChunk,
        PerRun,
    }

    /// Lands `arrivals` (segment, position); returns each segment's hashed positions in the
    /// order fed, the segments dropped and the most runs held at once.
    fn feed(
        ranges: &[Range<usize>],
        arrivals: &[(usize, usize)],
        budget: usize,
        weighing: Weighing,
    ) -> (Vec<Vec<usize>>, Vec<usize>, usize) {
        let mut reorder: Reorder<Positions> = Reorder::new(ranges, budget);
        let mut fed: Vec<Vec<usize>> = vec![Vec::new(); ranges.len()];
        let mut most_runs = 0;
        for &(segment, position) in arrivals {
            let run = || Positions {
                positions: vec![position],
                per_chunk: matches!(weighing, Weighing::PerChunk),
            };
            if reorder.land(segment, position, run) == Landing::Now {
                fed[segment].push(position);
                while let Some(held) = reorder.next_held(segment) {
                    fed[segment].extend(held.positions);
                }
            }
            assert!(reorder.held_bytes() <= budget);
            most_runs = most_runs.max(reorder.held_runs());
        }
        let dropped = (0..ranges.len())
            .filter(|&segment| reorder.resume_at(segment).is_some())
            .collect();
        for (segment, range) in ranges.iter().enumerate() {
            // What a dropped segment fed is its start, in order, up to where it resumes.
            if let Some(resume) = reorder.resume_at(segment) {
                assert_eq!(fed[segment], (range.start..resume).collect::<Vec<_>>());
            } else {
                assert!(reorder.is_complete(segment), "segment {segment} {range:?}");
                assert_eq!(fed[segment], range.clone().collect::<Vec<_>>());
            }
        }
        assert_eq!(reorder.held_bytes(), 0);
        (fed, dropped, most_runs)
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

    /// Arrival orders of every position of `ranges`: forward, backward, shuffled within
    /// "packs" of 16 neighbours, shuffled whole, and the second half first.
    fn arrival_orders(ranges: &[Range<usize>]) -> Vec<(&'static str, Vec<(usize, usize)>)> {
        let all: Vec<(usize, usize)> = ranges
            .iter()
            .enumerate()
            .flat_map(|(segment, range)| range.clone().map(move |position| (segment, position)))
            .collect();
        let backward: Vec<(usize, usize)> = all.iter().rev().copied().collect();
        let packed: Vec<(usize, usize)> = all
            .chunks(16)
            .enumerate()
            .flat_map(|(pack, chunk)| shuffled(chunk.to_vec(), pack as u64 + 3))
            .collect();
        let (first, second) = all.split_at(all.len() / 2);
        let halves: Vec<(usize, usize)> = second.iter().chain(first).copied().collect();
        vec![
            ("forward", all.clone()),
            ("backward", backward),
            ("packed", packed),
            ("shuffled", shuffled(all, 99)),
            ("halves", halves),
        ]
    }

    #[test]
    fn hashes_are_fed_in_file_order_whatever_the_arrival_order_and_budget() {
        // Segments: an empty file, one chunk, a file split mid-way (positions 3..40), many.
        let ranges = vec![0..0, 0..1, 3..40, 0..200];
        for (name, order) in arrival_orders(&ranges) {
            for weighing in [Weighing::PerChunk, Weighing::PerRun] {
                // Nothing held, one run or chunk, a few, everything: `feed` checks that each
                // segment is fed exactly in order (or its start, up to where it resumes).
                for budget in [0, 1, 5, usize::MAX] {
                    let (_, dropped, _) = feed(&ranges, &order, budget, weighing);
                    if budget == usize::MAX || name == "forward" {
                        assert!(dropped.is_empty(), "{name} {weighing:?} {budget}");
                    }
                }
            }
        }
    }

    #[test]
    fn consecutive_early_chunks_are_held_as_one_run() {
        let ranges = std::slice::from_ref(&(0..200));
        for (name, order) in arrival_orders(ranges) {
            let (_, dropped, most_runs) = feed(ranges, &order, usize::MAX, Weighing::PerRun);
            assert!(dropped.is_empty());
            let bound = match name {
                "forward" => 0,
                // Everything after the first chunk joins one run.
                "backward" | "halves" => 1,
                // At most half the chunks of one "pack" of 16 apart from each other.
                "packed" => 8,
                _ => 200,
            };
            assert!(most_runs <= bound, "{name}: {most_runs} runs");
        }
        // A run weighing the same however long: the backward file fits a budget of one run,
        // where holding each chunk needs one per chunk after the first.
        let backward: Vec<(usize, usize)> = (0..200).rev().map(|position| (0, position)).collect();
        assert!(feed(ranges, &backward, 1, Weighing::PerRun).1.is_empty());
        assert_eq!(feed(ranges, &backward, 198, Weighing::PerChunk).1, vec![0]);
        assert!(
            feed(ranges, &backward, 199, Weighing::PerChunk)
                .1
                .is_empty()
        );
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
            let (fed, dropped, _) = feed(&ranges, &order, budget, Weighing::PerChunk);
            assert_eq!(dropped, vec![1], "budget {budget}");
            assert_eq!(fed[0], (0..50).collect::<Vec<_>>());
            // Nothing of the dropped segment was fed out of order (it resumes at 0).
            assert!(fed[1].is_empty());
        }
        let (fed, dropped, _) = feed(&ranges, &order, 49, Weighing::PerChunk);
        assert!(dropped.is_empty());
        assert_eq!(fed[1], (0..50).collect::<Vec<_>>());
    }

    fn one(position: usize) -> Positions {
        Positions {
            positions: vec![position],
            per_chunk: true,
        }
    }

    #[test]
    fn a_dropped_segment_resumes_where_its_hash_stopped() {
        let mut reorder: Reorder<Positions> = Reorder::new(std::slice::from_ref(&(0..10)), 2);
        assert_eq!(reorder.land(0, 0, || one(0)), Landing::Now);
        assert_eq!(reorder.land(0, 1, || one(1)), Landing::Now);
        assert_eq!(reorder.land(0, 5, || one(5)), Landing::Held);
        assert_eq!(reorder.land(0, 7, || one(7)), Landing::Held);
        assert_eq!(reorder.held_runs(), 2);
        assert_eq!(reorder.land(0, 6, || one(6)), Landing::Dropped);
        assert_eq!(reorder.held_bytes(), 0);
        assert_eq!(reorder.held_runs(), 0);
        assert_eq!(reorder.resume_at(0), Some(2));
        // Later arrivals, even the one it needed next, are dropped: it resumes by reading.
        assert_eq!(reorder.land(0, 2, || one(2)), Landing::Dropped);
        assert!(!reorder.is_complete(0));
    }

    #[test]
    fn a_chunk_used_twice_in_a_file_lands_at_both_positions() {
        // Positions 0 and 3 hold the same blob: the caller lands it at each.
        let (fed, dropped, _) = feed(
            std::slice::from_ref(&(0..4)),
            &[(0, 3), (0, 0), (0, 2), (0, 1)],
            8,
            Weighing::PerChunk,
        );
        assert!(dropped.is_empty());
        assert_eq!(fed[0], vec![0, 1, 2, 3]);
        // Landing a position twice changes nothing, inside a run too.
        let mut reorder: Reorder<Positions> = Reorder::new(std::slice::from_ref(&(0..6)), 8);
        assert_eq!(reorder.land(0, 2, || one(2)), Landing::Held);
        assert_eq!(reorder.land(0, 3, || one(3)), Landing::Held);
        assert_eq!(reorder.land(0, 4, || one(4)), Landing::Held);
        for position in [2, 3, 4] {
            assert_eq!(
                reorder.land(0, position, || one(position)),
                Landing::Dropped
            );
        }
        assert_eq!(reorder.held_bytes(), 3);
        assert_eq!(reorder.held_runs(), 1);
    }
}
