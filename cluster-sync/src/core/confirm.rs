//! Confirmation (DESIGN.md, "Confirmation"): an own write is answered only once a
//! majority holds it. CPG's agreed order delivers a message to its sender before the
//! others have it, so a writer cut off right after applying its own write may be the
//! only member that ever held it; the surviving majority then goes on without it.
//!
//! Within a configuration every member delivers the same Normal messages in the same
//! order, so a message is named by its position among them, and a member confirms
//! every write it holds with one number: how many Normals it has applied (`ack` in
//! every Normal it sends). A writer answers a write once the `need`-th highest of these
//! numbers, its own included, reaches the write's position.
use std::collections::{BTreeMap, VecDeque};

use super::types::{Member, ReqId, Term};

/// An own write applied here and not yet known to be held by a majority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pending {
    /// The request to answer.
    pub req: ReqId,
    /// When it was requested (bounds how long it may stay unconfirmed).
    pub time: u32,
    /// The term and version of this tree right after the write was applied: a tree of
    /// that term with at least that version contains it (one term, one write sequence).
    pub term: Term,
    /// See `term`.
    pub version: u64,
}

/// What a finished round tells about writes whose configuration ended before they were
/// confirmed.
#[derive(Debug, Default)]
pub(super) struct Verdict {
    /// In the tree the round's members now all hold.
    pub held: Vec<Pending>,
    /// The round's tree may lack them: their outcome is unknown.
    pub unknown: Vec<Pending>,
}

/// The confirmation state of one member in its current configuration.
#[derive(Debug, Default)]
pub(super) struct Confirm {
    /// Normal messages delivered in this configuration.
    delivered: u64,
    /// Normal messages applied here, a prefix of the delivered ones.
    applied: u64,
    /// The highest `ack` each other member sent in this configuration.
    acks: BTreeMap<Member, u64>,
    /// The seq of each member's latest State in this configuration.
    state_seqs: BTreeMap<Member, u64>,
    /// Own writes applied in this configuration, by their message's position.
    confirming: VecDeque<(u64, Pending)>,
    /// Own writes applied in an earlier configuration that ended before a majority
    /// confirmed them; a later round decides.
    unconfirmed: Vec<Pending>,
    /// The `applied` this member last sent.
    told: u64,
    /// A writer counts on this member's acknowledgement.
    pub owed: bool,
    /// Position of the last applied Normal with another member's ops.
    others_ops: u64,
    /// `others_ops` at the previous tick: older positions still unconfirmed then mean
    /// the members counted on are slow (stopped, say), so anyone may confirm.
    mark: u64,
}

impl Confirm {
    /// A new configuration: positions start again, and what was not confirmed in the
    /// old one waits for the next round's verdict.
    pub fn new_configuration(&mut self) {
        let old = std::mem::take(&mut self.confirming);
        let unconfirmed = std::mem::take(&mut self.unconfirmed);
        *self = Confirm {
            unconfirmed,
            ..Confirm::default()
        };
        self.unconfirmed.extend(old.into_iter().map(|(_, p)| p));
    }

    /// A Normal was delivered: its position in this configuration.
    pub fn delivered(&mut self) -> u64 {
        self.delivered += 1;
        self.delivered
    }

    /// The Normal at `pos` was applied here; `others` if it held another member's ops.
    pub fn applied(&mut self, pos: u64, others: bool) {
        debug_assert_eq!(
            pos,
            self.applied + 1,
            "Normals are applied in delivery order"
        );
        debug_assert!(pos <= self.delivered, "only delivered Normals are applied");
        self.applied = pos;
        if others {
            self.others_ops = pos;
        }
    }

    /// The configuration's round ended with a term: a position of its own, applied at
    /// once (the members all reach it at the same message), which every member
    /// acknowledges to say it holds the round's tree. Returns it.
    pub fn round_ended(&mut self) -> u64 {
        debug_assert_eq!(
            self.applied, self.delivered,
            "the round's queue was applied"
        );
        self.delivered += 1;
        self.applied = self.delivered;
        self.owed = true;
        self.applied
    }

    /// `from`'s State of this configuration's round was its message `seq`.
    pub fn state_seen(&mut self, from: Member, seq: u64) {
        self.state_seqs.insert(from, seq);
    }

    /// `from`'s message `seq` said it applied `ack` Normals. A message CPG delivers in
    /// this configuration may have been sent before its sender saw it, counting the
    /// old configuration's Normals; only what the sender sent after its State of this
    /// configuration counts this one's.
    pub fn ack(&mut self, from: Member, seq: u64, ack: u64) {
        if self.state_seqs.get(&from).is_none_or(|s| seq <= *s) {
            return;
        }
        if ack > self.delivered {
            // A peer cannot have applied what CPG has not delivered here yet (it sent
            // this after applying them, and agreed order delivers them first): a
            // broken or forged ack, which must confirm nothing.
            tracing::warn!(%from, ack, delivered = self.delivered, "acknowledgement beyond the delivered messages dropped");
            return;
        }
        let a = self.acks.entry(from).or_default();
        *a = (*a).max(ack);
    }

    /// The position every write up to which `need` of `members` hold (this member
    /// counting with what it applied).
    pub fn held(&self, members: &[Member], me: Member, need: usize) -> u64 {
        debug_assert!(
            need >= 1 && need <= members.len(),
            "need is within the group"
        );
        let mut v: Vec<u64> = members
            .iter()
            .map(|m| {
                if *m == me {
                    self.applied
                } else {
                    self.acks.get(m).copied().unwrap_or(0)
                }
            })
            .collect();
        v.sort_unstable_by(|a, b| b.cmp(a));
        v[need - 1]
    }

    /// Own write `p`, in the Normal at `pos`, waits for a majority.
    pub fn wait(&mut self, pos: u64, p: Pending) {
        debug_assert!(
            self.confirming.back().is_none_or(|(q, _)| *q <= pos),
            "own writes are applied in position order"
        );
        self.confirming.push_back((pos, p));
    }

    /// Whether own writes wait for confirmation in this configuration.
    pub fn confirming(&self) -> bool {
        !self.confirming.is_empty()
    }

    /// Own writes at or below `held`, now confirmed.
    pub fn confirmed(&mut self, held: u64) -> Vec<Pending> {
        let mut done = Vec::new();
        while self.confirming.front().is_some_and(|(pos, _)| *pos <= held) {
            done.push(self.confirming.pop_front().expect("checked").1);
        }
        done
    }

    /// Whether an acknowledgement is due: owed, or (at a tick) others' writes applied
    /// before the previous tick are still not held by `held`. Updates the tick mark.
    pub fn due_at_tick(&mut self, held: u64) -> bool {
        if self.mark > held && self.told < self.mark {
            self.owed = true;
        }
        self.mark = self.others_ops;
        self.owed && self.applied > self.told
    }

    /// Whether a Normal should go out for the acknowledgement alone.
    pub fn ack_due(&self) -> bool {
        self.owed && self.applied > self.told
    }

    /// A Normal goes out carrying `applied`: returns it.
    pub fn tell(&mut self) -> u64 {
        self.told = self.applied;
        self.owed = false;
        self.applied
    }

    /// A round that accepted a term ended with the leader's tree, which was at
    /// `(term, version)` before the round: every member of the configuration now holds
    /// it, so an earlier write is held by all of them if that tree contained it.
    pub fn verdict(&mut self, leader_term: Term, leader_version: u64) -> Verdict {
        let mut v = Verdict::default();
        for p in self.unconfirmed.drain(..) {
            if p.term == leader_term && leader_version >= p.version {
                v.held.push(p);
            } else {
                v.unknown.push(p);
            }
        }
        v
    }

    /// Unconfirmed writes of earlier configurations requested more than `limit`
    /// seconds before `now`: no longer waited for.
    pub fn expire(&mut self, now: u32, limit: u32) -> Vec<Pending> {
        let (old, young) = std::mem::take(&mut self.unconfirmed)
            .into_iter()
            .partition(|p| now.saturating_sub(p.time) > limit);
        self.unconfirmed = young;
        old
    }

    /// Every own write waiting for confirmation (the member stops or leaves).
    pub fn take_all(&mut self) -> Vec<Pending> {
        let mut all: Vec<Pending> = self.confirming.drain(..).map(|(_, p)| p).collect();
        all.append(&mut self.unconfirmed);
        all
    }

    /// Own writes waiting for confirmation.
    pub fn len(&self) -> usize {
        self.confirming.len() + self.unconfirmed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(req: ReqId, version: u64) -> Pending {
        Pending {
            req,
            time: 0,
            term: 4,
            version,
        }
    }

    #[test]
    fn a_write_is_confirmed_once_need_members_hold_it() {
        let (a, b, c) = (Member::new(1, 1), Member::new(2, 2), Member::new(3, 3));
        let ms = [a, b, c];
        let mut k = Confirm::default();
        let pos = k.delivered();
        k.applied(pos, false);
        k.wait(pos, p(7, 10));
        assert_eq!(k.held(&ms, a, 2), 0, "only the writer holds it");
        assert!(k.confirmed(k.held(&ms, a, 2)).is_empty());
        k.ack(c, 5, 1);
        assert_eq!(
            k.held(&ms, a, 2),
            0,
            "sent before c's State of this configuration"
        );
        k.state_seen(c, 4);
        k.ack(c, 5, 1);
        assert_eq!(k.held(&ms, a, 2), 1);
        assert_eq!(k.held(&ms, a, 3), 0, "b has not confirmed");
        assert_eq!(k.confirmed(1), vec![p(7, 10)]);
    }

    #[test]
    fn an_ack_beyond_the_delivered_messages_confirms_nothing() {
        let (a, c) = (Member::new(1, 1), Member::new(3, 3));
        let mut k = Confirm::default();
        k.state_seen(c, 1);
        let pos = k.delivered();
        k.applied(pos, false);
        k.wait(pos, p(7, 10));
        k.ack(c, 2, 1_000);
        assert_eq!(k.held(&[a, c], a, 2), 0, "the forged ack counted");
        assert!(k.confirmed(k.held(&[a, c], a, 2)).is_empty());
        k.ack(c, 3, 1);
        assert_eq!(k.confirmed(k.held(&[a, c], a, 2)), vec![p(7, 10)]);
    }

    #[test]
    fn a_configuration_change_leaves_the_verdict_to_the_next_round() {
        let mut k = Confirm::default();
        let pos = k.delivered();
        k.applied(pos, false);
        k.wait(pos, p(1, 10));
        k.wait(pos, p(2, 11));
        k.new_configuration();
        assert_eq!(k.len(), 2);
        assert_eq!(k.delivered(), 1, "positions start again");
        let v = k.verdict(4, 10);
        assert_eq!(v.held, vec![p(1, 10)]);
        assert_eq!(
            v.unknown,
            vec![p(2, 11)],
            "the leader's tree stops before it"
        );
        let mut k = Confirm::default();
        k.unconfirmed.push(p(3, 1));
        let v = k.verdict(5, 100);
        assert_eq!(v.unknown.len(), 1, "a later term may or may not contain it");
    }

    #[test]
    fn slow_confirmers_are_covered_at_the_next_tick() {
        let (a, b) = (Member::new(1, 1), Member::new(2, 2));
        let mut k = Confirm::default();
        let pos = k.delivered();
        k.applied(pos, true);
        assert!(!k.ack_due(), "not counted on");
        assert!(!k.due_at_tick(0), "applied after the last tick");
        assert!(k.due_at_tick(0), "still unconfirmed a tick later");
        assert_eq!(k.tell(), 1);
        assert!(!k.due_at_tick(k.held(&[a, b], a, 1)));
    }
}
