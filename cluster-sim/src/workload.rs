//! Clients and the operations they issue on the real tree: files (create, write,
//! truncate, rename, unlink), directories (mkdir, rename, rmdir) and cluster locks
//! (acquire by mkdir, refresh by mtime, release by rmdir, `utime(0,0)` unlock requests,
//! which with expiry make takeovers). The mix is drawn per seed.
use std::collections::{BTreeMap, HashMap};

use memdb::paths::LOCK_DIR;
use memdb::Op;

use crate::rng::Rng;

/// A request's id, unique in a run.
pub type OpId = u64;

/// What a request does, for the mix and the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Create an empty file.
    Create,
    /// Write a file (whole, or a part of it).
    Write,
    /// Truncate a file.
    Truncate,
    /// Create a plain directory.
    Mkdir,
    /// Remove a plain directory.
    Rmdir,
    /// Rename a file or a directory.
    Rename,
    /// Remove a file.
    Unlink,
    /// Acquire a lock (mkdir under `priv/lock`).
    Lock,
    /// Refresh a held lock (its mtime).
    Refresh,
    /// Release a held lock (rmdir).
    Release,
    /// Ask to remove an expired lock (`utime(0,0)`).
    Unlock,
}

/// Every kind, in report order.
pub const KINDS: [Kind; 11] = [
    Kind::Create,
    Kind::Write,
    Kind::Truncate,
    Kind::Mkdir,
    Kind::Rmdir,
    Kind::Rename,
    Kind::Unlink,
    Kind::Lock,
    Kind::Refresh,
    Kind::Release,
    Kind::Unlock,
];

/// How long a client acts on a lock after it acquired or refreshed it (PVE's `cfs_lock`
/// runs the locked code under a 60 s alarm), well inside the 120 s expiry.
pub const LOCK_USE: u32 = 60;

const DIRS: [&str; 4] = ["a", "b", "a/d0", "b/d1"];
const LOCKS: [&str; 2] = ["L0", "L1"];

/// One client of one node: at most one request outstanding.
#[derive(Debug)]
pub struct Client {
    /// The node it talks to.
    pub node: usize,
    /// Its outstanding request.
    pub busy: Option<(OpId, Kind, Op)>,
    /// Locks it believes it holds: name → the time it acquired or last refreshed it,
    /// and the request that did.
    pub locks: BTreeMap<String, (u32, OpId)>,
}

/// Everything issued so far.
#[derive(Debug)]
pub struct Workload {
    /// The clients.
    pub clients: Vec<Client>,
    weights: Vec<(Kind, u32)>,
    /// (writer node id, op, request time) → id: how an applied op is recognised. The
    /// generator never issues two requests with the same key.
    issued: HashMap<(u32, String, u32), OpId>,
    kinds: HashMap<OpId, Kind>,
    next_id: OpId,
}

/// The identity of an op as every node sees it applied.
fn key(writer: u32, op: &Op, time: u32) -> (u32, String, u32) {
    (writer, format!("{op:?}"), time)
}

impl Workload {
    /// `per_node` clients on each of `n` nodes, with a mix drawn from `rng`: every
    /// kind has a weight of 1 to 10, and unless `full`, each may be left out (one in
    /// five), so that some seeds concentrate on a few kinds.
    pub fn new(n: usize, per_node: usize, rng: &mut Rng, full: bool) -> Workload {
        let weights = KINDS
            .iter()
            .map(|k| {
                let w = if !full && rng.percent(20) {
                    0
                } else {
                    rng.range(1, 10) as u32
                };
                (*k, w)
            })
            .collect();
        Workload {
            clients: (0..n * per_node)
                .map(|i| Client {
                    node: i % n,
                    busy: None,
                    locks: BTreeMap::new(),
                })
                .collect(),
            weights,
            issued: HashMap::new(),
            kinds: HashMap::new(),
            next_id: 1,
        }
    }

    /// The kind of request `id`.
    pub fn kind(&self, id: OpId) -> Option<Kind> {
        self.kinds.get(&id).copied()
    }

    /// The request an applied op (by `writer`, stamped `time`) answers.
    pub fn identify(&self, writer: u32, op: &Op, time: u32) -> Option<OpId> {
        self.issued.get(&key(writer, op, time)).copied()
    }

    /// Request `id`, made before the switch, is submitted again at `now` (the
    /// term-protocol core stamps it then): an op applied with that time answers it.
    /// False if another request of `writer` already has that op at that time.
    pub fn reissue(&mut self, writer: u32, op: &Op, now: u32, id: OpId) -> bool {
        *self.issued.entry(key(writer, op, now)).or_insert(id) == id
    }

    /// A new request for client `ci` (on node id `writer`) at `now`, if the client has
    /// one to make; it is recorded as the client's outstanding one. `known` lists the
    /// files and directories the client's node holds: most requests that need an
    /// existing entry pick one of those, the rest any name.
    pub fn issue(
        &mut self,
        ci: usize,
        writer: u32,
        now: u32,
        known: &Known,
        rng: &mut Rng,
    ) -> Option<(OpId, Op)> {
        let c = &mut self.clients[ci];
        c.locks
            .retain(|_, (t, _)| now.saturating_sub(*t) <= LOCK_USE);
        let total: u32 = self.weights.iter().map(|(_, w)| w).sum();
        if total == 0 {
            return None;
        }
        let mut roll = rng.below(total as usize) as u32;
        let kind = self
            .weights
            .iter()
            .find(|(_, w)| {
                let hit = roll < *w;
                roll = roll.saturating_sub(*w);
                hit
            })
            .map(|(k, _)| *k)
            .expect("a kind within the total weight");
        let id = self.next_id;
        let op = self.op_of(ci, kind, id, now, known, rng)?;
        let k = key(writer, &op, now);
        if self.issued.contains_key(&k) {
            return None; // the same op from this node at this time is already out
        }
        self.next_id += 1;
        self.issued.insert(k, id);
        self.kinds.insert(id, kind);
        let c = &mut self.clients[ci];
        if matches!(kind, Kind::Release) {
            // The client stops relying on the lock as soon as it asks to release it.
            if let Op::Delete { path } = &op {
                c.locks.remove(path.rsplit('/').next().unwrap_or_default());
            }
        }
        c.busy = Some((id, kind, op.clone()));
        Some((id, op))
    }

    fn op_of(
        &self,
        ci: usize,
        kind: Kind,
        id: OpId,
        now: u32,
        known: &Known,
        rng: &mut Rng,
    ) -> Option<Op> {
        let c = &self.clients[ci];
        let existing_file = |rng: &mut Rng| pick_or(&known.files, rng, file);
        let existing_dir = |rng: &mut Rng| pick_or(&known.dirs, rng, subdir);
        let holds = |path: &str| {
            c.locks
                .contains_key(path.rsplit('/').next().unwrap_or_default())
        };
        Some(match kind {
            Kind::Create => Op::Create { path: file(rng) },
            Kind::Write => {
                let data = format!("op {id}\n").into_bytes();
                let partial = rng.percent(30);
                Op::Write {
                    path: existing_file(rng),
                    offset: if partial { rng.below(16) as u64 } else { 0 },
                    data,
                    truncate: !partial,
                }
            }
            Kind::Truncate => Op::Write {
                path: existing_file(rng),
                offset: rng.below(8) as u64,
                data: Vec::new(),
                truncate: true,
            },
            Kind::Mkdir => Op::Mkdir { path: subdir(rng) },
            Kind::Rmdir => Op::Delete {
                path: existing_dir(rng),
            },
            Kind::Rename if rng.percent(70) => Op::Rename {
                from: existing_file(rng),
                to: file(rng),
            },
            Kind::Rename => Op::Rename {
                from: existing_dir(rng),
                to: subdir(rng),
            },
            Kind::Unlink => Op::Delete {
                path: existing_file(rng),
            },
            Kind::Lock => {
                let path = lock(rng);
                if holds(&path) {
                    return None; // already holding it
                }
                Op::Mkdir { path }
            }
            Kind::Refresh | Kind::Release => {
                let held: Vec<&String> = c.locks.keys().collect();
                if held.is_empty() {
                    return None;
                }
                let path = format!("{LOCK_DIR}/{}", held[rng.below(held.len())]);
                if kind == Kind::Refresh {
                    Op::Mtime { path, mtime: now }
                } else {
                    Op::Delete { path }
                }
            }
            Kind::Unlock => {
                let path = lock(rng);
                if holds(&path) {
                    return None;
                }
                Op::Mtime { path, mtime: 0 }
            }
        })
    }
}

/// Files and directories (below the top ones) a node's tree holds.
#[derive(Debug, Default)]
pub struct Known {
    /// Files.
    pub files: Vec<String>,
    /// Directories other than the top ones and the lock directory.
    pub dirs: Vec<String>,
}

/// Mostly one of `known`, else (and when there is none) `any`.
fn pick_or(known: &[String], rng: &mut Rng, any: fn(&mut Rng) -> String) -> String {
    if known.is_empty() || rng.percent(20) {
        any(rng)
    } else {
        known[rng.below(known.len())].clone()
    }
}

fn dir(rng: &mut Rng) -> &'static str {
    DIRS[rng.below(DIRS.len())]
}

/// One of twelve file names in four directories.
fn file(rng: &mut Rng) -> String {
    let d = dir(rng);
    format!("{d}/f{}", rng.below(3))
}

/// One of eight directory names.
fn subdir(rng: &mut Rng) -> String {
    let d = dir(rng);
    format!("{d}/d{}", rng.below(2))
}

fn lock(rng: &mut Rng) -> String {
    format!("{LOCK_DIR}/{}", LOCKS[rng.below(LOCKS.len())])
}
