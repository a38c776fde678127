//! `cairn dump`.

use anyhow::Result;
use cairn_store::restore;

use crate::args::{DumpArgs, GlobalArgs};
use crate::config::Config;
use crate::settings;

/// Writes one file or stream to standard output: of the snapshot named, or of the newest
/// selected snapshot that holds it (`latest`).
pub fn run(global: &GlobalArgs, config: Option<&Config>, args: &DumpArgs) -> Result<()> {
    let selection = super::selection(&args.selection, config)?;
    let repository = settings::open_repository(global)?;
    let chooser = super::Chooser::new(&repository, selection);
    let (_, snapshot) = chooser.holding(&args.snapshot, Some(&args.name))?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    restore::dump(&repository, &snapshot.root, &args.name, &mut out)?;
    Ok(())
}
