//! Cache-coherent stat on a real mount: changes that did not come through this node's
//! kernel invalidate its caches, a lock acquisition is a barrier, lock-held paths are
//! never cached, and `--coherence off` really is the stale legacy behaviour (so these
//! tests can fail).
//!
//! Remote changes are injected through the daemon's debug hook, which applies them as
//! if another node's write had been delivered.

use std::fs;
use std::time::{Duration, Instant};

use pmxfs_e2e::{stat_cached, statx_fresh, Pmxfs};
use serde_json::json;

/// Long timeouts, so a stale cache stays stale for the whole test unless invalidated.
const LONG: &[&str] = &["--attr-timeout", "60", "--entry-timeout", "60"];

fn legacy() -> Vec<&'static str> {
    let mut v = LONG.to_vec();
    v.extend(["--coherence", "off"]);
    v
}

/// Poll `stat()` until its size is `want` or `limit` passes. (Asking the daemon for the
/// truth with a forced statx would itself refresh the kernel's cache.)
fn size_within(p: &std::path::Path, want: u64, limit: Duration) -> bool {
    let t0 = Instant::now();
    loop {
        if stat_cached(p).ok().map(|s| s.0) == Some(want) {
            return true;
        }
        if t0.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn requests(fs: &Pmxfs) -> u64 {
    let s = fs.status();
    s["requests"]["lookup"].as_u64().unwrap() + s["requests"]["getattr"].as_u64().unwrap()
}

#[test]
fn remote_writes_invalidate_cached_attributes() {
    for (args, coherent) in [(LONG.to_vec(), true), (legacy(), false)] {
        let fs = Pmxfs::start(&args);
        let p = fs.p("storage.cfg");
        fs::write(&p, b"abc").unwrap();
        let before = stat_cached(&p).unwrap();
        assert_eq!(before.0, 3);
        fs.remote(json!({"op": "write", "path": "storage.cfg", "data": "a longer value"}));
        let fresh = size_within(&p, 14, Duration::from_secs(3));
        assert_eq!(
            fresh, coherent,
            "coherence={coherent}: stat() fresh after a remote write"
        );
        assert_eq!(statx_fresh(&p).unwrap().0, 14, "daemon has the new size");
    }
}

#[test]
fn remote_replace_by_rename_is_seen_by_the_lock_holder_at_once() {
    for lock in ["authkey", "some-unknown-lock"] {
        for (args, coherent) in [(LONG.to_vec(), true), (legacy(), false)] {
            let fs = Pmxfs::start(&args);
            let p = fs.p("authkey.pub");
            fs::write(&p, b"old key").unwrap();
            let old = stat_cached(&p).unwrap();
            // another node rotates: tmp file, then rename over the key (a new inode)
            fs.remote(json!({"op": "create", "path": "authkey.pub.tmp.1"}));
            fs.remote(json!({"op": "write", "path": "authkey.pub.tmp.1", "data": "the new key!"}));
            fs.remote(json!({"op": "rename", "from": "authkey.pub.tmp.1", "to": "authkey.pub"}));
            fs::create_dir(fs.p(&format!("priv/lock/{lock}"))).unwrap();
            // no polling: the lock's mkdir returned, so the kernel must not be stale
            let seen = stat_cached(&p).map(|s| s.0);
            // (a forced statx refreshes attributes but not a stale name, so the legacy
            // mount may even answer ENOENT: the name still points at the replaced inode)
            if coherent {
                assert_eq!(
                    seen.unwrap(),
                    12,
                    "lock {lock}: holder sees the rotated key"
                );
            } else {
                assert_ne!(
                    seen.ok(),
                    Some(12),
                    "legacy mode should still be stale ({old:?})"
                );
            }
            fs::remove_dir(fs.p(&format!("priv/lock/{lock}"))).unwrap();
        }
    }
}

/// The `.version` counter of `path`.
fn counter(fs: &Pmxfs, path: &str) -> u64 {
    let v: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(fs.p(".version")).unwrap()).unwrap();
    v[path]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter for {path}: {v}"))
}

fn barriers(fs: &Pmxfs) -> u64 {
    fs.status()["notify"]["barriers"].as_u64().unwrap()
}

/// A remote change to a file the kernel never looked up has nothing to invalidate: its
/// counter moves at once, without a job for the invalidation thread. Once the kernel
/// knows the file, the counter waits for the invalidation (a barrier job), and stat()
/// is fresh by the time the counter has moved.
#[test]
fn version_counters_wait_for_invalidations_only_when_the_kernel_caches_something() {
    let fs = Pmxfs::start(LONG);
    // A new name in the root, which the kernel knows: an entry invalidation, and the
    // counter after it.
    fs.remote(json!({"op": "create", "path": "user.cfg"}));
    fs.barrier();
    let inodes = |fs: &Pmxfs| fs.status()["notify"]["inodes"].as_u64().unwrap();
    let (b0, c0, i0) = (barriers(&fs), counter(&fs, "user.cfg"), inodes(&fs));
    fs.remote(json!({"op": "write", "path": "user.cfg", "data": "unseen"}));
    assert_eq!(
        counter(&fs, "user.cfg"),
        c0 + 1,
        "the counter moved at once"
    );
    // Whatever the write queued has run once this barrier (counted as it starts) is
    // answered.
    fs.barrier();
    assert_eq!(
        barriers(&fs),
        b0 + 1,
        "no job for a file the kernel never saw"
    );
    assert_eq!(inodes(&fs), i0, "and no invalidation");

    let p = fs.p("user.cfg");
    assert_eq!(
        stat_cached(&p).unwrap().0,
        6,
        "the kernel knows the file now"
    );
    let b1 = barriers(&fs);
    fs.remote(json!({"op": "write", "path": "user.cfg", "data": "seen by the kernel"}));
    // The counter moves on the invalidation thread, after the kernel dropped the cached
    // attributes: once it has moved, stat() must be fresh without polling.
    let t0 = Instant::now();
    while counter(&fs, "user.cfg") != c0 + 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the counter never moved"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        stat_cached(&p).unwrap().0,
        18,
        "fresh once the counter moved"
    );
    assert_eq!(
        barriers(&fs),
        b1 + 1,
        "the counter waited for the invalidation"
    );
    assert_eq!(inodes(&fs), i0 + 1, "which was sent");
}

#[test]
fn lock_held_paths_are_never_cached() {
    let fs = Pmxfs::start(LONG);
    fs::write(fs.p("authkey.pub"), b"k").unwrap();
    fs::write(fs.p("storage.cfg"), b"s").unwrap();
    for p in ["authkey.pub", "storage.cfg"] {
        stat_cached(&fs.p(p)).unwrap();
    }
    // unlocked: repeated stats are answered by the kernel
    let r0 = requests(&fs);
    for _ in 0..20 {
        stat_cached(&fs.p("authkey.pub")).unwrap();
    }
    let unlocked = requests(&fs) - r0;
    fs::create_dir(fs.p("priv/lock/authkey")).unwrap();
    let r1 = requests(&fs);
    for _ in 0..20 {
        stat_cached(&fs.p("authkey.pub")).unwrap();
    }
    let locked = requests(&fs) - r1;
    // storage.cfg is not protected by "authkey": still cached
    let r2 = requests(&fs);
    for _ in 0..20 {
        stat_cached(&fs.p("storage.cfg")).unwrap();
    }
    let other = requests(&fs) - r2;
    fs::remove_dir(fs.p("priv/lock/authkey")).unwrap();
    assert!(
        unlocked <= 2,
        "unlocked path hit the daemon {unlocked} times"
    );
    assert!(
        locked >= 20,
        "lock-held path hit the daemon only {locked} times in 20 stats"
    );
    assert!(other <= 2, "unprotected path hit the daemon {other} times");
}

#[test]
fn expired_locks_are_taken_over_and_cfs_lock_works() {
    let fs = Pmxfs::start(&["--lock-timeout", "2"]);
    let pmxfs = pmxfs_e2e::bin("pmxfs");
    let lock = |name: &str, timeout: Option<&str>, cmd: &[&str]| {
        let mut c = std::process::Command::new(&pmxfs);
        c.arg("lock").arg(name).arg("--mount").arg(&fs.mnt);
        if let Some(t) = timeout {
            c.args(["--timeout", t]);
        }
        c.arg("--").args(cmd).status().unwrap().code()
    };
    assert_eq!(lock("a", None, &["sh", "-c", "exit 7"]), Some(7));
    assert!(!fs.p("priv/lock/a").exists(), "released after the command");
    fs::create_dir(fs.p("priv/lock/held")).unwrap();
    assert_eq!(
        fs::create_dir(fs.p("priv/lock/held"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EEXIST)
    );
    assert_eq!(
        lock("held", Some("0.5"), &["true"]),
        Some(2),
        "timeout exits 2"
    );
    // after the lock timeout, the lock is expired and the next acquirer takes it over
    fs.advance_clock(3);
    fs::create_dir(fs.p("priv/lock/held")).unwrap();
    assert_eq!(
        lock("held", Some("0.5"), &["true"]),
        Some(2),
        "taken over, held again"
    );
    fs.advance_clock(3);
    assert_eq!(
        lock("held", Some("5"), &["true"]),
        Some(0),
        "cfs_lock expires a dead holder"
    );
}

#[test]
fn concurrent_cfs_lock_holders_never_overlap() {
    let fs = Pmxfs::start(&[]);
    let marker = fs.dir.path().join("holder");
    let script = format!(
        "set -e; if ! mkdir {m}; then echo OVERLAP; exit 9; fi; sleep 0.005; rmdir {m}",
        m = marker.display()
    );
    let pmxfs = pmxfs_e2e::bin("pmxfs");
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (pmxfs, mnt, script) = (pmxfs.clone(), fs.mnt.clone(), script.clone());
            std::thread::spawn(move || {
                for _ in 0..50 {
                    let st = std::process::Command::new(&pmxfs)
                        .args(["lock", "race", "--timeout", "30", "--mount"])
                        .arg(&mnt)
                        .args(["--", "sh", "-c", &script])
                        .status()
                        .unwrap();
                    assert_eq!(st.code(), Some(0), "a holder overlapped or failed");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}

/// Concurrent lookups, kernel writes, remote changes (entry + attribute invalidations)
/// and lock barriers in the same directories; no request may hang.
#[test]
fn stress_invalidations_never_hang() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let secs: u64 = std::env::var("PMXFS_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let fs = Arc::new(Pmxfs::start(&[]));
    for d in 0..3 {
        fs::create_dir(fs.p(&format!("d{d}"))).unwrap();
        for f in 0..5 {
            fs::write(fs.p(&format!("d{d}/f{f}")), b"init").unwrap();
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let progress: Arc<Vec<AtomicU64>> = Arc::new((0..5).map(|_| AtomicU64::new(0)).collect());
    let mut threads = Vec::new();
    let spawn = |i: usize, f: Box<dyn Fn(u64) + Send>| {
        let (stop, progress) = (stop.clone(), progress.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                f(n);
                n += 1;
                progress[i].fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    for i in 0..2 {
        let fs = fs.clone();
        threads.push(spawn(
            i,
            Box::new(move |n| {
                let p = fs.p(&format!("d{}/f{}", (n + i as u64) % 3, n % 5));
                let _ = stat_cached(&p);
                let _ = fs::read(&p);
                let _ = fs::read_dir(fs.p(&format!("d{}", n % 3))).map(|d| d.count());
            }),
        ));
    }
    {
        let fs = fs.clone();
        threads.push(spawn(
            2,
            Box::new(move |n| {
                let d = n % 3;
                let tmp = fs.p(&format!("d{d}/k.tmp"));
                if fs::write(&tmp, format!("kernel {n}")).is_ok() {
                    let _ = fs::rename(&tmp, fs.p(&format!("d{d}/f{}", n % 5)));
                }
            }),
        ));
    }
    {
        let fs = fs.clone();
        threads.push(spawn(
            3,
            Box::new(move |n| {
                let d = n % 3;
                let tmp = format!("d{d}/r.tmp");
                let r = |op| fs.request(json!({"cmd": "apply", "op": op}));
                r(json!({"op": "create", "path": tmp}));
                r(json!({"op": "write", "path": tmp, "data": format!("remote {n}")}));
                r(json!({"op": "rename", "from": tmp, "to": format!("d{d}/f{}", (n + 2) % 5)}));
            }),
        ));
    }
    {
        let fs = fs.clone();
        threads.push(spawn(
            4,
            Box::new(move |n| {
                let name = if n % 2 == 0 {
                    "authkey".to_string()
                } else {
                    format!("x{}", n % 7)
                };
                let p = fs.p(&format!("priv/lock/{name}"));
                if fs::create_dir(&p).is_ok() {
                    let _ = stat_cached(&fs.p(&format!("d{}/f0", n % 3)));
                    let _ = fs::remove_dir(&p);
                }
            }),
        ));
    }
    let t0 = Instant::now();
    let mut last: Vec<u64> = vec![0; 5];
    let mut stalled_since: Vec<Instant> = vec![Instant::now(); 5];
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(500));
        for i in 0..5 {
            let now = progress[i].load(Ordering::Relaxed);
            if now != last[i] {
                last[i] = now;
                stalled_since[i] = Instant::now();
            } else if stalled_since[i].elapsed() > Duration::from_secs(20) {
                eprintln!("daemon status: {}", fs.status());
                eprintln!("daemon threads:\n{}", pmxfs_e2e::kernel_stacks(fs.pid()));
                eprintln!(
                    "test threads:\n{}",
                    pmxfs_e2e::kernel_stacks(std::process::id())
                );
                pmxfs_e2e::abort_mount(&fs.mnt);
                stop.store(true, Ordering::Relaxed);
                // workers may still hold the harness, so its Drop would not run
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(fs.pid() as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                panic!("worker {i} made no progress for 20 s: the mount hung");
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let counts: Vec<u64> = progress.iter().map(|p| p.load(Ordering::Relaxed)).collect();
    assert!(
        counts.iter().all(|c| *c > 10),
        "too little work done: {counts:?}"
    );
    let st = fs.status();
    eprintln!(
        "stress: {secs}s, iterations {counts:?}, notify {}",
        st["notify"]
    );
    assert!(st["notify"]["barriers"].as_u64().unwrap() > 10);
    // after all that (and the queues drained), the kernel's view matches the daemon's
    fs.barrier();
    for d in 0..3 {
        for f in 0..5 {
            let p = fs.p(&format!("d{d}/f{f}"));
            let cached = stat_cached(&p).ok();
            assert_eq!(cached, statx_fresh(&p).ok(), "{} stale", p.display());
        }
    }
}

/// Legacy mode keeps names cached, but a name whose file was replaced elsewhere still
/// resolves by path (as pmxcfs's path-based FUSE layer does): reading it returns the new
/// content and the next full stat is fresh. This is what PVE's 2022 "open, read, close,
/// then re-check" fix relies on.
#[test]
fn stale_names_resolve_by_path_like_pmxcfs() {
    let fs = Pmxfs::start(&legacy());
    let p = fs.p("authkey.pub");
    fs::write(&p, b"old key").unwrap();
    assert_eq!(stat_cached(&p).unwrap().0, 7);
    fs.remote(json!({"op": "create", "path": "authkey.pub.tmp.1"}));
    fs.remote(json!({"op": "write", "path": "authkey.pub.tmp.1", "data": "the new key!"}));
    fs.remote(json!({"op": "rename", "from": "authkey.pub.tmp.1", "to": "authkey.pub"}));
    assert_eq!(
        stat_cached(&p).unwrap().0,
        7,
        "legacy: the cached stat is stale"
    );
    assert_eq!(fs::read(&p).unwrap(), b"the new key!");
    assert_eq!(
        stat_cached(&p).unwrap().0,
        12,
        "after a read the stat goes to the daemon"
    );
}
