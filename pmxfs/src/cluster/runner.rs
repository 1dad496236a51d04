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
use std::time::Duration;

use anyhow::{Context, Result};
use cluster_sync::core::{Action, Event, Member, Mode, Node};
use cluster_sync::wire;
use corosync_sys::{Cmap, Cpg, CpgAddress, CpgEvent, Dispatch, Quorum, QuorumEvent};
use memdb::codec::MemdbCodec;
use memdb::replica::Replica;
use memdb::{Op, Row};
use nix::errno::Errno;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc::{channel, Receiver, Sender};

use crate::tree::{Metrics, Origin, Replicator, Tree};

/// CPG group of pmxfs nodes (not pmxcfs's `pve_dcdb_v1`: the encoding differs).
pub const GROUP: &str = "pmxfs_dcdb_v2";

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

/// Start the cluster thread, which checks the tree against the other nodes' every
/// `verify_every`; returns the replicator for [`Tree::set_replicator`].
pub fn start(tree: Arc<Tree>, verify_every: Duration) -> Result<ClusterReplicator> {
    let (tx, rx) = channel(REQUEST_QUEUE);
    std::thread::Builder::new()
        .name("pmxfs-cluster".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(supervise(tree, rx, verify_every));
        })?;
    Ok(ClusterReplicator { tx })
}

async fn supervise(tree: Arc<Tree>, mut rx: Receiver<Request>, verify_every: Duration) {
    loop {
        match session(&tree, &mut rx, verify_every).await {
            Ok(()) => return,
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

async fn session(
    tree: &Arc<Tree>,
    rx: &mut Receiver<Request>,
    verify_every: Duration,
) -> Result<()> {
    let cpg = Cpg::initialize().context("cpg_initialize")?;
    let quorum = Quorum::initialize().context("quorum_initialize")?;
    let cmap = Cmap::initialize().ok();
    quorum.trackstart().context("quorum_trackstart")?;
    cpg.join(GROUP).context("cpg_join")?;
    let me = cpg.local_get().context("cpg_local_get")?;
    let pid = std::process::id();
    // SAFETY: the descriptors belong to `cpg` and `quorum`, which are declared before
    // and therefore dropped after these registrations.
    let cpg_fd = unsafe { AsyncFd::register_with_interest(Fd(cpg.fd_get()?), Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("registering the cpg fd: {e:?}"))?;
    let q_fd = unsafe { AsyncFd::register_with_interest(Fd(quorum.fd_get()?), Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("registering the quorum fd: {e:?}"))?;
    tracing::info!(nodeid = me, group = GROUP, "joined the cluster group");

    let mut node = Node::new(Member::new(me, pid), tree.replica());
    let mut waiting: Waiting = HashMap::new();
    let mut next_req = 0u64;
    let m = &tree.metrics;
    let run = |node: &mut Node<Replica>, waiting: &mut Waiting, ev: Event<Op, Row>| -> Result<()> {
        let (resent, resyncs, verifies) = (node.resent(), node.resyncs(), node.verifies());
        let actions = node.handle(ev);
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
                    let bytes = wire::encode::<MemdbCodec>(&msg);
                    if let Err(e) = cpg.mcast_joined(&[&bytes]) {
                        return Err(anyhow::anyhow!("cpg_mcast_joined: {e}"));
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
                    if let Some(w) = waiting.remove(&req_id) {
                        let _ = w.send(result);
                    }
                }
                Action::ModeChanged(Mode::Error) => stopped = true,
                Action::ModeChanged(mode) => tracing::info!(?mode, "cluster sync mode"),
            }
        }
        if stopped {
            // The core answered everything it held; its tree is what the store has.
            // Joining again as a new member resyncs it from the others.
            Metrics::bump(&m.cluster_restarts);
            anyhow::bail!("the protocol core stopped; joining the group again");
        }
        Ok(())
    };

    let q = quorum.getquorate().unwrap_or(false);
    tree.status.set_quorate(q);
    run(
        &mut node,
        &mut waiting,
        Event::Tick {
            now: tree.clock.now(),
        },
    )?;
    run(&mut node, &mut waiting, Event::Quorum(q))?;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut verify =
        tokio::time::interval_at(tokio::time::Instant::now() + verify_every, verify_every);
    loop {
        tokio::select! {
            g = cpg_fd.readable() => {
                let mut g = g?;
                let events = cpg.dispatch(Dispatch::All).context("cpg_dispatch")?;
                g.clear_ready();
                quorum_events(tree, &quorum, &mut node, &mut waiting, &run)?;
                for e in events {
                    cpg_event(tree, cmap.as_ref(), &mut node, &mut waiting, &run, e)?;
                }
            }
            g = q_fd.readable() => {
                let mut g = g?;
                g.clear_ready();
                quorum_events(tree, &quorum, &mut node, &mut waiting, &run)?;
            }
            r = rx.recv() => {
                let Some((op, reply)) = r else { return Ok(()) };
                next_req += 1;
                waiting.insert(next_req, reply);
                run(&mut node, &mut waiting, Event::LocalRequest { req_id: next_req, op })?;
            }
            _ = verify.tick() => {
                run(&mut node, &mut waiting, Event::VerifyNow)?;
            }
            _ = tick.tick() => {
                // Also drains anything an edge-triggered wakeup might have left behind.
                let events = cpg.dispatch(Dispatch::All).context("cpg_dispatch")?;
                quorum_events(tree, &quorum, &mut node, &mut waiting, &run)?;
                for e in events {
                    cpg_event(tree, cmap.as_ref(), &mut node, &mut waiting, &run, e)?;
                }
                run(&mut node, &mut waiting, Event::Tick { now: tree.clock.now() })?;
            }
        }
    }
}

type Waiting = HashMap<u64, SyncSender<Result<(), Errno>>>;

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
    node: &mut Node<Replica>,
    waiting: &mut Waiting,
    run: &impl Fn(&mut Node<Replica>, &mut Waiting, Event<Op, Row>) -> Result<()>,
) -> Result<()> {
    for e in quorum.dispatch(Dispatch::All).context("quorum_dispatch")? {
        if let QuorumEvent::Quorum { quorate, .. } = e {
            tracing::info!(quorate, "quorum changed");
            tree.status.set_quorate(quorate);
            run(node, waiting, Event::Quorum(quorate))?;
        }
    }
    Ok(())
}

/// Feed one CPG callback to the core (every path that dispatches CPG goes through here,
/// so no configuration change can be dropped).
fn cpg_event(
    tree: &Tree,
    cmap: Option<&Cmap>,
    node: &mut Node<Replica>,
    waiting: &mut Waiting,
    run: &impl Fn(&mut Node<Replica>, &mut Waiting, Event<Op, Row>) -> Result<()>,
    e: CpgEvent,
) -> Result<()> {
    match e {
        CpgEvent::Deliver { nodeid, pid, data } => {
            Metrics::bump(&tree.metrics.cluster_delivered);
            deliver(node, waiting, run, nodeid, pid, &data)
        }
        CpgEvent::ConfChg {
            members,
            left,
            joined,
        } => {
            let nodes = publish_members(tree, cmap);
            if nodes > 0 {
                run(node, waiting, Event::Nodes(nodes))?;
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

/// Decode a delivered message and hand it to the core; malformed ones are logged and
/// dropped.
fn deliver(
    node: &mut Node<Replica>,
    waiting: &mut Waiting,
    run: &impl Fn(&mut Node<Replica>, &mut Waiting, Event<Op, Row>) -> Result<()>,
    nodeid: u32,
    pid: u32,
    data: &[u8],
) -> Result<()> {
    match wire::decode::<MemdbCodec>(data) {
        Ok(msg) => run(
            node,
            waiting,
            Event::Deliver {
                from: Member::new(nodeid, pid),
                msg,
            },
        ),
        Err(err) => {
            tracing::warn!(
                nodeid,
                pid,
                len = data.len(),
                "dropping malformed cluster message: {err}"
            );
            Ok(())
        }
    }
}

/// Publish the cluster's name and node list for `.members` and `pmxfs status` (who
/// is online is the kvstore group's part); returns how many nodes it lists, which the
/// core counts a write's majority in (0, publishing nothing, if cmap could not be read).
fn publish_members(tree: &Tree, cmap: Option<&Cmap>) -> usize {
    let Some((name, nodes)) = super::nodelist(cmap) else {
        return 0;
    };
    let n = nodes.len();
    tree.status.set_nodelist(name, nodes);
    n
}
