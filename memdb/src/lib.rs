//! The "memdb": the whole /etc/pve tree in memory, backed by a [`Store`].
//!
//! No I/O and no clock: local changes and replicated operations delivered by the
//! cluster both go through [`MemDb::apply`], which is deterministic given the operation
//! and its [`OpCtx`]. Every operation is planned against the current state, persisted as
//! one transaction, and only then installed in memory, so a failed commit leaves both
//! the database and the tree unchanged. The stores themselves (SQLite, the intent log)
//! are the `storage` crate's; [`replica`] is the tree as cluster-sync's `Database`.
#![warn(missing_docs)]

pub mod codec;
pub mod dcdb;
pub mod entry;
pub mod index;
pub mod locks;
pub mod op;
pub mod paths;
mod pmxcfs;
pub mod repair;
pub mod replica;
pub mod row_codec;
pub mod store;
mod vmindex;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cluster_sync::core::ApplyError;
use nix::errno::Errno;

pub use entry::DT_REG;
pub use entry::{Entry, Inode, Kind, RootVersion, Row, ROOT_INODE};
pub use op::{Applied, Change, LockEvent, Op, OpCtx};
pub use store::{Backlog, NullStore, Store, StoreError, Txn};
pub use vmindex::VmInfo;

use crate::locks::{MkdirVerdict, MtimeVerdict};
use paths::{check_name, lock_name, split};
use vmindex::VmIndex;

/// Size limits of the tree (pmxcfs's values by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest file in bytes (EFBIG beyond).
    pub max_file_size: u64,
    /// Total bytes of all files (ENOSPC beyond).
    pub max_fs_size: u64,
    /// Number of entries including the root (ENOSPC beyond).
    pub max_inodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_size: 1024 * 1024,
            max_fs_size: 128 * 1024 * 1024,
            max_inodes: 256 * 1024,
        }
    }
}

/// Whose rules [`MemDb::apply_checked`] follows.
///
/// pmxfs's own protocol keeps its own rules (lock takeover and release checks, whole
/// subtrees moved, stricter names and limits); a pmxfs node in a cluster of pmxcfs
/// daemons must apply every delivered operation exactly as pmxcfs 9.1.6's `memdb.c`
/// does, or the trees part.
/// Where [`Dialect::Pmxcfs`] differs from [`Dialect::Pmxfs`] (errnos are listed in the
/// order pmxcfs checks them; every "refused" changes nothing):
///
/// - Paths: an existing entry is found skipping empty components (`a//b`, `/a`; `""`,
///   `.` and `/` are the root); the parent and new name are glib's dirname/basename of
///   the path with trailing slashes stripped. Pmxfs refuses empty components.
/// - A path through a file: ENOTDIR if it is the direct parent of the name Create,
///   Mkdir, Write, Mtime or a rename's target works on, else ENOENT (Pmxfs: ENOTDIR).
/// - No name length limit (Pmxfs: ENAMETOOLONG beyond 255 bytes; pmxcfs's FUSE passes
///   up to 1024).
/// - No inode-count and no total-size limit (Pmxfs: ENOSPC per [`Limits`]); the only
///   limit is EFBIG for a write ending beyond 1 MiB, pmxcfs's constant, whatever
///   [`Limits::max_file_size`] says.
/// - Node names in guest config paths may be of any length (Pmxfs: at most 63).
/// - Create: ENOENT/ENOTDIR (parent), EACCES (`.`/`..`), EEXIST (VMID
///   registered for another node or type), ENOTDIR (a directory has that name; Pmxfs:
///   EEXIST), EEXIST (a file has it).
/// - Write: EFBIG, then as Create up to the VMID, then ENOTDIR on a directory (Pmxfs:
///   EISDIR) and ENOENT when missing; the root (`""`) is EACCES (Pmxfs: EISDIR).
/// - Create and Write of a guest config (re)register its VMID for that node and type,
///   replacing whatever it had (`vmlist_register_vm`).
/// - Mkdir of an existing lock directory: EEXIST, whatever its age (Pmxfs takes an
///   expired lock over with a new inode).
/// - Delete: ENOENT, EACCES (root), ENOTEMPTY; a lock directory is removed whatever the
///   op's time (Pmxfs: EBUSY for a release stamped before the lock's mtime).
/// - Delete of a guest config path (even a directory of that name) drops its VMID from
///   the guest list whoever it is registered to (Pmxfs: only if registered there).
/// - Rename: ENOENT (source), EACCES (root), EEXIST (target VMID registered elsewhere,
///   files only, the source's own VMID exempt), EACCES (a directory anywhere below
///   `priv/lock/`), EACCES (target is the root), ENOTEMPTY (target a non-empty
///   directory), ENOENT/ENOTDIR (target's parent).
/// - Rename into `priv/lock/` is allowed (a directory moved there is reported as an
///   acquired lock), and of a directory two levels below it refused (Pmxfs refuses any
///   rename to a lock path and of exactly `priv/lock/<n>`).
/// - Rename replaces an existing target of either kind: a file may replace an empty
///   directory and a directory a file (Pmxfs: EISDIR/ENOTDIR).
/// - Rename of a non-empty directory: ENOTEMPTY (Pmxfs moves the subtree); if a target
///   existed, pmxcfs has already unlinked it: the target is removed, the version stays,
///   and `apply_checked` still returns `Refused(ENOTEMPTY)` (the one refusal that
///   changes the tree; pmxcfs's database keeps the target, its memory does not).
/// - Rename of a guest config file forgets the source VMID and registers the target's.
/// - Rename onto itself: EIO, nothing changes (pmxcfs frees the entry and enters error
///   mode; Pmxfs succeeds, bumping the version); the kernel never sends it.
/// - Rename into its own subtree: EINVAL in both (pmxcfs detaches a cycle; the kernel
///   never sends it); a target named `.` or `..`: EACCES in both (pmxcfs creates it).
/// - Mtime: ENOENT/ENOTDIR (parent), EACCES (`.`, `..`, the root; Pmxfs bumps the
///   version for the root), ENOENT (missing).
/// - Mtime of a lock directory (direct child of `priv/lock`): EACCES if the new mtime
///   is older than the lock's or the writer is not the lock's; mtime 0 is thus refused
///   (Pmxfs: mtime 0 removes an expired lock and refuses a held one).
/// - Mtime sets the root's mtime to the new mtime (Pmxfs: the op's time).
/// - After a sync install and [`MemDb::set_dialect`], the guest list counts regular
///   files only; a duplicate VMID keeps the first in name order (pmxcfs refuses to load
///   such a tree, or enters error mode after the sync).
///
/// Not reproduced in either dialect: pmxcfs records a zero-length write past the end
/// of an empty file (`truncate -s N` of an empty file) as size N without data, hashing
/// the size but no bytes (a read of it crashes pmxcfs, a restart reloads it as size 0);
/// memdb cannot hold a size without content and stores N zero bytes.
///
/// [`Op::UnlockRequest`] and [`Op::Unlock`] mean the same in both dialects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    /// pmxfs's own protocol.
    #[default]
    Pmxfs,
    /// pmxcfs 9.1.6's `memdb.c`, for a member of a pmxcfs cluster.
    Pmxcfs,
}

/// A database whose rows do not form a valid tree.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Rows that pmxcfs would also refuse ("DB load failed").
    #[error("invalid tree in database: {0}")]
    Invalid(String),
}

/// The in-memory tree plus its persistence.
pub struct MemDb {
    entries: HashMap<Inode, Entry>,
    root: RootVersion,
    bytes: u64,
    limits: Limits,
    lock_timeout: u32,
    vms: VmIndex,
    term: u64,
    promised_term: u64,
    /// The term at which the cluster switched from pmxcfs's protocol, if it did.
    switched_at: Option<u64>,
    dialect: Dialect,
    // A Mutex only to make MemDb Sync (SQLite connections are Send, not Sync); all
    // access is through &mut self, so it is never contended.
    store: parking_lot::Mutex<Box<dyn Store>>,
}

impl std::fmt::Debug for MemDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemDb")
            .field("entries", &self.entries.len())
            .field("root", &self.root)
            .field("bytes", &self.bytes)
            .finish()
    }
}

fn root_entry(root: RootVersion) -> Entry {
    Entry {
        row: Row {
            inode: ROOT_INODE,
            parent: ROOT_INODE,
            version: root.version,
            writer: root.writer,
            mtime: root.mtime,
            kind: Kind::Dir,
            name: String::new(),
            data: Arc::new(Vec::new()),
        },
        children: BTreeMap::new(),
    }
}

/// Build the in-memory tree from rows, refusing what pmxcfs refuses: empty names,
/// duplicate names in a directory, parents that are missing or not directories, and
/// entries not reachable from the root.
fn build_tree(
    rows: Vec<Row>,
    root: RootVersion,
) -> Result<(HashMap<Inode, Entry>, u64), LoadError> {
    let mut entries: HashMap<Inode, Entry> = HashMap::with_capacity(rows.len() + 1);
    entries.insert(ROOT_INODE, root_entry(root));
    let mut bytes = 0u64;
    for row in rows {
        if row.name.is_empty() {
            return Err(LoadError::Invalid(format!(
                "inode {} has an empty name",
                row.inode
            )));
        }
        if let Err(e) = check_name(&row.name) {
            if e != Errno::ENAMETOOLONG {
                return Err(LoadError::Invalid(format!(
                    "inode {} has an invalid name '{}'",
                    row.inode, row.name
                )));
            }
        }
        bytes += row.data.len() as u64;
        let ino = row.inode;
        entries.insert(
            ino,
            Entry {
                row,
                children: BTreeMap::new(),
            },
        );
    }
    let links: Vec<(Inode, Inode, String)> = entries
        .values()
        .filter(|e| e.row.inode != ROOT_INODE)
        .map(|e| (e.row.parent, e.row.inode, e.row.name.clone()))
        .collect();
    for (parent, ino, name) in links {
        let p = entries.get_mut(&parent).ok_or_else(|| {
            LoadError::Invalid(format!(
                "missing directory inode {parent} (parent of {ino})"
            ))
        })?;
        if !p.is_dir() {
            return Err(LoadError::Invalid(format!(
                "parent {parent} of inode {ino} is not a directory"
            )));
        }
        if p.children.insert(name.clone(), ino).is_some() {
            return Err(LoadError::Invalid(format!(
                "found entry with duplicate name '{name}' in directory {parent}"
            )));
        }
    }
    // Every entry must hang off the root (no cycles, no detached subtrees).
    let mut reached = 0usize;
    let mut stack = vec![ROOT_INODE];
    while let Some(i) = stack.pop() {
        reached += 1;
        stack.extend(entries[&i].children.values().copied());
    }
    if reached != entries.len() {
        return Err(LoadError::Invalid(format!(
            "{} entries are not reachable from the root",
            entries.len() - reached
        )));
    }
    Ok((entries, bytes))
}

impl MemDb {
    /// Build the tree from loaded rows, refusing what pmxcfs refuses: empty names,
    /// duplicate names in a directory, parents that are missing or not directories, and
    /// entries not reachable from the root.
    pub fn from_rows(
        rows: Vec<Row>,
        root: RootVersion,
        store: Box<dyn Store>,
        limits: Limits,
    ) -> Result<MemDb, LoadError> {
        let (entries, bytes) = build_tree(rows, root)?;
        let mut db = MemDb {
            entries,
            root,
            bytes,
            limits,
            lock_timeout: locks::DEFAULT_LOCK_TIMEOUT,
            vms: VmIndex::default(),
            term: 0,
            promised_term: 0,
            switched_at: None,
            dialect: Dialect::Pmxfs,
            store: parking_lot::Mutex::new(store),
        };
        db.vms = VmIndex::rebuild(&db);
        Ok(db)
    }

    /// Follow `dialect`'s rules from now on (the guest list is rebuilt by them).
    pub fn set_dialect(&mut self, dialect: Dialect) {
        self.dialect = dialect;
        self.vms = self.rebuild_vms();
    }

    /// Whose rules [`MemDb::apply_checked`] follows.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    fn rebuild_vms(&self) -> VmIndex {
        match self.dialect {
            Dialect::Pmxfs => VmIndex::rebuild(self),
            Dialect::Pmxcfs => VmIndex::rebuild_pmxcfs(self),
        }
    }

    /// pmxcfs's `memdb_tree_entry_csum` of the entry at `path` (found as pmxcfs finds
    /// it): what UNLOCK_REQUEST and UNLOCK carry for a lock directory.
    pub fn entry_csum(&self, path: &str) -> Option<[u8; 32]> {
        let e = self.lookup_c(path).0?;
        Some(dcdb_wire::csum::entry_csum(&dcdb::record_of(&e.row)))
    }

    /// pmxcfs's `memdb_compute_checksum`: SHA-256 over every entry, root included, in
    /// inode order (what a VERIFY carries).
    pub fn pmxcfs_checksum(&self) -> [u8; 32] {
        use sha2::{Digest as _, Sha256};
        let mut rows: Vec<&Row> = self.entries.values().map(|e| &e.row).collect();
        rows.sort_unstable_by_key(|r| r.inode);
        let mut h = Sha256::new();
        for r in rows {
            index::feed(&mut h, r, true);
        }
        h.finalize().into()
    }

    /// Restore the replication numbers loaded with the tree.
    pub fn with_terms(mut self, term: u64, promised_term: u64) -> MemDb {
        self.term = term;
        self.promised_term = promised_term;
        self
    }

    /// Restore the protocol switch loaded with the tree ([`store::SWITCHED_AT`]:
    /// 0 for never, else one above the switch's term).
    pub fn with_switch(mut self, switched_at: u64) -> MemDb {
        self.switched_at = switched_at.checked_sub(1);
        self
    }

    /// The term at which this node's cluster switched from pmxcfs's protocol to
    /// pmxfs's own, if it did: a node that switched never speaks pmxcfs's again.
    pub fn switched_at(&self) -> Option<u64> {
        self.switched_at
    }

    /// Durably record the switch from pmxcfs's protocol at `term`.
    pub fn set_switched(&mut self, term: u64) -> Result<(), String> {
        self.store
            .get_mut()
            .set_meta(store::SWITCHED_AT, term.saturating_add(1))
            .map_err(|e| e.to_string())?;
        self.switched_at = Some(term);
        Ok(())
    }

    /// Replication term of the tree (see cluster-sync's `Database`).
    pub fn term(&self) -> u64 {
        self.term
    }

    /// Highest term this node promised to join.
    pub fn promised_term(&self) -> u64 {
        self.promised_term
    }

    /// Durably relabel the tree with `term`.
    pub fn set_term(&mut self, term: u64) -> Result<(), String> {
        self.store
            .get_mut()
            .set_meta("term", term)
            .map_err(|e| e.to_string())?;
        self.term = term;
        Ok(())
    }

    /// Durably record the promise to join `term`.
    pub fn set_promised_term(&mut self, term: u64) -> Result<(), String> {
        self.store
            .get_mut()
            .set_meta("promised_term", term)
            .map_err(|e| e.to_string())?;
        self.promised_term = term;
        Ok(())
    }

    /// Rows for these inodes, for a cluster sync; inode 0 is the root's version record.
    pub fn rows_for(&self, inodes: &[u64]) -> Vec<Row> {
        inodes
            .iter()
            .filter_map(|i| self.entries.get(&Inode(*i)).map(|e| e.row.clone()))
            .collect()
    }

    /// Install a cluster leader's tree: keep our entries whose inode the leader also has
    /// and did not send, take the `updates` it sent (the root's row, inode 0, carries the
    /// version record), check that the result's index equals `leader` byte for byte, then
    /// persist it in one transaction. On any failure nothing changes.
    pub fn install_sync(
        &mut self,
        leader: &[index::IndexEntry],
        updates: Vec<Row>,
        term: u64,
    ) -> Result<(), String> {
        let wanted: std::collections::HashSet<Inode> =
            leader.iter().map(|(i, _)| Inode(*i)).collect();
        let mut root = self.root;
        let mut by_inode: HashMap<Inode, Row> = HashMap::new();
        for r in updates {
            if r.inode == ROOT_INODE {
                root = RootVersion {
                    version: r.version,
                    writer: r.writer,
                    mtime: r.mtime,
                };
            } else {
                by_inode.insert(r.inode, r);
            }
        }
        let mut rows: Vec<Row> = self
            .entries
            .values()
            .filter(|e| e.row.inode != ROOT_INODE)
            .filter(|e| wanted.contains(&e.row.inode) && !by_inode.contains_key(&e.row.inode))
            .map(|e| e.row.clone())
            .collect();
        rows.extend(by_inode.into_values());
        let (entries, bytes) = build_tree(rows.clone(), root).map_err(|e| e.to_string())?;
        let mut got: Vec<index::IndexEntry> = entries
            .values()
            .map(|e| (e.row.inode.0, index::entry_digest(e)))
            .collect();
        got.sort_unstable_by_key(|(i, _)| *i);
        if got != leader {
            return Err(format!(
                "new index does not match the leader's ({} entries here, {} there)",
                got.len(),
                leader.len()
            ));
        }
        rows.sort_by_key(|r| r.inode);
        self.store
            .get_mut()
            .replace_all(&rows, root, term)
            .map_err(|e| format!("persisting the synced tree failed: {e}"))?;
        self.term = term;
        self.entries = entries;
        self.bytes = bytes;
        self.root = root;
        self.vms = self.rebuild_vms();
        Ok(())
    }

    /// An empty tree at version 1 over `store`.
    pub fn empty(store: Box<dyn Store>, limits: Limits) -> MemDb {
        let root = RootVersion {
            version: 1,
            writer: 0,
            mtime: 0,
        };
        MemDb::from_rows(Vec::new(), root, store, limits).expect("an empty tree is valid")
    }

    /// Set the lock expiry (seconds since the lock's mtime).
    pub fn set_lock_timeout(&mut self, secs: u32) {
        self.lock_timeout = secs;
    }

    /// The lock expiry in seconds.
    pub fn lock_timeout(&self) -> u32 {
        self.lock_timeout
    }

    /// Every entry, in no particular order.
    pub fn entries_iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Entry by inode.
    pub fn get(&self, inode: Inode) -> Option<&Entry> {
        self.entries.get(&inode)
    }

    /// Child `name` of directory `parent`.
    pub fn lookup(&self, parent: Inode, name: &str) -> Option<&Entry> {
        let ino = *self.entries.get(&parent)?.children.get(name)?;
        self.entries.get(&ino)
    }

    /// Entry at `path` (relative, `""` is the root).
    pub fn resolve(&self, path: &str) -> Result<&Entry, Errno> {
        let mut cur = &self.entries[&ROOT_INODE];
        if path.is_empty() {
            return Ok(cur);
        }
        for c in path.split('/') {
            if !cur.is_dir() {
                return Err(Errno::ENOTDIR);
            }
            let ino = cur.children.get(c).ok_or(Errno::ENOENT)?;
            cur = &self.entries[ino];
        }
        Ok(cur)
    }

    /// Path of an inode (`""` for the root).
    pub fn path_of(&self, inode: Inode) -> Option<String> {
        let mut parts = Vec::new();
        let mut cur = self.entries.get(&inode)?;
        while cur.row.inode != ROOT_INODE {
            parts.push(cur.row.name.as_str());
            cur = self.entries.get(&cur.row.parent)?;
        }
        parts.reverse();
        Some(parts.join("/"))
    }

    /// Global version record.
    pub fn root_version(&self) -> RootVersion {
        self.root
    }

    /// Number of entries including the root.
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// Total bytes of file content.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The configured limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Registered guests (`nodes/<n>/{qemu-server,lxc,openvz}/<id>.conf`).
    pub fn vms(&self) -> &BTreeMap<u32, VmInfo> {
        self.vms.all()
    }

    /// Counter bumped whenever the guest list changes.
    pub fn vmlist_version(&self) -> u32 {
        self.vms.version()
    }

    /// All rows (for a full dump or a cluster sync), sorted by inode.
    pub fn rows(&self) -> Vec<Row> {
        let mut v: Vec<Row> = self
            .entries
            .values()
            .filter(|e| e.row.inode != ROOT_INODE)
            .map(|e| e.row.clone())
            .collect();
        v.sort_by_key(|r| r.inode);
        v
    }

    /// Changes accepted but not yet in the database file.
    pub fn backlog(&self) -> Backlog {
        self.store.lock().backlog()
    }

    /// Fold the store's write-ahead log into the main file (clean shutdown).
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.store.get_mut().checkpoint()
    }

    /// Apply one operation: validate, persist as one transaction, then install. A
    /// store that fails refuses it with EIO (nothing changed); a replica that must tell
    /// that apart from an invalid operation uses [`MemDb::apply_checked`].
    pub fn apply(&mut self, op: &Op, ctx: OpCtx) -> Result<Applied, Errno> {
        self.apply_checked(op, ctx).map_err(|e| match e {
            ApplyError::Refused(e) => e,
            ApplyError::Storage(_) => Errno::EIO,
        })
    }

    /// [`MemDb::apply`], telling an operation the tree refuses (every replica of the
    /// tree refuses it alike) from a store that could not persist it (only this one).
    /// A refusal changes nothing, except the one [`Dialect::Pmxcfs`] rename that pmxcfs
    /// fails after changing the tree.
    pub fn apply_checked(&mut self, op: &Op, ctx: OpCtx) -> Result<Applied, ApplyError<Errno>> {
        let unchanged = Applied {
            version: self.root.version,
            ..Applied::default()
        };
        match op {
            Op::UnlockRequest { path, csum } => {
                return Ok(Applied {
                    unlock_request: Some((path.clone(), *csum)),
                    ..unchanged
                })
            }
            // dcdb_deliver: a lock directory whose csum is what the lowest node judged
            // expired is deleted, as a DELETE from the sender at the message's time;
            // anything else is ignored (pmxcfs answers 0).
            Op::Unlock { path, csum } => {
                let judged = pmxcfs::path_is_lockdir(path)
                    && self.lookup_c(path).0.is_some_and(|e| e.is_dir())
                    && self.entry_csum(path) == Some(*csum);
                if !judged {
                    return Ok(unchanged);
                }
                return self.apply_checked(&Op::Delete { path: path.clone() }, ctx);
            }
            _ => {}
        }
        if self.dialect == Dialect::Pmxcfs {
            let plan = self.plan_pmxcfs(op, ctx).map_err(ApplyError::Refused)?;
            self.commit(op, &plan.txn)?;
            let mut applied = plan.applied;
            applied.version = self.root.version;
            applied.vmlist_changed = self.vms.apply_pmxcfs(&plan.vms);
            return match plan.refuse {
                Some(e) => Err(ApplyError::Refused(e)),
                None => Ok(applied),
            };
        }
        let (txn, mut applied) = self.plan(op, ctx).map_err(ApplyError::Refused)?;
        let moved_dir = match op {
            Op::Rename { from: p, .. } | Op::Delete { path: p } => {
                self.resolve(p).is_ok_and(|e| e.is_dir())
            }
            _ => false,
        };
        self.commit(op, &txn)?;
        applied.version = self.root.version;
        let mut vms = std::mem::take(&mut self.vms);
        applied.vmlist_changed = vms.update_after(&applied, self, moved_dir);
        self.vms = vms;
        Ok(applied)
    }

    /// Persist `txn`, then install it.
    fn commit(&mut self, op: &Op, txn: &Txn) -> Result<(), ApplyError<Errno>> {
        if let Err(e) = self.store.get_mut().commit(txn) {
            tracing::error!(?op, "database commit failed, operation refused: {e}");
            return Err(ApplyError::Storage(e.to_string()));
        }
        self.install(txn);
        Ok(())
    }

    /// Make `path` a file holding exactly `data`, creating it if needed (two changes
    /// then, as a kernel's `creat` and `write` are).
    pub fn put(&mut self, path: &str, data: &[u8], ctx: OpCtx) -> Result<(), Errno> {
        if self.resolve(path).is_err() {
            self.apply(&Op::Create { path: path.into() }, ctx)?;
        }
        self.apply(
            &Op::Write {
                path: path.into(),
                offset: 0,
                data: data.to_vec(),
                truncate: true,
            },
            ctx,
        )
        .map(|_| ())
    }

    fn next_root(&self, ctx: OpCtx) -> RootVersion {
        RootVersion {
            version: self.root.version + 1,
            writer: ctx.writer,
            mtime: ctx.now,
        }
    }

    /// The parent directory entry of `path` and the checked last component.
    fn parent_of<'a>(&self, path: &'a str) -> Result<(&Entry, &'a str), Errno> {
        if path.is_empty() {
            return Err(Errno::EACCES);
        }
        let (dir, base) = split(path);
        check_name(base)?;
        let parent = self.resolve(dir)?;
        if !parent.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        Ok((parent, base))
    }

    fn check_inode_room(&self) -> Result<(), Errno> {
        if self.entries.len() >= self.limits.max_inodes {
            Err(Errno::ENOSPC)
        } else {
            Ok(())
        }
    }

    fn new_row(&self, parent: Inode, name: &str, kind: Kind, root: RootVersion) -> Row {
        Row {
            inode: Inode(root.version),
            parent,
            version: root.version,
            writer: root.writer,
            mtime: root.mtime,
            kind,
            name: name.to_string(),
            data: Arc::new(Vec::new()),
        }
    }

    fn plan(&self, op: &Op, ctx: OpCtx) -> Result<(Txn, Applied), Errno> {
        let root = self.next_root(ctx);
        let mut txn = Txn {
            root,
            ..Txn::default()
        };
        let mut ap = Applied::default();
        match op {
            Op::Create { path } => {
                let (parent, base) = self.parent_of(path)?;
                if parent.children.contains_key(base) {
                    return Err(Errno::EEXIST);
                }
                self.check_inode_room()?;
                self.vms.check_free(path, None)?;
                txn.upserts
                    .push(self.new_row(parent.row.inode, base, Kind::File, root));
                ap.changes.push(Change::Name {
                    parent: parent.row.inode,
                    name: base.to_string(),
                });
                ap.paths.push(path.clone());
            }
            Op::Mkdir { path } => {
                let (parent, base) = self.parent_of(path)?;
                let lock = lock_name(path).map(str::to_string);
                if let Some(old) = self.lookup(parent.row.inode, base) {
                    let expired = lock.is_some()
                        && old.is_dir()
                        && locks::on_mkdir_existing(old.row.mtime, ctx.now, self.lock_timeout)
                            == MkdirVerdict::TakeOver;
                    if !expired {
                        return Err(Errno::EEXIST);
                    }
                    // Take over an expired lock: a new inode, so the old holder's
                    // refreshes and its csum-based state can never apply to ours.
                    txn.deletes.push(old.row.inode);
                    ap.changes.push(Change::Attr(old.row.inode));
                    ap.removed
                        .push((old.row.inode, parent.row.inode, base.to_string()));
                } else {
                    self.check_inode_room()?;
                }
                txn.upserts
                    .push(self.new_row(parent.row.inode, base, Kind::Dir, root));
                ap.changes.push(Change::Name {
                    parent: parent.row.inode,
                    name: base.to_string(),
                });
                ap.paths.push(path.clone());
                ap.lock = lock.map(LockEvent::Acquired);
            }
            Op::Write {
                path,
                offset,
                data,
                truncate,
            } => {
                let end = offset.checked_add(data.len() as u64).ok_or(Errno::EFBIG)?;
                if end > self.limits.max_file_size {
                    return Err(Errno::EFBIG);
                }
                let e = self.resolve(path)?;
                if e.is_dir() {
                    return Err(Errno::EISDIR);
                }
                self.vms.check_free(path, None)?;
                let old = &e.row.data;
                let end = end as usize;
                let new_len = if *truncate { end } else { end.max(old.len()) };
                if self.bytes - old.len() as u64 + new_len as u64 > self.limits.max_fs_size {
                    return Err(Errno::ENOSPC);
                }
                let mut buf = Vec::with_capacity(new_len);
                buf.extend_from_slice(&old[..old.len().min(new_len)]);
                buf.resize(new_len, 0);
                let off = *offset as usize;
                buf[off..off + data.len()].copy_from_slice(data);
                let mut row = e.row.clone();
                row.data = Arc::new(buf);
                self.touch(&mut row, root);
                ap.changes.push(Change::Attr(row.inode));
                ap.paths.push(path.clone());
                txn.upserts.push(row);
            }
            Op::Delete { path } => {
                if path.is_empty() {
                    return Err(Errno::EACCES);
                }
                let e = self.resolve(path)?;
                if e.is_dir() && !e.children.is_empty() {
                    return Err(Errno::ENOTEMPTY);
                }
                if e.is_dir()
                    && lock_name(path).is_some()
                    && !locks::may_release(e.row.mtime, ctx.now)
                {
                    return Err(Errno::EBUSY);
                }
                self.remove_c(e, &mut txn, &mut ap);
                ap.paths.push(path.clone());
                if e.is_dir() {
                    ap.lock = lock_name(path).map(|n| LockEvent::Released(n.to_string()));
                }
            }
            Op::Rename { from, to } => self.plan_rename(from, to, root, &mut txn, &mut ap)?,
            // Planned by apply_checked itself: they never reach here.
            Op::UnlockRequest { .. } | Op::Unlock { .. } => return Err(Errno::EINVAL),
            Op::Mtime { path, mtime } => {
                let e = self.resolve(path)?;
                let mut row = e.row.clone();
                let is_lock = e.is_dir() && lock_name(path).is_some();
                if is_lock {
                    match locks::on_set_mtime(
                        row.mtime,
                        row.writer,
                        *mtime,
                        ctx.writer,
                        ctx.now,
                        self.lock_timeout,
                    ) {
                        MtimeVerdict::Refuse => return Err(Errno::EACCES),
                        MtimeVerdict::Remove => {
                            txn.deletes.push(row.inode);
                            ap.removed.push((row.inode, row.parent, row.name.clone()));
                            ap.changes.push(Change::Name {
                                parent: row.parent,
                                name: row.name.clone(),
                            });
                            ap.changes.push(Change::Attr(row.inode));
                            ap.paths.push(path.clone());
                            ap.lock = lock_name(path).map(|n| LockEvent::Released(n.to_string()));
                            return Ok((txn, ap));
                        }
                        MtimeVerdict::Refresh => {}
                    }
                }
                self.touch(&mut row, root);
                row.mtime = *mtime;
                ap.changes.push(Change::Attr(row.inode));
                ap.paths.push(path.clone());
                txn.upserts.push(row);
            }
        }
        Ok((txn, ap))
    }

    fn plan_rename(
        &self,
        from: &str,
        to: &str,
        root: RootVersion,
        txn: &mut Txn,
        ap: &mut Applied,
    ) -> Result<(), Errno> {
        if from.is_empty() || to.is_empty() {
            return Err(Errno::EACCES);
        }
        let src = self.resolve(from)?;
        // Locks are acquired and released only by mkdir/rmdir, never moved in or out.
        if (src.is_dir() && lock_name(from).is_some()) || lock_name(to).is_some() {
            return Err(Errno::EACCES);
        }
        if to.len() > from.len() && to.starts_with(from) && to.as_bytes()[from.len()] == b'/' {
            return Err(Errno::EINVAL);
        }
        let (tparent, tbase) = self.parent_of(to)?;
        let mut row = src.row.clone();
        if let Some(target) = self.lookup(tparent.row.inode, tbase) {
            if target.row.inode == src.row.inode {
                return Ok(());
            }
            match (src.is_dir(), target.is_dir()) {
                (false, true) => return Err(Errno::EISDIR),
                (true, false) => return Err(Errno::ENOTDIR),
                (true, true) if !target.children.is_empty() => return Err(Errno::ENOTEMPTY),
                _ => {}
            }
            txn.deletes.push(target.row.inode);
            ap.changes.push(Change::Attr(target.row.inode));
            ap.removed
                .push((target.row.inode, tparent.row.inode, tbase.to_string()));
        }
        if !src.is_dir() {
            self.vms.check_free(to, vmindex::vm_of(from))?;
        }
        ap.renamed(&row, tparent.row.inode, tbase, from, to);
        if src.is_dir() {
            // Descendants change path too (pmxcfs only renames empty directories).
            for (sub, _) in self.descendants(src.row.inode) {
                ap.paths.push(format!("{from}/{sub}"));
                ap.paths.push(format!("{to}/{sub}"));
            }
        }
        row.parent = tparent.row.inode;
        row.name = tbase.to_string();
        self.touch(&mut row, root);
        txn.upserts.push(row);
        Ok(())
    }

    /// Relative paths of everything below directory `inode`.
    fn descendants(&self, inode: Inode) -> Vec<(String, Inode)> {
        let mut out = Vec::new();
        let mut stack = vec![(String::new(), inode)];
        while let Some((prefix, ino)) = stack.pop() {
            for (name, child) in &self.entries[&ino].children {
                let p = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}/{name}")
                };
                stack.push((p.clone(), *child));
                out.push((p, *child));
            }
        }
        out
    }

    fn touch(&self, row: &mut Row, root: RootVersion) {
        row.version = root.version;
        row.writer = root.writer;
        row.mtime = root.mtime;
    }

    /// Install a committed transaction in memory.
    fn install(&mut self, txn: &Txn) {
        for ino in &txn.deletes {
            if let Some(e) = self.entries.remove(ino) {
                self.bytes -= e.size();
                if let Some(p) = self.entries.get_mut(&e.row.parent) {
                    if p.children.get(&e.row.name) == Some(ino) {
                        p.children.remove(&e.row.name);
                    }
                }
            }
        }
        for row in &txn.upserts {
            let moved_from = match self.entries.get_mut(&row.inode) {
                Some(e) => {
                    self.bytes = self.bytes - e.size() + row.data.len() as u64;
                    let old = (e.row.parent, e.row.name.clone());
                    e.row = row.clone();
                    Some(old)
                }
                None => {
                    self.bytes += row.data.len() as u64;
                    self.entries.insert(
                        row.inode,
                        Entry {
                            row: row.clone(),
                            children: BTreeMap::new(),
                        },
                    );
                    None
                }
            };
            if let Some((op, oname)) = &moved_from {
                if *op == row.parent && *oname == row.name {
                    continue;
                }
                if let Some(p) = self.entries.get_mut(op) {
                    if p.children.get(oname) == Some(&row.inode) {
                        p.children.remove(oname);
                    }
                }
            }
            if let Some(p) = self.entries.get_mut(&row.parent) {
                p.children.insert(row.name.clone(), row.inode);
            }
        }
        self.root = txn.root;
        let r = self.entries.get_mut(&ROOT_INODE).expect("root exists");
        r.row.version = txn.root.version;
        r.row.writer = txn.root.writer;
        r.row.mtime = txn.root.mtime;
    }

    /// Is `inode` a lock directory whose lock has expired at `now`? Never in pmxcfs's
    /// dialect: there a lock stays until an UNLOCK or an rmdir removes it (its expiry
    /// is the lowest node's judgement, outside the tree).
    pub fn is_expired_lock(&self, inode: Inode, now: u32) -> bool {
        if self.dialect() == Dialect::Pmxcfs {
            return false;
        }
        let Some(e) = self.entries.get(&inode) else {
            return false;
        };
        e.is_dir()
            && self.lock_dir_inode() == Some(e.row.parent)
            && locks::lock_state(e.row.mtime, now, self.lock_timeout) == locks::LockState::Expired
    }

    /// Names of the lock directories currently held at `now` (in pmxcfs's dialect,
    /// every lock directory).
    pub fn held_locks(&self, now: u32) -> Vec<String> {
        let Ok(dir) = self.resolve(paths::LOCK_DIR) else {
            return Vec::new();
        };
        dir.children
            .iter()
            .filter_map(|(name, ino)| {
                let e = &self.entries[ino];
                (e.is_dir()
                    && (self.dialect() == Dialect::Pmxcfs
                        || locks::lock_state(e.row.mtime, now, self.lock_timeout)
                            == locks::LockState::Held))
                    .then(|| name.clone())
            })
            .collect()
    }

    /// Inode of `priv/lock`, if it exists.
    pub fn lock_dir_inode(&self) -> Option<Inode> {
        self.resolve(paths::LOCK_DIR).ok().map(|e| e.row.inode)
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_pmxcfs;
