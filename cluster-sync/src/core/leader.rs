//! Leader selection and the update set, as pure functions.
use std::collections::{BTreeMap, BTreeSet};

use super::types::{DbIndex, Member};

/// Highest term, then pmxcfs's `dcdb_select_leader`: highest version, then highest
/// mtime, then the lowest `(nodeid, pid)`. `states` must be sorted by member; returns
/// an index into it.
///
/// The term comes first because a version only orders trees of one history: a node
/// that kept applying its own writes after its partners crashed holds a higher version
/// than the history a majority accepted later under a higher term, and must lose.
/// Within one term every tree is the term's starting tree plus a prefix of the same
/// write sequence, so there the highest version is the most complete.
pub fn select_leader(states: &[(Member, DbIndex)]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, (_, idx)) in states.iter().enumerate() {
        best = match best {
            None => Some(i),
            Some(b) => {
                let bi = &states[b].1;
                // Strictly greater only: on a tie the earlier (lower) member stays.
                if (idx.term, idx.version, idx.mtime) > (bi.term, bi.version, bi.mtime) {
                    Some(i)
                } else {
                    Some(b)
                }
            }
        };
    }
    best
}

/// pmxcfs's `dcdb_select_leader` alone, for compat mode: the highest version, then the
/// highest mtime, then the lowest `(nodeid, pid)`; terms are not looked at. `states`
/// must be sorted by member; returns an index into it.
pub fn select_leader_dfsm(states: &[(Member, DbIndex)]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, (_, idx)) in states.iter().enumerate() {
        best = match best {
            Some(b) if (idx.version, idx.mtime) <= (states[b].1.version, states[b].1.mtime) => {
                Some(b)
            }
            _ => Some(i),
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
            term: 0,
            version,
            mtime,
            writer: 0,
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

    fn termed(term: u64, version: u64, mtime: u32) -> DbIndex {
        DbIndex {
            term,
            ..idx(version, mtime, &[])
        }
    }

    #[test]
    fn term_is_compared_before_version_mtime_and_member() {
        let m = |n| Member::new(n, 100);
        // A higher term wins over any version and mtime.
        let s = vec![
            (m(1), termed(3, 90, 999)),
            (m(2), termed(4, 10, 1)),
            (m(3), termed(2, 500, 2000)),
        ];
        assert_eq!(select_leader(&s), Some(1));
        // Equal terms fall back to version, then mtime, then the lowest member.
        let s = vec![
            (m(1), termed(4, 10, 1)),
            (m(2), termed(4, 11, 0)),
            (m(3), termed(4, 11, 0)),
        ];
        assert_eq!(select_leader(&s), Some(1));
        let s = vec![(m(1), termed(4, 11, 0)), (m(2), termed(4, 11, 5))];
        assert_eq!(select_leader(&s), Some(1));
    }

    /// The lost-write scenario: a node whose partners crashed before delivering its
    /// writes kept applying them (version 40, term 7), while the restarted majority
    /// accepted term 8 and wrote less (version 25). The majority's tree must win.
    #[test]
    fn minority_branch_with_higher_version_but_older_term_loses() {
        let m = |n| Member::new(n, 100);
        let s = vec![
            (m(1), termed(7, 40, 5000)),
            (m(2), termed(8, 25, 4000)),
            (m(3), termed(8, 25, 4000)),
        ];
        assert_eq!(select_leader(&s), Some(1));
        // Without terms (all 0, as pmxcfs) the stale branch would have won.
        let s: Vec<_> = s
            .into_iter()
            .map(|(m, i)| (m, DbIndex { term: 0, ..i }))
            .collect();
        assert_eq!(select_leader(&s), Some(0));
    }

    #[test]
    fn compat_leader_ignores_terms() {
        let m = |n| Member::new(n, 100);
        let s = vec![
            (m(1), termed(9, 40, 5000)),
            (m(2), termed(1, 41, 1)),
            (m(3), termed(1, 41, 1)),
        ];
        assert_eq!(select_leader_dfsm(&s), Some(1));
        let s = vec![(m(1), termed(0, 41, 1)), (m(2), termed(0, 41, 2))];
        assert_eq!(select_leader_dfsm(&s), Some(1));
        let s = vec![(m(1), termed(0, 41, 2)), (m(2), termed(5, 41, 2))];
        assert_eq!(select_leader_dfsm(&s), Some(0));
        assert_eq!(select_leader_dfsm(&[]), None);
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
