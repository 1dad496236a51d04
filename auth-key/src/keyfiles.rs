//! The auth-key files under a base directory (normally `/etc/pve`) and a per-process
//! cache of them, keyed on mtime exactly like PVE's `$cache_read_key`.
//!
//! Everything goes through ordinary `std::fs` calls (stat, open, read, rename) on the
//! mounted filesystem, so the kernel's attribute and page caches are in the path just as
//! they are for PVE's Perl code: that is what makes the rotation race reproducible and
//! what the "fixed" rotation sequence works around.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::keys::{self, KeyError, SigningKey, VerifyingKey};

/// Current public key, relative to the base directory.
pub const PUB_KEY: &str = "authkey.pub";
/// Previous public key (kept so tickets signed before a rotation stay valid).
pub const OLD_PUB_KEY: &str = "authkey.pub.old";
/// Current private key.
pub const PRIV_KEY: &str = "priv/authkey.key";

/// Which of the three key files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// `authkey.pub`
    Pub,
    /// `authkey.pub.old`
    PubOld,
    /// `priv/authkey.key`
    Priv,
}

impl KeyKind {
    /// Path relative to the base directory.
    pub fn rel_path(self) -> &'static str {
        match self {
            KeyKind::Pub => PUB_KEY,
            KeyKind::PubOld => OLD_PUB_KEY,
            KeyKind::Priv => PRIV_KEY,
        }
    }

    /// Mode for newly written files: private key 0600, public keys 0644.
    fn mode(self) -> u32 {
        match self {
            KeyKind::Priv => 0o600,
            _ => 0o644,
        }
    }
}

/// A key file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file exists but its content is not a usable Ed25519 key.
    #[error("{}: {source}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: KeyError,
    },
    /// We may not read or write the file (not root, or `priv/` unreadable).
    #[error("{}: permission denied (must run as root)", path.display())]
    PermissionDenied {
        /// The file.
        path: PathBuf,
    },
    /// Any other I/O error.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl KeyFileError {
    pub(crate) fn io(path: &Path, e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::PermissionDenied {
            KeyFileError::PermissionDenied {
                path: path.to_path_buf(),
            }
        } else {
            KeyFileError::Io {
                path: path.to_path_buf(),
                source: e,
            }
        }
    }
}

/// A decoded key together with the file's mtime (seconds since the epoch), which PVE
/// uses as the key's creation time for rotation and ticket windows.
#[derive(Clone, Debug)]
pub struct LoadedKey<K> {
    /// The key.
    pub key: K,
    /// mtime of the file it was read from, in seconds.
    pub mtime: i64,
}

#[derive(Clone)]
enum AnyKey {
    Public(VerifyingKey),
    Private(SigningKey),
}

#[derive(Clone)]
struct Entry {
    /// Full-precision mtime from `fstat` of the opened file: the cache key.
    mtime: SystemTime,
    key: Result<AnyKey, KeyError>,
}

/// The key files of one base directory plus the per-process key cache.
///
/// Cache semantics follow PVE's `$cache_read_key`: on first use a file is opened,
/// `fstat`ed, read and closed; afterwards each use `stat`s the path and rereads only if
/// the mtime differs from the cached one (or the stat fails). [`KeyStore::drop_cache`]
/// forgets everything. A missing file is not cached.
pub struct KeyStore {
    base: PathBuf,
    cache: Mutex<HashMap<KeyKind, Entry>>,
}

impl KeyStore {
    /// Key files under `base` (e.g. `/etc/pve`).
    pub fn new(base: impl Into<PathBuf>) -> Self {
        KeyStore {
            base: base.into(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The base directory.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Absolute path of a key file.
    pub fn path(&self, kind: KeyKind) -> PathBuf {
        self.base.join(kind.rel_path())
    }

    /// Forget every cached key (the first step of the fixed rotation sequence).
    pub fn drop_cache(&self) {
        self.cache.lock().clear();
    }

    /// The cached entry, refreshed per the mtime rule; `None` if the file is missing.
    fn entry(&self, kind: KeyKind) -> Result<Option<Entry>, KeyFileError> {
        let path = self.path(kind);
        let mut cache = self.cache.lock();
        if let Some(e) = cache.get(&kind) {
            // The stat that the 2022 double rotation hinged on: it may be answered from
            // the kernel's attribute cache.
            if let Ok(m) = std::fs::metadata(&path) {
                if m.modified().ok() == Some(e.mtime) {
                    return Ok(Some(e.clone()));
                }
            }
        }
        cache.remove(&kind);
        let Some(entry) = read_entry(&path, kind)? else {
            return Ok(None);
        };
        cache.insert(kind, entry.clone());
        Ok(Some(entry))
    }

    /// mtime (seconds) of a key file as the cache sees it, even if its content is
    /// corrupt; `None` if it does not exist.
    pub fn mtime(&self, kind: KeyKind) -> Result<Option<i64>, KeyFileError> {
        Ok(self.entry(kind)?.map(|e| epoch_secs(e.mtime)))
    }

    fn public(&self, kind: KeyKind) -> Result<Option<LoadedKey<VerifyingKey>>, KeyFileError> {
        let Some(e) = self.entry(kind)? else {
            return Ok(None);
        };
        match e.key {
            Ok(AnyKey::Public(key)) => Ok(Some(LoadedKey {
                key,
                mtime: epoch_secs(e.mtime),
            })),
            Ok(AnyKey::Private(_)) => unreachable!("public slot holds a public key"),
            Err(source) => Err(KeyFileError::Key {
                path: self.path(kind),
                source,
            }),
        }
    }

    /// `authkey.pub` (through the cache); `Ok(None)` if missing, an error if corrupt.
    pub fn public_key(&self) -> Result<Option<LoadedKey<VerifyingKey>>, KeyFileError> {
        self.public(KeyKind::Pub)
    }

    /// `authkey.pub.old` (through the cache); `Ok(None)` if missing, an error if corrupt.
    pub fn old_public_key(&self) -> Result<Option<LoadedKey<VerifyingKey>>, KeyFileError> {
        self.public(KeyKind::PubOld)
    }

    /// `priv/authkey.key` (through the cache); `Ok(None)` if missing, an error if corrupt.
    pub fn private_key(&self) -> Result<Option<LoadedKey<SigningKey>>, KeyFileError> {
        let Some(e) = self.entry(KeyKind::Priv)? else {
            return Ok(None);
        };
        match e.key {
            Ok(AnyKey::Private(key)) => Ok(Some(LoadedKey {
                key,
                mtime: epoch_secs(e.mtime),
            })),
            Ok(AnyKey::Public(_)) => unreachable!("private slot holds a private key"),
            Err(source) => Err(KeyFileError::Key {
                path: self.path(KeyKind::Priv),
                source,
            }),
        }
    }

    /// Atomically replace a key file with `pem` (tmp + rename) and forget its cache entry.
    pub fn write(&self, kind: KeyKind, pem: &[u8]) -> Result<(), KeyFileError> {
        let path = self.path(kind);
        let r = write_atomic(&path, pem, kind.mode()).map_err(|e| KeyFileError::io(&path, e));
        self.cache.lock().remove(&kind);
        r
    }

    /// Remove a key file (missing is fine) and forget its cache entry.
    pub fn remove(&self, kind: KeyKind) -> Result<(), KeyFileError> {
        let path = self.path(kind);
        self.cache.lock().remove(&kind);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(KeyFileError::io(&path, e)),
            _ => Ok(()),
        }
    }
}

/// Open, fstat, read, close: the same steps as PVE's `$read_key_and_mtime`.
fn read_entry(path: &Path, kind: KeyKind) -> Result<Option<Entry>, KeyFileError> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(KeyFileError::io(path, e)),
    };
    let meta = f.metadata().map_err(|e| KeyFileError::io(path, e))?;
    let mtime = meta.modified().map_err(|e| KeyFileError::io(path, e))?;
    let mut buf = Vec::with_capacity(512);
    f.read_to_end(&mut buf)
        .map_err(|e| KeyFileError::io(path, e))?;
    drop(f);
    let key = match kind {
        KeyKind::Priv => keys::parse_private_pem(&buf).map(AnyKey::Private),
        _ => keys::parse_public_pem(&buf).map(AnyKey::Public),
    };
    buf.fill(0);
    Ok(Some(Entry { mtime, key }))
}

/// Seconds since the epoch (negative before it), truncated like `stat`'s `st_mtime`.
pub fn epoch_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => {
            let d = e.duration();
            -(d.as_secs() as i64) - i64::from(d.subsec_nanos() > 0)
        }
    }
}

/// Current wall-clock time in seconds since the epoch.
pub fn now_secs() -> i64 {
    epoch_secs(SystemTime::now())
}

/// Create `<base>/priv` (0700) if it is missing. Only happens on a plain directory
/// (pmxfs always has it); needed there because the cluster lock lives in `priv/lock`.
pub fn ensure_priv_dir(base: &Path) -> io::Result<()> {
    let dir = base.join("priv");
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Replace `path` atomically: write `<path>.tmp.<pid>` (created with `mode`), then
/// rename it over `path`. Creates the parent directory (0700) if missing, which only
/// happens on a plain directory (pmxfs always has `priv/`).
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    if !dir.as_os_str().is_empty() && !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn set_mtime(path: &Path, secs: i64) {
        pmxfs_client::cfs_lock::set_mtime(path, secs).unwrap();
    }

    #[test]
    fn atomic_write_and_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path());
        let sk = keys::generate();
        store
            .write(
                KeyKind::Priv,
                keys::private_key_pem(&sk).unwrap().as_bytes(),
            )
            .unwrap();
        let mode = std::fs::metadata(store.path(KeyKind::Priv))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "private key must not be group/world readable"
        );
        assert_eq!(
            store.private_key().unwrap().unwrap().key.to_bytes(),
            sk.to_bytes()
        );
        // No temporary file remains.
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("priv"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().contains(".tmp."))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn cache_is_keyed_on_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path());
        assert!(store.public_key().unwrap().is_none());
        let a = keys::generate().verifying_key();
        let b = keys::generate().verifying_key();
        let path = store.path(KeyKind::Pub);
        write_atomic(&path, keys::public_key_pem(&a).unwrap().as_bytes(), 0o644).unwrap();
        set_mtime(&path, 1_000_000);
        let got = store.public_key().unwrap().unwrap();
        assert_eq!((got.key, got.mtime), (a, 1_000_000));

        // Replaced behind the cache's back with the *same* mtime: the cache keeps serving
        // the old key (the PVE behaviour the double-rotation bug relied on)...
        write_atomic(&path, keys::public_key_pem(&b).unwrap().as_bytes(), 0o644).unwrap();
        set_mtime(&path, 1_000_000);
        assert_eq!(store.public_key().unwrap().unwrap().key, a);
        // ...until the cache is dropped,
        store.drop_cache();
        assert_eq!(store.public_key().unwrap().unwrap().key, b);
        // or the mtime changes.
        write_atomic(&path, keys::public_key_pem(&a).unwrap().as_bytes(), 0o644).unwrap();
        set_mtime(&path, 1_000_001);
        let got = store.public_key().unwrap().unwrap();
        assert_eq!((got.key, got.mtime), (a, 1_000_001));

        // A removed file is reported missing.
        store.remove(KeyKind::Pub).unwrap();
        assert!(store.public_key().unwrap().is_none());
    }

    #[test]
    fn corrupt_and_foreign_files_are_errors_with_paths() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path());
        std::fs::write(store.path(KeyKind::Pub), b"garbage").unwrap();
        let e = store.public_key().unwrap_err();
        assert!(
            matches!(
                &e,
                KeyFileError::Key {
                    source: KeyError::NotPem(_),
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("authkey.pub"), "{e}");
        // The mtime is still known, which check() needs.
        assert!(store.mtime(KeyKind::Pub).unwrap().is_some());
    }

    #[test]
    fn epoch_secs_truncates_like_stat() {
        assert_eq!(epoch_secs(UNIX_EPOCH + Duration::from_millis(1500)), 1);
        assert_eq!(epoch_secs(UNIX_EPOCH - Duration::from_millis(1500)), -2);
        assert_eq!(epoch_secs(UNIX_EPOCH - Duration::from_secs(3)), -3);
    }
}
