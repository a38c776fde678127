//! `cairn tag`: add, remove or set the tags of the chosen snapshots.

use anyhow::Result;
use cairn_store::tag::{self, SnapshotRetag, TagEdit, TagOptions, TagOutcome};

use crate::args::{GlobalArgs, TagArgs};
use crate::config::Config;
use crate::render;
use crate::settings;

/// Changes the tags of the chosen snapshots (default: every selected one) and reports each.
///
/// # Errors
/// No snapshot chosen (exit 20), append-only (exit 13), or what the library fails with.
pub fn run(global: &GlobalArgs, config: Option<&Config>, args: &TagArgs) -> Result<()> {
    let selection = super::selection(&args.selection, config)?;
    let repository = settings::open_repository(global)?;
    let chooser = super::Chooser::new(&repository, selection.clone());
    let chosen = chooser.named_or_selected(&args.snapshots)?;
    if chosen.is_empty() {
        return Err(super::NoMatch(format!("no snapshot among {}", selection.describe())).into());
    }
    let edit = TagEdit {
        add: args.add.clone(),
        remove: args.remove.clone(),
        set: (!args.set.is_empty()).then(|| {
            args.set
                .iter()
                .filter(|tag| !tag.trim().is_empty())
                .cloned()
                .collect()
        }),
    };
    let retags = tag::tag_snapshots(
        &repository,
        &chosen,
        &TagOptions {
            edit,
            dry_run: args.dry_run,
            host: settings::host_name(),
            program_version: env!("CARGO_PKG_VERSION").to_owned(),
        },
    )?;
    print_report(global, args.dry_run, &retags);
    Ok(())
}

fn action(outcome: &TagOutcome) -> &'static str {
    match outcome {
        TagOutcome::Unchanged => "unchanged",
        TagOutcome::WouldRetag => "would_retag",
        TagOutcome::Retagged { .. } => "retagged",
        TagOutcome::Vanished => "vanished",
    }
}

fn print_report(global: &GlobalArgs, dry_run: bool, retags: &[SnapshotRetag]) {
    let changed = retags
        .iter()
        .filter(|retag| {
            matches!(
                retag.outcome,
                TagOutcome::WouldRetag | TagOutcome::Retagged { .. }
            )
        })
        .count();
    if global.json {
        for retag in retags {
            let (new_id, already_written) = match retag.outcome {
                TagOutcome::Retagged {
                    new_id,
                    already_written,
                } => (Some(new_id.to_hex()), already_written),
                _ => (None, false),
            };
            render::json_line(&serde_json::json!({
                "message_type": "snapshot",
                "snapshot_id": retag.original.to_hex(),
                "time": render::rfc3339(retag.snapshot.time),
                "host": retag.snapshot.host,
                "paths": retag.snapshot.source.names(),
                "old_tags": retag.snapshot.tags,
                "new_tags": retag.new_tags,
                "action": action(&retag.outcome),
                "new_snapshot_id": new_id,
                "already_written": already_written,
            }));
        }
        render::json_line(&serde_json::json!({
            "message_type": "summary",
            "dry_run": dry_run,
            "snapshots_chosen": retags.len(),
            "snapshots_changed": changed,
        }));
        return;
    }
    render::warn_vanished(
        retags
            .iter()
            .filter(|retag| retag.outcome == TagOutcome::Vanished)
            .map(|retag| &retag.original),
        "not re-tagged",
    );
    if global.quiet {
        return;
    }
    for retag in retags {
        let old = render::tags(&retag.snapshot.tags);
        let new = render::tags(&retag.new_tags);
        let show = |tags: String| if tags.is_empty() { "-".into() } else { tags };
        match &retag.outcome {
            TagOutcome::Unchanged => outln!(
                "snapshot {}: tags {} unchanged",
                retag.original.short(),
                show(old)
            ),
            TagOutcome::WouldRetag => outln!(
                "snapshot {}: tags {} would become {}",
                retag.original.short(),
                show(old),
                show(new)
            ),
            TagOutcome::Retagged { new_id, .. } => outln!(
                "snapshot {}: tags {} -> {}, now snapshot {} (the old one removed)",
                retag.original.short(),
                show(old),
                show(new),
                new_id.short()
            ),
            TagOutcome::Vanished => {}
        }
    }
    outln!(
        "{} {}, {} unchanged",
        render::count(changed as u64, "snapshot", "snapshots"),
        if dry_run { "would change" } else { "changed" },
        retags.len()
            - changed
            - retags
                .iter()
                .filter(|retag| retag.outcome == TagOutcome::Vanished)
                .count()
    );
}
