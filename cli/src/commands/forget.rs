//! `cairn forget`: apply a retention policy, show each group's kept and removed snapshots with
//! the reasons, and (unless `--dry-run`) delete the removed snapshot objects; or remove the
//! snapshots named by id, readable or not (the way out of a damaged snapshot object).

use anyhow::{Context, Result, bail};
use cairn_store::forget::{ForgetOptions, ForgetPlan, plan_forget, resolve_named};
use cairn_store::retention::{Decision, GroupKey, RetentionPolicy};
use cairn_store::select::Selection;
use jiff::tz::TimeZone;

use crate::args::{ForgetArgs, GlobalArgs};
use crate::config::Config;
use crate::render;
use crate::settings;

/// The time zone of the calendar buckets: `--time-zone`, else `TZ`, else the system's.
fn time_zone(args: &ForgetArgs) -> Result<TimeZone> {
    match &args.time_zone {
        Some(name) => TimeZone::get(name).with_context(|| {
            format!("unknown time zone {name:?}: give an IANA name such as Europe/Berlin or UTC")
        }),
        None => Ok(TimeZone::system()),
    }
}

/// The id of the snapshot object an unreadable-snapshot error names, or `ID`.
pub fn unreadable_id(error: &cairn_store::Error) -> String {
    match error {
        cairn_store::Error::Damaged { object, .. } => cairn_store::repository::id_from_name(object)
            .map_or_else(|| "ID".to_owned(), |id| id.to_hex()),
        _ => "ID".to_owned(),
    }
}

fn policy(args: &ForgetArgs) -> RetentionPolicy {
    RetentionPolicy {
        keep_last: args.keep_last.unwrap_or(0),
        keep_hourly: args.keep_hourly.unwrap_or(0),
        keep_daily: args.keep_daily.unwrap_or(0),
        keep_weekly: args.keep_weekly.unwrap_or(0),
        keep_monthly: args.keep_monthly.unwrap_or(0),
        keep_yearly: args.keep_yearly.unwrap_or(0),
        keep_within: args.keep_within,
        keep_tags: args.keep_tags.clone(),
    }
}

/// `YYYY-MM-DD HH:MM:SS` in the policy's time zone, the calendar its buckets are taken in.
fn zoned_time(time: jiff::Timestamp, zone: &TimeZone) -> String {
    time.to_zoned(zone.clone())
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// `1 snapshot`, `2 snapshots`.
fn count_of_snapshots(count: usize) -> String {
    render::count(count as u64, "snapshot", "snapshots")
}

/// The heading of a group: `snapshots of host db1, paths /srv /etc`, or `all snapshots`.
pub fn group_title(key: &GroupKey) -> String {
    if key.is_everything() {
        key.to_string()
    } else {
        format!("snapshots of {key}")
    }
}

/// A group's shared fields as a JSON object (`group` of forget and snapshots lines).
pub fn group_json(key: &GroupKey) -> serde_json::Value {
    let mut group = serde_json::Map::new();
    if let Some(host) = &key.host {
        group.insert("host".into(), host.clone().into());
    }
    if let Some(paths) = &key.paths {
        group.insert("paths".into(), paths.clone().into());
    }
    if let Some(tags) = &key.tags {
        group.insert("tags".into(), tags.clone().into());
    }
    group.into()
}

fn print_table(heading: &str, decisions: &[&Decision], zone: &TimeZone) {
    if decisions.is_empty() {
        outln!("{heading} no snapshots");
        return;
    }
    outln!("{heading} {}:", count_of_snapshots(decisions.len()));
    let mut rows = vec![["ID", "time", "host", "tags", "reasons", "paths"].map(str::to_owned)];
    for decision in decisions {
        let snapshot = &decision.snapshot;
        let reasons: Vec<String> = decision.reasons.iter().map(ToString::to_string).collect();
        rows.push([
            snapshot.id.short(),
            zoned_time(snapshot.time, zone),
            snapshot.host.clone(),
            snapshot.tags.join(","),
            reasons.join(", "),
            snapshot.paths.join(" "),
        ]);
    }
    for line in render::aligned_rows(&rows) {
        outln!("{line}");
    }
}

/// Prints every group's decisions: tables, or one JSON line per snapshot.
fn print_plan(global: &GlobalArgs, plan: &ForgetPlan, zone: &TimeZone) {
    for group in &plan.groups {
        if global.json {
            for decision in &group.decisions {
                let snapshot = &decision.snapshot;
                render::json_line(&serde_json::json!({
                    "message_type": "snapshot",
                    "group": group_json(&group.key),
                    "id": snapshot.id.to_hex(),
                    "short_id": snapshot.id.short(),
                    "time": snapshot.time.to_string(),
                    "host": snapshot.host,
                    "tags": snapshot.tags,
                    "paths": snapshot.paths,
                    "action": if decision.keep() { "keep" } else { "remove" },
                    "reasons": decision.reasons.iter().map(ToString::to_string).collect::<Vec<_>>(),
                }));
            }
        } else if !global.quiet {
            let (kept, removed): (Vec<&Decision>, Vec<&Decision>) =
                group.decisions.iter().partition(|decision| decision.keep());
            outln!("{}", group_title(&group.key));
            print_table("keep", &kept, zone);
            print_table("remove", &removed, zone);
            outln!();
        }
    }
}

/// Removes the snapshots named by id (unless `--dry-run`), readable or not. `latest`, and
/// every id when a selection is given, is resolved within the selection first (so it must be
/// readable).
fn forget_named(
    global: &GlobalArgs,
    args: &ForgetArgs,
    zone: &TimeZone,
    repository: &cairn_store::Repository,
    selection: Selection,
) -> Result<()> {
    let selected = !selection.is_empty();
    let chooser = super::Chooser::new(repository, selection);
    let mut specs = Vec::new();
    for spec in &args.snapshots {
        specs.push(if selected || spec == "latest" {
            chooser.one(spec)?.0.to_hex()
        } else {
            spec.clone()
        });
    }
    let named = resolve_named(repository, &specs)?;
    for entry in &named {
        if global.json {
            let mut line = serde_json::json!({
                "message_type": "snapshot",
                "id": entry.id.to_hex(),
                "short_id": entry.id.short(),
                "action": "remove",
                "readable": entry.snapshot.is_ok(),
            });
            match &entry.snapshot {
                Ok(snapshot) => {
                    line["time"] = render::rfc3339(snapshot.time).into();
                    line["host"] = snapshot.host.clone().into();
                    line["tags"] = snapshot.tags.clone().into();
                    line["paths"] = snapshot.source.names().into();
                }
                Err(error) => line["error"] = error.to_string().into(),
            }
            render::json_line(&line);
        } else if !global.quiet {
            match &entry.snapshot {
                Ok(snapshot) => outln!(
                    "{} {} {} {}",
                    entry.id.short(),
                    render::local_time(snapshot.time),
                    snapshot.host,
                    snapshot.source.names().join(" ")
                ),
                Err(error) => outln!("{} unreadable: {error}", entry.id.short()),
            }
        }
    }
    let ids: Vec<cairn_store::Id> = named.iter().map(|entry| entry.id).collect();
    let outcome = if args.dry_run {
        cairn_store::forget::ForgetOutcome::default()
    } else {
        repository.forget_snapshots(&ids)?
    };
    report_outcome(global, args, &outcome, ids.len(), None, zone)
}

/// Prints the deletions that failed and the summary; fails when any deletion did.
fn report_outcome(
    global: &GlobalArgs,
    args: &ForgetArgs,
    outcome: &cairn_store::forget::ForgetOutcome,
    remove: usize,
    plan: Option<&ForgetPlan>,
    zone: &TimeZone,
) -> Result<()> {
    for (id, error) in &outcome.failed {
        if global.json {
            render::json_line(&serde_json::json!({
                "message_type": "error", "id": id.to_hex(), "error": error.to_string(),
            }));
        } else {
            eprintln!("error: cannot remove snapshot {}: {error}", id.short());
        }
    }
    let kept = plan.map_or(0, ForgetPlan::kept_count);
    if global.json {
        render::json_line(&serde_json::json!({
            "message_type": "summary",
            "dry_run": args.dry_run,
            "time_zone": zone.iana_name(),
            "groups": plan.map_or(0, |plan| plan.groups.len()),
            "kept": kept,
            "remove": remove,
            "removed": outcome.removed.len(),
            "failed": outcome.failed.len(),
            "unreadable": plan.map_or(0, |plan| plan.unreadable.len()),
        }));
    } else if !global.quiet {
        if args.dry_run {
            outln!(
                "would remove {} and keep {kept} (dry run: nothing removed)",
                count_of_snapshots(remove),
            );
        } else {
            outln!(
                "removed {}, kept {kept}; the data only they used stays in the repository until `cairn prune`",
                count_of_snapshots(outcome.removed.len()),
            );
        }
    }
    if !outcome.failed.is_empty() {
        bail!(
            "{} of {} could not be removed (listed above); run forget again",
            outcome.failed.len(),
            render::count(remove as u64, "snapshot", "snapshots")
        );
    }
    Ok(())
}

/// Applies the policy; prints the decisions; deletes the removed snapshots unless `--dry-run`.
/// With snapshot ids instead of a policy, removes those snapshots.
pub fn run(global: &GlobalArgs, config: Option<&Config>, args: &ForgetArgs) -> Result<()> {
    let zone = time_zone(args)?;
    let selection = super::selection(&args.selection, config)?;
    if !args.snapshots.is_empty() {
        let repository = settings::open_repository(global)?;
        forget_named(global, args, &zone, &repository, selection)?;
        if args.prune {
            crate::commands::prune::run_on(global, &args.prune_options, args.dry_run, &repository)?;
        }
        return Ok(());
    }
    let policy = policy(args);
    if policy.is_empty() {
        // Before asking for a password or touching the repository.
        return Err(
            cairn_store::Error::from(cairn_store::retention::RetentionError::EmptyPolicy).into(),
        );
    }
    let repository = settings::open_repository(global)?;
    let options = ForgetOptions {
        policy,
        filter: selection,
        group_by: args.group_by,
        time_zone: zone.clone(),
        now: Some(jiff::Timestamp::now() + cairn_store::time_sanity::FUTURE_TOLERANCE),
    };
    let plan = plan_forget(&repository, &options)?;
    for error in &plan.unreadable {
        eprintln!(
            "warning: {error} (left alone by the policy: `cairn forget {}` removes it)",
            unreadable_id(error)
        );
    }
    print_plan(global, &plan, &zone);
    if !args.allow_empty_group {
        plan.ensure_no_group_emptied()?;
    }
    let removals = plan.removals();
    let outcome = if args.dry_run || removals.is_empty() {
        cairn_store::forget::ForgetOutcome::default()
    } else {
        repository.forget_snapshots(&removals)?
    };
    report_outcome(global, args, &outcome, removals.len(), Some(&plan), &zone)?;
    if args.prune {
        crate::commands::prune::run_on(global, &args.prune_options, args.dry_run, &repository)?;
    }
    Ok(())
}
