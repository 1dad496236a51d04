//! Virtual entries of the root directory: pmxcfs's function files (`.version`,
//! `.members`, `.vmlist`, `.clusterlog`) and the node symlinks (`local`, `qemu-server`,
//! `lxc`, `openvz`). They shadow database entries of the same name, as pmxcfs's plugs do.

use memdb::MemDb;

use super::kernel::FuseIno;
use super::status::{json_str, Status};
use pve_status::store::StatusStore;

/// FUSE inode numbers at and above this are virtual; database inodes stay far below.
pub const VIRT_BASE: u64 = 1 << 62;

/// Entries `.clusterlog` shows, newest first (pmxcfs's).
pub const CLUSTERLOG_ENTRIES: usize = 50;

/// What a virtual entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Virt {
    /// `.version`
    Version,
    /// `.members`
    Members,
    /// `.vmlist`
    Vmlist,
    /// `.clusterlog`
    Clusterlog,
    /// A symlink to `nodes/<nodename><suffix>`.
    Link(&'static str),
}

/// All virtual entries: (name, kind). Index + [`VIRT_BASE`] is the FUSE inode.
pub const ENTRIES: &[(&str, Virt)] = &[
    (".version", Virt::Version),
    (".members", Virt::Members),
    (".vmlist", Virt::Vmlist),
    (".clusterlog", Virt::Clusterlog),
    ("local", Virt::Link("")),
    ("qemu-server", Virt::Link("/qemu-server")),
    ("lxc", Virt::Link("/lxc")),
    ("openvz", Virt::Link("/openvz")),
];

/// The virtual entry called `name` in the root, with its FUSE inode.
pub fn by_name(name: &str) -> Option<(FuseIno, Virt)> {
    ENTRIES
        .iter()
        .position(|(n, _)| *n == name)
        .map(|i| (FuseIno(VIRT_BASE + i as u64), ENTRIES[i].1))
}

/// The virtual entry with FUSE inode `ino`, with its name.
pub fn by_ino(ino: FuseIno) -> Option<(&'static str, Virt)> {
    let i = ino.0.checked_sub(VIRT_BASE)? as usize;
    ENTRIES.get(i).map(|(n, v)| (*n, *v))
}

/// Content of a virtual file, or the target of a virtual link.
pub fn content(v: Virt, status: &Status, kv: &mut StatusStore, db: &MemDb) -> String {
    match v {
        Virt::Version => status.version_json(db.vmlist_version(), &kv.versions()),
        Virt::Members => status.members_json(),
        Virt::Vmlist => vmlist_json(db),
        Virt::Clusterlog => kv.log.dump_json(CLUSTERLOG_ENTRIES, None),
        Virt::Link(suffix) => format!("nodes/{}{suffix}", status.nodename),
    }
}

/// `.vmlist` in pmxcfs's layout.
pub fn vmlist_json(db: &MemDb) -> String {
    let vms = db.vms();
    let version = db.vmlist_version();
    if vms.is_empty() {
        return format!("{{\n\"version\": {version}\n\n}}\n");
    }
    let rows: Vec<String> = vms
        .iter()
        .map(|(id, v)| {
            format!(
                "\"{id}\": {{ \"node\": {}, \"type\": \"{}\", \"version\": {} }}",
                json_str(&v.node),
                v.ty.as_str(),
                v.version
            )
        })
        .collect();
    format!(
        "{{\n\"version\": {version},\n\"ids\": {{\n{}}}\n\n}}\n",
        rows.join(",\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use memdb::{Limits, NullStore, Op, OpCtx};

    #[test]
    fn vmlist_parses_as_json() {
        let mut db = MemDb::empty(Box::new(NullStore), Limits::default());
        let c = OpCtx { writer: 0, now: 1 };
        assert!(serde_json::from_str::<serde_json::Value>(&vmlist_json(&db)).is_ok());
        for p in ["nodes", "nodes/n1", "nodes/n1/qemu-server", "nodes/n1/lxc"] {
            db.apply(&Op::Mkdir { path: p.into() }, c).unwrap();
        }
        db.apply(
            &Op::Create {
                path: "nodes/n1/qemu-server/100.conf".into(),
            },
            c,
        )
        .unwrap();
        db.apply(
            &Op::Create {
                path: "nodes/n1/lxc/101.conf".into(),
            },
            c,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&vmlist_json(&db)).unwrap();
        assert_eq!(v["ids"]["100"]["type"], "qemu");
        assert_eq!(v["ids"]["101"]["node"], "n1");
        assert_eq!(v["version"], 2);
    }

    #[test]
    fn lookup_both_ways() {
        let (ino, v) = by_name("local").unwrap();
        assert_eq!(by_ino(ino), Some(("local", v)));
        assert!(by_name("nodes").is_none());
        assert!(by_ino(FuseIno(5)).is_none());
    }
}
