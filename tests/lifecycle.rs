//! The daemon's life on a real mount: refusing to start, opening a pmxcfs database,
//! recovering a crashed daemon's dead mount, signals, and `pmxfs status`.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

use pmxfs_e2e::Pmxfs;

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
    // In a directory of its own: pmxcfs's lock (.pmxcfs.lockfile) is per directory.
    let other_db = fs.dir.path().join("other/other.db");
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
    // In a directory of its own: pmxcfs's lock (.pmxcfs.lockfile) is per directory.
    let other_db = fs.dir.path().join("other/other.db");
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
fn status_reports_the_node() {
    // Folded a second after the change, not the default five minutes.
    let fs = Pmxfs::start(&["--db-fold-after", "1"]);
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
    // the background applier empties the queue once the change waited --db-fold-after
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
}
