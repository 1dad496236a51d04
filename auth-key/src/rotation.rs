//! When the auth key is due, and how to rotate it without rotating twice.
//!
//! [`check_times`] is PVE's `check_authkey` as a pure function of the clock and the two
//! public keys' mtimes; [`check`] feeds it from a [`KeyStore`]. [`rotate`] is
//! `rotate_authkey` in two variants ([`Sequence`]): the 2022 fix (drop the process cache
//! and reread the key inside the cluster lock before re-checking) and the code before it,
//! kept so the race can be reproduced.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use pmxfs_client::CfsLockError;

use crate::keyfiles::{now_secs, KeyFileError, KeyKind, KeyStore};
use crate::keys::{self, KeyError};

/// Default key lifetime: rotate daily (PVE `$authkey_lifetime`).
pub const DEFAULT_LIFETIME: i64 = 86400;
/// Tolerated clock skew (PVE `$auth_graceperiod`).
pub const AUTH_GRACE: i64 = 300;
/// Ticket lifetime (PVE `$ticket_lifetime`).
pub const TICKET_LIFETIME: i64 = 7200;
/// Name of the cluster-wide lock taken while rotating (PVE `cfs_lock_authkey`).
pub const LOCK_NAME: &str = "authkey";

/// Why the key is due for rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DueReason {
    /// `authkey.pub` does not exist.
    Missing,
    /// `authkey.pub` exists but cannot be parsed.
    Corrupt,
    /// The key is at least `lifetime` seconds old.
    TooOld {
        /// `now - mtime`.
        age: i64,
    },
    /// The key's mtime is more than [`AUTH_GRACE`] in the future and no recent rotation
    /// explains it.
    InFuture {
        /// The key's mtime.
        mtime: i64,
    },
}

/// Result of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// The key should be rotated.
    Due(DueReason),
    /// The key is new enough.
    Fresh,
}

/// State of `authkey.pub` as far as the check is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PubState {
    /// Does not exist.
    Missing,
    /// Exists but is not a valid key (mtime known).
    Corrupt,
    /// A valid key with this mtime.
    Valid(i64),
}

/// PVE's `check_authkey` (quorum aside): due if the key is missing, if
/// `now - mtime >= lifetime`, or if `mtime > now + 300` — unless, in that last case,
/// `authkey.pub.old` exists and `0 <= mtime - old_mtime < 7200` (a node with a clock
/// ahead rotated recently; rotating again would only cause a fix-up storm).
///
/// A corrupt key counts as due, like PVE's (where it reads as "missing"); [`rotate`]
/// refuses to act on it without `force`.
pub fn check_times(
    now: i64,
    current: PubState,
    old_mtime: Option<i64>,
    lifetime: i64,
) -> Freshness {
    let mtime = match current {
        PubState::Missing => return Freshness::Due(DueReason::Missing),
        PubState::Corrupt => return Freshness::Due(DueReason::Corrupt),
        PubState::Valid(m) => m,
    };
    if now - mtime >= lifetime {
        return Freshness::Due(DueReason::TooOld { age: now - mtime });
    }
    if mtime > now + AUTH_GRACE {
        if let Some(old) = old_mtime {
            if mtime >= old && mtime - old < TICKET_LIFETIME {
                return Freshness::Fresh;
            }
        }
        return Freshness::Due(DueReason::InFuture { mtime });
    }
    Freshness::Fresh
}

/// [`check_times`] with the mtimes taken from `store` (through its cache).
pub fn check(store: &KeyStore, now: i64, lifetime: i64) -> Result<Freshness, RotationError> {
    let current = match store.public_key() {
        Ok(Some(k)) => PubState::Valid(k.mtime),
        Ok(None) => PubState::Missing,
        Err(KeyFileError::Key { .. }) => PubState::Corrupt,
        Err(e) => return Err(e.into()),
    };
    // The old key's mtime only matters for a key from the future; PVE stats it only then.
    let old_mtime = match current {
        PubState::Valid(m) if m > now + AUTH_GRACE => store.mtime(KeyKind::PubOld)?,
        _ => None,
    };
    Ok(check_times(now, current, old_mtime, lifetime))
}

/// Which rotation sequence to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sequence {
    /// pve-access-control a74d508 (2022): inside the lock, drop the process's key cache
    /// and open/read/close `authkey.pub` before re-checking, so the re-check does not
    /// trust a cached mtime.
    Fixed,
    /// The code before that fix: re-check inside the lock through the cache only.
    Naive,
}

/// Knobs for [`rotate`].
#[derive(Clone, Debug)]
pub struct RotateOptions {
    /// Key lifetime in seconds.
    pub lifetime: i64,
    /// Rotate even if `authkey.pub` is corrupt (it is then not saved as the old key).
    pub force: bool,
    /// How long to wait for the cluster lock (`None`: forever).
    pub lock_timeout: Option<Duration>,
    /// Fixed clock for tests; `None` uses the wall clock at each check.
    pub now: Option<i64>,
}

impl Default for RotateOptions {
    fn default() -> Self {
        RotateOptions {
            lifetime: DEFAULT_LIFETIME,
            force: false,
            lock_timeout: Some(Duration::from_secs(10)),
            now: None,
        }
    }
}

/// What [`rotate`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RotateOutcome {
    /// A new key pair was written.
    Rotated,
    /// The key was fresh (before or, after waiting for the lock, inside it).
    NotDue,
}

/// Why a rotation failed.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// The lock directory could not be created because the filesystem is read-only.
    #[error("cannot rotate auth key: this node has no quorum (the cluster filesystem is read-only); the existing keys keep working")]
    NoQuorum,
    /// The existing public key is unreadable; overwriting it would lose the old key.
    #[error("refusing to rotate on top of a corrupt key: {0} (use --force to replace it)")]
    CorruptKey(KeyFileError),
    /// Writing failed because the filesystem is read-only.
    #[error("cannot write {}: filesystem is read-only (no quorum?)", .0.display())]
    ReadOnly(PathBuf),
    /// The cluster lock could not be taken.
    #[error(transparent)]
    Lock(CfsLockError),
    /// A key file could not be read or written.
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    /// A new key could not be encoded.
    #[error(transparent)]
    Key(#[from] KeyError),
}

impl From<CfsLockError> for RotationError {
    fn from(e: CfsLockError) -> Self {
        match e {
            CfsLockError::NoQuorum(_) => RotationError::NoQuorum,
            e => RotationError::Lock(e),
        }
    }
}

/// Classify a failed write: EROFS, or EACCES for root (pmxfs refuses writes without
/// quorum with EACCES), means the filesystem is read-only.
fn write_error(e: KeyFileError) -> RotationError {
    match e {
        KeyFileError::Io { path, source } if source.kind() == io::ErrorKind::ReadOnlyFilesystem => {
            RotationError::ReadOnly(path)
        }
        KeyFileError::PermissionDenied { path } if nix::unistd::geteuid().is_root() => {
            RotationError::ReadOnly(path)
        }
        e => RotationError::KeyFile(e),
    }
}

/// Rotate the key pair if it is due (PVE `rotate_authkey`, called as pvestatd does:
/// only after a check said "due").
///
/// Steps: check (outside the lock) → take `cfs_lock("authkey")` → [`Sequence::Fixed`]:
/// drop the key cache and open/read/close `authkey.pub` → re-check → if still due: write
/// `authkey.pub.old` (the current public key, as this process sees it), generate a new
/// pair, write `authkey.pub`, then `priv/authkey.key` → release the lock. If writing the
/// new public key fails the old one is restored; if writing the private key fails both
/// are removed so that the next call regenerates them (as PVE does).
pub fn rotate(
    store: &KeyStore,
    sequence: Sequence,
    opts: &RotateOptions,
) -> Result<RotateOutcome, RotationError> {
    let now = || opts.now.unwrap_or_else(now_secs);
    if check(store, now(), opts.lifetime)? == Freshness::Fresh {
        return Ok(RotateOutcome::NotDue);
    }
    let base = store.base();
    crate::keyfiles::ensure_priv_dir(base).map_err(|e| KeyFileError::io(&base.join("priv"), e))?;
    pmxfs_client::cfs_lock(base, LOCK_NAME, opts.lock_timeout, || {
        if sequence == Sequence::Fixed {
            store.drop_cache();
            // Open, read, close: refreshes the kernel's view of the file's attributes.
            // A corrupt or missing key is fine here; the re-check classifies it.
            match store.public_key() {
                Ok(_) | Err(KeyFileError::Key { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let state = check(store, now(), opts.lifetime)?;
        tracing::debug!(?state, ?sequence, "auth key re-check under lock");
        if state == Freshness::Fresh {
            return Ok(RotateOutcome::NotDue);
        }
        replace_keys(store, opts.force)?;
        Ok(RotateOutcome::Rotated)
    })?
}

fn replace_keys(store: &KeyStore, force: bool) -> Result<(), RotationError> {
    let old = match store.public_key() {
        Ok(k) => k,
        Err(e @ KeyFileError::Key { .. }) => {
            if !force {
                return Err(RotationError::CorruptKey(e));
            }
            tracing::warn!("replacing corrupt auth key ({e}) without saving it as the old key");
            None
        }
        Err(e) => return Err(e.into()),
    };
    let new = keys::generate();
    let new_pub = keys::public_key_pem(&new.verifying_key())?;
    let new_priv = keys::private_key_pem(&new)?;
    let old_pem = old
        .as_ref()
        .map(|k| keys::public_key_pem(&k.key))
        .transpose()?;

    if let Some(pem) = &old_pem {
        // Its mtime becomes the rotation time used by the old key's ticket window.
        store
            .write(KeyKind::PubOld, pem.as_bytes())
            .map_err(write_error)?;
    }
    if let Err(e) = store.write(KeyKind::Pub, new_pub.as_bytes()) {
        if let Some(pem) = &old_pem {
            tracing::warn!("failed to store new auth key ({e}); reverting to the previous key");
            store
                .write(KeyKind::Pub, pem.as_bytes())
                .map_err(write_error)?;
        }
        return Err(write_error(e));
    }
    if let Err(e) = store.write(KeyKind::Priv, new_priv.as_bytes()) {
        tracing::warn!(
            "failed to store new private auth key ({e}); deleting the pair to force regeneration"
        );
        let _ = store.remove(KeyKind::Pub);
        let _ = store.remove(KeyKind::Priv);
        return Err(write_error(e));
    }
    tracing::info!("auth key rotated");
    Ok(())
}

impl From<RotationError> for io::Error {
    fn from(e: RotationError) -> Self {
        io::Error::other(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyfiles::write_atomic;
    use crate::keys::VerifyingKey;

    const NOW: i64 = 1_700_000_000;

    #[test]
    fn check_rules() {
        let l = DEFAULT_LIFETIME;
        let c = |s, old| check_times(NOW, s, old, l);
        assert_eq!(
            c(PubState::Missing, None),
            Freshness::Due(DueReason::Missing)
        );
        assert_eq!(
            c(PubState::Corrupt, None),
            Freshness::Due(DueReason::Corrupt)
        );
        assert_eq!(c(PubState::Valid(NOW), None), Freshness::Fresh);
        assert_eq!(c(PubState::Valid(NOW - l + 1), None), Freshness::Fresh);
        assert_eq!(
            c(PubState::Valid(NOW - l), None),
            Freshness::Due(DueReason::TooOld { age: l })
        );
        // Future: up to now+300 is tolerated.
        assert_eq!(c(PubState::Valid(NOW + 300), None), Freshness::Fresh);
        let fut = NOW + 301;
        assert_eq!(
            c(PubState::Valid(fut), None),
            Freshness::Due(DueReason::InFuture { mtime: fut })
        );
        // ...unless the old key is 0..7200 s older than the current one.
        assert_eq!(c(PubState::Valid(fut), Some(fut)), Freshness::Fresh);
        assert_eq!(c(PubState::Valid(fut), Some(fut - 7199)), Freshness::Fresh);
        assert_eq!(
            c(PubState::Valid(fut), Some(fut - 7200)),
            Freshness::Due(DueReason::InFuture { mtime: fut })
        );
        assert_eq!(
            c(PubState::Valid(fut), Some(fut + 1)),
            Freshness::Due(DueReason::InFuture { mtime: fut })
        );
        // A custom lifetime.
        assert_eq!(
            check_times(NOW, PubState::Valid(NOW - 60), None, 60),
            Freshness::Due(DueReason::TooOld { age: 60 })
        );
    }

    fn opts(now: i64) -> RotateOptions {
        RotateOptions {
            now: Some(now),
            ..RotateOptions::default()
        }
    }

    fn set_mtime(store: &KeyStore, kind: KeyKind, t: i64) {
        pmxfs_client::cfs_lock::set_mtime(&store.path(kind), t).unwrap();
    }

    #[test]
    fn rotate_on_plain_dir() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path());
        let now = now_secs();
        // Missing → generated, no old key.
        assert_eq!(
            rotate(&store, Sequence::Fixed, &opts(now)).unwrap(),
            RotateOutcome::Rotated
        );
        let first = store.public_key().unwrap().unwrap().key;
        assert!(store.old_public_key().unwrap().is_none());
        assert_eq!(
            store.private_key().unwrap().unwrap().key.verifying_key(),
            first
        );
        // Fresh → nothing happens.
        assert_eq!(
            rotate(&store, Sequence::Fixed, &opts(now)).unwrap(),
            RotateOutcome::NotDue
        );
        assert_eq!(store.public_key().unwrap().unwrap().key, first);
        // A day old → rotated; the old key is saved.
        set_mtime(&store, KeyKind::Pub, now - DEFAULT_LIFETIME);
        assert_eq!(
            rotate(&store, Sequence::Naive, &opts(now)).unwrap(),
            RotateOutcome::Rotated
        );
        let second = store.public_key().unwrap().unwrap().key;
        assert_ne!(second, first);
        assert_eq!(store.old_public_key().unwrap().unwrap().key, first);
        assert_eq!(
            store.private_key().unwrap().unwrap().key.verifying_key(),
            second
        );
        // The lock was released.
        assert!(!dir.path().join("priv/lock/authkey").exists());
        assert!(dir.path().join("priv/lock").is_dir());
    }

    #[test]
    fn second_rotator_sees_the_first_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let now = now_secs();
        let a = KeyStore::new(dir.path());
        rotate(&a, Sequence::Fixed, &opts(now)).unwrap();
        set_mtime(&a, KeyKind::Pub, now - DEFAULT_LIFETIME);
        // Process A warms its cache: the key is due.
        assert!(matches!(
            check(&a, now, DEFAULT_LIFETIME).unwrap(),
            Freshness::Due(_)
        ));
        let stale = a.public_key().unwrap().unwrap().key;
        // Process B rotates first.
        let b = KeyStore::new(dir.path());
        assert_eq!(
            rotate(&b, Sequence::Fixed, &opts(now)).unwrap(),
            RotateOutcome::Rotated
        );
        let rotated = b.public_key().unwrap().unwrap().key;
        // stat() on a plain directory is coherent, so A's re-check sees the new mtime
        // with either sequence: nobody rotates a second time.
        assert_eq!(
            rotate(&a, Sequence::Naive, &opts(now)).unwrap(),
            RotateOutcome::NotDue
        );
        assert_eq!(
            rotate(&a, Sequence::Fixed, &opts(now)).unwrap(),
            RotateOutcome::NotDue
        );
        assert_eq!(a.public_key().unwrap().unwrap().key, rotated);
        assert_eq!(a.old_public_key().unwrap().unwrap().key, stale);
    }

    /// Set up a due key cached by a process, then replace it behind the cache's back with
    /// a file that has the *same* mtime (what a stale attribute cache makes a process
    /// see). Returns (store with warm cache, key it cached, key now on disk).
    fn stale_cache_setup(
        dir: &std::path::Path,
        now: i64,
    ) -> (KeyStore, VerifyingKey, VerifyingKey) {
        let old_t = now - DEFAULT_LIFETIME - 10;
        let store = KeyStore::new(dir);
        rotate(&store, Sequence::Fixed, &opts(now)).unwrap();
        set_mtime(&store, KeyKind::Pub, old_t);
        assert!(matches!(
            check(&store, now, DEFAULT_LIFETIME).unwrap(),
            Freshness::Due(_)
        ));
        let cached = store.public_key().unwrap().unwrap().key;
        let on_disk = keys::generate().verifying_key();
        let path = store.path(KeyKind::Pub);
        write_atomic(
            &path,
            keys::public_key_pem(&on_disk).unwrap().as_bytes(),
            0o644,
        )
        .unwrap();
        set_mtime(&store, KeyKind::Pub, old_t);
        (store, cached, on_disk)
    }

    #[test]
    fn naive_saves_the_stale_cached_key_fixed_rereads() {
        // Both rotate here (the mtime really says "due"), but only Fixed saves the key
        // that is actually on disk as authkey.pub.old: Naive's mtime-keyed cache hands it
        // the stale key, which is how a double rotation leaves nodes disagreeing.
        let now = now_secs();
        let d1 = tempfile::tempdir().unwrap();
        let (naive, cached, _on_disk) = stale_cache_setup(d1.path(), now);
        assert_eq!(
            rotate(&naive, Sequence::Naive, &opts(now)).unwrap(),
            RotateOutcome::Rotated
        );
        assert_eq!(naive.old_public_key().unwrap().unwrap().key, cached);

        let d2 = tempfile::tempdir().unwrap();
        let (fixed, cached, on_disk) = stale_cache_setup(d2.path(), now);
        assert_eq!(
            rotate(&fixed, Sequence::Fixed, &opts(now)).unwrap(),
            RotateOutcome::Rotated
        );
        let saved = fixed.old_public_key().unwrap().unwrap().key;
        assert_eq!(saved, on_disk);
        assert_ne!(saved, cached);
    }

    #[test]
    fn refuses_corrupt_key_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path());
        std::fs::write(
            store.path(KeyKind::Pub),
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        )
        .unwrap();
        let now = now_secs();
        assert_eq!(
            check(&store, now, DEFAULT_LIFETIME).unwrap(),
            Freshness::Due(DueReason::Corrupt)
        );
        let e = rotate(&store, Sequence::Fixed, &opts(now)).unwrap_err();
        assert!(matches!(e, RotationError::CorruptKey(_)), "{e}");
        assert!(e.to_string().contains("--force"), "{e}");
        // Nothing was written and the lock is released.
        assert!(store.private_key().unwrap().is_none());
        assert!(!dir.path().join("priv/lock/authkey").exists());
        let forced = RotateOptions {
            force: true,
            ..opts(now)
        };
        assert_eq!(
            rotate(&store, Sequence::Fixed, &forced).unwrap(),
            RotateOutcome::Rotated
        );
        assert!(store.public_key().unwrap().is_some());
        assert!(store.old_public_key().unwrap().is_none());
    }

    #[test]
    fn no_quorum_is_a_clear_error() {
        let e = RotationError::from(CfsLockError::NoQuorum(LOCK_NAME.into()));
        assert!(matches!(e, RotationError::NoQuorum));
        assert!(e.to_string().contains("no quorum"), "{e}");
        assert!(e.to_string().contains("existing keys keep working"), "{e}");
        let e = write_error(KeyFileError::Io {
            path: "/x".into(),
            source: io::Error::from(io::ErrorKind::ReadOnlyFilesystem),
        });
        assert!(matches!(e, RotationError::ReadOnly(_)), "{e}");
    }

    #[test]
    fn lock_held_elsewhere_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path());
        std::fs::create_dir_all(dir.path().join("priv/lock/authkey")).unwrap();
        let o = RotateOptions {
            lock_timeout: Some(Duration::from_millis(50)),
            ..opts(now_secs())
        };
        let e = rotate(&store, Sequence::Fixed, &o).unwrap_err();
        assert!(
            matches!(e, RotationError::Lock(CfsLockError::Timeout(_))),
            "{e}"
        );
    }
}
