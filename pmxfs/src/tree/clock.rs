//! The daemon's wall clock in pmxcfs's unit (whole seconds in a u32). Lock expiry, the
//! mtime of changes and the cluster's message times all read it. Tests move it forward
//! through the control socket (`--debug-hooks`) instead of sleeping out a lock timeout.

use std::sync::atomic::{AtomicI64, Ordering};

/// System time plus an offset only tests ever set.
#[derive(Debug, Default)]
pub struct Clock {
    offset: AtomicI64,
}

impl Clock {
    /// Seconds since the epoch, saturated into pmxcfs's u32 mtime.
    pub fn now(&self) -> u32 {
        let sys = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        (sys + self.offset.load(Ordering::Relaxed)).clamp(0, u32::MAX as i64) as u32
    }

    /// Move the clock forward by `secs` (tests).
    pub fn advance(&self, secs: i64) {
        self.offset.fetch_add(secs.max(0), Ordering::Relaxed);
    }
}
