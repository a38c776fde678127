//! `gen_corpus`: a fast, deterministic generator of realistic nightly backup inputs.
//!
//! It writes the same kinds of data, with the same nightly changes, as the project's reference
//! Python generator (`gen_corpus.py`, described in the corpus README), about two orders of magnitude
//! faster. For each night `N` of `--nights`:
//!
//! - `OUT/nightN/mongo/app.archive` (50% of `--size-gib`): a `mongodump --archive` stream: magic,
//!   prelude and collection-metadata BSON headers, then namespace segments of at most 16 MiB from up
//!   to 4 collections dumped concurrently (`users`, `orders`, `events`, `sessions`, `fs.files`,
//!   `fs.chunks`), each segment a BSON header, documents and a terminator. Small documents carry
//!   ids, dates, numbers and Zipf-distributed text; `fs.chunks` documents are 255 KiB of random
//!   (incompressible) bytes, ~40% of the archive. Night 2: ~2% of the documents modified in place,
//!   ~1% inserted, ~1% deleted, uniformly spread, so offsets shift everywhere.
//! - `OUT/nightN/docker/image.tar` (35%): a `docker save` OCI-layout tar holding 4 uncompressed
//!   layer tars (base, runtime, deps, app) of binaries and text files, plus config, manifest and
//!   index. Night 2: the app layer is rebuilt (~3% of its files removed, ~3% added, ~30% changed), so
//!   its digest and therefore its place among the digest-ordered blobs change; the other layers are
//!   byte-identical. Digests are BLAKE3-256 in hex where docker writes SHA-256 (no SHA-256
//!   dependency here); backup tools do not care, but `docker load` would refuse the image.
//! - `OUT/nightN/files/` (10%): ~20,000 small config-like files per GiB (`.env`, YAML, JSON, conf,
//!   PEM, logs, scripts) under `srv/<service>/...`. Night 2: 36 modified (logs appended to), 15
//!   removed, 24 added.
//!
//! Night `N > 2` applies the same kinds of changes again, with fresh randomness, to night `N - 1`
//! (cumulatively: a document or file changed on night 3 stays changed on night 30), so a series of
//! nights is a server's history and a prune has something to free. Unchanged files carry the
//! night-1 modification time (2025-01-01 04:00 UTC), changed ones that of the night that last
//! changed them (a day later per night), so a night-`N` tree can be synchronised onto a
//! night-`N - 1` tree by size and mtime. Night 2 is byte-identical to what the two-night generator
//! wrote. The output is
//! a pure function of `--seed` and `--size-gib` (independent of `--threads`). Datasets and nights
//! are generated in parallel.
//!
//! Example: `gen_corpus --out /tmp/corpus --size-gib 1 --seed 42 --nights 1,2` (30 nights:
//! `--nights $(seq -s, 1 30)`)

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap,
    reason = "sizes and random draws are converted between integer and float types on purpose"
)]

use std::collections::{HashSet, VecDeque};
use std::fmt::Write as _;
use std::fs::{self, File, FileTimes};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Parser;
use rayon::prelude::*;

/// Night-1 modification time: 2025-01-01 04:00 UTC.
const T1: u64 = 1_735_704_000;
/// Base of the documents' millisecond timestamps.
const BASE_MS: i64 = 1_600_000_000_000;
/// Largest mongodump namespace segment.
const SEGMENT: usize = 16 * 1024 * 1024;
/// `fs.chunks` payload size (the `GridFS` default chunk size).
const GRIDFS_CHUNK: usize = 261_120;

/// Generates a deterministic corpus of nightly backup inputs.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Output directory (gets night1/, night2/, ...).
    #[arg(long, default_value = "corpus")]
    out: PathBuf,
    /// Total size of one night in GiB (mongo 50%, docker 35%, files 10%).
    #[arg(long, default_value_t = 1.0)]
    size_gib: f64,
    /// Seed of everything.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Nights to write, comma-separated (1 = base, N = night N - 1 with the nightly changes).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    nights: Vec<u32>,
    /// Datasets to write, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "mongo,docker,files")]
    only: Vec<String>,
    /// Worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

// ------------------------------------------------------------------------------------- randomness

/// A small, fast, portable PRNG (wyrand). Every stream is derived from the seed and a label, so
/// the output never depends on generation order or thread count.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    /// A stream for `seed` and the labelled `parts` (length-prefixed, hashed with BLAKE3).
    fn derive(seed: u64, parts: &[&[u8]]) -> Self {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&seed.to_le_bytes());
        for part in parts {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        let hash = hasher.finalize();
        let mut state = [0; 8];
        state.copy_from_slice(&hash.as_bytes()[..8]);
        Self(u64::from_le_bytes(state))
    }

    /// The next 64 random bits.
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let product = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        ((product >> 64) as u64) ^ (product as u64)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    /// Uniform `usize` in `lo..=hi`.
    fn range_usize(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below((hi - lo + 1) as u64) as usize
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1_u64 << 53) as f64)
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// One element of `items`, uniformly.
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// An index drawn with the given relative `weights`.
    fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u32 = weights.iter().sum();
        let mut x = self.below(u64::from(total)) as u32;
        for (index, &weight) in weights.iter().enumerate() {
            if x < weight {
                return index;
            }
            x -= weight;
        }
        weights.len() - 1
    }

    /// Fills `buf` with random bytes.
    fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let bytes = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&bytes[..rest.len()]);
    }

    /// `n` random bytes.
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        self.fill(&mut out);
        out
    }

    /// A standard normal deviate (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit();
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// A log-normal deviate.
    fn lognormal(&mut self, mu: f64, sigma: f64) -> f64 {
        (mu + sigma * self.normal()).exp()
    }

    /// `k` distinct elements of `items` in random order.
    fn sample<T: Copy>(&mut self, items: &[T], k: usize) -> Vec<T> {
        let mut pool = items.to_vec();
        for i in 0..k.min(pool.len()) {
            let j = i + self.below((pool.len() - i) as u64) as usize;
            pool.swap(i, j);
        }
        pool.truncate(k);
        pool
    }
}

/// Appends the lowercase hex form of `bytes`.
fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)]);
        out.push(DIGITS[usize::from(byte & 15)]);
    }
}

/// The lowercase hex form of `bytes`.
fn hex(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    String::from_utf8(out).expect("hex is ASCII")
}

/// Appends the standard padded base64 form of `bytes`.
fn push_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for group in bytes.chunks(3) {
        let b = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]);
            } else {
                out.push(b'=');
            }
        }
    }
}

// ---------------------------------------------------------------------------------- vocabulary

/// Syllables of the made-up vocabulary.
const SYLLABLES: [&str; 26] = [
    "ka", "lo", "re", "mi", "tan", "sor", "ve", "qui", "ber", "do", "ra", "ne", "us", "is", "or",
    "al", "en", "ti", "ca", "pro", "ser", "vi", "con", "da", "ment", "ing",
];
/// Words in the vocabulary.
const VOCABULARY: usize = 3000;
/// Entries of the Zipf lookup table (a power of two; 16-bit draws index it).
const ZIPF_TABLE: usize = 1 << 16;

/// Vocabulary and text/binary content generators shared by all datasets.
#[derive(Debug)]
struct Gen {
    /// Seed of the corpus.
    seed: u64,
    /// All words, concatenated.
    word_bytes: Vec<u8>,
    /// `(start, end)` of each word in `word_bytes`.
    spans: Vec<(u32, u32)>,
    /// Word index for each 16-bit draw, so that words follow a Zipf-like law (weight 1/(i+1)^1.05).
    zipf: Vec<u16>,
}

impl Gen {
    /// The vocabulary of `seed`.
    fn new(seed: u64) -> Self {
        let mut rng = Rng::derive(seed, &[b"vocab"]);
        let mut set = HashSet::new();
        while set.len() < VOCABULARY {
            let syllables = rng.range_usize(1, 4);
            let word: String = (0..syllables).map(|_| *rng.pick(&SYLLABLES)).collect();
            set.insert(word);
        }
        let mut words: Vec<String> = set.into_iter().collect();
        words.sort();
        for i in (1..words.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            words.swap(i, j);
        }
        let mut word_bytes = Vec::new();
        let mut spans = Vec::new();
        for word in &words {
            let start = word_bytes.len() as u32;
            word_bytes.extend_from_slice(word.as_bytes());
            spans.push((start, word_bytes.len() as u32));
        }
        let weights: Vec<f64> = (0..VOCABULARY)
            .map(|i| 1.0 / ((i + 1) as f64).powf(1.05))
            .collect();
        let total: f64 = weights.iter().sum();
        let mut zipf = Vec::with_capacity(ZIPF_TABLE);
        let mut word = 0;
        let mut cumulative = weights[0];
        for slot in 0..ZIPF_TABLE {
            let point = (slot as f64 + 0.5) / ZIPF_TABLE as f64 * total;
            while cumulative < point && word + 1 < VOCABULARY {
                word += 1;
                cumulative += weights[word];
            }
            zipf.push(word as u16);
        }
        Self {
            seed,
            word_bytes,
            spans,
            zipf,
        }
    }

    /// Word number `index`.
    fn word(&self, index: usize) -> &[u8] {
        let (start, end) = self.spans[index];
        &self.word_bytes[start as usize..end as usize]
    }

    /// A word drawn from the Zipf law with 16 random bits.
    fn zipf_word(&self, bits: u64) -> &[u8] {
        self.word(usize::from(self.zipf[(bits & 0xffff) as usize]))
    }

    /// A uniformly drawn word.
    fn any_word(&self, rng: &mut Rng) -> &[u8] {
        self.word(rng.below(VOCABULARY as u64) as usize)
    }

    /// A uniformly drawn word as a `&str`.
    fn any_word_str(&self, rng: &mut Rng) -> &str {
        std::str::from_utf8(self.any_word(rng)).expect("words are ASCII")
    }

    /// A uniformly drawn word, capitalized.
    fn capitalized(&self, rng: &mut Rng) -> String {
        let mut word = self.any_word_str(rng).to_owned();
        word[..1].make_ascii_uppercase();
        word
    }

    /// Appends exactly `len` bytes of text: lines of 64 Zipf-distributed words.
    fn text(&self, rng: &mut Rng, len: usize, out: &mut Vec<u8>) {
        let target = out.len() + len;
        out.reserve(len + 64);
        let mut in_line = 0;
        while out.len() < target {
            let bits = rng.next_u64();
            for k in 0..4 {
                if in_line > 0 {
                    out.push(b' ');
                }
                out.extend_from_slice(self.zipf_word(bits >> (16 * k)));
                in_line += 1;
                if in_line == 64 {
                    out.push(b'\n');
                    in_line = 0;
                }
            }
        }
        out.truncate(target);
    }

    /// Appends a capitalized sentence of `lo..=hi` Zipf-distributed words ending with a period.
    fn sentence(&self, rng: &mut Rng, lo: usize, hi: usize, out: &mut Vec<u8>) {
        let words = rng.range_usize(lo, hi);
        let start = out.len();
        for i in 0..words {
            if i > 0 {
                out.push(b' ');
            }
            let bits = rng.next_u64();
            out.extend_from_slice(self.zipf_word(bits));
        }
        out[start..=start].make_ascii_uppercase();
        out.push(b'.');
    }

    /// Appends exactly `len` executable-like bytes: runs of 512..16384 bytes that are random (45%),
    /// random low-entropy table bytes (30%), zero padding (10%) or NUL-separated strings (15%).
    fn binary(&self, rng: &mut Rng, len: usize, out: &mut Vec<u8>) {
        let target = out.len() + len;
        out.reserve(len + 16_384);
        while out.len() < target {
            let kind = rng.unit();
            let run = rng.range_usize(512, 16_384);
            let start = out.len();
            if kind < 0.75 {
                out.resize(start + run, 0);
                rng.fill(&mut out[start..]);
                if kind >= 0.45 {
                    for byte in &mut out[start..] {
                        *byte = (*byte & 0x0f) * 3;
                    }
                }
            } else if kind < 0.85 {
                out.resize(start + run, 0);
            } else {
                for i in 0..run / 7 {
                    if i > 0 {
                        out.push(0);
                    }
                    let word = self.any_word(rng);
                    out.extend_from_slice(word);
                }
                out.truncate(start + run);
            }
        }
        out.truncate(target);
    }
}

// ----------------------------------------------------------------------------------------- BSON

/// Minimal BSON encoding into a byte vector.
mod bson {
    /// Starts a document; returns its start for [`end`].
    pub fn begin(out: &mut Vec<u8>) -> usize {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        start
    }

    /// Ends the document begun at `start`.
    pub fn end(out: &mut Vec<u8>, start: usize) {
        out.push(0);
        let len = i32::try_from(out.len() - start).expect("document under 2 GiB");
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    }

    /// An element's type byte and name.
    fn key(out: &mut Vec<u8>, kind: u8, name: &str) {
        out.push(kind);
        out.extend_from_slice(name.as_bytes());
        out.push(0);
    }

    /// A UTF-8 string element.
    pub fn string(out: &mut Vec<u8>, name: &str, value: &[u8]) {
        string_with(out, name, |out| out.extend_from_slice(value));
    }

    /// A string element whose value `fill` appends.
    pub fn string_with(out: &mut Vec<u8>, name: &str, fill: impl FnOnce(&mut Vec<u8>)) {
        key(out, 0x02, name);
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        fill(out);
        out.push(0);
        let len = i32::try_from(out.len() - start - 4).expect("string under 2 GiB");
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    }

    /// An integer element: int32 when it fits, int64 otherwise (like Python's encoder).
    pub fn int(out: &mut Vec<u8>, name: &str, value: i64) {
        if let Ok(small) = i32::try_from(value) {
            key(out, 0x10, name);
            out.extend_from_slice(&small.to_le_bytes());
        } else {
            key(out, 0x12, name);
            out.extend_from_slice(&value.to_le_bytes());
        }
    }

    /// A double element.
    pub fn double(out: &mut Vec<u8>, name: &str, value: f64) {
        key(out, 0x01, name);
        out.extend_from_slice(&value.to_le_bytes());
    }

    /// A UTC datetime element (milliseconds since the epoch).
    pub fn date(out: &mut Vec<u8>, name: &str, millis: i64) {
        key(out, 0x09, name);
        out.extend_from_slice(&millis.to_le_bytes());
    }

    /// An `ObjectId` element.
    pub fn oid(out: &mut Vec<u8>, name: &str, id: &[u8; 12]) {
        key(out, 0x07, name);
        out.extend_from_slice(id);
    }

    /// A boolean element.
    pub fn boolean(out: &mut Vec<u8>, name: &str, value: bool) {
        key(out, 0x08, name);
        out.push(u8::from(value));
    }

    /// A generic binary element of `len` bytes that `fill` writes.
    pub fn binary(out: &mut Vec<u8>, name: &str, len: usize, fill: impl FnOnce(&mut [u8])) {
        key(out, 0x05, name);
        out.extend_from_slice(
            &i32::try_from(len)
                .expect("binary under 2 GiB")
                .to_le_bytes(),
        );
        out.push(0);
        let start = out.len();
        out.resize(start + len, 0);
        fill(&mut out[start..]);
    }

    /// Starts an embedded document element; end it with [`end`].
    pub fn document(out: &mut Vec<u8>, name: &str) -> usize {
        key(out, 0x03, name);
        begin(out)
    }

    /// Starts an array element; end it with [`end`].
    pub fn array(out: &mut Vec<u8>, name: &str) -> usize {
        key(out, 0x04, name);
        begin(out)
    }
}

// ---------------------------------------------------------------------------------------- mongo

/// A collection: name, share of the archive's bytes, approximate document size.
type Collection = (&'static str, f64, usize);

/// The dumped collections.
const COLLECTIONS: [Collection; 6] = [
    ("users", 0.08, 1400),
    ("orders", 0.20, 1800),
    ("events", 0.27, 900),
    ("sessions", 0.05, 500),
    ("fs.files", 0.005, 300),
    ("fs.chunks", 0.395, 255 * 1024),
];

/// An `ObjectId` for a document created at `millis`.
fn object_id(rng: &mut Rng, millis: i64) -> [u8; 12] {
    let mut id = [0; 12];
    id[..4].copy_from_slice(&((millis / 1000) as u32).to_be_bytes());
    rng.fill(&mut id[4..]);
    id
}

/// A price with two decimals in `lo..hi`.
fn price(rng: &mut Rng, lo: f64, hi: f64) -> f64 {
    ((lo + (hi - lo) * rng.unit()) * 100.0).round() / 100.0
}

/// Appends document `idx` of `collection` at version `ver` (0 = as first dumped). Fields drawn
/// from the identity stream stay the same across versions; the others change with `ver`.
fn mongo_doc(g: &Gen, collection: &str, idx: u64, ver: u64, out: &mut Vec<u8>) {
    let name = collection.as_bytes();
    let mut r = Rng::derive(
        g.seed,
        &[b"doc", name, &idx.to_le_bytes(), &ver.to_le_bytes()],
    );
    let mut r0 = Rng::derive(g.seed, &[b"doc", name, &idx.to_le_bytes(), &[0; 8]]);
    let ts = BASE_MS + idx as i64 * 37_000 + r0.range(0, 30_000);
    let id = object_id(&mut r0, ts);
    let updated = ts + ver as i64 * 86_400_000 + r.range(0, 3_600_000);
    let doc = bson::begin(out);
    match collection {
        "users" => {
            let full = format!("{} {}", g.capitalized(&mut r0), g.capitalized(&mut r0));
            bson::oid(out, "_id", &id);
            let email = format!("{}{idx}@example.com", full.replace(' ', ".").to_lowercase());
            bson::string(out, "email", email.as_bytes());
            bson::string(out, "name", full.as_bytes());
            bson::string_with(out, "passwordHash", |out| {
                out.extend_from_slice(b"$2b$12$");
                push_hex(out, &r0.bytes::<27>());
                out.pop();
            });
            bson::date(out, "createdAt", ts);
            bson::date(out, "updatedAt", updated);
            bson::date(out, "lastLogin", ts + r.range(0, 10_000_000_000));
            let count = r0.range_usize(1, 3);
            let roles = r0.sample(&["user", "admin", "editor", "billing", "support"], count);
            let array = bson::array(out, "roles");
            for (i, role) in roles.iter().enumerate() {
                bson::string(out, &i.to_string(), role.as_bytes());
            }
            bson::end(out, array);
            let profile = bson::document(out, "profile");
            let bio = r.range_usize(200, 1200);
            bson::string_with(out, "bio", |out| g.text(&mut r, bio, out));
            let locale = *r0.pick(&["en-US", "de-DE", "fr-FR", "es-ES", "ja-JP"]);
            bson::string(out, "locale", locale.as_bytes());
            bson::string_with(out, "avatarUrl", |out| {
                out.extend_from_slice(b"https://cdn.example.com/a/");
                push_hex(out, &r0.bytes::<16>());
                out.extend_from_slice(b".png");
            });
            bson::end(out, profile);
            let settings = bson::document(out, "settings");
            bson::boolean(out, "newsletter", r.chance(0.3));
            bson::string(out, "theme", r.pick(&["dark", "light"]).as_bytes());
            bson::int(out, "tz", r0.range(-12, 12));
            bson::end(out, settings);
            bson::int(out, "loginCount", r.range(0, 5000));
        }
        "orders" => {
            bson::oid(out, "_id", &id);
            bson::oid(out, "userId", &object_id(&mut r0, ts - 1_000_000_000));
            let items = bson::array(out, "items");
            let mut total = 0.0;
            for i in 0..r0.range_usize(1, 12) {
                let item = bson::document(out, &i.to_string());
                bson::string(
                    out,
                    "sku",
                    format!("SKU-{}", r0.range(10_000, 99_999)).as_bytes(),
                );
                let qty = r0.range(1, 5);
                let each = price(&mut r0, 1.0, 500.0);
                total += qty as f64 * each;
                bson::int(out, "qty", qty);
                bson::double(out, "price", each);
                bson::string_with(out, "title", |out| g.sentence(&mut r0, 2, 6, out));
                bson::end(out, item);
            }
            bson::end(out, items);
            bson::double(out, "total", (total * 100.0).round() / 100.0);
            bson::string(out, "currency", r0.pick(&["USD", "EUR", "GBP"]).as_bytes());
            let status = *r.pick(&["new", "paid", "shipped", "delivered", "refunded"]);
            bson::string(out, "status", status.as_bytes());
            bson::date(out, "createdAt", ts);
            bson::date(out, "updatedAt", updated);
            let shipping = bson::document(out, "shipping");
            bson::string_with(out, "street", |out| {
                out.extend_from_slice(r0.range(1, 999).to_string().as_bytes());
                out.push(b' ');
                g.sentence(&mut r0, 1, 3, out);
            });
            bson::string(out, "city", g.capitalized(&mut r0).as_bytes());
            bson::string(out, "zip", r0.range(10_000, 99_999).to_string().as_bytes());
            bson::string(
                out,
                "country",
                r0.pick(&["US", "DE", "FR", "GB", "NL"]).as_bytes(),
            );
            bson::end(out, shipping);
            let notes = r.range_usize(0, 600);
            bson::string_with(out, "notes", |out| g.text(&mut r, notes, out));
        }
        "events" => {
            bson::oid(out, "_id", &id);
            bson::date(out, "ts", ts);
            let levels = ["debug", "info", "info", "info", "warn", "error"];
            bson::string(out, "level", r0.pick(&levels).as_bytes());
            let services = ["api", "worker", "auth", "billing", "mailer"];
            bson::string(out, "service", r0.pick(&services).as_bytes());
            bson::string_with(out, "msg", |out| g.sentence(&mut r, 6, 40, out));
            bson::string_with(out, "requestId", |out| push_hex(out, &r0.bytes::<16>()));
            bson::int(out, "durationMs", r.range(1, 5000));
            let meta = bson::document(out, "meta");
            let ip = format!(
                "10.{}.{}.{}",
                r0.range(0, 255),
                r0.range(0, 255),
                r0.range(1, 254)
            );
            bson::string(out, "ip", ip.as_bytes());
            let agents = [
                "Mozilla/5.0 (X11; Linux x86_64)",
                "curl/8.4.0",
                "okhttp/4.12",
            ];
            bson::string(out, "ua", r0.pick(&agents).as_bytes());
            bson::int(out, "v", ver as i64);
            bson::end(out, meta);
            let payload = r.range_usize(100, 900);
            bson::string_with(out, "payload", |out| g.text(&mut r, payload, out));
        }
        "sessions" => {
            bson::string_with(out, "_id", |out| push_hex(out, &r0.bytes::<24>()));
            bson::oid(out, "userId", &object_id(&mut r0, ts));
            bson::date(out, "expiresAt", updated + 30 * 86_400_000);
            let len = r.range_usize(64, 512);
            bson::binary(out, "data", len, |buf| r.fill(buf));
            bson::string(out, "ua", b"Mozilla/5.0");
            bson::date(out, "updatedAt", updated);
        }
        "fs.files" => {
            bson::oid(out, "_id", &id);
            bson::string_with(out, "filename", |out| {
                out.extend_from_slice(b"uploads/");
                push_hex(out, &r0.bytes::<8>());
                out.extend_from_slice(b".jpg");
            });
            bson::int(out, "length", r0.range(100_000, 10_000_000));
            bson::int(out, "chunkSize", GRIDFS_CHUNK as i64);
            bson::date(out, "uploadDate", ts);
            bson::string(out, "contentType", b"image/jpeg");
            let meta = bson::document(out, "metadata");
            bson::oid(out, "owner", &object_id(&mut r0, ts));
            bson::int(out, "rev", ver as i64);
            bson::end(out, meta);
        }
        "fs.chunks" => {
            bson::oid(out, "_id", &id);
            bson::oid(out, "files_id", &object_id(&mut r0, ts - 5000));
            bson::int(out, "n", (idx % 40) as i64);
            bson::binary(out, "data", GRIDFS_CHUNK, |buf| r.fill(buf));
        }
        other => unreachable!("unknown collection {other}"),
    }
    bson::end(out, doc);
}

/// The `(idx, ver)` of a collection's documents in dump order for a night. Each night `k >= 2`
/// changes night `k - 1`: before ~1% of the night-1 positions a new document is inserted, ~1% of
/// the surviving night-1 documents are deleted and ~2% modified (version `k - 1`). Inserted
/// documents are never modified or deleted later.
#[derive(Debug)]
struct DocIds {
    /// Corpus seed.
    seed: u64,
    /// Collection name.
    collection: &'static str,
    /// Night-1 document count.
    count: u64,
    /// Night (1, 2, ...).
    night: u32,
    /// Next night-1 document to consider.
    next: u64,
    /// Documents inserted so far by each night `k` (at index `k - 2`): ordinals, so that an
    /// inserted document keeps its index on every later night.
    inserted: Vec<u64>,
    /// Documents to yield before looking at the next night-1 document.
    pending: VecDeque<(u64, u64)>,
}

impl DocIds {
    /// The documents of `collection` for `night`.
    fn new(seed: u64, collection: &'static str, count: u64, night: u32) -> Self {
        Self {
            seed,
            collection,
            count,
            night,
            next: 0,
            inserted: vec![0; night.saturating_sub(1) as usize],
            pending: VecDeque::new(),
        }
    }
}

impl Iterator for DocIds {
    type Item = (u64, u64);

    fn next(&mut self) -> Option<(u64, u64)> {
        loop {
            if let Some(pending) = self.pending.pop_front() {
                return Some(pending);
            }
            if self.next >= self.count {
                return None;
            }
            let idx = self.next;
            self.next += 1;
            let name = self.collection.as_bytes();
            let mut own = Some((idx, 0));
            for k in 2..=u64::from(self.night) {
                let mut r = nightly_rng(self.seed, k, &[b"mut", name, &idx.to_le_bytes()]);
                if r.chance(0.01) {
                    // Night k's inserts get the indices (k - 1) * count + ordinal.
                    let ordinal = &mut self.inserted[(k - 2) as usize];
                    self.pending.push_back(((k - 1) * self.count + *ordinal, 0));
                    *ordinal += 1;
                }
                let x = r.unit();
                if own.is_some() {
                    if x < 0.01 {
                        own = None;
                    } else if x < 0.03 {
                        own = Some((idx, k - 1));
                    }
                }
            }
            self.pending.extend(own);
        }
    }
}

/// The random stream of night `k`'s changes labelled `parts`: night 2 keeps the labels it has
/// always had (so that two-night corpora stay byte-identical), later nights add `k`.
fn nightly_rng(seed: u64, k: u64, parts: &[&[u8]]) -> Rng {
    if k == 2 {
        Rng::derive(seed, parts)
    } else {
        let night = k.to_le_bytes();
        let mut labelled = parts.to_vec();
        labelled.push(&night);
        Rng::derive(seed, &labelled)
    }
}

/// Modification time of what changed on `night` (night 1: `T1`, then a day later each night).
fn night_mtime(night: u64) -> u64 {
    T1 + (night - 1) * 86_400
}

/// Appends a segment header (or, with `eof`, the collection's end marker) to `out`.
fn segment_header(out: &mut Vec<u8>, collection: &str, eof: bool, crc: i64) {
    let doc = bson::begin(out);
    bson::string(out, "db", b"app");
    bson::string(out, "collection", collection.as_bytes());
    bson::boolean(out, "EOF", eof);
    bson::int(out, "CRC", crc);
    bson::end(out, doc);
}

/// Terminator after headers and segments.
const TERMINATOR: [u8; 4] = [0xff; 4];

/// One collection being dumped.
struct Dumping {
    /// Collection name.
    collection: &'static str,
    /// Its documents.
    ids: DocIds,
    /// The segment being filled.
    buf: Vec<u8>,
}

/// Writes the mongodump archive of `total` bytes for `night`.
fn write_mongo(g: &Gen, path: &Path, total: u64, night: u32) -> Result<u64> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut head = Vec::new();
    head.extend_from_slice(&0x8199_e26d_u32.to_le_bytes());
    let prelude = bson::begin(&mut head);
    bson::int(&mut head, "concurrent_collections", 4);
    bson::string(&mut head, "version", b"0.1");
    bson::string(&mut head, "server_version", b"7.0.14");
    bson::string(&mut head, "tool_version", b"100.10.0");
    bson::end(&mut head, prelude);
    let plan: Vec<(&'static str, u64)> = COLLECTIONS
        .iter()
        .map(|&(name, share, size)| (name, ((total as f64 * share) as u64 / size as u64).max(1)))
        .collect();
    for &(name, count) in &plan {
        let uuid = Rng::derive(g.seed, &[b"uuid", name.as_bytes()]).next_u64();
        let metadata = format!(
            r#"{{"indexes": [{{"v": 2, "key": {{"_id": 1}}, "name": "_id_"}}], "uuid": "{uuid:032x}"}}"#
        );
        let doc = bson::begin(&mut head);
        bson::string(&mut head, "db", b"app");
        bson::string(&mut head, "collection", name.as_bytes());
        bson::string(&mut head, "metadata", metadata.as_bytes());
        bson::int(&mut head, "size", count as i64);
        bson::string(&mut head, "type", b"collection");
        bson::end(&mut head, doc);
    }
    head.extend_from_slice(&TERMINATOR);
    out.write_all(&head)?;
    let mut written = head.len() as u64;

    // Up to 4 collections are dumped at once; each flushes a segment of at most 16 MiB in turn.
    let mut pending: VecDeque<(&'static str, u64)> = plan.into_iter().collect();
    let mut active: Vec<Dumping> = Vec::new();
    let mut doc = Vec::new();
    let mut header = Vec::new();
    let mut flush = |out: &mut BufWriter<File>, name: &str, buf: &[u8], eof: Option<i64>| {
        let mut n = 0;
        if !buf.is_empty() {
            header.clear();
            segment_header(&mut header, name, false, 0);
            out.write_all(&header)?;
            out.write_all(buf)?;
            out.write_all(&TERMINATOR)?;
            n += (header.len() + buf.len() + TERMINATOR.len()) as u64;
        }
        if let Some(crc) = eof {
            header.clear();
            segment_header(&mut header, name, true, crc);
            header.extend_from_slice(&TERMINATOR);
            out.write_all(&header)?;
            n += header.len() as u64;
        }
        io::Result::Ok(n)
    };
    while !pending.is_empty() || !active.is_empty() {
        while active.len() < 4 {
            let Some((collection, count)) = pending.pop_front() else {
                break;
            };
            active.push(Dumping {
                collection,
                ids: DocIds::new(g.seed, collection, count, night),
                buf: Vec::with_capacity(SEGMENT),
            });
        }
        let mut finished = Vec::new();
        for (slot, dumping) in active.iter_mut().enumerate() {
            let mut done = true;
            for (idx, ver) in dumping.ids.by_ref() {
                doc.clear();
                mongo_doc(g, dumping.collection, idx, ver, &mut doc);
                if dumping.buf.len() + doc.len() > SEGMENT {
                    written += flush(&mut out, dumping.collection, &dumping.buf, None)?;
                    dumping.buf.clear();
                    dumping.buf.extend_from_slice(&doc);
                    done = false;
                    break;
                }
                dumping.buf.extend_from_slice(&doc);
            }
            if done {
                let crc = Rng::derive(
                    g.seed,
                    &[b"crc", dumping.collection.as_bytes(), &night.to_le_bytes()],
                )
                .next_u64()
                    & 0x7fff_ffff_ffff_ffff;
                written += flush(&mut out, dumping.collection, &dumping.buf, Some(crc as i64))?;
                finished.push(slot);
            }
        }
        for slot in finished.into_iter().rev() {
            active.remove(slot);
        }
    }
    out.flush()?;
    let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    set_mtime(&file, night_mtime(night.into()))?;
    Ok(written)
}

// ------------------------------------------------------------------------------------------ tar

/// A tar writer (POSIX ustar headers, PAX records for long names or large sizes, 10 KiB records).
struct Tar<W: Write> {
    /// Destination.
    out: W,
    /// Bytes written so far.
    offset: u64,
}

/// Directory entry type.
const DIRECTORY: u8 = b'5';
/// Regular file entry type.
const REGULAR: u8 = b'0';

impl<W: Write> Tar<W> {
    /// A tar writer into `out`.
    fn new(out: W) -> Self {
        Self { out, offset: 0 }
    }

    /// Writes raw bytes.
    fn raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Pads with zeros to the next 512-byte block.
    fn pad(&mut self) -> io::Result<()> {
        let rest = (self.offset % 512) as usize;
        if rest != 0 {
            self.raw(&[0; 512][..512 - rest])?;
        }
        Ok(())
    }

    /// One 512-byte ustar header block.
    fn header_block(name: &str, kind: u8, mode: u32, size: u64, mtime: u64) -> [u8; 512] {
        let mut block = [0_u8; 512];
        let field = |block: &mut [u8; 512], at: usize, width: usize, value: u64| {
            let text = format!("{value:0width$o}", width = width - 1);
            let bytes = text.as_bytes();
            let bytes = &bytes[bytes.len().saturating_sub(width - 1)..];
            block[at..at + bytes.len()].copy_from_slice(bytes);
        };
        let name = name.as_bytes();
        let name = &name[..name.len().min(100)];
        block[..name.len()].copy_from_slice(name);
        field(&mut block, 100, 8, u64::from(mode));
        field(&mut block, 108, 8, 0);
        field(&mut block, 116, 8, 0);
        field(&mut block, 124, 12, size.min(0o777_7777_7777));
        field(&mut block, 136, 12, mtime);
        block[148..156].fill(b' ');
        block[156] = kind;
        block[257..263].copy_from_slice(b"ustar\0");
        block[263..265].copy_from_slice(b"00");
        field(&mut block, 329, 8, 0);
        field(&mut block, 337, 8, 0);
        let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
        let text = format!("{sum:06o}\0 ");
        block[148..156].copy_from_slice(text.as_bytes());
        block
    }

    /// Writes an entry header (with a PAX extended header first when the name or size does not fit).
    fn header(&mut self, name: &str, kind: u8, mode: u32, size: u64, mtime: u64) -> io::Result<()> {
        let mut records = String::new();
        let mut record = |key: &str, value: &str| {
            let body = format!(" {key}={value}\n");
            let mut len = body.len() + 1;
            while len.to_string().len() + body.len() != len {
                len = len.to_string().len() + body.len();
            }
            records.push_str(&len.to_string());
            records.push_str(&body);
        };
        if name.len() > 100 {
            record("path", name);
        }
        if size > 0o777_7777_7777 {
            record("size", &size.to_string());
        }
        if !records.is_empty() {
            let pax = Self::header_block("././@PaxHeader", b'x', 0o644, records.len() as u64, 0);
            self.raw(&pax)?;
            self.raw(records.as_bytes())?;
            self.pad()?;
        }
        let block = Self::header_block(name, kind, mode, size, mtime);
        self.raw(&block)
    }

    /// A directory entry (its name gets a trailing slash).
    fn directory(&mut self, name: &str, mtime: u64) -> io::Result<()> {
        self.header(&format!("{name}/"), DIRECTORY, 0o755, 0, mtime)
    }

    /// A regular file with `data`.
    fn file(&mut self, name: &str, mode: u32, mtime: u64, data: &[u8]) -> io::Result<()> {
        self.header(name, REGULAR, mode, data.len() as u64, mtime)?;
        self.raw(data)?;
        self.pad()
    }

    /// Writes the end-of-archive blocks, pads to a 10 KiB record and returns the writer.
    fn finish(mut self) -> io::Result<(W, u64)> {
        self.raw(&[0; 1024])?;
        let rest = (self.offset % 10_240) as usize;
        if rest != 0 {
            self.raw(&vec![0; 10_240 - rest])?;
        }
        Ok((self.out, self.offset))
    }
}

/// A writer that hashes what passes through.
struct Hashing<W: Write> {
    /// Destination.
    inner: W,
    /// Hash of everything written.
    hasher: blake3::Hasher,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

// --------------------------------------------------------------------------------------- docker

/// A layer: name, share of the image's bytes, fraction of files that are binaries, directories.
type Layer = (&'static str, f64, f64, &'static [&'static str]);

/// The image's layers, bottom first.
const LAYERS: [Layer; 4] = [
    (
        "base",
        0.25,
        0.55,
        &[
            "usr/bin",
            "usr/lib/x86_64-linux-gnu",
            "usr/share/doc",
            "etc",
            "usr/share/locale",
        ],
    ),
    (
        "runtime",
        0.35,
        0.40,
        &[
            "usr/local/lib/python3.12",
            "usr/local/lib/python3.12/site-packages",
            "usr/local/bin",
        ],
    ),
    (
        "deps",
        0.30,
        0.20,
        &[
            "app/node_modules",
            "app/node_modules/.bin",
            "app/node_modules/@types",
        ],
    ),
    (
        "app",
        0.10,
        0.35,
        &["app/dist", "app/static/img", "app/config", "app/migrations"],
    ),
];

/// A file of a layer: path, size, whether it is a binary, and the night it last changed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct LayerFile {
    /// Path inside the layer.
    name: String,
    /// Size in bytes.
    size: usize,
    /// Binary (executable-like) rather than text.
    binary: bool,
    /// Content version: 0 on night 1, `k - 1` once changed by night `k`.
    version: u64,
}

/// The files of a layer of about `total` bytes, sorted by path.
fn layer_files(g: &Gen, layer: &Layer, total: u64) -> Vec<LayerFile> {
    let (key, _, binary_fraction, prefixes) = *layer;
    let mut r = Rng::derive(g.seed, &[b"layerfiles", key.as_bytes()]);
    let mut files = Vec::new();
    let mut acc = 0_u64;
    while acc < total {
        let binary = r.chance(binary_fraction);
        let median = 24_000.0 * if binary { 3.0 } else { 1.0 };
        let size = r.lognormal(f64::ln(median), 1.3).min(4_194_304.0) as usize;
        let prefix = r.pick(prefixes);
        let ext = if binary {
            *r.pick(&[".so", "", ".bin", ".png"])
        } else {
            *r.pick(&[".py", ".js", ".md", ".txt", ".json", ".conf", ".h"])
        };
        let name = format!("{prefix}/{}{}{ext}", g.any_word_str(&mut r), files.len());
        files.push(LayerFile {
            name,
            size,
            binary,
            version: 0,
        });
        acc += size as u64;
    }
    files.sort();
    files
}

/// Rebuilds the app layer of night `k - 1` for night `k`: ~3% of files removed, 1/30 added,
/// ~30% changed.
fn rebuild_app_layer(g: &Gen, files: Vec<LayerFile>, k: u64) -> Vec<LayerFile> {
    let mut r = nightly_rng(g.seed, k, &[b"applayer-n2"]);
    let added = files.len() / 30;
    let mut next: Vec<LayerFile> = files.into_iter().filter(|_| r.unit() > 0.03).collect();
    for _ in 0..added {
        let name = format!("app/dist/chunk-{}.js", hex(&r.bytes::<4>()));
        let size = r.lognormal(f64::ln(24_000.0), 1.0) as usize;
        next.push(LayerFile {
            name,
            size,
            binary: false,
            version: 0,
        });
    }
    next.sort();
    for file in &mut next {
        if r.chance(0.30) {
            file.version = k - 1;
        }
    }
    next
}

/// Writes a layer tar of `files` to `path`; returns its size and digest.
fn write_layer(g: &Gen, key: &str, files: &[LayerFile], path: &Path) -> Result<(u64, String)> {
    let out = Hashing {
        inner: BufWriter::with_capacity(1 << 20, File::create(path)?),
        hasher: blake3::Hasher::new(),
    };
    let mut tar = Tar::new(out);
    let mut dirs = HashSet::new();
    let mut data = Vec::new();
    for file in files {
        let mut parent = 0;
        while let Some(slash) = file.name[parent..].find('/') {
            let dir = &file.name[..parent + slash];
            if dirs.insert(dir.to_owned()) {
                tar.directory(dir, T1)?;
            }
            parent += slash + 1;
        }
        let mut r = Rng::derive(
            g.seed,
            &[
                b"file",
                key.as_bytes(),
                file.name.as_bytes(),
                &file.version.to_le_bytes(),
            ],
        );
        data.clear();
        if file.binary {
            g.binary(&mut r, file.size, &mut data);
        } else {
            g.text(&mut r, file.size, &mut data);
        }
        let mode = if file.binary { 0o755 } else { 0o644 };
        tar.file(&file.name, mode, night_mtime(file.version + 1), &data)?;
    }
    let (mut out, size) = tar.finish()?;
    out.flush()?;
    Ok((size, out.hasher.finalize().to_hex().to_string()))
}

/// A blob of the image: a layer tar in a part file, or small JSON bytes.
enum Blob<'a> {
    /// A layer written to a part file, with its size.
    Layer(&'a Path, u64),
    /// Config or manifest.
    Small(&'a [u8]),
}

/// Writes the `docker save` tar of `total` bytes for `night`; returns its size.
fn write_docker(g: &Gen, path: &Path, total: u64, night: u32) -> Result<u64> {
    let mtime = night_mtime(night.into());
    let parts: Vec<(u64, String, PathBuf)> = LAYERS
        .par_iter()
        .enumerate()
        .map(|(index, layer)| {
            let mut files = layer_files(g, layer, (total as f64 * layer.1) as u64);
            if index == LAYERS.len() - 1 {
                for k in 2..=u64::from(night) {
                    files = rebuild_app_layer(g, files, k);
                }
            }
            let part = path.with_extension(format!("layer{index}.part"));
            let (size, digest) = write_layer(g, layer.0, &files, &part)?;
            Ok((size, digest, part))
        })
        .collect::<Result<_>>()?;
    let created = iso8601((mtime - 3600) as i64);
    let diff_ids: Vec<String> = parts
        .iter()
        .map(|(_, digest, _)| format!("\"sha256:{digest}\""))
        .collect();
    let history: Vec<String> = LAYERS
        .iter()
        .map(|layer| {
            format!(
                r#"{{"created": "{created}", "created_by": "/bin/sh -c #(nop) layer {}"}}"#,
                layer.0
            )
        })
        .collect();
    let config = format!(
        r#"{{"architecture": "amd64", "os": "linux", "created": "{created}", "config": {{"Env": ["PATH=/usr/local/bin:/usr/bin", "NODE_ENV=production"], "Cmd": ["node", "dist/server.js"], "WorkingDir": "/app"}}, "rootfs": {{"type": "layers", "diff_ids": [{}]}}, "history": [{}]}}"#,
        diff_ids.join(", "),
        history.join(", ")
    );
    let config_digest = blake3::hash(config.as_bytes()).to_hex().to_string();
    let layers: Vec<String> = parts
        .iter()
        .map(|(size, digest, _)| {
            format!(
                r#"{{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:{digest}", "size": {size}}}"#
            )
        })
        .collect();
    let manifest = format!(
        r#"{{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:{config_digest}", "size": {}}}, "layers": [{}]}}"#,
        config.len(),
        layers.join(", ")
    );
    let manifest_digest = blake3::hash(manifest.as_bytes()).to_hex().to_string();
    let layer_paths: Vec<String> = parts
        .iter()
        .map(|(_, digest, _)| format!("\"blobs/sha256/{digest}\""))
        .collect();
    let index = format!(
        r#"{{"schemaVersion": 2, "manifests": [{{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:{manifest_digest}", "size": {}, "annotations": {{"io.containerd.image.name": "registry.example.com/app:latest"}}}}]}}"#,
        manifest.len()
    );
    let manifest_json = format!(
        r#"[{{"Config": "blobs/sha256/{config_digest}", "RepoTags": ["registry.example.com/app:latest"], "Layers": [{}]}}]"#,
        layer_paths.join(", ")
    );
    let repositories =
        format!(r#"{{"registry.example.com/app": {{"latest": "{manifest_digest}"}}}}"#);

    // Blobs in digest order, as docker writes them.
    let mut blobs: Vec<(&str, Blob)> = parts
        .iter()
        .map(|(size, digest, part)| (digest.as_str(), Blob::Layer(part, *size)))
        .collect();
    blobs.push((&config_digest, Blob::Small(config.as_bytes())));
    blobs.push((&manifest_digest, Blob::Small(manifest.as_bytes())));
    blobs.sort_by(|a, b| a.0.cmp(b.0));
    let mut tar = Tar::new(BufWriter::with_capacity(1 << 20, File::create(path)?));
    tar.directory("blobs", mtime)?;
    tar.directory("blobs/sha256", mtime)?;
    for (digest, blob) in &blobs {
        let name = format!("blobs/sha256/{digest}");
        match blob {
            Blob::Layer(part, size) => {
                tar.header(&name, REGULAR, 0o444, *size, mtime)?;
                let mut input = File::open(part)?;
                let copied = io::copy(&mut input, &mut tar.out)?;
                if copied != *size {
                    bail!("{}: expected {size} bytes, copied {copied}", part.display());
                }
                tar.offset += copied;
                tar.pad()?;
            }
            Blob::Small(bytes) => tar.file(&name, 0o444, mtime, bytes)?,
        }
    }
    for (name, data) in [
        ("index.json", index.as_str()),
        ("manifest.json", manifest_json.as_str()),
        ("oci-layout", r#"{"imageLayoutVersion":"1.0.0"}"#),
        ("repositories", repositories.as_str()),
    ] {
        tar.file(name, 0o444, mtime, data.as_bytes())?;
    }
    let (mut out, size) = tar.finish()?;
    out.flush()?;
    let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    set_mtime(&file, mtime)?;
    for (_, _, part) in &parts {
        fs::remove_file(part)?;
    }
    Ok(size)
}

// ---------------------------------------------------------------------------------- small files

/// Subdirectories of a service directory (`.` is the service directory itself).
const SERVICE_DIRS: [&str; 8] = [
    "config",
    "config/conf.d",
    "nginx/sites-enabled",
    "certs",
    "data",
    "logs",
    "scripts",
    ".",
];

/// Kinds of small files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `KEY=value` lines.
    Env,
    /// Indented `key: value` lines.
    Yaml,
    /// An indented JSON object.
    Json,
    /// Like YAML.
    Conf,
    /// A base64 certificate.
    Pem,
    /// Timestamped log lines.
    Log,
    /// Like YAML.
    Sh,
}

/// Kinds, their extensions and relative frequencies.
const KINDS: [(Kind, &str, u32); 7] = [
    (Kind::Env, ".env", 10),
    (Kind::Yaml, ".yml", 30),
    (Kind::Json, ".json", 20),
    (Kind::Conf, ".conf", 15),
    (Kind::Pem, ".pem", 5),
    (Kind::Log, ".log", 15),
    (Kind::Sh, ".sh", 5),
];

/// A planned small file.
#[derive(Debug, Clone)]
struct SmallFile {
    /// Path relative to the tree.
    name: String,
    /// Content kind.
    kind: Kind,
    /// Size in bytes.
    size: usize,
}

/// The night-1 plan of `count` files of about `total` bytes together.
fn small_files_plan(g: &Gen, total: u64, count: usize) -> Vec<SmallFile> {
    let mut r = Rng::derive(g.seed, &[b"tree"]);
    let mu = (total as f64 / count as f64).ln() - 1.2 * 1.2 / 2.0;
    let services: Vec<String> = (0..(count / 100).max(4))
        .map(|i| format!("srv/{}-{i}", g.any_word_str(&mut r)))
        .collect();
    let weights: Vec<u32> = KINDS.iter().map(|kind| kind.2).collect();
    (0..count)
        .map(|i| {
            let (kind, ext, _) = KINDS[r.weighted(&weights)];
            let service = r.pick(&services);
            let sub = *r.pick(&SERVICE_DIRS);
            let dir = if sub == "." {
                service.clone()
            } else {
                format!("{service}/{sub}")
            };
            let name = if kind == Kind::Env && r.chance(0.5) {
                format!("{dir}/.env.{}{i}", g.any_word_str(&mut r))
            } else {
                format!("{dir}/{}{i}{ext}", g.any_word_str(&mut r))
            };
            let size = (r.lognormal(mu, 1.2).min(2_097_152.0) as usize).max(20);
            SmallFile { name, kind, size }
        })
        .collect()
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a Unix time.
fn iso8601(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Appends exactly `size` bytes of a small file of `kind`.
fn small_file_content(g: &Gen, r: &mut Rng, kind: Kind, size: usize, out: &mut Vec<u8>) {
    let start = out.len();
    let target = start + size;
    match kind {
        Kind::Env => {
            while out.len() < target {
                for i in 0..r.range_usize(1, 3) {
                    if i > 0 {
                        out.push(b'_');
                    }
                    let word = g.any_word(r).to_ascii_uppercase();
                    out.extend_from_slice(&word);
                }
                out.push(b'=');
                match r.below(5) {
                    0 => push_hex(out, &r.bytes::<24>()),
                    1 => out.extend_from_slice(r.range(1, 65_535).to_string().as_bytes()),
                    2 => out.extend_from_slice(b"true"),
                    3 => {
                        out.extend_from_slice(b"postgres://app:");
                        push_hex(out, &r.bytes::<12>());
                        out.extend_from_slice(b"@db:5432/app");
                    }
                    _ => {
                        let word = g.any_word(r);
                        out.extend_from_slice(word);
                    }
                }
                out.push(b'\n');
            }
        }
        Kind::Pem => {
            let mut raw = vec![0; size * 3 / 4];
            r.fill(&mut raw);
            let mut encoded = Vec::with_capacity(raw.len() * 4 / 3 + 4);
            push_base64(&mut encoded, &raw);
            out.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
            for (i, line) in encoded.chunks(64).enumerate() {
                if i > 0 {
                    out.push(b'\n');
                }
                out.extend_from_slice(line);
            }
            out.extend_from_slice(b"\n-----END CERTIFICATE-----\n");
        }
        Kind::Log => {
            let mut t = T1 as i64 - r.range(0, 1_000_000);
            while out.len() < target {
                t += r.range(0, 30);
                out.extend_from_slice(iso8601(t).as_bytes());
                out.push(b' ');
                out.extend_from_slice(r.pick(&["INFO", "INFO", "WARN", "ERROR"]).as_bytes());
                out.push(b' ');
                g.sentence(r, 4, 20, out);
                out.push(b'\n');
            }
        }
        Kind::Json => {
            out.push(b'{');
            let mut n = 0;
            while n < size {
                if n > 0 {
                    out.push(b',');
                }
                let word = g.any_word_str(r);
                let _ = write!(VecWriter(out), "\n  \"{word}_{n}\": ");
                n += word.len() + 12;
                match r.below(3) {
                    0 => out.extend_from_slice(r.range(0, 1_000_000).to_string().as_bytes()),
                    1 => {
                        out.push(b'"');
                        g.sentence(r, 1, 6, out);
                        out.push(b'"');
                    }
                    _ => out.extend_from_slice(if r.chance(0.5) { b"true" } else { b"false" }),
                }
            }
            out.extend_from_slice(b"\n}");
        }
        Kind::Yaml | Kind::Conf | Kind::Sh => {
            while out.len() < target {
                for _ in 0..r.range_usize(0, 3) {
                    out.extend_from_slice(b"  ");
                }
                let word = g.any_word(r);
                out.extend_from_slice(word);
                out.extend_from_slice(b": ");
                g.sentence(r, 1, 8, out);
                out.push(b'\n');
            }
        }
    }
    out.truncate(target);
}

/// `fmt::Write` into a byte vector.
struct VecWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// A file of the small-file tree on some night.
#[derive(Debug, Clone)]
struct TreeFile {
    /// Index of its content streams: its place in the night-1 plan, or past the plan for a file
    /// added later.
    index: usize,
    /// Path relative to the tree.
    name: String,
    /// Content kind.
    kind: Kind,
    /// Size in bytes before anything was appended.
    base_size: usize,
    /// Content version: 0, or `k - 1` once rewritten by night `k`.
    version: u64,
    /// Log lines appended since night 1: (version of the night that appended them, bytes).
    appended: Vec<(u64, usize)>,
    /// Modification time.
    mtime: u64,
}

impl TreeFile {
    /// Size in bytes.
    fn size(&self) -> usize {
        self.base_size + self.appended.iter().map(|&(_, bytes)| bytes).sum::<usize>()
    }
}

/// The small-file tree of night `k - 1` changed for night `k`: 36 files modified (logs appended
/// to, others rewritten), 15 removed, 24 added.
fn change_tree(g: &Gen, files: &[TreeFile], plan_len: usize, k: u64) -> Vec<TreeFile> {
    let mut r = nightly_rng(g.seed, k, &[b"tree-n2"]);
    let positions: Vec<usize> = (0..files.len()).collect();
    let modified: HashSet<usize> = r
        .sample(&positions, 36.min(files.len()))
        .into_iter()
        .collect();
    let others: Vec<usize> = positions
        .iter()
        .copied()
        .filter(|position| !modified.contains(position))
        .collect();
    let removed: HashSet<usize> = r
        .sample(&others, 15.min(others.len()))
        .into_iter()
        .collect();
    let mut next = Vec::with_capacity(files.len() + 24);
    for (position, file) in files.iter().enumerate() {
        if removed.contains(&position) {
            continue;
        }
        let mut file = file.clone();
        if modified.contains(&position) {
            if file.kind == Kind::Log {
                file.appended.push((k - 1, r.range_usize(1000, 20_000)));
            } else {
                file.version = k - 1;
            }
            file.mtime = night_mtime(k);
        }
        next.push(file);
    }
    for j in 0..24 {
        let base = &files[r.below(files.len() as u64) as usize];
        let dir = base.name.rsplit_once('/').map_or("", |(dir, _)| dir);
        let name = format!("{dir}/new-{}.yml", hex(&r.bytes::<3>()));
        next.push(TreeFile {
            index: plan_len + (k as usize - 2) * 24 + j,
            name,
            kind: Kind::Yaml,
            base_size: r.range_usize(200, 8000),
            version: 0,
            appended: Vec::new(),
            mtime: night_mtime(k),
        });
    }
    next
}

/// Writes the small-file tree for `night`; returns its total size.
fn write_files(g: &Gen, root: &Path, total: u64, count: usize, night: u32) -> Result<u64> {
    let plan = small_files_plan(g, total, count);
    let mut files: Vec<TreeFile> = plan
        .iter()
        .enumerate()
        .map(|(index, file)| TreeFile {
            index,
            name: file.name.clone(),
            kind: file.kind,
            base_size: file.size,
            version: 0,
            appended: Vec::new(),
            mtime: T1,
        })
        .collect();
    for k in 2..=u64::from(night) {
        files = change_tree(g, &files, plan.len(), k);
    }
    let written: u64 = files
        .par_chunks(256)
        .map(|batch| {
            let mut data = Vec::new();
            let mut bytes = 0;
            for file in batch {
                let index = file.index.to_le_bytes();
                let mut r = Rng::derive(g.seed, &[b"sfile", &index, &file.version.to_le_bytes()]);
                data.clear();
                small_file_content(g, &mut r, file.kind, file.base_size, &mut data);
                // Logs are appended to, not rewritten.
                for (version, size) in &file.appended {
                    let mut r = Rng::derive(g.seed, &[b"sfile", &index, &version.to_le_bytes()]);
                    small_file_content(g, &mut r, file.kind, *size, &mut data);
                }
                debug_assert_eq!(data.len(), file.size());
                let path = root.join(&file.name);
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent)?;
                }
                let mut out = File::create(&path)?;
                out.write_all(&data)?;
                set_mtime(&out, file.mtime)?;
                bytes += data.len() as u64;
            }
            anyhow::Ok(bytes)
        })
        .try_reduce(|| 0, |a, b| Ok(a + b))?;
    Ok(written)
}

/// Sets a file's access and modification times to `secs` after the epoch.
fn set_mtime(file: &File, secs: u64) -> io::Result<()> {
    let time = UNIX_EPOCH + Duration::from_secs(secs);
    file.set_times(FileTimes::new().set_accessed(time).set_modified(time))
}

// ----------------------------------------------------------------------------------------- main

/// One unit of work: a dataset of a night.
#[derive(Debug, Clone, Copy)]
struct Task {
    /// Night (1, 2, ...).
    night: u32,
    /// `mongo`, `docker` or `files`.
    dataset: &'static str,
}

/// Generates one dataset of one night; returns the bytes written.
fn run_task(g: &Gen, args: &Args, task: Task) -> Result<u64> {
    let total = (args.size_gib * f64::from(1_u32 << 30)) as u64;
    let dir = args
        .out
        .join(format!("night{}", task.night))
        .join(task.dataset);
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let share = |fraction: f64| (total as f64 * fraction) as u64;
    match task.dataset {
        "mongo" => write_mongo(g, &dir.join("app.archive"), share(0.50), task.night),
        "docker" => write_docker(g, &dir.join("image.tar"), share(0.35), task.night),
        "files" => {
            let count = ((20_000.0 * args.size_gib) as usize).max(50);
            write_files(g, &dir, share(0.10), count, task.night)
        }
        other => bail!("unknown dataset {other}"),
    }
    .with_context(|| format!("night{}/{}", task.night, task.dataset))
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.size_gib.is_nan() || args.size_gib <= 0.0 {
        bail!("--size-gib must be positive");
    }
    if args.nights.contains(&0) {
        bail!("nights are numbered from 1");
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build_global()?;
    let started = Instant::now();
    let g = Gen::new(args.seed);
    let mut tasks = Vec::new();
    for dataset in ["mongo", "docker", "files"] {
        if args.only.iter().any(|only| only == dataset) {
            for &night in &args.nights {
                tasks.push(Task { night, dataset });
            }
        }
    }
    let results: Vec<(Task, u64, Duration)> = tasks
        .par_iter()
        .map(|&task| {
            let start = Instant::now();
            let bytes = run_task(&g, &args, task)?;
            Ok((task, bytes, start.elapsed()))
        })
        .collect::<Result<_>>()?;
    let elapsed = started.elapsed();
    let mut total = 0;
    for (task, bytes, time) in &results {
        println!(
            "night{}/{}: {:.1} MB in {:.2} s",
            task.night,
            task.dataset,
            *bytes as f64 / 1e6,
            time.as_secs_f64()
        );
        total += bytes;
    }
    println!(
        "total: {:.1} MB in {:.2} s ({:.0} MB/s)",
        total as f64 / 1e6,
        elapsed.as_secs_f64(),
        total as f64 / 1e6 / elapsed.as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks a mongodump archive and returns (collections with EOF, documents).
    fn walk_archive(bytes: &[u8]) -> (usize, usize) {
        let doc_len =
            |at: usize| i32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        assert_eq!(&bytes[..4], &0x8199_e26d_u32.to_le_bytes());
        let mut at = 4;
        at += doc_len(at); // prelude
        while bytes[at..at + 4] != TERMINATOR {
            at += doc_len(at);
        }
        at += 4;
        let (mut eofs, mut docs) = (0, 0);
        while at < bytes.len() {
            let header = &bytes[at..at + doc_len(at)];
            at += header.len();
            let eof = header.windows(5).any(|w| w == b"EOF\0\x01");
            if eof {
                eofs += 1;
            } else {
                while bytes[at..at + 4] != TERMINATOR {
                    let len = doc_len(at);
                    assert_eq!(bytes[at + len - 1], 0, "document ends with NUL");
                    at += len;
                    docs += 1;
                }
            }
            assert_eq!(bytes[at..at + 4], TERMINATOR);
            at += 4;
        }
        (eofs, docs)
    }

    #[test]
    fn corpus_is_deterministic_and_well_formed() {
        let base = std::env::temp_dir().join(format!("gen-corpus-test-{}", std::process::id()));
        let run = |out: PathBuf| {
            let args = Args {
                out,
                size_gib: 0.004,
                seed: 7,
                nights: vec![1, 2],
                only: vec!["mongo".into(), "docker".into(), "files".into()],
                threads: 0,
            };
            let g = Gen::new(args.seed);
            for night in [1, 2] {
                for dataset in ["mongo", "docker", "files"] {
                    run_task(&g, &args, Task { night, dataset }).unwrap();
                }
            }
        };
        run(base.join("a"));
        run(base.join("b"));
        for rel in [
            "night1/mongo/app.archive",
            "night2/mongo/app.archive",
            "night1/docker/image.tar",
            "night2/docker/image.tar",
        ] {
            let a = fs::read(base.join("a").join(rel)).unwrap();
            let b = fs::read(base.join("b").join(rel)).unwrap();
            assert!(a == b, "{rel} differs between runs");
        }
        let one = fs::read(base.join("a/night1/mongo/app.archive")).unwrap();
        let two = fs::read(base.join("a/night2/mongo/app.archive")).unwrap();
        let (eofs, docs1) = walk_archive(&one);
        assert_eq!(eofs, COLLECTIONS.len());
        let (_, docs2) = walk_archive(&two);
        assert!(docs1.abs_diff(docs2) * 20 < docs1, "{docs1} vs {docs2}");
        assert_ne!(one, two);
        let tar = fs::read(base.join("a/night1/docker/image.tar")).unwrap();
        assert_eq!(tar.len() % 10_240, 0);
        assert_eq!(&tar[257..263], b"ustar\0");
        fs::remove_dir_all(&base).unwrap();
    }

    /// Every file of a tree by relative path: (modification time, bytes).
    fn read_tree(
        root: &Path,
    ) -> std::collections::BTreeMap<PathBuf, (std::time::SystemTime, Vec<u8>)> {
        let mut out = std::collections::BTreeMap::new();
        let mut dirs = vec![root.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
                    let rel = path.strip_prefix(root).unwrap().to_path_buf();
                    out.insert(rel, (mtime, fs::read(&path).unwrap()));
                }
            }
        }
        out
    }

    #[test]
    fn later_nights_change_the_night_before_and_sync_by_mtime() {
        let base = std::env::temp_dir().join(format!("gen-corpus-nights-{}", std::process::id()));
        let args = Args {
            out: base.clone(),
            size_gib: 0.004,
            seed: 9,
            nights: vec![2, 3, 4],
            only: vec!["mongo".into(), "docker".into(), "files".into()],
            threads: 0,
        };
        let g = Gen::new(args.seed);
        for night in [2, 3, 4] {
            for dataset in ["mongo", "docker", "files"] {
                run_task(&g, &args, Task { night, dataset }).unwrap();
            }
        }
        for (before, after) in [("night2", "night3"), ("night3", "night4")] {
            let old = read_tree(&base.join(before).join("files"));
            let new = read_tree(&base.join(after).join("files"));
            // A file that keeps its modification time keeps its bytes, so syncing by size and
            // mtime reproduces the next night.
            let mut changed = 0;
            for (path, (mtime, bytes)) in &new {
                match old.get(path) {
                    Some((old_mtime, old_bytes)) if old_mtime == mtime => {
                        assert!(
                            old_bytes == bytes,
                            "{after}/{}: same mtime, other bytes",
                            path.display()
                        );
                    }
                    Some(_) => changed += 1,
                    None => {}
                }
            }
            let removed = old.keys().filter(|path| !new.contains_key(*path)).count();
            let added = new.keys().filter(|path| !old.contains_key(*path)).count();
            assert_eq!(
                (changed, removed, added),
                (36, 15, 24),
                "{before} -> {after}"
            );
            for rel in ["mongo/app.archive", "docker/image.tar"] {
                let old = fs::read(base.join(before).join(rel)).unwrap();
                let new = fs::read(base.join(after).join(rel)).unwrap();
                assert_ne!(old, new, "{after}/{rel}");
            }
            let (_, docs_old) =
                walk_archive(&fs::read(base.join(before).join("mongo/app.archive")).unwrap());
            let (_, docs_new) =
                walk_archive(&fs::read(base.join(after).join("mongo/app.archive")).unwrap());
            assert!(
                docs_old.abs_diff(docs_new) * 20 < docs_old,
                "{docs_old} vs {docs_new}"
            );
        }
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn tar_header_checksum() {
        let block = Tar::<Vec<u8>>::header_block("a/b.txt", REGULAR, 0o644, 5, T1);
        let mut check = block;
        check[148..156].fill(b' ');
        let sum: u32 = check.iter().map(|&b| u32::from(b)).sum();
        let stored = std::str::from_utf8(&block[148..154]).unwrap();
        assert_eq!(u32::from_str_radix(stored, 8).unwrap(), sum);
    }

    #[test]
    fn helpers() {
        let mut out = Vec::new();
        push_base64(&mut out, b"hello!?");
        assert_eq!(out, b"aGVsbG8hPw==");
        assert_eq!(iso8601(T1 as i64), "2025-01-01T04:00:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
    }
}
