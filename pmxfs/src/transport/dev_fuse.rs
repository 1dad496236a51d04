//! fuser's `/dev/fuse` loop in front of the handlers in `ops`. It also answers INIT,
//! where FUSE over io_uring is negotiated (the `uring` transport then takes over every
//! request but FORGET and INTERRUPT, which the kernel keeps sending here).

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    Errno as FErrno, FileHandle, Filesystem, INodeNo, InitFlags, KernelConfig, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::uring::Negotiation;
use crate::fs::ops::{refused, SetAttr};
use crate::fs::PmxFs;
use crate::tree::FuseIno;

/// Largest WRITE the kernel sends: a whole file (1 MiB is pmxcfs's file size limit). It
/// also sizes each io_uring payload buffer.
pub const MAX_WRITE: u32 = 1 << 20;

fn fe(e: nix::errno::Errno) -> FErrno {
    FErrno::from_i32(e as i32)
}

/// The handlers, as fuser's [`Filesystem`].
pub struct FuserFs {
    fs: Arc<PmxFs>,
    uring: Arc<Negotiation>,
}

impl FuserFs {
    /// fuser front end for `fs`; INIT asks for io_uring when `uring` wants it.
    pub fn new(fs: Arc<PmxFs>, uring: Arc<Negotiation>) -> FuserFs {
        FuserFs { fs, uring }
    }
}

impl Filesystem for FuserFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // O_TRUNC then arrives with OPEN instead of as a separate path truncate, so the
        // truncation joins the handle's single commit.
        if let Err(missing) = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC) {
            tracing::warn!(?missing, "kernel lacks FUSE_ATOMIC_O_TRUNC");
        }
        if let Err(nearest) = config.set_max_write(MAX_WRITE) {
            tracing::warn!(nearest, "kernel refused max_write");
        }
        let offered = config
            .capabilities()
            .contains(InitFlags::FUSE_OVER_IO_URING);
        let take = self.uring.wanted() && offered;
        if take
            && config
                .add_capabilities(InitFlags::FUSE_OVER_IO_URING)
                .is_err()
        {
            self.uring.settle(false, offered);
        } else {
            self.uring.settle(take, offered);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.fs.lookup(FuseIno(parent.0), name, reply);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(FuseIno(ino.0), nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.fs.getattr(FuseIno(ino.0), reply);
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
        let req = SetAttr {
            mode,
            uid,
            gid,
            size,
            mtime,
            fh: fh.map(|f| f.0),
        };
        self.fs.setattr(FuseIno(ino.0), req, reply);
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.fs.readlink(FuseIno(ino.0), reply);
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
        reply.error(fe(refused::MKNOD));
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
        self.fs.mkdir(FuseIno(parent.0), name, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.fs.delete(FuseIno(parent.0), name, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.fs.delete(FuseIno(parent.0), name, reply);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        reply.error(fe(refused::SYMLINK));
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
        self.fs.rename(
            FuseIno(parent.0),
            name,
            FuseIno(newparent.0),
            newname,
            flags.bits(),
            reply,
        );
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(fe(refused::LINK));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.fs.open(FuseIno(ino.0), flags.0, reply);
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
        self.fs.read(fh.0, offset, size, reply);
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
        self.fs.write(fh.0, offset, data, reply);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.fs.flush(fh.0, reply);
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
        self.fs.release(fh.0, reply);
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _d: bool, reply: ReplyEmpty) {
        self.fs.flush(fh.0, reply);
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
        reply.error(fe(refused::IOCTL));
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        self.fs.readdir(FuseIno(ino.0), offset, reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.fs.statfs(reply);
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
        reply.error(fe(refused::XATTR));
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(fe(refused::XATTR));
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(fe(refused::XATTR));
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(fe(refused::XATTR));
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
        self.fs.create(FuseIno(parent.0), name, reply);
    }
}
