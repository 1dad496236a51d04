//! What is wrong with a database's rows, and the largest consistent tree within them.
//! pmxcfs (and pmxfs at start-up) refuse a tree with an entry they cannot place
//! ("found entry with duplicate name", "missing directory inode", …); this module says
//! every such problem at once, and keeps every entry that can stay: an entry stays if
//! its name is valid, its parent stays and is a directory, and no other entry of that
//! directory with the same name wins (the newest version wins, then the higher inode).
//! Everything beneath a dropped entry is dropped with it. No I/O.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::entry::{Inode, Kind, Row, ROOT_INODE};
use crate::paths::check_name;

/// Why a row cannot stay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Its name is empty, `.`, `..`, or holds `/` or NUL.
    BadName,
    /// Its parent is in no row (pmxcfs: "missing directory inode").
    MissingParent(Inode),
    /// Its parent is a file.
    ParentNotDir(Inode),
    /// Another entry of its directory has the same name and won (pmxcfs: "found entry
    /// with duplicate name").
    DuplicateOf(Inode),
    /// An ancestor was dropped.
    Beneath(Inode),
    /// Not reachable from the root although its parent exists (a cycle).
    Unreachable,
    /// The row itself could not be read (unknown type, …), as the store says.
    Unreadable(String),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::BadName => write!(f, "invalid name"),
            Problem::MissingParent(p) => write!(f, "missing directory inode {}", p.0),
            Problem::ParentNotDir(p) => write!(f, "parent {} is not a directory", p.0),
            Problem::DuplicateOf(w) => {
                write!(f, "found entry with duplicate name (inode {} kept)", w.0)
            }
            Problem::Beneath(a) => write!(f, "inside dropped inode {}", a.0),
            Problem::Unreachable => write!(f, "not reachable from the root (a cycle)"),
            Problem::Unreadable(why) => write!(f, "unreadable row: {why}"),
        }
    }
}

/// A dropped row: its inode, parent and name as stored, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// Its inode.
    pub inode: Inode,
    /// Its parent, as stored.
    pub parent: Inode,
    /// Its name, as stored.
    pub name: String,
    /// Why it goes.
    pub problem: Problem,
}

/// The outcome: the rows that stay (a valid tree) and those that go.
#[derive(Debug, Default)]
pub struct Diagnosis {
    /// Rows of the consistent tree, in inode order.
    pub kept: Vec<Row>,
    /// Rows that cannot stay, in inode order.
    pub dropped: Vec<Dropped>,
}

impl Diagnosis {
    /// Whether the rows already form a valid tree.
    pub fn is_clean(&self) -> bool {
        self.dropped.is_empty()
    }
}

/// Diagnose `rows` (the root excluded) and `unreadable` rows the store could not
/// decode (inode, reason).
pub fn diagnose(rows: Vec<Row>, unreadable: Vec<(Inode, String)>) -> Diagnosis {
    let by_ino: HashMap<Inode, &Row> = rows.iter().map(|r| (r.inode, r)).collect();
    let mut children: HashMap<Inode, BTreeMap<&str, Vec<&Row>>> = HashMap::new();
    for r in &rows {
        children
            .entry(r.parent)
            .or_default()
            .entry(r.name.as_str())
            .or_default()
            .push(r);
    }
    let mut verdict: HashMap<Inode, Problem> = HashMap::new();
    let mut kept: HashSet<Inode> = HashSet::new();
    // Walk from the root: each directory's names, one winner per name.
    let mut stack = vec![ROOT_INODE];
    while let Some(dir) = stack.pop() {
        let Some(names) = children.get(&dir) else {
            continue;
        };
        for group in names.values() {
            let mut ok: Vec<&Row> = Vec::new();
            for r in group {
                if r.inode == ROOT_INODE
                    || check_name(&r.name).is_err_and(|e| e != nix::errno::Errno::ENAMETOOLONG)
                {
                    verdict.insert(r.inode, Problem::BadName);
                } else {
                    ok.push(r);
                }
            }
            let Some(winner) = ok.iter().max_by_key(|r| (r.version, r.inode)).copied() else {
                continue;
            };
            for r in ok.iter().filter(|r| r.inode != winner.inode) {
                verdict.insert(r.inode, Problem::DuplicateOf(winner.inode));
            }
            kept.insert(winner.inode);
            if winner.kind == Kind::Dir {
                stack.push(winner.inode);
            }
        }
    }
    // Why the rest were not reached: their own fault, or an ancestor's.
    for r in &rows {
        if kept.contains(&r.inode) || verdict.contains_key(&r.inode) {
            continue;
        }
        let p = match by_ino.get(&r.parent) {
            None if r.parent != ROOT_INODE => Problem::MissingParent(r.parent),
            Some(parent) if parent.kind != Kind::Dir => Problem::ParentNotDir(r.parent),
            _ => Problem::Unreachable,
        };
        verdict.insert(r.inode, p);
    }
    // Entries under a directory that went were not reached either: name the ancestor.
    for r in &rows {
        if let Some(Problem::Unreachable) = verdict.get(&r.inode) {
            if let Some(a) = dropped_ancestor(r, &by_ino, &verdict) {
                verdict.insert(r.inode, Problem::Beneath(a));
            }
        }
    }
    let mut out = Diagnosis::default();
    for r in rows {
        match verdict.remove(&r.inode) {
            Some(problem) => out.dropped.push(Dropped {
                inode: r.inode,
                parent: r.parent,
                name: r.name.clone(),
                problem,
            }),
            None => {
                debug_assert!(kept.contains(&r.inode), "every row is kept or dropped");
                out.kept.push(r);
            }
        }
    }
    for (inode, why) in unreadable {
        out.dropped.push(Dropped {
            inode,
            parent: ROOT_INODE,
            name: String::new(),
            problem: Problem::Unreadable(why),
        });
    }
    out.kept.sort_by_key(|r| r.inode);
    out.dropped.sort_by_key(|d| d.inode);
    out
}

/// The nearest ancestor of `r` with a verdict of its own (not a cycle member), if any.
fn dropped_ancestor(
    r: &Row,
    by_ino: &HashMap<Inode, &Row>,
    verdict: &HashMap<Inode, Problem>,
) -> Option<Inode> {
    let mut seen = HashSet::new();
    let mut at = r.parent;
    while at != ROOT_INODE && seen.insert(at) {
        match verdict.get(&at) {
            Some(Problem::Unreachable) | None => {}
            Some(_) => return Some(at),
        }
        at = by_ino.get(&at)?.parent;
    }
    None
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn row(inode: u64, parent: u64, name: &str, kind: Kind, version: u64) -> Row {
        Row {
            inode: Inode(inode),
            parent: Inode(parent),
            version,
            writer: 0,
            mtime: 0,
            kind,
            name: name.into(),
            data: Arc::new(Vec::new()),
        }
    }

    fn problems(d: &Diagnosis) -> Vec<(u64, Problem)> {
        d.dropped
            .iter()
            .map(|x| (x.inode.0, x.problem.clone()))
            .collect()
    }

    #[test]
    fn a_valid_tree_is_clean() {
        let d = diagnose(
            vec![
                row(2, 0, "nodes", Kind::Dir, 2),
                row(3, 2, "n1", Kind::Dir, 3),
                row(4, 3, "x.conf", Kind::File, 4),
            ],
            vec![],
        );
        assert!(d.is_clean());
        assert_eq!(d.kept.len(), 3);
    }

    #[test]
    fn every_problem_pmxcfs_refuses_is_named_and_the_rest_kept() {
        let d = diagnose(
            vec![
                row(2, 0, "a", Kind::Dir, 2),
                // Duplicate names in the root: the newer version wins.
                row(3, 0, "dup", Kind::File, 3),
                row(4, 0, "dup", Kind::Dir, 9),
                row(5, 4, "under-winner", Kind::File, 5),
                // A missing parent, and a child of that orphan.
                row(6, 77, "orphan", Kind::Dir, 6),
                row(7, 6, "orphans-child", Kind::File, 7),
                // A file as parent.
                row(8, 3, "in-a-file", Kind::File, 8),
                // A bad name, and a child of it.
                row(10, 0, "a/b", Kind::Dir, 10),
                row(11, 10, "c", Kind::File, 11),
                // A cycle.
                row(12, 13, "p", Kind::Dir, 12),
                row(13, 12, "q", Kind::Dir, 13),
            ],
            vec![(Inode(20), "unknown type 9".into())],
        );
        let kept: Vec<u64> = d.kept.iter().map(|r| r.inode.0).collect();
        assert_eq!(kept, vec![2, 4, 5]);
        assert_eq!(
            problems(&d),
            vec![
                (3, Problem::DuplicateOf(Inode(4))),
                (6, Problem::MissingParent(Inode(77))),
                (7, Problem::Beneath(Inode(6))),
                (8, Problem::ParentNotDir(Inode(3))),
                (10, Problem::BadName),
                (11, Problem::Beneath(Inode(10))),
                (12, Problem::Unreachable),
                (13, Problem::Unreachable),
                (20, Problem::Unreadable("unknown type 9".into())),
            ]
        );
        assert_eq!(
            Problem::MissingParent(Inode(77)).to_string(),
            "missing directory inode 77"
        );
    }

    #[test]
    fn kept_rows_form_a_tree_the_loader_accepts() {
        let d = diagnose(
            vec![
                row(3, 0, "dup", Kind::File, 3),
                row(4, 0, "dup", Kind::File, 3),
                row(5, 99, "gone", Kind::File, 5),
            ],
            vec![],
        );
        // Equal versions: the higher inode wins.
        assert_eq!(
            d.kept.iter().map(|r| r.inode.0).collect::<Vec<_>>(),
            vec![4]
        );
        let root = crate::entry::RootVersion {
            version: 5,
            writer: 0,
            mtime: 0,
        };
        assert!(crate::build_tree(d.kept, root).is_ok());
    }
}
