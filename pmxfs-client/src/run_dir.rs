//! The daemon's run directory (`$PMXFS_RUN_DIR`, default `/run/pmxfs`) and the names of
//! the files it keeps there for each mount: the version file and the control socket.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Default directory of the version files when `$PMXFS_RUN_DIR` is not set.
pub const DEFAULT_RUN_DIR: &str = "/run/pmxfs";

/// Directory holding the version files: `$PMXFS_RUN_DIR`, or `/run/pmxfs`.
pub fn run_dir() -> PathBuf {
    run_dir_from(std::env::var_os("PMXFS_RUN_DIR"))
}

fn run_dir_from(var: Option<OsString>) -> PathBuf {
    match var {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(DEFAULT_RUN_DIR),
    }
}

/// systemd-style path escape of the absolute, lexically normalised form of `mount`.
///
/// The leading `/` is stripped, each `/` becomes `-`, every byte outside
/// `[A-Za-z0-9_.:]` (a literal `-` included) becomes `\xNN`, and, as systemd does, a
/// leading `.` is escaped too so the file is never hidden. `/` itself becomes `-`.
/// Symlinks are not resolved: daemon and clients must name the mount the same way.
pub fn escape_mount_path(mount: &Path) -> String {
    let abs = normalize_lexically(mount);
    let bytes = abs.as_os_str().as_bytes();
    let rel = bytes.strip_prefix(b"/").unwrap_or(bytes);
    if rel.is_empty() {
        return "-".to_string();
    }
    let mut out = String::with_capacity(rel.len() + 8);
    for (i, &b) in rel.iter().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b':' => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// Absolute path with `.`, `..` and repeated slashes resolved without touching the
/// filesystem; a relative path is taken relative to the current directory (or `/` if
/// that is unknown).
fn normalize_lexically(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(p)
    };
    let mut out = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// The daemon's control socket for the pmxfs mounted at `mount` (`pmxfs status`).
pub fn control_socket(mount: &Path) -> PathBuf {
    run_dir().join(format!("{}.sock", escape_mount_path(mount)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versions::shm_path_in;

    #[test]
    fn escaping() {
        let e = |s: &str| escape_mount_path(Path::new(s));
        assert_eq!(e("/"), "-");
        assert_eq!(e("/etc/pve"), "etc-pve");
        assert_eq!(e("/etc/pve/"), "etc-pve");
        assert_eq!(e("//etc/./x/../pve"), "etc-pve");
        assert_eq!(e("/tmp/node-1/pve"), "tmp-node\\x2d1-pve");
        assert_eq!(e("/a b/c:d_e.f"), "a\\x20b-c:d_e.f");
        assert_eq!(e("/.hidden/x"), "\\x2ehidden-x");
        assert_eq!(e("/x/.y"), "x-.y");
        assert_eq!(e("/ü"), "\\xc3\\xbc");
        assert_eq!(e("/.."), "-");
        let rel = escape_mount_path(Path::new("rel/dir"));
        let cwd = std::env::current_dir().unwrap().join("rel/dir");
        assert_eq!(rel, escape_mount_path(&cwd));
        assert_eq!(
            shm_path_in(Path::new("/run/pmxfs"), Path::new("/etc/pve")),
            PathBuf::from("/run/pmxfs/etc-pve.versions")
        );
        assert_eq!(
            shm_path_in(Path::new("/r"), Path::new("/")),
            PathBuf::from("/r/-.versions")
        );
    }

    #[test]
    fn run_dir_default_and_override() {
        assert_eq!(run_dir_from(None), PathBuf::from("/run/pmxfs"));
        assert_eq!(run_dir_from(Some("".into())), PathBuf::from("/run/pmxfs"));
        assert_eq!(run_dir_from(Some("/tmp/x".into())), PathBuf::from("/tmp/x"));
    }
}
