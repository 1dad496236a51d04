//! Cluster replication for pmxfs: corosync bindings, a pure protocol core modelled on
//! pmxcfs's dfsm, its wire encoding and a deterministic simulator.
#![warn(missing_docs)]
pub mod core;
pub mod corosync;
pub mod sim;
pub mod wire;
