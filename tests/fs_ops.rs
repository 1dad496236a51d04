//! End-to-end filesystem behaviour on a real FUSE mount: operations, modes, the errno
//! table, limits, virtual entries, write coalescing, refusal to start, crash safety.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use pmxfs_e2e::{errno, Pmxfs};
use serde_json::json;

fn err_of<T>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => errno(&e),
    }
}

/// Start a daemon on one transport and check it is the one carrying requests.
fn start_on(transport: &str) -> Pmxfs {
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
fn ring_requests(fs: &Pmxfs) -> u64 {
    fs.status()["requests"]["io_uring"].as_u64().unwrap()
}

#[test]
fn basic_operations_over_io_uring() {
    let fs = start_on("io-uring");
    basic_operations_and_ownership(&fs);
    assert!(
        ring_requests(&fs) > 50,
        "the ring queues served the requests"
    );
}

#[test]
fn basic_operations_over_dev_fuse() {
    let fs = start_on("dev-fuse");
    basic_operations_and_ownership(&fs);
    assert_eq!(ring_requests(&fs), 0);
}

#[test]
fn errno_table_over_io_uring() {
    let fs = start_on("io-uring");
    errno_table(&fs);
    assert!(ring_requests(&fs) > 50);
}

#[test]
fn errno_table_over_dev_fuse() {
    errno_table(&start_on("dev-fuse"));
}

/// Once INIT agreed to io_uring the kernel holds every request until all queues are
/// registered: a queue that cannot start must hand the mount back to /dev/fuse, not
/// hang it.
#[test]
fn a_queue_that_cannot_start_falls_back_to_dev_fuse() {
    let fs = Pmxfs::start_with_env(&["--transport", "io-uring"], &[("PMXFS_FAIL_QUEUE", "1")]);
    assert_eq!(fs.status()["transport"], "/dev/fuse", "{}", fs.log());
    assert!(
        fs.log().contains("falling back to /dev/fuse"),
        "{}",
        fs.log()
    );
    // A held mount would block these calls forever: run them on a thread and give up
    // after a while (dropping `fs` then aborts the connection).
    let (p, lock) = (fs.p("storage.cfg"), fs.p("priv/lock/fallback"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        fs::write(&p, b"dir: local\n").unwrap();
        let back = fs::read(&p).unwrap();
        fs::create_dir(&lock).unwrap();
        fs::remove_dir(&lock).unwrap();
        let _ = tx.send(back);
    });
    let back = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the mount hangs: requests are held for a ring that never became ready");
    assert_eq!(back, b"dir: local\n");
    assert_eq!(
        ring_requests(&fs),
        0,
        "nothing went through the half-registered ring"
    );
}

/// SIGSTOP/SIGCONT (job control, a debugger, strace attaching) interrupts the queue
/// threads' io_uring_enter with EINTR; a queue that took that for an error stopped, and
/// the kernel kept routing its CPU's requests to it: the mount hung.
#[test]
fn stopping_and_continuing_the_daemon_keeps_the_ring_serving() {
    keeps_serving_through_stop_and_continue(&start_on("io-uring"));
}

#[test]
fn stopping_and_continuing_the_daemon_keeps_dev_fuse_serving() {
    keeps_serving_through_stop_and_continue(&start_on("dev-fuse"));
}

fn keeps_serving_through_stop_and_continue(fs: &Pmxfs) {
    let pid = nix::unistd::Pid::from_raw(fs.pid() as i32);
    let (p, stop) = (
        fs.p("storage.cfg"),
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let writer = {
        let (p, stop) = (p.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                fs::write(&p, format!("dir: local{n}\n")).unwrap();
                n += 1;
            }
            let _ = tx.send(n);
        })
    };
    for _ in 0..5 {
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let n = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("the mount hangs after SIGSTOP/SIGCONT: {}", fs.log()));
    writer.join().unwrap();
    let want = format!("dir: local{}\n", n - 1);
    assert_eq!(fs::read_to_string(&p).unwrap(), want);
    assert!(!fs.log().contains("queue stopped"), "{}", fs.log());
}

fn basic_operations_and_ownership(fs: &Pmxfs) {
    fs::write(fs.p("storage.cfg"), b"dir: local\n").unwrap();
    assert_eq!(fs::read(fs.p("storage.cfg")).unwrap(), b"dir: local\n");
    let m = fs::metadata(fs.p("storage.cfg")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (0, 33, 0o640));
    fs::create_dir(fs.p("sdn")).unwrap();
    assert_eq!(fs::metadata(fs.p("sdn")).unwrap().mode() & 0o7777, 0o755);
    fs::write(fs.p("priv/secret"), b"x").unwrap();
    assert_eq!(
        fs::metadata(fs.p("priv/secret")).unwrap().mode() & 0o7777,
        0o600
    );
    assert_eq!(fs::metadata(fs.p("priv")).unwrap().mode() & 0o7777, 0o700);
    assert_eq!(
        fs::metadata(fs.p("nodes/n1/priv")).unwrap().mode() & 0o7777,
        0o700
    );
    // rename, overwrite via rename, unlink, rmdir
    fs::write(fs.p("sdn/a.tmp"), b"new").unwrap();
    fs::rename(fs.p("sdn/a.tmp"), fs.p("storage.cfg")).unwrap();
    assert_eq!(fs::read(fs.p("storage.cfg")).unwrap(), b"new");
    fs::remove_file(fs.p("storage.cfg")).unwrap();
    fs::remove_dir(fs.p("sdn")).unwrap();
    assert_eq!(err_of(fs::metadata(fs.p("sdn"))), libc::ENOENT);
    // truncate and utimens
    fs::write(fs.p("f"), b"0123456789").unwrap();
    let f = fs::OpenOptions::new().write(true).open(fs.p("f")).unwrap();
    f.set_len(4).unwrap();
    drop(f);
    assert_eq!(fs::read(fs.p("f")).unwrap(), b"0123");
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
    fs::File::options()
        .write(true)
        .open(fs.p("f"))
        .unwrap()
        .set_modified(t)
        .unwrap();
    assert_eq!(fs::metadata(fs.p("f")).unwrap().mtime(), 1_600_000_000);
    // readdir lists virtual and real entries
    let mut names: Vec<String> = fs::read_dir(&fs.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    for want in [
        ".members",
        ".version",
        ".vmlist",
        ".clusterlog",
        "local",
        "lxc",
        "nodes",
        "priv",
        "f",
    ] {
        assert!(
            names.contains(&want.to_string()),
            "{want} missing in {names:?}"
        );
    }
    // a directory larger than one READDIR buffer is listed whole, each name once
    fs::create_dir(fs.p("many")).unwrap();
    let want: Vec<String> = (0..600)
        .map(|i| format!("vm-{i:04}-config-file.conf"))
        .collect();
    for n in &want {
        fs::write(fs.p(&format!("many/{n}")), b"").unwrap();
    }
    let mut got: Vec<String> = fs::read_dir(fs.p("many"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    got.sort();
    assert_eq!(got, want);
    // statfs reports pmxcfs's geometry
    let sv = nix::sys::statvfs::statvfs(&fs.mnt).unwrap();
    assert_eq!(
        (sv.block_size(), sv.blocks(), sv.files()),
        (4096, 32768, 262144)
    );
    assert_eq!(sv.name_max(), 255);
}

fn errno_table(fs: &Pmxfs) {
    fs::write(fs.p("user.cfg"), b"x").unwrap();
    let f = fs.p("user.cfg");
    let chmod = |p: &std::path::Path, m| fs::set_permissions(p, fs::Permissions::from_mode(m));
    assert_eq!(err_of(chmod(&f, 0o755)), libc::EPERM, "chmod 0755");
    assert_eq!(err_of(chmod(&f, 0o640)), 0, "chmod 0640 is a no-op");
    fs::write(fs.p("priv/x"), b"").unwrap();
    assert_eq!(
        err_of(chmod(&fs.p("priv/x"), 0o600)),
        0,
        "chmod 0600 in priv"
    );
    assert_eq!(
        err_of(chmod(&fs.p("priv/x"), 0o640)),
        libc::EPERM,
        "chmod 0640 in priv"
    );
    assert_eq!(
        err_of(std::os::unix::fs::chown(&f, Some(1), None)),
        libc::EPERM
    );
    assert_eq!(err_of(std::os::unix::fs::chown(&f, Some(0), Some(33))), 0);
    assert_eq!(
        err_of(std::os::unix::fs::chown(&f, None, Some(0))),
        libc::EPERM
    );
    assert_eq!(err_of(fs::hard_link(&f, fs.p("hl"))), libc::EPERM);
    assert_eq!(
        err_of(std::os::unix::fs::symlink("x", fs.p("sl"))),
        libc::ENOSYS
    );
    let fifo = nix::unistd::mkfifo(
        &fs.p("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    );
    assert_eq!(fifo.err().map(|e| e as i32), Some(libc::ENOSYS));
    let xattr = nix::sys::stat::stat(&f).map(|_| ()).and_then(|_| {
        let c = std::ffi::CString::new(f.to_str().unwrap()).unwrap();
        // SAFETY: valid C strings and buffer.
        let r =
            unsafe { libc::setxattr(c.as_ptr(), c"user.a".as_ptr(), c"1".as_ptr().cast(), 1, 0) };
        nix::errno::Errno::result(r).map(|_| ())
    });
    assert_eq!(xattr.err().map(|e| e as i32), Some(libc::EOPNOTSUPP));
    // limits
    let long = "a".repeat(256);
    assert_eq!(err_of(fs::write(fs.p(&long), b"")), libc::ENAMETOOLONG);
    assert_eq!(err_of(fs::write(fs.p(&"b".repeat(255)), b"")), 0);
    assert_eq!(
        err_of(fs::write(fs.p("big"), vec![0u8; 1024 * 1024 + 1])),
        libc::EFBIG
    );
    assert_eq!(err_of(fs::write(fs.p("max"), vec![7u8; 1024 * 1024])), 0);
    // an oversize write leaves the stored file intact
    fs::write(fs.p("keep"), b"precious").unwrap();
    let mut h = fs::OpenOptions::new()
        .write(true)
        .open(fs.p("keep"))
        .unwrap();
    let e = h.write_all(&vec![1u8; 2 * 1024 * 1024]).unwrap_err();
    assert_eq!(errno(&e), libc::EFBIG);
    drop(h);
    assert!(
        fs::read(fs.p("keep")).unwrap().starts_with(b"precious")
            || fs::read(fs.p("keep")).unwrap().len() <= 1024 * 1024
    );
    // virtual entries: not writable, not removable, not renamable
    assert_eq!(
        err_of(fs::OpenOptions::new().write(true).open(fs.p(".version"))),
        libc::EACCES
    );
    assert_eq!(err_of(fs::remove_file(fs.p(".members"))), libc::EACCES);
    assert_eq!(err_of(fs::rename(fs.p(".vmlist"), fs.p("v"))), libc::EACCES);
    assert_eq!(
        err_of(fs::rename(fs.p("user.cfg"), fs.p("local"))),
        libc::EACCES
    );
    assert_eq!(err_of(fs::create_dir(fs.p("lxc"))), libc::EEXIST);
    assert_eq!(fs::read(fs.p("user.cfg")).unwrap(), b"x", "nothing damaged");
}

#[test]
fn inode_and_space_limits() {
    let fs = Pmxfs::start(&["--max-inodes", "20", "--max-fs-size", "65536"]);
    // the base tree uses 9 entries (root, nodes, nodes/n1 + 4, priv, priv/lock)
    let mut created = 0;
    let err = loop {
        match fs::write(fs.p(&format!("f{created}")), b"") {
            Ok(()) => created += 1,
            Err(e) => break errno(&e),
        }
        assert!(created < 100);
    };
    assert_eq!(err, libc::ENOSPC);
    assert_eq!(created, 11);
    assert_eq!(err_of(fs::create_dir(fs.p("d"))), libc::ENOSPC);
    fs::remove_file(fs.p("f0")).unwrap();
    fs::write(fs.p("f0"), vec![1u8; 60_000]).unwrap();
    assert_eq!(
        err_of(fs::write(fs.p("f1"), vec![1u8; 10_000])),
        libc::ENOSPC
    );
    assert_eq!(
        fs::read(fs.p("f0")).unwrap().len(),
        60_000,
        "existing data intact"
    );
    assert_eq!(fs::read(fs.p("f1")).unwrap().len(), 0);
}

#[test]
fn writes_are_coalesced_per_handle() {
    let fs = Pmxfs::start(&[]);
    let before = fs.status()["ops_applied"].as_u64().unwrap();
    let out = Command::new("dd")
        .args(["if=/dev/urandom", "bs=512", "count=1000"])
        .arg(format!("of={}", fs.p("big.bin").display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let after = fs.status()["ops_applied"].as_u64().unwrap();
    // one create + one commit at close (not 1000 writes)
    assert!(
        after - before <= 2,
        "{} operations for one dd",
        after - before
    );
    assert_eq!(fs::metadata(fs.p("big.bin")).unwrap().len(), 512_000);
    // a reader opening after close sees the content; a reader holding an older handle
    // keeps its snapshot
    fs::write(fs.p("c"), b"one").unwrap();
    let old = fs::File::open(fs.p("c")).unwrap();
    let mut w = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(fs.p("c"))
        .unwrap();
    w.write_all(b"two!").unwrap();
    // a fresh reader before close still sees the committed content
    assert_eq!(fs::read(fs.p("c")).unwrap(), b"one");
    drop(w);
    assert_eq!(fs::read(fs.p("c")).unwrap(), b"two!");
    let mut s = String::new();
    std::io::Read::read_to_string(&mut { old }, &mut s).unwrap();
    assert_eq!(s, "one");
}

/// A local commit sends no invalidation (the kernel drops size and mtime itself at each
/// WRITE), so attributes must never be cached from an uncommitted state: with 1 s
/// timeouts, `stat()` shows the size last written while a handle is open and the
/// committed size and mtime right after close. O_APPEND positions writes by the
/// kernel's i_size, which a path `stat()` refreshes from our reply: a reply with the
/// committed size (0) would make the next append overwrite the start of the file.
#[test]
fn attributes_follow_uncommitted_and_committed_writes() {
    let fs = Pmxfs::start(&["--attr-timeout", "1", "--entry-timeout", "1"]);
    let p = fs.p("app.log");
    fs::write(&p, b"").unwrap();
    let mut a = fs::OpenOptions::new().append(true).open(&p).unwrap();
    for i in 1..=20u64 {
        a.write_all(b"abc").unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().len(),
            3 * i,
            "stat after append {i}"
        );
    }
    drop(a);
    assert_eq!(fs::read(&p).unwrap(), b"abc".repeat(20));

    fs::write(fs.p("f"), b"0123456789").unwrap();
    let m0 = fs::metadata(fs.p("f")).unwrap(); // cached for 1 s from here
    std::thread::sleep(std::time::Duration::from_millis(1100));
    fs::metadata(fs.p("f")).unwrap();
    let mut w = fs::OpenOptions::new().write(true).open(fs.p("f")).unwrap();
    w.write_all(b"abcdefghijklmnopqrstuvwxyz").unwrap();
    assert_eq!(fs::metadata(fs.p("f")).unwrap().len(), 26);
    drop(w);
    let m1 = fs::metadata(fs.p("f")).unwrap();
    assert_eq!(m1.len(), 26);
    assert!(
        m1.mtime() > m0.mtime(),
        "mtime {} after {}",
        m1.mtime(),
        m0.mtime()
    );
    let t = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(fs.p("f"))
        .unwrap();
    assert_eq!(fs::metadata(fs.p("f")).unwrap().len(), 0);
    drop(t);
    assert_eq!(fs::metadata(fs.p("f")).unwrap().len(), 0);
    assert_eq!(fs::read(fs.p("f")).unwrap(), b"");
}

#[test]
fn virtual_files_have_pmxcfs_formats() {
    let fs = Pmxfs::start(&[]);
    let members: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(fs.p(".members")).unwrap()).unwrap();
    assert_eq!(members["nodename"], "n1");
    fs::write(fs.p("user.cfg"), b"x").unwrap();
    fs::write(fs.p("nodes/n1/qemu-server/100.conf"), b"cores: 2\n").unwrap();
    let version: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(fs.p(".version")).unwrap()).unwrap();
    // start-up reload, the create and the write each count (as in pmxcfs)
    assert_eq!(version["user.cfg"], 3);
    assert_eq!(version["storage.cfg"], 1);
    let vmlist: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(fs.p(".vmlist")).unwrap()).unwrap();
    assert_eq!(vmlist["ids"]["100"]["node"], "n1");
    assert_eq!(vmlist["ids"]["100"]["type"], "qemu");
    let cl: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(fs.p(".clusterlog")).unwrap()).unwrap();
    assert!(cl["data"].as_array().unwrap().is_empty());
    assert_eq!(
        fs::read_link(fs.p("local")).unwrap().to_str(),
        Some("nodes/n1")
    );
    assert_eq!(
        fs::read_link(fs.p("qemu-server")).unwrap().to_str(),
        Some("nodes/n1/qemu-server")
    );
    assert_eq!(
        fs::read(fs.p("qemu-server/100.conf")).unwrap(),
        b"cores: 2\n"
    );
    // quorum signal PVE's Perl reads: the 0200 bit of /etc/pve/local
    assert_ne!(
        fs::symlink_metadata(fs.p("local")).unwrap().mode() & 0o200,
        0
    );
    // a VMID exists once in the cluster
    fs::create_dir_all(fs.p("nodes/n2/lxc")).unwrap();
    assert_eq!(
        err_of(fs::write(fs.p("nodes/n2/lxc/100.conf"), b"")),
        libc::EEXIST
    );
}

#[test]
fn refuses_to_start_when_it_must() {
    let mut fs = Pmxfs::start(&[]);
    // a second instance on the same database
    let out = fs.command().output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already running"),
        "{out:?}"
    );
    // a live mount
    let other_db = fs.dir.path().join("other.db");
    let out = fs.command_for(&other_db, &fs.mnt).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already a mount point"),
        "{out:?}"
    );
    fs.stop();
    // a non-empty directory
    fs::write(fs.mnt.join("stray"), b"").unwrap();
    let out = fs.command().output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not empty"),
        "{out:?}"
    );
    fs::remove_file(fs.mnt.join("stray")).unwrap();
    // a corrupt database and a foreign one, left untouched
    fs::write(&fs.db, vec![0x5a; 4096]).unwrap();
    let out = fs.command().output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("corrupt database"),
        "{out:?}"
    );
    assert_eq!(fs::read(&fs.db).unwrap(), vec![0x5a; 4096]);
    fs::remove_file(&fs.db).unwrap();
    Command::new("sqlite3")
        .arg(&fs.db)
        .arg("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .status()
        .unwrap();
    let before = fs::read(&fs.db).unwrap();
    let out = fs.command().output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a pmxcfs database"),
        "{out:?}"
    );
    assert_eq!(fs::read(&fs.db).unwrap(), before);
    // a pmxcfs database with a broken tree ("DB load failed" in pmxcfs)
    fs::remove_file(&fs.db).unwrap();
    Command::new("sqlite3")
        .arg(&fs.db)
        .arg(
            "CREATE TABLE tree (inode INTEGER PRIMARY KEY NOT NULL, parent INTEGER NOT NULL, \
             version INTEGER NOT NULL, writer INTEGER NOT NULL, mtime INTEGER NOT NULL, \
             type INTEGER NOT NULL, name TEXT NOT NULL, data BLOB); \
             INSERT INTO tree VALUES (0,0,5,0,0,8,'__version__',NULL); \
             INSERT INTO tree VALUES (2,0,2,0,0,8,'a',NULL); \
             INSERT INTO tree VALUES (3,0,3,0,0,8,'a',NULL);",
        )
        .status()
        .unwrap();
    let out = fs.command().output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("duplicate name"),
        "{out:?}"
    );
}

#[test]
fn opens_a_database_written_in_pmxcfs_layout() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("config.db");
    // rows exactly as pmxcfs writes them, including a child stored before its parent
    Command::new("sqlite3")
        .arg(&db)
        .arg(
            "PRAGMA journal_mode=WAL; \
             CREATE TABLE tree (inode INTEGER PRIMARY KEY NOT NULL, parent INTEGER NOT NULL CHECK(typeof(parent)=='integer'), \
             version INTEGER NOT NULL CHECK(typeof(version)=='integer'), writer INTEGER NOT NULL CHECK(typeof(writer)=='integer'), \
             mtime INTEGER NOT NULL CHECK(typeof(mtime)=='integer'), type INTEGER NOT NULL CHECK(typeof(type)=='integer'), \
             name TEXT NOT NULL, data BLOB); \
             INSERT INTO tree VALUES (0,0,9,0,1700000000,8,'__version__',NULL); \
             INSERT INTO tree VALUES (3,7,3,0,1700000000,8,'datacenter.cfg',CAST('keyboard: en-us' AS BLOB)); \
             INSERT INTO tree VALUES (7,0,7,0,1700000000,4,'cfgdir',NULL); \
             INSERT INTO tree VALUES (8,0,8,0,1700000000,8,'storage.cfg',CAST('dir: local' AS BLOB));",
        )
        .status()
        .unwrap();
    let mut fs = Pmxfs::start(&[]);
    fs.stop();
    for ext in ["-wal", "-shm"] {
        let _ = fs::remove_file(format!("{}{ext}", fs.db.display()));
    }
    fs::copy(&db, &fs.db).unwrap();
    fs.restart();
    assert_eq!(
        fs::read(fs.p("cfgdir/datacenter.cfg")).unwrap(),
        b"keyboard: en-us"
    );
    assert_eq!(
        fs::metadata(fs.p("storage.cfg")).unwrap().mtime(),
        1_700_000_000
    );
    fs::write(fs.p("storage.cfg"), b"dir: other").unwrap();
    fs.stop();
    // what we wrote is plain pmxcfs schema: new version row, the file updated in place
    let out = Command::new("sqlite3")
        .arg(&fs.db)
        .arg("SELECT inode, version, CAST(data AS TEXT) FROM tree WHERE name='storage.cfg'; SELECT version FROM tree WHERE inode=0;")
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = s.lines().collect();
    let v: u64 = lines[1].parse().unwrap();
    assert!(v > 9, "{s}");
    assert_eq!(lines[0], format!("8|{v}|dir: other"));
}

/// A crashed daemon leaves a dead mount behind (pmxcfs force-unmounts /etc/pve
/// unconditionally at start); the next start must clear it instead of failing with
/// "File exists" from mkdir on an unreachable directory.
#[test]
fn a_dead_mount_left_by_a_crash_is_cleared_at_the_next_start() {
    let mut fs = Pmxfs::start(&[]);
    fs::write(fs.p("storage.cfg"), b"dir: local\n").unwrap();
    fs.crash();
    assert!(pmxfs_e2e::is_mounted(&fs.mnt), "the crash left no mount");
    // ENOTCONN once /dev/fuse is closed, ECONNABORTED when the io_uring teardown
    // aborted the connection first; until then a request may end with ECANCELED
    let gone = || {
        matches!(
            nix::sys::statfs::statfs(&fs.mnt),
            Err(nix::errno::Errno::ENOTCONN | nix::errno::Errno::ECONNABORTED)
        )
    };
    assert!(
        pmxfs_e2e::wait_until(std::time::Duration::from_secs(5), gone).is_some(),
        "{:?}",
        nix::sys::statfs::statfs(&fs.mnt).err()
    );
    fs.restart();
    assert_eq!(fs::read(fs.p("storage.cfg")).unwrap(), b"dir: local\n");
    assert!(
        fs.log().contains("clearing the dead FUSE mount"),
        "{}",
        fs.log()
    );
}

/// A mount whose daemon is stopped is not dead: refuse it, and exit promptly even
/// though the probe's request is stuck in the stopped daemon.
#[test]
fn a_mount_whose_daemon_is_stopped_is_refused_promptly() {
    let fs = Pmxfs::start(&[]);
    let pid = nix::unistd::Pid::from_raw(fs.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let other_db = fs.dir.path().join("other.db");
    let mut child = fs
        .command_for(&other_db, &fs.mnt)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if t0.elapsed() > std::time::Duration::from_secs(10) {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    let status = status.expect("the refused start did not exit within 10 s");
    let out = child.wait_with_output().unwrap();
    assert!(!status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not answer"),
        "{out:?}"
    );
    // the stopped daemon was left alone and serves again
    fs::write(fs.p("x"), b"1").unwrap();
    assert_eq!(fs::read(fs.p("x")).unwrap(), b"1");
}

/// SIGHUP (a closed terminal, a logout) must not take /etc/pve down.
#[test]
fn sighup_does_not_stop_the_daemon() {
    let fs = Pmxfs::start(&[]);
    let pid = nix::unistd::Pid::from_raw(fs.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    assert!(
        pmxfs_e2e::wait_until(std::time::Duration::from_secs(5), || fs
            .log()
            .contains("SIGHUP ignored"))
        .is_some(),
        "{}",
        fs.log()
    );
    fs::write(fs.p("x"), b"after hup").unwrap();
    assert_eq!(fs::read(fs.p("x")).unwrap(), b"after hup");
    assert_eq!(fs.status()["mode"], "local");
}

#[test]
fn kill9_during_writes_loses_nothing_acknowledged() {
    let mut fs = Pmxfs::start(&[]);
    let mnt = fs.mnt.clone();
    let writer = std::thread::spawn(move || {
        let mut acked = Vec::new();
        for i in 0..100_000u32 {
            let p = mnt.join(format!("f{}", i % 400));
            match pmxfs_e2e::write_acked(&p, format!("value {i}\n")) {
                Ok(()) => acked.push(i),
                Err(_) => break,
            }
        }
        acked
    });
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // a real crash: the dead mount stays and the restart must clear it
    fs.crash();
    let acked = writer.join().unwrap();
    assert!(
        acked.len() > 100,
        "only {} writes before the kill",
        acked.len()
    );
    fs.restart();
    // the last acknowledged value of every file is there
    let mut last = std::collections::HashMap::new();
    for i in &acked {
        last.insert(i % 400, *i);
    }
    for (f, i) in last {
        let got = fs::read_to_string(fs.p(&format!("f{f}"))).unwrap();
        // a write in flight at the kill may have landed after the last ack
        let n: u32 = got.trim().strip_prefix("value ").unwrap().parse().unwrap();
        assert!(n >= i, "f{f}: found {n}, acknowledged {i}");
    }
    fs.stop();
    let out = Command::new("sqlite3")
        .arg(&fs.db)
        .arg("PRAGMA integrity_check;")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

/// A change is answered once it is in the intent log; SQLite gets it in the background.
/// With the background stalled on purpose, a crash leaves the acknowledged changes in
/// the log only, and the next start must bring back every one of them.
#[test]
fn changes_acknowledged_before_sqlite_has_them_survive_a_crash() {
    let mut fs = Pmxfs::start_with_env(&[], &[("PMXFS_STALL_APPLY", "1")]);
    fs::create_dir(fs.p("dir")).unwrap();
    for i in 0..200 {
        pmxfs_e2e::write_acked(&fs.p(&format!("dir/f{i}")), format!("value {i}\n")).unwrap();
    }
    fs::rename(fs.p("dir/f0"), fs.p("g0")).unwrap();
    fs::remove_file(fs.p("dir/f1")).unwrap();
    // A large file is committed directly, after the queue, which cannot drain here:
    // refused with EIO, and nothing else is lost.
    let err = pmxfs_e2e::write_acked(&fs.p("big"), vec![7u8; 100 * 1024]).unwrap_err();
    assert_eq!(pmxfs_e2e::errno(&err), libc::EIO, "{err}");
    let before = pmxfs_e2e::tree_digest(&fs.mnt);
    assert!(before.contains("f dir/f199 value 199"), "{before}");
    let backlog = &fs.status()["db_backlog"];
    assert!(backlog["pending"].as_u64().unwrap() >= 200, "{backlog}");
    assert!(
        backlog["failing"]
            .as_str()
            .unwrap()
            .contains("PMXFS_STALL_APPLY"),
        "{backlog}"
    );
    fs.crash();
    let db = fs.db.clone();
    let in_sqlite = |what: &str| {
        let out = Command::new("sqlite3").arg(&db).arg(what).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(
        in_sqlite("SELECT count(*) FROM tree WHERE name LIKE 'f%';"),
        "0",
        "the changes were meant to be in the log only"
    );
    fs.remove_env("PMXFS_STALL_APPLY");
    fs.restart();
    assert_eq!(pmxfs_e2e::tree_digest(&fs.mnt), before);
    assert!(
        fs.log().contains("recovered changes from the intent log"),
        "{}",
        fs.log()
    );
    fs.stop();
    assert_eq!(
        in_sqlite("SELECT count(*) FROM tree WHERE name LIKE 'f%';"),
        "198"
    );
    assert_eq!(in_sqlite("PRAGMA integrity_check;"), "ok");
}

/// `--sync full` fsyncs every commit, which a page-cache log would undercut: nothing
/// goes through the intent log, and the database has each change when it returns.
#[test]
fn sync_full_commits_every_change_to_sqlite_before_answering() {
    let fs = Pmxfs::start(&["--sync", "full"]);
    for i in 0..20 {
        pmxfs_e2e::write_acked(&fs.p(&format!("f{i}")), format!("value {i}")).unwrap();
        let out = Command::new("sqlite3")
            .arg(&fs.db)
            .arg(format!(
                "SELECT CAST(data AS TEXT) FROM tree WHERE name = 'f{i}';"
            ))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("value {i}")
        );
    }
    let log = format!("{}-pmxfs-log", fs.db.display());
    assert_eq!(fs::metadata(log).unwrap().len(), 0);
    assert_eq!(fs.status()["db_backlog"]["pending"], 0);
}

/// A queue that fails while the mount is live must end the daemon: the kernel keeps
/// routing its CPU's requests to the dead queue, where they would wait forever. The
/// exit makes them fail with ENOTCONN, and a restart serves again.
#[test]
fn a_queue_failing_while_mounted_ends_the_daemon_instead_of_hanging_the_mount() {
    let mut fs = Pmxfs::start_with_env(&[], &[("PMXFS_FAIL_QUEUE_AFTER", "300")]);
    let transport = fs.status()["transport"].as_str().unwrap().to_string();
    assert!(transport.starts_with("io_uring"), "{transport}");
    // The client runs in its own process: a request stuck on a dead queue cannot be
    // interrupted, and would keep this test process from exiting.
    let mut client = Command::new("sh")
        .arg("-c")
        .arg(
            "i=0; while [ $i -lt 3000 ]; do echo $i > \"$0/f$((i % 10))\" || exit 3; \
             i=$((i + 1)); done",
        )
        .arg(&fs.mnt)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let finished = pmxfs_e2e::wait_until(std::time::Duration::from_secs(20), || {
        client.try_wait().ok().flatten().is_some()
    });
    if finished.is_none() {
        let stacks = pmxfs_e2e::kernel_stacks(client.id());
        pmxfs_e2e::abort_mount(&fs.mnt);
        let _ = client.kill();
        panic!("the client hung on the mount: {stacks}\n{}", fs.log());
    }
    let out = client.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let st = fs
        .wait_exit(std::time::Duration::from_secs(10))
        .expect("the daemon did not exit");
    assert!(!st.success(), "{st}");
    assert!(
        fs.log()
            .contains("failure injected by PMXFS_FAIL_QUEUE_AFTER"),
        "{}",
        fs.log()
    );
    fs.remove_env("PMXFS_FAIL_QUEUE_AFTER");
    fs.restart();
    let last: u32 = (0..10)
        .map(|k| {
            fs::read_to_string(fs.p(&format!("f{k}")))
                .unwrap_or_default()
                .trim()
                .parse()
                .unwrap_or(0)
        })
        .max()
        .unwrap();
    assert!(last > 0, "nothing written before the failure");
    fs::write(fs.p("after"), b"ok").unwrap();
    assert_eq!(fs::read(fs.p("after")).unwrap(), b"ok");
}

#[test]
fn status_reports_the_node() {
    let fs = Pmxfs::start(&[]);
    fs::write(fs.p("x"), b"12345").unwrap();
    let out = Command::new(pmxfs_e2e::bin("pmxfs"))
        .args(["status", "--json", "--mount"])
        .arg(&fs.mnt)
        .env("PMXFS_RUN_DIR", &fs.run)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["nodename"], "n1");
    assert_eq!(v["mode"], "local");
    assert_eq!(v["quorate"], true);
    assert_eq!(v["bytes"], 5);
    assert!(v["version"].as_u64().unwrap() > 9);
    assert_eq!(v["inodes"], 10);
    assert!(v["db_backlog"]["pending"].is_u64(), "{v}");
    assert!(v["db_backlog"]["failing"].is_null(), "{v}");
    // the background applier empties the queue
    assert!(
        pmxfs_e2e::wait_until(std::time::Duration::from_secs(5), || fs.status()
            ["db_backlog"]["pending"]
            == 0)
        .is_some(),
        "{}",
        fs.status()
    );
    let human = Command::new(pmxfs_e2e::bin("pmxfs"))
        .args(["status", "--mount"])
        .arg(&fs.mnt)
        .env("PMXFS_RUN_DIR", &fs.run)
        .output()
        .unwrap();
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(human.contains("quorate:   yes"), "{human}");
    assert!(
        human.contains("db queue:  0 changes logged, not yet in the database\n"),
        "{human}"
    );
    let _ = json!({});
}
