//! The decoders of stored bytes as fuzz targets, one function per target, and the valid encodings
//! the corpus is seeded with. Shared by the libFuzzer targets in `fuzz/fuzz_targets/` and by the
//! stable replay test `tests/it/fuzz_corpus.rs`, which includes this file as a module, so the
//! corpus is replayed through exactly the dispatch the fuzzer ran.
//!
//! Every target must return for any input: a decoding error is fine; a panic, an allocation sized
//! by an unchecked length field, or a hang is a bug in the library. Sealed objects are fed twice:
//! to the plaintext body parser (`decode_body`), and through the full open path under the fixed
//! key of FORMAT.md's test vectors (which mostly exercises the framing before authentication;
//! seeds sealed under that key let mutations of their blob area reach past it).
//!
//! No I/O here: the seeds are returned as bytes and the caller writes them.

use std::sync::LazyLock;

use cairn_store::format::config::{self, Config};
use cairn_store::format::envelope;
use cairn_store::format::index::{self, IndexObject, IndexedPack};
use cairn_store::format::lifecycle::{
    self, InflightList, ProcessPlace, PruneLease, PruneRecord, SessionEnd, SessionId, SessionMarker,
};
use cairn_store::format::pack::{self, PackEntry, SealedBlob};
use cairn_store::format::snapshot::{self, Snapshot, Source, Summary};
use cairn_store::format::tree::{
    DeviceKind, EXTENSION_SPARSE, Node, NodeKind, OwnerNames, TREE_VERSION, Timestamp, Tree, Xattr,
};
use cairn_store::keys::{KdfParams, KeyObject, MasterSecret, RepositoryKeys};
use cairn_store::seal::{self, SealKey};
use cairn_store::{BlobType, Id};

/// The master secret of FORMAT.md's test vectors; the full open paths use the keys derived from it.
pub const MASTER: [u8; 32] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
    26, 27, 28, 29, 30, 31,
];
/// The password key objects are unwrapped with (that of FORMAT.md's key object vector).
pub const PASSWORD: &[u8] = b"correct horse battery staple";
/// Key objects are unwrapped only up to this Argon2id memory (KiB), so one execution stays in
/// milliseconds. The decoder's own bound (1 GiB) is asserted separately.
const UNWRAP_MAX_MEMORY_KIB: u32 = 256;
/// Key objects are unwrapped only up to this many Argon2id passes.
const UNWRAP_MAX_ITERATIONS: u32 = 2;
/// Plaintext bound for the authentic-message half of the `envelope` target.
const MESSAGE_MAX_PLAINTEXT: usize = 64 * 1024;
/// The expected length handed to `seal::open` as if an authenticated entry had stated it.
const MESSAGE_EXPECTED_LEN: usize = 1024;

static KEYS: LazyLock<RepositoryKeys> =
    LazyLock::new(|| RepositoryKeys::derive(&MasterSecret(MASTER)));

fn data_key() -> &'static SealKey {
    &KEYS.data_key
}

/// Which decoders accepted an input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accepted {
    /// The plaintext body parser (or, for trees and key objects, the one decoder).
    pub body: bool,
    /// The full open path of stored bytes under the fixed key.
    pub stored: bool,
}

impl Accepted {
    /// Whether any decoder accepted the input.
    pub fn any(self) -> bool {
        self.body || self.stored
    }
}

/// A fuzz target: its name (the directory of its corpus) and the function it runs.
pub type Target = (&'static str, fn(&[u8]) -> Accepted);

/// Every target, by name.
pub const TARGETS: [Target; 8] = [
    ("pack_trailer", pack_trailer),
    ("index_object", index_object),
    ("tree", tree),
    ("snapshot", snapshot),
    ("key_object", key_object),
    ("config", config),
    ("envelope", envelope),
    ("lifecycle", lifecycle_objects),
];

/// The garbage-collection objects of FORMAT.md section 21 (session start and end markers, prune
/// records, in-flight lists, the prune lease): every decoder on the stored bytes, and every
/// decoder on the input sealed as an authentic body of each kind (so the body parsers behind
/// authentication run on hostile plaintext). Accepted objects must re-encode to the same body.
pub fn lifecycle_objects(data: &[u8]) -> Accepted {
    let stored = decode_lifecycle(data);
    let mut body = false;
    let public = [0x5a; 16];
    // Markers and the lease are read in two versions (the second adds the process place).
    for (magic, public_len, versions) in [
        (
            lifecycle::SESSION_MAGIC,
            lifecycle::SESSION_ID_LEN,
            1..=lifecycle::MARKER_VERSION,
        ),
        (
            lifecycle::SESSION_DONE_MAGIC,
            lifecycle::SESSION_ID_LEN,
            1..=1,
        ),
        (lifecycle::PRUNE_RECORD_MAGIC, 8, 1..=1),
        (lifecycle::INFLIGHT_MAGIC, 8, 1..=1),
        (lifecycle::LEASE_MAGIC, 0, 1..=lifecycle::MARKER_VERSION),
    ] {
        for version in versions {
            let sealed = envelope::seal_object(
                data_key(),
                cairn_store::format::codec::ObjectHeader { magic, version },
                &public[..public_len],
                data,
                None,
                [0; 24],
            );
            body |= decode_lifecycle(&sealed);
        }
    }
    Accepted { body, stored }
}

fn decode_lifecycle(bytes: &[u8]) -> bool {
    let key = data_key();
    let mut accepted = false;
    if let Ok(marker) = SessionMarker::decode(key, bytes) {
        assert_eq!(
            SessionMarker::decode(key, &marker.encode(key, [1; 24])).ok(),
            Some(marker)
        );
        accepted = true;
    }
    if let Ok(end) = SessionEnd::decode(key, bytes) {
        assert_eq!(
            SessionEnd::decode(key, &end.encode(key, [1; 24])).ok(),
            Some(end)
        );
        accepted = true;
    }
    if let Ok(record) = PruneRecord::decode(key, bytes) {
        assert_eq!(
            PruneRecord::decode(key, &record.encode(key, [1; 24])).ok(),
            Some(record)
        );
        accepted = true;
    }
    if let Ok(list) = InflightList::decode(key, bytes) {
        assert_eq!(
            InflightList::decode(key, &list.encode(key, [1; 24])).ok(),
            Some(list)
        );
        accepted = true;
    }
    if let Ok(lease) = PruneLease::decode(key, bytes) {
        assert_eq!(
            PruneLease::decode(key, &lease.encode(key, [1; 24])).ok(),
            Some(lease)
        );
        accepted = true;
    }
    accepted
}

/// A pack: the footer (`trailer_range`), the trailer plaintext parser (`decode_trailer`, with the
/// trailer starting at the end of the input and far beyond it), and the whole pack through
/// `read_pack_entries`; when that succeeds, every blob is opened and tree blobs are decoded, as
/// `check --read-data` and restore do.
pub fn pack_trailer(data: &[u8]) -> Accepted {
    if let Some(footer) = data.last_chunk::<4>() {
        let _ = pack::trailer_range(data.len() as u64, *footer);
    }
    let _ = pack::decode_trailer(data, data.len() as u64);
    let body = pack::decode_trailer(data, u64::from(u32::MAX)).is_ok();
    let Ok(entries) = pack::read_pack_entries(data_key(), data) else {
        return Accepted {
            body,
            stored: false,
        };
    };
    for entry in &entries {
        let range = entry.range();
        let sealed = usize::try_from(range.start)
            .ok()
            .zip(usize::try_from(range.end).ok())
            .and_then(|(start, end)| data.get(start..end))
            .expect("read_pack_entries returned an entry outside the pack");
        if let Ok(plaintext) = pack::open_blob(data_key(), entry, sealed) {
            assert_eq!(plaintext.len(), entry.raw_length as usize);
            if entry.blob_type == BlobType::Tree {
                let _ = Tree::decode(&plaintext);
            }
        }
    }
    Accepted { body, stored: true }
}

/// An index object: its body parser, and the stored object under the fixed key. A body that
/// decodes must survive encoding and decoding again unchanged.
pub fn index_object(data: &[u8]) -> Accepted {
    let body = IndexObject::decode_body(data).is_ok_and(|decoded| {
        let encoded = decoded.encode(data_key(), None, [0; 24]);
        assert_eq!(
            IndexObject::decode(data_key(), &encoded).as_ref(),
            Ok(&decoded)
        );
        true
    });
    let stored = IndexObject::decode(data_key(), data).is_ok();
    Accepted { body, stored }
}

/// A tree (the plaintext of a tree blob). The encoding is canonical: a tree of the newest
/// version that decodes must encode to the same bytes; an older tree re-encodes (as the newest
/// version) to bytes that decode to the same tree.
pub fn tree(data: &[u8]) -> Accepted {
    let body = Tree::decode(data).is_ok_and(|decoded| {
        let encoded = decoded.encode();
        if data.starts_with(&TREE_VERSION.to_le_bytes()) {
            assert_eq!(encoded, data, "a decoded tree re-encodes differently");
        } else {
            assert_eq!(
                Tree::decode(&encoded).ok().as_ref(),
                Some(&decoded),
                "an older tree re-encodes to a tree that decodes differently"
            );
        }
        true
    });
    Accepted {
        body,
        stored: false,
    }
}

/// A snapshot: its body parser, and the stored object under the fixed key. A body that decodes
/// must survive encoding and decoding again unchanged.
pub fn snapshot(data: &[u8]) -> Accepted {
    let body = Snapshot::decode_body(data).is_ok_and(|decoded| {
        let encoded = decoded.encode(data_key(), None, [0; 24]);
        assert_eq!(
            Snapshot::decode(data_key(), &encoded).as_ref(),
            Ok(&decoded)
        );
        true
    });
    let stored = Snapshot::decode(data_key(), data).is_ok();
    Accepted { body, stored }
}

/// A key object: `KeyObject::decode`, which must refuse KDF costs above its documented bounds
/// (so a hostile key object cannot make `open` allocate without limit) and whose encoding is
/// canonical; then `unwrap` with the fixed password when the cost is small enough to run here.
pub fn key_object(data: &[u8]) -> Accepted {
    let Ok(decoded) = KeyObject::decode(data) else {
        return Accepted::default();
    };
    let kdf = decoded.kdf;
    assert!(
        kdf.memory_kib <= KdfParams::MAX_MEMORY_KIB
            && kdf.iterations <= KdfParams::MAX_ITERATIONS
            && kdf.parallelism <= KdfParams::MAX_PARALLELISM,
        "key object decoded with KDF parameters above the bounds: {kdf:?}"
    );
    assert_eq!(
        decoded.encode(),
        data,
        "a decoded key object re-encodes differently"
    );
    let stored = kdf.memory_kib <= UNWRAP_MAX_MEMORY_KIB
        && kdf.iterations <= UNWRAP_MAX_ITERATIONS
        && decoded.unwrap(PASSWORD).is_ok();
    Accepted { body: true, stored }
}

/// The config: `Config::peek` (read before any key), its body parser, and the stored object under
/// the fixed key. A body that decodes must survive encoding and decoding again unchanged.
pub fn config(data: &[u8]) -> Accepted {
    let peeked = Config::peek(data);
    let body = Config::decode_body(config::FORMAT_VERSION, [7; config::REPOSITORY_ID_LEN], data)
        .is_ok_and(|decoded| {
            let encoded = decoded.encode(data_key(), [0; 24]);
            assert_eq!(Config::decode(data_key(), &encoded).as_ref(), Ok(&decoded));
            true
        });
    let stored = Config::decode(data_key(), data).is_ok_and(|decoded| {
        assert_eq!(
            peeked,
            Ok((decoded.version, decoded.repository_id)),
            "peek disagrees with decode"
        );
        true
    });
    Accepted { body, stored }
}

/// The common envelope of config, index and snapshot objects: the input as stored bytes through
/// `read_public` and `open_object` for each kind; then the input as an authentic sealed message
/// (`compression byte || payload`, sealed under the fixed key), opened with and without an
/// expected length, so unknown compression bytes and hostile zstd frames (bombs, truncated,
/// mismatched lengths) reach the bounded decompressor.
pub fn envelope(data: &[u8]) -> Accepted {
    let mut stored = false;
    for (magic, public_len, version) in [
        (
            config::CONFIG_MAGIC,
            config::REPOSITORY_ID_LEN,
            config::FORMAT_VERSION,
        ),
        (index::INDEX_MAGIC, 0, 1),
        (snapshot::SNAPSHOT_MAGIC, 0, 1),
    ] {
        let _ = envelope::read_public(data, magic, version, "fuzzed object", public_len);
        stored |= envelope::open_object(
            data_key(),
            data,
            magic,
            version,
            "fuzzed object",
            public_len,
            MESSAGE_MAX_PLAINTEXT,
        )
        .is_ok();
    }
    let sealed = seal::seal_message(data_key(), [0; 24], b"fuzzed message", data);
    let opened = seal::open(
        data_key(),
        b"fuzzed message",
        &sealed,
        None,
        MESSAGE_MAX_PLAINTEXT,
    );
    if let Ok(plaintext) = &opened {
        assert!(plaintext.len() <= MESSAGE_MAX_PLAINTEXT);
    }
    if let Ok(plaintext) = seal::open(
        data_key(),
        b"fuzzed message",
        &sealed,
        Some(MESSAGE_EXPECTED_LEN),
        MESSAGE_MAX_PLAINTEXT,
    ) {
        assert_eq!(plaintext.len(), MESSAGE_EXPECTED_LEN);
    }
    Accepted {
        body: opened.is_ok(),
        stored,
    }
}

/// `(0..251).cycle()`, FORMAT.md's test pattern.
fn pattern(length: usize) -> Vec<u8> {
    (0..=250u8).cycle().take(length).collect()
}

fn seal_blob(blob_type: BlobType, plaintext: &[u8], level: Option<i32>, nonce: u8) -> SealedBlob {
    let id = KEYS.blob_id(blob_type, plaintext);
    SealedBlob {
        blob_type,
        id,
        raw_length: u32::try_from(plaintext.len()).expect("seed blob under 4 GiB"),
        sealed: seal::seal(
            data_key(),
            [nonce; 24],
            &seal::blob_associated_data(blob_type, &id),
            plaintext,
            level,
        ),
    }
}

fn sample_tree(subtree: Id, chunks: Vec<Id>) -> Tree {
    let node = |name: &[u8], kind| Node {
        name: name.to_vec(),
        kind,
        mode: 0o100_644,
        uid: 1000,
        gid: 1000,
        mtime: Timestamp {
            seconds: 1_767_225_600,
            nanos: 500,
        },
        ctime: Timestamp {
            seconds: 1_767_225_601,
            nanos: 0,
        },
        inode: 42,
        device: 2049,
        size: 8444,
        extensions: Vec::new(),
    };
    let mut file = node(
        b"data.bin",
        NodeKind::File {
            content_hash: Id([9; 32]),
            chunks,
        },
    );
    file.extensions.push((EXTENSION_SPARSE, Vec::new()));
    let mut tree = Tree {
        nodes: vec![
            file,
            node(
                b"link",
                NodeKind::Symlink {
                    target: b"data.bin".to_vec(),
                },
            ),
            node(b"sub", NodeKind::Directory { subtree }),
            node(b"x", NodeKind::Symlink { target: Vec::new() }),
        ],
    };
    tree.nodes[3].extensions.push((7, b"future".to_vec()));
    // Tree version 2: special kinds and the typed extensions.
    let mut fifo = node(b"fifo", NodeKind::Fifo);
    fifo.set_xattrs(&[
        Xattr {
            name: b"system.posix_acl_access".to_vec(),
            value: vec![2, 0, 0, 0, 4, 0, 4, 0, 255, 255, 255, 255],
        },
        Xattr {
            name: b"user.note".to_vec(),
            value: b"v".to_vec(),
        },
    ]);
    fifo.set_owner_names(&OwnerNames {
        user: b"alice".to_vec(),
        group: b"staff".to_vec(),
    });
    tree.nodes.push(fifo);
    tree.nodes.push(node(
        b"tty",
        NodeKind::Device {
            kind: DeviceKind::Character,
            major: 4,
            minor: 1,
        },
    ));
    tree.nodes[0].set_link_count(2);
    tree.sort();
    tree
}

fn opened_body(bytes: &[u8], magic: [u8; 4], public_len: usize) -> Vec<u8> {
    envelope::open_object(
        data_key(),
        bytes,
        magic,
        u16::MAX,
        "seed",
        public_len,
        usize::MAX,
    )
    .expect("seed opens")
    .body
}

fn trailer_plaintext(entries: &[PackEntry]) -> Vec<u8> {
    let mut writer = cairn_store::format::codec::Writer::new();
    writer.count(entries.len());
    for entry in entries {
        entry.encode_into(&mut writer);
    }
    writer.finish()
}

/// Valid encodings to seed each target with, sealed under the fixed key: `(target, seed name,
/// bytes)`. Every seed is accepted by at least one decoder of its target.
///
/// # Panics
/// If the library cannot encode or open its own output.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut seeds = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| {
        seeds.push((target, name.to_owned(), bytes));
    };

    let session = SessionId([0x11; 16]);
    let place = ProcessPlace {
        machine_id: [0x21; 16],
        boot_id: [0x22; 16],
        pid_namespace: 4_026_531_836,
        pid: 4242,
        start_ticks: 123_456,
    };
    let marker = SessionMarker {
        session,
        host: "db-1".into(),
        place,
        started_unix: 1_767_225_600,
    };
    add("lifecycle", "session", marker.encode(data_key(), [20; 24]));
    add(
        "lifecycle",
        "session-v1",
        marker.encode_v1(data_key(), [25; 24]),
    );
    add(
        "lifecycle",
        "session-end",
        SessionEnd {
            session,
            snapshot: Some(Id([7; 32])),
            ended_by: 0,
        }
        .encode(data_key(), [21; 24]),
    );
    add(
        "lifecycle",
        "prune-record",
        PruneRecord {
            generation: 3,
            condemned: vec![Id([1; 32]), Id([2; 32])],
            resurrected: vec![Id([3; 32])],
        }
        .encode(data_key(), [22; 24]),
    );
    add(
        "lifecycle",
        "inflight",
        InflightList {
            generation: 3,
            sessions: vec![session],
        }
        .encode(data_key(), [23; 24]),
    );
    add(
        "lifecycle",
        "lease",
        PruneLease {
            token: [9; 16],
            host: "db-1".into(),
            place: ProcessPlace { pid: 7, ..place },
            started_unix: 1_767_225_600,
            ttl_seconds: 900,
        }
        .encode(data_key(), [24; 24]),
    );

    let empty_tree = Tree::default().encode();
    let chunk_plaintexts = [pattern(252), pattern(1), vec![0; 4096]];
    let chunk_blobs: Vec<SealedBlob> = chunk_plaintexts
        .iter()
        .zip(0u8..)
        .map(|(plaintext, nonce)| seal_blob(BlobType::Data, plaintext, Some(3), nonce))
        .collect();
    let tree = sample_tree(
        KEYS.blob_id(BlobType::Tree, &empty_tree),
        chunk_blobs.iter().map(|blob| blob.id).collect(),
    )
    .encode();
    add("tree", "empty", empty_tree.clone());
    add("tree", "four-nodes", tree.clone());

    let (data_pack, data_pack_id, data_entries) =
        pack::build_pack(data_key(), &chunk_blobs, [10; 24]);
    let tree_blobs = [
        seal_blob(BlobType::Tree, &empty_tree, None, 11),
        seal_blob(BlobType::Tree, &tree, Some(3), 12),
    ];
    let (tree_pack, tree_pack_id, tree_entries) =
        pack::build_pack(data_key(), &tree_blobs, [13; 24]);
    let (empty_pack, _, _) = pack::build_pack(data_key(), &[], [14; 24]);
    add("pack_trailer", "data-pack", data_pack.clone());
    add("pack_trailer", "tree-pack", tree_pack.clone());
    add("pack_trailer", "empty-pack", empty_pack);
    add(
        "pack_trailer",
        "data-trailer-plaintext",
        trailer_plaintext(&data_entries),
    );
    add(
        "pack_trailer",
        "tree-trailer-plaintext",
        trailer_plaintext(&tree_entries),
    );

    let index = IndexObject {
        superseded: vec![Id([5; 32])],
        packs: vec![
            IndexedPack {
                pack_id: data_pack_id,
                pack_length: data_pack.len() as u64,
                entries: data_entries,
            },
            IndexedPack {
                pack_id: tree_pack_id,
                pack_length: tree_pack.len() as u64,
                entries: tree_entries,
            },
        ],
    };
    let index_plain = index.encode(data_key(), None, [15; 24]);
    let index_compressed = index.encode(data_key(), Some(3), [16; 24]);
    add(
        "index_object",
        "body",
        opened_body(&index_plain, index::INDEX_MAGIC, 0),
    );
    add("index_object", "stored", index_plain.clone());
    add("index_object", "stored-compressed", index_compressed);
    add(
        "index_object",
        "empty-body",
        opened_body(
            &IndexObject::default().encode(data_key(), None, [0; 24]),
            index::INDEX_MAGIC,
            0,
        ),
    );

    let mut snapshots = Vec::new();
    for (name, source, parent) in [
        (
            "paths",
            Source::Paths(vec!["/srv/app".into(), "/etc/hosts".into()]),
            None,
        ),
        (
            "stdin",
            Source::Stdin("app.archive".into()),
            Some(Id([6; 32])),
        ),
    ] {
        let snapshot = Snapshot {
            time: Timestamp {
                seconds: 1_767_225_600,
                nanos: 123_456_789,
            },
            host: "db-1".into(),
            username: "backup".into(),
            tags: vec!["nightly".into(), "mongo".into()],
            source,
            root: Id([8; 32]),
            parent,
            summary: Summary {
                files: 2,
                directories: 3,
                bytes_processed: 8444,
                bytes_added: 9000,
                blobs_added: 4,
                entries_unreadable: 0,
            },
            program_version: "0.1.0".into(),
            extensions: Vec::new(),
        };
        let stored = snapshot.encode(data_key(), None, [17; 24]);
        add(
            "snapshot",
            &format!("{name}-body"),
            opened_body(&stored, snapshot::SNAPSHOT_MAGIC, 0),
        );
        add("snapshot", &format!("{name}-stored"), stored.clone());
        snapshots.push(stored);
    }

    let master = MasterSecret(MASTER);
    for (name, kdf, host) in [
        (
            "cheap",
            KdfParams {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            },
            "vector-host",
        ),
        (
            "two-lanes",
            KdfParams {
                memory_kib: 128,
                iterations: 2,
                parallelism: 2,
            },
            "",
        ),
    ] {
        let key = KeyObject::wrap_with(
            &master,
            PASSWORD,
            kdf,
            host,
            1_767_225_600,
            [0xa0; 16],
            [0xb0; 24],
        )
        .expect("cheap KDF parameters are accepted");
        add("key_object", name, key.encode());
    }

    let config = Config {
        version: config::FORMAT_VERSION,
        repository_id: [0x11; config::REPOSITORY_ID_LEN],
        chunker: cairn_chunker::ChunkerParams {
            min_size: 2048,
            avg_size: 8192,
            max_size: 32768,
        },
        pack_target_size: config::DEFAULT_PACK_TARGET_SIZE,
        compression_level: 3,
        created_unix: 1_767_225_600,
        chunker_seed: None,
    };
    let stored_config = config.encode(data_key(), [18; 24]);
    add(
        "config",
        "body",
        opened_body(
            &stored_config,
            config::CONFIG_MAGIC,
            config::REPOSITORY_ID_LEN,
        ),
    );
    add("config", "stored", stored_config.clone());

    add("envelope", "config", stored_config);
    add("envelope", "index", index_plain);
    add("envelope", "snapshot", snapshots.swap_remove(0));
    let mut message = vec![0];
    message.extend_from_slice(b"plain payload");
    add("envelope", "message-plain", message);
    for (name, plaintext) in [
        ("message-zstd", pattern(3000)),
        ("message-zstd-expected", pattern(MESSAGE_EXPECTED_LEN)),
    ] {
        let mut message = vec![1];
        message.extend_from_slice(&zstd::bulk::compress(&plaintext, 3).expect("zstd compresses"));
        add("envelope", name, message);
    }
    seeds
}
