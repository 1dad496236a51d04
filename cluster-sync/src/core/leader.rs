//! Leader selection and the update set, as pure functions.
use std::collections::{BTreeMap, BTreeSet};

use super::types::{DbIndex, Member};

/// pmxcfs's `dcdb_select_leader`: highest version, then highest mtime, then the lowest
/// `(nodeid, pid)`. `states` must be sorted by member; returns an index into it.
pub fn select_leader(states: &[(Member, DbIndex)]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, (_, idx)) in states.iter().enumerate() {
        best = match best {
            None => Some(i),
            Some(b) => {
                let bi = &states[b].1;
                // Strictly greater only: on a tie the earlier (lower) member stays.
                if (idx.version, idx.mtime) > (bi.version, bi.mtime) {
                    Some(i)
                } else {
                    Some(b)
                }
            }
        };
    }
    best
}

/// Inodes the leader must send: every leader entry whose digest differs from (or is
/// missing in) at least one out-of-date member. Entries an out-of-date member has
/// but the leader lacks are deleted by `install_update`, so need no message.
pub fn updates_needed<'a>(
    leader: &DbIndex,
    unsynced: impl IntoIterator<Item = &'a DbIndex>,
) -> Vec<u64> {
    let mut need = BTreeSet::new();
    for other in unsynced {
        let theirs: BTreeMap<u64, &[u8; 32]> = other.entries.iter().map(|(i, d)| (*i, d)).collect();
        for (ino, d) in &leader.entries {
            if theirs.get(ino) != Some(&d) {
                need.insert(*ino);
            }
        }
    }
    need.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(version: u64, mtime: u32, entries: &[(u64, u8)]) -> DbIndex {
        DbIndex {
            version,
            mtime,
            entries: entries.iter().map(|(i, d)| (*i, [*d; 32])).collect(),
        }
    }

    #[test]
    fn leader_is_highest_version_then_mtime_then_lowest_member() {
        let m = |n| Member::new(n, 100);
        let s = vec![
            (m(1), idx(5, 9, &[])),
            (m(2), idx(7, 1, &[])),
            (m(3), idx(7, 1, &[])),
        ];
        assert_eq!(select_leader(&s), Some(1));
        let s = vec![
            (m(1), idx(7, 1, &[])),
            (m(2), idx(7, 3, &[])),
            (m(3), idx(6, 9, &[])),
        ];
        assert_eq!(select_leader(&s), Some(1));
        let s = vec![(m(1), idx(7, 3, &[])), (m(2), idx(7, 3, &[]))];
        assert_eq!(select_leader(&s), Some(0));
        assert_eq!(select_leader(&[]), None);
    }

    #[test]
    fn update_set_is_union_of_differences() {
        let leader = idx(9, 0, &[(0, 1), (2, 2), (3, 3), (5, 5)]);
        let a = idx(8, 0, &[(0, 1), (2, 9), (3, 3)]); // 2 differs, 5 missing
        let b = idx(7, 0, &[(0, 1), (3, 7), (4, 4), (5, 5)]); // 2 missing, 3 differs, 4 extra
        assert_eq!(updates_needed(&leader, [&a, &b]), vec![2, 3, 5]);
        assert_eq!(updates_needed(&leader, [&leader]), Vec::<u64>::new());
    }
}
