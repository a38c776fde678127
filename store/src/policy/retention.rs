//! Retention policies: which snapshots `forget` keeps, and why. Owns the rules (`keep_last`,
//! hourly/daily/weekly/monthly/yearly buckets in a time zone's local calendar, `keep_within`,
//! `keep_tags`), snapshot filters and grouping.
//!
//! Pure: no I/O, no clock (`keep_within` is measured back from the newest snapshot of a group,
//! not from now), nothing from the backend or the cache. Deleting is `forget`'s business.
//!
//! The rules follow restic's `forget`: snapshots are walked newest first (equal times: the larger
//! id counts as newer, as in [`crate::Repository::list_snapshots`]); a bucket rule keeps a
//! snapshot when its bucket differs from the buckets that rule has kept, until it has used its
//! count of buckets: the newest snapshot of each of the N newest buckets. A snapshot is kept when
//! any rule keeps it, and lists every rule that did. Differences from restic: a bucket that a
//! clock change returns to (Chatham's 45-minute DST shift reopens a local hour) counts once, not
//! twice; and no rule keeps the oldest snapshot when buckets are left over (restic 0.17 does).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::str::FromStr;

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};

use crate::crypto::id::Id;
use crate::format::snapshot::Snapshot;

/// A policy or one of its parts is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RetentionError {
    /// No rule would keep anything: applying the policy would remove every snapshot.
    #[error(
        "refusing to forget every snapshot: the policy has no keep rule (give at least one of \
         --keep-last, --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly, --keep-yearly, \
         --keep-within, --keep-tag)"
    )]
    EmptyPolicy,
    /// No rule keeps any snapshot of a group that has some: a misspelled rule
    /// (`--keep-tag nightlly`) must not delete a group's whole history without being asked to.
    #[error(
        "refusing to remove every snapshot of {group} ({count}): no rule of the policy keeps any \
         of them (a misspelled --keep-tag?); look with --dry-run, or give --allow-empty-group to \
         remove them"
    )]
    EmptiesGroup {
        /// The group, as `host db1, paths /srv`.
        group: String,
        /// How many snapshots it has.
        count: usize,
    },
    /// A `keep_within` duration that does not parse.
    #[error("invalid duration {input:?}: {reason} (write it like 7d, 2w, 1m, 1y or 1y6m12h)")]
    InvalidDuration {
        /// The text given.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A `group_by` list with an unknown field.
    #[error("invalid grouping {input:?}: use a comma-separated list of host, paths, tags, or ''")]
    InvalidGroupBy {
        /// The text given.
        input: String,
    },
}

/// What retention looks at in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The snapshot object's id.
    pub id: Id,
    /// When the backup started (UTC instant).
    pub time: Timestamp,
    /// Host name recorded in the snapshot.
    pub host: String,
    /// Tags of the snapshot.
    pub tags: Vec<String>,
    /// Backed-up paths, or the stream's name.
    pub paths: Vec<String>,
}

impl SnapshotInfo {
    /// The facts of a decoded snapshot. A time outside jiff's range (years ±9999) is clamped to
    /// the nearest end of it.
    pub fn from_snapshot(id: Id, snapshot: &Snapshot) -> Self {
        let nanos = i32::try_from(snapshot.time.nanos).unwrap_or(0);
        let time =
            Timestamp::new(snapshot.time.seconds, nanos).unwrap_or(if snapshot.time.seconds < 0 {
                Timestamp::MIN
            } else {
                Timestamp::MAX
            });
        Self {
            id,
            time,
            host: snapshot.host.clone(),
            tags: snapshot.tags.clone(),
            paths: snapshot.source.names(),
        }
    }
}

/// A set of tags that must all be present, written `a,b,c`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TagSet(pub Vec<String>);

impl TagSet {
    /// Whether every tag of the set is among `tags` (the empty set matches everything).
    pub fn is_subset_of(&self, tags: &[String]) -> bool {
        self.0.iter().all(|tag| tags.contains(tag))
    }
}

impl FromStr for TagSet {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Self(
            text.split(',')
                .map(str::trim)
                .filter(|tag| !tag.is_empty())
                .map(str::to_owned)
                .collect(),
        ))
    }
}

impl fmt::Display for TagSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

/// A calendar span back from the newest snapshot: years, months, weeks, days (local calendar,
/// so a day across a DST change is 23 or 25 hours) and hours (elapsed time). Written like `7d`,
/// `2w`, `1m` (one month), `1y` or `1y6m12h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct KeepWithin {
    /// Calendar years.
    pub years: u32,
    /// Calendar months (a month back from the 31st lands on the month's last day).
    pub months: u32,
    /// Weeks of seven calendar days.
    pub weeks: u32,
    /// Calendar days.
    pub days: u32,
    /// Hours of elapsed time.
    pub hours: u32,
}

impl KeepWithin {
    /// Whether every part is zero.
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }

    /// The instant this span before `newest` in `time_zone`'s calendar; snapshots strictly after
    /// it are within. `None` when the span reaches past the earliest representable time (then
    /// every snapshot is within).
    pub fn cutoff(&self, newest: Timestamp, time_zone: &TimeZone) -> Option<Timestamp> {
        let span = Span::new()
            .try_years(self.years)
            .and_then(|span| span.try_months(self.months))
            .and_then(|span| span.try_weeks(self.weeks))
            .and_then(|span| span.try_days(self.days))
            .and_then(|span| span.try_hours(self.hours))
            .ok()?;
        newest
            .to_zoned(time_zone.clone())
            .checked_sub(span)
            .ok()
            .map(|zoned| zoned.timestamp())
    }
}

impl FromStr for KeepWithin {
    type Err = RetentionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| RetentionError::InvalidDuration {
            input: text.to_owned(),
            reason,
        };
        let mut within = Self::default();
        let mut seen = String::new();
        let mut digits = String::new();
        for character in text.trim().chars() {
            if character.is_ascii_digit() {
                digits.push(character);
                continue;
            }
            if digits.is_empty() {
                return Err(invalid("a unit without a number before it"));
            }
            let value: u32 = digits.parse().map_err(|_| invalid("number too large"))?;
            digits.clear();
            let field = match character {
                'y' => &mut within.years,
                'm' => &mut within.months,
                'w' => &mut within.weeks,
                'd' => &mut within.days,
                'h' => &mut within.hours,
                _ => return Err(invalid("units are y, m (month), w, d and h")),
            };
            if seen.contains(character) {
                return Err(invalid("a unit given twice"));
            }
            seen.push(character);
            *field = value;
        }
        if !digits.is_empty() {
            return Err(invalid("a number without a unit after it"));
        }
        if seen.is_empty() {
            return Err(invalid("empty"));
        }
        if within.is_zero() {
            return Err(invalid("the span must not be zero"));
        }
        Ok(within)
    }
}

impl fmt::Display for KeepWithin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (value, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.weeks, 'w'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if value != 0 {
                write!(f, "{value}{unit}")?;
            }
        }
        Ok(())
    }
}

/// A rule that keeps the newest snapshot of each of the N newest local-calendar buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CalendarRule {
    /// Local hours (the hour repeated when DST ends is one bucket).
    Hourly,
    /// Local days.
    Daily,
    /// ISO 8601 weeks (Monday to Sunday; the week-numbering year may differ from the calendar
    /// year around 1 January, and some years have a week 53).
    Weekly,
    /// Local months.
    Monthly,
    /// Local years.
    Yearly,
}

impl CalendarRule {
    /// Every rule, in the order reasons are listed.
    pub const ALL: [Self; 5] = [
        Self::Hourly,
        Self::Daily,
        Self::Weekly,
        Self::Monthly,
        Self::Yearly,
    ];

    /// The rule's name in reasons and messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hourly => "hourly",
            Self::Daily => "daily",
            Self::Weekly => "weekly",
            Self::Monthly => "monthly",
            Self::Yearly => "yearly",
        }
    }

    /// The bucket a local date-time falls in: equal exactly for date-times of the same bucket.
    fn bucket(self, local: DateTime) -> [i16; 4] {
        let year = local.year();
        let month = i16::from(local.month());
        let day = i16::from(local.day());
        match self {
            Self::Hourly => [year, month, day, i16::from(local.hour())],
            Self::Daily => [year, month, day, 0],
            Self::Weekly => {
                let week = local.date().iso_week_date();
                [week.year(), i16::from(week.week()), 0, 0]
            }
            Self::Monthly => [year, month, 0, 0],
            Self::Yearly => [year, 0, 0, 0],
        }
    }
}

/// Which rules keep snapshots. A count of 0 turns its rule off; `u32::MAX` is unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Keep the N newest snapshots.
    pub keep_last: u32,
    /// Keep the newest snapshot of each of the N newest local hours that have one.
    pub keep_hourly: u32,
    /// Keep the newest snapshot of each of the N newest local days that have one.
    pub keep_daily: u32,
    /// Keep the newest snapshot of each of the N newest ISO weeks that have one.
    pub keep_weekly: u32,
    /// Keep the newest snapshot of each of the N newest local months that have one.
    pub keep_monthly: u32,
    /// Keep the newest snapshot of each of the N newest local years that have one.
    pub keep_yearly: u32,
    /// Keep every snapshot strictly newer than this span before the group's newest snapshot.
    pub keep_within: Option<KeepWithin>,
    /// Keep every snapshot that has all tags of any of these sets.
    pub keep_tags: Vec<TagSet>,
}

/// Why a snapshot is kept: one entry per rule that keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeepReason {
    /// Among the `keep_last` newest; `rank` 1 is the newest.
    Last {
        /// Position from the newest, starting at 1.
        rank: u32,
    },
    /// The newest snapshot of a bucket of `rule`; `rank` 1 is the newest bucket.
    Calendar {
        /// The rule.
        rule: CalendarRule,
        /// Which bucket of the rule, counted from the newest, starting at 1.
        rank: u32,
    },
    /// Newer than `keep_within` before the newest snapshot.
    Within(KeepWithin),
    /// Has every tag of this set.
    Tag(TagSet),
    /// Dated after the "now" the policy was applied at: kept, and left out of every other
    /// rule, so that it cannot push the others out ([`RetentionPolicy::decide_groups_at`]).
    Future,
}

impl fmt::Display for KeepReason {
    /// `last 1`, `daily 3`, `within 7d`, `tag prod`, `dated in the future`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Last { rank } => write!(f, "last {rank}"),
            Self::Calendar { rule, rank } => write!(f, "{} {rank}", rule.name()),
            Self::Within(within) => write!(f, "within {within}"),
            Self::Tag(tags) => write!(f, "tag {tags}"),
            Self::Future => f.write_str("dated in the future"),
        }
    }
}

/// The verdict on one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The snapshot.
    pub snapshot: SnapshotInfo,
    /// Every rule that keeps it; empty when it is to be removed.
    pub reasons: Vec<KeepReason>,
}

impl Decision {
    /// Whether any rule keeps the snapshot.
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }
}

/// Which snapshot fields split snapshots into groups that the policy treats separately.
/// All false puts every snapshot in one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBy {
    /// By host name.
    pub host: bool,
    /// By the set of backed-up paths (or stream name).
    pub paths: bool,
    /// By the set of tags.
    pub tags: bool,
}

impl Default for GroupBy {
    /// Host and paths, as restic.
    fn default() -> Self {
        Self {
            host: true,
            paths: true,
            tags: false,
        }
    }
}

impl GroupBy {
    /// The key of the group `snapshot` belongs to.
    pub fn key(&self, snapshot: &SnapshotInfo) -> GroupKey {
        let sorted = |values: &[String]| {
            let mut values = values.to_vec();
            values.sort();
            values.dedup();
            values
        };
        GroupKey {
            host: self.host.then(|| snapshot.host.clone()),
            paths: self.paths.then(|| sorted(&snapshot.paths)),
            tags: self.tags.then(|| sorted(&snapshot.tags)),
        }
    }
}

impl FromStr for GroupBy {
    type Err = RetentionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut group_by = Self {
            host: false,
            paths: false,
            tags: false,
        };
        for field in text.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            match field {
                "host" => group_by.host = true,
                "paths" => group_by.paths = true,
                "tags" => group_by.tags = true,
                _ => {
                    return Err(RetentionError::InvalidGroupBy {
                        input: text.to_owned(),
                    });
                }
            }
        }
        Ok(group_by)
    }
}

impl fmt::Display for GroupBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fields: Vec<&str> = [
            (self.host, "host"),
            (self.paths, "paths"),
            (self.tags, "tags"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        f.write_str(&fields.join(","))
    }
}

/// The values a group shares; `None` for fields it is not grouped by. Paths and tags are sorted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey {
    /// The host, when grouped by host.
    pub host: Option<String>,
    /// The sorted paths, when grouped by paths.
    pub paths: Option<Vec<String>>,
    /// The sorted tags, when grouped by tags.
    pub tags: Option<Vec<String>>,
}

impl GroupKey {
    /// Whether no field splits groups (every snapshot is in this one).
    pub fn is_everything(&self) -> bool {
        self.host.is_none() && self.paths.is_none() && self.tags.is_none()
    }
}

impl fmt::Display for GroupKey {
    /// `host db1, paths /srv /etc, tags nightly`, or `all snapshots`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(host) = &self.host {
            parts.push(format!("host {host}"));
        }
        if let Some(paths) = &self.paths {
            parts.push(format!("paths {}", paths.join(" ")));
        }
        if let Some(tags) = &self.tags {
            parts.push(format!("tags {}", tags.join(",")));
        }
        if parts.is_empty() {
            f.write_str("all snapshots")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// One group's decisions, newest snapshot first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDecisions {
    /// What the group's snapshots share.
    pub key: GroupKey,
    /// One decision per snapshot of the group, newest first.
    pub decisions: Vec<Decision>,
}

impl GroupDecisions {
    /// Whether the group has snapshots and the policy keeps none of them.
    pub fn removes_everything(&self) -> bool {
        !self.decisions.is_empty() && self.decisions.iter().all(|decision| !decision.keep())
    }
}

/// Refuses decisions that remove every snapshot of a group (the first such group is named).
///
/// # Errors
/// [`RetentionError::EmptiesGroup`].
pub fn ensure_no_group_emptied(groups: &[GroupDecisions]) -> Result<(), RetentionError> {
    match groups.iter().find(|group| group.removes_everything()) {
        Some(group) => Err(RetentionError::EmptiesGroup {
            group: group.key.to_string(),
            count: group.decisions.len(),
        }),
        None => Ok(()),
    }
}

/// Which snapshots a command considers. Empty lists match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotFilter {
    /// The snapshot's host is one of these.
    pub hosts: Vec<String>,
    /// The snapshot has every tag of at least one of these sets (an empty set, `--tag ''`,
    /// matches snapshots without tags).
    pub tags: Vec<TagSet>,
    /// The snapshot's paths include every one of these (a trailing `/` is ignored).
    pub paths: Vec<String>,
}

impl SnapshotFilter {
    /// Whether `snapshot` passes the filter.
    pub fn matches(&self, snapshot: &SnapshotInfo) -> bool {
        let trimmed = |path: &str| -> String {
            let without = path.trim_end_matches('/');
            if without.is_empty() { path } else { without }.to_owned()
        };
        let host_matches = self.hosts.is_empty() || self.hosts.contains(&snapshot.host);
        let tags_match = self.tags.is_empty()
            || self.tags.iter().any(|set| {
                if set.0.is_empty() {
                    snapshot.tags.is_empty()
                } else {
                    set.is_subset_of(&snapshot.tags)
                }
            });
        let snapshot_paths: Vec<String> = snapshot.paths.iter().map(|p| trimmed(p)).collect();
        let paths_match = self
            .paths
            .iter()
            .all(|path| snapshot_paths.contains(&trimmed(path)));
        host_matches && tags_match && paths_match
    }
}

/// Per-rule state of the walk over one group.
struct CalendarWalk {
    rule: CalendarRule,
    count: u32,
    /// Buckets this rule has kept a snapshot of.
    used: HashSet<[i16; 4]>,
}

impl RetentionPolicy {
    /// Whether no rule is on: such a policy would remove everything.
    pub fn is_empty(&self) -> bool {
        self.keep_last == 0
            && self.calendar_counts().iter().all(|(_, count)| *count == 0)
            && self.keep_within.is_none_or(|within| within.is_zero())
            && self.keep_tags.is_empty()
    }

    fn calendar_counts(&self) -> [(CalendarRule, u32); 5] {
        [
            (CalendarRule::Hourly, self.keep_hourly),
            (CalendarRule::Daily, self.keep_daily),
            (CalendarRule::Weekly, self.keep_weekly),
            (CalendarRule::Monthly, self.keep_monthly),
            (CalendarRule::Yearly, self.keep_yearly),
        ]
    }

    /// Decides keep or remove for every snapshot of one group, buckets taken in `time_zone`'s
    /// local calendar. Returns the decisions newest first, whatever the input order.
    ///
    /// # Errors
    /// [`RetentionError::EmptyPolicy`] when no rule is on.
    pub fn decide(
        &self,
        snapshots: &[SnapshotInfo],
        time_zone: &TimeZone,
    ) -> Result<Vec<Decision>, RetentionError> {
        if self.is_empty() {
            return Err(RetentionError::EmptyPolicy);
        }
        let mut newest_first: Vec<&SnapshotInfo> = snapshots.iter().collect();
        newest_first.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
        let within = self.keep_within.filter(|within| !within.is_zero());
        // `None` inside: the span reaches past the earliest time, so everything is within.
        let within_cutoff = within
            .zip(newest_first.first())
            .map(|(within, newest)| (within, within.cutoff(newest.time, time_zone)));
        let mut walks: Vec<CalendarWalk> = self
            .calendar_counts()
            .into_iter()
            .filter(|(_, count)| *count > 0)
            .map(|(rule, count)| CalendarWalk {
                rule,
                count,
                used: HashSet::new(),
            })
            .collect();
        let mut decisions = Vec::with_capacity(newest_first.len());
        for (position, snapshot) in newest_first.into_iter().enumerate() {
            let mut reasons = Vec::new();
            let rank = u32::try_from(position).map_or(u32::MAX, |rank| rank.saturating_add(1));
            if rank <= self.keep_last {
                reasons.push(KeepReason::Last { rank });
            }
            let local = time_zone.to_datetime(snapshot.time);
            for walk in &mut walks {
                let bucket = walk.rule.bucket(local);
                // Buckets are contiguous in time almost everywhere, so this is restic's "differs
                // from the last kept bucket"; it differs only where a clock change returns to an
                // earlier bucket, which is then not counted twice.
                let rank =
                    u32::try_from(walk.used.len()).map_or(u32::MAX, |used| used.saturating_add(1));
                if rank <= walk.count && walk.used.insert(bucket) {
                    reasons.push(KeepReason::Calendar {
                        rule: walk.rule,
                        rank,
                    });
                }
            }
            if let Some((within, cutoff)) = within_cutoff
                && cutoff.is_none_or(|cutoff| snapshot.time > cutoff)
            {
                reasons.push(KeepReason::Within(within));
            }
            for tags in &self.keep_tags {
                let reason = KeepReason::Tag(tags.clone());
                if tags.is_subset_of(&snapshot.tags) && !reasons.contains(&reason) {
                    reasons.push(reason);
                }
            }
            decisions.push(Decision {
                snapshot: snapshot.clone(),
                reasons,
            });
        }
        Ok(decisions)
    }

    /// Splits `snapshots` into groups by `group_by` and decides each group on its own. Groups come
    /// in the order of their keys.
    ///
    /// # Errors
    /// [`RetentionError::EmptyPolicy`] when no rule is on (even for no snapshots).
    pub fn decide_groups(
        &self,
        group_by: GroupBy,
        snapshots: &[SnapshotInfo],
        time_zone: &TimeZone,
    ) -> Result<Vec<GroupDecisions>, RetentionError> {
        self.decide_groups_at(group_by, snapshots, time_zone, None)
    }

    /// As [`RetentionPolicy::decide_groups`], applied at `now`: a snapshot dated after `now` is
    /// kept ([`KeepReason::Future`]) and every rule decides the others as if it did not exist,
    /// so one snapshot from a wrong clock cannot make the policy remove a snapshot it would
    /// keep without it (`keep_within` still counts back from the newest snapshot *not* in the
    /// future). The caller's clock only ever makes the policy keep more: a clock behind puts
    /// more snapshots in the future, which are kept. `None`: no snapshot is in the future.
    ///
    /// # Errors
    /// [`RetentionError::EmptyPolicy`] when no rule is on (even for no snapshots).
    pub fn decide_groups_at(
        &self,
        group_by: GroupBy,
        snapshots: &[SnapshotInfo],
        time_zone: &TimeZone,
        now: Option<Timestamp>,
    ) -> Result<Vec<GroupDecisions>, RetentionError> {
        if self.is_empty() {
            return Err(RetentionError::EmptyPolicy);
        }
        group_snapshots(snapshots, group_by, None)
            .into_iter()
            .map(|(key, members)| {
                let members = members.into_iter().map(|index| snapshots[index].clone());
                let (mut future, present): (Vec<SnapshotInfo>, Vec<SnapshotInfo>) = members
                    .into_iter()
                    .partition(|snapshot| now.is_some_and(|now| snapshot.time > now));
                future.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
                let mut decisions: Vec<Decision> = future
                    .into_iter()
                    .map(|snapshot| Decision {
                        snapshot,
                        reasons: vec![KeepReason::Future],
                    })
                    .collect();
                decisions.extend(self.decide(&present, time_zone)?);
                Ok(GroupDecisions { key, decisions })
            })
            .collect()
    }
}

/// The snapshots grouped by `group_by`: groups in key order, each a list of indices into
/// `snapshots`, oldest first (ties by id). With `latest`, each group keeps only its newest
/// `latest` snapshots (`snapshots --latest N`).
pub fn group_snapshots(
    snapshots: &[SnapshotInfo],
    group_by: GroupBy,
    latest: Option<usize>,
) -> Vec<(GroupKey, Vec<usize>)> {
    let mut groups: BTreeMap<GroupKey, Vec<usize>> = BTreeMap::new();
    for (index, snapshot) in snapshots.iter().enumerate() {
        groups
            .entry(group_by.key(snapshot))
            .or_default()
            .push(index);
    }
    groups
        .into_iter()
        .map(|(key, mut members)| {
            members.sort_by(|a, b| {
                let (a, b) = (&snapshots[*a], &snapshots[*b]);
                a.time.cmp(&b.time).then(a.id.cmp(&b.id))
            });
            if let Some(latest) = latest {
                members.drain(..members.len().saturating_sub(latest));
            }
            (key, members)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use proptest::prelude::*;
    use proptest::test_runner::RngSeed;

    use super::*;

    fn zone(name: &str) -> TimeZone {
        TimeZone::get(name).unwrap_or_else(|error| panic!("time zone {name}: {error}"))
    }

    fn at(time: &str) -> Timestamp {
        time.parse()
            .unwrap_or_else(|error| panic!("timestamp {time}: {error}"))
    }

    /// A snapshot named by one byte (its id is that byte 32 times) at an RFC 3339 time.
    fn snapshot(name: u8, time: &str) -> SnapshotInfo {
        SnapshotInfo {
            id: Id([name; 32]),
            time: at(time),
            host: "host".into(),
            tags: Vec::new(),
            paths: vec!["/data".into()],
        }
    }

    fn tagged(name: u8, time: &str, tags: &[&str]) -> SnapshotInfo {
        SnapshotInfo {
            tags: tags.iter().map(|tag| (*tag).to_owned()).collect(),
            ..snapshot(name, time)
        }
    }

    /// The names of the kept snapshots, newest first.
    fn kept(decisions: &[Decision]) -> Vec<u8> {
        decisions
            .iter()
            .filter(|decision| decision.keep())
            .map(|decision| decision.snapshot.id.0[0])
            .collect()
    }

    fn reasons(decisions: &[Decision], name: u8) -> Vec<String> {
        decisions
            .iter()
            .find(|decision| decision.snapshot.id.0[0] == name)
            .expect("snapshot decided")
            .reasons
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn daily(count: u32) -> RetentionPolicy {
        RetentionPolicy {
            keep_daily: count,
            ..RetentionPolicy::default()
        }
    }

    #[test]
    fn empty_policy_is_refused() {
        let snapshots = [snapshot(1, "2024-01-01T00:00:00Z")];
        let empty = RetentionPolicy::default();
        assert_eq!(
            empty.decide(&snapshots, &TimeZone::UTC),
            Err(RetentionError::EmptyPolicy)
        );
        assert_eq!(
            empty.decide_groups(GroupBy::default(), &[], &TimeZone::UTC),
            Err(RetentionError::EmptyPolicy)
        );
        let zero_within = RetentionPolicy {
            keep_within: Some(KeepWithin::default()),
            ..RetentionPolicy::default()
        };
        assert!(zero_within.is_empty());
        assert_eq!(
            zero_within.decide(&snapshots, &TimeZone::UTC),
            Err(RetentionError::EmptyPolicy)
        );
    }

    #[test]
    fn no_snapshots_give_no_decisions() {
        assert_eq!(daily(3).decide(&[], &TimeZone::UTC), Ok(Vec::new()));
        assert_eq!(
            daily(3).decide_groups(GroupBy::default(), &[], &TimeZone::UTC),
            Ok(Vec::new())
        );
    }

    #[test]
    fn keep_last_keeps_the_newest_whatever_the_input_order() {
        let snapshots = [
            snapshot(3, "2024-01-03T00:00:00Z"),
            snapshot(1, "2024-01-01T00:00:00Z"),
            snapshot(4, "2024-01-04T00:00:00Z"),
            snapshot(2, "2024-01-02T00:00:00Z"),
        ];
        let policy = RetentionPolicy {
            keep_last: 2,
            ..RetentionPolicy::default()
        };
        let decisions = policy.decide(&snapshots, &TimeZone::UTC).unwrap();
        assert_eq!(kept(&decisions), [4, 3]);
        assert_eq!(reasons(&decisions, 4), ["last 1"]);
        assert_eq!(reasons(&decisions, 3), ["last 2"]);
        assert!(reasons(&decisions, 2).is_empty());
        let order: Vec<u8> = decisions.iter().map(|d| d.snapshot.id.0[0]).collect();
        assert_eq!(order, [4, 3, 2, 1], "decisions come newest first");
    }

    #[test]
    fn identical_timestamps_keep_the_larger_id() {
        let time = "2024-05-05T12:00:00Z";
        let forward = [snapshot(7, time), snapshot(9, time), snapshot(8, time)];
        let mut backward = forward.clone();
        backward.reverse();
        for policy in [
            daily(1),
            RetentionPolicy {
                keep_last: 1,
                ..RetentionPolicy::default()
            },
        ] {
            for input in [&forward[..], &backward[..]] {
                let decisions = policy.decide(input, &TimeZone::UTC).unwrap();
                assert_eq!(kept(&decisions), [9]);
            }
        }
    }

    #[test]
    fn days_are_local_days_of_the_time_zone() {
        // 23:30 and 00:30 Berlin time on either side of New Year are the same UTC day.
        let snapshots = [
            snapshot(1, "2023-12-31T12:00:00Z"),
            snapshot(2, "2023-12-31T22:30:00Z"), // 2023-12-31 23:30 in Berlin
            snapshot(3, "2023-12-31T23:30:00Z"), // 2024-01-01 00:30 in Berlin
        ];
        let berlin = zone("Europe/Berlin");
        assert_eq!(kept(&daily(2).decide(&snapshots, &berlin).unwrap()), [3, 2]);
        assert_eq!(
            kept(&daily(2).decide(&snapshots, &TimeZone::UTC).unwrap()),
            [3]
        );
        let yearly = RetentionPolicy {
            keep_yearly: 5,
            ..RetentionPolicy::default()
        };
        assert_eq!(kept(&yearly.decide(&snapshots, &berlin).unwrap()), [3, 2]);
        assert_eq!(
            kept(&yearly.decide(&snapshots, &TimeZone::UTC).unwrap()),
            [3]
        );
    }

    #[test]
    fn weeks_are_iso_weeks_including_week_53() {
        // 2020 has an ISO week 53: Monday 28 December 2020 to Sunday 3 January 2021.
        let snapshots = [
            snapshot(1, "2020-12-27T12:00:00Z"), // Sunday, 2020-W52
            snapshot(2, "2020-12-28T12:00:00Z"), // Monday, 2020-W53
            snapshot(3, "2020-12-31T12:00:00Z"), // Thursday, 2020-W53
            snapshot(4, "2021-01-03T12:00:00Z"), // Sunday, 2020-W53
            snapshot(5, "2021-01-04T12:00:00Z"), // Monday, 2021-W01
        ];
        let weekly = RetentionPolicy {
            keep_weekly: 3,
            ..RetentionPolicy::default()
        };
        let decisions = weekly.decide(&snapshots, &TimeZone::UTC).unwrap();
        assert_eq!(kept(&decisions), [5, 4, 1]);
        assert_eq!(reasons(&decisions, 4), ["weekly 2"]);
        // A week that starts in December 2026 and ends in January 2027 (2026-W53).
        let later = [
            snapshot(6, "2026-12-28T00:00:00Z"),
            snapshot(7, "2027-01-03T23:59:59Z"),
            snapshot(8, "2027-01-04T00:00:00Z"),
        ];
        assert_eq!(
            kept(&weekly.decide(&later, &TimeZone::UTC).unwrap()),
            [8, 7]
        );
    }

    #[test]
    fn month_ends_and_leap_days() {
        let snapshots = [
            snapshot(1, "2024-01-31T23:59:59Z"),
            snapshot(2, "2024-02-01T00:00:00Z"),
            snapshot(3, "2024-02-28T12:00:00Z"),
            snapshot(4, "2024-02-29T12:00:00Z"),
            snapshot(5, "2024-03-01T00:00:00Z"),
        ];
        let monthly = RetentionPolicy {
            keep_monthly: 3,
            ..RetentionPolicy::default()
        };
        assert_eq!(
            kept(&monthly.decide(&snapshots, &TimeZone::UTC).unwrap()),
            [5, 4, 1]
        );
        assert_eq!(
            kept(&daily(3).decide(&snapshots, &TimeZone::UTC).unwrap()),
            [5, 4, 3]
        );
        // The leap day is a day of its own: 2024-02-29 is neither February 28 nor March 1.
        assert_eq!(
            kept(&daily(5).decide(&snapshots, &TimeZone::UTC).unwrap()),
            [5, 4, 3, 2, 1]
        );
    }

    #[test]
    fn the_hour_repeated_when_dst_ends_is_one_hourly_bucket() {
        // Berlin, 27 October 2024: 03:00 CEST becomes 02:00 CET.
        let snapshots = [
            snapshot(1, "2024-10-27T00:30:00Z"), // 02:30 CEST
            snapshot(2, "2024-10-27T01:30:00Z"), // 02:30 CET
            snapshot(3, "2024-10-27T02:30:00Z"), // 03:30 CET
        ];
        let hourly = RetentionPolicy {
            keep_hourly: 5,
            ..RetentionPolicy::default()
        };
        assert_eq!(
            kept(&hourly.decide(&snapshots, &zone("Europe/Berlin")).unwrap()),
            [3, 2]
        );
        assert_eq!(
            kept(&hourly.decide(&snapshots, &TimeZone::UTC).unwrap()),
            [3, 2, 1]
        );
    }

    #[test]
    fn the_hour_skipped_when_dst_starts_separates_neighbours() {
        // New York, 10 March 2024: 02:00 EST becomes 03:00 EDT; an hour of UTC spans two local
        // hours that are not adjacent.
        let new_york = zone("America/New_York");
        let snapshots = [
            snapshot(1, "2024-03-10T06:10:00Z"), // 01:10 EST
            snapshot(2, "2024-03-10T06:50:00Z"), // 01:50 EST
            snapshot(3, "2024-03-10T07:10:00Z"), // 03:10 EDT
        ];
        let hourly = RetentionPolicy {
            keep_hourly: 2,
            ..RetentionPolicy::default()
        };
        assert_eq!(kept(&hourly.decide(&snapshots, &new_york).unwrap()), [3, 2]);
        // Daily around midnight on 3 November 2024 (EDT ends that night at 02:00).
        let midnight = [
            snapshot(4, "2024-11-03T03:30:00Z"), // 2 November 23:30 EDT
            snapshot(5, "2024-11-03T04:30:00Z"), // 3 November 00:30 EDT
        ];
        assert_eq!(
            kept(&daily(2).decide(&midnight, &new_york).unwrap()),
            [5, 4]
        );
        assert_eq!(
            kept(&daily(2).decide(&midnight, &TimeZone::UTC).unwrap()),
            [5]
        );
    }

    #[test]
    fn a_local_hour_reopened_by_a_clock_change_counts_once() {
        // Chatham, 7 April 2024: 03:45 CHADT becomes 02:45 CHAST, so local hour 3 is left for
        // hour 2 and then entered again.
        let chatham = zone("Pacific/Chatham");
        let snapshots = [
            snapshot(1, "2024-04-06T13:50:00Z"), // 03:35 CHADT, hour 3
            snapshot(2, "2024-04-06T14:05:00Z"), // 02:50 CHAST, hour 2
            snapshot(3, "2024-04-06T14:20:00Z"), // 03:05 CHAST, hour 3 again
            snapshot(4, "2024-04-06T12:50:00Z"), // 02:35 CHADT, hour 2 of the first pass
        ];
        let hourly = RetentionPolicy {
            keep_hourly: 3,
            ..RetentionPolicy::default()
        };
        let decisions = hourly.decide(&snapshots, &chatham).unwrap();
        assert_eq!(kept(&decisions), [3, 2]);
        assert_eq!(
            kept(&hourly.decide(&snapshots, &TimeZone::UTC).unwrap()),
            [3, 1, 4]
        );
    }

    #[test]
    fn within_days_are_calendar_days_across_dst() {
        // Berlin, 31 March 2024: clocks jump from 02:00 to 03:00, so that day has 23 hours.
        let berlin = zone("Europe/Berlin");
        let snapshots = [
            snapshot(1, "2024-03-31T10:00:00Z"), // 12:00 CEST, the newest
            snapshot(2, "2024-03-30T11:30:00Z"), // 12:30 CET the day before: within 1d
            snapshot(3, "2024-03-30T10:30:00Z"), // 11:30 CET: 23.5 hours back, not within 1d
        ];
        let policy = |within: &str| RetentionPolicy {
            keep_within: Some(within.parse().unwrap()),
            ..RetentionPolicy::default()
        };
        assert_eq!(
            kept(&policy("1d").decide(&snapshots, &berlin).unwrap()),
            [1, 2]
        );
        assert_eq!(
            kept(&policy("24h").decide(&snapshots, &berlin).unwrap()),
            [1, 2, 3]
        );
        let decisions = policy("1d").decide(&snapshots, &berlin).unwrap();
        assert_eq!(reasons(&decisions, 2), ["within 1d"]);
    }

    #[test]
    fn within_is_relative_to_the_newest_snapshot_and_strict() {
        // A month back from 31 March is 29 February in a leap year; a snapshot exactly at the
        // cutoff is not within, one a second later is.
        let snapshots = [
            snapshot(1, "2024-03-31T00:00:00Z"),
            snapshot(2, "2024-02-29T00:00:01Z"),
            snapshot(3, "2024-02-29T00:00:00Z"),
            snapshot(4, "2001-01-01T00:00:00Z"),
        ];
        let within_month = RetentionPolicy {
            keep_within: Some("1m".parse().unwrap()),
            ..RetentionPolicy::default()
        };
        assert_eq!(
            kept(&within_month.decide(&snapshots, &TimeZone::UTC).unwrap()),
            [1, 2]
        );
        // Years in the past: the wall clock plays no part.
        let within_ages = RetentionPolicy {
            keep_within: Some("19998y".parse().unwrap()),
            ..RetentionPolicy::default()
        };
        assert_eq!(
            kept(&within_ages.decide(&snapshots, &TimeZone::UTC).unwrap()),
            [1, 2, 3, 4]
        );
        // A span past the representable range keeps everything.
        let within_forever = RetentionPolicy {
            keep_within: Some("4000000000y".parse().unwrap()),
            ..RetentionPolicy::default()
        };
        assert_eq!(
            kept(&within_forever.decide(&snapshots, &TimeZone::UTC).unwrap()),
            [1, 2, 3, 4]
        );
    }

    #[test]
    fn a_snapshot_kept_by_several_rules_lists_every_reason() {
        let snapshots = [
            tagged(1, "2024-06-01T08:00:00Z", &["prod"]),
            tagged(2, "2024-06-01T09:00:00Z", &[]),
            tagged(3, "2024-06-02T09:00:00Z", &["prod", "db"]),
            tagged(4, "2024-05-01T09:00:00Z", &["db"]),
        ];
        let policy = RetentionPolicy {
            keep_last: 1,
            keep_daily: 2,
            keep_monthly: 2,
            keep_within: Some("1d".parse().unwrap()),
            keep_tags: vec!["prod".parse().unwrap(), "db".parse().unwrap()],
            ..RetentionPolicy::default()
        };
        let decisions = policy.decide(&snapshots, &TimeZone::UTC).unwrap();
        assert_eq!(
            reasons(&decisions, 3),
            [
                "last 1",
                "daily 1",
                "monthly 1",
                "within 1d",
                "tag prod",
                "tag db"
            ]
        );
        assert_eq!(reasons(&decisions, 2), ["daily 2"]);
        assert_eq!(reasons(&decisions, 1), ["tag prod"]);
        assert_eq!(reasons(&decisions, 4), ["monthly 2", "tag db"]);
    }

    #[test]
    fn groups_are_oldest_first_and_latest_keeps_the_newest_of_each() {
        let mut snapshots = vec![
            tagged(1, "2024-01-03T00:00:00Z", &["b"]),
            tagged(2, "2024-01-01T00:00:00Z", &["a"]),
            tagged(3, "2024-01-02T00:00:00Z", &["b"]),
            tagged(4, "2024-01-04T00:00:00Z", &["a"]),
            tagged(5, "2024-01-05T00:00:00Z", &["a"]),
        ];
        snapshots[0].host = "other".into();
        let by_tags: GroupBy = "tags".parse().unwrap();
        let names = |groups: Vec<(GroupKey, Vec<usize>)>| -> Vec<Vec<u8>> {
            groups
                .into_iter()
                .map(|(_, members)| {
                    members
                        .iter()
                        .map(|&index| snapshots[index].id.0[0])
                        .collect()
                })
                .collect()
        };
        assert_eq!(
            names(group_snapshots(&snapshots, by_tags, None)),
            [vec![2, 4, 5], vec![3, 1]]
        );
        assert_eq!(
            names(group_snapshots(&snapshots, by_tags, Some(2))),
            [vec![4, 5], vec![3, 1]]
        );
        assert_eq!(
            names(group_snapshots(&snapshots, by_tags, Some(0))),
            [Vec::<u8>::new(), Vec::new()]
        );
        let everything: GroupBy = "".parse().unwrap();
        assert_eq!(
            names(group_snapshots(&snapshots, everything, Some(1))),
            [vec![5]]
        );
        let by_host: GroupBy = "host".parse().unwrap();
        let groups = group_snapshots(&snapshots, by_host, Some(1));
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[1].0.host.as_deref(), Some("other"));
    }

    #[test]
    fn keep_tag_needs_every_tag_of_a_set() {
        let snapshots = [
            tagged(1, "2024-01-01T00:00:00Z", &["prod"]),
            tagged(2, "2024-01-02T00:00:00Z", &["prod", "db"]),
            tagged(3, "2024-01-03T00:00:00Z", &["db"]),
            tagged(4, "2024-01-04T00:00:00Z", &[]),
        ];
        let policy = RetentionPolicy {
            keep_tags: vec!["prod,db".parse().unwrap()],
            ..RetentionPolicy::default()
        };
        let decisions = policy.decide(&snapshots, &TimeZone::UTC).unwrap();
        assert_eq!(kept(&decisions), [2]);
        assert_eq!(reasons(&decisions, 2), ["tag prod,db"]);
    }

    #[test]
    fn unlimited_counts_keep_every_bucket() {
        let snapshots: Vec<SnapshotInfo> = (1..=30)
            .map(|day| snapshot(day, &format!("2024-04-{day:02}T10:00:00Z")))
            .collect();
        let decisions = daily(u32::MAX).decide(&snapshots, &TimeZone::UTC).unwrap();
        assert_eq!(kept(&decisions).len(), 30);
        assert_eq!(reasons(&decisions, 1), ["daily 30"]);
    }

    #[test]
    fn keep_within_parses_and_prints() {
        for (text, expected) in [
            ("7d", "7d"),
            ("2w", "2w"),
            ("1m", "1m"),
            ("1y", "1y"),
            ("12h", "12h"),
            ("1y6m2w3d12h", "1y6m2w3d12h"),
            ("3d1y", "1y3d"),
            ("0y5d", "5d"),
        ] {
            let within: KeepWithin = text.parse().unwrap();
            assert_eq!(within.to_string(), expected, "{text}");
        }
        let parsed: KeepWithin = "1y2m3w4d5h".parse().unwrap();
        assert_eq!(
            parsed,
            KeepWithin {
                years: 1,
                months: 2,
                weeks: 3,
                days: 4,
                hours: 5
            }
        );
    }

    #[test]
    fn keep_within_rejects_bad_text() {
        for text in [
            "",
            "7",
            "d",
            "7x",
            "0d",
            "1d1d",
            "-1d",
            "1.5d",
            "99999999999d",
            "1 d",
        ] {
            let error = text.parse::<KeepWithin>().unwrap_err();
            assert!(
                matches!(error, RetentionError::InvalidDuration { .. }),
                "{text:?}: {error}"
            );
        }
    }

    #[test]
    fn group_by_parses_and_groups() {
        assert_eq!("host,paths".parse::<GroupBy>().unwrap(), GroupBy::default());
        assert_eq!(GroupBy::default().to_string(), "host,paths");
        let none: GroupBy = "".parse().unwrap();
        assert_eq!(none.to_string(), "");
        let all: GroupBy = "tags, host ,paths".parse().unwrap();
        assert_eq!(all.to_string(), "host,paths,tags");
        assert!(matches!(
            "hosts".parse::<GroupBy>(),
            Err(RetentionError::InvalidGroupBy { .. })
        ));

        let on = |name: u8, host: &str, paths: &[&str], tags: &[&str]| SnapshotInfo {
            host: host.into(),
            paths: paths.iter().map(|path| (*path).to_owned()).collect(),
            ..tagged(name, &format!("2024-01-{name:02}T00:00:00Z"), tags)
        };
        let snapshots = [
            on(1, "a", &["/x", "/y"], &["t"]),
            on(2, "a", &["/y", "/x"], &[]),
            on(3, "b", &["/x", "/y"], &["t"]),
            on(4, "a", &["/z"], &["t"]),
        ];
        let policy = RetentionPolicy {
            keep_last: 1,
            ..RetentionPolicy::default()
        };
        let groups = |group_by: &str| -> Vec<(GroupKey, Vec<u8>)> {
            policy
                .decide_groups(group_by.parse().unwrap(), &snapshots, &TimeZone::UTC)
                .unwrap()
                .into_iter()
                .map(|group| (group.key, kept(&group.decisions)))
                .collect()
        };
        let xy = Some(vec!["/x".to_owned(), "/y".to_owned()]);
        assert_eq!(
            groups("host,paths"),
            [
                (
                    GroupKey {
                        host: Some("a".into()),
                        paths: xy.clone(),
                        tags: None
                    },
                    vec![2]
                ),
                (
                    GroupKey {
                        host: Some("a".into()),
                        paths: Some(vec!["/z".into()]),
                        tags: None
                    },
                    vec![4]
                ),
                (
                    GroupKey {
                        host: Some("b".into()),
                        paths: xy,
                        tags: None
                    },
                    vec![3]
                ),
            ]
        );
        assert_eq!(groups("").len(), 1);
        assert_eq!(groups("")[0].1, [4]);
        assert_eq!(groups("tags").len(), 2);
        assert_eq!(groups("host,paths,tags").len(), 4);
    }

    #[test]
    fn filter_matches_hosts_tags_and_paths() {
        let snapshot = SnapshotInfo {
            host: "db1".into(),
            tags: vec!["prod".into(), "nightly".into()],
            paths: vec!["/srv/data".into(), "/etc".into()],
            ..snapshot(1, "2024-01-01T00:00:00Z")
        };
        let filter = |hosts: &[&str], tags: &[&str], paths: &[&str]| SnapshotFilter {
            hosts: hosts.iter().map(|host| (*host).to_owned()).collect(),
            tags: tags.iter().map(|tags| tags.parse().unwrap()).collect(),
            paths: paths.iter().map(|path| (*path).to_owned()).collect(),
        };
        assert!(filter(&[], &[], &[]).matches(&snapshot));
        assert!(filter(&["db2", "db1"], &[], &[]).matches(&snapshot));
        assert!(!filter(&["db2"], &[], &[]).matches(&snapshot));
        assert!(filter(&[], &["prod,nightly"], &[]).matches(&snapshot));
        assert!(filter(&[], &["weekly", "prod"], &[]).matches(&snapshot));
        assert!(!filter(&[], &["prod,weekly"], &[]).matches(&snapshot));
        assert!(!filter(&[], &[""], &[]).matches(&snapshot));
        let untagged = SnapshotInfo {
            tags: Vec::new(),
            ..snapshot.clone()
        };
        assert!(filter(&[], &[""], &[]).matches(&untagged));
        assert!(!filter(&[], &["prod"], &[]).matches(&untagged));
        assert!(filter(&[], &[], &["/srv/data/", "/etc"]).matches(&snapshot));
        assert!(!filter(&[], &[], &["/srv/data", "/home"]).matches(&snapshot));
        assert!(!filter(&[], &[], &["/srv"]).matches(&snapshot));
    }

    #[test]
    fn times_outside_jiffs_range_are_clamped() {
        use crate::format::snapshot::{Source, Summary};
        use crate::format::tree::Timestamp as StoredTime;
        let stored = |seconds| Snapshot {
            time: StoredTime { seconds, nanos: 7 },
            host: "h".into(),
            username: "u".into(),
            tags: vec!["t".into()],
            source: Source::Stdin("db.archive".into()),
            root: Id([0; 32]),
            parent: None,
            summary: Summary::default(),
            program_version: "0".into(),
            extensions: Vec::new(),
        };
        let info = SnapshotInfo::from_snapshot(Id([1; 32]), &stored(1_700_000_000));
        assert_eq!(info.time, Timestamp::new(1_700_000_000, 7).unwrap());
        assert_eq!(info.paths, ["db.archive"]);
        assert_eq!(info.tags, ["t"]);
        let far_future = SnapshotInfo::from_snapshot(Id([1; 32]), &stored(i64::MAX));
        assert_eq!(far_future.time, Timestamp::MAX);
        let far_past = SnapshotInfo::from_snapshot(Id([1; 32]), &stored(i64::MIN));
        assert_eq!(far_past.time, Timestamp::MIN);
    }

    // -----------------------------------------------------------------------------------------
    // Properties against a reference model written independently of the implementation.
    // -----------------------------------------------------------------------------------------

    /// Instants near calendar edges: year ends, leap days, ISO weeks 53, DST changes in Berlin,
    /// New York, Chatham (45-minute offset), Lord Howe (30-minute DST) and São Paulo (DST ending
    /// at midnight, 2018).
    const ANCHORS: [&str; 13] = [
        "2015-12-31T23:00:00Z",
        "2016-02-29T12:00:00Z",
        "2018-02-18T02:00:00Z",
        "2020-12-31T23:30:00Z",
        "2021-01-03T22:00:00Z",
        "2023-02-28T23:00:00Z",
        "2024-03-10T07:00:00Z",
        "2024-03-31T01:00:00Z",
        "2024-04-06T14:00:00Z",
        "2024-04-06T15:00:00Z",
        "2024-10-27T01:00:00Z",
        "2024-11-03T06:00:00Z",
        "2026-12-31T22:00:00Z",
    ];

    const ZONES: [&str; 7] = [
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "Australia/Lord_Howe",
        "America/Sao_Paulo",
        "Asia/Kolkata",
        "Pacific/Chatham",
    ];

    const TAGS: [&str; 3] = ["prod", "db", "weekly"];
    const HOSTS: [&str; 2] = ["alpha", "beta"];

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 384,
            failure_persistence: None,
            rng_seed: RngSeed::Fixed(0x00C0_FFEE_0005),
            ..ProptestConfig::default()
        }
    }

    /// Snapshots clustered around one anchor: equal times, minutes, hours and weeks apart.
    fn arbitrary_snapshots() -> impl Strategy<Value = Vec<SnapshotInfo>> {
        let offset = prop_oneof![
            Just(0i64),
            -7_200i64..7_200,
            -3 * 86_400i64..3 * 86_400,
            -400 * 86_400i64..400 * 86_400,
        ];
        let entry = (offset, any::<u64>(), 0u8..8, 0usize..2, 0usize..3);
        (0..ANCHORS.len(), prop::collection::vec(entry, 0..40)).prop_map(|(anchor, entries)| {
            let base = at(ANCHORS[anchor]);
            entries
                .into_iter()
                .enumerate()
                .map(|(position, (offset, id_seed, tag_bits, host, path))| {
                    let mut id = [0u8; 32];
                    id[..8].copy_from_slice(&id_seed.to_le_bytes());
                    id[8..16].copy_from_slice(&position.to_le_bytes());
                    SnapshotInfo {
                        id: Id(id),
                        time: base.checked_add(Span::new().seconds(offset)).unwrap(),
                        host: HOSTS[host].into(),
                        tags: TAGS
                            .iter()
                            .enumerate()
                            .filter(|(bit, _)| tag_bits & (1 << bit) != 0)
                            .map(|(_, tag)| (*tag).to_owned())
                            .collect(),
                        paths: vec![format!("/path{path}")],
                    }
                })
                .collect()
        })
    }

    fn arbitrary_zone() -> impl Strategy<Value = TimeZone> {
        (0..ZONES.len()).prop_map(|index| zone(ZONES[index]))
    }

    fn newest_first(snapshots: &[SnapshotInfo]) -> Vec<SnapshotInfo> {
        let mut sorted = snapshots.to_vec();
        sorted.sort_by_key(|snapshot| std::cmp::Reverse((snapshot.time, snapshot.id)));
        sorted
    }

    fn kept_ids(decisions: &[Decision]) -> BTreeSet<Id> {
        decisions
            .iter()
            .filter(|decision| decision.keep())
            .map(|decision| decision.snapshot.id)
            .collect()
    }

    /// The ISO week of a date, computed from the Thursday of its week (the rule that defines
    /// ISO week-numbering years), not with jiff's ISO week support.
    fn reference_iso_week(date: jiff::civil::Date) -> (i16, i16) {
        let monday_offset = i64::from(date.weekday().to_monday_zero_offset());
        let thursday = date
            .checked_add(Span::new().days(3 - monday_offset))
            .unwrap();
        (thursday.year(), (thursday.day_of_year() - 1) / 7 + 1)
    }

    fn reference_bucket(rule: CalendarRule, local: DateTime) -> Vec<i16> {
        let (year, month, day, hour) = (
            local.year(),
            i16::from(local.month()),
            i16::from(local.day()),
            i16::from(local.hour()),
        );
        match rule {
            CalendarRule::Hourly => vec![year, month, day, hour],
            CalendarRule::Daily => vec![year, month, day],
            CalendarRule::Weekly => {
                let (week_year, week) = reference_iso_week(local.date());
                vec![week_year, week]
            }
            CalendarRule::Monthly => vec![year, month],
            CalendarRule::Yearly => vec![year],
        }
    }

    /// Brute force: the newest snapshot of each bucket, then the `count` newest of those.
    fn reference_calendar(
        rule: CalendarRule,
        count: u32,
        snapshots: &[SnapshotInfo],
        time_zone: &TimeZone,
    ) -> BTreeSet<Id> {
        let mut newest_of_bucket: HashMap<Vec<i16>, &SnapshotInfo> = HashMap::new();
        for snapshot in snapshots {
            let bucket = reference_bucket(rule, time_zone.to_datetime(snapshot.time));
            let slot = newest_of_bucket.entry(bucket).or_insert(snapshot);
            if (snapshot.time, snapshot.id) > (slot.time, slot.id) {
                *slot = snapshot;
            }
        }
        let mut winners: Vec<&SnapshotInfo> = newest_of_bucket.into_values().collect();
        winners.sort_by_key(|snapshot| std::cmp::Reverse((snapshot.time, snapshot.id)));
        winners
            .into_iter()
            .take(usize::try_from(count).unwrap_or(usize::MAX))
            .map(|snapshot| snapshot.id)
            .collect()
    }

    fn single_rule(rule: CalendarRule, count: u32) -> RetentionPolicy {
        let mut policy = RetentionPolicy::default();
        *match rule {
            CalendarRule::Hourly => &mut policy.keep_hourly,
            CalendarRule::Daily => &mut policy.keep_daily,
            CalendarRule::Weekly => &mut policy.keep_weekly,
            CalendarRule::Monthly => &mut policy.keep_monthly,
            CalendarRule::Yearly => &mut policy.keep_yearly,
        } = count;
        policy
    }

    fn arbitrary_policy() -> impl Strategy<Value = RetentionPolicy> {
        let count = prop_oneof![Just(0u32), 1u32..6, Just(u32::MAX)];
        (
            [
                count.clone(),
                count.clone(),
                count.clone(),
                count.clone(),
                count.clone(),
                count,
            ],
            prop::option::of(1u32..200),
            prop::collection::vec(0usize..TAGS.len(), 0..2),
        )
            .prop_map(|(counts, within_hours, tags)| RetentionPolicy {
                keep_last: counts[0],
                keep_hourly: counts[1],
                keep_daily: counts[2],
                keep_weekly: counts[3],
                keep_monthly: counts[4],
                keep_yearly: counts[5],
                keep_within: within_hours.map(|hours| KeepWithin {
                    hours,
                    ..KeepWithin::default()
                }),
                keep_tags: tags
                    .into_iter()
                    .map(|tag| TagSet(vec![TAGS[tag].to_owned()]))
                    .collect(),
            })
    }

    /// The policies of one rule each whose union is `policy`.
    fn split_into_single_rules(policy: &RetentionPolicy) -> Vec<RetentionPolicy> {
        let mut parts = Vec::new();
        if policy.keep_last > 0 {
            parts.push(RetentionPolicy {
                keep_last: policy.keep_last,
                ..RetentionPolicy::default()
            });
        }
        for (rule, count) in policy.calendar_counts() {
            if count > 0 {
                parts.push(single_rule(rule, count));
            }
        }
        if policy.keep_within.is_some() {
            parts.push(RetentionPolicy {
                keep_within: policy.keep_within,
                ..RetentionPolicy::default()
            });
        }
        for tags in &policy.keep_tags {
            parts.push(RetentionPolicy {
                keep_tags: vec![tags.clone()],
                ..RetentionPolicy::default()
            });
        }
        parts
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn keep_last_keeps_exactly_the_newest(
            snapshots in arbitrary_snapshots(),
            count in 1u32..50,
            time_zone in arbitrary_zone(),
        ) {
            let policy = RetentionPolicy { keep_last: count, ..RetentionPolicy::default() };
            let decisions = policy.decide(&snapshots, &time_zone).unwrap();
            let expected: BTreeSet<Id> = newest_first(&snapshots)
                .iter()
                .take(count as usize)
                .map(|snapshot| snapshot.id)
                .collect();
            prop_assert_eq!(expected.len(), snapshots.len().min(count as usize));
            prop_assert_eq!(kept_ids(&decisions), expected);
        }

        #[test]
        fn calendar_rules_match_the_brute_force_model(
            snapshots in arbitrary_snapshots(),
            rule_index in 0..CalendarRule::ALL.len(),
            count in prop_oneof![1u32..8, Just(u32::MAX)],
            time_zone in arbitrary_zone(),
        ) {
            let rule = CalendarRule::ALL[rule_index];
            let decisions = single_rule(rule, count).decide(&snapshots, &time_zone).unwrap();
            prop_assert_eq!(
                kept_ids(&decisions),
                reference_calendar(rule, count, &snapshots, &time_zone)
            );
            for decision in decisions.iter().filter(|decision| decision.keep()) {
                prop_assert_eq!(decision.reasons.len(), 1);
            }
        }

        #[test]
        fn keep_within_hours_matches_elapsed_time(
            snapshots in arbitrary_snapshots(),
            hours in 1u32..2_000,
            time_zone in arbitrary_zone(),
        ) {
            let policy = RetentionPolicy {
                keep_within: Some(KeepWithin { hours, ..KeepWithin::default() }),
                ..RetentionPolicy::default()
            };
            let decisions = policy.decide(&snapshots, &time_zone).unwrap();
            let newest = snapshots.iter().map(|snapshot| snapshot.time).max();
            let expected: BTreeSet<Id> = snapshots
                .iter()
                .filter(|snapshot| {
                    let age = newest.unwrap().as_second() - snapshot.time.as_second();
                    age < i64::from(hours) * 3_600
                })
                .map(|snapshot| snapshot.id)
                .collect();
            prop_assert_eq!(kept_ids(&decisions), expected);
        }

        #[test]
        fn a_policy_keeps_the_union_of_its_rules_with_every_reason(
            snapshots in arbitrary_snapshots(),
            policy in arbitrary_policy(),
            time_zone in arbitrary_zone(),
        ) {
            prop_assume!(!policy.is_empty());
            let decisions = policy.decide(&snapshots, &time_zone).unwrap();
            let mut expected_reasons: HashMap<Id, Vec<KeepReason>> = HashMap::new();
            for part in split_into_single_rules(&policy) {
                for decision in part.decide(&snapshots, &time_zone).unwrap() {
                    expected_reasons
                        .entry(decision.snapshot.id)
                        .or_default()
                        .extend(decision.reasons);
                }
            }
            prop_assert_eq!(decisions.len(), snapshots.len());
            for decision in &decisions {
                let mut expected = expected_reasons[&decision.snapshot.id].clone();
                let mut seen = Vec::new();
                expected.retain(|reason| {
                    let fresh = !seen.contains(reason);
                    seen.push(reason.clone());
                    fresh
                });
                // Never removes a snapshot that any single rule keeps, and says why.
                prop_assert_eq!(&decision.reasons, &expected);
            }
        }

        #[test]
        fn decisions_do_not_depend_on_input_order(
            (snapshots, shuffled) in arbitrary_snapshots()
                .prop_flat_map(|snapshots| (Just(snapshots.clone()), Just(snapshots).prop_shuffle())),
            policy in arbitrary_policy(),
            time_zone in arbitrary_zone(),
        ) {
            prop_assume!(!policy.is_empty());
            let group_by = GroupBy { host: true, paths: false, tags: true };
            prop_assert_eq!(
                policy.decide(&snapshots, &time_zone).unwrap(),
                policy.decide(&shuffled, &time_zone).unwrap()
            );
            prop_assert_eq!(
                policy.decide_groups(group_by, &snapshots, &time_zone).unwrap(),
                policy.decide_groups(group_by, &shuffled, &time_zone).unwrap()
            );
        }

        /// Why `forget` may go on when some snapshot objects are damaged: leaving snapshots
        /// out of the decision never removes one that the full decision keeps.
        #[test]
        fn hiding_snapshots_never_removes_one_that_would_be_kept(
            snapshots in arbitrary_snapshots(),
            hidden_mask in any::<u64>(),
            policy in arbitrary_policy(),
            time_zone in arbitrary_zone(),
        ) {
            prop_assume!(!policy.is_empty());
            let kept_with_all = kept_ids(&policy.decide(&snapshots, &time_zone).unwrap());
            let visible: Vec<SnapshotInfo> = snapshots
                .iter()
                .enumerate()
                .filter(|(position, _)| hidden_mask & (1 << (position % 64)) == 0)
                .map(|(_, snapshot)| snapshot.clone())
                .collect();
            let kept_with_visible = kept_ids(&policy.decide(&visible, &time_zone).unwrap());
            for snapshot in &visible {
                if kept_with_all.contains(&snapshot.id) {
                    prop_assert!(kept_with_visible.contains(&snapshot.id));
                }
            }
        }

        #[test]
        fn groups_are_decided_on_their_own(
            snapshots in arbitrary_snapshots(),
            policy in arbitrary_policy(),
            group_by in (any::<bool>(), any::<bool>(), any::<bool>())
                .prop_map(|(host, paths, tags)| GroupBy { host, paths, tags }),
            time_zone in arbitrary_zone(),
        ) {
            prop_assume!(!policy.is_empty());
            let groups = policy.decide_groups(group_by, &snapshots, &time_zone).unwrap();
            let decided: usize = groups.iter().map(|group| group.decisions.len()).sum();
            prop_assert_eq!(decided, snapshots.len());
            for group in &groups {
                let members: Vec<SnapshotInfo> = snapshots
                    .iter()
                    .filter(|snapshot| group_by.key(snapshot) == group.key)
                    .cloned()
                    .collect();
                prop_assert_eq!(&group.decisions, &policy.decide(&members, &time_zone).unwrap());
            }
        }

        /// Snapshots dated after "now" are kept, and the others are decided exactly as if the
        /// future ones did not exist: one snapshot from a wrong clock never costs another.
        #[test]
        fn future_snapshots_are_kept_and_change_nothing_else(
            snapshots in arbitrary_snapshots(),
            policy in arbitrary_policy(),
            now_index in any::<prop::sample::Index>(),
            now_shift in -3_600i64..3_600,
            time_zone in arbitrary_zone(),
        ) {
            prop_assume!(!policy.is_empty() && !snapshots.is_empty());
            let now = now_index
                .get(&snapshots)
                .time
                .checked_add(Span::new().seconds(now_shift))
                .unwrap();
            let group_by = GroupBy::default();
            let groups = policy
                .decide_groups_at(group_by, &snapshots, &time_zone, Some(now))
                .unwrap();
            let present: Vec<SnapshotInfo> =
                snapshots.iter().filter(|snapshot| snapshot.time <= now).cloned().collect();
            let without: BTreeSet<Id> = policy
                .decide_groups(group_by, &present, &time_zone)
                .unwrap()
                .iter()
                .flat_map(|group| kept_ids(&group.decisions))
                .collect();
            let mut expected = without;
            for snapshot in snapshots.iter().filter(|snapshot| snapshot.time > now) {
                expected.insert(snapshot.id);
            }
            let kept: BTreeSet<Id> =
                groups.iter().flat_map(|group| kept_ids(&group.decisions)).collect();
            prop_assert_eq!(kept, expected);
            for decision in groups.iter().flat_map(|group| &group.decisions) {
                let future = decision.snapshot.time > now;
                prop_assert_eq!(future, decision.reasons == [KeepReason::Future]);
            }
        }

        /// A plan is refused exactly when some group has snapshots and keeps none of them.
        #[test]
        fn emptied_groups_are_refused(
            snapshots in arbitrary_snapshots(),
            policy in arbitrary_policy(),
            time_zone in arbitrary_zone(),
        ) {
            prop_assume!(!policy.is_empty());
            let groups = policy
                .decide_groups(GroupBy::default(), &snapshots, &time_zone)
                .unwrap();
            let emptied = groups
                .iter()
                .any(|group| group.decisions.iter().all(|decision| !decision.keep()));
            prop_assert_eq!(ensure_no_group_emptied(&groups).is_err(), emptied);
        }
    }
}
