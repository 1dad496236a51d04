//! Cluster mode: the corosync adapter around cluster-sync's protocol core, which
//! replicates the tree (through `memdb::replica`) and publishes what it applies through
//! the tree service.
pub mod runner;
