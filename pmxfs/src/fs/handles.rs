//! Open file handles. Writes are coalesced in the handle and committed as one operation
//! on flush, fsync or release, so `dd bs=512` of a 500 KiB file costs one transaction
//! instead of a thousand whole-file rewrites. Readers get close-to-open consistency: a
//! handle reads the content committed when it was opened (or its own buffer).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use memdb::Inode;
use nix::errno::Errno;
use parking_lot::Mutex;

/// One open file.
#[derive(Debug)]
pub struct Handle {
    /// memdb inode (`None` for a virtual file).
    pub ino: Option<Inode>,
    /// Content at open time (or at the last commit through this handle).
    pub snapshot: Arc<Vec<u8>>,
    /// Uncommitted content, present once the handle has written.
    pub buf: Option<Vec<u8>>,
    /// Opened for writing.
    pub writable: bool,
}

impl Handle {
    /// The content this handle reads.
    pub fn content(&self) -> &[u8] {
        match &self.buf {
            Some(b) => b,
            None => &self.snapshot,
        }
    }

    /// Write `data` at `offset` into the buffer, refusing to grow past `max`.
    pub fn write(&mut self, offset: u64, data: &[u8], max: u64) -> Result<usize, Errno> {
        let end = offset.checked_add(data.len() as u64).ok_or(Errno::EFBIG)?;
        if end > max {
            return Err(Errno::EFBIG);
        }
        let buf = self.buf.get_or_insert_with(|| self.snapshot.to_vec());
        let (off, end) = (offset as usize, end as usize);
        if buf.len() < end {
            buf.resize(end, 0);
        }
        buf[off..end].copy_from_slice(data);
        Ok(data.len())
    }

    /// Cut or zero-extend the buffer to `size`.
    pub fn truncate(&mut self, size: u64, max: u64) -> Result<(), Errno> {
        if size > max {
            return Err(Errno::EFBIG);
        }
        let buf = self.buf.get_or_insert_with(|| self.snapshot.to_vec());
        buf.resize(size as usize, 0);
        Ok(())
    }

    /// Whether there is something to commit.
    pub fn dirty(&self) -> bool {
        self.buf.is_some()
    }
}

/// Uncommitted writes to one inode.
#[derive(Debug, Clone, Copy)]
struct Dirty {
    /// Dirty handles.
    handles: u32,
    /// Content length after the latest write through any of them.
    len: u64,
}

/// The handle table.
#[derive(Debug, Default)]
pub struct Handles {
    map: Mutex<HashMap<u64, Arc<Mutex<Handle>>>>,
    next: AtomicU64,
    /// memdb inodes with uncommitted writes. Their attributes are answered uncacheable
    /// (the mtime goes stale at the commit, and a local commit sends no invalidation)
    /// and with the size last written, as pmxcfs, which commits every write at once,
    /// would show: the kernel takes i_size from a GETATTR reply, and O_APPEND writes
    /// position themselves by it. A leaf lock: nothing else is taken while it is held.
    dirty: Mutex<HashMap<Inode, Dirty>>,
}

impl Handles {
    /// Register a handle and return its number.
    pub fn insert(&self, h: Handle) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.map.lock().insert(fh, Arc::new(Mutex::new(h)));
        fh
    }

    /// Handle `fh`.
    pub fn get(&self, fh: u64) -> Option<Arc<Mutex<Handle>>> {
        self.map.lock().get(&fh).cloned()
    }

    /// Remove handle `fh`.
    pub fn remove(&self, fh: u64) -> Option<Arc<Mutex<Handle>>> {
        self.map.lock().remove(&fh)
    }

    /// Run `f` on handle `h` of inode `ino`, recording when it makes the handle dirty.
    /// Callers hold no db lock; the mark is set before the caller replies.
    pub fn modify<R>(&self, ino: Inode, h: &mut Handle, f: impl FnOnce(&mut Handle) -> R) -> R {
        let was = h.dirty();
        let r = f(h);
        if h.dirty() {
            let len = h.content().len() as u64;
            let mut d = self.dirty.lock();
            let e = d.entry(ino).or_insert(Dirty { handles: 0, len });
            e.len = len;
            if !was {
                e.handles += 1;
            }
        }
        r
    }

    /// Handle `h` of inode `ino` is clean again (committed or discarded): call only
    /// after the commit is visible in the db, so an attribute reply that reads the
    /// inode clean also reads the committed state.
    pub fn cleaned(&self, ino: Inode) {
        let mut d = self.dirty.lock();
        if let Some(e) = d.get_mut(&ino) {
            e.handles -= 1;
            if e.handles == 0 {
                d.remove(&ino);
            }
        }
    }

    /// Size of memdb inode `ino` after its latest uncommitted write, if any.
    pub fn pending_len(&self, ino: Inode) -> Option<u64> {
        self.dirty.lock().get(&ino).map(|e| e.len)
    }

    /// Number of open handles.
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// Whether no handle is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
