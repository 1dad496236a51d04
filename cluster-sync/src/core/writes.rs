//! The write pipeline of one member (DESIGN.md, "Writes"): requests waiting for a
//! round that accepts writes, own writes on the wire, and every member's writes that
//! were delivered before the round ended. It decides nothing about the protocol; the
//! node tells it what happened and sends and answers what it hands back.
use std::collections::{BTreeMap, VecDeque};

use super::types::{Member, ReqId};

/// Requests a member keeps unanswered at most, waiting or on the wire. One beyond it
/// fails at once (`CoreError::Overloaded`); a kernel never has that many writers
/// blocked on one node (each holds a FUSE worker).
pub const MAX_UNANSWERED: usize = 4096;

/// Writes delivered before the round ended that a member keeps, per member of the
/// configuration. Every sender keeps at most [`MAX_UNANSWERED`] writes unanswered, so
/// a longer queue means a broken peer; the member then stops and resyncs.
pub const MAX_QUEUED_PER_MEMBER: usize = MAX_UNANSWERED;

/// Seconds after its request within which a write lost to a membership change is sent
/// again; an older one fails with `Interrupted`, so a caller never waits unboundedly.
pub const RESEND_WINDOW: u32 = 30;

/// A local request and when it was made: a write carries the time it was requested,
/// not the time it could be sent, so a lock release that waited out a sync never looks
/// newer than a lock taken meanwhile (the tree refuses releases older than the lock).
#[derive(Debug)]
pub(super) struct Request<Op> {
    pub req: ReqId,
    pub op: Op,
    pub time: u32,
}

/// Requests whose ops go out together in one message at most.
pub const MAX_BATCH_OPS: usize = 256;

/// Op bytes one message carries at most ([`crate::core::Database::op_size`]); a single
/// larger op still goes out, alone.
pub const MAX_BATCH_BYTES: usize = 256 * 1024;

/// An own message of writes on the wire, kept whole to send them again if a membership
/// change loses it.
#[derive(Debug)]
struct InFlight<Op> {
    requests: Vec<Request<Op>>,
    /// Delivered (and queued until the round ends), so CPG can no longer lose it.
    delivered: bool,
}

/// A message of writes delivered before the round ended, to be applied once it has.
#[derive(Debug)]
pub(super) struct Delivered<Op> {
    pub from: Member,
    pub seq: u64,
    pub time: u32,
    pub ops: Vec<Op>,
    /// Its position among this configuration's Normals.
    pub pos: u64,
}

/// Waiting requests, own writes in flight, and the writes queued by the current round.
#[derive(Debug)]
pub(super) struct Writes<Op> {
    waiting: VecDeque<Request<Op>>,
    /// By message seq.
    in_flight: BTreeMap<u64, InFlight<Op>>,
    /// Requests in `in_flight`.
    in_flight_requests: usize,
    /// In delivery order.
    queued: Vec<Delivered<Op>>,
    resent: u64,
}

impl<Op> Default for Writes<Op> {
    fn default() -> Self {
        Writes {
            waiting: VecDeque::new(),
            in_flight: BTreeMap::new(),
            in_flight_requests: 0,
            queued: Vec::new(),
            resent: 0,
        }
    }
}

impl<Op> Writes<Op> {
    /// Requests not answered yet.
    pub fn unanswered(&self) -> usize {
        self.waiting.len() + self.in_flight_requests
    }

    /// Own writes sent again after a membership change lost them.
    pub fn resent(&self) -> u64 {
        self.resent
    }

    /// Queue a request until a round accepts writes.
    pub fn wait(&mut self, r: Request<Op>) {
        debug_assert!(
            self.unanswered() < MAX_UNANSWERED,
            "the node checks the bound"
        );
        self.waiting.push_back(r);
    }

    /// The oldest waiting requests that fit one message: at most [`MAX_BATCH_OPS`], and
    /// at most [`MAX_BATCH_BYTES`] by `size` unless the first alone is larger, all
    /// requested in the same second (a message carries one time, its ops' mtime).
    pub fn next_batch(&mut self, size: impl Fn(&Op) -> usize) -> Vec<Request<Op>> {
        let mut batch: Vec<Request<Op>> = Vec::new();
        let mut bytes = 0usize;
        while let Some(r) = self.waiting.front() {
            let s = size(&r.op);
            if let Some(first) = batch.first() {
                if batch.len() == MAX_BATCH_OPS
                    || bytes + s > MAX_BATCH_BYTES
                    || r.time != first.time
                {
                    break;
                }
            }
            bytes += s;
            batch.push(self.waiting.pop_front().expect("checked"));
        }
        batch
    }

    /// The oldest waiting request alone (compat mode sends one write per message).
    pub fn next_one(&mut self) -> Option<Request<Op>> {
        self.waiting.pop_front()
    }

    /// The requests message `seq` carries, in their order, while it is in flight.
    pub fn requests_in(&self, seq: u64) -> Vec<ReqId> {
        self.in_flight
            .get(&seq)
            .map(|f| f.requests.iter().map(|r| r.req).collect())
            .unwrap_or_default()
    }

    /// Own message `seq` was delivered: CPG can no longer lose it.
    pub fn mark_delivered(&mut self, seq: u64) {
        if let Some(f) = self.in_flight.get_mut(&seq) {
            f.delivered = true;
        }
    }

    /// Every waiting request, oldest first.
    pub fn take_waiting(&mut self) -> Vec<Request<Op>> {
        self.waiting.drain(..).collect()
    }

    /// Waiting requests made more than `limit` seconds before `now`, which are no
    /// longer waiting.
    pub fn expire_waiting(&mut self, now: u32, limit: u32) -> Vec<Request<Op>> {
        let (old, young): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|r| now.saturating_sub(r.time) > limit);
        self.waiting = young;
        old.into_iter().collect()
    }

    /// `requests` went out as message `seq`, in their order.
    pub fn sent(&mut self, seq: u64, requests: Vec<Request<Op>>) {
        debug_assert!(
            !requests.is_empty(),
            "a bare acknowledgement is not in flight"
        );
        self.in_flight_requests += requests.len();
        let prev = self.in_flight.insert(
            seq,
            InFlight {
                requests,
                delivered: false,
            },
        );
        debug_assert!(prev.is_none(), "message seqs are never reused");
    }

    /// Queue a write delivered before the round ended; `own` if this member sent it.
    pub fn queue(&mut self, d: Delivered<Op>, own: bool) {
        if own {
            if let Some(f) = self.in_flight.get_mut(&d.seq) {
                f.delivered = true;
            }
        }
        self.queued.push(d);
    }

    /// Writes the round queued.
    pub fn queued(&self) -> usize {
        self.queued.len()
    }

    /// Everything the round queued, in delivery order, for applying.
    pub fn take_queued(&mut self) -> Vec<Delivered<Op>> {
        std::mem::take(&mut self.queued)
    }

    /// Own message `seq` was delivered and applied (or refused): its requests, in
    /// the order of its ops.
    pub fn answer(&mut self, seq: u64) -> Vec<Request<Op>> {
        let r = self
            .in_flight
            .remove(&seq)
            .map(|f| f.requests)
            .unwrap_or_default();
        self.in_flight_requests -= r.len();
        r
    }

    /// Own writes still on the wire that were sent before message `seq`: CPG is FIFO
    /// per sender, so once `seq` is delivered they never will be.
    pub fn lost_before(&self, seq: u64) -> Vec<u64> {
        self.in_flight
            .range(..seq)
            .filter(|(_, f)| !f.delivered)
            .map(|(s, _)| *s)
            .collect()
    }

    /// Drop the round's queue (a confchg ended the round: nobody applied it) and
    /// return the seqs of this member's writes in it.
    pub fn drop_queued(&mut self, me: Member) -> Vec<u64> {
        std::mem::take(&mut self.queued)
            .into_iter()
            .filter(|d| d.from == me)
            .map(|d| d.seq)
            .collect()
    }

    /// Own messages `seqs` (ascending) that nobody applied: their requests go back to
    /// the front of the waiting ones in their original order, with their original
    /// time; the ones requested more than [`RESEND_WINDOW`] before `now` are returned
    /// instead, to be failed.
    pub fn requeue(&mut self, seqs: Vec<u64>, now: u32) -> Vec<(u64, Request<Op>)> {
        let mut expired = Vec::new();
        for seq in seqs.into_iter().rev() {
            let Some(f) = self.in_flight.remove(&seq) else {
                continue;
            };
            self.in_flight_requests -= f.requests.len();
            for r in f.requests.into_iter().rev() {
                if now.saturating_sub(r.time) > RESEND_WINDOW {
                    expired.push((seq, r));
                } else {
                    self.resent += 1;
                    self.waiting.push_front(r);
                }
            }
        }
        expired
    }

    /// Every unanswered request (the member stops or left the group), and the queue
    /// dropped.
    pub fn take_all(&mut self) -> Vec<Request<Op>> {
        self.queued.clear();
        self.in_flight_requests = 0;
        let mut all: Vec<Request<Op>> = std::mem::take(&mut self.in_flight)
            .into_values()
            .flat_map(|f| f.requests)
            .collect();
        all.extend(self.waiting.drain(..));
        all
    }
}
