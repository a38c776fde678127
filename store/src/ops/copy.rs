//! `cairn copy`: copies snapshots from a source repository into this one (the destination),
//! re-encrypting and re-keying everything with the destination's keys: the two repositories
//! share no encryption or id key.
//!
//! Blob ids and file content hashes are keyed per repository, so every data blob is re-hashed
//! with the destination's key, every tree is rewritten (its children's ids change) and every
//! file's content hash is recomputed over its plaintext in order. When both repositories chunk
//! alike (same chunker bounds and seed: `init --copy-chunker-params-from`), each source blob
//! becomes exactly one destination blob; otherwise each file's plaintext goes through the
//! destination's chunker, as a backup of a stream would ([`CopyReport::rechunked`]).
//!
//! The destination's local cache keeps a map (source repository, source tree or file content)
//! → destination ids, so the next copy skips unchanged subtrees and files without reading the
//! source. It is a cache only: an entry is used only when the destination index still holds
//! every id it names (outside condemned packs).
//!
//! Writes go through the [`BlobSaver`] inside a backup session (FORMAT.md section 21), and each
//! snapshot is committed only after its packs and index objects are stored, so a killed copy
//! leaves what a killed backup leaves; the next copy adopts its packs (`index_orphan_packs`)
//! and sends none of their blobs again. Copied snapshots carry the
//! [`EXTENSION_COPY_OF`] record, by which a copy
//! already made is skipped.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cairn_chunker::Chunker;

use crate::crypto::id::{BlobType, Id};
use crate::error::{Error, ErrorKind, Result};
use crate::format::snapshot::{CopyOf, EXTENSION_COPY_OF, Snapshot};
use crate::format::tree::{NodeKind, Tree};
use crate::index::cache::CopyMapKind;
use crate::ops::copy_packs;
use crate::repo::fetch::{Prefetch, fetch_data_blobs};
use crate::repo::lifecycle::BackupSession;
use crate::repo::repository::{Repository, SNAPSHOTS_PREFIX, object_name};
use crate::repo::saver::{BlobSaver, SaverStats};

/// Plaintext read from the source at once: files are batched up to this size, and a larger file
/// is read in windows of about this size.
const READ_BATCH: u64 = 32 * 1024 * 1024;
/// Blobs a read covered before they were needed, kept for later files (as restore does).
const PREFETCH_BUDGET: usize = 64 * 1024 * 1024;
/// Chunk references whose files are read from the source together, in pack order.
const READ_GROUP_CHUNKS: usize = copy_packs::Budgets::DEFAULT.group_chunks;
/// Block the destination's chunker reads at a time when re-chunking.
const RECHUNK_BLOCK: usize = 8 * 1024 * 1024;

/// How a copy runs.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Host label of the backup session's marker on the destination.
    pub host: String,
}

/// Which source snapshots to copy, and which are there already.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyPlan {
    /// Source snapshots not yet in the destination, oldest first.
    pub to_copy: Vec<(Id, Snapshot)>,
    /// Source snapshots already copied: (source id, destination id).
    pub already_copied: Vec<(Id, Id)>,
}

/// Source snapshot id → the destination snapshot that is its copy, for the snapshots of
/// `source_repository` among `destination_snapshots`. Pure.
pub fn copies_in(
    source_repository: [u8; 16],
    destination_snapshots: &[(Id, Snapshot)],
) -> HashMap<Id, Id> {
    destination_snapshots
        .iter()
        .filter_map(|(id, snapshot)| {
            snapshot
                .copy_of()
                .filter(|copy_of| copy_of.repository_id == source_repository)
                .map(|copy_of| (copy_of.snapshot, *id))
        })
        .collect()
}

/// Splits `selected` (source snapshots) into those to copy and those whose copy the
/// destination already holds (found by their [`CopyOf`] record). Pure.
pub fn plan_copy(
    source_repository: [u8; 16],
    selected: Vec<(Id, Snapshot)>,
    destination_snapshots: &[(Id, Snapshot)],
) -> CopyPlan {
    let copies = copies_in(source_repository, destination_snapshots);
    let mut plan = CopyPlan::default();
    for (id, snapshot) in selected {
        match copies.get(&id) {
            Some(destination) => plan.already_copied.push((id, *destination)),
            None => plan.to_copy.push((id, snapshot)),
        }
    }
    plan.to_copy
        .sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
    plan
}

/// The destination snapshot of a copy: the source's time, host, user, tags, paths and summary,
/// `root` as its root, the copy of the source's parent (if the destination holds one) as
/// parent, and the [`CopyOf`] record. Pure.
pub fn copied_snapshot(
    source_repository: [u8; 16],
    source_id: Id,
    source: &Snapshot,
    root: Id,
    parent: Option<Id>,
) -> Snapshot {
    let mut snapshot = Snapshot {
        root,
        parent,
        ..source.clone()
    };
    snapshot.set_extension(
        EXTENSION_COPY_OF,
        Some(
            CopyOf {
                repository_id: source_repository,
                snapshot: source_id,
            }
            .encode(),
        ),
    );
    snapshot
}

/// Whether copying from `source` to `destination` keeps every chunk as it is (same chunker
/// bounds and seed), or must re-chunk.
pub fn chunks_alike(source: &Repository, destination: &Repository) -> bool {
    source.config().chunker == destination.config().chunker
        && source.chunker_seed() == destination.chunker_seed()
}

/// One snapshot copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopiedSnapshot {
    /// The source snapshot.
    pub source: Id,
    /// Its copy in the destination.
    pub destination: Id,
    /// The copy as stored.
    pub snapshot: Snapshot,
    /// What the destination gained for it.
    pub added: SaverStats,
}

/// What a copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Snapshots copied, in the order they were committed.
    pub copied: Vec<CopiedSnapshot>,
    /// Source snapshots already in the destination: (source id, destination id).
    pub already_copied: Vec<(Id, Id)>,
    /// Whether file contents were re-chunked (the repositories chunk differently).
    pub rechunked: bool,
    /// Trees found in the copy map (not read from the source).
    pub trees_reused: u64,
    /// Files found in the copy map (not read from the source).
    pub files_reused: u64,
    /// Files whose content was read from the source.
    pub files_read: u64,
    /// Plaintext bytes of file content read from the source.
    pub bytes_read: u64,
    /// Plaintext bytes read a second time: a file whose chunks arrived too far out of order
    /// for the held budget is hashed by reading its remaining chunks again in order.
    pub bytes_read_again: u64,
    /// Packs adopted from an interrupted earlier run.
    pub packs_adopted: usize,
}

/// Progress of a copy, for the caller to show.
pub trait CopyProgress {
    /// A snapshot is committed in the destination.
    fn snapshot_copied(&self, copied: &CopiedSnapshot);
}

/// A [`CopyProgress`] that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCopyProgress;

impl CopyProgress for NoCopyProgress {
    fn snapshot_copied(&self, _copied: &CopiedSnapshot) {}
}

/// Copies `selected` snapshots of `source` into `destination` (see the module documentation),
/// skipping those already copied.
///
/// # Errors
/// [`Error::Usage`] when both are the same repository; backend, cache or damage errors of
/// either repository. Snapshots committed before the error stay.
pub fn copy(
    source: &Repository,
    destination: &Repository,
    selected: Vec<(Id, Snapshot)>,
    options: &CopyOptions,
    progress: &dyn CopyProgress,
) -> Result<CopyReport> {
    let plan = plan(source, destination, selected.clone())?;
    if plan.to_copy.is_empty() {
        // Nothing to write: no session, not a single request that writes.
        return Ok(CopyReport {
            already_copied: plan.already_copied,
            ..CopyReport::default()
        });
    }
    crate::ops::sessions::end_dead_sessions_best_effort(destination);
    // The session marker goes first, as a backup's (FORMAT.md section 21.2).
    let (mut session, prune_state) = destination.begin_session(&options.host)?;
    let outcome = (|| {
        destination.sync_index_with(&prune_state)?;
        copy_in_session(source, destination, &mut session, selected, progress)
    })();
    match outcome {
        Ok((report, last)) => {
            let _ = session.end(last);
            Ok(report)
        }
        Err(error) => {
            session.abandon(&error);
            Err(error)
        }
    }
}

/// Which snapshots a copy would copy and skip, reading only snapshot listings.
///
/// # Errors
/// [`Error::Usage`] when both are the same repository; listing failures.
pub fn plan(
    source: &Repository,
    destination: &Repository,
    selected: Vec<(Id, Snapshot)>,
) -> Result<CopyPlan> {
    ensure_distinct(source, destination)?;
    let (destination_snapshots, _) = destination.list_snapshots()?;
    Ok(plan_copy(
        source.config().repository_id,
        selected,
        &destination_snapshots,
    ))
}

fn ensure_distinct(source: &Repository, destination: &Repository) -> Result<()> {
    if source.config().repository_id == destination.config().repository_id {
        return Err(Error::Usage(format!(
            "the source and the destination are the same repository ({}): give another --from-repo",
            source.id_hex()
        )));
    }
    Ok(())
}

fn copy_in_session(
    source: &Repository,
    destination: &Repository,
    session: &mut BackupSession<'_>,
    selected: Vec<(Id, Snapshot)>,
    progress: &dyn CopyProgress,
) -> Result<(CopyReport, Option<Id>)> {
    let mut report = CopyReport {
        packs_adopted: destination.index_orphan_packs()?,
        ..CopyReport::default()
    };
    source.sync_index()?;
    let source_repository = source.config().repository_id;
    let (destination_snapshots, _) = destination.list_snapshots()?;
    let plan = plan_copy(source_repository, selected, &destination_snapshots);
    report.already_copied = plan.already_copied;
    let mut copies = copies_in(source_repository, &destination_snapshots);
    let rechunker = if chunks_alike(source, destination) {
        None
    } else {
        report.rechunked = true;
        Some(
            Chunker::new(destination.config().chunker, destination.chunker_seed())
                .map_err(|error| Error::Usage(error.to_string()))?,
        )
    };
    let prefetch = Prefetch::new(PREFETCH_BUDGET);
    let mut last = None;
    for (source_id, snapshot) in plan.to_copy {
        let mut copier = Copier {
            source,
            destination,
            source_repository,
            saver: BlobSaver::new(destination),
            rechunker: rechunker.as_ref(),
            prefetch: &prefetch,
            relied: HashSet::new(),
            read_now: HashSet::new(),
            report: &mut report,
        };
        if copier.rechunker.is_none() {
            copier.read_contents_in_pack_order(&snapshot.root)?;
        }
        let root = copier.copy_tree(&snapshot.root)?;
        let Copier { saver, relied, .. } = copier;
        // Packs and index objects first; the snapshot is the commit point (FORMAT.md 14).
        let (added, mut relied_packs) = saver.finish_relied()?;
        relied_packs.extend(relied);
        destination.rescue_relied_packs(session, &mut relied_packs)?;
        let parent = snapshot
            .parent
            .and_then(|parent| copies.get(&parent).copied());
        let copy = copied_snapshot(source_repository, source_id, &snapshot, root, parent);
        let destination_id = destination.save_snapshot(&copy)?;
        copies.insert(source_id, destination_id);
        last = Some(destination_id);
        let copied = CopiedSnapshot {
            source: source_id,
            destination: destination_id,
            snapshot: copy,
            added,
        };
        progress.snapshot_copied(&copied);
        report.copied.push(copied);
    }
    Ok((report, last))
}

/// A file to copy: its source content hash and chunks.
struct SourceFile {
    content_hash: Id,
    chunks: Vec<Id>,
    size: u64,
}

/// Copies one snapshot's trees and file contents.
struct Copier<'a, 'repo> {
    source: &'repo Repository,
    destination: &'repo Repository,
    source_repository: [u8; 16],
    saver: BlobSaver<'repo>,
    rechunker: Option<&'a Chunker>,
    prefetch: &'a Prefetch,
    /// Destination packs this snapshot relies on outside the saver's own dedup hits.
    relied: HashSet<Id>,
    /// Source contents this snapshot's copy read (not counted as reused when met again).
    read_now: HashSet<Id>,
    report: &'a mut CopyReport,
}

impl Copier<'_, '_> {
    /// The destination ids of `ids` if the destination index holds every one of them outside
    /// condemned packs (their packs are then relied on), or this run's saver stored them;
    /// `None` otherwise.
    fn confirmed(&mut self, ids: &[Id]) -> Result<Option<()>> {
        let locations = self.destination.cache().lookup_many(ids)?;
        let mut packs = Vec::with_capacity(locations.len());
        for (id, location) in ids.iter().zip(locations) {
            match location {
                Some(location) if !self.destination.is_condemned(&location.pack_id) => {
                    packs.push(location.pack_id);
                }
                _ if self.saver.holds(id) => {}
                _ => return Ok(None),
            }
        }
        self.relied.extend(packs);
        Ok(Some(()))
    }

    /// Whether the copy map holds the content `content_hash` with every destination chunk
    /// still there (its packs are then relied on).
    fn content_mapped(&mut self, content_hash: &Id) -> Result<bool> {
        let mapped = self.destination.cache().copied(
            CopyMapKind::FileContent,
            &self.source_repository,
            content_hash,
        )?;
        Ok(match mapped.as_deref().and_then(<[Id]>::split_first) {
            Some((_, chunks)) => self.confirmed(chunks)?.is_some(),
            None => false,
        })
    }

    /// Whether the copy map holds the tree `id` with its copy still there.
    fn tree_mapped(&mut self, id: &Id) -> Result<bool> {
        let mapped =
            self.destination
                .cache()
                .copied(CopyMapKind::Tree, &self.source_repository, id)?;
        Ok(match mapped {
            Some(mapped) if mapped.len() == 1 => self.confirmed(&mapped)?.is_some(),
            _ => false,
        })
    }

    /// Copies the content of every file under the source tree `root` that the copy map does not
    /// hold, reading the source in pack order ([`copy_packs`]), and records each in the map, so
    /// that [`Copier::copy_tree`] then finds every file there. Files are taken in groups of
    /// about [`READ_GROUP_CHUNKS`] chunk references. Only when both repositories chunk alike.
    fn read_contents_in_pack_order(&mut self, root: &Id) -> Result<()> {
        let mut trees = vec![*root];
        let mut trees_seen: HashSet<Id> = HashSet::new();
        let mut group: Vec<SourceFile> = Vec::new();
        let mut group_chunks = 0;
        while let Some(id) = trees.pop() {
            if !trees_seen.insert(id) || self.tree_mapped(&id)? {
                continue;
            }
            let tree = self.source.load_tree(&id)?;
            let mut subtrees = Vec::new();
            for node in tree.nodes {
                match node.kind {
                    NodeKind::Directory { subtree } => subtrees.push(subtree),
                    NodeKind::File {
                        content_hash,
                        chunks,
                    } => {
                        if self.read_now.contains(&content_hash)
                            || self.content_mapped(&content_hash)?
                        {
                            continue;
                        }
                        self.read_now.insert(content_hash);
                        group_chunks += chunks.len();
                        group.push(SourceFile {
                            content_hash,
                            chunks,
                            size: node.size,
                        });
                        if group_chunks >= READ_GROUP_CHUNKS {
                            self.copy_group(&std::mem::take(&mut group))?;
                            group_chunks = 0;
                        }
                    }
                    NodeKind::Symlink { .. } | NodeKind::Fifo | NodeKind::Device { .. } => {}
                }
            }
            // Depth first in the tree's order, as a backup wrote them.
            trees.extend(subtrees.into_iter().rev());
        }
        self.copy_group(&group)
    }

    /// Copies one group of files in pack order and records each in the copy map.
    fn copy_group(&mut self, files: &[SourceFile]) -> Result<()> {
        if files.is_empty() {
            return Ok(());
        }
        let chunk_lists: Vec<&[Id]> = files.iter().map(|file| file.chunks.as_slice()).collect();
        let copied = copy_packs::copy_contents(
            self.source,
            self.destination,
            &mut self.saver,
            &chunk_lists,
            copy_packs::Budgets::DEFAULT,
        )?;
        self.report.bytes_read_again += copied.bytes_read_again;
        let mut unused = HashMap::new();
        for (file, (hash, chunks)) in files.iter().zip(copied.files) {
            self.record_file(file, hash, chunks, &mut unused)?;
            unused.clear();
        }
        Ok(())
    }

    /// Copies the source tree `id` and everything below it; returns the destination tree id.
    fn copy_tree(&mut self, id: &Id) -> Result<Id> {
        let cache = self.destination.cache();
        if let Some(mapped) = cache.copied(CopyMapKind::Tree, &self.source_repository, id)?
            && mapped.len() == 1
            && self.confirmed(&mapped)?.is_some()
        {
            self.report.trees_reused += 1;
            return Ok(mapped[0]);
        }
        let mut tree = self.source.load_tree(id)?;
        let mut contents: HashMap<Id, (Id, Vec<Id>)> = HashMap::new();
        let mut to_read: Vec<SourceFile> = Vec::new();
        for node in &tree.nodes {
            let NodeKind::File {
                content_hash,
                chunks,
            } = &node.kind
            else {
                continue;
            };
            if contents.contains_key(content_hash)
                || to_read
                    .iter()
                    .any(|file| file.content_hash == *content_hash)
            {
                continue;
            }
            if let Some(mapped) = cache.copied(
                CopyMapKind::FileContent,
                &self.source_repository,
                content_hash,
            )? && let Some((hash, chunks)) = mapped.split_first()
                && self.confirmed(chunks)?.is_some()
            {
                if !self.read_now.contains(content_hash) {
                    self.report.files_reused += 1;
                }
                contents.insert(*content_hash, (*hash, chunks.to_vec()));
                continue;
            }
            to_read.push(SourceFile {
                content_hash: *content_hash,
                chunks: chunks.clone(),
                size: node.size,
            });
        }
        self.copy_files(to_read, &mut contents)?;
        for node in &mut tree.nodes {
            match &mut node.kind {
                NodeKind::File {
                    content_hash,
                    chunks,
                } => {
                    let (hash, copied) =
                        contents.get(content_hash).ok_or_else(|| Error::Damaged {
                            object: format!("tree {id}"),
                            reason: "a file's content was not copied".into(),
                        })?;
                    *content_hash = *hash;
                    chunks.clone_from(copied);
                }
                NodeKind::Directory { subtree } => {
                    *subtree = self.copy_tree(subtree)?;
                }
                NodeKind::Symlink { .. } | NodeKind::Fifo | NodeKind::Device { .. } => {}
            }
        }
        let encoded = tree.encode();
        let copied = self.saver.save(BlobType::Tree, &[&encoded])?[0];
        cache.record_copied(CopyMapKind::Tree, &self.source_repository, id, &[copied])?;
        Ok(copied)
    }

    /// Reads the files' contents from the source (small files together, large ones in
    /// windows), stores them in the destination and records each in `contents` and the map.
    fn copy_files(
        &mut self,
        files: Vec<SourceFile>,
        contents: &mut HashMap<Id, (Id, Vec<Id>)>,
    ) -> Result<()> {
        let mut batch: Vec<SourceFile> = Vec::new();
        let mut batch_bytes = 0u64;
        for file in files {
            if file.size > READ_BATCH {
                self.copy_large_file(&file, contents)?;
                continue;
            }
            if batch_bytes + file.size > READ_BATCH {
                self.copy_batch(std::mem::take(&mut batch), contents)?;
                batch_bytes = 0;
            }
            batch_bytes += file.size;
            batch.push(file);
        }
        self.copy_batch(batch, contents)
    }

    fn copy_batch(
        &mut self,
        files: Vec<SourceFile>,
        contents: &mut HashMap<Id, (Id, Vec<Id>)>,
    ) -> Result<()> {
        if files.is_empty() {
            return Ok(());
        }
        let ids: Vec<Id> = files
            .iter()
            .flat_map(|file| file.chunks.iter().copied())
            .collect();
        let fetched = read_blobs(self.source, &ids, Some(self.prefetch))?;
        for file in files {
            let pieces: Vec<Arc<Vec<u8>>> = file
                .chunks
                .iter()
                .map(|chunk| Arc::clone(&fetched[chunk]))
                .collect();
            let mut writer = self.content_writer();
            writer.push(self, &pieces)?;
            let (hash, chunks) = writer.finish(self)?;
            self.record_file(&file, hash, chunks, contents)?;
        }
        Ok(())
    }

    fn copy_large_file(
        &mut self,
        file: &SourceFile,
        contents: &mut HashMap<Id, (Id, Vec<Id>)>,
    ) -> Result<()> {
        let locations = self.source.cache().lookup_many(&file.chunks)?;
        let mut writer = self.content_writer();
        let mut start = 0;
        while start < file.chunks.len() {
            let mut end = start;
            let mut window = 0u64;
            while end < file.chunks.len() && (end == start || window < READ_BATCH) {
                window += locations[end].map_or(0, |location| u64::from(location.entry.raw_length));
                end += 1;
            }
            let window_ids = &file.chunks[start..end];
            let fetched = read_blobs(self.source, window_ids, Some(self.prefetch))?;
            let pieces: Vec<Arc<Vec<u8>>> = window_ids
                .iter()
                .map(|chunk| Arc::clone(&fetched[chunk]))
                .collect();
            writer.push(self, &pieces)?;
            start = end;
        }
        let (hash, chunks) = writer.finish(self)?;
        self.record_file(file, hash, chunks, contents)
    }

    fn content_writer(&self) -> ContentWriter {
        ContentWriter {
            hasher: self.destination.keys().file_hasher(),
            chunks: Vec::new(),
            pending: Vec::new(),
        }
    }

    fn record_file(
        &mut self,
        file: &SourceFile,
        hash: Id,
        chunks: Vec<Id>,
        contents: &mut HashMap<Id, (Id, Vec<Id>)>,
    ) -> Result<()> {
        self.report.files_read += 1;
        self.report.bytes_read += file.size;
        let mut mapped = Vec::with_capacity(chunks.len() + 1);
        mapped.push(hash);
        mapped.extend_from_slice(&chunks);
        self.destination.cache().record_copied(
            CopyMapKind::FileContent,
            &self.source_repository,
            &file.content_hash,
            &mapped,
        )?;
        contents.insert(file.content_hash, (hash, chunks));
        Ok(())
    }
}

/// One file's content on its way into the destination: hashed with the destination's key, and
/// stored blob by blob (chunking alike) or through the destination's chunker.
struct ContentWriter {
    hasher: blake3::Hasher,
    chunks: Vec<Id>,
    /// Re-chunking only: plaintext not yet cut (less than one block).
    pending: Vec<u8>,
}

impl ContentWriter {
    fn push(&mut self, copier: &mut Copier<'_, '_>, pieces: &[Arc<Vec<u8>>]) -> Result<()> {
        for piece in pieces {
            self.hasher.update(piece);
        }
        match copier.rechunker {
            None => {
                let slices: Vec<&[u8]> = pieces.iter().map(|piece| piece.as_slice()).collect();
                self.chunks
                    .extend(copier.saver.save(BlobType::Data, &slices)?);
            }
            Some(_) => {
                for piece in pieces {
                    self.pending.extend_from_slice(piece);
                }
            }
        }
        // Cut what is buffered once it holds several blocks, keeping the tail (the last cut
        // depends on what follows).
        if let Some(chunker) = copier.rechunker
            && self.pending.len() >= 4 * RECHUNK_BLOCK
        {
            self.cut(copier, chunker, false)?;
        }
        Ok(())
    }

    fn cut(&mut self, copier: &mut Copier<'_, '_>, chunker: &Chunker, last: bool) -> Result<()> {
        let mut ranges = chunker.chunk_slice(&self.pending);
        if !last {
            // The last range ends where the buffer ends, not at a content-defined cut.
            ranges.pop();
        }
        let Some(consumed) = ranges.last().map(|range| range.end) else {
            return Ok(());
        };
        let slices: Vec<&[u8]> = ranges
            .iter()
            .map(|range| &self.pending[range.clone()])
            .collect();
        self.chunks
            .extend(copier.saver.save(BlobType::Data, &slices)?);
        self.pending.drain(..consumed);
        Ok(())
    }

    fn finish(mut self, copier: &mut Copier<'_, '_>) -> Result<(Id, Vec<Id>)> {
        if let Some(chunker) = copier.rechunker {
            self.cut(copier, chunker, true)?;
        }
        Ok((Id(*self.hasher.finalize().as_bytes()), self.chunks))
    }
}

/// Reads data blobs (batched per pack) and fails on the first one that cannot be read.
fn read_blobs(
    repository: &Repository,
    ids: &[Id],
    prefetch: Option<&Prefetch>,
) -> Result<HashMap<Id, Arc<Vec<u8>>>> {
    fetch_data_blobs(repository, ids, prefetch)?
        .into_iter()
        .map(|(id, fetched)| match fetched {
            Ok(plaintext) => Ok((id, plaintext)),
            Err(error) => Err(
                Arc::try_unwrap(error).unwrap_or_else(|shared| Error::Damaged {
                    object: format!("data blob {id}"),
                    reason: shared.to_string(),
                }),
            ),
        })
        .collect()
}

/// What `copy --verify` found in the copied snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Files whose content was read back and matched its hash.
    pub files_verified: u64,
    /// Plaintext bytes read back.
    pub bytes_verified: u64,
    /// Problems, one line each (empty: every copied snapshot restores).
    pub problems: Vec<String>,
}

/// Reads back every tree and data blob of `snapshots` from `repository` (authenticating each)
/// and checks every file's content hash, as `check --read-data` does for these snapshots only.
///
/// # Errors
/// Backend or cache failures; damaged or missing data is reported in [`VerifyReport::problems`].
pub fn verify_snapshots(repository: &Repository, snapshots: &[Id]) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let mut trees_seen: HashSet<Id> = HashSet::new();
    let mut contents_seen: HashSet<Id> = HashSet::new();
    let prefetch = Prefetch::new(PREFETCH_BUDGET);
    for snapshot_id in snapshots {
        let (_, snapshot) =
            repository.load_snapshot(&object_name(SNAPSHOTS_PREFIX, snapshot_id))?;
        let mut pending = vec![(snapshot.root, String::from("/"))];
        while let Some((tree_id, path)) = pending.pop() {
            if !trees_seen.insert(tree_id) {
                continue;
            }
            let tree: Tree = match repository.load_tree(&tree_id) {
                Ok(tree) => tree,
                Err(error) if error.kind() == ErrorKind::Transient => return Err(error),
                Err(error) => {
                    report.problems.push(format!("tree {path}: {error}"));
                    continue;
                }
            };
            for node in &tree.nodes {
                let name = format!("{path}{}", String::from_utf8_lossy(&node.name));
                match &node.kind {
                    NodeKind::Directory { subtree } => pending.push((*subtree, format!("{name}/"))),
                    NodeKind::File {
                        content_hash,
                        chunks,
                    } if contents_seen.insert(*content_hash) => {
                        let mut hasher = repository.keys().file_hasher();
                        let mut failed = None;
                        for window in chunks.chunks(64) {
                            match fetch_data_blobs(repository, window, Some(&prefetch)) {
                                Ok(fetched) => {
                                    for chunk in window {
                                        match &fetched[chunk] {
                                            Ok(plaintext) => hasher.update(plaintext),
                                            Err(error) => {
                                                failed.get_or_insert_with(|| error.to_string());
                                                break;
                                            }
                                        };
                                    }
                                }
                                Err(error) => return Err(error),
                            }
                            if failed.is_some() {
                                break;
                            }
                        }
                        if let Some(reason) = failed {
                            report.problems.push(format!("{name}: {reason}"));
                        } else if Id(*hasher.finalize().as_bytes()) != *content_hash {
                            report
                                .problems
                                .push(format!("{name}: content does not match its hash"));
                        } else {
                            report.files_verified += 1;
                            report.bytes_verified += node.size;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::snapshot::{Source, Summary};
    use crate::format::tree::Timestamp;

    fn snapshot(seconds: i64, copy_of: Option<CopyOf>) -> Snapshot {
        let mut snapshot = Snapshot {
            time: Timestamp { seconds, nanos: 0 },
            host: "h".into(),
            username: "u".into(),
            tags: vec!["t".into()],
            source: Source::Paths(vec!["/data".into()]),
            root: Id([1; 32]),
            parent: None,
            summary: Summary {
                files: 3,
                ..Summary::default()
            },
            program_version: "0".into(),
            extensions: Vec::new(),
        };
        snapshot.set_extension(EXTENSION_COPY_OF, copy_of.map(|copy_of| copy_of.encode()));
        snapshot
    }

    #[test]
    fn copies_already_made_are_skipped_and_others_come_oldest_first() {
        let source_repository = [7; 16];
        let selected = vec![
            (Id([3; 32]), snapshot(30, None)),
            (Id([1; 32]), snapshot(10, None)),
            (Id([2; 32]), snapshot(20, None)),
        ];
        let destination = vec![
            (
                Id([9; 32]),
                snapshot(
                    10,
                    Some(CopyOf {
                        repository_id: source_repository,
                        snapshot: Id([1; 32]),
                    }),
                ),
            ),
            // A copy of the same snapshot id from another repository does not count.
            (
                Id([8; 32]),
                snapshot(
                    20,
                    Some(CopyOf {
                        repository_id: [6; 16],
                        snapshot: Id([2; 32]),
                    }),
                ),
            ),
        ];
        let plan = plan_copy(source_repository, selected, &destination);
        assert_eq!(plan.already_copied, vec![(Id([1; 32]), Id([9; 32]))]);
        let order: Vec<Id> = plan.to_copy.iter().map(|(id, _)| *id).collect();
        assert_eq!(order, vec![Id([2; 32]), Id([3; 32])]);
    }

    #[test]
    fn a_copy_keeps_identity_and_records_its_source() {
        let source = snapshot(10, None);
        let copy = copied_snapshot([5; 16], Id([4; 32]), &source, Id([6; 32]), None);
        assert_eq!(copy.time, source.time);
        assert_eq!(copy.host, source.host);
        assert_eq!(copy.tags, source.tags);
        assert_eq!(copy.source, source.source);
        assert_eq!(copy.summary, source.summary);
        assert_eq!(copy.root, Id([6; 32]));
        assert_eq!(
            copy.copy_of(),
            Some(CopyOf {
                repository_id: [5; 16],
                snapshot: Id([4; 32]),
            })
        );
        // A copy of a copy records only its own source.
        let again = copied_snapshot([1; 16], Id([2; 32]), &copy, Id([6; 32]), None);
        assert_eq!(again.copy_of().unwrap().repository_id, [1; 16]);
        assert_eq!(again.extensions.len(), 1);
    }
}
