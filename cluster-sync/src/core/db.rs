//! What the core needs from the replicated application.
use std::fmt::Debug;

use super::types::{DbIndex, NodeId};

/// Reasons the core itself fails a request, mapped by the application to its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoreError {
    /// The node is not quorate (pmxcfs answers EACCES).
    NoQuorum,
    /// The request's message was lost to a membership change before it could be
    /// applied anywhere; the caller may retry (EAGAIN).
    Interrupted,
    /// The node is in error mode and accepts no writes (EIO).
    Failed,
}

/// The replicated application: a tree that applies ops deterministically.
///
/// Every node applies the same ops in the same order with the same `(writer, time)`,
/// so `apply` must depend on nothing else (no local clock, no randomness).
pub trait Database {
    /// A replicated write (a path-based fs op in pmxfs).
    type Op: Clone + Debug;
    /// One tree entry, shipped by the leader during sync.
    type Entry: Clone + Debug;
    /// Errno-like result of an op.
    type Error: Clone + Debug;

    /// Apply one op on behalf of `writer` at the writer's `time` (seconds).
    /// A failed op must leave the database unchanged and must not bump the version.
    fn apply(&mut self, op: &Self::Op, writer: NodeId, time: u32) -> Result<(), Self::Error>;

    /// The current summary; `entries` sorted by inode.
    fn index(&self) -> DbIndex;

    /// The entries for these inodes (missing ones are skipped).
    fn entries(&self, inodes: &[u64]) -> Vec<Self::Entry>;

    /// Atomically replace the database by the leader's: afterwards `index() == *leader`,
    /// or `Err` and the database is unchanged. `entries` holds every entry whose digest
    /// differs here; inodes absent from `leader` must be deleted.
    fn install_update(&mut self, leader: &DbIndex, entries: Vec<Self::Entry>)
        -> Result<(), String>;

    /// The application's error for a failure decided by the core.
    fn core_error(kind: CoreError) -> Self::Error;
}
