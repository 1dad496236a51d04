//! What the core needs from the replicated application.
use std::fmt::Debug;

use super::types::{DbIndex, NodeId, Term};

/// Reasons the core itself fails a request, mapped by the application to its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoreError {
    /// The node is not quorate (pmxcfs answers EACCES).
    NoQuorum,
    /// The request's message was lost to a membership change before it could be
    /// applied anywhere, and it is too old to be sent again (`RESEND_WINDOW`); the
    /// caller may retry (EAGAIN).
    Interrupted,
    /// The node is in error mode and accepts no writes (EIO).
    Failed,
    /// The node already keeps `MAX_UNANSWERED` requests unanswered (EAGAIN).
    Overloaded,
    /// The write was applied here, but the configuration changed before a majority
    /// confirmed holding it, and the next round could not tell whether the tree the
    /// others went on with contains it (or none came within `RESEND_WINDOW`): it may or
    /// may not have survived (EIO).
    Unconfirmed,
}

/// Why [`Database::apply`] did not apply an op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyError<E> {
    /// The op is invalid on this tree (EEXIST, ENOENT, ...). Every member decides alike,
    /// since all apply the same ops to the same tree; the writer is answered with it.
    Refused(E),
    /// The store could not persist the change. The database is unchanged, but it no
    /// longer follows the members that could: this member stops (mode `Error`) and the
    /// adapter restarts it, which resyncs it from the others.
    Storage(String),
}

/// The replicated application: a tree that applies ops deterministically.
///
/// Every node applies the same ops in the same order with the same `(writer, time)`,
/// so `apply` must depend on nothing else (no local clock, no randomness).
///
/// # Terms
///
/// Besides the tree the database persists two numbers, in the same store and with the
/// same durability as the tree:
///
/// * the **term** of the tree, reported as [`DbIndex::term`] by [`Database::index`]:
///   the quorate synchronisation round whose history the tree belongs to. It changes
///   only through [`Database::set_term`] and [`Database::install_update`], never
///   through [`Database::apply`]. Leader selection compares it before the version, so
///   a tree a minority went on writing after losing its partners can never out-rank
///   the newer history a quorate majority accepted later, whatever its version.
/// * the **promised term**, [`Database::promised_term`]: the highest term this node
///   promised to take part in. Every member of a quorate round promises the round's
///   term before anyone accepts it, and a round's term is above every member's promise
///   and term; as two quorate configurations always share a member, no two
///   configurations ever accept the same term (Paxos' ballots), so within one term the
///   version orders trees unambiguously.
///
/// The core never lowers either number. Each setter must be durable before it returns,
/// because the core multicasts right after (a promise, or writes under the term) and a
/// restarted node must not forget it: a restart reads both back. A term must change
/// atomically with the tree it labels, so a crash leaves either the old tree with its
/// old term or the new tree with the new term. "Durable" means surviving a crash of
/// the process; the write guarantee survives a power loss only if it survives that
/// too (e.g. SQLite `synchronous=FULL`, or at least for these three calls). Losing
/// either number, e.g. restoring a backup of the tree alone, voids the guarantee that
/// acknowledged writes survive. A new database starts at term 0, promise 0.
pub trait Database {
    /// A replicated write (a path-based fs op in pmxfs).
    type Op: Clone + Debug;
    /// One tree entry, shipped by the leader during sync.
    type Entry: Clone + Debug;
    /// Errno-like result of an op.
    type Error: Clone + Debug;
    /// What applying an op changed, handed to the adapter in `Action::Applied`.
    type Outcome: Debug;

    /// Apply one op on behalf of `writer` at the writer's `time` (seconds).
    /// A failed op must leave the database unchanged and must not bump the version.
    fn apply(
        &mut self,
        op: &Self::Op,
        writer: NodeId,
        time: u32,
    ) -> Result<Self::Outcome, ApplyError<Self::Error>>;

    /// The current summary, including the persisted term of the tree; `entries`
    /// sorted by inode.
    fn index(&self) -> DbIndex;

    /// The persisted term of the tree, `index().term` without building the index.
    fn term(&self) -> Term {
        self.index().term
    }
    /// The tree's version, `index().version` without building the index.
    fn version(&self) -> u64 {
        self.index().version
    }
    /// A checksum of the tree's content (not its term label): equal on members that
    /// hold the same tree. By default SHA-256 over the index's version, mtime and
    /// per-entry digests.
    fn checksum(&self) -> super::types::Digest {
        use sha2::Digest as _;
        let ix = self.index();
        let mut h = sha2::Sha256::new();
        h.update(ix.version.to_le_bytes());
        h.update(ix.mtime.to_le_bytes());
        for (ino, d) in &ix.entries {
            h.update(ino.to_le_bytes());
            h.update(d);
        }
        h.finalize().into()
    }
    /// What an op weighs in a message ([`crate::core::MAX_BATCH_BYTES`]): its payload
    /// bytes, roughly.
    fn op_size(_op: &Self::Op) -> usize {
        1
    }

    /// The highest term this node promised to join (0 if never); persisted.
    fn promised_term(&self) -> Term;

    /// Durably record the promise to join `term` (always above the current promise)
    /// before returning; the tree and its term are untouched. On `Err` nothing may have
    /// changed; the node stops (mode `Error`).
    fn set_promised_term(&mut self, term: Term) -> Result<(), String>;

    /// Durably relabel the unchanged tree with `term` (always above the current term)
    /// before returning: this node accepted the tree as the start of history `term`
    /// and will apply that term's writes on top of it. On `Err` nothing may have
    /// changed; the node stops (mode `Error`).
    fn set_term(&mut self, term: Term) -> Result<(), String>;

    /// The entries for these inodes (missing ones are skipped).
    fn entries(&self, inodes: &[u64]) -> Vec<Self::Entry>;

    /// Atomically and durably replace the database by the leader's: afterwards
    /// `index() == *leader`, **including `leader.term`**, which must be persisted in the
    /// same transaction as the tree; or `Err` and the database is unchanged. `entries`
    /// holds every entry whose digest differs here; inodes absent from `leader` must be
    /// deleted. In a quorate round `leader.term` is the round's new term (the leader
    /// relabels its own tree with `set_term`); in a non-quorate one it is the leader's
    /// own term, copied with its tree. The promised term is untouched.
    fn install_update(&mut self, leader: &DbIndex, entries: Vec<Self::Entry>)
        -> Result<(), String>;

    /// The application's error for a failure decided by the core.
    fn core_error(kind: CoreError) -> Self::Error;
}
