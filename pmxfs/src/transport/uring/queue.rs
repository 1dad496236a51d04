//! One FUSE-over-io_uring queue: a thread pinned to its CPU, with its own io_uring and
//! `DEPTH` ring entries registered with the kernel. The kernel puts a request on the
//! queue of the CPU its caller runs on, so the caller, this thread and the reply all
//! stay on one CPU: no cross-CPU wake-up per round trip, which is what a `/dev/fuse`
//! reader pays on a VM.

use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::fs::PmxFs;

use super::abi::{self, InHeader};
use super::dispatch::dispatch;
use super::offload::{waits, Pool};
use super::outbox::{Done, Outbox, RingReply};

/// Ring entries per queue. One is enough for a thread that answers in order; the
/// second lets the kernel hand over the next request while a lock `mkdir` waits for
/// its invalidations to be sent.
pub const DEPTH: usize = 2;
/// Ring entries per queue when waiting requests go to the worker pool: each one in
/// flight there holds an entry, and the queue must still have one for reads.
pub const DEPTH_OFFLOAD: usize = 8;
const WAKE: u64 = u64::MAX;

/// A ring entry's buffers; the kernel keeps their addresses from REGISTER on.
struct Slot {
    header: Box<[u64; abi::RING_HEADER_LEN / 8]>,
    payload: Vec<u8>,
    iov: Box<[libc::iovec; 2]>,
}

impl Slot {
    fn new(payload_len: usize) -> Slot {
        let mut s = Slot {
            header: Box::new([0; abi::RING_HEADER_LEN / 8]),
            payload: vec![0; payload_len],
            iov: Box::new(
                [libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                }; 2],
            ),
        };
        s.iov[0] = libc::iovec {
            iov_base: s.header.as_mut_ptr().cast(),
            iov_len: abi::RING_HEADER_LEN,
        };
        s.iov[1] = libc::iovec {
            iov_base: s.payload.as_mut_ptr().cast(),
            iov_len: payload_len,
        };
        s
    }

    fn header(&mut self) -> &mut [u8] {
        // SAFETY: a [u64; 36] is 288 initialised bytes; u8 has no alignment needs.
        unsafe {
            std::slice::from_raw_parts_mut(self.header.as_mut_ptr().cast(), abi::RING_HEADER_LEN)
        }
    }
}

/// Build a REGISTER command. The crate's `UringCmd80` sets `addr` but not `len`,
/// which FUSE reads as the number of iovecs (2): patch the SQE's `len` field.
fn register_sqe(dev: RawFd, qid: u16, slot: usize, iov: *const libc::iovec) -> squeue::Entry128 {
    let e = opcode::UringCmd80::new(types::Fd(dev), abi::CMD_REGISTER)
        .cmd(abi::cmd_req(0, qid))
        .addr(Some(iov as u64))
        .build()
        .user_data(slot as u64);
    const _: () = assert!(std::mem::size_of::<squeue::Entry128>() == 128);
    // SAFETY: Entry128 is a repr(C) 128-byte SQE (asserted above); `len` is the u32 at
    // byte 24 of `struct io_uring_sqe`, and any u32 value is valid there.
    let mut raw: [u8; 128] = unsafe { std::mem::transmute(e) };
    raw[24..28].copy_from_slice(&2u32.to_le_bytes());
    // SAFETY: same layout, back to the crate's type.
    unsafe { std::mem::transmute::<[u8; 128], squeue::Entry128>(raw) }
}

fn commit_sqe(dev: RawFd, qid: u16, slot: usize, unique: u64) -> squeue::Entry128 {
    opcode::UringCmd80::new(types::Fd(dev), abi::CMD_COMMIT_AND_FETCH)
        .cmd(abi::cmd_req(unique, qid))
        .build()
        .user_data(slot as u64)
}

fn pin_to(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_SET bounds-checks against its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            tracing::debug!(cpu, "cannot pin io_uring queue thread (offline CPU?)");
        }
    }
}

/// Repeat `f` while it is interrupted by a signal. io_uring_enter returns EINTR when
/// the thread is stopped and continued (SIGSTOP/SIGCONT, a debugger or strace
/// attaching) or runs a signal handler; the ring is intact and nothing was lost.
fn retry_eintr<T>(mut f: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// How a queue's start ended.
pub type Started = Result<(), String>;

/// Run queue `qid` until the connection ends; `started` hears once when its entries
/// were submitted for registration. `fail_after` is fault injection: fail once that
/// many requests were handed to their handlers.
pub fn run(
    qid: u16,
    dev: RawFd,
    payload_len: usize,
    fs: Arc<PmxFs>,
    pool: Option<Arc<Pool>>,
    started: Sender<Started>,
    fail_after: Option<u64>,
) -> std::io::Result<()> {
    pin_to(qid as usize);
    let depth = if pool.is_some() { DEPTH_OFFLOAD } else { DEPTH };
    let mut ring: IoUring<squeue::Entry128, cqueue::Entry> =
        super::ring_builder().build((depth * 2 + 2) as u32)?;
    let outbox = Arc::new(Outbox::new()?);
    let mut slots: Vec<Slot> = (0..depth).map(|_| Slot::new(payload_len)).collect();
    let mut wake_buf = Box::new([0u8; 8]);
    let wake_sqe = |buf: &mut [u8; 8]| {
        squeue::Entry128::from(
            opcode::Read::new(types::Fd(outbox.wake_fd()), buf.as_mut_ptr(), 8)
                .build()
                .user_data(WAKE),
        )
    };

    for (i, slot) in slots.iter().enumerate() {
        let sqe = register_sqe(dev, qid, i, slot.iov.as_ptr());
        // SAFETY: the iovecs and the buffers they point to live in `slots` for as long
        // as the ring does.
        unsafe { ring.submission().push(&sqe) }.expect("ring has room for every entry");
    }
    // SAFETY: wake_buf outlives the ring (dropped after it, below).
    unsafe { ring.submission().push(&wake_sqe(&mut wake_buf)) }.expect("room");
    retry_eintr(|| ring.submit())?;
    let _ = started.send(Ok(()));

    let mut live = depth;
    let mut retries = 0;
    let mut handled = 0u64;
    let mut ready: Vec<(usize, i32)> = Vec::with_capacity(depth + 1);
    let mut done: Vec<Done> = Vec::with_capacity(depth);
    while live > 0 {
        retry_eintr(|| ring.submit_and_wait(1))?;
        ready.extend(
            ring.completion()
                .map(|c| (c.user_data() as usize, c.result())),
        );
        for (slot, res) in ready.drain(..) {
            if slot as u64 == WAKE {
                // SAFETY: as above.
                unsafe { ring.submission().push(&wake_sqe(&mut wake_buf)) }.expect("room");
                continue;
            }
            // REGISTER answers EAGAIN until the kernel has processed our INIT reply.
            if res == -libc::EAGAIN && retries < 2000 {
                retries += 1;
                std::thread::sleep(Duration::from_millis(1));
                let sqe = register_sqe(dev, qid, slot, slots[slot].iov.as_ptr());
                // SAFETY: as above.
                unsafe { ring.submission().push(&sqe) }.expect("room");
                continue;
            }
            if res < 0 {
                // ENOTCONN/ECONNABORTED at unmount, ECANCELED when the ring goes away;
                // anything else is a registration the kernel refused, and the kernel
                // then falls back to /dev/fuse for the whole connection.
                match -res {
                    libc::ENOTCONN | libc::ECONNABORTED | libc::ECANCELED | libc::ENODEV => {
                        tracing::debug!(qid, slot, errno = -res, "ring entry ended")
                    }
                    e => tracing::warn!(qid, slot, errno = e, "io_uring ring entry failed"),
                }
                live -= 1;
                continue;
            }
            let s = &mut slots[slot];
            let (h, arg, n) = {
                let hdr = s.header();
                let arg: [u8; 128] = hdr[abi::OP_IN..abi::OP_IN + 128]
                    .try_into()
                    .expect("128 bytes");
                let n = abi::Le::u32_at(&*hdr, abi::PAYLOAD_SZ) as usize;
                (InHeader::parse(hdr), arg, n)
            };
            let payload = &s.payload[..n.min(s.payload.len())];
            fs.tree
                .metrics
                .ring_requests
                .fetch_add(1, Ordering::Relaxed);
            let reply = RingReply::new(outbox.clone(), slot, h.unique);
            match &pool {
                Some(pool) if waits(h.opcode) => pool.run(h, arg, payload, reply),
                _ => dispatch(&fs, h, &arg, payload, reply),
            }
            handled += 1;
            if fail_after.is_some_and(|n| handled >= n) {
                return Err(std::io::Error::other(
                    "failure injected (--fault fail-queue-after)",
                ));
            }
        }
        outbox.drain(&mut done);
        for d in done.drain(..) {
            let s = &mut slots[d.slot];
            let n = d.data.len().min(s.payload.len());
            s.payload[..n].copy_from_slice(&d.data[..n]);
            let hdr = s.header();
            hdr[..16].copy_from_slice(&abi::out_header(d.unique, d.error, n));
            hdr[abi::PAYLOAD_SZ..abi::PAYLOAD_SZ + 4].copy_from_slice(&(n as u32).to_le_bytes());
            let sqe = commit_sqe(dev, qid, d.slot, d.unique);
            // SAFETY: the entry's buffers stay in `slots`.
            unsafe { ring.submission().push(&sqe) }.expect("room for every commit");
        }
    }
    drop(ring);
    drop(wake_buf);
    Ok(())
}
