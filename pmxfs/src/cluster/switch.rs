//! The switch from pmxcfs's protocol to pmxfs's own (README, "Mixed clusters and
//! upgrading"; cluster-sync's DESIGN.md, "The switch").
//!
//! Before it: when this node may switch (`--protocol auto`) and every node of
//! corosync's node list is in the configuration, its States offer the switch
//! ([`ready`]); a round whose States all offer it ends with every member switching at
//! its UpdateComplete, which the core decides.
//!
//! After it, this node keeps a member in `pve_dcdb_v1`, the sentinel, so that no
//! pmxcfs daemon can ever find that group without a switched node in it and accept
//! writes alone: whenever a process joins, the sentinel multicasts the switched message
//! ([`memdb::dcdb::encode_switched`]). A pmxcfs daemon stops on it with its own "detected
//! newer protocol - please update this node" and leaves the tree group (a write there then
//! blocks, pmxcfs 9.1.6's way, and reaches no tree); a pmxfs
//! node still in pmxcfs's protocol switches too. The nodes it told are "refused", which
//! the mixed-protocol guard then does not count as another cluster accepting writes.
//! When to tell is the core's [`Sentinel`]; this is its corosync adapter.
use std::sync::Arc;
use std::time::Duration;

use cluster_sync::core::{Member, Sentinel};
use corosync_sys::{Cpg, CpgAddress, CpgEvent, Dispatch};

use crate::tree::Tree;

/// Whether this node's States may offer the switch in a configuration of `members`:
/// every node of the cluster's node list (`nodes`, empty if unknown) is in it. A node
/// down or still running pmxcfs keeps the cluster in pmxcfs's protocol, so a node
/// rebooting during the upgrade is never locked out by a switch made without it.
pub fn ready(nodes: &[u32], members: &[CpgAddress]) -> bool {
    !nodes.is_empty() && nodes.iter().all(|n| members.iter().any(|m| m.nodeid == *n))
}

/// Keep a member in `pve_dcdb_v1` for the life of the process, announcing the switch
/// at `term`. `cpg` is the compat session's handle, already in the group, so the
/// group never lacks this node between the switch and the sentinel; `None` (a node
/// that switched before this start) joins anew.
pub fn spawn(cpg: Option<Cpg>, term: u64, tree: Arc<Tree>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("pmxfs-sentinel".into())
        .spawn(move || run(cpg, term, &tree))
        .map(|_| ())
}

fn run(mut cpg: Option<Cpg>, term: u64, tree: &Tree) {
    let mut sentinel = Sentinel::default();
    loop {
        let c = match cpg.take().map(Ok).unwrap_or_else(join) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("sentinel: joining pve_dcdb_v1: {e:#}; again in 2 s");
                std::thread::sleep(Duration::from_secs(2));
                continue;
            }
        };
        if let Err(e) = serve(&c, term, tree, &mut sentinel) {
            tracing::warn!("sentinel: {e:#}; joining pve_dcdb_v1 again");
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

fn join() -> anyhow::Result<Cpg> {
    let c = Cpg::initialize()?;
    c.join(super::runner::group(cluster_sync::core::Protocol::Dfsm))?;
    Ok(c)
}

fn announce(c: &Cpg, term: u64, tree: &Tree) -> anyhow::Result<()> {
    let msg = memdb::dcdb::encode_switched(tree.clock.now(), term);
    c.mcast_joined(&[&msg])?;
    Ok(())
}

/// Until the handle fails: announce once (whoever is there now), then whenever the
/// core's [`Sentinel`] says so.
fn serve(c: &Cpg, term: u64, tree: &Tree, sentinel: &mut Sentinel) -> anyhow::Result<()> {
    let me = Member::new(c.local_get()?, std::process::id());
    let fd = c.fd_get()?;
    announce(c, term, tree)?;
    tracing::info!(
        term,
        "sentinel in pve_dcdb_v1: pmxcfs daemons joining it are refused"
    );
    loop {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the call's duration.
        let n = unsafe { libc::poll(&mut p, 1, 1000) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                anyhow::bail!("poll: {e}");
            }
            continue;
        }
        let before = sentinel.told();
        for e in c.dispatch(Dispatch::All)? {
            let tell = match e {
                CpgEvent::ConfChg { joined, .. } => {
                    let joined: Vec<Member> = joined.iter().map(member).collect();
                    sentinel.confchg(me, &joined)
                }
                CpgEvent::Deliver { nodeid, pid, data } => {
                    let announcement = memdb::dcdb::decode_switched(&data).is_some();
                    sentinel.heard(me, Member::new(nodeid, pid), announcement)
                }
                CpgEvent::TotemConfChg { .. } => false,
            };
            if tell {
                announce(c, term, tree)?;
            }
        }
        let told = sentinel.told();
        if told != before {
            let new: Vec<u32> = told
                .iter()
                .filter(|n| !before.contains(n))
                .copied()
                .collect();
            tracing::warn!(
                nodes = ?new,
                term,
                "refusing daemons in pmxcfs's protocol: this cluster switched to pmxfs's \
                 own; a pmxcfs daemon stops ('detected newer protocol - please update this \
                 node') and leaves the tree group, a pmxfs node switches too; install pmxfs there"
            );
            tree.protocol.lock().refused = told;
        }
    }
}

fn member(a: &CpgAddress) -> Member {
    Member::new(a.nodeid, a.pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(nodeid: u32) -> CpgAddress {
        CpgAddress {
            nodeid,
            pid: 100,
            reason: corosync_sys::CpgReason::Join,
        }
    }

    #[test]
    fn ready_only_with_every_listed_node() {
        assert!(ready(&[1, 2, 3], &[a(1), a(2), a(3)]));
        assert!(!ready(&[1, 2, 3], &[a(1), a(3)]), "n2 is down");
        assert!(!ready(&[], &[a(1)]), "node list unknown");
        assert!(ready(&[1], &[a(1), a(4)]), "a node outside the list");
    }
}
