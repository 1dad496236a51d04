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
    /// The starter's clock when it made the epoch: part of pmxcfs's epoch (its
    /// `dfsm_sync_epoch_t`), compared with the rest; always 0 in pmxfs's own protocol.
    pub time: u32,
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.nodeid, self.pid, self.counter)
    }
}

/// Which protocol a member speaks; both run the same core (DESIGN.md, "Compat mode").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// pmxfs's own: replication terms, confirmed writes, group commit.
    #[default]
    Terms,
    /// pmxcfs's dfsm, as pmxcfs 9.1.6 runs it (`pve_dcdb_v1`): the version-only leader
    /// rule, no terms, writes answered at their own delivery, pmxcfs's queues. Its
    /// guarantees are pmxcfs's.
    Dfsm,
}

/// A replication term: the number of a synchronisation round of a quorate configuration
/// that every member promised to join (see [`crate::core::Database`] for the rules).
pub type Term = u64;

/// A database summary exchanged during sync (pmxcfs's `memdb_encode_index`, plus the
/// term).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DbIndex {
    /// Term of the history this content belongs to: compared before the version in
    /// leader selection, because versions of different histories are not comparable
    /// (a minority that went on writing can hold a higher version than the majority's
    /// newer history). 0 for a tree no quorate sync ever accepted.
    pub term: Term,
    /// Global version: bumped by every successful write, so it orders content within
    /// one term.
    pub version: u64,
    /// Time of the last write (writer's clock), the first tie breaker.
    pub mtime: u32,
    /// Node id of the last write's writer: part of pmxcfs's index (compat mode sends
    /// it); the entries' digests cover it, so it is not compared on its own.
    pub writer: u32,
    /// `(inode, digest)` of every entry, sorted by inode.
    pub entries: Vec<(u64, Digest)>,
}

impl DbIndex {
    /// Whether both summaries describe the same tree, whatever term each is labelled
    /// with (a node that crashed before persisting a new term holds the same tree under
    /// an older one).
    pub fn same_content(&self, other: &DbIndex) -> bool {
        self.version == other.version && self.mtime == other.mtime && self.entries == other.entries
    }
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
    /// A round without a term ended and this node kept its own database: the leader's
    /// is older than a term this node promised, so it is known to be superseded. No
    /// writes are applied in such a round anyway; the next quorate round syncs it.
    Detached,
    /// Installing the leader's updates failed; the adapter must restart this node.
    Error,
}
