//! `synth_repo`: grows an existing cairn repository by millions of small synthetic data blobs,
//! fast, so that memory can be measured against repository size (issue: "memory does not grow
//! with the repository").
//!
//! The blobs are real: unique pseudo-random plaintexts, named by the repository's keyed hash,
//! sealed with its data key and written in real packs listed by real index objects, exactly as a
//! backup writes them (so `check --read-data` passes). Only their size is unusual: `--blob-size`
//! bytes (48 by default) instead of ~8 KiB, so that two million chunks take ~200 MB of disk and
//! seconds, not 16 GB and minutes. Packs hold `--blobs-per-pack` blobs and index objects
//! `--packs-per-index` packs, which by default gives index objects of the size a backup with
//! 16 MiB packs of 8 KiB chunks writes (32,768 entries). No snapshot refers to the blobs: run no
//! prune on such a repository.
//!
//! Example: `synth_repo --repo /tmp/repo --password-file pw --blobs 1000000 --seed 1`

#![allow(clippy::cast_possible_truncation)]

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use cairn_store::backend::object_store::{CreateDirectory, ObjectStoreBackend};
use cairn_store::backend::{Backend, PutMode};
use cairn_store::format::index::IndexedPack;
use cairn_store::format::pack::{self, SealedBlob};
use cairn_store::id::BlobType;
use cairn_store::repository::pack_name;
use cairn_store::{CacheLocation, Repository, seal};
use clap::Parser;
use rayon::prelude::*;

/// Command-line options.
#[derive(Debug, Parser)]
struct Options {
    /// Repository location (created beforehand with `cairn init`)
    #[arg(long)]
    repo: String,
    /// File holding the repository password (first line)
    #[arg(long)]
    password_file: PathBuf,
    /// Number of blobs to add
    #[arg(long)]
    blobs: u64,
    /// Plaintext size of each blob in bytes
    #[arg(long, default_value_t = 48)]
    blob_size: usize,
    /// Blobs per pack
    #[arg(long, default_value_t = 2048)]
    blobs_per_pack: u64,
    /// Packs per index object
    #[arg(long, default_value_t = 16)]
    packs_per_index: usize,
    /// Seed of the plaintexts: runs with different seeds add different blobs
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// The plaintext of blob `number`: BLAKE3 output stream of the seed and number.
fn plaintext(seed: u64, number: u64, size: usize) -> Vec<u8> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"cairn synthetic blob");
    hasher.update(&seed.to_le_bytes());
    hasher.update(&number.to_le_bytes());
    let mut out = vec![0; size];
    hasher.finalize_xof().fill(&mut out);
    out
}

fn main() -> Result<()> {
    let options = Options::parse();
    let password = std::fs::read_to_string(&options.password_file)
        .with_context(|| format!("read {}", options.password_file.display()))?;
    let password = password
        .lines()
        .next()
        .unwrap_or_default()
        .as_bytes()
        .to_vec();
    let backend: Arc<dyn Backend> = Arc::new(ObjectStoreBackend::open(
        &options.repo,
        &[],
        CreateDirectory::No,
    )?);
    let repository = Repository::open(Arc::clone(&backend), &password, &CacheLocation::Memory)?;
    let keys = repository.keys();
    let started = std::time::Instant::now();
    let mut packs: Vec<IndexedPack> = Vec::new();
    let mut written = 0u64;
    let mut next = 0u64;
    while next < options.blobs {
        let count = options.blobs_per_pack.min(options.blobs - next);
        let blobs: Vec<SealedBlob> = (next..next + count)
            .into_par_iter()
            .map(|number| {
                let plain = plaintext(options.seed, number, options.blob_size);
                let id = keys.blob_id(BlobType::Data, &plain);
                SealedBlob {
                    blob_type: BlobType::Data,
                    id,
                    raw_length: plain.len() as u32,
                    sealed: seal::seal(
                        &keys.data_key,
                        seal::random_nonce(),
                        &seal::blob_associated_data(BlobType::Data, &id),
                        &plain,
                        None,
                    ),
                }
            })
            .collect();
        next += count;
        let (bytes, pack_id, entries) =
            pack::build_pack(&keys.data_key, &blobs, seal::random_nonce());
        let pack_length = bytes.len() as u64;
        backend.put(&pack_name(&pack_id), bytes.into(), PutMode::Overwrite)?;
        packs.push(IndexedPack {
            pack_id,
            pack_length,
            entries,
        });
        if packs.len() == options.packs_per_index || next == options.blobs {
            repository.save_index(std::mem::take(&mut packs))?;
        }
        written += count;
    }
    println!(
        "added {written} blobs of {} bytes in {:.1} s",
        options.blob_size,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
