//! File-system calls on paths of any length. The kernel takes at most `PATH_MAX` (4096) bytes
//! of path in one call; a path that fits goes to the ordinary call unchanged, so short paths
//! cost nothing more. A longer one is resolved piece by piece: each piece of at most
//! [`PIECE`] bytes, cut at a `/`, is opened (`O_PATH | O_DIRECTORY`) relative to the handle of
//! the one before, and the call is made with the `*at` form relative to the last handle.
//! Symlinks on the way are followed as the kernel follows them in a whole path; a final
//! symlink is followed or not as the ordinary call does.
//!
//! Extended attributes have no `*at` call before Linux 6.13: for them a long path becomes
//! `/proc/self/fd/N/rest`, a short path naming the same entry through the handle.
//!
//! Owns only the resolution and these calls; never walks trees, never prints. The splitting of
//! a path into pieces is pure ([`pieces`]) and tested here.

use std::cell::RefCell;
use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rustix::fs::{AtFlags, CWD, Mode, OFlags};
use rustix::io::Errno;

/// The longest path (in bytes, without the terminating NUL) one system call takes.
pub const PATH_MAX: usize = 4095;

/// The longest piece a long path is cut into: short enough that `/proc/self/fd/N/` before it
/// still fits in [`PATH_MAX`].
pub const PIECE: usize = 4000;

/// Whether `path` is too long for one system call.
pub fn is_long(path: &Path) -> bool {
    path.as_os_str().len() > PATH_MAX
}

/// Cuts `path` at `/` boundaries into pieces of at most `limit` bytes each, to be resolved one
/// after the other; the first keeps a leading `/`, the others are relative. `None` when a single
/// name is longer than `limit` (no file system holds such a name).
pub fn pieces(path: &[u8], limit: usize) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    let mut rest = path;
    while rest.len() > limit {
        let cut = rest[..=limit].iter().rposition(|byte| *byte == b'/')?;
        let end = rest[..cut]
            .iter()
            .rposition(|byte| *byte != b'/')
            .map_or(0, |last| last + 1);
        if end == 0 {
            return None;
        }
        out.push(&rest[..end]);
        rest = &rest[cut..];
        while let [b'/', tail @ ..] = rest {
            rest = tail;
        }
    }
    out.push(if rest.is_empty() { b"." } else { rest });
    Some(out)
}

/// A path made ready for an `*at` call: a directory handle (none: the current directory) and a
/// path of at most [`PIECE`] bytes relative to it.
pub struct At {
    directory: Option<Rc<OwnedFd>>,
    rest: PathBuf,
}

/// Directory handles at spaced points along the last long path resolved on this thread
/// (each key an ancestor of the next; the last is the directory resolved last, the others at
/// least [`ANCHOR_SPACING`] bytes apart). A walk that goes down a deep tree then opens one name
/// per level instead of every level from the root, and one that comes back up opens at most
/// [`ANCHOR_SPACING`] bytes of path: the whole walk costs time linear in its depth. Keeps a
/// handful of handles, whatever the depth.
struct Chain {
    generation: u64,
    links: Vec<(Vec<u8>, Rc<OwnedFd>)>,
}

/// The spacing of the handles a [`Chain`] keeps.
const ANCHOR_SPACING: usize = 1024;

thread_local! {
    static CHAIN: RefCell<Chain> = const {
        RefCell::new(Chain {
            generation: 0,
            links: Vec::new(),
        })
    };
}

/// Bumped whenever this process removes or renames something that may be a directory or a
/// symlink on the way to one: every thread's [`Chain`] is then dropped, so a handle never
/// stands for a path that now names something else.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Whether any thread resolved a long path (before that, nothing needs invalidating).
static CHAINS_USED: AtomicBool = AtomicBool::new(false);

/// Drops every thread's cached handles (see [`GENERATION`]).
fn invalidate_chains() {
    GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// Whether `ancestor` names a directory above `path` (lexically).
fn is_ancestor(ancestor: &[u8], path: &[u8]) -> bool {
    path.len() > ancestor.len()
        && path.starts_with(ancestor)
        && (path[ancestor.len()] == b'/' || ancestor.ends_with(b"/"))
}

/// Opens `path` relative to `base` piece by piece (`O_PATH | O_DIRECTORY`).
fn open_pieces(base: BorrowedFd<'_>, path: &[u8]) -> io::Result<OwnedFd> {
    let parts = pieces(path, PIECE).ok_or_else(|| io::Error::from(Errno::NAMETOOLONG))?;
    let mut directory: Option<OwnedFd> = None;
    for piece in parts {
        let from = directory.as_ref().map_or(base, AsFd::as_fd);
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        directory = Some(rustix::fs::openat(
            from,
            OsStr::from_bytes(piece),
            flags,
            Mode::empty(),
        )?);
    }
    Ok(directory.expect("pieces are never empty"))
}

/// A handle on the directory at `path` (a long path), from this thread's [`Chain`].
fn directory_handle(path: &[u8]) -> io::Result<Rc<OwnedFd>> {
    CHAINS_USED.store(true, Ordering::SeqCst);
    CHAIN.with(|chain| {
        let mut chain = chain.borrow_mut();
        let generation = GENERATION.load(Ordering::SeqCst);
        if chain.generation != generation {
            chain.links.clear();
            chain.generation = generation;
        }
        while chain
            .links
            .last()
            .is_some_and(|(key, _)| key.as_slice() != path && !is_ancestor(key, path))
        {
            chain.links.pop();
        }
        if let Some((key, handle)) = chain.links.last()
            && key.as_slice() == path
        {
            return Ok(Rc::clone(handle));
        }
        let handle = Rc::new(match chain.links.last() {
            Some((key, handle)) => {
                let rest = &path[key.len()..];
                let rest = rest.strip_prefix(b"/").unwrap_or(rest);
                open_pieces(handle.as_fd(), rest)?
            }
            None => open_pieces(CWD, path)?,
        });
        let length = chain.links.len();
        if length >= 2
            && chain.links[length - 1].0.len() - chain.links[length - 2].0.len() < ANCHOR_SPACING
        {
            chain.links.pop();
        }
        chain.links.push((path.to_vec(), Rc::clone(&handle)));
        Ok(handle)
    })
}

impl At {
    /// Resolves the directory `path` is in; a short path is kept whole.
    ///
    /// # Errors
    /// A directory on the way cannot be opened, or a name is longer than any file system allows.
    pub fn new(path: &Path) -> io::Result<Self> {
        if !is_long(path) {
            return Ok(Self {
                directory: None,
                rest: path.to_owned(),
            });
        }
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            // Ends in `..` or `.`: resolved whole, piece by piece.
            let bytes = path.as_os_str().as_bytes();
            let parts = pieces(bytes, PIECE).ok_or_else(|| io::Error::from(Errno::NAMETOOLONG))?;
            let last = parts.last().expect("pieces are never empty");
            let directory = open_pieces(CWD, &bytes[..bytes.len() - last.len()])?;
            return Ok(Self {
                directory: Some(Rc::new(directory)),
                rest: PathBuf::from(OsStr::from_bytes(last)),
            });
        };
        Ok(Self {
            directory: Some(directory_handle(parent.as_os_str().as_bytes())?),
            rest: PathBuf::from(name),
        })
    }

    /// The directory handle the rest is relative to.
    pub fn directory(&self) -> BorrowedFd<'_> {
        self.directory.as_deref().map_or(CWD, AsFd::as_fd)
    }

    /// The path relative to [`At::directory`].
    pub fn rest(&self) -> &Path {
        &self.rest
    }

    /// A path of at most [`PATH_MAX`] bytes naming the same entry, for calls that have no `*at`
    /// form (a final symlink is then followed or not as the call does). Valid while `self` lives.
    pub fn short_path(&self) -> PathBuf {
        match &self.directory {
            None => self.rest.clone(),
            Some(directory) => {
                use std::os::fd::AsRawFd;
                Path::new(&format!("/proc/self/fd/{}", directory.as_raw_fd())).join(&self.rest)
            }
        }
    }

    fn open(&self, flags: OFlags, mode: Mode) -> io::Result<File> {
        let fd = rustix::fs::openat(self.directory(), &self.rest, flags | OFlags::CLOEXEC, mode)?;
        Ok(File::from(fd))
    }
}

/// Runs `call` with a path naming the same entry as `path` that one system call takes: `path`
/// itself when it is short, else a `/proc/self/fd/N/...` path through a handle (see
/// [`At::short_path`]).
///
/// # Errors
/// The resolution fails, or `call` does.
pub fn with_short_path<T>(path: &Path, call: impl FnOnce(&Path) -> io::Result<T>) -> io::Result<T> {
    if !is_long(path) {
        return call(path);
    }
    let at = At::new(path)?;
    call(&at.short_path())
}

/// As [`std::fs::symlink_metadata`] (a final symlink is not followed).
///
/// # Errors
/// The entry cannot be found or read.
pub fn symlink_metadata(path: &Path) -> io::Result<Metadata> {
    if !is_long(path) {
        return std::fs::symlink_metadata(path);
    }
    At::new(path)?
        .open(OFlags::PATH | OFlags::NOFOLLOW, Mode::empty())?
        .metadata()
}

/// As [`std::fs::metadata`] (a final symlink is followed).
///
/// # Errors
/// The entry cannot be found or read.
pub fn metadata(path: &Path) -> io::Result<Metadata> {
    if !is_long(path) {
        return std::fs::metadata(path);
    }
    At::new(path)?.open(OFlags::PATH, Mode::empty())?.metadata()
}

/// As [`File::open`]: read-only, a final symlink followed.
///
/// # Errors
/// The file cannot be opened.
pub fn open(path: &Path) -> io::Result<File> {
    if !is_long(path) {
        return File::open(path);
    }
    At::new(path)?.open(OFlags::RDONLY, Mode::empty())
}

/// Opens an existing file for reading and writing (never following a symlink at its last
/// name).
///
/// # Errors
/// The file cannot be opened.
pub fn open_read_write(path: &Path) -> io::Result<File> {
    if !is_long(path) {
        return std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(i32::try_from(OFlags::NOFOLLOW.bits()).unwrap_or_default())
            .open(path);
    }
    At::new(path)?.open(OFlags::RDWR | OFlags::NOFOLLOW, Mode::empty())
}

/// Creates a new file for reading and writing with permission bits `mode` (narrowed by the
/// umask); fails when anything stands at `path`.
///
/// # Errors
/// Something stands there, or the file cannot be created.
pub fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    if !is_long(path) {
        return std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path);
    }
    At::new(path)?.open(
        OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW,
        Mode::from_bits_truncate(mode),
    )
}

/// The names in the directory at `path` (without `.` and `..`), in no particular order.
///
/// # Errors
/// The directory cannot be opened or listed.
pub fn list_names(path: &Path) -> io::Result<Vec<OsString>> {
    if !is_long(path) {
        return std::fs::read_dir(path)?
            .map(|entry| entry.map(|entry| entry.file_name()))
            .collect();
    }
    list_directory(path, OFlags::empty())
}

/// The names in the directory at `path`, opened with `extra` flags.
fn list_directory(path: &Path, extra: OFlags) -> io::Result<Vec<OsString>> {
    let directory =
        At::new(path)?.open(OFlags::RDONLY | OFlags::DIRECTORY | extra, Mode::empty())?;
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::new(directory)? {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(OsString::from_vec(name));
        }
    }
    Ok(names)
}

/// As [`std::fs::read_link`].
///
/// # Errors
/// `path` is not a symlink or cannot be read.
pub fn read_link(path: &Path) -> io::Result<PathBuf> {
    if !is_long(path) {
        return std::fs::read_link(path);
    }
    let at = At::new(path)?;
    let target = rustix::fs::readlinkat(at.directory(), at.rest(), Vec::new())?;
    Ok(PathBuf::from(OsString::from_vec(target.into_bytes())))
}

/// Creates the directory `path` with permission bits `mode` (narrowed by the umask).
///
/// # Errors
/// Something stands there, or the directory cannot be created.
pub fn create_dir(path: &Path, mode: u32) -> io::Result<()> {
    if !is_long(path) {
        return std::fs::DirBuilder::new().mode(mode).create(path);
    }
    let at = At::new(path)?;
    rustix::fs::mkdirat(at.directory(), at.rest(), Mode::from_bits_truncate(mode))?;
    Ok(())
}

/// Creates `path` and every missing directory above it with permission bits `mode`; a
/// directory already there is fine.
///
/// # Errors
/// A directory cannot be created, or a non-directory stands on the way.
pub fn create_dir_all(path: &Path, mode: u32) -> io::Result<()> {
    if !is_long(path) {
        return std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path);
    }
    if metadata(path).is_ok_and(|metadata| metadata.is_dir()) {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        create_dir_all(parent, mode)?;
    }
    match create_dir(path, mode) {
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists && metadata(path)?.is_dir() => {
            Ok(())
        }
        created => created,
    }
}

/// As [`std::fs::remove_file`] (also removes a symlink, FIFO or device node).
///
/// # Errors
/// Nothing to remove, or the removal failed.
pub fn remove_file(path: &Path) -> io::Result<()> {
    // A symlink on the way to a cached directory may go.
    if CHAINS_USED.load(Ordering::SeqCst)
        && symlink_metadata(path).is_ok_and(|metadata| !metadata.is_file())
    {
        invalidate_chains();
    }
    if !is_long(path) {
        return std::fs::remove_file(path);
    }
    let at = At::new(path)?;
    rustix::fs::unlinkat(at.directory(), at.rest(), AtFlags::empty())?;
    Ok(())
}

/// Removes the directory at `path` and everything below it (or what else stands there),
/// whatever the depth, never following a symlink. Holds a few handles whatever the depth (std's
/// removal holds one per level), so the depth is not bounded by the number of open files.
///
/// # Errors
/// An entry cannot be removed (the removal stops there).
pub fn remove_dir_all(path: &Path) -> io::Result<()> {
    invalidate_chains();
    let removed = remove_tree(path);
    // Handles taken on the way down name removed directories now.
    invalidate_chains();
    removed
}

/// [`remove_dir_all`] without dropping handles at every level (the caller does, before and
/// after), so a deep tree is removed in time linear in its depth.
fn remove_tree(path: &Path) -> io::Result<()> {
    if !symlink_metadata(path)?.is_dir() {
        return unlink(path, AtFlags::empty());
    }
    // O_NOFOLLOW: a symlink swapped in for the directory is not listed through.
    for name in list_directory(path, OFlags::NOFOLLOW)? {
        remove_tree(&path.join(name))?;
    }
    unlink(path, AtFlags::REMOVEDIR)
}

/// `unlinkat` of `path`: a non-directory, or with `REMOVEDIR` an empty directory.
fn unlink(path: &Path, flags: AtFlags) -> io::Result<()> {
    let at = At::new(path)?;
    rustix::fs::unlinkat(at.directory(), at.rest(), flags)?;
    Ok(())
}

/// As [`std::fs::rename`].
///
/// # Errors
/// The rename failed.
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    // A file put in place (what restore renames) changes no directory; anything else may.
    if CHAINS_USED.load(Ordering::SeqCst)
        && (!symlink_metadata(from).is_ok_and(|metadata| metadata.is_file())
            || symlink_metadata(to).is_ok_and(|metadata| !metadata.is_file()))
    {
        invalidate_chains();
    }
    if !is_long(from) && !is_long(to) {
        return std::fs::rename(from, to);
    }
    let (from, to) = (At::new(from)?, At::new(to)?);
    rustix::fs::renameat(from.directory(), from.rest(), to.directory(), to.rest())?;
    Ok(())
}

/// As [`std::fs::hard_link`]: `link` becomes another name of the file at `original` (a symlink
/// there is not followed).
///
/// # Errors
/// The link cannot be made.
pub fn hard_link(original: &Path, link: &Path) -> io::Result<()> {
    if !is_long(original) && !is_long(link) {
        return std::fs::hard_link(original, link);
    }
    let (original, link) = (At::new(original)?, At::new(link)?);
    rustix::fs::linkat(
        original.directory(),
        original.rest(),
        link.directory(),
        link.rest(),
        AtFlags::empty(),
    )?;
    Ok(())
}

/// As [`std::os::unix::fs::symlink`]: a symlink at `link` pointing to `target`.
///
/// # Errors
/// The symlink cannot be made.
pub fn symlink(target: &Path, link: &Path) -> io::Result<()> {
    if !is_long(link) {
        return std::os::unix::fs::symlink(target, link);
    }
    let at = At::new(link)?;
    rustix::fs::symlinkat(target, at.directory(), at.rest())?;
    Ok(())
}

/// Sets the permission bits of `path` (a final symlink followed, as `chmod` does).
///
/// # Errors
/// The permissions cannot be set.
pub fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    if !is_long(path) {
        return std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
    }
    let at = At::new(path)?;
    rustix::fs::chmodat(
        at.directory(),
        at.rest(),
        Mode::from_bits_truncate(mode),
        AtFlags::empty(),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_paths_are_cut_at_slashes_into_pieces_that_fit() {
        assert_eq!(pieces(b"/a/b", 10), Some(vec![&b"/a/b"[..]]));
        assert_eq!(
            pieces(b"/aaa/bbb/ccc", 8),
            Some(vec![&b"/aaa/bbb"[..], b"ccc"])
        );
        // Doubled slashes at a cut do not make an absolute piece; a trailing one names the
        // directory itself.
        assert_eq!(pieces(b"aaa//bbb", 4), Some(vec![&b"aaa"[..], b"bbb"]));
        assert_eq!(pieces(b"aaa/bbb/", 4), Some(vec![&b"aaa"[..], b"bbb/"]));
        assert_eq!(pieces(b"aaaa/", 4), Some(vec![&b"aaaa"[..], b"."]));
        // A name longer than a piece cannot be cut.
        assert_eq!(pieces(b"/aaaaaaaa/b", 4), None);
        assert_eq!(pieces(b"aaaaaaaa", 4), None);
    }

    #[test]
    fn every_piece_fits_and_the_pieces_join_back_to_the_path() {
        for name_length in [1usize, 7, 200, 255] {
            for depth in [1usize, 15, 16, 17, 60, 6000 / name_length.max(1)] {
                let name = "n".repeat(name_length);
                let path = format!("/{}", vec![name; depth].join("/"));
                let parts = pieces(path.as_bytes(), PIECE).unwrap();
                assert!(
                    parts
                        .iter()
                        .all(|piece| piece.len() <= PIECE && !piece.is_empty())
                );
                assert!(parts.iter().skip(1).all(|piece| piece[0] != b'/'));
                let joined: Vec<u8> = parts.join(&b'/');
                assert_eq!(joined, path.as_bytes());
                // Each piece but the last is at least a name shorter than PIECE.
                assert!(parts.len() <= path.len().div_ceil(PIECE - 256).max(1));
            }
        }
    }

    /// Builds a directory chain of `depth` names of `name_length` bytes below `root` through
    /// `*at` calls (std's path calls cannot reach it), and returns its path.
    fn deep_chain(root: &Path, name_length: usize, depth: usize) -> PathBuf {
        let name = "d".repeat(name_length);
        let mut directory = File::open(root).unwrap();
        let mut path = root.to_owned();
        for _ in 0..depth {
            rustix::fs::mkdirat(&directory, name.as_str(), Mode::from_bits_truncate(0o700))
                .unwrap();
            let next = rustix::fs::openat(
                &directory,
                name.as_str(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .unwrap();
            directory = File::from(next);
            path.push(&name);
        }
        path
    }

    #[test]
    fn every_call_works_beyond_path_max_and_removal_clears_the_chain() {
        let scratch = tempfile::tempdir().unwrap();
        let deep = deep_chain(scratch.path(), 255, 40);
        assert!(is_long(&deep), "{} bytes", deep.as_os_str().len());
        assert!(std::fs::symlink_metadata(&deep).is_err(), "std reaches it");
        assert!(symlink_metadata(&deep).unwrap().is_dir());
        let file = deep.join("f");
        create_new(&file, 0o600).unwrap();
        assert_eq!(
            create_new(&file, 0o600).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        std::io::Write::write_all(&mut { open_for_append(&file) }, b"content").unwrap();
        let mut read = String::new();
        std::io::Read::read_to_string(&mut open(&file).unwrap(), &mut read).unwrap();
        assert_eq!(read, "content");
        symlink(Path::new("f"), &deep.join("s")).unwrap();
        assert_eq!(read_link(&deep.join("s")).unwrap(), PathBuf::from("f"));
        assert!(symlink_metadata(&deep.join("s")).unwrap().is_symlink());
        assert!(metadata(&deep.join("s")).unwrap().is_file());
        hard_link(&file, &deep.join("h")).unwrap();
        rename(&deep.join("h"), &deep.join("h2")).unwrap();
        assert_eq!(
            std::os::unix::fs::MetadataExt::nlink(&symlink_metadata(&file).unwrap()),
            2
        );
        set_mode(&file, 0o640).unwrap();
        assert_eq!(
            symlink_metadata(&file).unwrap().permissions().mode() & 0o777,
            0o640
        );
        create_dir_all(&deep.join("x/y/z"), 0o700).unwrap();
        create_dir_all(&deep.join("x/y/z"), 0o700).unwrap();
        let mut names = list_names(&deep).unwrap();
        names.sort();
        assert_eq!(names, ["f", "h2", "s", "x"]);
        with_short_path(&file, |short| {
            assert!(short.as_os_str().len() <= PATH_MAX);
            assert!(std::fs::symlink_metadata(short)?.is_file());
            Ok(())
        })
        .unwrap();
        remove_file(&deep.join("h2")).unwrap();
        let top = scratch.path().join("d".repeat(255));
        remove_dir_all(&top).unwrap();
        assert!(list_names(scratch.path()).unwrap().is_empty());
    }

    #[test]
    fn cached_handles_never_outlive_a_removed_or_renamed_directory() {
        let scratch = tempfile::tempdir().unwrap();
        let deep = deep_chain(scratch.path(), 200, 25);
        let inner = deep.join("inner");
        let names = |path: &Path| {
            let mut names = list_names(path).unwrap();
            names.sort();
            names
        };
        create_dir(&inner, 0o700).unwrap();
        create_new(&inner.join("old"), 0o600).unwrap();
        assert_eq!(names(&inner), ["old"]);
        // This thread now holds a handle on `inner` (the parent of what it created last).
        create_new(&inner.join("older"), 0o600).unwrap();
        // Removed and made again (by another thread, whose removal drops this one's handles).
        let again = inner.clone();
        std::thread::spawn(move || {
            remove_dir_all(&again).unwrap();
            create_dir(&again, 0o700).unwrap();
        })
        .join()
        .unwrap();
        create_new(&inner.join("new"), 0o600).unwrap();
        assert_eq!(names(&inner), ["new"]);
        // Renamed away, and a new directory in its place.
        create_new(&inner.join("newer"), 0o600).unwrap();
        remove_file(&inner.join("newer")).unwrap();
        rename(&inner, &deep.join("moved")).unwrap();
        create_dir(&inner, 0o700).unwrap();
        create_new(&inner.join("fresh"), 0o600).unwrap();
        assert_eq!(names(&inner), ["fresh"]);
        assert_eq!(names(&deep.join("moved")), ["new"]);
        // Replaced by a symlink to another directory: its content shows through it.
        remove_dir_all(&inner).unwrap();
        symlink(Path::new("moved"), &inner).unwrap();
        // Names below the symlink resolve through it (and leave a handle on `moved`).
        create_new(&inner.join("through"), 0o600).unwrap();
        assert_eq!(names(&deep.join("moved")), ["new", "through"]);
        remove_file(&inner).unwrap();
        create_dir(&inner, 0o700).unwrap();
        create_new(&inner.join("last"), 0o600).unwrap();
        assert_eq!(names(&inner), ["last"]);
        assert_eq!(names(&deep.join("moved")), ["new", "through"]);
    }

    fn open_for_append(path: &Path) -> File {
        At::new(path)
            .unwrap()
            .open(OFlags::WRONLY | OFlags::APPEND, Mode::empty())
            .unwrap()
    }
}
