//! Harness for end-to-end tests and benchmarks: start the real `pmxfs` binary on a
//! temporary mount point and database, and always clean up, even when the daemon hangs
//! (the FUSE connection is then aborted through fusectl before unmounting).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod ipc;

/// Path of a binary built from this workspace, next to the test executable's profile.
pub fn bin(name: &str) -> PathBuf {
    if let Ok(p) = std::env::var(format!("{}_BIN", name.to_uppercase().replace('-', "_"))) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not found: build it first (cargo build --workspace --bins, same profile)",
        p.display()
    );
    p
}

/// A running pmxfs on a temporary directory.
pub struct Pmxfs {
    /// Temporary directory holding mount, db, run dir and log.
    pub dir: tempfile::TempDir,
    /// Mount point.
    pub mnt: PathBuf,
    /// Database file.
    pub db: PathBuf,
    /// `PMXFS_RUN_DIR` of this instance.
    pub run: PathBuf,
    /// This instance's IPC service name (unique, so that tests can run side by side).
    pub ipc: String,
    child: Option<Child>,
    args: Vec<String>,
    /// Whether the command line forces local mode (`--local`); else the database
    /// decides, as in pmxcfs.
    pub local: bool,
    /// Whether the command line keeps the daemon in the foreground (`--foreground`).
    pub foreground: bool,
}

impl Pmxfs {
    /// Start with extra arguments (always `--local --foreground --debug-hooks`).
    pub fn start(extra: &[&str]) -> Pmxfs {
        let mut p = Pmxfs::unstarted(extra);
        p.spawn_and_wait();
        p
    }

    /// Start without `--local`: the database decides the mode.
    pub fn start_decided(extra: &[&str]) -> Pmxfs {
        let mut p = Pmxfs::unstarted(extra);
        p.local = false;
        p.spawn_and_wait();
        p
    }

    /// An instance on a new directory, not started: for tests that run its command
    /// line themselves.
    pub fn unstarted(extra: &[&str]) -> Pmxfs {
        let dir = tempfile::Builder::new()
            .prefix("pmxfs-test-")
            .tempdir()
            .expect("tempdir");
        let mnt = dir.path().join("mnt");
        let db = dir.path().join("config.db");
        let run = dir.path().join("run");
        let ipc = format!(
            "pmxfs-{}",
            dir.path().file_name().unwrap_or_default().to_string_lossy()
        );
        Pmxfs {
            dir,
            mnt,
            db,
            run,
            ipc,
            child: None,
            args: extra.iter().map(|s| s.to_string()).collect(),
            local: true,
            foreground: true,
        }
    }

    /// The command line this instance runs with.
    pub fn command(&self) -> Command {
        self.command_for(&self.db, &self.mnt)
    }

    /// This instance's command line with another database and mount point.
    pub fn command_for(&self, db: &Path, mnt: &Path) -> Command {
        let mut c = Command::new(bin("pmxfs"));
        if self.local {
            c.arg("--local");
        }
        if self.foreground {
            c.arg("--foreground");
        }
        c.arg("--debug-hooks")
            .arg("--nodename")
            .arg("n1")
            .arg("--mount")
            .arg(mnt)
            .arg("--db")
            .arg(db)
            .arg("--ipc-name")
            .arg(&self.ipc)
            .arg("--rrd-dir")
            .arg(self.dir.path().join("rrd"))
            .args(["--rrdcached", ""])
            .arg("--pidfile")
            .arg(self.dir.path().join("pmxfs.pid"))
            .arg("--restart-flag")
            .arg(self.run.join("cfs-restart-flag"))
            .arg("--corosync-conf")
            .arg(self.dir.path().join("corosync.conf"))
            .args(&self.args)
            .env("PMXFS_RUN_DIR", &self.run)
            .env("PMXFS_LOG", "warn");
        c
    }

    fn spawn_and_wait(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("pmxfs.log"))
            .expect("log");
        let child = self
            .command()
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn pmxfs");
        self.child = Some(child);
        let t0 = Instant::now();
        while !is_mounted(&self.mnt) || !socket_ready(&self.run) {
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("pmxfs exited early ({st}): {}", self.log());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "pmxfs did not mount: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pmxfs.log")).unwrap_or_default()
    }

    /// Path inside the mount.
    pub fn p(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// Ask the control socket.
    pub fn request(&self, req: Value) -> Value {
        let sock = std::fs::read_dir(&self.run)
            .expect("run dir")
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "sock"))
            .expect("control socket");
        control_request(&sock, req)
    }

    /// `status` document.
    pub fn status(&self) -> Value {
        self.request(serde_json::json!({"cmd": "status"}))
    }

    /// Apply an operation as if it came from another node; panics on failure.
    pub fn remote(&self, op: Value) -> Value {
        let r = self.request(serde_json::json!({"cmd": "apply", "op": op}));
        assert!(r.get("error").is_none(), "remote op failed: {r}");
        r
    }

    /// Stop with SIGTERM and wait; returns whether it exited by itself in time.
    pub fn stop(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if c.try_wait().ok().flatten().is_some() {
                return !is_mounted(&self.mnt);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        abort_mount(&self.mnt);
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    /// Kill -9 and leave everything as a crash does: the dead mount stays (every access
    /// fails with ENOTCONN) and so does the control socket file, which is removed here
    /// only so that `restart` waits for the new daemon's own socket.
    pub fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Ok(d) = std::fs::read_dir(&self.run) {
            for e in d.flatten() {
                if e.path().extension().is_some_and(|x| x == "sock") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    /// Wait up to `limit` for the daemon to exit by itself; its exit status, or `None`
    /// while it still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let t0 = Instant::now();
        loop {
            let st = self.child.as_mut()?.try_wait().ok().flatten();
            if st.is_some() {
                self.child = None;
                return st;
            }
            if t0.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Leave `--fault <fault>` out of the next `restart`.
    pub fn without_fault(&mut self, fault: &str) {
        let at = self
            .args
            .windows(2)
            .position(|w| w[0] == "--fault" && w[1] == fault)
            .unwrap_or_else(|| panic!("not started with --fault {fault}"));
        self.args.drain(at..at + 2);
    }

    /// Move the daemon's clock forward by `secs` (the `--debug-hooks` clock), so that
    /// a lock expires without the test sleeping out its timeout.
    pub fn advance_clock(&self, secs: u64) {
        let r = self.request(serde_json::json!({"cmd": "advance-clock", "secs": secs}));
        assert_eq!(r["ok"], true, "advance-clock: {r}");
    }

    /// Return once every invalidation the daemon queued so far reached the kernel.
    pub fn barrier(&self) {
        let r = self.request(serde_json::json!({"cmd": "barrier"}));
        assert_eq!(r["ok"], true, "barrier: {r}");
    }

    /// Start again on the same directory and database.
    pub fn restart(&mut self) {
        self.spawn_and_wait();
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }
}

impl Drop for Pmxfs {
    fn drop(&mut self) {
        if !self.stop() {
            eprintln!("pmxfs did not stop cleanly; log:\n{}", self.log());
        }
        abort_mount(&self.mnt);
    }
}

/// One request on the control socket `sock`, and its reply.
fn control_request(sock: &Path, req: Value) -> Value {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock).expect("connect");
    writeln!(s, "{req}").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    serde_json::from_str(&line).expect("json reply")
}

fn socket_ready(run: &Path) -> bool {
    std::fs::read_dir(run)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .any(|e| e.path().extension().is_some_and(|x| x == "sock"))
        })
        .unwrap_or(false)
}

/// Mount point → FUSE connection minor, read from mountinfo (never stat a FUSE mount
/// that may be hung).
fn fuse_minor(mnt: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = mnt.to_string_lossy();
    info.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.len() > 4 && f[4] == want && l.contains(" - fuse"))
            .then(|| f[2].split(':').nth(1).unwrap_or("").to_string())
    })
}

/// Whether `mnt` is a mount point (from mountinfo).
pub fn is_mounted(mnt: &Path) -> bool {
    fuse_minor(mnt).is_some()
}

/// Abort the FUSE connection of `mnt` (if still mounted) and detach it.
pub fn abort_mount(mnt: &Path) {
    let Some(minor) = fuse_minor(mnt) else { return };
    let ctl = Path::new("/sys/fs/fuse/connections");
    if !ctl.join(&minor).exists() {
        let _ = Command::new("mount")
            .args(["-t", "fusectl", "none", "/sys/fs/fuse/connections"])
            .status();
    }
    let _ = std::fs::write(ctl.join(&minor).join("abort"), "1");
    let _ = Command::new("umount").arg("-l").arg(mnt).status();
}

/// `statx` with AT_STATX_FORCE_SYNC: always asks the daemon (the ground truth).
pub fn statx_fresh(p: &Path) -> std::io::Result<(u64, i64)> {
    statx_flags(p, libc::AT_STATX_FORCE_SYNC)
}

fn statx_flags(p: &Path, flags: i32) -> std::io::Result<(u64, i64)> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: statx writes into a zeroed, properly sized struct we own.
    unsafe {
        let mut st: libc::statx = std::mem::zeroed();
        if libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            flags,
            libc::STATX_BASIC_STATS,
            &mut st,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok((st.stx_size, st.stx_mtime.tv_sec))
    }
}

/// Plain `stat()`: what most programs see, possibly from the kernel's cache.
pub fn stat_cached(p: &Path) -> std::io::Result<(u64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p)?;
    Ok((m.size(), m.mtime()))
}

/// The errno of an io::Error.
pub fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

/// A real N-node corosync + pmxfs cluster from `scripts/cluster.sh`, torn down on drop.
pub struct Cluster {
    /// State directory (node K's mount is `dir/nK/mnt`).
    pub dir: PathBuf,
    /// Number of nodes.
    pub n: usize,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    // Held while the cluster exists: clusters share fixed bridge/namespace names.
    _machine_lock: std::fs::File,
}

/// File whose flock serialises every user of `scripts/cluster.sh` on this machine.
pub const CLUSTER_LOCK: &str = "/run/pmxfs-cluster.lock";

fn lock_machine() -> std::fs::File {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(CLUSTER_LOCK)
        .expect("open cluster lock");
    // SAFETY: flock on a descriptor we own.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(r, 0, "flock {CLUSTER_LOCK}");
    f
}

/// `scripts/cluster.sh` of this repository.
pub fn cluster_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster.sh")
}

impl Cluster {
    /// Bring up `n` nodes with pmxfs started with `pmxfs_args`.
    ///
    /// A watchdog tears the cluster down after `PMXFS_CLUSTER_TEST_TIMEOUT` seconds
    /// (default 300): aborting the FUSE connections makes any hung call fail, so a hang
    /// fails the test instead of stalling the run.
    pub fn up(n: usize, pmxfs_args: &str) -> Cluster {
        Cluster::up_with(n, pmxfs_args, true)
    }

    fn up_with(n: usize, pmxfs_args: &str, with_pmxfs: bool) -> Cluster {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pmxfs-e2e-cluster-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let c = Cluster {
            dir,
            n,
            done: Default::default(),
            _machine_lock: lock_machine(),
        };
        let limit: u64 = std::env::var("PMXFS_CLUSTER_TEST_TIMEOUT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300);
        let (done, wdir) = (c.done.clone(), c.dir.clone());
        std::thread::spawn(move || {
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(limit) {
                if done.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            eprintln!("watchdog: cluster test exceeded {limit} s, tearing the cluster down");
            let _ = Command::new("bash")
                .arg(cluster_script())
                .arg("down")
                .arg(&wdir)
                .output();
        });
        let no_pmxfs = !with_pmxfs;
        let mut cmd = Command::new("bash");
        cmd.arg(cluster_script()).arg("up");
        if no_pmxfs {
            cmd.arg("--no-pmxfs");
        }
        let out = cmd
            .arg(n.to_string())
            .arg(&c.dir)
            .env("PMXFS_BIN", bin("pmxfs"))
            .env("PMXFS_ARGS", pmxfs_args)
            .output()
            .expect("run cluster.sh");
        if no_pmxfs && out.status.success() {
            std::fs::write(
                c.dir.join("pmxfs.env"),
                format!("BIN={}\nPMXFS_ARGS=\n", bin("pmxfs").display()),
            )
            .expect("pmxfs.env");
        }
        assert!(
            out.status.success(),
            "cluster.sh up failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            c.logs()
        );
        if with_pmxfs {
            // A mount is up before its cluster thread joined the group, which it retries
            // if corosync's library is not ready yet: tests start once every node is in.
            let joined = wait_until(Duration::from_secs(30), || {
                (1..=n).all(|k| c.status(k)["quorate"] == true)
            });
            assert!(
                joined.is_some(),
                "not every node became quorate\n{}",
                c.logs()
            );
        }
        c
    }

    /// Bring up `n` corosync nodes without pmxfs; `script("pmxfs-start", k)` then starts
    /// this build's pmxfs on node `k`, on its own schedule.
    pub fn up_without_pmxfs(n: usize) -> Cluster {
        Cluster::up_with(n, "", false)
    }

    /// Node `k`'s mount point.
    pub fn mnt(&self, k: usize) -> PathBuf {
        self.dir.join(format!("n{k}/mnt"))
    }

    /// Run a `cluster.sh` subcommand against this cluster.
    pub fn script(&self, cmd: &str, k: usize) {
        self.script_env(cmd, k, &[]);
    }

    /// `scripts/cluster.sh CMD K DIR` with extra environment (e.g. `PMXFS_START_ARGS`).
    pub fn script_env(&self, cmd: &str, k: usize, env: &[(&str, &str)]) {
        let out = Command::new("bash")
            .arg(cluster_script())
            .args([cmd, &k.to_string()])
            .arg(&self.dir)
            .envs(env.iter().copied())
            .output()
            .expect("run cluster.sh");
        assert!(
            out.status.success(),
            "cluster.sh {cmd} {k}: {out:?}\n{}",
            self.logs()
        );
    }

    /// Cut node `k`'s link.
    pub fn cut(&self, k: usize) {
        let st = Command::new("ip")
            .args(["link", "set", &format!("veth{k}"), "down"])
            .status();
        assert!(st.is_ok_and(|s| s.success()));
    }

    /// Restore node `k`'s link.
    pub fn heal(&self, k: usize) {
        let st = Command::new("ip")
            .args(["link", "set", &format!("veth{k}"), "up"])
            .status();
        assert!(st.is_ok_and(|s| s.success()));
    }

    /// Ask node `k`'s control socket (its `--debug-hooks` commands among others).
    pub fn request(&self, k: usize, req: Value) -> Value {
        control_request(&pmxfs::control::socket_path(&self.mnt(k)), req)
    }

    /// `pmxfs status --json` of node `k`.
    pub fn status(&self, k: usize) -> Value {
        let out = Command::new(bin("pmxfs"))
            .args(["status", "--json", "--mount"])
            .arg(self.mnt(k))
            .output()
            .expect("pmxfs status");
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// Send IPC requests `(id, payload)` to node `k`'s `pve2` server (in its network
    /// namespace, as root), returning `(error, body)` per reply.
    pub fn ipc(&self, k: usize, calls: &[(i32, &[u8])]) -> Vec<(i32, Vec<u8>)> {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/pmx{k}"))
            .arg("--")
            .arg(bin("ipc-call"))
            .arg("pve2");
        for (id, p) in calls {
            cmd.arg(id.to_string());
            cmd.arg(p.iter().map(|b| format!("{b:02x}")).collect::<String>());
        }
        let out = cmd.output().expect("run ipc-call");
        assert!(
            out.status.success(),
            "ipc-call on n{k}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let (e, b) = l.split_once(' ').unwrap_or((l, ""));
                let body = (0..b.len() / 2)
                    .map(|i| u8::from_str_radix(&b[2 * i..2 * i + 2], 16).expect("hex"))
                    .collect();
                (e.parse().expect("errno"), body)
            })
            .collect()
    }

    /// Every node's pmxfs log (for failure messages).
    pub fn logs(&self) -> String {
        (1..=self.n)
            .map(|k| {
                let log = std::fs::read_to_string(self.dir.join(format!("n{k}/pmxfs.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                format!(
                    "--- n{k}\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = Command::new("bash")
            .arg(cluster_script())
            .arg("down")
            .arg(&self.dir)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Poll `f` every 50 ms until it is true or `limit` passes; returns the time it took.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    loop {
        if f() {
            return Some(t0.elapsed());
        }
        if t0.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A digest of a mounted tree's real entries (paths and contents; virtual entries and
/// lock directories excluded), to compare nodes.
pub fn tree_digest(root: &Path) -> String {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names {
            let r = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if rel.is_empty()
                && (name.starts_with('.')
                    || ["local", "lxc", "openvz", "qemu-server"].contains(&name.as_str()))
            {
                continue;
            }
            if r == "priv/lock" {
                continue;
            }
            let p = dir.join(&name);
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => {
                    out.push(format!("d {r}"));
                    walk(&p, &r, out);
                }
                Ok(_) => {
                    let data = std::fs::read(&p).unwrap_or_default();
                    out.push(format!("f {r} {}", String::from_utf8_lossy(&data)));
                }
                Err(_) => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(root, "", &mut out);
    out.join("\n")
}

/// Write a file and report only what is committed: `fs::write` ignores the error of
/// `close()`, where pmxfs commits, so a write cut short by a crash would count as
/// acknowledged. `fsync` commits and returns the commit's error.
pub fn write_acked(p: &Path, data: impl AsRef<[u8]>) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(p)?;
    f.write_all(data.as_ref())?;
    f.sync_all()
}

/// Kernel stacks of every thread of `pid` (to show where a hang sits).
pub fn kernel_stacks(pid: u32) -> String {
    let mut out = String::new();
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in rd.filter_map(|e| e.ok()) {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            let stack = std::fs::read_to_string(t.path().join("stack")).unwrap_or_default();
            out += &format!(
                "--- {} {}{}\n",
                t.file_name().to_string_lossy(),
                comm,
                stack
            );
        }
    }
    out
}

/// The errno of a result, 0 for success.
pub fn err_of<T>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => errno(&e),
    }
}

/// Start a daemon on one transport and check it is the one carrying requests.
pub fn start_on(transport: &str) -> Pmxfs {
    let fs = Pmxfs::start(&["--transport", transport]);
    let t = fs.status()["transport"].as_str().unwrap_or("").to_string();
    match transport {
        // setup.sh turns on fuse.enable_uring; without it this fails instead of
        // quietly testing /dev/fuse twice.
        "io-uring" => assert!(t.starts_with("io_uring"), "transport {t}: {}", fs.log()),
        _ => assert_eq!(t, "/dev/fuse"),
    }
    fs
}

/// Requests the io_uring queues served so far.
pub fn ring_requests(fs: &Pmxfs) -> u64 {
    fs.status()["requests"]["io_uring"].as_u64().unwrap()
}
