//! Index of guest configs (`nodes/<node>/{qemu-server,lxc,openvz}/<vmid>.conf`), which
//! backs `.vmlist` and pmxcfs's rule that a VMID exists only once in the cluster.

use std::collections::BTreeMap;

use nix::errno::Errno;

use super::op::Applied;
use super::paths::{vm_config, VmType};
use super::MemDb;

/// One registered guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmInfo {
    /// Node whose directory holds the config.
    pub node: String,
    /// Guest type.
    pub ty: VmType,
    /// Value of the list's change counter when this guest was (re)registered.
    pub version: u32,
}

impl VmInfo {
    /// The path of guest `vmid`'s config.
    pub fn path(&self, vmid: u32) -> String {
        format!("nodes/{}/{}/{vmid}.conf", self.node, self.ty.dir())
    }
}

/// One change pmxcfs makes to its guest list after applying an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum VmChange {
    /// `vmlist_register_vm`: (re)register, replacing whatever the VMID had.
    Register(u32, String, VmType),
    /// `vmlist_delete_vm`: drop the VMID, whoever it was registered to.
    Forget(u32),
}

/// VMID → guest, plus a change counter.
#[derive(Debug, Default)]
pub(super) struct VmIndex {
    vms: BTreeMap<u32, VmInfo>,
    version: u32,
}

/// The `(vmid, node, type)` of a config path.
pub(super) fn vm_of(path: &str) -> Option<(u32, &str, VmType)> {
    vm_config(path).map(|(n, t, id)| (id, n, t))
}

impl VmIndex {
    pub(super) fn all(&self) -> &BTreeMap<u32, VmInfo> {
        &self.vms
    }

    pub(super) fn version(&self) -> u32 {
        self.version
    }

    /// EEXIST if `path` is a guest config whose VMID is registered for another node or
    /// type; `moving` is the config being renamed (moving a guest between nodes is how
    /// migration works, so its own VMID does not conflict).
    pub(super) fn check_free(
        &self,
        path: &str,
        moving: Option<(u32, &str, VmType)>,
    ) -> Result<(), Errno> {
        let Some((id, node, ty)) = vm_of(path) else {
            return Ok(());
        };
        if moving.is_some_and(|(mid, _, _)| mid == id) {
            return Ok(());
        }
        match self.vms.get(&id) {
            Some(v) if v.node != node || v.ty != ty => Err(Errno::EEXIST),
            _ => Ok(()),
        }
    }

    /// pmxcfs's `vmlist_different_vm_exists`: the VMID is registered for another node
    /// or type.
    pub(super) fn different_exists(&self, id: u32, node: &str, ty: VmType) -> bool {
        self.vms
            .get(&id)
            .is_some_and(|v| v.node != node || v.ty != ty)
    }

    /// Apply pmxcfs's changes in order; every one counts as a change of the list, as
    /// pmxcfs bumps its list version on every registration and removal.
    pub(super) fn apply_pmxcfs(&mut self, changes: &[VmChange]) -> bool {
        for c in changes {
            self.version += 1;
            match c {
                VmChange::Register(id, node, ty) => {
                    self.vms.insert(
                        *id,
                        VmInfo {
                            node: node.clone(),
                            ty: *ty,
                            version: self.version,
                        },
                    );
                }
                VmChange::Forget(id) => {
                    self.vms.remove(id);
                }
            }
        }
        !changes.is_empty()
    }

    /// pmxcfs's `memdb_recreate_vmlist`: regular files only, node names of any length.
    /// pmxcfs refuses a tree with a duplicate VMID (it fails to start, or enters error
    /// mode after a sync); here the first in name order is kept.
    pub(super) fn rebuild_pmxcfs(db: &MemDb) -> VmIndex {
        let mut idx = VmIndex::default();
        let Ok(nodes) = db.resolve("nodes") else {
            return idx;
        };
        for (node, ino) in &nodes.children {
            let Some(n) = db.get(*ino) else { continue };
            if !n.is_dir() || !crate::pmxcfs::valid_nodename(node) {
                continue;
            }
            for ty in [VmType::Qemu, VmType::OpenVz, VmType::Lxc] {
                let Some(d) = n.children.get(ty.dir()).and_then(|i| db.get(*i)) else {
                    continue;
                };
                for (name, f) in &d.children {
                    let is_file = db.get(*f).is_some_and(|e| !e.is_dir());
                    if let (true, Some(id)) = (is_file, crate::pmxcfs::vmid_of_name(name)) {
                        idx.version += 1;
                        let version = idx.version;
                        idx.vms.entry(id).or_insert(VmInfo {
                            node: node.clone(),
                            ty,
                            version,
                        });
                    }
                }
            }
        }
        idx
    }

    pub(super) fn rebuild(db: &MemDb) -> VmIndex {
        let mut idx = VmIndex::default();
        let Ok(nodes) = db.resolve("nodes") else {
            return idx;
        };
        for (node, ino) in &nodes.children {
            let Some(n) = db.get(*ino) else { continue };
            for dir in ["qemu-server", "lxc", "openvz"] {
                let Some(d) = n.children.get(dir).and_then(|i| db.get(*i)) else {
                    continue;
                };
                for name in d.children.keys() {
                    let path = format!("nodes/{node}/{dir}/{name}");
                    if let Some((id, node, ty)) = vm_of(&path) {
                        idx.version += 1;
                        let version = idx.version;
                        idx.vms.entry(id).or_insert(VmInfo {
                            node: node.to_string(),
                            ty,
                            version,
                        });
                    }
                }
            }
        }
        idx
    }

    /// Bring the index up to date after `op` was installed; true if it changed.
    ///
    /// `moved_dir` says whether the operation moved or removed a directory, which can
    /// change many configs at once and is handled by a rebuild.
    pub(super) fn update_after(&mut self, ap: &Applied, db: &MemDb, moved_dir: bool) -> bool {
        let touches_nodes = ap.paths.iter().any(|p| p.starts_with("nodes/"));
        if !touches_nodes {
            return false;
        }
        let structural = moved_dir;
        let before = self.vms.clone();
        if structural {
            let fresh = VmIndex::rebuild(db);
            self.vms = fresh.vms;
        } else {
            for p in &ap.paths {
                if let Some((id, node, ty)) = vm_of(p) {
                    if db.resolve(p).is_ok() {
                        let v = self.version + 1;
                        let e = self.vms.entry(id).or_insert(VmInfo {
                            node: node.to_string(),
                            ty,
                            version: v,
                        });
                        if e.node != node || e.ty != ty {
                            *e = VmInfo {
                                node: node.to_string(),
                                ty,
                                version: v,
                            };
                        }
                    } else if self
                        .vms
                        .get(&id)
                        .is_some_and(|e| e.node == node && e.ty == ty)
                    {
                        self.vms.remove(&id);
                    }
                }
            }
        }
        let changed = before != self.vms;
        if changed {
            self.version += 1;
        }
        changed
    }
}
