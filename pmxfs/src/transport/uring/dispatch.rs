//! Decode one request from a ring entry and hand it to the handlers in `fs::ops`.
//! A request the kernel should never send this way, or a malformed one, is answered
//! with an errno, never with a panic: the queue thread must survive it.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, UNIX_EPOCH};

use fuser::{FopenFlags, TimeOrNow};
use nix::errno::Errno;

use crate::fs::ops::{refused, SetAttr};
use crate::fs::reply::{EmptyReply, Fail, OpenReply};
use crate::fs::PmxFs;
use crate::tree::FuseIno;

use super::abi::{self, fattr, op, InHeader, Le};
use super::outbox::{RingDir, RingReply};

fn name(payload: &[u8]) -> Result<&OsStr, Errno> {
    abi::c_str(payload)
        .map(|(n, _)| OsStr::from_bytes(n))
        .ok_or(Errno::EINVAL)
}

/// Handle request `h` whose op argument struct is `arg` and whose names or data are
/// `payload`; the answer goes to `reply`.
pub fn dispatch(fs: &PmxFs, h: InHeader, arg: &[u8], payload: &[u8], reply: RingReply) {
    let ino = FuseIno(h.nodeid);
    match h.opcode {
        op::LOOKUP => match name(payload) {
            Ok(n) => fs.lookup(ino, n, reply),
            Err(e) => reply.error(e),
        },
        op::GETATTR => fs.getattr(ino, reply),
        op::SETATTR => fs.setattr(ino, setattr(arg), reply),
        op::READLINK => fs.readlink(ino, reply),
        op::MKDIR => match name(payload) {
            Ok(n) => fs.mkdir(ino, n, reply),
            Err(e) => reply.error(e),
        },
        op::UNLINK | op::RMDIR => match name(payload) {
            Ok(n) => fs.delete(ino, n, reply),
            Err(e) => reply.error(e),
        },
        op::RENAME | op::RENAME2 => {
            let flags = if h.opcode == op::RENAME2 {
                arg.u32_at(8)
            } else {
                0
            };
            match abi::c_str(payload).and_then(|(from, rest)| Some((from, abi::c_str(rest)?.0))) {
                Some((from, to)) => fs.rename(
                    ino,
                    OsStr::from_bytes(from),
                    FuseIno(arg.u64_at(0)),
                    OsStr::from_bytes(to),
                    flags,
                    reply,
                ),
                None => reply.error(Errno::EINVAL),
            }
        }
        op::OPEN => fs.open(ino, arg.u32_at(0) as i32, reply),
        op::READ => fs.read(arg.u64_at(0), arg.u64_at(8), arg.u32_at(16), reply),
        op::WRITE => {
            let size = arg.u32_at(16) as usize;
            match payload.get(..size) {
                Some(data) => fs.write(arg.u64_at(0), arg.u64_at(8), data, reply),
                None => reply.error(Errno::EINVAL),
            }
        }
        op::STATFS => fs.statfs(reply),
        op::RELEASE => fs.release(arg.u64_at(0), reply),
        op::FLUSH | op::FSYNC => fs.flush(arg.u64_at(0), reply),
        op::OPENDIR => reply.opened(0, FopenFlags::empty()),
        op::READDIR => fs.readdir(
            ino,
            arg.u64_at(8),
            RingDir::new(reply, arg.u32_at(16) as usize),
        ),
        op::RELEASEDIR | op::DESTROY => reply.ok(),
        op::CREATE => match name(payload) {
            Ok(n) => fs.create(ino, n, reply),
            Err(e) => reply.error(e),
        },
        op::MKNOD => reply.error(refused::MKNOD),
        op::SYMLINK => reply.error(refused::SYMLINK),
        op::LINK => reply.error(refused::LINK),
        op::SETXATTR | op::GETXATTR | op::LISTXATTR | op::REMOVEXATTR => {
            reply.error(refused::XATTR)
        }
        op::IOCTL => reply.error(refused::IOCTL),
        // FORGET and INTERRUPT stay on /dev/fuse; anything else is not implemented, and
        // the kernel remembers ENOSYS for the optional operations (access, fsyncdir…).
        _ => reply.error(Errno::ENOSYS),
    }
}

fn setattr(a: &[u8]) -> SetAttr {
    let valid = a.u32_at(0);
    let has = |bit| valid & bit != 0;
    SetAttr {
        mode: has(fattr::MODE).then(|| a.u32_at(68)),
        uid: has(fattr::UID).then(|| a.u32_at(76)),
        gid: has(fattr::GID).then(|| a.u32_at(80)),
        size: has(fattr::SIZE).then(|| a.u64_at(16)),
        mtime: if has(fattr::MTIME_NOW) {
            Some(TimeOrNow::Now)
        } else if has(fattr::MTIME) {
            Some(TimeOrNow::SpecificTime(
                UNIX_EPOCH + Duration::new(a.u64_at(40), a.u32_at(60)),
            ))
        } else {
            None
        },
        fh: has(fattr::FH).then(|| a.u64_at(8)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setattr_reads_only_the_valid_fields() {
        let mut a = [0u8; 88];
        a[0..4].copy_from_slice(&(fattr::SIZE | fattr::MTIME | fattr::FH).to_le_bytes());
        a[8..16].copy_from_slice(&9u64.to_le_bytes());
        a[16..24].copy_from_slice(&4096u64.to_le_bytes());
        a[40..48].copy_from_slice(&1000u64.to_le_bytes());
        a[68..72].copy_from_slice(&0o755u32.to_le_bytes());
        let s = setattr(&a);
        assert_eq!(
            (s.size, s.fh, s.mode, s.uid),
            (Some(4096), Some(9), None, None)
        );
        assert_eq!(
            s.mtime,
            Some(TimeOrNow::SpecificTime(
                UNIX_EPOCH + Duration::from_secs(1000)
            ))
        );
        a[0..4].copy_from_slice(&(fattr::MODE | fattr::MTIME_NOW).to_le_bytes());
        let s = setattr(&a);
        assert_eq!(
            (s.mode, s.size, s.mtime),
            (Some(0o755), None, Some(TimeOrNow::Now))
        );
    }

    #[test]
    fn names_must_end_in_nul() {
        assert_eq!(name(b"node\0"), Ok(OsStr::new("node")));
        assert_eq!(name(b"node"), Err(Errno::EINVAL));
    }
}

/// Requests decoded from hand-built ring entries, answered by real handlers over an
/// in-memory tree: the wire side of the transport without a kernel.
#[cfg(test)]
mod wire_tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::coherence::{Policy, Ttls};
    use crate::transport::uring::outbox::{Done, Outbox};
    use crate::tree::status::{Mode, Status};
    use crate::tree::Tree;
    use memdb::{Limits, MemDb, NullStore};

    struct Wire {
        fs: PmxFs,
        outbox: Arc<Outbox>,
    }

    impl Wire {
        fn new() -> Wire {
            let db = MemDb::empty(Box::new(NullStore), Limits::default());
            let status = Arc::new(Status::new("n1".into(), Mode::Local, "test"));
            let ttl = Duration::from_secs(1);
            let policy = Policy {
                enabled: false,
                default: Ttls::both(ttl),
            };
            Wire {
                fs: PmxFs::new(Tree::new(db, status, false, None), policy, 33),
                outbox: Arc::new(Outbox::new().unwrap()),
            }
        }

        /// Send one request; returns (error, payload).
        fn call(&self, opcode: u32, nodeid: u64, arg: &[u8], payload: &[u8]) -> (i32, Vec<u8>) {
            let h = InHeader {
                opcode,
                unique: 77,
                nodeid,
            };
            let mut a = [0u8; 128];
            a[..arg.len()].copy_from_slice(arg);
            dispatch(
                &self.fs,
                h,
                &a,
                payload,
                RingReply::new(self.outbox.clone(), 0, 77),
            );
            let mut done: Vec<Done> = Vec::new();
            self.outbox.drain(&mut done);
            assert_eq!(done.len(), 1, "exactly one reply per request");
            let d = done.pop().unwrap();
            assert_eq!((d.slot, d.unique), (0, 77));
            (d.error, d.data)
        }
    }

    fn le(parts: &[u64]) -> Vec<u8> {
        parts.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn a_file_lives_and_dies_through_the_ring() {
        let w = Wire::new();
        let (e, d) = w.call(op::MKDIR, 1, &[0; 8], b"d\0");
        assert_eq!((e, d.len()), (0, 128), "entry_out");
        let dir = d.u64_at(0);
        assert_eq!(w.call(op::GETATTR, dir, &[0; 16], b"").1.len(), 104);
        let (e, d) = w.call(op::CREATE, dir, &[0; 16], b"f\0");
        assert_eq!((e, d.len()), (0, 144), "entry_out + open_out");
        let fh = d.u64_at(128);
        // WRITE: fh, offset, size
        let mut arg = le(&[fh, 0]);
        arg.extend_from_slice(&5u32.to_le_bytes());
        let (e, d) = w.call(op::WRITE, 0, &arg, b"hello");
        assert_eq!((e, d.u32_at(0)), (0, 5));
        assert_eq!(w.call(op::FLUSH, 0, &le(&[fh]), b""), (0, vec![]));
        let mut arg = le(&[fh, 1]);
        arg.extend_from_slice(&100u32.to_le_bytes());
        assert_eq!(w.call(op::READ, 0, &arg, b"").1, b"ello");
        assert_eq!(w.call(op::RELEASE, 0, &le(&[fh]), b""), (0, vec![]));
        let (e, d) = w.call(op::LOOKUP, dir, &[], b"f\0");
        assert_eq!((e, d.u64_at(40 + 8)), (0, 5), "size after the commit");
        let (e, _) = w.call(op::RENAME, dir, &le(&[dir]), b"f\0g\0");
        assert_eq!(e, 0);
        assert_eq!(w.call(op::LOOKUP, dir, &[], b"f\0").0, -libc::ENOENT);
        assert_eq!(w.call(op::UNLINK, dir, &[], b"g\0").0, 0);
        assert_eq!(w.call(op::RMDIR, 1, &[], b"d\0").0, 0);
    }

    #[test]
    fn directories_are_listed_within_the_size_asked_for() {
        let w = Wire::new();
        let read_in = |size: u32| {
            let mut a = le(&[0, 0]);
            a.extend_from_slice(&size.to_le_bytes());
            a
        };
        let (e, all) = w.call(op::READDIR, 1, &read_in(4096), b"");
        assert_eq!(e, 0);
        assert!(all.len() > 24 * 4, "., .., and the virtual entries");
        assert_eq!(all.u32_at(16), 1, "first name is '.'");
        let (e, none) = w.call(op::READDIR, 1, &read_in(16), b"");
        assert_eq!((e, none.len()), (0, 0), "no entry fits in 16 bytes");
    }

    #[test]
    fn unsupported_and_malformed_requests_get_precise_errnos() {
        let w = Wire::new();
        assert_eq!(w.call(op::LOOKUP, 1, &[], b"no-nul").0, -libc::EINVAL);
        assert_eq!(
            w.call(op::RENAME, 1, &le(&[1]), b"only-one\0").0,
            -libc::EINVAL
        );
        let mut arg = le(&[1, 0]);
        arg.extend_from_slice(&4096u32.to_le_bytes());
        assert_eq!(
            w.call(op::WRITE, 0, &arg, b"short").0,
            -libc::EINVAL,
            "size > payload"
        );
        assert_eq!(w.call(op::SYMLINK, 1, &[], b"a\0b\0").0, -libc::ENOSYS);
        assert_eq!(w.call(op::MKNOD, 1, &[0; 16], b"a\0").0, -libc::ENOSYS);
        assert_eq!(w.call(op::LINK, 2, &le(&[1]), b"a\0").0, -libc::EPERM);
        assert_eq!(
            w.call(op::SETXATTR, 1, &[0; 16], b"user.a\0").0,
            -libc::EOPNOTSUPP
        );
        assert_eq!(w.call(op::IOCTL, 1, &[0; 32], b"").0, -libc::ENOTTY);
        assert_eq!(w.call(9999, 1, &[], b"").0, -libc::ENOSYS);
        assert_eq!(w.call(op::GETATTR, 12345, &[0; 16], b"").0, -libc::ENOENT);
    }
}
