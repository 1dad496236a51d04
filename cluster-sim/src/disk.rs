//! A node's durable storage in memory: what survives a crash of the simulated daemon.
//! It implements memdb's `Store`, so the real tree commits to it as it commits to
//! SQLite, and it fails on demand (a storage fault: the next write is refused).

use std::collections::BTreeMap;
use std::sync::Arc;

use memdb::{Inode, Limits, MemDb, RootVersion, Row, Store, StoreError, Txn};
use parking_lot::Mutex;

/// What the disk holds.
#[derive(Debug, Clone)]
struct Contents {
    rows: BTreeMap<Inode, Row>,
    root: RootVersion,
    meta: BTreeMap<String, u64>,
    /// Writes still to refuse (storage faults armed).
    failing: u32,
    /// Writes refused so far.
    refused: u64,
}

/// One node's disk; clones share it (the tree's store and the simulator's handle).
#[derive(Debug, Clone)]
pub struct Disk(Arc<Mutex<Contents>>);

impl Disk {
    /// A fresh disk holding `db`'s tree (every node starts from the same genesis).
    pub fn with(db: &MemDb) -> Disk {
        Disk(Arc::new(Mutex::new(Contents {
            rows: db.rows().into_iter().map(|r| (r.inode, r)).collect(),
            root: db.root_version(),
            meta: BTreeMap::new(),
            failing: 0,
            refused: 0,
        })))
    }

    /// Refuse the next write to this disk (a storage fault).
    pub fn fail_next_write(&self) {
        self.0.lock().failing += 1;
    }

    /// Writes refused so far.
    pub fn refused(&self) -> u64 {
        self.0.lock().refused
    }

    /// Load the tree as a restarted daemon does: rows, version record and terms.
    pub fn load(&self, limits: Limits, lock_timeout: u32) -> Result<MemDb, String> {
        let c = self.0.lock().clone();
        let meta = |k: &str| c.meta.get(k).copied().unwrap_or(0);
        let mut db = MemDb::from_rows(
            c.rows.into_values().collect(),
            c.root,
            Box::new(self.clone()),
            limits,
        )
        .map_err(|e| e.to_string())?
        .with_terms(meta("term"), meta("promised_term"))
        .with_switch(meta(memdb::store::SWITCHED_AT));
        db.set_lock_timeout(lock_timeout);
        Ok(db)
    }

    fn write(&mut self, f: impl FnOnce(&mut Contents)) -> Result<(), StoreError> {
        let mut c = self.0.lock();
        if c.failing > 0 {
            c.failing -= 1;
            c.refused += 1;
            return Err(StoreError::new("injected storage fault"));
        }
        f(&mut c);
        Ok(())
    }
}

impl Store for Disk {
    fn commit(&mut self, txn: &Txn) -> Result<(), StoreError> {
        self.write(|c| {
            for ino in &txn.deletes {
                c.rows.remove(ino);
            }
            for r in &txn.upserts {
                c.rows.insert(r.inode, r.clone());
            }
            c.root = txn.root;
        })
    }

    fn replace_all(
        &mut self,
        rows: &[Row],
        root: RootVersion,
        term: u64,
    ) -> Result<(), StoreError> {
        self.write(|c| {
            c.rows = rows.iter().map(|r| (r.inode, r.clone())).collect();
            c.root = root;
            c.meta.insert("term".into(), term);
        })
    }

    fn set_meta(&mut self, key: &str, value: u64) -> Result<(), StoreError> {
        self.write(|c| {
            c.meta.insert(key.to_string(), value);
        })
    }
}
