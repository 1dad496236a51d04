//! pmxfs: a Rust re-implementation of Proxmox VE's clustered configuration filesystem.
//!
//! The daemon is a tree service with adapters around it:
//! - [`tree`]: the memdb (crate `memdb`, stored by crate `storage`) and everything that
//!   follows a change of it: node status, the kernel's references, invalidations, the
//!   shared-memory versions, metrics, the clock;
//! - [`fs`]: the filesystem's request handlers and open files, carried by [`transport`]
//!   (fuser's `/dev/fuse` loop, or FUSE over io_uring);
//! - [`cluster`]: the corosync adapter around cluster-sync's protocol core;
//! - [`control`]: the control socket behind `pmxfs status`;
//! - [`ipc`]: the `pve2` IPC server PVE's daemons talk to.
//!
//! The adapters import the tree, never each other. [`daemon`] starts them in order;
//! [`coherence`] is the pure cache policy, [`mountpoint`] the mount-point checks.
pub mod cluster;
pub mod coherence;
pub mod control;
pub mod corosync_conf;
pub mod daemon;
pub mod daemonize;
pub mod db_tools;
pub mod faults;
pub mod fs;
pub mod ipc;
pub mod mountpoint;
pub mod rrd;
pub mod run_files;
pub mod transport;
pub mod tree;

pub use pmxfs_client::{cfs_lock, CfsLockError, CfsLockGuard};
