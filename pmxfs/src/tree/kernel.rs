//! What the kernel holds of the tree: the inodes it looked up (only those need
//! invalidating) and the removed inodes it may still reach through a cached name.

use std::collections::HashMap;

use memdb::{Inode, MemDb, ROOT_INODE};
use parking_lot::Mutex;

use super::vfiles::VIRT_BASE;

/// Removed inodes remembered at most; beyond it a stale name simply answers ENOENT.
pub const MAX_GHOSTS: usize = 65_536;

/// An inode number as the kernel knows it: memdb's number plus one (FUSE's root is 1,
/// memdb's 0); virtual files live at [`VIRT_BASE`] and above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FuseIno(pub u64);

impl FuseIno {
    /// The root directory.
    pub const ROOT: FuseIno = FuseIno(ROOT_INODE.0 + 1);

    /// The kernel's number of memdb inode `ino`.
    pub fn of(ino: Inode) -> FuseIno {
        FuseIno(ino.0 + 1)
    }

    /// The memdb inode, `None` for a virtual file.
    pub fn memdb(self) -> Option<Inode> {
        (self.0 < VIRT_BASE).then(|| Inode(self.0 - 1))
    }
}

/// Kernel lookup counts and ghost inodes.
#[derive(Debug, Default)]
pub struct KernelRefs {
    /// Lookup count per inode the kernel holds.
    known: Mutex<HashMap<FuseIno, u64>>,
    /// Removed memdb inodes the kernel may still reach through a cached name, with the
    /// (parent, name) they had: requests on them are answered by whatever lives at that
    /// path now, as pmxcfs's path-based FUSE layer does.
    ghosts: Mutex<HashMap<Inode, (Inode, String)>>,
}

impl KernelRefs {
    /// The kernel took a reference (a LOOKUP, CREATE or MKDIR reply).
    pub fn remember(&self, ino: FuseIno) {
        *self.known.lock().entry(ino).or_insert(0) += 1;
    }

    /// FORGET: the kernel dropped `n` references.
    pub fn forget(&self, ino: FuseIno, n: u64) {
        let gone = {
            let mut k = self.known.lock();
            match k.get_mut(&ino) {
                Some(c) => {
                    *c = c.saturating_sub(n);
                    *c == 0 && k.remove(&ino).is_some()
                }
                None => false,
            }
        };
        if gone {
            if let Some(m) = ino.memdb() {
                self.ghosts.lock().remove(&m);
            }
        }
    }

    /// Whether the kernel holds `ino`.
    pub fn is_known(&self, ino: FuseIno) -> bool {
        // The kernel holds the root from mount on without ever looking it up.
        ino == FuseIno::ROOT || self.known.lock().contains_key(&ino)
    }

    /// Every inode the kernel holds.
    pub fn known(&self) -> Vec<FuseIno> {
        self.known.lock().keys().copied().collect()
    }

    /// Remember the removed entries `(inode, parent, name)` the kernel still holds.
    pub fn bury(&self, removed: &[(Inode, Inode, String)]) {
        // `known` and `ghosts` are never held together (forget takes them in turn).
        let kept: Vec<_> = removed
            .iter()
            .filter(|(ino, _, _)| self.is_known(FuseIno::of(*ino)))
            .cloned()
            .collect();
        let mut g = self.ghosts.lock();
        for (ino, parent, name) in kept {
            if g.len() < MAX_GHOSTS {
                g.insert(ino, (parent, name));
            }
        }
    }

    /// The live memdb inode a kernel inode refers to: itself, or for a removed inode
    /// the entry now at the path it had.
    pub fn live_ino(&self, db: &MemDb, m: Inode) -> Option<Inode> {
        if db.get(m).is_some() {
            return Some(m);
        }
        let (parent, name) = self.ghosts.lock().get(&m).cloned()?;
        db.lookup(parent, &name).map(|e| e.row.inode)
    }
}
