//! The mark set of a prune: every blob id the live snapshots reference, each with the pack chosen
//! to hold it, kept in a temporary redb file next to the cache so that a prune's memory does not
//! grow with the repository (millions of blobs would otherwise be hundreds of MiB of hash maps).
//! `stats` uses the same set for the blobs and file contents it has counted.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::crypto::id::Id;
use crate::error::{Error, Result};

/// Blob id → chosen pack id (all zero bytes: none chosen yet).
const MARKS: TableDefinition<&[u8; 32], &[u8; 32]> = TableDefinition::new("marks");
/// The "no pack chosen" value.
const UNCHOSEN: [u8; 32] = [0; 32];
/// Page cache of the mark database: bounded whatever the repository size.
const MARK_CACHE_MEMORY: usize = 16 * 1024 * 1024;

/// A disk-backed set of referenced blob ids with their chosen packs; the file is removed on drop.
#[derive(Debug)]
pub struct MarkSet {
    database: Database,
    path: Option<PathBuf>,
}

fn mark_error(path: Option<&Path>, error: impl std::fmt::Display) -> Error {
    Error::Cache {
        path: path.map_or_else(|| PathBuf::from("<memory>"), Path::to_path_buf),
        reason: format!("mark set: {error}"),
    }
}

impl MarkSet {
    /// A new, empty mark set: a temporary file in `directory`, or in memory without one.
    ///
    /// # Errors
    /// [`Error::Cache`] when the file cannot be created.
    pub fn create(directory: Option<&Path>) -> Result<Self> {
        let (database, path) = match directory {
            Some(directory) => {
                let path = super::temporary_file(directory, "marks")?;
                let database = Database::builder()
                    .set_cache_size(MARK_CACHE_MEMORY)
                    .create(&path)
                    .map_err(|error| mark_error(Some(&path), error))?;
                (database, Some(path))
            }
            None => (
                Database::builder()
                    .create_with_backend(redb::backends::InMemoryBackend::new())
                    .map_err(|error| mark_error(None, error))?,
                None,
            ),
        };
        let marks = Self { database, path };
        let transaction = marks.write()?;
        transaction.open_table(MARKS).map_err(|e| marks.fail(e))?;
        transaction.commit().map_err(|e| marks.fail(e))?;
        Ok(marks)
    }

    fn fail(&self, error: impl std::fmt::Display) -> Error {
        mark_error(self.path.as_deref(), error)
    }

    fn write(&self) -> Result<redb::WriteTransaction> {
        let mut transaction = self.database.begin_write().map_err(|e| self.fail(e))?;
        // A crash loses the temporary file anyway: never pay for fsync.
        transaction
            .set_durability(redb::Durability::None)
            .map_err(|e| self.fail(e))?;
        Ok(transaction)
    }

    /// Marks `ids`; returns, for each, whether it was new (so a tree walk visits a tree once).
    ///
    /// # Errors
    /// [`Error::Cache`] on a database failure.
    pub fn insert_all(&self, ids: &[Id]) -> Result<Vec<bool>> {
        let transaction = self.write()?;
        let mut fresh = Vec::with_capacity(ids.len());
        {
            let mut table = transaction.open_table(MARKS).map_err(|e| self.fail(e))?;
            for id in ids {
                let existed = table.get(&id.0).map_err(|e| self.fail(e))?.is_some();
                if !existed {
                    table.insert(&id.0, &UNCHOSEN).map_err(|e| self.fail(e))?;
                }
                fresh.push(!existed);
            }
        }
        transaction.commit().map_err(|e| self.fail(e))?;
        Ok(fresh)
    }

    /// For each of `ids` (blobs of `pack`): if it is marked and no pack was chosen for it yet,
    /// chooses `pack` and answers `true`.
    ///
    /// # Errors
    /// [`Error::Cache`] on a database failure.
    pub fn claim(&self, pack: &Id, ids: &[Id]) -> Result<Vec<bool>> {
        let transaction = self.write()?;
        let mut claimed = Vec::with_capacity(ids.len());
        {
            let mut table = transaction.open_table(MARKS).map_err(|e| self.fail(e))?;
            for id in ids {
                let unchosen = table
                    .get(&id.0)
                    .map_err(|e| self.fail(e))?
                    .is_some_and(|chosen| *chosen.value() == UNCHOSEN);
                if unchosen {
                    table.insert(&id.0, &pack.0).map_err(|e| self.fail(e))?;
                }
                claimed.push(unchosen);
            }
        }
        transaction.commit().map_err(|e| self.fail(e))?;
        Ok(claimed)
    }

    /// For each of `ids`: whether it is marked and no pack was chosen for it yet. Reads only.
    ///
    /// # Errors
    /// [`Error::Cache`] on a database failure.
    pub fn unchosen_among(&self, ids: &[Id]) -> Result<Vec<bool>> {
        let transaction = self.database.begin_read().map_err(|e| self.fail(e))?;
        let table = transaction.open_table(MARKS).map_err(|e| self.fail(e))?;
        ids.iter()
            .map(|id| {
                Ok(table
                    .get(&id.0)
                    .map_err(|e| self.fail(e))?
                    .is_some_and(|chosen| *chosen.value() == UNCHOSEN))
            })
            .collect()
    }

    /// Whether `pack` was chosen for each of `ids`.
    ///
    /// # Errors
    /// [`Error::Cache`] on a database failure.
    pub fn chosen_in(&self, pack: &Id, ids: &[Id]) -> Result<Vec<bool>> {
        let transaction = self.database.begin_read().map_err(|e| self.fail(e))?;
        let table = transaction.open_table(MARKS).map_err(|e| self.fail(e))?;
        ids.iter()
            .map(|id| {
                Ok(table
                    .get(&id.0)
                    .map_err(|e| self.fail(e))?
                    .is_some_and(|chosen| *chosen.value() == pack.0))
            })
            .collect()
    }

    /// How many ids are marked.
    ///
    /// # Errors
    /// [`Error::Cache`] on a database failure.
    pub fn len(&self) -> Result<u64> {
        let transaction = self.database.begin_read().map_err(|e| self.fail(e))?;
        let table = transaction.open_table(MARKS).map_err(|e| self.fail(e))?;
        table.len().map_err(|e| self.fail(e))
    }

    /// Whether nothing is marked.
    ///
    /// # Errors
    /// [`Error::Cache`] on a database failure.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// How many marked ids have no chosen pack.
    ///
    /// # Errors
    /// [`Error::Cache`] on a database failure.
    pub fn unchosen(&self) -> Result<u64> {
        let transaction = self.database.begin_read().map_err(|e| self.fail(e))?;
        let table = transaction.open_table(MARKS).map_err(|e| self.fail(e))?;
        let mut count = 0;
        for row in table.iter().map_err(|e| self.fail(e))? {
            let (_, chosen) = row.map_err(|e| self.fail(e))?;
            if *chosen.value() == UNCHOSEN {
                count += 1;
            }
        }
        Ok(count)
    }
}

impl Drop for MarkSet {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_claims_and_choices() {
        let directory = tempfile::tempdir().unwrap();
        let marks = MarkSet::create(Some(directory.path())).unwrap();
        let (first, second, unmarked) = (Id([1; 32]), Id([2; 32]), Id([3; 32]));
        assert_eq!(
            marks.insert_all(&[first, second, first]).unwrap(),
            vec![true, true, false]
        );
        assert_eq!(marks.len().unwrap(), 2);
        assert_eq!(marks.unchosen().unwrap(), 2);
        let (pack, other_pack) = (Id([8; 32]), Id([9; 32]));
        assert_eq!(
            marks.claim(&pack, &[first, unmarked]).unwrap(),
            vec![true, false]
        );
        assert_eq!(
            marks.claim(&other_pack, &[first, second]).unwrap(),
            vec![false, true]
        );
        assert_eq!(
            marks.chosen_in(&pack, &[first, second]).unwrap(),
            vec![true, false]
        );
        assert_eq!(marks.unchosen().unwrap(), 0);
        let path = marks.path.clone().unwrap();
        assert!(path.exists());
        drop(marks);
        assert!(!path.exists(), "the temporary file is removed");
    }
}
