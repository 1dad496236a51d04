//! The UPDATE payload: one inode record the leader sends per differing inode
//! (`dcdb_send_update_inode`, `dcdb_parse_update_inode`):
//! `u64 parent; u64 inode; u64 version; u32 writer; u32 mtime; u32 size; u32 namelen;
//! u8 type;` then `name[namelen]` (NUL included) and, for a non-empty file, `data[size]`.

use crate::bytes::{len32, Reader};
use crate::fuse::c_view;
use crate::DcdbError;

/// The fixed part of an inode record.
pub const UPDATE_HEADER: usize = 41;
/// `DT_DIR`.
pub const DT_DIR: u8 = 4;
/// `DT_REG`.
pub const DT_REG: u8 = 8;

/// One memdb tree entry as an UPDATE carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InodeRecord {
    /// The parent directory's inode (0 for the root and its children).
    pub parent: u64,
    /// This entry's inode (0 = the root, which carries the database version).
    pub inode: u64,
    /// The database version of the entry's last change.
    pub version: u64,
    /// The node id that made the last change.
    pub writer: u32,
    /// The mtime of the last change.
    pub mtime: u32,
    /// [`DT_DIR`] or [`DT_REG`].
    pub kind: u8,
    /// The name bytes before the final NUL (the root's is empty).
    pub name: Vec<u8>,
    /// The file's contents; `size` on the wire is their length. pmxcfs sends none for
    /// a directory, and ignores (but accepts) any a directory record carries.
    pub data: Vec<u8>,
}

impl InodeRecord {
    /// The name as pmxcfs reads it, if UTF-8.
    pub fn name_str(&self) -> Option<&str> {
        c_view(&self.name)
    }

    /// The `size` field.
    pub fn size(&self) -> u32 {
        len32(self.data.len())
    }

    /// The payload after the 32-byte state header.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(UPDATE_HEADER + self.name.len() + 1 + self.data.len());
        out.extend_from_slice(&self.parent.to_le_bytes());
        out.extend_from_slice(&self.inode.to_le_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        for v in [
            self.writer,
            self.mtime,
            self.size(),
            len32(self.name.len()) + 1,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.push(self.kind);
        out.extend_from_slice(&self.name);
        out.push(0);
        out.extend_from_slice(&self.data);
        out
    }

    /// Read an UPDATE payload as pmxcfs does: type 4 or 8, `len − 41 == size + namelen`,
    /// and the name's last byte NUL.
    ///
    /// pmxcfs's header check is `msg_len < 40`, one short of the 41 bytes it reads. A
    /// 40-byte record passes that check, pmxcfs reads `type` one byte past the end, and
    /// its remaining length then wraps to `SIZE_MAX`, which never equals `size +
    /// namelen`: pmxcfs always refuses it (which error depends on the stray byte). So
    /// refusing everything under 41 bytes accepts and refuses exactly what pmxcfs does.
    /// `namelen` 0 is refused too: pmxcfs then checks `name[-1]`, the type byte, which
    /// is 4 or 8 and never NUL. pmxcfs adds `size + namelen` in 32 bits; a sum that
    /// wraps is refused here (pmxcfs would read out of bounds).
    pub fn decode(payload: &[u8]) -> Result<InodeRecord, DcdbError> {
        let short = DcdbError::UpdateShort(payload.len());
        let mut r = Reader::new(payload);
        let parent = r.u64().ok_or(short.clone())?;
        let inode = r.u64().ok_or(short.clone())?;
        let version = r.u64().ok_or(short.clone())?;
        let writer = r.u32().ok_or(short.clone())?;
        let mtime = r.u32().ok_or(short.clone())?;
        let size = r.u32().ok_or(short.clone())?;
        let namelen = r.u32().ok_or(short.clone())?;
        let kind = r.u8().ok_or(short)?;
        if kind != DT_DIR && kind != DT_REG {
            return Err(DcdbError::InodeType(kind));
        }
        let expected = u64::from(size) + u64::from(namelen);
        if r.rest().len() as u64 != expected {
            return Err(DcdbError::UpdateLength {
                len: r.rest().len(),
                expected,
            });
        }
        let name = usize::try_from(namelen)
            .ok()
            .and_then(|n| r.take(n))
            .ok_or(DcdbError::NameNotTerminated)?;
        let Some((0, name)) = name.split_last() else {
            return Err(DcdbError::NameNotTerminated);
        };
        Ok(InodeRecord {
            parent,
            inode,
            version,
            writer,
            mtime,
            kind,
            name: name.to_vec(),
            data: r.rest().to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{fixture, state_payload};

    #[test]
    fn captured_e3_updates() {
        let b = fixture("n1/00058-pve_dcdb_v1.bin");
        let p = state_payload(&b, 3);
        let r = InodeRecord::decode(&p).unwrap();
        // manifest: parent=0 inode=31 version=32 writer=1 mtime=1796160645 size=26 type=8
        assert_eq!(
            (
                r.parent,
                r.inode,
                r.version,
                r.writer,
                r.mtime,
                r.size(),
                r.kind
            ),
            (0, 31, 32, 1, 1_796_160_645, 26, DT_REG)
        );
        assert_eq!(r.name_str(), Some("capture-partition.txt"));
        assert_eq!(r.data, b"written while pcs3 is cut\n");
        assert_eq!(r.encode(), p);
        let root =
            InodeRecord::decode(&state_payload(&fixture("n1/00057-pve_dcdb_v1.bin"), 3)).unwrap();
        assert_eq!((root.inode, root.version, root.kind), (0, 32, DT_DIR));
        assert_eq!(root.name, b"");
        assert!(root.data.is_empty());
    }

    #[test]
    fn wrong_lengths_are_specific_errors() {
        let rec = InodeRecord {
            parent: 1,
            inode: 2,
            version: 3,
            writer: 4,
            mtime: 5,
            kind: DT_REG,
            name: b"f".to_vec(),
            data: b"abc".to_vec(),
        };
        let good = rec.encode();
        assert_eq!(InodeRecord::decode(&good), Ok(rec));
        assert_eq!(
            InodeRecord::decode(&good[..40]),
            Err(DcdbError::UpdateShort(40))
        );
        assert_eq!(
            InodeRecord::decode(&good[..good.len() - 1]),
            Err(DcdbError::UpdateLength {
                len: 4,
                expected: 5
            })
        );
        let mut t = good.clone();
        t[40] = 1;
        assert_eq!(InodeRecord::decode(&t), Err(DcdbError::InodeType(1)));
        let mut n = good.clone();
        n[42] = b'x';
        assert_eq!(InodeRecord::decode(&n), Err(DcdbError::NameNotTerminated));
        // namelen 0, size 5: lengths agree, but there is no NUL to end the name.
        let mut z = good.clone();
        z[32..36].copy_from_slice(&5u32.to_le_bytes());
        z[36..40].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(InodeRecord::decode(&z), Err(DcdbError::NameNotTerminated));
    }
}
