//! `fuser::Filesystem` for pmxfs: each handler resolves names, builds an [`Op`] or reads
//! the tree, and replies. Handlers never send kernel notifications themselves; a lock
//! `mkdir` hands its reply to the invalidation thread instead (see `notify`).

use std::ffi::OsStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno as FErrno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use nix::errno::Errno;

use crate::coherence::Ttls;
use crate::memdb::{paths, store::now_secs, LockEvent, MemDb, Op, ROOT_INODE};
use crate::vfiles::{self, Virt};

use super::handles::Handle;
use super::{attrs, fuse_ino, memdb_ino, Shared};

/// The filesystem object handed to fuser.
pub struct PmxFs {
    sh: Arc<Shared>,
}

impl PmxFs {
    /// A filesystem over `shared`.
    pub fn new(sh: Arc<Shared>) -> PmxFs {
        PmxFs { sh }
    }
}

fn fe(e: Errno) -> FErrno {
    FErrno::from_i32(e as i32)
}

fn name_str(name: &OsStr) -> Result<&str, Errno> {
    name.to_str().ok_or(Errno::EINVAL)
}

/// Virtual file attributes are never cached: their content changes on its own.
const VIRT_FILE_TTL: Duration = Duration::ZERO;

impl PmxFs {
    fn virt_attr(&self, fuse: u64, v: Virt) -> FileAttr {
        let db = self.sh.db.read();
        let content = vfiles::content(v, &self.sh.status, &db);
        let quorate = self.sh.status.quorate();
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
            self.sh.status.start_time as u32,
            self.sh.gid,
        )
    }

    /// Path of a child `name` of FUSE directory `parent`.
    fn child_path(&self, db: &MemDb, parent: u64, name: &OsStr) -> Result<String, Errno> {
        let name = name_str(name)?;
        paths::check_name(name)?;
        let pino = memdb_ino(parent).ok_or(Errno::ENOTDIR)?;
        let pe = db.get(pino).ok_or(Errno::ENOENT)?;
        if !pe.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        let dir = db.path_of(pino).ok_or(Errno::ENOENT)?;
        Ok(paths::join(&dir, name))
    }

    /// Reply with the entry for memdb inode `ino` and count the kernel's reference.
    fn reply_entry(&self, db: &MemDb, ino: u64, reply: ReplyEntry) {
        let Some(e) = db.get(ino) else {
            return reply.error(FErrno::ENOENT);
        };
        let (attr, t) = self.sh.attr_reply(db, e);
        self.sh.remember(attr.ino.0);
        reply.entry_with_ttls(&t.attr, &t.entry, &attr, Generation(0));
    }

    fn is_virtual_name(&self, parent: u64, name: &OsStr) -> bool {
        parent == fuse_ino(ROOT_INODE) && name.to_str().and_then(vfiles::by_name).is_some()
    }

    /// Commit a handle's buffer; the kernel is told its cached attributes are stale
    /// because the commit set a new mtime behind its back.
    fn commit(&self, fh: u64) -> Result<(), Errno> {
        let Some(h) = self.sh.handles.get(fh) else {
            return Ok(());
        };
        let mut h = h.lock();
        let (Some(ino), Some(buf)) = (h.ino, h.buf.as_ref()) else {
            return Ok(());
        };
        let path = self.sh.db.read().path_of(ino).ok_or(Errno::ENOENT)?;
        let op = Op::Write {
            path,
            offset: 0,
            data: buf.clone(),
            truncate: true,
        };
        self.sh.apply_local(&op)?;
        let data = h.buf.take().unwrap_or_default();
        h.snapshot = Arc::new(data);
        // No invalidation: the kernel dropped its size and mtime at each WRITE (and at an
        // O_TRUNC open), and attributes read while the handle was dirty were not cached.
        self.sh.handles.cleaned(ino);
        Ok(())
    }

    fn open_handle(&self, ino: u64, writable: bool) -> Result<u64, Errno> {
        if let Some((_, v)) = vfiles::by_ino(ino) {
            if writable {
                return Err(Errno::EACCES);
            }
            if matches!(v, Virt::Link(_)) {
                return Err(Errno::ELOOP);
            }
            let db = self.sh.db.read();
            let content = vfiles::content(v, &self.sh.status, &db).into_bytes();
            return Ok(self.sh.handles.insert(Handle {
                ino: None,
                snapshot: Arc::new(content),
                buf: None,
                writable: false,
            }));
        }
        if writable && !self.sh.status.quorate() {
            return Err(Errno::EACCES);
        }
        let db = self.sh.db.read();
        let m = memdb_ino(ino)
            .and_then(|m| self.sh.live_ino(&db, m))
            .ok_or(Errno::ENOENT)?;
        let e = db.get(m).ok_or(Errno::ENOENT)?;
        if e.is_dir() {
            return Err(Errno::EISDIR);
        }
        Ok(self.sh.handles.insert(Handle {
            ino: Some(m),
            snapshot: e.row.data.clone(),
            buf: None,
            writable,
        }))
    }

    fn do_mkdir(&self, parent: u64, name: &OsStr, reply: ReplyEntry) {
        if self.is_virtual_name(parent, name) {
            return reply.error(FErrno::EEXIST);
        }
        let path = match self.child_path(&self.sh.db.read(), parent, name) {
            Ok(p) => p,
            Err(e) => return reply.error(fe(e)),
        };
        let applied = match self.sh.apply_local(&Op::Mkdir { path: path.clone() }) {
            Ok(a) => a,
            Err(e) => return reply.error(fe(e)),
        };
        let db = self.sh.db.read();
        let Ok(e) = db.resolve(&path) else {
            return reply.error(FErrno::ENOENT);
        };
        let (attr, t) = self.sh.attr_reply(&db, e);
        drop(db);
        self.sh.remember(attr.ino.0);
        match (&applied.lock, self.sh.invalidator()) {
            (Some(LockEvent::Acquired(lock)), Some(inv)) => {
                // The barrier: the lock is not reported held until the kernel has
                // dropped what it cached about the paths the lock protects.
                for f in self.sh.protected_known(lock) {
                    inv.inode(f);
                }
                inv.epoch();
                inv.then(move || reply.entry_with_ttls(&t.attr, &t.entry, &attr, Generation(0)));
            }
            _ => reply.entry_with_ttls(&t.attr, &t.entry, &attr, Generation(0)),
        }
    }

    fn do_delete(&self, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        if self.is_virtual_name(parent, name) {
            return reply.error(FErrno::EACCES);
        }
        let path = match self.child_path(&self.sh.db.read(), parent, name) {
            Ok(p) => p,
            Err(e) => return reply.error(fe(e)),
        };
        match self.sh.apply_local(&Op::Delete { path }) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(fe(e)),
        }
    }
}

fn secs_of(t: TimeOrNow) -> u32 {
    match t {
        TimeOrNow::Now => now_secs(),
        TimeOrNow::SpecificTime(t) => t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs().min(u32::MAX as u64) as u32)
            .unwrap_or(0),
    }
}

impl Filesystem for PmxFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // O_TRUNC then arrives with OPEN instead of as a separate path truncate, so the
        // truncation joins the handle's single commit.
        if let Err(missing) = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC) {
            tracing::warn!(?missing, "kernel lacks FUSE_ATOMIC_O_TRUNC");
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.sh.lookups.fetch_add(1, Ordering::Relaxed);
        if parent.0 == fuse_ino(ROOT_INODE) {
            if let Some((ino, v)) = name.to_str().and_then(vfiles::by_name) {
                let attr = self.virt_attr(ino, v);
                let ttl = match v {
                    Virt::Link(_) => self.sh.policy.default,
                    _ => Ttls {
                        entry: self.sh.policy.default.entry,
                        attr: VIRT_FILE_TTL,
                    },
                };
                return reply.entry_with_ttls(&ttl.attr, &ttl.entry, &attr, Generation(0));
            }
        }
        let db = self.sh.db.read();
        let Some(pino) = memdb_ino(parent.0) else {
            return reply.error(FErrno::ENOTDIR);
        };
        let Some(name) = name.to_str() else {
            return reply.error(FErrno::ENOENT);
        };
        let Some(e) = db.lookup(pino, name) else {
            return reply.error(FErrno::ENOENT);
        };
        // An expired lock is gone as far as the kernel is concerned, so the next
        // mkdir reaches us and takes it over.
        if db.is_expired_lock(e.row.inode, now_secs()) {
            return reply.error(FErrno::ENOENT);
        }
        let ino = e.row.inode;
        self.reply_entry(&db, ino, reply);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.sh.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.sh.getattrs.fetch_add(1, Ordering::Relaxed);
        if let Some((_, v)) = vfiles::by_ino(ino.0) {
            let ttl = if matches!(v, Virt::Link(_)) {
                self.sh.policy.default.attr
            } else {
                VIRT_FILE_TTL
            };
            return reply.attr(&ttl, &self.virt_attr(ino.0, v));
        }
        let db = self.sh.db.read();
        let Some(m) = memdb_ino(ino.0).and_then(|m| self.sh.live_ino(&db, m)) else {
            return reply.error(FErrno::ENOENT);
        };
        let Some(e) = db.get(m) else {
            return reply.error(FErrno::ENOENT);
        };
        let (mut attr, t) = self.sh.attr_reply(&db, e);
        attr.ino = ino;
        reply.attr(&t.attr, &attr);
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if memdb_ino(ino.0).is_none() {
            return reply.error(FErrno::EACCES);
        }
        let (m, path) = {
            let db = self.sh.db.read();
            match memdb_ino(ino.0)
                .and_then(|m| self.sh.live_ino(&db, m))
                .and_then(|m| Some((m, db.path_of(m)?)))
            {
                Some(x) => x,
                None => return reply.error(FErrno::ENOENT),
            }
        };
        // chmod/chown succeed only as no-ops with the values pmxcfs reports anyway.
        if let Some(mode) = mode {
            let want = if paths::is_private(&path) {
                0o600
            } else {
                0o640
            };
            if mode & 0o7777 != want {
                return reply.error(FErrno::EPERM);
            }
        }
        if uid.is_some_and(|u| u != 0) || gid.is_some_and(|g| g != self.sh.gid) {
            return reply.error(FErrno::EPERM);
        }
        if let Some(size) = size {
            let max = self.sh.db.read().limits().max_file_size;
            let handle = fh.and_then(|fh| self.sh.handles.get(fh.0));
            let writable = handle.as_ref().is_some_and(|h| h.lock().writable);
            let res = match handle {
                Some(h) if writable => {
                    let mut h = h.lock();
                    match h.ino {
                        Some(i) => self.sh.handles.modify(i, &mut h, |h| h.truncate(size, max)),
                        None => Err(Errno::EBADF),
                    }
                }
                _ => self
                    .sh
                    .apply_local(&Op::Write {
                        path: path.clone(),
                        offset: size,
                        data: Vec::new(),
                        truncate: true,
                    })
                    .map(|_| ()),
            };
            if let Err(e) = res {
                return reply.error(fe(e));
            }
        }
        if let Some(t) = mtime {
            let op = Op::Mtime {
                path: path.clone(),
                mtime: secs_of(t),
            };
            if let Err(e) = self.sh.apply_local(&op) {
                return reply.error(fe(e));
            }
        }
        let db = self.sh.db.read();
        match db.get(m) {
            Some(e) => {
                let (mut attr, t) = self.sh.attr_reply(&db, e);
                attr.ino = ino;
                reply.attr(&t.attr, &attr);
            }
            None => reply.error(FErrno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match vfiles::by_ino(ino.0) {
            Some((_, v @ Virt::Link(_))) => {
                let db = self.sh.db.read();
                reply.data(vfiles::content(v, &self.sh.status, &db).as_bytes());
            }
            _ => reply.error(FErrno::EINVAL),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(FErrno::ENOSYS);
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        self.do_mkdir(parent.0, name, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.do_delete(parent.0, name, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.do_delete(parent.0, name, reply);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        reply.error(FErrno::ENOSYS);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        // Virtual entries belong to another "plug" in pmxcfs terms: EACCES.
        if self.is_virtual_name(parent.0, name) || self.is_virtual_name(newparent.0, newname) {
            return reply.error(FErrno::EACCES);
        }
        if flags.bits() != 0 {
            return reply.error(FErrno::EINVAL);
        }
        let (from, to) = {
            let db = self.sh.db.read();
            match (
                self.child_path(&db, parent.0, name),
                self.child_path(&db, newparent.0, newname),
            ) {
                (Ok(f), Ok(t)) => (f, t),
                (Err(e), _) | (_, Err(e)) => return reply.error(fe(e)),
            }
        };
        match self.sh.apply_local(&Op::Rename { from, to }) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(fe(e)),
        }
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(FErrno::EPERM);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let writable = flags.acc_mode() != OpenAccMode::O_RDONLY;
        match self.open_handle(ino.0, writable) {
            Ok(fh) => {
                if writable && flags.0 & libc::O_TRUNC != 0 {
                    if let Some(h) = self.sh.handles.get(fh) {
                        let mut h = h.lock();
                        if let Some(i) = h.ino {
                            self.sh
                                .handles
                                .modify(i, &mut h, |h| h.buf = Some(Vec::new()));
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
                reply.opened(FileHandle(fh), fl)
            }
            Err(e) => reply.error(fe(e)),
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
        let Some(h) = self.sh.handles.get(fh.0) else {
            return reply.error(FErrno::EBADF);
        };
        let h = h.lock();
        let c = h.content();
        let start = (offset as usize).min(c.len());
        let end = start.saturating_add(size as usize).min(c.len());
        reply.data(&c[start..end]);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let Some(h) = self.sh.handles.get(fh.0) else {
            return reply.error(FErrno::EBADF);
        };
        if !self.sh.status.quorate() {
            return reply.error(FErrno::EACCES);
        }
        let mut h = h.lock();
        let Some(ino) = h.ino.filter(|_| h.writable) else {
            return reply.error(FErrno::EBADF);
        };
        let (max, room) = {
            let db = self.sh.db.read();
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
            return reply.error(FErrno::ENOSPC);
        }
        match self
            .sh
            .handles
            .modify(ino, &mut h, |h| h.write(offset, data, max))
        {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(fe(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        match self.commit(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(fe(e)),
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
        let res = self.commit(fh.0);
        if let Some(h) = self.sh.handles.remove(fh.0) {
            let h = h.lock();
            if let (Err(e), Some(ino)) = (&res, h.ino) {
                tracing::warn!(ino, "discarding unwritten data of a closed file: {e}");
                if h.dirty() {
                    self.sh.handles.cleaned(ino);
                }
            }
        }
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(fe(e)),
        }
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _d: bool, reply: ReplyEmpty) {
        match self.commit(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(fe(e)),
        }
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        // Programs probe files with TCGETS; answer like any regular file would.
        reply.error(FErrno::ENOTTY);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let db = self.sh.db.read();
        let Some(m) = memdb_ino(ino.0) else {
            return reply.error(FErrno::ENOTDIR);
        };
        let Some(e) = db.get(m) else {
            return reply.error(FErrno::ENOENT);
        };
        if !e.is_dir() {
            return reply.error(FErrno::ENOTDIR);
        }
        let parent = if m == ROOT_INODE {
            ino.0
        } else {
            fuse_ino(e.row.parent)
        };
        let mut list: Vec<(u64, FileType, &str)> = vec![
            (ino.0, FileType::Directory, "."),
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
            list.push((fuse_ino(*child), kind, name));
        }
        for (i, (ino, kind, name)) in list.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let db = self.sh.db.read();
        let l = db.limits();
        let blocks = l.max_fs_size.div_ceil(4096);
        let used = db.bytes().div_ceil(4096);
        let files = l.max_inodes as u64;
        let ffree = files.saturating_sub(db.entry_count() as u64);
        reply.statfs(
            blocks,
            blocks.saturating_sub(used),
            blocks.saturating_sub(used),
            files,
            ffree,
            4096,
            paths::NAME_MAX as u32,
            4096,
        );
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(FErrno::ENOTSUP);
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(FErrno::ENOTSUP);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(FErrno::ENOTSUP);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(FErrno::ENOTSUP);
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        if self.is_virtual_name(parent.0, name) {
            return reply.error(FErrno::EEXIST);
        }
        let path = match self.child_path(&self.sh.db.read(), parent.0, name) {
            Ok(p) => p,
            Err(e) => return reply.error(fe(e)),
        };
        if let Err(e) = self.sh.apply_local(&Op::Create { path: path.clone() }) {
            return reply.error(fe(e));
        }
        let db = self.sh.db.read();
        let Ok(e) = db.resolve(&path) else {
            return reply.error(FErrno::ENOENT);
        };
        let (attr, t) = self.sh.attr_reply(&db, e);
        let fh = self.sh.handles.insert(Handle {
            ino: Some(e.row.inode),
            snapshot: e.row.data.clone(),
            buf: None,
            writable: true,
        });
        drop(db);
        self.sh.remember(attr.ino.0);
        reply.created(
            &t.entry.min(t.attr),
            &attr,
            Generation(0),
            FileHandle(fh),
            FopenFlags::FOPEN_DIRECT_IO,
        );
    }
}
