//! The daemon's control socket (`<run dir>/<escaped mount>.sock`): `pmxfs status` asks
//! it for the node's state. With `--debug-hooks`, tests also inject operations "from
//! another node" (the invalidation path without a cluster), move the daemon's clock
//! forward (lock expiry without sleeping), and wait until every queued invalidation
//! reached the kernel (a barrier instead of a sleep).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memdb::Op;
use serde_json::{json, Value};

use crate::tree::{Metrics, Origin, Tree};

/// Node id used for operations injected through the debug hook.
pub const DEBUG_REMOTE_WRITER: u32 = 99;

/// Socket path for the pmxfs mounted at `mount`.
pub fn socket_path(mount: &Path) -> PathBuf {
    pmxfs_client::run_dir::control_socket(mount)
}

/// Static facts the status reply includes.
#[derive(Debug, Clone)]
pub struct Info {
    /// Mount point.
    pub mount: PathBuf,
    /// Database file.
    pub db: PathBuf,
    /// Accept the test hooks (`apply`, `advance-clock`).
    pub debug_hooks: bool,
}

/// Serve the socket on a background thread.
pub fn serve(listener: UnixListener, tree: Arc<Tree>, info: Info) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("pmxfs-control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (tree, info) = (tree.clone(), info.clone());
                let _ = std::thread::Builder::new()
                    .name("pmxfs-control-conn".into())
                    .spawn(move || handle(conn, &tree, &info));
            }
        })?;
    Ok(())
}

fn handle(conn: UnixStream, tree: &Tree, info: &Info) {
    let Ok(mut w) = conn.try_clone() else { return };
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { return };
        let reply = match serde_json::from_str::<Value>(&line) {
            Ok(req) => answer(&req, tree, info),
            Err(e) => json!({"error": format!("bad request: {e}")}),
        };
        if writeln!(w, "{reply}").is_err() {
            return;
        }
    }
}

fn answer(req: &Value, tree: &Tree, info: &Info) -> Value {
    match req["cmd"].as_str() {
        Some("status") => status_json(tree, info),
        Some("barrier") => {
            // Answered once every invalidation queued before it reached the kernel.
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            tree.after_invalidations(move || {
                let _ = tx.send(());
            });
            match rx.recv() {
                Ok(()) => json!({"ok": true}),
                Err(_) => json!({"error": "the invalidation thread is gone"}),
            }
        }
        Some("apply" | "advance-clock") if !info.debug_hooks => {
            json!({"error": "start pmxfs with --debug-hooks to use the test hooks"})
        }
        Some("apply") => match parse_op(&req["op"]) {
            Ok(op) => match tree.apply_now(&op, DEBUG_REMOTE_WRITER, Origin::Remote) {
                Ok(a) => json!({"ok": true, "version": a.version}),
                Err(e) => json!({"error": e.desc(), "errno": e as i32}),
            },
            Err(e) => json!({"error": e}),
        },
        Some("advance-clock") => match req["secs"].as_i64() {
            Some(secs) if secs >= 0 => {
                tree.clock.advance(secs);
                json!({"ok": true, "now": tree.clock.now()})
            }
            _ => json!({"error": "advance-clock needs secs >= 0"}),
        },
        other => json!({"error": format!("unknown command {other:?}")}),
    }
}

/// The status document `pmxfs status --json` prints.
pub fn status_json(tree: &Tree, info: &Info) -> Value {
    let db = tree.read();
    let st = &tree.status;
    let m = &tree.metrics;
    let proto = tree.protocol.lock().clone();
    let n = tree.invalidator().map(|i| {
        json!({
            "inodes": Metrics::get(&i.stats.inodes),
            "entries": Metrics::get(&i.stats.entries),
            "epochs": Metrics::get(&i.stats.epochs),
            "barriers": Metrics::get(&i.stats.barriers),
            "entry_overflows": Metrics::get(&i.stats.entry_overflows),
        })
    });
    json!({
        "nodename": st.nodename,
        "mode": st.mode,
        "mode_reason": st.mode_reason,
        "quorate": st.quorate(),
        "members": st.members(),
        "version": db.root_version().version,
        "inodes": db.entry_count(),
        "bytes": db.bytes(),
        "db_backlog": db.backlog(),
        "held_locks": db.held_locks(tree.clock.now()),
        "mount": info.mount,
        "db": info.db,
        "coherence": tree.coherence(),
        "open_handles": Metrics::get(&m.open_handles),
        "ops_applied": Metrics::get(&m.ops_applied),
        "transport": tree.transport.get().map(String::as_str).unwrap_or("starting"),
        "cluster_protocol": match proto.speaks { "" => "none", s => s },
        "protocol_switch": {
            "mode": if proto.upgrade { "auto" } else { "off" },
            // The database's record, which a restart reads back.
            "switched_at": db.switched_at(),
            "refused": proto.refused,
        },
        "cluster_messages": {
            "sent": Metrics::get(&m.cluster_sent),
            "delivered": Metrics::get(&m.cluster_delivered),
            "writes_resent": Metrics::get(&m.cluster_resent),
            "quorum_resyncs": Metrics::get(&m.cluster_resyncs),
            "restarts": Metrics::get(&m.cluster_restarts),
            "tree_checks": Metrics::get(&m.cluster_verifies),
            "tree_check_mismatches": Metrics::get(&m.cluster_verify_mismatches),
        },
        // Own writes that took effect, and where their time went (cluster mode).
        "write_latency": {
            "total": m.write_total.json(),
            "queued": m.write_queued.json(),
            "delivery": m.write_delivery.json(),
            "confirmation": m.write_confirmation.json(),
            "applying_others": m.write_apply_others.json(),
        },
        "ipc": {
            "connections": Metrics::get(&m.ipc_connections),
            "requests": Metrics::get(&m.ipc_requests),
            "dropped": Metrics::get(&m.ipc_dropped),
            "clients": tree.ipc_clients.list(),
        },
        "kvstore": {
            "group": st.kvstore(),
            "sent": Metrics::get(&m.kvstore_sent),
            "delivered": Metrics::get(&m.kvstore_delivered),
            "dropped": Metrics::get(&m.kvstore_dropped),
            "restarts": Metrics::get(&m.kvstore_restarts),
            "log_entries": tree.kv.lock().log.len(),
        },
        "rrd": {
            "written": Metrics::get(&m.rrd_written),
            "failed": Metrics::get(&m.rrd_failed),
        },
        "requests": {
            "lookup": Metrics::get(&m.lookups),
            "getattr": Metrics::get(&m.getattrs),
            "io_uring": Metrics::get(&m.ring_requests),
        },
        "notify": n,
    })
}

fn parse_op(v: &Value) -> Result<Op, String> {
    let s = |k: &str| {
        v[k].as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("missing string field '{k}'"))
    };
    Ok(match v["op"].as_str().unwrap_or_default() {
        "create" => Op::Create { path: s("path")? },
        "mkdir" => Op::Mkdir { path: s("path")? },
        "delete" => Op::Delete { path: s("path")? },
        "rename" => Op::Rename {
            from: s("from")?,
            to: s("to")?,
        },
        "mtime" => Op::Mtime {
            path: s("path")?,
            mtime: v["mtime"].as_u64().ok_or("missing mtime")? as u32,
        },
        "write" => Op::Write {
            path: s("path")?,
            offset: v["offset"].as_u64().unwrap_or(0),
            data: s("data")?.into_bytes(),
            truncate: v["truncate"].as_bool().unwrap_or(true),
        },
        other => return Err(format!("unknown op '{other}'")),
    })
}

/// Send one request to the daemon serving `mount` and return its reply.
pub fn request(mount: &Path, req: &Value) -> std::io::Result<Value> {
    let path = socket_path(mount);
    let mut s = UnixStream::connect(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            return std::io::Error::new(
                e.kind(),
                format!(
                    "asking the pmxfs serving {} needs root ({} is root's only)",
                    mount.display(),
                    path.display()
                ),
            );
        }
        std::io::Error::new(
            e.kind(),
            format!(
                "no pmxfs serving {} ({}: {e})",
                mount.display(),
                path.display()
            ),
        )
    })?;
    writeln!(s, "{req}")?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    serde_json::from_str(&line).map_err(std::io::Error::other)
}
