//! One member's protocol state machine: its mode, configuration, current round and
//! write pipeline, and the events that are not messages (configuration changes,
//! quorum, the clock, local requests). The message handlers are in `sync.rs` (the
//! round) and at the end of this file (writes). Why it works this way, and where it
//! departs from pmxcfs's dfsm: `cluster-sync/DESIGN.md`.
#[cfg(debug_assertions)]
use std::collections::BTreeMap;

use super::confirm::{Confirm, Pending};
use super::db::{ApplyError, CoreError, Database};
use super::dfsm::DfsmRound;
use super::event::{Action, Event};
use super::message::{Body, Message};
use super::round::Round;
use super::types::{Epoch, Member, Mode, Protocol, ReqId, Term};
use super::writes::{
    Delivered, Request, Writes, MAX_QUEUED_PER_MEMBER, MAX_UNANSWERED, RESEND_WINDOW,
};

pub(super) type Msg<D> = Message<<D as Database>::Op, <D as Database>::Entry>;
pub(super) type Act<D> = Action<
    <D as Database>::Op,
    <D as Database>::Entry,
    <D as Database>::Error,
    <D as Database>::Outcome,
>;

/// Seconds a write made on a quorate member waits for a re-sync after a round that
/// ended without a term (another member's State said "not quorate", e.g. quorum came
/// back without a membership change) before it fails with `NoQuorum`.
pub const TERMLESS_WAIT: u32 = 5;

/// A re-sync this member owes the configuration: it gained quorum after its State of
/// the current round said otherwise (DESIGN.md, "Late quorum").
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Resync {
    /// Start one at the next tick, unless a confchg comes first.
    pub due: bool,
    /// Its SyncStart is multicast and not delivered yet.
    pub sent: bool,
}

/// The protocol state of one group member, owning its database.
pub struct Node<D: Database> {
    pub(super) protocol: Protocol,
    pub(super) me: Member,
    pub(super) db: D,
    pub(super) mode: Mode,
    pub(super) quorate: bool,
    pub(super) now: u32,
    next_seq: u64,
    /// Counts rounds this member started or could start (confchgs and re-syncs), so its
    /// epochs never repeat within a process.
    round_counter: u32,
    pub(super) members: Vec<Member>,
    pub(super) round: Round<D::Entry>,
    pub(super) writes: Writes<D::Op>,
    /// Own writes applied and waiting for a majority to hold them.
    confirm: Confirm,
    /// Nodes the cluster is configured with ([`Event::Nodes`]); 0 if unknown.
    cluster_nodes: usize,
    /// The seq of this member's Normal on the wire, if one is: the next waits for it,
    /// gathering the requests made meanwhile (group commit).
    pub(super) wire: Option<u64>,
    /// Compat mode's round and queues (`dfsm.rs`); unused by the term protocol.
    pub(super) dfsm: DfsmRound<D::Op, D::Entry>,
    pub(super) resync: Resync,
    /// The proposed term this member promised in the current configuration (memory
    /// only: a restarted process conservatively forgets it).
    pub(super) term_promised_here: Option<Term>,
    /// The highest promised or tree term this process saw in any State, its own
    /// included: proposing above it spares most rounds the Promise exchange.
    pub(super) highest_term_seen: Term,
    /// Rounds this member started because it gained quorum after its State said
    /// otherwise.
    resyncs: u64,
    /// Cross-node checks of the trees (`verify.rs`).
    pub(super) verify: super::verify::Verifier,
    /// Compat mode: what this member's States say of the switch ([`Body::State`]'s
    /// `switch_ready`), as the adapter last set it.
    pub(super) switch_ready: bool,
    /// Compat mode: this member switched ([`Action::Switched`]) and handles nothing more.
    pub(super) switched: bool,
    /// The last message seq delivered from each member in this configuration: CPG
    /// delivers a sender's messages in the order it sent them.
    #[cfg(debug_assertions)]
    pub(super) last_seq: BTreeMap<Member, u64>,
}

impl<D: Database> Node<D> {
    /// A member of pmxfs's own protocol that has not seen a configuration yet (mode
    /// `Start`, not quorate).
    pub fn new(me: Member, db: D) -> Self {
        Self::with_protocol(me, db, Protocol::Terms)
    }

    /// A member speaking `protocol` that has not seen a configuration yet.
    pub fn with_protocol(me: Member, db: D, protocol: Protocol) -> Self {
        Node {
            protocol,
            me,
            db,
            mode: Mode::Start,
            quorate: false,
            now: 0,
            next_seq: 1,
            round_counter: 0,
            members: Vec::new(),
            round: Round::opening(),
            writes: Writes::default(),
            confirm: Confirm::default(),
            cluster_nodes: 0,
            wire: None,
            dfsm: DfsmRound::default(),
            resync: Resync::default(),
            term_promised_here: None,
            highest_term_seen: 0,
            resyncs: 0,
            verify: Default::default(),
            switch_ready: false,
            switched: false,
            #[cfg(debug_assertions)]
            last_seq: BTreeMap::new(),
        }
    }

    /// This member.
    pub fn me(&self) -> Member {
        self.me
    }

    /// The protocol this member speaks.
    pub fn protocol(&self) -> Protocol {
        self.protocol
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
        match self.protocol {
            Protocol::Terms => self.round.is_synced(),
            Protocol::Dfsm => self.mode == Mode::Synced && self.dfsm.queued() == 0,
        }
    }

    /// The term this configuration accepted, once its writes flow.
    pub fn accepted_term(&self) -> Option<Term> {
        self.round.term.filter(|_| self.round.accepted())
    }

    /// Whether a write issued now would be sent at once (quorate, all synced and the
    /// round's term accepted); the fs layer reports write permission bits from this and
    /// `quorate`.
    pub fn writable(&self) -> bool {
        // Requests made earlier wait rather than go out while the round runs: a write
        // queued by the round is lost if the configuration changes before the round
        // ends, while a waiting request survives confchgs.
        match self.protocol {
            Protocol::Terms => self.quorate && self.round.accepted() && self.mode != Mode::Error,
            Protocol::Dfsm => {
                self.quorate && self.mode == Mode::Synced && self.members.contains(&self.me)
            }
        }
    }

    /// Current members, sorted.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Requests not answered yet (waiting, on the wire, or applied and waiting for
    /// confirmation).
    pub fn unanswered(&self) -> usize {
        self.writes.unanswered() + self.confirm.len()
    }

    /// How many members must hold a write before its writer is answered: a majority of
    /// the configuration and of the cluster's nodes, but never more than the
    /// configuration has (a quorate configuration smaller than a majority of the nodes,
    /// as corosync's `two_node` allows, has only itself to count on).
    pub fn need(&self) -> usize {
        let c = self.members.len();
        (c / 2 + 1).max(self.cluster_nodes / 2 + 1).min(c)
    }

    /// Whether this member confirms `writer`'s writes without being asked: it is one
    /// of the `need - 1` members before the writer, in member order and round the
    /// start, so each writer has its own confirmers and no message goes out that
    /// nobody waits for. Before, not after: totem passes its token in node order, so
    /// the members before the writer get the token last after its write, when their
    /// daemon has most likely applied it, and the writer gets it right after them
    /// (bench-cluster.sh: 404 files/s for one writer against 344 with the members
    /// after it).
    fn confirms_for(&self, writer: Member) -> bool {
        let n = self.members.len();
        let Ok(w) = self.members.binary_search(&writer) else {
            return false;
        };
        (1..self.need()).any(|k| self.members[(w + n - k) % n] == self.me)
    }

    /// Cross-node checks this member took part in, and how many found its tree
    /// differing from the lowest member's.
    pub fn verifies(&self) -> (u64, u64) {
        (self.verify.checks, self.verify.mismatches)
    }

    /// The local requests own message `seq` carries while it is in flight (empty for
    /// any other message): lets the adapter time a write's stages without knowing how
    /// the core batches.
    pub fn requests_in(&self, seq: u64) -> Vec<ReqId> {
        self.writes.requests_in(seq)
    }

    /// Own writes a membership change lost and that were queued to be sent again.
    pub fn resent(&self) -> u64 {
        self.writes.resent()
    }

    /// Rounds this member restarted because its quorum notification came after its
    /// State (the configuration had no term in between, so writes waited).
    pub fn resyncs(&self) -> u64 {
        self.resyncs
    }

    /// Compat mode: whether this member's next States offer the switch to the term
    /// protocol. The adapter says yes when this node may switch and every node of the
    /// cluster's node list is in the configuration, and sets it before feeding the
    /// configuration change, so that all of a round's States judge the same membership.
    pub fn set_switch_ready(&mut self, ready: bool) {
        self.switch_ready = ready && self.protocol == Protocol::Dfsm;
    }

    /// Compat mode: this member switched to the term protocol.
    pub fn switched(&self) -> bool {
        self.switched
    }

    /// Feed one event; returns the actions to carry out, in order.
    pub fn handle(&mut self, ev: Event<D::Op, D::Entry>) -> Vec<Act<D>> {
        let mut out = Vec::new();
        if self.switched {
            // Replaced by a term-protocol member: nothing here is for it any more.
            return out;
        }
        // Read only for the assertions: each read takes the tree's lock in the daemon.
        #[cfg(debug_assertions)]
        let before = (self.db.promised_term(), self.db.term());
        match (self.protocol, ev) {
            (
                Protocol::Dfsm,
                Event::ConfChg {
                    members, joined, ..
                },
            ) => self.dfsm_confchg(members, joined, &mut out),
            (Protocol::Dfsm, Event::VerifyNow) => self.dfsm_verify_now(&mut out),
            (Protocol::Dfsm, Event::Switched { term }) => self.dfsm_switch(term, &mut out),
            (Protocol::Terms, Event::Switched { .. }) => {}
            (_, ev) => self.handle_common(ev, &mut out),
        }
        if !self.switched
            && !matches!(self.mode, Mode::Error | Mode::Start)
            && self.members.contains(&self.me)
        {
            self.answer_confirmed(&mut out);
            self.pump(&mut out);
        }
        #[cfg(debug_assertions)]
        self.check_invariants(before);
        out
    }

    /// The events both protocols handle alike, or that branch inside.
    fn handle_common(&mut self, ev: Event<D::Op, D::Entry>, out: &mut Vec<Act<D>>) {
        match ev {
            Event::Tick { now } => self.on_tick(now, out),
            Event::Quorum(q) => self.on_quorum(q, out),
            Event::LocalRequest { req_id, op } => self.on_request(req_id, op, out),
            Event::ConfChg { members, .. } => self.on_confchg(members, out),
            Event::Deliver { from, msg } => self.on_deliver(from, msg, out),
            Event::Nodes(n) => self.cluster_nodes = n,
            Event::VerifyNow => self.verify_now(out),
            Event::Switched { .. } => unreachable!("matched in handle"),
        }
    }

    /// What must hold after every event, given the promise and term before it.
    #[cfg(debug_assertions)]
    fn check_invariants(&self, before: (Term, Term)) {
        let after = (self.db.promised_term(), self.db.term());
        assert!(
            after.0 >= before.0,
            "a promise never decreases: {before:?} -> {after:?}"
        );
        assert!(
            after.1 >= before.1,
            "a tree's term never decreases: {before:?} -> {after:?}"
        );
        assert!(
            !self.round.accepted() || self.round.term == Some(self.db.term()),
            "writes flow only on a tree labelled with the round's term"
        );
    }

    pub(super) fn set_mode(&mut self, m: Mode, out: &mut Vec<Act<D>>) {
        if self.mode != m {
            tracing::debug!(me = %self.me, from = ?self.mode, to = ?m, "mode change");
            self.mode = m;
            out.push(Action::ModeChanged(m));
        }
    }

    pub(super) fn send(&mut self, body: Body<D::Op, D::Entry>, out: &mut Vec<Act<D>>) -> u64 {
        let now = self.now;
        self.send_at(body, now, out)
    }

    pub(super) fn send_at(
        &mut self,
        body: Body<D::Op, D::Entry>,
        time: u32,
        out: &mut Vec<Act<D>>,
    ) -> u64 {
        let seq = if self.protocol == Protocol::Dfsm {
            // pmxcfs numbers NORMALs alone (their `count`); state messages fall between.
            let seq = self.dfsm.next_seq(matches!(body, Body::Normal { .. }));
            if let Some(key) = super::dfsm::state_key(&body) {
                self.dfsm.sent_state(key, seq);
            }
            seq
        } else {
            self.next_seq += 1;
            self.next_seq - 1
        };
        out.push(Action::Multicast(Message { seq, time, body }));
        seq
    }

    pub(super) fn reply(req_id: u64, result: Result<(), D::Error>, out: &mut Vec<Act<D>>) {
        out.push(Action::Reply { req_id, result });
    }

    fn fail_requests(reqs: Vec<Request<D::Op>>, kind: CoreError, out: &mut Vec<Act<D>>) {
        for r in reqs {
            Self::reply(r.req, Err(D::core_error(kind)), out);
        }
    }

    /// The term to propose for a round this member starts: above everything it knows.
    pub(super) fn proposed_term(&self) -> Term {
        let t = self
            .db
            .promised_term()
            .max(self.db.term())
            .max(self.highest_term_seen)
            + 1;
        debug_assert!(t > self.highest_term_seen && t > self.db.promised_term());
        t
    }

    pub(super) fn next_epoch(&mut self) -> Epoch {
        self.round_counter = self.round_counter.wrapping_add(1);
        Epoch {
            counter: self.round_counter,
            nodeid: self.me.nodeid,
            pid: self.me.pid,
            // pmxcfs stamps its epochs; pmxfs's own protocol names rounds without.
            time: if self.protocol == Protocol::Dfsm {
                self.now
            } else {
                0
            },
        }
    }

    /// Stop for good: the adapter must restart this node (its database stays as the
    /// last durable step left it).
    pub(super) fn fail(&mut self, what: &str, e: &str, out: &mut Vec<Act<D>>) {
        tracing::error!(me = %self.me, "{what} failed: {e}");
        self.set_mode(Mode::Error, out);
        Self::fail_requests(self.writes.take_all(), CoreError::Failed, out);
        Self::fail_pending(self.confirm.take_all(), CoreError::Failed, out);
    }

    fn fail_pending(ps: Vec<Pending>, kind: CoreError, out: &mut Vec<Act<D>>) {
        for p in ps {
            Self::reply(p.req, Err(D::core_error(kind)), out);
        }
    }

    /// Answer the own writes a majority now holds.
    fn answer_confirmed(&mut self, out: &mut Vec<Act<D>>) {
        if !self.confirm.confirming() {
            return;
        }
        let held = self.confirm.held(&self.members, self.me, self.need());
        for p in self.confirm.confirmed(held) {
            Self::reply(p.req, Ok(()), out);
        }
    }

    /// Send the next Normal if none of this member's is on the wire: the waiting
    /// requests that fit one (if writes flow), and the acknowledgement of what this
    /// member applied, or the acknowledgement alone if a writer counts on it.
    fn pump(&mut self, out: &mut Vec<Act<D>>) {
        if self.protocol == Protocol::Dfsm {
            return self.dfsm_pump(out);
        }
        if self.wire.is_some() {
            return;
        }
        let batch = if self.writable() {
            self.writes.next_batch(D::op_size)
        } else {
            Vec::new()
        };
        if batch.is_empty() && !self.confirm.ack_due() {
            return;
        }
        let time = batch.first().map_or(self.now, |r| r.time);
        let ack = self.confirm.tell();
        let ops = batch.iter().map(|r| r.op.clone()).collect();
        let seq = self.send_at(Body::Normal { ops, ack }, time, out);
        self.wire = Some(seq);
        if !batch.is_empty() {
            self.writes.sent(seq, batch);
        }
    }

    fn on_quorum(&mut self, q: bool, out: &mut Vec<Act<D>>) {
        let gained = q && !self.quorate;
        self.quorate = q;
        if !q {
            // pmxcfs refuses writes without quorum at once; waiting requests too.
            Self::fail_requests(self.writes.take_waiting(), CoreError::NoQuorum, out);
            self.resync.due = false;
            return;
        }
        if gained && self.round.sent_quorate == Some(false) {
            // Our State of this round said "not quorate", so the round picks no term and
            // the configuration would stay read-only until the next confchg, which may
            // never come (quorum can change without the group changing). Quorum usually
            // changes together with the group, though, and its confchg starts a round
            // anyway, so the re-sync waits for the next tick and a confchg cancels it.
            self.resync.due = true;
        }
        self.flush_waiting(out);
    }

    /// Start a new round of this configuration if quorum was gained after this
    /// member's State said otherwise and no confchg came since.
    fn on_tick(&mut self, now: u32, out: &mut Vec<Act<D>>) {
        self.now = now;
        let old = self.confirm.expire(now, RESEND_WINDOW);
        Self::fail_pending(old, CoreError::Unconfirmed, out);
        if self.round.accepted() && self.members.contains(&self.me) {
            let held = self.confirm.held(&self.members, self.me, self.need());
            self.confirm.due_at_tick(held);
        }
        if self.round.termless() && !self.resync.sent {
            self.expire_termless_waits(out);
        }
        if !self.resync.due {
            return;
        }
        if self.resync.sent
            || !self.quorate
            || self.round.sent_quorate != Some(false)
            || matches!(self.mode, Mode::Start | Mode::Error)
        {
            self.resync.due = false;
            return;
        }
        if !self.round.is_synced() {
            // Only a round that ended can be restarted (see `on_sync_start`); every
            // member ends it at the same message, so wait for that.
            return;
        }
        self.resync = Resync {
            due: false,
            // Every member follows the last SyncStart delivered, whoever sent it.
            sent: true,
        };
        self.resyncs += 1;
        let epoch = self.next_epoch();
        tracing::info!(me = %self.me, %epoch, "quorate now: re-syncing to pick a term");
        self.start_round(epoch, out);
    }

    /// Multicast the SyncStart of round `epoch`, proposing a term above all this member
    /// knows of.
    fn start_round(&mut self, epoch: Epoch, out: &mut Vec<Act<D>>) {
        let proposed_term = self.proposed_term();
        self.send(
            Body::SyncStart {
                epoch,
                proposed_term,
            },
            out,
        );
    }

    /// Fail the requests that waited longer than [`TERMLESS_WAIT`] for a re-sync after
    /// a round without a term: nobody would apply them, and the round that would may
    /// never come (a member that stays without quorum never re-syncs).
    pub(super) fn expire_termless_waits(&mut self, out: &mut Vec<Act<D>>) {
        let old = self.writes.expire_waiting(self.now, TERMLESS_WAIT);
        Self::fail_requests(old, CoreError::NoQuorum, out);
    }

    fn on_request(&mut self, req_id: u64, op: D::Op, out: &mut Vec<Act<D>>) {
        let kind = if self.mode == Mode::Error {
            CoreError::Failed
        } else if !self.quorate {
            CoreError::NoQuorum
        } else if self.writes.unanswered() >= MAX_UNANSWERED {
            CoreError::Overloaded
        } else {
            let r = Request {
                req: req_id,
                op,
                time: self.now,
            };
            // Sent by `pump` once nothing of this member's is on the wire.
            self.writes.wait(r);
            return;
        };
        Self::reply(req_id, Err(D::core_error(kind)), out);
    }

    /// Send what waits, if writes flow and nothing of ours is on the wire.
    pub(super) fn flush_waiting(&mut self, out: &mut Vec<Act<D>>) {
        if self.members.contains(&self.me) {
            self.pump(out);
        }
    }

    /// Own writes that nobody applied: sent again, or failed if they are too old.
    fn requeue(&mut self, seqs: Vec<u64>, out: &mut Vec<Act<D>>) {
        if seqs.is_empty() {
            return;
        }
        let n = seqs.len();
        let expired = self.writes.requeue(seqs, self.now);
        for (seq, r) in expired.iter() {
            tracing::info!(me = %self.me, seq, req = r.req, "own write lost in a membership change, too old to send again");
        }
        if n > expired.len() {
            tracing::info!(me = %self.me, count = n - expired.len(), "own writes lost in a membership change, sending them again");
        }
        Self::fail_requests(
            expired.into_iter().map(|(_, r)| r).collect(),
            CoreError::Interrupted,
            out,
        );
    }

    fn on_confchg(&mut self, mut members: Vec<Member>, out: &mut Vec<Act<D>>) {
        if self.mode == Mode::Error {
            return;
        }
        members.sort();
        members.dedup();
        self.members = members;
        #[cfg(debug_assertions)]
        self.last_seq.clear();
        // CPG delivered the old round's queue to every member alike, so nobody applied
        // it; this member's writes in it are sent again.
        let own = self.writes.drop_queued(self.me);
        self.requeue(own, out);
        // Positions and acknowledgements belong to the old configuration; its
        // unconfirmed writes wait for the verdict of the next round with a term.
        self.confirm.new_configuration();
        self.wire = None;
        self.verify.pending = None;
        self.round = Round::opening();
        // This confchg's round carries the current quorum; and a SyncStart sent in the
        // old configuration is never delivered in this one.
        self.resync = Resync::default();
        self.term_promised_here = None;
        let epoch = self.next_epoch();
        if !self.members.contains(&self.me) {
            // We left the group: nothing we sent can be delivered any more.
            Self::fail_requests(self.writes.take_all(), CoreError::Interrupted, out);
            Self::fail_pending(self.confirm.take_all(), CoreError::Unconfirmed, out);
            self.set_mode(Mode::Start, out);
            return;
        }
        self.set_mode(Mode::StartSync, out);
        if self.members[0] == self.me {
            self.start_round(epoch, out);
        }
    }

    fn on_deliver(&mut self, from: Member, mut msg: Msg<D>, out: &mut Vec<Act<D>>) {
        if matches!(self.mode, Mode::Error | Mode::Start) {
            return;
        }
        if !self.members.contains(&from) {
            tracing::warn!(me = %self.me, %from, kind = msg.body.kind(), "message from non-member dropped");
            return;
        }
        if self.protocol == Protocol::Dfsm && from == self.me && msg.seq == 0 {
            // pmxcfs's state messages carry no count: recover the seq it was sent as.
            if let Some(seq) =
                super::dfsm::state_key(&msg.body).and_then(|k| self.dfsm.delivered_state(&k))
            {
                msg.seq = seq;
            }
        }
        #[cfg(debug_assertions)]
        {
            // Compat mode numbers Normals only (pmxcfs's state messages carry no count).
            let last = if msg.seq == 0 {
                None
            } else {
                self.last_seq.insert(from, msg.seq)
            };
            assert!(
                last.is_none_or(|l| l < msg.seq),
                "{from}'s messages delivered out of order: {last:?} then {}",
                msg.seq
            );
        }
        if from == self.me {
            if self.wire.is_some_and(|w| w <= msg.seq) {
                // Delivered, or lost if an older one of ours (FIFO per sender).
                self.wire = None;
            }
            // FIFO per sender: own writes sent before this one and still on the wire
            // will never arrive.
            let lost = self.writes.lost_before(msg.seq);
            if !lost.is_empty() {
                self.requeue(lost, out);
                self.flush_waiting(out);
            }
        }
        let Message { seq, time, body } = msg;
        if self.protocol == Protocol::Dfsm {
            return self.dfsm_deliver(from, seq, time, body, out);
        }
        match body {
            Body::Normal { ops, ack } => {
                let pos = self.confirm.delivered();
                if from != self.me {
                    self.confirm.ack(from, seq, ack);
                }
                self.on_normal(
                    Delivered {
                        from,
                        seq,
                        time,
                        ops,
                        pos,
                    },
                    out,
                )
            }
            Body::SyncStart {
                epoch,
                proposed_term,
            } => self.on_sync_start(from, epoch, proposed_term, out),
            Body::State {
                epoch,
                quorate,
                promised_proposed_term,
                promised_term,
                index,
                ..
            } => {
                if self.round.is(epoch) {
                    self.confirm.state_seen(from, seq);
                }
                self.on_state(
                    from,
                    epoch,
                    super::round::PeerState {
                        quorate,
                        promised_proposed_term,
                        promised_term,
                        index,
                    },
                    out,
                )
            }
            Body::Promise { epoch, term } => self.on_promise(from, epoch, term, out),
            Body::Update { epoch, entries } => self.on_update(from, epoch, entries, out),
            Body::UpdateComplete { epoch } => self.on_update_complete(from, epoch, out),
            Body::VerifyRequest { epoch, id } => self.on_verify_request(from, epoch, id, out),
            Body::Verify {
                epoch,
                id,
                checksum,
            } => self.on_verify(from, epoch, id, checksum, out),
        }
    }

    /// A write: applied now if the round is over, else queued until it is.
    fn on_normal(&mut self, w: Delivered<D::Op>, out: &mut Vec<Act<D>>) {
        if self.round.is_synced() {
            self.apply_write(w, out);
            return;
        }
        if self.writes.queued() >= self.members.len() * MAX_QUEUED_PER_MEMBER {
            let e =
                format!("more than {MAX_QUEUED_PER_MEMBER} writes per member queued by one round");
            self.fail("queueing writes delivered during a sync", &e, out);
            return;
        }
        let own = w.from == self.me;
        self.writes.queue(w, own);
    }

    /// The round is over: decide the writes earlier configurations left unconfirmed,
    /// apply what it queued, in delivery order, then send or fail what waits. `leader`
    /// is the term and version of the leader's tree before the round.
    pub(super) fn after_round(&mut self, leader: (Term, u64), out: &mut Vec<Act<D>>) {
        for w in self.writes.take_queued() {
            self.apply_write(w, out);
            if self.mode == Mode::Error {
                return;
            }
        }
        if self.round.accepted() {
            // Every member that ends this round holds the leader's tree; they all end
            // it at the same message, which counts as the next position, and each
            // acknowledges it at once, so a write the leader's tree contains is
            // answered once `need` members have installed that tree.
            let pos = self.confirm.round_ended();
            let v = self.confirm.verdict(leader.0, leader.1);
            for p in v.held {
                self.confirm.wait(pos, p);
            }
            Self::fail_pending(v.unknown, CoreError::Unconfirmed, out);
        }
        if self.writable() {
            self.flush_waiting(out);
        } else if !self.quorate {
            Self::fail_requests(self.writes.take_waiting(), CoreError::NoQuorum, out);
        } else if self.round.termless() && !self.resync.sent {
            // Quorate, but some State said otherwise: its sender re-syncs once its own
            // quorum notification arrives. Requests wait for that round, a bounded time.
            self.expire_termless_waits(out);
        }
    }

    /// Apply one delivered message of writes, op by op; answer this member's refused
    /// ones at once and keep its applied ones until a majority holds them.
    fn apply_write(&mut self, w: Delivered<D::Op>, out: &mut Vec<Act<D>>) {
        let own = w.from == self.me;
        let requests = if own {
            self.writes.answer(w.seq)
        } else {
            Vec::new()
        };
        debug_assert!(
            !own || requests.len() == w.ops.len(),
            "an own message carries exactly its requests' ops"
        );
        let mut requests = requests.into_iter();
        // Whether the writer waits for a confirmation: every member decides each op
        // alike, so all know which ops applied.
        let mut others = false;
        for op in w.ops {
            let result = self.apply_op(op, w.from, w.time, out);
            if self.mode == Mode::Error {
                return;
            }
            others |= !own && result.is_ok();
            if let Some(r) = requests.next() {
                match result {
                    Ok(()) => self.confirm.wait(
                        w.pos,
                        Pending {
                            req: r.req,
                            time: r.time,
                            term: self.db.term(),
                            version: self.db.version(),
                        },
                    ),
                    Err(e) => Self::reply(r.req, Err(e), out),
                }
            }
        }
        self.confirm.applied(w.pos, others);
        if others && self.confirms_for(w.from) {
            self.confirm.owed = true;
        }
    }

    /// Apply one op of a delivered message.
    fn apply_op(
        &mut self,
        op: D::Op,
        from: Member,
        time: u32,
        out: &mut Vec<Act<D>>,
    ) -> Result<(), D::Error> {
        // Decided by the round, not by this member's quorum flag, so every member
        // decides alike: without an accepted term nobody applies it.
        if !self.round.accepted() {
            return Err(D::core_error(CoreError::NoQuorum));
        }
        debug_assert_eq!(
            self.round.term,
            Some(self.db.term()),
            "a write is applied only to the tree of the round's term"
        );
        match self.db.apply(&op, from.nodeid, time) {
            Ok(outcome) => {
                out.push(Action::Applied {
                    op,
                    outcome,
                    writer: from.nodeid,
                    time,
                    local: from == self.me,
                });
                Ok(())
            }
            Err(ApplyError::Refused(e)) => Err(e),
            Err(ApplyError::Storage(e)) => {
                // The others applied it: this tree no longer follows theirs.
                self.fail("applying a write", &e, out);
                Err(D::core_error(CoreError::Failed))
            }
        }
    }
}
