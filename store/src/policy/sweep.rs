//! Which packs a `check` downloads and verifies: all of them, a random share, a deterministic
//! slice `K/M`, or the rotating sweep that re-reads the packs verified longest ago.
//!
//! Pure: no I/O and no clock. The caller supplies the packs, what the local cache remembers of
//! earlier verifications, and the time.

use std::collections::HashMap;
use std::str::FromStr;

use crate::crypto::id::Id;

/// Seconds in a day, for "verified within DAYS".
pub const SECONDS_PER_DAY: u64 = 86_400;

/// A pack that a check may download: its id and length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackSize {
    /// The pack's id (its name).
    pub id: Id,
    /// Its length in bytes, as the index records it.
    pub length: u64,
}

/// When a pack was last downloaded and verified whole, as remembered by the local cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PackVerification {
    /// The sweep number: one more for every check that verified packs. Orders verifications
    /// even when the clock steps back or two checks run within a second.
    pub sweep: u64,
    /// Unix time (seconds) of that check.
    pub unix_seconds: u64,
}

/// Slice `part` of `of`: the packs whose id, read as a big-endian `u64` from its first 8 bytes
/// (the first 16 hex digits of its name), is `part - 1` modulo `of`. The `of` slices partition
/// the packs, so `of` checks with `1/of` … `of/of` read every pack exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    part: u32,
    of: u32,
}

impl Slice {
    /// Slice `part` (1-based) of `of`; `None` unless `1 <= part <= of`.
    pub fn new(part: u32, of: u32) -> Option<Self> {
        (part >= 1 && part <= of).then_some(Self { part, of })
    }

    /// Which slice this is (1-based).
    pub fn part(self) -> u32 {
        self.part
    }

    /// How many slices there are.
    pub fn of(self) -> u32 {
        self.of
    }

    /// Whether `pack` belongs to this slice.
    pub fn contains(self, pack: &Id) -> bool {
        slice_of(pack, self.of) == self.part
    }
}

/// The slice (1-based) of `of` that `pack` belongs to (`of` must be at least 1).
pub fn slice_of(pack: &Id, of: u32) -> u32 {
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&pack.0[..8]);
    let remainder = u64::from_be_bytes(prefix) % u64::from(of.max(1));
    // The remainder is below `of`, a u32.
    u32::try_from(remainder).unwrap_or(0) + 1
}

/// A `--read-data-subset` value: `N%` (a random share of the packs) or `K/M` (a slice).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Subset {
    /// This share of the packs (0 < share <= 1), at least one.
    Fraction(f64),
    /// A deterministic slice.
    Slice(Slice),
}

impl FromStr for Subset {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if let Some(number) = text.strip_suffix('%') {
            let percent: f64 = number
                .trim()
                .parse()
                .map_err(|_| format!("{text:?} is not a percentage: give for example 10%"))?;
            if !(percent > 0.0 && percent <= 100.0) {
                return Err(format!(
                    "{text:?}: the percentage must be above 0% and at most 100%"
                ));
            }
            return Ok(Self::Fraction(percent / 100.0));
        }
        if let Some((part, of)) = text.split_once('/') {
            let parse = |number: &str| number.trim().parse::<u32>().ok();
            return parse(part)
                .zip(parse(of))
                .and_then(|(part, of)| Slice::new(part, of))
                .map(Self::Slice)
                .ok_or_else(|| {
                    format!("{text:?}: a slice is K/M with 1 <= K <= M, for example 2/7")
                });
        }
        Err(format!(
            "{text:?}: give a percentage (10%) or a slice K/M (2/7)"
        ))
    }
}

/// A share of the packs, chosen at random by `seed`: `ceil(fraction × count)` packs, at least one
/// when there are packs and the fraction is positive. The result keeps the order of `packs`.
pub fn sample_packs(packs: &[Id], fraction: f64, seed: u64) -> Vec<Id> {
    let count = share_count(packs.len(), fraction);
    let mut scored: Vec<(u64, usize)> = packs
        .iter()
        .enumerate()
        .map(|(position, pack)| (seeded_score(seed, &pack.0), position))
        .collect();
    scored.sort_unstable();
    let mut chosen: Vec<usize> = scored
        .into_iter()
        .take(count)
        .map(|(_, position)| position)
        .collect();
    chosen.sort_unstable();
    chosen.into_iter().map(|position| packs[position]).collect()
}

/// How many of `total` items a share `fraction` is: `ceil(fraction × total)`, at least one when
/// `total > 0` and `fraction > 0`, at most `total`.
pub fn share_count(total: usize, fraction: f64) -> usize {
    if total == 0 || fraction.is_nan() || fraction <= 0.0 {
        return 0;
    }
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let wanted = (fraction.min(1.0) * total as f64).ceil() as usize;
    wanted.clamp(1, total)
}

/// A number in `0..2^64` determined by `seed` and `bytes`, uniform over `bytes`: the first
/// 8 bytes of `BLAKE3(seed (u64 LE) || bytes)`.
pub fn seeded_score(seed: u64, bytes: &[u8]) -> u64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&seed.to_le_bytes());
    hasher.update(bytes);
    let hash = hasher.finalize();
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(prefix)
}

/// Bytes one run of a sweep over `total_bytes` in `days` runs reads: `ceil(total / days)`.
pub fn rotation_budget(total_bytes: u64, days: u32) -> u64 {
    total_bytes.div_ceil(u64::from(days.max(1)))
}

/// The packs one run of the rotating sweep reads: never-verified packs first (by id), then the
/// packs verified longest ago (by sweep, then id), until at least [`rotation_budget`] bytes are
/// chosen (at least one pack). A pack counts at least one byte, so that empty packs cannot
/// stall the sweep.
///
/// Run once a day, this re-reads the whole repository every `days` days: a run only reaches a
/// pack it verified itself after every pack verified earlier, and `days` runs choose at least the
/// total size. Packs in `verified` that are not in `packs` (deleted by a prune) are ignored.
pub fn rotation_choice<S: std::hash::BuildHasher>(
    packs: &[PackSize],
    verified: &HashMap<Id, PackVerification, S>,
    days: u32,
) -> Vec<Id> {
    let cost = |pack: &PackSize| pack.length.max(1);
    let total: u64 = packs.iter().map(cost).sum();
    let budget = rotation_budget(total, days);
    let mut ordered: Vec<(Option<PackVerification>, &PackSize)> = packs
        .iter()
        .map(|pack| (verified.get(&pack.id).copied(), pack))
        .collect();
    // `None` (never verified) sorts before every `Some`.
    ordered.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.id.cmp(&b.1.id)));
    let mut chosen = Vec::new();
    let mut chosen_bytes = 0u64;
    for (_, pack) in ordered {
        if !chosen.is_empty() && chosen_bytes >= budget {
            break;
        }
        chosen.push(pack.id);
        chosen_bytes = chosen_bytes.saturating_add(cost(pack));
    }
    chosen
}

/// How much of the repository was verified at most `days` days before `now_unix`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Coverage {
    /// The window, in days.
    pub days: u32,
    /// Packs verified within the window.
    pub packs_verified: usize,
    /// Their bytes.
    pub bytes_verified: u64,
    /// All packs considered.
    pub packs_total: usize,
    /// Their bytes.
    pub bytes_total: u64,
}

impl Coverage {
    /// The share of the bytes verified within the window (1 for an empty repository).
    #[allow(clippy::cast_precision_loss)]
    pub fn fraction(&self) -> f64 {
        if self.bytes_total == 0 {
            1.0
        } else {
            self.bytes_verified as f64 / self.bytes_total as f64
        }
    }
}

/// Which of `packs` were verified within `days` days before `now_unix`.
pub fn coverage<S: std::hash::BuildHasher>(
    packs: &[PackSize],
    verified: &HashMap<Id, PackVerification, S>,
    days: u32,
    now_unix: u64,
) -> Coverage {
    let since = now_unix.saturating_sub(u64::from(days).saturating_mul(SECONDS_PER_DAY));
    let mut out = Coverage {
        days,
        packs_total: packs.len(),
        bytes_total: packs.iter().map(|pack| pack.length).sum(),
        ..Coverage::default()
    };
    for pack in packs {
        if verified
            .get(&pack.id)
            .is_some_and(|verification| verification.unix_seconds >= since)
        {
            out.packs_verified += 1;
            out.bytes_verified += pack.length;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashSet};

    use proptest::prelude::*;

    use super::*;

    fn id(seed: u64) -> Id {
        Id(*blake3::hash(&seed.to_le_bytes()).as_bytes())
    }

    fn packs(lengths: &[u64]) -> Vec<PackSize> {
        lengths
            .iter()
            .enumerate()
            .map(|(position, length)| PackSize {
                id: id(position as u64),
                length: *length,
            })
            .collect()
    }

    #[test]
    fn slice_reads_the_first_16_hex_digits_big_endian() {
        let mut pack = Id([0; 32]);
        pack.0[7] = 10; // 0x000000000000000a = 10
        assert_eq!(slice_of(&pack, 3), 2); // 10 % 3 == 1 → slice 2
        assert!(Slice::new(2, 3).unwrap().contains(&pack));
        assert!(!Slice::new(1, 3).unwrap().contains(&pack));
        let hex = pack.to_hex();
        assert_eq!(u64::from_str_radix(&hex[..16], 16).unwrap(), 10);
    }

    #[test]
    fn subset_parses_percentages_and_slices() {
        assert_eq!("10%".parse::<Subset>(), Ok(Subset::Fraction(0.1)));
        assert_eq!("2.5 %".parse::<Subset>(), Ok(Subset::Fraction(0.025)));
        assert_eq!(
            "2/7".parse::<Subset>(),
            Ok(Subset::Slice(Slice::new(2, 7).unwrap()))
        );
        for bad in ["0%", "101%", "x%", "0/3", "4/3", "1/0", "a/b", "10", ""] {
            assert!(bad.parse::<Subset>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn share_count_rounds_up_and_keeps_one() {
        assert_eq!(share_count(0, 0.5), 0);
        assert_eq!(share_count(10, 0.0), 0);
        assert_eq!(share_count(10, 0.01), 1);
        assert_eq!(share_count(10, 0.25), 3);
        assert_eq!(share_count(10, 1.0), 10);
        assert_eq!(share_count(10, 7.0), 10);
        assert_eq!(share_count(10, f64::NAN), 0);
    }

    #[test]
    fn rotation_reads_never_verified_then_oldest() {
        let all = packs(&[100, 100, 100, 100]);
        let mut verified = HashMap::new();
        verified.insert(
            all[0].id,
            PackVerification {
                sweep: 5,
                unix_seconds: 50,
            },
        );
        verified.insert(
            all[1].id,
            PackVerification {
                sweep: 2,
                unix_seconds: 90, // a clock that stepped back does not matter: sweeps order
            },
        );
        verified.insert(
            all[2].id,
            PackVerification {
                sweep: 3,
                unix_seconds: 60,
            },
        );
        // Budget 400/4 = 100: one pack, the never-verified one.
        assert_eq!(rotation_choice(&all, &verified, 4), vec![all[3].id]);
        // Budget 200: never verified, then sweep 2.
        assert_eq!(
            rotation_choice(&all, &verified, 2),
            vec![all[3].id, all[1].id]
        );
        assert!(rotation_choice(&[], &verified, 3).is_empty());
    }

    #[test]
    fn rotation_reads_at_least_one_pack() {
        let all = packs(&[1000, 1000]);
        let chosen = rotation_choice(&all, &HashMap::new(), 365);
        assert_eq!(chosen.len(), 1);
        let empty = packs(&[0, 0]);
        assert_eq!(rotation_choice(&empty, &HashMap::new(), 3).len(), 1);
    }

    #[test]
    fn coverage_counts_the_window() {
        let all = packs(&[10, 20, 30]);
        let mut verified = HashMap::new();
        let at = |unix_seconds| PackVerification {
            sweep: 1,
            unix_seconds,
        };
        verified.insert(all[0].id, at(10 * SECONDS_PER_DAY));
        verified.insert(all[1].id, at(3 * SECONDS_PER_DAY - 1)); // just outside
        verified.insert(id(99), at(10 * SECONDS_PER_DAY)); // pruned: ignored
        let covered = coverage(&all, &verified, 7, 10 * SECONDS_PER_DAY);
        assert_eq!(covered.packs_verified, 1);
        assert_eq!(covered.bytes_verified, 10);
        assert_eq!(covered.bytes_total, 60);
        assert!((covered.fraction() - 1.0 / 6.0).abs() < 1e-12);
        assert!((coverage(&[], &verified, 7, 0).fraction() - 1.0).abs() < f64::EPSILON);
    }

    /// Simulates daily runs: each verifies what `rotation_choice` picks at sweep `run`.
    fn run_sweeps(
        all: &[PackSize],
        verified: &mut HashMap<Id, PackVerification>,
        days: u32,
        runs: u64,
        first_sweep: u64,
    ) -> Vec<Vec<Id>> {
        (0..runs)
            .map(|run| {
                let chosen = rotation_choice(all, verified, days);
                let sweep = first_sweep + run;
                for pack in &chosen {
                    verified.insert(
                        *pack,
                        PackVerification {
                            sweep,
                            unix_seconds: sweep * SECONDS_PER_DAY,
                        },
                    );
                }
                chosen
            })
            .collect()
    }

    proptest! {
        /// The M slices partition any set of packs.
        #[test]
        fn slices_partition_the_packs(seeds in prop::collection::hash_set(any::<u64>(), 0..200), of in 1u32..20) {
            let ids: Vec<Id> = seeds.iter().map(|seed| id(*seed)).collect();
            let mut seen = HashSet::new();
            for part in 1..=of {
                let slice = Slice::new(part, of).unwrap();
                for pack in ids.iter().filter(|pack| slice.contains(pack)) {
                    prop_assert!(seen.insert(*pack), "pack in two slices");
                }
            }
            prop_assert_eq!(seen.len(), ids.len());
        }

        /// A sample has the promised size, is deterministic, and grows with the share.
        #[test]
        fn samples_are_deterministic_and_nested(count in 0usize..120, seed in any::<u64>(), percent in 1u32..=100) {
            let ids: Vec<Id> = (0..count as u64).map(id).collect();
            let fraction = f64::from(percent) / 100.0;
            let sample = sample_packs(&ids, fraction, seed);
            prop_assert_eq!(sample.len(), share_count(count, fraction));
            prop_assert_eq!(&sample, &sample_packs(&ids, fraction, seed));
            let larger: HashSet<Id> = sample_packs(&ids, (fraction + 0.2).min(1.0), seed).into_iter().collect();
            prop_assert!(sample.iter().all(|pack| larger.contains(pack)));
        }

        /// From any history, `days` daily runs verify every pack, and no run re-reads a pack
        /// while another pack waits that was verified earlier (or never).
        #[test]
        fn rotation_covers_everything_within_days_runs(
            lengths in prop::collection::vec(0u64..5_000, 1..60),
            days in 1u32..10,
            history in prop::collection::vec(prop::option::of(0u64..20), 60),
        ) {
            let all = packs(&lengths);
            let mut verified: HashMap<Id, PackVerification> = all
                .iter()
                .zip(&history)
                .filter_map(|(pack, sweep)| sweep.map(|sweep| (pack.id, PackVerification { sweep, unix_seconds: sweep })))
                .collect();
            let before = verified.clone();
            let runs = run_sweeps(&all, &mut verified, days, u64::from(days), 100);
            let read: BTreeSet<Id> = runs.iter().flatten().copied().collect();
            prop_assert_eq!(read.len(), all.len(), "not every pack read within {} runs", days);
            // Oldest first: each run's choice is a prefix of the staleness order at that time.
            let first = &runs[0];
            let key = |pack: &Id| (before.get(pack).copied(), *pack);
            let chosen_max = first.iter().map(key).max();
            for pack in &all {
                if !first.contains(&pack.id) {
                    prop_assert!(Some(key(&pack.id)) > chosen_max, "a staler pack was skipped");
                }
            }
        }

        /// Each run reads at least its share of the bytes and overshoots by less than one pack.
        #[test]
        fn rotation_reads_its_budget(lengths in prop::collection::vec(1u64..5_000, 1..60), days in 1u32..40) {
            let all = packs(&lengths);
            let chosen = rotation_choice(&all, &HashMap::new(), days);
            let by_id: HashMap<Id, u64> = all.iter().map(|pack| (pack.id, pack.length)).collect();
            let bytes: u64 = chosen.iter().map(|pack| by_id[pack]).sum();
            let budget = rotation_budget(by_id.values().sum(), days);
            prop_assert!(bytes >= budget);
            let last = by_id[chosen.last().unwrap()];
            prop_assert!(bytes - last < budget || chosen.len() == 1);
        }
    }
}
