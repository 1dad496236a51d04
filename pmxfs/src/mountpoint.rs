//! The mount point before mounting: refuse a live mount or a non-empty directory, and
//! clear the dead FUSE mount a crashed instance leaves behind (pmxcfs force-unmounts
//! `/etc/pve` unconditionally; we only detach a mount that provably has no daemon).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// How long a mounted filesystem may take to answer `statfs` before it counts as hung.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A mount found on the mount point, from mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Filesystem type, e.g. `fuse` or `ext4`.
    pub fstype: String,
    /// Mount source, e.g. `pmxfs`.
    pub source: String,
}

/// What answers on a mount point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// It answered.
    Live,
    /// Its FUSE connection has no daemon (ENOTCONN/ECONNABORTED).
    Dead,
    /// No answer within the probe timeout: a stopped or hung daemon.
    Hung,
}

/// The mount on `path` (the last one stacked there), read from mountinfo: never `stat`
/// a mount whose daemon may be hung.
pub fn mount_on(path: &Path) -> Option<MountEntry> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    parse_mountinfo(&info, &path.to_string_lossy())
}

/// Is `path` a mount point?
pub fn is_mountpoint(path: &Path) -> bool {
    mount_on(path).is_some()
}

fn parse_mountinfo(info: &str, want: &str) -> Option<MountEntry> {
    info.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mp = left.split(' ').nth(4)?;
            let mut r = right.split(' ');
            let fstype = r.next()?.to_string();
            let source = unescape_mountinfo(r.next().unwrap_or(""));
            (unescape_mountinfo(mp) == want).then_some(MountEntry { fstype, source })
        })
        .next_back()
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Ask the filesystem on `path` for `statfs`, which FUSE always forwards to the daemon
/// (a `stat` could be answered from the attribute cache of a dead mount).
///
/// The call runs in a forked child: once a request has reached a stopped daemon the
/// kernel waits for its answer uninterruptibly, and a thread stuck there would keep
/// this process from exiting. An abandoned child is killed and finishes whenever that
/// daemon answers.
pub fn probe(path: &Path) -> Liveness {
    probe_since(path, std::time::Instant::now())
}

fn probe_since(path: &Path, t0: std::time::Instant) -> Liveness {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    use nix::unistd::ForkResult;
    use std::os::unix::ffi::OsStrExt;
    let Ok(cpath) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return Liveness::Live;
    };
    // SAFETY: the child only calls statfs and _exit, both async-signal-safe, on memory
    // prepared before the fork.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Child) => unsafe {
            let mut st: libc::statfs = std::mem::zeroed();
            let code = if libc::statfs(cpath.as_ptr(), &mut st) == 0 {
                0
            } else {
                match *libc::__errno_location() {
                    libc::ENOTCONN | libc::ECONNABORTED => 1,
                    libc::ECANCELED => 3,
                    _ => 2,
                }
            };
            libc::_exit(code)
        },
        Ok(ForkResult::Parent { child }) => {
            while t0.elapsed() < PROBE_TIMEOUT {
                match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(_, 1)) => return Liveness::Dead,
                    // Just after the daemon died its io_uring is still being torn down
                    // and cancels the request: ask again until the connection is gone.
                    Ok(WaitStatus::Exited(_, 3)) => {
                        std::thread::sleep(Duration::from_millis(20));
                        return probe_since(path, t0);
                    }
                    Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(10)),
                    _ => return Liveness::Live,
                }
            }
            let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            Liveness::Hung
        }
        // Cannot tell: treat it as in use, which refuses to mount.
        Err(_) => Liveness::Live,
    }
}

/// `path` made absolute without touching it: it may be a dead mount, on which
/// `canonicalize` fails with ENOTCONN.
fn absolute(path: &Path) -> Result<PathBuf> {
    let abs =
        std::path::absolute(path).with_context(|| format!("bad mount point {}", path.display()))?;
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) if parent.exists() => Ok(parent
            .canonicalize()
            .with_context(|| format!("bad mount point {}", path.display()))?
            .join(name)),
        _ => Ok(abs),
    }
}

/// Check the mount point and create it if missing; returns its canonical path.
pub fn prepare(mount: &Path) -> Result<PathBuf> {
    let mount = absolute(mount)?;
    if let Some(m) = mount_on(&mount) {
        let fuse = m.fstype == "fuse" || m.fstype.starts_with("fuse.");
        match fuse.then(|| probe(&mount)) {
            Some(Liveness::Dead) => {
                tracing::warn!(
                    mount = %mount.display(),
                    source = %m.source,
                    "clearing the dead FUSE mount a previous instance left behind"
                );
                nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH)
                    .with_context(|| format!("cannot detach dead mount {}", mount.display()))?;
            }
            Some(Liveness::Hung) => bail!(
                "{} is a mount point whose filesystem does not answer (a stopped or hung \
                 daemon?); stop it or unmount it first",
                mount.display()
            ),
            _ => bail!(
                "{} is already a mount point ({} {}: another pmxfs or pmxcfs?); unmount it first",
                mount.display(),
                m.fstype,
                m.source
            ),
        }
    }
    if !mount.exists() {
        std::fs::create_dir_all(&mount)
            .with_context(|| format!("cannot create mount point {}", mount.display()))?;
        std::fs::set_permissions(&mount, std::fs::Permissions::from_mode(0o750))?;
    }
    let mount = mount
        .canonicalize()
        .with_context(|| format!("bad mount point {}", mount.display()))?;
    if is_mountpoint(&mount) {
        bail!(
            "{} is already a mount point (another pmxfs or pmxcfs?); unmount it first",
            mount.display()
        );
    }
    if !mount.is_dir() {
        bail!("mount point {} is not a directory", mount.display());
    }
    if std::fs::read_dir(&mount)?.next().is_some() {
        bail!(
            "mount point {} is not empty; refusing to mount over it",
            mount.display()
        );
    }
    Ok(mount)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:50 / /etc/pve rw,nosuid,nodev,relatime shared:20 - fuse pmxfs rw,user_id=0
41 22 0:51 / /tmp/with\\040space rw shared:21 - fuse.sshfs host:/x rw
42 40 0:52 / /etc/pve rw shared:22 - tmpfs tmpfs rw
";

    #[test]
    fn finds_the_top_mount_and_its_type() {
        assert_eq!(
            parse_mountinfo(INFO, "/tmp/with space"),
            Some(MountEntry {
                fstype: "fuse.sshfs".into(),
                source: "host:/x".into()
            })
        );
        // the last mount stacked on a path is the visible one
        assert_eq!(parse_mountinfo(INFO, "/etc/pve").unwrap().fstype, "tmpfs");
        assert_eq!(parse_mountinfo(INFO, "/etc"), None);
        assert_eq!(parse_mountinfo("garbage line\n", "/"), None);
    }
}
