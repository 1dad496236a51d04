//! Where the token cache learns that `priv/token.shadow` may have changed.
//!
//! A [`GenerationSource`] yields a number that moves whenever the file's content may have
//! changed. Two implementations:
//! - [`ShmGeneration`]: pmxfs's version slot for `priv/token.shadow`. pmxfs bumps it when
//!   it applies any change to that path on this node (a write through this API, a manual
//!   edit, or a change replicated from another node), so it is coherent across processes
//!   and nodes with no TTL: one atomic load per check.
//! - [`FileStatGeneration`]: for a plain directory. It re-`stat`s the file at most once per
//!   TTL (default 1 s) and bumps a process-local counter if `(dev, inode, size, mtime,
//!   ctime)` changed. Weaker: a change made by another process is noticed only after up to
//!   one TTL. Including inode and ctime (not just mtime + length as Proxmox does) catches
//!   tmp+rename replacements and in-place edits that keep mtime and size.

use std::fmt;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pmxfs_client::versions::{self, VersionShmReader};

use crate::token_shadow::TOKEN_SHADOW;

/// Default re-stat interval of [`FileStatGeneration`].
pub const DEFAULT_TTL: Duration = Duration::from_secs(1);

/// A source of generation numbers for one file.
pub trait GenerationSource: Send + Sync {
    /// Current generation, or `None` if it cannot be determined right now (the cache is
    /// then bypassed, never trusted).
    fn current(&self) -> Option<u64>;
    /// This process just changed the file; make the next [`Self::current`] reflect it.
    fn note_local_change(&self) {}
    /// One line for `--verbose` output.
    fn describe(&self) -> String;
}

/// Generation from pmxfs's shared-memory version file (coherent, no TTL).
pub struct ShmGeneration {
    reader: VersionShmReader,
    slot: usize,
}

impl ShmGeneration {
    /// Map the version file at `path` and use the slot of `priv/token.shadow`.
    pub fn open(path: &Path) -> io::Result<Self> {
        Self::from_reader(VersionShmReader::open(path)?)
    }

    /// Use an already opened reader.
    pub fn from_reader(reader: VersionShmReader) -> io::Result<Self> {
        let slot = versions::slot_of(TOKEN_SHADOW)
            .ok_or_else(|| io::Error::other("priv/token.shadow is not a tracked path"))?;
        if slot >= reader.slot_count() {
            // An older daemon that does not maintain this slot: it would never move.
            return Err(io::Error::other(format!(
                "{}: daemon maintains {} slots, token.shadow needs slot {slot}",
                reader.path().display(),
                reader.slot_count()
            )));
        }
        Ok(ShmGeneration { reader, slot })
    }
}

impl GenerationSource for ShmGeneration {
    fn current(&self) -> Option<u64> {
        Some(self.reader.generation(self.slot))
    }

    fn describe(&self) -> String {
        format!(
            "pmxfs shared-memory generation ({} slot {}): coherent across processes and nodes, no TTL",
            self.reader.path().display(),
            self.slot
        )
    }
}

impl fmt::Debug for ShmGeneration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShmGeneration")
            .field("path", &self.reader.path())
            .field("slot", &self.slot)
            .finish()
    }
}

/// What identifies one version of the file on a plain filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileSig {
    Missing,
    Present {
        dev: u64,
        ino: u64,
        len: u64,
        mtime_ns: i128,
        ctime_ns: i128,
    },
}

const NEVER: u64 = u64::MAX;

/// Fallback generation: stat signature of the file, re-checked at most once per TTL.
#[derive(Debug)]
pub struct FileStatGeneration {
    path: PathBuf,
    ttl: Duration,
    epoch: Instant,
    generation: AtomicU64,
    /// Nanoseconds since `epoch` of the last stat, or NEVER.
    checked_at: AtomicU64,
    sig: Mutex<Option<FileSig>>,
}

impl FileStatGeneration {
    /// Watch `path`, re-stat'ing at most every `ttl`.
    pub fn new(path: impl Into<PathBuf>, ttl: Duration) -> Self {
        FileStatGeneration {
            path: path.into(),
            ttl,
            epoch: Instant::now(),
            generation: AtomicU64::new(0),
            checked_at: AtomicU64::new(NEVER),
            sig: Mutex::new(None),
        }
    }

    fn elapsed_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(NEVER - 1)
    }

    fn stat(&self) -> io::Result<FileSig> {
        match std::fs::metadata(&self.path) {
            Ok(m) => Ok(FileSig::Present {
                dev: m.dev(),
                ino: m.ino(),
                len: m.len(),
                mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
                ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(FileSig::Missing),
            Err(e) => Err(e),
        }
    }
}

impl GenerationSource for FileStatGeneration {
    fn current(&self) -> Option<u64> {
        let fresh = |checked: u64, now: u64| {
            checked != NEVER && now.saturating_sub(checked) < self.ttl.as_nanos() as u64
        };
        if fresh(self.checked_at.load(Ordering::Acquire), self.elapsed_ns()) {
            return Some(self.generation.load(Ordering::Acquire));
        }
        // Held only for one stat(); never while hashing.
        let mut sig = self.sig.lock();
        let now = self.elapsed_ns();
        if fresh(self.checked_at.load(Ordering::Acquire), now) {
            return Some(self.generation.load(Ordering::Acquire));
        }
        let new = match self.stat() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(path = %self.path.display(), "stat failed, bypassing cache: {e}");
                return None;
            }
        };
        if *sig != Some(new) {
            if sig.is_some() {
                self.generation.fetch_add(1, Ordering::AcqRel);
            }
            *sig = Some(new);
        }
        // `now` was taken before the stat, so the TTL never extends past what we saw.
        self.checked_at.store(now, Ordering::Release);
        Some(self.generation.load(Ordering::Acquire))
    }

    fn note_local_change(&self) {
        let _sig = self.sig.lock();
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.checked_at.store(NEVER, Ordering::Release);
    }

    fn describe(&self) -> String {
        format!(
            "file stat (dev, inode, size, mtime, ctime) of {} re-checked every {:?}: fallback for a plain directory, changes by other processes take up to one TTL",
            self.path.display(),
            self.ttl
        )
    }
}

/// Whether `path` is on a FUSE filesystem (pmxfs is one).
fn is_fuse(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::FUSE_SUPER_MAGIC)
        .unwrap_or(false)
}

/// Pick the generation source for a base directory: [`ShmGeneration`] when `base` is a
/// FUSE mount whose pmxfs version file exists and is valid, else [`FileStatGeneration`]
/// with `ttl`. The FUSE check matters: a version file left in `/run` by a stopped daemon
/// must not be trusted for a plain directory that nobody bumps.
pub fn select(base: &Path, ttl: Duration) -> Box<dyn GenerationSource> {
    let fallback = |why: String| -> Box<dyn GenerationSource> {
        tracing::debug!(base = %base.display(), "token cache uses the stat fallback: {why}");
        Box::new(FileStatGeneration::new(base.join(TOKEN_SHADOW), ttl))
    };
    if !is_fuse(base) {
        return fallback("not a FUSE mount".into());
    }
    match ShmGeneration::open(&versions::shm_path_for_mount(base)) {
        Ok(g) => Box::new(g),
        Err(e) => fallback(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_generation_detects_replacement_with_same_mtime_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.shadow");
        std::fs::write(&path, b"{\"a\":\"1\"}").unwrap();
        pmxfs_client::cfs_lock::set_mtime(&path, 1_000_000).unwrap();
        let g = FileStatGeneration::new(&path, Duration::from_millis(30));
        let g0 = g.current().unwrap();
        // Within the TTL nothing is re-checked.
        let tmp = dir.path().join("tmp");
        std::fs::write(&tmp, b"{\"a\":\"2\"}").unwrap();
        pmxfs_client::cfs_lock::set_mtime(&tmp, 1_000_000).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(g.current(), Some(g0));
        std::thread::sleep(Duration::from_millis(40));
        let g1 = g.current().unwrap();
        assert_ne!(g1, g0, "new inode must be noticed");
        // In-place edit, same size, mtime reset: ctime still moves.
        std::thread::sleep(Duration::from_millis(40));
        std::fs::write(&path, b"{\"a\":\"3\"}").unwrap();
        pmxfs_client::cfs_lock::set_mtime(&path, 1_000_000).unwrap();
        std::thread::sleep(Duration::from_millis(40));
        assert_ne!(g.current().unwrap(), g1);
        // Unchanged file: stable generation across TTL expiries.
        let g2 = g.current().unwrap();
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(g.current(), Some(g2));
        // A local change is visible at once.
        g.note_local_change();
        assert_ne!(g.current(), Some(g2));
    }

    #[test]
    fn plain_dir_selects_fallback_and_shm_slot_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let s = select(dir.path(), DEFAULT_TTL);
        assert!(s.describe().starts_with("file stat"), "{}", s.describe());
        // A real version file gives a coherent source.
        let shm = dir.path().join("v.versions");
        let w = versions::VersionShmWriter::open_or_create(&shm).unwrap();
        let g = ShmGeneration::open(&shm).unwrap();
        let g0 = g.current().unwrap();
        w.bump("priv/token.shadow");
        assert_eq!(g.current(), Some(g0 + 1));
        w.bump("user.cfg");
        assert_eq!(g.current(), Some(g0 + 1));
        assert!(g.describe().contains("slot 43"));
    }
}
