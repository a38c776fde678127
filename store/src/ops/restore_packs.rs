//! Writing restored files' content pack by pack: every chunk of a group of files is looked up,
//! the packs holding them are read once each in large coalesced ranges ([`fetch::for_each_blob`]),
//! and each authenticated blob is written straight to every (file, offset) that needs it with
//! positioned writes. Each file's keyed content hash is fed as its chunks land: a chunk that is
//! the next byte the hash needs is hashed from the plaintext in hand, a chunk that arrives early
//! is hashed later by reading its range back from the temporary file (so a file whose chunks come
//! in order, the usual case, is never read back). A file whose last chunk is written has its
//! hash checked, then gets its metadata and final name. Temporary files stay open between their
//! chunks' writes, up to [`OPEN_FILES`] per group. Memory is the read window plus a few dozen
//! bytes per chunk of a group ([`GROUP_CHUNKS`] at most, unless one file has more) and a 2 KiB
//! hash state per file in progress, never the files' content.
//!
//! Restore's other rules (temporary names, private modes, sparse holes, failures per file)
//! are `restore`'s; this module only replaces the order in which content is read and written.
//! Never prints.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::crypto::id::{BlobType, Id};
use crate::error::{Error, Result};
use crate::format::tree::NodeKind;
use crate::index::cache::BlobLocation;
use crate::ops::fsmeta::MetadataWarning;
use crate::ops::longpath;
use crate::ops::restore::{
    FileJob, RestoreProgress, apply_final_metadata, file_chunks, temporary_path,
};
use crate::repo::fetch::{self, ReadWindow};
use crate::repo::repository::Repository;

/// Chunk references planned at once: bounds the plan's memory (a location and a place per
/// reference) whatever the snapshot's size. A pack holding chunks of two groups is read once
/// per group.
pub(crate) const GROUP_CHUNKS: usize = 100_000;

/// Temporary files a group keeps open between their chunks' writes. A file beyond the budget
/// is opened for each chunk instead (one `openat` + `close` per chunk: measurable on a snapshot
/// of 8 KiB chunks), so descriptors stay far below the usual limit of 1024.
const OPEN_FILES: usize = 128;

/// What became of one file: its bytes and the metadata its target could not hold, or why it
/// was not restored.
pub(crate) type FileResult = Result<(u64, Vec<MetadataWarning>)>;

/// One place a blob's plaintext goes.
#[derive(Debug, Clone, Copy)]
struct Place {
    /// Index of the file in the group.
    file: usize,
    /// Byte offset in the file.
    offset: u64,
}

/// A file of the group while its chunks arrive.
#[derive(Debug, Default)]
struct FileState {
    /// The temporary file, once the first chunk created it.
    temporary: Option<PathBuf>,
    /// Its open handle, kept between chunks while the group's budget of open files allows.
    handle: Option<File>,
    /// Whether `handle` holds one of the budget's places.
    handle_counted: bool,
    /// Chunk writes still to come.
    remaining: usize,
    /// Plaintext bytes written so far.
    written: u64,
    /// One past the last byte written to the temporary file (less than `written` when a sparse
    /// file's trailing zeros were skipped): `finish_file` extends the file only then.
    extent: u64,
    /// The file is one chunk whose id is its content hash (FORMAT.md section 3: for one chunk the
    /// two hashes are the same keyed hash of the same bytes), so the blob's verified id already
    /// proves the content and the file is not hashed again.
    proven_by_chunk_id: bool,
    /// The keyed content hash over the file's first `hashed_to` bytes, fed as chunks land.
    hasher: Option<blake3::Hasher>,
    /// How far from the start the content is hashed.
    hashed_to: u64,
    /// Written ranges past `hashed_to` (start → end, adjacent ranges merged), hashed by reading
    /// them back once the chunk before them lands. Chunks landing in file order never go here.
    landed: BTreeMap<u64, u64>,
    /// Set once the file is finished or failed; later chunks for it are dropped.
    result: Option<FileResult>,
}

impl FileState {
    /// Makes sure the temporary file is open in `handle`: created on the first chunk, reopened
    /// after a write that could not keep it. A handle counts against the group's `open_files`
    /// budget while one is free.
    fn open(&mut self, job: &FileJob, open_files: &AtomicUsize) -> Result<&File> {
        if self.handle.is_none() {
            let file = if let Some(temporary) = &self.temporary {
                longpath::open_read_write(temporary)
                    .map_err(|error| Error::local("open", temporary, error))?
            } else {
                let (temporary, file) = create_temporary(job)?;
                self.temporary = Some(temporary);
                file
            };
            self.handle_counted = open_files
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                    (open < OPEN_FILES).then_some(open + 1)
                })
                .is_ok();
            self.handle = Some(file);
        }
        Ok(self.handle.as_ref().expect("opened above"))
    }

    /// Closes the handle unless it is within the budget and `keep` asks to keep it.
    fn release(&mut self, open_files: &AtomicUsize, keep: bool) {
        if keep && self.handle_counted {
            return;
        }
        if self.handle.take().is_some() && self.handle_counted {
            open_files.fetch_sub(1, Ordering::Relaxed);
        }
        self.handle_counted = false;
    }

    /// Feeds the content hash with a chunk just written at `offset`: directly when it is the
    /// next byte the hash needs (then also every written range that now follows, read back from
    /// `file`), else it is remembered for later.
    fn hash_landed(
        &mut self,
        new_hasher: impl FnOnce() -> blake3::Hasher,
        file: &File,
        offset: u64,
        plaintext: &[u8],
    ) -> std::io::Result<()> {
        let end = offset + plaintext.len() as u64;
        if offset != self.hashed_to {
            let start = match self.landed.range(..=offset).next_back() {
                Some((&start, &previous_end)) if previous_end == offset => start,
                _ => offset,
            };
            let end = self.landed.remove(&end).unwrap_or(end);
            self.landed.insert(start, end);
            return Ok(());
        }
        let hasher = self.hasher.get_or_insert_with(new_hasher);
        hasher.update(plaintext);
        self.hashed_to = end;
        if let Some(next_end) = self.landed.remove(&end) {
            hash_file_range(file, hasher, end, next_end)?;
            self.hashed_to = next_end;
        }
        Ok(())
    }

    /// Fails the file (once): its temporary file is removed.
    fn fail(&mut self, error: Error) {
        if self.result.is_some() {
            return;
        }
        if let Some(temporary) = self.temporary.take() {
            let _ = longpath::remove_file(&temporary);
        }
        self.result = Some(Err(error));
    }
}

/// Writes the content of every file of `files`, verifies it and gives it its metadata and
/// final name; returns each file's result, in the order of `files`.
///
/// # Errors
/// Index cache failures only; everything else is a per-file result.
pub(crate) fn write_files(
    repository: &Repository,
    files: &[FileJob],
    progress: &dyn RestoreProgress,
) -> Result<Vec<FileResult>> {
    let mut results = Vec::with_capacity(files.len());
    let mut start = 0;
    while start < files.len() {
        let mut end = start;
        let mut references = 0;
        while end < files.len() && (end == start || references < GROUP_CHUNKS) {
            references += file_chunks(&files[end].node).len();
            end += 1;
        }
        results.extend(write_group(repository, &files[start..end], progress)?);
        start = end;
    }
    Ok(results)
}

/// One group of files: plan, read pack by pack, write, finish.
fn write_group(
    repository: &Repository,
    files: &[FileJob],
    progress: &dyn RestoreProgress,
) -> Result<Vec<FileResult>> {
    let mut states: Vec<FileState> = (0..files.len()).map(|_| FileState::default()).collect();
    let mut places: HashMap<Id, Vec<Place>> = HashMap::new();
    let mut locations: HashMap<Id, BlobLocation> = HashMap::new();
    for (file, job) in files.iter().enumerate() {
        let chunks = file_chunks(&job.node);
        let unknown: Vec<Id> = chunks
            .iter()
            .filter(|id| !locations.contains_key(id))
            .copied()
            .collect();
        for (id, location) in unknown
            .iter()
            .zip(repository.cache().lookup_many(&unknown)?)
        {
            if let Some(location) =
                location.filter(|location| location.entry.blob_type == BlobType::Data)
            {
                locations.insert(*id, location);
            }
        }
        let state = &mut states[file];
        let mut offset = 0u64;
        let mut planned = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            let Some(location) = locations.get(chunk) else {
                let missing = Error::BlobMissing {
                    blob_type: BlobType::Data.name(),
                    id: *chunk,
                };
                state.fail(Error::for_fetched(format!("data blob {chunk}"), &missing));
                break;
            };
            planned.push((*chunk, offset));
            offset += u64::from(location.entry.raw_length);
        }
        if state.result.is_some() {
            continue;
        }
        if chunks.is_empty() {
            // Nothing to read: created, verified and named now.
            state.result = Some(create_and_finish(repository, job, progress));
            continue;
        }
        state.remaining = planned.len();
        state.proven_by_chunk_id = matches!(
            (&job.node.kind, planned.as_slice()),
            (NodeKind::File { content_hash, .. }, [(chunk, _)]) if content_hash == chunk
        );
        for (chunk, offset) in planned {
            places
                .entry(chunk)
                .or_default()
                .push(Place { file, offset });
        }
    }
    let needed: Vec<BlobLocation> = places
        .keys()
        .filter_map(|id| locations.get(id).copied())
        .collect();
    drop(locations);
    let states: Vec<Mutex<FileState>> = states.into_iter().map(Mutex::new).collect();
    let open_files = AtomicUsize::new(0);
    let take = |location: &BlobLocation, plaintext: std::result::Result<&[u8], &Error>| {
        let id = location.entry.id;
        let Some(places) = places.get(&id) else {
            return;
        };
        let arrival = match plaintext {
            Ok(plaintext) if plaintext.len() as u64 == u64::from(location.entry.raw_length) => {
                Ok(plaintext)
            }
            Ok(_) => Err(None),
            Err(error) => Err(Some(error)),
        };
        for place in places {
            let job = &files[place.file];
            let Ok(mut state) = states[place.file].lock() else {
                continue;
            };
            if state.result.is_some() {
                continue;
            }
            let plaintext = match arrival {
                Ok(plaintext) => plaintext,
                Err(cause) => {
                    state.release(&open_files, false);
                    state.fail(match cause {
                        Some(error) => Error::for_fetched(format!("data blob {id}"), error),
                        None => Error::Damaged {
                            object: format!("data blob {id}"),
                            reason: "its plaintext length differs from the index".into(),
                        },
                    });
                    continue;
                }
            };
            let written = state
                .open(job, &open_files)
                .and_then(|file| write_chunk(job, file, place.offset, plaintext));
            match written {
                Ok(extent) => state.extent = state.extent.max(extent),
                Err(error) => {
                    state.release(&open_files, false);
                    state.fail(error);
                    continue;
                }
            }
            state.written += plaintext.len() as u64;
            state.remaining -= 1;
            let handle = state.handle.take();
            let hashed = handle.as_ref().map_or(Ok(()), |file| {
                if state.proven_by_chunk_id {
                    return Ok(());
                }
                state.hash_landed(
                    || repository.keys().file_hasher(),
                    file,
                    place.offset,
                    plaintext,
                )
            });
            state.handle = handle;
            if let Err(error) = hashed {
                state.release(&open_files, false);
                state.fail(Error::local("read back", &job.path, error));
                continue;
            }
            progress.bytes_written(plaintext.len() as u64);
            if state.remaining > 0 {
                state.release(&open_files, true);
                continue;
            }
            let finished = match state.handle.take() {
                Some(file) => finish_file(repository, job, &mut state, &file),
                None => Err(Error::ContentMismatch(job.path.clone())),
            };
            if std::mem::take(&mut state.handle_counted) {
                open_files.fetch_sub(1, Ordering::Relaxed);
            }
            match finished {
                Ok(done) => {
                    progress.file_done(&job.path, done.0);
                    state.result = Some(Ok(done));
                }
                Err(error) => state.fail(error),
            }
        }
    };
    fetch::for_each_blob(repository, needed, ReadWindow::RESTORE, &take);
    Ok(states
        .into_iter()
        .zip(files)
        .map(|(state, job)| {
            let mut state = state
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if state.result.is_none() {
                // Every chunk was planned and every planned blob handed over, so only a
                // panicked writer leaves a file unfinished.
                state.fail(Error::ContentMismatch(job.path.clone()));
            }
            state
                .result
                .unwrap_or_else(|| Err(Error::ContentMismatch(job.path.clone())))
        })
        .collect())
}

/// Writes one chunk at `offset` of the open temporary file and returns one past the last byte
/// it wrote (`offset` when it wrote none). In a sparse file only the [`nonzero_pieces`] are
/// written (the temporary file starts empty, so a skipped piece reads as zeros and stays a
/// hole).
fn write_chunk(job: &FileJob, file: &File, offset: u64, plaintext: &[u8]) -> Result<u64> {
    let write = |data: &[u8], at: u64| {
        file.write_all_at(data, at)
            .map_err(|error| Error::local("write", &job.path, error))
    };
    if job.node.is_sparse() {
        let block = file.metadata().map_or(4096, |metadata| metadata.blksize());
        let mut extent = offset;
        for (at, piece) in nonzero_pieces(offset, plaintext, block.clamp(512, 1 << 20)) {
            write(piece, at)?;
            extent = at + piece.len() as u64;
        }
        Ok(extent)
    } else {
        write(plaintext, offset)?;
        Ok(offset + plaintext.len() as u64)
    }
}

/// The pieces of the chunk `plaintext` at `offset` that a sparse file needs written: the chunk
/// cut at the file's multiples of `block` (at least 1), each with its offset, without the
/// pieces that are all zeros.
fn nonzero_pieces(offset: u64, plaintext: &[u8], block: u64) -> impl Iterator<Item = (u64, &[u8])> {
    let block = block.max(1);
    let mut position = 0usize;
    std::iter::from_fn(move || {
        while position < plaintext.len() {
            let at = offset + position as u64;
            let to_boundary = usize::try_from(block - at % block).unwrap_or(usize::MAX);
            let end = plaintext.len().min(position.saturating_add(to_boundary));
            let piece = &plaintext[position..end];
            position = end;
            if piece.iter().any(|byte| *byte != 0) {
                return Some((at, piece));
            }
        }
        None
    })
}

/// Creates the temporary file beside `job`'s path, private to the owner. A leftover of a killed
/// restore that had the same process id is removed only when the name is taken (the usual
/// fresh name costs one `openat`, not an `unlink` of a missing name before it).
fn create_temporary(job: &FileJob) -> Result<(PathBuf, File)> {
    let temporary = temporary_path(&job.path);
    let file =
        create_private(&temporary).map_err(|error| Error::local("create", &temporary, error))?;
    Ok((temporary, file))
}

/// Creates an empty file at `path` readable and writable by its owner only, replacing a file
/// already there.
fn create_private(path: &Path) -> std::io::Result<File> {
    match longpath::create_new(path, 0o600) {
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            let _ = longpath::remove_file(path);
            longpath::create_new(path, 0o600)
        }
        created => created,
    }
}

/// Creates, verifies and names a file without content.
fn create_and_finish(
    repository: &Repository,
    job: &FileJob,
    progress: &dyn RestoreProgress,
) -> FileResult {
    let (temporary, file) = create_temporary(job)?;
    let mut state = FileState {
        temporary: Some(temporary),
        ..FileState::default()
    };
    let finished = finish_file(repository, job, &mut state, &file);
    drop(file);
    match finished {
        Ok((bytes, warnings)) => {
            progress.file_done(&job.path, bytes);
            Ok((bytes, warnings))
        }
        Err(error) => {
            state.fail(error);
            state
                .result
                .unwrap_or_else(|| Err(Error::ContentMismatch(job.path.clone())))
        }
    }
}

/// Gives the file its full length when its writes stopped short (a trailing hole is no write),
/// checks its keyed content hash (fed as its chunks landed; whatever was not fed yet is read
/// back; a one-chunk file's is its verified chunk id) and size,
/// then applies its metadata (through `file`, its open temporary file) and final name. A
/// failure leaves the temporary file for the caller's [`FileState::fail`] to remove.
fn finish_file(
    repository: &Repository,
    job: &FileJob,
    state: &mut FileState,
    file: &File,
) -> FileResult {
    let NodeKind::File { content_hash, .. } = &job.node.kind else {
        return Err(Error::Usage(format!(
            "{} is not a file",
            job.path.display()
        )));
    };
    let Some(temporary) = state.temporary.clone() else {
        return Err(Error::ContentMismatch(job.path.clone()));
    };
    if state.extent < state.written {
        file.set_len(state.written)
            .map_err(|error| Error::local("write", &job.path, error))?;
    }
    let content_proven = state.proven_by_chunk_id || {
        let mut hasher = state
            .hasher
            .take()
            .unwrap_or_else(|| repository.keys().file_hasher());
        hash_file_range(file, &mut hasher, state.hashed_to, state.written)
            .map_err(|error| Error::local("read back", &job.path, error))?;
        Id(*hasher.finalize().as_bytes()) == *content_hash
    };
    if !content_proven || state.written != job.node.size {
        return Err(Error::ContentMismatch(job.path.clone()));
    }
    let mut warnings = apply_final_metadata(file, &temporary, &job.node)?;
    longpath::rename(&temporary, &job.path)
        .map_err(|error| Error::local("rename into place", &job.path, error))?;
    state.temporary = None;
    // Warnings name the final path, not the temporary one.
    for warning in &mut warnings {
        warning.path.clone_from(&job.path);
    }
    Ok((state.written, warnings))
}

/// Feeds `hasher` with the file's bytes from `start` to `end`; bytes past the file's current
/// end read as the zeros a sparse file's unwritten tail stands for.
fn hash_file_range(
    file: &File,
    hasher: &mut blake3::Hasher,
    start: u64,
    end: u64,
) -> std::io::Result<()> {
    const PIECE: u64 = 1 << 20;
    if start >= end {
        return Ok(());
    }
    let mut buffer = vec![0u8; usize::try_from((end - start).min(PIECE)).unwrap_or(1 << 20)];
    let mut offset = start;
    while offset < end {
        let wanted = usize::try_from((end - offset).min(buffer.len() as u64)).unwrap_or(0);
        let piece = &mut buffer[..wanted];
        let mut filled = 0;
        while filled < wanted {
            let read = file.read_at(&mut piece[filled..], offset + filled as u64)?;
            if read == 0 {
                // Past the end of a sparse file whose trailing zeros are not written yet.
                piece[filled..].fill(0);
                break;
            }
            filled += read;
        }
        hasher.update(piece);
        offset += wanted as u64;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test contents are a few hundred KiB
mod tests {
    use std::os::unix::fs::FileExt;

    use super::{FileState, create_private, hash_file_range, nonzero_pieces};

    /// Chunk boundaries of a `length`-byte file cut every `step` bytes.
    fn chunks(length: u64, step: u64) -> Vec<(u64, u64)> {
        (0..length.div_ceil(step))
            .map(|index| (index * step, ((index + 1) * step).min(length)))
            .collect()
    }

    /// The chunk id key of these tests.
    const KEY: [u8; 32] = [7; 32];

    /// Writes one chunk of `content` (unless it is all zeros, as a sparse restore skips it) and
    /// hashes it as it lands.
    fn land(state: &mut FileState, file: &std::fs::File, content: &[u8], (start, end): (u64, u64)) {
        let plaintext = &content[start as usize..end as usize];
        if plaintext.iter().any(|byte| *byte != 0) {
            file.write_all_at(plaintext, start).unwrap();
        }
        state
            .hash_landed(|| blake3::Hasher::new_keyed(&KEY), file, start, plaintext)
            .unwrap();
    }

    /// Writes the chunks in `order` (skipping all-zero chunks as a sparse restore does),
    /// hashing as they land, then finishes as `finish_file` does; returns the hash.
    fn hash_in_order(content: &[u8], pieces: &[(u64, u64)], order: &[usize]) -> blake3::Hash {
        let directory = tempfile::tempdir().unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(directory.path().join("f"))
            .unwrap();
        let mut state = FileState::default();
        for &index in order {
            land(&mut state, &file, content, pieces[index]);
        }
        // Every chunk landed, so the hash has caught up with the whole file.
        assert!(state.landed.is_empty());
        assert_eq!(state.hashed_to, content.len() as u64);
        file.set_len(content.len() as u64).unwrap();
        let mut hasher = state
            .hasher
            .take()
            .unwrap_or_else(|| blake3::Hasher::new_keyed(&KEY));
        hash_file_range(&file, &mut hasher, state.hashed_to, content.len() as u64).unwrap();
        hasher.finalize()
    }

    #[test]
    fn the_content_hash_is_the_same_in_every_landing_order() {
        let mut content: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        // A run of zeros in the middle and a zero tail, as a sparse file has.
        content[100_000..180_000].fill(0);
        content[260_000..].fill(0);
        let expected = blake3::keyed_hash(&KEY, &content);
        for step in [4096u64, 8191, 70_000, 300_000, 1 << 20] {
            let pieces = chunks(content.len() as u64, step.min(content.len() as u64));
            let count = pieces.len();
            let forward: Vec<usize> = (0..count).collect();
            let backward: Vec<usize> = (0..count).rev().collect();
            // Four interleaved streams, as four parallel pack reads deliver a large file.
            let interleaved: Vec<usize> = (0..4)
                .flat_map(|stream| (stream..count).step_by(4))
                .collect();
            let mut shuffled = forward.clone();
            let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ step;
            for index in (1..count).rev() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                shuffled.swap(index, (seed % (index as u64 + 1)) as usize);
            }
            for order in [&forward, &backward, &interleaved, &shuffled] {
                assert_eq!(
                    hash_in_order(&content, &pieces, order),
                    expected,
                    "step {step}, order starting {:?}",
                    &order[..order.len().min(4)]
                );
            }
        }
    }

    #[test]
    fn one_byte_chunks_hash_alike_forward_and_backward() {
        let content: Vec<u8> = (0..3000u32).map(|i| (i % 13) as u8).collect();
        let pieces = chunks(content.len() as u64, 1);
        let forward: Vec<usize> = (0..pieces.len()).collect();
        let backward: Vec<usize> = (0..pieces.len()).rev().collect();
        for order in [&forward, &backward] {
            assert_eq!(
                hash_in_order(&content, &pieces, order),
                blake3::keyed_hash(&KEY, &content)
            );
        }
    }

    #[test]
    fn chunks_landing_in_file_order_are_never_read_back() {
        let content: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8 + 1).collect();
        let directory = tempfile::tempdir().unwrap();
        // A file handle that cannot be read: any read-back fails the test.
        let file = std::fs::File::create_new(directory.path().join("f")).unwrap();
        let mut state = FileState::default();
        for piece in chunks(content.len() as u64, 8192) {
            land(&mut state, &file, &content, piece);
        }
        assert!(state.landed.is_empty());
        assert_eq!(state.hashed_to, content.len() as u64);
        assert_eq!(
            state.hasher.unwrap().finalize(),
            blake3::keyed_hash(&KEY, &content)
        );
    }

    /// Chunk contents with zeros in every place a sparse chunk can have them.
    fn sparse_contents(length: usize) -> Vec<(&'static str, Vec<u8>)> {
        let pattern = |index: usize| (index % 251) as u8 + 1;
        let with_zeros = |range: std::ops::Range<usize>| {
            let mut content: Vec<u8> = (0..length).map(pattern).collect();
            content[range].fill(0);
            content
        };
        vec![
            ("no zeros", (0..length).map(pattern).collect()),
            ("all zeros", vec![0; length]),
            ("zero head", with_zeros(0..length * 2 / 3)),
            ("zero tail", with_zeros(length / 3..length)),
            ("zero middle", with_zeros(length / 5..length * 4 / 5)),
            ("one byte set", {
                let mut content = vec![0; length];
                content[length / 2] = 9;
                content
            }),
        ]
    }

    #[test]
    fn nonzero_pieces_rebuild_the_chunk_and_skip_only_whole_zero_blocks() {
        for block in [1u64, 512, 4096] {
            for offset in [0u64, 1, 511, 4095, 4096, 10_000] {
                for length in [1usize, 700, 4096, 9000] {
                    for (kind, content) in sparse_contents(length) {
                        let case = format!("block {block} offset {offset} length {length} {kind}");
                        let pieces: Vec<(u64, &[u8])> =
                            nonzero_pieces(offset, &content, block).collect();
                        let mut rebuilt = vec![0u8; length];
                        let mut previous_end = offset;
                        for (at, piece) in &pieces {
                            assert!(*at >= previous_end, "{case}: pieces in order, apart");
                            assert!(piece.iter().any(|byte| *byte != 0), "{case}: a zero piece");
                            let end = at + piece.len() as u64;
                            assert_eq!(at / block, (end - 1) / block, "{case}: one block each");
                            let start = (at - offset) as usize;
                            rebuilt[start..start + piece.len()].copy_from_slice(piece);
                            previous_end = end;
                        }
                        assert_eq!(rebuilt, content, "{case}");
                        // A skipped piece is all zeros and covers whole blocks, or reaches a
                        // chunk edge: every block the chunk touches with a non-zero byte is
                        // written whole (as far as the chunk covers it).
                        let written: u64 = pieces.iter().map(|(_, piece)| piece.len() as u64).sum();
                        let blocks_with_data: std::collections::BTreeSet<u64> = content
                            .iter()
                            .enumerate()
                            .filter(|(_, byte)| **byte != 0)
                            .map(|(index, _)| (offset + index as u64) / block)
                            .collect();
                        let needed: u64 = blocks_with_data
                            .into_iter()
                            .map(|block_index| {
                                let start = (block_index * block).max(offset);
                                let end = ((block_index + 1) * block).min(offset + length as u64);
                                end - start
                            })
                            .sum();
                        assert_eq!(written, needed, "{case}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_private_file_replaces_a_leftover_and_starts_empty() {
        use std::os::unix::fs::PermissionsExt;
        for leftover in [
            None,
            Some(&b""[..]),
            Some(&b"stale bytes of a killed restore"[..]),
        ] {
            let directory = tempfile::tempdir().unwrap();
            let path = directory.path().join(".cairn-tmp-1-0");
            if let Some(bytes) = leftover {
                std::fs::write(&path, bytes).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            }
            let file = create_private(&path).unwrap();
            file.write_all_at(b"new", 0).unwrap();
            drop(file);
            let metadata = std::fs::metadata(&path).unwrap();
            assert_eq!(metadata.permissions().mode() & 0o777, 0o600, "{leftover:?}");
            assert_eq!(std::fs::read(&path).unwrap(), b"new", "{leftover:?}");
        }
    }
}
