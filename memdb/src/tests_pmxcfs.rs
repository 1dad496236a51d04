//! One test per difference of [`Dialect::Pmxcfs`] from [`Dialect::Pmxfs`] (the list on
//! [`Dialect`]), plus the unlock ops and pmxcfs's checksums.

use super::*;
use sha2::{Digest as _, Sha256};

fn ctx(writer: u32, now: u32) -> OpCtx {
    OpCtx { writer, now }
}

fn db(dialect: Dialect) -> MemDb {
    let mut d = MemDb::empty(Box::new(NullStore), Limits::default());
    d.set_dialect(dialect);
    d
}

fn c() -> MemDb {
    db(Dialect::Pmxcfs)
}

fn run(d: &mut MemDb, op: Op) -> Result<Applied, Errno> {
    d.apply(&op, ctx(1, 1000))
}

fn mkdir(p: &str) -> Op {
    Op::Mkdir { path: p.into() }
}

fn create(p: &str) -> Op {
    Op::Create { path: p.into() }
}

fn delete(p: &str) -> Op {
    Op::Delete { path: p.into() }
}

fn write(p: &str, offset: u64, data: &[u8], truncate: bool) -> Op {
    Op::Write {
        path: p.into(),
        offset,
        data: data.to_vec(),
        truncate,
    }
}

fn rename(from: &str, to: &str) -> Op {
    Op::Rename {
        from: from.into(),
        to: to.into(),
    }
}

fn mtime(p: &str, mtime: u32) -> Op {
    Op::Mtime {
        path: p.into(),
        mtime,
    }
}

/// Both dialects' answers to `op` on trees built by `setup`.
fn both(setup: &[Op], op: Op) -> (Result<Applied, Errno>, Result<Applied, Errno>) {
    let go = |dialect| {
        let mut d = db(dialect);
        for s in setup {
            run(&mut d, s.clone()).unwrap();
        }
        run(&mut d, op.clone())
    };
    (go(Dialect::Pmxfs), go(Dialect::Pmxcfs))
}

fn errs(setup: &[Op], op: Op) -> (Option<Errno>, Option<Errno>) {
    let (a, b) = both(setup, op);
    (a.err(), b.err())
}

fn locks() -> Vec<Op> {
    vec![mkdir("priv"), mkdir("priv/lock")]
}

#[test]
fn dialect_is_pmxfs_by_default_and_settable() {
    let mut d = MemDb::empty(Box::new(NullStore), Limits::default());
    assert_eq!(d.dialect(), Dialect::Pmxfs);
    d.set_dialect(Dialect::Pmxcfs);
    assert_eq!(d.dialect(), Dialect::Pmxcfs);
}

#[test]
fn paths_skip_empty_components() {
    let setup = [mkdir("a"), create("a/f")];
    assert_eq!(errs(&setup, delete("a//f")), (Some(Errno::ENOENT), None));
    assert_eq!(errs(&setup, delete("/a/f")), (Some(Errno::ENOENT), None));
    let mut d = c();
    run(&mut d, mkdir("/x")).unwrap();
    run(&mut d, create("x//f/")).unwrap();
    assert!(d.resolve("x/f").is_ok());
    assert_eq!(run(&mut d, delete("/")), Err(Errno::EACCES));
    assert_eq!(run(&mut d, delete(".")), Err(Errno::EACCES));
}

#[test]
fn path_through_a_file() {
    let setup = [create("f")];
    assert_eq!(
        errs(&setup, create("f/g")),
        (Some(Errno::ENOTDIR), Some(Errno::ENOTDIR))
    );
    assert_eq!(
        errs(&setup, create("f/g/h")),
        (Some(Errno::ENOTDIR), Some(Errno::ENOENT))
    );
    assert_eq!(
        errs(&setup, delete("f/g")),
        (Some(Errno::ENOTDIR), Some(Errno::ENOENT))
    );
}

#[test]
fn no_name_length_limit() {
    let long = "n".repeat(300);
    assert_eq!(errs(&[], create(&long)), (Some(Errno::ENAMETOOLONG), None));
    assert_eq!(errs(&[], mkdir(&long)), (Some(Errno::ENAMETOOLONG), None));
}

#[test]
fn only_the_file_size_limit() {
    let tiny = Limits {
        max_file_size: 10,
        max_fs_size: 20,
        max_inodes: 2,
    };
    let mut d = MemDb::empty(Box::new(NullStore), tiny);
    d.set_dialect(Dialect::Pmxcfs);
    for i in 0..5 {
        run(&mut d, create(&format!("f{i}"))).unwrap();
        run(&mut d, write(&format!("f{i}"), 0, &[7; 100], false)).unwrap();
    }
    assert_eq!(d.entry_count(), 6);
    let mib = 1024 * 1024;
    run(&mut d, write("f0", mib - 1, b"x", false)).unwrap();
    assert_eq!(d.resolve("f0").unwrap().size(), mib);
    assert_eq!(
        run(&mut d, write("f0", mib, b"x", false)),
        Err(Errno::EFBIG)
    );
    // Checked first, before the path.
    assert_eq!(
        run(&mut d, write("nope/f", mib, b"x", false)),
        Err(Errno::EFBIG)
    );
}

#[test]
fn create_and_write_errnos() {
    let setup = [mkdir("d"), create("f")];
    assert_eq!(
        errs(&setup, create("d")),
        (Some(Errno::EEXIST), Some(Errno::ENOTDIR))
    );
    assert_eq!(
        errs(&setup, create("f")),
        (Some(Errno::EEXIST), Some(Errno::EEXIST))
    );
    let w = |p: &str| write(p, 0, b"x", false);
    assert_eq!(
        errs(&setup, w("d")),
        (Some(Errno::EISDIR), Some(Errno::ENOTDIR))
    );
    assert_eq!(
        errs(&setup, w("")),
        (Some(Errno::EISDIR), Some(Errno::EACCES))
    );
    assert_eq!(
        errs(&setup, w("g")),
        (Some(Errno::ENOENT), Some(Errno::ENOENT))
    );
    assert_eq!(
        errs(&setup, create("")),
        (Some(Errno::EACCES), Some(Errno::EACCES))
    );
    assert_eq!(
        errs(&setup, create("..")),
        (Some(Errno::EACCES), Some(Errno::EACCES))
    );
}

#[test]
fn writes_touch_the_file_and_the_root_only() {
    let mut d = c();
    run(&mut d, mkdir("d")).unwrap();
    let ap = d.apply(&create("d/f"), ctx(2, 1500)).unwrap();
    let f = d.resolve("d/f").unwrap().row.clone();
    assert_eq!(
        (f.inode, f.version, f.writer, f.mtime),
        (Inode(3), 3, 2, 1500)
    );
    assert_eq!(ap.version, 3);
    assert_eq!(d.resolve("d").unwrap().row.version, 2);
    d.apply(&write("d/f", 2, b"ab", false), ctx(3, 1600))
        .unwrap();
    let f = &d.resolve("d/f").unwrap().row;
    assert_eq!(
        (f.inode, f.version, f.writer, f.mtime),
        (Inode(3), 4, 3, 1600)
    );
    assert_eq!(&f.data[..], b"\0\0ab");
    assert_eq!(
        d.root_version(),
        RootVersion {
            version: 4,
            writer: 3,
            mtime: 1600
        }
    );
    // memdb_pwrite's data rules: no truncate keeps the tail, truncate cuts.
    run(&mut d, write("d/f", 0, b"X", false)).unwrap();
    assert_eq!(&d.resolve("d/f").unwrap().row.data[..], b"X\0ab");
    run(&mut d, write("d/f", 1, b"", true)).unwrap();
    assert_eq!(&d.resolve("d/f").unwrap().row.data[..], b"X");
    run(&mut d, write("d/f", 3, b"", true)).unwrap();
    assert_eq!(&d.resolve("d/f").unwrap().row.data[..], b"X\0\0");
}

#[test]
fn vm_configs_register_on_every_write() {
    let nodes = [
        mkdir("nodes"),
        mkdir("nodes/a"),
        mkdir("nodes/a/qemu-server"),
    ];
    let mut d = c();
    for o in &nodes {
        run(&mut d, o.clone()).unwrap();
    }
    let conf = "nodes/a/qemu-server/100.conf";
    assert!(run(&mut d, create(conf)).unwrap().vmlist_changed);
    let v = d.vms()[&100].version;
    // Same node and type: still a (re)registration, as vmlist_register_vm.
    assert!(
        run(&mut d, write(conf, 0, b"x", false))
            .unwrap()
            .vmlist_changed
    );
    assert!(d.vms()[&100].version > v);
    let mut p = db(Dialect::Pmxfs);
    for o in &nodes {
        run(&mut p, o.clone()).unwrap();
    }
    run(&mut p, create(conf)).unwrap();
    assert!(
        !run(&mut p, write(conf, 0, b"x", false))
            .unwrap()
            .vmlist_changed
    );
}

#[test]
fn node_names_of_any_length() {
    let node = "n".repeat(70);
    let setup = [
        mkdir("nodes"),
        mkdir(&format!("nodes/{node}")),
        mkdir(&format!("nodes/{node}/lxc")),
        create(&format!("nodes/{node}/lxc/100.conf")),
        mkdir("nodes/b"),
        mkdir("nodes/b/qemu-server"),
    ];
    assert_eq!(
        errs(&setup, create("nodes/b/qemu-server/100.conf")),
        (None, Some(Errno::EEXIST))
    );
}

#[test]
fn mkdir_of_an_expired_lock_is_eexist() {
    let mut setup = locks();
    setup.push(mkdir("priv/lock/x"));
    let mut d = c();
    for o in &setup {
        run(&mut d, o.clone()).unwrap();
    }
    let late = d.apply(&mkdir("priv/lock/x"), ctx(2, 100_000));
    assert_eq!(late, Err(Errno::EEXIST));
    let mut p = db(Dialect::Pmxfs);
    for o in &setup {
        run(&mut p, o.clone()).unwrap();
    }
    assert!(p.apply(&mkdir("priv/lock/x"), ctx(2, 100_000)).is_ok());
    // Acquiring is still reported.
    let ap = run(&mut c(), mkdir("y")).unwrap();
    assert_eq!(ap.lock, None);
    let mut d = c();
    for o in &locks() {
        run(&mut d, o.clone()).unwrap();
    }
    let ap = run(&mut d, mkdir("priv/lock/z")).unwrap();
    assert_eq!(ap.lock, Some(LockEvent::Acquired("z".into())));
}

#[test]
fn delete_of_a_lock_ignores_its_age() {
    let mut setup = locks();
    setup.push(mkdir("priv/lock/x"));
    let mut d = c();
    for o in &setup {
        run(&mut d, o.clone()).unwrap();
    }
    // Stamped before the lock's mtime (1000): Pmxfs refuses it with EBUSY.
    let ap = d.apply(&delete("priv/lock/x"), ctx(2, 999)).unwrap();
    assert_eq!(ap.lock, Some(LockEvent::Released("x".into())));
    let mut p = db(Dialect::Pmxfs);
    for o in &setup {
        run(&mut p, o.clone()).unwrap();
    }
    assert_eq!(
        p.apply(&delete("priv/lock/x"), ctx(2, 999)),
        Err(Errno::EBUSY)
    );
}

#[test]
fn delete_of_a_config_path_forgets_the_vmid() {
    let setup = [
        mkdir("nodes"),
        mkdir("nodes/a"),
        mkdir("nodes/a/qemu-server"),
        create("nodes/a/qemu-server/100.conf"),
        mkdir("nodes/b"),
        mkdir("nodes/b/lxc"),
        // A directory named like a config: no VMID of its own.
        mkdir("nodes/b/lxc/100.conf"),
    ];
    let mut d = c();
    for o in &setup {
        run(&mut d, o.clone()).unwrap();
    }
    assert_eq!(d.vms()[&100].node, "a");
    assert!(
        run(&mut d, delete("nodes/b/lxc/100.conf"))
            .unwrap()
            .vmlist_changed
    );
    assert!(d.vms().is_empty());
    run(&mut d, create("nodes/b/lxc/100.conf")).unwrap();
    assert_eq!(d.vms()[&100].node, "b");
    let (_, b) = errs(&setup, delete("nodes/b/lxc/100.conf"));
    assert_eq!(b, None);
}

#[test]
fn rename_and_locks() {
    let mut setup = locks();
    setup.extend([
        mkdir("priv/lock/x"),
        mkdir("priv/lock/x/sub"),
        mkdir("d"),
        create("f"),
    ]);
    // Into priv/lock: refused by Pmxfs only.
    assert_eq!(
        errs(&setup, rename("d", "priv/lock/d")),
        (Some(Errno::EACCES), None)
    );
    assert_eq!(
        errs(&setup, rename("f", "priv/lock/f")),
        (Some(Errno::EACCES), None)
    );
    // A lock directory, and one below it: pmxcfs refuses both.
    assert_eq!(
        errs(&setup, rename("priv/lock/x", "y")),
        (Some(Errno::EACCES), Some(Errno::EACCES))
    );
    assert_eq!(
        errs(&setup, rename("priv/lock/x/sub", "y")),
        (None, Some(Errno::EACCES))
    );
    let (_, moved) = both(&setup, rename("d", "priv/lock/d"));
    assert_eq!(moved.unwrap().lock, Some(LockEvent::Acquired("d".into())));
}

#[test]
fn rename_replaces_either_kind() {
    let setup = [mkdir("d"), create("f"), create("g")];
    assert_eq!(errs(&setup, rename("f", "d")), (Some(Errno::EISDIR), None));
    assert_eq!(errs(&setup, rename("d", "f")), (Some(Errno::ENOTDIR), None));
    let mut d = c();
    for o in &setup {
        run(&mut d, o.clone()).unwrap();
    }
    let (fi, di) = (
        d.resolve("f").unwrap().row.inode,
        d.resolve("d").unwrap().row.inode,
    );
    let ap = d.apply(&rename("f", "d"), ctx(5, 2000)).unwrap();
    let e = &d.resolve("d").unwrap().row;
    assert_eq!(
        (e.inode, e.kind, e.version, e.writer, e.mtime),
        (fi, Kind::File, 5, 5, 2000)
    );
    assert!(d.get(di).is_none());
    assert!(ap.removed.iter().any(|(i, _, _)| *i == di));
    // A directory replaces a file.
    run(&mut d, mkdir("e")).unwrap();
    run(&mut d, rename("e", "g")).unwrap();
    assert!(d.resolve("g").unwrap().is_dir());
}

#[test]
fn rename_of_a_non_empty_directory() {
    let setup = [mkdir("d"), create("d/f"), mkdir("t")];
    assert_eq!(
        errs(&setup, rename("d", "n")),
        (None, Some(Errno::ENOTEMPTY))
    );
    let mut d = c();
    for o in &setup {
        run(&mut d, o.clone()).unwrap();
    }
    let before = d.root_version();
    assert_eq!(run(&mut d, rename("d", "n")), Err(Errno::ENOTEMPTY));
    assert_eq!(d.entry_count(), 4);
    // With a target: pmxcfs unlinks it before it finds the source not empty.
    assert_eq!(run(&mut d, rename("d", "t")), Err(Errno::ENOTEMPTY));
    assert!(d.resolve("t").is_err());
    assert!(d.resolve("d/f").is_ok());
    assert_eq!(d.root_version(), before);
    assert_eq!(d.entry_count(), 3);
}

#[test]
fn rename_of_a_vm_config() {
    let mut d = c();
    for o in [
        mkdir("nodes"),
        mkdir("nodes/a"),
        mkdir("nodes/a/qemu-server"),
        mkdir("nodes/b"),
        mkdir("nodes/b/qemu-server"),
        mkdir("nodes/b/lxc"),
        create("nodes/a/qemu-server/100.conf"),
        create("nodes/a/qemu-server/101.conf"),
    ] {
        run(&mut d, o).unwrap();
    }
    // Migration: its own VMID does not conflict.
    let ap = run(
        &mut d,
        rename("nodes/a/qemu-server/100.conf", "nodes/b/lxc/100.conf"),
    )
    .unwrap();
    assert!(ap.vmlist_changed);
    assert_eq!(
        (d.vms()[&100].node.as_str(), d.vms()[&100].ty),
        ("b", paths::VmType::Lxc)
    );
    assert_eq!(
        run(
            &mut d,
            rename(
                "nodes/a/qemu-server/101.conf",
                "nodes/b/qemu-server/100.conf"
            )
        ),
        Err(Errno::EEXIST)
    );
    // Renamed away from a config name: the VMID is forgotten.
    run(&mut d, rename("nodes/b/lxc/100.conf", "nodes/b/lxc/notes")).unwrap();
    assert!(!d.vms().contains_key(&100));
}

#[test]
fn rename_refusals_pmxcfs_would_corrupt_itself_on() {
    let setup = [mkdir("d"), mkdir("d/s"), create("f")];
    assert_eq!(errs(&setup, rename("f", "f")), (None, Some(Errno::EIO)));
    assert_eq!(
        errs(&setup, rename("d/s", "d/s/x")),
        (Some(Errno::EINVAL), Some(Errno::EINVAL))
    );
    assert_eq!(
        errs(&setup, rename("f", "d/.")),
        (Some(Errno::EACCES), Some(Errno::EACCES))
    );
    assert_eq!(
        errs(&setup, rename("", "x")),
        (Some(Errno::EACCES), Some(Errno::EACCES))
    );
    assert_eq!(
        errs(&setup, rename("f", "")),
        (Some(Errno::EACCES), Some(Errno::EACCES))
    );
    assert_eq!(
        errs(&setup, rename("nope", "x")),
        (Some(Errno::ENOENT), Some(Errno::ENOENT))
    );
    let mut d = c();
    for o in &setup {
        run(&mut d, o.clone()).unwrap();
    }
    let before = d.index_entries();
    let _ = run(&mut d, rename("f", "f"));
    assert_eq!(d.index_entries(), before);
}

#[test]
fn mtime_rules() {
    let mut setup = locks();
    setup.extend([mkdir("priv/lock/x"), create("f")]);
    assert_eq!(errs(&setup, mtime("", 5)), (None, Some(Errno::EACCES)));
    let mut d = c();
    for o in &setup {
        run(&mut d, o.clone()).unwrap();
    }
    let lock = "priv/lock/x";
    let at = |d: &mut MemDb, w, now, m| d.apply(&mtime(lock, m), ctx(w, now));
    assert_eq!(at(&mut d, 1, 1000, 999), Err(Errno::EACCES), "older");
    assert_eq!(
        at(&mut d, 2, 1000, 1100),
        Err(Errno::EACCES),
        "other writer"
    );
    // mtime 0 long after expiry: Pmxfs removes the lock, pmxcfs refuses.
    assert_eq!(at(&mut d, 1, 100_000, 0), Err(Errno::EACCES));
    let ap = at(&mut d, 1, 1050, 1100).unwrap();
    let e = &d.resolve(lock).unwrap().row;
    assert_eq!((e.version, e.mtime), (ap.version, 1100));
    // The root takes the new mtime, not the op's time.
    d.apply(&mtime("f", 1_700_000_000), ctx(3, 1200)).unwrap();
    assert_eq!(
        d.root_version(),
        RootVersion {
            version: ap.version + 1,
            writer: 3,
            mtime: 1_700_000_000
        }
    );
    let f = &d.resolve("f").unwrap().row;
    assert_eq!((f.writer, f.mtime), (3, 1_700_000_000));
    let mut p = db(Dialect::Pmxfs);
    for o in &setup {
        run(&mut p, o.clone()).unwrap();
    }
    assert!(p.apply(&mtime(lock, 0), ctx(1, 100_000)).is_ok());
    p.apply(&mtime("f", 1_700_000_000), ctx(3, 1200)).unwrap();
    assert_eq!(p.root_version().mtime, 1200);
}

#[test]
fn guest_list_after_sync_counts_files_only() {
    let mut d = c();
    for o in [
        mkdir("nodes"),
        mkdir("nodes/a"),
        mkdir("nodes/a/qemu-server"),
        mkdir("nodes/a/qemu-server/100.conf"),
        create("nodes/a/qemu-server/101.conf"),
    ] {
        run(&mut d, o).unwrap();
    }
    let idx = d.index_entries();
    d.install_sync(&idx, Vec::new(), 0).unwrap();
    assert_eq!(d.vms().keys().copied().collect::<Vec<_>>(), [101]);
    d.set_dialect(Dialect::Pmxfs);
    assert_eq!(d.vms().keys().copied().collect::<Vec<_>>(), [100, 101]);
}

fn lock_db(dialect: Dialect) -> (MemDb, [u8; 32]) {
    let mut d = db(dialect);
    for o in locks() {
        run(&mut d, o).unwrap();
    }
    run(&mut d, mkdir("priv/lock/x")).unwrap();
    let csum = d.entry_csum("priv/lock/x").unwrap();
    (d, csum)
}

#[test]
fn unlock_request_changes_nothing() {
    for dialect in [Dialect::Pmxfs, Dialect::Pmxcfs] {
        let (mut d, csum) = lock_db(dialect);
        let before = (d.index_entries(), d.root_version());
        let op = Op::UnlockRequest {
            path: "priv/lock/x".into(),
            csum,
        };
        let ap = d.apply(&op, ctx(2, 5000)).unwrap();
        assert_eq!(
            ap,
            Applied {
                version: before.1.version,
                unlock_request: Some(("priv/lock/x".into(), csum)),
                ..Applied::default()
            }
        );
        assert_eq!((d.index_entries(), d.root_version()), before);
    }
}

#[test]
fn unlock_deletes_only_the_lock_it_judged() {
    for dialect in [Dialect::Pmxfs, Dialect::Pmxcfs] {
        let (mut d, csum) = lock_db(dialect);
        let unlock = |path: &str, csum| Op::Unlock {
            path: path.into(),
            csum,
        };
        let before = (d.index_entries(), d.root_version());
        let unchanged = Applied {
            version: before.1.version,
            ..Applied::default()
        };
        // Refreshed since (another csum), not a lock, missing: ignored, as dcdb does.
        assert_eq!(
            d.apply(&unlock("priv/lock/x", [0; 32]), ctx(2, 5000)),
            Ok(unchanged.clone())
        );
        let priv_csum = d.entry_csum("priv").unwrap();
        assert_eq!(
            d.apply(&unlock("priv", priv_csum), ctx(2, 5000)),
            Ok(unchanged.clone())
        );
        assert_eq!(
            d.apply(&unlock("priv/lock/y", csum), ctx(2, 5000)),
            Ok(unchanged)
        );
        assert_eq!((d.index_entries(), d.root_version()), before);
        // The judged one: a DELETE from the sender at the message's time.
        let ap = d.apply(&unlock("priv/lock/x", csum), ctx(2, 5000)).unwrap();
        assert_eq!(ap.lock, Some(LockEvent::Released("x".into())));
        assert!(d.resolve("priv/lock/x").is_err());
        assert_eq!(
            d.root_version(),
            RootVersion {
                version: before.1.version + 1,
                writer: 2,
                mtime: 5000
            }
        );
    }
    // A lock with something inside: DELETE's ENOTEMPTY.
    let (mut d, csum) = lock_db(Dialect::Pmxcfs);
    run(&mut d, create("priv/lock/x/owner")).unwrap();
    let op = Op::Unlock {
        path: "priv/lock/x".into(),
        csum,
    };
    assert_eq!(d.apply(&op, ctx(2, 5000)), Err(Errno::ENOTEMPTY));
}

/// The csum pmxcfs sent for `priv/lock/capture` in the captures (c3), from the tree
/// entry that the replayed messages give it.
#[test]
fn entry_csum_is_pmxcfs_captured_one() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dcdb-wire/tests/fixtures/pmxcfs-wire/"
    );
    let b = std::fs::read(format!("{dir}n1/00040-pve_dcdb_v1.bin")).unwrap();
    let dcdb_wire::DcdbMessage::Normal {
        msg: dcdb_wire::Normal::Unlock(m),
        ..
    } = dcdb_wire::decode_message(&b).unwrap()
    else {
        panic!("not an UNLOCK_REQUEST")
    };
    let row = |inode, parent, version, name: &str| Row {
        inode: Inode(inode),
        parent: Inode(parent),
        version,
        writer: 1,
        mtime: 1_796_160_510,
        kind: Kind::Dir,
        name: name.into(),
        data: Arc::new(Vec::new()),
    };
    let rows = vec![
        row(26, 0, 26, "priv"),
        row(27, 26, 27, "lock"),
        row(28, 27, 29, "capture"),
    ];
    let root = RootVersion {
        version: 29,
        writer: 1,
        mtime: 1_796_160_510,
    };
    let d = MemDb::from_rows(rows, root, Box::new(NullStore), Limits::default()).unwrap();
    assert_eq!(d.entry_csum("priv/lock/capture"), Some(m.csum));
    assert_eq!(d.entry_csum("/priv//lock/capture"), Some(m.csum));
    assert_eq!(d.entry_csum("priv/lock/none"), None);
}

#[test]
fn pmxcfs_checksum_layout() {
    let mut d = c();
    // A tree of the root alone: the checksum is the root's entry csum.
    let root = dcdb_wire::InodeRecord {
        parent: 0,
        inode: 0,
        version: 1,
        writer: 0,
        mtime: 0,
        kind: dcdb_wire::update::DT_DIR,
        name: Vec::new(),
        data: Vec::new(),
    };
    assert_eq!(d.pmxcfs_checksum(), dcdb_wire::csum::entry_csum(&root));
    assert_eq!(d.entry_csum(""), Some(d.pmxcfs_checksum()));
    d.apply(&mkdir("d"), ctx(7, 100)).unwrap();
    d.apply(&create("d/f"), ctx(8, 200)).unwrap();
    d.apply(&write("d/f", 0, b"hi", false), ctx(9, 300))
        .unwrap();
    // memdb_compute_checksum by hand: per entry in inode order, inode version writer
    // mtime size type parent name [data], little-endian.
    let mut h = Sha256::new();
    let mut e = |inode: u64,
                 version: u64,
                 writer: u32,
                 mtime: u32,
                 data: &[u8],
                 t: u8,
                 parent: u64,
                 name: &[u8]| {
        h.update(inode.to_le_bytes());
        h.update(version.to_le_bytes());
        h.update(writer.to_le_bytes());
        h.update(mtime.to_le_bytes());
        h.update((data.len() as u32).to_le_bytes());
        h.update([t]);
        h.update(parent.to_le_bytes());
        h.update(name);
        h.update(data);
    };
    e(0, 4, 9, 300, b"", 4, 0, b"");
    e(2, 2, 7, 100, b"", 4, 0, b"d");
    e(3, 4, 9, 300, b"hi", 8, 2, b"f");
    let want: [u8; 32] = h.finalize().into();
    assert_eq!(d.pmxcfs_checksum(), want);
}
