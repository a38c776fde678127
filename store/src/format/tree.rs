//! Trees: the encoded listing of one directory, stored as a tree blob.
//!
//! Encoding: `version u16 || node count u32 || nodes`, nodes sorted by name bytes, names unique.
//! Node: `name bytes || kind u8 || mode u32 || uid u32 || gid u32 || mtime (i64 s, u32 ns) ||
//! ctime (i64 s, u32 ns) || inode u64 || device u64 || size u64 || kind payload || extension
//! count u16 || extensions (tag u16, bytes)`. Pure: no I/O.

use crate::crypto::id::Id;
use crate::format::codec::{DecodeError, Reader, Writer};

/// Newest tree encoding version this build writes and reads.
pub const TREE_VERSION: u16 = 1;

/// Node extension tag: the file was sparse at backup time (it occupied fewer blocks than its
/// size); restore leaves its all-zero chunks as holes. Empty payload.
pub const EXTENSION_SPARSE: u16 = 1;

/// A point in time with nanosecond precision, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    pub seconds: i64,
    /// Nanoseconds within the second (< 1e9).
    pub nanos: u32,
}

impl Timestamp {
    fn encode_into(self, writer: &mut Writer) {
        writer.i64(self.seconds).u32(self.nanos);
    }

    fn decode_from(reader: &mut Reader<'_>, field: &'static str) -> Result<Self, DecodeError> {
        let seconds = reader.i64(field)?;
        let nanos = reader.u32(field)?;
        if nanos >= 1_000_000_000 {
            return Err(DecodeError::Invalid {
                field,
                reason: "nanoseconds out of range",
            });
        }
        Ok(Self { seconds, nanos })
    }
}

/// What a node is, with what each kind needs to be restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    /// A regular file or a stdin stream.
    File {
        /// Keyed BLAKE3 of the whole content, checked on restore.
        content_hash: Id,
        /// The data blobs, in order.
        chunks: Vec<Id>,
    },
    /// A directory, whose listing is the tree blob `subtree`.
    Directory {
        /// The directory's tree blob.
        subtree: Id,
    },
    /// A symbolic link.
    Symlink {
        /// The link target, as raw bytes.
        target: Vec<u8>,
    },
}

impl NodeKind {
    fn to_byte(&self) -> u8 {
        match self {
            Self::File { .. } => 1,
            Self::Directory { .. } => 2,
            Self::Symlink { .. } => 3,
        }
    }
}

/// Metadata and content reference of one directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The entry's name: raw bytes, no `/` or NUL, not `.` or `..`.
    pub name: Vec<u8>,
    /// Kind and content.
    pub kind: NodeKind,
    /// Unix permission bits (and file type bits as `st_mode` reports them).
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Modification time.
    pub mtime: Timestamp,
    /// Status change time (used to detect unchanged files).
    pub ctime: Timestamp,
    /// Inode number at backup time (used to detect unchanged files).
    pub inode: u64,
    /// Device number at backup time (used to detect unchanged files).
    pub device: u64,
    /// Content length in bytes (files), 0 otherwise.
    pub size: u64,
    /// Tagged fields a later version may add (hard links, xattrs); preserved, ignored today.
    pub extensions: Vec<(u16, Vec<u8>)>,
}

/// A node with fixed metadata, for tests.
#[cfg(test)]
pub(crate) fn test_node(name: &str, kind: NodeKind, size: u64) -> Node {
    Node {
        name: name.as_bytes().to_vec(),
        kind,
        mode: 0o100_644,
        uid: 1,
        gid: 2,
        mtime: Timestamp {
            seconds: 7,
            nanos: 8,
        },
        ctime: Timestamp::default(),
        inode: 3,
        device: 4,
        size,
        extensions: Vec::new(),
    }
}

/// A decoded directory listing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tree {
    /// Entries sorted by name bytes.
    pub nodes: Vec<Node>,
}

/// Smallest possible encoded node, for bounding counts: a one-byte name (4 + 1), kind (1),
/// mode/uid/gid (12), mtime and ctime (24), inode/device/size (24), an empty symlink target (4)
/// and the extension count (2).
const MIN_NODE_LEN: usize = 4 + 1 + 1 + 12 + 24 + 24 + 4 + 2;

fn validate_name(name: &[u8]) -> Result<(), DecodeError> {
    let invalid = |reason| DecodeError::Invalid {
        field: "node name",
        reason,
    };
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name == b"." || name == b".." {
        return Err(invalid("`.` or `..`"));
    }
    if name.iter().any(|byte| *byte == b'/' || *byte == 0) {
        return Err(invalid("contains `/` or NUL"));
    }
    Ok(())
}

impl Node {
    /// Whether the node carries the [`EXTENSION_SPARSE`] mark.
    pub fn is_sparse(&self) -> bool {
        self.extensions
            .iter()
            .any(|(tag, _)| *tag == EXTENSION_SPARSE)
    }
}

impl Tree {
    /// Sorts the nodes by name, as the encoding requires.
    pub fn sort(&mut self) {
        self.nodes.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// The node named `name`, if any.
    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|node| node.name.as_slice().cmp(name))
            .ok()
            .map(|index| &self.nodes[index])
    }

    /// Encodes the tree. Nodes must already be sorted and unique ([`Tree::sort`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::new();
        writer.u16(TREE_VERSION).count(self.nodes.len());
        for node in &self.nodes {
            writer
                .bytes(&node.name)
                .u8(node.kind.to_byte())
                .u32(node.mode)
                .u32(node.uid)
                .u32(node.gid);
            node.mtime.encode_into(&mut writer);
            node.ctime.encode_into(&mut writer);
            writer.u64(node.inode).u64(node.device).u64(node.size);
            match &node.kind {
                NodeKind::File {
                    content_hash,
                    chunks,
                } => {
                    writer.id(content_hash).count(chunks.len());
                    for chunk in chunks {
                        writer.id(chunk);
                    }
                }
                NodeKind::Directory { subtree } => {
                    writer.id(subtree);
                }
                NodeKind::Symlink { target } => {
                    writer.bytes(target);
                }
            }
            writer.u16(u16::try_from(node.extensions.len()).expect("under 65536 extensions"));
            for (tag, bytes) in &node.extensions {
                writer.u16(*tag).bytes(bytes);
            }
        }
        writer.finish()
    }

    /// Decodes and validates a tree: names valid, sorted and unique.
    ///
    /// # Errors
    /// [`DecodeError`] for any malformed field or ordering violation.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        let version = reader.u16("tree version")?;
        if version == 0 || version > TREE_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                what: "tree",
                found: version,
                supported: TREE_VERSION,
            });
        }
        let count = reader.count(MIN_NODE_LEN, "tree nodes")?;
        let mut nodes: Vec<Node> = Vec::with_capacity(count);
        for _ in 0..count {
            let name = reader.bytes("node name")?.to_vec();
            validate_name(&name)?;
            if let Some(previous) = nodes.last()
                && previous.name >= name
            {
                return Err(DecodeError::Invalid {
                    field: "node name",
                    reason: "not sorted or duplicated",
                });
            }
            let kind_byte = reader.u8("node kind")?;
            let mode = reader.u32("mode")?;
            let uid = reader.u32("uid")?;
            let gid = reader.u32("gid")?;
            let mtime = Timestamp::decode_from(&mut reader, "mtime")?;
            let ctime = Timestamp::decode_from(&mut reader, "ctime")?;
            let inode = reader.u64("inode")?;
            let device = reader.u64("device")?;
            let size = reader.u64("size")?;
            let kind = match kind_byte {
                1 => {
                    let content_hash = reader.id("content hash")?;
                    let chunk_count = reader.count(32, "chunks")?;
                    let mut chunks = Vec::with_capacity(chunk_count);
                    for _ in 0..chunk_count {
                        chunks.push(reader.id("chunk id")?);
                    }
                    NodeKind::File {
                        content_hash,
                        chunks,
                    }
                }
                2 => NodeKind::Directory {
                    subtree: reader.id("subtree")?,
                },
                3 => NodeKind::Symlink {
                    target: reader.bytes("symlink target")?.to_vec(),
                },
                _ => {
                    return Err(DecodeError::Invalid {
                        field: "node kind",
                        reason: "unknown",
                    });
                }
            };
            let extension_count = reader.u16("extensions")? as usize;
            let mut extensions = Vec::with_capacity(extension_count.min(reader.remaining() / 6));
            for _ in 0..extension_count {
                let tag = reader.u16("extension tag")?;
                extensions.push((tag, reader.bytes("extension")?.to_vec()));
            }
            nodes.push(Node {
                name,
                kind,
                mode,
                uid,
                gid,
                mtime,
                ctime,
                inode,
                device,
                size,
                extensions,
            });
        }
        reader.finish()?;
        Ok(Self { nodes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(name: &[u8], kind: NodeKind) -> Node {
        Node {
            name: name.to_vec(),
            kind,
            mode: 0o644,
            uid: 1,
            gid: 2,
            mtime: Timestamp {
                seconds: 3,
                nanos: 4,
            },
            ctime: Timestamp {
                seconds: 5,
                nanos: 6,
            },
            inode: 7,
            device: 8,
            size: 9,
            extensions: vec![(1, b"x".to_vec())],
        }
    }

    #[test]
    fn unsorted_duplicate_and_hostile_names_are_rejected() {
        for names in [
            vec![&b"b"[..], b"a"],
            vec![b"a", b"a"],
            vec![b".."],
            vec![b"a/b"],
            vec![b""],
        ] {
            let tree = Tree {
                nodes: names
                    .into_iter()
                    .map(|name| {
                        node(
                            name,
                            NodeKind::Symlink {
                                target: b"t".to_vec(),
                            },
                        )
                    })
                    .collect(),
            };
            assert!(Tree::decode(&tree.encode()).is_err());
        }
    }

    #[test]
    fn smallest_node_decodes() {
        //! Regression: a directory holding only a one-letter symlink with an empty target was
        //! written but rejected on read because the minimum node length was overstated.
        let mut tree = Tree {
            nodes: vec![node(b"a", NodeKind::Symlink { target: Vec::new() })],
        };
        tree.nodes[0].extensions.clear();
        let encoded = tree.encode();
        assert_eq!(encoded.len(), 2 + 4 + MIN_NODE_LEN);
        assert_eq!(Tree::decode(&encoded).unwrap(), tree);
    }

    proptest! {
        #[test]
        fn round_trip(names in proptest::collection::btree_set("[a-z ü]{1,12}", 0..8), chunk_count in 0usize..4) {
            let mut tree = Tree::default();
            for (index, name) in names.iter().enumerate() {
                let kind = match index % 3 {
                    0 => NodeKind::File { content_hash: Id([1; 32]), chunks: vec![Id([2; 32]); chunk_count] },
                    1 => NodeKind::Directory { subtree: Id([3; 32]) },
                    _ => NodeKind::Symlink { target: b"../x".to_vec() },
                };
                tree.nodes.push(node(name.as_bytes(), kind));
            }
            tree.sort();
            let decoded = Tree::decode(&tree.encode()).unwrap();
            prop_assert_eq!(decoded, tree);
        }
    }
}
