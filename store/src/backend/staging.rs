//! Staging files of a local-directory repository: `object_store`'s local store writes an object
//! to `<name>#<n>` and then renames (or, create-only, hard-links) it into place, so an upload
//! killed in between leaves `<name>#<n>` behind. Its listings skip such names; this module finds
//! them by reading the directory itself, ages them by the file system's own clock and deletes
//! one only if it is unchanged since it was found (FORMAT.md section 14).

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::{BackendError, Operation, StagingFile};

/// The probe written to read the file system's clock; it ends in `#<digits>`, so listings skip
/// it like any staging file, and a probe left by a killed process is itself cleaned up.
const CLOCK_PROBE: &str = "staging-clock#";

/// Whether `file_name` is a staging name: `<something>#<one or more digits>`.
pub fn is_staging_name(file_name: &str) -> bool {
    file_name.rsplit_once('#').is_some_and(|(object, suffix)| {
        !object.is_empty() && !suffix.is_empty() && suffix.bytes().all(|byte| byte.is_ascii_digit())
    })
}

fn failed(operation: Operation, name: &str, source: std::io::Error) -> BackendError {
    BackendError::Failed {
        operation,
        name: name.to_owned(),
        source: Box::new(source),
    }
}

/// The file system's "now": the modification time it gives a file written now.
fn clock(root: &Path) -> Result<SystemTime, BackendError> {
    let name = format!(
        "{CLOCK_PROBE}{}",
        u64::from(std::process::id()) << 20 | u64::from(rand::random::<u16>())
    );
    let path = root.join(&name);
    let written = std::fs::write(&path, b"clock")
        .and_then(|()| std::fs::metadata(&path))
        .and_then(|metadata| metadata.modified());
    let _ = std::fs::remove_file(&path);
    written.map_err(|error| failed(Operation::Put, &name, error))
}

/// Every staging file below `root`, aged by the file system's clock.
///
/// # Errors
/// [`BackendError::Failed`] when a directory cannot be read or the clock probe not written.
pub fn scan(root: &Path) -> Result<Vec<StagingFile>, BackendError> {
    let now = clock(root)?;
    let mut found = Vec::new();
    let mut directories = vec![root.to_path_buf()];
    while let Some(directory) = directories.pop() {
        let relative = directory
            .strip_prefix(root)
            .unwrap_or(Path::new(""))
            .to_string_lossy()
            .into_owned();
        let entries = std::fs::read_dir(&directory)
            .map_err(|error| failed(Operation::List, &relative, error))?;
        for entry in entries {
            let entry = entry.map_err(|error| failed(Operation::List, &relative, error))?;
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            if file_type.is_dir() {
                directories.push(entry.path());
                continue;
            }
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if !file_type.is_file() || !is_staging_name(&file_name) {
                continue;
            }
            // Gone meanwhile: its upload finished.
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            let modified = metadata.modified().unwrap_or(now);
            found.push(StagingFile {
                name: if relative.is_empty() {
                    file_name
                } else {
                    format!("{relative}/{file_name}")
                },
                size: metadata.len(),
                age: now.duration_since(modified).unwrap_or(Duration::ZERO),
                modified,
            });
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// Deletes `file` if it still has the size and modification time it was found with; returns
/// whether it did. A file gone meanwhile is not an error.
///
/// # Errors
/// [`BackendError::Failed`] when the file cannot be deleted.
pub fn delete(root: &Path, file: &StagingFile) -> Result<bool, BackendError> {
    if !file
        .name
        .split('/')
        .next_back()
        .is_some_and(is_staging_name)
        || file
            .name
            .split('/')
            .any(|part| part == ".." || part.is_empty())
    {
        return Ok(false);
    }
    let path = root.join(&file.name);
    let Ok(metadata) = std::fs::symlink_metadata(&path) else {
        return Ok(false);
    };
    if !metadata.is_file()
        || metadata.len() != file.size
        || metadata.modified().ok() != Some(file.modified)
    {
        return Ok(false);
    }
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(failed(Operation::Delete, &file.name, error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names_are_recognised() {
        for name in ["abc#1", "abc#12", "a#0", "config#3", "ab12ef.x#99"] {
            assert!(is_staging_name(name), "{name}");
        }
        for name in ["abc", "#1", "abc#", "abc#1a", "abc#x", "a#1#b"] {
            assert!(!is_staging_name(name), "{name}");
        }
    }

    #[test]
    fn scan_finds_staging_files_and_delete_spares_changed_ones() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data/ab");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("ab12"), b"pack").unwrap();
        std::fs::write(data.join("ab12#1"), vec![0u8; 1000]).unwrap();
        std::fs::write(root.path().join("config#2"), b"c").unwrap();
        std::fs::write(data.join("ab34#x"), b"not staging").unwrap();
        let hour_ago = SystemTime::now() - Duration::from_hours(1);
        std::fs::File::options()
            .write(true)
            .open(data.join("ab12#1"))
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
        let found = scan(root.path()).unwrap();
        let names: Vec<&str> = found.iter().map(|file| file.name.as_str()).collect();
        assert_eq!(names, ["config#2", "data/ab/ab12#1"]);
        assert_eq!(found[1].size, 1000);
        assert!(
            found[1].age >= Duration::from_secs(3599),
            "{:?}",
            found[1].age
        );
        assert!(found[0].age < Duration::from_mins(1), "{:?}", found[0].age);
        // No probe is left behind.
        assert_eq!(scan(root.path()).unwrap().len(), 2);

        // Grown since the scan (an upload still writing): kept.
        std::fs::write(root.path().join("config#2"), b"cc").unwrap();
        assert!(!delete(root.path(), &found[0]).unwrap());
        assert!(root.path().join("config#2").exists());
        assert!(delete(root.path(), &found[1]).unwrap());
        assert!(!data.join("ab12#1").exists());
        assert!(data.join("ab12").exists());
        // Gone meanwhile, or a name that is no staging file: nothing happens.
        assert!(!delete(root.path(), &found[1]).unwrap());
        let mut outside = found[1].clone();
        outside.name = "data/ab/ab12".into();
        assert!(!delete(root.path(), &outside).unwrap());
        outside.name = "../escape#1".into();
        assert!(!delete(root.path(), &outside).unwrap());
    }
}
