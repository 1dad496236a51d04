//! The parts of the FUSE kernel ABI (`linux/fuse.h`, protocol 7.42+) the io_uring
//! transport reads and writes: the ring entry header, the request header, the per-op
//! argument structs it needs, and the reply structs. All little-endian, x86-64/arm64
//! layouts; offsets are checked by the unit tests below.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType};

/// io_uring command: register a header and payload buffer and wait for a request.
pub const CMD_REGISTER: u32 = 1;
/// io_uring command: commit a reply and wait for the next request.
pub const CMD_COMMIT_AND_FETCH: u32 = 2;

/// `fuse_uring_req_header`: 128 bytes for the in/out header, 128 for the op's
/// argument struct, 32 for `fuse_uring_ent_in_out`.
pub const RING_HEADER_LEN: usize = 288;
/// Offset of `op_in` in the ring header.
pub const OP_IN: usize = 128;
/// Offset of `ring_ent_in_out` in the ring header.
pub const ENT_IN_OUT: usize = 256;
/// Offset of `payload_sz` in the ring header.
pub const PAYLOAD_SZ: usize = ENT_IN_OUT + 16;
/// Smallest payload buffer the kernel accepts whatever `max_write` is.
pub const MIN_READ_BUFFER: usize = 8192;

/// Opcodes (`enum fuse_opcode`).
#[allow(missing_docs)]
pub mod op {
    pub const LOOKUP: u32 = 1;
    pub const FORGET: u32 = 2;
    pub const GETATTR: u32 = 3;
    pub const SETATTR: u32 = 4;
    pub const READLINK: u32 = 5;
    pub const SYMLINK: u32 = 6;
    pub const MKNOD: u32 = 8;
    pub const MKDIR: u32 = 9;
    pub const UNLINK: u32 = 10;
    pub const RMDIR: u32 = 11;
    pub const RENAME: u32 = 12;
    pub const LINK: u32 = 13;
    pub const OPEN: u32 = 14;
    pub const READ: u32 = 15;
    pub const WRITE: u32 = 16;
    pub const STATFS: u32 = 17;
    pub const RELEASE: u32 = 18;
    pub const FSYNC: u32 = 20;
    pub const SETXATTR: u32 = 21;
    pub const GETXATTR: u32 = 22;
    pub const LISTXATTR: u32 = 23;
    pub const REMOVEXATTR: u32 = 24;
    pub const FLUSH: u32 = 25;
    pub const OPENDIR: u32 = 27;
    pub const READDIR: u32 = 28;
    pub const RELEASEDIR: u32 = 29;
    pub const CREATE: u32 = 35;
    pub const DESTROY: u32 = 38;
    pub const IOCTL: u32 = 39;
    pub const BATCH_FORGET: u32 = 42;
    pub const RENAME2: u32 = 45;
}

/// SETATTR `valid` bits.
#[allow(missing_docs)]
pub mod fattr {
    pub const MODE: u32 = 1 << 0;
    pub const UID: u32 = 1 << 1;
    pub const GID: u32 = 1 << 2;
    pub const SIZE: u32 = 1 << 3;
    pub const MTIME: u32 = 1 << 5;
    pub const FH: u32 = 1 << 6;
    pub const MTIME_NOW: u32 = 1 << 8;
}

/// Little-endian field reads that treat a short buffer as zeros (a malformed request
/// then fails its own checks instead of panicking the queue thread).
pub trait Le {
    /// u16 at `off`.
    fn u16_at(&self, off: usize) -> u16;
    /// u32 at `off`.
    fn u32_at(&self, off: usize) -> u32;
    /// u64 at `off`.
    fn u64_at(&self, off: usize) -> u64;
}

impl Le for [u8] {
    fn u16_at(&self, off: usize) -> u16 {
        self.get(off..off + 2)
            .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32_at(&self, off: usize) -> u32 {
        self.get(off..off + 4)
            .map_or(0, |b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    fn u64_at(&self, off: usize) -> u64 {
        self.get(off..off + 8)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
}

/// `fuse_in_header`, as the kernel wrote it into the ring header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InHeader {
    /// Opcode.
    pub opcode: u32,
    /// Request id, echoed in the reply and used as the commit id.
    pub unique: u64,
    /// FUSE inode the request is about.
    pub nodeid: u64,
}

impl InHeader {
    /// Parse the first 40 bytes of the ring header.
    pub fn parse(h: &[u8]) -> InHeader {
        InHeader {
            opcode: h.u32_at(4),
            unique: h.u64_at(8),
            nodeid: h.u64_at(16),
        }
    }
}

/// `fuse_out_header` for a reply of `payload` bytes (`error` is 0 or a negative errno).
pub fn out_header(unique: u64, error: i32, payload: usize) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&((16 + payload) as u32).to_le_bytes());
    b[4..8].copy_from_slice(&error.to_le_bytes());
    b[8..16].copy_from_slice(&unique.to_le_bytes());
    b
}

/// `fuse_uring_cmd_req` in the 80-byte command area of a 128-byte SQE.
pub fn cmd_req(commit_id: u64, qid: u16) -> [u8; 80] {
    let mut c = [0u8; 80];
    c[8..16].copy_from_slice(&commit_id.to_le_bytes());
    c[16..18].copy_from_slice(&qid.to_le_bytes());
    c
}

/// A C string at the start of `b` (up to its NUL) and the bytes after the NUL.
pub fn c_str(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = b.iter().position(|&c| c == 0)?;
    Some((&b[..nul], &b[nul + 1..]))
}

fn split_time(t: SystemTime) -> (u64, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    (d.as_secs(), d.subsec_nanos())
}

fn type_bits(kind: FileType) -> u32 {
    match kind {
        FileType::Directory => libc::S_IFDIR,
        FileType::Symlink => libc::S_IFLNK,
        FileType::NamedPipe => libc::S_IFIFO,
        FileType::CharDevice => libc::S_IFCHR,
        FileType::BlockDevice => libc::S_IFBLK,
        FileType::Socket => libc::S_IFSOCK,
        FileType::RegularFile => libc::S_IFREG,
    }
}

/// `d_type` of a directory entry.
pub fn dirent_type(kind: FileType) -> u32 {
    type_bits(kind) >> 12
}

/// Append `fuse_attr` (88 bytes).
pub fn put_attr(out: &mut Vec<u8>, a: &FileAttr) {
    let (at, atn) = split_time(a.atime);
    let (mt, mtn) = split_time(a.mtime);
    let (ct, ctn) = split_time(a.ctime);
    for v in [a.ino.0, a.size, a.blocks, at, mt, ct] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let mode = type_bits(a.kind) | u32::from(a.perm);
    for v in [
        atn, mtn, ctn, mode, a.nlink, a.uid, a.gid, a.rdev, a.blksize, a.flags,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn put_ttl(out: &mut Vec<u8>, t: Duration) {
    out.extend_from_slice(&t.as_secs().to_le_bytes());
}

/// `fuse_entry_out` (128 bytes).
pub fn entry_out(out: &mut Vec<u8>, a: &FileAttr, entry_ttl: Duration, attr_ttl: Duration) {
    out.extend_from_slice(&a.ino.0.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes()); // generation
    put_ttl(out, entry_ttl);
    put_ttl(out, attr_ttl);
    out.extend_from_slice(&entry_ttl.subsec_nanos().to_le_bytes());
    out.extend_from_slice(&attr_ttl.subsec_nanos().to_le_bytes());
    put_attr(out, a);
}

/// `fuse_attr_out` (104 bytes).
pub fn attr_out(out: &mut Vec<u8>, a: &FileAttr, ttl: Duration) {
    put_ttl(out, ttl);
    out.extend_from_slice(&ttl.subsec_nanos().to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    put_attr(out, a);
}

/// `fuse_open_out` (16 bytes).
pub fn open_out(out: &mut Vec<u8>, fh: u64, open_flags: u32) {
    out.extend_from_slice(&fh.to_le_bytes());
    out.extend_from_slice(&open_flags.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // backing_id
}

/// One `fuse_dirent`, padded to 8 bytes; false when it does not fit in `max`.
pub fn dirent(out: &mut Vec<u8>, max: usize, ino: u64, off: u64, typ: u32, name: &[u8]) -> bool {
    let len = (24 + name.len()).next_multiple_of(8);
    if out.len() + len > max {
        return false;
    }
    out.extend_from_slice(&ino.to_le_bytes());
    out.extend_from_slice(&off.to_le_bytes());
    out.extend_from_slice(&(name.len() as u32).to_le_bytes());
    out.extend_from_slice(&typ.to_le_bytes());
    out.extend_from_slice(name);
    out.resize(out.len() + len - 24 - name.len(), 0);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use fuser::INodeNo;

    fn attr() -> FileAttr {
        FileAttr {
            ino: INodeNo(7),
            size: 5,
            blocks: 1,
            atime: UNIX_EPOCH + Duration::new(100, 1),
            mtime: UNIX_EPOCH + Duration::new(200, 2),
            ctime: UNIX_EPOCH + Duration::new(300, 3),
            crtime: UNIX_EPOCH,
            kind: FileType::RegularFile,
            perm: 0o640,
            nlink: 1,
            uid: 0,
            gid: 33,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    #[test]
    fn reply_structs_have_the_kernel_sizes_and_offsets() {
        let a = attr();
        let mut e = Vec::new();
        entry_out(&mut e, &a, Duration::from_millis(1500), Duration::ZERO);
        assert_eq!(e.len(), 128);
        assert_eq!(e.u64_at(0), 7, "nodeid");
        assert_eq!(e.u64_at(16), 1, "entry_valid secs");
        assert_eq!(e.u32_at(32), 500_000_000, "entry_valid_nsec");
        assert_eq!(e.u64_at(40), 7, "attr.ino");
        assert_eq!(e.u64_at(40 + 32), 200, "attr.mtime");
        assert_eq!(e.u32_at(40 + 52), 2, "attr.mtimensec");
        assert_eq!(e.u32_at(40 + 60), libc::S_IFREG | 0o640, "attr.mode");
        assert_eq!(e.u32_at(40 + 72), 33, "attr.gid");
        let mut o = Vec::new();
        attr_out(&mut o, &a, Duration::from_secs(1));
        assert_eq!(o.len(), 104);
        assert_eq!(o.u64_at(0), 1);
        let mut p = Vec::new();
        open_out(&mut p, 9, 3);
        assert_eq!((p.len(), p.u64_at(0), p.u32_at(8)), (16, 9, 3));
    }

    #[test]
    fn dirents_are_padded_and_stop_at_the_limit() {
        let mut d = Vec::new();
        assert!(dirent(&mut d, 64, 2, 1, 4, b"a"));
        assert_eq!(d.len(), 32);
        assert_eq!(
            (d.u64_at(0), d.u64_at(8), d.u32_at(16), d.u32_at(20)),
            (2, 1, 1, 4)
        );
        assert_eq!(d[24], b'a');
        assert!(
            !dirent(&mut d, 64, 3, 2, 8, b"0123456789"),
            "40 more bytes do not fit"
        );
        assert_eq!(d.len(), 32, "a refused entry leaves nothing behind");
    }

    #[test]
    fn headers_and_commands() {
        let mut h = vec![0u8; RING_HEADER_LEN];
        h[4..8].copy_from_slice(&op::GETATTR.to_le_bytes());
        h[8..16].copy_from_slice(&42u64.to_le_bytes());
        h[16..24].copy_from_slice(&5u64.to_le_bytes());
        let ih = InHeader::parse(&h);
        assert_eq!((ih.opcode, ih.unique, ih.nodeid), (op::GETATTR, 42, 5));
        let o = out_header(42, -2, 10);
        assert_eq!((o.u32_at(0), o.u32_at(4) as i32, o.u64_at(8)), (26, -2, 42));
        let c = cmd_req(42, 1);
        assert_eq!((c.u64_at(0), c.u64_at(8), c.u16_at(16)), (0, 42, 1));
        assert_eq!(c_str(b"ab\0cd\0"), Some((&b"ab"[..], &b"cd\0"[..])));
        assert_eq!(c_str(b"ab"), None, "a name without its NUL is malformed");
        assert_eq!([1u8, 2].u64_at(0), 0, "short buffers read as zero");
    }
}
