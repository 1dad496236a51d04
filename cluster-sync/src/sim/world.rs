//! Nodes, the CPG model, clients, the scheduler and the invariants.
use std::collections::{BTreeMap, BTreeSet};

use super::db::{SimCodec, SimDb, SimErr, SimOp, LOCK_DIR, LOCK_TIMEOUT};
use super::rng::Rng;
use crate::core::{Action, Body, Database, DbIndex, Event, Member, Mode, Node};
use crate::wire;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Cluster size; `None` picks 3, 4 or 5 from the seed.
    pub nodes: Option<usize>,
    /// Scheduler steps before the final heal-and-converge phase.
    pub steps: usize,
    /// Concurrent clients per node (each has at most one request outstanding).
    pub clients_per_node: usize,
    /// Whether nodes crash and restart.
    pub crashes: bool,
    /// Trace lines kept in a [`Failure`].
    pub trace_lines: usize,
    /// Whether a quorum notification may come after its confchg, with requests and
    /// ticks in between (corosync activates CPG's sync, which sends the confchg, before
    /// votequorum's, which sends the notification); it always comes before the next
    /// delivery, as the adapter guarantees. Off keeps the older seeds replaying the
    /// schedules that found their bugs.
    pub late_quorum: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: None,
            steps: 1500,
            clients_per_node: 2,
            crashes: true,
            trace_lines: 120,
            late_quorum: false,
        }
    }
}

/// Figures from a successful run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Cluster size used.
    pub nodes: usize,
    /// Requests answered OK.
    pub acked: usize,
    /// Requests answered EAGAIN (lost to a membership change longer ago than the
    /// core's re-send window after they were made).
    pub interrupted: usize,
    /// Writes a membership change lost that the writer's core sent again.
    pub resent: u64,
    /// Requests answered EACCES (no quorum).
    pub no_quorum: usize,
    /// Lock acquisitions acknowledged and used.
    pub locks: usize,
    /// Lock acquisitions acknowledged too late (op time older than the use window).
    pub stale_locks: usize,
    /// Configurations formed.
    pub configs: usize,
    /// Crashes injected.
    pub crashes: usize,
    /// Messages multicast.
    pub messages: usize,
    /// Version of the converged tree.
    pub final_version: u64,
    /// Acknowledged writes missing from the converged tree that no majority of nodes
    /// ever held at once (the writer's side crashed or was cut off right after the
    /// acknowledgement). pmxcfs has the same window; see the crate docs.
    pub lost_minority_acks: usize,
}

/// A violated invariant, with what led to it.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The seed.
    pub seed: u64,
    /// Step at which it was detected.
    pub step: usize,
    /// What went wrong.
    pub message: String,
    /// The last trace lines.
    pub trace: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "seed {} failed at step {}: {}",
            self.seed, self.step, self.message
        )?;
        for l in &self.trace {
            writeln!(f, "  {l}")?;
        }
        Ok(())
    }
}

struct Cfg {
    members: Vec<Member>,
    quorate: bool,
    log: Vec<(Member, Vec<u8>)>,
    /// Length of the log every surviving member delivers, once the configuration ended.
    cut: Option<usize>,
    max_delivered: usize,
    next: BTreeMap<usize, usize>,
    /// Index hash of the first all-synced member after each delivery position.
    synced_at: BTreeMap<usize, (usize, u64)>,
}

struct SimNode {
    nodeid: u32,
    pid: u32,
    core: Option<Node<SimDb>>,
    stored: Option<SimDb>,
    /// Configuration whose log this node is delivering.
    cfg: Option<usize>,
    cursor: usize,
    /// First configuration of a (re)started node.
    join: Option<usize>,
    /// Newest configuration containing this node (where its sends go).
    current: Option<usize>,
    view: Vec<Member>,
    group: usize,
    /// A quorum notification not delivered yet (`late_quorum`).
    late_quorum: Option<bool>,
}

impl SimNode {
    fn member(&self) -> Member {
        Member::new(self.nodeid, self.pid)
    }
}

struct Client {
    node: usize,
    busy: Option<(u64, SimOp)>,
    /// Locks this client believes it holds: name → acquisition time.
    locks: BTreeMap<String, u32>,
}

enum Next {
    Deliver,
    Transition(usize),
}

struct World {
    seed: u64,
    rng: Rng,
    n: usize,
    nodes: Vec<SimNode>,
    cfgs: Vec<Cfg>,
    clients: Vec<Client>,
    now: u32,
    next_id: u64,
    step: usize,
    trace: Vec<String>,
    acked_ok: BTreeSet<u64>,
    failed_clean: BTreeMap<u64, SimErr>,
    applied_anywhere: BTreeSet<u64>,
    local_time: BTreeMap<u64, u32>,
    /// Which nodes' databases (live or stored) currently contain each op.
    holders: BTreeMap<u64, BTreeSet<usize>>,
    /// Ops a majority of nodes held at the same time.
    durable: BTreeSet<u64>,
    report: Report,
    /// [`SimConfig::late_quorum`].
    late_quorum: bool,
}

/// Hash of the tree an index describes (not its term label, which members holding the
/// same tree may legitimately differ in after a non-quorate round).
fn index_hash(i: &DbIndex) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: &[u8]| {
        for x in b {
            h ^= *x as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(&i.version.to_le_bytes());
    eat(&i.mtime.to_le_bytes());
    for (ino, d) in &i.entries {
        eat(&ino.to_le_bytes());
        eat(d);
    }
    h
}

type R<T> = Result<T, String>;

/// How long a client acts on a lock after its acquisition time (PVE's alarm(60)).
const LOCK_USE: u32 = 60;

impl World {
    fn new(seed: u64, cfg: &SimConfig) -> World {
        let mut rng = Rng::new(seed);
        let n = cfg.nodes.unwrap_or_else(|| 3 + rng.below(3));
        let nodes = (0..n)
            .map(|i| SimNode {
                nodeid: i as u32 + 1,
                pid: 1000,
                core: Some(Node::new(Member::new(i as u32 + 1, 1000), SimDb::genesis())),
                stored: None,
                cfg: None,
                cursor: 0,
                join: None,
                current: None,
                view: Vec::new(),
                group: 0,
                late_quorum: None,
            })
            .collect();
        let clients = (0..n * cfg.clients_per_node)
            .map(|i| Client {
                node: i % n,
                busy: None,
                locks: BTreeMap::new(),
            })
            .collect();
        World {
            seed,
            rng,
            n,
            nodes,
            cfgs: Vec::new(),
            clients,
            now: 1_000_000,
            next_id: 1,
            step: 0,
            trace: Vec::new(),
            acked_ok: BTreeSet::new(),
            failed_clean: BTreeMap::new(),
            applied_anywhere: BTreeSet::new(),
            local_time: BTreeMap::new(),
            holders: BTreeMap::new(),
            durable: BTreeSet::new(),
            report: Report {
                nodes: n,
                ..Report::default()
            },
            late_quorum: cfg.late_quorum,
        }
    }

    fn log(&mut self, s: String) {
        self.trace
            .push(format!("#{} t={} {s}", self.step, self.now));
    }

    fn alive(&self, i: usize) -> bool {
        self.nodes[i].core.is_some()
    }

    fn seal(&mut self, c: usize) {
        if self.cfgs[c].cut.is_none() {
            let cfg = &self.cfgs[c];
            let (lo, hi) = (cfg.max_delivered, cfg.log.len());
            let cut = self.rng.range(lo, hi);
            self.cfgs[c].cut = Some(cut);
            self.log(format!("cfg {c} ends: {cut} of {hi} messages delivered"));
        }
    }

    /// Recompute configurations from the partition groups of live nodes.
    fn reconfigure(&mut self) {
        let mut comps: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for i in 0..self.n {
            if self.alive(i) {
                comps.entry(self.nodes[i].group).or_default().push(i);
            }
        }
        let mut ended = BTreeSet::new();
        for (_, idxs) in comps {
            let members: Vec<Member> = {
                let mut m: Vec<Member> = idxs.iter().map(|&i| self.nodes[i].member()).collect();
                m.sort();
                m
            };
            let cur = self.nodes[idxs[0]].current;
            let same = cur.is_some_and(|c| {
                self.cfgs[c].members == members
                    && idxs.iter().all(|&i| self.nodes[i].current == Some(c))
            });
            if same {
                continue;
            }
            let id = self.cfgs.len();
            let quorate = members.len() * 2 > self.n;
            self.cfgs.push(Cfg {
                members: members.clone(),
                quorate,
                log: Vec::new(),
                cut: None,
                max_delivered: 0,
                next: BTreeMap::new(),
                synced_at: BTreeMap::new(),
            });
            self.report.configs += 1;
            self.log(format!(
                "cfg {id}: members {:?} quorate={quorate}",
                members.iter().map(|m| m.to_string()).collect::<Vec<_>>()
            ));
            for &i in &idxs {
                match self.nodes[i].current {
                    Some(old) => {
                        ended.insert(old);
                        self.cfgs[old].next.insert(i, id);
                    }
                    None => self.nodes[i].join = Some(id),
                }
                self.nodes[i].current = Some(id);
            }
        }
        for c in ended {
            self.seal(c);
        }
    }

    fn next_of(&self, i: usize) -> Option<Next> {
        let nd = &self.nodes[i];
        nd.core.as_ref()?;
        match nd.cfg {
            None => nd.join.map(Next::Transition),
            Some(c) => {
                let cfg = &self.cfgs[c];
                let lim = cfg.cut.unwrap_or(cfg.log.len());
                if nd.cursor < lim {
                    Some(Next::Deliver)
                } else if cfg.cut.is_some() {
                    cfg.next.get(&i).map(|&n| Next::Transition(n))
                } else {
                    None
                }
            }
        }
    }

    fn feed(&mut self, i: usize, ev: Event<SimOp, super::db::SimEntry>) -> R<()> {
        let actions = self.nodes[i].core.as_mut().expect("alive").handle(ev);
        self.carry_out(i, actions)
    }

    fn carry_out(
        &mut self,
        i: usize,
        actions: Vec<Action<SimOp, super::db::SimEntry, SimErr>>,
    ) -> R<()> {
        for a in actions {
            match a {
                Action::Multicast(msg) => {
                    let bytes = wire::encode::<SimCodec>(&msg);
                    let c = self.nodes[i]
                        .current
                        .ok_or("multicast from a node outside any configuration")?;
                    let me = self.nodes[i].member();
                    self.cfgs[c].log.push((me, bytes));
                    self.report.messages += 1;
                }
                Action::Reply { req_id, result } => self.on_reply(i, req_id, result)?,
                Action::Applied {
                    op, time, local, ..
                } => {
                    let c = self.nodes[i].cfg.ok_or("applied outside a configuration")?;
                    if !self.cfgs[c].quorate {
                        return Err(format!("n{} applied {op:?} without quorum", i + 1));
                    }
                    if let Some(e) = self.failed_clean.get(&op.id()) {
                        return Err(format!(
                            "n{} applied op {} that was answered {e:?}",
                            i + 1,
                            op.id()
                        ));
                    }
                    self.applied_anywhere.insert(op.id());
                    self.hold(i, op.id());
                    if local {
                        self.local_time.insert(op.id(), time);
                    }
                }
                Action::SyncInstalled => {
                    self.log(format!("n{} installed the leader's tree", i + 1));
                    let now: BTreeSet<u64> = self.nodes[i]
                        .core
                        .as_ref()
                        .expect("alive")
                        .db()
                        .applied()
                        .iter()
                        .copied()
                        .collect();
                    for (id, h) in self.holders.iter_mut() {
                        if !now.contains(id) {
                            h.remove(&i);
                        }
                    }
                    for id in now {
                        self.hold(i, id);
                    }
                }
                Action::ModeChanged(m) => self.log(format!("n{} mode {m:?}", i + 1)),
            }
        }
        Ok(())
    }

    /// The term design's core invariant, over every database (live or crashed): two
    /// trees with the same term and version are the same tree. It holds only if no two
    /// configurations ever accept the same term and every member applies the term's
    /// writes in the same order from the same starting tree; leader selection relies
    /// on it to order trees within a term by version.
    fn check_terms(&self) -> R<()> {
        // Compared structurally, not by index(): this runs after every step.
        let mut seen: BTreeMap<(u64, u64), (usize, &SimDb)> = BTreeMap::new();
        for (i, nd) in self.nodes.iter().enumerate() {
            let db = match (&nd.core, &nd.stored) {
                (Some(core), _) => core.db(),
                (None, Some(db)) => db,
                (None, None) => continue,
            };
            let key = (db.term(), db.version());
            match seen.get(&key) {
                Some(&(j, other)) if !other.same_tree(db) => {
                    return Err(format!(
                        "n{} and n{} hold different trees at term {} version {}",
                        j + 1,
                        i + 1,
                        key.0,
                        key.1
                    ))
                }
                Some(_) => {}
                None => {
                    seen.insert(key, (i, db));
                }
            }
        }
        Ok(())
    }

    fn hold(&mut self, i: usize, id: u64) {
        let h = self.holders.entry(id).or_default();
        h.insert(i);
        if h.len() * 2 > self.n {
            self.durable.insert(id);
        }
    }

    fn on_reply(&mut self, i: usize, req: u64, result: Result<(), SimErr>) -> R<()> {
        let ci = self
            .clients
            .iter()
            .position(|c| c.node == i && c.busy.as_ref().is_some_and(|b| b.0 == req))
            .ok_or_else(|| format!("n{} answered request {req} that is not outstanding", i + 1))?;
        let (_, op) = self.clients[ci].busy.take().expect("busy");
        self.log(format!("n{} c{ci} <- {result:?} for {op:?}", i + 1));
        match result {
            Ok(()) => {
                self.report.acked += 1;
                self.acked_ok.insert(op.id());
                if let (SimOp::Mkdir { .. }, Some(name)) = (&op, op.lock_name()) {
                    let t = *self
                        .local_time
                        .get(&op.id())
                        .ok_or("lock acknowledged before its own application")?;
                    // A write queued across a sync is applied with its (old) send time,
                    // so the lock may be expired, even taken over, by the time the
                    // holder hears back: a holder counts the lock's life from the op
                    // time (Applied carries it), so such a lock is never used.
                    if self.now.saturating_sub(t) > LOCK_USE {
                        self.log(format!(
                            "c{ci} drops lock {name} acquired at {t}: too old to use"
                        ));
                        self.report.stale_locks += 1;
                        return Ok(());
                    }
                    for (cj, other) in self.clients.iter().enumerate() {
                        if let Some(&t2) = other.locks.get(name) {
                            if cj != ci && t.saturating_sub(t2) <= LOCK_TIMEOUT {
                                return Err(format!(
                                    "lock {name}: c{ci} acquired at {t} while c{cj} holds it since {t2}"
                                ));
                            }
                        }
                    }
                    self.clients[ci].locks.insert(name.to_string(), t);
                    self.report.locks += 1;
                }
            }
            Err(e @ (SimErr::Again | SimErr::Access)) => {
                if e == SimErr::Again {
                    self.report.interrupted += 1;
                } else {
                    self.report.no_quorum += 1;
                }
                if self.applied_anywhere.contains(&op.id()) {
                    return Err(format!("op {} answered {e:?} but was applied", op.id()));
                }
                self.failed_clean.insert(op.id(), e);
            }
            Err(_) => {}
        }
        Ok(())
    }

    fn deliver(&mut self, i: usize) -> R<()> {
        let c = self.nodes[i].cfg.expect("in a configuration");
        let pos = self.nodes[i].cursor;
        let (from, bytes) = self.cfgs[c].log[pos].clone();
        self.nodes[i].cursor += 1;
        let cfg = &mut self.cfgs[c];
        cfg.max_delivered = cfg.max_delivered.max(pos + 1);
        let msg =
            wire::decode::<SimCodec>(&bytes).map_err(|e| format!("own encoding rejected: {e}"))?;
        let what = match &msg.body {
            Body::Normal { op } => format!("{op:?}"),
            Body::State {
                index,
                quorate,
                promised,
                promised_proposal,
                ..
            } => format!(
                "state term {} v{} mtime {} promised {promised}{} quorate {quorate}",
                index.term,
                index.version,
                index.mtime,
                if *promised_proposal {
                    " (proposal)"
                } else {
                    ""
                }
            ),
            Body::SyncStart { term, .. } => format!("sync-start proposing term {term}"),
            Body::Promise { term, .. } => format!("promise term {term}"),
            b => b.kind().to_string(),
        };
        self.log(format!(
            "n{} delivers cfg {c}#{pos} from {from} seq {}: {what}",
            i + 1,
            msg.seq
        ));
        self.feed(i, Event::Deliver { from, msg })?;
        let core = self.nodes[i].core.as_ref().expect("alive");
        // A detached member (see `Mode::Detached`) ended the round keeping its own tree.
        if core.all_synced() && core.mode() == Mode::Synced {
            let h = index_hash(&core.db().index());
            match self.cfgs[c].synced_at.get(&(pos + 1)) {
                Some(&(j, h2)) if h2 != h => {
                    return Err(format!(
                        "n{} and n{} are synced in cfg {c} after message {pos} but hold different trees",
                        i + 1,
                        j + 1
                    ))
                }
                Some(_) => {}
                None => {
                    self.cfgs[c].synced_at.insert(pos + 1, (i, h));
                }
            }
        }
        Ok(())
    }

    fn transition(&mut self, i: usize, to: usize) -> R<()> {
        let members = self.cfgs[to].members.clone();
        let old = std::mem::take(&mut self.nodes[i].view);
        let left = old
            .iter()
            .filter(|m| !members.contains(m))
            .copied()
            .collect();
        let joined = members
            .iter()
            .filter(|m| !old.contains(m))
            .copied()
            .collect();
        let nd = &mut self.nodes[i];
        nd.cfg = Some(to);
        nd.cursor = 0;
        nd.join = None;
        nd.view = members.clone();
        self.log(format!("n{} enters cfg {to}", i + 1));
        let q = self.cfgs[to].quorate;
        if self.late_quorum && self.rng.percent(30) {
            self.log(format!("n{} quorum={q} notification delayed", i + 1));
            self.nodes[i].late_quorum = Some(q);
        } else {
            self.nodes[i].late_quorum = None;
            self.feed(i, Event::Quorum(q))?;
        }
        self.feed(
            i,
            Event::ConfChg {
                members,
                left,
                joined,
            },
        )
    }

    /// Whether node `i` has a delivery, a transition or a late notification due.
    fn has_work(&self, i: usize) -> bool {
        self.next_of(i).is_some() || (self.alive(i) && self.nodes[i].late_quorum.is_some())
    }

    fn run_node(&mut self, i: usize) -> R<bool> {
        // Late, but before the node's next delivery: corosync queues the notification
        // when its quorum service activates, before the configuration can carry any
        // message, and the adapter drains it before feeding a delivered message.
        if let Some(q) = self.nodes[i].late_quorum.take() {
            self.log(format!("n{} late quorum={q}", i + 1));
            return self.feed(i, Event::Quorum(q)).map(|_| true);
        }
        match self.next_of(i) {
            Some(Next::Deliver) => self.deliver(i).map(|_| true),
            Some(Next::Transition(to)) => self.transition(i, to).map(|_| true),
            None => Ok(false),
        }
    }

    fn gen_op(&mut self, ci: usize) -> SimOp {
        let id = self.next_id;
        self.next_id += 1;
        // PVE's cfs_lock runs the locked code under a 60 s alarm and then rmdirs, so a
        // holder never acts on (or releases) a lock older than that; a lock whose
        // acknowledgement came later than that is dropped unused.
        let now = self.now;
        self.clients[ci]
            .locks
            .retain(|_, t| now.saturating_sub(*t) <= LOCK_USE);
        let held: Vec<String> = self.clients[ci].locks.keys().cloned().collect();
        if !held.is_empty() && self.rng.percent(50) {
            let name = self.rng.pick(&held).clone();
            // The client stops relying on the lock as soon as it asks to release it.
            self.clients[ci].locks.remove(&name);
            return SimOp::Delete {
                id,
                path: format!("{LOCK_DIR}/{name}"),
            };
        }
        let dir = *self.rng.pick(&["a", "b", "a/d0", "b/d1"]);
        let file = format!("{dir}/f{}", self.rng.below(3));
        match self.rng.below(100) {
            0..=34 => SimOp::Write {
                id,
                path: file,
                data: id.to_le_bytes().to_vec(),
            },
            35..=47 => SimOp::Create { id, path: file },
            48..=57 => SimOp::Delete {
                id,
                path: if self.rng.percent(70) {
                    file
                } else {
                    dir.to_string()
                },
            },
            58..=65 => SimOp::Mkdir {
                id,
                path: dir.to_string(),
            },
            _ => SimOp::Mkdir {
                id,
                path: format!("{LOCK_DIR}/L{}", self.rng.below(2)),
            },
        }
    }

    fn request(&mut self) -> R<()> {
        let idle: Vec<usize> = (0..self.clients.len())
            .filter(|&c| self.clients[c].busy.is_none() && self.alive(self.clients[c].node))
            .collect();
        if idle.is_empty() {
            return Ok(());
        }
        let ci = *self.rng.pick(&idle);
        let op = self.gen_op(ci);
        if op.lock_name().is_some()
            && matches!(op, SimOp::Mkdir { .. })
            && self.clients[ci]
                .locks
                .contains_key(op.lock_name().unwrap_or_default())
        {
            return Ok(()); // already holding it
        }
        let req = op.id();
        let i = self.clients[ci].node;
        self.log(format!("n{} c{ci} -> {op:?}", i + 1));
        self.clients[ci].busy = Some((req, op.clone()));
        self.feed(i, Event::LocalRequest { req_id: req, op })
    }

    fn tick(&mut self) -> R<()> {
        self.now += self.rng.range(1, 40) as u32;
        for i in 0..self.n {
            if self.alive(i) {
                let now = self.now;
                self.feed(i, Event::Tick { now })?;
            }
        }
        Ok(())
    }

    fn crash(&mut self, i: usize) {
        let core = self.nodes[i].core.take().expect("alive");
        self.log(format!("n{} CRASH (mode {:?})", i + 1, core.mode()));
        self.report.crashes += 1;
        self.report.resent += core.resent();
        let nd = &mut self.nodes[i];
        nd.stored = Some(core.into_db());
        nd.cfg = None;
        nd.cursor = 0;
        nd.join = None;
        nd.current = None;
        nd.view.clear();
        nd.late_quorum = None;
        for c in self.clients.iter_mut().filter(|c| c.node == i) {
            c.busy = None;
            c.locks.clear();
        }
        self.reconfigure();
    }

    fn restart(&mut self, i: usize) -> R<()> {
        let nd = &mut self.nodes[i];
        nd.pid += 1;
        let db = nd.stored.take().expect("crashed node keeps its db");
        nd.core = Some(Node::new(nd.member(), db));
        self.log(format!("n{} RESTART as pid {}", i + 1, self.nodes[i].pid));
        let now = self.now;
        self.feed(i, Event::Tick { now })?;
        self.reconfigure();
        Ok(())
    }

    fn partition(&mut self) {
        let k = self.rng.range(2, 3);
        for i in 0..self.n {
            self.nodes[i].group = self.rng.below(k);
        }
        let groups: Vec<usize> = self.nodes.iter().map(|n| n.group).collect();
        self.log(format!("PARTITION groups {groups:?}"));
        self.reconfigure();
    }

    fn heal(&mut self) {
        for n in &mut self.nodes {
            n.group = 0;
        }
        self.log("HEAL".into());
        self.reconfigure();
    }

    fn step_once(&mut self, crashes: bool) -> R<()> {
        let ready: Vec<usize> = (0..self.n).filter(|&i| self.has_work(i)).collect();
        let dead: Vec<usize> = (0..self.n).filter(|&i| !self.alive(i)).collect();
        let roll = self.rng.below(1000);
        match roll {
            0..=579 if !ready.is_empty() => {
                let i = *self.rng.pick(&ready);
                self.run_node(i)?;
            }
            580..=799 => self.request()?,
            800..=899 => self.tick()?,
            900..=929 => self.partition(),
            930..=964 => self.heal(),
            965..=979 if crashes && dead.len() + 1 < self.n => {
                let alive: Vec<usize> = (0..self.n).filter(|&i| self.alive(i)).collect();
                let i = *self.rng.pick(&alive);
                self.crash(i);
            }
            980..=999 if !dead.is_empty() => {
                let i = *self.rng.pick(&dead);
                self.restart(i)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Heal, restart everyone, deliver until nothing moves, then check convergence.
    fn converge(&mut self) -> R<()> {
        self.log("FINAL: heal and restart all".into());
        for i in 0..self.n {
            if !self.alive(i) {
                self.restart(i)?;
            }
        }
        self.heal();
        let mut budget = 1_000_000;
        let mut idle_ticks = 0;
        loop {
            let ready: Vec<usize> = (0..self.n).filter(|&i| self.has_work(i)).collect();
            if ready.is_empty() {
                // A member that gained quorum after its State re-syncs on a tick.
                if self.late_quorum && idle_ticks < 3 {
                    idle_ticks += 1;
                    self.now += 1;
                    let now = self.now;
                    for i in 0..self.n {
                        self.feed(i, Event::Tick { now })?;
                    }
                    continue;
                }
                break;
            }
            budget -= 1;
            if budget == 0 {
                return Err("no convergence after 1e6 deliveries".into());
            }
            let i = *self.rng.pick(&ready);
            self.run_node(i)?;
            self.check_terms()?;
            self.step += 1;
        }
        let cfg = self.nodes[0].current;
        let mut want: Option<DbIndex> = None;
        for i in 0..self.n {
            let core = self.nodes[i].core.as_ref().expect("all restarted");
            if self.nodes[i].cfg != cfg || !core.all_synced() || core.mode() != Mode::Synced {
                return Err(format!(
                    "n{} stuck: cfg {:?} (cluster at {cfg:?}), mode {:?}, all_synced {}",
                    i + 1,
                    self.nodes[i].cfg,
                    core.mode(),
                    core.all_synced()
                ));
            }
            self.report.resent += core.resent();
            let idx = core.db().index();
            match &want {
                None => want = Some(idx),
                Some(w) if *w != idx => return Err(format!("n{} did not converge with n1", i + 1)),
                Some(_) => {}
            }
        }
        for (ci, c) in self.clients.iter().enumerate() {
            if let Some((_, op)) = &c.busy {
                return Err(format!(
                    "c{ci} on n{} never got an answer for {op:?}",
                    c.node + 1
                ));
            }
        }
        let db = self.nodes[0].core.as_ref().expect("alive").db();
        let history: BTreeSet<u64> = db.applied().iter().copied().collect();
        if history.len() != db.applied().len() {
            return Err("an op was applied twice".into());
        }
        for id in &self.acked_ok {
            if !history.contains(id) {
                if self.durable.contains(id) {
                    return Err(format!(
                        "acknowledged op {id}, once held by a majority, is missing from the converged tree"
                    ));
                }
                self.report.lost_minority_acks += 1;
            }
        }
        for (id, e) in &self.failed_clean {
            if history.contains(id) {
                return Err(format!("op {id} answered {e:?} is in the converged tree"));
            }
        }
        self.report.final_version = db.version();
        Ok(())
    }
}

/// Run one seed; `Err` describes the first violated invariant.
pub fn run(seed: u64, cfg: &SimConfig) -> Result<Report, Failure> {
    let mut w = World::new(seed, cfg);
    let res = (|| -> R<()> {
        let now = w.now;
        for i in 0..w.n {
            w.feed(i, Event::Tick { now })?;
        }
        w.reconfigure();
        while w.step < cfg.steps {
            w.step_once(cfg.crashes)?;
            w.check_terms()?;
            w.step += 1;
        }
        w.converge()
    })();
    match res {
        Ok(()) => Ok(w.report),
        Err(message) => {
            let skip = w.trace.len().saturating_sub(cfg.trace_lines);
            Err(Failure {
                seed: w.seed,
                step: w.step,
                message,
                trace: w.trace.split_off(skip),
            })
        }
    }
}
