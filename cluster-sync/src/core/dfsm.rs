//! Compat mode (DESIGN.md, "Compat mode"): the round and write rules of pmxcfs 9.1.6's
//! dfsm (`dfsm.c`, `dcdb.c`), so that a member shares a group with pmxcfs daemons and
//! every member, C or Rust, applies the same writes in the same order to the same tree.
//!
//! Where it differs from the term protocol: the leader is the highest (version, mtime)
//! alone; no terms or promises; every member applies writes as soon as it is synced
//! itself (the leader before the others have installed its tree); writes are answered
//! at their own delivery, with no confirmation (pmxcfs's guarantee, and its window); the
//! queue of writes delivered during a round survives a membership change without
//! joiners; a member that meets anything unexpected leaves, i.e. stops (mode `Error`) and
//! is joined again by its adapter, which resyncs it, as pmxcfs's `dfsm_set_mode(LEAVE)`.
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::db::{ApplyError, CoreError, Database};
use super::event::Action;
use super::leader::{select_leader_dfsm, updates_needed};
use super::message::Body;
use super::node::{Act, Node};
use super::round::MAX_SYNC_ENTRIES;
use super::types::{DbIndex, Digest, Epoch, Member, Mode, Term};
use super::writes::{Delivered, MAX_QUEUED_PER_MEMBER};

/// One member's dfsm state in the current configuration.
#[derive(Debug)]
pub(super) struct DfsmRound<O, E> {
    /// pmxcfs's `sync_epoch`: made at the confchg, replaced by the SyncStart's.
    pub epoch: Option<Epoch>,
    /// The States of the round, by member.
    states: BTreeMap<Member, DbIndex>,
    /// Members known synced: the leader and those whose index equals its, then all at
    /// the leader's UpdateComplete.
    synced: BTreeSet<Member>,
    /// The round's leader and its index, once every State is in.
    leader: Option<(Member, DbIndex)>,
    /// The leader's entries, until its UpdateComplete.
    updates: Vec<E>,
    /// Members whose State of this round offered the switch.
    ready: BTreeSet<Member>,
    /// Every State offered it: at the round's UpdateComplete, every member switches
    /// with its tree labelled this (the highest label of the round's States).
    switch_at: Option<Term>,
    /// pmxcfs's `msg_queue`: writes delivered while this member was not synced, sorted
    /// by their sender's message count (stable), as `message_queue_sort_fn` sorts it.
    /// It outlives a membership change without joiners.
    msg_queue: Vec<Delivered<O>>,
    /// pmxcfs's `sync_queue`: writes of synced members delivered while this member
    /// waits for the leader's updates, in delivery order; applied first after them.
    sync_queue: Vec<Delivered<O>>,
    /// Name of the next check this member requests (pmxcfs's `csum_counter`).
    pub csum_counter: u64,
    /// The check this member delivered last (pmxcfs's `csum_id`, `csum_epoch`, `csum`).
    pub csum: Option<(Epoch, u64, Digest)>,
    /// This member's state messages on the wire, oldest first, with their seq: pmxcfs's
    /// state messages carry no count, so the seq of an own one delivered back is found
    /// here, and CPG's FIFO order then tells which own writes sent before it were lost.
    own_sent: VecDeque<(StateKey, u64)>,
    /// NORMALs this process sent (pmxcfs's `msgcount`).
    normals: u64,
    /// State messages sent since the last NORMAL.
    states_since: u64,
}

/// What names a state message among its sender's: kind, round, and the check it is
/// about. A round's Updates share one key; CPG delivers them in order, so the first
/// one on the wire is the one delivered (if one was lost, a later seq is found for
/// the next, which only delays finding a lost write, never invents one).
pub(super) type StateKey = (&'static str, Epoch, u64);

/// In compat mode a message's seq is its sender's NORMAL count shifted by this many
/// bits: pmxcfs numbers its NORMALs 1, 2, … (the wire's `count`, [`count_of`]) and
/// its state messages not at all, so an own state message gets the seq of the last
/// NORMAL before it plus its place among the state messages since.
pub const SEQ_SHIFT: u32 = 24;

/// The wire `count` of a compat-mode NORMAL's seq.
pub fn count_of(seq: u64) -> u64 {
    seq >> SEQ_SHIFT
}

/// The seq of a delivered compat-mode NORMAL with wire `count` (pmxcfs's counts
/// restart with every process and stay far below 2^40).
pub fn seq_of(count: u64) -> u64 {
    count.saturating_mul(1 << SEQ_SHIFT)
}

/// State messages of this member kept on the wire at most: a leader sends one Update
/// per entry of the tree. Beyond it the oldest are forgotten, and a write lost before
/// them is found by a later own message instead.
const OWN_SENT_MAX: usize = MAX_SYNC_ENTRIES + 64;

/// The key of a state message (`None` for a Normal).
pub(super) fn state_key<O, E>(body: &Body<O, E>) -> Option<StateKey> {
    let (epoch, extra) = match body {
        Body::Normal { .. } => return None,
        Body::SyncStart { epoch, .. }
        | Body::State { epoch, .. }
        | Body::UpdateComplete { epoch }
        | Body::Update { epoch, .. }
        | Body::Promise { epoch, .. } => (*epoch, 0),
        Body::VerifyRequest { epoch, id } | Body::Verify { epoch, id, .. } => (*epoch, *id),
    };
    Some((body.kind(), epoch, extra))
}

impl<O, E> Default for DfsmRound<O, E> {
    fn default() -> Self {
        DfsmRound {
            epoch: None,
            states: BTreeMap::new(),
            synced: BTreeSet::new(),
            leader: None,
            updates: Vec::new(),
            ready: BTreeSet::new(),
            switch_at: None,
            msg_queue: Vec::new(),
            sync_queue: Vec::new(),
            csum_counter: 0,
            csum: None,
            own_sent: VecDeque::new(),
            normals: 0,
            states_since: 0,
        }
    }
}

impl<O, E> DfsmRound<O, E> {
    /// The seq of the next message this member sends, a NORMAL or not.
    pub fn next_seq(&mut self, normal: bool) -> u64 {
        if normal {
            self.normals += 1;
            self.states_since = 0;
            seq_of(self.normals)
        } else {
            // Beyond 2^24 state messages between two NORMALs (more than a leader sends
            // in a round) they share a seq: only finding a lost write waits longer.
            self.states_since = (self.states_since + 1).min((1 << SEQ_SHIFT) - 1);
            seq_of(self.normals) | self.states_since
        }
    }

    /// This member sent the state message `key` as `seq`.
    pub fn sent_state(&mut self, key: StateKey, seq: u64) {
        if self.own_sent.len() == OWN_SENT_MAX {
            self.own_sent.pop_front();
        }
        self.own_sent.push_back((key, seq));
    }

    /// The seq of this member's state message `key`, delivered back now; those sent
    /// before it that were not delivered never will be.
    pub fn delivered_state(&mut self, key: &StateKey) -> Option<u64> {
        let at = self.own_sent.iter().position(|(k, _)| k == key)?;
        let seq = self.own_sent[at].1;
        self.own_sent.drain(..=at);
        Some(seq)
    }

    /// Writes queued by this member.
    pub fn queued(&self) -> usize {
        self.msg_queue.len() + self.sync_queue.len()
    }

    fn queue_sorted(&mut self, d: Delivered<O>) {
        // After every equal count: GLib's insert_sorted keeps delivery order on ties.
        let at = self.msg_queue.partition_point(|q| q.seq <= d.seq);
        self.msg_queue.insert(at, d);
    }
}

impl<D: Database> Node<D> {
    /// pmxcfs's "leave": the member stops and its adapter joins it again as a new
    /// member, which resyncs it.
    fn leave(&mut self, why: &str, out: &mut Vec<Act<D>>) {
        self.fail("the pmxcfs protocol", why, out);
    }

    fn lowest_nodeid(&self) -> bool {
        self.members.first().map(|m| m.nodeid) == Some(self.me.nodeid)
    }

    /// `dfsm_cpg_confchg_callback`.
    pub(super) fn dfsm_confchg(
        &mut self,
        mut members: Vec<Member>,
        joined: Vec<Member>,
        out: &mut Vec<Act<D>>,
    ) {
        if self.mode == Mode::Error {
            return;
        }
        members.sort();
        members.dedup();
        self.members = members;
        self.wire = None;
        #[cfg(debug_assertions)]
        self.last_seq.clear();
        let epoch = self.next_epoch();
        let r = &mut self.dfsm;
        r.epoch = Some(epoch);
        r.csum = None;
        r.csum_counter = 0;
        r.states.clear();
        r.synced.clear();
        r.leader = None;
        r.updates.clear();
        r.ready.clear();
        r.switch_at = None;
        // pmxcfs frees the sync queue at every confchg: a member still installing
        // loses those writes, and gets them from the next round's leader.
        r.sync_queue.clear();
        let members = &self.members;
        r.msg_queue.retain(|d| members.contains(&d.from));
        if !self.members.contains(&self.me) {
            let all = self.writes.take_all();
            for r in all {
                Self::reply(r.req, Err(D::core_error(CoreError::Interrupted)), out);
            }
            self.dfsm.msg_queue.clear();
            self.set_mode(Mode::Start, out);
            return;
        }
        if self.members.len() == 1 {
            self.dfsm.synced.insert(self.me);
            self.set_mode(Mode::Synced, out);
            self.dfsm_deliver_queue(out);
            if self.switch_ready && self.mode == Mode::Synced {
                // A one-node cluster: the round is this member alone.
                let term = self.db.term();
                self.dfsm_switch(term, out);
            }
            return;
        }
        if !joined.is_empty() && !self.dfsm.msg_queue.is_empty() {
            // pmxcfs makes every member re-send its own queued writes, so that joiners
            // get the same queue, and drops the rest: each sender re-sends its own.
            let own: Vec<u64> = std::mem::take(&mut self.dfsm.msg_queue)
                .into_iter()
                .filter(|d| d.from == self.me)
                .map(|d| d.seq)
                .collect();
            self.requeue_dfsm(own, out);
        }
        self.set_mode(Mode::StartSync, out);
        if self.lowest_nodeid() {
            self.send(
                Body::SyncStart {
                    epoch,
                    proposed_term: 0,
                },
                out,
            );
        }
    }

    /// Own writes a membership change took back: sent again once this member is
    /// synced (pmxcfs re-sends them at once; either way they are applied after the
    /// round, by every member alike).
    fn requeue_dfsm(&mut self, seqs: Vec<u64>, out: &mut Vec<Act<D>>) {
        let expired = self.writes.requeue(seqs, self.now);
        for (_, r) in expired {
            Self::reply(r.req, Err(D::core_error(CoreError::Interrupted)), out);
        }
    }

    /// A delivered message, in compat mode (`dfsm_cpg_deliver_callback`).
    pub(super) fn dfsm_deliver(
        &mut self,
        from: Member,
        seq: u64,
        time: u32,
        body: Body<D::Op, D::Entry>,
        out: &mut Vec<Act<D>>,
    ) {
        if let Body::Normal { ops, .. } = body {
            let d = Delivered {
                from,
                seq,
                time,
                ops,
                pos: 0,
            };
            return self.dfsm_normal(d, out);
        }
        let epoch = match &body {
            Body::SyncStart { epoch, .. }
            | Body::State { epoch, .. }
            | Body::Update { epoch, .. }
            | Body::UpdateComplete { epoch }
            | Body::VerifyRequest { epoch, .. }
            | Body::Verify { epoch, .. }
            | Body::Promise { epoch, .. } => *epoch,
            Body::Normal { .. } => unreachable!("handled above"),
        };
        if !matches!(body, Body::SyncStart { .. }) && self.dfsm.epoch != Some(epoch) {
            tracing::debug!(me = %self.me, %from, kind = body.kind(), "message of another round ignored");
            return;
        }
        match (self.mode, body) {
            (Mode::Synced, Body::UpdateComplete { .. }) => {
                self.dfsm.synced.extend(self.members.iter().copied());
                self.dfsm_deliver_queue(out);
                self.dfsm_switch_point(out);
            }
            (Mode::Synced, Body::VerifyRequest { id, .. }) => {
                let csum = self.db.checksum();
                self.dfsm.csum = Some((epoch, id, csum));
                if from == self.me {
                    self.send(
                        Body::Verify {
                            epoch,
                            id,
                            checksum: csum,
                        },
                        out,
                    );
                }
            }
            (Mode::Synced, Body::Verify { id, checksum, .. }) => {
                if self.dfsm.csum.map(|(e, i, _)| (e, i)) != Some((epoch, id)) {
                    tracing::debug!(me = %self.me, "check skipped: no checksum saved");
                    return;
                }
                let (_, _, mine) = self.dfsm.csum.expect("checked");
                self.verify.checks += 1;
                if mine != checksum {
                    self.verify.mismatches += 1;
                    let e = format!("wrong checksum against {from}'s at check {id}: restarting");
                    self.leave(&e, out);
                }
            }
            // Already synced: a late round's messages are not for this member.
            (Mode::Synced, _) => {}
            (Mode::StartSync, Body::SyncStart { .. }) => {
                if from.nodeid != self.members[0].nodeid {
                    // pmxcfs logs it and still follows it.
                    tracing::error!(me = %self.me, %from, "sync request from a member that is not the lowest");
                }
                self.dfsm.epoch = Some(epoch);
                self.dfsm.states.clear();
                // A round's offers count in that round only.
                self.dfsm.ready.clear();
                self.dfsm.switch_at = None;
                let index = self.db.index();
                let body = Body::State {
                    epoch,
                    quorate: self.quorate,
                    promised_proposed_term: false,
                    promised_term: 0,
                    index,
                    switch_ready: self.switch_ready,
                };
                self.send(body, out);
            }
            (
                Mode::StartSync,
                Body::State {
                    index,
                    switch_ready,
                    ..
                },
            ) => {
                if self.dfsm.states.contains_key(&from) {
                    return self.leave(&format!("duplicate state from {from}"), out);
                }
                if switch_ready {
                    self.dfsm.ready.insert(from);
                }
                self.dfsm.states.insert(from, index);
                if self.dfsm.states.len() == self.members.len() {
                    self.dfsm_all_states(out);
                }
            }
            (Mode::Update, Body::Update { entries, .. }) => {
                if self.dfsm.updates.len() + entries.len() > MAX_SYNC_ENTRIES {
                    let e = format!("the leader sent more than {MAX_SYNC_ENTRIES} entries");
                    return self.leave(&e, out);
                }
                self.dfsm.updates.extend(entries);
            }
            (Mode::Update, Body::UpdateComplete { .. }) => self.dfsm_commit(out),
            (_, Body::VerifyRequest { .. } | Body::Verify { .. }) => {
                tracing::debug!(me = %self.me, "check ignored while not synced");
            }
            (mode, body) => {
                let e = format!("unexpected {} from {from} in mode {mode:?}", body.kind());
                self.leave(&e, out);
            }
        }
    }

    /// Every State is in (`dcdb_process_state_update`): the leader is the highest
    /// version, then mtime, then the lowest member; members whose index equals the
    /// leader's are synced; the leader sends what the others lack, and an
    /// UpdateComplete in every round.
    fn dfsm_all_states(&mut self, out: &mut Vec<Act<D>>) {
        let states: Vec<(Member, DbIndex)> =
            std::mem::take(&mut self.dfsm.states).into_iter().collect();
        let li = select_leader_dfsm(&states).expect("at least this member's state");
        let (leader, leader_index) = states[li].clone();
        self.dfsm.synced = states
            .iter()
            .filter(|(m, i)| *m == leader || i.same_content(&leader_index))
            .map(|(m, _)| *m)
            .collect();
        tracing::info!(me = %self.me, %leader, synced = self.dfsm.synced.len(), "all states received");
        let ready = std::mem::take(&mut self.dfsm.ready);
        if states.iter().all(|(m, _)| ready.contains(m)) {
            let term = states.iter().map(|(_, i)| i.term).max().unwrap_or(0);
            tracing::info!(me = %self.me, term, "every member offers the switch: it happens at this round's end");
            self.dfsm.switch_at = Some(term);
        }
        if leader == self.me {
            let unsynced = states
                .iter()
                .filter(|(m, _)| !self.dfsm.synced.contains(m))
                .map(|(_, i)| i);
            let inodes = updates_needed(&leader_index, unsynced);
            let epoch = self
                .dfsm
                .epoch
                .expect("a round that collects states has its epoch");
            self.send_updates(epoch, &inodes, out);
        }
        self.dfsm.leader = Some((leader, leader_index));
        if self.dfsm.synced.contains(&self.me) {
            self.set_mode(Mode::Synced, out);
        } else {
            self.set_mode(Mode::Update, out);
        }
        self.dfsm_deliver_queue(out);
    }

    /// The leader's UpdateComplete while this member waits for its tree
    /// (`dcdb_commit`): install it, then apply the sync queue and the rest.
    fn dfsm_commit(&mut self, out: &mut Vec<Act<D>>) {
        let Some((leader, leader_index)) = self.dfsm.leader.clone() else {
            return self.leave("update complete before the states", out);
        };
        let updates = std::mem::take(&mut self.dfsm.updates);
        // Terms mean nothing here: the tree keeps its label (the switch to the term
        // protocol starts above every label any member holds).
        let target = DbIndex {
            term: self.db.term(),
            ..leader_index
        };
        if let Err(e) = self.db.install_update(&target, updates) {
            return self.leave(&format!("installing the leader's tree: {e}"), out);
        }
        let epoch = self
            .dfsm
            .epoch
            .expect("a round that installs has its epoch");
        out.push(Action::SyncInstalled { leader, epoch });
        self.dfsm.synced.extend(self.members.iter().copied());
        self.set_mode(Mode::Synced, out);
        for d in std::mem::take(&mut self.dfsm.sync_queue) {
            self.dfsm_apply(d, out);
            if self.mode != Mode::Synced {
                return;
            }
        }
        self.dfsm_deliver_queue(out);
        self.dfsm_switch_point(out);
    }

    /// After a round's UpdateComplete, every write delivered before it applied: if the
    /// round's States all offered the switch, this is the switch point, the same one
    /// on every member (CPG's agreed order). A member that left meanwhile has stopped.
    fn dfsm_switch_point(&mut self, out: &mut Vec<Act<D>>) {
        if self.mode != Mode::Synced {
            return;
        }
        if let Some(term) = self.dfsm.switch_at {
            self.dfsm_switch(term, out);
        }
    }

    /// Switch to the term protocol (DESIGN.md, "The switch"): label the tree `term`
    /// unless it already carries more (a member that missed the switch point keeps a
    /// higher label of its own), and hand the unanswered requests to the adapter.
    /// Every tree of a switch round holds the same content, so one label for all says
    /// the truth, and it is at least every label of the cluster: a node holding an old
    /// high label from before compat mode cannot later out-rank the term protocol's
    /// new history with a stale tree.
    pub(super) fn dfsm_switch(&mut self, term: super::types::Term, out: &mut Vec<Act<D>>) {
        let term = term.max(self.db.term());
        if term > self.db.term() {
            if let Err(e) = self.db.set_term(term) {
                return self.leave(&format!("labelling the tree for the switch: {e}"), out);
            }
        }
        let pending = self
            .writes
            .take_all()
            .into_iter()
            .map(|r| (r.req, r.op))
            .collect();
        self.dfsm.msg_queue.clear();
        self.dfsm.sync_queue.clear();
        self.switched = true;
        tracing::info!(me = %self.me, term, "switched to the term protocol");
        out.push(Action::Switched { term, pending });
    }

    /// `dfsm_deliver_queue`: synced, apply the queued writes of synced senders in the
    /// queue's order; installing, move them to the sync queue. Writes of members still
    /// installing stay queued.
    fn dfsm_deliver_queue(&mut self, out: &mut Vec<Act<D>>) {
        let queue = std::mem::take(&mut self.dfsm.msg_queue);
        let mut keep = Vec::new();
        let mut ready = Vec::new();
        for d in queue {
            if !self.members.contains(&d.from) {
                continue;
            }
            if self.dfsm.synced.contains(&d.from) {
                ready.push(d);
            } else {
                keep.push(d);
            }
        }
        self.dfsm.msg_queue = keep;
        match self.mode {
            Mode::Synced => {
                for d in ready {
                    self.dfsm_apply(d, out);
                    if self.mode != Mode::Synced {
                        return;
                    }
                }
            }
            Mode::Update => self.dfsm.sync_queue.extend(ready),
            _ => {
                // Not reached: the queue is delivered only synced or installing.
                self.dfsm.msg_queue.extend(ready);
                self.dfsm.msg_queue.sort_by_key(|d| d.seq);
            }
        }
    }

    /// A delivered write: applied if this member is synced, else queued as pmxcfs
    /// queues it.
    fn dfsm_normal(&mut self, d: Delivered<D::Op>, out: &mut Vec<Act<D>>) {
        if d.from == self.me {
            self.writes.mark_delivered(d.seq);
        }
        if self.mode == Mode::Synced {
            return self.dfsm_apply(d, out);
        }
        if self.dfsm.queued() >= self.members.len() * MAX_QUEUED_PER_MEMBER {
            let e =
                format!("more than {MAX_QUEUED_PER_MEMBER} writes per member queued by one round");
            return self.leave(&e, out);
        }
        if self.mode == Mode::Update && self.dfsm.synced.contains(&d.from) {
            self.dfsm.sync_queue.push(d);
        } else {
            self.dfsm.queue_sorted(d);
        }
    }

    /// Apply a write (`dcdb_deliver`) and answer it if it is this member's: a write
    /// delivered to a member without quorum makes it leave, to be resynced.
    fn dfsm_apply(&mut self, d: Delivered<D::Op>, out: &mut Vec<Act<D>>) {
        let own = d.from == self.me;
        let requests = if own {
            self.writes.answer(d.seq)
        } else {
            Vec::new()
        };
        if !self.quorate {
            for r in requests {
                Self::reply(r.req, Err(D::core_error(CoreError::NoQuorum)), out);
            }
            return self.leave("received a write while not quorate: resyncing", out);
        }
        let mut requests = requests.into_iter();
        for op in d.ops {
            let result = match self.db.apply(&op, d.from.nodeid, d.time) {
                Ok(outcome) => {
                    out.push(Action::Applied {
                        op,
                        outcome,
                        writer: d.from.nodeid,
                        time: d.time,
                        local: own,
                    });
                    Ok(())
                }
                Err(ApplyError::Refused(e)) => Err(e),
                Err(ApplyError::Storage(e)) => {
                    // pmxcfs sets `memdb->errors` and stops for good; this member is
                    // joined again and resynced instead.
                    self.leave(&format!("applying a write: {e}"), out);
                    return;
                }
            };
            if let Some(r) = requests.next() {
                Self::reply(r.req, result, out);
            }
        }
    }

    /// The adapter's timer (`dfsm_verify_request`): the lowest node of a synced
    /// configuration asks for checksums, unless its previous request is not back yet.
    pub(super) fn dfsm_verify_now(&mut self, out: &mut Vec<Act<D>>) {
        let Some(epoch) = self.dfsm.epoch else {
            return;
        };
        if !self.lowest_nodeid() || self.mode != Mode::Synced {
            return;
        }
        let last = self.dfsm.csum.map_or(0, |(_, id, _)| id);
        if self.dfsm.csum_counter != last {
            tracing::info!(me = %self.me, "check delayed: the previous one is not back");
            return;
        }
        self.dfsm.csum_counter += 1;
        let id = self.dfsm.csum_counter;
        self.send(Body::VerifyRequest { epoch, id }, out);
    }

    /// Send every waiting request, one write per message, as pmxcfs does (it keeps
    /// several on the wire, one per waiting caller).
    pub(super) fn dfsm_pump(&mut self, out: &mut Vec<Act<D>>) {
        if !self.writable() {
            return;
        }
        while let Some(r) = self.writes.next_one() {
            let time = r.time;
            let ops = vec![r.op.clone()];
            let seq = self.send_at(Body::Normal { ops, ack: 0 }, time, out);
            self.writes.sent(seq, vec![r]);
        }
    }
}
