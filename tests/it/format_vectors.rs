//! The executable test vectors of FORMAT.md: every fenced `vector` block is recomputed with the
//! library, its expected bytes are decoded back and checked, and a stale vector fails by name.
//! With `CAIRN_UPDATE_VECTORS=1` the test rewrites the `expected*` lines of FORMAT.md instead
//! (it is the generator). FORMAT.md ("Test vectors") documents the block syntax.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use cairn_chunker::{Chunker, ChunkerParams};
use cairn_store::format::config::{self, Config};
use cairn_store::format::envelope;
use cairn_store::format::index::{self as index_format, IndexObject, IndexedPack};
use cairn_store::format::lifecycle::{
    self, ProcessPlace, PruneLease, PruneRecord, SessionId, SessionMarker,
};
use cairn_store::format::pack::{self, SealedBlob};
use cairn_store::format::snapshot::{self as snapshot_format, Snapshot, Source, Summary};
use cairn_store::format::tree::{DeviceKind, Node, NodeKind, OwnerNames, Timestamp, Tree, Xattr};
use cairn_store::keys::{self, KdfParams, KeyObject, MasterSecret, RepositoryKeys};
use cairn_store::repository::{
    INDEX_PREFIX, KEYS_PREFIX, SNAPSHOTS_PREFIX, object_name, pack_name,
};
use cairn_store::seal::{self, SEAL_OVERHEAD, SealKey};
use cairn_store::{BlobType, Id};

/// Opening line of a vector block.
const FENCE_OPEN: &str = "```vector";
/// Closing line of any fenced block.
const FENCE_CLOSE: &str = "```";
/// Outputs up to this many bytes are given in full; longer ones as length and BLAKE3 digest.
const MAX_INLINE_BYTES: usize = 1024;
/// Hex digits per continuation line.
const HEX_LINE: usize = 64;
/// Longest line written for list values.
const LIST_LINE: usize = 96;
/// The label whose BLAKE3 extendable output is the `xof(N)` input.
const XOF_LABEL: &[u8] = b"cairn test vector";
/// Set to `1` to rewrite the expected values instead of checking them.
const UPDATE_VARIABLE: &str = "CAIRN_UPDATE_VECTORS";
/// Every kind FORMAT.md must keep at least one vector of.
const REQUIRED_KINDS: [&str; 13] = [
    "derive-keys",
    "blob-id",
    "seal",
    "key-object",
    "config",
    "pack",
    "index",
    "tree",
    "snapshot",
    "chunker",
    "prune-record",
    "session-marker",
    "prune-lease",
];

fn format_md_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../FORMAT.md")
}

/// One `key = value` line of a block with its indented continuation lines.
#[derive(Debug, Clone)]
struct Field {
    key: String,
    /// The value, continuation lines joined with one space.
    value: String,
    /// The lines as written.
    lines: Vec<String>,
}

/// A line of a block: a field, or a blank or `#` comment line kept as it is.
#[derive(Debug, Clone)]
enum Item {
    Field(Field),
    Other(String),
}

/// A parsed vector block and where it sits in FORMAT.md.
#[derive(Debug)]
struct Vector {
    /// Line index of the opening fence.
    open: usize,
    /// Line index of the closing fence.
    close: usize,
    items: Vec<Item>,
}

impl Vector {
    fn fields(&self) -> impl Iterator<Item = &Field> {
        self.items.iter().filter_map(|item| match item {
            Item::Field(field) => Some(field),
            Item::Other(_) => None,
        })
    }

    fn name(&self) -> String {
        self.optional("name").map_or_else(
            || format!("<unnamed vector at line {}>", self.open + 1),
            str::to_owned,
        )
    }

    fn all(&self, key: &str) -> Vec<&str> {
        self.fields()
            .filter(|field| field.key == key)
            .map(|field| field.value.as_str())
            .collect()
    }

    fn optional(&self, key: &str) -> Option<&str> {
        self.all(key).first().copied()
    }

    fn one(&self, key: &str) -> Result<&str, String> {
        match self.all(key).as_slice() {
            [value] => Ok(value),
            [] => Err(format!("lacks `{key}`")),
            _ => Err(format!("has `{key}` more than once")),
        }
    }
}

fn parse_document(text: &str) -> Result<(Vec<String>, Vec<Vector>), String> {
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut vectors = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        if lines[index].trim_end() != FENCE_OPEN {
            index += 1;
            continue;
        }
        let open = index;
        let mut items: Vec<Item> = Vec::new();
        index += 1;
        loop {
            let Some(line) = lines.get(index) else {
                return Err(format!("vector block at line {} is not closed", open + 1));
            };
            if line.trim_end() == FENCE_CLOSE {
                break;
            }
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                items.push(Item::Other(line.clone()));
            } else if line.starts_with(char::is_whitespace) {
                let Some(Item::Field(field)) = items
                    .iter_mut()
                    .rev()
                    .find(|item| matches!(item, Item::Field(_)))
                else {
                    return Err(format!("line {}: continuation before any field", index + 1));
                };
                if !field.value.is_empty() {
                    field.value.push(' ');
                }
                field.value.push_str(line.trim());
                field.lines.push(line.clone());
            } else {
                let (key, value) = line
                    .split_once('=')
                    .ok_or_else(|| format!("line {}: expected `key = value`", index + 1))?;
                items.push(Item::Field(Field {
                    key: key.trim().to_owned(),
                    value: value.trim().to_owned(),
                    lines: vec![line.clone()],
                }));
            }
            index += 1;
        }
        vectors.push(Vector {
            open,
            close: index,
            items,
        });
        index += 1;
    }
    Ok((lines, vectors))
}

/// The computed `expected*` values of one vector, in the order they are written.
#[derive(Debug, Default)]
struct Outputs(Vec<(String, String)>);

impl Outputs {
    fn text(&mut self, key: &str, value: impl Into<String>) {
        self.0.push((key.to_owned(), value.into()));
    }

    fn hex(&mut self, key: &str, bytes: &[u8]) {
        self.text(key, hex::encode(bytes));
    }

    /// The stored bytes in full, or their length and BLAKE3 when they are long.
    fn bytes(&mut self, bytes: &[u8]) {
        if bytes.len() <= MAX_INLINE_BYTES {
            self.hex("expected", bytes);
        } else {
            self.text("expected_len", bytes.len().to_string());
            self.hex("expected_blake3", blake3::hash(bytes).as_bytes());
        }
    }
}

/// Ids and packs computed by earlier vectors, for `@name` references.
#[derive(Debug, Default)]
struct Context {
    ids: HashMap<String, Id>,
    packs: HashMap<String, IndexedPack>,
}

fn pattern(length: usize) -> Vec<u8> {
    (0..251u8).cycle().take(length).collect()
}

fn xof(length: usize) -> Vec<u8> {
    let mut out = vec![0u8; length];
    blake3::Hasher::new()
        .update(XOF_LABEL)
        .finalize_xof()
        .fill(&mut out);
    out
}

fn call_argument<'a>(text: &'a str, function: &str) -> Option<&'a str> {
    text.strip_prefix(function)?
        .strip_prefix('(')?
        .strip_suffix(')')
}

fn parse_usize(text: &str) -> Result<usize, String> {
    usize::try_from(parse_u64(text)?).map_err(|_| format!("{text} does not fit in usize"))
}

fn parse_u64(text: &str) -> Result<u64, String> {
    let text = text.trim().replace('_', "");
    let parsed = if let Some(digits) = text.strip_prefix("0x") {
        u64::from_str_radix(digits, 16)
    } else if let Some(digits) = text.strip_prefix("0o") {
        u64::from_str_radix(digits, 8)
    } else {
        text.parse()
    };
    parsed.map_err(|_| format!("not a number: {text:?}"))
}

fn parse_u32(text: &str) -> Result<u32, String> {
    u32::try_from(parse_u64(text)?).map_err(|_| format!("{text} does not fit in u32"))
}

fn parse_i64(text: &str) -> Result<i64, String> {
    let text = text.trim();
    match text.strip_prefix('-') {
        Some(rest) => i64::try_from(parse_u64(rest)?)
            .map(|value| -value)
            .map_err(|_| format!("{text} does not fit in i64")),
        None => i64::try_from(parse_u64(text)?).map_err(|_| format!("{text} does not fit in i64")),
    }
}

fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: String = text.split_whitespace().collect();
    hex::decode(&digits).map_err(|_| format!("not hex: {digits:?}"))
}

fn parse_fixed<const N: usize>(text: &str) -> Result<[u8; N], String> {
    parse_hex(text)?
        .try_into()
        .map_err(|_| format!("expected {N} bytes of hex: {text:?}"))
}

fn parse_quoted(text: &str) -> Result<String, String> {
    text.trim()
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .map(str::to_owned)
        .ok_or_else(|| format!("expected a \"quoted\" string: {text:?}"))
}

/// `pattern(N)`, `xof(N)`, `empty`, `"text"` or hex.
fn parse_bytes(text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim();
    if let Some(length) = call_argument(text, "pattern") {
        return Ok(pattern(parse_usize(length)?));
    }
    if let Some(length) = call_argument(text, "xof") {
        return Ok(xof(parse_usize(length)?));
    }
    if text == "empty" {
        return Ok(Vec::new());
    }
    if text.starts_with('"') {
        return parse_quoted(text).map(String::into_bytes);
    }
    parse_hex(text)
}

fn parse_id(context: &Context, text: &str) -> Result<Id, String> {
    match text.trim().strip_prefix('@') {
        Some(name) => context
            .ids
            .get(name)
            .copied()
            .ok_or_else(|| format!("@{name} names no earlier vector with an id")),
        None => parse_fixed::<32>(text).map(Id),
    }
}

fn parse_level(text: &str) -> Result<Option<i32>, String> {
    if text.trim() == "none" {
        return Ok(None);
    }
    let level = parse_i64(text)?;
    i32::try_from(level)
        .map(Some)
        .map_err(|_| format!("level {level} out of range"))
}

fn parse_blob_type(text: &str) -> Result<BlobType, String> {
    match text.trim() {
        "data" => Ok(BlobType::Data),
        "tree" => Ok(BlobType::Tree),
        other => Err(format!("unknown blob type {other:?}")),
    }
}

/// `seconds:nanoseconds`.
fn parse_time(text: &str) -> Result<Timestamp, String> {
    let (seconds, nanos) = text
        .split_once(':')
        .ok_or_else(|| format!("expected seconds:nanoseconds: {text:?}"))?;
    Ok(Timestamp {
        seconds: parse_i64(seconds)?,
        nanos: parse_u32(nanos)?,
    })
}

/// Splits `word word key=value key=value` into the words and the pairs.
fn tokens(text: &str) -> Result<(Vec<&str>, HashMap<&str, &str>), String> {
    let mut words = Vec::new();
    let mut pairs = HashMap::new();
    for token in text.split_whitespace() {
        match token.split_once('=') {
            Some((key, value)) => {
                if pairs.insert(key, value).is_some() {
                    return Err(format!("`{key}=` given twice in {text:?}"));
                }
            }
            None => words.push(token),
        }
    }
    Ok((words, pairs))
}

fn pair<'a>(pairs: &HashMap<&str, &'a str>, key: &str) -> Result<&'a str, String> {
    pairs
        .get(key)
        .copied()
        .ok_or_else(|| format!("lacks `{key}=`"))
}

fn master_and_keys(vector: &Vector) -> Result<(MasterSecret, RepositoryKeys), String> {
    let master = MasterSecret(parse_fixed(vector.one("master")?)?);
    let keys = RepositoryKeys::derive(&master);
    Ok((master, keys))
}

fn ensure(condition: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if condition { Ok(()) } else { Err(what()) }
}

/// The decrypted body of a config, index or snapshot object (the sealed part of the envelope).
fn object_body(
    key: &SealKey,
    bytes: &[u8],
    magic: [u8; 4],
    version: u16,
    public_len: usize,
) -> Result<Vec<u8>, String> {
    envelope::open_object(key, bytes, magic, version, "vector", public_len, 1 << 20)
        .map(|opened| opened.body)
        .map_err(|error| format!("envelope does not open: {error}"))
}

fn compute(vector: &Vector, context: &mut Context) -> Result<Outputs, String> {
    match vector.one("kind")? {
        "derive-keys" => derive_keys(vector),
        "blob-id" => blob_id(vector, context),
        "seal" => seal_vector(vector),
        "key-object" => key_object(vector, context),
        "config" => config(vector),
        "pack" => pack_vector(vector, context),
        "index" => index(vector, context),
        "tree" => tree(vector, context),
        "snapshot" => snapshot(vector, context),
        "chunker" => chunker(vector),
        "prune-record" => prune_record(vector, context),
        "session-marker" => session_marker(vector),
        "prune-lease" => prune_lease(vector),
        other => Err(format!("unknown kind {other:?}")),
    }
}

fn derive_keys(vector: &Vector) -> Result<Outputs, String> {
    let (master, keys) = master_and_keys(vector)?;
    let contexts = [
        ("context_data_key", keys::CONTEXT_DATA_KEY),
        ("context_chunk_id_key", keys::CONTEXT_CHUNK_ID_KEY),
        ("context_tree_id_key", keys::CONTEXT_TREE_ID_KEY),
        ("context_chunker_seed", keys::CONTEXT_CHUNKER_SEED),
    ];
    for (field, constant) in contexts {
        let written = parse_quoted(vector.one(field)?)?;
        ensure(written == constant, || {
            format!("`{field}` is {written:?} but the code uses {constant:?}")
        })?;
    }
    let data_key = blake3::derive_key(keys::CONTEXT_DATA_KEY, &master.0);
    let chunk_id_key = blake3::derive_key(keys::CONTEXT_CHUNK_ID_KEY, &master.0);
    let tree_id_key = blake3::derive_key(keys::CONTEXT_TREE_ID_KEY, &master.0);
    let seed_key = blake3::derive_key(keys::CONTEXT_CHUNKER_SEED, &master.0);
    let seed = u64::from_le_bytes(seed_key[..8].try_into().expect("8 bytes"));

    // The library must behave as these keys say, not merely use the same contexts.
    let probe = b"cairn key probe";
    let nonce = [9u8; 24];
    ensure(
        seal::seal(&SealKey::new(&data_key), nonce, b"", probe, None)
            == seal::seal(&keys.data_key, nonce, b"", probe, None),
        || "the library's data key differs from the derived data key".into(),
    )?;
    ensure(
        Id(*blake3::keyed_hash(&chunk_id_key, probe).as_bytes())
            == keys.blob_id(BlobType::Data, probe),
        || "data blob ids do not use the derived chunk id key".into(),
    )?;
    ensure(
        Id(*blake3::keyed_hash(&tree_id_key, probe).as_bytes())
            == keys.blob_id(BlobType::Tree, probe),
        || "tree blob ids do not use the derived tree id key".into(),
    )?;
    ensure(seed == keys.chunker_seed, || {
        "the library's chunker seed differs from the derived seed".into()
    })?;

    let mut out = Outputs::default();
    out.hex("expected_data_key", &data_key);
    out.hex("expected_chunk_id_key", &chunk_id_key);
    out.hex("expected_tree_id_key", &tree_id_key);
    out.hex("expected_chunker_seed_key", &seed_key);
    out.text("expected_chunker_seed", format!("{seed:#018x}"));
    Ok(out)
}

fn blob_id(vector: &Vector, context: &mut Context) -> Result<Outputs, String> {
    let (_, keys) = master_and_keys(vector)?;
    let blob_type = parse_blob_type(vector.one("blob_type")?)?;
    let input = parse_bytes(vector.one("input")?)?;
    let id = keys.blob_id(blob_type, &input);
    if blob_type == BlobType::Data {
        let mut hasher = keys.file_hasher();
        hasher.update(&input);
        ensure(Id(*hasher.finalize().as_bytes()) == id, || {
            "a whole-file content hash differs from the data blob id of the same bytes".into()
        })?;
    }
    context.ids.insert(vector.name(), id);
    let mut out = Outputs::default();
    out.hex("expected_id", &id.0);
    Ok(out)
}

fn seal_vector(vector: &Vector) -> Result<Outputs, String> {
    let (_, keys) = master_and_keys(vector)?;
    let input = parse_bytes(vector.one("input")?)?;
    let nonce = parse_fixed::<24>(vector.one("nonce")?)?;
    let level = parse_level(vector.one("level")?)?;
    let (associated_data, wrong_associated_data) = match vector.one("associated_data")? {
        spec @ ("data-blob" | "tree-blob") => {
            let blob_type = if spec == "data-blob" {
                BlobType::Data
            } else {
                BlobType::Tree
            };
            let other = if blob_type == BlobType::Data {
                BlobType::Tree
            } else {
                BlobType::Data
            };
            let id = keys.blob_id(blob_type, &input);
            (
                seal::blob_associated_data(blob_type, &id).to_vec(),
                seal::blob_associated_data(other, &id).to_vec(),
            )
        }
        other => {
            let bytes = parse_bytes(other)?;
            let mut wrong = bytes.clone();
            wrong.push(0);
            (bytes, wrong)
        }
    };
    let sealed = seal::seal(&keys.data_key, nonce, &associated_data, &input, level);
    let opened = seal::open(
        &keys.data_key,
        &associated_data,
        &sealed,
        Some(input.len()),
        input.len(),
    )
    .map_err(|error| format!("does not open: {error}"))?;
    ensure(opened == input, || "opens to other bytes".into())?;
    ensure(
        seal::open(
            &keys.data_key,
            &wrong_associated_data,
            &sealed,
            None,
            input.len(),
        )
        .is_err(),
        || "opens under other associated data".into(),
    )?;
    let compression = if sealed.len() == input.len() + SEAL_OVERHEAD {
        "0"
    } else {
        "1"
    };
    let mut out = Outputs::default();
    out.hex("expected_associated_data", &associated_data);
    out.text("expected_compression", compression);
    out.bytes(&sealed);
    Ok(out)
}

fn key_object(vector: &Vector, context: &mut Context) -> Result<Outputs, String> {
    let (master, _) = master_and_keys(vector)?;
    let password = parse_quoted(vector.one("password")?)?;
    let kdf = KdfParams {
        memory_kib: parse_u32(vector.one("kdf_memory_kib")?)?,
        iterations: parse_u32(vector.one("kdf_iterations")?)?,
        parallelism: parse_u32(vector.one("kdf_parallelism")?)?,
    };
    let object = KeyObject::wrap_with(
        &master,
        password.as_bytes(),
        kdf,
        &parse_quoted(vector.one("host")?)?,
        parse_i64(vector.one("created_unix")?)?,
        parse_fixed(vector.one("salt")?)?,
        parse_fixed(vector.one("nonce")?)?,
    )
    .map_err(|error| format!("cannot wrap: {error}"))?;
    let bytes = object.encode();
    let decoded = KeyObject::decode(&bytes).map_err(|error| format!("does not decode: {error}"))?;
    ensure(decoded == object, || "decodes to another key object".into())?;
    ensure(
        decoded.unwrap(password.as_bytes()).ok() == Some(master),
        || "does not unwrap to the master secret".into(),
    )?;
    ensure(decoded.unwrap(b"not the password").is_err(), || {
        "unwraps with a wrong password".into()
    })?;
    ensure(bytes.len() == 120 + object.host.len(), || {
        format!("is {} bytes, not 120 + host length", bytes.len())
    })?;
    let id = Id::of_stored_bytes(&bytes);
    context.ids.insert(vector.name(), id);
    let mut out = Outputs::default();
    out.bytes(&bytes);
    out.hex("expected_id", &id.0);
    out.text("expected_name", object_name(KEYS_PREFIX, &id));
    Ok(out)
}

fn config(vector: &Vector) -> Result<Outputs, String> {
    let (_, keys) = master_and_keys(vector)?;
    let config = Config {
        version: u16::try_from(parse_u64(vector.one("version")?)?)
            .map_err(|_| "version does not fit in u16".to_owned())?,
        repository_id: parse_fixed(vector.one("repository_id")?)?,
        chunker: ChunkerParams {
            min_size: parse_u32(vector.one("chunk_min")?)?,
            avg_size: parse_u32(vector.one("chunk_avg")?)?,
            max_size: parse_u32(vector.one("chunk_max")?)?,
        },
        pack_target_size: parse_u32(vector.one("pack_target_size")?)?,
        compression_level: parse_level(vector.one("compression_level")?)?.unwrap_or(0),
        created_unix: parse_i64(vector.one("created_unix")?)?,
        chunker_seed: vector.optional("chunker_seed").map(parse_u64).transpose()?,
    };
    let bytes = config.encode(&keys.data_key, parse_fixed(vector.one("nonce")?)?);
    let decoded = Config::decode(&keys.data_key, &bytes)
        .map_err(|error| format!("does not decode: {error}"))?;
    ensure(decoded == config, || "decodes to another config".into())?;
    ensure(
        Config::peek(&bytes).ok() == Some((config.version, config.repository_id)),
        || "peek reads another version or repository id".into(),
    )?;
    let length = if config.chunker_seed.is_some() {
        104
    } else {
        95
    };
    ensure(bytes.len() == length, || {
        format!("is {} bytes, not {length}", bytes.len())
    })?;
    let body = object_body(
        &keys.data_key,
        &bytes,
        config::CONFIG_MAGIC,
        config::FORMAT_VERSION,
        config::REPOSITORY_ID_LEN,
    )?;
    let mut out = Outputs::default();
    out.bytes(&bytes);
    out.hex("expected_body", &body);
    Ok(out)
}

fn pack_vector(vector: &Vector, context: &mut Context) -> Result<Outputs, String> {
    let (_, keys) = master_and_keys(vector)?;
    let mut blobs = Vec::new();
    let mut plaintexts = Vec::new();
    for line in vector.all("blob") {
        let (words, pairs) = tokens(line)?;
        let [type_word] = words.as_slice() else {
            return Err(format!("blob line needs exactly one type word: {line:?}"));
        };
        let blob_type = parse_blob_type(type_word)?;
        let plaintext = parse_bytes(pair(&pairs, "input")?)?;
        let id = keys.blob_id(blob_type, &plaintext);
        blobs.push(SealedBlob {
            blob_type,
            id,
            raw_length: u32::try_from(plaintext.len()).map_err(|_| "blob too long")?,
            sealed: seal::seal(
                &keys.data_key,
                parse_fixed(pair(&pairs, "nonce")?)?,
                &seal::blob_associated_data(blob_type, &id),
                &plaintext,
                parse_level(pair(&pairs, "level")?)?,
            ),
        });
        plaintexts.push(plaintext);
    }
    let (bytes, pack_id, entries) = pack::build_pack(
        &keys.data_key,
        &blobs,
        parse_fixed(vector.one("trailer_nonce")?)?,
    );
    ensure(pack_id == Id::of_stored_bytes(&bytes), || {
        "pack id is not the BLAKE3 of its bytes".into()
    })?;
    let read = pack::read_pack_entries(&keys.data_key, &bytes)
        .map_err(|error| format!("trailer does not read back: {error}"))?;
    ensure(read == entries, || "trailer lists other entries".into())?;
    for (entry, plaintext) in entries.iter().zip(&plaintexts) {
        let range = entry.range();
        let sealed = &bytes[usize::try_from(range.start).unwrap_or(usize::MAX)
            ..usize::try_from(range.end).unwrap_or(usize::MAX)];
        let opened = pack::open_blob(&keys.data_key, entry, sealed)
            .map_err(|error| format!("blob {} does not open: {error}", entry.id))?;
        ensure(&opened == plaintext, || {
            format!("blob {} opens to other bytes", entry.id)
        })?;
        ensure(keys.blob_id(entry.blob_type, &opened) == entry.id, || {
            format!("blob {} does not hash to its id", entry.id)
        })?;
    }
    let footer: [u8; 4] = bytes[bytes.len() - pack::FOOTER_LEN..]
        .try_into()
        .expect("4 bytes");
    let trailer = pack::trailer_range(bytes.len() as u64, footer)
        .map_err(|error| format!("bad footer: {error}"))?;
    let trailer_start = usize::try_from(trailer.start).unwrap_or(usize::MAX);
    let trailer_end = usize::try_from(trailer.end).unwrap_or(usize::MAX);
    ensure(
        trailer_end - trailer_start == 45 + 45 * entries.len(),
        || "sealed trailer is not 45 + 45 n bytes".into(),
    )?;
    let mut trailer_associated_data = b"cairn pack trailer".to_vec();
    trailer_associated_data.extend_from_slice(b"CRNP\x01\x00");
    let trailer_plaintext = seal::open(
        &keys.data_key,
        &trailer_associated_data,
        &bytes[trailer_start..trailer_end],
        None,
        1 << 20,
    )
    .map_err(|error| format!("trailer does not open with the documented AD: {error}"))?;
    context.ids.insert(vector.name(), pack_id);
    context.packs.insert(
        vector.name(),
        IndexedPack {
            pack_id,
            pack_length: bytes.len() as u64,
            entries: entries.clone(),
        },
    );
    let mut out = Outputs::default();
    out.bytes(&bytes);
    out.hex("expected_id", &pack_id.0);
    out.text("expected_name", pack_name(&pack_id));
    out.text(
        "expected_trailer",
        format!(
            "offset={} length={}",
            trailer.start,
            trailer.end - trailer.start
        ),
    );
    out.hex("expected_trailer_plaintext", &trailer_plaintext);
    for (position, entry) in entries.iter().enumerate() {
        out.text(
            &format!("expected_entry_{position}"),
            format!(
                "{} id={} offset={} length={} raw_length={}",
                entry.blob_type.name(),
                entry.id,
                entry.offset,
                entry.length,
                entry.raw_length
            ),
        );
    }
    Ok(out)
}

fn index(vector: &Vector, context: &mut Context) -> Result<Outputs, String> {
    let (_, keys) = master_and_keys(vector)?;
    let superseded = vector
        .all("superseded")
        .into_iter()
        .map(|text| parse_id(context, text))
        .collect::<Result<Vec<_>, _>>()?;
    let packs = vector
        .all("pack")
        .into_iter()
        .map(|text| {
            let name = text.trim().strip_prefix('@').unwrap_or(text.trim());
            context
                .packs
                .get(name)
                .cloned()
                .ok_or_else(|| format!("`pack = {text}` names no earlier pack vector"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let object = IndexObject { superseded, packs };
    let bytes = object.encode(
        &keys.data_key,
        parse_level(vector.one("level")?)?,
        parse_fixed(vector.one("nonce")?)?,
    );
    let decoded = IndexObject::decode(&keys.data_key, &bytes)
        .map_err(|error| format!("does not decode: {error}"))?;
    ensure(decoded == object, || "decodes to another index".into())?;
    let body = object_body(
        &keys.data_key,
        &bytes,
        index_format::INDEX_MAGIC,
        index_format::INDEX_VERSION,
        0,
    )?;
    let id = Id::of_stored_bytes(&bytes);
    context.ids.insert(vector.name(), id);
    let mut out = Outputs::default();
    out.bytes(&bytes);
    out.hex("expected_body", &body);
    out.hex("expected_id", &id.0);
    out.text("expected_name", object_name(INDEX_PREFIX, &id));
    Ok(out)
}

fn parse_node(context: &Context, keys: &RepositoryKeys, line: &str) -> Result<Node, String> {
    let (words, pairs) = tokens(line)?;
    let [kind_word] = words.as_slice() else {
        return Err(format!("node line needs exactly one kind word: {line:?}"));
    };
    let (kind, size) = match *kind_word {
        "file" => {
            let parts = pair(&pairs, "content")?
                .split('+')
                .map(parse_bytes)
                .collect::<Result<Vec<_>, _>>()?;
            let mut hasher = keys.file_hasher();
            for part in &parts {
                hasher.update(part);
            }
            let kind = NodeKind::File {
                content_hash: Id(*hasher.finalize().as_bytes()),
                chunks: parts
                    .iter()
                    .map(|part| keys.blob_id(BlobType::Data, part))
                    .collect(),
            };
            (kind, parts.iter().map(|part| part.len() as u64).sum())
        }
        "directory" => (
            NodeKind::Directory {
                subtree: parse_id(context, pair(&pairs, "subtree")?)?,
            },
            0,
        ),
        "symlink" => (
            NodeKind::Symlink {
                target: pair(&pairs, "target")?.as_bytes().to_vec(),
            },
            0,
        ),
        "fifo" => (NodeKind::Fifo, 0),
        device @ ("chardev" | "blockdev") => (
            NodeKind::Device {
                kind: if device == "chardev" {
                    DeviceKind::Character
                } else {
                    DeviceKind::Block
                },
                major: parse_u32(pair(&pairs, "major")?)?,
                minor: parse_u32(pair(&pairs, "minor")?)?,
            },
            0,
        ),
        other => return Err(format!("unknown node kind {other:?}")),
    };
    let extensions = match pairs.get("ext") {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|item| {
                let (tag, bytes) = item
                    .split_once(':')
                    .ok_or_else(|| format!("ext item needs tag:hex: {item:?}"))?;
                Ok((
                    u16::try_from(parse_u64(tag)?).map_err(|_| "ext tag too large")?,
                    parse_hex(bytes)?,
                ))
            })
            .collect::<Result<Vec<_>, String>>()?,
    };
    let mut node = Node {
        name: pair(&pairs, "name")?.as_bytes().to_vec(),
        kind,
        mode: parse_u32(pair(&pairs, "mode")?)?,
        uid: parse_u32(pair(&pairs, "uid")?)?,
        gid: parse_u32(pair(&pairs, "gid")?)?,
        mtime: parse_time(pair(&pairs, "mtime")?)?,
        ctime: parse_time(pair(&pairs, "ctime")?)?,
        inode: parse_u64(pair(&pairs, "inode")?)?,
        device: parse_u64(pair(&pairs, "device")?)?,
        size,
        extensions,
    };
    if let Some(list) = pairs.get("xattr") {
        let xattrs = list
            .split(',')
            .map(|item| {
                let (name, value) = item
                    .split_once(':')
                    .ok_or_else(|| format!("xattr item needs name:hex: {item:?}"))?;
                Ok(Xattr {
                    name: name.as_bytes().to_vec(),
                    value: parse_hex(value)?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        node.set_xattrs(&xattrs);
    }
    if pairs.contains_key("user") || pairs.contains_key("group") {
        let name = |key| {
            pairs
                .get(key)
                .map_or_else(Vec::new, |name: &&str| name.as_bytes().to_vec())
        };
        node.set_owner_names(&OwnerNames {
            user: name("user"),
            group: name("group"),
        });
    }
    if let Some(links) = pairs.get("links") {
        node.set_link_count(parse_u64(links)?);
    }
    Ok(node)
}

fn tree(vector: &Vector, context: &mut Context) -> Result<Outputs, String> {
    let (_, keys) = master_and_keys(vector)?;
    let nodes = vector
        .all("node")
        .into_iter()
        .map(|line| parse_node(context, &keys, line))
        .collect::<Result<Vec<_>, _>>()?;
    let tree = Tree { nodes };
    let bytes = tree.encode();
    let decoded = Tree::decode(&bytes).map_err(|error| format!("does not decode: {error}"))?;
    ensure(decoded == tree, || "decodes to another tree".into())?;
    let id = keys.blob_id(BlobType::Tree, &bytes);
    context.ids.insert(vector.name(), id);
    let mut out = Outputs::default();
    out.bytes(&bytes);
    out.hex("expected_id", &id.0);
    Ok(out)
}

fn snapshot(vector: &Vector, context: &mut Context) -> Result<Outputs, String> {
    let (_, keys) = master_and_keys(vector)?;
    let quoted_list = |key: &str| {
        vector
            .all(key)
            .into_iter()
            .map(parse_quoted)
            .collect::<Result<Vec<_>, _>>()
    };
    let source = match vector.one("source")? {
        "paths" => Source::Paths(quoted_list("path")?),
        "stdin" => Source::Stdin(parse_quoted(vector.one("stream")?)?),
        other => return Err(format!("unknown source {other:?}")),
    };
    let (_, summary) = tokens(vector.one("summary")?)?;
    let parent = match vector.one("parent")? {
        "none" => None,
        text => Some(parse_id(context, text)?),
    };
    let snapshot = Snapshot {
        time: parse_time(vector.one("time")?)?,
        host: parse_quoted(vector.one("host")?)?,
        username: parse_quoted(vector.one("username")?)?,
        tags: quoted_list("tag")?,
        source,
        root: parse_id(context, vector.one("root")?)?,
        parent,
        summary: Summary {
            files: parse_u64(pair(&summary, "files")?)?,
            directories: parse_u64(pair(&summary, "directories")?)?,
            bytes_processed: parse_u64(pair(&summary, "bytes_processed")?)?,
            bytes_added: parse_u64(pair(&summary, "bytes_added")?)?,
            blobs_added: parse_u64(pair(&summary, "blobs_added")?)?,
            entries_unreadable: parse_u64(pair(&summary, "entries_unreadable")?)?,
        },
        program_version: parse_quoted(vector.one("program_version")?)?,
        extensions: Vec::new(),
    };
    let mut snapshot = snapshot;
    if let Some(original) = vector.optional("rewritten_from") {
        snapshot.set_rewritten_from(Some(parse_id(context, original)?));
    }
    if let Some(copy_of) = vector.optional("copy_of") {
        let (repository, source) = copy_of
            .trim()
            .split_once(' ')
            .ok_or_else(|| format!("copy_of is `repository-id @snapshot`: {copy_of:?}"))?;
        snapshot.set_extension(
            snapshot_format::EXTENSION_COPY_OF,
            Some(
                snapshot_format::CopyOf {
                    repository_id: parse_fixed(repository)?,
                    snapshot: parse_id(context, source)?,
                }
                .encode(),
            ),
        );
    }
    let bytes = snapshot.encode(
        &keys.data_key,
        parse_level(vector.one("level")?)?,
        parse_fixed(vector.one("nonce")?)?,
    );
    let decoded = Snapshot::decode(&keys.data_key, &bytes)
        .map_err(|error| format!("does not decode: {error}"))?;
    ensure(decoded == snapshot, || "decodes to another snapshot".into())?;
    let body = object_body(
        &keys.data_key,
        &bytes,
        snapshot_format::SNAPSHOT_MAGIC,
        snapshot_format::SNAPSHOT_VERSION,
        0,
    )?;
    let id = Id::of_stored_bytes(&bytes);
    context.ids.insert(vector.name(), id);
    let mut out = Outputs::default();
    out.bytes(&bytes);
    out.hex("expected_body", &body);
    out.hex("expected_id", &id.0);
    out.text("expected_name", object_name(SNAPSHOTS_PREFIX, &id));
    Ok(out)
}

fn prune_record(vector: &Vector, context: &Context) -> Result<Outputs, String> {
    let (_, keys) = master_and_keys(vector)?;
    let ids = |key: &str| {
        vector
            .all(key)
            .into_iter()
            .map(|text| parse_id(context, text))
            .collect::<Result<Vec<_>, _>>()
    };
    let record = PruneRecord {
        generation: parse_u64(vector.one("generation")?)?,
        condemned: ids("condemned")?,
        resurrected: ids("resurrected")?,
    };
    let bytes = record.encode(&keys.data_key, parse_fixed(vector.one("nonce")?)?);
    let decoded = PruneRecord::decode(&keys.data_key, &bytes)
        .map_err(|error| format!("does not decode: {error}"))?;
    ensure(decoded == record, || "decodes to another record".into())?;
    let body = object_body(
        &keys.data_key,
        &bytes,
        lifecycle::PRUNE_RECORD_MAGIC,
        lifecycle::LIFECYCLE_VERSION,
        8,
    )?;
    let mut out = Outputs::default();
    out.bytes(&bytes);
    out.hex("expected_body", &body);
    out.text("expected_name", lifecycle::record_name(record.generation));
    Ok(out)
}

/// The `version` of a marker or lease vector (1 or 2) and its place: version 1 records only the
/// pid, version 2 also `machine_id`, `boot_id`, `pid_namespace` and `start_ticks`.
fn vector_place(vector: &Vector) -> Result<(u16, ProcessPlace), String> {
    let version = u16::try_from(parse_u64(vector.one("version")?)?).map_err(|_| "bad version")?;
    let pid = parse_u32(vector.one("pid")?)?;
    match version {
        1 => Ok((1, ProcessPlace::pid_only(pid))),
        2 => Ok((
            2,
            ProcessPlace {
                machine_id: parse_fixed(vector.one("machine_id")?)?,
                boot_id: parse_fixed(vector.one("boot_id")?)?,
                pid_namespace: parse_u64(vector.one("pid_namespace")?)?,
                pid,
                start_ticks: parse_u64(vector.one("start_ticks")?)?,
            },
        )),
        other => Err(format!("no marker version {other}")),
    }
}

fn session_marker(vector: &Vector) -> Result<Outputs, String> {
    let (_, keys) = master_and_keys(vector)?;
    let (version, place) = vector_place(vector)?;
    let marker = SessionMarker {
        session: SessionId(parse_fixed(vector.one("session")?)?),
        host: parse_quoted(vector.one("host")?)?,
        place,
        started_unix: parse_i64(vector.one("started")?)?,
    };
    let nonce = parse_fixed(vector.one("nonce")?)?;
    let bytes = if version == 1 {
        marker.encode_v1(&keys.data_key, nonce)
    } else {
        marker.encode(&keys.data_key, nonce)
    };
    let decoded = SessionMarker::decode(&keys.data_key, &bytes)
        .map_err(|error| format!("does not decode: {error}"))?;
    ensure(decoded == marker, || "decodes to another marker".into())?;
    let body = object_body(
        &keys.data_key,
        &bytes,
        lifecycle::SESSION_MAGIC,
        lifecycle::MARKER_VERSION,
        lifecycle::SESSION_ID_LEN,
    )?;
    let mut out = Outputs::default();
    out.bytes(&bytes);
    out.hex("expected_body", &body);
    out.text("expected_name", lifecycle::session_name(&marker.session));
    Ok(out)
}

fn prune_lease(vector: &Vector) -> Result<Outputs, String> {
    let (_, keys) = master_and_keys(vector)?;
    let (version, place) = vector_place(vector)?;
    let lease = PruneLease {
        token: parse_fixed(vector.one("token")?)?,
        host: parse_quoted(vector.one("host")?)?,
        place,
        started_unix: parse_i64(vector.one("started")?)?,
        ttl_seconds: parse_u64(vector.one("ttl_seconds")?)?,
    };
    let nonce = parse_fixed(vector.one("nonce")?)?;
    let bytes = if version == 1 {
        lease.encode_v1(&keys.data_key, nonce)
    } else {
        lease.encode(&keys.data_key, nonce)
    };
    let decoded = PruneLease::decode(&keys.data_key, &bytes)
        .map_err(|error| format!("does not decode: {error}"))?;
    ensure(decoded == lease, || "decodes to another lease".into())?;
    let body = object_body(
        &keys.data_key,
        &bytes,
        lifecycle::LEASE_MAGIC,
        lifecycle::MARKER_VERSION,
        0,
    )?;
    let mut out = Outputs::default();
    out.bytes(&bytes);
    out.hex("expected_body", &body);
    out.text("expected_name", lifecycle::LEASE_NAME);
    Ok(out)
}

fn chunker(vector: &Vector) -> Result<Outputs, String> {
    let params = ChunkerParams {
        min_size: parse_u32(vector.one("chunk_min")?)?,
        avg_size: parse_u32(vector.one("chunk_avg")?)?,
        max_size: parse_u32(vector.one("chunk_max")?)?,
    };
    let chunker = Chunker::new(params, parse_u64(vector.one("seed")?)?)
        .map_err(|error| format!("invalid parameters: {error}"))?;
    let input = parse_bytes(vector.one("input")?)?;
    let ranges = chunker.chunk_slice(&input);
    let mut next_start = 0;
    for (position, range) in ranges.iter().enumerate() {
        ensure(range.start == next_start, || {
            "chunks are not contiguous".into()
        })?;
        let is_last = position + 1 == ranges.len();
        ensure(
            range.len() <= params.max_size as usize
                && (is_last || range.len() >= params.min_size as usize),
            || format!("chunk {position} of {} bytes is out of bounds", range.len()),
        )?;
        next_start = range.end;
    }
    ensure(next_start == input.len(), || {
        "chunks do not cover the input".into()
    })?;
    let mut stream = chunker.stream(input.as_slice(), 0);
    let mut streamed = Vec::new();
    while let Some(batch) = stream
        .next_batch()
        .map_err(|error| format!("stream failed: {error}"))?
    {
        streamed.extend(batch.chunks.iter().map(std::ops::Range::len));
    }
    let lengths: Vec<usize> = ranges.iter().map(std::ops::Range::len).collect();
    ensure(streamed == lengths, || {
        "streaming in blocks cuts differently from chunk_slice".into()
    })?;
    let mut out = Outputs::default();
    out.text("expected_count", lengths.len().to_string());
    out.text(
        "expected_lengths",
        if lengths.is_empty() {
            "none".to_owned()
        } else {
            lengths
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        },
    );
    Ok(out)
}

/// The lines of one output field as FORMAT.md shows them.
fn format_field(key: &str, value: &str) -> Vec<String> {
    let single = format!("{key} = {value}");
    if single.len() <= LIST_LINE {
        return vec![single];
    }
    let mut lines = vec![format!("{key} =")];
    if value.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        for piece in value.as_bytes().chunks(HEX_LINE) {
            lines.push(format!("    {}", String::from_utf8_lossy(piece)));
        }
        return lines;
    }
    let mut current = String::from("   ");
    for word in value.split(' ') {
        if current.len() + 1 + word.len() > LIST_LINE && !current.trim().is_empty() {
            lines.push(std::mem::replace(&mut current, String::from("   ")));
        }
        current.push(' ');
        current.push_str(word);
    }
    lines.push(current);
    lines
}

fn normalised(value: &str) -> String {
    value.split_whitespace().collect()
}

fn shortened(value: &str) -> String {
    let value = normalised(value);
    if value.len() > 72 {
        format!("{}…", &value[..72])
    } else {
        value
    }
}

#[test]
fn format_vectors_match_the_library() {
    let path = format_md_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    let (mut lines, vectors) = parse_document(&text).unwrap_or_else(|error| panic!("{error}"));
    let update = std::env::var(UPDATE_VARIABLE).is_ok_and(|value| value == "1");

    let mut context = Context::default();
    let mut failures = Vec::new();
    let mut names = BTreeSet::new();
    let mut kinds = BTreeSet::new();
    let mut rewritten: Vec<(usize, usize, Vec<String>)> = Vec::new();
    for vector in &vectors {
        let name = vector.name();
        if !names.insert(name.clone()) {
            failures.push(format!("vector `{name}` is defined twice"));
        }
        if let Some(kind) = vector.optional("kind") {
            kinds.insert(kind.to_owned());
        }
        let outputs = match compute(vector, &mut context) {
            Ok(outputs) => outputs,
            Err(error) => {
                failures.push(format!("vector `{name}`: {error}"));
                continue;
            }
        };
        if update {
            let mut block: Vec<String> = Vec::new();
            for item in &vector.items {
                match item {
                    Item::Field(field) if field.key.starts_with("expected") => {}
                    Item::Field(field) => block.extend(field.lines.iter().cloned()),
                    Item::Other(line) => block.push(line.clone()),
                }
            }
            while block.last().is_some_and(|line| line.trim().is_empty()) {
                block.pop();
            }
            for (key, value) in &outputs.0 {
                block.extend(format_field(key, value));
            }
            rewritten.push((vector.open, vector.close, block));
            continue;
        }
        let written: Vec<&Field> = vector
            .fields()
            .filter(|field| field.key.starts_with("expected"))
            .collect();
        for (key, value) in &outputs.0 {
            match written.iter().find(|field| &field.key == key) {
                None => failures.push(format!("vector `{name}`: `{key}` is missing")),
                Some(field) if normalised(&field.value) != normalised(value) => {
                    failures.push(format!(
                        "vector `{name}`: `{key}` is stale: FORMAT.md has {} but the library \
                         computes {}",
                        shortened(&field.value),
                        shortened(value)
                    ));
                }
                Some(_) => {}
            }
        }
        for field in written {
            if !outputs.0.iter().any(|(key, _)| key == &field.key) {
                failures.push(format!(
                    "vector `{name}`: `{}` is not an output of this vector",
                    field.key
                ));
            }
        }
    }
    for kind in REQUIRED_KINDS {
        if !kinds.contains(kind) {
            failures.push(format!("FORMAT.md has no vector of kind `{kind}`"));
        }
    }
    if update && failures.is_empty() {
        for (open, close, block) in rewritten.into_iter().rev() {
            lines.splice(open + 1..close, block);
        }
        let mut new_text = lines.join("\n");
        new_text.push('\n');
        if new_text != text {
            std::fs::write(&path, new_text)
                .unwrap_or_else(|error| panic!("cannot write {}: {error}", path.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} problem(s) with the test vectors of {}:\n  {}\nIf the format change is intended, \
         record it in the version log and regenerate with\n  {UPDATE_VARIABLE}=1 cargo test -p \
         cairn-cli --test it format_vectors",
        failures.len(),
        path.display(),
        failures.join("\n  ")
    );
    assert!(
        vectors.len() >= 30,
        "FORMAT.md has only {} vectors",
        vectors.len()
    );
}

#[test]
fn vector_syntax_is_parsed_as_documented() {
    let text = "intro\n```vector\nname = a\n# comment\nkind = seal\nexpected =\n    00ff\n    \
                ee\n```\n";
    let (_, vectors) = parse_document(text).unwrap();
    assert_eq!(vectors.len(), 1);
    assert_eq!(vectors[0].name(), "a");
    assert_eq!(vectors[0].one("expected").unwrap(), "00ff ee");
    assert_eq!(parse_hex("00ff ee").unwrap(), vec![0, 0xff, 0xee]);
    assert_eq!(pattern(253)[250..], [250, 0, 1]);
    assert_eq!(parse_bytes("pattern(3)").unwrap(), vec![0, 1, 2]);
    assert_eq!(parse_bytes("\"ab\"").unwrap(), b"ab");
    assert!(parse_document("```vector\nname = a\n").is_err());
}
