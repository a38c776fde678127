//! `cairn dump`.

use anyhow::Result;
use cairn_store::restore;

use crate::args::{DumpArgs, GlobalArgs};
use crate::settings;

/// Writes one file or stream to standard output.
pub fn run(global: &GlobalArgs, args: &DumpArgs) -> Result<()> {
    let repository = settings::open_repository(global)?;
    let (_, snapshot) = repository.resolve_snapshot(&args.snapshot)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    restore::dump(&repository, &snapshot.root, &args.name, &mut out)?;
    Ok(())
}
