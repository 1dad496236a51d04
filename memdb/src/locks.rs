//! Lock rules for `priv/lock/<NAME>` directories, as pure functions of stored state and
//! the operation's time. Used identically by local mode and by replicated apply (where
//! `now` is the writer's timestamp carried in the message), so every node reaches the
//! same verdict.

/// Seconds after its last mtime at which a lock counts as expired (pmxcfs: 120 s).
pub const DEFAULT_LOCK_TIMEOUT: u32 = 120;

/// Verdict on an existing lock directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockState {
    /// Held: its mtime is recent enough.
    Held,
    /// Its holder stopped refreshing it; it may be taken over or removed.
    Expired,
}

/// What a `mkdir` of an existing lock directory does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MkdirVerdict {
    /// EEXIST: someone holds it.
    Busy,
    /// Replace the expired lock with a fresh one owned by the caller.
    TakeOver,
}

/// What setting a lock directory's mtime does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MtimeVerdict {
    /// Store the new mtime (a refresh by the holder).
    Refresh,
    /// mtime 0 on an expired lock: delete it (pmxcfs's unlock request).
    Remove,
    /// EACCES: going back in time, another writer, or an unlock request on a held lock.
    Refuse,
}

/// Whether `rmdir` of a lock may proceed: a release stamped before the lock's mtime
/// was requested before the current holder took the lock over (it waited in a queue
/// across a resync), so it must not remove the new holder's lock.
pub fn may_release(lock_mtime: u32, now: u32) -> bool {
    now >= lock_mtime
}

/// Is a lock last refreshed at `mtime` expired at `now`?
///
/// A lock with an mtime in the future (clock skew) is held; it is not "expired" until
/// `timeout` seconds after that mtime.
pub fn lock_state(mtime: u32, now: u32, timeout: u32) -> LockState {
    if now > mtime && now - mtime > timeout {
        LockState::Expired
    } else {
        LockState::Held
    }
}

/// `mkdir` of a lock directory that already exists.
pub fn on_mkdir_existing(mtime: u32, now: u32, timeout: u32) -> MkdirVerdict {
    match lock_state(mtime, now, timeout) {
        LockState::Held => MkdirVerdict::Busy,
        LockState::Expired => MkdirVerdict::TakeOver,
    }
}

/// `utime` on a lock directory: `new_mtime == 0` requests an unlock, anything else is a
/// refresh that only the creating writer may do and only forward in time (pmxcfs rules).
pub fn on_set_mtime(
    cur_mtime: u32,
    cur_writer: u32,
    new_mtime: u32,
    writer: u32,
    now: u32,
    timeout: u32,
) -> MtimeVerdict {
    if new_mtime == 0 {
        return match lock_state(cur_mtime, now, timeout) {
            LockState::Expired => MtimeVerdict::Remove,
            LockState::Held => MtimeVerdict::Refuse,
        };
    }
    if new_mtime < cur_mtime || writer != cur_writer {
        MtimeVerdict::Refuse
    } else {
        MtimeVerdict::Refresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_boundary() {
        assert_eq!(lock_state(1000, 1120, 120), LockState::Held);
        assert_eq!(lock_state(1000, 1121, 120), LockState::Expired);
        assert_eq!(lock_state(2000, 1000, 120), LockState::Held, "future mtime");
    }

    #[test]
    fn stale_release_is_refused() {
        assert!(may_release(1000, 1000));
        assert!(may_release(1000, 1500));
        assert!(!may_release(1000, 999));
    }

    #[test]
    fn mkdir_existing() {
        assert_eq!(on_mkdir_existing(1000, 1001, 120), MkdirVerdict::Busy);
        assert_eq!(on_mkdir_existing(1000, 1200, 120), MkdirVerdict::TakeOver);
    }

    #[test]
    fn mtime_rules() {
        // refresh by the holder, forward in time
        assert_eq!(
            on_set_mtime(1000, 1, 1050, 1, 1050, 120),
            MtimeVerdict::Refresh
        );
        // equal mtime is allowed (pmxcfs refuses only going back)
        assert_eq!(
            on_set_mtime(1000, 1, 1000, 1, 1000, 120),
            MtimeVerdict::Refresh
        );
        // backwards
        assert_eq!(
            on_set_mtime(1000, 1, 999, 1, 1050, 120),
            MtimeVerdict::Refuse
        );
        // other writer
        assert_eq!(
            on_set_mtime(1000, 1, 1050, 2, 1050, 120),
            MtimeVerdict::Refuse
        );
        // unlock request on a held lock, then on an expired one
        assert_eq!(on_set_mtime(1000, 1, 0, 2, 1100, 120), MtimeVerdict::Refuse);
        assert_eq!(on_set_mtime(1000, 1, 0, 2, 1121, 120), MtimeVerdict::Remove);
    }
}
