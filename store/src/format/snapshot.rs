//! Snapshot objects: the single commit point of a backup.
//!
//! Body: `time || host || username || tags || source kind u8 || source names || root tree id ||
//! parent flag u8 (+ id) || summary (6 × u64) || program version || extensions`. Pure: no I/O.
//!
//! Extensions (FORMAT.md section 12) are `tag u16 || bytes`; this build knows tag
//! [`EXTENSION_REWRITTEN_FROM`] and skips the others.

use crate::crypto::id::Id;
use crate::crypto::seal::{NONCE_LEN, SealKey};
use crate::format::codec::{DecodeError, ObjectHeader, Reader, Writer};
use crate::format::envelope::{self, ObjectError};
use crate::format::tree::Timestamp;

/// Magic bytes of a snapshot object.
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"CRNS";
/// Newest snapshot version this build writes and reads.
pub const SNAPSHOT_VERSION: u16 = 1;
/// Largest snapshot body accepted.
const MAX_SNAPSHOT_BODY: usize = 16 * 1024 * 1024;
/// Extension tag: the id (32 bytes) of the snapshot this one replaces with changed tags or
/// removed paths (`cairn tag`, `cairn rewrite`).
pub const EXTENSION_REWRITTEN_FROM: u16 = 2;

/// Snapshot extension tag: this snapshot is a copy (`cairn copy`) of a snapshot of another
/// repository. Payload: see [`CopyOf`].
pub const EXTENSION_COPY_OF: u16 = 1;

/// Where a copied snapshot came from: the source repository's id and the source snapshot's id
/// (FORMAT.md section 12). `cairn copy` finds the snapshots it already copied by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CopyOf {
    /// The source repository's id (its config's public field).
    pub repository_id: [u8; 16],
    /// The source snapshot's id.
    pub snapshot: Id,
}

impl CopyOf {
    /// The extension payload: `repository id (16) || snapshot id (32)`.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(48);
        bytes.extend_from_slice(&self.repository_id);
        bytes.extend_from_slice(&self.snapshot.0);
        bytes
    }

    /// Parses the extension payload.
    ///
    /// # Errors
    /// [`DecodeError`] unless it is exactly 48 bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        let repository_id = reader.array::<16>("copy of: repository id")?;
        let snapshot = reader.id("copy of: snapshot id")?;
        reader.finish()?;
        Ok(Self {
            repository_id,
            snapshot,
        })
    }
}

/// What was backed up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Absolute paths of files and directories.
    Paths(Vec<String>),
    /// A stream read from standard input (or a command), stored as one file of this name.
    Stdin(String),
}

impl Source {
    /// The names shown in listings: the paths, or the stream's name.
    pub fn names(&self) -> Vec<String> {
        match self {
            Self::Paths(paths) => paths.clone(),
            Self::Stdin(name) => vec![name.clone()],
        }
    }
}

/// Counters of one backup run, kept in its snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Files (and streams) in the snapshot.
    pub files: u64,
    /// Directories in the snapshot.
    pub directories: u64,
    /// Bytes of file content in the snapshot.
    pub bytes_processed: u64,
    /// Bytes added to the repository (packs written, including metadata).
    pub bytes_added: u64,
    /// Blobs added to the repository.
    pub blobs_added: u64,
    /// Source entries that could not be read and are missing from the snapshot.
    pub entries_unreadable: u64,
}

/// A decoded snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// When the backup started.
    pub time: Timestamp,
    /// Host name given or detected.
    pub host: String,
    /// User who ran the backup.
    pub username: String,
    /// Tags given with `--tag`.
    pub tags: Vec<String>,
    /// What was backed up.
    pub source: Source,
    /// The root tree blob.
    pub root: Id,
    /// The snapshot this one was compared against, if any.
    pub parent: Option<Id>,
    /// Counters of the run.
    pub summary: Summary,
    /// The cairn version that wrote it.
    pub program_version: String,
    /// Tagged fields, sorted by tag, each tag at most once: the `EXTENSION_*` tags this version
    /// knows (read them through the accessors of [`Snapshot`]) and unknown tags, preserved.
    pub extensions: Vec<(u16, Vec<u8>)>,
}

fn write_strings(writer: &mut Writer, strings: &[String]) {
    writer.count(strings.len());
    for string in strings {
        writer.bytes(string.as_bytes());
    }
}

fn read_strings(reader: &mut Reader<'_>, field: &'static str) -> Result<Vec<String>, DecodeError> {
    let count = reader.count(4, field)?;
    (0..count).map(|_| reader.string(field)).collect()
}

impl Snapshot {
    /// A snapshot a later command (`tag`, `rewrite`, `repair`) writes from this one: the same
    /// time, host, user, tags, source, parent and extensions, with `root`, `summary` and the
    /// writing cairn's `program_version`. The caller changes what its command changes. Pure.
    #[must_use]
    pub fn derived(&self, root: Id, summary: Summary, program_version: &str) -> Self {
        Self {
            root,
            summary,
            program_version: program_version.to_owned(),
            ..self.clone()
        }
    }

    /// Seals the snapshot into its stored bytes.
    pub fn encode(&self, key: &SealKey, level: Option<i32>, nonce: [u8; NONCE_LEN]) -> Vec<u8> {
        let mut writer = Writer::new();
        writer.i64(self.time.seconds).u32(self.time.nanos);
        writer
            .bytes(self.host.as_bytes())
            .bytes(self.username.as_bytes());
        write_strings(&mut writer, &self.tags);
        match &self.source {
            Source::Paths(paths) => {
                writer.u8(0);
                write_strings(&mut writer, paths);
            }
            Source::Stdin(name) => {
                writer.u8(1);
                write_strings(&mut writer, std::slice::from_ref(name));
            }
        }
        writer.id(&self.root);
        match &self.parent {
            Some(parent) => writer.u8(1).id(parent),
            None => writer.u8(0),
        };
        let summary = &self.summary;
        writer
            .u64(summary.files)
            .u64(summary.directories)
            .u64(summary.bytes_processed)
            .u64(summary.bytes_added)
            .u64(summary.blobs_added)
            .u64(summary.entries_unreadable);
        writer.bytes(self.program_version.as_bytes());
        let mut extensions: Vec<&(u16, Vec<u8>)> = self.extensions.iter().collect();
        extensions.sort_by_key(|(tag, _)| *tag);
        writer.u16(u16::try_from(extensions.len()).expect("under 65536 extensions"));
        for (tag, bytes) in extensions {
            writer.u16(*tag).bytes(bytes);
        }
        envelope::seal_object(
            key,
            ObjectHeader {
                magic: SNAPSHOT_MAGIC,
                version: SNAPSHOT_VERSION,
            },
            &[],
            writer.as_slice(),
            level,
            nonce,
        )
    }

    /// Opens and parses a stored snapshot.
    ///
    /// # Errors
    /// [`ObjectError`] when it does not verify or decode.
    pub fn decode(key: &SealKey, bytes: &[u8]) -> Result<Self, ObjectError> {
        let opened = envelope::open_object(
            key,
            bytes,
            SNAPSHOT_MAGIC,
            SNAPSHOT_VERSION,
            "snapshot",
            0,
            MAX_SNAPSHOT_BODY,
        )?;
        Ok(Self::decode_body(&opened.body)?)
    }

    /// Parses the decrypted body of a snapshot: the second half of [`Snapshot::decode`], public
    /// so the fuzzer reaches it without a valid tag.
    ///
    /// # Errors
    /// [`DecodeError`] for any malformed field.
    #[doc(hidden)]
    pub fn decode_body(body: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body);
        let seconds = reader.i64("time")?;
        let nanos = reader.u32("time")?;
        if nanos >= 1_000_000_000 {
            return Err(DecodeError::Invalid {
                field: "time",
                reason: "nanoseconds out of range",
            });
        }
        let host = reader.string("host")?;
        let username = reader.string("username")?;
        let tags = read_strings(&mut reader, "tags")?;
        let source_kind = reader.u8("source kind")?;
        let names = read_strings(&mut reader, "source")?;
        let source = match (source_kind, names.len()) {
            (0, _) => Source::Paths(names),
            (1, 1) => Source::Stdin(names.into_iter().next().unwrap_or_default()),
            _ => {
                return Err(DecodeError::Invalid {
                    field: "source",
                    reason: "unknown kind or stream without exactly one name",
                });
            }
        };
        let root = reader.id("root")?;
        let parent = match reader.u8("parent flag")? {
            0 => None,
            1 => Some(reader.id("parent")?),
            _ => {
                return Err(DecodeError::Invalid {
                    field: "parent flag",
                    reason: "not 0 or 1",
                });
            }
        };
        let summary = Summary {
            files: reader.u64("summary")?,
            directories: reader.u64("summary")?,
            bytes_processed: reader.u64("summary")?,
            bytes_added: reader.u64("summary")?,
            blobs_added: reader.u64("summary")?,
            entries_unreadable: reader.u64("summary")?,
        };
        let program_version = reader.string("program version")?;
        let extension_count = reader.u16("extensions")?;
        let mut extensions: Vec<(u16, Vec<u8>)> = Vec::new();
        for _ in 0..extension_count {
            let tag = reader.u16("extension tag")?;
            let bytes = reader.bytes("extension")?;
            if extensions.last().is_some_and(|(last, _)| *last >= tag) {
                return Err(DecodeError::Invalid {
                    field: "extension tag",
                    reason: "not sorted or repeated",
                });
            }
            if tag == EXTENSION_COPY_OF {
                CopyOf::decode(bytes)?;
            }
            if tag == EXTENSION_REWRITTEN_FROM && bytes.len() != 32 {
                return Err(DecodeError::Invalid {
                    field: "rewritten from",
                    reason: "not a 32-byte id",
                });
            }
            extensions.push((tag, bytes.to_vec()));
        }
        reader.finish()?;
        Ok(Self {
            time: Timestamp { seconds, nanos },
            host,
            username,
            tags,
            source,
            root,
            parent,
            summary,
            program_version,
            extensions,
        })
    }

    /// The payload of extension `tag`, if present.
    pub fn extension(&self, tag: u16) -> Option<&[u8]> {
        crate::format::codec::find_extension(&self.extensions, tag)
    }

    /// Sets (or with `None` removes) extension `tag`, keeping the extensions sorted by tag.
    pub fn set_extension(&mut self, tag: u16, bytes: Option<Vec<u8>>) {
        crate::format::codec::set_extension(&mut self.extensions, tag, bytes);
    }

    /// The source snapshot this one is a copy of ([`EXTENSION_COPY_OF`]), if any (a payload
    /// that does not parse, which a decoded snapshot never has, counts as none).
    pub fn copy_of(&self) -> Option<CopyOf> {
        self.extension(EXTENSION_COPY_OF)
            .and_then(|bytes| CopyOf::decode(bytes).ok())
    }

    /// The snapshot this one was written from by `cairn tag` or `cairn rewrite`
    /// ([`EXTENSION_REWRITTEN_FROM`]); `None` for a backup or a copy.
    pub fn rewritten_from(&self) -> Option<Id> {
        self.extension(EXTENSION_REWRITTEN_FROM)
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .map(Id)
    }

    /// Records (or with `None` removes) the snapshot this one was written from.
    pub fn set_rewritten_from(&mut self, original: Option<Id>) {
        self.set_extension(EXTENSION_REWRITTEN_FROM, original.map(|id| id.0.to_vec()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let key = SealKey::new(&[6; 32]);
        for source in [
            Source::Paths(vec!["/a".into(), "/b c".into()]),
            Source::Stdin("app.archive".into()),
        ] {
            let snapshot = Snapshot {
                time: Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 5,
                },
                host: "h".into(),
                username: "u".into(),
                tags: vec!["nightly".into()],
                source,
                root: Id([1; 32]),
                parent: Some(Id([2; 32])),
                summary: Summary {
                    files: 1,
                    directories: 2,
                    bytes_processed: 3,
                    bytes_added: 4,
                    blobs_added: 5,
                    entries_unreadable: 6,
                },
                program_version: "0.1.0".into(),
                extensions: vec![(
                    EXTENSION_COPY_OF,
                    CopyOf {
                        repository_id: [3; 16],
                        snapshot: Id([4; 32]),
                    }
                    .encode(),
                )],
            };
            let bytes = snapshot.encode(&key, Some(3), [1; 24]);
            assert_eq!(Snapshot::decode(&key, &bytes).unwrap(), snapshot);
            let mut rewritten = snapshot;
            rewritten.set_rewritten_from(Some(Id([9; 32])));
            assert!(
                rewritten.copy_of().is_some(),
                "a rewritten copy is still a copy"
            );
            let bytes = rewritten.encode(&key, None, [2; 24]);
            assert_eq!(Snapshot::decode(&key, &bytes).unwrap(), rewritten);
        }
    }

    /// The body of `snapshot` with its extensions replaced by `extensions` (tag, bytes).
    fn body_with_extensions(extensions: &[(u16, &[u8])]) -> Vec<u8> {
        let key = SealKey::new(&[6; 32]);
        let snapshot = Snapshot {
            time: Timestamp {
                seconds: 1,
                nanos: 0,
            },
            host: "h".into(),
            username: "u".into(),
            tags: Vec::new(),
            source: Source::Stdin("s".into()),
            root: Id([1; 32]),
            parent: None,
            summary: Summary::default(),
            program_version: "v".into(),
            extensions: Vec::new(),
        };
        let opened = envelope::open_object(
            &key,
            &snapshot.encode(&key, None, [0; 24]),
            SNAPSHOT_MAGIC,
            SNAPSHOT_VERSION,
            "snapshot",
            0,
            MAX_SNAPSHOT_BODY,
        )
        .unwrap();
        let mut body = opened.body[..opened.body.len() - 2].to_vec();
        let mut writer = Writer::new();
        writer.u16(u16::try_from(extensions.len()).unwrap());
        for (tag, bytes) in extensions {
            writer.u16(*tag).bytes(bytes);
        }
        body.extend_from_slice(writer.as_slice());
        body
    }

    #[test]
    fn unknown_extensions_are_kept_and_rewritten_from_is_checked() {
        let body = body_with_extensions(&[(EXTENSION_REWRITTEN_FROM, &[5; 32]), (77, b"later")]);
        let decoded = Snapshot::decode_body(&body).unwrap();
        assert_eq!(decoded.rewritten_from(), Some(Id([5; 32])));
        assert_eq!(decoded.extension(77), Some(&b"later"[..]));
        let body = body_with_extensions(&[(77, b"later")]);
        assert_eq!(Snapshot::decode_body(&body).unwrap().rewritten_from(), None);
        for bad in [
            body_with_extensions(&[(EXTENSION_REWRITTEN_FROM, &[5; 31])]),
            body_with_extensions(&[
                (EXTENSION_REWRITTEN_FROM, &[5; 32]),
                (EXTENSION_REWRITTEN_FROM, &[6; 32]),
            ]),
        ] {
            assert!(matches!(
                Snapshot::decode_body(&bad),
                Err(DecodeError::Invalid {
                    field: "rewritten from" | "extension tag",
                    ..
                })
            ));
        }
    }
}
