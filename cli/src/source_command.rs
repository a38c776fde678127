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
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Lines of the command's standard error kept for the error message.
const TAIL_LINES: usize = 20;
/// Bytes kept of each of those lines.
const TAIL_LINE_BYTES: usize = 512;
/// How long, after the command exited, its standard error may stay open (held by something it
/// left running in the background) before cairn reports the lines it has.
const STDERR_GRACE: Duration = Duration::from_secs(2);
/// How long, after the command exited, its standard output may stay open and silent (held by
/// something it left running in the background) before cairn ends its process group.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);
/// How long the processes of the command's group get to exit after SIGTERM before SIGKILL.
const GROUP_GRACE: Duration = Duration::from_secs(2);
/// How often, while its output is silent, cairn looks whether the command has exited.
const EXIT_POLL: Duration = Duration::from_millis(100);

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
    /// It exited, but processes it left running kept writing to its output, and were ended
    /// when the output then stayed silent: the output may be cut short.
    BackgroundOutput,
    /// It stopped on this signal (SIGTTIN or SIGTTOU) trying to use the terminal, which it
    /// cannot (it runs in its own process group), and was ended.
    NeedsTerminal(i32),
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
            CommandEnding::NeedsTerminal(number) => write!(
                formatter,
                "stopped trying to use the terminal (signal {number}), which commands cannot: \
                 give it what it asks for another way (ssh: a key; a password file)"
            )?,
            CommandEnding::BackgroundOutput => formatter.write_str(
                "exited, but processes it left in the background kept writing to its output \
                 and were killed when it went quiet, so the output may be cut short (end the \
                 command with `wait`)",
            )?,
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

/// Process groups of the commands running now (each group's id is its leader's pid), ended and
/// reaped by the signal thread.
static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn running() -> std::sync::MutexGuard<'static, Vec<u32>> {
    RUNNING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts, once per process, the thread that on SIGINT, SIGTERM or SIGHUP ends the process
/// groups of the running source commands, reaps their leaders and then lets the signal end
/// cairn as its default action would.
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
                // The lock stays held until cairn dies: no command starts or is reaped
                // elsewhere meanwhile.
                let mut registry = running();
                for pid in registry.drain(..) {
                    let leader = leader_pid(pid);
                    end_group(leader);
                    let _ = nix::sys::wait::waitpid(leader, None);
                }
                let _ = signal_hook::low_level::emulate_default_handler(signal);
            }
        });
    });
}

fn leader_pid(pid: u32) -> Pid {
    Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX))
}

/// Whether the process `leader` has exited, without reaping it (its pid, and so the id of its
/// process group, stays reserved until it is reaped).
fn has_exited(leader: Pid) -> bool {
    use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG;
    match waitid(Id::Pid(leader), flags) {
        Ok(WaitStatus::StillAlive) => false,
        // Err: already reaped, or not our child: it runs no more as far as we can tell.
        Ok(_) | Err(_) => true,
    }
}

/// The signal that stopped the process `leader` when it tried to use the terminal (SIGTTIN or
/// SIGTTOU: it runs outside the terminal's foreground process group), without consuming the
/// stop; `None` while it runs, or when something else (SIGSTOP) stopped it.
fn stopped_for_terminal(leader: Pid) -> Option<i32> {
    use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
    let flags = WaitPidFlag::WSTOPPED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG;
    match waitid(Id::Pid(leader), flags) {
        Ok(WaitStatus::Stopped(_, signal @ (Signal::SIGTTIN | Signal::SIGTTOU))) => {
            Some(signal as i32)
        }
        _ => None,
    }
}

/// Waits until the process `leader` has exited, without reaping it.
fn wait_exited(leader: Pid) {
    use nix::sys::wait::{Id, WaitPidFlag, waitid};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
    while let Err(nix::errno::Errno::EINTR) = waitid(Id::Pid(leader), flags) {}
}

/// Whether a process of the group `group` runs (zombies do not count), read from `/proc`.
fn group_runs(group: Pid) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        if !name
            .to_string_lossy()
            .bytes()
            .all(|byte| byte.is_ascii_digit())
        {
            return false;
        }
        std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|stat| proc_stat_group(&stat))
            .is_some_and(|(state, process_group)| state != 'Z' && process_group == group.as_raw())
    })
}

/// The state and process group of a `/proc/<pid>/stat` line (the command name, in
/// parentheses, may hold spaces and parentheses: the fields are counted after the last `)`).
fn proc_stat_group(stat: &str) -> Option<(char, i32)> {
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _parent = fields.next()?;
    let process_group = fields.next()?.parse().ok()?;
    Some((state, process_group))
}

/// Ends every process of the group led by `leader`, which must not be reaped yet (so that the
/// group id cannot have been reused): SIGTERM, up to [`GROUP_GRACE`] for the group to exit,
/// then SIGKILL to whatever is left.
fn end_group(leader: Pid) {
    let group = Pid::from_raw(-leader.as_raw());
    if nix::sys::signal::kill(group, Signal::SIGTERM).is_err() {
        return;
    }
    // A stopped process handles SIGTERM only once continued.
    let _ = nix::sys::signal::kill(group, Signal::SIGCONT);
    let deadline = Instant::now() + GROUP_GRACE;
    while Instant::now() < deadline && group_runs(leader) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = nix::sys::signal::kill(group, Signal::SIGKILL);
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

/// What is known of the output after the command's own process (`sh`) exited.
struct AfterExit {
    /// The output was found empty after the exit was seen: whatever arrives now was written
    /// by a process the command left running.
    drained: bool,
    /// Output arrived after `drained`.
    background_wrote: bool,
    /// When the output is given up on if it neither ends nor sends anything.
    deadline: Instant,
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
    after_exit: Option<AfterExit>,
    /// Processes it left running held its output open after it exited; they were ended.
    left_holders: bool,
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

/// What waiting for the command's output found.
enum Readiness {
    /// Bytes (or end-of-file) can be read now.
    Ready,
    /// Nothing came within the timeout.
    Quiet,
}

/// Waits up to `timeout` for `stdout` to have bytes or be at end-of-file.
fn wait_readable(stdout: &ChildStdout, timeout: Duration) -> io::Result<Readiness> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let mut descriptors = [PollFd::new(stdout.as_fd(), PollFlags::POLLIN)];
    match poll(&mut descriptors, PollTimeout::from(millis)) {
        // EINTR: a signal arrived; the caller looks again.
        Ok(0) | Err(nix::errno::Errno::EINTR) => Ok(Readiness::Quiet),
        Ok(_) => Ok(Readiness::Ready),
        Err(error) => Err(io::Error::from(error)),
    }
}

impl SourceCommand {
    /// Starts `sh -c command` in a process group of its own, with standard input from
    /// `/dev/null`.
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
            // Its own group: it and everything it starts can be ended together, and a Ctrl-C
            // at the terminal reaches cairn alone, which ends the group itself.
            .process_group(0)
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
            after_exit: None,
            left_holders: false,
        })
    }

    /// Why the command failed, once a read returned the failure (`None` while it runs, after
    /// it ended well, or when the backup stopped reading for another reason).
    pub fn failure(&self) -> Option<&SourceCommandFailed> {
        self.failure.as_ref()
    }

    /// Whether processes the command left running held its output open after it exited, and
    /// were ended, its output taken as complete (they had written nothing after its exit).
    pub fn left_holders(&self) -> bool {
        self.left_holders
    }

    fn leader(&self) -> Pid {
        leader_pid(self.child.id())
    }

    /// Ends the command's process group, reaps it, collects its stderr tail and records how it
    /// ended. Without `cause` the command has ended its output: it is waited for, and only what
    /// it left running is ended. With one, cairn gives up on it: it is ended too, and `cause`
    /// is the failure reported.
    fn finish(&mut self, cause: Option<CommandEnding>) {
        drop(self.stdout.take());
        let leader = self.leader();
        if cause.is_none() {
            // End-of-file, or the output given up on after the command's own exit: the
            // command's exit status decides, so it is not killed before it exits.
            wait_exited(leader);
        }
        end_group(leader);
        let status = {
            // Reaped under the lock, so that the signal thread never signals a group whose
            // id may have been reused.
            let mut registry = running();
            let status = self.child.wait();
            let pid = self.child.id();
            registry.retain(|&running| running != pid);
            status
        };
        if let Some(done) = self.stderr_done.take() {
            let _ = done.recv_timeout(STDERR_GRACE);
        }
        let last_stderr = self
            .stderr_tail
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .finish();
        // Output that ended on its own is complete, whoever wrote it; output cut by ending
        // the processes that were still writing it may not be.
        let cut_short = self.left_holders
            && self
                .after_exit
                .as_ref()
                .is_some_and(|after| after.background_wrote);
        let ending = match (cause, status) {
            (Some(cause), _) => Some(cause),
            (None, Err(error)) => Some(CommandEnding::Unreadable(format!("wait failed: {error}"))),
            (None, Ok(status)) => {
                ending(status).or_else(|| cut_short.then_some(CommandEnding::BackgroundOutput))
            }
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

    /// The command exited [`OUTPUT_GRACE`] ago and something it left running still holds its
    /// output open: ends the group and takes what it had written.
    fn give_up_on_holders(&mut self) {
        self.left_holders = true;
        end_group(self.leader());
        // Whatever arrived between the last read and the end of the group was written after
        // the command's exit, by a process it left running.
        if let Some(stdout) = self.stdout.as_mut() {
            let mut rest = [0u8; 8192];
            while let Ok(Readiness::Ready) = wait_readable(stdout, OUTPUT_GRACE) {
                match stdout.read(&mut rest) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if let Some(after) = self.after_exit.as_mut() {
                            after.background_wrote = true;
                        }
                    }
                }
            }
        }
        self.finish(None);
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
    /// Reads the command's output. While the command runs, it waits for output as long as it
    /// takes. Once the command's own process has exited, output still arriving (from processes
    /// it left running) is read as long as it keeps coming; when the output neither ends nor
    /// sends anything for [`OUTPUT_GRACE`], the processes holding it are ended (see the README
    /// on `--command` for what that means for the snapshot).
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
            let timeout = match &self.after_exit {
                None => EXIT_POLL,
                Some(after) if !after.drained => Duration::ZERO,
                Some(after) => after.deadline.saturating_duration_since(Instant::now()),
            };
            match wait_readable(stdout, timeout) {
                Err(error) => self.finish(Some(CommandEnding::Unreadable(error.to_string()))),
                Ok(Readiness::Ready) => match stdout.read(buffer) {
                    Ok(0) if !buffer.is_empty() => self.finish(None),
                    Ok(read) => {
                        if let Some(after) = self.after_exit.as_mut()
                            && after.drained
                            && read > 0
                        {
                            after.background_wrote = true;
                            after.deadline = Instant::now() + OUTPUT_GRACE;
                        }
                        return Ok(read);
                    }
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    Err(error) => {
                        self.finish(Some(CommandEnding::Unreadable(error.to_string())));
                    }
                },
                Ok(Readiness::Quiet) => match self.after_exit.as_mut() {
                    None => {
                        if let Some(signal) = stopped_for_terminal(self.leader()) {
                            self.finish(Some(CommandEnding::NeedsTerminal(signal)));
                        } else if has_exited(self.leader()) {
                            self.after_exit = Some(AfterExit {
                                drained: false,
                                background_wrote: false,
                                deadline: Instant::now(),
                            });
                        }
                    }
                    Some(after) if !after.drained => {
                        after.drained = true;
                        after.deadline = Instant::now() + OUTPUT_GRACE;
                    }
                    Some(after) => {
                        if Instant::now() >= after.deadline {
                            self.give_up_on_holders();
                        }
                    }
                },
            }
        }
    }
}

impl Drop for SourceCommand {
    /// Ends the process group of a command still running (cairn stopped reading early) and
    /// reaps it. Its stderr pass-through thread ends when the pipe closes.
    fn drop(&mut self) {
        if matches!(self.state, State::Running) {
            drop(self.stdout.take());
            end_group(self.leader());
            let mut registry = running();
            let _ = self.child.wait();
            let pid = self.child.id();
            registry.retain(|&running| running != pid);
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

    /// Whether the process `pid` runs (a zombie or a reaped process does not).
    fn runs(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| proc_stat_group(&stat))
            .is_some_and(|(state, _)| state != 'Z')
    }

    /// Waits (a generous bound: SIGKILL takes effect asynchronously) for `pid` to stop running.
    fn assert_ends(pid: i32) {
        let deadline = Instant::now() + Duration::from_mins(1);
        while runs(pid) {
            assert!(
                Instant::now() < deadline,
                "process {pid} survived its command"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Reads the first line of the command's output: the pid it printed.
    fn first_line_pid(command: &mut SourceCommand) -> i32 {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while command.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        String::from_utf8(line).unwrap().trim().parse().unwrap()
    }

    #[test]
    fn proc_stat_lines_give_the_state_and_the_group_whatever_the_command_name() {
        assert_eq!(
            proc_stat_group("42 (sleep) S 1 40 40 0 -1 4194304"),
            Some(('S', 40))
        );
        assert_eq!(proc_stat_group("42 (a) b) (c) Z 1 7 7 0"), Some(('Z', 7)));
        assert_eq!(proc_stat_group("42 (sleep"), None);
        assert_eq!(proc_stat_group("42 (x) R 1"), None);
    }

    #[test]
    fn a_background_process_holding_stderr_does_not_hold_up_the_end() {
        let mut command =
            SourceCommand::spawn("sleep 30 >/dev/null & echo $! >&2; printf out").unwrap();
        assert_eq!(read_all(&mut command).unwrap(), b"out");
        assert!(!command.left_holders(), "it did not hold the output");
        let background: i32 = command.stderr_tail.lock().unwrap().clone().finish()[0]
            .parse()
            .unwrap();
        assert_ends(background);
        let mut failing =
            SourceCommand::spawn("sleep 30 >/dev/null & echo 'last' >&2; exit 4").unwrap();
        read_all(&mut failing).unwrap_err();
        assert_eq!(failing.failure().unwrap().last_stderr, ["last"]);
    }

    #[test]
    fn a_silent_background_process_holding_the_output_is_ended_and_the_output_kept() {
        let mut command = SourceCommand::spawn("sleep 300 & echo $!; printf 'dump'").unwrap();
        let background = first_line_pid(&mut command);
        assert_eq!(read_all(&mut command).unwrap(), b"dump");
        assert!(command.failure().is_none());
        assert!(command.left_holders());
        assert_ends(background);
        // A failing command that leaves one is still a failure.
        let mut failing = SourceCommand::spawn("sleep 300 & printf 'part'; exit 5").unwrap();
        read_all(&mut failing).unwrap_err();
        assert_eq!(failing.failure().unwrap().ending, CommandEnding::Status(5));
    }

    #[test]
    fn a_background_process_writing_after_the_exit_makes_the_output_suspect() {
        // The command exits at once; what it left writes a second later, then goes quiet
        // while holding the output: its output may be cut short, so it is a failure.
        let mut command =
            SourceCommand::spawn("(sleep 1; printf more; exec sleep 300) & echo $!; printf a")
                .unwrap();
        let background = first_line_pid(&mut command);
        let error = read_all(&mut command).unwrap_err();
        assert_eq!(error.to_string(), FAILED_READ);
        assert_eq!(
            command.failure().unwrap().ending,
            CommandEnding::BackgroundOutput
        );
        assert_ends(background);
    }

    #[test]
    fn output_that_keeps_coming_from_the_background_is_read_to_its_end() {
        let mut command = SourceCommand::spawn(
            "printf start; (for i in 1 2 3 4 5; do sleep 0.2; printf $i; done) &",
        )
        .unwrap();
        assert_eq!(read_all(&mut command).unwrap(), b"start12345");
        assert!(command.failure().is_none());
        assert!(!command.left_holders());
    }

    #[test]
    fn a_command_stopped_on_the_terminal_fails_instead_of_hanging() {
        // What a prompt on the terminal does to a command outside its foreground group.
        let mut command = SourceCommand::spawn("printf x; kill -TTIN $$; printf never").unwrap();
        let error = read_all(&mut command).unwrap_err();
        assert_eq!(error.to_string(), FAILED_READ);
        assert_eq!(
            command.failure().unwrap().ending,
            CommandEnding::NeedsTerminal(Signal::SIGTTIN as i32)
        );
        // SIGSTOP is someone's deliberate pause: it is waited out.
        let mut paused = SourceCommand::spawn("printf a; kill -STOP $$; printf b").unwrap();
        let leader = paused.leader();
        let resumer = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_mins(1);
            let stopped = || {
                std::fs::read_to_string(format!("/proc/{leader}/stat"))
                    .ok()
                    .and_then(|stat| proc_stat_group(&stat))
                    .is_some_and(|(state, _)| state == 'T')
            };
            while !stopped() {
                assert!(Instant::now() < deadline, "it never stopped");
                std::thread::sleep(Duration::from_millis(10));
            }
            // Several of the reader's looks at a stopped command.
            std::thread::sleep(EXIT_POLL * 5);
            nix::sys::signal::kill(leader, Signal::SIGCONT).unwrap();
        });
        assert_eq!(read_all(&mut paused).unwrap(), b"ab");
        resumer.join().unwrap();
    }

    #[test]
    fn dropping_a_running_command_ends_its_whole_group_and_reaps_it() {
        let mut command =
            SourceCommand::spawn("sleep 60 & echo $!; trap '' TERM; sleep 60; wait").unwrap();
        let background = first_line_pid(&mut command);
        let pid = Pid::from_raw(i32::try_from(command.child.id()).unwrap());
        assert!(running().contains(&command.child.id()));
        drop(command);
        // Reaped: the pid no longer names a process (not even a zombie) of ours.
        assert_eq!(
            nix::sys::wait::waitpid(pid, None),
            Err(nix::errno::Errno::ECHILD)
        );
        assert!(!running().contains(&u32::try_from(pid.as_raw()).unwrap()));
        assert_ends(background);
    }
}
