//! A test double of the replicated tree for the core's unit tests: a small path tree
//! with pmxcfs's lock rules. The simulator does not use it; it runs the real memdb.
//!
//! The root entry also carries the ids of every op ever applied (a ghost log shipped
//! with the tree during sync), so a test can tell exactly which writes a tree holds.
use std::collections::BTreeMap;

use crate::core::{ApplyError, CoreError, Database, DbIndex, Digest, NodeId, Term};

/// Lock timeout (pmxcfs `CFS_LOCK_TIMEOUT`).
pub const LOCK_TIMEOUT: u32 = 120;
/// Directory whose subdirectories are cluster locks.
pub const LOCK_DIR: &str = "priv/lock";

/// A replicated op; `id` is unique per simulated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimOp {
    /// mkdir; under `priv/lock/` acquires a lock.
    Mkdir {
        /// Request id.
        id: u64,
        /// Path.
        path: String,
    },
    /// Create an empty file.
    Create {
        /// Request id.
        id: u64,
        /// Path.
        path: String,
    },
    /// Replace a file's content.
    Write {
        /// Request id.
        id: u64,
        /// Path.
        path: String,
        /// New content.
        data: Vec<u8>,
    },
    /// Remove a file or empty directory (rmdir of a lock releases it).
    Delete {
        /// Request id.
        id: u64,
        /// Path.
        path: String,
    },
}

impl SimOp {
    /// The request id.
    pub fn id(&self) -> u64 {
        match self {
            SimOp::Mkdir { id, .. }
            | SimOp::Create { id, .. }
            | SimOp::Write { id, .. }
            | SimOp::Delete { id, .. } => *id,
        }
    }

    /// The path.
    pub fn path(&self) -> &str {
        match self {
            SimOp::Mkdir { path, .. }
            | SimOp::Create { path, .. }
            | SimOp::Write { path, .. }
            | SimOp::Delete { path, .. } => path,
        }
    }

    /// The lock name if this op acquires (`Mkdir`) or releases (`Delete`) a lock.
    pub fn lock_name(&self) -> Option<&str> {
        let p = self.path().strip_prefix(LOCK_DIR)?.strip_prefix('/')?;
        (!p.is_empty() && !p.contains('/')).then_some(p)
    }
}

/// Errno-like results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimErr {
    /// ENOENT.
    NoEnt,
    /// EEXIST.
    Exist,
    /// ENOTDIR.
    NotDir,
    /// EISDIR.
    IsDir,
    /// ENOTEMPTY.
    NotEmpty,
    /// EACCES: no quorum.
    Access,
    /// EAGAIN: lost to a membership change, not applied.
    Again,
    /// EBUSY: a lock release older than the lock (it targets an earlier holder's lock).
    Busy,
    /// EIO.
    Io,
}

/// One tree entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimEntry {
    /// Inode (0 = root).
    pub inode: u64,
    /// Parent inode.
    pub parent: u64,
    /// Name in the parent.
    pub name: String,
    /// Directory?
    pub dir: bool,
    /// File content (for the root: the ghost log of applied op ids).
    pub data: Vec<u8>,
    /// Version of the last change.
    pub version: u64,
    /// Writer of the last change.
    pub writer: NodeId,
    /// Time of the last change.
    pub mtime: u32,
}

/// The simulated database. Like its tree, its term and promised term survive a
/// crash (the simulator keeps the whole value), as the [`Database`] contract demands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimDb {
    term: Term,
    promised: Term,
    version: u64,
    mtime: u32,
    writer: NodeId,
    entries: BTreeMap<u64, SimEntry>,
    applied: Vec<u64>,
}

fn digest_of(parts: &[&[u8]]) -> Digest {
    // Four FNV-1a-64 lanes with different offsets: plenty for telling trees apart here.
    let mut out = [0u8; 32];
    for lane in 0..4u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ lane.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for p in parts {
            for b in p.iter().chain((p.len() as u32).to_le_bytes().iter()) {
                h ^= *b as u64;
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        out[lane as usize * 8..lane as usize * 8 + 8].copy_from_slice(&h.to_le_bytes());
    }
    out
}

fn ghost_bytes(ids: &[u64]) -> Vec<u8> {
    ids.iter().flat_map(|i| i.to_le_bytes()).collect()
}

fn ghost_ids(b: &[u8]) -> Vec<u64> {
    b.chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

impl SimEntry {
    fn digest(&self) -> Digest {
        digest_of(&[
            &self.version.to_le_bytes(),
            &self.writer.to_le_bytes(),
            &self.mtime.to_le_bytes(),
            &[self.dir as u8],
            &self.parent.to_le_bytes(),
            self.name.as_bytes(),
            &self.data,
        ])
    }
}

impl Default for SimDb {
    fn default() -> Self {
        Self::genesis()
    }
}

impl SimDb {
    /// The tree every node starts from: `priv/lock`, `a`, `b`.
    pub fn genesis() -> Self {
        let mut db = SimDb {
            term: 0,
            promised: 0,
            version: 0,
            mtime: 0,
            writer: 0,
            entries: BTreeMap::new(),
            applied: Vec::new(),
        };
        for p in ["priv", LOCK_DIR, "a", "b"] {
            db.apply_op(
                &SimOp::Mkdir {
                    id: 0,
                    path: p.into(),
                },
                0,
                0,
            )
            .expect("genesis");
        }
        db.applied.clear();
        db
    }

    /// Ids of every op applied to this tree's history, in order.
    pub fn applied(&self) -> &[u64] {
        &self.applied
    }

    /// Global version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Content of a file, for tests.
    pub fn read(&self, path: &str) -> Option<&[u8]> {
        self.resolve(path)
            .and_then(|e| self.entries.get(&e))
            .map(|e| &e.data[..])
    }

    /// Lock directories present: (name, mtime).
    pub fn locks(&self) -> Vec<(String, u32)> {
        let Some(dir) = self.resolve(LOCK_DIR) else {
            return Vec::new();
        };
        self.entries
            .values()
            .filter(|e| e.parent == dir && e.dir && e.inode != 0)
            .map(|e| (e.name.clone(), e.mtime))
            .collect()
    }

    fn child(&self, parent: u64, name: &str) -> Option<u64> {
        self.entries
            .values()
            .find(|e| e.parent == parent && e.name == name && e.inode != 0)
            .map(|e| e.inode)
    }

    /// Whether `ino` is a directory (the root lives outside `entries`).
    fn is_dir(&self, ino: u64) -> Option<bool> {
        if ino == 0 {
            Some(true)
        } else {
            self.entries.get(&ino).map(|e| e.dir)
        }
    }

    fn resolve(&self, path: &str) -> Option<u64> {
        let mut cur = 0;
        for c in path.split('/').filter(|c| !c.is_empty()) {
            if !self.is_dir(cur)? {
                return None;
            }
            cur = self.child(cur, c)?;
        }
        Some(cur)
    }

    /// Resolve the parent directory of `path` and split off the name.
    fn parent_of<'p>(&self, path: &'p str) -> Result<(u64, &'p str), SimErr> {
        let (dir, name) = match path.rfind('/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => ("", path),
        };
        if name.is_empty() {
            return Err(SimErr::Access);
        }
        let p = self.resolve(dir).ok_or(SimErr::NoEnt)?;
        if self.is_dir(p) != Some(true) {
            return Err(SimErr::NotDir);
        }
        Ok((p, name))
    }

    /// Apply `op` as the tree would; `Err` leaves it unchanged.
    pub fn apply_op(&mut self, op: &SimOp, writer: NodeId, time: u32) -> Result<(), SimErr> {
        let (parent, name) = self.parent_of(op.path())?;
        let existing = self.child(parent, name);
        let v = self.version + 1;
        match op {
            SimOp::Mkdir { .. } | SimOp::Create { .. } => {
                let dir = matches!(op, SimOp::Mkdir { .. });
                if let Some(ino) = existing {
                    // An expired lock may be taken over, judged by the op's (writer's)
                    // time so every node decides alike.
                    let e = self.entries.get_mut(&ino).expect("child exists");
                    let expired = time.saturating_sub(e.mtime) > LOCK_TIMEOUT;
                    if dir && e.dir && op.lock_name().is_some() && expired {
                        e.mtime = time;
                        e.writer = writer;
                        e.version = v;
                    } else {
                        return Err(SimErr::Exist);
                    }
                } else {
                    self.entries.insert(
                        v,
                        SimEntry {
                            inode: v,
                            parent,
                            name: name.to_string(),
                            dir,
                            data: Vec::new(),
                            version: v,
                            writer,
                            mtime: time,
                        },
                    );
                }
            }
            SimOp::Write { data, .. } => {
                let ino = existing.ok_or(SimErr::NoEnt)?;
                let e = self.entries.get_mut(&ino).expect("child exists");
                if e.dir {
                    return Err(SimErr::IsDir);
                }
                e.data = data.clone();
                e.version = v;
                e.writer = writer;
                e.mtime = time;
            }
            SimOp::Delete { .. } => {
                let ino = existing.ok_or(SimErr::NoEnt)?;
                // Lock directories have no owner check in pmxcfs, so a release that
                // was delayed past an expiry and takeover would free the new holder's
                // lock; a release requested before the lock's mtime cannot be meant
                // for it.
                if op.lock_name().is_some() && time < self.entries[&ino].mtime {
                    return Err(SimErr::Busy);
                }
                if self
                    .entries
                    .values()
                    .any(|e| e.parent == ino && e.inode != 0)
                {
                    return Err(SimErr::NotEmpty);
                }
                self.entries.remove(&ino);
            }
        }
        self.version = v;
        self.mtime = time;
        self.writer = writer;
        if op.id() != 0 {
            self.applied.push(op.id());
        }
        Ok(())
    }

    fn root_entry(&self) -> SimEntry {
        SimEntry {
            inode: 0,
            parent: 0,
            name: String::new(),
            dir: true,
            data: ghost_bytes(&self.applied),
            version: self.version,
            writer: self.writer,
            mtime: self.mtime,
        }
    }
}

impl Database for SimDb {
    type Op = SimOp;
    type Entry = SimEntry;
    type Error = SimErr;
    type Outcome = u64;

    fn apply(&mut self, op: &SimOp, writer: NodeId, time: u32) -> Result<u64, ApplyError<SimErr>> {
        self.apply_op(op, writer, time)
            .map_err(ApplyError::Refused)?;
        Ok(op.id())
    }

    fn index(&self) -> DbIndex {
        let mut entries = vec![(0, self.root_entry().digest())];
        entries.extend(self.entries.values().map(|e| (e.inode, e.digest())));
        DbIndex {
            term: self.term,
            version: self.version,
            mtime: self.mtime,
            writer: 0,
            entries,
        }
    }

    fn promised_term(&self) -> Term {
        self.promised
    }

    fn set_promised_term(&mut self, term: Term) -> Result<(), String> {
        if term <= self.promised {
            return Err(format!("promise {term} not above {}", self.promised));
        }
        self.promised = term;
        Ok(())
    }

    fn set_term(&mut self, term: Term) -> Result<(), String> {
        if term <= self.term {
            return Err(format!("term {term} not above {}", self.term));
        }
        self.term = term;
        Ok(())
    }

    fn entries(&self, inodes: &[u64]) -> Vec<SimEntry> {
        inodes
            .iter()
            .filter_map(|i| {
                if *i == 0 {
                    Some(self.root_entry())
                } else {
                    self.entries.get(i).cloned()
                }
            })
            .collect()
    }

    fn install_update(&mut self, leader: &DbIndex, entries: Vec<SimEntry>) -> Result<(), String> {
        let got: BTreeMap<u64, SimEntry> = entries.into_iter().map(|e| (e.inode, e)).collect();
        let mine = self.index();
        let mine: BTreeMap<u64, Digest> = mine.entries.into_iter().collect();
        if leader.term < self.term {
            return Err(format!(
                "leader term {} below ours {}",
                leader.term, self.term
            ));
        }
        let mut new = SimDb {
            // Installed with the tree, in the same step: see the trait's contract.
            term: leader.term,
            promised: self.promised,
            version: leader.version,
            mtime: leader.mtime,
            writer: 0,
            entries: BTreeMap::new(),
            applied: Vec::new(),
        };
        for (ino, d) in &leader.entries {
            let e = match got.get(ino) {
                Some(e) => e.clone(),
                None if mine.get(ino) == Some(d) => {
                    if *ino == 0 {
                        self.root_entry()
                    } else {
                        self.entries[ino].clone()
                    }
                }
                None => return Err(format!("no update for inode {ino}")),
            };
            if *ino == 0 {
                new.applied = ghost_ids(&e.data);
                new.writer = e.writer;
            } else {
                new.entries.insert(*ino, e);
            }
        }
        if new.index() != *leader {
            return Err("new index does not match the leader's".into());
        }
        *self = new;
        Ok(())
    }

    fn core_error(kind: CoreError) -> SimErr {
        match kind {
            CoreError::NoQuorum => SimErr::Access,
            CoreError::Interrupted => SimErr::Again,
            CoreError::Failed | CoreError::Unconfirmed => SimErr::Io,
            CoreError::Overloaded => SimErr::Again,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkdir(id: u64, p: &str) -> SimOp {
        SimOp::Mkdir { id, path: p.into() }
    }

    #[test]
    fn lock_rules() {
        let mut db = SimDb::genesis();
        assert_eq!(db.apply_op(&mkdir(1, "priv/lock/x"), 1, 1000), Ok(()));
        assert_eq!(
            db.apply_op(&mkdir(2, "priv/lock/x"), 2, 1120),
            Err(SimErr::Exist)
        );
        assert_eq!(db.apply_op(&mkdir(3, "priv/lock/x"), 2, 1121), Ok(()));
        assert_eq!(db.locks(), vec![("x".to_string(), 1121)]);
        // Plain directories never expire.
        assert_eq!(db.apply_op(&mkdir(4, "a/d"), 1, 0), Ok(()));
        assert_eq!(db.apply_op(&mkdir(5, "a/d"), 1, 9999), Err(SimErr::Exist));
        assert_eq!(db.applied(), &[1, 3, 4]);
        // A release requested before the takeover does not free the new holder's lock.
        let rm = |id, p: &str| SimOp::Delete { id, path: p.into() };
        assert_eq!(
            db.apply_op(&rm(6, "priv/lock/x"), 1, 1100),
            Err(SimErr::Busy)
        );
        assert_eq!(db.apply_op(&rm(7, "priv/lock/x"), 2, 1130), Ok(()));
    }

    #[test]
    fn errors_leave_tree_unchanged() {
        let mut db = SimDb::genesis();
        let before = db.clone();
        let w = |p: &str| SimOp::Write {
            id: 9,
            path: p.into(),
            data: b"x".to_vec(),
        };
        assert_eq!(db.apply_op(&w("a/nofile"), 1, 5), Err(SimErr::NoEnt));
        assert_eq!(db.apply_op(&w("a"), 1, 5), Err(SimErr::IsDir));
        assert_eq!(db.apply_op(&mkdir(9, "zz/y"), 1, 5), Err(SimErr::NoEnt));
        assert_eq!(
            db.apply_op(
                &SimOp::Delete {
                    id: 9,
                    path: "priv".into()
                },
                1,
                5
            ),
            Err(SimErr::NotEmpty)
        );
        assert_eq!(db, before);
    }

    #[test]
    fn install_reaches_leader_index() {
        let mut leader = SimDb::genesis();
        let mut other = SimDb::genesis();
        leader
            .apply_op(
                &SimOp::Create {
                    id: 1,
                    path: "a/f".into(),
                },
                1,
                10,
            )
            .unwrap();
        leader
            .apply_op(
                &SimOp::Write {
                    id: 2,
                    path: "a/f".into(),
                    data: b"hi".to_vec(),
                },
                1,
                11,
            )
            .unwrap();
        other.apply_op(&mkdir(3, "b/only-here"), 2, 12).unwrap();
        let li = leader.index();
        let need = crate::core::updates_needed(&li, [&other.index()]);
        let entries = leader.entries(&need);
        // Dropping one needed entry must fail and leave the database alone.
        let before = other.clone();
        assert!(other.install_update(&li, entries[1..].to_vec()).is_err());
        assert_eq!(other, before);
        other.install_update(&li, entries).unwrap();
        assert_eq!(other.index(), li);
        assert_eq!(other.read("a/f"), Some(&b"hi"[..]));
        assert_eq!(other.applied(), &[1, 2]);
    }
}
