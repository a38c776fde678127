//! `cairn status`: per source of the config, when it last succeeded, how old that is, how its
//! last run ended and how many snapshots it has; exits 16 when a source is overdue (older than
//! its `max_age`) or never succeeded, the last check or drill failed, a backup session is
//! stale (unended for longer than `stale_session_age`), or a `[[copy]]` destination is behind,
//! stale (its last success older than its sources' longest `max_age`) or never copied into.

use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use jiff::Timestamp;

use super::Completion;
use super::metrics::{RepositoryStats, config_host, repository_stats};
use crate::args::{GlobalArgs, StatusArgs};
use crate::config::{Age, Config, ConfigError};
use crate::render;
use crate::settings;
use crate::state::{
    self, CopyHealth, CopyState, Health, RunState, SourceDrill, SourceState, StepState,
};

/// The config file's path and contents, which `run`, `status` and `metrics` need.
///
/// # Errors
/// [`ConfigError`] (a usage error) when no config was given.
pub fn required_config<'a>(
    global: &'a GlobalArgs,
    config: Option<&'a Config>,
    command: &str,
) -> Result<(&'a Path, &'a Config)> {
    match (global.config.as_deref(), config) {
        (Some(path), Some(config)) => Ok((path, config)),
        _ => Err(ConfigError::usage(
            Path::new(""),
            command,
            "needs a config file: use --config FILE or set CAIRN_CONFIG (see contrib/cairn.toml)",
        )
        .into()),
    }
}

/// The config with its stale session age replaced by `age` from the command line, if given.
pub fn with_stale_session_age(config: &Config, age: Option<Age>) -> Config {
    let mut config = config.clone();
    if age.is_some() {
        config.repository.stale_session_age = age;
    }
    config
}

/// A health as a word for the table and JSON.
fn health_word(health: Health) -> &'static str {
    match health {
        Health::Fresh => "ok",
        Health::Overdue => "OVERDUE",
        Health::Never => "NEVER SUCCEEDED",
    }
}

/// A destination's state as a word for its line, and for JSON.
fn copy_health_words(health: CopyHealth) -> (&'static str, &'static str) {
    match health {
        CopyHealth::InStep => ("ok", "in_step"),
        CopyHealth::Behind => ("BEHIND", "behind"),
        CopyHealth::Stale => ("STALE", "stale"),
        CopyHealth::Never => ("NEVER COPIED", "never"),
    }
}

/// One destination's line: `copy offsite: ok, 0 behind, newest copy ... (9 h old), last copy ok
/// at ...`.
fn copy_line(name: &str, health: CopyHealth, copy: Option<&CopyState>, now: Timestamp) -> String {
    let word = copy_health_words(health).0;
    let Some(copy) = copy else {
        return format!("copy {name}: {word}: never run by cairn run");
    };
    let newest = copy.newest_copy().map_or_else(
        || "no copy yet".to_owned(),
        |newest| {
            format!(
                "newest copy {} ({} old)",
                when(Some(newest)),
                render::span(state::age(newest, now))
            )
        },
    );
    format!(
        "copy {name}: {word}, behind by {}, {newest}, last copy {} at {}{}",
        count(copy.behind, "snapshot", "snapshots"),
        if copy.last_ok { "ok" } else { "FAILED" },
        when(Some(copy.last_attempt)),
        copy.last_error
            .as_ref()
            .map(|error| format!(": {error}"))
            .unwrap_or_default()
    )
}

/// Prints each `[[copy]]` destination (a line, or a `destination` JSON line) and returns
/// whether all are in step.
fn report_copies(global: &GlobalArgs, config: &Config, state: &RunState, now: Timestamp) -> bool {
    let mut healthy = true;
    for destination in &config.copies {
        let copy = state.copies.get(&destination.name);
        let max_age = config.max_age_of_destination(destination);
        let health = state::copy_health(copy, max_age, now);
        healthy &= health == CopyHealth::InStep;
        if !global.json {
            outln!("{}", copy_line(&destination.name, health, copy, now));
            continue;
        }
        let newest = copy.and_then(CopyState::newest_copy);
        render::json_line(&serde_json::json!({
            "message_type": "destination",
            "destination": destination.name,
            "health": copy_health_words(health).1,
            "behind": copy.map(|copy| copy.behind),
            "newest_copy": newest.map(|time| time.to_string()),
            "newest_copy_age_seconds": newest.map(|time| state::age(time, now).as_secs()),
            "max_age_seconds": max_age.map(|age| age.as_secs()),
            "last_success": copy.and_then(|copy| copy.last_success).map(|time| time.to_string()),
            "last_attempt": copy.map(|copy| copy.last_attempt.to_string()),
            "last_ok": copy.map(|copy| copy.last_ok),
            "last_error": copy.and_then(|copy| copy.last_error.clone()),
            "snapshots_copied": copy.map(|copy| copy.snapshots_copied),
            "bytes_added": copy.map(|copy| copy.bytes_added),
        }));
    }
    healthy
}

/// A time in the local zone, or `never`.
fn when(time: Option<Timestamp>) -> String {
    time.map_or_else(
        || "never".into(),
        |time| {
            time.to_zoned(jiff::tz::TimeZone::system())
                .strftime("%Y-%m-%d %H:%M:%S")
                .to_string()
        },
    )
}

/// One step's line: `check: ok at 2024-06-01 04:00:00 (read-data-rotate 30)`.
fn step_line(name: &str, step: Option<&StepState>) -> String {
    match step {
        None => format!("{name}: never run by cairn run"),
        Some(step) => format!(
            "{name}: {} at {} ({}){}",
            if step.ok { "ok" } else { "FAILED" },
            when(Some(step.time)),
            step.detail,
            step.error
                .as_ref()
                .map(|error| format!(": {error}"))
                .unwrap_or_default()
        ),
    }
}

/// Whether no source of the config has a failed last drill, whichever source the last drill
/// step took. A source removed from the config does not fail status forever.
fn drills_healthy(config: &Config, state: &RunState) -> bool {
    config
        .sources
        .keys()
        .filter_map(|name| state.drills.get(name))
        .all(|drilled| drilled.ok)
}

/// One source's last drill: `db: drilled ok at ... (snapshot 1a2b3c4d, RTO 1.2 s, 5% sample)`.
fn source_drill_line(name: &str, drilled: Option<&SourceDrill>) -> String {
    let Some(drilled) = drilled else {
        return format!("{name}: never drilled");
    };
    format!(
        "{name}: drilled {} at {} (snapshot {}, RTO {:.1} s for {}{}){}",
        if drilled.ok { "ok" } else { "FAILED" },
        when(Some(drilled.time)),
        drilled.snapshot.get(..8).unwrap_or("-"),
        drilled.rto_seconds,
        render::bytes(drilled.bytes_restored),
        drilled
            .sample_percent
            .map(|percent| format!(", a {percent}% sample"))
            .unwrap_or_default(),
        drilled
            .error
            .as_ref()
            .map(|error| format!(": {error}"))
            .unwrap_or_default()
    )
}

/// Each source's last drill, by name (`null`: never drilled).
fn drills_json(config: &Config, state: &RunState) -> serde_json::Value {
    config
        .sources
        .keys()
        .map(|name| {
            let drilled = state
                .drills
                .get(name)
                .map_or(serde_json::Value::Null, |drilled| {
                    serde_json::json!({
                        "time": drilled.time.to_string(),
                        "ok": drilled.ok,
                        "snapshot_id": drilled.snapshot,
                        "rto_seconds": drilled.rto_seconds,
                        "bytes_restored": drilled.bytes_restored,
                        "sample_percent": drilled.sample_percent,
                        "error": drilled.error,
                    })
                });
            (name.clone(), drilled)
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn step_json(step: Option<&StepState>) -> serde_json::Value {
    step.map_or(serde_json::Value::Null, |step| {
        serde_json::json!({
            "time": step.time.to_string(),
            "ok": step.ok,
            "duration_seconds": step.duration_seconds,
            "detail": step.detail,
            "error": step.error,
        })
    })
}

/// What made a run partial: `2 entries unreadable, 1 file changed while read`.
fn partial_detail(source_state: &SourceState) -> String {
    let mut parts = Vec::new();
    if source_state.last_unreadable > 0 {
        parts.push(format!(
            "{} unreadable",
            count(source_state.last_unreadable, "entry", "entries")
        ));
    }
    if source_state.last_changed > 0 {
        parts.push(format!(
            "{} changed while read",
            count(source_state.last_changed, "file", "files")
        ));
    }
    parts.join(", ")
}

/// `1 entry`, `2 entries`.
fn count(count: u64, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

/// Prints the status of every source and returns whether all are healthy.
fn report(
    global: &GlobalArgs,
    config: &Config,
    state: &RunState,
    stats: Option<&RepositoryStats>,
    now: Timestamp,
) -> bool {
    let mut healthy = true;
    let mut rows = Vec::new();
    for (name, source) in &config.sources {
        let source_state = state.sources.get(name);
        let max_age = config.max_age_of(source);
        let health = state::source_health(source_state, max_age, now);
        healthy &= health == Health::Fresh;
        let last_success = source_state.and_then(|source_state| source_state.last_success);
        let age = last_success.map(|success| state::age(success, now));
        let snapshots = stats.and_then(|stats| stats.snapshots_by_source.get(name).copied());
        if global.json {
            render::json_line(&serde_json::json!({
                "message_type": "source",
                "source": name,
                "health": match health { Health::Fresh => "fresh", Health::Overdue => "overdue", Health::Never => "never" },
                "last_success": last_success.map(|time| time.to_string()),
                "age_seconds": age.map(|age| age.as_secs()),
                "max_age_seconds": max_age.map(|age| age.as_secs()),
                "last_attempt": source_state.map(|source_state| source_state.last_attempt.to_string()),
                "last_ok": source_state.map(|source_state| source_state.last_ok),
                "last_error": source_state.and_then(|source_state| source_state.last_error.clone()),
                "last_snapshot": source_state.and_then(|source_state| source_state.last_snapshot.clone()),
                "size_drops": source_state.map(|source_state| source_state.size_drops.clone()).unwrap_or_default(),
                "last_partial": source_state.map(SourceState::last_partial),
                "last_unreadable": source_state.map(|source_state| source_state.last_unreadable),
                "last_changed": source_state.map(|source_state| source_state.last_changed),
                "snapshots": snapshots,
            }));
            continue;
        }
        let last_run = match source_state {
            None => "never run".to_owned(),
            Some(source_state) if source_state.last_ok => {
                let mut text = if source_state.last_partial() {
                    format!("PARTIAL: {} (backup exit 3)", partial_detail(source_state))
                } else {
                    "ok".to_owned()
                };
                if !source_state.size_drops.is_empty() {
                    let _ = write!(text, ", SIZE DROP: {}", source_state.size_drops.join(" | "));
                }
                text
            }
            Some(source_state) => format!(
                "FAILED: {}",
                // One row per source: a command's stderr lines are joined.
                source_state
                    .last_error
                    .as_deref()
                    .unwrap_or("unknown error")
                    .lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty())
                    .collect::<Vec<_>>()
                    .join(" | ")
            ),
        };
        rows.push([
            name.clone(),
            health_word(health).to_owned(),
            when(last_success),
            age.map_or_else(|| "-".into(), render::span),
            max_age.map_or_else(
                || "-".into(),
                |age: Duration| humantime::format_duration(age).to_string(),
            ),
            snapshots.map_or_else(|| "?".into(), |count| count.to_string()),
            last_run,
        ]);
    }
    let steps_ok = [state.check.as_ref(), state.drill.as_ref()]
        .iter()
        .all(|step| step.is_none_or(|step| step.ok));
    healthy &= steps_ok;
    healthy &= drills_healthy(config, state);
    let stale: &[cairn_store::sessions::WaitingSession] =
        stats.map_or(&[], |stats| stats.stale_sessions.as_slice());
    healthy &= stale.is_empty();
    if global.json {
        healthy &= report_copies(global, config, state, now);
        render::json_line(&serde_json::json!({
            "message_type": "summary",
            "ok": healthy,
            "stale_session_age_seconds": config.stale_session_age().as_secs(),
            "unended_sessions": stats.map(|stats| stats.unended_sessions),
            "stale_sessions": stale.iter().map(render::waiting_session_json).collect::<Vec<_>>(),
            "check": step_json(state.check.as_ref()),
            "drill": step_json(state.drill.as_ref()),
            "drills": drills_json(config, state),
            "repository": stats.map(|stats| serde_json::json!({
                "snapshots": stats.snapshots,
                "size_bytes": stats.stored_bytes,
                "dedup_ratio": stats.dedup_ratio(),
            })),
        }));
        return healthy;
    }
    print_table(&rows);
    healthy &= report_copies(global, config, state, now);
    if config.check.is_some() || state.check.is_some() {
        outln!("{}", step_line("check", state.check.as_ref()));
    }
    if config.drill.is_some() || state.drill.is_some() {
        outln!("{}", step_line("drill", state.drill.as_ref()));
        for name in config.sources.keys() {
            outln!("  {}", source_drill_line(name, state.drills.get(name)));
        }
    }
    if let Some(stats) = stats {
        outln!(
            "repository: {}, {} stored, dedup ratio {:.2}",
            render::count(stats.snapshots, "snapshot", "snapshots"),
            render::bytes(stats.stored_bytes),
            stats.dedup_ratio()
        );
    }
    if !stale.is_empty() {
        outln!(
            "STALE: {} backup sessions unended for more than {} (each keeps condemned packs \
             from being deleted):",
            stale.len(),
            humantime::format_duration(config.stale_session_age())
        );
        let now = Timestamp::now();
        for session in stale {
            outln!("  {}", render::waiting_session(session, now));
        }
        outln!(
            "  a backup, prune or check on its machine ends it once its process is gone; if you \
             know it is dead: cairn prune --end-session ID"
        );
    }
    healthy
}

/// Prints rows under a header, columns padded to their widest cell (the last column unpadded).
fn print_table(rows: &[[String; 7]]) {
    let header = [
        "source",
        "state",
        "last success",
        "age",
        "max age",
        "snapshots",
        "last run",
    ]
    .map(str::to_owned);
    let table: Vec<[String; 7]> = std::iter::once(header)
        .chain(rows.iter().cloned())
        .collect();
    for line in render::aligned_rows(&table) {
        outln!("{line}");
    }
}

/// Runs `cairn status`.
///
/// # Errors
/// No config, or a damaged run state. A repository that cannot be opened is a warning: the
/// verdict comes from the run state.
pub fn run(global: &GlobalArgs, config: Option<&Config>, args: &StatusArgs) -> Result<Completion> {
    let (path, config) = required_config(global, config, "status")?;
    let config = &with_stale_session_age(config, args.stale_session_age);
    let state = RunState::load(&config.state_file(path, settings::running_as_root()))?;
    let stats = match settings::open_repository(global)
        .and_then(|repository| repository_stats(&repository, config, &config_host(config)))
    {
        Ok(stats) => Some(stats),
        Err(error) => {
            eprintln!(
                "warning: cannot read the repository (snapshot counts unknown): {}",
                render::error_line(&error)
            );
            None
        }
    };
    if report(global, config, &state, stats.as_ref(), Timestamp::now()) {
        Ok(Completion::Done)
    } else {
        Ok(Completion::Unhealthy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_drill_of_a_configured_source_is_unhealthy() {
        let config = Config::parse(
            "[sources.db]\ncommand = \"x\"\nstream_name = \"x\"\n[sources.etc]\npaths = [\"/etc\"]\n",
            Path::new("cairn.toml"),
        )
        .expect("valid");
        let drilled = |ok: bool| SourceDrill {
            time: "2024-06-01T04:00:00Z".parse().expect("time"),
            ok,
            snapshot: "ab".repeat(32),
            rto_seconds: 1.5,
            bytes_restored: 10,
            sample_percent: None,
            error: (!ok).then(|| "0 of 1 files restored and verified".to_owned()),
        };
        let mut state = RunState::default();
        assert!(
            drills_healthy(&config, &state),
            "never drilled is not a failure"
        );
        state.drills.insert("db".into(), drilled(true));
        state.drills.insert("removed".into(), drilled(false));
        assert!(
            drills_healthy(&config, &state),
            "a source no longer configured"
        );
        state.drills.insert("etc".into(), drilled(false));
        assert!(!drills_healthy(&config, &state));
        let line = source_drill_line("etc", state.drills.get("etc"));
        assert!(line.starts_with("etc: drilled FAILED at "), "{line}");
        assert!(
            line.contains("(snapshot abababab, RTO 1.5 s for 10 B)"),
            "{line}"
        );
        assert_eq!(source_drill_line("new", None), "new: never drilled");
    }
}
