//! Where this process runs, and what this machine knows about other processes and about the
//! sessions it started: the I/O behind the liveness rule (`policy::liveness`, FORMAT.md section
//! 21.3). Reads `/etc/machine-id`, `/proc/sys/kernel/random/boot_id`, `/proc/self/ns/pid` and
//! `/proc/PID/stat`, and keeps the local record of sessions started here (a small file per
//! repository in the cache directory).
//!
//! Must not decide anything: unknown values stay empty (zero), and the rule treats them as proof
//! of nothing. Must not import the policies (the use cases put the two together).

use std::collections::HashSet;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use crate::format::lifecycle::{ProcessPlace, SESSION_ID_LEN, SessionId};

/// Where the machine id is kept, first found wins (systemd, then D-Bus).
const MACHINE_ID_PATHS: [&str; 2] = ["/etc/machine-id", "/var/lib/dbus/machine-id"];
/// The kernel's random id of this boot.
const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";
/// This process's PID namespace (its inode number identifies the namespace while it lives).
const PID_NAMESPACE_PATH: &str = "/proc/self/ns/pid";
/// This process's time namespace offsets (Linux 5.6 and later; absent before, when no time
/// namespaces exist).
const TIME_OFFSETS_PATH: &str = "/proc/self/timens_offsets";
/// Clock ticks per second of `/proc/PID/stat` times (`USER_HZ`, 100 in the kernel's user ABI).
const USER_HZ: i64 = 100;
/// The name of the local record of sessions started on this machine, per repository.
pub const SESSION_RECORD_NAME: &str = "sessions-started";

/// The place of this very process: machine, boot, PID namespace, pid and start time.
pub fn this_process() -> ProcessPlace {
    let pid = std::process::id();
    ProcessPlace {
        machine_id: machine_id(),
        boot_id: boot_id(),
        pid_namespace: pid_namespace(),
        pid,
        start_ticks: start_ticks(pid).unwrap_or(0),
    }
}

/// This machine's id (32 hex digits in the file), zero when unknown.
pub fn machine_id() -> [u8; 16] {
    MACHINE_ID_PATHS
        .iter()
        .find_map(|path| {
            std::fs::read_to_string(path)
                .ok()
                .and_then(|text| hex_id(&text))
        })
        .unwrap_or_default()
}

/// This boot's id (a UUID in the file), zero when unknown.
pub fn boot_id() -> [u8; 16] {
    std::fs::read_to_string(BOOT_ID_PATH)
        .ok()
        .and_then(|text| hex_id(&text.replace('-', "")))
        .unwrap_or_default()
}

/// The inode of this process's PID namespace, 0 when unknown.
pub fn pid_namespace() -> u64 {
    std::fs::metadata(PID_NAMESPACE_PATH).map_or(0, |metadata| metadata.ino())
}

/// 32 hex digits (surrounding whitespace ignored) as 16 bytes; `None` for anything else or
/// for all zeros (which would read as "unknown").
fn hex_id(text: &str) -> Option<[u8; 16]> {
    let mut id = [0u8; 16];
    hex::decode_to_slice(text.trim(), &mut id).ok()?;
    (id != [0; 16]).then_some(id)
}

/// Whether a process with `pid` exists in this PID namespace: `Some(false)` only when the
/// kernel says there is none (`kill(pid, 0)` fails with `ESRCH`, which, unlike `/proc`, is not
/// hidden by `hidepid`); `None` when it cannot tell.
pub fn pid_exists(pid: u32) -> Option<bool> {
    let Ok(raw) = i32::try_from(pid) else {
        return None;
    };
    if raw <= 0 {
        return None;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => Some(true),
        Err(nix::errno::Errno::ESRCH) => Some(false),
        Err(_) => None,
    }
}

/// The start time of process `pid` in clock ticks after boot (`/proc/PID/stat` field 22), or
/// `None` when it cannot be read. The kernel shows that time shifted by the *reader's* time
/// namespace boottime offset, so the offset is taken back out: two processes in different time
/// namespaces then read the same value for the same process (else one would see another start
/// time, "pid reuse", for a process that still runs).
pub fn start_ticks(pid: u32) -> Option<u64> {
    let offset = match std::fs::read_to_string(TIME_OFFSETS_PATH) {
        Ok(text) => boottime_offset_ticks(&text)?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
        Err(_) => return None,
    };
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let shown = i64::try_from(start_ticks_from_stat(&text)?).ok()?;
    u64::try_from(shown.checked_sub(offset)?).ok()
}

/// The boottime offset of a `timens_offsets` text (`boottime <seconds> <nanoseconds>`) in
/// clock ticks; `None` when the line is missing or malformed.
pub fn boottime_offset_ticks(text: &str) -> Option<i64> {
    let line = text
        .lines()
        .find(|line| line.split_whitespace().next() == Some("boottime"))?;
    let mut fields = line.split_whitespace().skip(1);
    let seconds: i64 = fields.next()?.parse().ok()?;
    let nanoseconds: i64 = fields.next()?.parse().ok()?;
    seconds
        .checked_mul(USER_HZ)?
        .checked_add(nanoseconds / (1_000_000_000 / USER_HZ))
}

/// Field 22 of a `/proc/PID/stat` line. Field 2 (`comm`, in parentheses) may itself contain
/// spaces and parentheses, so the fields are counted after the *last* `)`: the first one after
/// it is field 3.
pub fn start_ticks_from_stat(text: &str) -> Option<u64> {
    let (_, after_comm) = text.rsplit_once(')')?;
    after_comm.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// The local record of the sessions this machine started in one repository: one line per
/// session, `<machine id hex> <session id hex>`. It is what proves, after a reboot, that a
/// session of an earlier boot was this machine's own (cloned images share a machine id, not
/// this file). Losing it, or a line of it, is safe: such a session is then never proven gone
/// and waits for an operator. Absent (`path` is `None`) when the repository has no cache
/// directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    path: Option<PathBuf>,
}

impl SessionRecord {
    /// The record in `directory` (the repository's cache directory), or none.
    pub fn in_directory(directory: Option<&Path>) -> Self {
        Self {
            path: directory.map(|directory| directory.join(SESSION_RECORD_NAME)),
        }
    }

    /// Where it is kept, if anywhere.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Adds a session started by this process, before its marker is written (so a marker
    /// never exists without its line). One `write` of one line in append mode: concurrent
    /// backups do not tear each other's lines.
    ///
    /// # Errors
    /// I/O failures creating the directory or appending.
    pub fn add(&self, machine_id: &[u8; 16], session: &SessionId) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let line = format!("{} {}\n", hex::encode(machine_id), session.to_hex());
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?
            .write_all(line.as_bytes())
    }

    /// The sessions the record lists for `machine_id` (empty when the file is absent or
    /// unreadable; malformed lines are skipped).
    pub fn sessions_of(&self, machine_id: &[u8; 16]) -> HashSet<SessionId> {
        let Some(text) = self
            .path
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok())
        else {
            return HashSet::new();
        };
        parse_record(&text, machine_id)
    }

    /// Keeps only the lines whose session `keep` accepts (rewritten through a temporary file
    /// and a rename, only when a line goes). A line appended meanwhile by a concurrent backup
    /// may be lost, which is safe (see the type's documentation).
    ///
    /// # Errors
    /// I/O failures writing the new file.
    pub fn retain(&self, keep: impl Fn(&SessionId) -> bool) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let Ok(text) = std::fs::read_to_string(path) else {
            return Ok(());
        };
        let kept: Vec<&str> = text
            .lines()
            .filter(|line| parse_line(line).is_some_and(|(_, session)| keep(&session)))
            .collect();
        if kept.len() == text.lines().count() {
            return Ok(());
        }
        let temporary = path.with_extension(format!("tmp-{}", std::process::id()));
        let mut contents = kept.join("\n");
        if !contents.is_empty() {
            contents.push('\n');
        }
        std::fs::write(&temporary, contents)?;
        std::fs::rename(&temporary, path)
    }
}

/// One record line: `(machine id, session)`.
fn parse_line(line: &str) -> Option<([u8; 16], SessionId)> {
    let (machine, session) = line.trim().split_once(' ')?;
    let mut machine_id = [0u8; 16];
    hex::decode_to_slice(machine, &mut machine_id).ok()?;
    if session.len() != SESSION_ID_LEN * 2 {
        return None;
    }
    Some((machine_id, SessionId::from_hex(session)?))
}

/// The sessions of `machine_id` in a record's text.
fn parse_record(text: &str, machine_id: &[u8; 16]) -> HashSet<SessionId> {
    text.lines()
        .filter_map(parse_line)
        .filter(|(machine, _)| machine == machine_id)
        .map(|(_, session)| session)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_ticks_are_field_22_even_with_parentheses_and_spaces_in_the_name() {
        let tail = "S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 20 21";
        assert_eq!(
            start_ticks_from_stat(&format!("4242 (cairn) {tail}")),
            Some(987_654)
        );
        assert_eq!(
            start_ticks_from_stat(&format!("4242 (a) b (c) ) d) {tail}")),
            Some(987_654)
        );
        assert_eq!(
            start_ticks_from_stat(&format!(
                "4242 (x 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20) {tail}"
            )),
            Some(987_654)
        );
        assert_eq!(start_ticks_from_stat("4242 (cairn) S 1 2"), None);
        assert_eq!(start_ticks_from_stat("no parenthesis at all"), None);
        assert_eq!(start_ticks_from_stat(""), None);
    }

    #[test]
    fn the_boottime_offset_is_read_in_ticks() {
        let root = "monotonic           0         0\nboottime            0         0\n";
        assert_eq!(boottime_offset_ticks(root), Some(0));
        let shifted = "monotonic 5 0\nboottime 1000 250000000\n";
        assert_eq!(boottime_offset_ticks(shifted), Some(100_025));
        assert_eq!(
            boottime_offset_ticks("boottime -5 -500000000\n"),
            Some(-550)
        );
        assert_eq!(boottime_offset_ticks("monotonic 0 0\n"), None);
        assert_eq!(boottime_offset_ticks("boottime x 0\n"), None);
        assert_eq!(
            boottime_offset_ticks("boottime 9223372036854775807 0\n"),
            None
        );
    }

    #[test]
    fn this_process_is_found_with_its_own_start_time() {
        let place = this_process();
        assert_eq!(place.pid, std::process::id());
        assert_eq!(pid_exists(place.pid), Some(true));
        if place.start_ticks != 0 {
            assert_eq!(start_ticks(place.pid), Some(place.start_ticks));
        }
        assert_eq!(pid_exists(0), None);
        assert_eq!(pid_exists(u32::MAX), None);
    }

    #[test]
    fn ids_must_be_32_hex_digits_and_not_zero() {
        assert_eq!(
            hex_id("0f0e0d0c0b0a09080706050403020100\n"),
            Some([15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0])
        );
        assert_eq!(hex_id("00000000000000000000000000000000"), None);
        assert_eq!(hex_id("uninitialized\n"), None);
        assert_eq!(hex_id(""), None);
    }

    #[test]
    fn the_record_lists_this_machines_sessions_and_tolerates_damage() {
        let directory = tempfile::tempdir().unwrap();
        let record = SessionRecord::in_directory(Some(&directory.path().join("repo")));
        let machine = [1u8; 16];
        let other_machine = [2u8; 16];
        assert!(record.sessions_of(&machine).is_empty());
        let (first, second, elsewhere) =
            (SessionId([7; 16]), SessionId([8; 16]), SessionId([9; 16]));
        record.add(&machine, &first).unwrap();
        record.add(&machine, &second).unwrap();
        record.add(&other_machine, &elsewhere).unwrap();
        let path = record.path().unwrap().to_path_buf();
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("garbage line\n0101 short\n");
        std::fs::write(&path, text).unwrap();
        assert_eq!(record.sessions_of(&machine), HashSet::from([first, second]));
        assert_eq!(
            record.sessions_of(&other_machine),
            HashSet::from([elsewhere])
        );
        record.retain(|session| *session != first).unwrap();
        assert_eq!(record.sessions_of(&machine), HashSet::from([second]));
        assert_eq!(
            record.sessions_of(&other_machine),
            HashSet::from([elsewhere])
        );

        let nowhere = SessionRecord::in_directory(None);
        nowhere.add(&machine, &first).unwrap();
        assert!(nowhere.sessions_of(&machine).is_empty());
        nowhere.retain(|_| false).unwrap();
    }
}
