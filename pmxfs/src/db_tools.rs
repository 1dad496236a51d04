//! `pmxfs db check | repair | set-aside`: the ways out when a database keeps a node down.
//! pmxcfs refuses to start on a tree it cannot place ("found entry with duplicate
//! name", "missing directory inode") and leaves the repair to sqlite3 by hand; pmxfs
//! refuses too, and these say what is wrong, write a repaired copy, or put the database
//! aside so that the node takes the cluster's tree at its next start.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use memdb::repair::{diagnose, Diagnosis};
use memdb::RootVersion;
use storage::inspect::{inspect, write_new, Inspected};

/// Read and diagnose `db` without changing it.
fn examine(db: &Path) -> Result<(Inspected, Diagnosis)> {
    if !db.exists() {
        bail!("{} does not exist", db.display());
    }
    let mut found = inspect(db).with_context(|| format!("cannot read {}", db.display()))?;
    let rows = std::mem::take(&mut found.rows);
    let unreadable = std::mem::take(&mut found.unreadable);
    Ok((found, diagnose(rows, unreadable)))
}

/// One line per dropped entry.
fn report(d: &Diagnosis) -> String {
    let mut s = String::new();
    for x in &d.dropped {
        let _ = writeln!(
            s,
            "  inode {} '{}' in directory {}: {}",
            x.inode.0, x.name, x.parent.0, x.problem
        );
    }
    s
}

/// `pmxfs db check`: print what is wrong; `Ok(true)` if nothing is.
pub fn check(db: &Path) -> Result<bool> {
    let (found, d) = examine(db)?;
    if let Some(damage) = &found.damage {
        println!("{}: SQLite reports damage: {damage}", db.display());
    }
    if d.is_clean() && found.damage.is_none() {
        println!("{}: ok ({} entries)", db.display(), d.kept.len());
        return Ok(true);
    }
    if !d.is_clean() {
        println!(
            "{}: {} of {} entries cannot be placed in the tree (pmxcfs and pmxfs refuse to start on it):",
            db.display(),
            d.dropped.len(),
            d.dropped.len() + d.kept.len()
        );
        print!("{}", report(&d));
        println!("`pmxfs db repair` writes a copy without them beside the database.");
    }
    Ok(false)
}

/// The repaired copy's default name.
pub fn repaired_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".repaired");
    PathBuf::from(p)
}

/// `pmxfs db repair`: write the consistent entries of `db` to `out` (default beside
/// it), listing what was left out; the original is not changed.
pub fn repair(db: &Path, out: Option<&Path>) -> Result<()> {
    let (found, d) = examine(db)?;
    if d.is_clean() && found.damage.is_none() {
        println!("{}: nothing to repair", db.display());
        return Ok(());
    }
    let out = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| repaired_path(db));
    let root = RootVersion {
        version: found
            .root
            .version
            .max(d.kept.iter().map(|r| r.version).max().unwrap_or(0)),
        ..found.root
    };
    write_new(&out, root, &d.kept, &found.meta)
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "wrote {} with {} entries; left out {}:",
        out.display(),
        d.kept.len(),
        d.dropped.len()
    );
    print!("{}", report(&d));
    println!(
        "to use it: stop pmxfs, then `mv {} {}` (keep the original elsewhere), and start pmxfs",
        out.display(),
        db.display()
    );
    Ok(())
}

/// The files of database `db`: itself, SQLite's WAL and shared memory, the intent log.
fn db_files(db: &Path) -> Vec<PathBuf> {
    let with = |suffix: &str| {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p)
    };
    vec![
        db.to_path_buf(),
        with("-wal"),
        with("-shm"),
        storage::intent_log::path_for(db),
    ]
}

/// `pmxfs db set-aside`: move `db` and its companion files into a new directory beside
/// it, so that the next start begins with a new database: it imports the host's
/// corosync.conf and takes the cluster's tree (as `pvecm add` has pmxcfs do). Refused
/// while a daemon runs on it.
pub fn set_aside(db: &Path, now: u64) -> Result<PathBuf> {
    if !db.exists() {
        bail!("{} does not exist", db.display());
    }
    let _lock =
        crate::daemon::lock_instance(db).context("stop pmxfs first: it runs on this database")?;
    let dir = db
        .parent()
        .unwrap_or(Path::new("."))
        .join(format!("set-aside-{now}"));
    std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for f in db_files(db) {
        if f.exists() {
            let to = dir.join(f.file_name().expect("a file name"));
            std::fs::rename(&f, &to)
                .with_context(|| format!("cannot move {} to {}", f.display(), to.display()))?;
        }
    }
    Ok(dir)
}
