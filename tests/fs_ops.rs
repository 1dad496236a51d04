//! End-to-end operations on a real FUSE mount, on both transports: modes and ownership,
//! the errno table, limits, write coalescing, attributes of uncommitted writes, and
//! the virtual files.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::process::Command;

use pmxfs_e2e::{err_of, errno, ring_requests, start_on, Pmxfs};

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
    // a write that would cross the limit is refused whole and leaves the file intact
    fs::write(fs.p("keep"), b"precious").unwrap();
    let h = fs::OpenOptions::new()
        .write(true)
        .open(fs.p("keep"))
        .unwrap();
    let e = h.write_at(b"too far!", 1024 * 1024 - 4).unwrap_err();
    assert_eq!(errno(&e), libc::EFBIG);
    drop(h);
    assert_eq!(fs::read(fs.p("keep")).unwrap(), b"precious");
    // a longer write keeps exactly what write(2) reported accepted, up to the limit,
    // and nothing of the refused rest
    let mut h = fs::OpenOptions::new()
        .write(true)
        .open(fs.p("keep"))
        .unwrap();
    let big = vec![1u8; 2 * 1024 * 1024];
    let accepted = h.write(&big).unwrap();
    assert!(accepted <= 1024 * 1024, "accepted {accepted} bytes");
    let e = h.write(&big[accepted..]).unwrap_err();
    assert_eq!(errno(&e), libc::EFBIG);
    drop(h);
    let kept = fs::read(fs.p("keep")).unwrap();
    assert_eq!(
        (kept.len(), kept.iter().all(|b| *b == 1)),
        (accepted, true),
        "the file holds what write(2) accepted"
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
    // The log opens with pmxcfs's first entry.
    let entries = cl["data"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{cl}");
    assert_eq!(entries[0]["msg"], "starting cluster log");
    assert_eq!(
        (entries[0]["user"].as_str(), entries[0]["tag"].as_str()),
        (Some("root"), Some("cluster"))
    );
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
