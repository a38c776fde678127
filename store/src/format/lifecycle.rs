//! The objects of the garbage-collection protocol (FORMAT.md section 21): backup session markers,
//! prune records (the packs a prune condemned), the sessions in flight when a record was written,
//! the prune lease, and what the records add up to ([`PruneState`]).
//!
//! Every one is an envelope (section 6) sealed with the data key, so the store learns nothing but
//! their names and sizes. Pure: no I/O.

use std::collections::{BTreeMap, HashSet};

use crate::crypto::id::Id;
use crate::crypto::seal::{NONCE_LEN, SealKey};
use crate::format::codec::{DecodeError, ObjectHeader, Reader, Writer};
use crate::format::envelope::{self, ObjectError};

/// Magic of a session start marker (`sessions/<session>`).
pub const SESSION_MAGIC: [u8; 4] = *b"CRNM";
/// Magic of a session end marker (`sessions/<session>.done`).
pub const SESSION_DONE_MAGIC: [u8; 4] = *b"CRND";
/// Magic of a prune record (`prune/<generation>`).
pub const PRUNE_RECORD_MAGIC: [u8; 4] = *b"CRNR";
/// Magic of an in-flight list (`prune/<generation>.inflight`).
pub const INFLIGHT_MAGIC: [u8; 4] = *b"CRNF";
/// Magic of the prune lease (`locks/prune`).
pub const LEASE_MAGIC: [u8; 4] = *b"CRNL";
/// Version of session end markers, prune records and in-flight lists (written and read).
pub const LIFECYCLE_VERSION: u16 = 1;
/// Version of session start markers and the prune lease this build writes; it reads 1 and 2.
/// Version 2 adds the [`ProcessPlace`] (FORMAT.md section 21.1).
pub const MARKER_VERSION: u16 = 2;
/// Length of a session id.
pub const SESSION_ID_LEN: usize = 16;
/// Largest body of a prune record or in-flight list (64 MiB: two million pack ids).
const MAX_LIST_BODY: usize = 64 * 1024 * 1024;
/// Largest body of a marker or lease.
const MAX_SMALL_BODY: usize = 64 * 1024;

/// A backup session's random id: names its markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub [u8; SESSION_ID_LEN]);

impl SessionId {
    /// 32 lowercase hex digits, as in object names.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 32 hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; SESSION_ID_LEN];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(Self(bytes))
    }
}

/// Where a process ran, as recorded in a session marker or a prune lease: enough to prove, later
/// and on the same machine, that it is gone (the rule is `policy::liveness`). An unknown field
/// is empty (all zero bytes, or 0), and an unknown field proves nothing. Version 1 markers and
/// leases record only the pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcessPlace {
    /// `/etc/machine-id` (or `/var/lib/dbus/machine-id`) as 16 bytes; zero when unknown.
    pub machine_id: [u8; 16],
    /// `/proc/sys/kernel/random/boot_id` as 16 bytes; zero when unknown.
    pub boot_id: [u8; 16],
    /// The inode number of `/proc/self/ns/pid`; 0 when unknown.
    pub pid_namespace: u64,
    /// The process id inside that namespace.
    pub pid: u32,
    /// The process's start time in clock ticks after boot (`/proc/PID/stat` field 22); 0 when
    /// unknown.
    pub start_ticks: u64,
}

impl ProcessPlace {
    /// A place that records only a pid, as a version 1 marker or lease does.
    pub fn pid_only(pid: u32) -> Self {
        Self {
            pid,
            ..Self::default()
        }
    }

    /// Whether it records where the process ran (a boot id): version 1 objects never do, and
    /// without it nothing can prove the process gone.
    pub fn is_recorded(&self) -> bool {
        self.boot_id != [0; 16]
    }

    /// The first 8 hex digits of the machine id, as shown to people (`?` when unknown).
    pub fn short_machine(&self) -> String {
        if self.machine_id == [0; 16] {
            "?".into()
        } else {
            hex::encode(&self.machine_id[..4])
        }
    }

    fn write_v2(&self, body: &mut Writer) {
        body.raw(&self.machine_id)
            .raw(&self.boot_id)
            .u64(self.pid_namespace)
            .u64(self.start_ticks);
    }

    fn read_v2(reader: &mut Reader<'_>, pid: u32) -> Result<Self, DecodeError> {
        let machine_id = bytes16(reader, "machine id")?;
        let boot_id = bytes16(reader, "boot id")?;
        let pid_namespace = reader.u64("pid namespace")?;
        let start_ticks = reader.u64("start ticks")?;
        Ok(Self {
            machine_id,
            boot_id,
            pid_namespace,
            pid,
            start_ticks,
        })
    }
}

/// Who started a backup session, where, and when: written when a backup starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionMarker {
    /// The session (also in the object name; bound here by the associated data).
    pub session: SessionId,
    /// The snapshot host label (`--host`): shown to people, never used for decisions.
    pub host: String,
    /// Where its process runs, so a client on the same machine can prove a crashed session's
    /// process gone (only the pid in a version 1 marker).
    pub place: ProcessPlace,
    /// When it started (the client's clock; shown to people, never used for decisions).
    pub started_unix: i64,
}

/// How a session ended: written when a backup ends, committed or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEnd {
    /// The session.
    pub session: SessionId,
    /// The snapshot it committed, if any.
    pub snapshot: Option<Id>,
    /// Who wrote the end marker: 0 the session itself, 1 a client that proved the session's
    /// process gone (same machine, boot and PID namespace, or an earlier boot of this machine),
    /// 2 an operator's explicit expiry.
    pub ended_by: u8,
}

/// What one prune run decided: the packs it condemned (to be deleted once no session that could
/// still rely on them is running) and earlier-condemned packs it took back because a snapshot
/// needs them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PruneRecord {
    /// The run's generation: 1, 2, 3… (also the object name).
    pub generation: u64,
    /// Packs condemned by this run.
    pub condemned: Vec<Id>,
    /// Packs condemned earlier that this run took back.
    pub resurrected: Vec<Id>,
}

/// The sessions that were running (or ran) while a prune record was being written: its packs are
/// deleted only after every one of them has ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InflightList {
    /// The generation of the record this list belongs to.
    pub generation: u64,
    /// The sessions.
    pub sessions: Vec<SessionId>,
}

/// The prune lease: one prune at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneLease {
    /// A random token, so the holder recognises its own lease.
    pub token: [u8; 16],
    /// Host name of the prune (for people).
    pub host: String,
    /// Where its process runs (a prune that proves it gone takes the lease over at once; only
    /// the pid in a version 1 lease).
    pub place: ProcessPlace,
    /// When it started (client clock, for people).
    pub started_unix: i64,
    /// Seconds after the lease object's last write (by the store's clock) at which another prune
    /// may take it over.
    pub ttl_seconds: u64,
}

/// The version this build writes (and the newest it reads) for objects of `magic`.
fn version_of(magic: [u8; 4]) -> u16 {
    if magic == SESSION_MAGIC || magic == LEASE_MAGIC {
        MARKER_VERSION
    } else {
        LIFECYCLE_VERSION
    }
}

fn header(magic: [u8; 4]) -> ObjectHeader {
    ObjectHeader {
        magic,
        version: version_of(magic),
    }
}

/// Seals a lifecycle object's body (never compressed: it is small or holds random ids).
fn seal(
    key: &SealKey,
    magic: [u8; 4],
    public: &[u8],
    body: &Writer,
    nonce: [u8; NONCE_LEN],
) -> Vec<u8> {
    envelope::seal_object(key, header(magic), public, body.as_slice(), None, nonce)
}

/// An opened lifecycle object: its version, public fields and body.
struct Opened {
    version: u16,
    public: Vec<u8>,
    body: Vec<u8>,
}

fn open(
    key: &SealKey,
    bytes: &[u8],
    magic: [u8; 4],
    what: &'static str,
    public_len: usize,
    max_body: usize,
) -> Result<Opened, ObjectError> {
    let opened = envelope::open_object(
        key,
        bytes,
        magic,
        version_of(magic),
        what,
        public_len,
        max_body,
    )?;
    Ok(Opened {
        version: opened.header.version,
        public: opened.public,
        body: opened.body,
    })
}

fn session_from(public: &[u8]) -> SessionId {
    let mut id = [0u8; SESSION_ID_LEN];
    id.copy_from_slice(&public[..SESSION_ID_LEN]);
    SessionId(id)
}

fn generation_from(public: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&public[..8]);
    u64::from_le_bytes(bytes)
}

fn bytes16(reader: &mut Reader<'_>, field: &'static str) -> Result<[u8; 16], DecodeError> {
    let mut out = [0u8; 16];
    out.copy_from_slice(reader.take(16, field)?);
    Ok(out)
}

/// The place after the pid and start time: absent in version 1, the v2 fields in version 2.
fn read_place(
    reader: &mut Reader<'_>,
    version: u16,
    pid: u32,
) -> Result<ProcessPlace, DecodeError> {
    if version >= 2 {
        ProcessPlace::read_v2(reader, pid)
    } else {
        Ok(ProcessPlace::pid_only(pid))
    }
}

fn read_ids(reader: &mut Reader<'_>, field: &'static str) -> Result<Vec<Id>, DecodeError> {
    let count = reader.count(Id::LEN, field)?;
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        ids.push(reader.id(field)?);
    }
    Ok(ids)
}

impl SessionMarker {
    /// Seals the marker.
    pub fn encode(&self, key: &SealKey, nonce: [u8; NONCE_LEN]) -> Vec<u8> {
        let mut body = self.v1_body();
        self.place.write_v2(&mut body);
        seal(key, SESSION_MAGIC, &self.session.0, &body, nonce)
    }

    /// The fields of version 1 (host, pid, start time), which version 2 extends.
    fn v1_body(&self) -> Writer {
        let mut body = Writer::new();
        body.bytes(self.host.as_bytes())
            .u32(self.place.pid)
            .i64(self.started_unix);
        body
    }

    /// Opens a stored marker, of version 1 (the place holds only the pid) or 2.
    ///
    /// # Errors
    /// [`ObjectError`] when it does not verify or decode.
    pub fn decode(key: &SealKey, bytes: &[u8]) -> Result<Self, ObjectError> {
        let opened = open(
            key,
            bytes,
            SESSION_MAGIC,
            "session marker",
            SESSION_ID_LEN,
            MAX_SMALL_BODY,
        )?;
        let mut reader = Reader::new(&opened.body);
        let host = reader.string("host")?;
        let pid = reader.u32("pid")?;
        let started_unix = reader.i64("started")?;
        let place = read_place(&mut reader, opened.version, pid)?;
        reader.finish()?;
        Ok(Self {
            session: session_from(&opened.public),
            host,
            place,
            started_unix,
        })
    }

    /// Seals the marker as version 1 wrote it (host, pid, start time), for tests of old
    /// repositories.
    #[doc(hidden)]
    pub fn encode_v1(&self, key: &SealKey, nonce: [u8; NONCE_LEN]) -> Vec<u8> {
        let header = ObjectHeader {
            magic: SESSION_MAGIC,
            version: 1,
        };
        let body = self.v1_body();
        envelope::seal_object(key, header, &self.session.0, body.as_slice(), None, nonce)
    }
}

impl SessionEnd {
    /// Seals the end marker.
    pub fn encode(&self, key: &SealKey, nonce: [u8; NONCE_LEN]) -> Vec<u8> {
        let mut body = Writer::new();
        match &self.snapshot {
            Some(id) => body.u8(1).id(id),
            None => body.u8(0),
        };
        body.u8(self.ended_by);
        seal(key, SESSION_DONE_MAGIC, &self.session.0, &body, nonce)
    }

    /// Opens a stored end marker.
    ///
    /// # Errors
    /// [`ObjectError`] when it does not verify or decode.
    pub fn decode(key: &SealKey, bytes: &[u8]) -> Result<Self, ObjectError> {
        let Opened { public, body, .. } = open(
            key,
            bytes,
            SESSION_DONE_MAGIC,
            "session end marker",
            SESSION_ID_LEN,
            MAX_SMALL_BODY,
        )?;
        let mut reader = Reader::new(&body);
        let snapshot = match reader.u8("snapshot flag")? {
            0 => None,
            1 => Some(reader.id("snapshot")?),
            _ => {
                return Err(DecodeError::Invalid {
                    field: "snapshot flag",
                    reason: "not 0 or 1",
                }
                .into());
            }
        };
        let ended_by = reader.u8("ended by")?;
        if ended_by > 2 {
            return Err(DecodeError::Invalid {
                field: "ended by",
                reason: "unknown value",
            }
            .into());
        }
        reader.finish()?;
        Ok(Self {
            session: session_from(&public),
            snapshot,
            ended_by,
        })
    }
}

impl PruneRecord {
    /// Seals the record (compressed at `level`: pack ids do not compress, but the framing is
    /// shared with every other list object).
    pub fn encode(&self, key: &SealKey, nonce: [u8; NONCE_LEN]) -> Vec<u8> {
        let mut body = Writer::new();
        body.count(self.condemned.len());
        for id in &self.condemned {
            body.id(id);
        }
        body.count(self.resurrected.len());
        for id in &self.resurrected {
            body.id(id);
        }
        seal(
            key,
            PRUNE_RECORD_MAGIC,
            &self.generation.to_le_bytes(),
            &body,
            nonce,
        )
    }

    /// Opens a stored record.
    ///
    /// # Errors
    /// [`ObjectError`] when it does not verify or decode.
    pub fn decode(key: &SealKey, bytes: &[u8]) -> Result<Self, ObjectError> {
        let Opened { public, body, .. } = open(
            key,
            bytes,
            PRUNE_RECORD_MAGIC,
            "prune record",
            8,
            MAX_LIST_BODY,
        )?;
        let mut reader = Reader::new(&body);
        let condemned = read_ids(&mut reader, "condemned")?;
        let resurrected = read_ids(&mut reader, "resurrected")?;
        reader.finish()?;
        Ok(Self {
            generation: generation_from(&public),
            condemned,
            resurrected,
        })
    }
}

impl InflightList {
    /// Seals the list.
    pub fn encode(&self, key: &SealKey, nonce: [u8; NONCE_LEN]) -> Vec<u8> {
        let mut body = Writer::new();
        body.count(self.sessions.len());
        for session in &self.sessions {
            body.raw(&session.0);
        }
        seal(
            key,
            INFLIGHT_MAGIC,
            &self.generation.to_le_bytes(),
            &body,
            nonce,
        )
    }

    /// Opens a stored list.
    ///
    /// # Errors
    /// [`ObjectError`] when it does not verify or decode.
    pub fn decode(key: &SealKey, bytes: &[u8]) -> Result<Self, ObjectError> {
        let Opened { public, body, .. } = open(
            key,
            bytes,
            INFLIGHT_MAGIC,
            "in-flight list",
            8,
            MAX_LIST_BODY,
        )?;
        let mut reader = Reader::new(&body);
        let count = reader.count(SESSION_ID_LEN, "sessions")?;
        let mut sessions = Vec::with_capacity(count);
        for _ in 0..count {
            sessions.push(session_from(reader.take(SESSION_ID_LEN, "session")?));
        }
        reader.finish()?;
        Ok(Self {
            generation: generation_from(&public),
            sessions,
        })
    }
}

impl PruneLease {
    /// Seals the lease.
    pub fn encode(&self, key: &SealKey, nonce: [u8; NONCE_LEN]) -> Vec<u8> {
        let mut body = self.v1_body();
        self.place.write_v2(&mut body);
        seal(key, LEASE_MAGIC, &[], &body, nonce)
    }

    /// The fields of version 1 (token, host, pid, start time, TTL), which version 2 extends.
    fn v1_body(&self) -> Writer {
        let mut body = Writer::new();
        body.raw(&self.token)
            .bytes(self.host.as_bytes())
            .u32(self.place.pid)
            .i64(self.started_unix)
            .u64(self.ttl_seconds);
        body
    }

    /// Opens a stored lease, of version 1 (the place holds only the pid) or 2.
    ///
    /// # Errors
    /// [`ObjectError`] when it does not verify or decode.
    pub fn decode(key: &SealKey, bytes: &[u8]) -> Result<Self, ObjectError> {
        let opened = open(key, bytes, LEASE_MAGIC, "prune lease", 0, MAX_SMALL_BODY)?;
        let mut reader = Reader::new(&opened.body);
        let token = bytes16(&mut reader, "token")?;
        let host = reader.string("host")?;
        let pid = reader.u32("pid")?;
        let started_unix = reader.i64("started")?;
        let ttl_seconds = reader.u64("ttl")?;
        let place = read_place(&mut reader, opened.version, pid)?;
        reader.finish()?;
        Ok(Self {
            token,
            host,
            place,
            started_unix,
            ttl_seconds,
        })
    }

    /// Seals the lease as version 1 wrote it, for tests of old repositories.
    #[doc(hidden)]
    pub fn encode_v1(&self, key: &SealKey, nonce: [u8; NONCE_LEN]) -> Vec<u8> {
        let header = ObjectHeader {
            magic: LEASE_MAGIC,
            version: 1,
        };
        envelope::seal_object(key, header, &[], self.v1_body().as_slice(), None, nonce)
    }
}

/// The object name of the prune record of `generation`: 20 decimal digits, so names sort in
/// generation order.
pub fn record_name(generation: u64) -> String {
    format!("prune/{generation:020}")
}

/// The object name of the in-flight list of `generation`.
pub fn inflight_name(generation: u64) -> String {
    format!("prune/{generation:020}.inflight")
}

/// What a name under `prune/` is: `(generation, is in-flight list)`.
pub fn parse_prune_name(name: &str) -> Option<(u64, bool)> {
    let rest = name.strip_prefix("prune/")?;
    let (digits, inflight) = match rest.strip_suffix(".inflight") {
        Some(digits) => (digits, true),
        None => (rest, false),
    };
    if digits.len() != 20 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, inflight))
}

/// The object name of a session's start marker.
pub fn session_name(session: &SessionId) -> String {
    format!("sessions/{}", session.to_hex())
}

/// The object name of a session's end marker.
pub fn session_end_name(session: &SessionId) -> String {
    format!("sessions/{}.done", session.to_hex())
}

/// What a name under `sessions/` is: `(session, is the end marker)`.
pub fn parse_session_name(name: &str) -> Option<(SessionId, bool)> {
    let rest = name.strip_prefix("sessions/")?;
    let (hex_id, end) = match rest.strip_suffix(".done") {
        Some(hex_id) => (hex_id, true),
        None => (rest, false),
    };
    if hex_id.len() != SESSION_ID_LEN * 2 || hex_id.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    Some((SessionId::from_hex(hex_id)?, end))
}

/// The name of the prune lease.
pub const LEASE_NAME: &str = "locks/prune";

/// The name of the marker object that makes a repository append-only.
pub const APPEND_ONLY_NAME: &str = "append-only";

/// Every prune record and in-flight list in the repository, and what they add up to.
#[derive(Debug, Clone, Default)]
pub struct PruneState {
    /// The highest generation of any record (0 when no prune ever ran).
    pub latest_generation: u64,
    /// The records by generation.
    pub records: BTreeMap<u64, PruneRecord>,
    /// The in-flight lists by generation (a record may lack one after a crashed prune).
    pub inflight: BTreeMap<u64, InflightList>,
    /// Packs condemned by some record and not taken back by a later one.
    pub condemned: HashSet<Id>,
}

impl PruneState {
    /// Packs condemned by records newer than `generation` and not taken back since.
    pub fn condemned_after(&self, generation: u64) -> HashSet<Id> {
        let mut out = HashSet::new();
        for (_, record) in self.records.range(generation + 1..) {
            for id in &record.resurrected {
                out.remove(id);
            }
            out.extend(record.condemned.iter().copied());
        }
        out.retain(|id| self.condemned.contains(id));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SealKey {
        SealKey::new(&[7; 32])
    }

    #[test]
    fn objects_round_trip() {
        let session = SessionId([9; 16]);
        let marker = SessionMarker {
            session,
            host: "db1".into(),
            place: place(),
            started_unix: 1_700_000_000,
        };
        assert_eq!(
            SessionMarker::decode(&key(), &marker.encode(&key(), [1; 24])).unwrap(),
            marker
        );
        for snapshot in [None, Some(Id([3; 32]))] {
            let end = SessionEnd {
                session,
                snapshot,
                ended_by: 1,
            };
            assert_eq!(
                SessionEnd::decode(&key(), &end.encode(&key(), [2; 24])).unwrap(),
                end
            );
        }
        let record = PruneRecord {
            generation: 7,
            condemned: vec![Id([1; 32]), Id([2; 32])],
            resurrected: vec![Id([4; 32])],
        };
        assert_eq!(
            PruneRecord::decode(&key(), &record.encode(&key(), [3; 24])).unwrap(),
            record
        );
        let inflight = InflightList {
            generation: 7,
            sessions: vec![session, SessionId([1; 16])],
        };
        assert_eq!(
            InflightList::decode(&key(), &inflight.encode(&key(), [4; 24])).unwrap(),
            inflight
        );
        let lease = PruneLease {
            token: [5; 16],
            host: "h".into(),
            place: place(),
            started_unix: 2,
            ttl_seconds: 900,
        };
        assert_eq!(
            PruneLease::decode(&key(), &lease.encode(&key(), [6; 24])).unwrap(),
            lease
        );
    }

    fn place() -> ProcessPlace {
        ProcessPlace {
            machine_id: [0xaa; 16],
            boot_id: [0xbb; 16],
            pid_namespace: 4_026_531_836,
            pid: 42,
            start_ticks: 987_654,
        }
    }

    #[test]
    fn version_1_markers_and_leases_decode_with_only_their_pid() {
        let marker = SessionMarker {
            session: SessionId([9; 16]),
            host: "old".into(),
            place: place(),
            started_unix: 5,
        };
        let old = marker.encode_v1(&key(), [1; 24]);
        assert_eq!(u16::from_le_bytes([old[4], old[5]]), 1);
        let decoded = SessionMarker::decode(&key(), &old).unwrap();
        assert_eq!(decoded.place, ProcessPlace::pid_only(42));
        assert!(!decoded.place.is_recorded());
        assert_eq!(decoded.host, "old");
        let new = marker.encode(&key(), [1; 24]);
        assert_eq!(u16::from_le_bytes([new[4], new[5]]), MARKER_VERSION);
        assert!(
            SessionMarker::decode(&key(), &new)
                .unwrap()
                .place
                .is_recorded()
        );

        let lease = PruneLease {
            token: [5; 16],
            host: "h".into(),
            place: place(),
            started_unix: 2,
            ttl_seconds: 900,
        };
        let decoded = PruneLease::decode(&key(), &lease.encode_v1(&key(), [6; 24])).unwrap();
        assert_eq!(decoded.place, ProcessPlace::pid_only(42));
        assert_eq!(decoded.ttl_seconds, 900);
    }

    #[test]
    fn a_marker_body_must_match_its_version() {
        // A version 1 header over a version 2 body (trailing place) and the reverse both fail.
        let marker = SessionMarker {
            session: SessionId([9; 16]),
            host: "h".into(),
            place: place(),
            started_unix: 5,
        };
        let v2_body = {
            let mut body = Writer::new();
            body.bytes(b"h").u32(42).i64(5);
            place().write_v2(&mut body);
            body
        };
        let v1_header = ObjectHeader {
            magic: SESSION_MAGIC,
            version: 1,
        };
        let forged = envelope::seal_object(
            &key(),
            v1_header,
            &marker.session.0,
            v2_body.as_slice(),
            None,
            [1; 24],
        );
        assert!(SessionMarker::decode(&key(), &forged).is_err());
        let mut v1_body = Writer::new();
        v1_body.bytes(b"h").u32(42).i64(5);
        let short = envelope::seal_object(
            &key(),
            header(SESSION_MAGIC),
            &marker.session.0,
            v1_body.as_slice(),
            None,
            [1; 24],
        );
        assert!(SessionMarker::decode(&key(), &short).is_err());
        let newer = ObjectHeader {
            magic: SESSION_MAGIC,
            version: MARKER_VERSION + 1,
        };
        let future = envelope::seal_object(
            &key(),
            newer,
            &marker.session.0,
            v2_body.as_slice(),
            None,
            [1; 24],
        );
        assert!(SessionMarker::decode(&key(), &future).is_err());
    }

    #[test]
    fn a_record_cannot_pose_as_another_generation_or_kind() {
        let record = PruneRecord {
            generation: 3,
            ..PruneRecord::default()
        };
        let mut bytes = record.encode(&key(), [3; 24]);
        assert!(InflightList::decode(&key(), &bytes).is_err());
        bytes[6] ^= 1; // the generation, in clear but bound by the associated data
        assert!(PruneRecord::decode(&key(), &bytes).is_err());
    }

    proptest::proptest! {
        /// Hostile bytes never panic a decoder: as a stored object, and as an authentic body
        /// (sealed under the right key, so the parsers behind authentication run too).
        #[test]
        fn decoders_reject_hostile_bytes_without_panicking(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            public in proptest::collection::vec(proptest::prelude::any::<u8>(), 16),
        ) {
            let key = key();
            let _ = SessionMarker::decode(&key, &bytes);
            let _ = SessionEnd::decode(&key, &bytes);
            let _ = PruneRecord::decode(&key, &bytes);
            let _ = InflightList::decode(&key, &bytes);
            let _ = PruneLease::decode(&key, &bytes);
            for (magic, public_len) in [
                (SESSION_MAGIC, SESSION_ID_LEN),
                (SESSION_DONE_MAGIC, SESSION_ID_LEN),
                (PRUNE_RECORD_MAGIC, 8),
                (INFLIGHT_MAGIC, 8),
                (LEASE_MAGIC, 0),
            ] {
                let sealed = envelope::seal_object(
                    &key,
                    header(magic),
                    &public[..public_len],
                    &bytes,
                    None,
                    [0; NONCE_LEN],
                );
                let _ = SessionMarker::decode(&key, &sealed);
                let _ = SessionEnd::decode(&key, &sealed);
                let _ = PruneRecord::decode(&key, &sealed);
                let _ = InflightList::decode(&key, &sealed);
                let _ = PruneLease::decode(&key, &sealed);
            }
        }
    }

    #[test]
    fn names_parse_back() {
        assert_eq!(record_name(12), "prune/00000000000000000012");
        assert_eq!(parse_prune_name(&record_name(12)), Some((12, false)));
        assert_eq!(parse_prune_name(&inflight_name(12)), Some((12, true)));
        assert_eq!(parse_prune_name("prune/12"), None);
        let session = SessionId([0xab; 16]);
        assert_eq!(
            parse_session_name(&session_name(&session)),
            Some((session, false))
        );
        assert_eq!(
            parse_session_name(&session_end_name(&session)),
            Some((session, true))
        );
        assert_eq!(parse_session_name("sessions/xyz"), None);
    }
}
