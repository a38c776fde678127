//! The metadata a tree node holds beyond mode, owner and times: extended attributes (POSIX
//! ACLs included), owner and group names, FIFOs and device nodes. Reading it at backup and
//! applying it at restore; the ACL rule that keeps a restore from widening permissions is pure
//! and tested here.
//!
//! Owns only the file-system calls for this metadata; never walks trees, never prints. A
//! feature the file system or the process lacks (no xattrs, no ACLs, no privilege for device
//! nodes or `trusted.*`) is a [`MetadataWarning`] naming the entry, never an error that stops
//! a restore.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Gid, Mode, Timespec, Timestamps, Uid};
use rustix::io::Errno;

use crate::format::tree::{DeviceKind, Node, NodeKind, OwnerNames, Timestamp, Xattr};
use crate::ops::longpath::{self, At};

/// The extended attribute that holds a file's access ACL.
pub const ACL_ACCESS: &[u8] = b"system.posix_acl_access";
/// The extended attribute that holds a directory's default ACL.
pub const ACL_DEFAULT: &[u8] = b"system.posix_acl_default";

/// Something a restore (or backup) could not carry over, named by entry; the rest went on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataWarning {
    /// The entry concerned.
    pub path: PathBuf,
    /// What was not carried over and why, in words a user can act on.
    pub message: String,
}

impl MetadataWarning {
    fn new(path: &Path, message: String) -> Self {
        Self {
            path: path.to_owned(),
            message,
        }
    }
}

/// How a restore chooses the owner and group of what it creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OwnerMapping {
    /// Use the id of the recorded user or group name on this machine when it has one, else the
    /// recorded id (as tar and rsync do).
    #[default]
    ByName,
    /// Use the recorded ids as they are (`--numeric-owner`).
    Numeric,
}

/// Looks up user and group names of ids at backup time, once per id.
#[derive(Debug, Default)]
pub struct OwnerNameCache {
    users: HashMap<u32, Vec<u8>>,
    groups: HashMap<u32, Vec<u8>>,
}

/// `map[key]`, looked up once with `lookup`.
fn cached<K: Eq + std::hash::Hash + Clone, V: Clone>(
    map: &mut HashMap<K, V>,
    key: &K,
    lookup: impl FnOnce(&K) -> V,
) -> V {
    if let Some(value) = map.get(key) {
        return value.clone();
    }
    let value = lookup(key);
    map.insert(key.clone(), value.clone());
    value
}

impl OwnerNameCache {
    /// The names of `uid` and `gid` on this machine (empty where an id has no name).
    pub fn names(&mut self, uid: u32, gid: u32) -> OwnerNames {
        let user = cached(&mut self.users, &uid, |uid| {
            nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(*uid))
                .ok()
                .flatten()
                .map(|user| user.name.into_bytes())
                .unwrap_or_default()
        });
        let group = cached(&mut self.groups, &gid, |gid| {
            nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(*gid))
                .ok()
                .flatten()
                .map(|group| group.name.into_bytes())
                .unwrap_or_default()
        });
        OwnerNames { user, group }
    }
}

/// Maps recorded owners to this machine's ids at restore time, once per name.
#[derive(Debug, Default)]
pub struct OwnerMap {
    mapping: OwnerMapping,
    users: HashMap<Vec<u8>, Option<u32>>,
    groups: HashMap<Vec<u8>, Option<u32>>,
}

impl OwnerMap {
    /// A map following `mapping`.
    pub fn new(mapping: OwnerMapping) -> Self {
        Self {
            mapping,
            ..Self::default()
        }
    }

    /// Rewrites `node.uid` and `node.gid` to this machine's ids of the recorded names, when
    /// the mapping is by name and the names exist here.
    pub fn map(&mut self, node: &mut Node) {
        if self.mapping == OwnerMapping::Numeric {
            return;
        }
        let Ok(Some(names)) = node.owner_names() else {
            return;
        };
        let text = |name: &Vec<u8>| String::from_utf8(name.clone()).ok();
        let uid = cached(&mut self.users, &names.user, |name| {
            let user = nix::unistd::User::from_name(&text(name)?).ok().flatten()?;
            Some(user.uid.as_raw())
        });
        let gid = cached(&mut self.groups, &names.group, |name| {
            let group = nix::unistd::Group::from_name(&text(name)?).ok().flatten()?;
            Some(group.gid.as_raw())
        });
        node.uid = uid.unwrap_or(node.uid);
        node.gid = gid.unwrap_or(node.gid);
    }
}

/// The major and minor numbers of a device number (`st_rdev`).
pub fn device_numbers(rdev: u64) -> (u32, u32) {
    (rustix::fs::major(rdev), rustix::fs::minor(rdev))
}

fn is_unsupported(errno: Errno) -> bool {
    errno == Errno::NOTSUP || errno == Errno::NOSYS
}

/// Reads every extended attribute of `path` (not following a symlink) that this process may
/// read: `user.*`, and as root `trusted.*` and `security.*`; `system.posix_acl_*` are the ACLs.
/// A file system without extended attributes yields none. Attributes that vanish while being
/// read are left out.
///
/// # Errors
/// The file-system error of listing or reading.
pub fn read_xattrs(path: &Path) -> std::io::Result<Vec<Xattr>> {
    longpath::with_short_path(path, read_xattrs_short)
}

/// [`read_xattrs`] of a path one system call takes.
fn read_xattrs_short(path: &Path) -> std::io::Result<Vec<Xattr>> {
    let names = match list_xattrs(path) {
        Ok(names) => names,
        Err(errno) if is_unsupported(errno) => return Ok(Vec::new()),
        Err(errno) => return Err(errno.into()),
    };
    let mut xattrs = Vec::with_capacity(names.len());
    for name in names {
        match get_xattr(path, &name) {
            Ok(value) => xattrs.push(Xattr { name, value }),
            Err(errno) if errno == Errno::NODATA => {}
            Err(errno) => return Err(errno.into()),
        }
    }
    xattrs.sort();
    Ok(xattrs)
}

/// Tries a sized read a few times: the size can grow between the query and the read.
fn sized_read(
    mut query: impl FnMut() -> rustix::io::Result<usize>,
    mut read: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>,
) -> rustix::io::Result<Vec<u8>> {
    for _ in 0..4 {
        let size = query()?;
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut buffer = vec![0u8; size];
        match read(&mut buffer) {
            Ok(length) => {
                buffer.truncate(length);
                return Ok(buffer);
            }
            Err(errno) if errno == Errno::RANGE => {}
            Err(errno) => return Err(errno),
        }
    }
    Err(Errno::RANGE)
}

/// The names in a NUL-separated attribute list.
fn split_names(list: &[u8]) -> Vec<Vec<u8>> {
    list.split(|byte| *byte == 0)
        .filter(|name| !name.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn list_xattrs(path: &Path) -> rustix::io::Result<Vec<Vec<u8>>> {
    let list = sized_read(
        || rustix::fs::llistxattr_query(path),
        |buffer| rustix::fs::llistxattr(path, buffer),
    )?;
    Ok(split_names(&list))
}

fn get_xattr(path: &Path, name: &[u8]) -> rustix::io::Result<Vec<u8>> {
    sized_read(
        || rustix::fs::lgetxattr_query(path, name),
        |buffer| rustix::fs::lgetxattr(path, name, buffer),
    )
}

/// Where extended attributes are applied: an open file or directory, or a path (one system
/// call takes: see [`longpath::At::short_path`]) whose last component is not followed (symlinks, FIFOs, device nodes: opening those could block or
/// touch a device).
#[derive(Clone, Copy)]
pub enum Target<'a> {
    /// An open file or directory.
    Open(&'a File, &'a Path),
    /// A path, not following a final symlink.
    Path(&'a Path),
}

impl Target<'_> {
    fn path(&self) -> &Path {
        match self {
            Self::Open(_, path) | Self::Path(path) => path,
        }
    }

    fn list(&self) -> rustix::io::Result<Vec<Vec<u8>>> {
        match self {
            Self::Path(path) => list_xattrs(path),
            Self::Open(file, _) => {
                let list = sized_read(
                    || rustix::fs::flistxattr_query(file),
                    |buffer| rustix::fs::flistxattr(file, buffer),
                )?;
                Ok(split_names(&list))
            }
        }
    }

    fn set(&self, name: &[u8], value: &[u8]) -> rustix::io::Result<()> {
        let flags = rustix::fs::XattrFlags::empty();
        match self {
            Self::Path(path) => rustix::fs::lsetxattr(*path, name, value, flags),
            Self::Open(file, _) => rustix::fs::fsetxattr(file, name, value, flags),
        }
    }

    fn remove(&self, name: &[u8]) -> rustix::io::Result<()> {
        match self {
            Self::Path(path) => rustix::fs::lremovexattr(*path, name),
            Self::Open(file, _) => rustix::fs::fremovexattr(file, name),
        }
    }

    fn chmod(&self, mode: u32) -> rustix::io::Result<()> {
        let mode = Mode::from_bits_truncate(mode & 0o7777);
        match self {
            Self::Path(path) => rustix::fs::chmodat(CWD, *path, mode, AtFlags::empty()),
            Self::Open(file, _) => rustix::fs::fchmod(file, mode),
        }
    }
}

/// The mode to fall back to when a file's access ACL cannot be applied: the recorded mode
/// with its group bits narrowed to what the ACL granted the owning group (`group::` entry
/// masked by `mask::`). Named users and groups then lose their access, which narrows and never
/// widens: with the ACL gone, the group bits (which showed the mask) would otherwise become the
/// owning group's permissions. `None` when `acl` is not a valid ACL or has no mask.
pub fn mode_without_acl(mode: u32, acl: &[u8]) -> Option<u32> {
    const GROUP_OBJ: u16 = 0x04;
    const MASK: u16 = 0x10;
    let (header, entries) = acl.split_first_chunk::<4>()?;
    if u32::from_le_bytes(*header) != 2 || entries.len() % 8 != 0 {
        return None;
    }
    let mut group_obj = None;
    let mut mask = None;
    for entry in entries.chunks_exact(8) {
        let tag = u16::from_le_bytes([entry[0], entry[1]]);
        let permissions = u32::from(u16::from_le_bytes([entry[2], entry[3]]) & 0o7);
        match tag {
            GROUP_OBJ => group_obj = Some(permissions),
            MASK => mask = Some(permissions),
            _ => {}
        }
    }
    let granted = group_obj? & mask?;
    Some((mode & !0o070) | (granted << 3))
}

fn describe(errno: Errno) -> String {
    std::io::Error::from(errno).to_string()
}

/// Gives `target` exactly the recorded extended attributes: sets each recorded one and removes
/// any other it has (an ACL inherited from a default ACL of the target directory, say), except
/// `security.*` labels the target system assigns. Call it
/// after the owner and mode are applied: `chown` clears `security.capability`, and the access ACL
/// sets the group bits of the mode to its mask. When the access ACL cannot be set, the mode's
/// group bits are narrowed ([`mode_without_acl`]) so that losing the ACL never widens access.
///
/// Returns a warning for every attribute not carried over (unsupported by the file system, not
/// permitted to this process); never fails.
pub fn apply_xattrs(target: Target<'_>, node: &Node) -> Vec<MetadataWarning> {
    let path = target.path();
    let mut warnings = Vec::new();
    let recorded = match node.xattrs() {
        Ok(recorded) => recorded,
        Err(error) => {
            warnings.push(MetadataWarning::new(
                path,
                format!("extended attributes not restored: {error}"),
            ));
            return warnings;
        }
    };
    match target.list() {
        Ok(present) => {
            for name in present {
                // Labels the target system gives every file (`security.selinux`, ...) are its
                // own: only attributes the snapshot would have recorded are taken away.
                if !name.starts_with(b"security.")
                    && !recorded.iter().any(|xattr| xattr.name == name)
                    && let Err(errno) = target.remove(&name)
                    && !is_unsupported(errno)
                    && errno != Errno::NODATA
                {
                    warnings.push(MetadataWarning::new(
                        path,
                        format!(
                            "cannot remove extended attribute {} that the snapshot does not hold: {}",
                            String::from_utf8_lossy(&name),
                            describe(errno)
                        ),
                    ));
                }
            }
        }
        Err(errno) if is_unsupported(errno) => {}
        Err(errno) => warnings.push(MetadataWarning::new(
            path,
            format!("cannot list extended attributes: {}", describe(errno)),
        )),
    }
    for xattr in &recorded {
        let Err(errno) = target.set(&xattr.name, &xattr.value) else {
            continue;
        };
        let name = String::from_utf8_lossy(&xattr.name);
        let why = if is_unsupported(errno) {
            "the target file system does not support it".to_owned()
        } else if errno == Errno::PERM || errno == Errno::ACCESS {
            format!("{} (restore as root to keep it)", describe(errno))
        } else {
            describe(errno)
        };
        let mut message = format!("extended attribute {name} not restored: {why}");
        if xattr.name == ACL_ACCESS
            && let Some(narrowed) = mode_without_acl(node.mode, &xattr.value)
        {
            let _ = match target.chmod(narrowed) {
                Ok(()) => write!(
                    message,
                    "; group permissions narrowed to mode {:04o} so no one gains access",
                    narrowed & 0o7777
                ),
                Err(errno) => write!(
                    message,
                    "; narrowing the group permissions failed too: {}",
                    describe(errno)
                ),
            };
        }
        warnings.push(MetadataWarning::new(path, message));
    }
    warnings
}

/// Creates the FIFO or device node `node` at `path`, owner-only (0600) until its recorded
/// metadata is applied by [`apply_path_metadata`]. Whatever non-directory stood at `path` is
/// replaced.
///
/// # Errors
/// The creation failed: a warning to report (no privilege for device nodes, a file system that
/// cannot hold them), the other entries go on.
pub fn create_special(path: &Path, node: &Node) -> Result<(), MetadataWarning> {
    let (file_type, device, what) = match &node.kind {
        NodeKind::Fifo => (FileType::Fifo, 0, "FIFO"),
        NodeKind::Device { kind, major, minor } => {
            let (file_type, what) = match kind {
                DeviceKind::Character => (FileType::CharacterDevice, "character device"),
                DeviceKind::Block => (FileType::BlockDevice, "block device"),
            };
            (file_type, rustix::fs::makedev(*major, *minor), what)
        }
        _ => {
            return Err(MetadataWarning::new(
                path,
                "not a FIFO or device node".to_owned(),
            ));
        }
    };
    if let Ok(metadata) = longpath::symlink_metadata(path)
        && !metadata.is_dir()
    {
        let _ = longpath::remove_file(path);
    }
    let at = At::new(path)
        .map_err(|error| MetadataWarning::new(path, format!("cannot create {what}: {error}")))?;
    rustix::fs::mknodat(
        at.directory(),
        at.rest(),
        file_type,
        Mode::from_bits_truncate(0o600),
        device,
    )
    .map_err(|errno| {
        let hint = if errno == Errno::PERM {
            " (restore as root to create device nodes)"
        } else {
            ""
        };
        MetadataWarning::new(
            path,
            format!("cannot create {what}: {}{hint}", describe(errno)),
        )
    })
}

fn timespec(timestamp: Timestamp) -> Timespec {
    Timespec {
        tv_sec: timestamp.seconds,
        tv_nsec: i64::from(timestamp.nanos),
    }
}

/// Applies owner (when permitted), mode (not for symlinks), extended attributes and times to
/// the symlink, FIFO or device node at `path` without opening or following it.
pub fn apply_path_metadata(path: &Path, node: &Node) -> Vec<MetadataWarning> {
    let at = match At::new(path) {
        Ok(at) => at,
        Err(error) => {
            return vec![MetadataWarning::new(
                path,
                format!("metadata not restored: {error}"),
            )];
        }
    };
    // Calls without an `*at` form (extended attributes) take this path to the same entry.
    let short = at.short_path();
    let is_symlink = matches!(node.kind, NodeKind::Symlink { .. });
    // Only root may give entries away; for everyone else keeping their own ownership is right.
    let _ = rustix::fs::chownat(
        at.directory(),
        at.rest(),
        Some(Uid::from_raw(node.uid)),
        Some(Gid::from_raw(node.gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    );
    let mut warnings = Vec::new();
    if !is_symlink && let Err(errno) = Target::Path(&short).chmod(node.mode) {
        warnings.push(MetadataWarning::new(
            path,
            format!("cannot set permissions: {}", describe(errno)),
        ));
    }
    let mut xattr_warnings = apply_xattrs(Target::Path(&short), node);
    for warning in &mut xattr_warnings {
        path.clone_into(&mut warning.path);
    }
    warnings.extend(xattr_warnings);
    let times = Timestamps {
        last_access: timespec(node.mtime),
        last_modification: timespec(node.mtime),
    };
    if let Err(errno) =
        rustix::fs::utimensat(at.directory(), at.rest(), &times, AtFlags::SYMLINK_NOFOLLOW)
    {
        warnings.push(MetadataWarning::new(
            path,
            format!("cannot set times: {}", describe(errno)),
        ));
    }
    warnings
}

/// The display form of a node's name, for messages.
pub fn display_name(node: &Node) -> String {
    std::ffi::OsStr::from_bytes(&node.name)
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut bytes = 2u32.to_le_bytes().to_vec();
        for (tag, permissions, id) in entries {
            bytes.extend_from_slice(&tag.to_le_bytes());
            bytes.extend_from_slice(&permissions.to_le_bytes());
            bytes.extend_from_slice(&id.to_le_bytes());
        }
        bytes
    }

    #[test]
    fn a_lost_acl_narrows_the_group_bits_to_the_owning_groups_grant() {
        //! Regression: `group::r--` with `mask::rwx` came back as `-rw-rwxr--` (group write).
        let undefined = u32::MAX;
        let masked = acl(&[
            (0x01, 0o6, undefined),
            (0x02, 0o7, 1000),
            (0x04, 0o4, undefined),
            (0x10, 0o7, undefined),
            (0x20, 0o4, undefined),
        ]);
        assert_eq!(mode_without_acl(0o100_674, &masked), Some(0o100_644));
        let mask_narrower = acl(&[(0x04, 0o7, undefined), (0x10, 0o5, undefined)]);
        assert_eq!(mode_without_acl(0o4775, &mask_narrower), Some(0o4755));
        // No mask (a minimal ACL), another version, or a torn entry: nothing to narrow by.
        assert_eq!(
            mode_without_acl(0o644, &acl(&[(0x04, 0o4, undefined)])),
            None
        );
        let mut wrong_version = masked.clone();
        wrong_version[0] = 1;
        assert_eq!(mode_without_acl(0o644, &wrong_version), None);
        assert_eq!(mode_without_acl(0o644, &masked[..masked.len() - 1]), None);
        assert_eq!(mode_without_acl(0o644, &[]), None);
    }

    #[test]
    fn owners_map_by_name_unless_numeric_and_keep_ids_of_unknown_names() {
        // `root` is uid and gid 0 on every Linux machine; the other names exist nowhere.
        let mut node = crate::format::tree::test_node("f", NodeKind::Fifo, 0);
        node.uid = 4242;
        node.gid = 4343;
        node.set_owner_names(&OwnerNames {
            user: b"root".to_vec(),
            group: b"root".to_vec(),
        });
        let mut by_name = node.clone();
        OwnerMap::new(OwnerMapping::ByName).map(&mut by_name);
        assert_eq!((by_name.uid, by_name.gid), (0, 0));
        let mut numeric = node.clone();
        OwnerMap::new(OwnerMapping::Numeric).map(&mut numeric);
        assert_eq!((numeric.uid, numeric.gid), (4242, 4343));
        let mut unknown = node.clone();
        unknown.set_owner_names(&OwnerNames {
            user: b"no-such-user-cairn".to_vec(),
            group: Vec::new(),
        });
        OwnerMap::new(OwnerMapping::ByName).map(&mut unknown);
        assert_eq!((unknown.uid, unknown.gid), (4242, 4343));
        let mut names = OwnerNameCache::default();
        assert_eq!(names.names(0, 0).user, b"root");
    }

    #[test]
    fn device_numbers_round_trip_through_makedev() {
        for (major, minor) in [(0, 0), (1, 3), (8, 1), (259, 65_536), (4095, 1_048_575)] {
            assert_eq!(
                device_numbers(rustix::fs::makedev(major, minor)),
                (major, minor)
            );
        }
    }
}
