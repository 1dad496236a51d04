//! The status kvstore's state, as pmxcfs keeps it (`status.c`): every node's key/value
//! pairs (`SET_STATUS`/`GET_STATUS`: `tasklist`, `kv/*`), the RRD updates (`rrd/*`), the
//! node addresses (`nodeip`) and the cluster log. Nothing is persisted. This node's
//! values come from its IPC clients, the others' from the kvstore group
//! ([`crate::group`]), which only knows senders by node id: the names come from the
//! cluster's node list ([`StatusStore::set_nodes`]).

use std::collections::BTreeMap;

use thiserror::Error;

use crate::clog::{ClogError, ClusterLog, Entry};

/// Largest value `SET_STATUS` takes (`CFS_MAX_STATUS_SIZE`).
pub const MAX_STATUS_SIZE: usize = 32 * 1024;

/// Largest RRD update, terminating NUL included (pmxcfs refuses 4,096 bytes and more).
pub const MAX_RRD_SIZE: usize = 4096;

/// Largest node address, terminating NUL included.
pub const MAX_IP_SIZE: usize = 256;

/// Seconds after which an RRD update is left out of the dump (`rrd_entry_is_old`).
pub const RRD_EXPIRY: u32 = 300;

/// Seconds a built RRD dump is served again before it is rebuilt (`rrd_dump_last`).
pub const RRD_DUMP_CACHE: u32 = 2;

/// One key's value and its version: 0 when created, one more at each overwrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    /// The bytes as the setter sent them, its terminating NUL included.
    pub value: Vec<u8>,
    /// Overwrites so far.
    pub version: u32,
}

/// Why a `SET_STATUS` is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SetError {
    /// The value is over [`MAX_STATUS_SIZE`] (pmxcfs: EFBIG).
    #[error("status value too large")]
    TooBig,
    /// An RRD update or address that is empty, not NUL-terminated or too long
    /// (pmxcfs: ENOMEM, its answer for any failed store).
    #[error("malformed rrd update or node address")]
    Malformed,
}

/// What a set changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// A plain key was set or deleted.
    Key,
    /// An RRD update was stored: the key after `rrd/` and the data without its NUL,
    /// for the RRD writer.
    Rrd {
        /// E.g. `pve-node-9.0/n1`.
        key: String,
        /// E.g. `123:4:5`.
        data: String,
    },
    /// A node's address was set; `true` if it changed (the cluster info moves).
    Ip(bool),
    /// From a node that is not in the cluster's node list: ignored, as pmxcfs does.
    Ignored,
}

/// The status of this node and of the others it heard from.
#[derive(Debug)]
pub struct StatusStore {
    me: String,
    /// Node id → name, from the cluster's node list.
    names: BTreeMap<u32, String>,
    /// Node name → key → entry.
    nodes: BTreeMap<String, BTreeMap<String, KvEntry>>,
    /// RRD key → (data without its NUL, time of the update).
    rrd: BTreeMap<String, (String, u32)>,
    rrd_dump: Option<(u32, String)>,
    /// Node name → address.
    ips: BTreeMap<String, String>,
    /// The cluster log.
    pub log: ClusterLog,
    /// Moves with every change of a key's version (`.version`'s `kvstore`).
    generation: u64,
}

/// A C string: the bytes up to the first NUL (all of them if there is none).
fn c_str(b: &[u8]) -> &[u8] {
    b.iter().position(|c| *c == 0).map_or(b, |n| &b[..n])
}

/// A NUL-terminated value shorter than `max`, without its NUL.
fn terminated(value: &[u8], max: usize) -> Result<String, SetError> {
    if value.last() != Some(&0) || value.len() >= max {
        return Err(SetError::Malformed);
    }
    Ok(String::from_utf8_lossy(c_str(value)).into_owned())
}

impl StatusStore {
    /// The store of node `me`, its cluster log opened by process `pid` at `now`.
    pub fn new(me: &str, pid: u32, now: u32) -> StatusStore {
        StatusStore {
            me: me.to_string(),
            names: BTreeMap::new(),
            nodes: BTreeMap::new(),
            rrd: BTreeMap::new(),
            rrd_dump: None,
            ips: BTreeMap::new(),
            log: ClusterLog::start(me, pid, now),
            generation: 0,
        }
    }

    /// This node's name.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The cluster's node list (id, name). Values of nodes that stay are kept.
    pub fn set_nodes(&mut self, nodes: impl IntoIterator<Item = (u32, String)>) {
        self.names = nodes.into_iter().collect();
    }

    /// The name of node `id`, if the node list has it.
    pub fn name_of(&self, id: u32) -> Option<&str> {
        self.names.get(&id).map(String::as_str)
    }

    /// `SET_STATUS` of `key` to `value` by this node at `now`.
    pub fn set_local(&mut self, key: &str, value: &[u8], now: u32) -> Result<Stored, SetError> {
        if value.len() > MAX_STATUS_SIZE {
            return Err(SetError::TooBig);
        }
        let me = self.me.clone();
        self.set(&me, key, value, now)
    }

    /// An UPDATE of `key` from node `nodeid` at `now`, stored as pmxcfs stores it
    /// (`cfs_kvstore_node_set`): ignored from a node not in the node list, and
    /// malformed RRD updates or addresses are dropped.
    pub fn set_remote(&mut self, nodeid: u32, key: &str, value: &[u8], now: u32) -> Stored {
        let Some(name) = self.names.get(&nodeid).cloned() else {
            return Stored::Ignored;
        };
        self.set(&name, key, value, now).unwrap_or(Stored::Ignored)
    }

    /// Route `key` as pmxcfs does: `rrd/<k>` to the RRD updates (shared by all nodes),
    /// `nodeip` to the node addresses, anything else to `node`'s keys, where an empty
    /// value deletes the key.
    fn set(&mut self, node: &str, key: &str, value: &[u8], now: u32) -> Result<Stored, SetError> {
        if let Some(k) = key.strip_prefix("rrd/") {
            let data = terminated(value, MAX_RRD_SIZE)?;
            self.rrd.insert(k.to_string(), (data.clone(), now));
            return Ok(Stored::Rrd {
                key: k.to_string(),
                data,
            });
        }
        if key == "nodeip" {
            let ip = terminated(value, MAX_IP_SIZE)?;
            let changed = self.ips.get(node) != Some(&ip);
            self.ips.insert(node.to_string(), ip);
            return Ok(Stored::Ip(changed));
        }
        self.generation += 1;
        let keys = self.nodes.entry(node.to_string()).or_default();
        if value.is_empty() {
            keys.remove(key);
        } else if let Some(e) = keys.get_mut(key) {
            e.value = value.to_vec();
            e.version = e.version.wrapping_add(1);
        } else {
            let e = KvEntry {
                value: value.to_vec(),
                version: 0,
            };
            keys.insert(key.to_string(), e);
        }
        Ok(Stored::Key)
    }

    /// `GET_STATUS` of `key` on `node` (this node's when `node` is empty).
    pub fn get(&self, node: &str, key: &str) -> Option<Vec<u8>> {
        let node = if node.is_empty() { &self.me } else { node };
        self.nodes.get(node)?.get(key).map(|e| e.value.clone())
    }

    /// This node's own plain keys, which it sends again after every sync
    /// (`cfs_kvstore_sync`).
    pub fn own_entries(&self) -> Vec<(String, Vec<u8>)> {
        self.nodes
            .get(&self.me)
            .map(|keys| {
                keys.iter()
                    .map(|(k, e)| (k.clone(), e.value.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Moves whenever [`StatusStore::versions`] may answer differently.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The version of every key, by node, this node's first (`.version`'s `kvstore`).
    pub fn versions(&self) -> Vec<(String, Vec<(String, u32)>)> {
        let mut out: Vec<(String, Vec<(String, u32)>)> = vec![(self.me.clone(), Vec::new())];
        for (node, keys) in &self.nodes {
            let v: Vec<(String, u32)> = keys.iter().map(|(k, e)| (k.clone(), e.version)).collect();
            if *node == self.me {
                out[0].1 = v;
            } else {
                out.push((node.clone(), v));
            }
        }
        out
    }

    /// The address of `node`, if it published one.
    pub fn ip(&self, node: &str) -> Option<&str> {
        self.ips.get(node).map(String::as_str)
    }

    /// `.rrd`: one `<key>:<data>` line per update at most [`RRD_EXPIRY`] seconds old;
    /// older ones are dropped. A dump is served again for [`RRD_DUMP_CACHE`] seconds.
    pub fn rrd_dump(&mut self, now: u32) -> String {
        if let Some((at, s)) = &self.rrd_dump {
            if now.wrapping_sub(*at) < RRD_DUMP_CACHE {
                return s.clone();
            }
        }
        self.rrd
            .retain(|_, (_, t)| now.saturating_sub(*t) <= RRD_EXPIRY);
        let mut s = String::new();
        for (k, (data, _)) in &self.rrd {
            s.push_str(k);
            s.push(':');
            s.push_str(data);
            s.push('\n');
        }
        self.rrd_dump = Some((now, s.clone()));
        s
    }

    /// Every node's address, by name.
    pub fn ips(&self) -> &BTreeMap<String, String> {
        &self.ips
    }

    /// Log `msg` as this node's at `now` (pmxcfs's `clog_pack` with the next uid, then
    /// the insert), and return the entry to send.
    pub fn log_local(
        &mut self,
        ident: &str,
        tag: &str,
        pid: u32,
        priority: u8,
        now: u32,
        msg: &str,
    ) -> Result<Entry, ClogError> {
        self.log.add(ident, tag, pid, priority, now, msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_version_and_delete_as_pmxcfs() {
        let mut kv = StatusStore::new("n1", 1, 0);
        assert_eq!(kv.set_local("kv/a", b"x\0", 1), Ok(Stored::Key));
        assert_eq!(kv.get("", "kv/a"), Some(b"x\0".to_vec()));
        assert_eq!(kv.get("n1", "kv/a"), Some(b"x\0".to_vec()));
        kv.set_local("kv/a", b"y\0", 2).unwrap();
        assert_eq!(kv.versions(), vec![("n1".into(), vec![("kv/a".into(), 1)])]);
        let g = kv.generation();
        kv.set_local("rrd/pve-node-9.0/n1", b"1:2\0", 2).unwrap();
        assert_eq!(kv.generation(), g, "an RRD update is not a key");
        assert_eq!(kv.own_entries(), vec![("kv/a".into(), b"y\0".to_vec())]);
        kv.set_local("kv/a", b"", 3).unwrap();
        assert_eq!(kv.get("", "kv/a"), None);
        assert_eq!(kv.get("n2", "kv/a"), None);
        let big = vec![b'x'; MAX_STATUS_SIZE + 1];
        assert_eq!(kv.set_local("kv/b", &big, 4), Err(SetError::TooBig));
    }

    #[test]
    fn rrd_and_nodeip_are_routed_and_checked() {
        let mut kv = StatusStore::new("n1", 1, 0);
        assert_eq!(
            kv.set_local("rrd/pve-node-9.0/n1", b"123:4:5\0", 100),
            Ok(Stored::Rrd {
                key: "pve-node-9.0/n1".into(),
                data: "123:4:5".into()
            })
        );
        assert_eq!(kv.set_local("rrd/x", b"", 100), Err(SetError::Malformed));
        assert_eq!(
            kv.set_local("rrd/x", b"no-nul", 100),
            Err(SetError::Malformed)
        );
        assert_eq!(kv.get("", "rrd/pve-node-9.0/n1"), None, "not a plain key");
        assert_eq!(kv.rrd_dump(200), "pve-node-9.0/n1:123:4:5\n");
        kv.set_local("rrd/pve-vm-9.0/100", b"1:2\0", 201).unwrap();
        assert_eq!(
            kv.rrd_dump(201),
            "pve-node-9.0/n1:123:4:5\n",
            "cached for 2 s"
        );
        assert_eq!(kv.rrd_dump(202).lines().count(), 2);
        assert_eq!(kv.rrd_dump(450), "pve-vm-9.0/100:1:2\n", "older than 300 s");
        assert_eq!(
            kv.set_local("nodeip", b"10.0.0.1\0", 1),
            Ok(Stored::Ip(true))
        );
        assert_eq!(
            kv.set_local("nodeip", b"10.0.0.1\0", 2),
            Ok(Stored::Ip(false))
        );
        assert_eq!(kv.ip("n1"), Some("10.0.0.1"));
        assert_eq!(kv.set_local("nodeip", b"", 3), Err(SetError::Malformed));
    }

    #[test]
    fn remote_values_need_a_known_node() {
        let mut kv = StatusStore::new("n1", 1, 0);
        assert_eq!(kv.set_remote(2, "kv/a", b"x\0", 1), Stored::Ignored);
        kv.set_nodes([(1, "n1".to_string()), (2, "n2".to_string())]);
        assert_eq!(kv.set_remote(2, "kv/a", b"x\0", 1), Stored::Key);
        assert_eq!(kv.get("n2", "kv/a"), Some(b"x\0".to_vec()));
        assert_eq!(kv.get("", "kv/a"), None, "not this node's");
        assert_eq!(
            kv.set_remote(2, "nodeip", b"10.0.0.2\0", 1),
            Stored::Ip(true)
        );
        assert_eq!(kv.ip("n2"), Some("10.0.0.2"));
        assert_eq!(kv.set_remote(2, "nodeip", b"bad", 1), Stored::Ignored);
        assert_eq!(kv.versions()[1], ("n2".into(), vec![("kv/a".into(), 0)]));
        assert!(
            kv.own_entries().is_empty(),
            "only this node's own are resent"
        );
        // The node list changes; the values of a node that stays are kept.
        kv.set_nodes([(2, "n2".to_string())]);
        assert_eq!(kv.get("n2", "kv/a"), Some(b"x\0".to_vec()));
    }
}
