//! The RRD writer thread: every RRD update this node stores, its own or a peer's, is
//! written to its file under the RRD directory (through rrdcached when it runs) by
//! `rrd-sys`, off the IPC and kvstore threads, which must never wait for a disk.

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Weak};

use anyhow::Result;
use rrd_sys::RrdWriter;

use crate::tree::{Metrics, RrdSink, Tree};

/// Updates waiting for the writer. pvestatd sends one per node, guest and storage every
/// 10 s; a burst beyond this is dropped and counted (`rrd_failed`): the next update of
/// the same series follows within seconds.
pub const RRD_QUEUE: usize = 4096;

/// Hands updates to the writer thread.
pub struct RrdQueue {
    tx: SyncSender<(String, String)>,
    // Weak: the tree holds this queue.
    tree: Weak<Tree>,
}

impl RrdSink for RrdQueue {
    fn update(&self, key: &str, data: &str) {
        match self.tx.try_send((key.to_string(), data.to_string())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                if let Some(t) = self.tree.upgrade() {
                    Metrics::bump(&t.metrics.rrd_failed);
                }
                tracing::warn!(key, "RRD writer queue full; dropping an update");
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// Start the writer over `writer` for `tree`'s updates.
pub fn start(writer: RrdWriter, tree: &Arc<Tree>) -> Result<RrdQueue> {
    let (tx, rx) = sync_channel::<(String, String)>(RRD_QUEUE);
    let weak = Arc::downgrade(tree);
    std::thread::Builder::new()
        .name("pmxfs-rrd".into())
        .spawn(move || {
            for (key, data) in rx {
                let Some(t) = weak.upgrade() else { return };
                match writer.update(&key, &data) {
                    Ok(()) => Metrics::bump(&t.metrics.rrd_written),
                    Err(e) => {
                        Metrics::bump(&t.metrics.rrd_failed);
                        // The errors carry pmxcfs's wording, which administrators
                        // grep for ("RRD update error", "RRD create error").
                        tracing::warn!("{e}");
                    }
                }
            }
        })?;
    Ok(RrdQueue {
        tx,
        tree: Arc::downgrade(tree),
    })
}
