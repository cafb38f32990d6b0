//! The FUSE floor for the walk benchmark: serves a tree, read from a listing, from
//! memory, doing nothing per request but answer. `find` over it costs what the kernel
//! and the FUSE protocol cost for that tree (requests, replies, dentries, inodes), so
//! a walk over registryfs compared with a walk over this shows what registryfs itself
//! adds.
//!
//! It asks the kernel for what registryfs asks (READDIRPLUS, no OPENDIR, parallel
//! folder operations) and runs as many threads as a mount's default.
//!
//! Usage: fuse_floor MOUNTPOINT LISTING, where LISTING holds the lines of
//! `find ROOT -printf '%P\t%y\t%s\n'` (the root's own line, with an empty path, is
//! skipped). Runs until unmounted.

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo, InitFlags,
    KernelConfig, MountOption, OpenFlags, ReplyAttr, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEntry, ReplyOpen, Request, Session,
};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::time::{Duration, SystemTime};

/// What registryfs gives folders and tags (`--tag-ttl`'s default).
const TTL: Duration = Duration::from_secs(1);

struct Node {
    name: Box<str>,
    is_dir: bool,
    size: u64,
    children: Vec<u64>,
}

/// Inode `i + 1` is `nodes[i]`; the root is inode 1.
struct Floor {
    nodes: Vec<Node>,
    by_name: HashMap<(u64, Box<str>), u64>,
}

impl Floor {
    fn read(listing: &str) -> Result<Floor, String> {
        let mut floor = Floor {
            nodes: vec![Node {
                name: "".into(),
                is_dir: true,
                size: 0,
                children: Vec::new(),
            }],
            by_name: HashMap::new(),
        };
        for (n, line) in listing.lines().enumerate() {
            let mut fields = line.split('\t');
            let (Some(path), Some(kind), Some(size)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(format!("line {}: not PATH\\tTYPE\\tSIZE", n + 1));
            };
            if path.is_empty() {
                continue;
            }
            let size: u64 = size
                .parse()
                .map_err(|_| format!("line {}: size {size:?}", n + 1))?;
            let (parent_path, name) = path.rsplit_once('/').unwrap_or(("", path));
            let parent = floor.find(parent_path).ok_or(format!(
                "line {}: {path}: its folder is not listed before it",
                n + 1
            ))?;
            let ino = floor.nodes.len() as u64 + 1;
            floor.nodes.push(Node {
                name: name.into(),
                is_dir: kind == "d",
                size,
                children: Vec::new(),
            });
            floor.nodes[parent as usize - 1].children.push(ino);
            floor.by_name.insert((parent, name.into()), ino);
        }
        Ok(floor)
    }

    fn find(&self, path: &str) -> Option<u64> {
        path.split('/')
            .filter(|c| !c.is_empty())
            .try_fold(1u64, |dir, name| {
                self.by_name.get(&(dir, Box::<str>::from(name))).copied()
            })
    }

    /// A folder's children from `offset` on, with the offset that follows each.
    fn entries(
        &self,
        ino: INodeNo,
        offset: u64,
    ) -> Option<impl Iterator<Item = (u64, u64, &Node)>> {
        let dir = self.node(ino)?;
        let children = dir.children.iter().enumerate().skip(offset as usize);
        Some(
            children
                .filter_map(|(i, &child)| Some((i as u64 + 1, child, self.node(INodeNo(child))?))),
        )
    }

    fn node(&self, ino: INodeNo) -> Option<&Node> {
        self.nodes.get(usize::try_from(ino.0).ok()?.checked_sub(1)?)
    }

    fn attr(&self, ino: u64, node: &Node) -> FileAttr {
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        FileAttr {
            ino: INodeNo(ino),
            size: node.size,
            blocks: node.size.div_ceil(512),
            atime: time,
            mtime: time,
            ctime: time,
            crtime: time,
            kind: if node.is_dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: if node.is_dir { 0o555 } else { 0o444 },
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }
}

impl Filesystem for Floor {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let caps = config.capabilities();
        for flag in [
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_NO_OPENDIR_SUPPORT,
        ] {
            if caps.contains(flag) {
                let _ = config.add_capabilities(flag);
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let key = (parent.0, Box::<str>::from(name.to_str().unwrap_or("")));
        match self
            .by_name
            .get(&key)
            .and_then(|&ino| Some((ino, self.node(INodeNo(ino))?)))
        {
            Some((ino, node)) => reply.entry(&TTL, &self.attr(ino, node), Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino) {
            Some(node) => reply.attr(&TTL, &self.attr(ino.0, node)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // Taken by the kernel as "never ask again" (FUSE_NO_OPENDIR_SUPPORT).
        reply.error(Errno::ENOSYS);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(entries) = self.entries(ino, offset) else {
            return reply.error(Errno::ENOENT);
        };
        for (next, child, node) in entries {
            let kind = self.attr(child, node).kind;
            if reply.add(INodeNo(child), next, kind, &*node.name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let Some(entries) = self.entries(ino, offset) else {
            return reply.error(Errno::ENOENT);
        };
        for (next, child, node) in entries {
            let attr = self.attr(child, node);
            if reply.add(
                INodeNo(child),
                next,
                &*node.name,
                &TTL,
                &attr,
                Generation(0),
            ) {
                break;
            }
        }
        reply.ok();
    }
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let [_, mountpoint, listing] = &args[..] else {
        return Err("usage: fuse_floor MOUNTPOINT LISTING".into());
    };
    let text = std::fs::read_to_string(listing).map_err(|e| format!("{listing}: {e}"))?;
    let floor = Floor::read(&text).map_err(|e| format!("{listing}: {e}"))?;
    let mut config = Config::default();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8));
    config.n_threads = Some(threads);
    config.clone_fd = threads > 1;
    config.mount_options = vec![MountOption::RO, MountOption::FSName("fuse-floor".into())];
    let session =
        Session::new(floor, mountpoint, &config).map_err(|e| format!("{mountpoint}: {e}"))?;
    session
        .spawn()
        .map_err(|e| format!("{mountpoint}: {e}"))?
        .join()
        .map_err(|e| format!("{mountpoint}: {e}"))
}
