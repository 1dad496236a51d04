//! The corosync quorum service: is this partition quorate?
use std::ffi::c_void;
use std::os::fd::RawFd;

use parking_lot::Mutex;

use super::cpg::{Dispatch, RingId};
use super::error::{CsError, Result};
use super::ffi;

/// A quorum callback, queued during `dispatch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuorumEvent {
    /// Quorum state after a membership change.
    Quorum {
        /// Whether this partition is quorate.
        quorate: bool,
        /// Ring the decision belongs to.
        ring_id: RingId,
        /// Node ids in the quorum view.
        members: Vec<u32>,
    },
    /// Node-level membership change.
    Nodelist {
        /// The new ring.
        ring_id: RingId,
        /// Current node ids.
        members: Vec<u32>,
        /// Node ids that joined.
        joined: Vec<u32>,
        /// Node ids that left.
        left: Vec<u32>,
    },
}

struct Context {
    events: Mutex<Vec<QuorumEvent>>,
}

/// An initialized quorum handle; finalized on drop.
pub struct Quorum {
    handle: ffi::quorum_handle_t,
    quorum_type: u32,
    // Must outlive `handle` (raw pointer held by corosync).
    ctx: Box<Context>,
}

// Same reasoning as for Cpg: libquorum's handle database serializes calls.
unsafe impl Send for Quorum {}
unsafe impl Sync for Quorum {}

fn ctx_of(handle: ffi::quorum_handle_t) -> Option<&'static Context> {
    let mut p: *const c_void = std::ptr::null();
    // SAFETY: out-pointer; handle is the one being dispatched.
    let rc = unsafe { ffi::quorum_context_get(handle, &mut p) };
    if rc != ffi::cs_error_t::CS_OK || p.is_null() {
        return None;
    }
    // SAFETY: points at the Box<Context> owned by the dispatching Quorum.
    Some(unsafe { &*(p as *const Context) })
}

fn ids(p: *const u32, n: u32) -> Vec<u32> {
    if p.is_null() || n == 0 {
        return Vec::new();
    }
    // SAFETY: array of n ids valid during the callback.
    unsafe { std::slice::from_raw_parts(p, n as usize) }.to_vec()
}

unsafe extern "C" fn on_quorum(
    handle: ffi::quorum_handle_t,
    quorate: u32,
    ring_id: ffi::quorum_ring_id,
    n: u32,
    members: *const u32,
) {
    let Some(ctx) = ctx_of(handle) else { return };
    ctx.events.lock().push(QuorumEvent::Quorum {
        quorate: quorate != 0,
        ring_id: RingId {
            nodeid: ring_id.nodeid,
            seq: ring_id.seq,
        },
        members: ids(members, n),
    });
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn on_nodelist(
    handle: ffi::quorum_handle_t,
    ring_id: ffi::quorum_ring_id,
    n_members: u32,
    members: *const u32,
    n_joined: u32,
    joined: *const u32,
    n_left: u32,
    left: *const u32,
) {
    let Some(ctx) = ctx_of(handle) else { return };
    ctx.events.lock().push(QuorumEvent::Nodelist {
        ring_id: RingId {
            nodeid: ring_id.nodeid,
            seq: ring_id.seq,
        },
        members: ids(members, n_members),
        joined: ids(joined, n_joined),
        left: ids(left, n_left),
    });
}

impl Quorum {
    /// Connect to the local corosync's quorum service.
    pub fn initialize() -> Result<Quorum> {
        let ctx = Box::new(Context {
            events: Mutex::new(Vec::new()),
        });
        let mut model = ffi::quorum_model_v1_data_t {
            model: ffi::quorum_model_t::QUORUM_MODEL_V1,
            quorum_notify_fn: Some(on_quorum),
            nodelist_notify_fn: Some(on_nodelist),
        };
        let mut handle = 0;
        let mut quorum_type = 0;
        // SAFETY: valid v1 model; ctx outlives the handle (owned by the result).
        CsError::check(unsafe {
            ffi::quorum_model_initialize(
                &mut handle,
                ffi::quorum_model_t::QUORUM_MODEL_V1,
                &mut model as *mut _ as *mut ffi::quorum_model_data_t,
                &mut quorum_type,
                &*ctx as *const Context as *mut c_void,
            )
        })?;
        Ok(Quorum {
            handle,
            quorum_type,
            ctx,
        })
    }

    /// 1 when a quorum provider (votequorum) is configured, 0 when quorum is always true.
    pub fn quorum_type(&self) -> u32 {
        self.quorum_type
    }

    /// Whether this partition is quorate right now.
    pub fn getquorate(&self) -> Result<bool> {
        let mut q = 0;
        // SAFETY: out-pointer.
        CsError::check(unsafe { ffi::quorum_getquorate(self.handle, &mut q) })?;
        Ok(q != 0)
    }

    /// Start notifications: the current state at once, then every change.
    pub fn trackstart(&self) -> Result<()> {
        // SAFETY: valid handle.
        CsError::check(unsafe {
            ffi::quorum_trackstart(self.handle, ffi::CS_TRACK_CURRENT | ffi::CS_TRACK_CHANGES)
        })
    }

    /// The fd to poll before `dispatch`.
    pub fn fd_get(&self) -> Result<RawFd> {
        let mut fd = -1;
        // SAFETY: out-pointer.
        CsError::check(unsafe { ffi::quorum_fd_get(self.handle, &mut fd) })?;
        Ok(fd)
    }

    /// Run queued callbacks and return their events in order.
    pub fn dispatch(&self, how: Dispatch) -> Result<Vec<QuorumEvent>> {
        let flags = match how {
            Dispatch::OneNonblocking => ffi::cs_dispatch_flags_t::CS_DISPATCH_ONE_NONBLOCKING,
            Dispatch::All => ffi::cs_dispatch_flags_t::CS_DISPATCH_ALL,
            Dispatch::One => ffi::cs_dispatch_flags_t::CS_DISPATCH_ONE,
        };
        // SAFETY: valid handle; callbacks only touch the boxed context.
        let rc = unsafe { ffi::quorum_dispatch(self.handle, flags) };
        let events = std::mem::take(&mut *self.ctx.events.lock());
        match CsError::check(rc) {
            Ok(()) | Err(CsError::TryAgain) => Ok(events),
            Err(e) => Err(e),
        }
    }
}

impl Drop for Quorum {
    fn drop(&mut self) {
        // SAFETY: our handle; no callback runs after finalize.
        let rc = unsafe { ffi::quorum_finalize(self.handle) };
        if let Err(e) = CsError::check(rc) {
            tracing::debug!("quorum_finalize: {e}");
        }
    }
}
