//! `cairn mount`: serve the repository as a read-only file system until a signal or an
//! unmount from outside ends it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use cairn_mount::{Layout, MountOptions, MountReport, Unmounted};
use cairn_store::select::SourceSelector;

use crate::args::{GlobalArgs, MountArgs};
use crate::config::{Config, ConfigError, source_tag};
use crate::settings;

/// How often the command looks for a signal or an unmount from outside.
const POLL: Duration = Duration::from_millis(100);

/// Prints each failed read once per name, then only counts (a damaged file read by a
/// program that retries would otherwise fill the terminal).
struct WarnOnStderr {
    warned: AtomicUsize,
}

/// Warnings printed before the rest are only counted.
const WARNINGS_SHOWN: usize = 20;

impl MountReport for WarnOnStderr {
    fn failed(&self, what: &str, error: &cairn_store::Error) {
        let shown = self.warned.fetch_add(1, Ordering::Relaxed);
        if shown < WARNINGS_SHOWN {
            eprintln!("warning: reading {what} failed (the reader got EIO): {error}");
        } else if shown == WARNINGS_SHOWN {
            eprintln!("warning: more reads failed; `cairn check --read-data` lists the damage");
        }
    }
}

/// Mounts the selected snapshots at the mountpoint and serves them until SIGINT, SIGTERM or
/// SIGHUP (then unmounts) or until `fusermount -u` unmounts it; both are a normal end.
pub fn run(global: &GlobalArgs, config: Option<&Config>, args: &MountArgs) -> Result<()> {
    let (repository_given, mountpoint) = match args.places.as_slice() {
        [mountpoint] => (None, mountpoint),
        [repository, mountpoint] => (Some(repository), mountpoint),
        _ => unreachable!("clap takes one or two places"),
    };
    check_mountpoint(mountpoint)?;
    if !Path::new("/dev/fuse").exists() {
        anyhow::bail!(
            "no /dev/fuse on this machine: load the fuse kernel module (modprobe fuse), or give \
             a container --device /dev/fuse --cap-add SYS_ADMIN"
        );
    }
    let mut global = global.clone();
    if let Some(repository) = repository_given {
        global.repo = Some(repository.display().to_string());
    }
    let selection = super::selection(&args.selection, config)?;
    let repository = settings::open_repository(&global)?;
    repository.sync_index()?;
    let snapshots = super::Chooser::new(&repository, selection).selected()?;
    let sources: Option<Vec<SourceSelector>> = config.map(|config| {
        let host = super::metrics::config_host(config);
        config
            .sources
            .keys()
            .map(|name| SourceSelector {
                name: name.clone(),
                host: host.clone(),
                tag: source_tag(name),
            })
            .collect()
    });
    let layout = Layout::new(
        &snapshots,
        sources.as_deref(),
        &jiff::tz::TimeZone::system(),
    );
    let shown = layout.snapshots.len();
    // Registered before mounting: a signal from here on unmounts instead of killing the
    // process with the file system still mounted.
    let mut signals = Signals::register()?;
    let options = MountOptions {
        allow_other: args.allow_other,
        owner: (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        ),
    };
    let mounted = cairn_mount::mount(
        Arc::new(repository),
        layout,
        mountpoint,
        options,
        Arc::new(WarnOnStderr {
            warned: AtomicUsize::new(0),
        }),
    )?;
    if !global.quiet {
        eprintln!(
            "serving {} at {} (read-only); end with Ctrl-C, SIGTERM or `fusermount -u {}`",
            crate::render::count(shown as u64, "snapshot", "snapshots"),
            mountpoint.display(),
            mountpoint.display()
        );
    }
    loop {
        if mounted.is_unmounted() {
            return Ok(());
        }
        if let Some(signal) = signals.received() {
            let outcome = mounted
                .unmount()
                .with_context(|| format!("unmounting {} on {signal}", mountpoint.display()))?;
            if outcome == Unmounted::Detached {
                eprintln!(
                    "warning: {} was still in use: detached it; programs still reading there \
                     now get errors",
                    mountpoint.display()
                );
            }
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
}

/// An existing, empty directory, or a usage error (exit 2).
fn check_mountpoint(mountpoint: &Path) -> Result<()> {
    let usage = |message: String| ConfigError::usage(Path::new(""), "", message);
    let metadata = std::fs::metadata(mountpoint).map_err(|error| {
        usage(format!(
            "mountpoint {}: {error} (give an existing empty directory)",
            mountpoint.display()
        ))
    })?;
    if !metadata.is_dir() {
        return Err(usage(format!(
            "mountpoint {} is not a directory (give an existing empty directory)",
            mountpoint.display()
        ))
        .into());
    }
    let mut entries = std::fs::read_dir(mountpoint)
        .map_err(|error| usage(format!("mountpoint {}: {error}", mountpoint.display())))?;
    if entries.next().is_some() {
        return Err(usage(format!(
            "mountpoint {} is not empty (give an empty directory: mounting would hide its files)",
            mountpoint.display()
        ))
        .into());
    }
    Ok(())
}

/// SIGINT, SIGTERM and SIGHUP, caught instead of ending the process; a second one while
/// the unmount hangs ends the process (exit 130).
struct Signals {
    caught: signal_hook::iterator::Signals,
}

impl Signals {
    fn register() -> Result<Self> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let seen = Arc::new(std::sync::atomic::AtomicBool::new(false));
        for signal in [SIGINT, SIGTERM, SIGHUP] {
            signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&seen))
                .context("while setting up signal handling")?;
            signal_hook::flag::register(signal, Arc::clone(&seen))
                .context("while setting up signal handling")?;
        }
        let caught = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
            .context("while setting up signal handling")?;
        Ok(Self { caught })
    }

    /// The name of a signal received since the last call, if any.
    fn received(&mut self) -> Option<&'static str> {
        self.caught
            .pending()
            .next()
            .map(|number| signal_hook::low_level::signal_name(number).unwrap_or("a signal"))
    }
}
