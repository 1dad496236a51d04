//! Replicable tree operations and what applying one changed.
//!
//! Operations are path based, like pmxcfs's dcdb messages, so that every node applying
//! the same sequence reaches the same tree; paths are relative to the mount root.

/// A mutating operation on the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create an empty regular file; EEXIST if the name exists.
    Create {
        /// Path of the new file.
        path: String,
    },
    /// Create a directory; under `priv/lock/` this acquires a cluster lock.
    Mkdir {
        /// Path of the new directory.
        path: String,
    },
    /// pmxcfs's WRITE: put `data` at `offset`; with `truncate` the file ends right after
    /// it (so `offset 0, truncate` replaces the content and `data = [], offset = n,
    /// truncate` is `truncate(n)`).
    Write {
        /// Path of an existing file.
        path: String,
        /// Byte offset.
        offset: u64,
        /// Bytes to write.
        data: Vec<u8>,
        /// Cut the file at `offset + data.len()`.
        truncate: bool,
    },
    /// Remove a file or an empty directory (unlink and rmdir share it, as in pmxcfs).
    Delete {
        /// Path to remove.
        path: String,
    },
    /// Move an entry, replacing a file or empty directory at the target.
    Rename {
        /// Existing path.
        from: String,
        /// New path.
        to: String,
    },
    /// Set the modification time; on lock directories this refreshes or (mtime 0)
    /// requests the release of an expired lock.
    Mtime {
        /// Path of the entry.
        path: String,
        /// New mtime in seconds.
        mtime: u32,
    },
    /// pmxcfs's UNLOCK_REQUEST: a node asks whether the lock at `path` expired. It
    /// changes nothing; the lowest node decides (by its own clock, outside the tree)
    /// and, if so, sends [`Op::Unlock`].
    UnlockRequest {
        /// The lock directory.
        path: String,
        /// Its `memdb_tree_entry_csum` as the asking node saw it.
        csum: [u8; 32],
    },
    /// pmxcfs's UNLOCK: if `path` is a directory below `priv/lock/` whose
    /// `memdb_tree_entry_csum` still equals `csum`, exactly [`Op::Delete`] of it from
    /// the sender at the message's time (its result, ENOTEMPTY included); otherwise
    /// (the lock was refreshed, released or taken since, or is gone) a success at the
    /// current version that changes nothing, as pmxcfs answers 0.
    Unlock {
        /// The lock directory.
        path: String,
        /// The csum the lowest node judged expired.
        csum: [u8; 32],
    },
}

impl Op {
    /// The primary path the operation touches.
    pub fn path(&self) -> &str {
        match self {
            Op::Create { path }
            | Op::Mkdir { path }
            | Op::Write { path, .. }
            | Op::Delete { path }
            | Op::Mtime { path, .. }
            | Op::UnlockRequest { path, .. }
            | Op::Unlock { path, .. } => path,
            Op::Rename { from, .. } => from,
        }
    }
}

/// Who applies an operation and when: the writer's node id and clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpCtx {
    /// Node id of the writer (0 in local mode).
    pub writer: u32,
    /// The writer's time in seconds; becomes the mtime of changed entries and is the
    /// clock lock expiry is judged by.
    pub now: u32,
}

use crate::entry::Inode;

/// A kernel-visible consequence of a change, for cache invalidation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The attributes (size, mtime, existence) of this memdb inode changed.
    Attr(Inode),
    /// The name `name` in directory `parent` now refers to another inode or to nothing.
    Name {
        /// Directory inode.
        parent: Inode,
        /// Name in it.
        name: String,
    },
}

/// A lock directory event caused by an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockEvent {
    /// `priv/lock/<name>` was created (or taken over after expiry).
    Acquired(String),
    /// `priv/lock/<name>` was removed.
    Released(String),
}

/// The result of a successfully applied operation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Global version after the operation.
    pub version: u64,
    /// What kernel caches may now be stale.
    pub changes: Vec<Change>,
    /// Paths whose content or existence changed (for `.version` counters).
    pub paths: Vec<String>,
    /// Lock acquisition or release, if the operation was one.
    pub lock: Option<LockEvent>,
    /// Whether the set of guest configs changed (for `.vmlist`).
    pub vmlist_changed: bool,
    /// Entries that ceased to exist: `(inode, parent, name)` they had.
    pub removed: Vec<(Inode, Inode, String)>,
    /// An [`Op::UnlockRequest`] delivered: `(path, csum)`, for the lowest node to judge.
    pub unlock_request: Option<(String, [u8; 32])>,
}

impl Applied {
    /// Record what moving `row` (still at its old place) to `name` in `parent`, from
    /// path `from` to path `to`, changes for the kernel and the counters.
    pub(crate) fn renamed(
        &mut self,
        row: &crate::Row,
        parent: Inode,
        name: &str,
        from: &str,
        to: &str,
    ) {
        self.changes.push(Change::Name {
            parent: row.parent,
            name: row.name.clone(),
        });
        self.changes.push(Change::Name {
            parent,
            name: name.to_string(),
        });
        self.changes.push(Change::Attr(row.inode));
        self.paths.push(from.to_string());
        self.paths.push(to.to_string());
    }
}
