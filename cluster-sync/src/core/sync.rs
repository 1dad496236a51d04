//! The handlers of a round's messages: SyncStart, State, Promise, Update and
//! UpdateComplete, and the end of the round. DESIGN.md, "A round" and "Terms", says why
//! each step is safe.
use std::collections::BTreeSet;

use super::db::Database;
use super::event::Action;
use super::leader::{select_leader, updates_needed};
use super::message::Body;
use super::node::{Act, Node};
use super::round::{PeerState, Round, Stage, MAX_SYNC_ENTRIES};
use super::types::{DbIndex, Epoch, Member, Mode, Term};

impl<D: Database> Node<D> {
    /// Durably promise `term` (above the current promise); `false` if the member
    /// stopped because it could not.
    fn promise(&mut self, term: Term, out: &mut Vec<Act<D>>) -> bool {
        debug_assert!(
            term > self.db.promised_term(),
            "a promise only grows: {} -> {term}",
            self.db.promised_term()
        );
        if let Err(e) = self.db.set_promised_term(term) {
            self.fail("persisting the promised term", &e, out);
            return false;
        }
        debug_assert_eq!(self.db.promised_term(), term, "the promise reads back");
        true
    }

    /// (Re)start a round. After a confchg the lowest member sends the SyncStart (as in
    /// pmxcfs); a member that became quorate after its State said otherwise sends one
    /// once the round ended without a term. All members deliver SyncStarts in the same
    /// order and are at the same point of the round when they do, so all follow the
    /// same rounds.
    pub(super) fn on_sync_start(
        &mut self,
        from: Member,
        epoch: Epoch,
        proposed_term: Term,
        out: &mut Vec<Act<D>>,
    ) {
        if from == self.me {
            self.resync.sent = false;
        }
        // SyncStarts sent while processing an older confchg can land in this
        // configuration (CPG orders a message after the confchg its sender had not seen
        // yet). A round that accepted a term, or one under way, ignores all but the
        // lowest member's at the start (pmxcfs's rule), so such stale ones cannot keep
        // restarting it; a round that ended without a term may be restarted by anyone.
        let fresh_round = self.mode == Mode::StartSync && from == self.members[0];
        if self.round.is(epoch) || !(fresh_round || self.round.termless()) {
            tracing::debug!(me = %self.me, %from, %epoch, mode = ?self.mode, "sync start ignored");
            return;
        }
        tracing::debug!(me = %self.me, %epoch, proposed_term, "sync start");
        self.round = Round::started(epoch, proposed_term, self.quorate);
        self.set_mode(Mode::StartSync, out);
        let index = self.db.index();
        let mut promised_term = self.db.promised_term();
        // Promise the proposed term now if it is above everything this member promised
        // or accepted: if every member can, the States double as the Promises. Not when
        // not quorate: the round then picks no term anyway. A promise already given to
        // this configuration may be repeated (its lowest member often sends several
        // SyncStarts with one proposed term): only one round of a configuration can
        // accept a term, as a round that picked one is never restarted (see above) and
        // a restarted one accepted nothing.
        let fresh = proposed_term > promised_term.max(index.term);
        let promised_proposed_term = self.quorate
            && (fresh
                || (self.term_promised_here == Some(proposed_term) && index.term < proposed_term));
        if promised_proposed_term && fresh {
            if !self.promise(proposed_term, out) {
                return;
            }
            promised_term = proposed_term;
            self.term_promised_here = Some(proposed_term);
        }
        let body = Body::State {
            epoch,
            quorate: self.quorate,
            promised_proposed_term,
            promised_term,
            index,
            switch_ready: false,
        };
        self.send(body, out);
    }

    /// A member's State; the last one settles the round.
    pub(super) fn on_state(
        &mut self,
        from: Member,
        epoch: Epoch,
        state: PeerState,
        out: &mut Vec<Act<D>>,
    ) {
        if self.mode != Mode::StartSync || !self.round.is(epoch) {
            return; // a stale round
        }
        let Stage::Collecting { states } = &mut self.round.stage else {
            return;
        };
        if states.contains_key(&from) {
            tracing::warn!(me = %self.me, %from, "duplicate state ignored");
            return;
        }
        states.insert(from, state);
        if states.len() == self.members.len() {
            self.settle(out);
        }
    }

    /// Every State is in: pick the leader and the round's term, promise it on the slow
    /// path, send the updates if this member leads.
    fn settle(&mut self, out: &mut Vec<Act<D>>) {
        let Stage::Collecting { states } = std::mem::replace(&mut self.round.stage, Stage::Opening)
        else {
            unreachable!("settled only while collecting");
        };
        let states: Vec<(Member, PeerState)> = states.into_iter().collect();
        let indexes: Vec<(Member, DbIndex)> =
            states.iter().map(|(m, s)| (*m, s.index.clone())).collect();
        let li = select_leader(&indexes).expect("at least this member's state");
        let (leader, leader_index) = indexes[li].clone();
        let highest = states
            .iter()
            .map(|(_, s)| s.promised_term.max(s.index.term))
            .max()
            .expect("at least this member's state");
        self.highest_term_seen = self.highest_term_seen.max(highest);
        // A new term only when every member said quorate: then this configuration is a
        // majority and shares a member with every other quorate one. If every member
        // promised the proposed term before sending its State, that is the term
        // (everyone promised it before anyone can accept it). Otherwise the term is one
        // above every promise and term in the round, which every member must promise
        // first. Either way it exceeds every term here, so accepting it raises every
        // tree.
        let all_quorate = states.iter().all(|(_, s)| s.quorate);
        let all_promised = states.iter().all(|(_, s)| s.promised_proposed_term);
        let (term, slow_path) = match (all_quorate, all_promised, self.round.proposed_term) {
            (false, ..) => (None, false),
            (true, true, Some(p)) => (Some(p), false),
            (true, ..) => (Some(highest + 1), true),
        };
        if let Some(t) = term {
            debug_assert!(
                states.iter().all(|(_, s)| s.index.term < t),
                "a round's term {t} is above every member's tree term"
            );
        }
        // Without a new term, a member keeps its own tree if the leader's is older than
        // a term it promised (Paxos' acceptor never accepts below its promise): a
        // quorate configuration may have accepted that term with a tree lacking the
        // leader's newer writes, so copying could only spread a superseded branch, e.g.
        // make a write a minority applied look held by a majority.
        let adopts = |s: &PeerState| term.is_some() || leader_index.term >= s.promised_term;
        // Trees equal to the leader's need no update: with a new term they are only
        // relabelled, and without one a lower label is harmless (never above the
        // leader's, and the tree is the same).
        let unsynced: Vec<&DbIndex> = states
            .iter()
            .filter(|(_, s)| !s.index.same_content(&leader_index) && adopts(s))
            .map(|(_, s)| &s.index)
            .collect();
        let mine = &states
            .iter()
            .find(|(m, _)| *m == self.me)
            .expect("this member's state")
            .1;
        let my_mode = if mine.index.same_content(&leader_index) {
            Mode::Synced
        } else if adopts(mine) {
            Mode::Update
        } else {
            Mode::Detached
        };
        tracing::debug!(me = %self.me, %leader, unsynced = unsynced.len(), ?term, "all states received");
        let epoch = self.round.epoch.expect("a collecting round has its epoch");
        if let (Some(t), true) = (term, slow_path) {
            // Durable before the Promise leaves: once every Promise is delivered some
            // member may accept the term, and a crash of this one must not let it
            // forget that, or another configuration could pick the same term.
            if !self.promise(t, out) {
                return;
            }
            self.send(Body::Promise { epoch, term: t }, out);
        }
        let await_update = !unsynced.is_empty();
        if await_update && leader == self.me {
            let inodes = updates_needed(&leader_index, unsynced);
            self.send_updates(epoch, &inodes, out);
        }
        self.round.term = term;
        self.round.stage = Stage::Settling {
            leader,
            leader_index,
            await_update,
            update_complete: false,
            updates: Vec::new(),
            promises: slow_path.then(BTreeSet::new),
        };
        self.set_mode(my_mode, out);
        self.try_finish_round(out);
    }

    /// The leader's entries for `inodes`, then the round's UpdateComplete. One entry
    /// per message as pmxcfs does: a single entry may be up to 1 MiB, close to
    /// corosync's atomic message size.
    pub(super) fn send_updates(&mut self, epoch: Epoch, inodes: &[u64], out: &mut Vec<Act<D>>) {
        for entry in self.db.entries(inodes) {
            self.send(
                Body::Update {
                    epoch,
                    entries: vec![entry],
                },
                out,
            );
        }
        self.send(Body::UpdateComplete { epoch }, out);
    }

    /// A member's Promise of the round's term (slow path).
    pub(super) fn on_promise(
        &mut self,
        from: Member,
        epoch: Epoch,
        term: Term,
        out: &mut Vec<Act<D>>,
    ) {
        let round_term = self.round.term;
        if !self.round.is(epoch) {
            return; // a stale round
        }
        let Stage::Settling {
            promises: Some(promises),
            ..
        } = &mut self.round.stage
        else {
            return;
        };
        if round_term != Some(term) {
            // Every member computes the term from the same States; a different one
            // means a peer speaking another protocol. Never count it.
            tracing::error!(me = %self.me, %from, term, ?round_term, "promise for another term ignored");
            return;
        }
        promises.insert(from);
        self.try_finish_round(out);
    }

    /// Entries from the leader for a member whose tree differs.
    pub(super) fn on_update(
        &mut self,
        from: Member,
        epoch: Epoch,
        entries: Vec<D::Entry>,
        out: &mut Vec<Act<D>>,
    ) {
        if self.mode != Mode::Update || !self.round.is(epoch) {
            return;
        }
        let Stage::Settling {
            leader,
            update_complete: false,
            updates,
            ..
        } = &mut self.round.stage
        else {
            return;
        };
        if *leader != from {
            return;
        }
        if updates.len() + entries.len() > MAX_SYNC_ENTRIES {
            let e = format!("the leader sent more than {MAX_SYNC_ENTRIES} entries");
            return self.fail("receiving the leader's updates", &e, out);
        }
        updates.extend(entries);
    }

    /// The leader sent every update of the round.
    pub(super) fn on_update_complete(&mut self, from: Member, epoch: Epoch, out: &mut Vec<Act<D>>) {
        if !self.round.is(epoch) {
            return;
        }
        let Stage::Settling {
            leader,
            update_complete,
            ..
        } = &mut self.round.stage
        else {
            return;
        };
        if *leader != from {
            return;
        }
        *update_complete = true;
        self.try_finish_round(out);
    }

    /// End the round once the leader's updates are in (if any were needed) and every
    /// member promised the term (if the round has one on the slow path): accept the
    /// leader's tree, with the round's term, then let writes flow.
    fn try_finish_round(&mut self, out: &mut Vec<Act<D>>) {
        let members = self.members.len();
        let Stage::Settling {
            await_update,
            update_complete,
            promises,
            ..
        } = &self.round.stage
        else {
            return;
        };
        if (*await_update && !*update_complete)
            || promises.as_ref().is_some_and(|p| p.len() < members)
        {
            return;
        }
        let Stage::Settling {
            leader,
            leader_index,
            updates,
            ..
        } = std::mem::replace(&mut self.round.stage, Stage::Opening)
        else {
            unreachable!("matched above");
        };
        let epoch = self.round.epoch.expect("a settling round has its epoch");
        let lead = (leader_index.term, leader_index.version);
        if let Some(t) = self.round.term {
            debug_assert!(
                t <= self.db.promised_term(),
                "a term is accepted only after it was promised"
            );
        }
        if self.mode == Mode::Update {
            // The tree and its term in one durable step: a new term on the old tree
            // would let a stale tree out-rank the ones that accepted the term, and the
            // new tree under an old term would no longer be a prefix of that term's
            // history. Without a new term this is a copy of the leader's labelled tree.
            let target = DbIndex {
                term: self.round.term.unwrap_or(leader_index.term),
                ..leader_index
            };
            debug_assert!(
                target.term >= self.db.term(),
                "installing never lowers the term"
            );
            self.highest_term_seen = self.highest_term_seen.max(target.term);
            if let Err(e) = self.db.install_update(&target, updates) {
                return self.fail("installing the leader's state", &e, out);
            }
            debug_assert!(
                self.db.index().same_content(&target) && self.db.term() == target.term,
                "the installed tree is the leader's"
            );
            out.push(Action::SyncInstalled { leader, epoch });
            self.set_mode(Mode::Synced, out);
        } else if let Some(term) = self.round.term {
            // This tree already is the leader's: relabel it before applying writes of
            // the term on top of it.
            if let Err(e) = self.db.set_term(term) {
                return self.fail("persisting the term", &e, out);
            }
            debug_assert_eq!(self.db.term(), term, "the term reads back");
        }
        self.round.stage = Stage::Synced {
            accepted: self.round.term.is_some(),
        };
        self.after_round(lead, out);
    }
}
