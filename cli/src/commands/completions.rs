//! `cairn completions` and `cairn man`: shell completion scripts and roff man pages generated from
//! the clap definitions, so they never drift from the real options.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use crate::args::{CompletionsArgs, ManArgs};

/// Prints the completion script for the chosen shell on stdout (a reader that goes away, as
/// `| head`, is no error: [`crate::render::write_out`]).
pub fn completions(args: &CompletionsArgs) {
    let mut command = crate::help::command();
    // Generated into memory first: clap_complete panics on a failed write.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "cairn", &mut script);
    crate::render::write_out(&script);
}

/// Prints the main man page on stdout, or writes every page into `--dir`.
///
/// # Errors
/// Failure to create the directory or write a page.
pub fn man(args: &ManArgs) -> Result<()> {
    let command = crate::help::command();
    match &args.dir {
        None => {
            let mut page = Vec::new();
            render_page(&command, &mut page).context("while rendering the man page")?;
            crate::render::write_out(&page);
            Ok(())
        }
        Some(directory) => {
            std::fs::create_dir_all(directory)
                .with_context(|| format!("while creating {}", directory.display()))?;
            write_pages(&command, "cairn", directory)
        }
    }
}

/// Renders one command's page.
fn render_page(command: &clap::Command, out: &mut dyn Write) -> std::io::Result<()> {
    clap_mangen::Man::new(command.clone()).render(out)
}

/// Writes `NAME.1` for `command` and, recursively, `NAME-SUB.1` for each visible subcommand.
fn write_pages(command: &clap::Command, name: &str, directory: &Path) -> Result<()> {
    let named = command
        .clone()
        .name(name.to_owned())
        .version(env!("CARGO_PKG_VERSION"));
    let path = directory.join(format!("{name}.1"));
    let mut bytes = Vec::new();
    render_page(&named, &mut bytes)?;
    std::fs::write(&path, bytes).with_context(|| format!("while writing {}", path.display()))?;
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        write_pages(sub, &format!("{name}-{}", sub.get_name()), directory)?;
    }
    Ok(())
}
