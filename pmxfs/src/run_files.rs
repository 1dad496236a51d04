//! The files a running daemon keeps outside its database: its pid file, pmxcfs's restart
//! flag, and, in the run directory, the version file and control socket of each mount.
//! A clean exit removes what it made; a start removes what dead daemons left behind.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use pmxfs_client::run_dir::{control_socket, run_dir};
use pmxfs_client::versions::shm_path_for_mount;

/// Write this process's pid to `path` (if any), creating its directory; returns the
/// path to remove at exit.
pub fn write_pidfile(path: Option<&Path>) -> Result<Option<PathBuf>> {
    let Some(path) = path else { return Ok(None) };
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(path)
        .with_context(|| format!("cannot write pid file {}", path.display()))?;
    writeln!(f, "{}", std::process::id())
        .with_context(|| format!("cannot write pid file {}", path.display()))?;
    Ok(Some(path.to_path_buf()))
}

/// Create the restart flag (0440, group www-data, so that pveproxy's client sees it).
pub fn set_restart_flag(path: Option<&Path>) {
    let Some(path) = path else { return };
    if let Some(d) = path.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    let r = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o440)
        .open(path);
    match r {
        Ok(_) => {
            let gid = crate::daemon::www_data_gid();
            let _ = nix::unistd::chown(path, Some(0.into()), Some(gid.into()));
        }
        Err(e) => tracing::warn!("cannot create restart flag {}: {e}", path.display()),
    }
}

/// Remove the restart flag: the daemon serves again.
pub fn clear_restart_flag(path: Option<&Path>) {
    if let Some(p) = path {
        remove(p);
    }
}

fn remove(p: &Path) {
    match std::fs::remove_file(p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("cannot remove {}: {e}", p.display()),
    }
}

/// At exit: this mount's version file and the pid file.
pub fn remove_own(mount: &Path, pidfile: Option<&Path>) {
    remove(&shm_path_for_mount(mount));
    if let Some(p) = pidfile {
        remove(p);
    }
}

/// At start: what a dead daemon of `mount` left, and the files of every other mount
/// whose control socket no longer answers (its daemon is gone). A mount whose socket
/// still answers, or that has no socket yet (its daemon is starting), is left alone.
pub fn remove_stale(mount: &Path) {
    let own_sock = control_socket(mount);
    remove(&own_sock);
    remove(&shm_path_for_mount(mount));
    let Ok(dir) = std::fs::read_dir(run_dir()) else {
        return;
    };
    for e in dir.flatten() {
        let p = e.path();
        if p.extension() != Some(OsStr::new("sock")) {
            continue;
        }
        let refused = matches!(
            UnixStream::connect(&p),
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED)
        );
        if refused {
            tracing::info!(
                "removing the run files of a daemon that is gone: {}",
                p.display()
            );
            remove(&p);
            remove(&p.with_extension("versions"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_file_and_restart_flag() {
        let d = tempfile::tempdir().unwrap();
        let pid = d.path().join("sub/pmxfs.pid");
        let written = write_pidfile(Some(&pid)).unwrap();
        assert_eq!(written.as_deref(), Some(pid.as_path()));
        let text = std::fs::read_to_string(&pid).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        assert_eq!(write_pidfile(None).unwrap(), None);
        let flag = d.path().join("run/cfs-restart-flag");
        set_restart_flag(Some(&flag));
        assert!(flag.exists());
        clear_restart_flag(Some(&flag));
        assert!(!flag.exists());
        clear_restart_flag(Some(&flag));
    }
}
