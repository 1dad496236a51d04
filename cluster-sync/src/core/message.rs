//! Protocol messages, independent of their byte encoding (see `crate::wire`).
use super::types::{DbIndex, Epoch};

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
    /// A replicated write (pmxcfs NORMAL).
    Normal {
        /// The operation.
        op: O,
    },
    /// Sent by the lowest member after a membership change: "send your state".
    SyncStart {
        /// The round being started.
        epoch: Epoch,
    },
    /// A member's database summary for one round.
    State {
        /// The round.
        epoch: Epoch,
        /// The sender's database summary.
        index: DbIndex,
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
}

impl<O, E> Body<O, E> {
    /// Short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Normal { .. } => "normal",
            Body::SyncStart { .. } => "sync-start",
            Body::State { .. } => "state",
            Body::Update { .. } => "update",
            Body::UpdateComplete { .. } => "update-complete",
        }
    }
}
