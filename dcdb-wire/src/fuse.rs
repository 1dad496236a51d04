//! The FUSE-op payload of dcdb NORMAL subtypes 1..=6 (`dcdb_send_fuse_message`,
//! `dcdb_parse_fuse_message`): `u32 size; u32 offset; u32 pathlen; u32 tolen; u32
//! flags;` then `path[pathlen]`, `to[tolen]`, `data[size]`.

use crate::bytes::{cstr_len, len32, push_cstr, Reader};
use crate::DcdbError;

/// The fixed part of a FUSE-op payload.
pub const FUSE_HEADER: usize = 20;

/// Which file-system operation a FUSE-op message carries (its dcdb message type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FuseOp {
    /// 1: write `data` at `offset`; with flags 1 and no data, a truncate to `offset`.
    Write,
    /// 2: create a directory.
    Mkdir,
    /// 3: remove a file or an (empty) directory.
    Delete,
    /// 4: rename `path` to `to`.
    Rename,
    /// 5: create an empty file.
    Create,
    /// 6: set the mtime to `offset`.
    Mtime,
}

impl FuseOp {
    /// The op for a NORMAL subtype, if it is one of 1..=6.
    pub fn from_subtype(subtype: u16) -> Option<FuseOp> {
        Some(match subtype {
            1 => FuseOp::Write,
            2 => FuseOp::Mkdir,
            3 => FuseOp::Delete,
            4 => FuseOp::Rename,
            5 => FuseOp::Create,
            6 => FuseOp::Mtime,
            _ => return None,
        })
    }

    /// The NORMAL subtype (dcdb message type) of this op.
    pub fn subtype(self) -> u16 {
        match self {
            FuseOp::Write => 1,
            FuseOp::Mkdir => 2,
            FuseOp::Delete => 3,
            FuseOp::Rename => 4,
            FuseOp::Create => 5,
            FuseOp::Mtime => 6,
        }
    }
}

/// One FUSE-op message. Strings are kept as the bytes of their field without the
/// terminating NUL, so that every accepted payload re-encodes to itself; pmxcfs itself
/// reads them as C strings, up to the first NUL (see [`FuseMsg::path_str`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuseMsg {
    /// The operation (the NORMAL subtype).
    pub op: FuseOp,
    /// Write offset, truncate size, or the new mtime.
    pub offset: u32,
    /// 1 on a truncate, else 0.
    pub flags: u32,
    /// The path relative to `/etc/pve` (`None`: `pathlen` 0).
    pub path: Option<Vec<u8>>,
    /// The rename target (`None`: `tolen` 0).
    pub to: Option<Vec<u8>>,
    /// The written bytes; `size` on the wire is their length.
    pub data: Vec<u8>,
}

/// The C-string view of a field: up to the first NUL, if that is UTF-8.
pub(crate) fn c_view(s: &[u8]) -> Option<&str> {
    let end = s.iter().position(|c| *c == 0).unwrap_or(s.len());
    std::str::from_utf8(&s[..end]).ok()
}

impl FuseMsg {
    fn new(op: FuseOp, path: &str) -> FuseMsg {
        FuseMsg {
            op,
            offset: 0,
            flags: 0,
            path: Some(path.as_bytes().to_vec()),
            to: None,
            data: Vec::new(),
        }
    }

    /// WRITE `data` to `path` at `offset` (`cfs_plug_memdb_write`).
    pub fn write(path: &str, offset: u32, data: &[u8]) -> FuseMsg {
        FuseMsg {
            offset,
            data: data.to_vec(),
            ..FuseMsg::new(FuseOp::Write, path)
        }
    }

    /// Truncate `path` to `size`: a WRITE without data, `offset` = size, flags 1
    /// (`cfs_plug_memdb_truncate`).
    pub fn truncate(path: &str, size: u32) -> FuseMsg {
        FuseMsg {
            offset: size,
            flags: 1,
            ..FuseMsg::new(FuseOp::Write, path)
        }
    }

    /// CREATE an empty file.
    pub fn create(path: &str) -> FuseMsg {
        FuseMsg::new(FuseOp::Create, path)
    }

    /// MKDIR.
    pub fn mkdir(path: &str) -> FuseMsg {
        FuseMsg::new(FuseOp::Mkdir, path)
    }

    /// DELETE (pmxcfs uses it for unlink and rmdir alike).
    pub fn delete(path: &str) -> FuseMsg {
        FuseMsg::new(FuseOp::Delete, path)
    }

    /// RENAME `from` to `to`.
    pub fn rename(from: &str, to: &str) -> FuseMsg {
        FuseMsg {
            to: Some(to.as_bytes().to_vec()),
            ..FuseMsg::new(FuseOp::Rename, from)
        }
    }

    /// MTIME: the new mtime travels in `offset` (`cfs_plug_memdb_utimens`).
    pub fn mtime(path: &str, mtime: u32) -> FuseMsg {
        FuseMsg {
            offset: mtime,
            ..FuseMsg::new(FuseOp::Mtime, path)
        }
    }

    /// The path as pmxcfs reads it (up to its first NUL), if present and UTF-8.
    pub fn path_str(&self) -> Option<&str> {
        self.path.as_deref().and_then(c_view)
    }

    /// The rename target as pmxcfs reads it, if present and UTF-8.
    pub fn to_str(&self) -> Option<&str> {
        self.to.as_deref().and_then(c_view)
    }

    /// The payload after the 24-byte NORMAL header.
    pub fn encode(&self) -> Vec<u8> {
        let path = self.path.as_deref();
        let to = self.to.as_deref();
        let mut out = Vec::with_capacity(
            FUSE_HEADER
                + path.map_or(0, |p| p.len() + 1)
                + to.map_or(0, |t| t.len() + 1)
                + self.data.len(),
        );
        for v in [
            len32(self.data.len()),
            self.offset,
            cstr_len(path),
            cstr_len(to),
            self.flags,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        push_cstr(&mut out, path);
        push_cstr(&mut out, to);
        out.extend_from_slice(&self.data);
        out
    }

    /// Read the payload of NORMAL `subtype` (1..=6), with `dcdb_parse_fuse_message`'s
    /// checks. One difference: pmxcfs adds `size + pathlen + tolen` in 32 bits, so a
    /// sum that wraps to the payload length passes its check and it then reads out of
    /// bounds; here the sum is exact and such a payload is [`DcdbError::FuseLength`].
    pub fn decode(subtype: u16, payload: &[u8]) -> Result<FuseMsg, DcdbError> {
        let op = FuseOp::from_subtype(subtype).ok_or(DcdbError::UnknownSubtype(subtype))?;
        let short = DcdbError::FuseShort(payload.len());
        let mut r = Reader::new(payload);
        let size = r.u32().ok_or(short.clone())?;
        let offset = r.u32().ok_or(short.clone())?;
        let pathlen = r.u32().ok_or(short.clone())?;
        let tolen = r.u32().ok_or(short.clone())?;
        let flags = r.u32().ok_or(short)?;
        let expected = u64::from(size) + u64::from(pathlen) + u64::from(tolen);
        let length = DcdbError::FuseLength {
            len: payload.len(),
            expected: expected + FUSE_HEADER as u64,
        };
        if r.rest().len() as u64 != expected {
            return Err(length);
        }
        let path = field(&mut r, pathlen, DcdbError::PathNotTerminated)?;
        let to = field(&mut r, tolen, DcdbError::ToNotTerminated)?;
        Ok(FuseMsg {
            op,
            offset,
            flags,
            path,
            to,
            data: r.rest().to_vec(),
        })
    }
}

/// A NUL-terminated field of `len` bytes (0: absent). The length was checked against
/// the payload before, so `take` cannot fail here; it still maps to an error, never a
/// panic.
fn field(r: &mut Reader<'_>, len: u32, err: DcdbError) -> Result<Option<Vec<u8>>, DcdbError> {
    if len == 0 {
        return Ok(None);
    }
    let f = usize::try_from(len)
        .ok()
        .and_then(|n| r.take(n))
        .ok_or(err.clone())?;
    match f.split_last() {
        Some((0, s)) => Ok(Some(s.to_vec())),
        _ => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{fixture, normal_payload};

    fn captured(name: &str) -> (u16, FuseMsg, Vec<u8>) {
        let b = fixture(name);
        let (subtype, payload) = normal_payload(&b);
        let m = FuseMsg::decode(subtype, &payload).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(m.encode(), payload, "{name} re-encodes");
        (subtype, m, payload)
    }

    #[test]
    fn b01_create_and_write() {
        let (st, c, _) = captured("n1/00017-pve_dcdb_v1.bin");
        assert_eq!(st, 5);
        assert_eq!(c, FuseMsg::create("capture-small.txt"));
        let (st, w, _) = captured("n1/00018-pve_dcdb_v1.bin");
        assert_eq!(st, 1);
        assert_eq!(w, FuseMsg::write("capture-small.txt", 0, b"hello wire\n"));
    }

    #[test]
    fn b02_large_write() {
        let (_, w, p) = captured("n1/00020-pve_dcdb_v1.bin");
        assert_eq!(w.path_str(), Some("capture-70k.txt"));
        assert_eq!((w.data.len(), w.offset, w.flags), (71680, 0, 0));
        assert_eq!(p.len(), FUSE_HEADER + 16 + 71680);
        assert!(w.data.chunks(64).all(|l| l.last() == Some(&b'\n')));
    }

    #[test]
    fn rename_truncate_mtime_mkdir_delete() {
        let (_, r, _) = captured("n1/00022-pve_dcdb_v1.bin");
        assert_eq!(
            r,
            FuseMsg::rename("capture-small.txt", "capture-renamed.txt")
        );
        assert_eq!(r.to_str(), Some("capture-renamed.txt"));
        let (_, t, _) = captured("n1/00024-pve_dcdb_v1.bin");
        assert_eq!(t, FuseMsg::truncate("capture-renamed.txt", 5));
        let (_, w, _) = captured("n1/00025-pve_dcdb_v1.bin");
        assert_eq!(w, FuseMsg::write("capture-renamed.txt", 2, b"XY"));
        let (st, m, _) = captured("n1/00030-pve_dcdb_v1.bin");
        assert_eq!(st, 6);
        assert_eq!(m, FuseMsg::mtime("capture-renamed.txt", 1_700_000_000));
        let (_, d, _) = captured("n1/00021-pve_dcdb_v1.bin");
        assert_eq!(d, FuseMsg::mkdir("capture-dir"));
        let (_, d, _) = captured("n1/00029-pve_dcdb_v1.bin");
        assert_eq!(d, FuseMsg::delete("capture-dir2"));
    }

    #[test]
    fn wrong_lengths_are_specific_errors() {
        let good = FuseMsg::rename("a", "bc").encode();
        assert_eq!(
            FuseMsg::decode(4, &good[..19]),
            Err(DcdbError::FuseShort(19))
        );
        assert_eq!(
            FuseMsg::decode(4, &good[..good.len() - 1]),
            Err(DcdbError::FuseLength {
                len: good.len() - 1,
                expected: good.len() as u64
            })
        );
        let mut long = good.clone();
        long.push(0);
        assert!(matches!(
            FuseMsg::decode(4, &long),
            Err(DcdbError::FuseLength { .. })
        ));
        // path "a\0" → "ab": not terminated.
        let mut p = good.clone();
        p[FUSE_HEADER + 1] = b'b';
        assert_eq!(FuseMsg::decode(4, &p), Err(DcdbError::PathNotTerminated));
        let mut t = good.clone();
        let last = t.len() - 1;
        t[last] = b'x';
        assert_eq!(FuseMsg::decode(4, &t), Err(DcdbError::ToNotTerminated));
        assert_eq!(FuseMsg::decode(7, &good), Err(DcdbError::UnknownSubtype(7)));
        // A 32-bit sum that wraps to the real length: pmxcfs would accept and read
        // out of bounds; refused here.
        let mut wrap = FuseMsg::mkdir("a").encode();
        wrap[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        wrap[8..12].copy_from_slice(&3u32.to_le_bytes());
        assert!(matches!(
            FuseMsg::decode(2, &wrap),
            Err(DcdbError::FuseLength { .. })
        ));
        // Absent path (pathlen 0) and an inner NUL are what pmxcfs accepts.
        let none = FuseMsg {
            path: None,
            ..FuseMsg::mkdir("")
        };
        assert_eq!(FuseMsg::decode(2, &none.encode()), Ok(none));
        let inner = FuseMsg::mkdir("a\0b");
        let back = FuseMsg::decode(2, &inner.encode()).unwrap();
        assert_eq!(back.path_str(), Some("a"));
        assert_eq!(back.encode(), inner.encode());
    }
}
