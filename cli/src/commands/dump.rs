//! `cairn dump`.

use anyhow::Result;
use cairn_store::archive::{self, ArchiveFormat};
use cairn_store::format::tree::NodeKind;
use cairn_store::restore;

use crate::args::{ArchiveArg, DumpArgs, GlobalArgs};
use crate::config::Config;
use crate::render;
use crate::settings;

/// Writes one file or stream to standard output, or a directory (or, with --archive, any
/// entry) as a tar or zip archive: of the snapshot named, or of the newest selected snapshot
/// that holds it (`latest`).
pub fn run(global: &GlobalArgs, config: Option<&Config>, args: &DumpArgs) -> Result<()> {
    let selection = super::selection(&args.selection, config)?;
    let repository = settings::open_repository(global)?;
    let chooser = super::Chooser::new(&repository, selection);
    let (_, snapshot) = chooser.holding(&args.snapshot, Some(&args.name))?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let format = match args.archive {
        Some(ArchiveArg::Tar) => Some(ArchiveFormat::Tar),
        Some(ArchiveArg::Zip) => Some(ArchiveFormat::Zip),
        None => {
            repository.sync_index()?;
            let is_file = repository
                .find_node(&snapshot.root, &args.name)?
                .is_some_and(|node| matches!(node.kind, NodeKind::File { .. }));
            (!is_file).then_some(ArchiveFormat::Tar)
        }
    };
    let Some(format) = format else {
        restore::dump(&repository, &snapshot.root, &args.name, &mut out)?;
        return Ok(());
    };
    let summary = archive::write_archive(
        &repository,
        &snapshot.root,
        &args.name,
        format,
        &jiff::tz::TimeZone::system(),
        &mut out,
    )?;
    for left_out in &summary.left_out {
        eprintln!(
            "warning: {left_out} left out: a zip archive cannot hold FIFOs or device nodes (`--archive tar` can)"
        );
    }
    if !global.quiet {
        let mut parts = vec![
            render::count(summary.files, "file", "files"),
            render::count(summary.directories, "directory", "directories"),
        ];
        if summary.symlinks > 0 {
            parts.push(render::count(summary.symlinks, "symlink", "symlinks"));
        }
        if summary.hard_links > 0 {
            parts.push(render::count(summary.hard_links, "hard link", "hard links"));
        }
        if summary.special > 0 {
            parts.push(render::count(
                summary.special,
                "special file",
                "special files",
            ));
        }
        eprintln!(
            "archived {} ({} verified)",
            parts.join(", "),
            render::bytes(summary.bytes)
        );
    }
    Ok(())
}
