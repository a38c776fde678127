//! `chunk_sweep`: measures which `FastCDC` chunk-size parameters suit cairn.
//!
//! For every parameter set and every dataset of a two-night corpus (see
//! `/work/shared/corpus/README.md`) it backs night 1 up into an empty simulated repository and then
//! night 2 on top of it, and reports:
//!
//! - the number of chunks of night 1 and their mean size;
//! - the bytes stored for night 1: for each unique chunk, its zstd level-3 size (or its raw size
//!   when compression does not shrink it) plus 41 bytes of sealing overhead (24-byte nonce, 16-byte
//!   tag, 1 compression byte);
//! - the new bytes night 2 adds: unique night-2 chunks absent from night 1, as raw % of the night-2
//!   input and as stored bytes; and the whole night-2 increment including metadata (new index
//!   entries plus the chunk lists of the inputs whose content changed);
//! - the metadata overhead per GB of night-1 input: 46 (pack trailer) + 77 (remote index) + 45
//!   (local cache) bytes per unique chunk, plus 32 bytes per chunk reference in the tree;
//! - single-threaded chunking throughput (cut-point search only, in memory, best of N runs).
//!
//! Large files are read through [`Chunker::stream`]; each file of a directory tree is chunked as a
//! separate input. Only 32-byte chunk hashes are kept between batches, never chunk bytes.
//!
//! Example:
//! `chunk_sweep --night1 /tmp/cairn-corpus/night1 --night2 /tmp/cairn-corpus/night2`

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cairn_chunker::{Chunker, ChunkerParams};
use clap::Parser;
use rayon::prelude::*;

/// Sealing overhead per stored blob: 24-byte nonce + 16-byte tag + 1 compression byte.
const BLOB_OVERHEAD: u64 = 41;
/// Pack-trailer entry per unique chunk.
const PACK_TRAILER_ENTRY: u64 = 46;
/// Remote index-object entry per unique chunk.
const REMOTE_INDEX_ENTRY: u64 = 77;
/// Local redb cache entry per unique chunk.
const LOCAL_CACHE_ENTRY: u64 = 45;
/// Bytes per chunk reference in a file's chunk list (tree metadata).
const TREE_REF: u64 = 32;
/// zstd level cairn uses.
const ZSTD_LEVEL: i32 = 3;
/// Fixed key for the simulated keyed chunk hash (the key does not affect deduplication).
const HASH_KEY: [u8; 32] = [0x42; 32];
/// Bytes of file contents gathered before a tree batch is hashed and compressed.
const TREE_BATCH_BYTES: usize = 8 << 20;

/// Sweeps `FastCDC` parameters over a two-night backup corpus.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Night-1 corpus directory (holding mongo/, docker/, files/).
    #[arg(long)]
    night1: PathBuf,
    /// Night-2 corpus directory.
    #[arg(long)]
    night2: PathBuf,
    /// Parameter sets as MIN:AVG:MAX (K/M suffixes allowed), comma-separated. Default: avg 4..64 KiB
    /// with min = avg/4 and max = 4 x avg, plus min/max variants at avg 8 and 16 KiB.
    #[arg(long, value_delimiter = ',')]
    params: Vec<String>,
    /// Datasets to measure, comma-separated, as paths relative to a night directory. A regular file
    /// is one input; a directory is walked and each file chunked as its own input.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "mongo/app.archive,docker/image.tar,files"
    )]
    datasets: Vec<String>,
    /// Gear-table seed of the chunker.
    #[arg(long, default_value = "0x5eed", value_parser = parse_u64)]
    seed: u64,
    /// Block size for streamed (large-file) reading.
    #[arg(long, default_value = "8M", value_parser = parse_size_usize)]
    block_size: usize,
    /// Repetitions of the throughput measurement (the best is reported).
    #[arg(long, default_value_t = 3)]
    throughput_reps: u32,
    /// At most this many bytes of each dataset's night 1 are held in memory for the throughput
    /// measurement.
    #[arg(long, default_value = "128M", value_parser = parse_size_usize)]
    throughput_bytes: usize,
    /// Worker threads for hashing and compression (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

/// Parses a decimal or `0x` hexadecimal integer.
fn parse_u64(text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|error| format!("{text}: {error}"))
}

/// Parses a size such as `4096`, `16K` or `8M` (binary multiples).
fn parse_size(text: &str) -> Result<u64, String> {
    let upper = text.trim().to_ascii_uppercase();
    let upper = upper.trim_end_matches("IB").trim_end_matches('B');
    let (digits, multiplier) = match upper.chars().last() {
        Some('K') => (&upper[..upper.len() - 1], 1024),
        Some('M') => (&upper[..upper.len() - 1], 1024 * 1024),
        Some('G') => (&upper[..upper.len() - 1], 1024 * 1024 * 1024),
        _ => (upper, 1),
    };
    let value: u64 = digits
        .parse()
        .map_err(|error| format!("bad size {text:?}: {error}"))?;
    value
        .checked_mul(multiplier)
        .ok_or_else(|| format!("size {text:?} overflows"))
}

/// [`parse_size`] for a `usize`.
fn parse_size_usize(text: &str) -> Result<usize, String> {
    usize::try_from(parse_size(text)?).map_err(|error| error.to_string())
}

/// Parses `MIN:AVG:MAX`.
fn parse_params(text: &str) -> Result<ChunkerParams> {
    let parts: Vec<&str> = text.split(':').collect();
    let [min, avg, max] = parts.as_slice() else {
        bail!("parameter set {text:?} is not MIN:AVG:MAX");
    };
    let size = |part: &str| -> Result<u32> {
        let value = parse_size(part).map_err(anyhow::Error::msg)?;
        u32::try_from(value).with_context(|| format!("{part} too large"))
    };
    let params = ChunkerParams {
        min_size: size(min)?,
        avg_size: size(avg)?,
        max_size: size(max)?,
    };
    params.validate()?;
    Ok(params)
}

/// The default sweep: avg 4..64 KiB at min = avg/4, max = 4 x avg, then min = avg/2 and
/// max = 8 x avg variants at avg 4 and 8 KiB, and min = avg/2 at 16 KiB.
fn default_params() -> Vec<ChunkerParams> {
    let kib = |n: u32| n * 1024;
    let set = |min, avg, max| ChunkerParams {
        min_size: kib(min),
        avg_size: kib(avg),
        max_size: kib(max),
    };
    let mut sets: Vec<ChunkerParams> = [4, 8, 16, 32, 64]
        .into_iter()
        .map(|avg| set(avg / 4, avg, avg * 4))
        .collect();
    for avg in [4, 8] {
        sets.push(set(avg / 2, avg, avg * 4));
        sets.push(set(avg / 4, avg, avg * 8));
    }
    sets.push(set(8, 16, 64));
    sets
}

/// Formats a size compactly (`4K`, `1536`, `2M`).
fn size_label(bytes: u32) -> String {
    if bytes.is_multiple_of(1024 * 1024) {
        format!("{}M", bytes / (1024 * 1024))
    } else if bytes.is_multiple_of(1024) {
        format!("{}K", bytes / 1024)
    } else {
        bytes.to_string()
    }
}

/// `min/avg/max` label of a parameter set.
fn params_label(params: ChunkerParams) -> String {
    format!(
        "{}/{}/{}",
        size_label(params.min_size),
        size_label(params.avg_size),
        size_label(params.max_size)
    )
}

/// One input of a dataset: a file, named relative to the dataset root.
#[derive(Debug, Clone)]
struct Input {
    /// Path relative to the dataset root (empty for a single-file dataset).
    name: PathBuf,
    /// Full path.
    path: PathBuf,
    /// Size in bytes when listed.
    len: u64,
}

/// Lists the inputs of a dataset: the file itself, or every regular file under a directory in
/// sorted order.
fn list_inputs(root: &Path) -> Result<Vec<Input>> {
    let meta = fs::metadata(root).with_context(|| format!("stat {}", root.display()))?;
    if meta.is_file() {
        return Ok(vec![Input {
            name: PathBuf::new(),
            path: root.to_path_buf(),
            len: meta.len(),
        }]);
    }
    let mut inputs = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let path = entry.path();
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                inputs.push(Input {
                    name: path.strip_prefix(root)?.to_path_buf(),
                    len: entry.metadata()?.len(),
                    path,
                });
            }
        }
    }
    inputs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(inputs)
}

/// Chunks of some inputs, held together for parallel hashing and compression.
#[derive(Debug, Default)]
struct Batch {
    /// Bytes of the chunks.
    data: Vec<u8>,
    /// Chunk ranges within `data`.
    chunks: Vec<Range<usize>>,
    /// For each input that ends in this batch or has chunks in it: its index and the number of its
    /// chunks in `chunks`, in order.
    owners: Vec<(usize, usize)>,
}

/// A simulated repository holding one dataset's chunk hashes.
#[derive(Debug, Default)]
struct Repo {
    /// Hashes of every chunk stored so far.
    known: HashSet<[u8; 32]>,
}

/// Totals of one night's backup of one dataset.
#[derive(Debug, Default, Clone, Copy)]
struct NightStats {
    /// Input bytes.
    input_bytes: u64,
    /// Chunk references (all chunks, duplicates included).
    chunks: u64,
    /// Chunks not yet in the repository.
    new_chunks: u64,
    /// Raw bytes of the new chunks.
    new_raw_bytes: u64,
    /// Stored bytes of the new chunks: compressed (or raw) size plus sealing overhead.
    new_stored_bytes: u64,
    /// Chunk references of inputs whose content differs from the previous night (or is new).
    changed_refs: u64,
}

impl NightStats {
    /// Index bytes for this night's new chunks that live in the repository (pack trailer and
    /// remote index).
    fn remote_index_bytes(&self) -> u64 {
        self.new_chunks * (PACK_TRAILER_ENTRY + REMOTE_INDEX_ENTRY)
    }

    /// All index bytes for this night's new chunks, the local cache included.
    fn index_bytes(&self) -> u64 {
        self.new_chunks * (PACK_TRAILER_ENTRY + REMOTE_INDEX_ENTRY + LOCAL_CACHE_ENTRY)
    }

    /// Everything this night adds to the remote repository: new chunks, their index entries and
    /// the chunk lists of changed inputs.
    fn remote_increment(&self) -> u64 {
        self.new_stored_bytes + self.remote_index_bytes() + self.changed_refs * TREE_REF
    }

    /// Accumulates another dataset's totals.
    fn add(&mut self, other: &Self) {
        self.input_bytes += other.input_bytes;
        self.chunks += other.chunks;
        self.new_chunks += other.new_chunks;
        self.new_raw_bytes += other.new_raw_bytes;
        self.new_stored_bytes += other.new_stored_bytes;
        self.changed_refs += other.changed_refs;
    }
}

/// Hashes a batch's chunks, records new ones in `repo`, compresses them and adds to `stats`.
/// Returns the chunk hashes in order.
fn absorb(repo: &mut Repo, batch: &Batch, stats: &mut NightStats) -> Vec<[u8; 32]> {
    let hashes: Vec<[u8; 32]> = batch
        .chunks
        .par_iter()
        .map(|range| *blake3::keyed_hash(&HASH_KEY, &batch.data[range.clone()]).as_bytes())
        .collect();
    let mut fresh = Vec::new();
    for (range, hash) in batch.chunks.iter().zip(&hashes) {
        if repo.known.insert(*hash) {
            fresh.push(range.clone());
        }
    }
    let (raw, stored) = fresh
        .par_iter()
        .map_init(
            || zstd::bulk::Compressor::new(ZSTD_LEVEL).expect("zstd context"),
            |compressor, range| {
                let chunk = &batch.data[range.clone()];
                let raw = chunk.len() as u64;
                let packed = compressor
                    .compress(chunk)
                    .map_or(raw, |out| out.len() as u64);
                (raw, packed.min(raw) + BLOB_OVERHEAD)
            },
        )
        .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    stats.chunks += batch.chunks.len() as u64;
    stats.new_chunks += fresh.len() as u64;
    stats.new_raw_bytes += raw;
    stats.new_stored_bytes += stored;
    hashes
}

/// Per-input content identity (hash of its chunk hashes), keyed by input name.
type Contents = HashMap<PathBuf, [u8; 32]>;

/// Records the content identities of a processed batch and counts chunk references of inputs
/// that differ from `previous`.
struct ContentTracker<'a> {
    /// Inputs of the night being backed up.
    inputs: &'a [Input],
    /// Content identities of the previous night, if any.
    previous: Option<&'a Contents>,
    /// Content identities of this night.
    current: Contents,
    /// Hasher of the input currently being assembled, with its index and chunk count.
    open: Option<(usize, blake3::Hasher, u64)>,
}

impl<'a> ContentTracker<'a> {
    /// A tracker for `inputs`, compared against `previous`.
    fn new(inputs: &'a [Input], previous: Option<&'a Contents>) -> Self {
        Self {
            inputs,
            previous,
            current: HashMap::new(),
            open: None,
        }
    }

    /// Feeds the hashes of a batch whose `owners` say which input each run of chunks belongs to.
    fn feed(&mut self, owners: &[(usize, usize)], hashes: &[[u8; 32]], stats: &mut NightStats) {
        let mut next = 0;
        for &(input, count) in owners {
            if self
                .open
                .as_ref()
                .is_some_and(|(open, _, _)| *open != input)
            {
                self.close(stats);
            }
            let (_, hasher, refs) = self
                .open
                .get_or_insert_with(|| (input, blake3::Hasher::new(), 0));
            for hash in &hashes[next..next + count] {
                hasher.update(hash);
            }
            *refs += count as u64;
            next += count;
        }
    }

    /// Finishes the input being assembled.
    fn close(&mut self, stats: &mut NightStats) {
        if let Some((input, hasher, refs)) = self.open.take() {
            let id = *hasher.finalize().as_bytes();
            let name = self.inputs[input].name.clone();
            let unchanged = self
                .previous
                .is_some_and(|previous| previous.get(&name) == Some(&id));
            if !unchanged {
                stats.changed_refs += refs;
            }
            self.current.insert(name, id);
        }
    }

    /// Finishes and returns this night's content identities.
    fn finish(mut self, stats: &mut NightStats) -> Contents {
        self.close(stats);
        self.current
    }
}

/// Backs one night of a dataset up into `repo`.
fn backup_night(
    chunker: &Chunker,
    inputs: &[Input],
    repo: &mut Repo,
    previous: Option<&Contents>,
    block_size: usize,
) -> Result<(NightStats, Contents)> {
    let mut stats = NightStats::default();
    let mut tracker = ContentTracker::new(inputs, previous);
    let mut pending = Batch::default();
    for (index, input) in inputs.iter().enumerate() {
        let large = usize::try_from(input.len).map_or(true, |len| len > block_size);
        if large {
            flush(&mut pending, repo, &mut tracker, &mut stats);
            let file = File::open(&input.path).with_context(|| input.path.display().to_string())?;
            let mut stream = chunker.stream(file, block_size);
            while let Some(batch) = stream.next_batch()? {
                stats.input_bytes += batch.data.len() as u64;
                let count = batch.chunks.len();
                let batch = Batch {
                    data: batch.data,
                    chunks: batch.chunks,
                    owners: vec![(index, count)],
                };
                let hashes = absorb(repo, &batch, &mut stats);
                tracker.feed(&batch.owners, &hashes, &mut stats);
            }
            // An empty large file cannot happen; a fresh input id closes the previous one.
            continue;
        }
        let data = fs::read(&input.path).with_context(|| input.path.display().to_string())?;
        stats.input_bytes += data.len() as u64;
        let base = pending.data.len();
        let ranges = chunker.chunk_slice(&data);
        pending.owners.push((index, ranges.len()));
        pending
            .chunks
            .extend(ranges.into_iter().map(|r| base + r.start..base + r.end));
        pending.data.extend_from_slice(&data);
        if pending.data.len() >= TREE_BATCH_BYTES {
            flush(&mut pending, repo, &mut tracker, &mut stats);
        }
    }
    flush(&mut pending, repo, &mut tracker, &mut stats);
    let contents = tracker.finish(&mut stats);
    Ok((stats, contents))
}

/// Absorbs a batch of small inputs and empties it.
fn flush(batch: &mut Batch, repo: &mut Repo, tracker: &mut ContentTracker, stats: &mut NightStats) {
    if batch.owners.is_empty() {
        return;
    }
    let hashes = absorb(repo, batch, stats);
    tracker.feed(&batch.owners, &hashes, stats);
    *batch = Batch::default();
}

/// Loads up to `cap` bytes of a dataset for the throughput measurement, one buffer per input.
fn load_sample(inputs: &[Input], cap: usize) -> Result<Vec<Vec<u8>>> {
    let mut sample = Vec::new();
    let mut total = 0;
    for input in inputs {
        if total >= cap {
            break;
        }
        let mut data = Vec::new();
        File::open(&input.path)
            .with_context(|| input.path.display().to_string())?
            .take((cap - total) as u64)
            .read_to_end(&mut data)?;
        total += data.len();
        sample.push(data);
    }
    Ok(sample)
}

/// Single-threaded chunking throughput in MB/s (10^6 bytes) over `sample`, best of `reps` runs.
fn throughput(chunker: &Chunker, sample: &[Vec<u8>], reps: u32) -> f64 {
    let bytes: usize = sample.iter().map(Vec::len).sum();
    let mut best = Duration::MAX;
    for _ in 0..reps.max(1) {
        let start = Instant::now();
        let mut chunks = 0;
        for input in sample {
            chunks += std::hint::black_box(chunker.chunk_slice(input)).len();
        }
        std::hint::black_box(chunks);
        best = best.min(start.elapsed());
    }
    mb(bytes as u64) / best.as_secs_f64()
}

/// Bytes to MB (10^6).
#[allow(clippy::cast_precision_loss)]
fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// `part` as a percentage of `whole`.
#[allow(clippy::cast_precision_loss)]
fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// Results of one parameter set on one dataset.
#[derive(Debug, Clone)]
struct Row {
    /// Parameter label.
    params: String,
    /// Dataset label.
    dataset: String,
    /// Night-1 totals.
    night1: NightStats,
    /// Night-2 totals (new chunks relative to night 1).
    night2: NightStats,
    /// Chunking throughput in MB/s, if measured.
    mb_per_s: Option<f64>,
}

impl Row {
    /// Formats the row as a markdown table line.
    #[allow(clippy::cast_precision_loss)]
    fn markdown(&self) -> String {
        let n1 = &self.night1;
        let n2 = &self.night2;
        let mean = if n1.chunks == 0 {
            0.0
        } else {
            n1.input_bytes as f64 / n1.chunks as f64 / 1024.0
        };
        let meta = n1.index_bytes() + n1.chunks * TREE_REF;
        let meta_per_gb = mb(meta) / (mb(n1.input_bytes) / 1000.0);
        let speed = self
            .mb_per_s
            .map_or_else(|| "–".to_owned(), |v| format!("{v:.0}"));
        format!(
            "| {} | {} | {:.1} | {} | {:.1} | {:.1} ({:.1}%) | {:.1}% | {:.2} | {:.2} | {:.2} | {} |",
            self.params,
            self.dataset,
            mb(n1.input_bytes),
            n1.chunks,
            mean,
            mb(n1.new_stored_bytes),
            percent(n1.new_stored_bytes, n1.input_bytes),
            percent(n2.new_raw_bytes, n2.input_bytes),
            mb(n2.new_stored_bytes),
            mb(n2.remote_increment()),
            meta_per_gb,
            speed,
        )
    }
}

/// Formats the all-datasets row of a parameter set as a line of the summary table: what the
/// remote repository holds after 1, 7 and 30 nights if every night changes like night 2.
#[allow(clippy::cast_precision_loss)]
fn summary_line(row: &Row) -> String {
    let n1 = &row.night1;
    let first = n1.new_stored_bytes + n1.remote_index_bytes() + n1.chunks * TREE_REF;
    let increment = row.night2.remote_increment();
    let after = |nights: u64| mb(first + (nights - 1) * increment);
    let chunks_per_gb = n1.chunks as f64 / (mb(n1.input_bytes) / 1000.0);
    format!(
        "| {} | {:.0} | {:.1} | {:.2} | {:.0} | {:.0} | {:.1} |",
        row.params,
        chunks_per_gb,
        after(1),
        mb(increment),
        after(7),
        after(30),
        mb((n1.new_chunks + row.night2.new_chunks) * LOCAL_CACHE_ENTRY),
    )
}

/// Header of the summary table.
const SUMMARY_HEADER: &str = "| min/avg/max | n1 chunks per GB | remote after night 1 MB | \
nightly increment MB | remote after 7 nights MB | remote after 30 nights MB | local cache after \
night 2 MB |\n|---|---:|---:|---:|---:|---:|---:|";

/// Header of the markdown table.
const TABLE_HEADER: &str = "| min/avg/max | dataset | n1 input MB | n1 chunks | mean KiB | \
n1 stored MB (% of input) | n2 new raw % | n2 new stored MB | n2 increment MB | meta MB/GB | \
chunk MB/s |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|";

fn main() -> Result<()> {
    let args = Args::parse();
    if args.threads > 0 {
        rayon::ThreadPoolBuilder::new()
            .num_threads(args.threads)
            .build_global()?;
    }
    let sets = if args.params.is_empty() {
        default_params()
    } else {
        args.params
            .iter()
            .map(|text| parse_params(text))
            .collect::<Result<_>>()?
    };
    let datasets: Vec<(String, Vec<Input>, Vec<Input>)> = args
        .datasets
        .iter()
        .map(|name| {
            Ok((
                name.clone(),
                list_inputs(&args.night1.join(name))?,
                list_inputs(&args.night2.join(name))?,
            ))
        })
        .collect::<Result<_>>()?;

    println!("{TABLE_HEADER}");
    let mut totals = Vec::new();
    for params in sets {
        let chunker = Chunker::new(params, args.seed)?;
        let label = params_label(params);
        let mut total = Row {
            params: label.clone(),
            dataset: "**all**".to_owned(),
            night1: NightStats::default(),
            night2: NightStats::default(),
            mb_per_s: None,
        };
        let mut chunk_seconds = 0.0;
        for (name, night1, night2) in &datasets {
            let started = Instant::now();
            let mut repo = Repo::default();
            let (n1, contents) = backup_night(&chunker, night1, &mut repo, None, args.block_size)?;
            let (n2, _) = backup_night(
                &chunker,
                night2,
                &mut repo,
                Some(&contents),
                args.block_size,
            )?;
            drop(repo);
            let sample = load_sample(night1, args.throughput_bytes)?;
            let speed = throughput(&chunker, &sample, args.throughput_reps);
            chunk_seconds += mb(n1.input_bytes) / speed;
            let row = Row {
                params: label.clone(),
                dataset: name.clone(),
                night1: n1,
                night2: n2,
                mb_per_s: Some(speed),
            };
            total.night1.add(&n1);
            total.night2.add(&n2);
            eprintln!("{label} {name}: {:.1}s", started.elapsed().as_secs_f64());
            let line = row.markdown();
            println!("{line}");
        }
        if datasets.len() > 1 {
            total.mb_per_s = Some(mb(total.night1.input_bytes) / chunk_seconds);
            let line = total.markdown();
            println!("{line}");
            totals.push(total);
        }
    }
    if !totals.is_empty() {
        println!(
            "\nAll datasets together, remote repository size if every night changes like night 2:\n"
        );
        println!("{SUMMARY_HEADER}");
        for total in &totals {
            println!("{}", summary_line(total));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("16K"), Ok(16 * 1024));
        assert_eq!(parse_size("2MiB"), Ok(2 * 1024 * 1024));
        assert!(parse_size("x").is_err());
        let params = parse_params("2K:8K:32K").unwrap();
        assert_eq!(params_label(params), "2K/8K/32K");
        assert!(parse_params("8K:4K:32K").is_err());
        assert_eq!(parse_u64("0x5eed"), Ok(0x5eed));
    }

    #[test]
    fn defaults_validate() {
        for params in default_params() {
            params.validate().unwrap();
        }
    }

    #[test]
    fn duplicates_and_changes_are_counted() {
        let dir = std::env::temp_dir().join(format!("chunk-sweep-test-{}", std::process::id()));
        let (one, two) = (dir.join("one"), dir.join("two"));
        let mut state = 1u64;
        let noise: Vec<u8> = (0..300_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()[3]
            })
            .collect();
        for night in [&one, &two] {
            fs::create_dir_all(night).unwrap();
            fs::write(night.join("a"), &noise).unwrap();
            fs::write(night.join("b"), &noise).unwrap();
        }
        fs::write(two.join("c"), b"a new small file").unwrap();
        let chunker = Chunker::new(ChunkerParams::DEFAULT, 0x5eed).unwrap();
        let mut repo = Repo::default();
        let (n1, contents) = backup_night(
            &chunker,
            &list_inputs(&one).unwrap(),
            &mut repo,
            None,
            1 << 16,
        )
        .unwrap();
        let (n2, _) = backup_night(
            &chunker,
            &list_inputs(&two).unwrap(),
            &mut repo,
            Some(&contents),
            1 << 16,
        )
        .unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(n1.input_bytes, 600_000);
        assert_eq!(n1.new_chunks * 2, n1.chunks, "b duplicates a");
        assert_eq!(n1.new_raw_bytes, 300_000);
        assert_eq!(n1.changed_refs, n1.chunks);
        assert_eq!(n2.new_chunks, 1);
        assert_eq!(n2.new_raw_bytes, 16);
        assert_eq!(n2.changed_refs, 1, "only c is new");
    }
}
