//! What a restore's read plan costs for one snapshot: the stored bytes its data blobs need, and
//! for each gap a planner may bridge, how many ranged reads and how many bytes the plan
//! ([`cairn_store::fetch::plan_reads`]) makes. Bytes read minus bytes needed is what bridging
//! costs on a capped link; reads is what it saves in round trips and requests.
//!
//! ```text
//! CAIRN_PASSWORD=... plan_probe --repo s3://bucket/prefix --cache DIR --snapshot ID
//! ```
//!
//! Reads trees (normally from the local cache); never reads packs.

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::{Context, Result};
use cairn_store::backend::object_store::{CreateDirectory, ObjectStoreBackend};
use cairn_store::fetch::{ReadWindow, plan_reads};
use cairn_store::format::tree::NodeKind;
use cairn_store::{BlobType, CacheLocation, Id, Repository};
use clap::Parser;

/// Command-line options.
#[derive(Parser, Debug)]
#[command(about = "Reads and bytes of a snapshot's restore plan for several gaps")]
struct Options {
    /// The repository's location.
    #[arg(long)]
    repo: String,
    /// The local cache directory.
    #[arg(long)]
    cache: std::path::PathBuf,
    /// The snapshot (`latest`, an id or a unique prefix).
    #[arg(long, default_value = "latest")]
    snapshot: String,
}

fn main() -> Result<()> {
    let options = Options::parse();
    let password = std::env::var("CAIRN_PASSWORD").context("CAIRN_PASSWORD")?;
    let backend = ObjectStoreBackend::open(&options.repo, &[], CreateDirectory::No)?;
    let repository = Repository::open(
        Arc::new(backend),
        password.as_bytes(),
        &CacheLocation::Directory(options.cache),
    )?;
    let (_, snapshot) = repository.resolve_snapshot(&options.snapshot)?;
    let mut chunks: HashSet<Id> = HashSet::new();
    let mut trees = vec![snapshot.root];
    while let Some(tree) = trees.pop() {
        for node in repository.load_tree(&tree)?.nodes {
            match node.kind {
                NodeKind::Directory { subtree } => trees.push(subtree),
                NodeKind::File { chunks: ids, .. } => chunks.extend(ids),
                _ => {}
            }
        }
    }
    let ids: Vec<Id> = chunks.into_iter().collect();
    let locations: Vec<_> = repository
        .cache()
        .lookup_many(&ids)?
        .into_iter()
        .flatten()
        .filter(|location| location.entry.blob_type == BlobType::Data)
        .collect();
    let needed: u64 = locations
        .iter()
        .map(|location| u64::from(location.entry.length))
        .sum();
    let packs: HashSet<Id> = locations.iter().map(|location| location.pack_id).collect();
    println!(
        "blobs {} needed_bytes {needed} packs {}",
        locations.len(),
        packs.len()
    );
    println!("gap\treads\tbytes_read\tover_read");
    let max_read = ReadWindow::RESTORE.max_read;
    for gap in [0u64, 4, 16, 64, 256, 1024, 4096].map(|kib| kib * 1024) {
        let reads = plan_reads(locations.clone(), gap, max_read);
        let read: u64 = reads.iter().map(|read| read.end - read.start).sum();
        println!("{gap}\t{}\t{read}\t{}", reads.len(), read - needed);
    }
    Ok(())
}
