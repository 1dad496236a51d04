//! Tree entries as held in memory and as persisted (one row of pmxcfs's `tree` table).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// An inode number in pmxcfs's numbering: the root is 0 and an entry gets the global
/// version of the change that created it, never reused. The kernel's numbering is
/// another (the daemon's `FuseIno`); the two types keep them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Inode(pub u64);

impl fmt::Display for Inode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Inode number of the root directory (pmxcfs's numbering; FUSE's root is 1).
pub const ROOT_INODE: Inode = Inode(0);

/// `d_type` values pmxcfs stores in the `type` column.
pub const DT_DIR: u8 = 4;
/// See [`DT_DIR`].
pub const DT_REG: u8 = 8;

/// Directory or regular file: the only kinds the tree holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
}

impl Kind {
    /// The `type` column value.
    pub fn dtype(self) -> u8 {
        match self {
            Kind::Dir => DT_DIR,
            Kind::File => DT_REG,
        }
    }

    /// Parse a `type` column value.
    pub fn from_dtype(t: i64) -> Option<Kind> {
        match t {
            4 => Some(Kind::Dir),
            8 => Some(Kind::File),
            _ => None,
        }
    }
}

/// One persisted row: an entry's metadata and content, without its children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Inode number: the global version at which the entry was created; never reused.
    pub inode: Inode,
    /// Parent directory's inode.
    pub parent: Inode,
    /// Global version of the entry's last change.
    pub version: u64,
    /// Node id of the last writer (0 in local mode).
    pub writer: u32,
    /// Last modification time, whole seconds (the writer's clock).
    pub mtime: u32,
    /// Directory or file.
    pub kind: Kind,
    /// Name within the parent.
    pub name: String,
    /// File content (empty for directories). Shared so readers can drop the db lock.
    pub data: Arc<Vec<u8>>,
}

/// The global version record (row 0, `__version__`, in the database).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RootVersion {
    /// Global change counter.
    pub version: u64,
    /// Writer of the last change.
    pub writer: u32,
    /// Time of the last change.
    pub mtime: u32,
}

/// An entry in the in-memory tree.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Metadata and content.
    pub row: Row,
    /// Children by name (directories only).
    pub children: BTreeMap<String, Inode>,
}

impl Entry {
    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.row.kind == Kind::Dir
    }

    /// Content length in bytes.
    pub fn size(&self) -> u64 {
        self.row.data.len() as u64
    }
}
