//! One synchronisation round (DESIGN.md, "A round"): opened by a SyncStart, it collects
//! every member's State, picks the leader and the round's term, waits for the leader's
//! updates and, on the slow path, every member's Promise, and ends synced. A confchg or
//! a SyncStart replaces the whole round with a new one.
use std::collections::{BTreeMap, BTreeSet};

use super::types::{DbIndex, Epoch, Member, Term};

/// Entries the leader may send in one round at most. Above any tree the daemon allows
/// (pmxcfs's limit is 262,144 inodes); a leader that sends more is broken, and the
/// member stops and resyncs rather than buffer without bound.
pub const MAX_SYNC_ENTRIES: usize = 1 << 20;

/// One member's State in the round.
#[derive(Debug, Clone)]
pub(super) struct PeerState {
    pub quorate: bool,
    pub promised_proposed_term: bool,
    pub promised_term: Term,
    pub index: DbIndex,
}

/// Where a round is.
#[derive(Debug)]
pub(super) enum Stage<E> {
    /// The configuration changed; its SyncStart is not delivered yet.
    Opening,
    /// Collecting every member's State.
    Collecting { states: BTreeMap<Member, PeerState> },
    /// The leader is chosen; waiting for its updates (if some member's tree differs)
    /// and, on the slow path, for every member's Promise.
    Settling {
        leader: Member,
        leader_index: DbIndex,
        /// Some member's tree differs: the round ends with the leader's UpdateComplete.
        await_update: bool,
        update_complete: bool,
        updates: Vec<E>,
        /// Slow path: members whose Promise of the round's term was delivered.
        promises: Option<BTreeSet<Member>>,
    },
    /// Every member is synced. With `accepted`, the round's term is persisted and
    /// writes are applied; without, nobody applies any.
    Synced { accepted: bool },
}

/// The state of the current round.
#[derive(Debug)]
pub(super) struct Round<E> {
    /// Names the round once its SyncStart was delivered.
    pub epoch: Option<Epoch>,
    /// The term the SyncStart proposed.
    pub proposed_term: Option<Term>,
    /// The quorum flag this member's State said.
    pub sent_quorate: Option<bool>,
    /// The term the round accepts, known once every State is in; `None` when some
    /// State said "not quorate".
    pub term: Option<Term>,
    pub stage: Stage<E>,
}

impl<E> Round<E> {
    /// The round of a new configuration, before its SyncStart.
    pub fn opening() -> Round<E> {
        Round {
            epoch: None,
            proposed_term: None,
            sent_quorate: None,
            term: None,
            stage: Stage::Opening,
        }
    }

    /// The round a SyncStart opened; this member's State said `quorate`.
    pub fn started(epoch: Epoch, proposed_term: Term, quorate: bool) -> Round<E> {
        Round {
            epoch: Some(epoch),
            proposed_term: Some(proposed_term),
            sent_quorate: Some(quorate),
            term: None,
            stage: Stage::Collecting {
                states: BTreeMap::new(),
            },
        }
    }

    /// Whether `epoch` names this round.
    pub fn is(&self, epoch: Epoch) -> bool {
        self.epoch == Some(epoch)
    }

    /// Every member is synced.
    pub fn is_synced(&self) -> bool {
        matches!(self.stage, Stage::Synced { .. })
    }

    /// Every member is synced and the round's term is persisted: writes are applied.
    pub fn accepted(&self) -> bool {
        matches!(self.stage, Stage::Synced { accepted: true })
    }

    /// The round ended without a term.
    pub fn termless(&self) -> bool {
        matches!(self.stage, Stage::Synced { accepted: false })
    }
}
