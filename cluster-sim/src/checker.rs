//! What must hold in every run, checked as it goes and at the end.
//!
//! The checker follows which requests each node's tree holds: an op a node applies
//! joins that node's history, and a node that installs a leader's tree takes the
//! history the leader had when it sent its State for that round. A node's history
//! survives its crashes with its disk. From that:
//! - no node applies an op in a configuration without quorum, nor an op that was
//!   answered with a clean failure (EACCES, EAGAIN);
//! - two trees (live or on a crashed node's disk) with the same term and version are
//!   the same tree: leader selection orders trees by (term, version) and relies on it;
//! - two nodes synced in one configuration after the same message hold the same tree;
//! - no two clients hold the same lock at once, judged by the lock's real rules
//!   (memdb's: expiry from the last refresh, takeover, unlock requests);
//! - at the end every node converged on one tree, every request was answered, no op was
//!   applied twice, every acknowledged op is in the final history,
//!   and no cleanly failed op is.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use cluster_sync::core::{Epoch, Member};
use memdb::MemDb;
use nix::errno::Errno;

use crate::workload::OpId;

/// A violated invariant.
pub type Violation = String;

/// The content of a tree (not its term label, which members holding the same tree may
/// legitimately differ in after a round without a term).
pub fn tree_hash(db: &MemDb) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: &[u8]| {
        for x in b {
            h ^= *x as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    let root = db.root_version();
    eat(&root.version.to_le_bytes());
    eat(&root.mtime.to_le_bytes());
    for (ino, d) in db.index_entries() {
        eat(&ino.to_le_bytes());
        eat(&d);
    }
    h
}

/// The checker's state.
#[derive(Debug, Default)]
pub struct Checker {
    /// Ops each node's tree holds, in the order applied.
    hist: Vec<Vec<OpId>>,
    /// The history each member had when it sent its State of a round.
    states: HashMap<(Epoch, Member), Vec<OpId>>,
    /// Requests answered OK.
    pub acked: BTreeSet<OpId>,
    /// Requests answered with a clean failure: applied nowhere.
    failed_clean: BTreeMap<OpId, Errno>,
    applied_anywhere: BTreeSet<OpId>,
    /// Nodes whose tree holds each op now.
    holders: BTreeMap<OpId, BTreeSet<usize>>,
    /// Ops a majority of nodes held at once.
    durable: BTreeSet<OpId>,
    /// (term, version) → (node, tree hash) of every tree seen.
    trees: HashMap<(u64, u64), (usize, u64)>,
    /// The (term, version) each node was last checked at.
    last_key: Vec<Option<(u64, u64)>>,
    /// (configuration, delivery position) → (node, tree hash) of a synced member.
    synced_at: HashMap<(usize, usize), (usize, u64)>,
    n: usize,
    /// Compat mode (pmxcfs's dfsm): it answers a write at its own delivery and ranks
    /// trees by version alone, so an acknowledged write may never have been held by a
    /// majority, may be lost, and two trees may share a version. Those are counted,
    /// not failures.
    compat: bool,
    /// Compat mode: writes acknowledged while no majority held them.
    pub acked_unheld: usize,
    /// Compat mode: acknowledged writes missing at the end.
    pub acked_lost: usize,
    /// Compat mode: writes applied in a configuration without quorum (pmxcfs applies
    /// a lone member's queue at its confchg, before corosync's quorum notification).
    pub applied_unquorate: usize,
    /// Across the switch: requests acknowledged by a node in pmxcfs's protocol, whose
    /// loss is pmxcfs's window (counted), unlike those the term protocol acknowledged.
    acked_compat: BTreeSet<OpId>,
    /// Across the switch: trees labelled at most this (the switch's term) may share a
    /// (term, version) with different content: the switch labels pmxcfs's trees,
    /// which have no terms, and writes under the term protocol get higher labels.
    pub label_floor: Option<u64>,
}

impl Checker {
    /// A checker for `n` nodes that all start from the same tree; `compat` for
    /// pmxcfs's protocol.
    pub fn new(n: usize, compat: bool) -> Checker {
        Checker {
            hist: vec![Vec::new(); n],
            last_key: vec![None; n],
            n,
            compat,
            ..Checker::default()
        }
    }

    fn hold(&mut self, i: usize, id: OpId) {
        let h = self.holders.entry(id).or_default();
        h.insert(i);
        if h.len() * 2 > self.n {
            self.durable.insert(id);
        }
    }

    /// Node `i` applied request `id` in a configuration that is `quorate`; `compat`:
    /// node `i` speaks pmxcfs's protocol (across the switch; always, in compat mode).
    pub fn applied(
        &mut self,
        i: usize,
        id: OpId,
        quorate: bool,
        compat: bool,
    ) -> Result<(), Violation> {
        if !quorate && (self.compat || compat) {
            self.applied_unquorate += 1;
        } else if !quorate {
            return Err(format!("n{} applied op {id} without quorum", i + 1));
        }
        if let Some(e) = self.failed_clean.get(&id) {
            return Err(format!("n{} applied op {id} that was answered {e}", i + 1));
        }
        self.applied_anywhere.insert(id);
        self.hist[i].push(id);
        self.hold(i, id);
        Ok(())
    }

    /// Whether a majority of nodes held op `id` at once.
    pub fn durable(&self, id: OpId) -> bool {
        self.durable.contains(&id)
    }

    /// `member` (node `i`) sent its State of round `epoch`.
    pub fn state_sent(&mut self, i: usize, member: Member, epoch: Epoch) {
        self.states.insert((epoch, member), self.hist[i].clone());
    }

    /// Node `i` installed the tree `leader` had in round `epoch`.
    pub fn installed(&mut self, i: usize, leader: Member, epoch: Epoch) -> Result<(), Violation> {
        let h = self.states.get(&(epoch, leader)).cloned().ok_or_else(|| {
            format!(
                "n{} installed a tree {leader} never sent a State for",
                i + 1
            )
        })?;
        for (_, holders) in self.holders.iter_mut() {
            holders.remove(&i);
        }
        for id in &h {
            self.hold(i, *id);
        }
        self.hist[i] = h;
        Ok(())
    }

    /// A request was answered, by a node in pmxcfs's protocol if `compat`.
    pub fn answered(
        &mut self,
        id: OpId,
        result: Result<(), Errno>,
        compat: bool,
    ) -> Result<(), Violation> {
        let compat = compat || self.compat;
        match result {
            Ok(()) => {
                if compat {
                    self.acked_compat.insert(id);
                }
                // The guarantee itself, checked where it is given: no writer answers
                // before a majority of the nodes holds its write.
                if !self.durable.contains(&id) && compat {
                    self.acked_unheld += 1;
                } else if !self.durable.contains(&id) {
                    return Err(format!(
                        "op {id} acknowledged while no majority of the nodes holds it"
                    ));
                }
                self.acked.insert(id);
            }
            Err(e @ (Errno::EACCES | Errno::EAGAIN)) => {
                if self.applied_anywhere.contains(&id) {
                    return Err(format!("op {id} answered {e} but was applied"));
                }
                self.failed_clean.insert(id, e);
            }
            // The tree refused it (every node alike), or EIO: this node stopped, and
            // the others may have applied it.
            Err(_) => {}
        }
        Ok(())
    }

    /// Node `i`'s tree (live or on its disk) is `db`: two trees with the same term and
    /// version must be the same tree.
    pub fn tree(&mut self, i: usize, db: &MemDb) -> Result<(), Violation> {
        if self.compat {
            // Without terms, branches that diverged after a crash can reach one
            // version with different content; pmxcfs tells them apart by digests.
            return Ok(());
        }
        let key = (db.term(), db.root_version().version);
        if self.last_key[i] == Some(key) || self.label_floor.is_some_and(|f| key.0 <= f) {
            return Ok(());
        }
        self.last_key[i] = Some(key);
        let h = tree_hash(db);
        match self.trees.get(&key) {
            Some(&(j, h2)) if h2 != h => Err(format!(
                "n{} and n{} hold different trees at term {} version {}",
                j + 1,
                i + 1,
                key.0,
                key.1
            )),
            Some(_) => Ok(()),
            None => {
                self.trees.insert(key, (i, h));
                Ok(())
            }
        }
    }

    /// Node `i` is synced in configuration `cfg` after delivering message `pos`.
    pub fn synced(
        &mut self,
        i: usize,
        cfg: usize,
        pos: usize,
        db: &MemDb,
    ) -> Result<(), Violation> {
        let h = tree_hash(db);
        match self.synced_at.get(&(cfg, pos)) {
            Some(&(j, h2)) if h2 != h => Err(format!(
                "n{} and n{} are synced in cfg {cfg} after message {pos} but hold different trees",
                i + 1,
                j + 1
            )),
            Some(_) => Ok(()),
            None => {
                self.synced_at.insert((cfg, pos), (i, h));
                Ok(())
            }
        }
    }

    /// The end: node 0's history is the converged tree's, and it holds every
    /// acknowledged op: a write is answered only once a majority holds it, so not even
    /// a writer cut off or killed right after its acknowledgement loses one.
    pub fn converged(&mut self) -> Result<(), Violation> {
        let history: BTreeSet<OpId> = self.hist[0].iter().copied().collect();
        if history.len() != self.hist[0].len() {
            return Err("an op was applied twice".into());
        }
        for id in &self.acked {
            if !history.contains(id) && (self.compat || self.acked_compat.contains(id)) {
                self.acked_lost += 1;
            } else if !history.contains(id) {
                let held = if self.durable.contains(id) {
                    "once held by a majority"
                } else {
                    "never held by a majority"
                };
                return Err(format!(
                    "acknowledged op {id} ({held}) is missing from the converged tree"
                ));
            }
        }
        for (id, e) in &self.failed_clean {
            if history.contains(id) {
                return Err(format!("op {id} answered {e} is in the converged tree"));
            }
        }
        Ok(())
    }
}
