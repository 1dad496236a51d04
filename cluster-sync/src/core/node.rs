//! One member's protocol state machine.
//!
//! Follows pmxcfs's dfsm (confchg → SYNC_START → STATE → leader → UPDATE →
//! UPDATE_COMPLETE), with these deliberate differences:
//!
//! * Every quorate sync starts a new **term** (a Paxos ballot, a Raft term), and the
//!   leader is the member with the highest term before the highest version. pmxcfs
//!   ranks by version alone, which lets a node whose partners crashed before
//!   delivering its writes keep a higher-versioned minority branch that later beats
//!   the newer history a majority wrote, losing acknowledged writes. The rules:
//!   - A round gets a term only if every State says quorate (members decide alike).
//!   - Every member durably promises the term before anyone accepts it. Two quorate
//!     configurations share a member, whose promise forces the later one to a higher
//!     term, so no two configurations ever accept the same term, not even when one
//!     member crashed midway: one term, one configuration, one write sequence.
//!   - Fast path: the SyncStart proposes a term above everything its sender knows;
//!     each member promises it before sending its State if it is above its own
//!     promise and term, and says so in the State. If all did, the States were the
//!     promises and the proposal is the term.
//!   - Slow path (someone could not promise, e.g. the sender was behind): the term is
//!     one above every promise and term in the States; each member promises it and
//!     multicasts a Promise, and the term is accepted once all are delivered.
//!   - Accepting means making the tree the leader's and labelling it with the term in
//!     one durable step (`install_update` with the term, or `set_term` if the tree is
//!     already equal). Only then are writes applied, each in delivery order, so every
//!     tree labelled with a term is that term's starting tree plus a prefix of its
//!     writes, and within a term the version orders trees.
//!   - Consequently a write every member of a majority applied under term T is in the
//!     starting tree of every later term: each later quorate round contains one of
//!     those members, whose (term, version) is at least the write's, so the leader's
//!     tree contains it (by induction over the terms in between).
//!   - A non-quorate round picks no term: the leader's tree is copied with the
//!     leader's own term (a copy, never a relabel), and no write is applied.
//! * Writes are multicast and applied only once the *whole* configuration is synced
//!   (every member equal to the leader, or the leader's UpdateComplete delivered) and
//!   the round's term accepted. Writes delivered earlier are queued by every member and
//!   applied after that point in delivery order, so all members apply the same ops to
//!   the same snapshot. pmxcfs lets already-synced members apply at once, which orders
//!   them differently from the members still installing and can lose an acknowledged
//!   write if the configuration changes before those members commit.
//! * On a configuration change the write queue is dropped on every member alike
//!   (CPG delivered it to all of them), so nobody applied those ops. A writer whose
//!   message is lost (it delivers a later message of its own first: CPG is FIFO per
//!   sender) knows that nobody applied it either. Both kinds go back to the front of
//!   the writer's waiting requests, with their original time, and are sent again once
//!   the next round is over, so a membership change is invisible to the caller, as in
//!   pmxcfs (which re-sends its queue to joiners instead). Only a request older than
//!   [`RESEND_WINDOW`] when it is lost fails, with `CoreError::Interrupted` (EAGAIN):
//!   pmxcfs would block that caller indefinitely.
//! * The sync exchange runs for a single-member configuration too (two messages), so
//!   the delivery of its own State tells a lone node which of its messages were lost.
//! * Whether writes are applied is decided by the round (a term was accepted), not by
//!   each member's own quorum flag, so members whose quorum notifications arrive at
//!   different times still apply the same writes. A write delivered in a round without
//!   a term is applied by nobody and its writer gets `NoQuorum`; pmxcfs leaves the
//!   group instead. A member that becomes quorate after its State said otherwise starts
//!   a new round once that round ended (any member may restart a round that ended
//!   without a term), so a late quorum notification does not leave the configuration
//!   read-only.
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::db::{CoreError, Database};
use super::event::{Action, Event};
use super::leader::{select_leader, updates_needed};
use super::message::{Body, Message};
use super::types::{DbIndex, Epoch, Member, Mode, Term};

type Msg<D> = Message<<D as Database>::Op, <D as Database>::Entry>;
type Act<D> = Action<<D as Database>::Op, <D as Database>::Entry, <D as Database>::Error>;

/// Seconds after its request within which a write lost to a membership change is sent
/// again; an older one fails with `Interrupted`, so a caller never waits unboundedly.
pub const RESEND_WINDOW: u32 = 30;

/// Seconds a write made on a quorate member waits for a re-sync after a round that
/// ended without a term (another member's State said "not quorate", e.g. quorum came
/// back without a membership change) before it fails with `NoQuorum`.
pub const TERMLESS_WAIT: u32 = 5;

/// Whether an own write has been delivered (and queued) or is still on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flight {
    Sent,
    Queued,
}

/// An own write on the wire: the request it answers and what it takes to send it
/// again if a membership change loses it.
#[derive(Debug)]
struct Own<Op> {
    req: u64,
    flight: Flight,
    op: Op,
    /// When the request was made (the message's time, kept across re-sends).
    time: u32,
}

/// One member's State in the current round.
#[derive(Debug, Clone)]
struct PeerState {
    quorate: bool,
    promised_proposal: bool,
    promised: Term,
    index: DbIndex,
}

/// The protocol state of one group member, owning its database.
pub struct Node<D: Database> {
    me: Member,
    db: D,
    mode: Mode,
    quorate: bool,
    now: u32,
    next_seq: u64,
    /// Counts rounds this member started or could start (confchgs and re-syncs), so
    /// its epochs never repeat within a process.
    round_counter: u32,
    members: Vec<Member>,
    sync_epoch: Option<Epoch>,
    /// The quorate flag of the State this member sent for `sync_epoch`.
    sent_quorate: Option<bool>,
    /// Quorum was gained after this member's State said "not quorate": re-sync at the
    /// next tick unless a confchg comes first.
    resync_due: bool,
    /// This member multicast a SyncStart not yet delivered (a re-sync after quorum).
    resync_sent: bool,
    states: BTreeMap<Member, PeerState>,
    leader: Option<(Member, DbIndex)>,
    updates: Vec<D::Entry>,
    /// The term proposed by the SyncStart of `sync_epoch`.
    proposal: Option<Term>,
    /// The proposal this member promised in the current configuration (memory only: a
    /// restarted process conservatively forgets it).
    promised_here: Option<Term>,
    /// The highest promise or term this process saw in any State, its own included:
    /// proposing above it spares most rounds the Promise exchange.
    highest_seen: Term,
    /// The term this round accepts (every State said quorate), once states are in.
    ballot: Option<Term>,
    /// Not every member could promise the proposal: `ballot` waits for every Promise.
    need_promises: bool,
    /// Members whose Promise for `ballot` was delivered.
    promises: BTreeSet<Member>,
    /// Some member's tree differs from the leader's: the round ends with UpdateComplete.
    await_update: bool,
    /// The leader's UpdateComplete for this round was delivered.
    update_complete: bool,
    /// Every member is synced: writes may be sent (if `accepted`) and are applied (or
    /// failed) on delivery.
    all_synced: bool,
    /// The round's term is accepted and persisted: writes are applied.
    accepted: bool,
    /// Writes delivered before `all_synced`, in delivery order.
    queue: Vec<(Member, Msg<D>)>,
    /// Local requests waiting for the configuration to be synced, with the time they
    /// were made.
    pending: VecDeque<(u64, D::Op, u32)>,
    /// Own writes multicast and not yet answered, by message seq.
    inflight: BTreeMap<u64, Own<D::Op>>,
    /// Own writes sent again after a membership change lost them.
    resent: u64,
    /// Rounds this member started because it gained quorum after its State said
    /// otherwise.
    resyncs: u64,
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
            round_counter: 0,
            members: Vec::new(),
            sync_epoch: None,
            sent_quorate: None,
            resync_due: false,
            resync_sent: false,
            states: BTreeMap::new(),
            leader: None,
            updates: Vec::new(),
            proposal: None,
            promised_here: None,
            highest_seen: 0,
            ballot: None,
            need_promises: false,
            promises: BTreeSet::new(),
            await_update: false,
            update_complete: false,
            all_synced: false,
            accepted: false,
            queue: Vec::new(),
            pending: VecDeque::new(),
            inflight: BTreeMap::new(),
            resent: 0,
            resyncs: 0,
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

    /// Whether every member of the configuration is synced (the round is over).
    pub fn all_synced(&self) -> bool {
        self.all_synced
    }

    /// The term this configuration accepted, once its writes flow.
    pub fn accepted_term(&self) -> Option<Term> {
        self.ballot.filter(|_| self.accepted)
    }

    /// Whether a write issued now would be sent at once (quorate, all synced and the
    /// round's term accepted); the fs layer reports write permission bits from this and
    /// `quorate`.
    pub fn writable(&self) -> bool {
        // Requests made earlier wait rather than go out while the round runs: a write
        // queued by the round is lost (EAGAIN) if the configuration changes before the
        // round ends, while a waiting request survives confchgs.
        self.quorate && self.all_synced && self.accepted && self.mode != Mode::Error
    }

    /// Current members, sorted.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Requests not answered yet (queued locally or on the wire).
    pub fn unanswered(&self) -> usize {
        self.pending.len() + self.inflight.len()
    }

    /// Own writes a membership change lost and that were queued to be sent again.
    pub fn resent(&self) -> u64 {
        self.resent
    }

    /// Rounds this member restarted because its quorum notification came after its
    /// State (the configuration had no term in between, so writes waited).
    pub fn resyncs(&self) -> u64 {
        self.resyncs
    }

    /// Feed one event; returns the actions to carry out, in order.
    pub fn handle(&mut self, ev: Event<D::Op, D::Entry>) -> Vec<Act<D>> {
        let mut out = Vec::new();
        match ev {
            Event::Tick { now } => self.on_tick(now, &mut out),
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
        let gained = q && !self.quorate;
        self.quorate = q;
        if !q {
            // pmxcfs refuses writes without quorum at once; waiting requests too.
            for (req, ..) in self.pending.drain(..) {
                Self::reply(req, Err(D::core_error(CoreError::NoQuorum)), out);
            }
            self.resync_due = false;
            return;
        }
        if gained && self.sent_quorate == Some(false) {
            // Our State of this round said "not quorate", so the round picks no term and
            // the configuration would stay read-only until the next confchg, which may
            // never come (quorum can change without the group changing). Quorum usually
            // changes together with the group, though, and its confchg starts a round
            // anyway, so the re-sync waits for the next tick and a confchg cancels it.
            self.resync_due = true;
        }
        self.flush_pending(out);
    }

    /// Start a new round of this configuration if quorum was gained after this
    /// member's State said otherwise and no confchg came since.
    fn on_tick(&mut self, now: u32, out: &mut Vec<Act<D>>) {
        self.now = now;
        if self.all_synced && !self.accepted && !self.resync_sent {
            self.expire_termless_waits(out);
        }
        if !self.resync_due {
            return;
        }
        if self.resync_sent
            || !self.quorate
            || self.sent_quorate != Some(false)
            || matches!(self.mode, Mode::Start | Mode::Error)
        {
            self.resync_due = false;
            return;
        }
        if !self.all_synced {
            // Only a round that ended can be restarted (see `on_sync_start`); every
            // member ends it at the same message, so wait for that.
            return;
        }
        self.resync_due = false;
        // Every member follows the last SyncStart delivered, whoever sent it.
        self.resync_sent = true;
        self.resyncs += 1;
        let epoch = self.next_epoch();
        tracing::info!(me = %self.me, %epoch, "quorate now: re-syncing to pick a term");
        let term = self.proposal();
        self.send(Body::SyncStart { epoch, term }, out);
    }

    /// The term to propose for a round this member starts: above everything it knows.
    fn proposal(&self) -> Term {
        self.db.promised_term().max(self.highest_seen) + 1
    }

    fn next_epoch(&mut self) -> Epoch {
        self.round_counter = self.round_counter.wrapping_add(1);
        Epoch {
            counter: self.round_counter,
            nodeid: self.me.nodeid,
            pid: self.me.pid,
        }
    }

    /// Fail the requests that waited longer than [`TERMLESS_WAIT`] for a re-sync after
    /// a round without a term: nobody would apply them, and the round that would may
    /// never come (a member that stays without quorum never re-syncs).
    fn expire_termless_waits(&mut self, out: &mut Vec<Act<D>>) {
        let now = self.now;
        let (old, young): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(_, _, t)| now.saturating_sub(*t) > TERMLESS_WAIT);
        self.pending = young;
        for (req, ..) in old {
            Self::reply(req, Err(D::core_error(CoreError::NoQuorum)), out);
        }
    }

    fn on_request(&mut self, req_id: u64, op: D::Op, out: &mut Vec<Act<D>>) {
        if self.mode == Mode::Error {
            Self::reply(req_id, Err(D::core_error(CoreError::Failed)), out);
        } else if !self.quorate {
            Self::reply(req_id, Err(D::core_error(CoreError::NoQuorum)), out);
        } else if self.writable() {
            let now = self.now;
            self.send_write(req_id, op, now, out);
        } else {
            self.pending.push_back((req_id, op, self.now));
        }
    }

    fn flush_pending(&mut self, out: &mut Vec<Act<D>>) {
        if !self.writable() {
            return;
        }
        // A write carries the time it was requested, not the time it could be sent: a
        // lock release that waited out a sync must not look newer than a lock taken
        // meanwhile (the database refuses releases older than the lock).
        while let Some((req, op, time)) = self.pending.pop_front() {
            self.send_write(req, op, time, out);
        }
    }

    /// Multicast a write requested at `time`, keeping a copy to send it again if a
    /// membership change loses it.
    fn send_write(&mut self, req: u64, op: D::Op, time: u32, out: &mut Vec<Act<D>>) {
        let seq = self.send_at(Body::Normal { op: op.clone() }, time, out);
        let own = Own {
            req,
            flight: Flight::Sent,
            op,
            time,
        };
        self.inflight.insert(seq, own);
    }

    /// Own writes that nobody applied (`seqs` ascending): back to the front of the
    /// waiting requests in their original order, or failed if they are too old.
    fn requeue(&mut self, seqs: Vec<u64>, out: &mut Vec<Act<D>>) {
        for seq in seqs.into_iter().rev() {
            let Some(own) = self.inflight.remove(&seq) else {
                continue;
            };
            if self.now.saturating_sub(own.time) > RESEND_WINDOW {
                tracing::info!(me = %self.me, seq, "own write lost in a membership change, too old to send again");
                Self::reply(own.req, Err(D::core_error(CoreError::Interrupted)), out);
            } else {
                tracing::info!(me = %self.me, seq, "own write lost in a membership change, sending it again");
                self.resent += 1;
                self.pending.push_front((own.req, own.op, own.time));
            }
        }
    }

    /// Drop the write queue; nobody applied it, so own writes in it are sent again.
    fn drop_queue(&mut self, out: &mut Vec<Act<D>>) {
        let own: Vec<u64> = std::mem::take(&mut self.queue)
            .into_iter()
            .filter(|(from, _)| *from == self.me)
            .map(|(_, msg)| msg.seq)
            .collect();
        self.requeue(own, out);
    }

    fn fail_all(&mut self, kind: CoreError, out: &mut Vec<Act<D>>) {
        for (_, own) in std::mem::take(&mut self.inflight) {
            Self::reply(own.req, Err(D::core_error(kind)), out);
        }
        for (req, ..) in self.pending.drain(..) {
            Self::reply(req, Err(D::core_error(kind)), out);
        }
        self.queue.clear();
    }

    /// Stop for good: the adapter must restart this node (its database stays as the
    /// last durable step left it).
    fn fail(&mut self, what: &str, e: &str, out: &mut Vec<Act<D>>) {
        tracing::error!(me = %self.me, "{what} failed: {e}");
        self.set_mode(Mode::Error, out);
        self.fail_all(CoreError::Failed, out);
    }

    /// Forget the current round (not the write queue: a new round of the same
    /// configuration still applies what was delivered in it, in order).
    fn reset_round(&mut self) {
        self.sync_epoch = None;
        self.sent_quorate = None;
        self.states.clear();
        self.leader = None;
        self.updates.clear();
        self.proposal = None;
        self.ballot = None;
        self.need_promises = false;
        self.promises.clear();
        self.await_update = false;
        self.update_complete = false;
        self.all_synced = false;
        self.accepted = false;
    }

    fn on_confchg(&mut self, mut members: Vec<Member>, out: &mut Vec<Act<D>>) {
        if self.mode == Mode::Error {
            return;
        }
        members.sort();
        members.dedup();
        self.members = members;
        self.drop_queue(out);
        self.reset_round();
        // This confchg's round carries the current quorum; and a SyncStart sent in the
        // old configuration is never delivered in this one.
        self.resync_due = false;
        self.resync_sent = false;
        self.promised_here = None;
        let epoch = self.next_epoch();
        if !self.members.contains(&self.me) {
            // We left the group: nothing we sent can be delivered any more.
            self.fail_all(CoreError::Interrupted, out);
            self.set_mode(Mode::Start, out);
            return;
        }
        self.set_mode(Mode::StartSync, out);
        if self.members[0] == self.me {
            let term = self.proposal();
            self.send(Body::SyncStart { epoch, term }, out);
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
                .filter(|(_, own)| own.flight == Flight::Sent)
                .map(|(s, _)| *s)
                .collect();
            if !lost.is_empty() {
                self.requeue(lost, out);
                self.flush_pending(out);
            }
        }
        let Message { seq, time, body } = msg;
        match body {
            Body::Normal { op } => {
                if self.all_synced {
                    self.apply_normal(from, seq, time, op, out);
                } else {
                    if from == self.me {
                        if let Some(own) = self.inflight.get_mut(&seq) {
                            own.flight = Flight::Queued;
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
            Body::SyncStart { epoch, term } => self.on_sync_start(from, epoch, term, out),
            Body::State {
                epoch,
                quorate,
                promised_proposal,
                promised,
                index,
            } => {
                if self.mode != Mode::StartSync || self.sync_epoch != Some(epoch) {
                    return; // a stale round
                }
                if self.states.contains_key(&from) {
                    tracing::warn!(me = %self.me, %from, "duplicate state ignored");
                    return;
                }
                self.states.insert(
                    from,
                    PeerState {
                        quorate,
                        promised_proposal,
                        promised,
                        index,
                    },
                );
                if self.states.len() == self.members.len() {
                    self.process_states(out);
                }
            }
            Body::Promise { epoch, term } => {
                if self.sync_epoch != Some(epoch)
                    || self.leader.is_none()
                    || self.all_synced
                    || !self.need_promises
                {
                    return; // a stale round
                }
                if self.ballot != Some(term) {
                    // Every member computes the term from the same States; a different
                    // one means a peer speaking another protocol. Never count it.
                    tracing::error!(me = %self.me, %from, term, ballot = ?self.ballot, "promise for another term ignored");
                    return;
                }
                self.promises.insert(from);
                self.try_finish_round(out);
            }
            Body::Update { epoch, entries } => {
                if self.mode == Mode::Update
                    && self.sync_epoch == Some(epoch)
                    && self.leader.as_ref().map(|l| l.0) == Some(from)
                    && !self.update_complete
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
                self.update_complete = true;
                self.try_finish_round(out);
            }
        }
    }

    /// Start (or restart) a round. After a confchg the lowest member sends the
    /// SyncStart (as in pmxcfs); a member that became quorate after its State said
    /// otherwise sends one once the round ended without a term. All members deliver
    /// SyncStarts in the same order and are at the same point of the round when they
    /// do, so all follow the same rounds.
    fn on_sync_start(&mut self, from: Member, epoch: Epoch, proposal: Term, out: &mut Vec<Act<D>>) {
        if from == self.me {
            self.resync_sent = false;
        }
        // SyncStarts sent while processing an older confchg can land in this
        // configuration (CPG orders a message after the confchg its sender had not seen
        // yet). A round that accepted a term, or one under way, ignores all but the
        // lowest member's at the start (pmxcfs's rule), so such stale ones cannot keep
        // restarting it; a round that ended without a term may be restarted by anyone.
        let fresh_round = self.mode == Mode::StartSync && from == self.members[0];
        let termless = self.all_synced && !self.accepted;
        if self.sync_epoch == Some(epoch) || !(fresh_round || termless) {
            tracing::debug!(me = %self.me, %from, %epoch, mode = ?self.mode, "sync start ignored");
            return;
        }
        tracing::debug!(me = %self.me, %epoch, "sync start");
        self.reset_round();
        self.set_mode(Mode::StartSync, out);
        self.sync_epoch = Some(epoch);
        self.proposal = Some(proposal);
        self.sent_quorate = Some(self.quorate);
        let index = self.db.index();
        let mut promised = self.db.promised_term();
        // Promise the proposal now if it is above everything this member promised or
        // accepted: if every member can, the States double as the Promises. Not when
        // not quorate: the round then picks no term anyway. A promise already given to
        // this configuration may be repeated (its lowest member often sends several
        // SyncStarts with one proposal): only one round of a configuration can accept
        // a term, as a round that picked one is never restarted (see above) and a
        // restarted one accepted nothing.
        let fresh = proposal > promised.max(index.term);
        let promised_proposal = self.quorate
            && (fresh || (self.promised_here == Some(proposal) && index.term < proposal));
        if promised_proposal && fresh {
            if let Err(e) = self.db.set_promised_term(proposal) {
                self.fail("persisting the promised term", &e, out);
                return;
            }
            promised = proposal;
            self.promised_here = Some(proposal);
        }
        let body = Body::State {
            epoch,
            quorate: self.quorate,
            promised_proposal,
            promised,
            index,
        };
        self.send(body, out);
    }

    fn process_states(&mut self, out: &mut Vec<Act<D>>) {
        let states: Vec<(Member, PeerState)> =
            std::mem::take(&mut self.states).into_iter().collect();
        let indexes: Vec<(Member, DbIndex)> =
            states.iter().map(|(m, s)| (*m, s.index.clone())).collect();
        let li = select_leader(&indexes).expect("at least this member's state");
        let (leader, leader_index) = indexes[li].clone();
        let highest = states
            .iter()
            .map(|(_, s)| s.promised.max(s.index.term))
            .max()
            .expect("at least this member's state");
        self.highest_seen = self.highest_seen.max(highest);
        // A new term only when every member said quorate: then this configuration is a
        // majority and shares a member with every other quorate one. If every member
        // promised the proposal before sending its State, that is the term (everyone
        // promised it before anyone can accept it). Otherwise the term is one above
        // every promise and term in the round, which every member must promise first.
        // Either way it exceeds every term here, so accepting it raises every tree.
        let all_quorate = states.iter().all(|(_, s)| s.quorate);
        let all_promised = states.iter().all(|(_, s)| s.promised_proposal);
        let (ballot, need_promises) = match (all_quorate, all_promised, self.proposal) {
            (false, ..) => (None, false),
            (true, true, Some(p)) => (Some(p), false),
            (true, ..) => (Some(highest + 1), true),
        };
        // Without a new term, a member keeps its own tree if the leader's is older than
        // a term it promised (Paxos' acceptor never accepts below its promise): a
        // quorate configuration may have accepted that term with a tree lacking the
        // leader's newer writes, so copying could only spread a superseded branch, e.g.
        // make a write a minority applied look held by a majority.
        let adopts = |s: &PeerState| ballot.is_some() || leader_index.term >= s.promised;
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
        tracing::debug!(me = %self.me, %leader, unsynced = unsynced.len(), ?ballot, "all states received");
        let epoch = self.sync_epoch.expect("epoch adopted before states");
        if let (Some(term), true) = (ballot, need_promises) {
            // Durable before the Promise leaves: once every Promise is delivered some
            // member may accept the term, and a crash of this one must not let it
            // forget that, or another configuration could pick the same term.
            if let Err(e) = self.db.set_promised_term(term) {
                self.fail("persisting the promised term", &e, out);
                return;
            }
            self.send(Body::Promise { epoch, term }, out);
        }
        self.ballot = ballot;
        self.need_promises = need_promises;
        self.await_update = !unsynced.is_empty();
        if self.await_update && leader == self.me {
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
        self.set_mode(my_mode, out);
        self.try_finish_round(out);
    }

    /// End the round once the leader's updates are in (if any were needed) and every
    /// member promised the term (if the round has one): accept the leader's tree, with
    /// the round's term, then let writes flow.
    fn try_finish_round(&mut self, out: &mut Vec<Act<D>>) {
        if self.leader.is_none()
            || self.all_synced
            || (self.await_update && !self.update_complete)
            || (self.need_promises && self.promises.len() < self.members.len())
        {
            return;
        }
        if self.mode == Mode::Update {
            let (_, leader_index) = self
                .leader
                .clone()
                .expect("leader set before the round ends");
            // The tree and its term in one durable step: a new term on the old tree
            // would let a stale tree out-rank the ones that accepted the term, and the
            // new tree under an old term would no longer be a prefix of that term's
            // history. Without a new term this is a copy of the leader's labelled tree.
            let target = DbIndex {
                term: self.ballot.unwrap_or(leader_index.term),
                ..leader_index
            };
            self.highest_seen = self.highest_seen.max(target.term);
            let entries = std::mem::take(&mut self.updates);
            if let Err(e) = self.db.install_update(&target, entries) {
                self.fail("installing the leader's state", &e, out);
                return;
            }
            out.push(Action::SyncInstalled);
            self.set_mode(Mode::Synced, out);
        } else if let Some(term) = self.ballot {
            // This tree already is the leader's: relabel it before applying writes of
            // the term on top of it.
            if let Err(e) = self.db.set_term(term) {
                self.fail("persisting the term", &e, out);
                return;
            }
        }
        self.accepted = self.ballot.is_some();
        self.become_all_synced(out);
    }

    fn become_all_synced(&mut self, out: &mut Vec<Act<D>>) {
        self.all_synced = true;
        self.leader = None;
        for (from, msg) in std::mem::take(&mut self.queue) {
            if let Body::Normal { op } = msg.body {
                self.apply_normal(from, msg.seq, msg.time, op, out);
            }
        }
        if self.writable() {
            self.flush_pending(out);
        } else if !self.quorate {
            for (req, ..) in self.pending.drain(..) {
                Self::reply(req, Err(D::core_error(CoreError::NoQuorum)), out);
            }
        } else if !self.accepted && !self.resync_sent {
            // Quorate, but some State said otherwise: its sender re-syncs once its own
            // quorum notification arrives. Requests wait for that round, a bounded time.
            self.expire_termless_waits(out);
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
        // Decided by the round, not by this member's quorum flag, so every member
        // decides alike: without an accepted term nobody applies it.
        let result = if self.accepted {
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
            Err(D::core_error(CoreError::NoQuorum))
        };
        if from == self.me {
            if let Some(own) = self.inflight.remove(&seq) {
                Self::reply(own.req, result, out);
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

    /// A lone member delivers its own messages, and those they cause, in order; the
    /// other actions it took on the way.
    fn deliver_own(n: &mut Node<SimDb>, mut inbox: Vec<Msg<SimDb>>) -> Vec<A> {
        let me = n.me();
        let mut out = Vec::new();
        while !inbox.is_empty() {
            let msg = inbox.remove(0);
            for a in n.handle(Event::Deliver { from: me, msg }) {
                match a {
                    Action::Multicast(m) => inbox.push(m),
                    a => out.push(a),
                }
            }
        }
        out
    }

    fn replies(actions: &[A]) -> Vec<(u64, Result<(), SimErr>)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Reply { req_id, result } => Some((*req_id, *result)),
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
        let done = deliver_own(&mut n, sent(&acts));
        let applied: Vec<u32> = done
            .iter()
            .filter_map(|a| match a {
                Action::Applied {
                    local: true, time, ..
                } => Some(*time),
                _ => None,
            })
            .collect();
        assert_eq!(n.mode(), Mode::Synced);
        assert!(n.writable());
        assert_eq!(replies(&done), vec![(1, Ok(()))]);
        assert_eq!(applied, vec![500]);
        assert_eq!(n.db().locks(), vec![("x".to_string(), 500)]);
    }

    /// A quorate member at `now` that has synced its first configuration, alone.
    fn synced_alone(me: Member, now: u32) -> Node<SimDb> {
        let mut n = Node::new(me, SimDb::genesis());
        n.handle(Event::Tick { now });
        n.handle(Event::Quorum(true));
        let acts = n.handle(Event::ConfChg {
            members: vec![me],
            left: vec![],
            joined: vec![me],
        });
        deliver_own(&mut n, sent(&acts));
        assert!(n.writable());
        n
    }

    /// A lone quorate member that has synced its first configuration, and a write it
    /// sent at `now` that corosync lost; then the next configuration's messages.
    fn lose_a_write(now: u32, later: u32) -> (Node<SimDb>, Vec<A>) {
        let me = Member::new(1, 10);
        let mut n = synced_alone(me, now);
        let write = sent(&n.handle(Event::LocalRequest {
            req_id: 9,
            op: mkdir(2),
        }));
        assert_eq!(write.len(), 1);
        n.handle(Event::Tick { now: later });
        // The write is never delivered; a new configuration's own State reveals it.
        let acts = n.handle(Event::ConfChg {
            members: vec![me],
            left: vec![],
            joined: vec![],
        });
        let done = deliver_own(&mut n, sent(&acts));
        (n, done)
    }

    #[test]
    fn lost_own_message_is_sent_again_with_its_time_and_applied_once() {
        let (n, done) = lose_a_write(500, 500 + RESEND_WINDOW);
        assert_eq!(replies(&done), vec![(9, Ok(()))]);
        assert_eq!(n.db().locks(), vec![("x".to_string(), 500)]);
        assert_eq!(n.db().applied(), &[2]);
        assert_eq!(n.resent(), 1);
        assert_eq!(n.unanswered(), 0);
    }

    #[test]
    fn lost_own_message_older_than_the_window_fails_once_unapplied() {
        let (n, done) = lose_a_write(500, 501 + RESEND_WINDOW);
        assert_eq!(replies(&done), vec![(9, Err(SimErr::Again))]);
        assert!(n.db().locks().is_empty());
        assert_eq!(n.resent(), 0);
        assert_eq!(n.unanswered(), 0);
    }

    #[test]
    fn writes_queued_by_a_round_that_a_confchg_ends_are_sent_again_in_order() {
        let me = Member::new(1, 10);
        let other = Member::new(2, 20);
        let mut n = synced_alone(me, 700);
        let mut writes = Vec::new();
        for (req, id) in [(1, 11), (2, 12)] {
            writes.extend(sent(&n.handle(Event::LocalRequest {
                req_id: req,
                op: write(id, &format!("f{id}")),
            })));
        }
        // A joiner arrives: both writes are delivered in the new configuration (FIFO:
        // before its SyncStart) while its round runs, so they are queued; then another
        // confchg drops that round and its queue.
        let sync = sent(&n.handle(Event::ConfChg {
            members: vec![me, other],
            left: vec![],
            joined: vec![other],
        }));
        for msg in writes.into_iter().chain(sync) {
            let acts = n.handle(Event::Deliver { from: me, msg });
            assert!(replies(&acts).is_empty(), "answered before the round ended");
        }
        let acts = n.handle(Event::ConfChg {
            members: vec![me],
            left: vec![other],
            joined: vec![],
        });
        assert!(replies(&acts).is_empty(), "a dropped write was failed");
        let done = deliver_own(&mut n, sent(&acts));
        assert_eq!(replies(&done), vec![(1, Ok(())), (2, Ok(()))]);
        assert_eq!(n.db().applied(), &[11, 12]);
        assert_eq!(n.resent(), 2);
    }

    /// A tiny CPG for one configuration: one log in total order, delivered to every
    /// member in full unless it is cut short for some (they "crash" first).
    struct Cfg<'a> {
        nodes: Vec<&'a mut Node<SimDb>>,
        log: Vec<(Member, Msg<SimDb>)>,
        /// Replies seen, by node position.
        replies: Vec<(usize, u64, Result<(), SimErr>)>,
        /// Messages each node delivered.
        delivered: Vec<usize>,
    }

    impl<'a> Cfg<'a> {
        /// Quorum then ConfChg to every node, as the simulator and corosync do.
        fn new(nodes: Vec<&'a mut Node<SimDb>>, quorate: bool) -> Self {
            let members: Vec<Member> = nodes.iter().map(|n| n.me()).collect();
            let mut c = Cfg {
                delivered: vec![0; nodes.len()],
                nodes,
                log: Vec::new(),
                replies: Vec::new(),
            };
            for i in 0..c.nodes.len() {
                let acts = c.nodes[i].handle(Event::Quorum(quorate));
                c.take(i, acts);
                let acts = c.nodes[i].handle(Event::ConfChg {
                    members: members.clone(),
                    left: vec![],
                    joined: vec![],
                });
                c.take(i, acts);
            }
            c
        }

        fn take(&mut self, i: usize, acts: Vec<A>) {
            let me = self.nodes[i].me();
            for a in acts {
                match a {
                    Action::Multicast(m) => self.log.push((me, m)),
                    Action::Reply { req_id, result } => self.replies.push((i, req_id, result)),
                    _ => {}
                }
            }
        }

        fn feed(&mut self, i: usize, ev: Event<SimOp, crate::sim::SimEntry>) {
            let acts = self.nodes[i].handle(ev);
            self.take(i, acts);
        }

        fn request(&mut self, i: usize, req_id: u64, op: SimOp) {
            self.feed(i, Event::LocalRequest { req_id, op });
        }

        /// Node `i` delivers the log up to `upto` messages (or all, growing as it goes).
        fn deliver_to(&mut self, i: usize, upto: Option<usize>) {
            while self.delivered[i] < upto.unwrap_or(self.log.len()).min(self.log.len()) {
                let (from, msg) = self.log[self.delivered[i]].clone();
                self.delivered[i] += 1;
                self.feed(i, Event::Deliver { from, msg });
            }
        }

        /// Everyone delivers everything, round-robin, until nothing is left.
        fn settle(&mut self) {
            loop {
                let before = self.delivered.clone();
                for i in 0..self.nodes.len() {
                    if self.delivered[i] < self.log.len() {
                        let upto = self.delivered[i] + 1;
                        self.deliver_to(i, Some(upto));
                    }
                }
                if self.delivered == before {
                    return;
                }
            }
        }

        fn kinds(&self) -> Vec<&'static str> {
            self.log.iter().map(|(_, m)| m.body.kind()).collect()
        }
    }

    fn node(id: u32, pid: u32) -> Node<SimDb> {
        let mut n = Node::new(Member::new(id, pid), SimDb::genesis());
        n.handle(Event::Tick { now: 1000 });
        n
    }

    /// A crashed process keeps only its database; it restarts as a new member.
    fn restart(n: Node<SimDb>, now: u32) -> Node<SimDb> {
        let me = n.me();
        let mut r = Node::new(Member::new(me.nodeid, me.pid + 1), n.into_db());
        r.handle(Event::Tick { now });
        r
    }

    fn write(id: u64, path: &str) -> SimOp {
        SimOp::Create {
            id,
            path: path.into(),
        }
    }

    /// The lost-write scenario the simulator found (seeds 6, 177, 473, ...), end to
    /// end: n1's partners crash before delivering its writes, n1 goes on alone with a
    /// higher version, the restarted majority writes under a new term, and after the
    /// heal the majority's write survives and n1's minority branch is dropped.
    #[test]
    fn minority_branch_with_higher_version_but_older_term_loses() {
        let (mut a, mut b, mut c) = (node(1, 10), node(2, 10), node(3, 10));
        let t1 = {
            let mut cfg = Cfg::new(vec![&mut a, &mut b, &mut c], true);
            cfg.settle();
            assert!(cfg.nodes.iter().all(|n| n.writable()));
            // n1 writes three files; only n1 delivers them before b and c crash.
            for (k, p) in ["a/w1", "a/w2", "a/w3"].into_iter().enumerate() {
                cfg.request(0, k as u64 + 1, write(k as u64 + 1, p));
            }
            cfg.deliver_to(0, None);
            assert_eq!(
                cfg.replies,
                vec![(0, 1, Ok(())), (0, 2, Ok(())), (0, 3, Ok(()))],
                "acknowledged after n1's own delivery"
            );
            cfg.nodes[0].db().index().term
        };
        assert!(t1 >= 1);
        let (mut b, mut c) = (restart(b, 2000), restart(c, 2000));
        // n1 alone, not quorate: no new term, but it keeps its higher version.
        Cfg::new(vec![&mut a], false).settle();
        assert_eq!(a.db().index().term, t1);
        // The restarted majority: a new term and a write of its own.
        let t2 = {
            let mut cfg = Cfg::new(vec![&mut b, &mut c], true);
            cfg.settle();
            cfg.request(0, 9, write(9, "b/x"));
            cfg.settle();
            assert_eq!(cfg.replies, vec![(0, 9, Ok(()))]);
            cfg.nodes[0].db().index().term
        };
        assert!(t2 > t1);
        assert!(
            a.db().version() > b.db().version(),
            "the minority branch has the higher version"
        );
        // Heal: the majority's history wins although its version is lower.
        let mut cfg = Cfg::new(vec![&mut a, &mut b, &mut c], true);
        cfg.settle();
        let want = cfg.nodes[1].db().index();
        assert!(want.term > t2);
        for n in &cfg.nodes {
            assert!(n.writable());
            assert_eq!(n.db().index(), want);
            assert!(
                n.db().read("b/x").is_some(),
                "the majority's write survived"
            );
            assert!(n.db().read("a/w1").is_none(), "the minority branch is gone");
        }
    }

    /// Fast path: a SyncStart's proposal every member could promise is the term, and
    /// the round needs no Promise messages.
    #[test]
    fn proposal_promised_by_all_is_accepted_without_promises() {
        let (mut a, mut b) = (node(1, 10), node(2, 10));
        let mut cfg = Cfg::new(vec![&mut a, &mut b], true);
        cfg.settle();
        assert_eq!(cfg.kinds(), vec!["sync-start", "state", "state"]);
        for n in &cfg.nodes {
            assert_eq!(n.accepted_term(), Some(1));
            assert_eq!(n.db().index().term, 1);
            assert_eq!(n.db().promised_term(), 1);
        }
    }

    /// Slow path: the starter proposed a term another member had already promised, so
    /// every member must promise a higher one, and nobody accepts it until every
    /// member's Promise is delivered. A member that crashed before promising leaves
    /// the others unaccepted, so it cannot later help another configuration pick the
    /// same term for a different tree.
    #[test]
    fn no_member_accepts_a_term_before_every_member_promised_it() {
        let (mut a, mut b, mut c) = (node(1, 10), node(2, 10), node(3, 10));
        // n2 promised term 5 in some configuration n1 never saw.
        b.db.set_promised_term(5).unwrap();
        let states = {
            let mut cfg = Cfg::new(vec![&mut a, &mut b, &mut c], true);
            // Everyone delivers the SyncStart and sends a State.
            for i in 0..3 {
                cfg.deliver_to(i, Some(1));
            }
            assert_eq!(cfg.kinds(), vec!["sync-start", "state", "state", "state"]);
            // n1 and n2 deliver every State and promise 6; n3 crashes before its last.
            cfg.deliver_to(0, Some(4));
            cfg.deliver_to(1, Some(4));
            cfg.deliver_to(2, Some(3));
            assert_eq!(&cfg.kinds()[4..], ["promise", "promise"]);
            // Both Promises delivered, n3's never comes: nobody accepted anything.
            cfg.deliver_to(0, None);
            cfg.deliver_to(1, None);
            for n in &cfg.nodes[..2] {
                assert_eq!(n.db().promised_term(), 6);
                assert_eq!(n.db().index().term, 0);
                assert_eq!(n.accepted_term(), None);
                assert!(!n.writable());
            }
            cfg.log.len()
        };
        assert_eq!(states, 6);
        assert_eq!(c.db().promised_term(), 1, "n3 promised only the proposal");
        // The next configuration must pick a term above every promise, 6 included.
        let mut c = restart(c, 2000);
        let mut cfg = Cfg::new(vec![&mut a, &mut b, &mut c], true);
        cfg.settle();
        for n in &cfg.nodes {
            let t = n.accepted_term().expect("accepted");
            assert!(t > 6);
            assert_eq!(n.db().index().term, t);
        }
    }

    /// A member whose State said "not quorate" because its quorum notification came
    /// late starts a new round once quorate, so the configuration gets a term without
    /// waiting for a confchg.
    #[test]
    fn late_quorum_re_syncs_to_pick_a_term() {
        let (mut a, mut b, mut c) = (node(1, 10), node(2, 10), node(3, 10));
        let mut cfg = Cfg::new(vec![&mut a, &mut b, &mut c], true);
        // n2 was not quorate when it sent its State: its quorum notification came
        // late, or quorum came back without a membership change.
        cfg.feed(1, Event::Quorum(false));
        cfg.settle();
        assert!(cfg
            .nodes
            .iter()
            .all(|n| n.all_synced() && n.accepted_term().is_none()));
        // Meanwhile a write on a quorate member waits for the re-sync instead of
        // failing with EACCES on a node that says it is quorate.
        cfg.request(0, 1, write(1, "a/f"));
        assert!(cfg.replies.is_empty());
        assert!(
            cfg.kinds().iter().all(|k| *k != "normal"),
            "sent without a term"
        );
        cfg.feed(1, Event::Quorum(true));
        // The re-sync waits for a tick, so that a confchg arriving with the quorum
        // change (the usual case) makes it unnecessary.
        assert_eq!(cfg.kinds().last(), Some(&"state"));
        cfg.feed(1, Event::Tick { now: 1001 });
        assert_eq!(cfg.kinds().last(), Some(&"sync-start"));
        cfg.settle();
        assert!(cfg.nodes.iter().all(|n| n.writable()));
        assert_eq!(cfg.replies, vec![(0, 1, Ok(()))]);
        let resyncs: Vec<u64> = cfg.nodes.iter().map(|n| n.resyncs()).collect();
        assert_eq!(resyncs, vec![0, 1, 0]);
        cfg.request(0, 2, write(2, "a/g"));
        cfg.settle();
        assert_eq!(cfg.replies.last(), Some(&(0, 2, Ok(()))));
        for n in &cfg.nodes {
            assert_eq!(n.db().applied(), &[1, 2]);
        }
    }

    /// If the member that said "not quorate" never gains quorum, a write waiting on a
    /// quorate member fails with EACCES after `TERMLESS_WAIT`, applied nowhere.
    #[test]
    fn a_write_waiting_for_a_re_sync_that_never_comes_fails_in_bounded_time() {
        let (mut a, mut b, mut c) = (node(1, 10), node(2, 10), node(3, 10));
        let mut cfg = Cfg::new(vec![&mut a, &mut b, &mut c], true);
        cfg.feed(1, Event::Quorum(false));
        cfg.settle();
        cfg.request(0, 1, write(1, "a/f"));
        cfg.feed(
            0,
            Event::Tick {
                now: 1000 + TERMLESS_WAIT,
            },
        );
        assert!(cfg.replies.is_empty(), "failed before the wait was over");
        cfg.feed(
            0,
            Event::Tick {
                now: 1001 + TERMLESS_WAIT,
            },
        );
        assert_eq!(cfg.replies, vec![(0, 1, Err(SimErr::Access))]);
        cfg.settle();
        assert!(cfg.nodes.iter().all(|n| n.db().applied().is_empty()));
        assert_eq!(cfg.nodes[0].unanswered(), 0);
    }

    /// A confchg right after the quorum change cancels the pending re-sync: its own
    /// round carries the new quorum.
    #[test]
    fn confchg_after_quorum_gain_needs_no_re_sync() {
        let mut a = node(1, 10);
        Cfg::new(vec![&mut a], false).settle();
        let mut cfg = Cfg::new(vec![&mut a], true);
        cfg.feed(0, Event::Tick { now: 1001 });
        cfg.settle();
        assert_eq!(cfg.kinds(), vec!["sync-start", "state"]);
        assert!(cfg.nodes[0].writable());
    }

    /// Without a term, a member does not adopt a leader's tree older than a term it
    /// promised: that tree is superseded, and copying it would only spread a branch a
    /// quorate configuration already left behind.
    #[test]
    fn termless_round_does_not_spread_a_superseded_tree() {
        let mut old = SimDb::genesis();
        old.set_term(3).unwrap();
        old.apply(&write(1, "a/old"), 1, 5).unwrap();
        let mut promised = SimDb::genesis();
        promised.set_promised_term(7).unwrap();
        let mut fresh = SimDb::genesis();
        let mut a = Node::new(Member::new(1, 10), old);
        let mut b = Node::new(Member::new(2, 10), promised.clone());
        let mut c = Node::new(Member::new(3, 10), fresh.clone());
        let mut cfg = Cfg::new(vec![&mut a, &mut b, &mut c], false);
        cfg.settle();
        assert_eq!(cfg.nodes[0].mode(), Mode::Synced);
        assert_eq!(cfg.nodes[1].mode(), Mode::Detached);
        assert_eq!(cfg.nodes[1].db(), &promised);
        // A member that promised nothing newer still copies it, as pmxcfs does.
        assert_eq!(cfg.nodes[2].mode(), Mode::Synced);
        fresh
            .install_update(
                &cfg.nodes[0].db().index(),
                cfg.nodes[0].db().entries(&[0, 5]),
            )
            .unwrap();
        assert_eq!(cfg.nodes[2].db(), &fresh);
    }
}
