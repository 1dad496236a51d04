//! Protocol messages, independent of their byte encoding (see `crate::wire`).
use super::types::{DbIndex, Digest, Epoch, Term};

/// One multicast message with the header every message carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Message<O, E> {
    /// Per-sender send counter. CPG delivers a sender's messages in send order, so when a
    /// node delivers its own message `seq`, its undelivered messages below `seq` are lost.
    pub seq: u64,
    /// Sender's clock (seconds) when sent; becomes the mtime of what a write changes.
    pub time: u32,
    /// What the message says.
    pub body: Body<O, E>,
}

/// Message kinds, after pmxcfs's `dfsm_message_t`.
#[derive(Debug, Clone, PartialEq)]
pub enum Body<O, E> {
    /// Replicated writes (pmxcfs NORMAL, one op per message there), applied in order,
    /// each answered on its own; with no ops, a bare acknowledgement.
    Normal {
        /// The operations, in the order their requests were made.
        ops: Vec<O>,
        /// How many Normal messages of this configuration the sender had applied when
        /// it sent this one: its writers' confirmation that those writes are held here
        /// (DESIGN.md, "Confirmation").
        ack: u64,
    },
    /// Sent by the lowest member after a membership change: "send your state".
    SyncStart {
        /// The round being started.
        epoch: Epoch,
        /// The term the sender proposes for the round: above every promise and term it
        /// knows of. Members promise it before sending their State, so when all could,
        /// the round accepts it without a separate Promise exchange.
        proposed_term: Term,
    },
    /// A member's database summary for one round.
    State {
        /// The round.
        epoch: Epoch,
        /// Whether the sender was quorate when it sent this. A round picks a new term
        /// only if every member says so, so all members decide alike even when their
        /// quorum notifications arrive at different times.
        quorate: bool,
        /// The sender durably promised the SyncStart's proposed term (it was above its
        /// promise and term) before sending this.
        promised_proposed_term: bool,
        /// The sender's promised term ([`crate::core::Database::promised_term`]) as
        /// of sending this.
        promised_term: Term,
        /// The sender's database summary, with the term of its tree.
        index: DbIndex,
        /// Compat mode: the sender runs pmxfs, may switch to the term protocol, and
        /// every node of the cluster is in this configuration (always false in the
        /// term protocol). A round whose States all say so is the switch point.
        switch_ready: bool,
    },
    /// Sent by every member of a quorate round whose proposed term not every member
    /// could promise, once it persisted its promise of `term` (one above every promise
    /// and term in the round); `term` is accepted only after every member's Promise is
    /// delivered.
    Promise {
        /// The round.
        epoch: Epoch,
        /// The term every member computed from the round's states.
        term: Term,
    },
    /// Entries from the leader for out-of-date members.
    Update {
        /// The round.
        epoch: Epoch,
        /// Entries differing in some out-of-date member.
        entries: Vec<E>,
    },
    /// The leader has sent every update of the round.
    UpdateComplete {
        /// The round.
        epoch: Epoch,
    },
    /// The lowest member asks everyone to checksum its tree here, at this point of the
    /// message order (pmxcfs VERIFY_REQUEST).
    VerifyRequest {
        /// The round the check belongs to.
        epoch: Epoch,
        /// Names this check.
        id: u64,
    },
    /// The requester's checksum at its request (pmxcfs VERIFY): a member whose own
    /// differs holds another tree than the requester, and resyncs.
    Verify {
        /// The round the check belongs to.
        epoch: Epoch,
        /// The check.
        id: u64,
        /// [`crate::core::Database::checksum`] of the requester's tree.
        checksum: Digest,
    },
}

impl<O, E> Body<O, E> {
    /// Short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Normal { .. } => "normal",
            Body::SyncStart { .. } => "sync-start",
            Body::State { .. } => "state",
            Body::Promise { .. } => "promise",
            Body::Update { .. } => "update",
            Body::UpdateComplete { .. } => "update-complete",
            Body::VerifyRequest { .. } => "verify-request",
            Body::Verify { .. } => "verify",
        }
    }
}
