use super::*;

fn ctx(now: u32) -> OpCtx {
    OpCtx { writer: 0, now }
}

fn db() -> MemDb {
    MemDb::empty(Box::new(NullStore), Limits::default())
}

fn mkdir(db: &mut MemDb, p: &str) -> Result<Applied, Errno> {
    db.apply(&Op::Mkdir { path: p.into() }, ctx(1000))
}

fn put(db: &mut MemDb, p: &str, data: &[u8]) {
    db.put(p, data, ctx(1000)).unwrap();
}

fn content(db: &MemDb, p: &str) -> Vec<u8> {
    db.resolve(p).unwrap().row.data.to_vec()
}

#[test]
fn versions_and_inodes_follow_pmxcfs() {
    let mut d = db();
    assert_eq!(d.root_version().version, 1);
    mkdir(&mut d, "a").unwrap();
    let a = d.resolve("a").unwrap();
    assert_eq!((a.row.inode, a.row.version), (Inode(2), 2));
    d.apply(&Op::Create { path: "a/f".into() }, ctx(1001))
        .unwrap();
    let f = d.resolve("a/f").unwrap().row.clone();
    assert_eq!((f.inode, f.version, f.mtime), (Inode(3), 3, 1001));
    // the parent directory is not touched by a create (pmxcfs)
    assert_eq!(d.resolve("a").unwrap().row.version, 2);
    put(&mut d, "a/f", b"x");
    assert_eq!(d.resolve("a/f").unwrap().row.version, 4);
    assert_eq!(d.root_version().version, 4);
}

#[test]
fn write_semantics_match_memdb_pwrite() {
    let mut d = db();
    put(&mut d, "f", b"0123456789");
    let w = |d: &mut MemDb, off: u64, data: &[u8], truncate: bool| {
        d.apply(
            &Op::Write {
                path: "f".into(),
                offset: off,
                data: data.to_vec(),
                truncate,
            },
            ctx(1000),
        )
        .unwrap();
    };
    w(&mut d, 3, b"X", false);
    w(&mut d, 6, b"X", false);
    assert_eq!(content(&d, "f"), b"012X45X789");
    w(&mut d, 4, b"", true); // truncate(4)
    assert_eq!(content(&d, "f"), b"012X");
    w(&mut d, 6, b"", true); // extend with zeros
    assert_eq!(content(&d, "f"), b"012X\0\0");
    w(&mut d, 8, b"Z", false); // past the end: zero-filled hole
    assert_eq!(content(&d, "f"), b"012X\0\0\0\0Z");
}

#[test]
fn errnos() {
    let mut d = db();
    put(&mut d, "f", b"x");
    mkdir(&mut d, "dir").unwrap();
    put(&mut d, "dir/x", b"");
    let e = |d: &mut MemDb, op: Op| d.apply(&op, ctx(1000)).unwrap_err();
    assert_eq!(e(&mut d, Op::Create { path: "f".into() }), Errno::EEXIST);
    assert_eq!(e(&mut d, Op::Mkdir { path: "f".into() }), Errno::EEXIST);
    assert_eq!(
        e(
            &mut d,
            Op::Create {
                path: "nope/f".into()
            }
        ),
        Errno::ENOENT
    );
    assert_eq!(e(&mut d, Op::Create { path: "f/g".into() }), Errno::ENOTDIR);
    assert_eq!(
        e(&mut d, Op::Delete { path: "dir".into() }),
        Errno::ENOTEMPTY
    );
    assert_eq!(e(&mut d, Op::Delete { path: "".into() }), Errno::EACCES);
    assert_eq!(e(&mut d, Op::Create { path: "..".into() }), Errno::EACCES);
    assert_eq!(
        e(
            &mut d,
            Op::Create {
                path: "a".repeat(256)
            }
        ),
        Errno::ENAMETOOLONG
    );
    assert_eq!(
        e(
            &mut d,
            Op::Write {
                path: "dir".into(),
                offset: 0,
                data: vec![1],
                truncate: false
            }
        ),
        Errno::EISDIR
    );
    assert_eq!(
        e(
            &mut d,
            Op::Write {
                path: "f".into(),
                offset: 1024 * 1024,
                data: vec![1],
                truncate: false
            }
        ),
        Errno::EFBIG
    );
    assert_eq!(
        e(
            &mut d,
            Op::Rename {
                from: "dir".into(),
                to: "dir/sub".into()
            }
        ),
        Errno::EINVAL
    );
    assert_eq!(
        e(
            &mut d,
            Op::Rename {
                from: "f".into(),
                to: "dir".into()
            }
        ),
        Errno::EISDIR
    );
    // nothing above changed the tree
    assert_eq!(content(&d, "f"), b"x");
    assert_eq!(d.entry_count(), 4);
}

#[test]
fn limits_refuse_without_damage() {
    let limits = Limits {
        max_file_size: 100,
        max_fs_size: 150,
        max_inodes: 4,
    };
    let mut d = MemDb::empty(Box::new(NullStore), limits);
    put(&mut d, "a", &[1; 100]);
    put(&mut d, "b", &[2; 40]);
    let big = Op::Write {
        path: "b".into(),
        offset: 0,
        data: vec![3; 60],
        truncate: true,
    };
    assert_eq!(d.apply(&big, ctx(1)), Err(Errno::ENOSPC));
    assert_eq!(content(&d, "b"), vec![2; 40]);
    mkdir(&mut d, "c").unwrap(); // 4 entries with the root
    assert_eq!(mkdir(&mut d, "d"), Err(Errno::ENOSPC));
    assert_eq!(
        d.apply(&Op::Create { path: "e".into() }, ctx(1)),
        Err(Errno::ENOSPC)
    );
    assert_eq!(d.bytes(), 140);
}

#[test]
fn rename_replaces_and_keeps_inode() {
    let mut d = db();
    put(&mut d, "old", b"old");
    put(&mut d, "tmp", b"new");
    let tmp_ino = d.resolve("tmp").unwrap().row.inode;
    let old_ino = d.resolve("old").unwrap().row.inode;
    let ap = d
        .apply(
            &Op::Rename {
                from: "tmp".into(),
                to: "old".into(),
            },
            ctx(2000),
        )
        .unwrap();
    let e = d.resolve("old").unwrap();
    assert_eq!((e.row.inode, e.row.mtime), (tmp_ino, 2000));
    assert_eq!(content(&d, "old"), b"new");
    assert!(d.get(old_ino).is_none());
    assert!(d.resolve("tmp").is_err());
    assert!(ap.changes.contains(&Change::Attr(old_ino)));
    assert_eq!(d.bytes(), 3);
    // non-empty directories can be moved (pmxcfs refuses; we keep the subtree)
    mkdir(&mut d, "x").unwrap();
    put(&mut d, "x/f", b"1");
    d.apply(
        &Op::Rename {
            from: "x".into(),
            to: "y".into(),
        },
        ctx(1),
    )
    .unwrap();
    assert_eq!(content(&d, "y/f"), b"1");
    assert_eq!(
        d.path_of(d.resolve("y/f").unwrap().row.inode).unwrap(),
        "y/f"
    );
}

#[test]
fn locks_acquire_expire_and_take_over() {
    let mut d = db();
    mkdir(&mut d, "priv").unwrap();
    mkdir(&mut d, "priv/lock").unwrap();
    let at = |d: &mut MemDb, op: Op, now: u32| d.apply(&op, OpCtx { writer: 1, now });
    let mk = || Op::Mkdir {
        path: "priv/lock/authkey".into(),
    };
    let ap = at(&mut d, mk(), 1000).unwrap();
    assert_eq!(ap.lock, Some(LockEvent::Acquired("authkey".into())));
    assert_eq!(at(&mut d, mk(), 1100), Err(Errno::EEXIST));
    assert_eq!(d.held_locks(1100), vec!["authkey".to_string()]);
    // a refresh moves the expiry forward
    at(
        &mut d,
        Op::Mtime {
            path: "priv/lock/authkey".into(),
            mtime: 1100,
        },
        1100,
    )
    .unwrap();
    assert_eq!(at(&mut d, mk(), 1200), Err(Errno::EEXIST));
    // unlock request on a held lock is refused, on an expired one removes it
    let unlock = || Op::Mtime {
        path: "priv/lock/authkey".into(),
        mtime: 0,
    };
    assert_eq!(at(&mut d, unlock(), 1200), Err(Errno::EACCES));
    let ap = at(&mut d, unlock(), 1221).unwrap();
    assert_eq!(ap.lock, Some(LockEvent::Released("authkey".into())));
    assert!(d.resolve("priv/lock/authkey").is_err());
    // mkdir takes over an expired lock with a new inode
    at(&mut d, mk(), 2000).unwrap();
    let first = d.resolve("priv/lock/authkey").unwrap().row.inode;
    assert!(d.is_expired_lock(first, 2121));
    let ap = at(&mut d, mk(), 2121).unwrap();
    let second = d.resolve("priv/lock/authkey").unwrap().row.inode;
    assert_ne!(first, second);
    assert!(ap.changes.contains(&Change::Attr(first)));
    // locks cannot be renamed, nor created by a rename
    assert_eq!(
        at(
            &mut d,
            Op::Rename {
                from: "priv/lock/authkey".into(),
                to: "x".into()
            },
            2122
        ),
        Err(Errno::EACCES)
    );
    mkdir(&mut d, "d").unwrap();
    assert_eq!(
        at(
            &mut d,
            Op::Rename {
                from: "d".into(),
                to: "priv/lock/d".into()
            },
            2122
        ),
        Err(Errno::EACCES)
    );
    // a release stamped before the current holder's takeover does not remove its lock
    assert_eq!(
        at(
            &mut d,
            Op::Delete {
                path: "priv/lock/authkey".into()
            },
            2120
        ),
        Err(Errno::EBUSY)
    );
    // only the creating writer may refresh
    assert_eq!(
        d.apply(
            &Op::Mtime {
                path: "priv/lock/authkey".into(),
                mtime: 2200
            },
            OpCtx {
                writer: 2,
                now: 2200
            }
        ),
        Err(Errno::EACCES)
    );
}

#[test]
fn vmid_is_unique_across_nodes() {
    let mut d = db();
    for p in [
        "nodes",
        "nodes/a",
        "nodes/b",
        "nodes/a/qemu-server",
        "nodes/b/qemu-server",
        "nodes/b/lxc",
    ] {
        mkdir(&mut d, p).unwrap();
    }
    put(&mut d, "nodes/a/qemu-server/100.conf", b"cores: 1\n");
    assert_eq!(d.vms()[&100].node, "a");
    let dup = Op::Create {
        path: "nodes/b/lxc/100.conf".into(),
    };
    assert_eq!(d.apply(&dup, ctx(1)), Err(Errno::EEXIST));
    // migration: moving the config to another node is allowed
    d.apply(
        &Op::Rename {
            from: "nodes/a/qemu-server/100.conf".into(),
            to: "nodes/b/qemu-server/100.conf".into(),
        },
        ctx(1),
    )
    .unwrap();
    assert_eq!(d.vms()[&100].node, "b");
    d.apply(
        &Op::Delete {
            path: "nodes/b/qemu-server/100.conf".into(),
        },
        ctx(1),
    )
    .unwrap();
    assert!(d.vms().is_empty());
}

#[test]
fn invalid_trees_are_refused() {
    let row = |inode: u64, parent: u64, kind, name: &str| Row {
        inode: Inode(inode),
        parent: Inode(parent),
        version: inode,
        writer: 0,
        mtime: 0,
        kind,
        name: name.into(),
        data: Arc::new(Vec::new()),
    };
    let load = |rows| {
        MemDb::from_rows(
            rows,
            RootVersion::default(),
            Box::new(NullStore),
            Limits::default(),
        )
    };
    let dup = load(vec![row(2, 0, Kind::File, "a"), row(3, 0, Kind::File, "a")]);
    assert!(matches!(dup, Err(LoadError::Invalid(m)) if m.contains("duplicate")));
    let orphan = load(vec![row(2, 9, Kind::File, "a")]);
    assert!(matches!(orphan, Err(LoadError::Invalid(m)) if m.contains("missing directory")));
    let file_parent = load(vec![row(2, 0, Kind::File, "a"), row(3, 2, Kind::File, "b")]);
    assert!(matches!(file_parent, Err(LoadError::Invalid(m)) if m.contains("not a directory")));
    let cycle = load(vec![row(2, 3, Kind::Dir, "a"), row(3, 2, Kind::Dir, "b")]);
    assert!(matches!(cycle, Err(LoadError::Invalid(m)) if m.contains("not reachable")));
    let empty = load(vec![row(2, 0, Kind::File, "")]);
    assert!(matches!(empty, Err(LoadError::Invalid(_))));
}
