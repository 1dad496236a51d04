//! pmxfs in pmxcfs's place as a service: it goes into the background and returns only
//! once it serves, decides its mode from its database, imports and writes back the
//! host's corosync.conf, keeps pmxcfs's pid file and restart flag, cleans up its run
//! files, adds nothing to a database it opens, and tells a non-root user it needs root.
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pmxfs_e2e::ipc::IpcClient;
use pmxfs_e2e::{is_mounted, wait_until, Pmxfs};

/// Kills the daemon named by a pid file at the end of a test, however it ends.
struct PidGuard(std::path::PathBuf);

impl PidGuard {
    fn pid(&self) -> Option<i32> {
        fs::read_to_string(&self.0).ok()?.trim().parse().ok()
    }
}

impl Drop for PidGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Run `p`'s command line (which forks) with its output in `p`'s log; the parent's exit.
fn background(p: &Pmxfs) -> std::process::ExitStatus {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p.dir.path().join("pmxfs.log"))
        .unwrap();
    p.command()
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .status()
        .expect("run pmxfs")
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn status(p: &Pmxfs) -> serde_json::Value {
    p.status()
}

#[test]
fn forks_returns_once_serving_and_keeps_pmxcfs_run_files() {
    let mut p = Pmxfs::unstarted(&[]);
    p.foreground = false;
    let pidfile = p.dir.path().join("pmxfs.pid");
    let flag = p.run.join("cfs-restart-flag");
    let guard = PidGuard(pidfile.clone());
    // The daemon keeps standard error (no journald here): send it to the log file, not
    // a pipe this test would wait on.
    let out = background(&p);
    assert!(out.success(), "{out:?}\n{}", p.log());
    // Returned: the mount and the IPC server already serve, no waiting.
    assert!(is_mounted(&p.mnt), "not mounted when the command returned");
    assert!(fs::read_to_string(p.p(".version"))
        .unwrap()
        .contains("starttime"));
    let c = IpcClient::connect(&p.ipc).expect("IPC answers when the command returned");
    assert_eq!(c.call(1, &[]).0, 0);
    drop(c);
    let pid = guard.pid().expect("pid file written");
    assert!(alive(pid), "the daemon named by the pid file runs");
    assert_eq!(status(&p)["mode"], "local");
    let versions: Vec<_> = fs::read_dir(&p.run)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "versions"))
        .collect();
    assert_eq!(versions.len(), 1, "this mount's version file");
    assert!(!flag.exists(), "no restart flag while serving");

    // SIGTERM: a clean stop leaves the restart flag and removes the rest.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let gone = wait_until(Duration::from_secs(10), || !alive(pid));
    assert!(gone.is_some(), "the daemon did not stop on SIGTERM");
    assert!(!is_mounted(&p.mnt));
    assert!(flag.exists(), "restart flag created on exit");
    assert_eq!(
        fs::metadata(&flag).unwrap().permissions().mode() & 0o777,
        0o440
    );
    assert!(!pidfile.exists(), "pid file removed on exit");
    let left: Vec<String> = fs::read_dir(&p.run)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "cfs-restart-flag")
        .collect();
    assert!(left.is_empty(), "run files left behind: {left:?}");

    // Started again, it serves and removes the flag.
    let out = background(&p);
    assert!(out.success(), "{out:?}\n{}", p.log());
    assert!(!flag.exists(), "restart flag removed once serving");
    drop(guard);
    let again = PidGuard(pidfile);
    let pid = again.pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(10), || !alive(pid)).is_some());
}

#[test]
fn a_daemon_that_cannot_start_makes_the_command_fail_with_its_reason() {
    let a = Pmxfs::start(&[]);
    let mut b = Pmxfs::unstarted(&[]);
    b.foreground = false;
    // The same database as the running one: the single-instance lock refuses it.
    let out = b.command_for(&a.db, &b.mnt).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another pmxfs is already running"), "{err}");
}

#[test]
fn the_database_decides_the_mode_as_in_pmxcfs() {
    // Forced local: as pmxcfs -l.
    let forced = Pmxfs::start(&[]);
    let st = status(&forced);
    assert_eq!(st["mode"], "local");
    assert!(
        st["mode_reason"].as_str().unwrap().contains("forced"),
        "{st}"
    );
    drop(forced);

    // No corosync.conf anywhere: local mode.
    let plain = Pmxfs::start_decided(&[]);
    let st = status(&plain);
    assert_eq!(st["mode"], "local", "{st}");
    assert!(st["mode_reason"]
        .as_str()
        .unwrap()
        .contains("no corosync.conf"));
    drop(plain);

    // A new database imports the host's corosync.conf and so runs in cluster mode
    // (read-only here: there is no corosync, so no quorum).
    let mut p = Pmxfs::unstarted(&[]);
    let host = p.dir.path().join("corosync.conf");
    let conf = "totem {\n  cluster_name: t\n  config_version: 3\n}\n";
    fs::write(&host, conf).unwrap();
    p.local = false;
    let mut p = restarted(p);
    let st = status(&p);
    assert_eq!(st["mode"], "cluster", "{st}");
    assert!(st["mode_reason"]
        .as_str()
        .unwrap()
        .contains("holds corosync.conf"));
    assert_eq!(fs::read_to_string(p.p("corosync.conf")).unwrap(), conf);
    let e = fs::write(p.p("x"), "x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "no quorum, no writes");
    // Forced local although the database holds corosync.conf.
    p.stop();
    p.local = true;
    p.restart();
    let st = status(&p);
    assert_eq!(st["mode"], "local");
    assert!(st["mode_reason"].as_str().unwrap().contains("although"));
}

/// Start `p` (its fields as set) and wait until it serves.
fn restarted(mut p: Pmxfs) -> Pmxfs {
    p.restart();
    p
}

#[test]
fn corosync_conf_is_written_back_unless_the_host_has_a_newer_one() {
    // `pvecm create`: in local mode, write corosync.conf.new and rename it.
    let mut p = Pmxfs::start(&[]);
    let host = p.dir.path().join("corosync.conf");
    fs::write(&host, "totem {\n  config_version: 3\n}\n").unwrap();
    let v5 = "totem {\n  cluster_name: c\n  config_version: 5\n}\n";
    fs::write(p.p("corosync.conf.new"), v5).unwrap();
    fs::rename(p.p("corosync.conf.new"), p.p("corosync.conf")).unwrap();
    assert!(
        fs::read_to_string(&host).unwrap().contains("version: 3"),
        "local mode does not write the host file"
    );
    // Restarted without -l: cluster mode, and the host file is the cluster's.
    p.stop();
    p.local = false;
    p.restart();
    assert_eq!(status(&p)["mode"], "cluster");
    assert_eq!(fs::read_to_string(&host).unwrap(), v5);
    assert_eq!(
        fs::metadata(&host).unwrap().permissions().mode() & 0o777,
        0o644
    );
    // A host file with a higher version is kept.
    p.stop();
    let v9 = "totem {\n  config_version: 9\n}\n";
    fs::write(&host, v9).unwrap();
    p.restart();
    assert_eq!(
        fs::read_to_string(&host).unwrap(),
        v9,
        "the host's newer file stays"
    );
    assert!(p.log().contains("is newer"), "{}", p.log());
}

#[test]
fn stale_run_files_go_and_an_opened_database_gains_nothing() {
    let mut p = Pmxfs::unstarted(&[]);
    fs::create_dir_all(&p.run).unwrap();
    // A dead daemon's socket (nobody listens) and version file.
    let dead = p.run.join("tmp-gone.sock");
    drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
    fs::write(p.run.join("tmp-gone.versions"), [0u8; 64]).unwrap();
    p = restarted(p);
    assert!(!dead.exists(), "stale socket removed");
    assert!(
        !p.run.join("tmp-gone.versions").exists(),
        "stale version file removed"
    );
    // A database this daemon did not create gets no directories added: pmxcfs never
    // creates `nodes/<node>/openvz` (or any other).
    fs::remove_dir(p.p("nodes/n1/openvz")).unwrap();
    let before = status(&p)["inodes"].as_u64().unwrap();
    p.stop();
    p.restart();
    assert!(!p.p("nodes/n1/openvz").exists());
    assert_eq!(status(&p)["inodes"].as_u64().unwrap(), before);
}

#[test]
fn status_as_non_root_says_it_needs_root() {
    let p = Pmxfs::start(&[]);
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(pmxfs_e2e::bin("pmxfs"))
        .args(["status", "--mount"])
        .arg(&p.mnt)
        .env("PMXFS_RUN_DIR", &p.run)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs root"), "{err}");
}

/// Run `sqlite3 db sql`.
fn sqlite(db: &Path, sql: &str) {
    let out = Command::new("sqlite3").arg(db).arg(sql).output().unwrap();
    assert!(out.status.success(), "sqlite3 {sql}: {out:?}");
}

/// `pmxfs db ARGS --db db`: (exit code, stdout + stderr).
fn db_tool(db: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(pmxfs_e2e::bin("pmxfs"))
        .arg("db")
        .args(args)
        .arg("--db")
        .arg(db)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

fn sha(p: &Path) -> String {
    let out = Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split(' ')
        .next()
        .unwrap()
        .to_string()
}

/// Databases damaged in each way pmxcfs refuses (a duplicate name, a missing parent
/// directory), and in the others pmxfs's loader refuses (a file as parent, an unknown
/// type, a cycle): the daemon refuses and leaves the file alone; `db check` names every
/// problem; `db repair` writes a copy that starts, with every consistent entry; `db
/// set-aside` has the next start begin anew, and is refused while a daemon runs.
#[test]
fn a_damaged_database_is_checked_repaired_or_set_aside() {
    let mut p = Pmxfs::start(&[]);
    fs::write(p.p("storage.cfg"), "dir: local\n").unwrap();
    fs::write(p.p("nodes/n1/qemu-server/100.conf"), "cores: 2\n").unwrap();
    fs::create_dir(p.p("keep")).unwrap();
    fs::write(p.p("keep/a.cfg"), "a\n").unwrap();
    p.stop();
    let db = p.db.clone();
    sqlite(
        &db,
        "INSERT INTO tree VALUES (9001, 0, 1, 0, 0, 8, 'storage.cfg', X'6f6c640a');\
         INSERT INTO tree VALUES (9002, 8888, 2, 0, 0, 4, 'orphan', NULL);\
         INSERT INTO tree VALUES (9003, 9002, 3, 0, 0, 8, 'in-orphan', NULL);\
         INSERT INTO tree VALUES (9004, 9001, 4, 0, 0, 8, 'in-a-file', NULL);\
         INSERT INTO tree VALUES (9005, 9006, 5, 0, 0, 4, 'p', NULL);\
         INSERT INTO tree VALUES (9006, 9005, 6, 0, 0, 4, 'q', NULL);\
         INSERT INTO tree VALUES (9007, 0, 7, 0, 0, 9, 'odd-type', NULL);",
    );
    let before = sha(&db);
    // The daemon refuses, says how out, and changes nothing.
    let st = p.command().output().unwrap();
    assert!(!st.status.success());
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(err.contains("unknown type"), "{err}");
    assert!(err.contains("pmxfs db check"), "{err}");
    assert_eq!(sha(&db), before, "a refused database is left as it was");
    // Check: every problem at once.
    let (code, text) = db_tool(&db, &["check"]);
    assert_eq!(code, Some(1), "{text}");
    for want in [
        "inode 9001 'storage.cfg' in directory 0: found entry with duplicate name",
        "inode 9002 'orphan' in directory 8888: missing directory inode 8888",
        "inode 9003 'in-orphan' in directory 9002: inside dropped inode 9002",
        "inode 9004 'in-a-file' in directory 9001: parent 9001 is not a directory",
        "inode 9005 'p' in directory 9006: not reachable from the root",
        "inode 9007 '' in directory 0: unreadable row: 'odd-type': unknown type 9",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert_eq!(sha(&db), before, "check changes nothing");
    // Repair: a copy beside it, the original untouched.
    let (code, text) = db_tool(&db, &["repair"]);
    assert_eq!(code, Some(0), "{text}");
    let repaired = db.with_file_name("config.db.repaired");
    assert!(text.contains("left out 7"), "{text}");
    assert_eq!(sha(&db), before, "repair does not change the original");
    assert_eq!(
        db_tool(&repaired, &["check"]).0,
        Some(0),
        "the copy is clean"
    );
    assert_eq!(
        db_tool(&repaired, &["repair"]).1.trim_end(),
        format!("{}: nothing to repair", repaired.display())
    );
    // The copy starts, with every consistent entry (the newer storage.cfg).
    fs::rename(&db, db.with_file_name("config.db.broken")).unwrap();
    fs::rename(&repaired, &db).unwrap();
    p.restart();
    assert_eq!(
        fs::read_to_string(p.p("storage.cfg")).unwrap(),
        "dir: local\n"
    );
    assert_eq!(fs::read_to_string(p.p("keep/a.cfg")).unwrap(), "a\n");
    assert_eq!(
        fs::read_to_string(p.p("nodes/n1/qemu-server/100.conf")).unwrap(),
        "cores: 2\n"
    );
    assert!(!p.p("orphan").exists());
    // Set aside: refused while the daemon runs; afterwards the next start is new.
    let (code, text) = db_tool(&db, &["set-aside"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("stop pmxfs first"), "{text}");
    p.stop();
    let (code, text) = db_tool(&db, &["set-aside"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(!db.exists());
    let aside: Vec<_> = fs::read_dir(p.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("set-aside-"))
        .collect();
    assert_eq!(aside.len(), 1);
    assert!(aside[0].path().join("config.db").exists());
    p.restart();
    assert!(!p.p("storage.cfg").exists(), "a new database");
}

/// `pvecm add` deletes config.db (after `sqlite3 .dump` as a backup) and starts the
/// service again: the next start begins with a new database, and the intent log pmxfs
/// keeps beside the old one is set aside, never replayed onto the new tree.
#[test]
fn a_deleted_database_starts_anew_without_its_old_log() {
    // A change only the intent log holds (applying it stalls), then a crash.
    let mut p = Pmxfs::start(&["--fault", "stall-apply"]);
    fs::write(p.p("old.cfg"), "old tree\n").unwrap();
    p.crash();
    let log = p.db.with_file_name("config.db-pmxfs-log");
    assert!(
        fs::metadata(&log).unwrap().len() > 0,
        "the log holds the change"
    );
    let dump = Command::new("sqlite3")
        .arg(&p.db)
        .arg(".dump")
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "sqlite3 .dump, as cfs_backup_database runs it"
    );
    fs::remove_file(&p.db).unwrap();
    p.without_fault("stall-apply");
    p.restart();
    assert!(!p.p("old.cfg").exists(), "a new database");
    fs::write(p.p("new.cfg"), "new tree\n").unwrap();
    let orphaned: Vec<String> = fs::read_dir(p.dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("-pmxfs-log.orphaned-"))
        .collect();
    assert_eq!(orphaned.len(), 1, "the old log is set aside: {orphaned:?}");
    assert!(p
        .log()
        .contains("belongs to a database that no longer exists"));
    // And the new database keeps working across a restart.
    p.stop();
    p.restart();
    assert_eq!(fs::read_to_string(p.p("new.cfg")).unwrap(), "new tree\n");
}

/// pmxcfs's own lock file is taken too, so pmxfs never runs on a database pmxcfs has
/// open (as when switching by hand): it waits 10 s for it, as pmxcfs does, then gives up.
#[test]
fn pmxfs_does_not_start_beside_a_running_pmxcfs() {
    use std::os::fd::AsRawFd;
    let mut p = Pmxfs::unstarted(&[]);
    let lock = fs::File::create(p.dir.path().join(".pmxcfs.lockfile")).unwrap();
    // SAFETY: flock on a descriptor this test owns.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let t0 = std::time::Instant::now();
    let out = p.command().output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pmxcfs (or another cluster filesystem) runs"),
        "{err}"
    );
    assert!(
        t0.elapsed() >= Duration::from_secs(9),
        "it waited as pmxcfs waits"
    );
    drop(lock);
    p = restarted(p);
    assert!(is_mounted(&p.mnt), "starts once pmxcfs is gone");
}

/// A mount namespace made with private propagation while pmxfs is mounted keeps a copy
/// of the mount that the daemon's unmount does not reach, so the FUSE session never
/// ends by itself. The daemon then aborts the connection after a grace time: it stops,
/// and folds its last change into the database, instead of waiting forever.
#[test]
fn a_copy_of_the_mount_in_another_namespace_does_not_hold_the_stop() {
    let mut p = Pmxfs::start(&[]);
    std::fs::write(p.p("last.cfg"), "folded at the stop\n").unwrap();
    // The copy: a process in a new mount namespace, holding it open.
    let mut holder = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sleep", "60"])
        .spawn()
        .expect("unshare");
    let pid = holder.id();
    // Until `unshare` has made its namespace, its mountinfo is ours.
    let ours = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    let copied = pmxfs_e2e::wait_until(Duration::from_secs(5), || {
        std::fs::read_link(format!("/proc/{pid}/ns/mnt")).is_ok_and(|ns| ns != ours)
            && std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
                .is_ok_and(|m| m.contains(p.mnt.to_str().unwrap()))
    });
    assert!(
        copied.is_some(),
        "the new namespace has no copy of the mount"
    );
    let t0 = std::time::Instant::now();
    let clean = p.stop();
    let took = t0.elapsed();
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(clean, "the daemon did not stop within 10 s\n{}", p.log());
    assert!(
        p.log().contains("aborting"),
        "the stop did not need the abort, so this test proves nothing: {took:?}\n{}",
        p.log()
    );
    let db = p.db.clone();
    let out = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg("SELECT count(*) FROM tree WHERE name = 'last.cfg'")
        .output()
        .expect("sqlite3");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1",
        "the last change is not in the database after the stop"
    );
}
