//! The replication protocol as a pure state machine: events in, actions out.
//!
//! No I/O, no clocks, no threads: the adapter feeds corosync callbacks, quorum changes,
//! local write requests and the wall clock in as [`Event`]s and carries out the
//! returned [`Action`]s (multicast, answer a local request, publish an applied change).
//! Given the same events every run produces the same actions, which is what the
//! simulator relies on.
//!
//! The protocol is pmxcfs's dfsm with replication terms; `cluster-sync/DESIGN.md`
//! explains it and where it differs. The code is laid out as that document is:
//! [`Node`] (`node.rs`) holds a member's mode, configuration and the events that are
//! not messages; `round.rs` is the state of one sync round, replaced whole by every
//! new round; `sync.rs` handles the round's messages; `writes.rs` is the write
//! pipeline (waiting, in flight, queued, sent again); `leader.rs` picks the leader.
mod confirm;
mod db;
mod dfsm;
pub use dfsm::{count_of, seq_of, SEQ_SHIFT};
mod event;
mod leader;
mod message;
mod node;
mod round;
mod sentinel;
mod sync;
mod types;
mod verify;
mod writes;

#[cfg(test)]
mod test_db;
#[cfg(test)]
mod tests;

pub use db::{ApplyError, CoreError, Database};
pub use event::{Action, Event};
pub use leader::{select_leader, select_leader_dfsm, updates_needed};
pub use message::{Body, Message};
pub use node::{Node, TERMLESS_WAIT};
pub use round::MAX_SYNC_ENTRIES;
pub use sentinel::Sentinel;
pub use types::{DbIndex, Digest, Epoch, Member, Mode, NodeId, Protocol, ReqId, Term};
pub use writes::{
    MAX_BATCH_BYTES, MAX_BATCH_OPS, MAX_QUEUED_PER_MEMBER, MAX_UNANSWERED, RESEND_WINDOW,
};
