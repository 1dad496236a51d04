//! The daemon's control socket (`<run dir>/<escaped mount>.sock`): `pmxfs status` asks
//! it for the node's state, and with `--debug-remote-ops` tests inject operations "from
//! another node" to exercise the invalidation path before the cluster layer exists.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::fs::{Origin, Shared};
use memdb::Op;

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
    /// Accept `apply` requests.
    pub debug_remote_ops: bool,
}

/// Serve the socket on a background thread.
pub fn serve(listener: UnixListener, sh: Arc<Shared>, info: Info) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("pmxfs-control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (sh, info) = (sh.clone(), info.clone());
                let _ = std::thread::Builder::new()
                    .name("pmxfs-control-conn".into())
                    .spawn(move || handle(conn, &sh, &info));
            }
        })?;
    Ok(())
}

fn handle(conn: UnixStream, sh: &Shared, info: &Info) {
    let Ok(mut w) = conn.try_clone() else { return };
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { return };
        let reply = match serde_json::from_str::<Value>(&line) {
            Ok(req) => answer(&req, sh, info),
            Err(e) => json!({"error": format!("bad request: {e}")}),
        };
        if writeln!(w, "{reply}").is_err() {
            return;
        }
    }
}

fn answer(req: &Value, sh: &Shared, info: &Info) -> Value {
    match req["cmd"].as_str() {
        Some("status") => status_json(sh, info),
        Some("apply") if info.debug_remote_ops => match parse_op(&req["op"]) {
            Ok(op) => match sh.apply(&op, DEBUG_REMOTE_WRITER, Origin::Remote) {
                Ok(a) => json!({"ok": true, "version": a.version}),
                Err(e) => json!({"error": e.desc(), "errno": e as i32}),
            },
            Err(e) => json!({"error": e}),
        },
        Some("apply") => {
            json!({"error": "start pmxfs with --debug-remote-ops to inject operations"})
        }
        other => json!({"error": format!("unknown command {other:?}")}),
    }
}

/// The status document `pmxfs status --json` prints.
pub fn status_json(sh: &Shared, info: &Info) -> Value {
    let db = sh.db.read();
    let st = &sh.status;
    let n = sh.invalidator().map(|i| {
        json!({
            "inodes": i.stats.inodes.load(Ordering::Relaxed),
            "entries": i.stats.entries.load(Ordering::Relaxed),
            "epochs": i.stats.epochs.load(Ordering::Relaxed),
            "barriers": i.stats.barriers.load(Ordering::Relaxed),
        })
    });
    json!({
        "nodename": st.nodename,
        "mode": st.mode,
        "quorate": st.quorate(),
        "members": st.members(),
        "version": db.root_version().version,
        "inodes": db.entry_count(),
        "bytes": db.bytes(),
        "db_backlog": db.backlog(),
        "held_locks": db.held_locks(crate::clock::now_secs()),
        "mount": info.mount,
        "db": info.db,
        "coherence": sh.policy.enabled,
        "open_handles": sh.handles.len(),
        "ops_applied": sh.ops_applied.load(Ordering::Relaxed),
        "transport": sh.transport.get().map(String::as_str).unwrap_or("starting"),
        "cluster_messages": {
            "sent": sh.cluster_sent.load(Ordering::Relaxed),
            "delivered": sh.cluster_delivered.load(Ordering::Relaxed),
            "writes_resent": sh.cluster_resent.load(Ordering::Relaxed),
            "quorum_resyncs": sh.cluster_resyncs.load(Ordering::Relaxed),
        },
        "requests": {
            "lookup": sh.lookups.load(Ordering::Relaxed),
            "getattr": sh.getattrs.load(Ordering::Relaxed),
            "io_uring": sh.ring_requests.load(Ordering::Relaxed),
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
