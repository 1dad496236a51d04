//! libqb's IPC server on a thread of its own, with its descriptors in that thread's
//! epoll loop (libqb's poll handlers), as `PVE::IPCC` expects it: service `pve2`,
//! shared-memory transport, pmxcfs's connection rules.
//!
//! Every callback libqb makes runs on this thread, and every request is answered on the
//! spot from the tree service's state (nothing waits for the cluster), so requests are
//! handled one at a time without any of them waiting for another client. A client that
//! does not read its replies fills only its own response ring: the send fails, and
//! that client alone is disconnected.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::ffi::{c_void, CString};
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use libqb_sys as qb;
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

use super::ops::{self, Client, REQUEST_HEADER, RESPONSE_HEADER};
use crate::tree::clients::ClientInfo;
use crate::tree::{Metrics, Tree};

/// Jobs libqb may queue (`job_add`) at most; beyond, it is told to try again.
pub const MAX_JOBS: usize = 1024;

/// How long the loop sleeps at most between checks of the stop flag (milliseconds).
const TICK_MS: u16 = 200;

/// One descriptor libqb watches.
#[derive(Clone, Copy)]
struct Watch {
    data: *mut c_void,
    f: qb::qb_ipcs_dispatch_fn_t,
}

/// The thread's loop and the state the callbacks share.
struct Loop {
    epoll: Epoll,
    watches: HashMap<RawFd, Watch>,
    jobs: VecDeque<(qb::qb_loop_job_dispatch_fn, *mut c_void)>,
    tree: Arc<Tree>,
    www_gid: u32,
}

thread_local! {
    /// Set on the IPC thread only; libqb's callbacks carry no pointer to it.
    static LOOP: RefCell<Option<Loop>> = const { RefCell::new(None) };
}

fn with_loop<R>(f: impl FnOnce(&mut Loop) -> R) -> Option<R> {
    LOOP.with(|l| l.borrow_mut().as_mut().map(f))
}

fn epoll_flags(events: i32) -> EpollFlags {
    // poll(2) and epoll(7) share these bit values.
    EpollFlags::from_bits_truncate(events)
}

/// Watch `fd` for `events` (add, or change an existing watch).
fn watch(fd: i32, events: i32, w: Watch, change: bool) -> i32 {
    with_loop(|l| {
        // SAFETY: libqb owns `fd` and keeps it open until it calls dispatch_del.
        let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
        let mut ev = EpollEvent::new(epoll_flags(events), fd as u64);
        let r = if change {
            l.epoll.modify(bfd, &mut ev)
        } else {
            l.epoll.add(bfd, ev)
        };
        match r {
            Ok(()) => {
                l.watches.insert(fd, w);
                0
            }
            Err(e) => -(e as i32),
        }
    })
    .unwrap_or(-libc::EINVAL)
}

unsafe extern "C" fn dispatch_add(
    _p: qb::qb_loop_priority::Type,
    fd: i32,
    events: i32,
    data: *mut c_void,
    f: qb::qb_ipcs_dispatch_fn_t,
) -> i32 {
    watch(fd, events, Watch { data, f }, false)
}

unsafe extern "C" fn dispatch_mod(
    _p: qb::qb_loop_priority::Type,
    fd: i32,
    events: i32,
    data: *mut c_void,
    f: qb::qb_ipcs_dispatch_fn_t,
) -> i32 {
    watch(fd, events, Watch { data, f }, true)
}

unsafe extern "C" fn dispatch_del(fd: i32) -> i32 {
    // libqb deletes -1 when tearing down a service whose socket never opened (the
    // name was taken).
    if fd < 0 {
        return 0;
    }
    with_loop(|l| {
        l.watches.remove(&fd);
        // SAFETY: as in dispatch_add; the descriptor may already be closed, which only
        // makes the delete fail.
        let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
        let _ = l.epoll.delete(bfd);
        0
    })
    .unwrap_or(0)
}

unsafe extern "C" fn job_add(
    _p: qb::qb_loop_priority::Type,
    data: *mut c_void,
    f: qb::qb_loop_job_dispatch_fn,
) -> i32 {
    with_loop(|l| {
        if l.jobs.len() >= MAX_JOBS {
            return -libc::EAGAIN;
        }
        l.jobs.push_back((f, data));
        0
    })
    .unwrap_or(-libc::EINVAL)
}

/// What a connection carries: who it is, and its id among the tree's clients.
struct Conn {
    client: Client,
    id: u64,
}

unsafe extern "C" fn accept(c: *mut qb::qb_ipcs_connection_t, uid: u32, gid: u32) -> i32 {
    let Some(www_gid) = with_loop(|l| l.www_gid) else {
        return -libc::EINVAL;
    };
    // pmxcfs's rule: root:root reads and writes, group www-data (whatever the user)
    // only reads, everyone else is refused.
    let read_only = if uid == 0 && gid == 0 {
        false
    } else if gid == www_gid {
        true
    } else {
        tracing::warn!(
            uid,
            gid,
            "IPC connection from a user that is neither root nor www-data refused"
        );
        return -libc::EPERM;
    };
    let mut stats = qb::qb_ipcs_connection_stats::default();
    // SAFETY: `c` is the connection libqb is accepting; `stats` is a valid out pointer.
    unsafe { qb::qb_ipcs_connection_stats_get(c, &mut stats, 0) };
    let pid = stats.client_pid.max(0) as u32;
    let Some(id) = with_loop(|l| {
        l.tree.ipc_clients.connected(ClientInfo {
            pid,
            uid,
            gid,
            read_only,
            requests: 0,
        })
    }) else {
        return -libc::EINVAL;
    };
    let conn = Box::new(Conn {
        client: Client { read_only, pid },
        id,
    });
    // SAFETY: the context is freed in `destroyed`, which libqb calls once per connection.
    unsafe { qb::qb_ipcs_context_set(c, Box::into_raw(conn).cast()) };
    with_loop(|l| Metrics::bump(&l.tree.metrics.ipc_connections));
    0
}

unsafe extern "C" fn closed(_c: *mut qb::qb_ipcs_connection_t) -> i32 {
    0
}

unsafe extern "C" fn destroyed(c: *mut qb::qb_ipcs_connection_t) {
    // SAFETY: set in `accept` from Box::into_raw, cleared here so it is freed once.
    unsafe {
        let p = qb::qb_ipcs_context_get(c).cast::<Conn>();
        if !p.is_null() {
            qb::qb_ipcs_context_set(c, std::ptr::null_mut());
            let conn = Box::from_raw(p);
            with_loop(|l| l.tree.ipc_clients.gone(conn.id));
        }
    }
}

/// The header and body of a reply, as libqb's client reads them.
fn response(id: i32, answer: ops::Answer) -> Vec<u8> {
    let (error, body) = match answer {
        Ok(b) => (0, b),
        Err(e) => (-(e as i32), Vec::new()),
    };
    let mut out = Vec::with_capacity(RESPONSE_HEADER + body.len());
    out.extend_from_slice(&id.to_ne_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&((RESPONSE_HEADER + body.len()) as i32).to_ne_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&error.to_ne_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&body);
    out
}

/// The id and payload of a request, or EINVAL for one whose header does not describe it.
fn parse(data: &[u8]) -> (i32, Result<&[u8], Errno>) {
    let word = |at: usize| -> Option<i32> {
        Some(i32::from_ne_bytes(data.get(at..at + 4)?.try_into().ok()?))
    };
    let id = word(0).unwrap_or(0);
    match word(8) {
        Some(size) if size as usize == data.len() && data.len() >= REQUEST_HEADER => {
            (id, Ok(&data[REQUEST_HEADER..]))
        }
        _ => (id, Err(Errno::EINVAL)),
    }
}

unsafe extern "C" fn process(
    c: *mut qb::qb_ipcs_connection_t,
    data: *mut c_void,
    size: usize,
) -> i32 {
    // SAFETY: set in `accept`, valid until `destroyed`.
    let conn = unsafe { qb::qb_ipcs_context_get(c).cast::<Conn>().as_ref() };
    let Some(conn) = conn else {
        // SAFETY: `c` is a live connection.
        unsafe { qb::qb_ipcs_disconnect(c) };
        return 0;
    };
    // SAFETY: libqb hands us `size` readable bytes at `data` for this call.
    let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), size) };
    let client = conn.client;
    let Some(tree) = with_loop(|l| l.tree.clone()) else {
        return 0;
    };
    let (id, payload) = parse(bytes);
    // A bug in a handler must not unwind into libqb: the client gets EIO instead.
    let answer = payload.and_then(|p| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            ops::answer(&tree, client, id, p)
        }))
        .unwrap_or_else(|_| {
            tracing::error!(id, "IPC request handler panicked");
            Err(Errno::EIO)
        })
    });
    Metrics::bump(&tree.metrics.ipc_requests);
    tree.ipc_clients.asked(conn.id);
    let mut reply = response(id, answer);
    // SAFETY: `c` is a live connection.
    let room = unsafe { qb::qb_ipcs_connection_get_buffer_size(c) };
    if room > 0 && reply.len() > room as usize {
        // pmxcfs fails the send and drops the client; answering EFBIG keeps it.
        reply = response(id, Err(Errno::EFBIG));
    }
    // SAFETY: `reply` is valid for its length during the call.
    let sent = unsafe { qb::qb_ipcs_response_send(c, reply.as_ptr().cast(), reply.len()) };
    if sent < 0 {
        // A client that does not read its replies (or vanished) fills only its own
        // ring; dropping it keeps everyone else served.
        tracing::warn!(
            id,
            pid = client.pid,
            "IPC reply not sent ({}): disconnecting the client",
            Errno::from_raw(-sent as i32)
        );
        Metrics::bump(&tree.metrics.ipc_dropped);
        // SAFETY: `c` is a live connection.
        unsafe { qb::qb_ipcs_disconnect(c) };
    }
    0
}

/// Run the service `name` on this thread until `stop` is set; `ready` gets `Ok` once
/// clients can connect, or why they cannot.
pub fn run(
    name: &str,
    tree: Arc<Tree>,
    www_gid: u32,
    stop: Arc<AtomicBool>,
    ready: std::sync::mpsc::SyncSender<Result<(), String>>,
) {
    let epoll = match Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC) {
        Ok(e) => e,
        Err(e) => {
            let _ = ready.send(Err(format!("epoll: {e}")));
            return;
        }
    };
    LOOP.with(|l| {
        *l.borrow_mut() = Some(Loop {
            epoll,
            watches: HashMap::new(),
            jobs: VecDeque::new(),
            tree,
            www_gid,
        })
    });
    let cname = CString::new(name).expect("service name without NUL");
    let mut handlers = qb::qb_ipcs_service_handlers {
        connection_accept: Some(accept),
        connection_created: None,
        msg_process: Some(process),
        connection_closed: Some(closed),
        connection_destroyed: Some(destroyed),
    };
    let mut poll = qb::qb_ipcs_poll_handlers {
        job_add: Some(job_add),
        dispatch_add: Some(dispatch_add),
        dispatch_mod: Some(dispatch_mod),
        dispatch_del: Some(dispatch_del),
    };
    // SAFETY: libqb copies the handler tables; the name is copied too.
    let service = unsafe {
        qb::qb_ipcs_create(
            cname.as_ptr(),
            1,
            qb::qb_ipc_type::QB_IPC_SHM,
            &mut handlers,
        )
    };
    if service.is_null() {
        let _ = ready.send(Err(format!(
            "qb_ipcs_create: {}",
            std::io::Error::last_os_error()
        )));
        return;
    }
    // SAFETY: `service` is valid; the tables outlive this call (libqb copies them).
    let r = unsafe {
        qb::qb_ipcs_poll_handlers_set(service, &mut poll);
        qb::qb_ipcs_run(service)
    };
    if r != 0 {
        let _ = ready.send(Err(format!("qb_ipcs_run: {}", Errno::from_raw(-r))));
        // SAFETY: created above, not run.
        unsafe { qb::qb_ipcs_destroy(service) };
        return;
    }
    let _ = ready.send(Ok(()));
    let mut events = vec![EpollEvent::empty(); 64];
    while !stop.load(Ordering::Relaxed) {
        let idle = with_loop(|l| l.jobs.is_empty()).unwrap_or(true);
        let timeout: u16 = if idle { TICK_MS } else { 0 };
        let n = with_loop(|l| l.epoll.wait(&mut events, timeout)).unwrap_or(Ok(0));
        let n = match n {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => {
                tracing::error!("IPC loop: epoll_wait: {e}; the IPC server stops");
                break;
            }
        };
        for ev in &events[..n] {
            let fd = ev.data() as RawFd;
            // Copied out first: the callback may add or remove watches.
            let Some(w) = with_loop(|l| l.watches.get(&fd).copied()).flatten() else {
                continue;
            };
            let Some(f) = w.f else { continue };
            // SAFETY: the callback and its data are libqb's, registered for `fd`.
            let r = unsafe { f(fd, ev.events().bits(), w.data) };
            if r < 0 {
                // As libqb's own loop does: a dispatch function that fails is removed.
                // SAFETY: same descriptor libqb registered.
                unsafe { dispatch_del(fd) };
            }
        }
        let jobs: Vec<_> = with_loop(|l| l.jobs.drain(..).collect()).unwrap_or_default();
        for (f, data) in jobs {
            if let Some(f) = f {
                // SAFETY: libqb's job and its data, queued by job_add.
                unsafe { f(data) };
            }
        }
    }
    // SAFETY: `service` is valid and no callback runs any more on this thread.
    unsafe { qb::qb_ipcs_destroy(service) };
    LOOP.with(|l| l.borrow_mut().take());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_libqbs() {
        let r = response(6, Ok(b"abc".to_vec()));
        assert_eq!(r.len(), 27);
        assert_eq!(&r[0..4], &6i32.to_ne_bytes());
        assert_eq!(&r[8..12], &27i32.to_ne_bytes());
        assert_eq!(&r[16..20], &0i32.to_ne_bytes());
        let r = response(99, Err(Errno::ECHRNG));
        assert_eq!(
            (r.len(), &r[16..20]),
            (24, &(-libc::ECHRNG).to_ne_bytes()[..])
        );
        let mut req = vec![0u8; 20];
        req[0..4].copy_from_slice(&6i32.to_ne_bytes());
        req[8..12].copy_from_slice(&20i32.to_ne_bytes());
        assert_eq!(parse(&req), (6, Ok(&req[16..])));
        req[8..12].copy_from_slice(&21i32.to_ne_bytes());
        assert_eq!(
            parse(&req).1,
            Err(Errno::EINVAL),
            "size disagrees with the data"
        );
        assert_eq!(
            parse(&[1, 0]).1,
            Err(Errno::EINVAL),
            "shorter than a header"
        );
    }
}
