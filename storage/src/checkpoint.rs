//! Background WAL checkpoints. SQLite's automatic checkpoint runs inside the commit
//! that crosses 1,000 WAL pages and fsyncs the database file there, so one FUSE write
//! in a few hundred paid milliseconds of tail latency. The store turns it off and this
//! thread folds the WAL into the database from its own connection (a PASSIVE
//! checkpoint never blocks the writer). Durability is unchanged: commits are durable in
//! the WAL, and recovery replays whatever was not folded yet.
//!
//! SQLite restarts the WAL from its beginning only when a write finds every frame
//! folded. Under a steady stream of commits a checkpoint running beside them never
//! catches up, and the WAL would grow for as long as the stream lasts (we measured
//! 180 MB for 12,000 commits). So once the WAL holds more than [`RESET_FRAMES`], the
//! thread folds the few frames appended during its unblocked pass while holding the
//! store's commit gate, and the next commit starts the WAL over.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use rusqlite::Connection;

use crate::Error;

/// How long commits may accumulate in the WAL before it is folded: long enough that a
/// burst of writes shares one fsync, short enough that the WAL stays small.
const INTERVAL: Duration = Duration::from_millis(250);

/// Commits after which the thread is woken before its interval is up: at thousands of
/// commits per second, 250 ms of them would be tens of megabytes of WAL.
const WAKE_EVERY: u64 = 256;

/// WAL length (frames of one page) beyond which the checkpoint finishes under the
/// commit gate so that the WAL restarts (SQLite's own default threshold is 1,000).
const RESET_FRAMES: i64 = 1000;

#[derive(Default)]
struct Shared {
    stop: Mutex<bool>,
    wake: Condvar,
    /// Something was committed since the last checkpoint.
    pending: AtomicBool,
    /// Commits so far (wakes the thread every [`WAKE_EVERY`]).
    commits: AtomicU64,
    /// Held by every commit, and by the checkpoint while it finishes a long WAL.
    gate: Mutex<()>,
}

/// The checkpoint thread of one database; stopped and joined on drop.
pub struct Checkpointer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Start checkpointing the WAL of the database at `path`.
    pub fn start(path: &Path) -> Result<Checkpointer, Error> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("pmxfs-checkpoint".into())
            .spawn(move || run(&conn, &s))?;
        Ok(Checkpointer {
            shared,
            thread: Some(thread),
        })
    }

    /// Run a commit `f` (a write transaction on the store's connection) under the
    /// gate, and note that the WAL has something to fold.
    pub fn commit<R>(&self, f: impl FnOnce() -> R) -> R {
        let r = {
            let _g = self.shared.gate.lock();
            f()
        };
        self.shared.pending.store(true, Ordering::Release);
        if self.shared.commits.fetch_add(1, Ordering::Relaxed) % WAKE_EVERY == WAKE_EVERY - 1 {
            self.shared.wake.notify_one();
        }
        r
    }
}

fn run(conn: &Connection, s: &Shared) {
    loop {
        {
            let mut stop = s.stop.lock();
            if !*stop {
                s.wake.wait_for(&mut stop, INTERVAL);
            }
            if *stop {
                return;
            }
        }
        if s.pending.swap(false, Ordering::AcqRel) {
            match passive(conn) {
                Ok((_, log, _)) if log > RESET_FRAMES => {
                    // Commits wait here only for the frames appended since the pass
                    // above started.
                    let _g = s.gate.lock();
                    finish(s, passive(conn));
                }
                r => finish(s, r),
            }
        }
    }
}

/// `PRAGMA wal_checkpoint(PASSIVE)`: (busy, frames in the WAL, frames folded).
fn passive(conn: &Connection) -> rusqlite::Result<(i64, i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
}

fn finish(s: &Shared, r: rusqlite::Result<(i64, i64, i64)>) {
    match r {
        Ok((busy, log, done)) => {
            tracing::trace!(busy, log, done, "wal checkpoint");
            if done < log {
                // A reader held frames back: try again next time.
                s.pending.store(true, Ordering::Release);
            }
        }
        Err(e) => {
            tracing::warn!("wal checkpoint failed (retrying later): {e}");
            s.pending.store(true, Ordering::Release);
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        *self.shared.stop.lock() = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
