//! The status kvstore's state, as pmxcfs keeps it (`status.c`): every node's key/value
//! pairs (`SET_STATUS`/`GET_STATUS`: `tasklist`, `kv/*`), the RRD updates (`rrd/*`) and
//! the node addresses (`nodeip`). Nothing is persisted. Replication to the other nodes
//! (the kvstore CPG group) is not implemented yet: this node's own values are served
//! locally, and another node's are empty.

use std::collections::BTreeMap;

use nix::errno::Errno;
use parking_lot::Mutex;

/// Largest value `SET_STATUS` takes (`CFS_MAX_STATUS_SIZE`); larger ones get EFBIG.
pub const MAX_STATUS_SIZE: usize = 32 * 1024;

/// Largest RRD update, terminating NUL included (pmxcfs refuses 4,096 bytes and more).
pub const MAX_RRD_SIZE: usize = 4096;

/// Largest node address, terminating NUL included.
pub const MAX_IP_SIZE: usize = 256;

/// Seconds after which an RRD update is left out of the dump (`rrd_entry_is_old`).
pub const RRD_EXPIRY: u32 = 300;

/// One key's value and its version: 0 when created, one more at each overwrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    /// The bytes as the setter sent them, its terminating NUL included.
    pub value: Vec<u8>,
    /// Overwrites so far.
    pub version: u32,
}

#[derive(Debug, Default)]
struct Inner {
    /// node → key → entry.
    nodes: BTreeMap<String, BTreeMap<String, KvEntry>>,
    /// rrd key → (data without its NUL, time of the update).
    rrd: BTreeMap<String, (Vec<u8>, u32)>,
    /// node → address.
    ips: BTreeMap<String, String>,
}

/// The kvstore of this node.
#[derive(Debug)]
pub struct KvStore {
    me: String,
    inner: Mutex<Inner>,
}

/// What a `SET_STATUS` changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// A plain key was set or deleted.
    Key,
    /// An RRD update was stored.
    Rrd,
    /// This node's address was set; `true` if it changed (the cluster info moves).
    Ip(bool),
}

/// A C string: the bytes up to the first NUL (all of them if there is none).
fn c_str(b: &[u8]) -> &[u8] {
    b.iter().position(|c| *c == 0).map_or(b, |n| &b[..n])
}

impl KvStore {
    /// The kvstore of node `me`.
    pub fn new(me: &str) -> KvStore {
        KvStore {
            me: me.to_string(),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// `SET_STATUS` of `key` to `value` by this node at `now`, routed as pmxcfs routes
    /// it: `rrd/<k>` to the RRD updates, `nodeip` to the node addresses, anything else
    /// to this node's keys, where an empty value deletes the key.
    pub fn set_local(&self, key: &str, value: &[u8], now: u32) -> Result<Stored, Errno> {
        if value.len() > MAX_STATUS_SIZE {
            return Err(Errno::EFBIG);
        }
        let mut g = self.inner.lock();
        if let Some(k) = key.strip_prefix("rrd/") {
            // pmxcfs refuses an update that is not NUL-terminated or too long, and so an
            // empty one, with ENOMEM.
            if value.last() != Some(&0) || value.len() >= MAX_RRD_SIZE {
                return Err(Errno::ENOMEM);
            }
            g.rrd.insert(k.to_string(), (c_str(value).to_vec(), now));
            return Ok(Stored::Rrd);
        }
        if key == "nodeip" {
            if value.last() != Some(&0) || value.len() >= MAX_IP_SIZE {
                return Err(Errno::ENOMEM);
            }
            let ip = String::from_utf8_lossy(c_str(value)).into_owned();
            let me = self.me.clone();
            let changed = g.ips.get(&me) != Some(&ip);
            g.ips.insert(me, ip);
            return Ok(Stored::Ip(changed));
        }
        let me = self.me.clone();
        let keys = g.nodes.entry(me).or_default();
        if value.is_empty() {
            keys.remove(key);
        } else {
            match keys.get_mut(key) {
                Some(e) => {
                    e.value = value.to_vec();
                    e.version = e.version.wrapping_add(1);
                }
                None => {
                    keys.insert(
                        key.to_string(),
                        KvEntry {
                            value: value.to_vec(),
                            version: 0,
                        },
                    );
                }
            }
        }
        Ok(Stored::Key)
    }

    /// `GET_STATUS` of `key` on `node` (this node's when `node` is empty).
    pub fn get(&self, node: &str, key: &str) -> Option<Vec<u8>> {
        let node = if node.is_empty() { &self.me } else { node };
        let g = self.inner.lock();
        g.nodes.get(node)?.get(key).map(|e| e.value.clone())
    }

    /// The version of every key, by node, this node's first (`.version`'s `kvstore`).
    pub fn versions(&self) -> Vec<(String, Vec<(String, u32)>)> {
        let g = self.inner.lock();
        let mut out: Vec<(String, Vec<(String, u32)>)> = vec![(self.me.clone(), Vec::new())];
        for (node, keys) in &g.nodes {
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
    pub fn ip(&self, node: &str) -> Option<String> {
        self.inner.lock().ips.get(node).cloned()
    }

    /// `.rrd`: one `<key>:<data>` line per update at most [`RRD_EXPIRY`] seconds old;
    /// older ones are dropped.
    pub fn rrd_dump(&self, now: u32) -> String {
        let mut g = self.inner.lock();
        g.rrd
            .retain(|_, (_, t)| now.saturating_sub(*t) <= RRD_EXPIRY);
        let mut s = String::new();
        for (k, (data, _)) in &g.rrd {
            s.push_str(k);
            s.push(':');
            s.push_str(&String::from_utf8_lossy(data));
            s.push('\n');
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_version_and_delete_as_pmxcfs() {
        let kv = KvStore::new("n1");
        assert_eq!(kv.set_local("kv/a", b"x\0", 1), Ok(Stored::Key));
        assert_eq!(kv.get("", "kv/a"), Some(b"x\0".to_vec()));
        assert_eq!(kv.get("n1", "kv/a"), Some(b"x\0".to_vec()));
        kv.set_local("kv/a", b"y\0", 2).unwrap();
        assert_eq!(kv.versions(), vec![("n1".into(), vec![("kv/a".into(), 1)])]);
        kv.set_local("kv/a", b"", 3).unwrap();
        assert_eq!(kv.get("", "kv/a"), None);
        assert_eq!(kv.get("n2", "kv/a"), None);
        let big = vec![b'x'; MAX_STATUS_SIZE + 1];
        assert_eq!(kv.set_local("kv/b", &big, 4), Err(Errno::EFBIG));
    }

    #[test]
    fn rrd_and_nodeip_are_routed_and_checked() {
        let kv = KvStore::new("n1");
        assert_eq!(
            kv.set_local("rrd/pve-node-9.0/n1", b"123:4:5\0", 100),
            Ok(Stored::Rrd)
        );
        assert_eq!(kv.set_local("rrd/x", b"", 100), Err(Errno::ENOMEM));
        assert_eq!(kv.set_local("rrd/x", b"no-nul", 100), Err(Errno::ENOMEM));
        assert_eq!(kv.get("", "rrd/pve-node-9.0/n1"), None, "not a plain key");
        assert_eq!(kv.rrd_dump(200), "pve-node-9.0/n1:123:4:5\n");
        assert_eq!(kv.rrd_dump(401), "", "older than 300 s");
        assert_eq!(
            kv.set_local("nodeip", b"10.0.0.1\0", 1),
            Ok(Stored::Ip(true))
        );
        assert_eq!(
            kv.set_local("nodeip", b"10.0.0.1\0", 2),
            Ok(Stored::Ip(false))
        );
        assert_eq!(kv.ip("n1").as_deref(), Some("10.0.0.1"));
        assert_eq!(kv.set_local("nodeip", b"", 3), Err(Errno::ENOMEM));
    }
}
