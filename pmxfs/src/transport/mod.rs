//! How requests reach the filesystem's handlers: fuser's `/dev/fuse` loop
//! ([`dev_fuse`]) or FUSE over io_uring ([`uring`]). Both decode requests, call the
//! same handlers in `fs`, and carry their replies back.
pub mod dev_fuse;
pub mod uring;

pub use uring::{Negotiation, Transport};
