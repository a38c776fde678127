//! Component benchmarks (criterion): the per-chunk costs of a backup and a restore, each in
//! isolation — cut points, chunk ids, sealing and opening, and the redb dedup lookup.
//! Run with `cargo bench -p cairn-benches`; `cargo test` runs each once as a smoke test.
#![allow(missing_docs)] // criterion_group! and criterion_main! generate undocumented items

use std::hint::black_box;

use cairn_chunker::{Chunker, ChunkerParams};
use cairn_store::Id;
use cairn_store::compressibility;
use cairn_store::format::index::{IndexObject, IndexedPack};
use cairn_store::format::pack::PackEntry;
use cairn_store::id::BlobType;
use cairn_store::index::cache::IndexCache;
use cairn_store::keys::{MasterSecret, RepositoryKeys};
use cairn_store::seal::{self, SealKey};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

/// Deterministic incompressible bytes.
fn random_bytes(length: usize, seed: u8) -> Vec<u8> {
    let mut out = vec![0u8; length];
    blake3::Hasher::new_keyed(&[seed; 32])
        .finalize_xof()
        .fill(&mut out);
    out
}

/// Deterministic text-like bytes that compress about 3:1.
fn compressible_bytes(length: usize) -> Vec<u8> {
    let words = [
        "backup",
        "tenant",
        "2026-11-22",
        "user_id",
        "{\"ok\":true}",
        "nightly",
    ];
    let noise = random_bytes(length, 9);
    let mut out = Vec::with_capacity(length + 16);
    let mut index = 0;
    while out.len() < length {
        out.extend_from_slice(words[usize::from(noise[index % length]) % words.len()].as_bytes());
        out.push(b' ');
        index += 1;
    }
    out.truncate(length);
    out
}

fn chunking(criterion: &mut Criterion) {
    let data = random_bytes(16 * 1024 * 1024, 1);
    let chunker = Chunker::new(ChunkerParams::DEFAULT, 0x5eed).unwrap();
    let mut group = criterion.benchmark_group("chunker");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.sample_size(10);
    group.bench_function("cut points, 16 MiB, default 2K/8K/32K", |bench| {
        bench.iter(|| black_box(chunker.chunk_slice(black_box(&data))).len());
    });
    group.finish();
}

fn per_chunk(criterion: &mut Criterion) {
    let keys = RepositoryKeys::derive(&MasterSecret([3; 32]));
    let key = SealKey::new(&[4; 32]);
    let random = random_bytes(8192, 2);
    let text = compressible_bytes(8192);
    let mut group = criterion.benchmark_group("per 8 KiB chunk");
    group.throughput(Throughput::Bytes(8192));
    group.bench_function("chunk id (keyed BLAKE3)", |bench| {
        bench.iter(|| keys.blob_id(BlobType::Data, black_box(&random)));
    });
    for (name, plaintext) in [("random", &random), ("text", &text)] {
        let id = keys.blob_id(BlobType::Data, plaintext);
        let ad = seal::blob_associated_data(BlobType::Data, &id);
        group.bench_function(
            format!("seal zstd-3 + XChaCha20-Poly1305, {name}"),
            |bench| {
                bench.iter(|| seal::seal(&key, [7; 24], &ad, black_box(plaintext), Some(3)));
            },
        );
        let sealed = seal::seal(&key, [7; 24], &ad, plaintext, Some(3));
        group.bench_function(format!("open, {name}"), |bench| {
            bench.iter(|| seal::open(&key, &ad, black_box(&sealed), Some(8192), 1 << 20).unwrap());
        });
    }
    group.finish();
}

/// A zstd frame of text at level 3: what an already-compressed layer or archive looks like.
fn compressed_bytes(length: usize) -> Vec<u8> {
    let mut out = zstd::bulk::compress(&compressible_bytes(length * 4), 3).unwrap();
    while out.len() < length {
        out.extend(zstd::bulk::compress(&random_bytes(length, 5), 3).unwrap());
    }
    out.truncate(length);
    out
}

/// The compressibility probe against the zstd pass it saves, and the probes it was chosen over
/// (benches/results/compression-probe.md): per 8 KiB chunk (the default average), random,
/// already compressed and text.
fn compressibility(criterion: &mut Criterion) {
    let key = SealKey::new(&[4; 32]);
    let mut group = criterion.benchmark_group("compressibility per 8 KiB chunk");
    group.throughput(Throughput::Bytes(8192));
    let mut scratch = vec![0u8; zstd::zstd_safe::compress_bound(8192)];
    let mut fast = zstd::bulk::Compressor::new(-5).unwrap();
    let mut level1 = zstd::bulk::Compressor::new(1).unwrap();
    for (name, plaintext) in [
        ("random", random_bytes(8192, 2)),
        ("compressed", compressed_bytes(8192)),
        ("text", compressible_bytes(8192)),
    ] {
        group.bench_function(format!("probe (histogram), {name}"), |bench| {
            bench.iter(|| compressibility::judge(black_box(&plaintext)));
        });
        group.bench_function(
            format!("alternative: zstd -5 whole chunk, {name}"),
            |bench| {
                bench.iter(|| {
                    fast.compress_to_buffer(black_box(&plaintext), &mut scratch)
                        .unwrap()
                });
            },
        );
        group.bench_function(
            format!("alternative: zstd 1 on first 2 KiB, {name}"),
            |bench| {
                bench.iter(|| {
                    level1
                        .compress_to_buffer(black_box(&plaintext[..2048]), &mut scratch)
                        .unwrap()
                });
            },
        );
        group.bench_function(format!("zstd-3 + seal, {name}"), |bench| {
            bench.iter(|| seal::seal(&key, [7; 24], b"ad", black_box(&plaintext), Some(3)));
        });
        group.bench_function(format!("probe + seal as judged, {name}"), |bench| {
            bench.iter(|| {
                let level = (compressibility::judge(black_box(&plaintext))
                    == compressibility::Verdict::Compress)
                    .then_some(3);
                seal::seal(&key, [7; 24], b"ad", black_box(&plaintext), level)
            });
        });
    }
    group.finish();
}

/// The dedup question "do we have these chunks": a batch of 1,000 lookups in a cache that holds
/// `entries` blobs, half of them present.
fn dedup_lookup(criterion: &mut Criterion) {
    let directory = tempfile::tempdir().unwrap();
    let cache = IndexCache::open(&directory.path().join("index.redb")).unwrap();
    let entries: u32 = 200_000;
    let id_of = |index: u32| Id(*blake3::hash(&index.to_le_bytes()).as_bytes());
    let packs: Vec<IndexedPack> = (0..entries / 1000)
        .map(|pack| IndexedPack {
            pack_id: id_of(u32::MAX - pack),
            pack_length: 16 << 20,
            entries: (0..1000)
                .map(|slot| PackEntry {
                    blob_type: BlobType::Data,
                    id: id_of(pack * 1000 + slot),
                    offset: 6 + slot * 8000,
                    length: 8000,
                    raw_length: 8192,
                })
                .collect(),
        })
        .collect();
    cache
        .merge(&[(
            Id([1; 32]),
            IndexObject {
                superseded: Vec::new(),
                packs,
            },
        )])
        .unwrap();
    let mut group = criterion.benchmark_group("dedup lookup");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("1,000 ids in a 200,000-blob redb cache", |bench| {
        let mut round = 0u32;
        bench.iter_batched(
            || {
                round = round.wrapping_add(1);
                (0..1000)
                    .map(|index| id_of((round * 7919 + index * 2) % (entries * 2)))
                    .collect::<Vec<Id>>()
            },
            |ids| cache.lookup_many(&ids).unwrap(),
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group!(benches, chunking, per_chunk, compressibility, dedup_lookup);
criterion_main!(benches);
