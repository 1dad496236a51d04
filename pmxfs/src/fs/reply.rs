//! Reply sinks: what a handler in `ops` answers, independent of the transport that
//! carries the answer back to the kernel. fuser's reply objects implement them for the
//! `/dev/fuse` transport; `uring::reply` implements them for FUSE over io_uring.

use std::time::Duration;

use fuser::{FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo};
use nix::errno::Errno;

use crate::coherence::Ttls;

/// Every reply can be an error.
pub trait Fail {
    /// Answer with `-e`.
    fn error(self, e: Errno);
}

/// Answer to LOOKUP and MKDIR.
pub trait EntryReply: Fail {
    /// A positive entry with its own entry and attribute timeouts.
    fn entry(self, attr: &FileAttr, t: Ttls);
}

/// Answer to GETATTR and SETATTR.
pub trait AttrReply: Fail {
    /// Attributes valid for `ttl`.
    fn attr(self, ttl: Duration, attr: &FileAttr);
}

/// Answer carrying nothing but success.
pub trait EmptyReply: Fail {
    /// Success.
    fn ok(self);
}

/// Answer carrying bytes (READ, READLINK).
pub trait DataReply: Fail {
    /// The bytes.
    fn data(self, d: &[u8]);
}

/// Answer to OPEN and OPENDIR.
pub trait OpenReply: Fail {
    /// A handle and its open flags.
    fn opened(self, fh: u64, flags: FopenFlags);
}

/// Answer to WRITE.
pub trait WriteReply: Fail {
    /// Bytes accepted.
    fn written(self, n: u32);
}

/// Answer to CREATE.
pub trait CreateReply: Fail {
    /// The new entry (one timeout for both) and its open handle.
    fn created(self, ttl: Duration, attr: &FileAttr, fh: u64, flags: FopenFlags);
}

/// Figures for STATFS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statfs {
    /// Total 4 KiB blocks.
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Inodes in total.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
    /// Block size.
    pub bsize: u32,
    /// Longest name.
    pub namelen: u32,
}

/// Answer to STATFS.
pub trait StatfsReply: Fail {
    /// The figures.
    fn statfs(self, s: Statfs);
}

/// Answer to READDIR: entries until the buffer is full, then `done`.
pub trait DirReply: Fail {
    /// Add one entry; true when it did not fit (stop adding).
    fn add(&mut self, ino: u64, next_offset: u64, kind: FileType, name: &str) -> bool;
    /// Send what was added.
    fn done(self);
}

fn fe(e: Errno) -> fuser::Errno {
    fuser::Errno::from_i32(e as i32)
}

macro_rules! fuser_fail {
    ($($t:ty),*) => {$(
        impl Fail for $t {
            fn error(self, e: Errno) {
                <$t>::error(self, fe(e))
            }
        }
    )*};
}
fuser_fail!(
    fuser::ReplyEntry,
    fuser::ReplyAttr,
    fuser::ReplyEmpty,
    fuser::ReplyData,
    fuser::ReplyOpen,
    fuser::ReplyWrite,
    fuser::ReplyCreate,
    fuser::ReplyStatfs,
    fuser::ReplyDirectory
);

impl EntryReply for fuser::ReplyEntry {
    fn entry(self, attr: &FileAttr, t: Ttls) {
        self.entry_with_ttls(&t.attr, &t.entry, attr, Generation(0));
    }
}

impl AttrReply for fuser::ReplyAttr {
    fn attr(self, ttl: Duration, attr: &FileAttr) {
        fuser::ReplyAttr::attr(self, &ttl, attr);
    }
}

impl EmptyReply for fuser::ReplyEmpty {
    fn ok(self) {
        fuser::ReplyEmpty::ok(self);
    }
}

impl DataReply for fuser::ReplyData {
    fn data(self, d: &[u8]) {
        fuser::ReplyData::data(self, d);
    }
}

impl OpenReply for fuser::ReplyOpen {
    fn opened(self, fh: u64, flags: FopenFlags) {
        fuser::ReplyOpen::opened(self, FileHandle(fh), flags);
    }
}

impl WriteReply for fuser::ReplyWrite {
    fn written(self, n: u32) {
        fuser::ReplyWrite::written(self, n);
    }
}

impl CreateReply for fuser::ReplyCreate {
    fn created(self, ttl: Duration, attr: &FileAttr, fh: u64, flags: FopenFlags) {
        fuser::ReplyCreate::created(self, &ttl, attr, Generation(0), FileHandle(fh), flags);
    }
}

impl StatfsReply for fuser::ReplyStatfs {
    fn statfs(self, s: Statfs) {
        fuser::ReplyStatfs::statfs(
            self, s.blocks, s.bfree, s.bfree, s.files, s.ffree, s.bsize, s.namelen, s.bsize,
        );
    }
}

impl DirReply for fuser::ReplyDirectory {
    fn add(&mut self, ino: u64, next_offset: u64, kind: FileType, name: &str) -> bool {
        fuser::ReplyDirectory::add(self, INodeNo(ino), next_offset, kind, name)
    }
    fn done(self) {
        fuser::ReplyDirectory::ok(self);
    }
}
