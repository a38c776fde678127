//! `cairn restore`.

use anyhow::{Result, bail};
use cairn_store::fsmeta::OwnerMapping;
use cairn_store::pathmatch::PathMatcher;
use cairn_store::restore::{self, RestoreFilter, RestoreProgress};

use super::Completion;

use crate::args::{GlobalArgs, RestoreArgs};
use crate::progress::{Meter, Total};
use crate::render;
use crate::settings;

/// Restore progress drawn on a [`Meter`].
struct RestoreMeter(Meter);

impl RestoreProgress for RestoreMeter {
    fn planned(&self, _files: u64, bytes: u64) {
        self.0.set_total(bytes, Total::Exact);
    }

    fn bytes_written(&self, bytes: u64) {
        self.0.add_bytes(bytes);
    }

    fn file_done(&self, _path: &std::path::Path, _bytes: u64) {
        self.0.add_file();
    }
}

/// Restores `SNAPSHOT[:PATH]` into the target directory. Partial when every file was restored
/// but some metadata, special file or hard link could not be recreated (warnings listed).
pub fn run(global: &GlobalArgs, args: &RestoreArgs) -> Result<Completion> {
    let filter = RestoreFilter {
        includes: PathMatcher::new(&args.includes)?,
        excludes: PathMatcher::new(&args.excludes)?,
    };
    let repository = settings::open_repository(global)?;
    let (spec, path) = args
        .snapshot
        .split_once(':')
        .unwrap_or((args.snapshot.as_str(), ""));
    let (snapshot_id, snapshot) = repository.resolve_snapshot(spec)?;
    let outcome = restore::restore_filtered(
        &repository,
        &snapshot.root,
        path,
        &args.target,
        &filter,
        if args.numeric_owner {
            OwnerMapping::Numeric
        } else {
            OwnerMapping::ByName
        },
        &RestoreMeter(Meter::new(global, "files", "restored")),
    )?;
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
            "message_type": "summary", "snapshot_id": snapshot_id.to_hex(),
            "files_restored": outcome.files, "directories_restored": outcome.directories,
            "symlinks_restored": outcome.symlinks, "bytes_restored": outcome.bytes,
            "specials_restored": outcome.specials, "hard_links_restored": outcome.hard_links,
            "warnings": outcome.warnings.len(),
            "errors": outcome.failed.len(),
            "failed_paths": outcome.failed.iter().map(|(path, _)| path.to_string_lossy()).collect::<Vec<_>>(),
        }));
    } else if !global.quiet {
        println!(
            "restored {} files, {} directories, {} symlinks, {} from snapshot {} into {} (every file verified)",
            outcome.files,
            outcome.directories,
            outcome.symlinks,
            render::bytes(outcome.bytes),
            snapshot_id.short(),
            args.target.display()
        );
        if outcome.specials + outcome.hard_links > 0 {
            println!(
                "also {} FIFOs and device nodes, {} hard links to restored files",
                outcome.specials, outcome.hard_links
            );
        }
    }
    if !outcome.failed.is_empty() {
        bail!(
            "{} entries could not be restored (listed above); everything else was restored and verified",
            outcome.failed.len()
        );
    }
    if outcome.warnings.is_empty() {
        Ok(Completion::Done)
    } else {
        eprintln!(
            "{} warnings (listed above): every file was restored and verified, but the target \
             does not hold everything the snapshot recorded",
            outcome.warnings.len()
        );
        Ok(Completion::Partial)
    }
}
