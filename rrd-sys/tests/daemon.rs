//! Updates through a private rrdcached, and the fallbacks to direct updates.
mod common;

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{now, values, Info};
use rrd_sys::RrdWriter;
use tempfile::TempDir;

/// A private rrdcached, killed when dropped, even when the test fails.
struct RrdCached {
    child: Child,
    sock: PathBuf,
    state: TempDir,
}

impl RrdCached {
    /// Start one restricted (`-B`) to `base`, writing cached updates only after an hour,
    /// so that an update sits in the cache until flushed.
    fn start(base: &Path) -> RrdCached {
        let state = tempfile::tempdir().expect("tempdir");
        let sock = state.path().join("sock");
        let journal = state.path().join("journal");
        std::fs::create_dir(&journal).expect("journal dir");
        let log = std::fs::File::create(state.path().join("log")).expect("log file");
        let child = Command::new("rrdcached")
            .arg("-g")
            .arg("-l")
            .arg(format!("unix:{}", sock.display()))
            .arg("-b")
            .arg(base)
            .arg("-B")
            .arg("-j")
            .arg(&journal)
            .arg("-p")
            .arg(state.path().join("pid"))
            .args(["-w", "3600", "-f", "7200"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start rrdcached (package rrdcached)");
        let mut daemon = RrdCached { child, sock, state };
        daemon.wait_ready();
        daemon
    }

    /// Poll until the socket accepts a connection; fail if rrdcached exits or takes long.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("rrdcached exited with {status}: {}", self.log());
            }
            if UnixStream::connect(&self.sock).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "rrdcached not listening on {} after 10 s: {}",
                self.sock.display(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn address(&self) -> String {
        format!("unix:{}", self.sock.display())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.state.path().join("log")).unwrap_or_default()
    }

    /// Write the cached updates of `file` to it.
    fn flush(&self, file: &Path) {
        let out = Command::new("rrdtool")
            .arg("flushcached")
            .arg("--daemon")
            .arg(self.address())
            .arg(file)
            .output()
            .expect("run rrdtool flushcached");
        assert!(
            out.status.success(),
            "flushcached {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("rrdcached exited with {status}: {}", self.log());
        }
    }
}

impl Drop for RrdCached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A base directory free of symlinks: rrdcached refuses a `-b` reached through one.
fn base_dir() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().canonicalize().expect("canonicalize");
    (dir, base)
}

#[test]
fn update_is_cached_until_flushed() {
    let (_dir, base) = base_dir();
    let mut daemon = RrdCached::start(&base);
    let writer = RrdWriter::new(&base, Some(daemon.address()));
    let t = now();
    writer
        .update("pve-node-9.0/pcs1", &format!("4711:0:{t}:{}", values(19)))
        .expect("update");

    let path = base.join("pve-node-9.0/pcs1");
    let created = Info::read(&path);
    assert_eq!(created.ds_names().len(), 19);
    // Only created so far: the update is in the daemon, not in the file.
    assert!(
        created.last_update() < t,
        "update reached the file directly, not through rrdcached"
    );

    daemon.flush(&path);
    let info = Info::read(&path);
    assert_eq!(info.last_update(), t);
    assert_eq!(info.get("ds[loadavg].last_ds"), "1");
    assert_eq!(info.get("ds[pressurememoryfull].last_ds"), "19");
    daemon.assert_running();
}

#[test]
fn file_outside_the_daemon_base_is_updated_directly() {
    let (_dir, base) = base_dir();
    let (_other, elsewhere) = base_dir();
    let mut daemon = RrdCached::start(&base);
    // -B makes the daemon refuse this path; the writer falls back as pmxcfs does.
    let writer = RrdWriter::new(&elsewhere, Some(daemon.address()));
    let t = now();
    writer
        .update("pve2-storage/pcs1/local", &format!("{t}:1000:500"))
        .expect("update");
    let info = Info::read(&elsewhere.join("pve-storage-9.0/pcs1/local"));
    assert_eq!(info.last_update(), t);
    assert_eq!(info.get("ds[used].last_ds"), "500");
    daemon.assert_running();
}

#[test]
fn unreachable_daemon_falls_back_to_direct() {
    let (_dir, base) = base_dir();
    let sock = base.join("no-daemon.sock");
    let writer = RrdWriter::new(&base, Some(format!("unix:{}", sock.display())));
    let t = now();
    writer
        .update(
            "pve-vm-9.0/100",
            &format!("1:vm:running:0:{t}:{}", values(17)),
        )
        .expect("update");
    let info = Info::read(&base.join("pve-vm-9.0/100"));
    assert_eq!(info.last_update(), t);
}
