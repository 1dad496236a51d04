//! Thin safe wrappers over corosync's CPG, quorum, votequorum and cmap client libraries, over the
//! FFI bindgen generates from Debian's headers at build time (`build.rs`).
//!
//! Each wrapper owns its library handle and finalizes it on drop. Callbacks never call
//! back into the library: they only append an event to a queue kept in a boxed context
//! (passed to corosync as the C context pointer, so no globals are needed) and the
//! caller drains that queue after `dispatch` returns.
#![warn(missing_docs)]
pub mod cmap;
pub mod cpg;
pub mod error;
pub mod ffi;
pub mod quorum;
pub mod votequorum;

pub use cmap::{Cmap, NodeEntry};
pub use cpg::{Cpg, CpgAddress, CpgEvent, CpgReason, Dispatch, RetryPolicy, RingId};
pub use error::{CsError, Result};
pub use quorum::{Quorum, QuorumEvent};
pub use votequorum::{VoteInfo, Votequorum};
