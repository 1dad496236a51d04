//! The FUSE adapter: translates kernel requests into memdb reads and [`Op`]s, and
//! pushes the coherence policy's invalidations to the kernel.

pub mod adapter;
mod attrs;
mod handles;
pub mod ops;
pub mod reply;

use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fuser::FileAttr;
use nix::errno::Errno;
use parking_lot::{Mutex, RwLock};

use crate::clock::now_secs;
use crate::coherence::{self, Policy, Ttls};
use crate::notify::Invalidator;
use crate::status::Status;
use crate::vfiles::VIRT_BASE;
use memdb::{Applied, Change, Entry, LockEvent, MemDb, Op, OpCtx, ROOT_INODE};
use pmxfs_client::versions::{self, VersionShmWriter};

pub use handles::Handles;
pub use ops::PmxFs;

/// FUSE inode of a memdb inode (FUSE's root is 1, memdb's is 0).
pub fn fuse_ino(memdb_ino: u64) -> u64 {
    memdb_ino + 1
}

/// memdb inode of a FUSE inode, `None` for virtual entries.
pub fn memdb_ino(fuse: u64) -> Option<u64> {
    (fuse < VIRT_BASE).then(|| fuse - 1)
}

/// Submits local writes to the cluster and waits for their outcome.
pub trait Replicator: Send + Sync {
    /// Multicast `op` and block until this node applied it (or it failed).
    fn submit(&self, op: Op) -> Result<(), Errno>;
}

/// The lock event a successful `op` causes, known without applying it.
pub fn lock_event_of(op: &Op) -> Option<LockEvent> {
    match op {
        Op::Mkdir { path } => {
            memdb::paths::lock_name(path).map(|n| LockEvent::Acquired(n.to_string()))
        }
        Op::Delete { path } => {
            memdb::paths::lock_name(path).map(|n| LockEvent::Released(n.to_string()))
        }
        _ => None,
    }
}

/// Where an applied operation came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Through this node's kernel: the kernel already knows the new state.
    Kernel,
    /// From elsewhere (another node, or the debug hook): the kernel's caches are stale.
    Remote,
}

/// State shared by the FUSE handlers, the control socket and (later) the cluster layer.
pub struct Shared {
    /// The tree.
    pub db: RwLock<MemDb>,
    /// Node status.
    pub status: Arc<Status>,
    /// Timeout policy.
    pub policy: Policy,
    /// Group that owns every entry (www-data).
    pub gid: u32,
    /// Open file handles.
    pub handles: Handles,
    /// Kernel lookup counts per FUSE inode: only inodes the kernel holds need
    /// invalidating.
    known: Mutex<HashMap<u64, u64>>,
    /// Removed memdb inodes the kernel may still reach through a cached name, with the
    /// (parent, name) they had: requests on them are answered by whatever lives at that
    /// path now, as pmxcfs's path-based FUSE layer does.
    ghosts: Mutex<HashMap<u64, (u64, String)>>,
    inval: OnceLock<Invalidator>,
    shm: Option<Arc<VersionShmWriter>>,
    /// Operations applied since start.
    pub ops_applied: AtomicU64,
    replicator: OnceLock<Box<dyn Replicator>>,
    /// LOOKUP requests served (each one is a kernel cache miss).
    pub lookups: AtomicU64,
    /// GETATTR requests served.
    pub getattrs: AtomicU64,
    /// Cluster messages this node multicast.
    pub cluster_sent: AtomicU64,
    /// Cluster messages delivered to this node.
    pub cluster_delivered: AtomicU64,
    /// Own writes a membership change lost that were sent again.
    pub cluster_resent: AtomicU64,
    /// Sync rounds restarted because quorum was known only after this node's State.
    pub cluster_resyncs: AtomicU64,
    /// The transport carrying requests ("io_uring, N queues" or "/dev/fuse").
    pub transport: OnceLock<String>,
    /// Requests served through the io_uring queues.
    pub ring_requests: AtomicU64,
}

impl Shared {
    /// Shared state over `db`.
    pub fn new(
        db: MemDb,
        status: Arc<Status>,
        policy: Policy,
        gid: u32,
        shm: Option<VersionShmWriter>,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            db: RwLock::new(db),
            status,
            policy,
            gid,
            handles: Handles::default(),
            known: Mutex::new(HashMap::new()),
            ghosts: Mutex::new(HashMap::new()),
            inval: OnceLock::new(),
            shm: shm.map(Arc::new),
            ops_applied: AtomicU64::new(0),
            replicator: OnceLock::new(),
            lookups: AtomicU64::new(0),
            getattrs: AtomicU64::new(0),
            cluster_sent: AtomicU64::new(0),
            cluster_delivered: AtomicU64::new(0),
            cluster_resent: AtomicU64::new(0),
            cluster_resyncs: AtomicU64::new(0),
            transport: OnceLock::new(),
            ring_requests: AtomicU64::new(0),
        })
    }

    /// Attach the invalidation threads once the session exists.
    pub fn set_invalidator(&self, inv: Invalidator) {
        let _ = self.inval.set(inv);
    }

    /// The invalidator, if coherence is on and the session is up.
    pub fn invalidator(&self) -> Option<&Invalidator> {
        if self.policy.enabled {
            self.inval.get()
        } else {
            None
        }
    }

    pub(crate) fn remember(&self, fuse: u64) {
        *self.known.lock().entry(fuse).or_insert(0) += 1;
    }

    pub(crate) fn forget(&self, fuse: u64, n: u64) {
        let gone = {
            let mut k = self.known.lock();
            match k.get_mut(&fuse) {
                Some(c) => {
                    *c = c.saturating_sub(n);
                    *c == 0 && k.remove(&fuse).is_some()
                }
                None => false,
            }
        };
        if gone {
            if let Some(m) = memdb_ino(fuse) {
                self.ghosts.lock().remove(&m);
            }
        }
    }

    /// The live memdb inode a kernel inode refers to: itself, or for a removed inode
    /// the entry now at the path it had.
    pub(crate) fn live_ino(&self, db: &MemDb, m: u64) -> Option<u64> {
        if db.get(m).is_some() {
            return Some(m);
        }
        let (parent, name) = self.ghosts.lock().get(&m).cloned()?;
        db.lookup(parent, &name).map(|e| e.row.inode)
    }

    fn is_known(&self, fuse: u64) -> bool {
        // The kernel holds the root from mount on without ever looking it up.
        fuse == fuse_ino(ROOT_INODE) || self.known.lock().contains_key(&fuse)
    }

    /// Attributes and timeouts for a reply about entry `e`. The uncommitted state is read
    /// once, under the caller's db lock: a handle is marked clean only after its commit
    /// is visible in the db, so a clean read here always goes with committed attributes.
    pub(crate) fn attr_reply(&self, db: &MemDb, e: &Entry) -> (FileAttr, Ttls) {
        let pending = self.handles.pending_len(e.row.inode);
        let attr = attrs::of_entry(db, e, self.status.quorate(), self.gid, pending);
        let t = self.policy_ttls(db, e.row.inode);
        // Uncommitted writes get uncacheable attributes (in both modes: pmxcfs commits
        // every write at once, so there the kernel never sees a half-written state).
        match pending {
            Some(_) => (
                attr,
                Ttls {
                    attr: Duration::ZERO,
                    ..t
                },
            ),
            None => (attr, t),
        }
    }

    fn policy_ttls(&self, db: &MemDb, ino: u64) -> Ttls {
        if !self.policy.enabled {
            return self.policy.default;
        }
        let Some(e) = db.get(ino) else {
            return self.policy.default;
        };
        if ino != ROOT_INODE && db.lock_dir_inode() == Some(e.row.parent) {
            return Ttls::ZERO;
        }
        let held = db.held_locks(now_secs());
        if held.is_empty() {
            return self.policy.default;
        }
        match db.path_of(ino) {
            Some(p) => self.policy.ttls(&p, &held),
            None => self.policy.default,
        }
    }

    /// Route local writes through the cluster from now on.
    pub fn set_replicator(&self, r: Box<dyn Replicator>) {
        let _ = self.replicator.set(r);
    }

    /// Apply an operation that arrived through this node's kernel: directly in local
    /// mode, through the cluster's total order otherwise (returning once it has been
    /// delivered and applied here).
    pub fn apply_local(&self, op: &Op) -> Result<Applied, Errno> {
        match self.replicator.get() {
            Some(r) => {
                r.submit(op.clone())?;
                Ok(Applied {
                    lock: lock_event_of(op),
                    ..Applied::default()
                })
            }
            None => self.apply(op, 0, Origin::Kernel),
        }
    }

    /// Apply an operation now (local mode, debug hook), refusing without quorum.
    pub fn apply(&self, op: &Op, writer: u32, origin: Origin) -> Result<Applied, Errno> {
        if !self.status.quorate() {
            return Err(Errno::EACCES);
        }
        self.apply_at(op, writer, now_secs(), origin)
    }

    /// Apply an operation stamped with the writer's `time`, and publish its
    /// consequences: change counters, shared-memory versions and (for remote origins)
    /// kernel invalidations. The cluster core calls this in delivery order.
    pub fn apply_at(
        &self,
        op: &Op,
        writer: u32,
        time: u32,
        origin: Origin,
    ) -> Result<Applied, Errno> {
        let ctx = OpCtx { writer, now: time };
        let applied = self.db.write().apply(op, ctx)?;
        self.ops_applied.fetch_add(1, Ordering::Relaxed);
        if !applied.removed.is_empty() {
            // `known` and `ghosts` are never held together (forget takes them in turn).
            let kept: Vec<_> = applied
                .removed
                .iter()
                .filter(|(ino, _, _)| self.is_known(fuse_ino(*ino)))
                .cloned()
                .collect();
            let mut g = self.ghosts.lock();
            for (ino, parent, name) in kept {
                if g.len() < 65_536 {
                    g.insert(ino, (parent, name));
                }
            }
        }
        for p in &applied.paths {
            self.status.record_change(p);
        }
        match (origin, self.invalidator(), &self.shm) {
            (Origin::Remote, Some(inv), shm) => {
                self.push_invalidations(&applied);
                // Readers of the shared-memory versions (token cache, key cache) must
                // never see a new generation while the kernel still shows the old
                // file: bump only after the invalidations have reached the kernel, and
                // make names revalidate if a tracked path was replaced or removed.
                if let Some(shm) = shm.clone() {
                    let tracked: Vec<String> = applied
                        .paths
                        .iter()
                        .filter(|p| versions::slot_of(p).is_some())
                        .cloned()
                        .collect();
                    if !tracked.is_empty() {
                        if applied
                            .changes
                            .iter()
                            .any(|c| matches!(c, Change::Name { .. }))
                        {
                            inv.epoch();
                        }
                        inv.then(move || tracked.iter().for_each(|p| shm.bump(p)));
                    }
                }
            }
            (_, _, Some(shm)) => applied.paths.iter().for_each(|p| shm.bump(p)),
            (_, _, None) => {}
        }
        Ok(applied)
    }

    /// Everything may have changed (a cluster sync installed another tree): bump every
    /// counter and make the kernel drop everything it cached.
    pub fn after_sync(&self) {
        self.status.record_reload();
        if let Some(inv) = self.invalidator() {
            let known: Vec<u64> = self.known.lock().keys().copied().collect();
            for f in known {
                inv.inode(f);
            }
            inv.epoch();
            if let Some(shm) = self.shm.clone() {
                inv.then(move || shm.bump_all());
            }
        } else if let Some(shm) = &self.shm {
            shm.bump_all();
        }
    }

    /// Queue invalidations for everything `applied` changed behind the kernel's back,
    /// plus, for a lock acquisition, the paths it protects.
    fn push_invalidations(&self, applied: &Applied) {
        let Some(inv) = self.invalidator() else {
            return;
        };
        let lock_dir = self.db.read().lock_dir_inode();
        for c in &applied.changes {
            match c {
                Change::Attr(ino) => {
                    let f = fuse_ino(*ino);
                    if self.is_known(f) {
                        inv.inode(f);
                    }
                }
                // Names in the lock directory are never cached (zero entry timeout),
                // and a lock mkdir may be waiting in there: never take its i_rwsem.
                Change::Name { parent, .. } if Some(*parent) == lock_dir => {}
                Change::Name { parent, name } => {
                    if self.is_known(fuse_ino(*parent)) {
                        inv.entry(fuse_ino(*parent), OsString::from(name));
                    }
                }
            }
        }
        if let Some(LockEvent::Acquired(name)) = &applied.lock {
            for f in self.protected_known(name) {
                inv.inode(f);
            }
            inv.epoch();
        }
    }

    /// Kernel-known FUSE inodes whose paths lock `name` protects.
    pub(crate) fn protected_known(&self, name: &str) -> Vec<u64> {
        let known: Vec<u64> = self.known.lock().keys().copied().collect();
        let db = self.db.read();
        known
            .into_iter()
            .filter(|f| {
                memdb_ino(*f)
                    .and_then(|m| db.path_of(m))
                    .is_some_and(|p| coherence::protects(name, &p))
            })
            .collect()
    }
}
