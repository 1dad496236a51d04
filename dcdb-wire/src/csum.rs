//! The SHA-256 digests memdb computes over one tree entry (`memdb.c`).

use sha2::{Digest, Sha256};

use crate::update::{InodeRecord, DT_REG};

fn hash(r: &InodeRecord, with_inode: bool) -> [u8; 32] {
    let mut h = Sha256::new();
    if with_inode {
        h.update(r.inode.to_le_bytes());
    }
    h.update(r.version.to_le_bytes());
    h.update(r.writer.to_le_bytes());
    h.update(r.mtime.to_le_bytes());
    h.update(r.size().to_le_bytes());
    h.update([r.kind]);
    h.update(r.parent.to_le_bytes());
    // `strlen(te->name)`: up to the first NUL.
    let end = r.name.iter().position(|c| *c == 0).unwrap_or(r.name.len());
    h.update(&r.name[..end]);
    if r.kind == DT_REG && !r.data.is_empty() {
        h.update(&r.data);
    }
    h.finalize().into()
}

/// `memdb_tree_entry_csum`: what UNLOCK_REQUEST/UNLOCK carry for a lock directory.
/// Over inode, version, writer, mtime, size, type, parent, name (and a file's data).
pub fn entry_csum(r: &InodeRecord) -> [u8; 32] {
    hash(r, true)
}

/// The memdb index digest of an entry (`memdb_encode_index`): as [`entry_csum`] but
/// without the inode.
pub fn index_digest(r: &InodeRecord) -> [u8; 32] {
    hash(r, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Index;
    use crate::testdata::{fixture, normal_payload, state_payload};
    use crate::unlock::UnlockMsg;
    use crate::update::DT_DIR;

    #[test]
    fn captured_updates_hash_to_the_leaders_index() {
        let idx = Index::decode(&state_payload(&fixture("n2/00030-pve_dcdb_v1.bin"), 2)).unwrap();
        for f in [
            "n2/00032-pve_dcdb_v1.bin",
            "n2/00033-pve_dcdb_v1.bin",
            "n2/00034-pve_dcdb_v1.bin",
        ] {
            let r = InodeRecord::decode(&state_payload(&fixture(f), 3)).unwrap();
            let e = idx.entries.iter().find(|e| e.inode == r.inode).unwrap();
            assert_eq!(index_digest(&r), e.digest, "{f}");
            assert_ne!(entry_csum(&r), e.digest);
        }
    }

    #[test]
    fn c3_unlock_request_csum() {
        let (_, p) = normal_payload(&fixture("n1/00040-pve_dcdb_v1.bin"));
        let m = UnlockMsg::decode(7, &p).unwrap();
        // priv/lock/capture as replaying the captured messages gives it: created by
        // MKDIR at version 28 (so inode 28) under priv/lock (inode 27), then the c2
        // lock refresh (MTIME 1796160510 from node 1) made version 29.
        let lock = InodeRecord {
            parent: 27,
            inode: 28,
            version: 29,
            writer: 1,
            mtime: 1_796_160_510,
            kind: DT_DIR,
            name: b"capture".to_vec(),
            data: Vec::new(),
        };
        assert_eq!(entry_csum(&lock), m.csum);
    }
}
