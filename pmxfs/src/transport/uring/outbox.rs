//! Replies on their way to a queue thread. A handler answers through a [`RingReply`];
//! the answer lands in the queue's [`Outbox`], which the queue thread drains into ring
//! entries and commits. Most answers are given on the queue thread itself; a lock
//! `mkdir` answers from the invalidation thread, which then wakes the queue thread
//! through the outbox's eventfd.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::Duration;

use fuser::{FileAttr, FileType, FopenFlags};
use nix::errno::Errno;
use parking_lot::Mutex;

use crate::coherence::Ttls;
use crate::fs::reply::{
    AttrReply, CreateReply, DataReply, DirReply, EmptyReply, EntryReply, Fail, OpenReply, Statfs,
    StatfsReply, WriteReply,
};

use super::abi;

/// One finished request: the reply for ring entry `slot`.
#[derive(Debug)]
pub struct Done {
    /// Ring entry index in its queue.
    pub slot: usize,
    /// The request's unique id (the commit id).
    pub unique: u64,
    /// 0 or a negative errno.
    pub error: i32,
    /// Reply payload.
    pub data: Vec<u8>,
}

/// A queue thread's finished requests.
pub struct Outbox {
    done: Mutex<Vec<Done>>,
    wake: OwnedFd,
    owner: ThreadId,
}

impl Outbox {
    /// An outbox drained by the calling thread.
    pub fn new() -> std::io::Result<Outbox> {
        // SAFETY: eventfd has no memory arguments; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Outbox {
            done: Mutex::new(Vec::new()),
            // SAFETY: fd was just created and is owned by nobody else.
            wake: unsafe { OwnedFd::from_raw_fd(fd) },
            owner: std::thread::current().id(),
        })
    }

    /// The eventfd written when a reply arrives from another thread.
    pub fn wake_fd(&self) -> i32 {
        self.wake.as_raw_fd()
    }

    fn push(&self, d: Done) {
        self.done.lock().push(d);
        if std::thread::current().id() != self.owner {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from a live stack buffer to our eventfd.
            let _ = unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), 8) };
        }
    }

    /// Take everything finished so far.
    pub fn drain(&self, into: &mut Vec<Done>) {
        into.append(&mut self.done.lock());
    }
}

/// The reply sink for one ring request; it may be answered from any thread.
pub struct RingReply {
    box_: Arc<Outbox>,
    slot: usize,
    unique: u64,
}

impl RingReply {
    /// A sink for request `unique` held in entry `slot`.
    pub fn new(box_: Arc<Outbox>, slot: usize, unique: u64) -> RingReply {
        RingReply { box_, slot, unique }
    }

    fn send(self, error: i32, data: Vec<u8>) {
        self.box_.push(Done {
            slot: self.slot,
            unique: self.unique,
            error,
            data,
        });
    }

    fn data_of(self, f: impl FnOnce(&mut Vec<u8>)) {
        let mut d = Vec::with_capacity(128);
        f(&mut d);
        self.send(0, d);
    }
}

impl Fail for RingReply {
    fn error(self, e: Errno) {
        self.send(-(e as i32), Vec::new());
    }
}

impl EntryReply for RingReply {
    fn entry(self, attr: &FileAttr, t: Ttls) {
        self.data_of(|d| abi::entry_out(d, attr, t.entry, t.attr));
    }
}

impl AttrReply for RingReply {
    fn attr(self, ttl: Duration, attr: &FileAttr) {
        self.data_of(|d| abi::attr_out(d, attr, ttl));
    }
}

impl EmptyReply for RingReply {
    fn ok(self) {
        self.send(0, Vec::new());
    }
}

impl DataReply for RingReply {
    fn data(self, d: &[u8]) {
        self.send(0, d.to_vec());
    }
}

impl OpenReply for RingReply {
    fn opened(self, fh: u64, flags: FopenFlags) {
        self.data_of(|d| abi::open_out(d, fh, flags.bits()));
    }
}

impl WriteReply for RingReply {
    fn written(self, n: u32) {
        self.data_of(|d| d.extend_from_slice(&u64::from(n).to_le_bytes()));
    }
}

impl CreateReply for RingReply {
    fn created(self, ttl: Duration, attr: &FileAttr, fh: u64, flags: FopenFlags) {
        self.data_of(|d| {
            abi::entry_out(d, attr, ttl, ttl);
            abi::open_out(d, fh, flags.bits());
        });
    }
}

impl StatfsReply for RingReply {
    fn statfs(self, s: Statfs) {
        self.data_of(|d| {
            for v in [s.blocks, s.bfree, s.bfree, s.files, s.ffree] {
                d.extend_from_slice(&v.to_le_bytes());
            }
            for v in [s.bsize, s.namelen, s.bsize, 0] {
                d.extend_from_slice(&v.to_le_bytes());
            }
            d.extend_from_slice(&[0u8; 24]);
        });
    }
}

/// READDIR reply: dirents up to the size the kernel asked for.
pub struct RingDir {
    reply: RingReply,
    buf: Vec<u8>,
    max: usize,
}

impl RingDir {
    /// At most `max` bytes of entries.
    pub fn new(reply: RingReply, max: usize) -> RingDir {
        RingDir {
            reply,
            buf: Vec::with_capacity(max.min(64 * 1024)),
            max,
        }
    }
}

impl Fail for RingDir {
    fn error(self, e: Errno) {
        self.reply.error(e);
    }
}

impl DirReply for RingDir {
    fn add(&mut self, ino: u64, next_offset: u64, kind: FileType, name: &str) -> bool {
        !abi::dirent(
            &mut self.buf,
            self.max,
            ino,
            next_offset,
            abi::dirent_type(kind),
            name.as_bytes(),
        )
    }
    fn done(self) {
        self.reply.send(0, self.buf);
    }
}
