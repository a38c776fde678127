//! `cairn mount`: a repository as a read-only FUSE file system. `snapshots/<time>/`,
//! `hosts/<host>/<time>/`, `tags/<tag>/<time>/` and (with a config) `sources/<source>/<time>/`
//! hold each snapshot's tree as a restore would lay it out, a stream as one file; every folder
//! has a `latest` link.
//!
//! Owns the file system and its caches; never prints (failures reach the caller through
//! [`MountReport`]). Trees are read lazily through the repository's local cache and kept
//! decoded in a small least-recently-used cache; file content is read chunk by chunk, only the
//! chunks a read needs (plus read-ahead for sequential readers), each authenticated as in a
//! restore. Memory is bounded: the inode table holds what the kernel holds, the caches are
//! fixed budgets.

mod content;
mod fs;
mod inodes;
pub mod layout;
mod lru;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_store::Repository;
use fuser::{BackgroundSession, Config, MountOption, SessionACL};

pub use layout::Layout;

/// Where read failures go (the library never prints).
pub trait MountReport: Send + Sync {
    /// Reading `what` failed with `error`; the reader got `EIO`.
    fn failed(&self, what: &str, error: &cairn_store::Error);
}

/// How to mount.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MountOptions {
    /// Let other users in (`allow_other`); the kernel then checks the recorded owners and
    /// modes (`default_permissions`), so nobody reads more than the files allowed them.
    pub allow_other: bool,
    /// The owner (uid, gid) of the virtual directories.
    pub owner: (u32, u32),
}

/// Why mounting failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MountError {
    /// `allow_other` was refused: a user other than root needs `user_allow_other` in
    /// `/etc/fuse.conf`.
    #[error(
        "--allow-other was refused: a user other than root needs user_allow_other in /etc/fuse.conf ({0})"
    )]
    AllowOtherRefused(#[source] std::io::Error),
    /// The kernel or `fusermount` refused the mount.
    #[error("cannot mount at {mountpoint}: {source}")]
    Mount {
        /// The mountpoint.
        mountpoint: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
}

/// How the file system came to be unmounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmounted {
    /// Unmounted while nothing was open under it.
    Clean,
    /// Something was still open or a working directory under it: it was detached (gone from
    /// the mountpoint); what is open fails once this process exits.
    Detached,
}

/// A mounted repository; dropping it unmounts.
pub struct Mounted {
    session: BackgroundSession,
    mountpoint: PathBuf,
}

impl std::fmt::Debug for Mounted {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Mounted")
            .field("mountpoint", &self.mountpoint)
            .finish_non_exhaustive()
    }
}

/// Mounts `layout` of `repository` (its index synced) at `mountpoint`, served by background
/// threads until [`Mounted::unmount`], or until someone unmounts it (`fusermount -u`).
///
/// # Errors
/// [`MountError`] when the kernel, `fusermount` or the FUSE configuration refuse.
pub fn mount(
    repository: Arc<Repository>,
    layout: Layout,
    mountpoint: &Path,
    options: MountOptions,
    report: Arc<dyn MountReport>,
) -> Result<Mounted, MountError> {
    let filesystem = fs::CairnFs::new(repository, layout, options.owner, report);
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::FSName("cairn".into()),
        MountOption::Subtype("cairn".into()),
    ];
    if options.allow_other {
        config.acl = SessionACL::All;
        config.mount_options.push(MountOption::DefaultPermissions);
    }
    // A slow read (a pack from a remote store) does not hold up listings and other files.
    config.n_threads = Some(4);
    match fuser::spawn_mount(filesystem, mountpoint, &config) {
        Ok(session) => Ok(Mounted {
            session,
            mountpoint: mountpoint.to_owned(),
        }),
        Err(error)
            if options.allow_other && error.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            Err(MountError::AllowOtherRefused(error))
        }
        Err(source) => Err(MountError::Mount {
            mountpoint: mountpoint.to_owned(),
            source,
        }),
    }
}

impl Mounted {
    /// Whether the file system is gone: someone unmounted it (`fusermount -u`, `umount`).
    pub fn is_unmounted(&self) -> bool {
        self.session.guard.is_finished()
    }

    /// Unmounts: cleanly when nothing under the mountpoint is in use, else by detaching it.
    ///
    /// # Errors
    /// The system refused both.
    pub fn unmount(self) -> std::io::Result<Unmounted> {
        if self.is_unmounted() {
            return Ok(Unmounted::Clean);
        }
        let mountpoint = self.mountpoint.clone();
        match self.session.umount_and_join() {
            Ok(()) => Ok(Unmounted::Clean),
            Err(error) if error.raw_os_error() == Some(nix::libc::EBUSY) => {
                nix::mount::umount2(&mountpoint, nix::mount::MntFlags::MNT_DETACH)?;
                Ok(Unmounted::Detached)
            }
            Err(error) => Err(error),
        }
    }

    /// The mountpoint.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }
}
