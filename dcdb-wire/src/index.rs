//! The dcdb STATE payload, the memdb index (`memdb_encode_index`):
//! `u64 version; u64 last_inode; u32 writer; u32 mtime; u32 size; u32 bytes;` then
//! `size` × `{u64 inode; u8 digest[32]}` in ascending inode order, and the leader rule
//! that picks whose database the others copy (`dcdb_select_leader`,
//! `dcdb_create_and_send_updates`).

use std::collections::{BTreeMap, BTreeSet};

use crate::bytes::{len32, Reader};
use crate::DcdbError;

/// The index header.
pub const INDEX_HEADER: usize = 32;
/// One index entry.
pub const INDEX_ENTRY: usize = 40;

/// One inode's entry: its inode and the SHA-256 of its metadata (and file data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// The inode.
    pub inode: u64,
    /// `memdb_encode_index`'s digest (the inode is not part of it).
    pub digest: [u8; 32],
}

/// A member's memdb index, as its STATE carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    /// The root entry's version: the database version.
    pub version: u64,
    /// The highest inode in use.
    pub last_inode: u64,
    /// The root entry's writer.
    pub writer: u32,
    /// The root entry's mtime.
    pub mtime: u32,
    /// Every inode, the root included, ascending; `size` on the wire is their count and
    /// `bytes` = 32 + 40 × count.
    pub entries: Vec<IndexEntry>,
}

impl Index {
    /// The `bytes` field: the whole payload's length.
    pub fn bytes(&self) -> u32 {
        len32(INDEX_HEADER + INDEX_ENTRY * self.entries.len())
    }

    /// The STATE payload after the 32-byte state header.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(INDEX_HEADER + INDEX_ENTRY * self.entries.len());
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.last_inode.to_le_bytes());
        for v in [
            self.writer,
            self.mtime,
            len32(self.entries.len()),
            self.bytes(),
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for e in &self.entries {
            out.extend_from_slice(&e.inode.to_le_bytes());
            out.extend_from_slice(&e.digest);
        }
        out
    }

    /// Read a STATE payload. pmxcfs on receipt checks `len >= 32 && len == bytes`
    /// (`dcdb_process_state_update`); it does not check `size` against `bytes` there,
    /// and would walk past the end of a short index, so this also requires
    /// `bytes == 32 + 40 × size`, the check `memdb_index_copy` makes. The inode order is
    /// not checked (pmxcfs does not either).
    pub fn decode(payload: &[u8]) -> Result<Index, DcdbError> {
        let short = DcdbError::IndexShort(payload.len());
        let mut r = Reader::new(payload);
        let version = r.u64().ok_or(short.clone())?;
        let last_inode = r.u64().ok_or(short.clone())?;
        let writer = r.u32().ok_or(short.clone())?;
        let mtime = r.u32().ok_or(short.clone())?;
        let size = r.u32().ok_or(short.clone())?;
        let bytes = r.u32().ok_or(short)?;
        if payload.len() as u64 != u64::from(bytes) {
            return Err(DcdbError::IndexBytes {
                len: payload.len(),
                bytes,
            });
        }
        if u64::from(bytes) != INDEX_HEADER as u64 + INDEX_ENTRY as u64 * u64::from(size) {
            return Err(DcdbError::IndexSize { size, bytes });
        }
        let mut entries = Vec::with_capacity(r.rest().len() / INDEX_ENTRY);
        while let (Some(inode), Some(digest)) = (r.u64(), r.array::<32>()) {
            entries.push(IndexEntry { inode, digest });
        }
        Ok(Index {
            version,
            last_inode,
            writer,
            mtime,
            entries,
        })
    }
}

/// One member of a sync round and the index its STATE carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its corosync node id.
    pub nodeid: u32,
    /// Its pid.
    pub pid: u32,
    /// Its index.
    pub index: Index,
}

/// What the leader must do for one other member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDiff {
    /// The member's node id.
    pub nodeid: u32,
    /// The member's pid.
    pub pid: u32,
    /// Its index equals the leader's byte for byte: it goes SYNCED at once.
    pub synced: bool,
    /// The leader's inodes whose entry it lacks or has with another digest.
    pub differ: Vec<u64>,
    /// Its inodes the leader does not have: deleted at commit.
    pub delete: Vec<u64>,
}

/// The outcome of the leader rule over one round's STATEs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncPlan {
    /// The leader's (nodeid, pid).
    pub leader: (u32, u32),
    /// Every other member, in (nodeid, pid) order.
    pub members: Vec<MemberDiff>,
    /// The inodes the leader sends as UPDATEs: the union of every member's `differ`
    /// (pmxcfs sends them in hash-table order, so their order carries no meaning).
    pub updates: BTreeSet<u64>,
}

/// pmxcfs's leader rule, without I/O. Members are taken in (nodeid, pid) order, as
/// `dfsm` sorts them; a member replaces the current pick if its version is higher, or
/// equal with a higher mtime. A full tie keeps the earlier, so the lowest (nodeid,
/// pid) wins. `None` for no members (pmxcfs: "unable to select leader").
pub fn plan_sync(members: &[Member]) -> Option<SyncPlan> {
    let mut sorted: Vec<&Member> = members.iter().collect();
    sorted.sort_by_key(|m| (m.nodeid, m.pid));
    let mut leader = *sorted.first()?;
    for m in &sorted[1..] {
        let (a, b) = (&m.index, &leader.index);
        if a.version > b.version || (a.version == b.version && a.mtime > b.mtime) {
            leader = m;
        }
    }
    let master: BTreeMap<u64, [u8; 32]> = leader
        .index
        .entries
        .iter()
        .map(|e| (e.inode, e.digest))
        .collect();
    // pmxcfs merge-walks the sorted entry lists and compares whole 40-byte entries (and
    // reads one entry past a follower's end when the leader has more); a lookup by
    // inode gives the same set for sorted, duplicate-free indexes without that read.
    let mut updates = BTreeSet::new();
    let mut out = Vec::new();
    for m in sorted {
        if std::ptr::eq(m, leader) {
            continue;
        }
        let mine: BTreeMap<u64, [u8; 32]> = m
            .index
            .entries
            .iter()
            .map(|e| (e.inode, e.digest))
            .collect();
        let differ: Vec<u64> = master
            .iter()
            .filter(|(i, d)| mine.get(*i) != Some(*d))
            .map(|(i, _)| *i)
            .collect();
        let delete = mine
            .keys()
            .filter(|i| !master.contains_key(*i))
            .copied()
            .collect();
        updates.extend(differ.iter().copied());
        out.push(MemberDiff {
            nodeid: m.nodeid,
            pid: m.pid,
            synced: m.index == leader.index,
            differ,
            delete,
        });
    }
    Some(SyncPlan {
        leader: (leader.nodeid, leader.pid),
        members: out,
        updates,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{fixture, state_payload};
    use crate::update::InodeRecord;

    /// A captured STATE; `nodeid`/`pid` are its sender's, from manifest.tsv.
    fn captured(name: &str, nodeid: u32, pid: u32) -> Member {
        let b = fixture(name);
        let p = state_payload(&b, 2);
        let index = Index::decode(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(index.encode(), p, "{name} re-encodes");
        Member { nodeid, pid, index }
    }

    #[test]
    fn captured_states_decode() {
        let m = captured("n3/00010-pve_dcdb_v1.bin", 3, 11295);
        // manifest: version=35 last_inode=35 writer=2 mtime=1796160657 entries=12 bytes=512
        let i = &m.index;
        assert_eq!(
            (
                i.version,
                i.last_inode,
                i.writer,
                i.mtime,
                i.entries.len(),
                i.bytes()
            ),
            (35, 35, 2, 1_796_160_657, 12, 512)
        );
        assert_eq!(i.entries[0].inode, 0);
        assert!(i.entries.windows(2).all(|w| w[0].inode < w[1].inode));
        let a = captured("n1/00003-pve_dcdb_v1.bin", 1, 11277).index;
        assert_eq!((a.version, a.entries.len(), a.bytes()), (3, 2, 112));
    }

    #[test]
    fn e3_heal_leader_and_updates() {
        let ms = [
            captured("n1/00055-pve_dcdb_v1.bin", 1, 11277),
            captured("n3/00004-pve_dcdb_v1.bin", 3, 11295),
            captured("n2/00016-pve_dcdb_v1.bin", 2, 11286),
        ];
        let plan = plan_sync(&ms).unwrap();
        // 1 and 2 tie on version 32 and mtime: the lowest node id leads.
        assert_eq!(plan.leader, (1, 11277));
        assert_eq!(plan.members.len(), 2);
        assert!(plan.members[0].synced && plan.members[0].nodeid == 2);
        let n3 = &plan.members[1];
        assert!(!n3.synced && n3.delete.is_empty());
        // The UPDATEs the leader sent (n1 57, 58) are exactly the differing inodes.
        let sent: BTreeSet<u64> = ["n1/00057-pve_dcdb_v1.bin", "n1/00058-pve_dcdb_v1.bin"]
            .iter()
            .map(|f| {
                InodeRecord::decode(&state_payload(&fixture(f), 3))
                    .unwrap()
                    .inode
            })
            .collect();
        assert_eq!(plan.updates, sent);
        assert_eq!(n3.differ, vec![0, 31]);
    }

    #[test]
    fn f3_restart_leader_is_highest_version() {
        let ms = [
            captured("n1/00063-pve_dcdb_v1.bin", 1, 13718),
            captured("n3/00010-pve_dcdb_v1.bin", 3, 11295),
            captured("n2/00030-pve_dcdb_v1.bin", 2, 11286),
        ];
        let plan = plan_sync(&ms).unwrap();
        assert_eq!(plan.leader, (2, 11286));
        let sent: BTreeSet<u64> = [
            "n2/00032-pve_dcdb_v1.bin",
            "n2/00033-pve_dcdb_v1.bin",
            "n2/00034-pve_dcdb_v1.bin",
        ]
        .iter()
        .map(|f| {
            InodeRecord::decode(&state_payload(&fixture(f), 3))
                .unwrap()
                .inode
        })
        .collect();
        assert_eq!(plan.updates, sent);
        let n1 = plan.members.iter().find(|m| m.nodeid == 1).unwrap();
        assert!(!n1.synced);
        assert!(plan.members.iter().any(|m| m.nodeid == 3 && m.synced));
    }

    #[test]
    fn tie_breaks_and_follower_deletes() {
        let idx = |version, mtime, inodes: &[u64]| Index {
            version,
            last_inode: 0,
            writer: 0,
            mtime,
            entries: inodes
                .iter()
                .map(|i| IndexEntry {
                    inode: *i,
                    digest: [*i as u8; 32],
                })
                .collect(),
        };
        let m = |nodeid, pid, index| Member { nodeid, pid, index };
        // Higher mtime at equal version wins over a lower node id.
        let p = plan_sync(&[m(1, 5, idx(7, 10, &[0])), m(2, 1, idx(7, 11, &[0]))]).unwrap();
        assert_eq!(p.leader, (2, 1));
        // Full tie: lowest (nodeid, pid), whatever the input order.
        let p = plan_sync(&[m(3, 1, idx(7, 10, &[0])), m(3, 0, idx(7, 10, &[0]))]).unwrap();
        assert_eq!(p.leader, (3, 0));
        assert!(p.members[0].synced && p.updates.is_empty());
        // Version beats mtime; the follower's extra inode is deleted, missing one sent.
        let p = plan_sync(&[m(1, 1, idx(7, 99, &[0, 5])), m(2, 1, idx(8, 1, &[0, 6]))]).unwrap();
        assert_eq!(p.leader, (2, 1));
        assert_eq!(p.members[0].differ, vec![6]);
        assert_eq!(p.members[0].delete, vec![5]);
        assert_eq!(plan_sync(&[]), None);
    }

    #[test]
    fn wrong_lengths_are_specific_errors() {
        let good = captured("n1/00003-pve_dcdb_v1.bin", 1, 11277)
            .index
            .encode();
        assert_eq!(Index::decode(&good[..31]), Err(DcdbError::IndexShort(31)));
        assert_eq!(
            Index::decode(&good[..100]),
            Err(DcdbError::IndexBytes {
                len: 100,
                bytes: 112
            })
        );
        let mut s = good.clone();
        s[24] = 3;
        assert_eq!(
            Index::decode(&s),
            Err(DcdbError::IndexSize {
                size: 3,
                bytes: 112
            })
        );
    }
}
