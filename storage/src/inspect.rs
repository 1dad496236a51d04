//! Reading a database that the daemon refuses, without changing it, and writing a
//! repaired copy beside it (`pmxfs db check`, `pmxfs db repair`). Unlike the daemon's
//! loader this reader does not stop at the first bad row: it returns every row it can
//! decode and says which it cannot.

use std::path::Path;
use std::sync::Arc;

use memdb::{Inode, Kind, RootVersion, Row};
use rusqlite::{Connection, OpenFlags};

use crate::sqlite::{
    corrupt, read_meta, write_meta, write_root, write_row, COLUMNS, LOG_SEQ, SCHEMA, VERSION_NAME,
};
use crate::Error;

/// What a database holds, row by row.
#[derive(Debug, Default)]
pub struct Inspected {
    /// The version record (or the highest entry version if it is missing).
    pub root: RootVersion,
    /// The rows that decode.
    pub rows: Vec<Row>,
    /// The rows that do not, with why.
    pub unreadable: Vec<(Inode, String)>,
    /// The replication term, promise, intent-log position and protocol switch
    /// (`pmxfs_meta`).
    pub meta: [(&'static str, u64); 4],
    /// What SQLite's `quick_check` said, if not "ok".
    pub damage: Option<String>,
}

/// Read `path` through a read-only connection, row by row.
pub fn inspect(path: &Path) -> Result<Inspected, Error> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| corrupt(path, e))?;
    read_tree(&conn, path, false)?.ok_or_else(|| Error::Foreign {
        path: path.to_path_buf(),
        reason: "no 'tree' table (no tables at all)".into(),
    })
}

/// Read the `tree` table of `conn` (the daemon's load and `inspect` alike): `None` for a
/// database without any table. A foreign schema is an error; with `strict`, SQLite's
/// damage is too, before any row is read, and so is the first row that cannot be an
/// entry; without it both are reported in the result.
pub(crate) fn read_tree(
    conn: &Connection,
    path: &Path,
    strict: bool,
) -> Result<Option<Inspected>, Error> {
    let tables: Vec<String> = {
        let mut st = conn
            .prepare("SELECT name FROM sqlite_master WHERE type='table'")
            .map_err(|e| corrupt(path, e))?;
        let names = st
            .query_map([], |r| r.get::<_, String>(0))
            .and_then(|m| m.collect::<Result<Vec<_>, _>>())
            .map_err(|e| corrupt(path, e))?;
        names
    };
    if tables.is_empty() {
        return Ok(None);
    }
    if !tables.iter().any(|t| t == "tree") {
        return Err(Error::Foreign {
            path: path.to_path_buf(),
            reason: format!("no 'tree' table (tables: {})", tables.join(", ")),
        });
    }
    let cols: Vec<String> = {
        let mut st = conn
            .prepare("PRAGMA table_info(tree)")
            .map_err(|e| corrupt(path, e))?;
        let c = st
            .query_map([], |r| r.get::<_, String>(1))
            .and_then(|m| m.collect::<Result<Vec<_>, _>>())
            .map_err(|e| corrupt(path, e))?;
        c
    };
    if cols != COLUMNS {
        return Err(Error::Foreign {
            path: path.to_path_buf(),
            reason: format!(
                "'tree' has columns ({}), expected ({})",
                cols.join(", "),
                COLUMNS.join(", ")
            ),
        });
    }
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| corrupt(path, e))?;
    if strict && check != "ok" {
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            reason: format!("quick_check: {check}"),
        });
    }
    let mut out = Inspected {
        damage: (check != "ok").then_some(check),
        ..Inspected::default()
    };
    let mut st = conn
        .prepare("SELECT inode, parent, version, writer, mtime, type, name, data FROM tree")
        .map_err(|e| corrupt(path, e))?;
    let mut q = st.query([]).map_err(|e| corrupt(path, e))?;
    while let Some(r) = q.next().map_err(|e| corrupt(path, e))? {
        let inode: i64 = r.get(0)?;
        match row_of(r) {
            Ok(None) => {
                out.root = RootVersion {
                    version: r.get::<_, i64>(2)? as u64,
                    writer: r.get::<_, i64>(3)? as u32,
                    mtime: r.get::<_, i64>(4)? as u32,
                };
            }
            Ok(Some(row)) => out.rows.push(row),
            Err(why) if strict => {
                return Err(Error::Corrupt {
                    path: path.to_path_buf(),
                    reason: format!("inode {inode} {why}"),
                })
            }
            Err(why) => out.unreadable.push((Inode(inode as u64), why)),
        }
    }
    // A database without the version record still has a well-defined version: the
    // highest entry version.
    let max_row = out.rows.iter().map(|r| r.version).max().unwrap_or(0);
    out.root.version = out.root.version.max(max_row);
    out.meta = [
        ("term", 0),
        ("promised_term", 0),
        (LOG_SEQ, 0),
        (memdb::store::SWITCHED_AT, 0),
    ];
    for (k, v) in out.meta.iter_mut() {
        *v = read_meta(conn, &tables, k).map_err(|e| corrupt(path, e))?;
    }
    Ok(Some(out))
}

/// One row: `None` for the version record, or why it cannot be an entry.
fn row_of(r: &rusqlite::Row<'_>) -> Result<Option<Row>, String> {
    let get = |i: usize| r.get::<_, i64>(i).map_err(|e| format!("column {i}: {e}"));
    let inode = get(0)?;
    let name: String = r.get(6).map_err(|e| format!("bad name: {e}"))?;
    if inode == 0 {
        if name != VERSION_NAME {
            return Err(format!("is '{name}', expected '{VERSION_NAME}'"));
        }
        return Ok(None);
    }
    if inode < 0 {
        return Err("is negative".into());
    }
    let ty = get(5)?;
    let kind = Kind::from_dtype(ty).ok_or_else(|| format!("'{name}': unknown type {ty}"))?;
    let data: Option<Vec<u8>> = r.get(7).map_err(|e| format!("bad data: {e}"))?;
    if kind == Kind::Dir && data.as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(format!("directory '{name}' has data"));
    }
    Ok(Some(Row {
        inode: Inode(inode as u64),
        parent: Inode(get(1)? as u64),
        version: get(2)? as u64,
        writer: get(3)? as u32,
        mtime: get(4)? as u32,
        kind,
        name,
        data: Arc::new(data.unwrap_or_default()),
    }))
}

/// Write a new database at `path` (which must not exist) holding `root`, `rows` and
/// `meta`, in pmxcfs's schema, in one transaction.
pub fn write_new(
    path: &Path,
    root: RootVersion,
    rows: &[Row],
    meta: &[(&str, u64)],
) -> Result<(), Error> {
    if path.exists() {
        return Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{} exists; not overwriting it", path.display()),
        )));
    }
    let mut conn = Connection::open(path).map_err(|e| corrupt(path, e))?;
    let tx = conn.transaction()?;
    tx.execute_batch(SCHEMA)?;
    write_root(&tx, root)?;
    for row in rows {
        write_row(&tx, row, true)?;
    }
    for (k, v) in meta {
        write_meta(&tx, k, *v)?;
    }
    tx.commit()?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}
