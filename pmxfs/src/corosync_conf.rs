//! The host's corosync.conf and the tree's, kept as pmxcfs keeps them
//! (`dcdb.c:dcdb_sync_corosync_conf`): whenever the replicated `corosync.conf` changes
//! (or a sync installs a tree), the host file is replaced atomically (0644) unless it
//! carries a higher `config_version`; corosync is told to reload (`corosync-cfgtool
//! -R`) only on the node where the change was made and only if the host had a
//! configuration before. The file work runs on its own thread, never on the cluster's.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::tree::{ConfSink, Tree};

/// The `config_version` of a corosync.conf: the digits after the first
/// `config_version`, optional whitespace, `:` and optional whitespace (pmxcfs's regex
/// `config_version\s*:\s*(\d+)`); `None` if there is none or it is 0.
pub fn config_version(conf: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"config_version";
    let mut from = 0;
    while let Some(at) = find(&conf[from..], KEY) {
        let mut i = from + at + KEY.len();
        from = i;
        while conf.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        if conf.get(i) != Some(&b':') {
            continue;
        }
        i += 1;
        while conf.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        let digits: Vec<u8> = conf[i..]
            .iter()
            .copied()
            .take_while(u8::is_ascii_digit)
            .collect();
        if digits.is_empty() {
            continue;
        }
        // strtoull saturates; so does this.
        let v = std::str::from_utf8(&digits)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(u64::MAX);
        return (v != 0).then_some(v);
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// What to do with the host file, given the tree's and the host's corosync.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The tree has none, or one without a version: nothing.
    Skip(&'static str),
    /// The same bytes: nothing.
    Same,
    /// The host's is newer: keep it (pmxcfs: "local corosync.conf is newer").
    HostNewer {
        /// The tree's version.
        tree: u64,
        /// The host's.
        host: u64,
    },
    /// Replace the host file; reload corosync if `reload`.
    Write {
        /// The tree's version.
        version: u64,
        /// Whether to run `corosync-cfgtool -R` (a local change, and the host had a
        /// configuration before).
        reload: bool,
    },
}

/// Decide, as pmxcfs does; `local` says the change was made on this node.
pub fn decide(tree: Option<&[u8]>, host: Option<&[u8]>, local: bool) -> Decision {
    let Some(tree) = tree.filter(|t| !t.is_empty()) else {
        return Decision::Skip("no corosync.conf in the tree");
    };
    let Some(version) = config_version(tree) else {
        return Decision::Skip("unable to parse cluster config_version");
    };
    if host == Some(tree) {
        return Decision::Same;
    }
    let host_version = host.and_then(config_version).unwrap_or(0);
    if version < host_version {
        return Decision::HostNewer {
            tree: version,
            host: host_version,
        };
    }
    Decision::Write {
        version,
        reload: local && host_version > 0,
    }
}

/// Replace `path` with `data` atomically (a temporary file beside it, fsynced, renamed),
/// mode 0644.
pub fn atomic_write(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("conf"),
        std::process::id()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    // Whatever the umask: corosync.conf is world-readable, as pmxcfs writes it.
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(0o644))
        .and_then(|_| f.write_all(data))
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

/// The host file's bytes, `None` if it does not exist.
fn read_host(path: &Path) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::error!("unable to read cluster config file {}: {e}", path.display());
            None
        }
    }
}

/// Bring the host file at `host` in line with the tree's `corosync.conf`.
pub fn sync(tree: &Tree, host: &Path, local: bool) {
    let data = {
        let db = tree.read();
        db.resolve("corosync.conf")
            .ok()
            .filter(|e| !e.is_dir())
            .map(|e| e.row.data.to_vec())
    };
    let old = read_host(host);
    match decide(data.as_deref(), old.as_deref(), local) {
        Decision::Skip(why) => tracing::debug!("corosync.conf: {why}"),
        Decision::Same => {}
        Decision::HostNewer { tree, host: hv } => tracing::error!(
            tree,
            host = hv,
            "local corosync.conf {} is newer than the cluster's; keeping it",
            host.display()
        ),
        Decision::Write { version, reload } => {
            let data = data.expect("a write has data");
            if let Err(e) = atomic_write(host, &data) {
                tracing::error!("{e:#}");
                return;
            }
            tracing::info!(version, "wrote new corosync config {}", host.display());
            if reload {
                // pmxcfs waits a second for the new file to reach the other nodes.
                std::thread::sleep(Duration::from_secs(1));
                match std::process::Command::new("corosync-cfgtool")
                    .arg("-R")
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status()
                {
                    Ok(s) if s.success() => tracing::info!("corosync reloaded its config"),
                    Ok(s) => tracing::error!("corosync-cfgtool -R failed: {s}"),
                    Err(e) => tracing::error!("cannot run corosync-cfgtool -R: {e}"),
                }
            }
        }
    }
}

/// Hands changes of the tree's corosync.conf to the writer thread. At most one request
/// waits: it reads the tree's file when it runs, so later changes fold into it.
pub struct ConfWriter {
    tx: SyncSender<()>,
    local: Arc<AtomicBool>,
}

impl ConfSink for ConfWriter {
    fn changed(&self, local: bool) {
        if local {
            self.local.store(true, Ordering::Release);
        }
        match self.tx.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) => {}
            Err(TrySendError::Disconnected(())) => {}
        }
    }
}

/// Start the writer of `host` for `tree`.
pub fn start(tree: &Arc<Tree>, host: PathBuf) -> Result<ConfWriter> {
    let (tx, rx) = sync_channel::<()>(1);
    let local = Arc::new(AtomicBool::new(false));
    let (weak, flag): (Weak<Tree>, _) = (Arc::downgrade(tree), local.clone());
    std::thread::Builder::new()
        .name("pmxfs-corosync-conf".into())
        .spawn(move || {
            for () in rx {
                let Some(t) = weak.upgrade() else { return };
                sync(&t, &host, flag.swap(false, Ordering::AcqRel));
            }
        })?;
    Ok(ConfWriter { tx, local })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_version_as_pmxcfs_reads_it() {
        assert_eq!(config_version(b"totem {\n  config_version: 3\n}"), Some(3));
        assert_eq!(config_version(b"config_version:12x"), Some(12));
        assert_eq!(config_version(b"config_version  :\t 7"), Some(7));
        assert_eq!(config_version(b"config_version = 7"), None);
        assert_eq!(
            config_version(b"config_version: x\nconfig_version: 5"),
            Some(5)
        );
        assert_eq!(config_version(b"config_version: 0"), None);
        assert_eq!(config_version(b""), None);
        assert_eq!(
            config_version(b"config_version: 99999999999999999999999"),
            Some(u64::MAX)
        );
    }

    #[test]
    fn decisions() {
        let v2 = b"config_version: 2\n".as_slice();
        let v3 = b"config_version: 3\n".as_slice();
        assert!(matches!(decide(None, Some(v2), true), Decision::Skip(_)));
        assert!(matches!(decide(Some(b"x"), None, true), Decision::Skip(_)));
        assert_eq!(decide(Some(v2), Some(v2), true), Decision::Same);
        assert_eq!(
            decide(Some(v2), Some(v3), true),
            Decision::HostNewer { tree: 2, host: 3 }
        );
        assert_eq!(
            decide(Some(v3), Some(v2), true),
            Decision::Write {
                version: 3,
                reload: true
            }
        );
        assert_eq!(
            decide(Some(v3), Some(v2), false),
            Decision::Write {
                version: 3,
                reload: false
            },
            "a peer's change: the peer reloads corosync"
        );
        assert_eq!(
            decide(Some(v3), None, true),
            Decision::Write {
                version: 3,
                reload: false
            },
            "no host config before: corosync starts after us"
        );
        // The same version with other bytes is written (pmxcfs compares bytes first).
        let v3b = b"config_version: 3\n# x\n".as_slice();
        assert_eq!(
            decide(Some(v3b), Some(v3), false),
            Decision::Write {
                version: 3,
                reload: false
            }
        );
    }

    #[test]
    fn atomic_write_replaces_with_0644() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("corosync.conf");
        std::fs::write(&p, b"old").unwrap();
        atomic_write(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temp left"
        );
    }
}
