//! The simulated object store: names to objects, create-only puts, gets, lists by prefix and
//! deletes, each one request that the world may fail (before or after applying it).
//!
//! Objects hold what the protocol reads from them, not their bytes: FORMAT.md section 21 fixes
//! the bytes, this model only their meaning.

use std::collections::BTreeMap;
use std::fmt;

use crate::policy::liveness::ProcessPlace;

/// A blob of the model (a chunk or a tree): a small number, so that backups share many.
pub type Blob = u32;

/// A session id (`sessions/<id>`).
pub type SessionId = u32;

/// The name of an object. The derived order groups each prefix (`data/`, `index/`, ...) together,
/// so a listing is a range of the map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Name {
    /// `data/<id>`: a pack.
    Pack(u32),
    /// `index/<id>`: an index object.
    Index(u32),
    /// `snapshots/<id>`: a snapshot.
    Snapshot(u32),
    /// `sessions/<id>`: a session marker.
    Session(SessionId),
    /// `sessions/<id>.done`: a session's end marker.
    SessionEnd(SessionId),
    /// `prune/<generation>`: a prune record.
    Record(u64),
    /// `prune/<generation>.inflight`: a prune run's in-flight list.
    Inflight(u64),
    /// `locks/prune`: the prune lease.
    Lease,
}

impl fmt::Display for Name {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pack(id) => write!(formatter, "data/{id}"),
            Self::Index(id) => write!(formatter, "index/{id}"),
            Self::Snapshot(id) => write!(formatter, "snapshots/{id}"),
            Self::Session(id) => write!(formatter, "sessions/{id}"),
            Self::SessionEnd(id) => write!(formatter, "sessions/{id}.done"),
            Self::Record(generation) => write!(formatter, "prune/{generation}"),
            Self::Inflight(generation) => write!(formatter, "prune/{generation}.inflight"),
            Self::Lease => formatter.write_str("locks/prune"),
        }
    }
}

/// A listable prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    /// `data/`.
    Packs,
    /// `index/`.
    Indexes,
    /// `snapshots/`.
    Snapshots,
    /// `sessions/` (markers and end markers).
    Sessions,
    /// `prune/` (records and in-flight lists).
    Prune,
}

impl Prefix {
    fn range(self) -> (Name, Name) {
        match self {
            Self::Packs => (Name::Pack(0), Name::Pack(u32::MAX)),
            Self::Indexes => (Name::Index(0), Name::Index(u32::MAX)),
            Self::Snapshots => (Name::Snapshot(0), Name::Snapshot(u32::MAX)),
            Self::Sessions => (Name::Session(0), Name::SessionEnd(u32::MAX)),
            Self::Prune => (Name::Record(0), Name::Inflight(u64::MAX)),
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Self::Packs => "data/",
            Self::Indexes => "index/",
            Self::Snapshots => "snapshots/",
            Self::Sessions => "sessions/",
            Self::Prune => "prune/",
        })
    }
}

/// One pack as an index object lists it: its id and the blobs it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedPack {
    /// The pack's id (`data/<id>`).
    pub pack: u32,
    /// The blobs it holds.
    pub blobs: Vec<Blob>,
}

/// What a session marker records: the host label and where the process ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// The host label (the machine's name, or a `--host` override). Several machines may share
    /// one.
    pub host: &'static str,
    /// Where the process ran. A marker in the old format records only the pid: every other field
    /// is unknown (zero).
    pub place: ProcessPlace,
}

/// A stored object's meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    /// A pack and the blobs it holds.
    Pack(Vec<Blob>),
    /// An index object: packs and their blobs.
    Index(Vec<IndexedPack>),
    /// A snapshot and every blob it references (its trees and chunks).
    Snapshot(Vec<Blob>),
    /// A session marker.
    Session(Marker),
    /// An end marker, and who wrote it.
    SessionEnd(EndedBy),
    /// A prune record: condemned and resurrected packs.
    Record {
        /// Packs this run condemned.
        condemned: Vec<u32>,
        /// Packs this run took back.
        resurrected: Vec<u32>,
    },
    /// An in-flight list: the sessions F(g).
    Inflight(Vec<SessionId>),
    /// The prune lease: its holder's token and place, and when the store last wrote it (the
    /// store's clock: the scheduling step).
    Lease {
        /// The holder's token.
        token: u32,
        /// Where the holder runs (host label and process place, as in a session marker).
        holder: Marker,
        /// The store's time of the last write.
        written_at: u64,
    },
}

/// Who ended a session (FORMAT.md 21.1, `ended_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedBy {
    /// The backup itself (committed or failed).
    Session,
    /// A prune that judged its process gone.
    Prune,
}

/// A request's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Done (a put or a delete).
    Done,
    /// A get's object.
    Object(Object),
    /// A list's names, in order.
    Names(Vec<Name>),
    /// A create-only put found the name taken.
    Exists,
    /// A get found nothing.
    NotFound,
    /// The request failed (it may or may not have been applied).
    Failed,
}

/// A request to the store.
#[derive(Debug, Clone)]
pub enum Request {
    /// Create-only put.
    Put(Name, Object),
    /// Get.
    Get(Name),
    /// List a prefix.
    List(Prefix),
    /// Delete (succeeds when the object is absent, like every object store).
    Delete(Name),
    /// Put that replaces what is there (the lease's renewal).
    Overwrite(Name, Object),
}

impl fmt::Display for Request {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Put(name, object) => write!(formatter, "put {name} {}", summary(object)),
            Self::Get(name) => write!(formatter, "get {name}"),
            Self::List(prefix) => write!(formatter, "list {prefix}"),
            Self::Delete(name) => write!(formatter, "delete {name}"),
            Self::Overwrite(name, object) => {
                write!(formatter, "overwrite {name} {}", summary(object))
            }
        }
    }
}

fn summary(object: &Object) -> String {
    match object {
        Object::Pack(blobs) | Object::Snapshot(blobs) => format!("blobs {blobs:?}"),
        Object::Index(packs) => {
            let ids: Vec<u32> = packs.iter().map(|pack| pack.pack).collect();
            format!("packs {ids:?}")
        }
        Object::Session(marker) => format!(
            "host {:?} pid {} ns {} boot {:02x}",
            marker.host, marker.place.pid, marker.place.pid_namespace, marker.place.boot_id[0]
        ),
        Object::SessionEnd(by) => format!("ended by {by:?}"),
        Object::Record {
            condemned,
            resurrected,
        } => format!("condemned {condemned:?} resurrected {resurrected:?}"),
        Object::Inflight(sessions) => format!("sessions {sessions:?}"),
        Object::Lease {
            token,
            holder,
            written_at,
        } => format!(
            "token {token} host {:?} pid {} written at {written_at}",
            holder.host, holder.place.pid
        ),
    }
}

/// The store's objects.
#[derive(Debug, Clone, Default)]
pub struct Store {
    objects: BTreeMap<Name, Object>,
}

impl Store {
    /// Applies a request that did not fail.
    pub fn apply(&mut self, request: Request) -> Reply {
        match request {
            Request::Put(name, object) => {
                if let std::collections::btree_map::Entry::Vacant(slot) = self.objects.entry(name) {
                    slot.insert(object);
                    Reply::Done
                } else {
                    Reply::Exists
                }
            }
            Request::Get(name) => self
                .objects
                .get(&name)
                .map_or(Reply::NotFound, |object| Reply::Object(object.clone())),
            Request::List(prefix) => {
                let (first, last) = prefix.range();
                Reply::Names(
                    self.objects
                        .range(first..=last)
                        .map(|(name, _)| *name)
                        .collect(),
                )
            }
            Request::Overwrite(name, object) => {
                self.objects.insert(name, object);
                Reply::Done
            }
            Request::Delete(name) => {
                self.objects.remove(&name);
                Reply::Done
            }
        }
    }

    /// The object under `name`, for the invariants (not a request).
    pub fn peek(&self, name: Name) -> Option<&Object> {
        self.objects.get(&name)
    }

    /// Every object under `prefix`, for the invariants (not a request).
    pub fn scan(&self, prefix: Prefix) -> impl Iterator<Item = (&Name, &Object)> {
        let (first, last) = prefix.range();
        self.objects.range(first..=last)
    }

    /// Stores an object outside any request (the repository's history before the schedule).
    pub fn seed(&mut self, name: Name, object: Object) {
        self.objects.insert(name, object);
    }
}
