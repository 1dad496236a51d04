//! The filesystem's request handlers over the tree service, independent of the FUSE
//! transport (`transport/` carries requests to them), and the open-file table.
//! Handlers answer through reply sinks (`reply`) and never send kernel notifications
//! themselves: a lock `mkdir` hands its reply to the invalidation thread instead.

mod attrs;
mod handles;
pub mod ops;
pub mod reply;

use std::sync::Arc;
use std::time::Duration;

use fuser::FileAttr;
use memdb::{Entry, Inode, MemDb, ROOT_INODE};

use crate::coherence::{Policy, Ttls};
use crate::tree::{FuseIno, Metrics, Tree};

pub use handles::Handles;

/// The filesystem: its handlers over the tree, and the files it has open.
pub struct PmxFs {
    /// The tree service.
    pub tree: Arc<Tree>,
    /// Open file handles.
    handles: Handles,
    /// Timeout policy.
    policy: Policy,
    /// Group that owns every entry (www-data).
    gid: u32,
}

impl PmxFs {
    /// A filesystem over `tree`, owned by `root:gid`, caching replies as `policy` says.
    pub fn new(tree: Arc<Tree>, policy: Policy, gid: u32) -> PmxFs {
        PmxFs {
            tree,
            handles: Handles::default(),
            policy,
            gid,
        }
    }

    /// Attributes and timeouts for a reply about entry `e`. The uncommitted state is read
    /// once, under the caller's db lock: a handle is marked clean only after its commit
    /// is visible in the db, so a clean read here always goes with committed attributes.
    pub(crate) fn attr_reply(&self, db: &MemDb, e: &Entry) -> (FileAttr, Ttls) {
        let pending = self.handles.pending_len(e.row.inode);
        let attr = attrs::of_entry(db, e, self.tree.status.quorate(), self.gid, pending);
        let t = self.policy_ttls(db, e.row.inode);
        // Uncommitted writes get uncacheable attributes (in both modes: pmxcfs commits
        // every write at once, so there the kernel never sees a half-written state).
        match pending {
            Some(_) => (
                attr,
                Ttls {
                    attr: Duration::ZERO,
                    ..t
                },
            ),
            None => (attr, t),
        }
    }

    fn policy_ttls(&self, db: &MemDb, ino: Inode) -> Ttls {
        if !self.policy.enabled {
            return self.policy.default;
        }
        let Some(e) = db.get(ino) else {
            return self.policy.default;
        };
        if ino != ROOT_INODE && db.lock_dir_inode() == Some(e.row.parent) {
            return Ttls::ZERO;
        }
        let held = db.held_locks(self.tree.clock.now());
        if held.is_empty() {
            return self.policy.default;
        }
        match db.path_of(ino) {
            Some(p) => self.policy.ttls(&p, &held),
            None => self.policy.default,
        }
    }

    /// Open a handle, counted in the metrics.
    fn add_handle(&self, h: handles::Handle) -> u64 {
        Metrics::bump(&self.tree.metrics.open_handles);
        self.handles.insert(h)
    }

    /// Close a handle.
    fn drop_handle(&self, fh: u64) -> Option<Arc<parking_lot::Mutex<handles::Handle>>> {
        let h = self.handles.remove(fh);
        if h.is_some() {
            self.tree
                .metrics
                .open_handles
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        h
    }

    /// The kernel took a reference to `ino`.
    fn remember(&self, ino: FuseIno) {
        self.tree.refs.remember(ino);
    }
}
