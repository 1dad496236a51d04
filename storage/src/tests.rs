//! The SQLite store under the real tree: reload, refusal of bad files, terms, WAL.
use memdb::{Applied, Limits, MemDb, Op, OpCtx, Store};
use nix::errno::Errno;

use crate::{Access, Error, SqliteStore, SyncMode};

fn ctx(now: u32) -> OpCtx {
    OpCtx { writer: 0, now }
}

fn mkdir(db: &mut MemDb, p: &str) -> Result<Applied, Errno> {
    db.apply(&Op::Mkdir { path: p.into() }, ctx(1))
}

fn put(db: &mut MemDb, p: &str, data: &[u8]) {
    db.put(p, data, ctx(1000)).unwrap();
}

#[test]
fn reload_from_sqlite_gives_the_same_tree() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.db");
    let rows_before;
    {
        let (store, loaded) = SqliteStore::open(&path, SyncMode::Normal, Access::Shared).unwrap();
        assert!(loaded.created);
        let mut d =
            MemDb::from_rows(loaded.rows, loaded.root, Box::new(store), Limits::default()).unwrap();
        mkdir(&mut d, "nodes").unwrap();
        put(&mut d, "nodes/f", b"hello");
        put(&mut d, "g", b"");
        d.apply(
            &Op::Rename {
                from: "g".into(),
                to: "nodes/g".into(),
            },
            ctx(5),
        )
        .unwrap();
        d.apply(
            &Op::Delete {
                path: "nodes/f".into(),
            },
            ctx(6),
        )
        .unwrap();
        rows_before = (d.rows(), d.root_version());
    }
    let (store, loaded) = SqliteStore::open(&path, SyncMode::Normal, Access::Shared).unwrap();
    assert!(!loaded.created);
    let d = MemDb::from_rows(loaded.rows, loaded.root, Box::new(store), Limits::default()).unwrap();
    assert_eq!((d.rows(), d.root_version()), rows_before);
}

#[test]
fn foreign_and_corrupt_files_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![0x42u8; 8192]).unwrap();
    let before = std::fs::read(&junk).unwrap();
    assert!(matches!(
        SqliteStore::open(&junk, SyncMode::Normal, Access::Shared),
        Err(Error::Corrupt { .. })
    ));
    assert_eq!(std::fs::read(&junk).unwrap(), before);

    let foreign = dir.path().join("foreign.db");
    {
        let c = rusqlite::Connection::open(&foreign).unwrap();
        c.execute_batch(
            "CREATE TABLE users (id INTEGER, name TEXT); INSERT INTO users VALUES (1, 'x');",
        )
        .unwrap();
    }
    let before = std::fs::read(&foreign).unwrap();
    let err = SqliteStore::open(&foreign, SyncMode::Normal, Access::Shared)
        .err()
        .unwrap();
    assert!(matches!(err, Error::Foreign { .. }), "{err}");
    assert_eq!(std::fs::read(&foreign).unwrap(), before);
    assert!(!dir.path().join("foreign.db-wal").exists());
}

#[test]
fn replication_terms_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.db");
    {
        let (store, loaded) = SqliteStore::open(&path, SyncMode::Normal, Access::Shared).unwrap();
        let mut d = MemDb::from_rows(loaded.rows, loaded.root, Box::new(store), Limits::default())
            .unwrap()
            .with_terms(loaded.term, loaded.promised_term);
        assert_eq!((d.term(), d.promised_term()), (0, 0));
        d.set_promised_term(7).unwrap();
        mkdir(&mut d, "a").unwrap();
        let idx = d.index_entries();
        let rows = d.rows_for(&[0, 2]);
        d.install_sync(&idx, rows, 7).unwrap();
    }
    let (_, loaded) = SqliteStore::open(&path, SyncMode::Normal, Access::Shared).unwrap();
    assert_eq!((loaded.term, loaded.promised_term), (7, 7));
}

#[test]
fn an_unreadable_replication_term_refuses_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.db");
    {
        let (mut store, _) = SqliteStore::open(&path, SyncMode::Normal, Access::Shared).unwrap();
        store.set_meta("promised_term", 3).unwrap();
    }
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE pmxfs_meta SET value = -5 WHERE key = 'promised_term'",
        [],
    )
    .unwrap();
    drop(conn);
    match SqliteStore::open(&path, SyncMode::Normal, Access::Shared) {
        Err(Error::Corrupt { reason, .. }) => assert!(reason.contains("-5"), "{reason}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a negative promised term was accepted"),
    }
}

/// A replication number (the log sequence number goes with every fold) is updated in
/// place: one page written, not also the page of its key's index.
#[test]
fn a_replication_number_is_rewritten_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("meta.db")).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    for key in ["log_seq", "promised_term", "accepted_term"] {
        crate::sqlite::write_meta(&conn, key, 1).unwrap();
    }
    let checkpoint = |mode: &str| -> i64 {
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| r.get(1))
            .unwrap()
    };
    checkpoint("TRUNCATE");
    crate::sqlite::write_meta(&conn, "log_seq", 2).unwrap();
    // A passive checkpoint reports the frames the WAL holds.
    assert_eq!(
        checkpoint("PASSIVE"),
        1,
        "one page: the row's, not also the index's"
    );
    let tables = vec!["pmxfs_meta".to_string()];
    assert_eq!(
        crate::sqlite::read_meta(&conn, &tables, "log_seq").unwrap(),
        2
    );
    assert_eq!(
        crate::sqlite::read_meta(&conn, &tables, "promised_term").unwrap(),
        1
    );
}

/// Commits never run SQLite's checkpoint themselves (it fsyncs inside the commit); the
/// background thread folds the WAL into the database file soon after.
#[test]
fn the_wal_is_folded_into_the_database_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.db");
    let (store, loaded) = SqliteStore::open(&path, SyncMode::Normal, Access::Shared).unwrap();
    let mut d =
        MemDb::from_rows(loaded.rows, loaded.root, Box::new(store), Limits::default()).unwrap();
    let before = std::fs::metadata(&path).unwrap().len();
    for i in 0..8 {
        put(&mut d, &format!("f{i}"), &vec![b'x'; 64 * 1024]);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let grown = loop {
        let len = std::fs::metadata(&path).unwrap().len();
        if len >= before + 8 * 64 * 1024 || std::time::Instant::now() > deadline {
            break len;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(
        grown >= before + 8 * 64 * 1024,
        "database file {grown} bytes (was {before}): the WAL was not checkpointed"
    );
    drop(d);
    let (_, again) = SqliteStore::open(&path, SyncMode::Normal, Access::Shared).unwrap();
    assert_eq!(
        again
            .rows
            .iter()
            .filter(|r| r.name.starts_with('f'))
            .count(),
        8
    );
}

/// Under a stream of commits the WAL restarts instead of growing for as long as the
/// stream lasts (a checkpoint beside the writer alone never catches up with it).
#[test]
fn the_wal_stays_bounded_under_a_stream_of_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.db");
    let (store, loaded) = SqliteStore::open(&path, SyncMode::Normal, Access::Shared).unwrap();
    let mut d =
        MemDb::from_rows(loaded.rows, loaded.root, Box::new(store), Limits::default()).unwrap();
    let commits = 12_000;
    for i in 0..commits {
        put(&mut d, &format!("f{}", i % 64), &vec![b'x'; 4096]);
    }
    let wal = std::fs::metadata(dir.path().join("config.db-wal"))
        .unwrap()
        .len();
    // Each commit appends at least two frames (the file's data page and the version
    // record): a WAL that never restarted would hold all of them.
    let unbounded = commits as u64 * 2 * 4096;
    assert!(
        wal < 32 << 20,
        "WAL is {wal} bytes after {commits} commits (never restarted: {unbounded})"
    );
}

/// An exclusive store has the file to itself: no `-shm` file (SQLite keeps the WAL
/// index in memory), another connection is refused with SQLITE_BUSY while it is open,
/// and everything is there for that reader once it is closed.
#[test]
fn an_exclusive_store_keeps_the_file_to_itself_until_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.db");
    {
        let (store, loaded) =
            SqliteStore::open(&path, SyncMode::Normal, Access::Exclusive).unwrap();
        let mut d =
            MemDb::from_rows(loaded.rows, loaded.root, Box::new(store), Limits::default()).unwrap();
        put(&mut d, "f", b"one");
        assert!(!dir.path().join("config.db-shm").exists());
        let other = rusqlite::Connection::open(&path).unwrap();
        other.busy_timeout(std::time::Duration::ZERO).unwrap();
        let err = other
            .query_row("SELECT count(*) FROM tree", [], |r| r.get::<_, i64>(0))
            .unwrap_err();
        assert_eq!(
            err.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy),
            "{err}"
        );
        // and the tools say so, instead of calling the file damaged
        let err = crate::inspect::inspect(&path).err().unwrap();
        assert!(matches!(err, Error::Busy { .. }), "{err}");
    }
    let other = rusqlite::Connection::open(&path).unwrap();
    let data: Vec<u8> = other
        .query_row("SELECT data FROM tree WHERE name = 'f'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(data, b"one");
}

/// Nobody else folds an exclusive store's WAL: it does so itself once the WAL passes
/// 1,000 pages, so the WAL stays bounded however long the writes go on.
#[test]
fn an_exclusive_store_folds_its_own_wal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.db");
    let wal = dir.path().join("config.db-wal");
    let (store, loaded) = SqliteStore::open(&path, SyncMode::Normal, Access::Exclusive).unwrap();
    let mut d =
        MemDb::from_rows(loaded.rows, loaded.root, Box::new(store), Limits::default()).unwrap();
    let mut longest = 0;
    for i in 0..150u32 {
        // 60 KiB, different each time: about 15 WAL pages a write, 9 MB in all
        let body: Vec<u8> = (0..60 * 1024u32)
            .map(|j| (j.wrapping_mul(i + 7) >> 5) as u8)
            .collect();
        put(&mut d, &format!("f{}", i % 10), &body);
        longest = longest.max(std::fs::metadata(&wal).unwrap().len());
    }
    assert!(
        longest <= super::sqlite::INLINE_FOLD_BYTES + 100 * 1024,
        "the WAL grew to {longest} bytes"
    );
}

/// What a crash (or a stop) leaves of the store at `from`: its database and WAL, copied
/// into `to` while the store holds them.
fn crash_copy(from: &std::path::Path, to: &std::path::Path) {
    for f in ["config.db", "config.db-wal"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

/// The content of `name` in the database at `path`, as another program reads it.
fn read_back(path: &std::path::Path, name: &str) -> Vec<u8> {
    let c = rusqlite::Connection::open(path).unwrap();
    assert_eq!(
        c.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
            .unwrap(),
        "ok"
    );
    c.query_row("SELECT data FROM tree WHERE name = ?1", [name], |r| {
        r.get(0)
    })
    .unwrap()
}

/// A checkpoint of an exclusive store leaves the WAL its length (its blocks stay
/// allocated, so the next fold does not make the file system allocate them again) but
/// no frame a later opener would read: a database put in its place (a backup restored,
/// `pvecm add`'s new one) is read as it is. And the store's next commit starts the WAL
/// over with a valid header, so that a crash after it keeps it.
#[test]
fn a_folded_exclusive_wal_keeps_its_blocks_and_holds_nothing() {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let [live, stopped, replacement, crashed] = [0, 1, 2, 3].map(|i| dirs[i].path());
    let path = live.join("config.db");
    let (store, loaded) = SqliteStore::open(&path, SyncMode::Normal, Access::Exclusive).unwrap();
    let mut d =
        MemDb::from_rows(loaded.rows, loaded.root, Box::new(store), Limits::default()).unwrap();
    for i in 0..20u8 {
        put(&mut d, &format!("f{}", i % 4), &[b'a' + i; 3000]);
    }
    d.checkpoint().unwrap();
    let wal = std::fs::read(live.join("config.db-wal")).unwrap();
    assert!(wal.len() > 4096, "the WAL keeps its length: {}", wal.len());
    assert_eq!(wal[..32], [0; 32], "and its header says it holds nothing");

    // Another database in the stopped store's place, beside its WAL.
    {
        let (store, loaded) = SqliteStore::open(
            &replacement.join("config.db"),
            SyncMode::Normal,
            Access::Shared,
        )
        .unwrap();
        let mut r =
            MemDb::from_rows(loaded.rows, loaded.root, Box::new(store), Limits::default()).unwrap();
        put(&mut r, "f1", b"restored");
    }
    crash_copy(live, stopped);
    std::fs::copy(replacement.join("config.db"), stopped.join("config.db")).unwrap();
    assert_eq!(read_back(&stopped.join("config.db"), "f1"), b"restored");

    // The store goes on; a crash after its next commit keeps that commit.
    put(&mut d, "f1", b"after the checkpoint");
    crash_copy(live, crashed);
    assert_eq!(
        read_back(&crashed.join("config.db"), "f1"),
        b"after the checkpoint"
    );
}
