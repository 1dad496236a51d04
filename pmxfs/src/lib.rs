//! pmxfs: a Rust re-implementation of Proxmox VE's clustered configuration filesystem.
//!
//! The crate is layered so that policy stays testable without a kernel: [`memdb`] (the
//! tree and its SQLite store), [`locks`] and [`coherence`] are pure; [`fs`] adapts them
//! to FUSE, [`notify`] talks back to the kernel, [`daemon`] wires it all together.
pub mod clock;
pub mod cluster;
pub mod coherence;
pub mod control;
pub mod daemon;
pub mod fs;
pub mod mountpoint;
pub mod notify;
pub mod status;
pub mod uring;
pub mod vfiles;

pub use pmxfs_client::{cfs_lock, CfsLockError, CfsLockGuard};
