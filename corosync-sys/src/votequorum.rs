//! corosync's votequorum service, for what it says of each node's votes. No callbacks:
//! the caller asks when the membership it judges changes.
use super::error::{CsError, Result};
use super::ffi;

/// What votequorum says of one node and of the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoteInfo {
    /// The node's votes.
    pub node_votes: u32,
    /// Votes present in this partition (nodes and a quorum device).
    pub total_votes: u32,
    /// Votes needed for quorum.
    pub quorum: u32,
}

/// An initialized votequorum handle; finalized on drop.
pub struct Votequorum {
    handle: ffi::votequorum_handle_t,
}

// As for Cpg: libvotequorum's handle database serializes calls.
unsafe impl Send for Votequorum {}

impl Votequorum {
    /// Connect to the local corosync's votequorum service.
    pub fn initialize() -> Result<Votequorum> {
        let mut handle = 0;
        let mut callbacks = ffi::votequorum_callbacks_t {
            votequorum_quorum_notify_fn: None,
            votequorum_expectedvotes_notify_fn: None,
            votequorum_nodelist_notify_fn: None,
        };
        // SAFETY: out-pointer and a callbacks struct with no callbacks.
        CsError::check(unsafe { ffi::votequorum_initialize(&mut handle, &mut callbacks) })?;
        Ok(Votequorum { handle })
    }

    /// votequorum's view of node `nodeid`.
    pub fn info(&self, nodeid: u32) -> Result<VoteInfo> {
        // SAFETY: a plain C struct; zero is a valid value for every field.
        let mut i: ffi::votequorum_info = unsafe { std::mem::zeroed() };
        // SAFETY: valid handle, out-pointer.
        CsError::check(unsafe { ffi::votequorum_getinfo(self.handle, nodeid, &mut i) })?;
        Ok(VoteInfo {
            node_votes: i.node_votes,
            total_votes: i.total_votes,
            quorum: i.quorum,
        })
    }
}

impl Drop for Votequorum {
    fn drop(&mut self) {
        // SAFETY: our handle.
        let rc = unsafe { ffi::votequorum_finalize(self.handle) };
        if let Err(e) = CsError::check(rc) {
            tracing::debug!("votequorum_finalize: {e}");
        }
    }
}
