//! The IPC clients connected now, for `pmxfs status`: who they are and how much they ask.

use std::collections::BTreeMap;

use parking_lot::Mutex;
use serde::Serialize;

/// One connected client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientInfo {
    /// Its process id.
    pub pid: u32,
    /// Its user id.
    pub uid: u32,
    /// Its group id.
    pub gid: u32,
    /// Whether it was given a read-only connection (group www-data).
    pub read_only: bool,
    /// Requests it made.
    pub requests: u64,
}

/// The connected clients, by connection id.
#[derive(Debug, Default)]
pub struct Clients {
    next: Mutex<u64>,
    all: Mutex<BTreeMap<u64, ClientInfo>>,
}

impl Clients {
    /// Register a new connection; returns its id.
    pub fn connected(&self, info: ClientInfo) -> u64 {
        let id = {
            let mut n = self.next.lock();
            *n += 1;
            *n
        };
        self.all.lock().insert(id, info);
        id
    }

    /// Count a request of connection `id`.
    pub fn asked(&self, id: u64) {
        if let Some(c) = self.all.lock().get_mut(&id) {
            c.requests += 1;
        }
    }

    /// Forget connection `id`.
    pub fn gone(&self, id: u64) {
        self.all.lock().remove(&id);
    }

    /// The clients connected now, oldest first.
    pub fn list(&self) -> Vec<ClientInfo> {
        self.all.lock().values().cloned().collect()
    }
}
