//! Background WAL checkpoints. SQLite's automatic checkpoint runs inside the commit
//! that crosses 1,000 WAL pages and fsyncs the database file there, so one FUSE write
//! in a few hundred paid milliseconds of tail latency. The store turns it off and this
//! thread folds the WAL into the database from its own connection (a PASSIVE
//! checkpoint never blocks the writer). Durability is unchanged: commits are durable in
//! the WAL, and recovery replays whatever was not folded yet.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use rusqlite::Connection;

use super::store::StoreError;

/// How long commits may accumulate in the WAL before it is folded: long enough that a
/// burst of writes shares one fsync, short enough that the WAL stays small.
const INTERVAL: Duration = Duration::from_millis(250);

#[derive(Default)]
struct Shared {
    stop: Mutex<bool>,
    wake: Condvar,
    /// Something was committed since the last checkpoint.
    pending: AtomicBool,
}

/// The checkpoint thread of one database; stopped and joined on drop.
pub struct Checkpointer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Start checkpointing the WAL of the database at `path`.
    pub fn start(path: &Path) -> Result<Checkpointer, StoreError> {
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

    /// Note a commit: the WAL has something to fold.
    pub fn committed(&self) {
        self.shared.pending.store(true, Ordering::Release);
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
            match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            }) {
                Ok((busy, log, done)) => {
                    tracing::trace!(busy, log, done, "wal checkpoint");
                    if done < log {
                        // A reader or the writer held frames back: try again next time.
                        s.pending.store(true, Ordering::Release);
                    }
                }
                Err(e) => {
                    tracing::warn!("wal checkpoint failed (retrying later): {e}");
                    s.pending.store(true, Ordering::Release);
                }
            }
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
