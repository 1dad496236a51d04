//! What one change costs inside the daemon, without FUSE: memdb alone (no storage),
//! memdb committing to SQLite on the spot (`--sync full` takes this path, with fsync),
//! and memdb with the daemon's store, which answers once the change is in the intent
//! log and applies it to SQLite in the background; the last column includes waiting
//! for that background to finish. For the operations the per-file benchmark issues
//! (create, write 4 KiB, rename, delete). Prints microseconds per operation.
//! Run: `cargo bench -p storage --bench commit`

use std::time::Instant;

use memdb::{Limits, MemDb, NullStore, Op, OpCtx};
use storage::{Access, Deferral, LoggedStore, SqliteStore, SyncMode};

const N: usize = 2000;

fn phases(db: &mut MemDb) -> Vec<(&'static str, f64)> {
    let ctx = OpCtx {
        writer: 0,
        now: 1000,
    };
    let data = vec![b'x'; 4096];
    db.apply(&Op::Mkdir { path: "d".into() }, ctx).unwrap();
    let mut out = Vec::new();
    let mut time = |name, f: &mut dyn FnMut(usize, &mut MemDb)| {
        let t = Instant::now();
        for i in 0..N {
            f(i, db);
        }
        out.push((name, t.elapsed().as_secs_f64() * 1e6 / N as f64));
    };
    time("create", &mut |i, db| {
        db.apply(
            &Op::Create {
                path: format!("d/f{i}"),
            },
            ctx,
        )
        .unwrap();
    });
    time("write 4 KiB", &mut |i, db| {
        let op = Op::Write {
            path: format!("d/f{i}"),
            offset: 0,
            data: data.clone(),
            truncate: true,
        };
        db.apply(&op, ctx).unwrap();
    });
    time("rename", &mut |i, db| {
        let op = Op::Rename {
            from: format!("d/f{i}"),
            to: format!("d/g{i}"),
        };
        db.apply(&op, ctx).unwrap();
    });
    time("delete", &mut |i, db| {
        db.apply(
            &Op::Delete {
                path: format!("d/g{i}"),
            },
            ctx,
        )
        .unwrap();
    });
    out
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let mut mem = MemDb::empty(Box::new(NullStore), Limits::default());
    let (store, loaded) = SqliteStore::open(
        &dir.path().join("direct.db"),
        SyncMode::Normal,
        Access::Shared,
    )
    .unwrap();
    let mut direct =
        MemDb::from_rows(loaded.rows, loaded.root, Box::new(store), Limits::default()).unwrap();
    let (store, loaded) = LoggedStore::open(
        &dir.path().join("logged.db"),
        SyncMode::Normal,
        Deferral::On,
    )
    .unwrap();
    let mut logged =
        MemDb::from_rows(loaded.rows, loaded.root, Box::new(store), Limits::default()).unwrap();
    let a = phases(&mut mem);
    let b = phases(&mut direct);
    let t = Instant::now();
    let c = phases(&mut logged);
    logged.checkpoint().unwrap();
    let all = t.elapsed().as_secs_f64() * 1e6 / (4 * N) as f64;
    println!(
        "{:<14} {:>12} {:>14} {:>14}",
        "us per op", "memdb only", "SQLite commit", "intent log"
    );
    for (((name, m), (_, d)), (_, l)) in a.iter().zip(&b).zip(&c) {
        println!("{name:<14} {m:>12.2} {d:>14.2} {l:>14.2}");
    }
    println!(
        "intent log, all {} changes until the last is in SQLite: {all:.2} us per change",
        4 * N
    );
}
