//! Path rules of the /etc/pve tree: name validity, private subtrees, lock directories and
//! guest config paths. Paths are relative to the mount, without a leading `/`; the root
//! is the empty string.

use nix::errno::Errno;

/// Longest name component we accept (the kernel's NAME_MAX; pmxcfs accepts up to 1024).
pub const NAME_MAX: usize = 255;

/// Directory that holds the cluster lock directories.
pub const LOCK_DIR: &str = "priv/lock";

/// Split `path` into its parent directory and last component (`("", "x")` for `"x"`).
pub fn split(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

/// Join a directory path and a name.
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Check a single name component as pmxcfs does, plus a length limit.
///
/// `""`, `.` and `..` give EACCES (pmxcfs's answer); a `/` or NUL gives EINVAL; more than
/// [`NAME_MAX`] bytes gives ENAMETOOLONG.
pub fn check_name(name: &str) -> Result<(), Errno> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(Errno::EACCES);
    }
    if name.len() > NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    if name.bytes().any(|b| b == b'/' || b == 0) {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// Normalise a caller-supplied path: strip slashes at both ends, refuse empty components.
pub fn normalize(path: &str) -> Result<String, Errno> {
    let p = path.trim_matches('/');
    if p.is_empty() {
        return Ok(String::new());
    }
    for c in p.split('/') {
        check_name(c)?;
    }
    Ok(p.to_string())
}

/// True for `priv`, `priv/...`, `nodes/<n>/priv` and `nodes/<n>/priv/...`: root only.
pub fn is_private(path: &str) -> bool {
    if path == "priv" || path.starts_with("priv/") {
        return true;
    }
    if let Some(rest) = path.strip_prefix("nodes/") {
        if let Some(i) = rest.find('/') {
            let tail = &rest[i..];
            return tail == "/priv" || tail.starts_with("/priv/");
        }
    }
    false
}

/// The lock name if `path` is a lock directory `priv/lock/<name>`.
pub fn lock_name(path: &str) -> Option<&str> {
    let name = path.strip_prefix(LOCK_DIR)?.strip_prefix('/')?;
    if name.is_empty() || name.contains('/') {
        None
    } else {
        Some(name)
    }
}

/// Guest types pmxcfs lists in `.vmlist`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VmType {
    /// `nodes/<n>/qemu-server/<id>.conf`
    Qemu,
    /// `nodes/<n>/lxc/<id>.conf`
    Lxc,
    /// `nodes/<n>/openvz/<id>.conf` (legacy)
    OpenVz,
}

impl VmType {
    /// The type string `.vmlist` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            VmType::Qemu => "qemu",
            VmType::Lxc => "lxc",
            VmType::OpenVz => "openvz",
        }
    }

    /// The directory of a node that holds configs of this type.
    pub fn dir(self) -> &'static str {
        match self {
            VmType::Qemu => "qemu-server",
            VmType::Lxc => "lxc",
            VmType::OpenVz => "openvz",
        }
    }

    fn from_dir(d: &str) -> Option<Self> {
        match d {
            "qemu-server" => Some(VmType::Qemu),
            "lxc" => Some(VmType::Lxc),
            "openvz" => Some(VmType::OpenVz),
            _ => None,
        }
    }
}

/// A guest config path: `nodes/<node>/<typedir>/<vmid>.conf` with a valid node name and a
/// VMID without leading zero.
pub fn vm_config(path: &str) -> Option<(&str, VmType, u32)> {
    let rest = path.strip_prefix("nodes/")?;
    let mut it = rest.split('/');
    let (node, dir, file) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() || !valid_nodename(node) {
        return None;
    }
    let ty = VmType::from_dir(dir)?;
    let id = file.strip_suffix(".conf")?;
    if !id.starts_with(|c: char| ('1'..='9').contains(&c))
        || !id.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some((node, ty, id.parse().ok()?))
}

/// A host name in letters-digits-hyphen form, as pmxcfs requires for `nodes/<name>`.
pub fn valid_nodename(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !n.starts_with('-')
        && !n.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(check_name("."), Err(Errno::EACCES));
        assert_eq!(check_name(""), Err(Errno::EACCES));
        assert_eq!(check_name(&"a".repeat(255)), Ok(()));
        assert_eq!(check_name(&"a".repeat(256)), Err(Errno::ENAMETOOLONG));
        assert_eq!(normalize("/a/b/"), Ok("a/b".into()));
        assert_eq!(normalize("a//b"), Err(Errno::EACCES));
    }

    #[test]
    fn private_and_locks() {
        assert!(is_private("priv"));
        assert!(is_private("priv/lock/x"));
        assert!(is_private("nodes/n1/priv/key"));
        assert!(!is_private("private"));
        assert!(!is_private("nodes/n1/privx"));
        assert!(!is_private("nodes"));
        assert_eq!(lock_name("priv/lock/authkey"), Some("authkey"));
        assert_eq!(lock_name("priv/lock"), None);
        assert_eq!(lock_name("priv/lock/a/b"), None);
        assert_eq!(lock_name("priv/lockx/a"), None);
    }

    #[test]
    fn vm_configs() {
        assert_eq!(
            vm_config("nodes/pve1/qemu-server/100.conf"),
            Some(("pve1", VmType::Qemu, 100))
        );
        assert_eq!(
            vm_config("nodes/pve1/lxc/7.conf"),
            Some(("pve1", VmType::Lxc, 7))
        );
        assert_eq!(vm_config("nodes/pve1/lxc/07.conf"), None);
        assert_eq!(vm_config("nodes/pve_1/lxc/7.conf"), None);
        assert_eq!(vm_config("nodes/pve1/lxc/7.conf.tmp"), None);
        assert_eq!(vm_config("nodes/pve1/lxc/sub/7.conf"), None);
    }
}
