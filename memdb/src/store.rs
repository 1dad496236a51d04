//! What the tree needs from its persistence: the [`Store`] trait, the [`Txn`] it
//! commits, and [`NullStore`] for tests. The SQLite store, the intent log and the
//! checkpointer live in the `storage` crate; the simulator has a store in memory.

use std::error::Error as StdError;

use crate::entry::{Inode, RootVersion, Row};

/// One atomic change to persist: rows to delete, rows to insert or replace, and the new
/// global version record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// Inodes to remove.
    pub deletes: Vec<Inode>,
    /// Rows to insert or replace.
    pub upserts: Vec<Row>,
    /// The global version record after the change.
    pub root: RootVersion,
}

/// A failure of the persistence behind the tree. The operation it refused changed
/// nothing, neither in the store nor in memory.
#[derive(Debug)]
pub struct StoreError(Box<dyn StdError + Send + Sync>);

impl StoreError {
    /// Wrap a store's own error.
    pub fn new(e: impl Into<Box<dyn StdError + Send + Sync>>) -> StoreError {
        StoreError(e.into())
    }

    /// The store's own error.
    pub fn inner(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.0
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source()
    }
}

/// Changes a store has accepted but not yet written to the database file.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Backlog {
    /// How many.
    pub pending: usize,
    /// Why writing them fails, while it does.
    pub failing: Option<String>,
}

/// The store's replication-number key recording the switch from pmxcfs's protocol:
/// one above the switch round's term, so that 0 (never stored) means "never".
pub const SWITCHED_AT: &str = "switched_at";

/// Where committed changes go.
pub trait Store: Send {
    /// Persist `txn` atomically: afterwards either all of it is durable or none.
    fn commit(&mut self, txn: &Txn) -> Result<(), StoreError>;

    /// Replace the whole content (used when a cluster sync installs a leader's tree),
    /// with the replication term that labels it, in one transaction.
    fn replace_all(&mut self, rows: &[Row], root: RootVersion, term: u64)
        -> Result<(), StoreError>;

    /// Durably store a small replication number (`term`, `promised_term`).
    fn set_meta(&mut self, key: &str, value: u64) -> Result<(), StoreError>;

    /// Fold the write-ahead log into the database (on clean shutdown).
    fn checkpoint(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Accepted changes that are not in the database file yet.
    fn backlog(&self) -> Backlog {
        Backlog::default()
    }

    /// Bytes written to the database files so far, if known (for benchmarks).
    fn bytes_written(&self) -> Option<u64> {
        None
    }
}

/// A store that keeps nothing: for unit tests.
#[derive(Debug, Default)]
pub struct NullStore;

impl Store for NullStore {
    fn commit(&mut self, _txn: &Txn) -> Result<(), StoreError> {
        Ok(())
    }

    fn replace_all(
        &mut self,
        _rows: &[Row],
        _root: RootVersion,
        _term: u64,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    fn set_meta(&mut self, _key: &str, _value: u64) -> Result<(), StoreError> {
        Ok(())
    }
}
