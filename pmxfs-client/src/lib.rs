//! What a client of a mounted pmxfs needs, without the daemon: the cluster-wide
//! [`cfs_lock`], the reader (and the layout) of the shared-memory version file, and the
//! run-directory paths the daemon publishes them under. `auth-key` builds on this alone,
//! so it needs neither FUSE nor corosync to build.
#![warn(missing_docs)]

pub mod cfs_lock;
pub mod observed;
pub mod run_dir;
pub mod versions;

pub use cfs_lock::{cfs_lock, CfsLockError, CfsLockGuard};
