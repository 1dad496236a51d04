//! pmxcfs's status service (`status.c`, `logger.c`) as pure code: nothing here does I/O.
//! The daemon's adapters feed it CPG deliveries, membership changes and IPC requests,
//! and carry out what it returns.
//!
//! - [`wire`]: the dfsm framing and the kvstore's UPDATE payload;
//! - [`clog`]: the cluster log, its entries, ring, dedup, merge and JSON;
//! - [`store`]: every node's keys, RRD updates and addresses, and the log;
//! - [`group`]: this node as a member of the `pve_kvstore_v1` group.
#![warn(missing_docs)]
pub mod clog;
pub mod group;
pub mod store;
pub mod wire;
