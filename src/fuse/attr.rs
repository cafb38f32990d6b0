//! Attributes and cache lifetimes the kernel gets. Pure, unit-tested.
//!
//! Two lifetimes per reply (fuser 0.18's `entry_with_ttls`):
//! - the *entry* TTL (name → inode) is what makes a moved tag visible: long only for
//!   digest paths, which can never point elsewhere; `--tag-ttl` for tag paths, tag lists
//!   and folders (whose listing can change);
//! - the *attribute* TTL is long for files: a file inode is tied to one content version
//!   and time (see `inodes`), so its size and times never change. Folders use
//!   `--tag-ttl`, at most a second: their times follow the store, and a cached root
//!   would keep answering `stat` after the daemon died, while health checks stat the
//!   mount point.
//!
//! Files are 0444 and folders 0555, owned by the store's owner: the mount is read-only
//! and readable by all who may use it, so the kernel is not asked to check these modes
//! (no `default_permissions`, see `session::kernel_mount`).

use super::inodes::{Inode, InodeKind, Source, ROOT_INO};
use fuser::{FileAttr, FileType, INodeNo};
use std::time::{Duration, SystemTime};

pub const FILE_MODE: u16 = 0o444;
pub const DIR_MODE: u16 = 0o555;
/// Links are 0777 on Linux (permissions are the target's).
pub const LINK_MODE: u16 = 0o777;
/// What stat reports as the I/O size.
const BLKSIZE: u32 = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ttl {
    pub entry: Duration,
    pub attr: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TtlPolicy {
    /// For tag paths, tag lists and folders.
    pub tag: Duration,
    /// For digest paths and file attributes.
    pub immutable: Duration,
}

/// The longest the root folder's attributes are cached: `stat` of the mount point
/// (how tools and the next mount tell a stale mount) fails within it once the daemon
/// is gone.
pub const MAX_ROOT_ATTR_TTL: Duration = Duration::from_secs(1);

impl TtlPolicy {
    pub fn for_inode(&self, inode: &Inode) -> Ttl {
        Ttl {
            entry: if inode.immutable {
                self.immutable
            } else {
                self.tag
            },
            // Other folders' attributes (their times) live as long as tag paths: they
            // are invalidated when the store changes (fanotify), and with polling the
            // tag lifetime is short. A shorter life would cost a GETATTR round trip per
            // folder and second on every path a web server walks (one per folder of
            // each tag it serves).
            attr: if inode.ino == ROOT_INO {
                self.tag.min(MAX_ROOT_ATTR_TTL)
            } else if inode.is_dir() {
                self.tag
            } else {
                self.immutable
            },
        }
    }

    /// The lifetimes of `inode` as an entry of the folder `parent`. The kernel checks no
    /// modes (no default_permissions), so a path walk asks the daemon nothing while its
    /// entries live: the names at the root live no longer than the root's attributes,
    /// so that within a second of the daemon's death every path fails (ENOTCONN)
    /// instead of serving from the kernel's caches what may have moved since. That
    /// costs one lookup per top-level name and second.
    pub fn for_entry(&self, inode: &Inode, parent: u64) -> Ttl {
        let mut ttl = self.for_inode(inode);
        if parent == ROOT_INO {
            ttl.entry = ttl.entry.min(MAX_ROOT_ATTR_TTL);
        }
        ttl
    }

    /// How long "no such name" may be cached: a push must show up as fast as a tag
    /// move, so like tag paths. None: do not cache at all.
    pub fn negative(&self) -> Option<Duration> {
        (!self.tag.is_zero()).then_some(self.tag)
    }
}

pub fn attr(inode: &Inode, owner: Owner) -> FileAttr {
    let (kind, perm, nlink, size) = match inode.kind {
        // 1 is "subfolder count unknown" (as on btrfs): 2 would tell find/fts that a
        // folder has no subfolders and may be skipped.
        InodeKind::Dir => (FileType::Directory, DIR_MODE, 1, 0),
        InodeKind::File {
            len,
            source: Source::Link,
            ..
        } => (FileType::Symlink, LINK_MODE, 1, len),
        InodeKind::File { len, .. } => (FileType::RegularFile, FILE_MODE, 1, len),
    };
    FileAttr {
        ino: INodeNo(inode.ino),
        size,
        blocks: size.div_ceil(512),
        atime: inode.mtime,
        mtime: inode.mtime,
        ctime: inode.mtime,
        crtime: inode.mtime,
        kind,
        perm,
        nlink,
        uid: owner.uid,
        gid: owner.gid,
        rdev: 0,
        blksize: BLKSIZE,
        flags: 0,
    }
}

/// The attributes of a negative entry: inode 0 tells the kernel "no such name, and you
/// may remember that for the entry TTL".
pub fn negative_attr() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        crtime: SystemTime::UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuse::inodes::{Source, Version};

    fn file(len: u64) -> InodeKind {
        InodeKind::File {
            len,
            source: Source::Bytes,
            version: Version(7),
        }
    }

    fn inode(kind: InodeKind, immutable: bool) -> Inode {
        Inode {
            ino: 42,
            kind,
            immutable,
            mtime: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        }
    }

    const OWNER: Owner = Owner { uid: 7, gid: 8 };
    const POLICY: TtlPolicy = TtlPolicy {
        tag: Duration::from_secs(1),
        immutable: Duration::from_secs(86400),
    };

    #[test]
    fn file_attributes() {
        let i = inode(file(10), false);
        let a = attr(&i, OWNER);
        assert_eq!(a.ino, INodeNo(42));
        assert_eq!(a.kind, FileType::RegularFile);
        assert_eq!(a.size, 10);
        assert_eq!(a.blocks, 1);
        assert_eq!(a.perm, 0o444);
        assert_eq!(a.nlink, 1);
        assert_eq!((a.uid, a.gid), (7, 8));
        assert_eq!(a.mtime, i.mtime);
        assert_eq!(a.ctime, i.mtime);
    }

    #[test]
    fn folder_attributes() {
        let a = attr(&inode(InodeKind::Dir, false), OWNER);
        assert_eq!(a.kind, FileType::Directory);
        assert_eq!(a.perm, 0o555);
        assert_eq!(a.nlink, 1);
        assert_eq!(a.size, 0);
    }

    #[test]
    fn blocks_round_up() {
        assert_eq!(attr(&inode(file(513), true), OWNER).blocks, 2);
        assert_eq!(attr(&inode(file(0), true), OWNER).blocks, 0);
    }

    #[test]
    fn ttls() {
        let bytes = || file(1);
        let tag = POLICY.for_inode(&inode(bytes(), false));
        assert_eq!(tag.entry, Duration::from_secs(1));
        assert_eq!(
            tag.attr,
            Duration::from_secs(86400),
            "a file inode never changes"
        );
        let digest = POLICY.for_inode(&inode(bytes(), true));
        assert_eq!(digest.entry, Duration::from_secs(86400));
        assert_eq!(digest.attr, Duration::from_secs(86400));
        let folder = POLICY.for_inode(&inode(InodeKind::Dir, false));
        assert_eq!(folder.entry, Duration::from_secs(1));
        assert_eq!(folder.attr, Duration::from_secs(1), "as long as tag paths");
        let digest_folder = POLICY.for_inode(&inode(InodeKind::Dir, true));
        assert_eq!(digest_folder.entry, Duration::from_secs(86400));
        assert_eq!(digest_folder.attr, Duration::from_secs(1));
        assert_eq!(POLICY.negative(), Some(Duration::from_secs(1)));
        let long = TtlPolicy {
            tag: Duration::from_secs(60),
            ..POLICY
        };
        let folder = long.for_inode(&inode(InodeKind::Dir, false));
        assert_eq!(folder.entry, Duration::from_secs(60));
        assert_eq!(
            folder.attr,
            Duration::from_secs(60),
            "invalidated on change"
        );
        let root = Inode {
            ino: ROOT_INO,
            ..inode(InodeKind::Dir, false)
        };
        assert_eq!(
            long.for_inode(&root).attr,
            MAX_ROOT_ATTR_TTL,
            "a dead daemon shows at the mount point soon"
        );
        let digest_folder = inode(InodeKind::Dir, true);
        assert_eq!(
            long.for_entry(&digest_folder, ROOT_INO).entry,
            MAX_ROOT_ATTR_TTL,
            "and on every path"
        );
        assert_eq!(long.for_entry(&digest_folder, 7).entry, POLICY.immutable);
        assert_eq!(long.for_entry(&root, 7).attr, MAX_ROOT_ATTR_TTL);
        let uncached = TtlPolicy {
            tag: Duration::ZERO,
            ..POLICY
        };
        assert_eq!(uncached.negative(), None);
        assert_eq!(
            uncached.for_inode(&inode(InodeKind::Dir, false)).entry,
            Duration::ZERO
        );
    }

    #[test]
    fn negative_entries_have_inode_zero() {
        assert_eq!(negative_attr().ino, INodeNo(0));
    }
}
