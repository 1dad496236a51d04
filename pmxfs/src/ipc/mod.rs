//! The `pve2` IPC server PVE's daemons talk to (`PVE::IPCC`): libqb's server library
//! (`server`) over the tree service, answering pmxcfs's operations (`ops`). An adapter
//! beside `fs` and `cluster`; it imports the tree only.
pub mod ops;
mod server;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use crate::tree::Tree;

/// The service name PVE's client connects to.
pub const SERVICE: &str = "pve2";

/// A running IPC server; it stops when dropped.
pub struct IpcServer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for IpcServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serve `name` over `tree`; returns once clients can connect. `www_gid` is the group
/// whose members get read-only connections.
pub fn start(name: &str, tree: Arc<Tree>, www_gid: u32) -> Result<IpcServer> {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let (n, s) = (name.to_string(), stop.clone());
    let thread = std::thread::Builder::new()
        .name("pmxfs-ipc".into())
        .spawn(move || server::run(&n, tree, www_gid, s, tx))
        .context("spawning the IPC thread")?;
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(Ok(())) => Ok(IpcServer {
            stop,
            thread: Some(thread),
        }),
        Ok(Err(e)) => Err(anyhow!("IPC service {name}: {e}")),
        Err(_) => Err(anyhow!("IPC service {name} did not start")),
    }
}
