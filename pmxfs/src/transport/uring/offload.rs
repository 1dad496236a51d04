//! Worker threads for requests that wait. In cluster mode a mutation's handler blocks
//! until corosync has delivered it (a millisecond or more); run on a queue thread it
//! would hold every other request from that CPU behind it. The queue thread hands such
//! requests here with an owned copy of their arguments and goes on serving reads; the
//! worker's answer reaches the queue through its outbox and eventfd.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::fs::PmxFs;

use super::abi::{op, InHeader};
use super::dispatch::dispatch;
use super::outbox::RingReply;

/// Whether a request's handler may wait for the cluster: everything that commits.
pub fn waits(opcode: u32) -> bool {
    matches!(
        opcode,
        op::MKDIR
            | op::UNLINK
            | op::RMDIR
            | op::RENAME
            | op::RENAME2
            | op::CREATE
            | op::SETATTR
            | op::FLUSH
            | op::FSYNC
            | op::RELEASE
    )
}

struct Job {
    h: InHeader,
    arg: [u8; 128],
    payload: Vec<u8>,
    reply: RingReply,
}

/// A fixed pool of worker threads shared by all queues.
pub struct Pool {
    tx: SyncSender<Job>,
}

impl Pool {
    /// Start `n` workers calling the handlers of `fs`.
    pub fn start(n: usize, fs: Arc<PmxFs>) -> std::io::Result<Arc<Pool>> {
        let (tx, rx) = sync_channel::<Job>(256);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..n.max(1) {
            let (rx, fs) = (rx.clone(), fs.clone());
            std::thread::Builder::new()
                .name(format!("pmxfs-offload-{i}"))
                .spawn(move || work(&rx, &fs))?;
        }
        Ok(Arc::new(Pool { tx }))
    }

    /// Run request `h` on a worker; its reply goes to `reply`'s queue.
    pub fn run(&self, h: InHeader, arg: [u8; 128], payload: &[u8], reply: RingReply) {
        let job = Job {
            h,
            arg,
            payload: payload.to_vec(),
            reply,
        };
        if let Err(e) = self.tx.send(job) {
            // Only when every worker is gone: answer rather than leave the entry stuck.
            let j = e.0;
            crate::fs::reply::Fail::error(j.reply, nix::errno::Errno::EIO);
        }
    }
}

fn work(rx: &Mutex<Receiver<Job>>, fs: &PmxFs) {
    loop {
        let job = match rx.lock().recv() {
            Ok(j) => j,
            Err(_) => return,
        };
        dispatch(fs, job.h, &job.arg, &job.payload, job.reply);
    }
}
