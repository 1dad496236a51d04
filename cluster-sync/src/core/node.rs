//! One member's protocol state machine.
//!
//! Follows pmxcfs's dfsm (confchg → SYNC_START → STATE → leader → UPDATE →
//! UPDATE_COMPLETE), with these deliberate differences:
//!
//! * Writes are multicast and applied only once the *whole* configuration is synced
//!   (every member equal to the leader, or the leader's UpdateComplete delivered). Writes
//!   delivered earlier are queued by every member and applied after that point in
//!   delivery order, so all members apply the same ops to the same snapshot. pmxcfs lets
//!   already-synced members apply at once, which orders them differently from the
//!   members still installing and can lose an acknowledged write if the configuration
//!   changes before those members commit.
//! * On a configuration change the write queue is dropped on every member alike
//!   (CPG delivered it to all of them), so nobody applied those ops; their writers get
//!   `CoreError::Interrupted` (EAGAIN) instead of pmxcfs's re-send to joiners.
//! * A writer whose message is lost (it delivers a later message of its own first:
//!   CPG is FIFO per sender) fails that request with `Interrupted`; it is never
//!   acknowledged and never applied.
//! * The sync exchange runs for a single-member configuration too (two messages), so
//!   the delivery of its own State tells a lone node which of its messages were lost.
//! * A write delivered while not quorate is not applied by any member (all members of
//!   a configuration share its quorum) and its writer gets `NoQuorum`; pmxcfs leaves
//!   the group instead.
use std::collections::{BTreeMap, VecDeque};

use super::db::{CoreError, Database};
use super::event::{Action, Event};
use super::leader::{select_leader, updates_needed};
use super::message::{Body, Message};
use super::types::{DbIndex, Epoch, Member, Mode};

type Msg<D> = Message<<D as Database>::Op, <D as Database>::Entry>;
type Act<D> = Action<<D as Database>::Op, <D as Database>::Entry, <D as Database>::Error>;

/// Whether an own write has been delivered (and queued) or is still on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flight {
    Sent,
    Queued,
}

/// The protocol state of one group member, owning its database.
pub struct Node<D: Database> {
    me: Member,
    db: D,
    mode: Mode,
    quorate: bool,
    now: u32,
    next_seq: u64,
    confchg_counter: u32,
    members: Vec<Member>,
    sync_epoch: Option<Epoch>,
    states: BTreeMap<Member, DbIndex>,
    leader: Option<(Member, DbIndex)>,
    updates: Vec<D::Entry>,
    /// Every member is synced: writes may be sent and are applied on delivery.
    all_synced: bool,
    /// Writes delivered before `all_synced`, in delivery order.
    queue: Vec<(Member, Msg<D>)>,
    /// Local requests waiting for the configuration to be synced, with the time they
    /// were made.
    pending: VecDeque<(u64, D::Op, u32)>,
    /// Own writes multicast and not yet answered, by message seq.
    inflight: BTreeMap<u64, (u64, Flight)>,
}

impl<D: Database> Node<D> {
    /// A member that has not seen a configuration yet (mode `Start`, not quorate).
    pub fn new(me: Member, db: D) -> Self {
        Node {
            me,
            db,
            mode: Mode::Start,
            quorate: false,
            now: 0,
            next_seq: 1,
            confchg_counter: 0,
            members: Vec::new(),
            sync_epoch: None,
            states: BTreeMap::new(),
            leader: None,
            updates: Vec::new(),
            all_synced: false,
            queue: Vec::new(),
            pending: VecDeque::new(),
            inflight: BTreeMap::new(),
        }
    }

    /// This member.
    pub fn me(&self) -> Member {
        self.me
    }

    /// Read access to the database (reads never go through the protocol).
    pub fn db(&self) -> &D {
        &self.db
    }

    /// Give the database back (e.g. when the process "crashes" in the simulator).
    pub fn into_db(self) -> D {
        self.db
    }

    /// Current mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Last quorum state seen.
    pub fn quorate(&self) -> bool {
        self.quorate
    }

    /// Whether every member of the configuration is synced (writes flow).
    pub fn all_synced(&self) -> bool {
        self.all_synced
    }

    /// Whether a write issued now would be sent at once (quorate and all synced);
    /// the fs layer reports write permission bits from this and `quorate`.
    pub fn writable(&self) -> bool {
        self.quorate && self.all_synced && self.mode != Mode::Error
    }

    /// Current members, sorted.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Requests not answered yet (queued locally or on the wire).
    pub fn unanswered(&self) -> usize {
        self.pending.len() + self.inflight.len()
    }

    /// Feed one event; returns the actions to carry out, in order.
    pub fn handle(&mut self, ev: Event<D::Op, D::Entry>) -> Vec<Act<D>> {
        let mut out = Vec::new();
        match ev {
            Event::Tick { now } => self.now = now,
            Event::Quorum(q) => self.on_quorum(q, &mut out),
            Event::LocalRequest { req_id, op } => self.on_request(req_id, op, &mut out),
            Event::ConfChg { members, .. } => self.on_confchg(members, &mut out),
            Event::Deliver { from, msg } => self.on_deliver(from, msg, &mut out),
        }
        out
    }

    fn set_mode(&mut self, m: Mode, out: &mut Vec<Act<D>>) {
        if self.mode != m {
            tracing::debug!(me = %self.me, from = ?self.mode, to = ?m, "mode change");
            self.mode = m;
            out.push(Action::ModeChanged(m));
        }
    }

    fn send(&mut self, body: Body<D::Op, D::Entry>, out: &mut Vec<Act<D>>) -> u64 {
        let now = self.now;
        self.send_at(body, now, out)
    }

    fn send_at(&mut self, body: Body<D::Op, D::Entry>, time: u32, out: &mut Vec<Act<D>>) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        out.push(Action::Multicast(Message { seq, time, body }));
        seq
    }

    fn reply(req_id: u64, result: Result<(), D::Error>, out: &mut Vec<Act<D>>) {
        out.push(Action::Reply { req_id, result });
    }

    fn on_quorum(&mut self, q: bool, out: &mut Vec<Act<D>>) {
        self.quorate = q;
        if !q {
            // pmxcfs refuses writes without quorum at once; waiting requests too.
            for (req, ..) in self.pending.drain(..) {
                Self::reply(req, Err(D::core_error(CoreError::NoQuorum)), out);
            }
        } else {
            self.flush_pending(out);
        }
    }

    fn on_request(&mut self, req_id: u64, op: D::Op, out: &mut Vec<Act<D>>) {
        if self.mode == Mode::Error {
            Self::reply(req_id, Err(D::core_error(CoreError::Failed)), out);
        } else if !self.quorate {
            Self::reply(req_id, Err(D::core_error(CoreError::NoQuorum)), out);
        } else if self.all_synced {
            let seq = self.send(Body::Normal { op }, out);
            self.inflight.insert(seq, (req_id, Flight::Sent));
        } else {
            self.pending.push_back((req_id, op, self.now));
        }
    }

    fn flush_pending(&mut self, out: &mut Vec<Act<D>>) {
        if !(self.quorate && self.all_synced && self.mode != Mode::Error) {
            return;
        }
        // A write carries the time it was requested, not the time it could be sent: a
        // lock release that waited out a sync must not look newer than a lock taken
        // meanwhile (the database refuses releases older than the lock).
        while let Some((req, op, time)) = self.pending.pop_front() {
            let seq = self.send_at(Body::Normal { op }, time, out);
            self.inflight.insert(seq, (req, Flight::Sent));
        }
    }

    /// Drop the write queue; own queued writes were applied nowhere, so fail them.
    fn drop_queue(&mut self, out: &mut Vec<Act<D>>) {
        for (from, msg) in std::mem::take(&mut self.queue) {
            if from == self.me {
                if let Some((req, _)) = self.inflight.remove(&msg.seq) {
                    Self::reply(req, Err(D::core_error(CoreError::Interrupted)), out);
                }
            }
        }
    }

    fn fail_all(&mut self, kind: CoreError, out: &mut Vec<Act<D>>) {
        for (_, (req, _)) in std::mem::take(&mut self.inflight) {
            Self::reply(req, Err(D::core_error(kind)), out);
        }
        for (req, ..) in self.pending.drain(..) {
            Self::reply(req, Err(D::core_error(kind)), out);
        }
        self.queue.clear();
    }

    fn on_confchg(&mut self, mut members: Vec<Member>, out: &mut Vec<Act<D>>) {
        if self.mode == Mode::Error {
            return;
        }
        self.confchg_counter = self.confchg_counter.wrapping_add(1);
        members.sort();
        members.dedup();
        self.members = members;
        self.drop_queue(out);
        self.sync_epoch = None;
        self.states.clear();
        self.leader = None;
        self.updates.clear();
        self.all_synced = false;
        if !self.members.contains(&self.me) {
            // We left the group: nothing we sent can be delivered any more.
            self.fail_all(CoreError::Interrupted, out);
            self.set_mode(Mode::Start, out);
            return;
        }
        self.set_mode(Mode::StartSync, out);
        if self.members[0] == self.me {
            let epoch = Epoch {
                counter: self.confchg_counter,
                nodeid: self.me.nodeid,
                pid: self.me.pid,
            };
            self.send(Body::SyncStart { epoch }, out);
        }
    }

    fn on_deliver(&mut self, from: Member, msg: Msg<D>, out: &mut Vec<Act<D>>) {
        if matches!(self.mode, Mode::Error | Mode::Start) {
            return;
        }
        if !self.members.contains(&from) {
            tracing::warn!(me = %self.me, %from, kind = msg.body.kind(), "message from non-member dropped");
            return;
        }
        if from == self.me {
            // FIFO per sender: own writes sent before this one and still on the wire
            // will never arrive.
            let lost: Vec<u64> = self
                .inflight
                .range(..msg.seq)
                .filter(|(_, (_, f))| *f == Flight::Sent)
                .map(|(s, _)| *s)
                .collect();
            for s in lost {
                if let Some((req, _)) = self.inflight.remove(&s) {
                    tracing::info!(me = %self.me, seq = s, "own write lost in membership change");
                    Self::reply(req, Err(D::core_error(CoreError::Interrupted)), out);
                }
            }
        }
        let Message { seq, time, body } = msg;
        match body {
            Body::Normal { op } => {
                if self.all_synced {
                    self.apply_normal(from, seq, time, op, out);
                } else {
                    if from == self.me {
                        if let Some(f) = self.inflight.get_mut(&seq) {
                            f.1 = Flight::Queued;
                        }
                    }
                    self.queue.push((
                        from,
                        Message {
                            seq,
                            time,
                            body: Body::Normal { op },
                        },
                    ));
                }
            }
            Body::SyncStart { epoch } => {
                if self.mode == Mode::StartSync && from == self.members[0] {
                    tracing::debug!(me = %self.me, %epoch, "sync start");
                    self.sync_epoch = Some(epoch);
                    self.states.clear();
                    let index = self.db.index();
                    self.send(Body::State { epoch, index }, out);
                } else {
                    tracing::debug!(me = %self.me, %from, %epoch, mode = ?self.mode, "sync start ignored");
                }
            }
            Body::State { epoch, index } => {
                if self.mode != Mode::StartSync || self.sync_epoch != Some(epoch) {
                    return; // a stale round
                }
                if self.states.contains_key(&from) {
                    tracing::warn!(me = %self.me, %from, "duplicate state ignored");
                    return;
                }
                self.states.insert(from, index);
                if self.states.len() == self.members.len() {
                    self.process_states(out);
                }
            }
            Body::Update { epoch, entries } => {
                if self.mode == Mode::Update
                    && self.sync_epoch == Some(epoch)
                    && self.leader.as_ref().map(|l| l.0) == Some(from)
                {
                    self.updates.extend(entries);
                }
            }
            Body::UpdateComplete { epoch } => {
                if self.sync_epoch != Some(epoch)
                    || self.leader.as_ref().map(|l| l.0) != Some(from)
                    || self.all_synced
                {
                    return;
                }
                if self.mode == Mode::Update {
                    let (_, leader_index) = self.leader.clone().expect("leader set in update mode");
                    let entries = std::mem::take(&mut self.updates);
                    match self.db.install_update(&leader_index, entries) {
                        Ok(()) => {
                            out.push(Action::SyncInstalled);
                            self.set_mode(Mode::Synced, out);
                        }
                        Err(e) => {
                            tracing::error!(me = %self.me, "installing the leader's state failed: {e}");
                            self.set_mode(Mode::Error, out);
                            self.fail_all(CoreError::Failed, out);
                            return;
                        }
                    }
                }
                self.become_all_synced(out);
            }
        }
    }

    fn process_states(&mut self, out: &mut Vec<Act<D>>) {
        let states: Vec<(Member, DbIndex)> = std::mem::take(&mut self.states).into_iter().collect();
        let li = select_leader(&states).expect("at least this member's state");
        let (leader, leader_index) = states[li].clone();
        let unsynced: Vec<&DbIndex> = states
            .iter()
            .filter(|(_, i)| *i != leader_index)
            .map(|(_, i)| i)
            .collect();
        let me_synced = states
            .iter()
            .any(|(m, i)| *m == self.me && *i == leader_index);
        tracing::debug!(me = %self.me, %leader, unsynced = unsynced.len(), "all states received");
        if unsynced.is_empty() {
            self.set_mode(Mode::Synced, out);
            self.become_all_synced(out);
            return;
        }
        if leader == self.me {
            let epoch = self.sync_epoch.expect("epoch adopted before states");
            let inodes = updates_needed(&leader_index, unsynced);
            // One entry per message as pmxcfs does: a single entry may be up to 1 MiB,
            // close to corosync's atomic message size.
            for entry in self.db.entries(&inodes) {
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
        self.leader = Some((leader, leader_index));
        self.set_mode(
            if me_synced {
                Mode::Synced
            } else {
                Mode::Update
            },
            out,
        );
    }

    fn become_all_synced(&mut self, out: &mut Vec<Act<D>>) {
        self.all_synced = true;
        self.leader = None;
        for (from, msg) in std::mem::take(&mut self.queue) {
            if let Body::Normal { op } = msg.body {
                self.apply_normal(from, msg.seq, msg.time, op, out);
            }
        }
        if self.quorate {
            self.flush_pending(out);
        } else {
            for (req, ..) in self.pending.drain(..) {
                Self::reply(req, Err(D::core_error(CoreError::NoQuorum)), out);
            }
        }
    }

    fn apply_normal(
        &mut self,
        from: Member,
        seq: u64,
        time: u32,
        op: D::Op,
        out: &mut Vec<Act<D>>,
    ) {
        let result = if self.quorate {
            let r = self.db.apply(&op, from.nodeid, time);
            if r.is_ok() {
                out.push(Action::Applied {
                    op,
                    writer: from.nodeid,
                    time,
                    local: from == self.me,
                });
            }
            r
        } else {
            // Every member of this configuration shares its quorum, so none applies it.
            Err(D::core_error(CoreError::NoQuorum))
        };
        if from == self.me {
            if let Some((req, _)) = self.inflight.remove(&seq) {
                Self::reply(req, result, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{SimDb, SimErr, SimOp};

    type A = Action<SimOp, crate::sim::SimEntry, SimErr>;

    fn sent(actions: &[A]) -> Vec<Msg<SimDb>> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Multicast(m) => Some(m.clone()),
                _ => None,
            })
            .collect()
    }

    fn mkdir(id: u64) -> SimOp {
        SimOp::Mkdir {
            id,
            path: "priv/lock/x".into(),
        }
    }

    #[test]
    fn no_quorum_fails_without_multicast() {
        let me = Member::new(1, 10);
        let mut n = Node::new(me, SimDb::genesis());
        let acts = n.handle(Event::LocalRequest {
            req_id: 7,
            op: mkdir(1),
        });
        assert!(sent(&acts).is_empty());
        assert!(matches!(
            acts.as_slice(),
            [Action::Reply {
                req_id: 7,
                result: Err(SimErr::Access)
            }]
        ));
    }

    #[test]
    fn lone_node_syncs_then_writes_and_replies_on_own_delivery() {
        let me = Member::new(1, 10);
        let mut n = Node::new(me, SimDb::genesis());
        n.handle(Event::Tick { now: 500 });
        n.handle(Event::Quorum(true));
        let acts = n.handle(Event::ConfChg {
            members: vec![me],
            left: vec![],
            joined: vec![me],
        });
        // Queued until synced: nothing sent for the request yet.
        let early = n.handle(Event::LocalRequest {
            req_id: 1,
            op: mkdir(1),
        });
        assert!(sent(&early).is_empty());
        let mut inbox = sent(&acts);
        let mut replies = Vec::new();
        let mut applied = 0;
        while !inbox.is_empty() {
            let msg = inbox.remove(0);
            for a in n.handle(Event::Deliver { from: me, msg }) {
                match a {
                    Action::Multicast(m) => inbox.push(m),
                    Action::Reply { req_id, result } => replies.push((req_id, result)),
                    Action::Applied {
                        local: true, time, ..
                    } => {
                        assert_eq!(time, 500);
                        applied += 1;
                    }
                    _ => {}
                }
            }
        }
        assert_eq!(n.mode(), Mode::Synced);
        assert!(n.writable());
        assert_eq!(replies, vec![(1, Ok(()))]);
        assert_eq!(applied, 1);
        assert_eq!(n.db().locks(), vec![("x".to_string(), 500)]);
    }

    #[test]
    fn lost_own_message_is_failed_once() {
        let me = Member::new(1, 10);
        let mut n = Node::new(me, SimDb::genesis());
        n.handle(Event::Quorum(true));
        let mut inbox = sent(&n.handle(Event::ConfChg {
            members: vec![me],
            left: vec![],
            joined: vec![me],
        }));
        while !inbox.is_empty() {
            let msg = inbox.remove(0);
            inbox.extend(sent(&n.handle(Event::Deliver { from: me, msg })));
        }
        let write = sent(&n.handle(Event::LocalRequest {
            req_id: 9,
            op: mkdir(2),
        }));
        assert_eq!(write.len(), 1);
        // The write is never delivered; a new configuration's own State reveals it.
        let mut inbox = sent(&n.handle(Event::ConfChg {
            members: vec![me],
            left: vec![],
            joined: vec![],
        }));
        let mut replies = Vec::new();
        while !inbox.is_empty() {
            let msg = inbox.remove(0);
            for a in n.handle(Event::Deliver { from: me, msg }) {
                match a {
                    Action::Multicast(m) => inbox.push(m),
                    Action::Reply { req_id, result } => replies.push((req_id, result)),
                    _ => {}
                }
            }
        }
        assert_eq!(replies, vec![(9, Err(SimErr::Again))]);
        assert!(n.db().locks().is_empty());
        assert_eq!(n.unanswered(), 0);
    }
}
