//! A deterministic simulator for the protocol core.
//!
//! N nodes run [`crate::core::Node`] over [`SimDb`]. A seeded scheduler interleaves
//! client requests, message deliveries, clock ticks, partitions, heals, crashes and
//! restarts; invariants are checked after every step. Same seed, same run.
//!
//! CPG model (`world.rs`): each configuration has one log, the total order. A
//! multicast is appended to the sender's newest configuration (as CPG orders a
//! message sent just before a confchg after it). Every member delivers the log at its
//! own pace; when the configuration ends, one cut point at or after the furthest
//! delivery is chosen, every surviving member delivers exactly the prefix up to it and
//! nobody delivers the rest, then each gets Quorum + ConfChg for its next
//! configuration. Quorum is a majority of all N nodes and reaches each member together
//! with its confchg. A crash loses the core's memory but keeps its database (tree,
//! term and promised term alike, as the `Database` contract requires).
//!
//! Besides convergence and the fate of every acknowledged write, every step checks
//! that no two databases, live or crashed, hold different trees under the same term
//! and version: leader selection orders trees by (term, version) and relies on it.
mod db;
mod rng;
mod world;

pub use db::{SimCodec, SimDb, SimEntry, SimErr, SimOp, LOCK_DIR, LOCK_TIMEOUT};
pub use rng::Rng;
pub use world::{run, Failure, Report, SimConfig};
