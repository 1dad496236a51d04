//! The cache-coherence policy, as pure functions: which paths a held cluster lock
//! protects, and which entry/attribute timeouts the kernel may cache a reply for.
//!
//! The rule: a path protected by a held lock is answered with zero timeouts, so every
//! `stat()` by a lock holder reaches the daemon; everything else keeps the configured
//! timeouts and is kept fresh by invalidations pushed when a change arrives from
//! elsewhere. Zero timeouts everywhere would cost ~100x in stat throughput on this
//! kernel, which is why they are reserved for lock-held paths.

use std::time::Duration;

/// Entry and attribute timeouts for one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttls {
    /// How long the kernel may trust the name → inode mapping.
    pub entry: Duration,
    /// How long the kernel may trust the attributes.
    pub attr: Duration,
}

impl Ttls {
    /// Never cache.
    pub const ZERO: Ttls = Ttls {
        entry: Duration::ZERO,
        attr: Duration::ZERO,
    };

    /// The same timeout for entries and attributes.
    pub const fn both(ttl: Duration) -> Ttls {
        Ttls {
            entry: ttl,
            attr: ttl,
        }
    }
}

/// What a lock protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protects {
    /// These exact paths.
    Paths(&'static [&'static str]),
    /// Paths matching these patterns; `*` matches one path component, a trailing `/`
    /// matches the whole subtree.
    Patterns(&'static [&'static str]),
    /// `file-<x>`: the file whose path, with `.` and `/` replaced by `_`, is `<x>`
    /// (PVE's `cfs_lock_file`).
    FileLockName,
    /// Unknown lock: everything, while it is held.
    Everything,
}

/// Lock name (exact, or a prefix ending in `-`/`_`) → what it protects. Checked in order.
const RULES: &[(&str, Protects)] = &[
    (
        "authkey",
        Protects::Paths(&["authkey.pub", "authkey.pub.old", "priv/authkey.key"]),
    ),
    ("token-shadow", Protects::Paths(&["priv/token.shadow"])),
    ("file-", Protects::FileLockName),
    ("storage-", Protects::Paths(&["storage.cfg"])),
    ("domain-", Protects::Paths(&["domains.cfg"])),
    ("acme-", Protects::Patterns(&["priv/acme/"])),
    (
        "firewall-",
        Protects::Patterns(&["firewall/", "nodes/*/host.fw"]),
    ),
    ("ha_manager_lock", Protects::Patterns(&["ha/"])),
    (
        "ha_agent_",
        Protects::Patterns(&["ha/", "nodes/*/lrm_status"]),
    ),
];

fn rule_for(lock: &str) -> Protects {
    for (name, p) in RULES {
        let matches = if name.ends_with('-') || name.ends_with('_') {
            lock.len() > name.len() && lock.starts_with(name)
        } else {
            lock == *name
        };
        if matches {
            return *p;
        }
    }
    Protects::Everything
}

fn pattern_matches(pattern: &str, path: &str) -> bool {
    let (pattern, subtree) = match pattern.strip_suffix('/') {
        Some(p) => (p, true),
        None => (pattern, false),
    };
    let mut pc = path.split('/');
    for want in pattern.split('/') {
        match pc.next() {
            Some(got) if want == "*" || want == got => {}
            _ => return false,
        }
    }
    subtree || pc.next().is_none()
}

/// Does holding lock `lock` protect `path` (relative to the mount)?
pub fn protects(lock: &str, path: &str) -> bool {
    match rule_for(lock) {
        Protects::Paths(ps) => ps.contains(&path),
        Protects::Patterns(ps) => ps.iter().any(|p| pattern_matches(p, path)),
        Protects::FileLockName => {
            let want = &lock["file-".len()..];
            path.len() == want.len()
                && path
                    .bytes()
                    .zip(want.bytes())
                    .all(|(p, w)| p == w || ((p == b'.' || p == b'/') && w == b'_'))
        }
        Protects::Everything => true,
    }
}

/// Whether `path` is inside the lock directory, whose entries are never cached: a lock
/// may expire or be released on another node at any moment, and a cached positive
/// entry would make the kernel answer `mkdir` with EEXIST without asking us.
pub fn in_lock_dir(path: &str) -> bool {
    path.starts_with("priv/lock/")
}

/// Timeout policy of a mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// `--coherence on`.
    pub enabled: bool,
    /// Timeouts for everything not protected.
    pub default: Ttls,
}

impl Policy {
    /// Timeouts for a reply about `path` while `held` locks are held.
    pub fn ttls(&self, path: &str, held: &[String]) -> Ttls {
        if !self.enabled {
            return self.default;
        }
        if in_lock_dir(path) || held.iter().any(|l| protects(l, path)) {
            Ttls::ZERO
        } else {
            self.default
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        assert!(protects("authkey", "authkey.pub"));
        assert!(protects("authkey", "priv/authkey.key"));
        assert!(!protects("authkey", "storage.cfg"));
        assert!(protects("file-user_cfg", "user.cfg"));
        assert!(protects("file-priv_tfa_cfg", "priv/tfa.cfg"));
        assert!(!protects("file-user_cfg", "user.cfgx"));
        assert!(!protects("file-user_cfg", "domains.cfg"));
        assert!(protects("storage-local", "storage.cfg"));
        assert!(protects("firewall-cluster", "firewall/cluster.fw"));
        assert!(protects("firewall-100", "nodes/pve1/host.fw"));
        assert!(!protects("firewall-100", "nodes/pve1/qemu-server/100.conf"));
        assert!(protects("ha_agent_pve1_lock", "ha/manager_status"));
        assert!(protects("ha_agent_pve1_lock", "nodes/pve1/lrm_status"));
        // a bare prefix is not a known lock
        assert!(protects("file-", "anything"));
        // unknown locks protect everything
        assert!(protects("my-custom-lock", "nodes/x/y"));
    }

    #[test]
    fn ttls() {
        let one = Duration::from_secs(1);
        let p = Policy {
            enabled: true,
            default: Ttls::both(one),
        };
        let held = vec!["authkey".to_string()];
        assert_eq!(p.ttls("authkey.pub", &held), Ttls::ZERO);
        assert_eq!(p.ttls("storage.cfg", &held), p.default);
        assert_eq!(p.ttls("priv/lock/x", &[]), Ttls::ZERO);
        assert_eq!(p.ttls("authkey.pub", &[]), p.default);
        let off = Policy {
            enabled: false,
            ..p
        };
        assert_eq!(off.ttls("authkey.pub", &held), off.default);
    }
}
