//! Closed process groups: join a group and multicast totally ordered messages.
use std::ffi::c_void;
use std::os::fd::RawFd;
use std::time::Duration;

use parking_lot::Mutex;

use super::error::{CsError, Result};
use super::ffi;

/// Why a process appears in a configuration change (`cpg_reason_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpgReason {
    /// The process joined the group.
    Join,
    /// The process left the group.
    Leave,
    /// Its node left the corosync membership.
    NodeDown,
    /// Its node (re)joined the corosync membership.
    NodeUp,
    /// The process exited without leaving.
    ProcDown,
    /// Anything else (including `CPG_REASON_UNDEFINED`).
    Other(u32),
}

impl From<u32> for CpgReason {
    fn from(r: u32) -> Self {
        use ffi::cpg_reason_t::*;
        match r {
            CPG_REASON_JOIN => CpgReason::Join,
            CPG_REASON_LEAVE => CpgReason::Leave,
            CPG_REASON_NODEDOWN => CpgReason::NodeDown,
            CPG_REASON_NODEUP => CpgReason::NodeUp,
            CPG_REASON_PROCDOWN => CpgReason::ProcDown,
            o => CpgReason::Other(o),
        }
    }
}

/// One group member: a process on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpgAddress {
    /// Corosync node id.
    pub nodeid: u32,
    /// Process id on that node.
    pub pid: u32,
    /// Why it is listed (meaningful in `left`/`joined`).
    pub reason: CpgReason,
}

/// A totem ring identifier; `seq` grows with every membership change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingId {
    /// Node id of the ring representative.
    pub nodeid: u32,
    /// Ring sequence number.
    pub seq: u64,
}

/// A callback from corosync, queued during `dispatch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpgEvent {
    /// A message multicast to the group, in agreed (total) order.
    Deliver {
        /// Sender's node id.
        nodeid: u32,
        /// Sender's pid.
        pid: u32,
        /// Message bytes.
        data: Vec<u8>,
    },
    /// The group membership changed.
    ConfChg {
        /// Current members.
        members: Vec<CpgAddress>,
        /// Processes that left.
        left: Vec<CpgAddress>,
        /// Processes that joined.
        joined: Vec<CpgAddress>,
    },
    /// The totem ring (node-level membership) changed.
    TotemConfChg {
        /// The new ring.
        ring_id: RingId,
        /// Node ids in the ring.
        members: Vec<u32>,
    },
}

/// How `dispatch` drains the IPC queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatch {
    /// Run at most one callback and return, never block.
    OneNonblocking,
    /// Run every callback already queued, never block.
    All,
    /// Block until one callback ran.
    One,
}

impl Dispatch {
    fn raw(self) -> ffi::cs_dispatch_flags_t::Type {
        use ffi::cs_dispatch_flags_t::*;
        match self {
            Dispatch::OneNonblocking => CS_DISPATCH_ONE_NONBLOCKING,
            Dispatch::All => CS_DISPATCH_ALL,
            Dispatch::One => CS_DISPATCH_ONE,
        }
    }
}

/// How `mcast_joined` handles `CS_ERR_TRY_AGAIN` (flow control).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt before giving up with `TryAgain`.
    pub max_retries: u32,
    /// Pause between attempts.
    pub delay: Duration,
}

impl Default for RetryPolicy {
    /// pmxcfs's policy: every 100 ms, up to 100 times (10 s).
    fn default() -> Self {
        RetryPolicy {
            max_retries: 100,
            delay: Duration::from_millis(100),
        }
    }
}

/// What the C callbacks reach through the context pointer.
struct Context {
    events: Mutex<Vec<CpgEvent>>,
}

/// An initialized CPG handle, optionally joined to one group; finalized on drop.
pub struct Cpg {
    handle: ffi::cpg_handle_t,
    group: Mutex<Option<ffi::cpg_name>>,
    retry: RetryPolicy,
    // Must outlive `handle`: corosync holds a raw pointer to it until finalize.
    ctx: Box<Context>,
}

// The handle is an index into libcpg's locked handle database, which serializes
// concurrent calls itself (pmxcfs sends from FUSE threads while dispatching elsewhere).
unsafe impl Send for Cpg {}
unsafe impl Sync for Cpg {}

fn ctx_of(handle: ffi::cpg_handle_t) -> Option<&'static Context> {
    let mut p: *mut c_void = std::ptr::null_mut();
    // SAFETY: handle is the one corosync is calling back for; p is an out-pointer.
    let rc = unsafe { ffi::cpg_context_get(handle, &mut p) };
    if rc != ffi::cs_error_t::CS_OK || p.is_null() {
        return None;
    }
    // SAFETY: the context is the Box<Context> owned by the Cpg whose dispatch is running,
    // so it lives for the whole callback.
    Some(unsafe { &*(p as *const Context) })
}

fn addresses(p: *const ffi::cpg_address, n: usize) -> Vec<CpgAddress> {
    if p.is_null() || n == 0 {
        return Vec::new();
    }
    // SAFETY: corosync passes an array of n entries valid during the callback.
    unsafe { std::slice::from_raw_parts(p, n) }
        .iter()
        .map(|a| CpgAddress {
            nodeid: a.nodeid,
            pid: a.pid,
            reason: a.reason.into(),
        })
        .collect()
}

unsafe extern "C" fn on_deliver(
    handle: ffi::cpg_handle_t,
    _group: *const ffi::cpg_name,
    nodeid: u32,
    pid: u32,
    msg: *mut c_void,
    len: usize,
) {
    let Some(ctx) = ctx_of(handle) else { return };
    let data = if msg.is_null() || len == 0 {
        Vec::new()
    } else {
        // SAFETY: corosync passes a buffer of len bytes valid during the callback.
        unsafe { std::slice::from_raw_parts(msg as *const u8, len) }.to_vec()
    };
    ctx.events
        .lock()
        .push(CpgEvent::Deliver { nodeid, pid, data });
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn on_confchg(
    handle: ffi::cpg_handle_t,
    _group: *const ffi::cpg_name,
    members: *const ffi::cpg_address,
    n_members: usize,
    left: *const ffi::cpg_address,
    n_left: usize,
    joined: *const ffi::cpg_address,
    n_joined: usize,
) {
    let Some(ctx) = ctx_of(handle) else { return };
    ctx.events.lock().push(CpgEvent::ConfChg {
        members: addresses(members, n_members),
        left: addresses(left, n_left),
        joined: addresses(joined, n_joined),
    });
}

unsafe extern "C" fn on_totem_confchg(
    handle: ffi::cpg_handle_t,
    ring_id: ffi::cpg_ring_id,
    n: u32,
    members: *const u32,
) {
    let Some(ctx) = ctx_of(handle) else { return };
    let members = if members.is_null() || n == 0 {
        Vec::new()
    } else {
        // SAFETY: array of n node ids valid during the callback.
        unsafe { std::slice::from_raw_parts(members, n as usize) }.to_vec()
    };
    ctx.events.lock().push(CpgEvent::TotemConfChg {
        ring_id: RingId {
            nodeid: ring_id.nodeid,
            seq: ring_id.seq,
        },
        members,
    });
}

fn group_name(name: &str) -> Result<ffi::cpg_name> {
    let mut g = ffi::cpg_name {
        length: name.len() as u32,
        value: [0; 128],
    };
    if name.len() > g.value.len() {
        return Err(CsError::InvalidParam);
    }
    for (d, s) in g.value.iter_mut().zip(name.bytes()) {
        *d = s as std::os::raw::c_char;
    }
    Ok(g)
}

impl Cpg {
    /// Connect to the local corosync's CPG service (must run in the node's network
    /// namespace: the IPC sockets are abstract unix sockets).
    pub fn initialize() -> Result<Cpg> {
        Self::with_retry(RetryPolicy::default())
    }

    /// Like [`Cpg::initialize`] with an explicit `mcast_joined` retry policy.
    pub fn with_retry(retry: RetryPolicy) -> Result<Cpg> {
        let ctx = Box::new(Context {
            events: Mutex::new(Vec::new()),
        });
        let mut model = ffi::cpg_model_v1_data_t {
            model: ffi::cpg_model_t::CPG_MODEL_V1,
            cpg_deliver_fn: Some(on_deliver),
            cpg_confchg_fn: Some(on_confchg),
            cpg_totem_confchg_fn: Some(on_totem_confchg),
            flags: ffi::CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF,
        };
        let mut handle: ffi::cpg_handle_t = 0;
        // SAFETY: model is a valid v1 model struct (cast as the API requires); the
        // context pointer stays valid as long as the returned Cpg owns the Box.
        CsError::check(unsafe {
            ffi::cpg_model_initialize(
                &mut handle,
                ffi::cpg_model_t::CPG_MODEL_V1,
                &mut model as *mut _ as *mut ffi::cpg_model_data_t,
                &*ctx as *const Context as *mut c_void,
            )
        })?;
        Ok(Cpg {
            handle,
            group: Mutex::new(None),
            retry,
            ctx,
        })
    }

    /// Join the process group `name` (at most 128 bytes).
    pub fn join(&self, name: &str) -> Result<()> {
        let g = group_name(name)?;
        // SAFETY: valid handle and group name.
        CsError::check(unsafe { ffi::cpg_join(self.handle, &g) })?;
        *self.group.lock() = Some(g);
        Ok(())
    }

    /// Leave the joined group (a later `ConfChg` confirms it).
    pub fn leave(&self) -> Result<()> {
        let Some(g) = *self.group.lock() else {
            return Err(CsError::NotExist);
        };
        // SAFETY: valid handle and group name.
        CsError::check(unsafe { ffi::cpg_leave(self.handle, &g) })
    }

    /// Multicast the concatenation of `parts` to the joined group with AGREED (total)
    /// order, retrying `TryAgain` per the retry policy.
    pub fn mcast_joined(&self, parts: &[&[u8]]) -> Result<()> {
        let iov: Vec<ffi::iovec> = parts
            .iter()
            .map(|p| ffi::iovec {
                iov_base: p.as_ptr() as *mut c_void,
                iov_len: p.len(),
            })
            .collect();
        let mut tries = 0;
        loop {
            // SAFETY: iov entries point into `parts`, alive for the call.
            let rc = unsafe {
                ffi::cpg_mcast_joined(
                    self.handle,
                    ffi::cpg_guarantee_t::CPG_TYPE_AGREED,
                    iov.as_ptr(),
                    iov.len() as u32,
                )
            };
            match CsError::check(rc) {
                Err(CsError::TryAgain) if tries < self.retry.max_retries => {
                    tries += 1;
                    if tries % 10 == 0 {
                        tracing::info!(tries, "cpg_mcast_joined: retrying (flow control)");
                    }
                    std::thread::sleep(self.retry.delay);
                }
                r => return r,
            }
        }
    }

    /// This node's corosync node id.
    pub fn local_get(&self) -> Result<u32> {
        let mut id = 0;
        // SAFETY: out-pointer.
        CsError::check(unsafe { ffi::cpg_local_get(self.handle, &mut id) })?;
        Ok(id)
    }

    /// Largest message corosync delivers without fragmenting.
    pub fn max_atomic_msgsize(&self) -> Result<u32> {
        let mut n = 0;
        // SAFETY: out-pointer.
        CsError::check(unsafe { ffi::cpg_max_atomic_msgsize_get(self.handle, &mut n) })?;
        Ok(n)
    }

    /// The fd to poll for readability before calling `dispatch`.
    pub fn fd_get(&self) -> Result<RawFd> {
        let mut fd = -1;
        // SAFETY: out-pointer.
        CsError::check(unsafe { ffi::cpg_fd_get(self.handle, &mut fd) })?;
        Ok(fd)
    }

    /// Run queued callbacks and return the events they produced, in order.
    /// `Err(Library)` means corosync went away: drop this handle and reconnect.
    pub fn dispatch(&self, how: Dispatch) -> Result<Vec<CpgEvent>> {
        // SAFETY: valid handle; the callbacks only touch the boxed context.
        let rc = unsafe { ffi::cpg_dispatch(self.handle, how.raw()) };
        let events = std::mem::take(&mut *self.ctx.events.lock());
        match CsError::check(rc) {
            // Nothing queued is not an error for a non-blocking dispatch.
            Ok(()) | Err(CsError::TryAgain) => Ok(events),
            Err(e) => Err(e),
        }
    }
}

impl Drop for Cpg {
    fn drop(&mut self) {
        // SAFETY: the handle is ours; after finalize no callback can reach ctx.
        let rc = unsafe { ffi::cpg_finalize(self.handle) };
        if let Err(e) = CsError::check(rc) {
            tracing::debug!("cpg_finalize: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names() {
        let g = group_name("pve_dcdb_v1").unwrap();
        assert_eq!(g.length, 11);
        assert_eq!(g.value[0], b'p' as std::os::raw::c_char);
        assert_eq!(
            group_name(&"x".repeat(129)).err(),
            Some(CsError::InvalidParam)
        );
    }

    #[test]
    fn reasons() {
        assert_eq!(
            CpgReason::from(ffi::cpg_reason_t::CPG_REASON_NODEDOWN),
            CpgReason::NodeDown
        );
        assert_eq!(CpgReason::from(77), CpgReason::Other(77));
    }
}
