//! pmxfs: a Rust re-implementation of Proxmox VE's clustered configuration filesystem.
//!
//! The crate is layered so that policy stays testable without a kernel: [`memdb`] (the
//! tree and its SQLite store), [`locks`] and [`coherence`] are pure; [`fs`] adapts them
//! to FUSE, [`notify`] talks back to the kernel, [`daemon`] wires it all together.
pub mod cfs_lock;
pub mod cluster;
pub mod coherence;
pub mod control;
pub mod daemon;
pub mod fs;
pub mod locks;
pub mod memdb;
pub mod mountpoint;
pub mod notify;
pub mod status;
pub mod uring;
pub mod version_shm;
pub mod vfiles;

pub use cfs_lock::{cfs_lock, CfsLockError, CfsLockGuard};
