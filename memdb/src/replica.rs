//! The tree as cluster-sync's replicated [`Database`]: the one implementation both the
//! daemon and the simulator hand to the protocol core.
//!
//! It changes the tree and nothing else. What a change means to the kernel's caches,
//! the version counters and the waiting callers is the daemon's business: the core
//! reports every applied op (`Action::Applied`, with this tree's [`Applied`]) and every
//! installed sync (`Action::SyncInstalled`), and the daemon's cluster adapter publishes
//! them.

use std::sync::Arc;

use cluster_sync::core::{ApplyError, CoreError, Database, DbIndex, NodeId, Term};
use nix::errno::Errno;
use parking_lot::RwLock;

use crate::{Applied, MemDb, Op, OpCtx, Row};

/// A tree shared between the protocol core (which changes it) and readers.
#[derive(Clone)]
pub struct Replica {
    tree: Arc<RwLock<MemDb>>,
}

impl Replica {
    /// The replica of `tree`; readers keep their own handle to it.
    pub fn new(tree: Arc<RwLock<MemDb>>) -> Replica {
        Replica { tree }
    }

    /// The tree.
    pub fn tree(&self) -> &Arc<RwLock<MemDb>> {
        &self.tree
    }
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.tree.read().fmt(f)
    }
}

/// The errno a failure the core decides is answered with (pmxcfs's where it has one).
pub fn core_errno(kind: CoreError) -> Errno {
    match kind {
        CoreError::NoQuorum => Errno::EACCES,
        CoreError::Interrupted | CoreError::Overloaded => Errno::EAGAIN,
        CoreError::Failed | CoreError::Unconfirmed => Errno::EIO,
    }
}

impl Database for Replica {
    type Op = Op;
    type Entry = Row;
    type Error = Errno;
    type Outcome = Applied;

    fn apply(&mut self, op: &Op, writer: NodeId, time: u32) -> Result<Applied, ApplyError<Errno>> {
        self.tree
            .write()
            .apply_checked(op, OpCtx { writer, now: time })
    }

    fn index(&self) -> DbIndex {
        let db = self.tree.read();
        let root = db.root_version();
        DbIndex {
            term: db.term(),
            version: root.version,
            mtime: root.mtime,
            writer: root.writer,
            entries: db.index_entries(),
        }
    }

    fn term(&self) -> Term {
        self.tree.read().term()
    }

    fn version(&self) -> u64 {
        self.tree.read().root_version().version
    }

    /// pmxcfs's `memdb_compute_checksum`: equal trees give equal checksums, as the
    /// core needs, and in pmxcfs's protocol the C peers compare it with theirs.
    fn checksum(&self) -> cluster_sync::core::Digest {
        self.tree.read().pmxcfs_checksum()
    }

    fn op_size(op: &Op) -> usize {
        let data = match op {
            Op::Write { data, .. } => data.len(),
            Op::Rename { to, .. } => to.len(),
            Op::UnlockRequest { csum, .. } | Op::Unlock { csum, .. } => csum.len(),
            _ => 0,
        };
        op.path().len() + data + 16
    }

    fn entries(&self, inodes: &[u64]) -> Vec<Row> {
        self.tree.read().rows_for(inodes)
    }

    fn promised_term(&self) -> Term {
        self.tree.read().promised_term()
    }

    fn set_promised_term(&mut self, term: Term) -> Result<(), String> {
        self.tree.write().set_promised_term(term)
    }

    fn set_term(&mut self, term: Term) -> Result<(), String> {
        self.tree.write().set_term(term)
    }

    fn install_update(&mut self, leader: &DbIndex, entries: Vec<Row>) -> Result<(), String> {
        self.tree
            .write()
            .install_sync(&leader.entries, entries, leader.term)
    }

    fn core_error(kind: CoreError) -> Errno {
        core_errno(kind)
    }
}
