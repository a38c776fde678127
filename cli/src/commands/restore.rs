//! `cairn restore`.

use anyhow::{Result, bail};
use cairn_store::fsmeta::OwnerMapping;
use cairn_store::overwrite::Overwrite;
use cairn_store::pathmatch::PathMatcher;
use cairn_store::restore::{self, EntryAction, RestoreFilter, RestoreOptions, RestoreProgress};

use super::Completion;

use crate::args::{GlobalArgs, OverwriteArg, RestoreArgs};
use crate::config::Config;
use crate::progress::{Meter, Total};
use crate::render;
use crate::settings;

/// Restore progress drawn on a [`Meter`]; with `--dry-run`, a line per entry that already
/// stands in the target (replaced, kept or deleted).
struct RestoreMeter {
    meter: Meter,
    dry_run: bool,
    json: bool,
}

impl RestoreProgress for RestoreMeter {
    fn planned(&self, _files: u64, bytes: u64) {
        self.meter.set_total(bytes, Total::Exact);
    }

    fn bytes_written(&self, bytes: u64) {
        self.meter.add_bytes(bytes);
    }

    fn file_done(&self, _path: &std::path::Path, _bytes: u64) {
        self.meter.add_file();
    }

    fn entry(&self, path: &std::path::Path, action: EntryAction) {
        if !self.dry_run {
            return;
        }
        let verb = match action {
            EntryAction::Create => return,
            EntryAction::Replace => "replace",
            EntryAction::Keep => "keep",
            EntryAction::Delete => "delete",
        };
        if self.json {
            render::json_line(&serde_json::json!({
                "message_type": "dry_run", "action": verb, "path": path.to_string_lossy(),
            }));
        } else {
            outln!("would {verb} {}", path.display());
        }
    }
}

/// Restores `SNAPSHOT[:PATH]` into the target directory. Partial when every file was restored
/// but some metadata, special file or hard link could not be recreated (warnings listed).
pub fn run(global: &GlobalArgs, config: Option<&Config>, args: &RestoreArgs) -> Result<Completion> {
    let selection = super::selection(&args.selection, config)?;
    let filter = RestoreFilter {
        includes: PathMatcher::new(&args.includes)?,
        excludes: PathMatcher::new(&args.excludes)?,
    };
    let repository = settings::open_repository(global)?;
    let (spec, path) = args
        .snapshot
        .split_once(':')
        .unwrap_or((args.snapshot.as_str(), ""));
    let chooser = super::Chooser::new(&repository, selection);
    let (snapshot_id, snapshot) = chooser.holding(spec, Some(path))?;
    let options = RestoreOptions {
        filter,
        overwrite: match args.overwrite {
            OverwriteArg::Always => Overwrite::Always,
            OverwriteArg::IfChanged => Overwrite::IfChanged,
            OverwriteArg::IfNewer => Overwrite::IfNewer,
            OverwriteArg::Never => Overwrite::Never,
        },
        delete: args.delete,
        dry_run: args.dry_run,
        owners: if args.numeric_owner {
            OwnerMapping::Numeric
        } else {
            OwnerMapping::ByName
        },
    };
    let progress = RestoreMeter {
        meter: Meter::new(global, "files", "restored"),
        dry_run: args.dry_run,
        json: global.json,
    };
    let outcome = restore::restore_with(
        &repository,
        &snapshot.root,
        path,
        &args.target,
        &options,
        &progress,
    )?;
    for change in &outcome.kind_changes {
        let (found, wanted) = (change.found.name(), change.wanted.name());
        let message = if change.replaced {
            format!("{found} replaced by the snapshot's {wanted}")
        } else {
            format!(
                "{found} kept where the snapshot has a {wanted} (--overwrite {})",
                options.overwrite.name()
            )
        };
        let message = if args.dry_run {
            format!("dry run: {message}")
        } else {
            message
        };
        if global.json {
            render::json_line(&serde_json::json!({
                "message_type": "warning", "path": change.path.to_string_lossy(), "warning": message,
            }));
        } else {
            eprintln!("warning: {}: {message}", change.path.display());
        }
    }
    let restored = outcome.files + outcome.directories + outcome.symlinks + outcome.specials;
    if restored == 0 && outcome.failed.is_empty() && !args.includes.is_empty() {
        eprintln!("warning: no entry of the snapshot matches the --include patterns");
    }
    for warning in &outcome.warnings {
        if global.json {
            render::json_line(&serde_json::json!({
                "message_type": "warning", "path": warning.path.to_string_lossy(), "message": warning.message,
            }));
        } else {
            eprintln!("warning: {}: {}", warning.path.display(), warning.message);
        }
    }
    for (failed_path, error) in &outcome.failed {
        if global.json {
            render::json_line(&serde_json::json!({
                "message_type": "error", "path": failed_path.to_string_lossy(), "error": error.to_string(),
            }));
        } else {
            eprintln!("error: {}: {error}", failed_path.display());
        }
    }
    if global.json {
        render::json_line(&serde_json::json!({
            "message_type": "summary", "snapshot_id": snapshot_id.to_hex(), "dry_run": args.dry_run,
            "files_restored": outcome.files, "directories_restored": outcome.directories,
            "symlinks_restored": outcome.symlinks, "bytes_restored": outcome.bytes,
            "specials_restored": outcome.specials, "hard_links_restored": outcome.hard_links,
            "warnings": outcome.warnings.len(),
            "created": outcome.created, "replaced": outcome.replaced, "kept": outcome.kept,
            "deleted": outcome.deleted,
            "errors": outcome.failed.len(), "verified": outcome.failed.is_empty() && !args.dry_run,
            "failed_paths": outcome.failed.iter().map(|(path, _)| path.to_string_lossy()).collect::<Vec<_>>(),
        }));
    } else if !global.quiet {
        let changes = format!(
            "{} created, {} replaced, {} kept, {} deleted",
            outcome.created, outcome.replaced, outcome.kept, outcome.deleted
        );
        if args.dry_run {
            outln!(
                "dry run: would restore snapshot {} into {} ({changes}); nothing was written",
                snapshot_id.short(),
                args.target.display()
            );
        } else {
            // "verified" only when it is true: every file was compared with its recorded hash
            // and none failed.
            let verified = if outcome.failed.is_empty() {
                " (every file verified)"
            } else {
                ""
            };
            outln!(
                "restored {}, {}, {}, {} from snapshot {} into {} ({changes}){verified}",
                render::count(outcome.files as u64, "file", "files"),
                render::count(outcome.directories as u64, "directory", "directories"),
                render::count(outcome.symlinks as u64, "symlink", "symlinks"),
                render::bytes(outcome.bytes),
                snapshot_id.short(),
                args.target.display()
            );
            let mut also = Vec::new();
            if outcome.specials > 0 {
                also.push(render::count(
                    outcome.specials as u64,
                    "FIFO or device node",
                    "FIFOs and device nodes",
                ));
            }
            if outcome.hard_links > 0 {
                also.push(render::count(
                    outcome.hard_links as u64,
                    "hard link to a restored file",
                    "hard links to restored files",
                ));
            }
            if !also.is_empty() {
                outln!("also {}", also.join(", "));
            }
        }
    }
    if !outcome.failed.is_empty() {
        bail!(
            "{} not be restored (listed above); the files that were restored were verified",
            if outcome.failed.len() == 1 {
                "1 entry could".to_owned()
            } else {
                format!("{} entries could", outcome.failed.len())
            }
        );
    }
    if outcome.warnings.is_empty() {
        Ok(Completion::Done)
    } else {
        eprintln!(
            "{} (listed above): every file was restored and verified, but the target \
             does not hold everything the snapshot recorded",
            render::count(outcome.warnings.len() as u64, "warning", "warnings")
        );
        Ok(Completion::Partial)
    }
}
