//! Node status shared by the filesystem, the virtual files and `pmxfs status`: node
//! name, mode, quorum, members, and the per-path change counters of `.version`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::Serialize;

pub use pmxfs_client::observed::OBSERVED_PATHS;

/// Local (pmxcfs `-l`) or clustered operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// No corosync; always quorate.
    Local,
    /// Replicated over corosync.
    Cluster,
}

/// A cluster member as `.members` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    /// Node name.
    pub name: String,
    /// Corosync node id.
    pub id: u32,
    /// Whether it is in the current membership.
    pub online: bool,
    /// Its address, if known.
    pub ip: Option<String>,
}

/// This node in the kvstore group, for `pmxfs status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KvGroupView {
    /// The group machine's mode ("Synced", …; empty before joining).
    pub mode: String,
    /// The members as (node id, pid).
    pub members: Vec<(u32, u32)>,
}

/// What corosync and the kvstore say of the cluster.
#[derive(Debug, Default)]
struct Cluster {
    name: Option<String>,
    nodes: Vec<(String, u32)>,
    online: Vec<u32>,
    ips: BTreeMap<String, String>,
}

/// Shared, lock-light node status.
#[derive(Debug)]
pub struct Status {
    /// This node's name.
    pub nodename: String,
    /// Operation mode.
    pub mode: Mode,
    /// Why this mode (pmxcfs decides it from the database).
    pub mode_reason: &'static str,
    /// Daemon start time (seconds); Perl drops its caches when it changes.
    pub start_time: u64,
    quorate: AtomicBool,
    clinfo_version: AtomicU32,
    generation: AtomicU64,
    cluster: Mutex<Cluster>,
    kvstore: Mutex<KvGroupView>,
    counters: Mutex<HashMap<&'static str, u32>>,
}

impl Status {
    /// Status for a node starting now.
    pub fn new(nodename: String, mode: Mode, mode_reason: &'static str) -> Status {
        let start_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Status {
            nodename,
            mode,
            mode_reason,
            start_time,
            quorate: AtomicBool::new(mode == Mode::Local),
            clinfo_version: AtomicU32::new(0),
            generation: AtomicU64::new(0),
            cluster: Mutex::new(Cluster::default()),
            kvstore: Mutex::new(KvGroupView::default()),
            counters: Mutex::new(OBSERVED_PATHS.iter().map(|p| (*p, 0)).collect()),
        }
    }

    /// Whether writes are allowed.
    pub fn quorate(&self) -> bool {
        self.quorate.load(Ordering::Acquire)
    }

    /// Set the quorum state (cluster mode).
    pub fn set_quorate(&self, q: bool) {
        self.quorate.store(q, Ordering::Release);
    }

    /// Replace the cluster's name and node list (name, id), as corosync's cmap has
    /// them; bumps the clinfo counter.
    pub fn set_nodelist(&self, cluster_name: Option<String>, nodes: Vec<(String, u32)>) {
        let mut c = self.cluster.lock();
        c.name = cluster_name;
        c.nodes = nodes;
        self.bump_clinfo_version();
    }

    /// How many nodes the published node list has (0 before cmap was read).
    pub fn node_count(&self) -> usize {
        self.cluster.lock().nodes.len()
    }

    /// Publish this node's view of the kvstore group.
    pub fn set_kvstore(&self, view: KvGroupView) {
        *self.kvstore.lock() = view;
    }

    /// This node's view of the kvstore group.
    pub fn kvstore(&self) -> KvGroupView {
        self.kvstore.lock().clone()
    }

    /// The nodes of the kvstore group's membership (`online`); bumps the clinfo counter.
    pub fn set_online(&self, ids: Vec<u32>) {
        self.cluster.lock().online = ids;
        self.bump_clinfo_version();
    }

    /// The node ids of the kvstore group's membership: every node that runs pmxcfs or
    /// pmxfs, whatever its tree protocol, since both share that group.
    pub fn online(&self) -> Vec<u32> {
        self.cluster.lock().online.clone()
    }

    /// The nodes' addresses from the kvstore (`ip`); bumps the clinfo counter if they
    /// changed.
    pub fn set_ips(&self, ips: BTreeMap<String, String>) {
        let mut c = self.cluster.lock();
        if c.ips != ips {
            c.ips = ips;
            self.bump_clinfo_version();
        }
    }

    /// Current members: the node list, with the group's online nodes and the nodes'
    /// addresses; a member missing from the node list is named by its id.
    pub fn members(&self) -> Vec<Member> {
        let c = self.cluster.lock();
        let mut out: Vec<Member> = c
            .nodes
            .iter()
            .map(|(name, id)| Member {
                name: name.clone(),
                id: *id,
                online: c.online.contains(id),
                ip: c.ips.get(name).cloned(),
            })
            .collect();
        for id in &c.online {
            if !out.iter().any(|m| m.id == *id) {
                let name = format!("node{id}");
                out.push(Member {
                    ip: c.ips.get(&name).cloned(),
                    name,
                    id: *id,
                    online: true,
                });
            }
        }
        out.sort_by_key(|m| m.id);
        out
    }

    /// Record that `path` changed (pmxcfs `record_memdb_change`).
    pub fn record_change(&self, path: &str) {
        if let Some(c) = self.counters.lock().get_mut(path) {
            *c = c.wrapping_add(1);
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Record that everything may have changed (pmxcfs `record_memdb_reload`).
    pub fn record_reload(&self) {
        for c in self.counters.lock().values_mut() {
            *c = c.wrapping_add(1);
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn bump_clinfo_version(&self) {
        self.clinfo_version.fetch_add(1, Ordering::AcqRel);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Moves whenever a change counter or the cluster info version moves: `.version`
    /// built at one generation is valid until the next.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// `.version` content (pmxcfs's `cfs_create_version_msg`); `kvstore` is each node's
    /// key versions, this node's first.
    pub fn version_json(
        &self,
        vmlist_version: u32,
        kvstore: &[(String, Vec<(String, u32)>)],
    ) -> String {
        let counters = self.counters.lock();
        let mut s = String::from("{\n");
        s += &format!("\"starttime\": {},\n", self.start_time);
        s += &format!(
            "\"clinfo\": {},\n",
            self.clinfo_version.load(Ordering::Acquire)
        );
        s += &format!("\"vmlist\": {vmlist_version},\n");
        for p in OBSERVED_PATHS {
            s += &format!("\"{p}\": {},\n", counters.get(p).copied().unwrap_or(0));
        }
        s += "\"kvstore\": {\n";
        let nodes: Vec<String> = kvstore
            .iter()
            .map(|(node, keys)| {
                let keys: Vec<String> = keys
                    .iter()
                    .map(|(k, v)| format!("{}: {v}", json_str(k)))
                    .collect();
                format!("{}: {{\n{}}}\n", json_str(node), keys.join(",\n"))
            })
            .collect();
        s += &nodes.join(",\n");
        s += "}\n}\n";
        s
    }

    /// Count a change of the cluster information (members, names, addresses).
    pub fn bump_clinfo(&self) {
        self.bump_clinfo_version();
    }

    /// `.members` content, in pmxcfs's layout.
    pub fn members_json(&self) -> String {
        let members = self.members();
        let version = self.clinfo_version.load(Ordering::Acquire);
        let mut s = String::from("{\n");
        s += &format!("\"nodename\": {},\n", json_str(&self.nodename));
        if members.is_empty() {
            s += &format!("\"version\": {version}\n}}\n");
            return s;
        }
        s += &format!("\"version\": {version},\n");
        let name = self.cluster.lock().name.clone().unwrap_or_default();
        s += &format!(
            "\"cluster\": {{ \"name\": {}, \"version\": 1, \"nodes\": {}, \"quorate\": {} }},\n",
            json_str(&name),
            members.len(),
            u8::from(self.quorate())
        );
        s += "\"nodelist\": {\n";
        let rows: Vec<String> = members
            .iter()
            .map(|m| {
                let ip =
                    m.ip.as_ref()
                        .map(|ip| format!(", \"ip\": {}", json_str(ip)))
                        .unwrap_or_default();
                format!(
                    "  {}: {{ \"id\": {}, \"online\": {}{ip}}}",
                    json_str(&m.name),
                    m.id,
                    u8::from(m.online)
                )
            })
            .collect();
        s += &rows.join(",\n");
        s += "\n  }\n}\n";
        s
    }
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_counts_observed_paths() {
        let st = Status::new("n1".into(), Mode::Local, "test");
        st.record_change("storage.cfg");
        st.record_change("not-observed");
        st.record_reload();
        let kv = vec![("n1".to_string(), vec![("tasklist".to_string(), 2)])];
        let text = st.version_json(3, &kv);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["kvstore"]["n1"]["tasklist"], 2);
        assert!(
            text.ends_with("\"kvstore\": {\n\"n1\": {\n\"tasklist\": 2}\n}\n}\n"),
            "{text}"
        );
        assert_eq!(v["storage.cfg"], 2);
        assert_eq!(v["user.cfg"], 1);
        assert_eq!(v["vmlist"], 3);
        assert!(v.get("not-observed").is_none());
        assert_eq!(OBSERVED_PATHS.len(), 43);
    }

    #[test]
    fn members_local_and_cluster() {
        let st = Status::new("n1".into(), Mode::Local, "test");
        assert_eq!(
            st.members_json(),
            "{\n\"nodename\": \"n1\",\n\"version\": 0\n}\n"
        );
        st.set_nodelist(Some("c".into()), vec![("n1".into(), 1), ("n2".into(), 2)]);
        st.set_online(vec![1, 3]);
        st.set_ips([("n1".to_string(), "10.0.0.1".to_string())].into());
        let v: serde_json::Value = serde_json::from_str(&st.members_json()).unwrap();
        assert_eq!(v["cluster"]["quorate"], 1);
        assert_eq!(v["nodelist"]["n2"]["online"], 0);
        assert_eq!(v["nodelist"]["n1"]["ip"], "10.0.0.1");
        assert!(v["nodelist"]["n2"].get("ip").is_none());
        assert_eq!(
            v["nodelist"]["node3"]["online"], 1,
            "online, not in the node list"
        );
        assert_eq!(v["version"], 3);
    }
}
