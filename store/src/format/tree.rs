//! Trees: the encoded listing of one directory, stored as a tree blob.
//!
//! Encoding: `version u16 || node count u32 || nodes`, nodes sorted by name bytes, names unique.
//! Node: `name bytes || kind u8 || mode u32 || uid u32 || gid u32 || mtime (i64 s, u32 ns) ||
//! ctime (i64 s, u32 ns) || inode u64 || device u64 || size u64 || kind payload || extension
//! count u16 || extensions (tag u16, bytes)`. Version 2 adds FIFO and device kinds and the
//! extensions for extended attributes (POSIX ACLs included), owner names and hard links
//! (FORMAT.md section 11). Pure: no I/O.

use crate::crypto::id::Id;
use crate::format::codec::{DecodeError, Reader, Writer};

/// Newest tree encoding version this build writes and reads.
pub const TREE_VERSION: u16 = 2;

/// Node extension tag: the file was sparse at backup time (it occupied fewer blocks than its
/// size); restore leaves its all-zero chunks as holes. Empty payload.
pub const EXTENSION_SPARSE: u16 = 1;

/// Node extension tag (tree version 2): the entry's extended attributes, POSIX ACLs included
/// (`system.posix_acl_access`, `system.posix_acl_default`). Payload: see [`encode_xattrs`].
pub const EXTENSION_XATTRS: u16 = 2;

/// Node extension tag (tree version 2): the names of the owner and group at backup time, so a
/// restore on another machine can map them to that machine's ids. Payload: `bytes user ||
/// bytes group`, each empty when the id had no name.
pub const EXTENSION_OWNER_NAMES: u16 = 3;

/// Node extension tag (tree version 2): a file with more than one hard link. Payload: `u64`
/// link count at backup time (at least 2). The link group is the node's device and inode.
pub const EXTENSION_LINKS: u16 = 4;

/// Longest extended attribute name accepted (the Linux limit).
pub const XATTR_NAME_MAX: usize = 255;

/// Largest extended attribute value accepted (the Linux limit).
pub const XATTR_VALUE_MAX: usize = 65_536;

/// Longest owner or group name accepted.
pub const OWNER_NAME_MAX: usize = 256;

/// One extended attribute: its full name (namespace included, such as `user.comment`) and value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Xattr {
    /// Full name, raw bytes without NUL, at most [`XATTR_NAME_MAX`] bytes.
    pub name: Vec<u8>,
    /// Value, raw bytes, at most [`XATTR_VALUE_MAX`] bytes.
    pub value: Vec<u8>,
}

/// The owner and group names recorded beside the ids; empty when the id had no name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct OwnerNames {
    /// The user name of `uid` on the backed-up machine.
    pub user: Vec<u8>,
    /// The group name of `gid` on the backed-up machine.
    pub group: Vec<u8>,
}

/// Encodes extended attributes as stored in [`EXTENSION_XATTRS`]: `count || count × (bytes name
/// || bytes value)`, sorted by name bytes, names unique.
pub fn encode_xattrs(xattrs: &[Xattr]) -> Vec<u8> {
    let mut sorted: Vec<&Xattr> = xattrs.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut writer = Writer::new();
    writer.count(sorted.len());
    for xattr in sorted {
        writer.bytes(&xattr.name).bytes(&xattr.value);
    }
    writer.finish()
}

/// Decodes and validates the payload of [`EXTENSION_XATTRS`].
///
/// # Errors
/// [`DecodeError`] for truncation, trailing bytes, an empty or over-long name, a name with NUL,
/// an over-long value, or names out of order or repeated.
pub fn decode_xattrs(bytes: &[u8]) -> Result<Vec<Xattr>, DecodeError> {
    let invalid = |reason| DecodeError::Invalid {
        field: "extended attribute",
        reason,
    };
    let mut reader = Reader::new(bytes);
    let count = reader.count(9, "extended attributes")?;
    let mut xattrs: Vec<Xattr> = Vec::with_capacity(count);
    for _ in 0..count {
        let name = reader.bytes("extended attribute name")?;
        if name.is_empty() || name.len() > XATTR_NAME_MAX || name.contains(&0) {
            return Err(invalid("name empty, too long or with NUL"));
        }
        if xattrs
            .last()
            .is_some_and(|last| last.name.as_slice() >= name)
        {
            return Err(invalid("names not sorted or duplicated"));
        }
        let value = reader.bytes("extended attribute value")?;
        if value.len() > XATTR_VALUE_MAX {
            return Err(invalid("value too long"));
        }
        xattrs.push(Xattr {
            name: name.to_vec(),
            value: value.to_vec(),
        });
    }
    reader.finish()?;
    Ok(xattrs)
}

fn encode_owner_names(names: &OwnerNames) -> Vec<u8> {
    let mut writer = Writer::new();
    writer.bytes(&names.user).bytes(&names.group);
    writer.finish()
}

fn decode_owner_names(bytes: &[u8]) -> Result<OwnerNames, DecodeError> {
    let mut reader = Reader::new(bytes);
    let user = reader.bytes("owner name")?.to_vec();
    let group = reader.bytes("group name")?.to_vec();
    reader.finish()?;
    for name in [&user, &group] {
        if name.len() > OWNER_NAME_MAX || name.contains(&0) {
            return Err(DecodeError::Invalid {
                field: "owner names",
                reason: "too long or with NUL",
            });
        }
    }
    Ok(OwnerNames { user, group })
}

fn decode_link_count(bytes: &[u8]) -> Result<u64, DecodeError> {
    let mut reader = Reader::new(bytes);
    let links = reader.u64("link count")?;
    reader.finish()?;
    if links < 2 {
        return Err(DecodeError::Invalid {
            field: "link count",
            reason: "below 2",
        });
    }
    Ok(links)
}

/// Checks the payload of an extension this version knows; unknown tags pass.
fn validate_extension(tag: u16, bytes: &[u8]) -> Result<(), DecodeError> {
    match tag {
        EXTENSION_SPARSE if !bytes.is_empty() => Err(DecodeError::Invalid {
            field: "sparse extension",
            reason: "not empty",
        }),
        EXTENSION_XATTRS => decode_xattrs(bytes).map(drop),
        EXTENSION_OWNER_NAMES => decode_owner_names(bytes).map(drop),
        EXTENSION_LINKS => decode_link_count(bytes).map(drop),
        _ => Ok(()),
    }
}

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
    /// A named pipe (tree version 2).
    Fifo,
    /// A character or block device node (tree version 2).
    Device {
        /// Character or block.
        kind: DeviceKind,
        /// Major device number.
        major: u32,
        /// Minor device number.
        minor: u32,
    },
}

/// Which kind of device node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    /// A character device (`S_IFCHR`).
    Character,
    /// A block device (`S_IFBLK`).
    Block,
}

impl NodeKind {
    fn to_byte(&self) -> u8 {
        match self {
            Self::File { .. } => 1,
            Self::Directory { .. } => 2,
            Self::Symlink { .. } => 3,
            Self::Fifo => 4,
            Self::Device {
                kind: DeviceKind::Character,
                ..
            } => 5,
            Self::Device {
                kind: DeviceKind::Block,
                ..
            } => 6,
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
    /// Tagged fields, sorted by tag, each tag at most once: the `EXTENSION_*` tags this version
    /// knows (read them through the accessors of [`Node`]) and unknown tags, preserved.
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

    /// The payload of extension `tag`, if present.
    pub fn extension(&self, tag: u16) -> Option<&[u8]> {
        crate::format::codec::find_extension(&self.extensions, tag)
    }

    /// Sets (or with `None` removes) extension `tag`, keeping the extensions sorted by tag.
    pub fn set_extension(&mut self, tag: u16, bytes: Option<Vec<u8>>) {
        crate::format::codec::set_extension(&mut self.extensions, tag, bytes);
    }

    /// The recorded extended attributes (POSIX ACLs included), sorted by name; empty when none.
    ///
    /// # Errors
    /// [`DecodeError`] when the extension's bytes are malformed (never for a decoded tree,
    /// whose extensions were validated).
    pub fn xattrs(&self) -> Result<Vec<Xattr>, DecodeError> {
        self.extension(EXTENSION_XATTRS)
            .map_or(Ok(Vec::new()), decode_xattrs)
    }

    /// Records extended attributes; an empty list removes the extension.
    pub fn set_xattrs(&mut self, xattrs: &[Xattr]) {
        let bytes = (!xattrs.is_empty()).then(|| encode_xattrs(xattrs));
        self.set_extension(EXTENSION_XATTRS, bytes);
    }

    /// The recorded owner and group names, if any were recorded.
    ///
    /// # Errors
    /// [`DecodeError`] when the extension's bytes are malformed.
    pub fn owner_names(&self) -> Result<Option<OwnerNames>, DecodeError> {
        self.extension(EXTENSION_OWNER_NAMES)
            .map(decode_owner_names)
            .transpose()
    }

    /// Records owner and group names; both empty removes the extension.
    pub fn set_owner_names(&mut self, names: &OwnerNames) {
        let bytes =
            (!names.user.is_empty() || !names.group.is_empty()).then(|| encode_owner_names(names));
        self.set_extension(EXTENSION_OWNER_NAMES, bytes);
    }

    /// The hard link count at backup time: 1 unless [`EXTENSION_LINKS`] says more.
    ///
    /// # Errors
    /// [`DecodeError`] when the extension's bytes are malformed.
    pub fn link_count(&self) -> Result<u64, DecodeError> {
        self.extension(EXTENSION_LINKS)
            .map_or(Ok(1), decode_link_count)
    }

    /// Records the hard link count; below 2 removes the extension.
    pub fn set_link_count(&mut self, links: u64) {
        let bytes = (links >= 2).then(|| links.to_le_bytes().to_vec());
        self.set_extension(EXTENSION_LINKS, bytes);
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

    /// The encoding version of a tree's bytes (their first two), without decoding the rest:
    /// version 1 trees record no extended attributes, owner names or hard links.
    pub fn encoded_version(bytes: &[u8]) -> Option<u16> {
        bytes
            .first_chunk()
            .map(|version| u16::from_le_bytes(*version))
    }

    /// Encodes the tree as version [`TREE_VERSION`]. Nodes must already be sorted and unique
    /// ([`Tree::sort`]); extensions are written sorted by tag.
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
                NodeKind::Fifo => {}
                NodeKind::Device { major, minor, .. } => {
                    writer.u32(*major).u32(*minor);
                }
            }
            writer.u16(u16::try_from(node.extensions.len()).expect("under 65536 extensions"));
            // Sorted by tag whatever order they were pushed in (a stable sort keeps the order of
            // a repeated tag, which decoding then rejects).
            let mut extensions: Vec<&(u16, Vec<u8>)> = node.extensions.iter().collect();
            extensions.sort_by_key(|(tag, _)| *tag);
            for (tag, bytes) in extensions {
                writer.u16(*tag).bytes(bytes);
            }
        }
        writer.finish()
    }

    /// Decodes and validates a tree of any version up to [`TREE_VERSION`]: names valid, sorted
    /// and unique; kinds and the payloads of known extensions valid for the tree's version;
    /// extension tags unique (in version 2 also ascending; a version 1 node's are sorted).
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
                4 if version >= 2 => NodeKind::Fifo,
                5 | 6 if version >= 2 => NodeKind::Device {
                    kind: if kind_byte == 5 {
                        DeviceKind::Character
                    } else {
                        DeviceKind::Block
                    },
                    major: reader.u32("device major")?,
                    minor: reader.u32("device minor")?,
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
                if version >= 2
                    && let Some((previous, _)) = extensions.last()
                    && *previous >= tag
                {
                    return Err(DecodeError::Invalid {
                        field: "extension tag",
                        reason: "not ascending",
                    });
                }
                let bytes = reader.bytes("extension")?;
                validate_extension(tag, bytes)?;
                extensions.push((tag, bytes.to_vec()));
            }
            // Version 1 did not order the tags: read them in the order version 2 writes them
            // (cairn 0.1.0 wrote at most one), so a v1 tree re-encodes as a valid v2 tree.
            extensions.sort_by_key(|(tag, _)| *tag);
            if extensions.windows(2).any(|pair| pair[0].0 == pair[1].0) {
                return Err(DecodeError::Invalid {
                    field: "extension tag",
                    reason: "repeated",
                });
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
            extensions: vec![(7, b"x".to_vec())],
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

    /// The v1 vector `tree/three-nodes` as cairn 0.1.0 wrote it (FORMAT.md before version 2).
    const V1_THREE_NODES: &str = concat!(
        "01000300000008000000646174612e62696e01a4810000e8030000e803000000",
        "b9556900000000f401000001b9556900000000000000002a0000000000000001",
        "08000000000000fc200000000000009c418709edcd0e5baf2a8f5a33fc138917",
        "60c32a830995b4c7c19aed4b91ffbf02000000b9dddda8dbda32d38f4e9c9d52",
        "ff672eaa1ded6cbb6bc3e40794a22cb4d2388752f2c8faa057adbb94018dae81",
        "152da372d4badeae604f2d5b7672219b44fa9e0000040000006c696e6b03ffa1",
        "0000e8030000e803000002b95569000000000000000002b95569000000000000",
        "00002b0000000000000001080000000000000000000000000000080000006461",
        "74612e62696e0100070001000000780300000073756202ed4100000000000000",
        "00000003b9556900000000ffc99a3b03b9556900000000ffc99a3b2c00000000",
        "000000010800000000000000000000000000003a93a33a56336cad786b2b52f6",
        "107f043f28eeb77b6553cc368d911dbf8c7d010000",
    );

    fn v2_node(name: &[u8], kind: NodeKind) -> Node {
        let mut node = node(name, kind);
        node.extensions.clear();
        node.set_xattrs(&[
            Xattr {
                name: b"user.b".to_vec(),
                value: vec![0, 1, 2],
            },
            Xattr {
                name: b"system.posix_acl_access".to_vec(),
                value: Vec::new(),
            },
        ]);
        node.set_owner_names(&OwnerNames {
            user: b"alice".to_vec(),
            group: Vec::new(),
        });
        node.set_link_count(3);
        node
    }

    #[test]
    fn version_1_trees_still_decode_and_reencode_as_version_2() {
        let bytes = hex::decode(V1_THREE_NODES).unwrap();
        let tree = Tree::decode(&bytes).unwrap();
        assert_eq!(tree.nodes.len(), 3);
        assert_eq!(tree.nodes[1].extensions, vec![(7, b"x".to_vec())]);
        let reencoded = tree.encode();
        assert_eq!(&reencoded[..2], &2u16.to_le_bytes());
        assert_eq!(&reencoded[2..], &bytes[2..], "only the version differs");
        assert_eq!(Tree::decode(&reencoded).unwrap(), tree);
    }

    #[test]
    fn version_2_kinds_and_extensions_round_trip() {
        let mut tree = Tree {
            nodes: vec![
                v2_node(
                    b"blk",
                    NodeKind::Device {
                        kind: DeviceKind::Block,
                        major: 8,
                        minor: u32::MAX,
                    },
                ),
                v2_node(
                    b"chr",
                    NodeKind::Device {
                        kind: DeviceKind::Character,
                        major: 1,
                        minor: 3,
                    },
                ),
                v2_node(b"fifo", NodeKind::Fifo),
            ],
        };
        tree.nodes[2].set_extension(EXTENSION_SPARSE, Some(Vec::new()));
        tree.nodes[2].set_extension(9, Some(b"future".to_vec()));
        let decoded = Tree::decode(&tree.encode()).unwrap();
        assert_eq!(decoded, tree);
        let fifo = &decoded.nodes[2];
        let tags: Vec<u16> = fifo.extensions.iter().map(|(tag, _)| *tag).collect();
        assert_eq!(tags, vec![1, 2, 3, 4, 9]);
        let names: Vec<Vec<u8>> = fifo.xattrs().unwrap().into_iter().map(|x| x.name).collect();
        assert_eq!(
            names,
            vec![b"system.posix_acl_access".to_vec(), b"user.b".to_vec()]
        );
        assert_eq!(fifo.owner_names().unwrap().unwrap().user, b"alice");
        assert_eq!(fifo.link_count().unwrap(), 3);
        let mut plain = fifo.clone();
        plain.set_xattrs(&[]);
        plain.set_owner_names(&OwnerNames::default());
        plain.set_link_count(1);
        assert_eq!(plain.xattrs().unwrap(), Vec::new());
        assert_eq!(plain.owner_names().unwrap(), None);
        assert_eq!(plain.link_count().unwrap(), 1);
    }

    #[test]
    fn version_1_extension_tags_are_read_sorted_and_never_repeated() {
        let mut tree = Tree {
            nodes: vec![node(b"a", NodeKind::Symlink { target: Vec::new() })],
        };
        tree.nodes[0].extensions = vec![(EXTENSION_SPARSE, Vec::new()), (7, b"x".to_vec())];
        let mut bytes = tree.encode();
        bytes[..2].copy_from_slice(&1u16.to_le_bytes());
        // Swap the two extensions as a v1 writer may have ordered them.
        let tail = bytes.len() - (2 + 4 + 2 + 4 + 1);
        let (first, second) = bytes[tail..].split_at(6);
        let swapped: Vec<u8> = [second, first].concat();
        bytes.truncate(tail);
        bytes.extend_from_slice(&swapped);
        assert_eq!(Tree::decode(&bytes).unwrap(), tree);
        let mut repeated = bytes.clone();
        repeated[tail..tail + 2].copy_from_slice(&EXTENSION_SPARSE.to_le_bytes());
        repeated[tail + 2..tail + 6].copy_from_slice(&0u32.to_le_bytes());
        repeated.truncate(tail + 6);
        repeated.extend_from_slice(&EXTENSION_SPARSE.to_le_bytes());
        repeated.extend_from_slice(&0u32.to_le_bytes());
        assert!(Tree::decode(&repeated).is_err());
    }

    #[test]
    fn version_2_kinds_are_rejected_in_version_1_trees() {
        let tree = Tree {
            nodes: vec![node(b"fifo", NodeKind::Fifo)],
        };
        let mut bytes = tree.encode();
        assert!(Tree::decode(&bytes).is_ok());
        bytes[..2].copy_from_slice(&1u16.to_le_bytes());
        assert!(Tree::decode(&bytes).is_err());
    }

    #[test]
    fn malformed_extensions_are_rejected() {
        let xattr = |name: &[u8], value_len: usize| Xattr {
            name: name.to_vec(),
            value: vec![7; value_len],
        };
        let repeated = {
            let mut bytes = Writer::new();
            bytes
                .count(2)
                .bytes(b"user.a")
                .bytes(b"")
                .bytes(b"user.a")
                .bytes(b"");
            bytes.finish()
        };
        let bad: Vec<(u16, Vec<u8>)> = vec![
            (EXTENSION_SPARSE, vec![1]),
            (EXTENSION_XATTRS, encode_xattrs(&[xattr(b"", 1)])),
            (EXTENSION_XATTRS, encode_xattrs(&[xattr(b"user.\0x", 1)])),
            (EXTENSION_XATTRS, encode_xattrs(&[xattr(&[b'u'; 256], 1)])),
            (EXTENSION_XATTRS, encode_xattrs(&[xattr(b"user.a", 65_537)])),
            (EXTENSION_XATTRS, repeated),
            (EXTENSION_XATTRS, vec![0xff, 0xff, 0xff, 0xff]),
            (EXTENSION_OWNER_NAMES, vec![0, 0, 0, 0]),
            (
                EXTENSION_OWNER_NAMES,
                encode_owner_names(&OwnerNames {
                    user: b"a\0".to_vec(),
                    group: Vec::new(),
                }),
            ),
            (EXTENSION_LINKS, 1u64.to_le_bytes().to_vec()),
            (EXTENSION_LINKS, vec![2, 0, 0]),
        ];
        for (tag, bytes) in bad {
            let mut tree = Tree {
                nodes: vec![node(b"a", NodeKind::Fifo)],
            };
            tree.nodes[0].extensions = vec![(tag, bytes.clone())];
            assert!(
                Tree::decode(&tree.encode()).is_err(),
                "tag {tag} with {bytes:?} was accepted"
            );
        }
        let mut descending = Tree {
            nodes: vec![node(b"a", NodeKind::Fifo)],
        };
        descending.nodes[0].extensions = vec![(8, Vec::new()), (7, Vec::new())];
        let mut bytes = descending.encode();
        // The encoder sorts; put the tags back in descending order by hand.
        let tail = bytes.len() - 12;
        bytes[tail..tail + 2].copy_from_slice(&8u16.to_le_bytes());
        bytes[tail + 6..tail + 8].copy_from_slice(&7u16.to_le_bytes());
        assert!(Tree::decode(&bytes).is_err());
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
