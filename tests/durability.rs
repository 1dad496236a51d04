//! Nothing acknowledged is lost: kill -9 during writes, the intent log alone after a
//! crash, and `--sync full`.

use std::fs;
use std::process::Command;

use pmxfs_e2e::Pmxfs;

#[test]
fn kill9_during_writes_loses_nothing_acknowledged() {
    let mut fs = Pmxfs::start(&[]);
    let mnt = fs.mnt.clone();
    // The kill comes once the writer has 1,000 acknowledged writes, while it goes on.
    let (going, under_way) = std::sync::mpsc::sync_channel(1);
    let writer = std::thread::spawn(move || {
        let mut acked = Vec::new();
        for i in 0..100_000u32 {
            let p = mnt.join(format!("f{}", i % 400));
            match pmxfs_e2e::write_acked(&p, format!("value {i}\n")) {
                Ok(()) => acked.push(i),
                Err(_) => break,
            }
            if acked.len() == 1000 {
                let _ = going.send(());
            }
        }
        acked
    });
    under_way
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the writer got 1,000 writes acknowledged");
    // a real crash: the dead mount stays and the restart must clear it
    fs.crash();
    let acked = writer.join().unwrap();
    assert!(
        acked.len() >= 1000,
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
    let mut fs = Pmxfs::start(&["--fault", "stall-apply"]);
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
            .contains("--fault stall-apply"),
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
    fs.without_fault("stall-apply");
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
