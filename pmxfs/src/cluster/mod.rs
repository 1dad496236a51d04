//! Cluster mode: the corosync adapters. `runner` carries cluster-sync's protocol core,
//! which replicates the tree (through `memdb::replica`) and publishes what it applies
//! through the tree service; `kvstore` is this node in pmxcfs's status group.
pub mod kvstore;
pub mod runner;

use corosync_sys::Cmap;

/// The cluster's name and its node list (name, id) from cmap; a node without a name
/// is named by its ring0 address, as corosync.conf allows.
pub fn nodelist(cmap: Option<&Cmap>) -> (Option<String>, Vec<(String, u32)>) {
    let Some(c) = cmap else {
        return (None, Vec::new());
    };
    let nodes = c
        .nodelist()
        .unwrap_or_default()
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
    (c.cluster_name().ok(), nodes)
}
