//! The cluster thread: a tokio loop over corosync's CPG and quorum descriptors, local
//! write requests and a clock tick, feeding cluster-sync's pure core and carrying out
//! its actions: multicasts go to CPG, answers to the waiting writers, and applied
//! changes and installed syncs to the tree service. If corosync goes away, or the core
//! stops because this node's store failed, the node turns read-only, fails the writes
//! in flight, and joins again (as a new member, which resyncs).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cluster_sync::core::{Action, Body, Event, Member, Message, Mode, Node, Protocol};
use cluster_sync::wire;
use corosync_sys::{Cmap, Cpg, CpgAddress, CpgEvent, Dispatch, Quorum, QuorumEvent};
use memdb::codec::MemdbCodec;
use memdb::replica::Replica;
use memdb::{Op, Row};
use nix::errno::Errno;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc::{channel, Receiver, Sender};

use super::stages::WriteStages;
use crate::tree::{Metrics, Origin, Replicator, Tree};

/// CPG group of pmxfs nodes speaking pmxfs's own protocol (pmxcfs's is
/// [`dcdb_wire::GROUP`], `pve_dcdb_v1`: the encodings differ).
pub const GROUP: &str = "pmxfs_dcdb_v2";

/// The group a protocol's members join.
pub fn group(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Terms => GROUP,
        Protocol::Dfsm => dcdb_wire::GROUP,
    }
}

/// Seconds an unchanged lock must have been seen by this node, the lowest, before it
/// grants another node's unlock request (pmxcfs's `CFS_LOCK_TIMEOUT`).
pub const UNLOCK_AFTER: u32 = memdb::locks::DEFAULT_LOCK_TIMEOUT;

/// pmxcfs's lock ages (`memdb_lock_expired`): in its protocol a lock expires by the
/// lowest node's clock, counted from when that node first saw the lock in its current
/// state (its checksum), not by the lock's mtime.
#[derive(Debug, Default)]
struct LockAges {
    seen: HashMap<String, ([u8; 32], u32)>,
}

impl LockAges {
    /// Whether the lock at `path`, in the state `csum`, is older than [`UNLOCK_AFTER`]
    /// here; a lock seen for the first time, or changed since, starts its count now.
    fn expired(&mut self, path: &str, csum: [u8; 32], now: u32) -> bool {
        match self.seen.get_mut(path) {
            Some((c, since)) if *c == csum => now > *since && now - *since > UNLOCK_AFTER,
            Some(entry) => {
                *entry = (csum, now);
                false
            }
            None => {
                // Bounded by the locks the tree holds: entries go with their lock.
                self.seen.insert(path.to_string(), (csum, now));
                false
            }
        }
    }

    /// The lock at `path` was taken or refreshed and is now in the state `csum` (or
    /// gone): its count starts again.
    fn start(&mut self, path: &str, csum: Option<[u8; 32]>, now: u32) {
        match csum {
            Some(c) => {
                self.seen.insert(path.to_string(), (c, now));
            }
            None => {
                self.seen.remove(path);
            }
        }
    }
}

/// Seconds a node may run pmxfs or pmxcfs (it is in the kvstore group, which both
/// share) without being a member of this node's tree group before this node concludes
/// it speaks another tree protocol. A daemon starting joins the kvstore group a moment
/// before the tree group; this is far longer.
pub const FOREIGN_AFTER: Duration = Duration::from_secs(10);

/// The mixed-protocol guard: nodes that share the cluster but not this node's tree
/// group keep a tree of their own, and corosync counts them all quorate, so both
/// groups would accept writes and drift apart (a pmxfs node in pmxfs's protocol
/// beside pmxcfs nodes, say). pmxcfs cannot tell; so while such nodes are there, this
/// node refuses writes as if it had no quorum and says why, and the other group (if it
/// is pmxcfs's) is the only one that accepts them.
#[derive(Debug, Default)]
struct Guard {
    /// Since when each node now outside the tree group has been outside it. Counted
    /// per node: a member that leaves and joins again (the guard makes pmxcfs's
    /// protocol resync a node that receives a write) must not restart the count of a
    /// node that never left the other group.
    outside: HashMap<u32, std::time::Instant>,
    /// The guard holds: writes are refused.
    active: bool,
}

impl Guard {
    /// Look again at the kvstore's nodes (`online`) and the tree group's (`members`);
    /// whether the guard changed.
    fn check(
        &mut self,
        me: u32,
        online: &[u32],
        members: &[Member],
        now: std::time::Instant,
    ) -> bool {
        // Not a member of its own group yet (joining again, say): nothing to judge by,
        // so the guard stays as it is.
        if !members.iter().any(|m| m.nodeid == me) {
            return false;
        }
        let foreign = |n: &u32| *n != me && !members.iter().any(|m| m.nodeid == *n);
        self.outside.retain(|n, _| online.contains(n) && foreign(n));
        for n in online.iter().filter(|n| foreign(n)) {
            self.outside.entry(*n).or_insert(now);
        }
        let mut long: Vec<u32> = self
            .outside
            .iter()
            .filter(|(_, t)| now.duration_since(**t) >= FOREIGN_AFTER)
            .map(|(n, _)| *n)
            .collect();
        long.sort_unstable();
        let hold = !long.is_empty();
        if hold && !self.active {
            tracing::error!(
                nodes = ?long,
                "these nodes run pmxcfs or pmxfs but are not in this node's tree group: they \
                 speak another cluster protocol (pmxcfs's pve_dcdb_v1, or pmxfs's own); this \
                 node refuses writes until every node runs the same --protocol"
            );
        }
        hold != std::mem::replace(&mut self.active, hold)
    }
}

/// Encode a message in `protocol`'s wire format.
fn encode(protocol: Protocol, msg: &Message<Op, Row>) -> Result<Vec<u8>> {
    match protocol {
        Protocol::Terms => Ok(wire::encode::<MemdbCodec>(msg)),
        Protocol::Dfsm => memdb::dcdb::encode(msg)
            .map_err(|e| anyhow::anyhow!("the core made a message pmxcfs cannot read: {e}")),
    }
}

/// Writes handed to the cluster thread and not yet taken by it. A writer beyond it
/// waits in `submit` (FUSE workers are few, so it never does in practice); the core
/// bounds what it keeps unanswered itself.
pub const REQUEST_QUEUE: usize = 1024;

type Request = (Op, SyncSender<Result<(), Errno>>);

/// Hands the kernel's writes to the cluster thread.
pub struct ClusterReplicator {
    tx: Sender<Request>,
}

impl Replicator for ClusterReplicator {
    fn submit(&self, op: Op) -> Result<(), Errno> {
        let (tx, rx) = sync_channel(1);
        self.tx.blocking_send((op, tx)).map_err(|_| Errno::EIO)?;
        rx.recv().unwrap_or(Err(Errno::EIO))
    }
}

#[derive(Debug)]
struct Fd(RawFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// What `pmxfs status` calls `protocol`.
fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Terms => "pmxfs",
        Protocol::Dfsm => "pmxcfs",
    }
}

/// Start the cluster thread, speaking `protocol`, which checks the tree against the
/// other nodes' every `verify_every`; with `upgrade` (`--protocol auto`), a node in
/// pmxcfs's protocol switches to pmxfs's own once the cluster agrees, and a node that
/// has switched keeps the sentinel (`switch.rs`). Returns the replicator for
/// [`Tree::set_replicator`].
pub fn start(
    tree: Arc<Tree>,
    verify_every: Duration,
    protocol: Protocol,
    upgrade: bool,
) -> Result<ClusterReplicator> {
    let (tx, rx) = channel(REQUEST_QUEUE);
    let switched_at = tree.replica().tree().read().switched_at();
    *tree.protocol.lock() = crate::tree::ProtocolStatus {
        speaks: protocol_name(protocol),
        upgrade,
        refused: Vec::new(),
    };
    if let (true, Protocol::Terms, Some(term)) = (upgrade, protocol, switched_at) {
        super::switch::spawn(None, term, tree.clone())?;
    }
    std::thread::Builder::new()
        .name("pmxfs-cluster".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(supervise(tree, rx, verify_every, protocol, upgrade));
        })?;
    Ok(ClusterReplicator { tx })
}

/// How a session ended without an error.
enum End {
    /// The kernel's side closed: the daemon stops.
    Closed,
    /// The core switched to the term protocol at `term`: `cpg` (still in
    /// `pve_dcdb_v1`) becomes the sentinel, and `pending` goes to the next session.
    Switched {
        cpg: Box<Cpg>,
        term: u64,
        pending: Vec<Request>,
    },
}

/// What the core handed over when it switched: its term and unanswered requests.
type Handover = (u64, Vec<(u64, Op)>);

/// How long writes handed over at the switch wait for pmxfs's group to take writes
/// (the core's resend window: a writer never waits longer for a lost write either).
const CARRY_FOR: Duration = Duration::from_secs(cluster_sync::core::RESEND_WINDOW as u64);

/// The run closure's way out of the session loop when the core switched.
#[derive(Debug, thiserror::Error)]
#[error("switched to pmxfs's own protocol")]
struct SwitchNow;

async fn supervise(
    tree: Arc<Tree>,
    mut rx: Receiver<Request>,
    verify_every: Duration,
    mut protocol: Protocol,
    upgrade: bool,
) {
    // The guard outlives a session: a node it stops may leave and join again (a write
    // delivered to it without quorum makes it resync), and must not forget why.
    let mut guard = Guard::default();
    let mut carried = Vec::new();
    loop {
        let s = Session {
            verify_every,
            protocol,
            upgrade,
        };
        match session(&tree, &mut rx, s, &mut guard, std::mem::take(&mut carried)).await {
            Ok(End::Closed) => return,
            Ok(End::Switched { cpg, term, pending }) => {
                tracing::warn!(
                    term,
                    "the cluster switched from pmxcfs's protocol to pmxfs's own: this node \
                     now replicates in pmxfs_dcdb_v2, with pmxfs's tree rules, and refuses \
                     pmxcfs daemons"
                );
                tree.replica()
                    .tree()
                    .write()
                    .set_dialect(memdb::Dialect::Pmxfs);
                protocol = Protocol::Terms;
                tree.protocol.lock().speaks = protocol_name(protocol);
                if let Err(e) = super::switch::spawn(Some(*cpg), term, tree.clone()) {
                    tracing::error!("cannot start the sentinel: {e}");
                }
                carried = pending;
                // The new group starts with this node alone: the others follow.
                guard = Guard::default();
            }
            Err(e) if e.is::<NewerProtocol>() => {
                // pmxcfs's DFSM_MODE_VERSION_ERROR: never restarted.
                tracing::error!("{e:#}; this node stays read-only until it is updated");
                tree.status.set_quorate(false);
                while let Some((_, reply)) = rx.recv().await {
                    let _ = reply.send(Err(Errno::EACCES));
                }
                return;
            }
            Err(e) => {
                tracing::error!("cluster connection lost: {e:#}; read-only until it is back");
                tree.status.set_quorate(false);
                // Writes arriving while disconnected fail at once rather than hang.
                let deadline = tokio::time::sleep(Duration::from_secs(2));
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        _ = &mut deadline => break,
                        r = rx.recv() => match r {
                            Some((_, reply)) => { let _ = reply.send(Err(Errno::EACCES)); }
                            None => return,
                        },
                    }
                }
            }
        }
    }
}

fn member(a: &CpgAddress) -> Member {
    Member::new(a.nodeid, a.pid)
}

/// A member sent a message of a newer protocol version than this node speaks.
#[derive(Debug, thiserror::Error)]
#[error("detected newer protocol {0} from {1} - please update this node")]
struct NewerProtocol(u32, Member);

/// What a session speaks.
#[derive(Debug, Clone, Copy)]
struct Session {
    verify_every: Duration,
    protocol: Protocol,
    upgrade: bool,
}

async fn session(
    tree: &Arc<Tree>,
    rx: &mut Receiver<Request>,
    s: Session,
    guard: &mut Guard,
    carried: Vec<Request>,
) -> Result<End> {
    let Session {
        verify_every,
        protocol,
        ..
    } = s;
    let cpg = Cpg::initialize().context("cpg_initialize")?;
    let quorum = Quorum::initialize().context("quorum_initialize")?;
    let cmap = Cmap::initialize().ok();
    quorum.trackstart().context("quorum_trackstart")?;
    let group = group(protocol);
    cpg.join(group).context("cpg_join")?;
    let me = cpg.local_get().context("cpg_local_get")?;
    let pid = std::process::id();
    // SAFETY: the descriptors belong to `cpg` and `quorum`, which are declared before
    // and therefore dropped after these registrations.
    let cpg_fd = unsafe { AsyncFd::register_with_interest(Fd(cpg.fd_get()?), Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("registering the cpg fd: {e:?}"))?;
    let q_fd = unsafe { AsyncFd::register_with_interest(Fd(quorum.fd_get()?), Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("registering the quorum fd: {e:?}"))?;
    tracing::info!(
        nodeid = me,
        group = group.trim_end_matches('\0'),
        ?protocol,
        "joined the cluster group"
    );

    let mut node = Node::with_protocol(Member::new(me, pid), tree.replica(), protocol);
    let mut waiting: Waiting = HashMap::new();
    let next_req = std::cell::Cell::new(0u64);
    let ages = std::cell::RefCell::new(LockAges::default());
    // Set when the core switched (`Action::Switched`): its term and pending requests.
    let switched: std::cell::RefCell<Option<Handover>> = Default::default();
    let m = &tree.metrics;
    let stages = std::cell::RefCell::new(WriteStages::default());
    let own = Member::new(me, pid);
    let run = |node: &mut Node<Replica>, waiting: &mut Waiting, ev: Event<Op, Row>| -> Result<()> {
        let (resent, resyncs, verifies) = (node.resent(), node.resyncs(), node.verifies());
        // Another member's write: timed until it is applied here and acknowledged.
        let others_write = matches!(&ev, Event::Deliver { from, msg } if *from != own
            && matches!(&msg.body, Body::Normal { ops, .. } if !ops.is_empty()))
        .then(Instant::now);
        match &ev {
            Event::LocalRequest { req_id, .. } => {
                stages.borrow_mut().requested(*req_id, Instant::now());
            }
            Event::Deliver { from, msg } if *from == own => {
                stages.borrow_mut().delivered(msg.seq, Instant::now());
            }
            _ => {}
        }
        let mut actions = node.handle(ev);
        let mut unlocks = Vec::new();
        // Each action is looked at once: an unlock this node sends makes more actions,
        // which are looked at in the next pass.
        let mut seen = 0;
        loop {
            let fresh = actions.len();
            for a in &actions[seen..] {
                match a {
                    Action::Applied { op, outcome, .. } => {
                        let now = tree.clock.now();
                        if let Some((path, csum)) = &outcome.unlock_request {
                            // Only the lowest node answers an unlock request (dcdb_deliver).
                            let lowest = node.members().first().map(|l| l.nodeid) == Some(me);
                            if lowest && ages.borrow_mut().expired(path, *csum, now) {
                                tracing::info!(path, "lock expired: sending unlock");
                                unlocks.push(Op::Unlock {
                                    path: path.clone(),
                                    csum: *csum,
                                });
                            }
                        }
                        // A lock taken or refreshed starts its count now (memdb_mkdir,
                        // memdb_mtime).
                        if let Op::Mkdir { path } | Op::Mtime { path, .. } = op {
                            if memdb::paths::lock_name(path).is_some() {
                                let csum = tree.replica().tree().read().entry_csum(path);
                                ages.borrow_mut().start(path, csum, now);
                            }
                        }
                    }
                    // pmxcfs forgets every count when it installs a leader's tree
                    // (memdb_update_locks).
                    Action::SyncInstalled { .. } => ages.borrow_mut().seen.clear(),
                    _ => {}
                }
            }
            seen = fresh;
            let Some(op) = unlocks.pop() else { break };
            let req_id = next_req.get() + 1;
            next_req.set(req_id);
            let more = node.handle(Event::LocalRequest { req_id, op });
            actions.extend(more);
        }
        let v = node.verifies();
        m.cluster_verifies
            .fetch_add(v.0 - verifies.0, Ordering::Relaxed);
        m.cluster_verify_mismatches
            .fetch_add(v.1 - verifies.1, Ordering::Relaxed);
        m.cluster_resent
            .fetch_add(node.resent() - resent, Ordering::Relaxed);
        m.cluster_resyncs
            .fetch_add(node.resyncs() - resyncs, Ordering::Relaxed);
        let mut stopped = false;
        for a in actions {
            match a {
                Action::Multicast(msg) => {
                    Metrics::bump(&m.cluster_sent);
                    let bytes = encode(protocol, &msg)?;
                    if let Err(e) = cpg.mcast_joined(&[&bytes]) {
                        return Err(anyhow::anyhow!("cpg_mcast_joined: {e}"));
                    }
                    if matches!(&msg.body, Body::Normal { ops, .. } if !ops.is_empty()) {
                        let reqs = node.requests_in(msg.seq);
                        stages.borrow_mut().sent(msg.seq, &reqs, Instant::now());
                    }
                }
                // Published before the writer's answer, which comes after it.
                Action::Applied { outcome, local, .. } => {
                    let origin = if local {
                        Origin::Kernel
                    } else {
                        Origin::Remote
                    };
                    tree.delivered(&outcome, origin);
                }
                Action::SyncInstalled { leader, epoch } => {
                    tracing::info!(%leader, %epoch, "installed the cluster leader's tree");
                    tree.synced();
                }
                Action::Reply { req_id, result } => {
                    let ok = result.is_ok();
                    if let Some(w) = waiting.remove(&req_id) {
                        let _ = w.send(result);
                    }
                    // Timed after the answer is on its way, and only writes that took
                    // effect: a refusal's time says nothing about the cluster.
                    match stages.borrow_mut().answered(req_id, Instant::now()) {
                        Some(st) if ok => {
                            m.write_total.record(st.total);
                            if let Some((queued, delivery, confirmation)) = st.split {
                                m.write_queued.record(queued);
                                m.write_delivery.record(delivery);
                                m.write_confirmation.record(confirmation);
                            }
                        }
                        _ => {}
                    }
                }
                Action::ModeChanged(Mode::Error) => stopped = true,
                Action::ModeChanged(mode) => tracing::info!(?mode, "cluster sync mode"),
                Action::Switched { term, pending } => {
                    // Durable before anything is sent in the new group: a node that
                    // restarts after this speaks pmxfs's protocol, never pmxcfs's.
                    tree.replica()
                        .tree()
                        .write()
                        .set_switched(term)
                        .map_err(|e| anyhow::anyhow!("recording the protocol switch: {e}"))?;
                    *switched.borrow_mut() = Some((term, pending));
                    return Err(SwitchNow.into());
                }
            }
        }
        if let Some(began) = others_write {
            m.write_apply_others.record(began.elapsed());
        }
        if stopped {
            // The core answered everything it held; its tree is what the store has.
            // Joining again as a new member resyncs it from the others.
            Metrics::bump(&m.cluster_restarts);
            anyhow::bail!("the protocol core stopped; joining the group again");
        }
        Ok(())
    };

    let view = QuorumView::new(s, quorum.getquorate().unwrap_or(false), me);
    let q = view.effective(guard.active);
    tree.status.set_quorate(q);
    run(
        &mut node,
        &mut waiting,
        Event::Tick {
            now: tree.clock.now(),
        },
    )?;
    run(&mut node, &mut waiting, Event::Quorum(q))?;
    // Writes a switch took from the previous session, in their order: held until the
    // new group accepts writes (a request made before its first quorate round would be
    // refused at once), or failed, unapplied, after the core's resend window.
    let mut carried = Some((carried, std::time::Instant::now()));
    let mut submit_carried = |node: &mut Node<Replica>, waiting: &mut Waiting| -> Result<()> {
        let Some((list, since)) = carried.take_if(|(l, since)| {
            !l.is_empty() && (node.writable() || since.elapsed() >= CARRY_FOR)
        }) else {
            return Ok(());
        };
        if !node.writable() {
            tracing::warn!(
                n = list.len(),
                waited = ?since.elapsed(),
                "writes made before the switch failed: pmxfs's group took no writes in time"
            );
            for (_, reply) in list {
                let _ = reply.send(Err(Errno::EACCES));
            }
            return Ok(());
        }
        for (op, reply) in list {
            let req_id = next_req.get() + 1;
            next_req.set(req_id);
            waiting.insert(req_id, reply);
            run(node, waiting, Event::LocalRequest { req_id, op })?;
        }
        Ok(())
    };
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut verify =
        tokio::time::interval_at(tokio::time::Instant::now() + verify_every, verify_every);
    let result: Result<()> = async {
        loop {
            tokio::select! {
                g = cpg_fd.readable() => {
                    let mut g = g?;
                    let events = cpg.dispatch(Dispatch::All).context("cpg_dispatch")?;
                    g.clear_ready();
                    quorum_events(tree, &quorum, &view, guard.active, &mut node, &mut waiting, &run)?;
                    for e in events {
                        cpg_event(tree, cmap.as_ref(), s, (&view, guard.active), &mut node, &mut waiting, &run, e)?;
                    }
                }
                g = q_fd.readable() => {
                    let mut g = g?;
                    g.clear_ready();
                    quorum_events(tree, &quorum, &view, guard.active, &mut node, &mut waiting, &run)?;
                }
                r = rx.recv() => {
                    let Some((op, reply)) = r else { return Ok(()) };
                    if let Some(pre) = unlock_request(protocol, tree, &op) {
                        tracing::info!(path = op.path(), "unlock request");
                        // pmxcfs's utime(0, 0) on a lock: ask the lowest node to release it,
                        // then send the MTIME, which its tree refuses (EACCES).
                        let req_id = next_req.get() + 1;
                        next_req.set(req_id);
                        run(&mut node, &mut waiting, Event::LocalRequest { req_id, op: pre })?;
                    }
                    let req_id = next_req.get() + 1;
                    next_req.set(req_id);
                    waiting.insert(req_id, reply);
                    run(&mut node, &mut waiting, Event::LocalRequest { req_id, op })?;
                }
                _ = verify.tick() => {
                    run(&mut node, &mut waiting, Event::VerifyNow)?;
                }
                _ = tick.tick() => {
                    submit_carried(&mut node, &mut waiting)?;
                    // Also drains anything an edge-triggered wakeup might have left behind.
                    let events = cpg.dispatch(Dispatch::All).context("cpg_dispatch")?;
                    quorum_events(tree, &quorum, &view, guard.active, &mut node, &mut waiting, &run)?;
                    for e in events {
                        cpg_event(tree, cmap.as_ref(), s, (&view, guard.active), &mut node, &mut waiting, &run, e)?;
                    }
                    run(&mut node, &mut waiting, Event::Tick { now: tree.clock.now() })?;
                    // Nodes the sentinel refused cannot accept writes: not another group.
                    let refused = tree.protocol.lock().refused.clone();
                    let mut online = tree.status.online();
                    online.retain(|n| !refused.contains(n));
                    if guard.check(me, &online, node.members(), std::time::Instant::now()) {
                        let q = view.effective(guard.active);
                        tree.status.set_quorate(q);
                        run(&mut node, &mut waiting, Event::Quorum(q))?;
                        if !guard.active {
                            tracing::info!("every node shares this node's tree group again");
                        }
                    }
                }
            }
        }
    }
    .await;
    let taken = switched.borrow_mut().take();
    match (result, taken) {
        (Ok(()), _) => Ok(End::Closed),
        (Err(e), Some((term, pending))) if e.is::<SwitchNow>() => {
            let pending = pending
                .into_iter()
                .filter_map(|(id, op)| waiting.remove(&id).map(|r| (op, r)))
                .collect();
            // Deregistered before the handle moves to the sentinel's thread.
            drop(cpg_fd);
            Ok(End::Switched {
                cpg: Box::new(cpg),
                term,
                pending,
            })
        }
        (Err(e), _) => Err(e),
    }
}

type Waiting = HashMap<u64, SyncSender<Result<(), Errno>>>;

/// In pmxcfs's protocol, the UNLOCK_REQUEST a local `utime(path, 0, 0)` on a held lock
/// sends before its MTIME, with the lock's checksum as this node sees it.
fn unlock_request(protocol: Protocol, tree: &Tree, op: &Op) -> Option<Op> {
    let Op::Mtime { path, mtime: 0 } = op else {
        return None;
    };
    if protocol != Protocol::Dfsm || memdb::paths::lock_name(path).is_none() {
        return None;
    }
    let csum = tree.replica().tree().read().entry_csum(path)?;
    Some(Op::UnlockRequest {
        path: path.clone(),
        csum,
    })
}

/// What this node feeds its core as quorum: corosync's, unless the guard holds, and,
/// in pmxfs's own protocol, only while the daemons in its tree group hold corosync's
/// quorum themselves. corosync counts nodes, not daemons: a node whose corosync runs
/// but whose pmxfs is down, or still in pmxcfs's group (between the switch and its
/// move), keeps its votes there, and the term protocol, which takes a quorate
/// configuration for a majority, would answer writes only the members it has hold,
/// and could share a term with a majority formed later without them.
struct QuorumView {
    corosync: std::cell::Cell<bool>,
    /// Node ids of corosync's quorum view (its last notification).
    corosync_members: std::cell::RefCell<Vec<u32>>,
    /// The group's daemons hold the quorum ([`QuorumView::judge`]).
    group_ok: std::cell::Cell<bool>,
    /// `judge` ran once: its first verdict always counts as a change (it is logged).
    judged: std::cell::Cell<bool>,
    /// The term protocol: the group is judged; pmxcfs's protocol keeps pmxcfs's rule.
    counts_group: bool,
    /// For each absent node's votes; `None`: judged by node count.
    votes: Option<corosync_sys::Votequorum>,
    me: u32,
}

impl QuorumView {
    fn new(s: Session, corosync: bool, me: u32) -> QuorumView {
        let counts_group = s.protocol == Protocol::Terms;
        QuorumView {
            corosync: corosync.into(),
            corosync_members: Default::default(),
            // Judged at the first confchg, before the group can carry a message.
            group_ok: (!counts_group).into(),
            judged: false.into(),
            counts_group,
            votes: counts_group
                .then(|| corosync_sys::Votequorum::initialize().ok())
                .flatten(),
            me,
        }
    }

    fn effective(&self, guarded: bool) -> bool {
        self.corosync.get() && self.group_ok.get() && !guarded
    }

    /// Judge the tree group (`group`: its members' node ids; `nodes`: the node list's
    /// length) against corosync's view; whether the verdict changed.
    fn judge(&self, group: &[u32], nodes: usize) -> bool {
        if !self.counts_group {
            return false;
        }
        let absent: Vec<u32> = self
            .corosync_members
            .borrow()
            .iter()
            .copied()
            .filter(|n| !group.contains(n))
            .collect();
        let ok = if absent.is_empty() {
            true
        } else if let Some(i) = self.votes.as_ref().and_then(|v| v.info(self.me).ok()) {
            // A node's votes are 1 unless corosync.conf says otherwise.
            let votes = absent.iter().map(|n| {
                self.votes
                    .as_ref()
                    .and_then(|v| v.info(*n).ok())
                    .map_or(1, |x| x.node_votes)
            });
            group_holds_quorum(i.total_votes, i.quorum, votes)
        } else {
            group_majority(nodes, group.len())
        };
        let first = !self.judged.replace(true);
        let changed = ok != self.group_ok.replace(ok) || first;
        if changed {
            tracing::info!(
                group = group.len(),
                corosync = self.corosync_members.borrow().len(),
                ?absent,
                "the daemons in this tree group {} corosync's quorum",
                if ok { "hold" } else { "do not hold" }
            );
        }
        changed
    }
}

/// corosync's votes present (`total`, a quorum device's included) less those of nodes
/// whose daemon is absent from the group still reach `quorum`.
fn group_holds_quorum(total: u32, quorum: u32, absent: impl Iterator<Item = u32>) -> bool {
    total.saturating_sub(absent.sum()) >= quorum
}

/// Without votequorum: a group of `members` processes holds a majority of `nodes`
/// configured nodes (a node list of two or fewer, or an unknown one, is corosync's
/// alone to judge: `two_node`).
fn group_majority(nodes: usize, members: usize) -> bool {
    nodes <= 2 || members * 2 > nodes
}

/// Feed every queued quorum notification to the core, whether or not its descriptor
/// was reported readable yet.
///
/// Called after reading a batch of CPG callbacks and before feeding them: corosync
/// sends the confchg when CPG's part of its sync activates and the quorum notification
/// when votequorum's does, later, and accepts no CPG message until the sync is over.
/// So the notification for a configuration is queued before any message of it can be
/// read, and draining here means the core's State for a round carries that
/// configuration's quorum, never the previous one's. A stale "quorate" in the State
/// of a node cut off alone would let it accept a term and apply writes without quorum;
/// a stale "not quorate" leaves the round without a term.
fn quorum_events(
    tree: &Tree,
    quorum: &Quorum,
    view: &QuorumView,
    guarded: bool,
    node: &mut Node<Replica>,
    waiting: &mut Waiting,
    run: &impl Fn(&mut Node<Replica>, &mut Waiting, Event<Op, Row>) -> Result<()>,
) -> Result<()> {
    for e in quorum.dispatch(Dispatch::All).context("quorum_dispatch")? {
        if let QuorumEvent::Quorum {
            quorate, members, ..
        } = e
        {
            tracing::info!(quorate, "quorum changed");
            view.corosync.set(quorate);
            *view.corosync_members.borrow_mut() = members;
            let group: Vec<u32> = node.members().iter().map(|m| m.nodeid).collect();
            view.judge(&group, tree.status.node_count());
            let q = view.effective(guarded);
            tree.status.set_quorate(q);
            run(node, waiting, Event::Quorum(q))?;
        }
    }
    Ok(())
}

/// Feed one CPG callback to the core (every path that dispatches CPG goes through here,
/// so no configuration change can be dropped).
#[allow(clippy::too_many_arguments)]
fn cpg_event(
    tree: &Tree,
    cmap: Option<&Cmap>,
    s: Session,
    (view, guarded): (&QuorumView, bool),
    node: &mut Node<Replica>,
    waiting: &mut Waiting,
    run: &impl Fn(&mut Node<Replica>, &mut Waiting, Event<Op, Row>) -> Result<()>,
    e: CpgEvent,
) -> Result<()> {
    match e {
        CpgEvent::Deliver { nodeid, pid, data } => {
            Metrics::bump(&tree.metrics.cluster_delivered);
            deliver(s, node, waiting, run, nodeid, pid, &data)
        }
        CpgEvent::ConfChg {
            members,
            left,
            joined,
        } => {
            let nodes = publish_members(tree, cmap);
            if !nodes.is_empty() {
                run(node, waiting, Event::Nodes(nodes.len()))?;
            }
            // Before the confchg: the State this configuration's round sends says it.
            node.set_switch_ready(s.upgrade && super::switch::ready(&nodes, &members));
            let group: Vec<u32> = members.iter().map(|m| m.nodeid).collect();
            if view.judge(&group, nodes.len()) {
                let q = view.effective(guarded);
                tree.status.set_quorate(q);
                run(node, waiting, Event::Quorum(q))?;
            }
            run(
                node,
                waiting,
                Event::ConfChg {
                    members: members.iter().map(member).collect(),
                    left: left.iter().map(member).collect(),
                    joined: joined.iter().map(member).collect(),
                },
            )
        }
        CpgEvent::TotemConfChg { .. } => Ok(()),
    }
}

/// Decode a delivered message and hand it to the core. A malformed one is logged and
/// dropped in pmxfs's protocol; in pmxcfs's it makes this node leave and join again,
/// which resyncs it (pmxcfs leaves), except one of an older protocol version, which
/// is ignored, and one of a newer, which stops this node's replication for good, as
/// pmxcfs's version error does.
fn deliver(
    s: Session,
    node: &mut Node<Replica>,
    waiting: &mut Waiting,
    run: &impl Fn(&mut Node<Replica>, &mut Waiting, Event<Op, Row>) -> Result<()>,
    nodeid: u32,
    pid: u32,
    data: &[u8],
) -> Result<()> {
    let from = Member::new(nodeid, pid);
    match verdict(s.protocol, data) {
        Verdict::Deliver(msg) => run(node, waiting, Event::Deliver { from, msg }),
        Verdict::Switched(term) if s.upgrade => {
            tracing::info!(%from, term, "a node says the cluster switched to pmxfs's own protocol");
            run(node, waiting, Event::Switched { term })
        }
        // Not allowed to switch (`--protocol pmxcfs`): pmxcfs's version error.
        Verdict::Switched(_) => Err(NewerProtocol(memdb::dcdb::SWITCHED_PROTOCOL, from).into()),
        Verdict::Drop(err) => {
            tracing::warn!(%from, len = data.len(), "dropping malformed cluster message: {err}");
            Ok(())
        }
        Verdict::Ignore(v) => {
            tracing::info!(%from, v, "ignoring a message of an older protocol version");
            Ok(())
        }
        Verdict::Leave(e) => anyhow::bail!(
            "malformed message from {from} ({} bytes): {e}; leaving the group to resync",
            data.len()
        ),
        Verdict::Newer(v) => Err(NewerProtocol(v, from).into()),
    }
}

/// What a delivered message makes this node do.
#[derive(Debug)]
enum Verdict {
    /// Hand it to the core.
    Deliver(Message<Op, Row>),
    /// pmxfs's protocol: log and drop it (its members never send one).
    Drop(String),
    /// pmxcfs's protocol: an older protocol version, ignored (pmxcfs ignores it).
    Ignore(u32),
    /// pmxcfs's protocol: malformed, so leave and join again, which resyncs (pmxcfs
    /// leaves).
    Leave(String),
    /// pmxcfs's protocol: a newer protocol version; replication stops for good (pmxcfs's
    /// version error).
    Newer(u32),
    /// pmxcfs's protocol: a switched node's announcement ([`memdb::dcdb::encode_switched`]).
    Switched(u64),
}

fn verdict(protocol: Protocol, data: &[u8]) -> Verdict {
    match protocol {
        Protocol::Terms => match wire::decode::<MemdbCodec>(data) {
            Ok(m) => Verdict::Deliver(m),
            Err(e) => Verdict::Drop(e.to_string()),
        },
        // A header check first: anything but protocol version 2 fails it at once.
        Protocol::Dfsm => match memdb::dcdb::decode_switched(data) {
            Some(term) => Verdict::Switched(term),
            None => dfsm_verdict(data),
        },
    }
}

/// [`verdict`] of a `pve_dcdb_v1` message that is not a switched node's announcement.
fn dfsm_verdict(data: &[u8]) -> Verdict {
    use dcdb_wire::DcdbError;
    use memdb::dcdb::DecodeError;
    match memdb::dcdb::decode(data) {
        Ok(m) => Verdict::Deliver(m),
        Err(DecodeError::Dcdb(DcdbError::OlderProtocol(v))) => Verdict::Ignore(v),
        Err(DecodeError::Dcdb(DcdbError::Wire(pve_status::wire::WireError::NewerProtocol(v)))) => {
            Verdict::Newer(v)
        }
        Err(e) => Verdict::Leave(e.to_string()),
    }
}

/// Publish the cluster's name and node list for `.members` and `pmxfs status` (who
/// is online is the kvstore group's part); returns the node ids it lists, whose count
/// the core counts a write's majority in (none, publishing nothing, if cmap could not
/// be read).
fn publish_members(tree: &Tree, cmap: Option<&Cmap>) -> Vec<u32> {
    let Some((name, nodes)) = super::nodelist(cmap) else {
        return Vec::new();
    };
    let ids = nodes.iter().map(|(_, id)| *id).collect();
    tree.status.set_nodelist(name, nodes);
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    /// pmxcfs's `memdb_lock_expired`: counted from when this node first saw the lock
    /// in its current state; a changed checksum (a refresh) starts the count again.
    #[test]
    fn a_lock_expires_by_this_nodes_clock_in_one_state() {
        let mut a = LockAges::default();
        let (p, c1, c2) = ("priv/lock/x", [1; 32], [2; 32]);
        assert!(!a.expired(p, c1, 1000), "first seen");
        assert!(
            !a.expired(p, c1, 1000 + UNLOCK_AFTER),
            "not beyond the timeout"
        );
        assert!(a.expired(p, c1, 1001 + UNLOCK_AFTER));
        assert!(!a.expired(p, c2, 2000), "refreshed: a new state");
        assert!(!a.expired(p, c2, 2000 + UNLOCK_AFTER));
        assert!(a.expired(p, c2, 2001 + UNLOCK_AFTER));
        a.start(p, Some(c1), 5000);
        assert!(
            !a.expired(p, c1, 5000 + UNLOCK_AFTER),
            "taken again: counted anew"
        );
        assert!(a.expired(p, c1, 5001 + UNLOCK_AFTER));
        assert!(
            !a.expired(p, c1, 4000),
            "a clock going back never expires it"
        );
        a.start(p, None, 6000);
        assert!(
            !a.expired(p, c1, 9000),
            "gone: the next request starts a count"
        );
    }

    fn capture(name: &str) -> Vec<u8> {
        let p = format!(
            "{}/../dcdb-wire/tests/fixtures/pmxcfs-wire/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    /// pmxcfs's rules for what it cannot take: an older version is ignored, a newer
    /// one is a version error, anything else malformed makes the node leave.
    #[test]
    fn malformed_pmxcfs_messages_get_pmxcfs_reactions() {
        let good = capture("n1/00018-pve_dcdb_v1.bin");
        assert!(matches!(
            verdict(Protocol::Dfsm, &good),
            Verdict::Deliver(_)
        ));
        let mut b = good.clone();
        b[4] = 0;
        assert!(matches!(verdict(Protocol::Dfsm, &b), Verdict::Ignore(0)));
        b[4] = 2;
        assert!(matches!(verdict(Protocol::Dfsm, &b), Verdict::Newer(2)));
        assert!(matches!(
            verdict(Protocol::Dfsm, &good[..10]),
            Verdict::Leave(_)
        ));
        let mut b = good.clone();
        b[2] = 9; // an unknown dcdb message type
        assert!(matches!(verdict(Protocol::Dfsm, &b), Verdict::Leave(e) if e.contains("unknown")));
        assert!(matches!(verdict(Protocol::Terms, &good), Verdict::Drop(_)));
        // A switched node's announcement, and anything else of version 2.
        let sw = memdb::dcdb::encode_switched(1000, 7);
        assert!(matches!(verdict(Protocol::Dfsm, &sw), Verdict::Switched(7)));
        assert!(matches!(
            verdict(Protocol::Dfsm, &sw[..sw.len() - 1]),
            Verdict::Newer(2)
        ));
    }

    /// Every truncation and many byte flips of every captured kind: a verdict each,
    /// never a panic.
    #[test]
    fn no_damaged_capture_panics() {
        // One of every kind: CREATE, DELETE, MKDIR, MTIME, RENAME, UNLOCK,
        // UNLOCK_REQUEST, WRITE, STATE, SYNC_START, UPDATE, UPDATE_COMPLETE, VERIFY,
        // VERIFY_REQUEST.
        let names = [14, 16, 21, 30, 22, 42, 40, 15, 3, 2, 57, 5, 67, 66]
            .map(|n| format!("n1/{n:05}-pve_dcdb_v1.bin"));
        let mut seen = 0;
        // And a switched node's announcement, which the sentinel's peers read too.
        let inputs = names
            .iter()
            .map(|n| capture(n))
            .chain([memdb::dcdb::encode_switched(1000, 7)]);
        for good in inputs {
            for len in 0..good.len() {
                let _ = verdict(Protocol::Dfsm, &good[..len]);
                seen += 1;
            }
            for i in 0..good.len() {
                for x in [0x01u8, 0x80, 0xff] {
                    let mut b = good.clone();
                    b[i] ^= x;
                    let _ = verdict(Protocol::Dfsm, &b);
                    let _ = verdict(Protocol::Terms, &b);
                    let _ = memdb::dcdb::decode_switched(&b);
                    seen += 1;
                }
            }
        }
        assert!(seen > 1000, "{seen} damaged messages");
    }

    #[test]
    fn nodes_outside_the_tree_group_stop_writes_after_a_while() {
        let t0 = std::time::Instant::now();
        let m = |n| Member::new(n, 100);
        let mut g = Guard::default();
        let members = [m(1), m(2)];
        assert!(!g.check(1, &[1, 2], &members, t0), "everyone in the group");
        assert!(!g.check(1, &[1, 2, 3], &members, t0), "n3 just started");
        assert!(!g.active);
        let later = t0 + FOREIGN_AFTER;
        assert!(g.check(1, &[1, 2, 3], &members, later), "n3 stayed outside");
        assert!(g.active);
        assert!(!g.check(1, &[1, 2, 3], &members, later + FOREIGN_AFTER));
        assert!(
            g.check(1, &[1, 2, 3], &[m(1), m(2), m(3)], later),
            "n3 joined"
        );
        assert!(!g.active);
        // Each outsider has its own count.
        assert!(!g.check(1, &[1, 2, 3], &members, t0));
        assert!(!g.check(1, &[1, 2, 4], &members, later));
        assert!(!g.active, "n4 is new: counted from now");
        // A member that leaves and comes back does not restart n4's count (CI: the
        // guarded node resynced every 2 s and the unguarded one never counted to 10).
        let mid = later + FOREIGN_AFTER / 2;
        assert!(!g.check(1, &[1, 2, 4], &[m(1)], mid));
        assert!(!g.check(1, &[1, 2, 4], &members, mid));
        // Not in its own group yet (joining again): the guard stays as it was.
        assert!(g.check(1, &[1, 2, 4], &members, later + FOREIGN_AFTER));
        assert!(g.active);
        assert!(!g.check(1, &[1, 2, 4], &[m(2)], later + FOREIGN_AFTER * 2));
        assert!(g.active, "rejoining does not lift the guard");
    }

    #[test]
    fn the_group_must_hold_the_quorum_itself() {
        // 3 nodes of 1 vote, quorum 2: two daemons down, their corosync up.
        assert!(!group_holds_quorum(3, 2, [1, 1].into_iter()));
        assert!(group_holds_quorum(3, 2, [1].into_iter()));
        assert!(group_holds_quorum(3, 2, std::iter::empty()));
        // Two nodes and a quorum device of 1 vote: n2's daemon down, the device's
        // vote still counts for n1.
        assert!(group_holds_quorum(3, 2, [1].into_iter()));
        // A node with 3 votes whose daemon is down.
        assert!(!group_holds_quorum(5, 3, [3].into_iter()));
        assert!(!group_majority(3, 1), "alone of three");
        assert!(group_majority(3, 2));
        assert!(!group_majority(4, 2), "half is not a majority");
        assert!(group_majority(2, 1), "two_node: corosync's call");
        assert!(group_majority(0, 1), "node list unknown");
        let s = |protocol| Session {
            verify_every: Duration::from_secs(1),
            protocol,
            upgrade: true,
        };
        let v = QuorumView::new(s(Protocol::Terms), true, 1);
        assert!(!v.effective(false), "judged at the first confchg");
        *v.corosync_members.borrow_mut() = vec![1, 2, 3];
        // No votequorum here: by node count.
        let _ = v.judge(&[1], 3);
        assert!(!v.effective(false), "alone of three running corosyncs");
        assert!(v.judge(&[1, 2], 3));
        assert!(v.effective(false) && !v.effective(true));
        let c = QuorumView::new(s(Protocol::Dfsm), true, 1);
        *c.corosync_members.borrow_mut() = vec![1, 2, 3];
        assert!(!c.judge(&[1], 3));
        assert!(
            c.effective(false),
            "pmxcfs's protocol: corosync's quorum alone"
        );
    }

    #[test]
    fn the_group_follows_the_protocol() {
        assert_eq!(group(Protocol::Terms), "pmxfs_dcdb_v2");
        assert_eq!(group(Protocol::Dfsm), "pve_dcdb_v1\0");
    }
}
