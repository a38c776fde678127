//! The FUSE file system: the kernel's requests answered from the layout, the inode table, the
//! trees (loaded lazily through the repository's cache, a few kept decoded) and the content
//! reader. Read-only: every request that would change something is refused by the read-only
//! mount before it gets here.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cairn_store::format::tree::{DeviceKind, Node, NodeKind, Timestamp, Tree};
use cairn_store::{Error, Id, Repository};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyXattr,
    Request,
};

use crate::MountReport;
use crate::content::{ContentReader, OpenFile};
use crate::inodes::{self, InodeTable, Key, Target};
use crate::layout::{Folder, Group, Layout};
use crate::lru::Lru;

/// How long the kernel may keep names and attributes: nothing under the mount ever changes.
const TTL: Duration = Duration::from_hours(1);
/// Decoded trees kept, in estimated bytes.
const TREE_CACHE_BYTES: usize = 16 << 20;
/// The name of the link to the newest snapshot of a folder.
const LATEST: &str = "latest";

/// The mounted repository.
pub struct CairnFs {
    repository: Arc<Repository>,
    layout: Layout,
    inodes: Mutex<InodeTable>,
    trees: Mutex<Lru<Id, Arc<Tree>>>,
    content: ContentReader,
    open_files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    next_handle: AtomicU64,
    owner: (u32, u32),
    report: Arc<dyn MountReport>,
}

/// One entry of a directory listing.
struct Listed {
    name: Vec<u8>,
    key: Key,
    target: Target,
    kind: FileType,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn system_time(time: Timestamp) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(time.nanos));
    if time.seconds >= 0 {
        UNIX_EPOCH + Duration::from_secs(time.seconds.unsigned_abs()) + nanos
    } else {
        UNIX_EPOCH - Duration::from_secs(time.seconds.unsigned_abs()) + nanos
    }
}

fn file_type(kind: &NodeKind) -> FileType {
    match kind {
        NodeKind::File { .. } => FileType::RegularFile,
        NodeKind::Directory { .. } => FileType::Directory,
        NodeKind::Symlink { .. } => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::Device {
            kind: DeviceKind::Character,
            ..
        } => FileType::CharDevice,
        NodeKind::Device {
            kind: DeviceKind::Block,
            ..
        } => FileType::BlockDevice,
    }
}

/// Linux's `makedev` for the 32 bits `st_rdev` carries through FUSE.
fn device_number(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

/// A hard-linked file's inode key: one number for all its names in the snapshot.
fn link_key(node: &Node, snapshot_inode: u64) -> Option<Key> {
    let linked = matches!(node.kind, NodeKind::File { .. })
        && node.link_count().is_ok_and(|links| links > 1);
    linked.then_some(Key::Link {
        snapshot: snapshot_inode,
        device: node.device,
        inode: node.inode,
    })
}

impl CairnFs {
    /// A file system over `repository` showing `layout`, owned (its virtual directories) by
    /// `owner` (uid, gid); failures of reads go to `report`.
    pub fn new(
        repository: Arc<Repository>,
        layout: Layout,
        owner: (u32, u32),
        report: Arc<dyn MountReport>,
    ) -> Self {
        let with_sources = layout.sources.is_some();
        Self {
            content: ContentReader::new(Arc::clone(&repository)),
            repository,
            layout,
            inodes: Mutex::new(InodeTable::new(with_sources)),
            trees: Mutex::new(Lru::new(TREE_CACHE_BYTES)),
            open_files: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            owner,
            report,
        }
    }

    fn tree(&self, id: &Id) -> Result<Arc<Tree>, Error> {
        if let Some(tree) = lock(&self.trees).get(id) {
            return Ok(tree);
        }
        let tree = Arc::new(self.repository.load_tree(id)?);
        let weight = tree
            .nodes
            .iter()
            .map(|node| {
                160 + node.name.len()
                    + match &node.kind {
                        NodeKind::File { chunks, .. } => chunks.len() * 32,
                        NodeKind::Symlink { target } => target.len(),
                        _ => 0,
                    }
                    + node
                        .extensions
                        .iter()
                        .map(|(_, bytes)| bytes.len())
                        .sum::<usize>()
            })
            .sum();
        lock(&self.trees).insert(*id, Arc::clone(&tree), weight);
        Ok(tree)
    }

    /// The node an inode stands for, with its tree kept alive.
    fn node(&self, tree: &Id, index: usize) -> Result<(Arc<Tree>, usize), Error> {
        let tree = self.tree(tree)?;
        if index >= tree.nodes.len() {
            return Err(Error::PathNotFound(format!(
                "entry {index} of tree {tree:?}"
            )));
        }
        Ok((tree, index))
    }

    fn failed(&self, what: &str, error: &Error) -> Errno {
        self.report.failed(what, error);
        Errno::EIO
    }

    fn directory_attr(&self, inode: u64, time: Timestamp) -> FileAttr {
        let time = system_time(time);
        FileAttr {
            ino: INodeNo(inode),
            size: 0,
            blocks: 0,
            atime: time,
            mtime: time,
            ctime: time,
            crtime: time,
            kind: FileType::Directory,
            perm: 0o555,
            nlink: 2,
            uid: self.owner.0,
            gid: self.owner.1,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    fn newest_time(&self, folder: &Folder) -> Timestamp {
        folder
            .members
            .last()
            .map_or_else(Timestamp::default, |&position| {
                self.layout.snapshots[position].time
            })
    }

    fn node_attr(inode: u64, node: &Node) -> FileAttr {
        let rdev = match node.kind {
            NodeKind::Device { major, minor, .. } => device_number(major, minor),
            _ => 0,
        };
        let size = match &node.kind {
            NodeKind::File { .. } => node.size,
            NodeKind::Symlink { target } => target.len() as u64,
            _ => 0,
        };
        let nlink = match node.kind {
            NodeKind::File { .. } => node.link_count().unwrap_or(1),
            NodeKind::Directory { .. } => 2,
            _ => 1,
        };
        #[allow(clippy::cast_possible_truncation)] // the mask keeps 12 bits
        FileAttr {
            ino: INodeNo(inode),
            size,
            blocks: size.div_ceil(512),
            atime: system_time(node.mtime),
            mtime: system_time(node.mtime),
            ctime: system_time(node.ctime),
            crtime: system_time(node.mtime),
            kind: file_type(&node.kind),
            perm: (node.mode & 0o7777) as u16,
            nlink: u32::try_from(nlink).unwrap_or(u32::MAX),
            uid: node.uid,
            gid: node.gid,
            rdev,
            blksize: 1 << 20,
            flags: 0,
        }
    }

    fn attr(&self, inode: u64, target: &Target) -> Result<FileAttr, Errno> {
        match target {
            Target::Fixed(_) => Ok(self.directory_attr(inode, self.newest_time(&self.layout.all))),
            Target::Folder(group, name) => {
                let folder = self
                    .layout
                    .group(*group)
                    .and_then(|folders| folders.get(name))
                    .ok_or(Errno::ENOENT)?;
                Ok(self.directory_attr(inode, self.newest_time(folder)))
            }
            Target::Snapshot(position) => {
                Ok(self.directory_attr(inode, self.layout.snapshots[*position].time))
            }
            Target::Latest(position) => {
                let shown = &self.layout.snapshots[*position];
                let mut attr = self.directory_attr(inode, shown.time);
                attr.kind = FileType::Symlink;
                attr.perm = 0o777;
                attr.nlink = 1;
                attr.size = shown.name.len() as u64;
                Ok(attr)
            }
            Target::Node { tree, index, .. } => {
                let (tree, index) = self
                    .node(tree, *index)
                    .map_err(|error| self.failed("a directory", &error))?;
                Ok(Self::node_attr(inode, &tree.nodes[index]))
            }
        }
    }

    /// The inode of the snapshot directory above a tree entry's directory `inode` (the
    /// snapshot's own directory for its root tree).
    fn snapshot_inode(&self, inode: u64) -> u64 {
        let inodes = lock(&self.inodes);
        let mut current = inode;
        while let Some(found) = inodes.get(current) {
            match found.target {
                Target::Snapshot(_) => return current,
                Target::Node { .. } => current = found.parent,
                _ => break,
            }
        }
        inode
    }

    fn folder_listing(&self, folder: &Folder, parent: u64) -> Vec<Listed> {
        let mut listed: Vec<Listed> = folder
            .members
            .iter()
            .map(|&position| {
                let name = self.layout.snapshots[position].name.clone().into_bytes();
                Listed {
                    key: Key::Child {
                        parent,
                        name: name.clone(),
                    },
                    name,
                    target: Target::Snapshot(position),
                    kind: FileType::Directory,
                }
            })
            .collect();
        if let Some(latest) = folder.latest {
            listed.push(Listed {
                name: LATEST.into(),
                key: Key::Child {
                    parent,
                    name: LATEST.into(),
                },
                target: Target::Latest(latest),
                kind: FileType::Symlink,
            });
        }
        listed
    }

    fn group_listing(&self, group: Group, parent: u64) -> Vec<Listed> {
        self.layout
            .group(group)
            .into_iter()
            .flatten()
            .map(|(name, _)| Listed {
                name: name.clone().into_bytes(),
                key: Key::Child {
                    parent,
                    name: name.clone().into_bytes(),
                },
                target: Target::Folder(group, name.clone()),
                kind: FileType::Directory,
            })
            .collect()
    }

    fn tree_listing(
        &self,
        tree_id: Id,
        snapshot: usize,
        parent: u64,
    ) -> Result<Vec<Listed>, Error> {
        let tree = self.tree(&tree_id)?;
        let snapshot_inode = self.snapshot_inode(parent);
        Ok(tree
            .nodes
            .iter()
            .enumerate()
            .map(|(index, node)| Listed {
                name: node.name.clone(),
                key: link_key(node, snapshot_inode).unwrap_or_else(|| Key::Child {
                    parent,
                    name: node.name.clone(),
                }),
                target: Target::Node {
                    snapshot,
                    tree: tree_id,
                    index,
                },
                kind: file_type(&node.kind),
            })
            .collect())
    }

    /// The entries of the directory `inode`.
    fn listing(&self, inode: u64) -> Result<Vec<Listed>, Errno> {
        let target = lock(&self.inodes)
            .get(inode)
            .map(|found| found.target.clone())
            .ok_or(Errno::ENOENT)?;
        match target {
            Target::Fixed(inodes::ROOT) => {
                let mut names = vec![
                    ("snapshots", inodes::SNAPSHOTS),
                    ("hosts", inodes::HOSTS),
                    ("tags", inodes::TAGS),
                ];
                if self.layout.sources.is_some() {
                    names.push(("sources", inodes::SOURCES));
                }
                Ok(names
                    .into_iter()
                    .map(|(name, number)| Listed {
                        name: name.into(),
                        key: Key::Child {
                            parent: inodes::ROOT,
                            name: name.into(),
                        },
                        target: Target::Fixed(number),
                        kind: FileType::Directory,
                    })
                    .collect())
            }
            Target::Fixed(inodes::SNAPSHOTS) => Ok(self.folder_listing(&self.layout.all, inode)),
            Target::Fixed(inodes::HOSTS) => Ok(self.group_listing(Group::Hosts, inode)),
            Target::Fixed(inodes::TAGS) => Ok(self.group_listing(Group::Tags, inode)),
            Target::Fixed(_) => Ok(self.group_listing(Group::Sources, inode)),
            Target::Folder(group, name) => {
                let folder = self
                    .layout
                    .group(group)
                    .and_then(|folders| folders.get(&name))
                    .ok_or(Errno::ENOENT)?;
                Ok(self.folder_listing(folder, inode))
            }
            Target::Latest(_) => Err(Errno::ENOTDIR),
            Target::Snapshot(_) | Target::Node { .. } => {
                let (tree, snapshot) = self.directory_tree(inode)?.ok_or(Errno::ENOTDIR)?;
                self.tree_listing(tree, snapshot, inode)
                    .map_err(|error| self.failed("a directory", &error))
            }
        }
    }

    /// The tree listing the directory `inode` and its snapshot's position; `None` for the
    /// virtual directories and links.
    fn directory_tree(&self, inode: u64) -> Result<Option<(Id, usize)>, Errno> {
        let target = lock(&self.inodes)
            .get(inode)
            .map(|found| found.target.clone())
            .ok_or(Errno::ENOENT)?;
        match target {
            Target::Snapshot(position) => {
                Ok(Some((self.layout.snapshots[position].root, position)))
            }
            Target::Node {
                snapshot,
                tree,
                index,
            } => {
                let (tree, index) = self
                    .node(&tree, index)
                    .map_err(|error| self.failed("a directory", &error))?;
                match tree.nodes[index].kind {
                    NodeKind::Directory { subtree } => Ok(Some((subtree, snapshot))),
                    _ => Err(Errno::ENOTDIR),
                }
            }
            _ => Ok(None),
        }
    }

    fn lookup_entry(&self, parent: u64, name: &[u8]) -> Result<FileAttr, Errno> {
        if let Some((tree_id, snapshot)) = self.directory_tree(parent)? {
            let tree = self
                .tree(&tree_id)
                .map_err(|error| self.failed("a directory", &error))?;
            let index = tree
                .nodes
                .binary_search_by(|node| node.name.as_slice().cmp(name))
                .map_err(|_| Errno::ENOENT)?;
            let node = &tree.nodes[index];
            let key = link_key(node, self.snapshot_inode(parent)).unwrap_or_else(|| Key::Child {
                parent,
                name: name.to_vec(),
            });
            let target = Target::Node {
                snapshot,
                tree: tree_id,
                index,
            };
            let number = lock(&self.inodes).remember(key, target, parent);
            return Ok(Self::node_attr(number, node));
        }
        let listed = self.listing(parent)?;
        let entry = listed
            .into_iter()
            .find(|entry| entry.name == name)
            .ok_or(Errno::ENOENT)?;
        let number = match entry.target {
            Target::Fixed(number) => number,
            _ => lock(&self.inodes).remember(entry.key, entry.target.clone(), parent),
        };
        self.attr(number, &entry.target)
    }

    fn node_of(&self, inode: u64) -> Result<(Arc<Tree>, usize), Errno> {
        let target = lock(&self.inodes)
            .get(inode)
            .map(|found| found.target.clone())
            .ok_or(Errno::ENOENT)?;
        let Target::Node { tree, index, .. } = target else {
            return Err(Errno::EINVAL);
        };
        self.node(&tree, index)
            .map_err(|error| self.failed("an entry", &error))
    }
}

impl Filesystem for CairnFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.lookup_entry(parent.0, name.as_bytes()) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(errno) => reply.error(errno),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        lock(&self.inodes).forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let target = lock(&self.inodes)
            .get(ino.0)
            .map(|found| found.target.clone());
        match target
            .ok_or(Errno::ENOENT)
            .and_then(|target| self.attr(ino.0, &target))
        {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(errno) => reply.error(errno),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let target = lock(&self.inodes)
            .get(ino.0)
            .map(|found| found.target.clone());
        match target {
            Some(Target::Latest(position)) => {
                reply.data(self.layout.snapshots[position].name.as_bytes());
            }
            Some(Target::Node { .. }) => match self.node_of(ino.0) {
                Ok((tree, index)) => match &tree.nodes[index].kind {
                    NodeKind::Symlink { target } => reply.data(target),
                    _ => reply.error(Errno::EINVAL),
                },
                Err(errno) => reply.error(errno),
            },
            Some(_) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let opened = self.node_of(ino.0).and_then(|(tree, index)| {
            let node = &tree.nodes[index];
            let NodeKind::File { chunks, .. } = &node.kind else {
                return Err(Errno::EISDIR);
            };
            OpenFile::new(&self.repository, chunks, node.size)
                .map_err(|error| self.failed(&String::from_utf8_lossy(&node.name), &error))
        });
        match opened {
            Ok(file) => {
                let handle = self.next_handle.fetch_add(1, Ordering::Relaxed);
                lock(&self.open_files).insert(handle, Arc::new(file));
                reply.opened(FileHandle(handle), FopenFlags::FOPEN_KEEP_CACHE);
            }
            Err(errno) => reply.error(errno),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(file) = lock(&self.open_files).get(&fh.0).cloned() else {
            reply.error(Errno::EBADF);
            return;
        };
        match self.content.read(&file, offset, size) {
            Ok(bytes) => reply.data(&bytes),
            Err(error) => reply.error(self.failed("a file", &error)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        lock(&self.open_files).remove(&fh.0);
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let listed = match self.listing(ino.0) {
            Ok(listed) => listed,
            Err(errno) => {
                reply.error(errno);
                return;
            }
        };
        let parent = lock(&self.inodes)
            .get(ino.0)
            .map_or(ino.0, |found| found.parent);
        let mut entries = vec![
            (ino.0, FileType::Directory, b".".to_vec()),
            (parent, FileType::Directory, b"..".to_vec()),
        ];
        entries.extend(listed.into_iter().map(|entry| {
            let number = match entry.target {
                Target::Fixed(number) => number,
                _ => entry.key.derived(),
            };
            (number, entry.kind, entry.name)
        }));
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (position, (number, kind, name)) in entries.into_iter().enumerate().skip(skip) {
            if reply.add(
                INodeNo(number),
                position as u64 + 1,
                kind,
                OsStr::from_bytes(&name),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let value = match self.node_of(ino.0) {
            Ok((tree, index)) => tree.nodes[index]
                .xattrs()
                .unwrap_or_default()
                .into_iter()
                .find(|xattr| xattr.name == name.as_bytes())
                .map(|xattr| xattr.value),
            Err(Errno::EINVAL) => None,
            Err(errno) => {
                reply.error(errno);
                return;
            }
        };
        match value {
            None => reply.error(Errno::NO_XATTR),
            Some(value) => reply_sized(reply, size, &value),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let names = match self.node_of(ino.0) {
            Ok((tree, index)) => tree.nodes[index]
                .xattrs()
                .unwrap_or_default()
                .into_iter()
                .flat_map(|xattr| xattr.name.into_iter().chain([0]))
                .collect(),
            Err(Errno::EINVAL) => Vec::new(),
            Err(errno) => {
                reply.error(errno);
                return;
            }
        };
        reply_sized(reply, size, &names);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }
}

/// The xattr protocol: size 0 asks for the length, a short buffer is `ERANGE`.
fn reply_sized(reply: ReplyXattr, size: u32, value: &[u8]) {
    let length = u32::try_from(value.len()).unwrap_or(u32::MAX);
    if size == 0 {
        reply.size(length);
    } else if length > size {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}
