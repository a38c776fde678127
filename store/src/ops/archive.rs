//! `dump --archive`: streams a directory (or file) of a snapshot as a tar or zip archive to any
//! writer, verifying every byte as restore does. Writes only to the writer it is given: never
//! the file system, never stdout or stderr itself.
//!
//! The writer need not seek (a pipe): tar needs nothing more, and zip entries use data
//! descriptors (sizes and CRC after the data). What each format keeps:
//!
//! | | tar (GNU) | zip |
//! | --- | --- | --- |
//! | content | verified bytes | verified bytes, deflated |
//! | mode | all 12 bits (setuid, setgid, sticky) | all 12 bits, in the Unix external attributes |
//! | mtime | whole seconds | local time, 2-second steps (DOS time) |
//! | owner | ids and names | — |
//! | symlinks | yes | yes |
//! | hard links | yes: later links point to the first | stored as copies |
//! | FIFOs, devices | yes | left out (listed in [`ArchiveSummary::left_out`]) |
//!
//! Extended attributes and ACLs are not written in either format; `restore` keeps them.

use std::collections::HashMap;
use std::io::{self, Write};
use std::mem::ManuallyDrop;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::crypto::id::Id;
use crate::error::{Error, Result};
use crate::format::tree::{DeviceKind, Node, NodeKind};
use crate::ops::restore::write_file_content;
use crate::repo::repository::Repository;

/// The archive formats of `dump --archive`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// A GNU tar stream (long names and link targets as GNU extensions).
    Tar,
    /// A zip archive written as a stream, with data descriptors.
    Zip,
}

/// What an archive holds, for the caller to report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveSummary {
    /// Regular files written with their content.
    pub files: u64,
    /// Directories.
    pub directories: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Hard links written as links to an earlier entry (tar only).
    pub hard_links: u64,
    /// FIFOs and device nodes written (tar only).
    pub special: u64,
    /// Content bytes written, all verified.
    pub bytes: u64,
    /// Archive paths of entries the format cannot hold (FIFOs and devices in a zip).
    pub left_out: Vec<String>,
}

/// Writes the entry at `path` of the snapshot tree `root` (and, for a directory, everything
/// below it) to `out` as an archive. Entries are named relative to the parent of `path`: the
/// directory `/srv/app` becomes `app/` and `app/...`; the root (`""` or `/`) gives the
/// snapshot's top-level entries. Zip times are civil times in `time_zone`.
///
/// On an error the archive is cut short where it happened and never finished (no tar end
/// blocks, no zip central directory), so no reader takes it for complete.
///
/// # Errors
/// [`Error::PathNotFound`], content that does not verify ([`Error::ContentMismatch`],
/// [`Error::Damaged`]), store failures, or failures writing to `out`.
pub fn write_archive(
    repository: &Repository,
    root: &Id,
    path: &str,
    format: ArchiveFormat,
    time_zone: &jiff::tz::TimeZone,
    out: &mut dyn Write,
) -> Result<ArchiveSummary> {
    repository.sync_index()?;
    let start = match repository.find_node(root, path)? {
        Some(node) => vec![node],
        None => repository.load_tree(root)?.nodes,
    };
    let mut archive = match format {
        ArchiveFormat::Tar => Sink::Tar(ManuallyDrop::new(tar::Builder::new(out))),
        ArchiveFormat::Zip => {
            Sink::Zip(ManuallyDrop::new(Box::new(zip::ZipWriter::new_stream(out))))
        }
    };
    let mut writer = ArchiveWriter {
        repository,
        time_zone,
        summary: ArchiveSummary::default(),
        first_links: HashMap::new(),
    };
    for node in start {
        writer.add(&mut archive, Path::new(""), &node)?;
    }
    archive.finish()?;
    Ok(writer.summary)
}

/// The archive being written. Neither writer is ever dropped: both finish the archive when
/// dropped, which after an error would make a cut-short archive look complete (and zip's
/// prints to stderr). [`Sink::finish`] finishes it on success; on an error it is leaked, a
/// few hundred bytes at the end of a failing command.
enum Sink<'out> {
    Tar(ManuallyDrop<tar::Builder<&'out mut dyn Write>>),
    Zip(ManuallyDrop<Box<zip::ZipWriter<zip::write::StreamWriter<&'out mut dyn Write>>>>),
}

impl Sink<'_> {
    fn finish(self) -> Result<()> {
        match self {
            Self::Tar(builder) => {
                let out = ManuallyDrop::into_inner(builder)
                    .into_inner()
                    .map_err(write_error)?;
                out.flush().map_err(write_error)
            }
            Self::Zip(zip) => {
                let out = ManuallyDrop::into_inner(zip)
                    .finish()
                    .map_err(zip_error)?
                    .into_inner();
                out.flush().map_err(write_error)
            }
        }
    }
}

/// Walks the tree and adds each entry to the archive.
struct ArchiveWriter<'repo> {
    repository: &'repo Repository,
    time_zone: &'repo jiff::tz::TimeZone,
    summary: ArchiveSummary,
    /// Hard link groups (device, inode) seen, with the archive path of their first link.
    first_links: HashMap<(u64, u64), PathBuf>,
}

impl ArchiveWriter<'_> {
    /// Adds `node` below the archive directory `prefix` (empty at the top), then its children.
    /// Names keep their bytes in tar; zip names are UTF-8, so others are converted lossily.
    fn add(&mut self, archive: &mut Sink<'_>, prefix: &Path, node: &Node) -> Result<()> {
        let archive_path = prefix.join(std::ffi::OsStr::from_bytes(&node.name));
        match archive {
            Sink::Tar(builder) => self.add_tar(builder, &archive_path, node)?,
            Sink::Zip(zip) => self.add_zip(zip, &archive_path.to_string_lossy(), node)?,
        }
        if let NodeKind::Directory { subtree } = &node.kind {
            for child in self.repository.load_tree(subtree)?.nodes {
                self.add(archive, &archive_path, &child)?;
            }
        }
        Ok(())
    }

    fn add_tar(
        &mut self,
        builder: &mut tar::Builder<&mut dyn Write>,
        path: &Path,
        node: &Node,
    ) -> Result<()> {
        let mut header = tar_header(node);
        match &node.kind {
            NodeKind::Directory { .. } => {
                header.set_entry_type(tar::EntryType::Directory);
                builder
                    .append_data(&mut header, path, io::empty())
                    .map_err(write_error)?;
                self.summary.directories += 1;
            }
            NodeKind::Symlink { target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                let target = Path::new(std::ffi::OsStr::from_bytes(target));
                builder
                    .append_link(&mut header, path, target)
                    .map_err(write_error)?;
                self.summary.symlinks += 1;
            }
            NodeKind::File { .. } => {
                let group =
                    (node.link_count().unwrap_or(1) >= 2).then_some((node.device, node.inode));
                if let Some(first) = group.and_then(|group| self.first_links.get(&group)) {
                    header.set_entry_type(tar::EntryType::Link);
                    header.set_size(0);
                    builder
                        .append_link(&mut header, path, first)
                        .map_err(write_error)?;
                    self.summary.hard_links += 1;
                    return Ok(());
                }
                if let Some(group) = group {
                    self.first_links.insert(group, path.to_owned());
                }
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(node.size);
                // The header (and any GNU long-name entry) now, the verified content straight
                // after it, then the padding to the next 512-byte block.
                builder
                    .append_data(&mut header, path, io::empty())
                    .map_err(write_error)?;
                let out = builder.get_mut();
                let written = write_file_content(self.repository, node, path, out)?;
                let padding = (512 - written % 512) % 512;
                out.write_all(&[0u8; 512][..usize::try_from(padding).unwrap_or(0)])
                    .map_err(write_error)?;
                self.summary.files += 1;
                self.summary.bytes += written;
            }
            NodeKind::Fifo | NodeKind::Device { .. } => {
                header.set_entry_type(match node.kind {
                    NodeKind::Device {
                        kind: DeviceKind::Character,
                        ..
                    } => tar::EntryType::Char,
                    NodeKind::Device {
                        kind: DeviceKind::Block,
                        ..
                    } => tar::EntryType::Block,
                    _ => tar::EntryType::Fifo,
                });
                if let NodeKind::Device { major, minor, .. } = node.kind {
                    header.set_device_major(major).map_err(write_error)?;
                    header.set_device_minor(minor).map_err(write_error)?;
                }
                builder
                    .append_data(&mut header, path, io::empty())
                    .map_err(write_error)?;
                self.summary.special += 1;
            }
        }
        Ok(())
    }

    fn add_zip(
        &mut self,
        zip: &mut zip::ZipWriter<zip::write::StreamWriter<&mut dyn Write>>,
        archive_path: &str,
        node: &Node,
    ) -> Result<()> {
        let file_type = match node.kind {
            NodeKind::File { .. } => 0o100_000,
            NodeKind::Directory { .. } => 0o040_000,
            NodeKind::Symlink { .. } => 0o120_000,
            NodeKind::Fifo | NodeKind::Device { .. } => {
                self.summary.left_out.push(archive_path.to_owned());
                return Ok(());
            }
        };
        let options = zip::write::SimpleFileOptions::default()
            .system(zip::System::Unix)
            .external_attributes((file_type | (node.mode & 0o7777)) << 16)
            .last_modified_time(zip_time(node, self.time_zone))
            .large_file(node.size >= u64::from(u32::MAX));
        match &node.kind {
            NodeKind::Directory { .. } => {
                zip.add_directory(
                    archive_path,
                    options.compression_method(zip::CompressionMethod::Stored),
                )
                .map_err(zip_error)?;
                self.summary.directories += 1;
            }
            NodeKind::Symlink { target } => {
                let target = String::from_utf8_lossy(target);
                zip.add_symlink(
                    archive_path,
                    target,
                    options.compression_method(zip::CompressionMethod::Stored),
                )
                .map_err(zip_error)?;
                self.summary.symlinks += 1;
            }
            _ => {
                let options = options.compression_method(zip::CompressionMethod::Deflated);
                zip.start_file(archive_path, options).map_err(zip_error)?;
                let written =
                    write_file_content(self.repository, node, Path::new(archive_path), zip)?;
                self.summary.files += 1;
                self.summary.bytes += written;
            }
        }
        Ok(())
    }
}

/// A GNU tar header with the node's mode bits, owner and mtime (before 1970: 0).
fn tar_header(node: &Node) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_mode(node.mode & 0o7777);
    header.set_uid(u64::from(node.uid));
    header.set_gid(u64::from(node.gid));
    header.set_mtime(u64::try_from(node.mtime.seconds).unwrap_or(0));
    header.set_size(0);
    if let Ok(Some(names)) = node.owner_names() {
        // Names too long for the header's 32 bytes are left out; the ids stay.
        let _ = header.set_username(&String::from_utf8_lossy(&names.user));
        let _ = header.set_groupname(&String::from_utf8_lossy(&names.group));
    }
    header
}

/// The node's mtime as a zip (DOS) time in `time_zone`; outside DOS's 1980–2107, its limit.
fn zip_time(node: &Node, time_zone: &jiff::tz::TimeZone) -> zip::DateTime {
    let latest = zip::DateTime::from_date_and_time(2107, 12, 31, 23, 59, 58).unwrap_or_default();
    let Ok(time) = jiff::Timestamp::from_second(node.mtime.seconds) else {
        return if node.mtime.seconds > 0 {
            latest
        } else {
            zip::DateTime::default()
        };
    };
    let civil = time.to_zoned(time_zone.clone()).datetime();
    if civil.year() < 1980 {
        return zip::DateTime::default();
    }
    let [month, day, hour, minute, second] = [
        civil.month(),
        civil.day(),
        civil.hour(),
        civil.minute(),
        civil.second(),
    ]
    .map(|part| u8::try_from(part).unwrap_or(0));
    u16::try_from(civil.year())
        .ok()
        .and_then(|year| {
            zip::DateTime::from_date_and_time(year, month, day, hour, minute, second).ok()
        })
        .unwrap_or(latest)
}

fn write_error(error: io::Error) -> Error {
    Error::local("write", "the archive", error)
}

fn zip_error(error: zip::result::ZipError) -> Error {
    match error {
        zip::result::ZipError::Io(error) => write_error(error),
        other => Error::Usage(format!("cannot write the zip archive: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::tree::Timestamp;

    fn node_at(seconds: i64) -> Node {
        Node {
            name: b"x".to_vec(),
            kind: NodeKind::Fifo,
            mode: 0o104_755,
            uid: 1,
            gid: 2,
            mtime: Timestamp { seconds, nanos: 0 },
            ctime: Timestamp::default(),
            inode: 0,
            device: 0,
            size: 0,
            extensions: Vec::new(),
        }
    }

    #[test]
    fn zip_times_are_civil_times_clamped_to_the_dos_range() {
        let utc = jiff::tz::TimeZone::UTC;
        // 2024-06-01T03:04:05Z
        let time = zip_time(&node_at(1_717_211_045), &utc);
        assert_eq!(
            (
                time.year(),
                time.month(),
                time.day(),
                time.hour(),
                time.minute(),
                time.second()
            ),
            (2024, 6, 1, 3, 4, 4),
            "DOS times have 2-second steps"
        );
        assert_eq!(zip_time(&node_at(0), &utc), zip::DateTime::default());
        assert_eq!(zip_time(&node_at(-86_400), &utc), zip::DateTime::default());
        assert_eq!(zip_time(&node_at(i64::MAX), &utc).year(), 2107);
        let late = zip_time(&node_at(5_000_000_000), &utc);
        assert_eq!(late.year(), 2107);
    }

    #[test]
    fn tar_headers_keep_special_bits_and_clamp_times_before_1970() {
        let header = tar_header(&node_at(-5));
        assert_eq!(header.mode().unwrap(), 0o4755);
        assert_eq!(header.mtime().unwrap(), 0);
        assert_eq!(header.uid().unwrap(), 1);
    }
}
