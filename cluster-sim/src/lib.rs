//! A deterministic simulator of cluster-sync's protocol core over the real tree.
//!
//! N nodes each run the core's [`Node`](cluster_sync::core::Node) over
//! `memdb::replica::Replica`, the database the daemon runs, on a disk in memory
//! ([`disk`]). A seeded scheduler ([`scheduler`]) interleaves client requests
//! ([`workload`]), message deliveries over a model of CPG ([`network`]), clock ticks,
//! partitions, heals, crashes, restarts and storage faults, with the mix of each drawn
//! per seed (swarm testing); [`checker`] checks the invariants after every step and at
//! the end. Every message goes through the daemon's wire encoding. Same seed, same run.
#![warn(missing_docs)]

pub mod checker;
pub mod disk;
pub mod network;
pub mod rng;
pub mod scheduler;
pub mod workload;

pub use scheduler::{run, Failure, Mix, Report, SimConfig};
