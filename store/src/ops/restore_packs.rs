//! Writing restored files' content pack by pack: every chunk of a group of files is looked up,
//! the packs holding them are read once each in large coalesced ranges ([`fetch::for_each_blob`]),
//! and each authenticated blob is written straight to every (file, offset) that needs it with
//! positioned writes. A file whose last chunk is written has its keyed content hash checked (from
//! the plaintext in hand for a one-chunk file, else by reading the temporary file back), then
//! gets its metadata and final name. Memory is the read window plus a few dozen bytes per chunk
//! of a group ([`GROUP_CHUNKS`] at most, unless one file has more), never the files' content.
//!
//! Restore's other rules (temporary names, private modes, sparse holes, failures per file)
//! are `restore`'s; this module only replaces the order in which content is read and written.
//! Never prints.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Mutex;

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
    /// Chunk writes still to come.
    remaining: usize,
    /// Plaintext bytes written so far.
    written: u64,
    /// Set once the file is finished or failed; later chunks for it are dropped.
    result: Option<FileResult>,
}

impl FileState {
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
            let file = match write_chunk(job, &mut state, place.offset, plaintext) {
                Ok(file) => file,
                Err(error) => {
                    state.fail(error);
                    continue;
                }
            };
            progress.bytes_written(plaintext.len() as u64);
            if state.remaining > 0 {
                continue;
            }
            let single = (file_chunks(&job.node).len() == 1).then_some(plaintext);
            match finish_file(repository, job, &mut state, &file, single) {
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

/// Writes one chunk at `offset` of the file, creating its temporary file on the first write.
/// In a sparse file every all-zero piece between block boundaries is skipped (the temporary
/// file starts empty, so a skipped piece reads as zeros and stays a hole).
fn write_chunk(
    job: &FileJob,
    state: &mut FileState,
    offset: u64,
    plaintext: &[u8],
) -> Result<File> {
    let file = if let Some(temporary) = &state.temporary {
        longpath::open_read_write(temporary)
            .map_err(|error| Error::local("open", temporary, error))?
    } else {
        let temporary = temporary_path(&job.path);
        // A leftover of a killed restore that had the same process id.
        let _ = longpath::remove_file(&temporary);
        let file = longpath::create_new(&temporary, 0o600)
            .map_err(|error| Error::local("create", &temporary, error))?;
        state.temporary = Some(temporary);
        file
    };
    let write = |data: &[u8], at: u64| {
        file.write_all_at(data, at)
            .map_err(|error| Error::local("write", &job.path, error))
    };
    if job.node.is_sparse() {
        let block = file.metadata().map_or(4096, |metadata| metadata.blksize());
        let block = block.clamp(512, 1 << 20);
        let mut position = 0usize;
        while position < plaintext.len() {
            let at = offset + position as u64;
            let to_boundary = usize::try_from(block - at % block).unwrap_or(usize::MAX);
            let end = plaintext.len().min(position.saturating_add(to_boundary));
            let piece = &plaintext[position..end];
            if piece.iter().any(|byte| *byte != 0) {
                write(piece, at)?;
            }
            position = end;
        }
    } else {
        write(plaintext, offset)?;
    }
    state.written += plaintext.len() as u64;
    state.remaining -= 1;
    Ok(file)
}

/// Creates, verifies and names a file without content.
fn create_and_finish(
    repository: &Repository,
    job: &FileJob,
    progress: &dyn RestoreProgress,
) -> FileResult {
    let temporary = temporary_path(&job.path);
    let _ = longpath::remove_file(&temporary);
    let file = longpath::create_new(&temporary, 0o600)
        .map_err(|error| Error::local("create", &temporary, error))?;
    let mut state = FileState {
        temporary: Some(temporary),
        ..FileState::default()
    };
    let finished = finish_file(repository, job, &mut state, &file, Some(&[]));
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

/// Gives the file its full length (a trailing hole is no write), checks its keyed content hash
/// and size (over `content` when the whole file is in hand, else over the bytes read back),
/// then applies its metadata (through `file`, its open temporary file) and final name. A
/// failure leaves the temporary file for the caller's [`FileState::fail`] to remove.
fn finish_file(
    repository: &Repository,
    job: &FileJob,
    state: &mut FileState,
    file: &File,
    content: Option<&[u8]>,
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
    file.set_len(state.written)
        .map_err(|error| Error::local("write", &job.path, error))?;
    let mut hasher = repository.keys().file_hasher();
    match content {
        Some(content) => {
            hasher.update(content);
        }
        None => hash_file(file, &mut hasher)
            .map_err(|error| Error::local("read back", &job.path, error))?,
    }
    if Id(*hasher.finalize().as_bytes()) != *content_hash || state.written != job.node.size {
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

/// Feeds the whole file to `hasher` from its start.
fn hash_file(file: &File, hasher: &mut blake3::Hasher) -> std::io::Result<()> {
    let mut buffer = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        let read = file.read_at(&mut buffer, offset)?;
        if read == 0 {
            return Ok(());
        }
        hasher.update(&buffer[..read]);
        offset += read as u64;
    }
}
