//! Persistence of the pmxfs tree: the SQLite `config.db` in pmxcfs's schema
//! ([`SqliteStore`]), the intent log that answers a change before SQLite has it
//! ([`LoggedStore`]), and the background WAL checkpointer. All of them implement
//! memdb's [`memdb::Store`]; the tree itself knows nothing of files.
#![warn(missing_docs)]

mod checkpoint;
pub mod inspect;
pub mod intent_log;
pub mod logged;
pub mod sqlite;

use std::path::PathBuf;

pub use logged::{Deferral, LoggedStore};
pub use sqlite::{Access, Loaded, SqliteStore, SyncMode};

/// Errors from the persistence layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file is not an SQLite database or is damaged.
    #[error("{path}: corrupt database: {reason}")]
    Corrupt {
        /// Database file.
        path: PathBuf,
        /// What SQLite or the validation said.
        reason: String,
    },
    /// A valid SQLite database, but not a pmxcfs one.
    #[error("{path}: not a pmxcfs database: {reason}")]
    Foreign {
        /// Database file.
        path: PathBuf,
        /// What is missing or different.
        reason: String,
    },
    /// Another process holds the file: a running pmxfs keeps its database to itself
    /// (SQLite's exclusive locking mode), so a second reader or writer waits, then
    /// gets this.
    #[error(
        "{path}: in use by another process (pmxfs holds its database exclusively while it runs)"
    )]
    Busy {
        /// Database file.
        path: PathBuf,
    },
    /// Any other SQLite failure.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// File system error around the database.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<Error> for memdb::StoreError {
    fn from(e: Error) -> Self {
        memdb::StoreError::new(e)
    }
}

#[cfg(test)]
mod tests;
