//! Progress bars on standard error (indicatif), drawn only on a terminal and never with
//! `--quiet` or `--json`. The library's progress hooks add to atomic counters; indicatif's steady
//! tick reads them and redraws a few times a second, so the pipeline never waits on drawing.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use crate::args::GlobalArgs;

/// How often the bar is redrawn.
const TICK: Duration = Duration::from_millis(200);

/// A progress display of files and bytes: a bar with rate and ETA once the total is known, a
/// spinner with counts until then. Invisible when progress is not wanted.
pub struct Meter {
    bar: Option<ProgressBar>,
    files: Arc<AtomicU64>,
    unit: &'static str,
    verb: &'static str,
    /// Bytes added so far, and an estimated total (0: none) that, once passed, turns the bar
    /// back into a spinner.
    bytes: AtomicU64,
    estimate: AtomicU64,
    estimate_passed: AtomicBool,
}

/// Whether progress should be drawn: stderr is a terminal and neither `--quiet` nor `--json`.
pub fn wanted(global: &GlobalArgs) -> bool {
    !global.quiet && !global.json && std::io::stderr().is_terminal()
}

impl Meter {
    /// A meter counting `unit`s ("files", "packs") and bytes `verb` ("processed",
    /// "restored", "verified"), drawn when [`wanted`].
    pub fn new(global: &GlobalArgs, unit: &'static str, verb: &'static str) -> Self {
        let files = Arc::new(AtomicU64::new(0));
        let bar = wanted(global).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(spinner_style(&files, unit, verb));
            bar.enable_steady_tick(TICK);
            bar
        });
        Self {
            bar,
            files,
            unit,
            verb,
            bytes: AtomicU64::new(0),
            estimate: AtomicU64::new(0),
            estimate_passed: AtomicBool::new(false),
        }
    }

    /// Sets the total bytes: the spinner becomes a bar with a rate and an ETA. An `estimate`
    /// (a backup's parent snapshot size) is shown as one (`~`) and may be passed.
    pub fn set_total(&self, bytes: u64, total: Total) {
        if let Some(bar) = &self.bar {
            if total == Total::Estimate {
                self.estimate.store(bytes, Ordering::Relaxed);
            }
            bar.set_length(bytes);
            bar.set_style(bar_style(&self.files, self.unit, total));
        }
    }

    /// Adds processed bytes: atomic adds, drawing happens on the tick.
    pub fn add_bytes(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
            let done = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
            let estimate = self.estimate.load(Ordering::Relaxed);
            if estimate > 0
                && done > estimate
                && !self.estimate_passed.swap(true, Ordering::Relaxed)
            {
                bar.set_style(spinner_style(&self.files, self.unit, self.verb));
            }
        }
    }

    /// Counts one finished unit (file, pack).
    pub fn add_file(&self) {
        self.files.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs `print` with the bar hidden, so a warning line does not tear it.
    pub fn suspend<R>(&self, print: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) => bar.suspend(print),
            None => print(),
        }
    }

    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A template key `{files}` that reads the shared counter with its `unit` (a plural such as
/// `files` or `packs`) in the right number: `1 file`, `2 files`.
fn with_files(style: ProgressStyle, files: &Arc<AtomicU64>, unit: &str) -> ProgressStyle {
    let files = Arc::clone(files);
    let plural = unit.to_owned();
    let singular = unit.strip_suffix('s').unwrap_or(unit).to_owned();
    style.with_key(
        "files",
        move |_: &ProgressState, out: &mut dyn std::fmt::Write| {
            let count = files.load(Ordering::Relaxed);
            let _ = write!(out, "{}", crate::render::count(count, &singular, &plural));
        },
    )
}

fn spinner_style(files: &Arc<AtomicU64>, unit: &str, verb: &str) -> ProgressStyle {
    let template =
        format!("{{spinner}} {{files}}, {{bytes}} {verb}, {{binary_bytes_per_sec}}, {{elapsed}}");
    with_files(
        ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        files,
        unit,
    )
}

/// Whether a total is exact or an estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Total {
    /// Known before the first byte (restore, check).
    Exact,
    /// A guess that the run may pass (a backup's parent snapshot).
    Estimate,
}

fn bar_style(files: &Arc<AtomicU64>, unit: &str, total: Total) -> ProgressStyle {
    let about = if total == Total::Estimate { "~" } else { "" };
    let template = format!(
        "[{{bar:20}}] {{files}} {{bytes}}/{about}{{total_bytes}} {{binary_bytes_per_sec}} ETA {{eta}}"
    );
    with_files(
        ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        files,
        unit,
    )
}
