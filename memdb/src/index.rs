//! pmxcfs's database index: a SHA-256 digest per entry, exchanged during cluster sync
//! to find which entries differ (`memdb_encode_index` in pve-cluster). The byte layout
//! is pmxcfs's (little-endian fields in struct order), checked against its golden test.

use sha2::{Digest as _, Sha256};

use super::entry::{Entry, RootVersion, Row};
use super::MemDb;

/// One index entry: inode and digest.
pub type IndexEntry = (u64, [u8; 32]);

/// Digest of an entry: H(version‖writer‖mtime‖size‖type‖parent‖name‖data); the inode is
/// not hashed, so a recreated entry with identical content compares equal.
pub fn entry_digest(e: &Entry) -> [u8; 32] {
    let mut h = Sha256::new();
    feed(&mut h, &e.row, false);
    h.finalize().into()
}

/// Hash `r` as pmxcfs's memdb does, with or without its inode first: `memdb_encode_index`
/// per entry without, `memdb_compute_checksum` over all entries with. Directories hold
/// no data, so "a file's data" and "any data" hash alike.
pub(crate) fn feed(h: &mut Sha256, r: &Row, with_inode: bool) {
    if with_inode {
        h.update(r.inode.0.to_le_bytes());
    }
    h.update(r.version.to_le_bytes());
    h.update(r.writer.to_le_bytes());
    h.update(r.mtime.to_le_bytes());
    h.update((r.data.len() as u32).to_le_bytes());
    h.update([r.kind.dtype()]);
    h.update(r.parent.0.to_le_bytes());
    h.update(r.name.as_bytes());
    if !r.data.is_empty() {
        h.update(&r.data[..]);
    }
}

impl MemDb {
    /// `(inode, digest)` of every entry including the root, sorted by inode.
    pub fn index_entries(&self) -> Vec<IndexEntry> {
        let mut v: Vec<IndexEntry> = self
            .entries_iter()
            .map(|e| (e.row.inode.0, entry_digest(e)))
            .collect();
        v.sort_unstable_by_key(|(i, _)| *i);
        v
    }

    /// pmxcfs's binary index: `{u64 version, u64 last_inode, u32 writer, u32 mtime,
    /// u32 count, u32 bytes}` then `{u64 inode, u8 digest[32]}` per entry.
    pub fn encode_index(&self) -> Vec<u8> {
        let entries = self.index_entries();
        encode(self.root_version(), &entries)
    }
}

/// Encode an index in pmxcfs's layout.
pub fn encode(root: RootVersion, entries: &[IndexEntry]) -> Vec<u8> {
    let bytes = 32 + entries.len() * 40;
    let last_inode = entries.iter().map(|(i, _)| *i).max().unwrap_or(0);
    let mut out = Vec::with_capacity(bytes);
    out.extend_from_slice(&root.version.to_le_bytes());
    out.extend_from_slice(&last_inode.to_le_bytes());
    out.extend_from_slice(&root.writer.to_le_bytes());
    out.extend_from_slice(&root.mtime.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    out.extend_from_slice(&(bytes as u32).to_le_bytes());
    for (ino, d) in entries {
        out.extend_from_slice(&ino.to_le_bytes());
        out.extend_from_slice(d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Limits, NullStore, Op, OpCtx};

    /// pve-cluster `check_memdb.c:test_indextest1`, byte for byte.
    #[test]
    fn golden_index_matches_pmxcfs() {
        let mut db = MemDb::empty(Box::new(NullStore), Limits::default());
        let c = OpCtx {
            writer: 0,
            now: 1234,
        };
        for i in 0..100 {
            let path = format!("testfile{i}");
            db.apply(&Op::Create { path: path.clone() }, c).unwrap();
            let w = Op::Write {
                path,
                offset: 0,
                data: vec![0; 32 * 1024],
                truncate: false,
            };
            db.apply(&w, c).unwrap();
        }
        let idx = db.encode_index();
        assert_eq!(db.root_version().version, 201);
        assert_eq!(
            u64::from_le_bytes(idx[8..16].try_into().unwrap()),
            200,
            "last_inode"
        );
        assert_eq!(idx.len(), 101 * 40 + 32);
        let hex: String = Sha256::digest(&idx)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "913fd95015af9d93f10dd51ba2a7bb11351bcfe040be21e95fcba834adc3ec10"
        );
    }
}
