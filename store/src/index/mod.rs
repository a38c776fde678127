//! The blob index: the local redb cache ([`cache`]) and its synchronisation with the remote index
//! objects, including recovery of packs that were uploaded but never indexed (a crashed backup).

pub mod cache;
pub mod marks;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Creates `directory` if needed and names a new temporary redb file in it,
/// `<prefix>-<pid>-<random>.redb`, unique among concurrent processes and runs.
///
/// # Errors
/// [`Error::LocalIo`] when the directory cannot be created.
pub(crate) fn temporary_file(directory: &Path, prefix: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(directory)
        .map_err(|error| Error::local("create cache directory", directory, error))?;
    Ok(directory.join(format!(
        "{prefix}-{}-{}.redb",
        std::process::id(),
        hex::encode(rand::random::<[u8; 6]>())
    )))
}
