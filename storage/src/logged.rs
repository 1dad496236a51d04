//! The store the daemon uses: a change is answered once it is in the intent log, and a
//! background thread ("pmxfs-apply") folds it into SQLite later, together with the
//! changes after it: once the oldest has waited [`FOLD_AFTER`], a batch is full, or
//! someone needs the database current (a large change, a sync, a checkpoint).
//!
//! Why: an SQLite commit costs 20-60 µs here (ext4 writes and file locks), half of what
//! creating, renaming or deleting a file costs through FUSE; an append to the log costs
//! a few µs. The durability contract does not change: the log write has returned
//! before the caller is answered, so a crash of the daemon loses nothing that was
//! acknowledged, and recovery at the next start moves what SQLite lacks from the log
//! into it before anything else reads the database. What does change is that another
//! reader of `config.db` (the `sqlite3` shell, a backup) sees a change a moment later;
//! pmxfs's own readers all read the tree in memory.
//!
//! Changes that carry a lot of data (a large file) skip the log and are committed on
//! the spot, after the queue has drained, so that big files are not written twice.
//! With `--sync full` (fsync on every commit) nothing is deferred.

use std::collections::VecDeque;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use memdb::{Backlog, RootVersion, Row, Store, StoreError, Txn};

use crate::intent_log::{self, LogFile};
use crate::sqlite::{Access, Loaded, SqliteStore, SyncMode};
use crate::Error;

/// How changes reach SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deferral {
    /// Logged, then applied in the background (the default).
    On,
    /// Every change committed to SQLite before it is answered.
    Off,
    /// Logged but never applied: a fault injection for the recovery test, which kills
    /// the daemon and checks that the log alone brings every change back.
    Stalled,
}

/// Changes at least this large (bytes of their log record) are committed directly.
const DIRECT_MIN: usize = 64 * 1024;
/// Once the current lap of the log is this long, the next record starts over at the
/// beginning of the file, as soon as everything in it has been applied.
const REWIND_AT: u64 = 4 << 20;
/// The log never grows past this: the writer waits for the applier to catch up.
const LOG_CAP: u64 = 64 << 20;
/// A change waits in the log at most this long before it is folded into SQLite, unless
/// more come: a file rewritten every few seconds (as pve-ha-lrm rewrites its status)
/// then costs about one log append per rewrite, not an SQLite commit and a checkpoint
/// each. It bounds how far `config.db` trails the tree, not any reply; a drain (a large
/// change, a sync, the clean stop) folds at once.
pub const FOLD_AFTER: Duration = Duration::from_secs(300);
/// Changes per SQLite transaction at most; this many waiting are folded at once.
const MAX_BATCH: usize = 512;

#[derive(Default)]
struct State {
    /// Logged changes not yet in SQLite, oldest first.
    queue: VecDeque<(u64, Txn)>,
    /// Sequence number of the last change in SQLite.
    applied: u64,
    /// Why the last attempt to apply failed, while it keeps failing.
    failing: Option<String>,
    stop: bool,
    /// The applier takes nothing more ([`Deferral::Stalled`], or a test's crash).
    halted: bool,
    /// When the oldest change now queued was logged.
    since: Option<Instant>,
    /// Someone waits for the queue to drain: fold now.
    urgent: bool,
    /// SQLite transactions the applier committed.
    folds: u64,
    /// How long changes may gather in the log ([`FOLD_AFTER`] unless set).
    fold_after: Option<Duration>,
}

impl State {
    /// Whether the applier has something it may take.
    fn has_work(&self) -> bool {
        !self.halted && !self.queue.is_empty()
    }

    /// How long the queue may still wait before it is folded; `None` if now.
    fn fold_in(&self) -> Option<Duration> {
        if self.stop || self.urgent || self.queue.len() >= MAX_BATCH {
            return None;
        }
        let age = self.since.map(|t| t.elapsed()).unwrap_or_default();
        let limit = self.fold_after.unwrap_or(FOLD_AFTER);
        limit.checked_sub(age).filter(|d| !d.is_zero())
    }
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the applier.
    work: Condvar,
    /// Wakes whoever waits for the queue to drain.
    progress: Condvar,
}

/// A [`Store`] that logs each change and applies it to SQLite in the background.
pub struct LoggedStore {
    log: LogFile,
    next_seq: u64,
    deferral: Deferral,
    sqlite: Arc<Mutex<SqliteStore>>,
    shared: Arc<Shared>,
    applier: Option<JoinHandle<()>>,
}

impl LoggedStore {
    /// Open the database at `path` and its intent log, apply whatever the log holds
    /// that the database lacks (the changes acknowledged before a crash), and return
    /// the resulting content.
    ///
    /// A log that does not continue the database (a gap in the sequence, as after
    /// restoring an older `config.db` beside a newer log) or holds a record that does
    /// not decode is refused, with both files left as they are.
    pub fn open(
        path: &Path,
        sync: SyncMode,
        deferral: Deferral,
    ) -> Result<(LoggedStore, Loaded), Error> {
        // With the log in front, SQLite sees a commit per fold: its WAL index is kept in
        // memory (no -shm file rewritten at every fold), and config.db is pmxfs's alone
        // while it runs, as it is pmxcfs's. `--sync full` commits every change and keeps
        // the file open to readers.
        let access = match deferral {
            Deferral::Off => Access::Shared,
            Deferral::On | Deferral::Stalled => Access::Exclusive,
        };
        let (mut sqlite, mut loaded) = SqliteStore::open(path, sync, access)?;
        let log_path = intent_log::path_for(path);
        if loaded.created {
            set_aside_orphaned_log(&log_path)?;
        }
        let (mut log, bytes) = LogFile::open(&log_path)?;
        let corrupt = |reason: String| Error::Corrupt {
            path: log_path.clone(),
            reason,
        };
        let records = intent_log::scan(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let pending: Vec<(u64, Txn)> = records
            .into_iter()
            .filter(|(seq, _)| *seq > loaded.log_seq)
            .collect();
        if let Some((first, _)) = pending.first() {
            if *first != loaded.log_seq + 1 {
                return Err(corrupt(format!(
                    "the log continues at change {first}, the database stops at change {}; \
                     if the database was restored from a backup, remove the log",
                    loaded.log_seq
                )));
            }
            sqlite.commit_batch(&pending)?;
            loaded = sqlite.reload()?;
            tracing::warn!(
                changes = pending.len(),
                version = loaded.root.version,
                "recovered changes from the intent log that the database did not have yet"
            );
        }
        log.clear()?;
        let applied = loaded.log_seq;
        let sqlite = Arc::new(Mutex::new(sqlite));
        let shared = Arc::new(Shared::default());
        shared.state.lock().applied = applied;
        if deferral == Deferral::Stalled {
            tracing::warn!("fault stall-apply: changes are logged but not applied");
            let mut st = shared.state.lock();
            st.halted = true;
            st.failing = Some("stalled on purpose (--fault stall-apply)".into());
        }
        let applier = if deferral != Deferral::Off {
            let (sh, db) = (shared.clone(), sqlite.clone());
            Some(
                std::thread::Builder::new()
                    .name("pmxfs-apply".into())
                    .spawn(move || apply_loop(&sh, &db))?,
            )
        } else {
            None
        };
        Ok((
            LoggedStore {
                log,
                next_seq: applied + 1,
                deferral,
                sqlite,
                shared,
                applier,
            },
            loaded,
        ))
    }

    /// Wait until every logged change is in SQLite; an error while applying keeps
    /// failing them.
    fn drain(&self) -> Result<(), Error> {
        let last = self.next_seq - 1;
        let mut st = self.shared.state.lock();
        if st.applied < last {
            st.urgent = true;
            self.shared.work.notify_one();
        }
        while st.applied < last {
            if let Some(why) = &st.failing {
                return Err(Error::Io(std::io::Error::other(format!(
                    "{} logged changes are not in the database yet: {why}",
                    last - st.applied
                ))));
            }
            self.shared.progress.wait(&mut st);
        }
        Ok(())
    }

    /// Run `f` on SQLite after everything logged before it.
    fn direct<R, E: From<Error>>(
        &mut self,
        f: impl FnOnce(&mut SqliteStore) -> Result<R, E>,
    ) -> Result<R, E> {
        self.drain()?;
        let r = f(&mut self.sqlite.lock());
        // Everything in the log is applied: the next record may start over.
        self.log.rewind();
        r
    }

    /// Let changes gather in the log for up to `d` before they are folded into SQLite
    /// (0: fold each as soon as it is logged).
    pub fn set_fold_after(&self, d: Duration) {
        self.shared.state.lock().fold_after = Some(d);
        self.shared.work.notify_one();
    }

    fn log_change(&mut self, txn: &Txn) -> Result<(), Error> {
        let seq = self.next_seq;
        if self.log.end() >= REWIND_AT {
            let caught_up = self.shared.state.lock().applied + 1 == seq;
            if caught_up {
                self.log.rewind();
            } else if self.log.end() >= LOG_CAP {
                self.drain()?;
                self.log.rewind();
            }
        }
        self.log.append(seq, txn)?;
        self.next_seq += 1;
        let mut st = self.shared.state.lock();
        st.since.get_or_insert_with(Instant::now);
        st.queue.push_back((seq, txn.clone()));
        // The applier sleeps without a deadline only on an empty queue, and otherwise
        // needs waking only for a full batch.
        let wake = st.queue.len() == 1 || st.queue.len() >= MAX_BATCH;
        drop(st);
        if wake {
            self.shared.work.notify_one();
        }
        Ok(())
    }
}

impl Store for LoggedStore {
    fn commit(&mut self, txn: &Txn) -> Result<(), StoreError> {
        if self.deferral == Deferral::Off || intent_log::encoded_len(txn) >= DIRECT_MIN {
            return self.direct(|db| db.commit(txn));
        }
        Ok(self.log_change(txn)?)
    }

    fn replace_all(
        &mut self,
        rows: &[Row],
        root: RootVersion,
        term: u64,
    ) -> Result<(), StoreError> {
        self.direct(|db| db.replace_all(rows, root, term))
    }

    fn set_meta(&mut self, key: &str, value: u64) -> Result<(), StoreError> {
        self.direct(|db| db.set_meta(key, value))
    }

    fn backlog(&self) -> Backlog {
        let st = self.shared.state.lock();
        Backlog {
            pending: st.queue.len(),
            failing: st.failing.clone(),
        }
    }

    fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.direct(|db| db.checkpoint())?;
        // Nothing in the log is needed any more.
        self.log.clear().map_err(Error::from)?;
        Ok(())
    }
}

/// A log beside a database created just now belongs to a database that is gone (PVE's
/// `pvecm add` deletes config.db, not the files pmxfs keeps beside it): replaying it
/// would bring the old tree's changes back, or refuse to start. It is moved aside.
fn set_aside_orphaned_log(log: &Path) -> Result<(), Error> {
    let mut head = Vec::with_capacity(4);
    match std::fs::File::open(log) {
        Ok(f) => {
            f.take(4).read_to_end(&mut head)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    if intent_log::starts_with_record(&head) {
        let mut to = log.as_os_str().to_owned();
        to.push(format!(".orphaned-{}", std::process::id()));
        std::fs::rename(log, &to)?;
        tracing::warn!(
            log = %log.display(),
            moved_to = %Path::new(&to).display(),
            "the intent log belongs to a database that no longer exists; set it aside"
        );
    }
    Ok(())
}

impl Drop for LoggedStore {
    fn drop(&mut self) {
        self.shared.state.lock().stop = true;
        self.shared.work.notify_one();
        if let Some(t) = self.applier.take() {
            let _ = t.join();
        }
        let st = self.shared.state.lock();
        if !st.queue.is_empty() {
            tracing::warn!(
                changes = st.queue.len(),
                log = %self.log.path().display(),
                "changes left in the intent log; they are applied at the next start"
            );
        }
    }
}

/// The applier thread: take what is queued, commit it as one transaction, repeat.
/// A failed commit is retried (with growing pauses) and the changes stay queued and
/// logged; writers see the failure only when they must wait for the queue.
fn apply_loop(sh: &Shared, db: &Mutex<SqliteStore>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let batch: Vec<(u64, Txn)> = {
            let mut st = sh.state.lock();
            if !st.has_work() {
                if st.stop {
                    return;
                }
                sh.work.wait(&mut st);
                continue;
            }
            // Let changes gather in the log (each is durable there already) until the
            // oldest has waited FOLD_AFTER, a batch is full, or someone must wait.
            if let Some(d) = st.fold_in() {
                sh.work.wait_for(&mut st, d);
                continue;
            }
            st.queue.iter().take(MAX_BATCH).cloned().collect()
        };
        let result = db.lock().commit_batch(&batch);
        let mut st = sh.state.lock();
        match result {
            Ok(()) => {
                st.queue.drain(..batch.len());
                st.folds += 1;
                st.applied = batch.last().map(|(s, _)| *s).unwrap_or(st.applied);
                // What is left came later than what was folded; count it from now.
                st.since = (!st.queue.is_empty()).then(Instant::now);
                if st.queue.is_empty() {
                    st.urgent = false;
                }
                if st.failing.take().is_some() {
                    tracing::info!("database writes work again");
                }
                backoff = Duration::from_millis(50);
                sh.progress.notify_all();
            }
            Err(e) => {
                let why = e.to_string();
                if st.failing.as_deref() != Some(why.as_str()) {
                    tracing::error!(
                        pending = st.queue.len(),
                        "cannot apply logged changes to the database (kept in the log, \
                         retrying): {why}"
                    );
                }
                st.failing = Some(why);
                sh.progress.notify_all();
                if st.stop {
                    return;
                }
                parking_lot::MutexGuard::unlocked(&mut st, || std::thread::sleep(backoff));
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memdb::{Kind, Limits, MemDb, Op, OpCtx};
    use nix::errno::Errno;

    fn open(path: &Path, deferral: Deferral) -> (LoggedStore, Loaded) {
        LoggedStore::open(path, SyncMode::Normal, deferral).unwrap()
    }

    fn memdb(path: &Path, deferral: Deferral) -> MemDb {
        let (store, loaded) = open(path, deferral);
        MemDb::from_rows(loaded.rows, loaded.root, Box::new(store), Limits::default()).unwrap()
    }

    fn apply(db: &mut MemDb, op: Op) -> Result<(), Errno> {
        db.apply(
            &op,
            OpCtx {
                writer: 0,
                now: 1000,
            },
        )
        .map(|_| ())
    }

    fn put(db: &mut MemDb, p: &str, data: Vec<u8>) -> Result<(), Errno> {
        if db.resolve(p).is_err() {
            apply(db, Op::Create { path: p.into() })?;
        }
        apply(
            db,
            Op::Write {
                path: p.into(),
                offset: 0,
                data,
                truncate: true,
            },
        )
    }

    /// How many records recovery would find in the intent log of the database at `path`.
    fn records_in_log(path: &Path) -> usize {
        intent_log::scan(&std::fs::read(intent_log::path_for(path)).unwrap())
            .unwrap()
            .len()
    }

    /// What a reader of `config.db` other than pmxfs sees once pmxfs has closed it:
    /// (entries, version).
    fn on_disk(path: &Path) -> (i64, i64) {
        let c = rusqlite::Connection::open(path).unwrap();
        let n = c
            .query_row("SELECT count(*) FROM tree WHERE inode != 0", [], |r| {
                r.get(0)
            })
            .unwrap();
        let v = c
            .query_row("SELECT version FROM tree WHERE inode = 0", [], |r| r.get(0))
            .unwrap();
        (n, v)
    }

    fn file_txn(v: u64, len: usize) -> Txn {
        Txn {
            deletes: vec![],
            upserts: vec![Row {
                inode: memdb::Inode(v),
                parent: memdb::Inode(0),
                version: v,
                writer: 0,
                mtime: 1000,
                kind: Kind::File,
                name: format!("f{v}"),
                data: Arc::new(vec![b'x'; len]),
            }],
            root: RootVersion {
                version: v,
                writer: 0,
                mtime: 1000,
            },
        }
    }

    #[test]
    fn changes_only_in_the_log_at_a_crash_are_recovered_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.db");
        let before = {
            // Stalled: acknowledged, logged, never applied; dropping it is a crash
            let mut d = memdb(&path, Deferral::Stalled);
            apply(
                &mut d,
                Op::Mkdir {
                    path: "nodes".into(),
                },
            )
            .unwrap();
            for i in 0..50 {
                put(&mut d, &format!("nodes/f{i}"), format!("v{i}").into_bytes()).unwrap();
            }
            apply(
                &mut d,
                Op::Rename {
                    from: "nodes/f1".into(),
                    to: "g".into(),
                },
            )
            .unwrap();
            apply(
                &mut d,
                Op::Delete {
                    path: "nodes/f2".into(),
                },
            )
            .unwrap();
            (d.rows(), d.root_version())
        };
        assert_eq!(
            on_disk(&path),
            (0, 1),
            "the test needs the changes to be only in the log"
        );
        let d = memdb(&path, Deferral::On);
        assert_eq!((d.rows(), d.root_version()), before);
        drop(d);
        assert_eq!(on_disk(&path), (50, before.1.version as i64));
        // the log was emptied once the database had it: a second start changes nothing
        assert_eq!(records_in_log(&path), 0);
        let d = memdb(&path, Deferral::On);
        assert_eq!((d.rows(), d.root_version()), before);
    }

    #[test]
    fn the_background_applies_every_change_and_a_checkpoint_drains_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.db");
        let mut d = memdb(&path, Deferral::On);
        for i in 0..300 {
            put(
                &mut d,
                &format!("f{}", i % 40),
                vec![b'a' + (i % 26) as u8; 4096],
            )
            .unwrap();
        }
        d.checkpoint().unwrap();
        let want = (d.rows(), d.root_version());
        assert_eq!(records_in_log(&path), 0);
        drop(d);
        assert_eq!(on_disk(&path), (40, want.1.version as i64));
        let d = memdb(&path, Deferral::On);
        assert_eq!((d.rows(), d.root_version()), want);
    }

    /// Random changes; at a random point the applier stops for good, more changes
    /// are only logged, and the store is dropped without draining: a crash that finds
    /// part of the log in SQLite. Reopening must give exactly the tree that was
    /// acknowledged, whatever the split.
    #[test]
    fn recovery_after_a_crash_at_any_point_gives_the_acknowledged_tree() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for round in 0..12 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("config.db");
            let (store, loaded) = open(&path, Deferral::On);
            let shared = store.shared.clone();
            let mut d =
                MemDb::from_rows(loaded.rows, loaded.root, Box::new(store), Limits::default())
                    .unwrap();
            let ops = 50 + next(400);
            let halt_at = next(ops);
            // before this change, let the applier catch up (so that the log holds
            // records SQLite has as well as records it lacks)
            let catch_up_at = next(ops);
            for i in 0..ops {
                if i == catch_up_at && i < halt_at {
                    shared.state.lock().urgent = true;
                    shared.work.notify_one();
                    while !shared.state.lock().queue.is_empty() {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                if i == halt_at {
                    shared.state.lock().halted = true;
                }
                let a = format!("d{}/f{}", next(3), next(8));
                let b = format!("d{}/f{}", next(3), next(8));
                let op = match next(6) {
                    0 => Op::Mkdir {
                        path: format!("d{}", next(3)),
                    },
                    1 => Op::Create { path: a },
                    2 | 3 => Op::Write {
                        path: a,
                        offset: next(100),
                        data: vec![b'a' + next(26) as u8; 1 + next(3000) as usize],
                        truncate: next(2) == 0,
                    },
                    4 => Op::Rename { from: a, to: b },
                    _ => Op::Delete { path: a },
                };
                // refusals (ENOENT, EEXIST, ...) are part of the game
                let _ = apply(&mut d, op);
            }
            let want = (d.rows(), d.root_version());
            drop(d);
            let d = memdb(&path, Deferral::On);
            assert_eq!((d.rows(), d.root_version()), want, "round {round}");
        }
    }

    /// Small changes wait in the log and reach SQLite together: one transaction for a
    /// run of rewrites, when a drain asks for it (or FOLD_AFTER after the first).
    #[test]
    fn small_changes_are_folded_into_sqlite_together() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.db");
        let (mut s, _) = open(&path, Deferral::On);
        for v in 2..22 {
            s.commit(&file_txn(v, 1024)).unwrap();
        }
        s.drain().unwrap();
        let st = s.shared.state.lock();
        assert_eq!(st.folds, 1, "twenty rewrites, one SQLite transaction");
        assert_eq!((st.applied, st.queue.len()), (20, 0));
        drop(st);
        assert_eq!(s.sqlite.lock().counts(), (20, 21));
    }

    #[test]
    fn large_changes_are_committed_directly_and_not_logged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.db");
        let (mut s, _) = open(&path, Deferral::On);
        s.commit(&file_txn(2, 100)).unwrap();
        s.commit(&file_txn(3, DIRECT_MIN)).unwrap();
        // the small one came first and is in the database before the large one
        assert_eq!(s.sqlite.lock().counts(), (2, 3));
        let logged =
            intent_log::scan(&std::fs::read(intent_log::path_for(&path)).unwrap()).unwrap();
        assert_eq!(logged.len(), 1);
        assert_eq!(logged[0].1.root.version, 2);
    }

    #[test]
    fn the_log_starts_over_once_the_database_has_caught_up() {
        // Content LZ4 cannot shrink, so that a few hundred records fill a lap.
        let noisy = |v: u64| {
            let mut t = file_txn(v, 0);
            let mut x = v.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            t.upserts[0].data = Arc::new(
                (0..8000)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        (x >> 32) as u8
                    })
                    .collect(),
            );
            t
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.db");
        let (mut s, _) = open(&path, Deferral::On);
        let mut v = 2;
        while s.log.end() < REWIND_AT {
            s.commit(&noisy(v)).unwrap();
            v += 1;
        }
        s.drain().unwrap();
        s.commit(&noisy(v)).unwrap();
        let mut record = Vec::new();
        intent_log::encode(v, &noisy(v), &mut Default::default(), &mut record);
        assert_eq!(s.log.end() as usize, record.len());
        drop(s);
        let (_, loaded) = open(&path, Deferral::On);
        assert_eq!(loaded.rows.len() as u64, v - 1);
        assert_eq!(loaded.log_seq, v - 1);
    }

    #[test]
    fn a_change_that_must_wait_for_a_failing_database_is_refused_and_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.db");
        let mut d = memdb(&path, Deferral::Stalled);
        put(&mut d, "small", b"1".to_vec()).unwrap();
        apply(&mut d, Op::Create { path: "big".into() }).unwrap();
        let version = d.root_version();
        // a large file is committed directly, after what is queued, which cannot go in
        assert_eq!(put(&mut d, "big", vec![0; 100 * 1024]), Err(Errno::EIO));
        assert_eq!(d.root_version(), version);
        assert!(d.resolve("big").unwrap().row.data.is_empty());
        assert_eq!(&d.resolve("small").unwrap().row.data[..], b"1");
    }

    #[test]
    fn a_log_that_does_not_continue_the_database_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.db");
        drop(open(&path, Deferral::On));
        let log = intent_log::path_for(&path);
        let mut bytes = Vec::new();
        intent_log::encode(7, &file_txn(2, 10), &mut Default::default(), &mut bytes);
        std::fs::write(&log, &bytes).unwrap();
        let db_before = std::fs::read(&path).unwrap();
        let err = LoggedStore::open(&path, SyncMode::Normal, Deferral::On)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("continues at change 7"), "{err}");
        assert!(err.contains("stops at change 0"), "{err}");
        assert_eq!(std::fs::read(&log).unwrap(), bytes);
        assert_eq!(std::fs::read(&path).unwrap(), db_before);
    }
}
