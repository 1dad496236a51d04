//! The replication protocol as a pure state machine: events in, actions out.
//!
//! No I/O, no clocks, no threads: the adapter feeds corosync callbacks, quorum changes,
//! local write requests and the wall clock in as [`Event`]s and carries out the
//! returned [`Action`]s (multicast, reply to a FUSE call, invalidate caches). Given the
//! same events every run produces the same actions, which is what the simulator relies on.
//!
//! The protocol is pmxcfs's dfsm (see `node.rs` for where and why it differs).
mod db;
mod event;
mod leader;
mod message;
mod node;
mod types;

pub use db::{CoreError, Database};
pub use event::{Action, Event};
pub use leader::{select_leader, updates_needed};
pub use message::{Body, Message};
pub use node::Node;
pub use types::{DbIndex, Digest, Epoch, Member, Mode, NodeId, ReqId, Term};
