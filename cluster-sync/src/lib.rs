//! Cluster replication for pmxfs: a pure protocol core modelled on pmxcfs's dfsm, with
//! replication terms, and its wire encoding. No I/O: the corosync bindings are the
//! `corosync-sys` crate and the adapter is the daemon's.
#![warn(missing_docs)]
pub mod core;
pub mod wire;
