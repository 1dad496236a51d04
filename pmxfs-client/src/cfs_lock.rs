//! Client side of the cluster-wide `cfs_lock`: acquire `priv/lock/<NAME>` on a mounted
//! pmxfs by `mkdir`, run a closure while holding it, release by `rmdir`.
//!
//! This is the operation PVE's `PVE::Cluster::cfs_lock` performs, with two differences
//! that matter in practice: retries back off from 10 ms instead of sleeping a whole
//! second (which starved contenders, see pve-cluster 13a71af), and a long-running holder
//! refreshes the lock's mtime so it never expires under it (pmxfs judges expiry from the
//! lock's mtime, 120 s by default).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a `cfs_lock` call failed.
#[derive(Debug, thiserror::Error)]
pub enum CfsLockError {
    /// The lock was held by someone else for the whole timeout.
    #[error("got lock request timeout for cfs lock '{0}'")]
    Timeout(String),
    /// The filesystem refused the `mkdir` with EACCES: the node has no quorum.
    #[error("cfs lock '{0}': no quorum (filesystem is read-only)")]
    NoQuorum(String),
    /// The lock name is not a single path component.
    #[error("invalid cfs lock name '{0}'")]
    BadName(String),
    /// `<mount>/priv/lock` does not exist and could not be created.
    #[error("pve cluster filesystem not online at {0}: {1}")]
    NotOnline(PathBuf, io::Error),
    /// Any other error from the filesystem.
    #[error("cfs lock '{0}' error: {1}")]
    Io(String, io::Error),
}

/// Directory under the mount that holds the lock directories.
pub const LOCK_DIR: &str = "priv/lock";

/// How often a holder refreshes its lock's mtime. Well inside the 120 s expiry.
const REFRESH_EVERY: Duration = Duration::from_secs(30);

/// Acquire lock `name` on the pmxfs mounted at `mount`, run `f`, release the lock.
///
/// `timeout` bounds the wait for the lock (`None`: wait forever). The lock is released
/// even if `f` panics. Returns `f`'s value.
pub fn cfs_lock<R>(
    mount: &Path,
    name: &str,
    timeout: Option<Duration>,
    f: impl FnOnce() -> R,
) -> Result<R, CfsLockError> {
    let guard = CfsLockGuard::acquire(mount, name, timeout)?;
    let r = f();
    guard.release()?;
    Ok(r)
}

/// A held cfs lock; released on drop (errors ignored) or by [`CfsLockGuard::release`].
pub struct CfsLockGuard {
    path: PathBuf,
    name: String,
    stop_refresh: Arc<AtomicBool>,
    refresher: Option<std::thread::JoinHandle<()>>,
    released: bool,
}

impl CfsLockGuard {
    /// Block until lock `name` is held (or `timeout` passes) and start refreshing it.
    pub fn acquire(
        mount: &Path,
        name: &str,
        timeout: Option<Duration>,
    ) -> Result<Self, CfsLockError> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(CfsLockError::BadName(name.to_string()));
        }
        let dir = mount.join(LOCK_DIR);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => {}
            Err(e) => return Err(CfsLockError::NotOnline(dir, e)),
        }
        if !dir.is_dir() {
            return Err(CfsLockError::NotOnline(
                dir,
                io::Error::from_raw_os_error(libc::ENOENT),
            ));
        }
        let path = dir.join(name);
        let start = Instant::now();
        let mut backoff = Duration::from_millis(10);
        loop {
            match std::fs::create_dir(&path) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
                    return Err(CfsLockError::NoQuorum(name.to_string()))
                }
                Err(e) => return Err(CfsLockError::Io(name.to_string(), e)),
            }
            let waited = start.elapsed();
            if let Some(t) = timeout {
                if waited >= t {
                    return Err(CfsLockError::Timeout(name.to_string()));
                }
            }
            // Ask the filesystem to expire the lock if its holder died (utime 0,0 is
            // pmxcfs's unlock request); failures mean "still validly held".
            let _ = set_mtime(&path, 0);
            let mut sleep = backoff;
            if let Some(t) = timeout {
                sleep = sleep.min(t.saturating_sub(waited));
            }
            std::thread::sleep(sleep + jitter(backoff));
            backoff = (backoff * 2).min(Duration::from_millis(250));
        }
        let stop_refresh = Arc::new(AtomicBool::new(false));
        let refresher = {
            let stop = stop_refresh.clone();
            let path = path.clone();
            std::thread::Builder::new()
                .name("cfs-lock-refresh".into())
                .spawn(move || refresh_loop(&path, &stop))
                .ok()
        };
        Ok(CfsLockGuard {
            path,
            name: name.to_string(),
            stop_refresh,
            refresher,
            released: false,
        })
    }

    /// Path of the lock directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Release the lock, reporting a failed `rmdir`.
    pub fn release(mut self) -> Result<(), CfsLockError> {
        self.released = true;
        self.stop_refresher();
        std::fs::remove_dir(&self.path).map_err(|e| CfsLockError::Io(self.name.clone(), e))
    }

    fn stop_refresher(&mut self) {
        self.stop_refresh.store(true, Ordering::Release);
        if let Some(h) = self.refresher.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

impl Drop for CfsLockGuard {
    fn drop(&mut self) {
        if !self.released {
            self.stop_refresher();
            let _ = std::fs::remove_dir(&self.path);
        }
    }
}

fn refresh_loop(path: &Path, stop: &AtomicBool) {
    let mut next = Instant::now() + REFRESH_EVERY;
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        if now >= next {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            if let Err(e) = set_mtime(path, secs) {
                tracing::warn!(lock = %path.display(), "refreshing cfs lock failed: {e}");
            }
            next = now + REFRESH_EVERY;
        }
        std::thread::park_timeout(next.saturating_duration_since(Instant::now()));
    }
}

/// Set a path's mtime (and atime) to `secs` since the epoch; `0` is an unlock request.
pub fn set_mtime(path: &Path, secs: i64) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let ts = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: 0,
    };
    let times = [ts, ts];
    // SAFETY: `c` is a valid NUL-terminated path and `times` points to two timespecs.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Up to 50% of `d`, so contenders that collided once do not collide again in lockstep.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos() as u64 ^ u64::from(std::process::id()).wrapping_mul(0x9E37))
        .unwrap_or(0);
    let half = (d.as_nanos() as u64 / 2).max(1);
    Duration::from_nanos(nanos % half)
}
