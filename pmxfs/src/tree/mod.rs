//! The tree service: the one owner of the memdb and of everything that must follow a
//! change of it, beneath every adapter (`fs/` over FUSE, `cluster/` over corosync,
//! `control`, and the IPC server to come). None of those import each other; they meet
//! here.
//!
//! A change comes in through one of two doors:
//! - [`Tree::from_kernel`]: made through this node's kernel. In local mode it is applied
//!   at once; in cluster mode it goes through the cluster's total order first (the
//!   [`Replicator`]) and comes back through the second door.
//! - [`Tree::delivered`] and [`Tree::synced`]: applied in cluster order by the protocol
//!   core (which changes the memdb through `memdb::replica`); the cluster adapter calls
//!   them as it carries out the core's `Applied` and `SyncInstalled` actions.
//!
//! Either way the change is published the same way, in this order: the node status's
//! change counters, kernel invalidations (for changes the kernel did not make), and the
//! shared-memory versions, which move only once the kernel's caches are invalidated so
//! that a reader who sees a new version reads the new content.

pub mod clients;
pub mod clock;
pub mod kernel;
pub mod latency;
pub mod metrics;
pub mod notify;
pub mod status;
pub mod vfiles;

use std::ffi::OsString;
use std::sync::{Arc, OnceLock};

use memdb::replica::Replica;
use memdb::{paths, Applied, Change, LockEvent, MemDb, Op, OpCtx};
use nix::errno::Errno;
use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use pmxfs_client::versions::{self, VersionShmWriter};
use pve_status::clog::Entry;
use pve_status::store::{SetError, StatusStore, Stored};

use crate::coherence;
pub use clock::Clock;
pub use kernel::{FuseIno, KernelRefs};
pub use metrics::Metrics;
use notify::Invalidator;
use status::Status;

/// Submits a change to the cluster and waits for its outcome.
pub trait Replicator: Send + Sync {
    /// Multicast `op` and block until this node applied it (or it failed).
    fn submit(&self, op: Op) -> Result<(), Errno>;
}

/// Tells the other nodes of this node's status (the kvstore group's adapter). Never
/// blocks: an IPC client does not wait for corosync.
pub trait StatusBroadcast: Send + Sync {
    /// A `SET_STATUS` of this node.
    fn set(&self, key: &str, value: &[u8]);
    /// A log entry made on this node.
    fn log(&self, entry: &Entry);
}

/// Writes RRD updates to their files, off the caller's thread. Never blocks.
pub trait RrdSink: Send + Sync {
    /// Write update `data` of RRD key `key` (the part after `rrd/`).
    fn update(&self, key: &str, data: &str);
}

/// Keeps the host's corosync.conf in line with the tree's (cluster mode). Never blocks.
pub trait ConfSink: Send + Sync {
    /// The tree's `corosync.conf` may have changed; `local` if through this node.
    fn changed(&self, local: bool);
}

/// What `.version` shows moved: the status generation, the kvstore generation and the
/// guest list version.
type VersionKey = (u64, u64, u32);

/// Where a published change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Through this node's kernel: the kernel already knows the new state.
    Kernel,
    /// From elsewhere (another node, or the debug hook): the kernel's caches are stale.
    Remote,
}

/// The lock event a successful `op` causes, known without applying it.
pub fn lock_event_of(op: &Op) -> Option<LockEvent> {
    match op {
        Op::Mkdir { path } => paths::lock_name(path).map(|n| LockEvent::Acquired(n.to_string())),
        Op::Delete { path } => paths::lock_name(path).map(|n| LockEvent::Released(n.to_string())),
        _ => None,
    }
}

/// The tree and what follows its changes.
pub struct Tree {
    db: Arc<RwLock<MemDb>>,
    /// Node status: mode, quorum, members, `.version` counters.
    pub status: Arc<Status>,
    /// The status kvstore (`SET_STATUS`/`GET_STATUS`, RRD updates, node addresses,
    /// the cluster log). Lock order: after the tree's lock, never before it.
    pub kv: Mutex<StatusStore>,
    broadcast: OnceLock<Box<dyn StatusBroadcast>>,
    rrd: OnceLock<Box<dyn RrdSink>>,
    corosync_conf: OnceLock<Box<dyn ConfSink>>,
    version_cache: Mutex<Option<(VersionKey, String)>>,
    /// What the kernel holds.
    pub refs: KernelRefs,
    /// The IPC clients connected now.
    pub ipc_clients: clients::Clients,
    /// Whether changes the kernel did not make are pushed to it as invalidations.
    coherence: bool,
    inval: OnceLock<Invalidator>,
    versions: Option<Arc<VersionShmWriter>>,
    replicator: OnceLock<Box<dyn Replicator>>,
    /// Counters.
    pub metrics: Metrics,
    /// The wall clock.
    pub clock: Clock,
    /// The transport carrying requests ("io_uring, N queues" or "/dev/fuse").
    pub transport: OnceLock<String>,
    /// The cluster protocol the node speaks, and the switch between the two.
    pub protocol: Mutex<ProtocolStatus>,
}

/// What `pmxfs status` says of the cluster protocol (README, "Mixed clusters and
/// upgrading").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProtocolStatus {
    /// "pmxfs" or "pmxcfs" once the node joined; empty before (and in local mode).
    pub speaks: &'static str,
    /// `--protocol auto`: the node switches to pmxfs's own protocol once every node
    /// of the cluster runs pmxfs and offers it.
    pub upgrade: bool,
    /// Nodes this switched node refused in pmxcfs's group (they stopped with pmxcfs's
    /// "detected newer protocol" or switched themselves).
    pub refused: Vec<u32>,
}

impl Tree {
    /// The service over `db`; with `coherence`, changes from elsewhere invalidate the
    /// kernel's caches once [`Tree::set_invalidator`] attached the kernel.
    pub fn new(
        db: MemDb,
        status: Arc<Status>,
        coherence: bool,
        versions: Option<VersionShmWriter>,
    ) -> Arc<Tree> {
        Arc::new(Tree {
            db: Arc::new(RwLock::new(db)),
            kv: Mutex::new(StatusStore::new(
                &status.nodename,
                std::process::id(),
                Clock::default().now(),
            )),
            broadcast: OnceLock::new(),
            rrd: OnceLock::new(),
            corosync_conf: OnceLock::new(),
            version_cache: Mutex::new(None),
            status,
            refs: KernelRefs::default(),
            ipc_clients: clients::Clients::default(),
            coherence,
            inval: OnceLock::new(),
            versions: versions.map(Arc::new),
            replicator: OnceLock::new(),
            metrics: Metrics::default(),
            clock: Clock::default(),
            transport: OnceLock::new(),
            protocol: Mutex::new(ProtocolStatus::default()),
        })
    }

    /// Read the tree. Never held across a change.
    pub fn read(&self) -> RwLockReadGuard<'_, MemDb> {
        self.db.read()
    }

    /// The memdb as the protocol core's database (the cluster adapter's).
    pub fn replica(&self) -> Replica {
        Replica::new(self.db.clone())
    }

    /// Whether cache coherence is on.
    pub fn coherence(&self) -> bool {
        self.coherence
    }

    /// Attach the invalidation threads once the FUSE session exists.
    pub fn set_invalidator(&self, inv: Invalidator) {
        let _ = self.inval.set(inv);
    }

    /// The invalidator, if coherence is on and the session is up.
    pub fn invalidator(&self) -> Option<&Invalidator> {
        if self.coherence {
            self.inval.get()
        } else {
            None
        }
    }

    /// Route changes from the kernel through the cluster from now on.
    pub fn set_replicator(&self, r: Box<dyn Replicator>) {
        let _ = self.replicator.set(r);
    }

    /// First door: a change made through this node's kernel. Applied at once in local
    /// mode; in cluster mode it returns once the cluster ordered it and this node
    /// applied it (the outcome was published through [`Tree::delivered`] by then, so
    /// only its lock event is reported here).
    pub fn from_kernel(&self, op: &Op) -> Result<Applied, Errno> {
        match self.replicator.get() {
            Some(r) => {
                r.submit(op.clone())?;
                Ok(Applied {
                    lock: lock_event_of(op),
                    ..Applied::default()
                })
            }
            None => self.apply_now(op, 0, Origin::Kernel),
        }
    }

    /// Apply `op` on behalf of `writer` now and publish it, refusing without quorum:
    /// local mode's path, and the debug hook's "change from another node".
    pub fn apply_now(&self, op: &Op, writer: u32, origin: Origin) -> Result<Applied, Errno> {
        if !self.status.quorate() {
            return Err(Errno::EACCES);
        }
        let ctx = OpCtx {
            writer,
            now: self.clock.now(),
        };
        let applied = self.db.write().apply(op, ctx)?;
        self.delivered(&applied, origin);
        Ok(applied)
    }

    /// Second door: a change this node's tree applied (in cluster order, or just now):
    /// publish its counters, invalidations and versions.
    pub fn delivered(&self, applied: &Applied, origin: Origin) {
        Metrics::bump(&self.metrics.ops_applied);
        if applied.paths.iter().any(|p| p == "corosync.conf") {
            if let Some(c) = self.corosync_conf.get() {
                c.changed(origin == Origin::Kernel);
            }
        }
        if !applied.removed.is_empty() {
            self.refs.bury(&applied.removed);
        }
        match (origin, self.invalidator()) {
            (Origin::Remote, Some(inv)) => {
                let mut queued = self.push_invalidations(inv, applied);
                // Readers of the version counters (`.version`, GET_FS_VERSION) and of the
                // shared-memory versions (token cache, key cache) must never see a new
                // version while the kernel still shows the old file: they move only
                // after the invalidations have reached the kernel, and names revalidate
                // if a tracked path was replaced or removed.
                if applied.paths.iter().any(|p| versions::slot_of(p).is_some())
                    && applied
                        .changes
                        .iter()
                        .any(|c| matches!(c, Change::Name { .. }))
                {
                    inv.epoch();
                    queued = true;
                }
                if queued {
                    let (status, shm, paths) = (
                        self.status.clone(),
                        self.versions.clone(),
                        applied.paths.clone(),
                    );
                    inv.then(move || bump_versions(&status, shm.as_deref(), &paths));
                } else {
                    // The kernel holds nothing this change touched (none of its inodes
                    // or directories is known to it), so the counters have nothing to
                    // wait for: they move now, without a wake-up of the invalidation
                    // thread. Most remote changes are of this kind (another node's
                    // files that nobody here has looked at).
                    bump_versions(&self.status, self.versions.as_deref(), &applied.paths);
                }
            }
            _ => bump_versions(&self.status, self.versions.as_deref(), &applied.paths),
        }
    }

    /// The tree was replaced by a cluster leader's: everything may have changed, so
    /// make the kernel drop everything it cached, then bump every counter.
    pub fn synced(&self) {
        if let Some(c) = self.corosync_conf.get() {
            c.changed(false);
        }
        match self.invalidator() {
            Some(inv) => {
                for f in self.refs.known() {
                    inv.inode(f.0);
                }
                inv.epoch();
                let (status, shm) = (self.status.clone(), self.versions.clone());
                inv.then(move || {
                    status.record_reload();
                    if let Some(v) = &shm {
                        v.bump_all();
                    }
                });
            }
            None => {
                self.status.record_reload();
                if let Some(v) = &self.versions {
                    v.bump_all();
                }
            }
        }
    }

    /// Queue invalidations for everything `applied` changed behind the kernel's back,
    /// plus, for a lock acquisition, the paths it protects; whether it queued any.
    fn push_invalidations(&self, inv: &Invalidator, applied: &Applied) -> bool {
        let lock_dir = self.db.read().lock_dir_inode();
        let mut queued = false;
        for c in &applied.changes {
            match c {
                Change::Attr(ino) => {
                    let f = FuseIno::of(*ino);
                    if self.refs.is_known(f) {
                        inv.inode(f.0);
                        queued = true;
                    }
                }
                // Names in the lock directory are never cached (zero entry timeout),
                // and a lock mkdir may be waiting in there: never take its i_rwsem.
                Change::Name { parent, .. } if Some(*parent) == lock_dir => {}
                Change::Name { parent, name } => {
                    let p = FuseIno::of(*parent);
                    if self.refs.is_known(p) {
                        inv.entry(p.0, OsString::from(name));
                        queued = true;
                    }
                }
            }
        }
        if let Some(LockEvent::Acquired(name)) = &applied.lock {
            for f in self.protected_known(name) {
                inv.inode(f.0);
            }
            inv.epoch();
            queued = true;
        }
        queued
    }

    /// Kernel-known inodes whose paths lock `name` protects.
    pub fn protected_known(&self, name: &str) -> Vec<FuseIno> {
        let known = self.refs.known();
        let db = self.db.read();
        known
            .into_iter()
            .filter(|f| {
                f.memdb()
                    .and_then(|m| db.path_of(m))
                    .is_some_and(|p| coherence::protects(name, &p))
            })
            .collect()
    }

    /// Run `f` once every invalidation queued so far has reached the kernel (at once
    /// without coherence).
    pub fn after_invalidations(&self, f: impl FnOnce() + Send + 'static) {
        match self.invalidator() {
            Some(inv) => inv.then(f),
            None => f(),
        }
    }

    /// Attach the kvstore group (cluster mode); at most once.
    pub fn set_broadcast(&self, b: Box<dyn StatusBroadcast>) {
        if self.broadcast.set(b).is_err() {
            panic!("status broadcast attached twice");
        }
    }

    /// Attach the corosync.conf writer (cluster mode); at most once.
    pub fn set_corosync_conf(&self, c: Box<dyn ConfSink>) {
        if self.corosync_conf.set(c).is_err() {
            panic!("corosync.conf writer attached twice");
        }
    }

    /// Attach the RRD writer; at most once.
    pub fn set_rrd(&self, r: Box<dyn RrdSink>) {
        if self.rrd.set(r).is_err() {
            panic!("RRD writer attached twice");
        }
    }

    /// `SET_STATUS` of this node's `key`, stored as pmxcfs stores it (see
    /// [`StatusStore::set_local`]), written to its RRD file if it is an RRD update, and
    /// sent to the other nodes whatever its kind.
    pub fn set_status(&self, key: &str, value: &[u8]) -> Result<(), Errno> {
        let stored = self
            .kv
            .lock()
            .set_local(key, value, self.clock.now())
            .map_err(|e| match e {
                SetError::TooBig => Errno::EFBIG,
                SetError::Malformed => Errno::ENOMEM,
            })?;
        match stored {
            Stored::Rrd { key, data } => self.write_rrd(&key, &data),
            Stored::Ip(true) => self.publish_ips(),
            _ => {}
        }
        if let Some(b) = self.broadcast.get() {
            b.set(key, value);
        }
        Ok(())
    }

    /// `LOG_CLUSTER_MSG`: log `msg` as this node's (pmxcfs's `clog_pack`), and send it
    /// to the other nodes. A priority beyond syslog's 0..=7 is EINVAL (pmxcfs answers
    /// success and logs nothing).
    pub fn cluster_log(
        &self,
        ident: &str,
        tag: &str,
        pid: u32,
        priority: u8,
        msg: &str,
    ) -> Result<(), Errno> {
        let now = self.clock.now();
        let entry = self
            .kv
            .lock()
            .log_local(ident, tag, pid, priority, now, msg)
            .map_err(|_| Errno::EINVAL)?;
        if let Some(b) = self.broadcast.get() {
            b.log(&entry);
        }
        Ok(())
    }

    /// Write an RRD update to its file (off this thread), if a writer is attached.
    pub fn write_rrd(&self, key: &str, data: &str) {
        if let Some(r) = self.rrd.get() {
            r.update(key, data);
        }
    }

    /// Publish the nodes' addresses from the kvstore for `.members`.
    pub fn publish_ips(&self) {
        let ips = self.kv.lock().ips().clone();
        self.status.set_ips(ips);
    }

    /// Content of a virtual file, or the target of a virtual link.
    pub fn virtual_file(&self, v: vfiles::Virt) -> String {
        let db = self.db.read();
        let mut kv = self.kv.lock();
        if v != vfiles::Virt::Version {
            return vfiles::content(v, &self.status, &mut kv, &db);
        }
        // PVE's daemons ask for `.version` before every API request; it is built again
        // only when something it shows moved. The key is read before the text is
        // built, so a change racing with the build only makes the next reader rebuild.
        let key = (
            self.status.generation(),
            kv.generation(),
            db.vmlist_version(),
        );
        let mut cache = self.version_cache.lock();
        if let Some((k, text)) = cache.as_ref() {
            if *k == key {
                return text.clone();
            }
        }
        let text = vfiles::content(v, &self.status, &mut kv, &db);
        *cache = Some((key, text.clone()));
        text
    }

    /// Fold the store's write-ahead log into the database (clean shutdown).
    pub fn checkpoint(&self) -> Result<(), memdb::StoreError> {
        self.db.write().checkpoint()
    }
}

/// Move the change counters (`.version`) and the shared-memory versions of `paths`.
fn bump_versions(status: &Status, shm: Option<&VersionShmWriter>, paths: &[String]) {
    for p in paths {
        status.record_change(p);
        if let Some(v) = shm {
            v.bump(p);
        }
    }
}
