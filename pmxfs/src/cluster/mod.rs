//! Cluster mode: the corosync adapters. `runner` carries cluster-sync's protocol core,
//! which replicates the tree (through `memdb::replica`) and publishes what it applies
//! through the tree service; `stages` times this node's own writes; `kvstore` is this
//! node in pmxcfs's status group.
pub mod kvstore;
pub mod runner;
pub mod stages;
pub mod switch;

use corosync_sys::Cmap;

/// The cluster's name, if cmap has one, and its nodes as (name, node id).
pub type NodeList = (Option<String>, Vec<(String, u32)>);

/// The cluster's name and its node list (name, id) from cmap; a node without a name
/// is named by its ring0 address, as corosync.conf allows. `None` if cmap could not be
/// read (no connection, or an error such as CS_ERR_TRY_AGAIN while corosync syncs): the
/// caller keeps the list it has rather than publish an empty one.
pub fn nodelist(cmap: Option<&Cmap>) -> Option<NodeList> {
    let c = cmap?;
    let nodes = c
        .nodelist()
        .map_err(|e| tracing::debug!("reading the node list from cmap: {e}"))
        .ok()?
        .into_iter()
        .map(|n| {
            let name = if n.name.is_empty() {
                n.ring0_addr
            } else {
                n.name
            };
            (name, n.nodeid)
        })
        .collect();
    Some((c.cluster_name().ok(), nodes))
}
