//! FUSE over io_uring (Linux 6.14+, `fuse.enable_uring=1`): a transport beside fuser's
//! `/dev/fuse` loop. fuser still mounts, answers INIT (where this transport is
//! negotiated) and receives FORGET and INTERRUPT; every other request arrives on a
//! per-CPU ring queue (`queue`), is decoded (`abi`, `dispatch`) and handed to the same
//! handlers, whose answers go back through `outbox`.
//!
//! Why: on `/dev/fuse` each round trip wakes a daemon thread on whichever CPU is idle,
//! and on this kind of VM the cross-CPU wake-up costs 30–70 µs against 5 µs on the
//! caller's own CPU. Ring queues are per CPU, so request, handler and reply stay there.

pub mod abi;
mod dispatch;
mod offload;
mod outbox;
mod queue;

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::mpsc::channel;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use io_uring::{cqueue, squeue};
use parking_lot::{Condvar, Mutex};

use crate::faults::Faults;
use crate::fs::PmxFs;

/// Which transport carries requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// io_uring when the kernel offers it, else `/dev/fuse`.
    Auto,
    /// As `Auto`, with a warning when the kernel does not offer io_uring.
    IoUring,
    /// fuser's `/dev/fuse` reader threads only.
    DevFuse,
}

/// What INIT settled about io_uring, shared between fuser's INIT handler and the
/// daemon that starts the queues.
pub struct Negotiation {
    want: bool,
    settled: Mutex<Option<(bool, bool)>>,
    cv: Condvar,
}

impl Negotiation {
    /// `want`: ask for io_uring if the kernel offers it.
    pub fn new(want: bool) -> Arc<Negotiation> {
        Arc::new(Negotiation {
            want,
            settled: Mutex::new(None),
            cv: Condvar::new(),
        })
    }

    /// Whether INIT should ask for io_uring.
    pub fn wanted(&self) -> bool {
        self.want
    }

    /// INIT's outcome: io_uring `taken`, and whether the kernel `offered` it.
    pub fn settle(&self, taken: bool, offered: bool) {
        *self.settled.lock() = Some((taken, offered));
        self.cv.notify_all();
    }

    /// INIT's outcome, waiting up to `timeout` for it.
    pub fn wait(&self, timeout: Duration) -> Option<(bool, bool)> {
        let mut s = self.settled.lock();
        if s.is_none() {
            self.cv.wait_for(&mut s, timeout);
        }
        *s
    }
}

/// Whether this process can create an io_uring with 128-byte SQEs (it cannot when
/// `kernel.io_uring_disabled` forbids it or in some sandboxes). Checked before INIT
/// asks for the transport: once asked, the kernel holds every request until the
/// queues are registered.
pub fn available() -> bool {
    ring_builder().build(4).is_ok()
}

/// How queue rings are set up. Only the queue's own thread submits, and it only needs
/// completions when it waits for them: with DEFER_TASKRUN the kernel runs the FUSE
/// request's task work at that wait instead of interrupting the thread for it.
fn ring_builder() -> io_uring::Builder<squeue::Entry128, cqueue::Entry> {
    let mut b = io_uring::IoUring::<squeue::Entry128, cqueue::Entry>::builder();
    b.setup_single_issuer().setup_defer_taskrun();
    b
}

/// Ring queues the kernel expects: one per possible CPU.
fn queue_count() -> usize {
    // The kernel sizes the ring by num_possible_cpus(), not by the online CPUs.
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| parse_cpu_list(s.trim()))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Number of CPUs in a list such as `0-3,8-11`: the kernel's `num_possible_cpus()`,
/// which is how many queues it creates (queue ids are CPU ids below that count).
fn parse_cpu_list(s: &str) -> Option<usize> {
    let mut n = 0;
    for part in s.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b) = (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?);
        n += b.checked_sub(a)? + 1;
    }
    Some(n)
}

/// The running ring queues.
pub struct Queues {
    /// How many queues (one per possible CPU).
    pub count: usize,
    stopped: Arc<OnceLock<String>>,
}

impl Queues {
    /// Why a queue stopped while the connection was live, if one did. The kernel keeps
    /// routing that CPU's requests to it, so they would hang: the daemon must end and
    /// let the connection abort them.
    pub fn stopped(&self) -> Option<&str> {
        self.stopped.get().map(String::as_str)
    }
}

/// Start one queue thread per possible CPU on the FUSE device `dev`; with `workers`,
/// requests that wait for the cluster run on that many pool threads. Returns once
/// each queue has submitted its registration.
pub fn start(
    dev: OwnedFd,
    fs: Arc<PmxFs>,
    max_write: u32,
    workers: Option<usize>,
    faults: Faults,
) -> std::io::Result<Queues> {
    let stopped = Arc::new(OnceLock::new());
    let pool = match workers {
        Some(n) => Some(offload::Pool::start(n, fs.clone())?),
        None => None,
    };
    let dev = Arc::new(dev);
    let payload = (max_write as usize).max(abi::MIN_READ_BUFFER);
    let n = queue_count();
    let (fail, fail_after) = (faults.fail_queue, faults.fail_queue_after);
    let (tx, rx) = channel();
    for qid in 0..n {
        if fail == Some(qid) {
            let _ = tx.send(Err(format!(
                "queue {qid}: failure injected (--fault fail-queue={qid})"
            )));
            continue;
        }
        let (dev, fs, tx, pool) = (dev.clone(), fs.clone(), tx.clone(), pool.clone());
        let stopped = stopped.clone();
        std::thread::Builder::new()
            .name(format!("pmxfs-uring-{qid}"))
            .spawn(move || {
                let fd = dev.as_raw_fd();
                let r = queue::run(qid as u16, fd, payload, fs, pool, tx.clone(), fail_after);
                if let Err(e) = r {
                    tracing::error!(qid, "io_uring queue stopped: {e}");
                    let _ = stopped.set(format!("io_uring queue {qid} stopped: {e}"));
                    let _ = tx.send(Err(e.to_string()));
                }
            })?;
    }
    for _ in 0..n {
        let why = match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => continue,
            Ok(Err(why)) => why,
            Err(_) => "io_uring queues did not start".to_string(),
        };
        fall_back(dev.as_raw_fd());
        return Err(std::io::Error::other(why));
    }
    Ok(Queues { count: n, stopped })
}

/// Make the kernel give up io_uring for this connection. Once INIT agreed to it, the
/// kernel holds every request until all queues are registered; a REGISTER it refuses
/// (an out-of-range queue) makes it serve `/dev/fuse` instead, so a queue that could
/// not start never hangs the mount.
fn fall_back(dev: RawFd) {
    let Ok(mut ring) = io_uring::IoUring::<squeue::Entry128, cqueue::Entry>::builder().build(2)
    else {
        tracing::error!("cannot create an io_uring to release the held requests");
        return;
    };
    let sqe = io_uring::opcode::UringCmd80::new(io_uring::types::Fd(dev), abi::CMD_REGISTER)
        .cmd(abi::cmd_req(0, u16::MAX))
        .build();
    // SAFETY: the command carries no buffer addresses.
    if unsafe { ring.submission().push(&sqe) }.is_ok() {
        let _ = ring.submit_and_wait(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-1"), Some(2));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0-3,8-11"), Some(8));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }
}
