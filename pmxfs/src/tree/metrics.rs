//! Counters every adapter bumps and `pmxfs status` reports.

use std::sync::atomic::{AtomicU64, Ordering};

use super::latency::Latency;

/// Counters since start.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Changes applied to this node's tree.
    pub ops_applied: AtomicU64,
    /// LOOKUP requests served (each one is a kernel cache miss).
    pub lookups: AtomicU64,
    /// GETATTR requests served.
    pub getattrs: AtomicU64,
    /// Requests served through the io_uring queues.
    pub ring_requests: AtomicU64,
    /// Open file handles now.
    pub open_handles: AtomicU64,
    /// Own cluster writes, from the request reaching the cluster thread to its answer.
    pub write_total: Latency,
    /// The first stage of that: waiting to be sent (behind this node's message on the
    /// wire, or a sync round).
    pub write_queued: Latency,
    /// The second: from the multicast to its delivery back here (corosync's totem).
    pub write_delivery: Latency,
    /// The third: from that delivery until a majority is known to hold it.
    pub write_confirmation: Latency,
    /// Another member's writes here: from their delivery until this node has applied
    /// and published them and sent its acknowledgement, if it owes one.
    pub write_apply_others: Latency,
    /// Cluster messages this node multicast.
    pub cluster_sent: AtomicU64,
    /// Cluster messages delivered to this node.
    pub cluster_delivered: AtomicU64,
    /// Own writes a membership change lost that were sent again.
    pub cluster_resent: AtomicU64,
    /// Sync rounds restarted because quorum was known only after this node's State.
    pub cluster_resyncs: AtomicU64,
    /// Cross-node checks of the tree this node took part in.
    pub cluster_verifies: AtomicU64,
    /// Checks that found this node's tree differing (each one resynced it).
    pub cluster_verify_mismatches: AtomicU64,
    /// Times the cluster core stopped (a storage failure) and was restarted.
    pub cluster_restarts: AtomicU64,
    /// IPC connections accepted.
    pub ipc_connections: AtomicU64,
    /// IPC requests answered.
    pub ipc_requests: AtomicU64,
    /// IPC clients dropped because their reply could not be sent.
    pub ipc_dropped: AtomicU64,
    /// Messages this node sent to the kvstore group.
    pub kvstore_sent: AtomicU64,
    /// Messages delivered from the kvstore group (own included).
    pub kvstore_delivered: AtomicU64,
    /// This node's updates dropped because the kvstore thread's queue was full.
    pub kvstore_dropped: AtomicU64,
    /// Times this node left the kvstore group and joined again.
    pub kvstore_restarts: AtomicU64,
    /// RRD updates written.
    pub rrd_written: AtomicU64,
    /// RRD updates that failed or were dropped because the writer's queue was full.
    pub rrd_failed: AtomicU64,
}

impl Metrics {
    /// Add one to `c`.
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Read `c`.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}
