//! The SQLite store: reads and writes pmxcfs's `config.db` schema, with pmxfs's
//! replication numbers in a table of their own that pmxcfs never reads.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use memdb::{Kind, RootVersion, Row, Store, StoreError, Txn, DT_REG};

use crate::checkpoint::Checkpointer;
use crate::Error;

/// SQLite durability setting for commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// `synchronous=NORMAL` in WAL mode, as pmxcfs: a commit survives a process crash
    /// (kill -9); the last commits may be lost on power failure.
    Normal,
    /// `synchronous=FULL`: fsync on every commit, survives power failure too.
    Full,
}

/// Who else may open `config.db` while the store has it open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Any reader (the `sqlite3` shell, a backup); the WAL is folded by a thread of its
    /// own. SQLite's shared WAL index (`config.db-shm`, mapped from disk) then costs
    /// about 32 KB of page writes whenever the WAL starts over, once per fold.
    Shared,
    /// Nobody else: SQLite's exclusive locking mode keeps the WAL index in memory, with
    /// no `-shm` file, and the store folds the WAL into the database itself once it is
    /// long, and at [`Store::checkpoint`]. For a store whose commits are themselves
    /// batched (the intent log's), so that each costs only its own pages.
    Exclusive,
}

/// WAL length past which an [`Access::Exclusive`] store folds it after a commit (the
/// threshold of SQLite's own automatic checkpoint, 1,000 pages).
pub(crate) const INLINE_FOLD_BYTES: u64 = 1000 * 4096;

/// How the WAL reaches the database file.
enum Folding {
    Background(Checkpointer),
    /// Folded by the store itself; the WAL file whose length says when.
    Inline {
        wal: PathBuf,
    },
}

/// The SQLite `config.db` store.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    folding: Folding,
}

pub(crate) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS tree (
  inode INTEGER PRIMARY KEY NOT NULL,
  parent INTEGER NOT NULL CHECK(typeof(parent)=='integer'),
  version INTEGER NOT NULL CHECK(typeof(version)=='integer'),
  writer INTEGER NOT NULL CHECK(typeof(writer)=='integer'),
  mtime INTEGER NOT NULL CHECK(typeof(mtime)=='integer'),
  type INTEGER NOT NULL CHECK(typeof(type)=='integer'),
  name TEXT NOT NULL,
  data BLOB);";

pub(crate) const COLUMNS: [&str; 8] = [
    "inode", "parent", "version", "writer", "mtime", "type", "name", "data",
];

pub(crate) const VERSION_NAME: &str = "__version__";

/// What [`SqliteStore::open`] found in the file.
pub struct Loaded {
    /// Every entry row (inode 0, the version record, excluded).
    pub rows: Vec<Row>,
    /// The version record; a new database starts at version 1.
    pub root: RootVersion,
    /// Whether the file was created now.
    pub created: bool,
    /// Replication term of the tree (0 if never synced in a cluster).
    pub term: u64,
    /// Highest term this node promised to join.
    pub promised_term: u64,
    /// Sequence number of the last intent-log record in the database (0 if none).
    pub log_seq: u64,
    /// 0, or one above the term at which this node's cluster switched from pmxcfs's
    /// protocol to pmxfs's own (`memdb::store::SWITCHED_AT`).
    pub switched_at: u64,
}

impl SqliteStore {
    /// Open (or create) the database at `path`.
    ///
    /// An existing file is first validated through a read-only connection, so that a
    /// corrupt or foreign file is refused without being modified (not even switched to
    /// WAL mode).
    pub fn open(
        path: &Path,
        sync: SyncMode,
        access: Access,
    ) -> Result<(SqliteStore, Loaded), Error> {
        let existing = std::fs::metadata(path)
            .map(|m| m.len() > 0)
            .unwrap_or(false);
        // Validate read-only first, so a bad file is refused untouched; but load the
        // rows only through the read-write connection below, which recovers the WAL
        // after a crash (a read-only reader may see a stale WAL index and miss commits).
        let has_tree = if existing {
            let ro = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|e| corrupt(path, e))?;
            validate_schema(&ro, path)?.is_some()
        } else {
            false
        };
        let created = !has_tree;
        let mut loaded = None;
        if created {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        let conn = Connection::open(path).map_err(|e| corrupt(path, e))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        if access == Access::Exclusive {
            // Before WAL mode is entered: only then does SQLite do without the -shm file.
            let mode: String = conn.query_row("PRAGMA locking_mode=EXCLUSIVE", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("exclusive") {
                tracing::warn!(db = %path.display(), "could not lock the database exclusively ({mode})");
            }
        }
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(db = %path.display(), "could not switch to WAL mode ({mode})");
        }
        conn.execute_batch(match sync {
            SyncMode::Normal => "PRAGMA synchronous=NORMAL;",
            SyncMode::Full => "PRAGMA synchronous=FULL;",
        })?;
        // Checkpoints run on their own thread (see `checkpoint`), never in a commit.
        // After a burst, the WAL file is cut back to 16 MiB when it restarts.
        conn.execute_batch("PRAGMA wal_autocheckpoint=0; PRAGMA journal_size_limit=16777216;")?;
        if !created {
            loaded = validate_schema(&conn, path)?;
        }
        if created {
            conn.execute_batch(SCHEMA)?;
            let root = RootVersion {
                version: 1,
                writer: 0,
                mtime: now_secs(),
            };
            write_root(&conn, root)?;
            loaded = Some(Loaded {
                rows: Vec::new(),
                root,
                created: true,
                term: 0,
                promised_term: 0,
                log_seq: 0,
                switched_at: 0,
            });
        }
        Ok((
            SqliteStore {
                conn,
                path: path.to_path_buf(),
                folding: match access {
                    Access::Shared => Folding::Background(Checkpointer::start(path)?),
                    Access::Exclusive => Folding::Inline {
                        wal: {
                            let mut w = path.as_os_str().to_owned();
                            w.push("-wal");
                            PathBuf::from(w)
                        },
                    },
                },
            },
            loaded.expect("set above"),
        ))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run the write transaction `f`, and see that the WAL gets folded.
    fn write<R>(
        &mut self,
        f: impl FnOnce(&mut Connection) -> Result<R, Error>,
    ) -> Result<R, Error> {
        let conn = &mut self.conn;
        match &self.folding {
            Folding::Background(c) => c.commit(|| f(conn)),
            Folding::Inline { wal } => {
                let r = f(conn)?;
                if std::fs::metadata(wal).is_ok_and(|m| m.len() > INLINE_FOLD_BYTES) {
                    // The commit is durable in the WAL already; a fold that fails now
                    // is tried again after the next commit.
                    if let Err(e) =
                        self.conn
                            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                    {
                        tracing::warn!("wal checkpoint failed (retrying later): {e}");
                    }
                }
                Ok(r)
            }
        }
    }

    /// Read the whole content again (after recovery changed it).
    pub fn reload(&self) -> Result<Loaded, Error> {
        validate_schema(&self.conn, &self.path)?.ok_or_else(|| Error::Corrupt {
            path: self.path.clone(),
            reason: "the tree table disappeared".into(),
        })
    }

    /// Persist the intent-log records `batch` (consecutive, oldest first) in one
    /// transaction, together with the last one's sequence number, so that recovery
    /// knows where the database stops. Each change stays whole: the batch is
    /// all-or-nothing and ends on a change boundary.
    pub fn commit_batch(&mut self, batch: &[(u64, Txn)]) -> Result<(), Error> {
        let Some((last_seq, last)) = batch.last() else {
            return Ok(());
        };
        self.write(|conn| {
            let tx = conn.transaction()?;
            for (_, txn) in batch {
                write_changes(&tx, txn)?;
            }
            write_root(&tx, last.root)?;
            write_meta(&tx, LOG_SEQ, *last_seq)?;
            tx.commit()?;
            Ok(())
        })
    }
}

/// The rows of one change, without its version record.
fn write_changes(conn: &Connection, txn: &Txn) -> rusqlite::Result<()> {
    for ino in &txn.deletes {
        conn.prepare_cached("DELETE FROM tree WHERE inode = ?1")?
            .execute([ino.0 as i64])?;
    }
    for row in &txn.upserts {
        write_row(conn, row, row.inode.0 >= txn.root.version)?;
    }
    Ok(())
}

pub(crate) fn corrupt(path: &Path, e: rusqlite::Error) -> Error {
    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) {
        return Error::Busy {
            path: path.to_path_buf(),
        };
    }
    Error::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Check that `conn` holds a pmxcfs `tree` table and read it; `None` for an empty
/// database (no tables at all), which is initialised like a new file.
fn validate_schema(conn: &Connection, path: &Path) -> Result<Option<Loaded>, Error> {
    let Some(t) = crate::inspect::read_tree(conn, path, true)? else {
        return Ok(None);
    };
    let [(_, term), (_, promised_term), (_, log_seq), (_, switched_at)] = t.meta;
    Ok(Some(Loaded {
        rows: t.rows,
        root: t.root,
        created: false,
        term,
        promised_term,
        log_seq,
        switched_at,
    }))
}

pub(crate) fn write_root(conn: &Connection, root: RootVersion) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "REPLACE INTO tree (inode, parent, version, writer, mtime, type, name, data) \
         VALUES (0, 0, ?1, ?2, ?3, ?4, ?5, NULL)",
    )?
    .execute(params![
        root.version as i64,
        root.writer as i64,
        root.mtime as i64,
        DT_REG as i64,
        VERSION_NAME
    ])?;
    Ok(())
}

/// Replication numbers live in their own table: pmxcfs reads only `tree`, so a database
/// we wrote still opens there.
const META_SCHEMA: &str =
    "CREATE TABLE IF NOT EXISTS pmxfs_meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL);";

/// The `pmxfs_meta` key of the last intent-log record a transaction included.
pub(crate) const LOG_SEQ: &str = "log_seq";

/// Store a replication number. An upsert updates the row in place; `REPLACE` would
/// delete and re-insert it, which also rewrites the page of the key's index: one page
/// more in the WAL and in the database at every fold (a log sequence number is stored
/// with each one).
pub(crate) fn write_meta(conn: &Connection, key: &str, value: u64) -> rusqlite::Result<()> {
    conn.execute_batch(META_SCHEMA)?;
    conn.prepare_cached(
        "INSERT INTO pmxfs_meta (key, value) VALUES (?1, ?2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, value as i64])?;
    Ok(())
}

/// Read a replication number: 0 when never stored (a pmxcfs database has no
/// `pmxfs_meta`); a value that is there but unreadable is an error, never a silent 0,
/// because forgetting a promise could let two configurations accept one term.
pub(crate) fn read_meta(conn: &Connection, tables: &[String], key: &str) -> rusqlite::Result<u64> {
    if !tables.iter().any(|t| t == "pmxfs_meta") {
        return Ok(0);
    }
    match conn.query_row("SELECT value FROM pmxfs_meta WHERE key = ?1", [key], |r| {
        r.get::<_, i64>(0)
    }) {
        Ok(v) if v >= 0 => Ok(v as u64),
        Ok(v) => Err(rusqlite::Error::IntegralValueOutOfRange(0, v)),
        Err(rusqlite::Error::QueryReturnedNoRows) => Ok(0),
        Err(e) => Err(e),
    }
}

/// Write `row`; `fresh` when its inode was allocated by this transaction (pmxcfs gives
/// a new entry the transaction's version as its inode), so no row can exist yet.
pub(crate) fn write_row(conn: &Connection, row: &Row, fresh: bool) -> rusqlite::Result<()> {
    let data: Option<&[u8]> = match row.kind {
        Kind::File if !row.data.is_empty() => Some(&row.data[..]),
        _ => None,
    };
    let values = params![
        row.inode.0 as i64,
        row.parent.0 as i64,
        row.version as i64,
        row.writer as i64,
        row.mtime as i64,
        row.kind.dtype() as i64,
        row.name,
        data
    ];
    // UPDATE rather than REPLACE for a row that exists: when the record keeps its size
    // (a rename to a name of the same length, an mtime or version bump) SQLite then
    // rewrites only the pages whose bytes changed, not the blob's overflow pages.
    if fresh {
        conn.prepare_cached(
            "REPLACE INTO tree (inode, parent, version, writer, mtime, type, name, data) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(values)?;
        return Ok(());
    }
    let updated = conn
        .prepare_cached(
            "UPDATE tree SET parent = ?2, version = ?3, writer = ?4, mtime = ?5, type = ?6, \
             name = ?7, data = ?8 WHERE inode = ?1",
        )?
        .execute(values)?;
    if updated == 0 {
        conn.prepare_cached(
            "INSERT INTO tree (inode, parent, version, writer, mtime, type, name, data) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(values)?;
    }
    Ok(())
}

impl Store for SqliteStore {
    fn commit(&mut self, txn: &Txn) -> Result<(), StoreError> {
        self.write(|conn| {
            let tx = conn.transaction()?;
            write_changes(&tx, txn)?;
            write_root(&tx, txn.root)?;
            tx.commit()?;
            Ok(())
        })?;
        Ok(())
    }

    fn replace_all(
        &mut self,
        rows: &[Row],
        root: RootVersion,
        term: u64,
    ) -> Result<(), StoreError> {
        self.write(|conn| {
            let tx = conn.transaction()?;
            tx.execute("DELETE FROM tree", [])?;
            for row in rows {
                write_row(&tx, row, true)?;
            }
            write_root(&tx, root)?;
            write_meta(&tx, "term", term)?;
            tx.commit()?;
            Ok(())
        })?;
        Ok(())
    }

    fn set_meta(&mut self, key: &str, value: u64) -> Result<(), StoreError> {
        self.write(|conn| Ok(write_meta(conn, key, value)?))?;
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<(), StoreError> {
        let Folding::Inline { wal } = &self.folding else {
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .map_err(Error::from)?;
            return Ok(());
        };
        // RESTART copies every frame into the database and syncs it, but, unlike
        // TRUNCATE, leaves the WAL its blocks: freeing them would make the file system
        // allocate them again at the next fold, writing its bitmaps, group descriptors
        // and the inode, a third of a small fold's wear.
        let (busy, frames, folded): (i64, i64, i64) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(Error::from)?;
        if busy != 0 || folded != frames {
            return Err(Error::Io(std::io::Error::other(format!(
                "the WAL checkpoint folded {folded} of {frames} frames"
            )))
            .into());
        }
        invalidate_wal(wal).map_err(Error::from)?;
        Ok(())
    }
}

/// Make the folded WAL at `wal` empty to any later opener of the database, without
/// freeing its blocks, by zeroing its header: SQLite's recovery reads no frame past a
/// header that is not valid. Frames left valid would be laid over the database by the
/// next opener, which is harmless while they equal what the database holds, and
/// silently wrong once the database is replaced (a backup restored, or a new one made
/// by `pvecm add`, which deletes `config.db` only). The store's own connection reads
/// the header only at recovery, which the exclusive mode's in-memory index never needs,
/// and its next commit starts the WAL over with a new header, because every frame has
/// been folded.
fn invalidate_wal(wal: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let f = match std::fs::OpenOptions::new().read(true).write(true).open(wal) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut header = [0u8; WAL_HEADER];
    match f.read_exact_at(&mut header, 0) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
        Err(e) => return Err(e),
    }
    // An invalid header already says so; rewriting it would only dirty a page.
    if header != [0; WAL_HEADER] {
        f.write_all_at(&[0; WAL_HEADER], 0)?;
    }
    Ok(())
}

/// Length of a WAL file's header (SQLite's file format, section 4.1).
const WAL_HEADER: usize = 32;

impl SqliteStore {
    /// (entries, version) in the database, as its own connection reads them.
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (i64, i64) {
        let q = |sql| self.conn.query_row(sql, [], |r| r.get(0)).unwrap();
        (
            q("SELECT count(*) FROM tree WHERE inode != 0"),
            q("SELECT version FROM tree WHERE inode = 0"),
        )
    }

    /// Read the version record back from disk (used by tests and `status`).
    pub fn disk_version(&self) -> Result<Option<u64>, Error> {
        Ok(self
            .conn
            .query_row("SELECT version FROM tree WHERE inode = 0", [], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?
            .map(|v| v as u64))
    }
}

/// Seconds since the epoch, saturated into pmxcfs's u32 mtime.
fn now_secs() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs().min(u32::MAX as u64) as u32)
        .unwrap_or(0)
}
