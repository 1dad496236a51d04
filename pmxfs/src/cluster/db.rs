//! The replicated application for cluster-sync's core: memdb behind the shared FUSE
//! state. The core owns this handle and calls it on the cluster thread; FUSE handlers
//! read the same tree through `Shared::db`.

use std::sync::Arc;

use cluster_sync::core::{CoreError, Database, DbIndex, NodeId};
use nix::errno::Errno;

use crate::fs::{Origin, Shared};
use memdb::{Op, Row};

/// memdb as a [`Database`].
pub struct ClusterDb {
    sh: Arc<Shared>,
    me: NodeId,
}

impl ClusterDb {
    /// The database of this node (`me` is its corosync node id).
    pub fn new(sh: Arc<Shared>, me: NodeId) -> ClusterDb {
        ClusterDb { sh, me }
    }
}

impl Database for ClusterDb {
    type Op = Op;
    type Entry = Row;
    type Error = Errno;

    fn apply(&mut self, op: &Op, writer: NodeId, time: u32) -> Result<(), Errno> {
        // This node's own writes came through its kernel, which already knows them;
        // everyone else's must be pushed to the kernel as invalidations.
        let origin = if writer == self.me {
            Origin::Kernel
        } else {
            Origin::Remote
        };
        self.sh.apply_at(op, writer, time, origin).map(|_| ())
    }

    fn index(&self) -> DbIndex {
        let db = self.sh.db.read();
        let root = db.root_version();
        DbIndex {
            term: db.term(),
            version: root.version,
            mtime: root.mtime,
            entries: db.index_entries(),
        }
    }

    fn entries(&self, inodes: &[u64]) -> Vec<Row> {
        self.sh.db.read().rows_for(inodes)
    }

    fn promised_term(&self) -> u64 {
        self.sh.db.read().promised_term()
    }

    fn set_promised_term(&mut self, term: u64) -> Result<(), String> {
        self.sh.db.write().set_promised_term(term)
    }

    fn set_term(&mut self, term: u64) -> Result<(), String> {
        self.sh.db.write().set_term(term)
    }

    fn install_update(&mut self, leader: &DbIndex, entries: Vec<Row>) -> Result<(), String> {
        self.sh
            .db
            .write()
            .install_sync(&leader.entries, entries, leader.term)?;
        self.sh.after_sync();
        Ok(())
    }

    fn core_error(kind: CoreError) -> Errno {
        match kind {
            CoreError::NoQuorum => Errno::EACCES,
            CoreError::Interrupted => Errno::EAGAIN,
            CoreError::Failed => Errno::EIO,
        }
    }
}
