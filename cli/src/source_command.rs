//! The source command of `backup --command`: run with `sh -c`, its standard output read as the
//! backup's stream, its standard error passed through to cairn's as it comes (the last lines
//! kept for the error message), and its exit status checked at end-of-file, before the store
//! writes the snapshot: a command that failed makes the read fail, so no snapshot is written.
//!
//! The child is killed and reaped when cairn stops reading early (an error elsewhere) and when
//! cairn gets SIGINT, SIGTERM or SIGHUP, after which cairn dies by that signal as it would have
//! without a command running (the shell reports 130 for Ctrl-C).

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Lines of the command's standard error kept for the error message.
const TAIL_LINES: usize = 20;
/// Bytes kept of each of those lines.
const TAIL_LINE_BYTES: usize = 512;
/// How long, after the command exited, its standard error may stay open (held by something it
/// left running in the background) before cairn reports the lines it has.
const STDERR_GRACE: Duration = Duration::from_secs(2);

/// The last lines of a byte stream, each cut to a bounded length: memory stays bounded however
/// much the command writes, and however long its lines are.
#[derive(Debug, Clone)]
pub struct LineTail {
    lines: VecDeque<String>,
    /// The line being received.
    partial: Vec<u8>,
    /// The line being received was longer than the bytes kept.
    partial_cut: bool,
    max_lines: usize,
    max_line_bytes: usize,
}

impl LineTail {
    /// Keeps the last `max_lines` lines, the first `max_line_bytes` bytes of each.
    pub fn new(max_lines: usize, max_line_bytes: usize) -> Self {
        Self {
            lines: VecDeque::with_capacity(max_lines),
            partial: Vec::new(),
            partial_cut: false,
            max_lines,
            max_line_bytes,
        }
    }

    /// Takes the next bytes of the stream.
    pub fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let (line, rest, ended) = match bytes.iter().position(|&byte| byte == b'\n') {
                Some(end) => (&bytes[..end], &bytes[end + 1..], true),
                None => (bytes, &[][..], false),
            };
            let room = self.max_line_bytes.saturating_sub(self.partial.len());
            self.partial
                .extend_from_slice(&line[..line.len().min(room)]);
            self.partial_cut |= line.len() > room;
            if ended {
                self.end_line();
            }
            bytes = rest;
        }
    }

    fn end_line(&mut self) {
        let mut line = String::from_utf8_lossy(&self.partial)
            .trim_end_matches('\r')
            .to_owned();
        if self.partial_cut {
            line.push('…');
        }
        self.partial.clear();
        self.partial_cut = false;
        if self.max_lines == 0 {
            return;
        }
        if self.lines.len() == self.max_lines {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    /// The kept lines, oldest first, including an unfinished last line.
    pub fn finish(mut self) -> Vec<String> {
        if !self.partial.is_empty() || self.partial_cut {
            self.end_line();
        }
        self.lines.into()
    }
}

/// How a source command ended badly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandEnding {
    /// `sh` could not be started.
    NotStarted(String),
    /// It exited with this non-zero status.
    Status(i32),
    /// It was killed by this signal.
    Signal(i32),
    /// Its standard output could not be read (it was then killed).
    Unreadable(String),
}

/// A source command that failed: the backup wrote no snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceCommandFailed {
    /// The command line.
    pub command: String,
    /// How it ended.
    pub ending: CommandEnding,
    /// Its last lines of standard error.
    pub last_stderr: Vec<String>,
}

impl fmt::Display for SourceCommandFailed {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "command '{}' ", self.command)?;
        match &self.ending {
            CommandEnding::NotStarted(error) => write!(formatter, "could not be started: {error}")?,
            CommandEnding::Status(code) => write!(formatter, "failed with exit status {code}")?,
            CommandEnding::Signal(number) => match Signal::try_from(*number) {
                Ok(signal) => write!(formatter, "was killed by signal {number} ({signal})")?,
                Err(_) => write!(formatter, "was killed by signal {number}")?,
            },
            CommandEnding::Unreadable(error) => {
                write!(formatter, "failed: its output could not be read ({error})")?;
            }
        }
        formatter.write_str("; no snapshot written")?;
        if self.last_stderr.is_empty() {
            formatter.write_str(" (it wrote nothing to stderr)")
        } else {
            formatter.write_str("; its last stderr lines:")?;
            for line in &self.last_stderr {
                write!(formatter, "\n  {line}")?;
            }
            Ok(())
        }
    }
}

impl std::error::Error for SourceCommandFailed {}

/// The message of the read error that tells the store the command failed (the caller reports
/// [`SourceCommand::failure`] instead).
const FAILED_READ: &str = "the source command failed";

/// Children running now, killed and reaped by the signal thread.
static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn running() -> std::sync::MutexGuard<'static, Vec<u32>> {
    RUNNING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts, once per process, the thread that on SIGINT, SIGTERM or SIGHUP kills and reaps the
/// running source commands and then lets the signal end cairn as its default action would.
fn watch_signals() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        // Without the watcher a signal still ends cairn (and, through the closed pipe, the
        // command when it next writes): a failure here costs only the prompt kill.
        let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
            return;
        };
        std::thread::spawn(move || {
            if let Some(signal) = signals.forever().next() {
                for pid in running().drain(..) {
                    let pid = Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
                    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                    let _ = nix::sys::wait::waitpid(pid, None);
                }
                let _ = signal_hook::low_level::emulate_default_handler(signal);
            }
        });
    });
}

/// Where the command stands.
enum State {
    /// Its output is being read.
    Running,
    /// It ended well at end-of-file.
    Succeeded,
    /// It failed (see [`SourceCommand::failure`]).
    Failed,
}

/// A running source command whose standard output is read through [`Read`].
pub struct SourceCommand {
    command: String,
    child: Child,
    stdout: Option<ChildStdout>,
    /// The last lines of its standard error, fed by the pass-through thread.
    stderr_tail: Arc<Mutex<LineTail>>,
    /// Disconnected when the pass-through thread has read the end of standard error.
    stderr_done: Option<Receiver<()>>,
    state: State,
    failure: Option<SourceCommandFailed>,
}

/// Passes `pipe` through to cairn's standard error as it comes, keeping its last lines in
/// `tail`, until end-of-file; then drops `done`.
fn pass_through(
    mut pipe: impl Read,
    tail: &Mutex<LineTail>,
    done: std::sync::mpsc::SyncSender<()>,
) {
    let mut buffer = [0u8; 8192];
    loop {
        match pipe.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => {
                // A closed stderr of cairn's own does not stop the draining.
                let _ = io::stderr().write_all(&buffer[..read]);
                tail.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(&buffer[..read]);
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    drop(done);
}

impl SourceCommand {
    /// Starts `sh -c command` with standard input from `/dev/null`.
    ///
    /// # Errors
    /// [`SourceCommandFailed`] when `sh` cannot be started.
    pub fn spawn(command: &str) -> Result<Self, SourceCommandFailed> {
        watch_signals();
        // Registered under the lock so that a signal arriving meanwhile finds it.
        let mut registry = running();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| SourceCommandFailed {
                command: command.to_owned(),
                ending: CommandEnding::NotStarted(error.to_string()),
                last_stderr: Vec::new(),
            })?;
        registry.push(child.id());
        drop(registry);
        let stdout = child.stdout.take();
        let stderr_tail = Arc::new(Mutex::new(LineTail::new(TAIL_LINES, TAIL_LINE_BYTES)));
        let stderr_done = child.stderr.take().map(|pipe| {
            let (done, finished) = sync_channel(0);
            let tail = Arc::clone(&stderr_tail);
            std::thread::spawn(move || pass_through(pipe, &tail, done));
            finished
        });
        Ok(Self {
            command: command.to_owned(),
            child,
            stdout,
            stderr_tail,
            stderr_done,
            state: State::Running,
            failure: None,
        })
    }

    /// Why the command failed, once a read returned the failure (`None` while it runs, after
    /// it ended well, or when the backup stopped reading for another reason).
    pub fn failure(&self) -> Option<&SourceCommandFailed> {
        self.failure.as_ref()
    }

    /// Waits for the child (its output is at end-of-file, or it was killed), collects its
    /// stderr tail and records how it ended.
    fn finish(&mut self, unreadable: Option<String>) {
        drop(self.stdout.take());
        let status = self.child.wait();
        self.forget_pid();
        if let Some(done) = self.stderr_done.take() {
            let _ = done.recv_timeout(STDERR_GRACE);
        }
        let last_stderr = self
            .stderr_tail
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .finish();
        let ending = match (unreadable, status) {
            (Some(error), _) => Some(CommandEnding::Unreadable(error)),
            (None, Err(error)) => Some(CommandEnding::Unreadable(format!("wait failed: {error}"))),
            (None, Ok(status)) => ending(status),
        };
        match ending {
            None => self.state = State::Succeeded,
            Some(ending) => {
                self.state = State::Failed;
                self.failure = Some(SourceCommandFailed {
                    command: self.command.clone(),
                    ending,
                    last_stderr,
                });
            }
        }
    }

    fn forget_pid(&self) {
        let pid = self.child.id();
        running().retain(|&running| running != pid);
    }
}

/// How a finished child ended, `None` when it succeeded.
fn ending(status: ExitStatus) -> Option<CommandEnding> {
    if status.success() {
        None
    } else if let Some(signal) = status.signal() {
        Some(CommandEnding::Signal(signal))
    } else {
        Some(CommandEnding::Status(status.code().unwrap_or(-1)))
    }
}

impl Read for SourceCommand {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.state {
                State::Succeeded => return Ok(0),
                State::Failed => return Err(io::Error::other(FAILED_READ)),
                State::Running => {}
            }
            let Some(stdout) = self.stdout.as_mut() else {
                self.finish(None);
                continue;
            };
            match stdout.read(buffer) {
                Ok(0) if !buffer.is_empty() => self.finish(None),
                Ok(read) => return Ok(read),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    let _ = self.child.kill();
                    self.finish(Some(error.to_string()));
                }
            }
        }
    }
}

impl Drop for SourceCommand {
    /// Kills and reaps a command still running (cairn stopped reading early). Its stderr
    /// pass-through thread ends when the pipe closes.
    fn drop(&mut self) {
        if matches!(self.state, State::Running) {
            drop(self.stdout.take());
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.forget_pid();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines_each_cut_to_its_bound() {
        let mut tail = LineTail::new(3, 8);
        tail.push(b"one\ntwo\nthr");
        tail.push(b"ee\r\nfour is a long line\nfi");
        tail.push(b"ve");
        assert_eq!(tail.finish(), ["three", "four is …", "five"]);
    }

    #[test]
    fn an_empty_stream_has_no_lines_and_a_blank_line_is_a_line() {
        assert!(LineTail::new(20, 512).finish().is_empty());
        let mut tail = LineTail::new(20, 512);
        tail.push(b"\n");
        assert_eq!(tail.finish(), [""]);
        let mut none = LineTail::new(0, 512);
        none.push(b"a\nb\n");
        assert!(none.finish().is_empty());
    }

    #[test]
    fn failure_messages_name_the_command_the_ending_and_the_last_lines() {
        let failed = |ending, last_stderr: &[&str]| {
            SourceCommandFailed {
                command: "pg_dump shop".into(),
                ending,
                last_stderr: last_stderr.iter().map(|&line| line.to_owned()).collect(),
            }
            .to_string()
        };
        assert_eq!(
            failed(CommandEnding::Status(3), &["boom", "bang"]),
            "command 'pg_dump shop' failed with exit status 3; no snapshot written; its last \
             stderr lines:\n  boom\n  bang"
        );
        assert_eq!(
            failed(CommandEnding::Signal(9), &[]),
            "command 'pg_dump shop' was killed by signal 9 (SIGKILL); no snapshot written (it \
             wrote nothing to stderr)"
        );
        assert!(
            failed(CommandEnding::Unreadable("Broken pipe".into()), &[])
                .contains("its output could not be read (Broken pipe)")
        );
    }

    fn read_all(command: &mut SourceCommand) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        command.read_to_end(&mut out).map(|_| out)
    }

    #[test]
    fn a_command_that_succeeds_reads_to_end_of_file() {
        let mut command = SourceCommand::spawn("printf 'hello'; echo note >&2").unwrap();
        assert_eq!(read_all(&mut command).unwrap(), b"hello");
        assert!(command.failure().is_none());
        assert_eq!(command.read(&mut [0u8; 4]).unwrap(), 0, "end-of-file stays");
    }

    #[test]
    fn a_failing_command_turns_end_of_file_into_an_error() {
        let mut command =
            SourceCommand::spawn("printf partial; echo first >&2; echo boom >&2; exit 3").unwrap();
        let error = read_all(&mut command).unwrap_err();
        assert_eq!(error.to_string(), FAILED_READ);
        let failure = command.failure().unwrap();
        assert_eq!(failure.ending, CommandEnding::Status(3));
        assert_eq!(failure.last_stderr, ["first", "boom"]);
        assert!(command.read(&mut [0u8; 4]).is_err(), "the failure stays");
        let killed = read_all(&mut SourceCommand::spawn("kill -TERM $$").unwrap()).unwrap_err();
        assert_eq!(killed.to_string(), FAILED_READ);
    }

    #[test]
    fn a_background_process_holding_stderr_does_not_hold_up_the_end() {
        let started = std::time::Instant::now();
        let mut command =
            SourceCommand::spawn("sleep 30 >/dev/null & echo 'bye' >&2; printf out").unwrap();
        assert_eq!(read_all(&mut command).unwrap(), b"out");
        assert!(
            started.elapsed() < STDERR_GRACE * 5,
            "{:?}",
            started.elapsed()
        );
        let mut failing =
            SourceCommand::spawn("sleep 30 >/dev/null & echo 'last' >&2; exit 4").unwrap();
        read_all(&mut failing).unwrap_err();
        assert_eq!(failing.failure().unwrap().last_stderr, ["last"]);
    }

    #[test]
    fn dropping_a_running_command_kills_and_reaps_it() {
        let mut command = SourceCommand::spawn("echo started; exec sleep 60").unwrap();
        let mut first = [0u8; 8];
        assert_eq!(command.read(&mut first).unwrap(), 8);
        let pid = Pid::from_raw(i32::try_from(command.child.id()).unwrap());
        assert!(running().contains(&command.child.id()));
        drop(command);
        // Reaped: the pid no longer names a process (not even a zombie) of ours.
        assert_eq!(
            nix::sys::wait::waitpid(pid, None),
            Err(nix::errno::Errno::ECHILD)
        );
        assert!(!running().contains(&u32::try_from(pid.as_raw()).unwrap()));
    }
}
