//! Kernel cache invalidation, sent from dedicated threads and never from a request
//! handler.
//!
//! Two queues, because the two notifications block differently:
//! - attribute invalidation (`inval_inode` with offset -1) and the dentry epoch bump
//!   (`FUSE_NOTIFY_INC_EPOCH`) only take spinlocks in the kernel, so they always finish;
//!   this queue also runs deferred replies ("reply to this lock mkdir once everything
//!   queued before it reached the kernel"), which is the lock-acquisition barrier;
//! - entry invalidation (`inval_entry`) takes the parent directory's `i_rwsem` and waits
//!   for every request in flight in that directory. It runs on its own thread, and no
//!   request handler ever waits for that thread, so it cannot close a wait cycle.
//!
//! The barrier does not need the entry queue: the epoch bump it sends makes every cached
//! dentry revalidate with a LOOKUP, which subsumes all pending entry invalidations.
//!
//! Both queues are bounded. The attribute thread never waits for a request, so a
//! sender that finds its queue full waits for room. The entry thread may wait for
//! requests in flight, and the cluster thread that feeds it is what those requests
//! wait for, so a sender never waits for room there: when the queue is full it queues
//! an epoch bump instead, which has the kernel revalidate every name.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use fuser::{INodeNo, Notifier};

/// `FUSE_NOTIFY_INC_EPOCH` (Linux 6.16+): invalidate every cached dentry at once.
const FUSE_NOTIFY_INC_EPOCH: i32 = 8;

/// Attribute jobs (inode invalidations, epoch bumps, deferred replies) queued at most.
pub const ATTR_QUEUE: usize = 65_536;

/// Entry invalidations queued at most; beyond it an epoch bump stands in for them.
pub const ENTRY_QUEUE: usize = 16_384;

enum AttrJob {
    Inode(u64),
    Epoch,
    Then(Box<dyn FnOnce() + Send>),
}

/// Counters for tests and `status`.
#[derive(Debug, Default)]
pub struct NotifyStats {
    /// `inval_inode` calls made.
    pub inodes: AtomicU64,
    /// `inval_entry` calls made.
    pub entries: AtomicU64,
    /// Epoch bumps sent.
    pub epochs: AtomicU64,
    /// Barriers and deferred jobs run.
    pub barriers: AtomicU64,
    /// Entry invalidations replaced by an epoch bump because their queue was full.
    pub entry_overflows: AtomicU64,
}

/// Handle to the invalidation threads; cheap to clone.
#[derive(Clone)]
pub struct Invalidator {
    attr_tx: SyncSender<AttrJob>,
    entry_tx: SyncSender<(u64, OsString)>,
    /// Shared counters.
    pub stats: Arc<NotifyStats>,
}

impl Invalidator {
    /// Start the threads. `dev` is a duplicate of the session's `/dev/fuse` descriptor,
    /// used for the epoch notification fuser has no wrapper for.
    pub fn start(notifier: Notifier, dev: OwnedFd) -> std::io::Result<Invalidator> {
        let (attr_tx, attr_rx) = sync_channel(ATTR_QUEUE);
        let (entry_tx, entry_rx) = sync_channel::<(u64, OsString)>(ENTRY_QUEUE);
        let stats = Arc::new(NotifyStats::default());
        {
            let n = notifier.clone();
            let stats = stats.clone();
            std::thread::Builder::new()
                .name("pmxfs-inval-attr".into())
                .spawn(move || attr_loop(attr_rx, n, dev, &stats))?;
        }
        {
            let stats = stats.clone();
            std::thread::Builder::new()
                .name("pmxfs-inval-entry".into())
                .spawn(move || {
                    for (parent, name) in entry_rx {
                        if let Err(e) = notifier.inval_entry(INodeNo(parent), &name) {
                            tracing::debug!(parent, ?name, "inval_entry: {e}");
                        }
                        stats.entries.fetch_add(1, Ordering::Relaxed);
                    }
                })?;
        }
        Ok(Invalidator {
            attr_tx,
            entry_tx,
            stats,
        })
    }

    /// Queue an attribute invalidation for FUSE inode `ino`.
    pub fn inode(&self, ino: u64) {
        let _ = self.attr_tx.send(AttrJob::Inode(ino));
    }

    /// Queue an entry invalidation for `name` in FUSE directory `parent` (an epoch bump
    /// if that queue is full).
    pub fn entry(&self, parent: u64, name: OsString) {
        if let Err(TrySendError::Full(_)) = self.entry_tx.try_send((parent, name)) {
            self.stats.entry_overflows.fetch_add(1, Ordering::Relaxed);
            self.epoch();
        }
    }

    /// Queue a dentry epoch bump.
    pub fn epoch(&self) {
        let _ = self.attr_tx.send(AttrJob::Epoch);
    }

    /// Run `f` on the attribute thread once everything queued before has reached the
    /// kernel. If the thread is gone (unmounting), `f` runs at once.
    pub fn then(&self, f: impl FnOnce() + Send + 'static) {
        if let Err(std::sync::mpsc::SendError(AttrJob::Then(f))) =
            self.attr_tx.send(AttrJob::Then(Box::new(f)))
        {
            f();
        }
    }
}

fn attr_loop(rx: Receiver<AttrJob>, notifier: Notifier, dev: OwnedFd, stats: &NotifyStats) {
    let epoch_ok = AtomicBool::new(true);
    for job in rx {
        match job {
            AttrJob::Inode(ino) => {
                if let Err(e) = notifier.inval_inode(INodeNo(ino), -1, 0) {
                    tracing::debug!(ino, "inval_inode: {e}");
                }
                stats.inodes.fetch_add(1, Ordering::Relaxed);
            }
            AttrJob::Epoch => {
                if epoch_ok.load(Ordering::Relaxed) {
                    match send_epoch(&dev) {
                        Ok(()) => {
                            stats.epochs.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            tracing::warn!(
                                "kernel refused FUSE_NOTIFY_INC_EPOCH ({e}); cached names \
                                 are then refreshed only by entry invalidation"
                            );
                            epoch_ok.store(false, Ordering::Relaxed);
                        }
                    }
                }
            }
            AttrJob::Then(f) => {
                // Counted first, so whoever `f` answers sees it counted.
                stats.barriers.fetch_add(1, Ordering::Relaxed);
                f();
            }
        }
    }
}

/// Write a bare `fuse_out_header` carrying the notification code: the kernel reads
/// `unique == 0` as a notification and `error` as its code.
fn send_epoch(dev: &OwnedFd) -> std::io::Result<()> {
    let mut hdr = [0u8; 16];
    hdr[0..4].copy_from_slice(&16u32.to_ne_bytes());
    hdr[4..8].copy_from_slice(&FUSE_NOTIFY_INC_EPOCH.to_ne_bytes());
    // SAFETY: writing 16 initialised bytes from a live buffer to an open descriptor.
    let n = unsafe { libc::write(dev.as_raw_fd(), hdr.as_ptr().cast(), hdr.len()) };
    if n == 16 {
        Ok(())
    } else if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Err(std::io::Error::other("short write"))
    }
}
