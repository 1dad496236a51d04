//! The daemon's wall clock in pmxcfs's unit (whole seconds in a u32).

/// Seconds since the epoch, saturated into pmxcfs's u32 mtime.
pub fn now_secs() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs().min(u32::MAX as u64) as u32)
        .unwrap_or(0)
}
