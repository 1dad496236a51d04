//! Cluster mode: memdb replicated over corosync with cluster-sync's protocol core.
pub mod codec;
pub mod db;
pub mod runner;
