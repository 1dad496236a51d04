//! The filesystem's request handlers, independent of the FUSE transport: each one
//! resolves names, builds an [`Op`] or reads the tree, and answers through a reply sink
//! (`reply`). `adapter` plugs them into fuser's `/dev/fuse` loop and `uring` into FUSE
//! over io_uring. Handlers never send kernel notifications themselves; a lock `mkdir`
//! hands its reply to the invalidation thread instead (see `notify`).

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use fuser::{FileAttr, FileType, FopenFlags, TimeOrNow};
use nix::errno::Errno;

use memdb::{paths, Inode, LockEvent, MemDb, Op, ROOT_INODE};

use crate::coherence::Ttls;
use crate::tree::vfiles::{self, Virt};
use crate::tree::{FuseIno, Metrics};

use super::handles::Handle;
use super::reply::{
    AttrReply, CreateReply, DataReply, DirReply, EmptyReply, EntryReply, OpenReply, Statfs,
    StatfsReply, WriteReply,
};
use super::{attrs, PmxFs};

fn name_str(name: &OsStr) -> Result<&str, Errno> {
    name.to_str().ok_or(Errno::EINVAL)
}

/// Virtual file attributes are never cached: their content changes on its own.
const VIRT_FILE_TTL: Duration = Duration::ZERO;

/// What pmxcfs answers for the operations it does not support; both transports use it.
pub mod refused {
    use nix::errno::Errno;
    /// Device nodes.
    pub const MKNOD: Errno = Errno::ENOSYS;
    /// Symbolic links (only the virtual node links exist).
    pub const SYMLINK: Errno = Errno::ENOSYS;
    /// Hard links.
    pub const LINK: Errno = Errno::EPERM;
    /// Extended attributes.
    pub const XATTR: Errno = Errno::ENOTSUP;
    /// ioctl: programs probe files with TCGETS; answer like any regular file would.
    pub const IOCTL: Errno = Errno::ENOTTY;
}

/// The attribute changes a SETATTR asks for.
#[derive(Debug, Default, Clone, Copy)]
pub struct SetAttr {
    /// chmod.
    pub mode: Option<u32>,
    /// chown user.
    pub uid: Option<u32>,
    /// chown group.
    pub gid: Option<u32>,
    /// truncate.
    pub size: Option<u64>,
    /// utimens (mtime).
    pub mtime: Option<TimeOrNow>,
    /// The open handle the change came through, if any.
    pub fh: Option<u64>,
}

fn secs_of(t: TimeOrNow, now: u32) -> u32 {
    match t {
        TimeOrNow::Now => now,
        TimeOrNow::SpecificTime(t) => t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs().min(u32::MAX as u64) as u32)
            .unwrap_or(0),
    }
}

impl PmxFs {
    fn virt_attr(&self, fuse: FuseIno, v: Virt) -> FileAttr {
        let content = self.tree.virtual_file(v);
        let quorate = self.tree.status.quorate();
        let (kind, perm) = match v {
            Virt::Link(_) => (
                FileType::Symlink,
                attrs::perm(FileType::Symlink, "", quorate),
            ),
            _ => (FileType::RegularFile, 0o440),
        };
        attrs::make(
            fuse,
            kind,
            perm,
            content.len() as u64,
            self.tree.status.start_time as u32,
            self.gid,
        )
    }

    /// Path of a child `name` of FUSE directory `parent`.
    fn child_path(&self, db: &MemDb, parent: FuseIno, name: &OsStr) -> Result<String, Errno> {
        let name = name_str(name)?;
        paths::check_name(name)?;
        let pino = parent.memdb().ok_or(Errno::ENOTDIR)?;
        let pe = db.get(pino).ok_or(Errno::ENOENT)?;
        if !pe.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        let dir = db.path_of(pino).ok_or(Errno::ENOENT)?;
        Ok(paths::join(&dir, name))
    }

    /// Reply with the entry for memdb inode `ino` and count the kernel's reference.
    fn reply_entry(&self, db: &MemDb, ino: Inode, reply: impl EntryReply) {
        let Some(e) = db.get(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let (attr, t) = self.attr_reply(db, e);
        self.remember(FuseIno(attr.ino.0));
        reply.entry(&attr, t);
    }

    fn is_virtual_name(&self, parent: FuseIno, name: &OsStr) -> bool {
        parent == FuseIno::ROOT && name.to_str().and_then(vfiles::by_name).is_some()
    }

    /// Commit a handle's buffer.
    fn commit(&self, fh: u64) -> Result<(), Errno> {
        let Some(h) = self.handles.get(fh) else {
            return Ok(());
        };
        let mut h = h.lock();
        let (Some(ino), Some(buf)) = (h.ino, h.buf.as_ref()) else {
            return Ok(());
        };
        let path = self.tree.read().path_of(ino).ok_or(Errno::ENOENT)?;
        let op = Op::Write {
            path,
            offset: 0,
            data: buf.clone(),
            truncate: true,
        };
        self.tree.from_kernel(&op)?;
        let data = h.buf.take().unwrap_or_default();
        h.snapshot = Arc::new(data);
        // No invalidation: the kernel dropped its size and mtime at each WRITE (and at an
        // O_TRUNC open), and attributes read while the handle was dirty were not cached.
        self.handles.cleaned(ino);
        Ok(())
    }

    fn open_handle(&self, ino: FuseIno, writable: bool) -> Result<u64, Errno> {
        if let Some((_, v)) = vfiles::by_ino(ino) {
            if writable {
                return Err(Errno::EACCES);
            }
            if matches!(v, Virt::Link(_)) {
                return Err(Errno::ELOOP);
            }
            let content = self.tree.virtual_file(v).into_bytes();
            return Ok(self.add_handle(Handle {
                ino: None,
                snapshot: Arc::new(content),
                buf: None,
                writable: false,
            }));
        }
        if writable && !self.tree.status.quorate() {
            return Err(Errno::EACCES);
        }
        let db = self.tree.read();
        let m = ino
            .memdb()
            .and_then(|m| self.tree.refs.live_ino(&db, m))
            .ok_or(Errno::ENOENT)?;
        let e = db.get(m).ok_or(Errno::ENOENT)?;
        if e.is_dir() {
            return Err(Errno::EISDIR);
        }
        Ok(self.add_handle(Handle {
            ino: Some(m),
            snapshot: e.row.data.clone(),
            buf: None,
            writable,
        }))
    }

    /// LOOKUP `name` in FUSE directory `parent`.
    pub fn lookup(&self, parent: FuseIno, name: &OsStr, reply: impl EntryReply) {
        Metrics::bump(&self.tree.metrics.lookups);
        if parent == FuseIno::ROOT {
            if let Some((ino, v)) = name.to_str().and_then(vfiles::by_name) {
                let attr = self.virt_attr(ino, v);
                let ttl = match v {
                    Virt::Link(_) => self.policy.default,
                    _ => Ttls {
                        entry: self.policy.default.entry,
                        attr: VIRT_FILE_TTL,
                    },
                };
                return reply.entry(&attr, ttl);
            }
        }
        let db = self.tree.read();
        let Some(pino) = parent.memdb() else {
            return reply.error(Errno::ENOTDIR);
        };
        let Some(name) = name.to_str() else {
            return reply.error(Errno::ENOENT);
        };
        let Some(e) = db.lookup(pino, name) else {
            return reply.error(Errno::ENOENT);
        };
        // An expired lock is gone as far as the kernel is concerned, so the next
        // mkdir reaches us and takes it over.
        if db.is_expired_lock(e.row.inode, self.tree.clock.now()) {
            return reply.error(Errno::ENOENT);
        }
        let ino = e.row.inode;
        self.reply_entry(&db, ino, reply);
    }

    /// FORGET: the kernel dropped `nlookup` references to `ino`.
    pub fn forget(&self, ino: FuseIno, nlookup: u64) {
        self.tree.refs.forget(ino, nlookup);
    }

    /// GETATTR.
    pub fn getattr(&self, ino: FuseIno, reply: impl AttrReply) {
        Metrics::bump(&self.tree.metrics.getattrs);
        if let Some((_, v)) = vfiles::by_ino(ino) {
            let ttl = if matches!(v, Virt::Link(_)) {
                self.policy.default.attr
            } else {
                VIRT_FILE_TTL
            };
            return reply.attr(ttl, &self.virt_attr(ino, v));
        }
        let db = self.tree.read();
        let Some(m) = ino.memdb().and_then(|m| self.tree.refs.live_ino(&db, m)) else {
            return reply.error(Errno::ENOENT);
        };
        let Some(e) = db.get(m) else {
            return reply.error(Errno::ENOENT);
        };
        let (mut attr, t) = self.attr_reply(&db, e);
        attr.ino = fuser::INodeNo(ino.0);
        reply.attr(t.attr, &attr);
    }

    /// SETATTR: chmod/chown only as no-ops, truncate, and mtime.
    pub fn setattr(&self, ino: FuseIno, req: SetAttr, reply: impl AttrReply) {
        if ino.memdb().is_none() {
            return reply.error(Errno::EACCES);
        }
        let (m, path) = {
            let db = self.tree.read();
            match ino
                .memdb()
                .and_then(|m| self.tree.refs.live_ino(&db, m))
                .and_then(|m| Some((m, db.path_of(m)?)))
            {
                Some(x) => x,
                None => return reply.error(Errno::ENOENT),
            }
        };
        // chmod/chown succeed only as no-ops with the values pmxcfs reports anyway.
        if let Some(mode) = req.mode {
            let want = if paths::is_private(&path) {
                0o600
            } else {
                0o640
            };
            if mode & 0o7777 != want {
                return reply.error(Errno::EPERM);
            }
        }
        if req.uid.is_some_and(|u| u != 0) || req.gid.is_some_and(|g| g != self.gid) {
            return reply.error(Errno::EPERM);
        }
        if let Some(size) = req.size {
            let max = self.tree.read().limits().max_file_size;
            let handle = req.fh.and_then(|fh| self.handles.get(fh));
            let writable = handle.as_ref().is_some_and(|h| h.lock().writable);
            let res = match handle {
                Some(h) if writable => {
                    let mut h = h.lock();
                    match h.ino {
                        Some(i) => self.handles.modify(i, &mut h, |h| h.truncate(size, max)),
                        None => Err(Errno::EBADF),
                    }
                }
                _ => self
                    .tree
                    .from_kernel(&Op::Write {
                        path: path.clone(),
                        offset: size,
                        data: Vec::new(),
                        truncate: true,
                    })
                    .map(|_| ()),
            };
            if let Err(e) = res {
                return reply.error(e);
            }
        }
        if let Some(t) = req.mtime {
            let op = Op::Mtime {
                path: path.clone(),
                mtime: secs_of(t, self.tree.clock.now()),
            };
            if let Err(e) = self.tree.from_kernel(&op) {
                return reply.error(e);
            }
        }
        let db = self.tree.read();
        match db.get(m) {
            Some(e) => {
                let (mut attr, t) = self.attr_reply(&db, e);
                attr.ino = fuser::INodeNo(ino.0);
                reply.attr(t.attr, &attr);
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    /// READLINK of the virtual node symlinks.
    pub fn readlink(&self, ino: FuseIno, reply: impl DataReply) {
        match vfiles::by_ino(ino) {
            Some((_, v @ Virt::Link(_))) => reply.data(self.tree.virtual_file(v).as_bytes()),
            _ => reply.error(Errno::EINVAL),
        }
    }

    /// MKDIR; acquiring a lock replies only after the kernel's caches of the paths the
    /// lock protects are invalidated, from the invalidation thread.
    pub fn mkdir<R: EntryReply + Send + 'static>(&self, parent: FuseIno, name: &OsStr, reply: R) {
        if self.is_virtual_name(parent, name) {
            return reply.error(Errno::EEXIST);
        }
        let path = match self.child_path(&self.tree.read(), parent, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let applied = match self.tree.from_kernel(&Op::Mkdir { path: path.clone() }) {
            Ok(a) => a,
            Err(e) => return reply.error(e),
        };
        let db = self.tree.read();
        let Ok(e) = db.resolve(&path) else {
            return reply.error(Errno::ENOENT);
        };
        let (attr, t) = self.attr_reply(&db, e);
        drop(db);
        self.remember(FuseIno(attr.ino.0));
        match (&applied.lock, self.tree.invalidator()) {
            (Some(LockEvent::Acquired(lock)), Some(inv)) => {
                // The barrier: the lock is not reported held until the kernel has
                // dropped what it cached about the paths the lock protects.
                for f in self.tree.protected_known(lock) {
                    inv.inode(f.0);
                }
                inv.epoch();
                inv.then(move || reply.entry(&attr, t));
            }
            _ => reply.entry(&attr, t),
        }
    }

    /// UNLINK and RMDIR.
    pub fn delete(&self, parent: FuseIno, name: &OsStr, reply: impl EmptyReply) {
        if self.is_virtual_name(parent, name) {
            return reply.error(Errno::EACCES);
        }
        let path = match self.child_path(&self.tree.read(), parent, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        match self.tree.from_kernel(&Op::Delete { path }) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    /// RENAME (RENAME2 flags are refused).
    pub fn rename(
        &self,
        parent: FuseIno,
        name: &OsStr,
        newparent: FuseIno,
        newname: &OsStr,
        flags: u32,
        reply: impl EmptyReply,
    ) {
        // Virtual entries belong to another "plug" in pmxcfs terms: EACCES.
        if self.is_virtual_name(parent, name) || self.is_virtual_name(newparent, newname) {
            return reply.error(Errno::EACCES);
        }
        if flags != 0 {
            return reply.error(Errno::EINVAL);
        }
        let (from, to) = {
            let db = self.tree.read();
            match (
                self.child_path(&db, parent, name),
                self.child_path(&db, newparent, newname),
            ) {
                (Ok(f), Ok(t)) => (f, t),
                (Err(e), _) | (_, Err(e)) => return reply.error(e),
            }
        };
        match self.tree.from_kernel(&Op::Rename { from, to }) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    /// OPEN with the kernel's open(2) flags.
    pub fn open(&self, ino: FuseIno, flags: i32, reply: impl OpenReply) {
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        match self.open_handle(ino, writable) {
            Ok(fh) => {
                if writable && flags & libc::O_TRUNC != 0 {
                    if let Some(h) = self.handles.get(fh) {
                        let mut h = h.lock();
                        if let Some(i) = h.ino {
                            self.handles.modify(i, &mut h, |h| h.buf = Some(Vec::new()));
                        }
                    }
                }
                // A read-only handle has nothing to commit at close: skip the FLUSH
                // round trip.
                let fl = if writable {
                    FopenFlags::FOPEN_DIRECT_IO
                } else {
                    FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NOFLUSH
                };
                reply.opened(fh, fl)
            }
            Err(e) => reply.error(e),
        }
    }

    /// READ from a handle's snapshot (or its uncommitted buffer).
    pub fn read(&self, fh: u64, offset: u64, size: u32, reply: impl DataReply) {
        let Some(h) = self.handles.get(fh) else {
            return reply.error(Errno::EBADF);
        };
        let h = h.lock();
        let c = h.content();
        let start = (offset as usize).min(c.len());
        let end = start.saturating_add(size as usize).min(c.len());
        reply.data(&c[start..end]);
    }

    /// WRITE into a handle's buffer; committed at flush, fsync or release.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8], reply: impl WriteReply) {
        let Some(h) = self.handles.get(fh) else {
            return reply.error(Errno::EBADF);
        };
        if !self.tree.status.quorate() {
            return reply.error(Errno::EACCES);
        }
        let mut h = h.lock();
        let Some(ino) = h.ino.filter(|_| h.writable) else {
            return reply.error(Errno::EBADF);
        };
        let (max, room) = {
            let db = self.tree.read();
            let l = db.limits();
            let committed = db.get(ino).map(|e| e.size()).unwrap_or(0);
            (
                l.max_file_size,
                (l.max_fs_size + committed).saturating_sub(db.bytes()),
            )
        };
        // Refuse at write() what the commit would refuse: programs rarely check
        // close(), so ENOSPC reported only there would be lost.
        let new_len = (h.content().len() as u64).max(offset + data.len() as u64);
        if new_len > room && new_len <= max {
            return reply.error(Errno::ENOSPC);
        }
        match self
            .handles
            .modify(ino, &mut h, |h| h.write(offset, data, max))
        {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(e),
        }
    }

    /// FLUSH and FSYNC: commit the handle's buffer.
    pub fn flush(&self, fh: u64, reply: impl EmptyReply) {
        match self.commit(fh) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    /// RELEASE: commit what is left and drop the handle.
    pub fn release(&self, fh: u64, reply: impl EmptyReply) {
        let res = self.commit(fh);
        if let Some(h) = self.drop_handle(fh) {
            let h = h.lock();
            if let (Err(e), Some(ino)) = (&res, h.ino) {
                tracing::warn!(%ino, "discarding unwritten data of a closed file: {e}");
                if h.dirty() {
                    self.handles.cleaned(ino);
                }
            }
        }
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    /// READDIR from entry number `offset` on.
    pub fn readdir(&self, ino: FuseIno, offset: u64, mut reply: impl DirReply) {
        let db = self.tree.read();
        let Some(m) = ino.memdb() else {
            return reply.error(Errno::ENOTDIR);
        };
        let Some(e) = db.get(m) else {
            return reply.error(Errno::ENOENT);
        };
        if !e.is_dir() {
            return reply.error(Errno::ENOTDIR);
        }
        let parent = if m == ROOT_INODE {
            ino
        } else {
            FuseIno::of(e.row.parent)
        };
        let mut list: Vec<(FuseIno, FileType, &str)> = vec![
            (ino, FileType::Directory, "."),
            (parent, FileType::Directory, ".."),
        ];
        if m == ROOT_INODE {
            for (name, v) in vfiles::ENTRIES {
                let (vino, _) = vfiles::by_name(name).expect("listed");
                let kind = match v {
                    Virt::Link(_) => FileType::Symlink,
                    _ => FileType::RegularFile,
                };
                list.push((vino, kind, name));
            }
        }
        for (name, child) in &e.children {
            if m == ROOT_INODE && vfiles::by_name(name).is_some() {
                continue;
            }
            let kind = match db.get(*child).map(|c| c.is_dir()) {
                Some(true) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            list.push((FuseIno::of(*child), kind, name));
        }
        for (i, (ino, kind, name)) in list.iter().enumerate().skip(offset as usize) {
            if reply.add(ino.0, (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.done();
    }

    /// STATFS: the limits as blocks and inodes.
    pub fn statfs(&self, reply: impl StatfsReply) {
        let db = self.tree.read();
        let l = db.limits();
        let blocks = l.max_fs_size.div_ceil(4096);
        let used = db.bytes().div_ceil(4096);
        let files = l.max_inodes as u64;
        reply.statfs(Statfs {
            blocks,
            bfree: blocks.saturating_sub(used),
            files,
            ffree: files.saturating_sub(db.entry_count() as u64),
            bsize: 4096,
            namelen: paths::NAME_MAX as u32,
        });
    }

    /// CREATE: a new empty file and a writable handle on it.
    pub fn create(&self, parent: FuseIno, name: &OsStr, reply: impl CreateReply) {
        if self.is_virtual_name(parent, name) {
            return reply.error(Errno::EEXIST);
        }
        let path = match self.child_path(&self.tree.read(), parent, name) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        if let Err(e) = self.tree.from_kernel(&Op::Create { path: path.clone() }) {
            return reply.error(e);
        }
        let db = self.tree.read();
        let Ok(e) = db.resolve(&path) else {
            return reply.error(Errno::ENOENT);
        };
        let (attr, t) = self.attr_reply(&db, e);
        let fh = self.add_handle(Handle {
            ino: Some(e.row.inode),
            snapshot: e.row.data.clone(),
            buf: None,
            writable: true,
        });
        drop(db);
        self.remember(FuseIno(attr.ino.0));
        reply.created(t.entry.min(t.attr), &attr, fh, FopenFlags::FOPEN_DIRECT_IO);
    }
}
