//! Replays every `pve_dcdb_v1` message a real 3-node pmxcfs 9.1.6 cluster delivered
//! (dcdb-wire's captures) through the compat core (`Node<Replica>`, `Protocol::Dfsm`) on
//! a [`MemDb`] in the pmxcfs dialect, node by node, in each node's delivery order. The
//! core's own multicasts are not fed back: CPG delivered pmxcfs's, and those are fed in.
//! What the core would have sent instead is compared with what pmxcfs sent: the same
//! state messages (SYNC_START, STATE, UPDATEs, UPDATE_COMPLETE, VERIFY_REQUEST, VERIFY),
//! in the same order, byte for byte.
//!
//! The one thing the captures lack is the content of `corosync.conf`, which every node
//! imported into its new database (inode 2, never changed afterwards). The replay seeds
//! it with placeholder content and translates exactly that entry's digest between the
//! placeholder's and the captured one (the first STATE's), in both directions; every
//! other byte is compared as captured. For the same reason a VERIFY's checksum, which
//! covers corosync.conf's bytes, cannot be compared with the captured one: the replay
//! compares the rest of node 1's VERIFY, then feeds every node the captured VERIFY with
//! its checksum replaced by the one node 1's core sent, so that each core checks its
//! tree against node 1's core's, as pmxcfs's members checked theirs against node 1's.
//! And a node's own captured writes reach its core unnumbered: the core never sent
//! them, and pmxcfs's count of them clashes with the core's own numbering.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cluster_sync::core::{
    Action, ApplyError, Body, Database, Digest, Event, Member, Mode, Node, Protocol,
};
use memdb::dcdb::{decode, encode, wire_index, TreeMessage};
use memdb::replica::Replica;
use memdb::{Applied, Dialect, Inode, Kind, Limits, MemDb, NullStore, Op, OpCtx, RootVersion, Row};
use nix::errno::Errno;
use parking_lot::RwLock;

const WIRE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../dcdb-wire/tests/fixtures/pmxcfs-wire/"
);
const DELIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pmxcfs-wire/");

/// corosync.conf's inode: pmxcfs creates it (version 2), then writes it (version 3).
const COROSYNC: u64 = 2;
const PLACEHOLDER: &[u8] = b"corosync.conf: its content is not in the captures\n";

/// Where a state message's payload starts: the dfsm header and the sync epoch.
const STATE_HEADER: usize = 32;
/// A VERIFY up to its checksum: header, epoch and csum_id.
const VERIFY_NO_CSUM: usize = STATE_HEADER + 8;

type Act = Action<Op, Row, Errno, Applied>;

fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn tsv(path: &str) -> Vec<HashMap<String, String>> {
    let text = String::from_utf8(read(path)).expect("UTF-8");
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().expect("header").split('\t').collect();
    lines
        .map(|l| {
            head.iter()
                .zip(l.split('\t'))
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

fn fnv64(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, c| {
        (h ^ u64::from(*c)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|c| format!("{c:02x}")).collect()
}

fn num<T: std::str::FromStr>(row: &HashMap<String, String>, col: &str) -> T {
    row[col]
        .parse()
        .unwrap_or_else(|_| panic!("{col}: {}", row[col]))
}

/// The wall clock of a tsv row, in the whole seconds pmxcfs's `time(NULL)` gives.
fn secs(row: &HashMap<String, String>) -> u32 {
    let t = &row["time"];
    t.split('.').next().unwrap().parse().expect("time")
}

/// A state message's sync epoch, as bytes: it names the round.
fn epoch_of(raw: &[u8]) -> [u8; 16] {
    raw[16..STATE_HEADER].try_into().expect("a state message")
}

/// What pmxcfs sent: every dcdb message by the FNV-1a 64 of its bytes (identical
/// messages, such as equal STATEs of two nodes, share one), each node's state messages
/// in send order, and each round's leader (the sender of its one UPDATE_COMPLETE).
struct Capture {
    msgs: HashMap<String, Vec<u8>>,
    sent: BTreeMap<u32, Vec<(String, Vec<u8>)>>,
    leaders: HashMap<[u8; 16], Member>,
    states_sent: BTreeMap<u32, usize>,
}

fn capture() -> Capture {
    let mut c = Capture {
        msgs: HashMap::new(),
        sent: BTreeMap::new(),
        leaders: HashMap::new(),
        states_sent: BTreeMap::new(),
    };
    let mut manifest: Vec<_> = tsv(&format!("{WIRE}manifest.tsv"))
        .into_iter()
        .filter(|r| r["group"] == "pve_dcdb_v1" && r["file"].ends_with(".bin"))
        .collect();
    manifest.sort_by_key(|r| (r["node"].clone(), num::<u64>(r, "seq")));
    for r in manifest {
        let b = read(&format!("{WIRE}{}", r["file"]));
        assert_eq!(format!("{:016x}", fnv64(&b)), r["fnv64"], "{}", r["file"]);
        let k: u32 = r["node"]
            .strip_prefix("pcs")
            .expect("node")
            .parse()
            .unwrap();
        let kind = r["type_name"].clone();
        if kind == "UPDATE_COMPLETE" {
            let leader = Member::new(k, num(&r, "pid"));
            assert!(
                c.leaders.insert(epoch_of(&b), leader).is_none(),
                "one per round"
            );
        }
        if kind == "STATE" {
            *c.states_sent.entry(k).or_default() += 1;
        }
        if kind != "NORMAL" {
            c.sent.entry(k).or_default().push((kind, b.clone()));
        }
        c.msgs.insert(r["fnv64"].clone(), b);
    }
    c
}

/// The members of a CONFCHG summary (`members=1/11277/0,2/11286/0 left=… joined=…`).
fn members_of(summary: &str, k: &str) -> Vec<Member> {
    let v = summary
        .split(' ')
        .find_map(|w| w.strip_prefix(k))
        .unwrap_or_else(|| panic!("{k} in {summary}"));
    let mut m: Vec<Member> = v
        .split(',')
        .filter(|m| !m.is_empty())
        .map(|m| {
            let mut it = m.split('/').map(|n| n.parse::<u32>().expect("number"));
            Member::new(it.next().expect("nodeid"), it.next().expect("pid"))
        })
        .collect();
    m.sort_unstable();
    m
}

/// What memdb_open loads from the database a daemon left behind.
fn reload(db: &MemDb) -> MemDb {
    let mut new = MemDb::from_rows(
        db.rows(),
        db.root_version(),
        Box::new(NullStore),
        Limits::default(),
    )
    .expect("reload");
    new.set_dialect(Dialect::Pmxcfs);
    new
}

fn replica(db: MemDb) -> Replica {
    Replica::new(Arc::new(RwLock::new(db)))
}

/// The digests that cannot be reproduced, ours ↔ captured: corosync.conf's, and the
/// VERIFY checksum that covers its content.
#[derive(Clone)]
struct Seed {
    ours: Digest,
    captured: Digest,
    /// (pmxcfs's, node 1's core's): learnt from node 1's replay.
    verify: Option<(Digest, Digest)>,
}

impl Seed {
    /// A new database: the root (version 1), then corosync.conf created (version 2,
    /// inode 2) and written (version 3), both at the import's time; and the digest
    /// translation that makes its index the node's first captured STATE.
    fn new(first: &[u8]) -> (Seed, MemDb) {
        let Body::State { index: first, .. } = decode(first).expect("STATE").body else {
            panic!("not a STATE");
        };
        let root = RootVersion {
            version: first.version,
            writer: first.writer,
            mtime: first.mtime,
        };
        assert_eq!((root.version, root.writer), (3, 0), "a new database");
        let inodes: Vec<u64> = first.entries.iter().map(|e| e.0).collect();
        assert_eq!(inodes, [0, COROSYNC], "the root and corosync.conf");
        let conf = Row {
            inode: Inode(COROSYNC),
            parent: Inode(0),
            version: 3,
            writer: 0,
            mtime: root.mtime,
            kind: Kind::File,
            name: "corosync.conf".into(),
            data: Arc::new(PLACEHOLDER.to_vec()),
        };
        let mut db = MemDb::from_rows(vec![conf], root, Box::new(NullStore), Limits::default())
            .expect("seed tree");
        db.set_dialect(Dialect::Pmxcfs);
        let ours = db.index_entries();
        assert_eq!(
            ours[0].1, first.entries[0].1,
            "the root's digest is reproduced"
        );
        let seed = Seed {
            ours: ours[1].1,
            captured: first.entries[1].1,
            verify: None,
        };
        (seed, db)
    }

    fn swap(e: &mut [(u64, Digest)], from: Digest, to: Digest) {
        for (i, d) in e {
            if *i == COROSYNC && *d == from {
                *d = to;
            }
        }
    }

    /// A captured message as our tree would have sent it.
    fn inn(&self, m: &mut TreeMessage, what: &str) {
        match &mut m.body {
            Body::State { index, .. } => Self::swap(&mut index.entries, self.captured, self.ours),
            Body::Verify { checksum, .. } => {
                let (theirs, ours) = self
                    .verify
                    .unwrap_or_else(|| panic!("{what}: VERIFY before node 1's core sent one"));
                assert_eq!(
                    *checksum, theirs,
                    "{what}: the VERIFY node 1's core answered"
                );
                *checksum = ours;
            }
            _ => {}
        }
    }

    /// A message of the core as the captured bytes would have it.
    fn out(&self, m: &TreeMessage) -> Vec<u8> {
        let mut m = m.clone();
        if let Body::State { index, .. } = &mut m.body {
            Self::swap(&mut index.entries, self.ours, self.captured);
        }
        encode(&m).expect("the core sends what pmxcfs's encoding holds")
    }

    /// An index of ours as the captured bytes would have it.
    fn out_index(&self, db: &Replica) -> Vec<u8> {
        let mut index = db.index();
        Self::swap(&mut index.entries, self.ours, self.captured);
        wire_index(&index).encode()
    }
}

/// One node's core, fed what its pmxcfs daemon was delivered.
struct Replay<'a> {
    k: u32,
    node: Node<Replica>,
    seed: Seed,
    /// pmxcfs's state messages of node k, in send order (across its restart).
    sent: &'a [(String, Vec<u8>)],
    leaders: &'a HashMap<[u8; 16], Member>,
    /// How many of `sent` the core sent too, and how many CPG delivered back to k.
    emitted: usize,
    delivered_own: usize,
    /// The Updates of the current sending, compared as a set when it is complete.
    updates: Vec<TreeMessage>,
    /// The configuration and its round's captured STATEs (payloads) by member.
    members: Vec<Member>,
    states: BTreeMap<Member, Vec<u8>>,
    // What the replay saw.
    states_matched: usize,
    applied: usize,
    refused: Vec<(Op, Errno)>,
    csums_checked: usize,
    installs: usize,
    /// Database::checksum when the VERIFY_REQUEST was delivered.
    checksum_at_request: Option<Digest>,
    /// Cross-node checks and mismatches, over every process of the node.
    verifies: (u64, u64),
}

impl<'a> Replay<'a> {
    fn me(&self) -> Member {
        self.node.me()
    }

    /// Feed one event; check every multicast against pmxcfs's sends and that the core
    /// never fails; hand back the rest.
    fn feed(&mut self, ev: Event<Op, Row>, what: &str) -> Vec<Act> {
        let mut rest = Vec::new();
        for a in self.node.handle(ev) {
            match a {
                Action::Multicast(m) => self.emitted_msg(m, what),
                Action::ModeChanged(Mode::Error) => {
                    panic!("{what}: the core left (mode Error); pmxcfs did not")
                }
                a => rest.push(a),
            }
        }
        self.flush_updates(what);
        rest
    }

    fn next_sent(&self, what: &str, m: &TreeMessage) -> &'a (String, Vec<u8>) {
        self.sent.get(self.emitted).unwrap_or_else(|| {
            panic!(
                "{what}: the core sent a {} that pmxcfs did not send ({} sent)",
                m.body.kind(),
                self.sent.len()
            )
        })
    }

    fn emitted_msg(&mut self, m: TreeMessage, what: &str) {
        match &m.body {
            Body::Normal { .. } => panic!("{what}: the core sent a write nobody asked for"),
            Body::Update { .. } => return self.updates.push(m),
            _ => self.flush_updates(what),
        }
        let (kind, want) = self.next_sent(what, &m);
        let got = self.seed.out(&m);
        if let Body::Verify { checksum, .. } = &m.body {
            assert_eq!(kind, "VERIFY", "{what}: the core sent a verify");
            assert_eq!(
                hex(&got[..VERIFY_NO_CSUM]),
                hex(&want[..VERIFY_NO_CSUM]),
                "{what}: VERIFY up to its checksum (left: core, right: pmxcfs)"
            );
            let theirs: Digest = want[VERIFY_NO_CSUM..].try_into().expect("csum");
            self.seed.verify = Some((theirs, *checksum));
        } else {
            assert_eq!(
                hex(&got),
                hex(want),
                "{what}: the core's {} (left) against pmxcfs's {kind} (right)",
                m.body.kind()
            );
        }
        if kind == "STATE" {
            self.states_matched += 1;
        }
        self.emitted += 1;
    }

    /// The leader's Updates: pmxcfs sends them in its hash table's order, the core in
    /// inode order, so they are compared as a set of records, each byte for byte.
    fn flush_updates(&mut self, what: &str) {
        if self.updates.is_empty() {
            return;
        }
        let ours: BTreeMap<u64, Vec<u8>> = std::mem::take(&mut self.updates)
            .iter()
            .map(|m| {
                let Body::Update { entries, .. } = &m.body else {
                    unreachable!()
                };
                let [row] = entries.as_slice() else {
                    panic!("{what}: an Update of {} rows", entries.len())
                };
                (row.inode.0, self.seed.out(m))
            })
            .collect();
        let theirs: BTreeMap<u64, Vec<u8>> = self.sent[self.emitted..]
            .iter()
            .take_while(|(kind, _)| kind == "UPDATE")
            .map(|(_, b)| {
                let Body::Update { entries, .. } = decode(b).expect("UPDATE").body else {
                    unreachable!()
                };
                (entries[0].inode.0, b.clone())
            })
            .collect();
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>(),
            "{what}: inodes the leader sends (left: core, right: pmxcfs)"
        );
        for (inode, b) in &ours {
            assert_eq!(
                hex(b),
                hex(&theirs[inode]),
                "{what}: UPDATE of inode {inode} (left: core, right: pmxcfs)"
            );
        }
        self.emitted += ours.len();
    }

    /// The daemon restarted with its database: a new member over what it left.
    fn restart(&mut self, pid: u32, what: &str) {
        assert_eq!(
            self.emitted, self.delivered_own,
            "{what}: the old process's messages were all delivered"
        );
        let db = reload(&self.node.db().tree().read());
        let (c, m) = self.node.verifies();
        self.verifies = (self.verifies.0 + c, self.verifies.1 + m);
        self.node = Node::with_protocol(Member::new(self.k, pid), replica(db), Protocol::Dfsm);
    }

    fn confchg(&mut self, row: &HashMap<String, String>, what: &str) {
        let s = &row["summary"];
        let members = members_of(s, "members=");
        let left = members_of(s, "left=");
        let joined = members_of(s, "joined=");
        assert!(
            members.contains(&self.me()),
            "{what}: a configuration of ours"
        );
        // The clock at the confchg stamps the epoch of the round it starts.
        let mut rest = self.feed(Event::Tick { now: secs(row) }, what);
        // Three nodes: two are a majority. Node 3 alone during the cut is not.
        rest.extend(self.feed(Event::Quorum(members.len() >= 2), what));
        let lowest = members[0] == self.me();
        let before = self.emitted;
        rest.extend(self.feed(
            Event::ConfChg {
                members: members.clone(),
                left,
                joined,
            },
            what,
        ));
        // No write was left queued for a confchg to apply.
        for a in rest {
            assert!(matches!(a, Action::ModeChanged(_)), "{what}: {a:?}");
        }
        if members.len() == 1 {
            // pmxcfs is synced at once when alone, and sends nothing.
            assert_eq!(self.node.mode(), Mode::Synced, "{what}: alone");
            assert!(self.node.all_synced(), "{what}: alone, nothing queued");
            assert_eq!(self.emitted, before, "{what}: alone");
        } else {
            assert_eq!(self.node.mode(), Mode::StartSync, "{what}");
            let sync_start = self.emitted == before + 1 && self.sent[before].0 == "SYNC_START";
            assert_eq!(
                sync_start, lowest,
                "{what}: SYNC_START from the lowest node"
            );
        }
        self.members = members;
        self.states.clear();
    }

    fn deliver(&mut self, row: &HashMap<String, String>, raw: &[u8], what: &str) {
        let from = Member::new(num(row, "from_nodeid"), num(row, "from_pid"));
        assert!(self.members.contains(&from), "{what}: from a member");
        let now = secs(row);
        let ticked = self.feed(Event::Tick { now }, what);
        assert!(ticked.is_empty(), "{what}: {ticked:?}");
        let mut msg = decode(raw).unwrap_or_else(|e| panic!("{what}: {e}"));
        if let Body::VerifyRequest { .. } = msg.body {
            // pmxcfs's verify timer fired on node 1 just before (forced, phase g):
            // every node's timer fires here, and only the lowest node's requests.
            self.feed(Event::VerifyNow, &format!("{what} (verify timer)"));
        }
        if !matches!(msg.body, Body::Normal { .. }) && from == self.me() {
            // CPG delivers a sender's messages in its send order: this is the next one
            // of ours, and the core must have sent its own by now.
            let (_, own) = &self.sent[self.delivered_own];
            assert_eq!(hex(own), hex(raw), "{what}: our next message");
            assert!(
                self.delivered_own < self.emitted,
                "{what}: pmxcfs sent this {}, the core had not",
                msg.body.kind()
            );
            self.delivered_own += 1;
        }
        self.seed.inn(&mut msg, what);
        let op = match &msg.body {
            Body::Normal { ops, .. } => Some(ops[0].clone()),
            _ => None,
        };
        if op.is_some() && from == self.me() {
            // The core counts the writes it sends, as pmxcfs does, and numbers its
            // state messages after them; it sent none of these writes (pmxcfs did), so
            // their counts are not in its numbering: they go in unnumbered, as
            // pmxcfs's state messages do.
            msg.seq = 0;
        }
        if let Some(op) = op {
            return self.write(from, msg, op, what);
        }
        let body = msg.body.clone();
        let installs = self.installs;
        let rest = self.feed(Event::Deliver { from, msg }, what);
        for a in rest {
            match a {
                Action::SyncInstalled { leader, .. } => {
                    assert_eq!(
                        Some(&leader),
                        self.leaders.get(&epoch_of(raw)),
                        "{what}: installed the round's leader's tree"
                    );
                    self.installs += 1;
                }
                Action::ModeChanged(_) => {}
                a => panic!("{what}: {a:?}"),
            }
        }
        match body {
            Body::State { .. } => self.state(from, raw, what),
            Body::UpdateComplete { .. } => {
                // pmxcfs ends every round here synced, the installers with the leader's
                // tree.
                assert_eq!(self.node.mode(), Mode::Synced, "{what}: end of the round");
                assert!(self.node.all_synced(), "{what}: nothing queued");
                if self.installs > installs {
                    let leader = self.leaders[&epoch_of(raw)];
                    assert_eq!(
                        hex(&self.seed.out_index(self.node.db())),
                        hex(&self.states[&leader]),
                        "{what}: installed tree (left) is the leader's (right)"
                    );
                }
            }
            Body::VerifyRequest { .. } => {
                self.checksum_at_request = Some(self.node.db().checksum());
            }
            _ => {}
        }
    }

    /// A STATE: the last of the round decides the leader and who is synced; pmxcfs
    /// was synced iff its STATE was the leader's.
    fn state(&mut self, from: Member, raw: &[u8], what: &str) {
        let payload = raw[STATE_HEADER..].to_vec();
        assert!(
            self.states.insert(from, payload).is_none(),
            "{what}: one STATE per member"
        );
        if self.states.len() < self.members.len() {
            assert_eq!(
                self.node.mode(),
                Mode::StartSync,
                "{what}: waiting for STATEs"
            );
            return;
        }
        let leader = self.leaders[&epoch_of(raw)];
        let want = if self.states[&self.me()] == self.states[&leader] {
            Mode::Synced
        } else {
            Mode::Update
        };
        assert_eq!(
            self.node.mode(),
            want,
            "{what}: mode after the round's STATEs (leader {leader})"
        );
        let sent_complete = self.sent[..self.emitted]
            .last()
            .is_some_and(|(kind, b)| kind == "UPDATE_COMPLETE" && epoch_of(b) == epoch_of(raw));
        assert_eq!(
            sent_complete,
            leader == self.me(),
            "{what}: the core leads iff pmxcfs's leader was this node ({leader})"
        );
    }

    /// A write: applied at once by a synced member, or refused, as pmxcfs did.
    fn write(&mut self, from: Member, msg: TreeMessage, op: Op, what: &str) {
        assert_eq!(
            self.node.mode(),
            Mode::Synced,
            "{what}: pmxcfs applied it at once"
        );
        let time = msg.time;
        let before = self.node.db().version();
        if let Op::UnlockRequest { path, csum } | Op::Unlock { path, csum } = &op {
            // pmxcfs computed these csums from its tree; ours must be the same.
            let tree = self.node.db().tree().read();
            assert_eq!(tree.entry_csum(path), Some(*csum), "{what}: csum of {path}");
            self.csums_checked += 1;
        }
        let rest = self.feed(Event::Deliver { from, msg }, what);
        let applied: Vec<_> = rest
            .into_iter()
            .map(|a| match a {
                Action::Applied {
                    op: o,
                    outcome,
                    writer,
                    time: t,
                    local,
                } => (o, outcome, writer, t, local),
                Action::ModeChanged(m) => panic!("{what}: a write changed the mode to {m:?}"),
                a => panic!("{what}: {a:?}"),
            })
            .collect();
        match applied.as_slice() {
            [(o, a, writer, t, local)] => {
                assert_eq!((o, *writer, *t), (&op, from.nodeid, time), "{what}");
                assert_eq!(*local, from == self.me(), "{what}");
                let bump = u64::from(!matches!(op, Op::UnlockRequest { .. }));
                assert_eq!(a.version, before + bump, "{what}: {op:?}");
                assert_eq!(self.node.db().version(), a.version, "{what}");
                if let Op::UnlockRequest { path, csum } = &op {
                    assert_eq!(a.unlock_request, Some((path.clone(), *csum)), "{what}");
                }
                self.applied += 1;
            }
            [] => {
                assert_eq!(self.node.db().version(), before, "{what}: refused");
                // The core answers a refusal to its writer only, and none of these
                // writes was asked of this core: the errno is the one the unchanged
                // tree refuses it with.
                let mut tree = reload(&self.node.db().tree().read());
                let ctx = OpCtx {
                    writer: from.nodeid,
                    now: time,
                };
                match tree.apply_checked(&op, ctx) {
                    Err(ApplyError::Refused(e)) => self.refused.push((op, e)),
                    r => panic!("{what}: {op:?} neither applied nor refused: {r:?}"),
                }
            }
            more => panic!("{what}: one write applied {} times", more.len()),
        }
    }
}

/// Replay node `k`; the result is its replay after its last delivery.
fn replay<'a>(k: u32, c: &'a Capture, verify: Option<(Digest, Digest)>) -> Replay<'a> {
    let rows: Vec<_> = tsv(&format!("{DELIVER}n{k}/deliver.tsv"))
        .into_iter()
        .filter(|r| r["group"] == "pve_dcdb_v1")
        .collect();
    let sent = &c.sent[&k];
    // The node's first STATE tells what its new database held.
    let first = sent
        .iter()
        .find(|(kind, _)| kind == "STATE")
        .expect("a STATE");
    let (mut seed, db) = Seed::new(&first.1);
    seed.verify = verify;
    let me = Member::new(k, num(&rows[0], "pid"));
    let mut r = Replay {
        k,
        node: Node::with_protocol(me, replica(db), Protocol::Dfsm),
        seed,
        sent,
        leaders: &c.leaders,
        emitted: 0,
        delivered_own: 0,
        updates: Vec::new(),
        members: Vec::new(),
        states: BTreeMap::new(),
        states_matched: 0,
        applied: 0,
        refused: Vec::new(),
        csums_checked: 0,
        installs: 0,
        checksum_at_request: None,
        verifies: (0, 0),
    };
    for row in &rows {
        let what = format!("n{k} dseq {}", row["dseq"]);
        match row["event"].as_str() {
            "JOIN" => {
                let pid: u32 = num(row, "pid");
                if pid != r.me().pid {
                    r.restart(pid, &what);
                }
            }
            "CONFCHG" => r.confchg(row, &what),
            "DELIVER" => {
                let raw = c
                    .msgs
                    .get(&row["fnv64"])
                    .unwrap_or_else(|| panic!("{what}: no message {}", row["fnv64"]));
                r.deliver(row, raw, &what);
            }
            e => panic!("{what}: event {e}"),
        }
    }
    // Every state message pmxcfs sent, the core sent, and CPG delivered back.
    assert_eq!(
        (r.emitted, r.delivered_own),
        (sent.len(), sent.len()),
        "n{k}: messages sent (core, delivered) of pmxcfs's"
    );
    // Every write delivered was applied or refused, none lost in a queue.
    let normals = rows.iter().filter(|r| r["type_name"] == "NORMAL").count();
    assert_eq!(r.applied + r.refused.len(), normals, "n{k}");
    assert!(r.node.all_synced(), "n{k}: synced, nothing queued");
    let (checks, mismatches) = r.node.verifies();
    r.verifies = (r.verifies.0 + checks, r.verifies.1 + mismatches);
    r
}

#[test]
fn replay_real_pmxcfs_cluster_through_the_compat_core() {
    let c = capture();
    // Node 1 first: nodes 2 and 3 check their trees against the VERIFY its core sent.
    let r1 = replay(1, &c, None);
    let verify = r1.seed.verify;
    assert!(
        verify.is_some(),
        "node 1's core answered the VERIFY_REQUEST"
    );
    let rs = [r1, replay(2, &c, verify), replay(3, &c, verify)];
    // Every STATE a node sent is one the replay compared.
    let matched: Vec<usize> = rs.iter().map(|r| r.states_matched).collect();
    let sent: Vec<usize> = (1..=3).map(|k| c.states_sent[&k]).collect();
    assert_eq!(matched, sent);
    assert_eq!(matched, [6, 6, 5]);
    // The two utime(0) of the lock (c3 from node 1, c4 from node 2) are what pmxcfs
    // refused on every node: an mtime older than the lock's.
    for r in &rs {
        let k = r.k;
        let refused: Vec<Errno> = r.refused.iter().map(|(_, e)| *e).collect();
        assert_eq!(
            refused,
            [Errno::EACCES, Errno::EACCES],
            "n{k}: {:?}",
            r.refused
        );
        assert!(
            r.refused
                .iter()
                .all(|(op, _)| matches!(op, Op::Mtime { mtime: 0, .. })),
            "n{k}: {:?}",
            r.refused
        );
        // two UNLOCK_REQUESTs and the UNLOCK, each csum equal to ours
        assert_eq!(r.csums_checked, 3, "n{k}");
        // The VERIFY (g): each core checked its tree against node 1's core's, once.
        assert_eq!(r.verifies, (1, 0), "n{k}: checks, mismatches");
    }
    // Node 3 was cut off (e3) and node 1 restarted with an old database (f3): each
    // installed the leader's tree once.
    let installs: Vec<usize> = rs.iter().map(|r| r.installs).collect();
    assert_eq!(installs, [1, 0, 1]);
    // At the VERIFY_REQUEST every node's tree had the same checksum, node 1's Verify's.
    let at_request: Vec<Option<Digest>> = rs.iter().map(|r| r.checksum_at_request).collect();
    assert!(at_request[0].is_some());
    assert!(
        at_request.iter().all(|v| *v == at_request[0]),
        "{at_request:?}"
    );
    assert_eq!(at_request[0], verify.map(|(_, ours)| ours));
    // And all three end with the same tree.
    let end: Vec<String> = rs
        .iter()
        .map(|r| {
            let t = r.node.db().tree().read();
            format!("{:?} {:?}", t.rows(), t.root_version())
        })
        .collect();
    assert!(end.iter().all(|e| *e == end[0]), "the trees differ");
    assert_eq!(rs[0].node.db().version(), 35);
}
