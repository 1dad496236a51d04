//! [`Dialect::Pmxcfs`](crate::Dialect::Pmxcfs): planning an operation with exactly the
//! rules of pmxcfs 9.1.6's `memdb.c` (`memdb_pwrite`, `memdb_mkdir`, `memdb_delete`,
//! `memdb_rename`, `memdb_mtime`) and its vmlist checks, so that a node applying the
//! operations a pmxcfs cluster delivers reaches the tree every pmxcfs member holds.
//!
//! Paths are read as pmxcfs reads them: glib's dirname/basename of the path with its
//! trailing slashes stripped for the parent and the new name, and a walk that skips
//! empty components for an existing entry.

use std::sync::Arc;

use nix::errno::Errno;

use crate::entry::{Entry, Kind, RootVersion, ROOT_INODE};
use crate::op::{Applied, Change, LockEvent, Op, OpCtx};
use crate::paths::VmType;
use crate::store::Txn;
use crate::vmindex::VmChange;
use crate::MemDb;

/// `MEMDB_MAX_FILE_SIZE`: a write ending beyond it is EFBIG, whatever [`crate::Limits`]
/// says (pmxcfs has no other limit: no inode count, no total size).
pub(crate) const MAX_FILE_SIZE: u64 = 1024 * 1024;

/// The directory whose direct subdirectories are locks for `memdb_mkdir`/`memdb_mtime`.
const LOCK_DIR: &str = "priv/lock";

/// What applying a planned operation does.
pub(crate) struct Plan {
    /// What to persist and install.
    pub txn: Txn,
    /// What to report.
    pub applied: Applied,
    /// The guest list's changes, in order.
    pub vms: Vec<VmChange>,
    /// Refuse with this after committing `txn`: pmxcfs changed the tree and still
    /// failed the operation (see `Dialect`, rename of a non-empty directory).
    pub refuse: Option<Errno>,
}

/// glib's `g_path_get_dirname`.
fn dirname(p: &str) -> &str {
    let Some(i) = p.rfind('/') else {
        return ".";
    };
    let b = p.as_bytes();
    let mut end = i;
    while end > 0 && b[end] == b'/' {
        end -= 1;
    }
    &p[..=end]
}

/// glib's `g_path_get_basename` of a path without trailing slashes.
fn basename(p: &str) -> &str {
    if p.is_empty() {
        return ".";
    }
    match p.rfind('/') {
        Some(i) => &p[i + 1..],
        None => p,
    }
}

/// `split_path`: the parent directory and the name an operation on `path` uses.
pub(crate) fn split(path: &str) -> (&str, &str) {
    let p = path.trim_end_matches('/');
    (dirname(p), basename(p))
}

/// `path_is_lockdir`: anything below `priv/lock/` (at any depth).
pub(crate) fn path_is_lockdir(path: &str) -> bool {
    path.trim_start_matches('/')
        .strip_prefix("priv/lock/")
        .is_some_and(|rest| !rest.is_empty())
}

/// `valid_nodename`: letters, digits and inner hyphens, of any length.
pub(crate) fn valid_nodename(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.iter()
            .enumerate()
            .all(|(i, c)| c.is_ascii_alphanumeric() || (*c == b'-' && i != 0 && i != b.len() - 1))
}

/// `name_is_vm_config`: `<vmid>.conf` with a VMID of 1..=u32::MAX without leading zero.
pub(crate) fn vmid_of_name(name: &str) -> Option<u32> {
    let digits = name.bytes().take_while(u8::is_ascii_digit).count();
    let (id, rest) = name.split_at(digits);
    if rest != ".conf" || !id.starts_with(|c: char| ('1'..='9').contains(&c)) {
        return None;
    }
    id.parse().ok()
}

/// `path_contain_vm_config`: the VMID, node and type of a guest config path.
fn vm_of(path: &str) -> Option<(u32, &str, VmType)> {
    let (dir, base) = split(path);
    let id = vmid_of_name(base)?;
    let (node, sub) = dir.strip_prefix("nodes/")?.split_once('/')?;
    if !valid_nodename(node) {
        return None;
    }
    let ty = match sub {
        "qemu-server" => VmType::Qemu,
        "openvz" => VmType::OpenVz,
        "lxc" => VmType::Lxc,
        _ => return None,
    };
    Some((id, node, ty))
}

/// pmxcfs refuses these last components with EACCES.
fn is_dot_name(base: &str) -> bool {
    base.is_empty() || base == "." || base == ".."
}

impl MemDb {
    /// `memdb_lookup_path`: the entry at `path` and the directory it was looked up in
    /// (`None` for the root). A component under a file, or missing, is "no entry".
    pub(crate) fn lookup_c(&self, path: &str) -> (Option<&Entry>, Option<&Entry>) {
        let mut cur = &self.entries[&ROOT_INODE];
        if path.is_empty() || path == "." || path == "/" {
            return (Some(cur), None);
        }
        let mut parent = None;
        for name in path.split('/').filter(|n| !n.is_empty()) {
            parent = Some(cur);
            match cur.children.get(name).and_then(|i| self.entries.get(i)) {
                Some(e) if cur.is_dir() => cur = e,
                _ => return (None, parent),
            }
        }
        (Some(cur), parent)
    }

    /// The parent directory an operation creating or changing `path` works in, and the
    /// name: ENOENT, ENOTDIR and EACCES as `memdb_mkdir`, `memdb_pwrite` and
    /// `memdb_mtime` check them, in their order.
    fn parent_c<'a>(&self, path: &'a str) -> Result<(&Entry, &'a str, &'a str), Errno> {
        let (dir, base) = split(path);
        let parent = self.lookup_c(dir).0.ok_or(Errno::ENOENT)?;
        if !parent.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        if is_dot_name(base) {
            return Err(Errno::EACCES);
        }
        Ok((parent, dir, base))
    }

    /// Whether `inode` is `dir` or lies below it.
    fn within(&self, mut inode: crate::Inode, dir: crate::Inode) -> bool {
        loop {
            if inode == dir {
                return true;
            }
            if inode == ROOT_INODE {
                return false;
            }
            match self.entries.get(&inode) {
                Some(e) => inode = e.row.parent,
                None => return false,
            }
        }
    }

    /// Plan `op` as pmxcfs applies it; `UnlockRequest`/`Unlock` are the caller's.
    pub(crate) fn plan_pmxcfs(&self, op: &Op, ctx: OpCtx) -> Result<Plan, Errno> {
        let root = RootVersion {
            version: self.root.version + 1,
            writer: ctx.writer,
            mtime: ctx.now,
        };
        let mut plan = Plan {
            txn: Txn {
                root,
                ..Txn::default()
            },
            applied: Applied::default(),
            vms: Vec::new(),
            refuse: None,
        };
        match op {
            Op::Create { path } => self.pwrite_c(path, 0, &[], false, true, root, &mut plan)?,
            Op::Write {
                path,
                offset,
                data,
                truncate,
            } => self.pwrite_c(path, *offset, data, *truncate, false, root, &mut plan)?,
            Op::Mkdir { path } => {
                let (parent, dir, base) = self.parent_c(path)?;
                if parent.children.contains_key(base) {
                    return Err(Errno::EEXIST);
                }
                plan.txn
                    .upserts
                    .push(self.new_row(parent.row.inode, base, Kind::Dir, root));
                let ap = &mut plan.applied;
                ap.changes.push(Change::Name {
                    parent: parent.row.inode,
                    name: base.to_string(),
                });
                ap.paths.push(path.clone());
                if dir == LOCK_DIR {
                    ap.lock = Some(LockEvent::Acquired(base.to_string()));
                }
            }
            Op::Delete { path } => {
                let (e, parent) = self.lookup_c(path);
                let e = e.ok_or(Errno::ENOENT)?;
                if parent.is_none() {
                    return Err(Errno::EACCES);
                }
                if e.is_dir() && !e.children.is_empty() {
                    return Err(Errno::ENOTEMPTY);
                }
                self.remove_c(e, &mut plan.txn, &mut plan.applied);
                plan.applied.paths.push(path.clone());
                if e.is_dir() && split(path).0 == LOCK_DIR {
                    plan.applied.lock = Some(LockEvent::Released(e.row.name.clone()));
                }
                // Whatever the entry is (a directory named like a config too), and
                // whoever the VMID is registered to.
                if let Some((id, _, _)) = vm_of(path) {
                    plan.vms.push(VmChange::Forget(id));
                }
            }
            Op::Rename { from, to } => self.rename_c(from, to, root, &mut plan)?,
            Op::Mtime { path, mtime } => {
                let (parent, dir, base) = self.parent_c(path)?;
                let e = parent
                    .children
                    .get(base)
                    .and_then(|i| self.entries.get(i))
                    .ok_or(Errno::ENOENT)?;
                if dir == LOCK_DIR
                    && e.is_dir()
                    && (*mtime < e.row.mtime || e.row.writer != ctx.writer)
                {
                    return Err(Errno::EACCES);
                }
                // The root takes the new mtime too, not the message's time.
                let root = RootVersion {
                    mtime: *mtime,
                    ..root
                };
                plan.txn.root = root;
                let mut row = e.row.clone();
                self.touch(&mut row, root);
                plan.applied.changes.push(Change::Attr(row.inode));
                plan.applied.paths.push(path.clone());
                plan.txn.upserts.push(row);
            }
            // Planned by apply_checked itself: they never reach here.
            Op::UnlockRequest { .. } | Op::Unlock { .. } => return Err(Errno::EINVAL),
        }
        Ok(plan)
    }

    /// Remove `e` (no checks), in either dialect.
    pub(crate) fn remove_c(&self, e: &Entry, txn: &mut Txn, ap: &mut Applied) {
        txn.deletes.push(e.row.inode);
        ap.changes.push(Change::Name {
            parent: e.row.parent,
            name: e.row.name.clone(),
        });
        ap.changes.push(Change::Attr(e.row.inode));
        ap.removed
            .push((e.row.inode, e.row.parent, e.row.name.clone()));
    }

    /// `memdb_pwrite`, for CREATE (`create`) and WRITE.
    #[allow(clippy::too_many_arguments)]
    fn pwrite_c(
        &self,
        path: &str,
        offset: u64,
        data: &[u8],
        truncate: bool,
        create: bool,
        root: RootVersion,
        plan: &mut Plan,
    ) -> Result<(), Errno> {
        let end = offset.checked_add(data.len() as u64).ok_or(Errno::EFBIG)?;
        if end > MAX_FILE_SIZE {
            return Err(Errno::EFBIG);
        }
        let (parent, _, base) = self.parent_c(path)?;
        let vm = vm_of(path);
        if let Some((id, node, ty)) = vm {
            if self.vms.different_exists(id, node, ty) {
                return Err(Errno::EEXIST);
            }
        }
        let old = parent.children.get(base).and_then(|i| self.entries.get(i));
        let mut row = match old {
            Some(e) if e.is_dir() => return Err(Errno::ENOTDIR),
            Some(_) if create => return Err(Errno::EEXIST),
            Some(e) => e.row.clone(),
            None if !create => return Err(Errno::ENOENT),
            None => {
                plan.applied.changes.push(Change::Name {
                    parent: parent.row.inode,
                    name: base.to_string(),
                });
                self.new_row(parent.row.inode, base, Kind::File, root)
            }
        };
        let (end, off) = (end as usize, offset as usize);
        let cur = &row.data;
        // An empty file's data is NULL in pmxcfs: only written bytes give it content.
        // A zero-length write past its end there makes a file of that size without
        // data, which memdb cannot hold; it gets zeros here (see `Dialect`).
        let len = if cur.is_empty() || end > cur.len() || truncate {
            end
        } else {
            cur.len()
        };
        let mut buf = Vec::with_capacity(len);
        buf.extend_from_slice(&cur[..cur.len().min(len)]);
        buf.resize(len, 0);
        buf[off..end].copy_from_slice(data);
        row.data = Arc::new(buf);
        self.touch(&mut row, root);
        plan.applied.changes.push(Change::Attr(row.inode));
        plan.applied.paths.push(path.to_string());
        plan.txn.upserts.push(row);
        if let Some((id, node, ty)) = vm {
            plan.vms.push(VmChange::Register(id, node.to_string(), ty));
        }
        Ok(())
    }

    /// `memdb_rename`.
    fn rename_c(
        &self,
        from: &str,
        to: &str,
        root: RootVersion,
        plan: &mut Plan,
    ) -> Result<(), Errno> {
        let (src, src_parent) = self.lookup_c(from);
        let src = src.ok_or(Errno::ENOENT)?;
        if src_parent.is_none() {
            return Err(Errno::EACCES);
        }
        let from_vm = vm_of(from);
        // The target's VMID is checked (and registered) for files only.
        let to_vm = if src.is_dir() { None } else { vm_of(to) };
        if let Some((id, node, ty)) = to_vm {
            if self.vms.different_exists(id, node, ty) && from_vm.is_none_or(|(f, _, _)| f != id) {
                return Err(Errno::EEXIST);
            }
        }
        if src.is_dir() && path_is_lockdir(from) {
            return Err(Errno::EACCES);
        }
        // No type checks on an existing target: pmxcfs only requires a directory it
        // replaces to be empty (the kernel refuses the mixed cases before FUSE).
        let (dir, base, replaced) = match self.lookup_c(to) {
            (Some(t), tp) => {
                let tp = tp.ok_or(Errno::EACCES)?;
                if t.is_dir() && !t.children.is_empty() {
                    return Err(Errno::ENOTEMPTY);
                }
                (tp, t.row.name.as_str(), Some(t))
            }
            (None, _) => {
                let (d, base) = split(to);
                let dir = self.lookup_c(d).0.ok_or(Errno::ENOENT)?;
                if !dir.is_dir() {
                    return Err(Errno::ENOTDIR);
                }
                (dir, base, None)
            }
        };
        // pmxcfs would corrupt itself on these three, which the kernel never sends:
        // onto itself it frees the entry and enters error mode, into its own subtree
        // it detaches a cycle, and it would create an entry named "." or "..".
        if replaced.is_some_and(|t| t.row.inode == src.row.inode) {
            return Err(Errno::EIO);
        }
        if self.within(dir.row.inode, src.row.inode) {
            return Err(Errno::EINVAL);
        }
        if is_dot_name(base) {
            return Err(Errno::EACCES);
        }
        if let Some(t) = replaced {
            self.remove_c(t, &mut plan.txn, &mut plan.applied);
        }
        if src.is_dir() && !src.children.is_empty() {
            // pmxcfs unlinks the target before it finds the source not empty: the
            // target is gone (in memory; its database keeps it) and nothing else
            // changed, not even the version.
            return match replaced {
                Some(_) => {
                    plan.txn.root = self.root;
                    plan.applied.paths.push(to.to_string());
                    plan.refuse = Some(Errno::ENOTEMPTY);
                    Ok(())
                }
                None => Err(Errno::ENOTEMPTY),
            };
        }
        let mut row = src.row.clone();
        let ap = &mut plan.applied;
        ap.renamed(&row, dir.row.inode, base, from, to);
        // A directory moved into priv/lock is a lock from now on (pmxcfs judges locks
        // by path); one replaced there by a file is gone.
        if split(to).0 == LOCK_DIR {
            if src.is_dir() {
                ap.lock = Some(LockEvent::Acquired(base.to_string()));
            } else if replaced.is_some_and(Entry::is_dir) {
                ap.lock = Some(LockEvent::Released(base.to_string()));
            }
        }
        row.parent = dir.row.inode;
        row.name = base.to_string();
        self.touch(&mut row, root);
        plan.txn.upserts.push(row);
        if !src.is_dir() {
            if let Some((id, _, _)) = from_vm {
                plan.vms.push(VmChange::Forget(id));
            }
            if let Some((id, node, ty)) = to_vm {
                plan.vms.push(VmChange::Register(id, node.to_string(), ty));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glib_split() {
        for (p, d, b) in [
            ("a", ".", "a"),
            ("a/b", "a", "b"),
            ("a/b/c", "a/b", "c"),
            ("/a", "/", "a"),
            ("//a", "/", "a"),
            ("a//b", "a", "b"),
            ("a/b/", "a", "b"),
            ("", ".", "."),
            ("///", ".", "."),
            ("x/.", "x", "."),
        ] {
            assert_eq!(split(p), (d, b), "{p:?}");
        }
    }

    #[test]
    fn names() {
        assert!(path_is_lockdir("priv/lock/a"));
        assert!(path_is_lockdir("/priv/lock/a/b"));
        assert!(!path_is_lockdir("priv/lock/"));
        assert!(!path_is_lockdir("priv/lock"));
        assert!(valid_nodename(&"a".repeat(100)));
        assert!(valid_nodename("a-b"));
        assert!(!valid_nodename("-a") && !valid_nodename("a-") && !valid_nodename("-"));
        assert!(!valid_nodename("a_b") && !valid_nodename(""));
        assert_eq!(vmid_of_name("100.conf"), Some(100));
        assert_eq!(vmid_of_name("4294967295.conf"), Some(u32::MAX));
        assert_eq!(vmid_of_name("4294967296.conf"), None);
        assert_eq!(vmid_of_name("0100.conf"), None);
        assert_eq!(vmid_of_name("100.conf.tmp"), None);
        assert_eq!(vmid_of_name(".conf"), None);
        assert_eq!(
            vm_of("nodes/n1/qemu-server/100.conf"),
            Some((100, "n1", VmType::Qemu))
        );
        assert_eq!(
            vm_of("nodes/n1/lxc//7.conf/"),
            Some((7, "n1", VmType::Lxc)),
            "glib's dirname drops the doubled slash, split_path the trailing one"
        );
        assert_eq!(vm_of("nodes/n1/qemu-server/x/100.conf"), None);
        assert_eq!(vm_of("/nodes/n1/qemu-server/100.conf"), None);
    }
}
