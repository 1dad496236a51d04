//! The daemon's life: take the single-instance lock, check the mount point, open the
//! tree, mount it and start a transport, join the cluster, serve the control socket,
//! and unmount cleanly on SIGINT/SIGTERM. [`run`] reads as those steps.

use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use fuser::{Config, MountOption, Session, SessionACL};
use memdb::{Limits, MemDb, Op};
use pmxfs_client::versions::VersionShmWriter;
use storage::{Deferral, LoggedStore, SyncMode};

use crate::coherence::{Policy, Ttls};
use crate::control;
use crate::daemonize::{daemonize, Ready};
use crate::faults::Faults;
use crate::fs::PmxFs;
use crate::run_files;
use crate::transport::dev_fuse::{FuserFs, MAX_WRITE};
use crate::transport::uring::{self, Queues};
use crate::transport::{Negotiation, Transport};
use crate::tree::notify::Invalidator;
use crate::tree::status::{Mode, Status};
use crate::tree::Tree;

/// Everything the daemon is started with.
#[derive(Debug, Clone)]
pub struct DaemonOpts {
    /// Mount point.
    pub mount: PathBuf,
    /// SQLite database.
    pub db: PathBuf,
    /// pmxcfs `-l`: local mode even if the database holds corosync.conf.
    pub force_local: bool,
    /// pmxcfs `-f`: stay in the foreground.
    pub foreground: bool,
    /// In the background, log to the journal only (standard error goes to /dev/null).
    pub journal: bool,
    /// The host's corosync.conf: imported into a new database, written back in
    /// cluster mode (pmxcfs: /etc/corosync/corosync.conf).
    pub corosync_conf: PathBuf,
    /// Where the daemon's pid is written once it serves (pmxcfs: /run/pve-cluster.pid).
    pub pidfile: Option<PathBuf>,
    /// Created when the daemon stops, removed once it serves; PVE's IPC client waits
    /// while it exists (pmxcfs: /run/pve-cluster/cfs-restart-flag).
    pub restart_flag: Option<PathBuf>,
    /// This node's name.
    pub nodename: String,
    /// Timeouts for unprotected paths.
    pub ttls: Ttls,
    /// `--coherence on`.
    pub coherence: bool,
    /// Tree limits.
    pub limits: Limits,
    /// Lock expiry in seconds.
    pub lock_timeout: u32,
    /// SQLite durability.
    pub sync: SyncMode,
    /// FUSE worker threads.
    pub threads: usize,
    /// Transport for requests.
    pub transport: Transport,
    /// Accept the control socket's test hooks (`--debug-hooks`).
    pub debug_hooks: bool,
    /// Faults to inject (tests).
    pub faults: Faults,
    /// libqb service name of the IPC server (`pve2`).
    pub ipc_name: String,
    /// Directory of the RRD files.
    pub rrd_dir: PathBuf,
    /// rrdcached's address ("" for none).
    pub rrdcached: String,
    /// How long changes may gather in the intent log before they are folded into
    /// SQLite (fewer, fuller commits: less wear).
    pub fold_after: Duration,
    /// How often the cluster checks that every node holds the same tree.
    pub verify_every: Duration,
    /// The cluster protocol: pmxfs's own, or pmxcfs's (to share a cluster with pmxcfs
    /// nodes).
    pub protocol: cluster_sync::core::Protocol,
    /// In pmxcfs's protocol, switch to pmxfs's own once every node runs pmxfs
    /// (`--protocol auto`); a node that switched starts in pmxfs's own.
    pub upgrade: bool,
}

/// The group that owns every entry: www-data (33 on Debian) if it exists.
pub fn www_data_gid() -> u32 {
    nix::unistd::Group::from_name("www-data")
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
        .unwrap_or(33)
}

/// This host's name cut at the first dot, as pmxcfs uses it.
pub fn default_nodename() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .map(|h| h.split('.').next().unwrap_or_default().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Signals the main thread alone handles.
fn stop_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    set
}

/// How commits reach SQLite: through the intent log, unless every commit is to be
/// fsynced (`--sync full`, which the log would weaken); the `stall-apply` fault is the
/// crash-recovery test's (changes logged, never applied).
fn deferral(sync: SyncMode, faults: Faults) -> Deferral {
    if faults.stall_apply {
        Deferral::Stalled
    } else if sync == SyncMode::Full {
        Deferral::Off
    } else {
        Deferral::On
    }
}

/// The single-instance locks, held until the process exits: pmxfs's own beside the
/// database, and pmxcfs's (`.pmxcfs.lockfile` in the database's directory), so that
/// pmxfs and pmxcfs never run on one database at once (as when switching by hand).
pub struct InstanceLock {
    _own: std::fs::File,
    _pmxcfs: std::fs::File,
}

/// Take [`InstanceLock`]. pmxcfs's lock is waited for up to 10 s, as pmxcfs waits for
/// it (a daemon that is still stopping); pmxfs's own is not.
pub fn lock_instance(db: &Path) -> Result<InstanceLock> {
    let lock_path = PathBuf::from(format!("{}.lock", db.display()));
    let own = flock_file(&lock_path, 0).map_err(|e| match e {
        LockError::Held => anyhow::anyhow!(
            "another pmxfs is already running on {} (lock file {} is held)",
            db.display(),
            lock_path.display()
        ),
        LockError::Other(e) => e,
    })?;
    let dir = db
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let pmxcfs_path = dir.join(".pmxcfs.lockfile");
    let pmxcfs = flock_file(&pmxcfs_path, 10).map_err(|e| match e {
        LockError::Held => anyhow::anyhow!(
            "pmxcfs (or another cluster filesystem) runs on {} ({} is held)",
            dir.display(),
            pmxcfs_path.display()
        ),
        LockError::Other(e) => e,
    })?;
    Ok(InstanceLock {
        _own: own,
        _pmxcfs: pmxcfs,
    })
}

enum LockError {
    Held,
    Other(anyhow::Error),
}

/// `flock(LOCK_EX)` on `path`, trying once a second for `retries` more seconds.
fn flock_file(path: &Path, retries: u32) -> Result<std::fs::File, LockError> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| {
            LockError::Other(anyhow::anyhow!(
                "cannot open lock file {}: {e}",
                path.display()
            ))
        })?;
    for attempt in 0..=retries {
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(f);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(LockError::Other(anyhow::anyhow!(
                "cannot lock {}: {e}",
                path.display()
            )));
        }
        if attempt == 0 && retries > 0 {
            tracing::info!("{} is held; trying again for {retries} s", path.display());
        }
        if attempt < retries {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
    Err(LockError::Held)
}

/// Directories a node expects to find (pve-cluster creates them on setup).
fn ensure_base_dirs(tree: &Tree, nodename: &str) {
    let node = format!("nodes/{nodename}");
    let dirs = [
        "nodes".to_string(),
        node.clone(),
        format!("{node}/qemu-server"),
        format!("{node}/lxc"),
        format!("{node}/openvz"),
        format!("{node}/priv"),
        "priv".into(),
        "priv/lock".into(),
    ];
    for d in dirs {
        if tree.read().resolve(&d).is_err() {
            if let Err(e) = tree
                .from_kernel(&Op::Mkdir { path: d.clone() })
                .map(|_| ())
                .or_else(|e| {
                    if e == nix::errno::Errno::EEXIST {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
            {
                tracing::warn!("cannot create {d}: {e}");
            }
        }
    }
}

/// A database created just now holds nothing but what the intent log has: fold it at
/// once, so that `config.db` is complete for pmxcfs or `sqlite3` from the start, and
/// the first fold of everyday changes carries only them.
fn fold_new_database(tree: &Tree) {
    if let Err(e) = tree.checkpoint() {
        tracing::warn!("cannot fold the new database (the intent log keeps it): {e}");
    }
}

/// Run the daemon until a signal or an external unmount. Without `foreground` the
/// process forks first and the parent returns (exits) once the daemon serves.
pub fn run(opts: DaemonOpts) -> Result<()> {
    let mut ready = if opts.foreground {
        Ready::Foreground
    } else {
        daemonize(opts.journal)?
    };
    let r = serve(&opts, &mut ready);
    if let Err(e) = &r {
        ready.failed(&format!("{e:#}"));
    }
    r
}

fn serve(opts: &DaemonOpts, ready: &mut Ready) -> Result<()> {
    // Every thread spawned from here on inherits a mask that blocks the stop signals,
    // so they reach only the main thread's handlers below: a signal handled on a worker
    // would interrupt its blocking call (EINTR) for nothing, and one arriving before
    // the handlers exist stays pending instead of killing the daemon mid-mount.
    let stop_signals = stop_signals();
    stop_signals.thread_block()?;
    prepare_db_dir(&opts.db)?;
    let _instance = lock_instance(&opts.db)?;
    let mount = crate::mountpoint::prepare(&opts.mount)?;
    run_files::remove_stale(&mount);
    let (tree, created) = open_tree(opts, &mount)?;
    let local = tree.status.mode == Mode::Local;
    let rrd = rrd_sys::RrdWriter::new(&opts.rrd_dir, Some(opts.rrdcached.clone()));
    tree.set_rrd(Box::new(crate::rrd::start(rrd, &tree)?));
    if !local {
        // Before corosync starts (the unit orders itself before it): the host file
        // must carry the cluster's configuration.
        crate::corosync_conf::sync(&tree, &opts.corosync_conf, true);
        let w = crate::corosync_conf::start(&tree, opts.corosync_conf.clone())?;
        tree.set_corosync_conf(Box::new(w));
    }
    if local && created {
        ensure_base_dirs(&tree, &opts.nodename);
        fold_new_database(&tree);
    }
    let policy = Policy {
        enabled: opts.coherence,
        default: opts.ttls,
    };
    let switched_at = tree.replica().tree().read().switched_at();
    let protocol = match (opts.upgrade, switched_at) {
        (true, Some(term)) => {
            tracing::info!(
                term,
                "this node's cluster switched from pmxcfs's protocol to pmxfs's own"
            );
            cluster_sync::core::Protocol::Terms
        }
        _ => opts.protocol,
    };
    if !local && protocol == cluster_sync::core::Protocol::Dfsm {
        // Every node applies every change alike, so the tree follows pmxcfs's rules
        // exactly where pmxfs's own differ (locks above all).
        tree.replica()
            .tree()
            .write()
            .set_dialect(memdb::Dialect::Pmxcfs);
        tracing::info!("speaking pmxcfs's protocol (pve_dcdb_v1) with pmxcfs's tree rules");
    }
    let fs = Arc::new(PmxFs::new(tree.clone(), policy, www_data_gid()));
    let mounted = mount_fs(opts, &mount, fs)?;
    if !local {
        join_cluster(
            &tree,
            &opts.nodename,
            created,
            opts.verify_every,
            protocol,
            opts.upgrade,
        )?;
    }
    // Before the control socket, which is how a supervisor sees the daemon ready.
    let _ipc = crate::ipc::start(&opts.ipc_name, tree.clone(), www_data_gid())
        .with_context(|| format!("cannot serve IPC service {}", opts.ipc_name))?;
    tracing::info!(service = %opts.ipc_name, "IPC server listening");
    let sock = serve_control(opts, &mount, &tree)?;
    let pidfile = run_files::write_pidfile(opts.pidfile.as_deref())?;
    run_files::clear_restart_flag(opts.restart_flag.as_deref());
    ready.serving();
    let (why, failed) = wait_for_stop(stop_signals, &mounted)?;
    // PVE's IPC client waits while the flag exists, instead of failing at once.
    run_files::set_restart_flag(opts.restart_flag.as_deref());
    tracing::info!("{why}: unmounting {}", mount.display());
    let _ = std::fs::remove_file(&sock);
    let _abort = AbortLater::arm(&mount, UNMOUNT_GRACE);
    if let Err(e) = mounted.bg.umount_and_join() {
        tracing::debug!("unmount: {e}");
    }
    if let Err(e) = tree.checkpoint() {
        tracing::warn!(
            "final checkpoint failed (the intent log and the WAL are replayed at the next start): {e}"
        );
    }
    run_files::remove_own(&mount, pidfile.as_deref());
    if failed {
        anyhow::bail!("{why}");
    }
    Ok(())
}

/// Create the database's directory (0750) if it is missing.
fn prepare_db_dir(db: &Path) -> Result<()> {
    if let Some(dir) = db.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))?;
        }
    }
    Ok(())
}

/// What a refused database's message points to.
const WAYS_OUT: &str = "(`pmxfs db check` lists every problem, `pmxfs db repair` writes a \
                        repaired copy, `pmxfs db set-aside` starts anew from the cluster)";

/// Open the database, recover what the intent log holds, import the host's
/// corosync.conf into a new database, decide the mode as pmxcfs does, and build the
/// tree service; also returns whether the database was created now.
fn open_tree(opts: &DaemonOpts, mount: &Path) -> Result<(Arc<Tree>, bool)> {
    let (store, loaded) = LoggedStore::open(&opts.db, opts.sync, deferral(opts.sync, opts.faults))
        .with_context(|| format!("cannot open database {} {WAYS_OUT}", opts.db.display()))?;
    store.set_fold_after(opts.fold_after);
    let created = loaded.created;
    let mut db = MemDb::from_rows(loaded.rows, loaded.root, Box::new(store), opts.limits)
        .with_context(|| format!("refusing to start on {} {WAYS_OUT}", opts.db.display()))?
        .with_terms(loaded.term, loaded.promised_term)
        .with_switch(loaded.switched_at);
    db.set_lock_timeout(opts.lock_timeout);
    if created && !opts.force_local {
        import_corosync_conf(&mut db, &opts.corosync_conf)?;
    }
    tracing::info!(
        db = %opts.db.display(),
        version = db.root_version().version,
        entries = db.entry_count(),
        created,
        "database loaded"
    );
    let has_conf = db.resolve("corosync.conf").is_ok_and(|e| !e.is_dir());
    let (mode, why) = decide_mode(opts.force_local, has_conf);
    tracing::info!(mode = ?mode, "{why}");
    let status = Arc::new(Status::new(opts.nodename.clone(), mode, why));
    status.record_reload();
    let shm_path = pmxfs_client::versions::shm_path_for_mount(mount);
    let versions = match VersionShmWriter::open_or_create(&shm_path) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!("no shared-memory versions at {}: {e}", shm_path.display());
            None
        }
    };
    Ok((Tree::new(db, status, opts.coherence, versions), created))
}

/// pmxcfs's rule: cluster mode when the database holds `corosync.conf`, local mode
/// otherwise or when forced (`-l`); with the reason, for the log and `pmxfs status`.
pub fn decide_mode(force_local: bool, has_conf: bool) -> (Mode, &'static str) {
    match (force_local, has_conf) {
        (true, true) => (
            Mode::Local,
            "local mode forced (-l), although corosync.conf exists",
        ),
        (true, false) => (Mode::Local, "local mode forced (-l)"),
        (false, true) => (
            Mode::Cluster,
            "cluster mode: the database holds corosync.conf",
        ),
        (false, false) => (Mode::Local, "local mode: no corosync.conf in the database"),
    }
}

/// A new database takes the host's corosync.conf, if there is one (pmxcfs does this at
/// its first start, so that a node of an existing cluster joins it).
fn import_corosync_conf(db: &mut MemDb, host: &Path) -> Result<()> {
    let data = match std::fs::read(host) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", host.display())),
    };
    let now = crate::tree::Clock::default().now();
    db.put("corosync.conf", &data, memdb::OpCtx { writer: 0, now })
        .map_err(|e| anyhow::anyhow!("unable to import {}: {e}", host.display()))?;
    tracing::info!("imported {} into the new database", host.display());
    Ok(())
}

/// A mounted filesystem and what serves it.
struct Mounted {
    bg: fuser::BackgroundSession,
    queues: Option<Queues>,
}

/// Mount `fs` on `mount`, attach the kernel's invalidations to the tree, and start the
/// transport: io_uring queues if INIT agreed to them, else fuser's threads alone.
fn mount_fs(opts: &DaemonOpts, mount: &Path, fs: Arc<PmxFs>) -> Result<Mounted> {
    let tree = fs.tree.clone();
    let mut cfg = Config::default();
    cfg.mount_options = vec![
        MountOption::FSName("pmxfs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoSuid,
        MountOption::NoDev,
    ];
    cfg.acl = SessionACL::All;
    // In cluster mode a writer's request waits for its delivery; keep threads free for
    // readers meanwhile.
    let local = tree.status.mode == Mode::Local;
    let threads = if local {
        opts.threads.max(1)
    } else {
        opts.threads.max(4)
    };
    cfg.n_threads = Some(threads);
    cfg.clone_fd = threads > 1;
    let want_ring = opts.transport != Transport::DevFuse && uring::available();
    let nego = Negotiation::new(want_ring);
    let session = Session::new(FuserFs::new(fs.clone(), nego.clone()), mount, &cfg)
        .with_context(|| format!("cannot mount on {}", mount.display()))?;
    let dev = session.as_fd().try_clone_to_owned()?;
    let ring_dev = session.as_fd().try_clone_to_owned()?;
    tree.set_invalidator(Invalidator::start(session.notifier(), dev)?);
    let bg = session.spawn()?;
    let mut queues = None;
    let transport = match nego.wait(Duration::from_secs(10)) {
        // A cluster node's writers wait in their handler for the CPG round trip: they
        // run on a worker pool so that a queue keeps serving its CPU's readers.
        Some((true, _)) => {
            let workers = (!local).then_some(threads);
            match uring::start(ring_dev, fs, MAX_WRITE, workers, opts.faults) {
                Ok(q) => {
                    let t = format!("io_uring, {} queues", q.count);
                    queues = Some(q);
                    t
                }
                Err(e) => {
                    tracing::error!("io_uring transport failed, falling back to /dev/fuse: {e}");
                    "/dev/fuse".to_string()
                }
            }
        }
        Some((false, offered)) => {
            if opts.transport == Transport::IoUring && !offered {
                tracing::warn!(
                    "the kernel does not offer FUSE over io_uring \
                     (Linux 6.14+ with /sys/module/fuse/parameters/enable_uring = Y)"
                );
            }
            "/dev/fuse".to_string()
        }
        None => "/dev/fuse".to_string(),
    };
    let _ = tree.transport.set(transport);
    tracing::info!(
        mount = %mount.display(),
        coherence = opts.coherence,
        mode = ?tree.status.mode,
        transport = tree.transport.get().map(String::as_str),
        "mounted"
    );
    Ok(Mounted { bg, queues })
}

/// Route the kernel's writes through the cluster, and create the node's directories
/// once the node is quorate.
fn join_cluster(
    tree: &Arc<Tree>,
    nodename: &str,
    created: bool,
    verify_every: Duration,
    protocol: cluster_sync::core::Protocol,
    upgrade: bool,
) -> Result<()> {
    tree.set_replicator(Box::new(crate::cluster::runner::start(
        tree.clone(),
        verify_every,
        protocol,
        upgrade,
    )?));
    let kv = crate::cluster::kvstore::start(tree.clone(), nodename.to_string())?;
    tree.set_broadcast(Box::new(kv));
    if !created {
        return Ok(());
    }
    let (tree, name) = (tree.clone(), nodename.to_string());
    std::thread::Builder::new()
        .name("pmxfs-base-dirs".into())
        .spawn(move || {
            while !tree.status.quorate() {
                std::thread::sleep(Duration::from_millis(200));
            }
            ensure_base_dirs(&tree, &name);
            fold_new_database(&tree);
        })?;
    Ok(())
}

/// Serve the control socket; returns its path.
fn serve_control(opts: &DaemonOpts, mount: &Path, tree: &Arc<Tree>) -> Result<PathBuf> {
    let sock = control::socket_path(mount);
    if let Some(d) = sock.parent() {
        std::fs::create_dir_all(d)?;
    }
    let _ = std::fs::remove_file(&sock);
    let listener = std::os::unix::net::UnixListener::bind(&sock)
        .with_context(|| format!("cannot bind {}", sock.display()))?;
    control::serve(
        listener,
        tree.clone(),
        control::Info {
            mount: mount.to_path_buf(),
            db: opts.db.clone(),
            debug_hooks: opts.debug_hooks,
        },
    )?;
    Ok(sock)
}

/// Wait for SIGTERM or SIGINT, an external unmount, or a transport that stopped
/// (`failed`); returns why.
fn wait_for_stop(
    stop_signals: nix::sys::signal::SigSet,
    mounted: &Mounted,
) -> Result<(String, bool)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let r = rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        // Without a handler SIGHUP (a closed terminal, a shell logout) would kill the
        // daemon and leave a dead mount; /etc/pve must outlive the session that started it.
        let mut hup = signal(SignalKind::hangup())?;
        stop_signals.thread_unblock()?;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = term.recv() => return Ok::<_, std::io::Error>(("SIGTERM".to_string(), false)),
                _ = int.recv() => return Ok(("SIGINT".to_string(), false)),
                _ = hup.recv() => tracing::warn!("SIGHUP ignored: pmxfs stops on SIGTERM or SIGINT"),
                _ = tick.tick() => {
                    if mounted.bg.guard.is_finished() {
                        return Ok(("unmounted externally".to_string(), false));
                    }
                    if let Some(why) = mounted.queues.as_ref().and_then(|q| q.stopped()) {
                        return Ok((why.to_string(), true));
                    }
                }
            }
        }
    })?;
    Ok(r)
}

/// How long the kernel may take to end the FUSE session after the unmount before the
/// daemon aborts the connection.
const UNMOUNT_GRACE: Duration = Duration::from_secs(5);

/// Aborts the mount's FUSE connection (fusectl) unless dropped within the grace time.
/// Unmounting ends the session only once no mount of it is left, and a mount namespace
/// made with private propagation while the filesystem was mounted (`unshare -m`, say)
/// keeps a copy that the unmount here does not reach: the daemon would wait for it
/// forever, and never fold its last changes into the database.
struct AbortLater {
    done: Arc<(parking_lot::Mutex<bool>, parking_lot::Condvar)>,
}

impl AbortLater {
    fn arm(mount: &Path, grace: Duration) -> Option<AbortLater> {
        let conn = Path::new("/sys/fs/fuse/connections").join(fuse_connection(mount)?.to_string());
        let done = Arc::new((parking_lot::Mutex::new(false), parking_lot::Condvar::new()));
        let d = done.clone();
        std::thread::Builder::new()
            .name("pmxfs-unmount".into())
            .spawn(move || {
                let mut g = d.0.lock();
                if !*g {
                    // parking_lot's condvar wakes only when notified or timed out.
                    d.1.wait_for(&mut g, grace);
                }
                if !*g {
                    tracing::warn!(
                        "the FUSE session did not end {grace:?} after the unmount (a copy of the mount in another mount namespace?): aborting {}",
                        conn.display()
                    );
                    let _ = std::fs::write(conn.join("abort"), "1");
                }
            })
            .ok()?;
        Some(AbortLater { done })
    }
}

impl Drop for AbortLater {
    fn drop(&mut self) {
        *self.done.0.lock() = true;
        self.done.1.notify_all();
    }
}

/// The FUSE connection number of the filesystem mounted at `mount` (the minor of its
/// device), from /proc/self/mountinfo: a stat of the mount point would be a FUSE
/// request, and the daemon may be stopping because it can no longer answer them.
fn fuse_connection(mount: &Path) -> Option<u32> {
    // The kernel lists the resolved path; resolving the parent touches no FUSE inode.
    let resolved = match (mount.parent(), mount.file_name()) {
        (Some(p), Some(n)) => std::fs::canonicalize(p).ok()?.join(n),
        _ => mount.to_path_buf(),
    };
    let want = resolved.to_str()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        // mountinfo escapes spaces and backslashes in paths as octal.
        let point = f.get(4)?.replace("\\040", " ").replace("\\134", "\\");
        if point != want {
            return None;
        }
        f.get(2)?.split_once(':')?.1.parse().ok()
    })
}
