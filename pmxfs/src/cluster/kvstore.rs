//! The kvstore thread: this node in pmxcfs's `pve_kvstore_v1` CPG group, so that every
//! node's status (`SET_STATUS` keys, RRD updates, addresses) and cluster log reach the
//! others, byte-compatible with pmxcfs. A thin adapter: `pve_status::group` decides
//! what to send and store; this loop feeds it corosync's callbacks and this node's
//! updates and carries out its actions. If the group is left (a peer's protocol
//! violation, or corosync gone), it joins again with a new member, which resyncs.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use corosync_sys::{Cmap, Cpg, CpgEvent, Dispatch};
use pve_status::clog::Entry;
use pve_status::group::{Action, Event, Group, Member};
use pve_status::wire::GROUP;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc::{channel, error::TrySendError, Receiver, Sender};

use crate::tree::status::KvGroupView;
use crate::tree::{Metrics, StatusBroadcast, Tree};

/// This node's updates handed to the kvstore thread and not yet sent. A burst beyond
/// it is dropped and counted (`kvstore_dropped`), never waited for: an IPC client must
/// not wait for corosync. pvestatd sends its keys again every 10 s, and every sync
/// sends all of them again.
pub const OUTGOING_QUEUE: usize = 4096;

/// What this node tells the others.
#[derive(Debug)]
pub enum Outgoing {
    /// A `SET_STATUS` of this node.
    Set {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
    },
    /// A log entry made on this node.
    Log(Entry),
}

/// Hands this node's updates to the kvstore thread.
pub struct KvBroadcaster {
    tx: Sender<Outgoing>,
    tree: Arc<Tree>,
}

impl StatusBroadcast for KvBroadcaster {
    fn set(&self, key: &str, value: &[u8]) {
        self.send(Outgoing::Set {
            key: key.to_string(),
            value: value.to_vec(),
        });
    }

    fn log(&self, entry: &Entry) {
        self.send(Outgoing::Log(entry.clone()));
    }
}

impl KvBroadcaster {
    fn send(&self, o: Outgoing) {
        match self.tx.try_send(o) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                Metrics::bump(&self.tree.metrics.kvstore_dropped);
                tracing::warn!("kvstore: outgoing queue full; dropping an update");
            }
            Err(TrySendError::Closed(_)) => {}
        }
    }
}

#[derive(Debug)]
struct Fd(RawFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Start the kvstore thread for node `nodename`.
pub fn start(tree: Arc<Tree>, nodename: String) -> Result<KvBroadcaster> {
    let (tx, rx) = channel(OUTGOING_QUEUE);
    let t = tree.clone();
    std::thread::Builder::new()
        .name("pmxfs-kvstore".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(supervise(t, rx, nodename));
        })?;
    Ok(KvBroadcaster { tx, tree })
}

/// How a session ended.
enum End {
    /// The daemon is stopping.
    Shutdown,
    /// Out of the group for good (a newer protocol).
    Stopped,
}

/// This node's address when no client set `nodeip`: as pmxcfs, the first address of
/// its name that is not a loopback one; failing that (pmxcfs refuses to start), its
/// corosync ring0 address.
fn default_ip(nodename: &str, cmap: Option<&Cmap>, me: u32) -> Option<String> {
    use std::net::ToSocketAddrs;
    let resolved = (nodename, 0)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.find(|a| !a.ip().is_loopback()))
        .map(|a| a.ip().to_string());
    resolved.or_else(|| {
        let ring0 = cmap?
            .nodelist()
            .ok()?
            .into_iter()
            .find(|n| n.nodeid == me)?
            .ring0_addr;
        ring0
            .parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| ip.to_string())
    })
}

async fn supervise(tree: Arc<Tree>, mut rx: Receiver<Outgoing>, nodename: String) {
    loop {
        let r = session(&tree, &mut rx, &nodename).await;
        tree.status.set_online(Vec::new());
        tree.status.set_kvstore(KvGroupView {
            mode: "Out of the group".into(),
            members: Vec::new(),
        });
        let wait = match r {
            Ok(End::Shutdown) => return,
            Ok(End::Stopped) => None,
            Err(e) => {
                tracing::error!("kvstore: {e:#}; joining the group again");
                Some(Duration::from_secs(1))
            }
        };
        Metrics::bump(&tree.metrics.kvstore_restarts);
        // Updates made while out of the group are in the store and are sent again
        // after the next sync; drop them here so that none waits.
        let Some(wait) = wait else {
            while rx.recv().await.is_some() {}
            return;
        };
        let pause = tokio::time::sleep(wait);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                _ = &mut pause => break,
                r = rx.recv() => if r.is_none() { return },
            }
        }
    }
}

async fn session(tree: &Arc<Tree>, rx: &mut Receiver<Outgoing>, nodename: &str) -> Result<End> {
    let cpg = Cpg::initialize().context("cpg_initialize")?;
    let cmap = Cmap::initialize().ok();
    cpg.join(GROUP).context("cpg_join")?;
    let me = Member {
        nodeid: cpg.local_get().context("cpg_local_get")?,
        pid: std::process::id(),
    };
    // SAFETY: the descriptor belongs to `cpg`, declared before and so dropped after.
    let fd = unsafe { AsyncFd::register_with_interest(Fd(cpg.fd_get()?), Interest::READABLE) }
        .map_err(|e| anyhow!("registering the cpg fd: {e:?}"))?;
    let ip = default_ip(nodename, cmap.as_ref(), me.nodeid);
    tracing::info!(nodeid = me.nodeid, ip = ?ip, "joined the kvstore group");
    let mut group = Group::new(me, ip);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut known = super::nodelist(cmap.as_ref()).unwrap_or_default();
    loop {
        let events = tokio::select! {
            g = fd.readable() => {
                let mut g = g?;
                let ev = cpg.dispatch(Dispatch::All).context("cpg_dispatch")?;
                g.clear_ready();
                ev
            }
            // Also drains anything an edge-triggered wakeup might have left behind, and
            // follows the node list, which a corosync reload changes without any
            // membership change (a node removed from corosync.conf).
            _ = tick.tick() => {
                let list = super::nodelist(cmap.as_ref()).unwrap_or_else(|| known.clone());
                if list != known {
                    tree.kv.lock().set_nodes(list.1.iter().map(|(n, id)| (*id, n.clone())));
                    tree.status.set_nodelist(list.0.clone(), list.1.clone());
                    known = list;
                }
                cpg.dispatch(Dispatch::All).context("cpg_dispatch")?
            }
            r = rx.recv() => {
                let Some(o) = r else { return Ok(End::Shutdown) };
                let now = tree.clock.now();
                let actions = {
                    let mut store = tree.kv.lock();
                    let ev = match &o {
                        Outgoing::Set { key, value } => Event::LocalSet { key, value },
                        Outgoing::Log(entry) => Event::LocalLog { entry },
                    };
                    group.handle(&mut store, ev, now)
                };
                if let Some(end) = carry_out(tree, &cpg, actions)? {
                    return Ok(end);
                }
                continue;
            }
        };
        for e in events {
            let now = tree.clock.now();
            let actions = match e {
                CpgEvent::Deliver { nodeid, pid, data } => {
                    Metrics::bump(&tree.metrics.kvstore_delivered);
                    let from = Member { nodeid, pid };
                    let mut store = tree.kv.lock();
                    group.handle(&mut store, Event::Deliver { from, data: &data }, now)
                }
                CpgEvent::ConfChg { members, .. } => {
                    let nodes = super::nodelist(cmap.as_ref())
                        .unwrap_or_else(|| known.clone())
                        .1;
                    let members: Vec<Member> = members
                        .iter()
                        .map(|a| Member {
                            nodeid: a.nodeid,
                            pid: a.pid,
                        })
                        .collect();
                    let mut store = tree.kv.lock();
                    // Peers' updates are stored by name; cmap knows the names.
                    store.set_nodes(nodes.into_iter().map(|(name, id)| (id, name)));
                    group.handle(&mut store, Event::ConfChg { members: &members }, now)
                }
                CpgEvent::TotemConfChg { .. } => continue,
            };
            publish(tree, &group);
            if let Some(end) = carry_out(tree, &cpg, actions)? {
                return Ok(end);
            }
        }
    }
}

/// Publish the group's mode and members for `pmxfs status`.
fn publish(tree: &Tree, group: &Group) {
    let view = KvGroupView {
        mode: format!("{:?}", group.mode()),
        members: group.members().iter().map(|m| (m.nodeid, m.pid)).collect(),
    };
    tree.status.set_kvstore(view);
}

/// Carry out the group's actions; `Some` when the session is over.
fn carry_out(tree: &Tree, cpg: &Cpg, actions: Vec<Action>) -> Result<Option<End>> {
    for a in actions {
        match a {
            Action::Send(bytes) => {
                Metrics::bump(&tree.metrics.kvstore_sent);
                cpg.mcast_joined(&[&bytes])
                    .map_err(|e| anyhow!("cpg_mcast_joined: {e}"))?;
            }
            Action::Rrd { key, data } => tree.write_rrd(&key, &data),
            Action::Online(ids) => tree.status.set_online(ids),
            Action::AddressChanged => tree.publish_ips(),
            Action::Leave(why) => return Err(anyhow!("left the group: {why}")),
            Action::Stop(why) => {
                tracing::error!("kvstore: out of the group for good: {why}");
                let _ = cpg.leave();
                return Ok(Some(End::Stopped));
            }
        }
    }
    Ok(None)
}
