//! When a scheduled thing is due: a source's backup, the check, the drill. Pure: times come in
//! as local wall-clock times ([`DateTime`], converted by the caller), and nothing here reads a
//! clock, a file or the time-zone database.
//!
//! The rule (README "Schedules", kept in step with it): a schedule of period `every`, with an
//! optional daily `window` of local times, cuts local wall-clock time into slots of length
//! `every`, the first starting at the window's start (else midnight) on 2000-01-03, a Monday, so
//! daily slots start at the window's start and weekly ones on Mondays. A thing last done at
//! `last` is due at `now` when all of these hold:
//! - `now` lies in the window (when there is one; a window may wrap past midnight);
//! - it was never done, or `last` is after `now` (a clock set back never stops a schedule), or
//!   - `now` is in a later slot than `last`, and
//!   - at least `every − tolerance` of wall-clock time has passed since `last`, where
//!     `tolerance = min(max(5 % of every, timer_period), every / 2)`.
//!
//! The slots make a start a few minutes earlier than yesterday's still run (a daily job is due
//! once per day, whatever minute the timer fires), and a late run pulls no later run with it.
//! The elapsed condition only keeps two runs from straddling a slot boundary minutes apart;
//! since the tolerance is at least the timer's period, the next run after such a pair still
//! lands in the following slot, so no slot is skipped while the timer fires. Wall-clock time
//! means a day is a day across daylight-saving changes; in the hour repeated when clocks go
//! back, a schedule shorter than that hour may wait for the repeat to end.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use jiff::civil::{Date, DateTime, Time};

/// A daily span of local times, `start` included, `end` excluded; `end` before `start` wraps
/// past midnight (`22:00-04:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// When the window opens.
    pub start: Time,
    /// When it closes.
    pub end: Time,
}

impl Window {
    /// Whether the local time `time` lies in the window.
    pub fn contains(&self, time: Time) -> bool {
        if self.start < self.end {
            self.start <= time && time < self.end
        } else {
            time >= self.start || time < self.end
        }
    }
}

/// Parses `HH:MM`.
fn clock_time(text: &str) -> Option<Time> {
    let (hours, minutes) = text.trim().split_once(':')?;
    if hours.len() != 2 || minutes.len() != 2 {
        return None;
    }
    let hours: i8 = hours.parse().ok()?;
    let minutes: i8 = minutes.parse().ok()?;
    Time::new(hours, minutes, 0, 0).ok()
}

impl FromStr for Window {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || {
            format!(
                "invalid window {text:?}: write it as local times HH:MM-HH:MM, like \"01:00-05:00\""
            )
        };
        let (start, end) = text.split_once('-').ok_or_else(invalid)?;
        let (start, end) = (
            clock_time(start).ok_or_else(invalid)?,
            clock_time(end).ok_or_else(invalid)?,
        );
        if start == end {
            return Err(format!(
                "invalid window {text:?}: it opens and closes at the same time (leave window out for any time)"
            ));
        }
        Ok(Self { start, end })
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}",
            self.start.strftime("%H:%M"),
            self.end.strftime("%H:%M")
        )
    }
}

/// How often something runs, and when in the day it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// The period.
    pub every: Duration,
    /// The daily window, if any.
    pub window: Option<Window>,
}

/// The timer period assumed when the config gives none: an hourly timer, which also covers a
/// timer every 15 minutes.
pub const DEFAULT_TIMER_PERIOD: Duration = Duration::from_hours(1);

/// Whether something is due, and if not, from when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Run it now.
    Now,
    /// Not before this local time (a lower bound: the timer fires after it).
    NotBefore(DateTime),
}

/// How early before a full period a run still counts as due: `min(max(5 % of every,
/// timer_period), every / 2)`.
pub fn tolerance(every: Duration, timer_period: Duration) -> Duration {
    (every / 20).max(timer_period).min(every / 2)
}

/// The origin of every schedule's slots: 2000-01-03 (a Monday) at the window's start.
fn origin(window: Option<Window>) -> DateTime {
    let start = window.map_or(Time::midnight(), |window| window.start);
    Date::constant(2000, 1, 3).to_datetime(start)
}

/// Wall-clock seconds from `from` to `to` (negative when `to` is earlier).
fn wall_seconds(from: DateTime, to: DateTime) -> i64 {
    from.duration_until(to).as_secs()
}

/// The index of the slot holding `time`.
fn slot(schedule: &Schedule, time: DateTime) -> i64 {
    let every = i64::try_from(schedule.every.as_secs().max(1)).unwrap_or(i64::MAX);
    wall_seconds(origin(schedule.window), time).div_euclid(every)
}

/// `time` moved forward by `seconds` of wall-clock time (saturating at the calendar's end).
fn plus_seconds(time: DateTime, seconds: i64) -> DateTime {
    time.checked_add(jiff::SignedDuration::from_secs(seconds))
        .unwrap_or(DateTime::MAX)
}

/// Whether a thing last done at `last` (local time; `None`: never) is due at `now` under
/// `schedule`, with the timer firing every `timer_period` (see the module's rule).
pub fn due(
    schedule: &Schedule,
    last: Option<DateTime>,
    now: DateTime,
    timer_period: Duration,
) -> Due {
    let every = i64::try_from(schedule.every.as_secs().max(1)).unwrap_or(i64::MAX);
    let earliest = match last {
        Some(last) if last <= now => {
            let minimum = every
                - i64::try_from(tolerance(schedule.every, timer_period).as_secs())
                    .unwrap_or(i64::MAX);
            let next_slot = plus_seconds(
                origin(schedule.window),
                (slot(schedule, last) + 1).saturating_mul(every),
            );
            next_slot.max(plus_seconds(last, minimum))
        }
        _ => now,
    };
    if earliest <= now
        && schedule
            .window
            .is_none_or(|window| window.contains(now.time()))
    {
        return Due::Now;
    }
    let candidate = earliest.max(now);
    Due::NotBefore(match schedule.window {
        Some(window) if !window.contains(candidate.time()) => {
            let opening = candidate.date().to_datetime(window.start);
            if opening > candidate {
                opening
            } else {
                plus_seconds(opening, 24 * 3600)
            }
        }
        _ => candidate,
    })
}

/// Which sources a drill takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DrillSources {
    /// One source a drill, the one drilled longest ago; drills come `every / number of sources`
    /// apart, so each source is drilled once per `every`.
    #[default]
    RoundRobin,
    /// Every source, once per `every`.
    All,
}

impl FromStr for DrillSources {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "round-robin" => Ok(Self::RoundRobin),
            "all" => Ok(Self::All),
            _ => Err(format!(
                "invalid drill sources {text:?}: give \"round-robin\" or \"all\""
            )),
        }
    }
}

/// The schedule of the drill step itself: `every / sources` for round robin (so the period
/// covers every source), `every` for all.
pub fn drill_step_schedule(drill: &Schedule, mode: DrillSources, sources: usize) -> Schedule {
    match mode {
        DrillSources::All => *drill,
        DrillSources::RoundRobin => Schedule {
            every: drill.every / u32::try_from(sources.max(1)).unwrap_or(u32::MAX),
            window: drill.window,
        },
    }
}

/// The order in which a drill tries sources: round robin, the never drilled first (in config
/// order), then the one drilled longest ago; the caller drills the first that has a snapshot.
/// All: config order. `last_drills` holds each source's last drill time, in config order.
pub fn drill_order<T: Ord + Copy>(
    mode: DrillSources,
    last_drills: &[(&str, Option<T>)],
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..last_drills.len()).collect();
    if mode == DrillSources::RoundRobin {
        // Stable: equal times keep config order; `None` sorts first.
        order.sort_by_key(|&index| last_drills[index].1);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime {
        text.parse().expect("civil datetime")
    }

    fn schedule(every: &str, window: Option<&str>) -> Schedule {
        Schedule {
            every: humantime::parse_duration(every).expect("duration"),
            window: window.map(|window| window.parse().expect("window")),
        }
    }

    const HOUR: Duration = Duration::from_hours(1);

    /// Simulates a timer firing at `fires` (sorted local times) and returns when it ran.
    fn simulate(schedule: &Schedule, fires: &[DateTime], timer_period: Duration) -> Vec<DateTime> {
        let mut runs: Vec<DateTime> = Vec::new();
        for &now in fires {
            if due(schedule, runs.last().copied(), now, timer_period) == Due::Now {
                runs.push(now);
            }
        }
        runs
    }

    /// A deterministic jitter in [-max, +max] minutes (a linear congruential sequence).
    fn jitter(seed: &mut u64, max_minutes: i64) -> i64 {
        *seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        i64::try_from(*seed >> 33).expect("small") % (2 * max_minutes + 1) - max_minutes
    }

    #[test]
    fn a_daily_job_with_start_jitter_runs_every_night_for_thirty_nights() {
        // The old rule (24 h since the last start) skipped a night whenever a start came earlier
        // than the night before. Jitter up to ±30 min, like RandomizedDelaySec=30min.
        for max_jitter in [1, 3, 10, 30] {
            for seed in 0..20 {
                let mut state = seed;
                let daily = schedule("1d", None);
                let fires: Vec<DateTime> = (0..30)
                    .map(|night| {
                        plus_seconds(
                            at("2024-03-01T02:30"),
                            night * 86_400 + jitter(&mut state, max_jitter) * 60,
                        )
                    })
                    .collect();
                let runs = simulate(&daily, &fires, HOUR);
                assert_eq!(
                    runs.len(),
                    30,
                    "jitter ±{max_jitter} min, seed {seed}: {runs:?}"
                );
            }
        }
    }

    #[test]
    fn a_daily_job_from_a_frequent_timer_runs_once_a_night() {
        for (timer_minutes, window) in [
            (60, None),
            (15, None),
            (15, Some("01:00-05:00")),
            (60, Some("23:00-02:00")),
        ] {
            let daily = schedule("1d", window);
            let mut seed = 7;
            let fires: Vec<DateTime> = (0..30 * 24 * 60 / timer_minutes)
                .map(|tick| {
                    plus_seconds(
                        at("2024-03-01T00:00"),
                        tick * timer_minutes * 60 + jitter(&mut seed, 2) * 60 + 180,
                    )
                })
                .collect();
            let runs = simulate(
                &daily,
                &fires,
                Duration::from_secs(u64::try_from(timer_minutes).expect("positive") * 60),
            );
            // A window wrapping past midnight opens 31 times in 30 days from midnight.
            assert!(
                (29..=31).contains(&runs.len()),
                "timer {timer_minutes} min, window {window:?}: {} runs",
                runs.len()
            );
            for pair in runs.windows(2) {
                let gap = wall_seconds(pair[0], pair[1]);
                assert!((20 * 3600..=28 * 3600).contains(&gap), "{pair:?}");
            }
            if let Some(window) = daily.window {
                assert!(
                    runs.iter().all(|run| window.contains(run.time())),
                    "{runs:?}"
                );
            }
        }
    }

    #[test]
    fn a_six_hour_source_runs_four_times_a_day_from_an_hourly_timer() {
        let six_hours = schedule("6h", None);
        let mut seed = 3;
        for start_minute in [0, 7, 59] {
            let fires: Vec<DateTime> = (0..10 * 24)
                .map(|tick| {
                    plus_seconds(
                        at("2024-03-01T00:00"),
                        tick * 3600 + start_minute * 60 + jitter(&mut seed, 3) * 60 + 240,
                    )
                })
                .collect();
            let runs = simulate(&six_hours, &fires, HOUR);
            for day in 0..10 {
                let date = at("2024-03-01T00:00")
                    .date()
                    .checked_add(jiff::Span::new().days(day))
                    .expect("date");
                assert_eq!(runs.iter().filter(|run| run.date() == date).count(), 4);
            }
        }
    }

    #[test]
    fn a_late_first_run_converges_to_the_slot_start_without_skipping_days() {
        let daily = schedule("1d", None);
        let fires: Vec<DateTime> = (0..20 * 24)
            .map(|tick| plus_seconds(at("2024-03-01T14:00"), tick * 3600))
            .collect();
        let runs = simulate(&daily, &fires, HOUR);
        assert_eq!(runs.len(), 21, "{runs:?}");
        for pair in runs.windows(2) {
            assert_eq!(
                pair[0].date().tomorrow().ok(),
                Some(pair[1].date()),
                "no day skipped"
            );
        }
        assert_eq!(runs[0], at("2024-03-01T14:00"));
        // Each day up to the tolerance (72 min) earlier, until midnight's slot start.
        assert_eq!(runs[1].time(), Time::constant(13, 0, 0, 0));
        assert_eq!(
            runs.last().copied().map(DateTime::time),
            Some(Time::midnight())
        );
    }

    #[test]
    fn windows_hold_runs_and_wrap_past_midnight() {
        let window: Window = "22:00-04:00".parse().expect("window");
        assert!(window.contains(Time::constant(23, 59, 0, 0)));
        assert!(window.contains(Time::constant(0, 0, 0, 0)));
        assert!(window.contains(Time::constant(3, 59, 59, 0)));
        assert!(!window.contains(Time::constant(4, 0, 0, 0)));
        assert!(!window.contains(Time::constant(21, 59, 0, 0)));
        let daily = schedule("1d", Some("01:00-05:00"));
        assert_eq!(
            due(&daily, None, at("2024-03-01T12:00"), HOUR),
            Due::NotBefore(at("2024-03-02T01:00"))
        );
        assert_eq!(due(&daily, None, at("2024-03-01T01:00"), HOUR), Due::Now);
        assert_eq!(
            due(
                &daily,
                Some(at("2024-03-01T01:10")),
                at("2024-03-01T04:00"),
                HOUR
            ),
            Due::NotBefore(at("2024-03-02T01:00"))
        );
        // The machine was off all night: the next window, not midday.
        assert_eq!(
            due(
                &daily,
                Some(at("2024-03-01T01:10")),
                at("2024-03-02T12:00"),
                HOUR
            ),
            Due::NotBefore(at("2024-03-03T01:00"))
        );
        // A run late in the window: the next one is at most the tolerance earlier, still inside.
        assert_eq!(
            due(
                &daily,
                Some(at("2024-03-01T04:50")),
                at("2024-03-02T01:05"),
                HOUR
            ),
            Due::NotBefore(at("2024-03-02T03:38"))
        );
        assert_eq!(
            due(
                &daily,
                Some(at("2024-03-01T04:50")),
                at("2024-03-02T03:40"),
                HOUR
            ),
            Due::Now
        );
    }

    #[test]
    fn a_clock_set_back_or_a_first_run_is_due() {
        let daily = schedule("1d", None);
        assert_eq!(due(&daily, None, at("2024-03-01T12:00"), HOUR), Due::Now);
        assert_eq!(
            due(
                &daily,
                Some(at("2030-01-01T00:00")),
                at("2024-03-01T12:00"),
                HOUR
            ),
            Due::Now
        );
    }

    #[test]
    fn two_runs_do_not_straddle_a_slot_boundary() {
        let daily = schedule("1d", None);
        assert_eq!(
            due(
                &daily,
                Some(at("2024-03-01T23:59")),
                at("2024-03-02T00:01"),
                HOUR
            ),
            Due::NotBefore(at("2024-03-02T22:47"))
        );
    }

    #[test]
    fn weekly_slots_start_on_mondays() {
        let weekly = schedule("7d", None);
        // 2024-03-03 is a Sunday, 2024-03-04 a Monday.
        assert_eq!(
            due(
                &weekly,
                Some(at("2024-02-26T03:00")),
                at("2024-03-03T23:00"),
                HOUR
            ),
            Due::NotBefore(at("2024-03-04T00:00"))
        );
        assert_eq!(
            due(
                &weekly,
                Some(at("2024-02-26T03:00")),
                at("2024-03-04T00:30"),
                HOUR
            ),
            Due::Now
        );
    }

    #[test]
    fn tolerance_is_five_percent_or_the_timer_period_at_most_half() {
        assert_eq!(
            tolerance(Duration::from_hours(24), HOUR),
            Duration::from_mins(72)
        );
        assert_eq!(tolerance(Duration::from_hours(6), HOUR), HOUR);
        assert_eq!(
            tolerance(Duration::from_hours(6), Duration::from_mins(15)),
            Duration::from_mins(18)
        );
        assert_eq!(
            tolerance(Duration::from_mins(30), HOUR),
            Duration::from_mins(15)
        );
    }

    #[test]
    fn window_syntax_errors_say_how_to_write_one() {
        for bad in [
            "1-5",
            "01:00",
            "25:00-01:00",
            "01:00-01:00",
            "1:00-05:00",
            "01:00-05:60",
        ] {
            let message = bad.parse::<Window>().expect_err(bad);
            assert!(message.starts_with("invalid window"), "{message}");
        }
        assert_eq!(
            "01:00-05:30".parse::<Window>().expect("valid").to_string(),
            "01:00-05:30"
        );
    }

    #[test]
    fn round_robin_covers_every_source_within_the_period() {
        // Three sources, a weekly drill: the step runs every 56 h and each source once a week.
        let weekly = schedule("7d", None);
        let step = drill_step_schedule(&weekly, DrillSources::RoundRobin, 3);
        assert_eq!(step.every, Duration::from_hours(56));
        let names = ["db", "files", "volumes"];
        let mut last: Vec<Option<DateTime>> = vec![None; 3];
        let mut step_last = None;
        let mut drilled: Vec<(usize, DateTime)> = Vec::new();
        for tick in 0..(5 * 7 * 24) {
            let now = plus_seconds(at("2024-03-04T00:10"), tick * 3600);
            if due(&step, step_last, now, HOUR) != Due::Now {
                continue;
            }
            step_last = Some(now);
            let table: Vec<(&str, Option<DateTime>)> =
                names.iter().copied().zip(last.iter().copied()).collect();
            let chosen = drill_order(DrillSources::RoundRobin, &table)[0];
            last[chosen] = Some(now);
            drilled.push((chosen, now));
        }
        assert_eq!(
            drilled
                .iter()
                .take(3)
                .map(|(index, _)| *index)
                .collect::<Vec<_>>(),
            [0, 1, 2]
        );
        for index in 0..3 {
            let times: Vec<DateTime> = drilled
                .iter()
                .filter(|(chosen, _)| *chosen == index)
                .map(|(_, time)| *time)
                .collect();
            assert!(times.len() >= 4, "{index}: {times:?}");
            for pair in times.windows(2) {
                assert!(
                    wall_seconds(pair[0], pair[1]) <= 7 * 86_400 + 3600,
                    "{pair:?}"
                );
            }
        }
        assert_eq!(
            drill_order(DrillSources::All, &[("a", Some(2)), ("b", None)]),
            [0, 1]
        );
        assert_eq!(
            drill_order(
                DrillSources::RoundRobin,
                &[("a", Some(2)), ("b", None), ("c", Some(1))]
            ),
            [1, 2, 0]
        );
    }
}
