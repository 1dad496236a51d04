//! Small value types shared by the core, the wire encoding and adapters.
use std::fmt;

/// Corosync node id.
pub type NodeId = u32;

/// SHA-256-sized digest of one tree entry.
pub type Digest = [u8; 32];

/// Identifies a local request so its reply can be routed back to the waiting caller.
pub type ReqId = u64;

/// A group member: a process on a node, as CPG reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Member {
    /// Corosync node id.
    pub nodeid: NodeId,
    /// Process id; a restarted daemon is a new member.
    pub pid: u32,
}

impl Member {
    /// Shorthand constructor.
    pub fn new(nodeid: NodeId, pid: u32) -> Self {
        Member { nodeid, pid }
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.nodeid, self.pid)
    }
}

/// Names one synchronisation round: chosen by the member that starts it, adopted by
/// all. State-exchange messages of any other round are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Epoch {
    /// The starter's confchg counter.
    pub counter: u32,
    /// The starter's node id.
    pub nodeid: NodeId,
    /// The starter's pid.
    pub pid: u32,
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.nodeid, self.pid, self.counter)
    }
}

/// A database summary exchanged during sync (pmxcfs's `memdb_encode_index`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DbIndex {
    /// Global version: bumped by every successful write, so it orders histories.
    pub version: u64,
    /// Time of the last write (writer's clock), the first tie breaker.
    pub mtime: u32,
    /// `(inode, digest)` of every entry, sorted by inode.
    pub entries: Vec<(u64, Digest)>,
}

/// Where a node is in the protocol (pmxcfs's `dfsm_mode_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No configuration seen yet.
    Start,
    /// A configuration change happened; states are being exchanged.
    StartSync,
    /// This node's database differs from the leader's; waiting for its updates.
    Update,
    /// This node's database equals the leader's.
    Synced,
    /// Installing the leader's updates failed; the adapter must restart this node.
    Error,
}
