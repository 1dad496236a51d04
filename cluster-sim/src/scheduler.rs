//! The world of one seed: its nodes, their disks and cores, the network, the clients,
//! and the scheduler that decides what happens next.
use std::collections::BTreeMap;
use std::sync::Arc;

use cluster_sync::core::{Action, Body, Event, Member, Mode, Node, Protocol, ReqId, Sentinel};
use cluster_sync::wire;
use memdb::codec::MemdbCodec;
use memdb::replica::Replica;
use memdb::{Applied, Limits, LockEvent, MemDb, NullStore, Op, OpCtx, Row};
use nix::errno::Errno;
use parking_lot::RwLock;

use crate::checker::{Checker, Violation};
use crate::disk::Disk;
use crate::network::{Due, Network};
use crate::rng::Rng;
use crate::workload::{Kind, Known, OpId, Workload, KINDS, LOCK_USE};

/// The lock expiry the simulated trees use (pmxcfs's 120 s).
pub const LOCK_TIMEOUT: u32 = memdb::locks::DEFAULT_LOCK_TIMEOUT;

/// How often each fault comes, in thousandths of the scheduler's steps (the fault band
/// is a tenth of them; what it leaves unused is clock ticks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    /// Partitions (and as many heals).
    pub partitions: u32,
    /// Crashes (and as many restarts).
    pub crashes: u32,
    /// Storage faults: a node's next write fails.
    pub storage: u32,
    /// Percent of confchgs whose quorum notification comes late.
    pub late_quorum: u32,
    /// Clients per node.
    pub clients: usize,
}

impl Mix {
    /// The mix of a seed: each fault is off in one seed of four and otherwise comes at
    /// a rate drawn from a range, so that seeds differ in what they stress.
    pub fn draw(rng: &mut Rng) -> Mix {
        let mut rate = |lo: usize, hi: usize| {
            if rng.percent(25) {
                0
            } else {
                rng.range(lo, hi) as u32
            }
        };
        let partitions = rate(5, 25);
        let crashes = rate(3, 12);
        let storage = rate(1, 6);
        let late_quorum = if rng.percent(50) {
            0
        } else {
            rng.range(10, 50) as u32
        };
        Mix {
            partitions,
            crashes,
            storage,
            late_quorum,
            clients: rng.range(1, 3),
        }
    }
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Cluster size; `None` picks 3, 4 or 5 from the seed.
    pub nodes: Option<usize>,
    /// Scheduler steps before the final heal-and-converge phase.
    pub steps: usize,
    /// Trace lines kept in a [`Failure`].
    pub trace_lines: usize,
    /// Use this fault mix instead of drawing one per seed.
    pub mix: Option<Mix>,
    /// The protocol every node speaks. In compat mode ([`Protocol::Dfsm`], pmxcfs's)
    /// acknowledged writes a majority never held, and acknowledged writes missing at
    /// the end, are pmxcfs's known window: counted in the report, not failures.
    pub protocol: Protocol,
    /// The rolling upgrade: every node starts in pmxcfs's protocol as `--protocol
    /// auto` does, offers the switch from a step drawn per seed on (when the last
    /// pmxcfs node would have been replaced), and switches; the faults go on across
    /// it. What a node in pmxcfs's protocol acknowledged is counted as in compat mode;
    /// what the term protocol acknowledged must never be lost.
    pub upgrade: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: None,
            steps: 1500,
            trace_lines: 150,
            mix: None,
            protocol: Protocol::Terms,
            upgrade: false,
        }
    }
}

/// Figures from a successful run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Cluster size used.
    pub nodes: usize,
    /// Requests answered OK, by kind; `Kind::Lock` counts only acquisitions of a free
    /// lock, takeovers of an expired one are `takeovers`.
    pub acked: BTreeMap<Kind, usize>,
    /// Lock acquisitions that took over an expired lock.
    pub takeovers: usize,
    /// Lock acquisitions acknowledged too late to use (older than [`LOCK_USE`]).
    pub stale_locks: usize,
    /// Requests answered with an error, by errno.
    pub errors: BTreeMap<String, usize>,
    /// Writes a membership change lost that the writer's core sent again.
    pub resent: u64,
    /// Partitions made.
    pub partitions: usize,
    /// Crashes made.
    pub crashes: usize,
    /// Restarts (after crashes, and after storage faults stopped a node).
    pub restarts: usize,
    /// Storage faults that hit a write (each stops its node, which recovers).
    pub storage_faults: usize,
    /// Configurations formed.
    pub configs: usize,
    /// Messages multicast.
    pub messages: usize,
    /// Version of the converged tree.
    pub final_version: u64,
    /// Tree checks completed (per member).
    pub tree_checks: usize,
    /// Compat mode: writes acknowledged while no majority of the nodes held them.
    pub acked_unheld: usize,
    /// Compat mode: acknowledged writes missing from the converged tree.
    pub acked_lost: usize,
    /// Compat mode: writes applied in a configuration without quorum.
    pub applied_unquorate: usize,
    /// Upgrade: nodes that switched at a switch round's end.
    pub switched: usize,
    /// Upgrade: nodes that switched when a switched node told them.
    pub switched_late: usize,
    /// Upgrade: requests the term protocol acknowledged (never lost).
    pub acked_after_switch: usize,
    /// Upgrade: requests on the wire at a switch, submitted again to the term protocol.
    pub carried: usize,
    /// Upgrade: of those, failed unapplied (the simulator could not tell one from a
    /// twin request of its writer).
    pub carried_failed: usize,
}

impl Report {
    /// Add another run's figures.
    pub fn add(&mut self, o: &Report) {
        self.tree_checks += o.tree_checks;
        self.acked_unheld += o.acked_unheld;
        self.acked_lost += o.acked_lost;
        self.applied_unquorate += o.applied_unquorate;
        self.switched += o.switched;
        self.switched_late += o.switched_late;
        self.acked_after_switch += o.acked_after_switch;
        self.carried += o.carried;
        self.carried_failed += o.carried_failed;
        for (k, v) in &o.acked {
            *self.acked.entry(*k).or_default() += v;
        }
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        self.takeovers += o.takeovers;
        self.stale_locks += o.stale_locks;
        self.resent += o.resent;
        self.partitions += o.partitions;
        self.crashes += o.crashes;
        self.restarts += o.restarts;
        self.storage_faults += o.storage_faults;
        self.configs += o.configs;
        self.messages += o.messages;
    }

    /// Requests answered OK of one kind.
    pub fn ok(&self, k: Kind) -> usize {
        self.acked.get(&k).copied().unwrap_or(0)
    }
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

struct SimNode {
    nodeid: u32,
    pid: u32,
    core: Option<Node<Replica>>,
    disk: Disk,
    /// The core stopped (a storage fault); the adapter restarts it.
    stopped: bool,
    /// Upgrade: the core switched (`Action::Switched`), to be replaced by a term-protocol
    /// core; its term and unanswered requests.
    switching: Option<(u64, Vec<(ReqId, Op)>)>,
    /// Upgrade: the node's sentinel in pmxcfs's group, once it switched.
    sentinel: Option<Sentinel>,
    /// Upgrade: requests handed over at the switch, held until the term-protocol core
    /// takes writes (as the daemon's runner holds them).
    carried: Vec<(ReqId, Op)>,
}

/// Upgrade: the term-protocol core's pid is the process's plus this, in the
/// simulator only, so that its epochs (which restart with the core) never meet the
/// replaced compat core's in the checker's books; the daemon keeps one pid, its two
/// cores live in two groups.
const TERMS_PID: u32 = 1 << 20;

impl SimNode {
    /// In pmxcfs's group: the compat core, or the sentinel.
    fn member(&self) -> Member {
        Member::new(self.nodeid, self.pid)
    }

    /// In pmxfs's group, after the switch.
    fn term_member(&self) -> Member {
        Member::new(self.nodeid, self.pid + TERMS_PID)
    }

    /// The core speaks pmxcfs's protocol.
    fn compat(&self) -> bool {
        self.core
            .as_ref()
            .is_some_and(|c| c.protocol() == Protocol::Dfsm)
    }
}

type R<T> = Result<T, Violation>;

struct World {
    seed: u64,
    protocol: Protocol,
    rng: Rng,
    mix: Mix,
    n: usize,
    nodes: Vec<SimNode>,
    /// The group of the nodes' protocol (pmxcfs's across an upgrade).
    net: Network,
    /// Upgrade: pmxfs's group, which switched nodes move to.
    net2: Network,
    /// Upgrade: the step from which nodes offer the switch.
    upgrade_at: Option<usize>,
    work: Workload,
    check: Checker,
    /// Time each lock request was applied on its writer's node, and whether it took
    /// over an expired lock.
    local_lock: BTreeMap<OpId, (u32, bool)>,
    now: u32,
    step: usize,
    trace: Vec<String>,
    trace_lines: usize,
    report: Report,
}

/// Every node starts from this tree: `priv/lock`, `a/d0`, `b/d1`.
fn genesis() -> MemDb {
    let mut db = MemDb::empty(Box::new(NullStore), Limits::default());
    for p in ["priv", "priv/lock", "a", "b", "a/d0", "b/d1"] {
        db.apply(&Op::Mkdir { path: p.into() }, OpCtx { writer: 0, now: 0 })
            .expect("genesis");
    }
    db
}

/// The core a (re)started node runs: `protocol`'s, or the term protocol's if it
/// switched before (the daemon reads that from its database too).
fn core_of(nd: &SimNode, protocol: Protocol) -> R<Node<Replica>> {
    let mut db = nd.disk.load(Limits::default(), LOCK_TIMEOUT)?;
    let (protocol, member) = match db.switched_at() {
        Some(_) => (Protocol::Terms, nd.term_member()),
        None => (protocol, nd.member()),
    };
    if protocol == Protocol::Dfsm {
        // pmxcfs's tree rules, as the daemon sets them in its protocol.
        db.set_dialect(memdb::Dialect::Pmxcfs);
    }
    let replica = Replica::new(Arc::new(RwLock::new(db)));
    Ok(Node::with_protocol(member, replica, protocol))
}

fn describe(body: &Body<Op, Row>) -> String {
    match body {
        Body::Normal { ops, ack } => format!("{ops:?} ack {ack}"),
        Body::State {
            index,
            quorate,
            promised_term,
            promised_proposed_term,
            ..
        } => format!(
            "state term {} v{} promised {promised_term}{} quorate {quorate}",
            index.term,
            index.version,
            if *promised_proposed_term {
                " (proposed)"
            } else {
                ""
            }
        ),
        Body::SyncStart { proposed_term, .. } => {
            format!("sync-start proposing term {proposed_term}")
        }
        Body::Promise { term, .. } => format!("promise term {term}"),
        Body::VerifyRequest { id, .. } => format!("verify-request {id}"),
        Body::Verify { id, checksum, .. } => {
            format!("verify {id} {:02x}{:02x}..", checksum[0], checksum[1])
        }
        b => b.kind().to_string(),
    }
}

impl World {
    fn new(seed: u64, cfg: &SimConfig) -> R<World> {
        let mut rng = Rng::new(seed);
        let n = cfg.nodes.unwrap_or_else(|| 3 + rng.below(3));
        let mix = cfg.mix.unwrap_or_else(|| Mix::draw(&mut rng));
        let g = genesis();
        let protocol = if cfg.upgrade {
            Protocol::Dfsm
        } else {
            cfg.protocol
        };
        let mut nodes = Vec::new();
        for i in 0..n {
            let mut nd = SimNode {
                nodeid: i as u32 + 1,
                pid: 1000,
                core: None,
                disk: Disk::with(&g),
                stopped: false,
                switching: None,
                sentinel: None,
                carried: Vec::new(),
            };
            nd.core = Some(core_of(&nd, protocol)?);
            nodes.push(nd);
        }
        let work = Workload::new(n, mix.clients, &mut rng, false);
        let upgrade_at = cfg.upgrade.then(|| rng.below(cfg.steps.max(1)));
        let mut check = Checker::new(n, protocol == Protocol::Dfsm && !cfg.upgrade);
        if cfg.upgrade {
            // pmxcfs's trees carry no terms: every genesis label is 0.
            check.label_floor = Some(0);
        }
        Ok(World {
            seed,
            protocol,
            rng,
            mix,
            n,
            nodes,
            net: Network::new(n, mix.late_quorum),
            net2: Network::new(n, mix.late_quorum),
            upgrade_at,
            work,
            check,
            local_lock: BTreeMap::new(),
            now: 1_000_000,
            step: 0,
            trace: Vec::new(),
            trace_lines: cfg.trace_lines,
            report: Report {
                nodes: n,
                ..Report::default()
            },
        })
    }

    fn log(&mut self, s: String) {
        if self.trace.len() >= 4 * self.trace_lines.max(1) {
            let keep = self.trace.len() - self.trace_lines;
            self.trace.drain(..keep);
        }
        self.trace
            .push(format!("#{} t={} {s}", self.step, self.now));
    }

    fn alive(&self, i: usize) -> bool {
        self.nodes[i].core.is_some()
    }

    fn reconfigure(&mut self) {
        // pmxcfs's group holds every running node (a switched one by its sentinel),
        // pmxfs's group the switched ones.
        let live: Vec<Option<Member>> = self
            .nodes
            .iter()
            .map(|nd| nd.core.as_ref().map(|_| nd.member()))
            .collect();
        let live2: Vec<Option<Member>> = self
            .nodes
            .iter()
            .map(|nd| (nd.core.is_some() && !nd.compat()).then(|| nd.term_member()))
            .collect();
        let mut lines = Vec::new();
        self.net.reconfigure(&live, &mut self.rng, &mut lines);
        if self.upgrade_at.is_some() {
            let mut l2 = Vec::new();
            self.net2.reconfigure(&live2, &mut self.rng, &mut l2);
            lines.extend(l2.into_iter().map(|l| format!("pmxfs group: {l}")));
        }
        for l in lines {
            self.log(l);
        }
    }

    /// The group node `i`'s core speaks in.
    fn net_of(&self, i: usize) -> &Network {
        if self.nodes[i].compat() || self.upgrade_at.is_none() {
            &self.net
        } else {
            &self.net2
        }
    }

    fn feed(&mut self, i: usize, ev: Event<Op, Row>) -> R<()> {
        let core = self.nodes[i].core.as_mut().expect("alive");
        let before = core.verifies().0;
        let actions = core.handle(ev);
        let (checks, mismatches) = core.verifies();
        self.report.tree_checks += (checks - before) as usize;
        self.carry_out(i, actions)?;
        if mismatches > 0 {
            // Members synced in one configuration hold one tree: a check that finds
            // otherwise is a broken protocol, or a check taken at different points.
            return Err(format!(
                "n{} failed the tree check ({checks} checks)",
                i + 1
            ));
        }
        if let Some((term, pending)) = self.nodes[i].switching.take() {
            self.switch(i, term, pending)?;
        }
        let writable = self.nodes[i].core.as_ref().is_some_and(|c| c.writable());
        if writable && !self.nodes[i].carried.is_empty() {
            for (req_id, op) in std::mem::take(&mut self.nodes[i].carried) {
                self.log(format!("n{} submits carried request {req_id}", i + 1));
                self.report.carried += 1;
                let nodeid = self.nodes[i].nodeid;
                if !self.work.reissue(nodeid, &op, self.now, req_id) {
                    // The simulator could not tell it from a twin request: it fails it
                    // unapplied, as the daemon fails one that waited too long.
                    self.log(format!("n{} fails carried request {req_id}", i + 1));
                    self.report.carried_failed += 1;
                    self.on_reply(i, req_id, Err(Errno::EACCES), false)?;
                    continue;
                }
                self.feed(i, Event::LocalRequest { req_id, op })?;
            }
        }
        if let Some(core) = &self.nodes[i].core {
            let db = core.db().tree().read();
            self.check.tree(i, &db)?;
        }
        if self.nodes[i].stopped {
            // The daemon's runner joins again as a new member, with the tree its disk
            // holds: a storage fault is a crash the process survives.
            self.nodes[i].stopped = false;
            self.log(format!(
                "n{} stopped by a storage fault: restarting it",
                i + 1
            ));
            self.crash(i, false);
            self.restart(i)?;
        }
        Ok(())
    }

    /// Upgrade: node `i`'s compat core switched at `term`: the node records it, keeps
    /// a sentinel in pmxcfs's group (which tells everyone there at once), and goes on
    /// with a term-protocol core on the same tree, joining pmxfs's group, handed the
    /// requests the old core left unanswered.
    fn switch(&mut self, i: usize, term: u64, pending: Vec<(ReqId, Op)>) -> R<()> {
        let old = self.nodes[i].core.take().expect("a switching node runs");
        let db = old.into_db();
        let recorded = db.tree().write().set_switched(term);
        if let Err(e) = recorded {
            // The daemon's runner fails the session and joins pmxcfs's group again;
            // a switched node tells it there.
            self.log(format!("n{} could not record the switch: {e}", i + 1));
            let member = self.nodes[i].member();
            self.nodes[i].core = Some(Node::with_protocol(member, db, Protocol::Dfsm));
            self.nodes[i].stopped = true;
            return Ok(());
        }
        db.tree().write().set_dialect(memdb::Dialect::Pmxfs);
        self.log(format!(
            "n{} SWITCHED at term {term}, {} requests carried over",
            i + 1,
            pending.len()
        ));
        self.check.label_floor = Some(self.check.label_floor.unwrap_or(0).max(term));
        self.report.switched += 1;
        let member = self.nodes[i].term_member();
        self.nodes[i].core = Some(Node::with_protocol(member, db, Protocol::Terms));
        self.nodes[i].sentinel = Some(Sentinel::default());
        self.announce(i)?;
        let now = self.now;
        self.feed(i, Event::Tick { now })?;
        let n = self.n;
        self.feed(i, Event::Nodes(n))?;
        self.reconfigure();
        self.nodes[i].carried = pending;
        Ok(())
    }

    /// Node `i`'s sentinel tells pmxcfs's group that the cluster switched.
    fn announce(&mut self, i: usize) -> R<()> {
        let term = self.nodes[i]
            .core
            .as_ref()
            .and_then(|c| c.db().tree().read().switched_at())
            .ok_or("a sentinel on a node that did not switch")?;
        let me = self.nodes[i].member();
        let bytes = memdb::dcdb::encode_switched(self.now, term);
        self.net.multicast(i, me, bytes)?;
        self.report.messages += 1;
        Ok(())
    }

    fn carry_out(&mut self, i: usize, actions: Vec<Action<Op, Row, Errno, Applied>>) -> R<()> {
        let compat = self.nodes[i].compat();
        for a in actions {
            match a {
                Action::Multicast(msg) => {
                    let me = if compat || self.upgrade_at.is_none() {
                        self.nodes[i].member()
                    } else {
                        self.nodes[i].term_member()
                    };
                    if let Body::State { epoch, .. } = &msg.body {
                        self.check.state_sent(i, me, *epoch);
                    }
                    // Each protocol's own encoding, as the daemon sends it.
                    let bytes = if compat {
                        memdb::dcdb::encode(&msg)
                            .map_err(|e| format!("n{} made an unsendable message: {e}", i + 1))?
                    } else {
                        wire::encode::<MemdbCodec>(&msg)
                    };
                    if compat || self.upgrade_at.is_none() {
                        self.net.multicast(i, me, bytes)?;
                    } else {
                        self.net2.multicast(i, me, bytes)?;
                    }
                    self.report.messages += 1;
                }
                Action::Reply { req_id, result } => self.on_reply(i, req_id, result, compat)?,
                Action::Switched { term, pending } => {
                    self.nodes[i].switching = Some((term, pending));
                }
                Action::Applied {
                    op,
                    outcome,
                    writer,
                    time,
                    local,
                } => {
                    let id = self.work.identify(writer, &op, time).ok_or_else(|| {
                        format!("n{} applied {op:?} that nobody requested", i + 1)
                    })?;
                    let net = self.net_of(i);
                    let quorate = net.delivering(i).is_some_and(|c| net.cfg(c).quorate);
                    self.check.applied(i, id, quorate, compat)?;
                    if local {
                        if let Some(LockEvent::Acquired(_)) = outcome.lock {
                            self.local_lock
                                .insert(id, (time, !outcome.removed.is_empty()));
                        }
                    }
                }
                Action::SyncInstalled { leader, epoch } => {
                    self.log(format!("n{} installed {leader}'s tree", i + 1));
                    self.check.installed(i, leader, epoch)?;
                }
                Action::ModeChanged(m) => {
                    self.log(format!("n{} mode {m:?}", i + 1));
                    if m == Mode::Error {
                        self.nodes[i].stopped = true;
                    }
                }
            }
        }
        Ok(())
    }

    fn on_reply(&mut self, i: usize, req: u64, result: Result<(), Errno>, compat: bool) -> R<()> {
        let ci = self
            .work
            .clients
            .iter()
            .position(|c| c.node == i && c.busy.as_ref().is_some_and(|b| b.0 == req))
            .ok_or_else(|| format!("n{} answered request {req} that is not outstanding", i + 1))?;
        let (id, kind, op) = self.work.clients[ci].busy.take().expect("busy");
        self.log(format!("n{} c{ci} <- {result:?} for {op:?}", i + 1));
        self.check.answered(id, result, compat)?;
        if result.is_ok() && !compat && self.upgrade_at.is_some() {
            self.report.acked_after_switch += 1;
        }
        let e = match result {
            Err(e) => {
                *self.report.errors.entry(format!("{e}")).or_default() += 1;
                return Ok(());
            }
            Ok(()) => kind,
        };
        match e {
            Kind::Lock => self.lock_acquired(ci, id, &op)?,
            Kind::Refresh => {
                // The refresh moved the lock's expiry to its time (the op's mtime).
                if let Op::Mtime { path, mtime } = &op {
                    let name = path.rsplit('/').next().unwrap_or_default().to_string();
                    let c = &mut self.work.clients[ci];
                    if self.now.saturating_sub(*mtime) > LOCK_USE {
                        c.locks.remove(&name);
                    } else if let Some(held) = c.locks.get_mut(&name) {
                        if *mtime >= held.0 {
                            *held = (*mtime, id);
                        }
                    }
                }
                *self.report.acked.entry(kind).or_default() += 1;
            }
            _ => *self.report.acked.entry(kind).or_default() += 1,
        }
        Ok(())
    }

    /// Client `ci` acquired a lock: nobody else may believe they hold it.
    fn lock_acquired(&mut self, ci: usize, id: OpId, op: &Op) -> R<()> {
        let Op::Mkdir { path } = op else {
            return Err(format!("lock request {id} is not a mkdir: {op:?}"));
        };
        let name = path.rsplit('/').next().unwrap_or_default().to_string();
        let (t, took_over) = *self
            .local_lock
            .get(&id)
            .ok_or("lock acknowledged before its own application")?;
        if took_over {
            self.report.takeovers += 1;
        } else {
            *self.report.acked.entry(Kind::Lock).or_default() += 1;
        }
        // A write queued across a sync is applied with its (old) request time, so the
        // lock may be expired, even taken over, by the time the holder hears back: a
        // holder counts the lock's life from that time, so such a lock is never used.
        if self.now.saturating_sub(t) > LOCK_USE {
            self.log(format!(
                "c{ci} drops lock {name} acquired at {t}: too old to use"
            ));
            self.report.stale_locks += 1;
            return Ok(());
        }
        for (cj, other) in self.work.clients.iter().enumerate() {
            if let Some(&(t2, _)) = other.locks.get(&name) {
                if cj != ci && t.saturating_sub(t2) <= LOCK_TIMEOUT {
                    return Err(format!(
                        "lock {name}: c{ci} acquired it at {t} while c{cj} holds it since {t2}"
                    ));
                }
            }
        }
        self.work.clients[ci].locks.insert(name, (t, id));
        Ok(())
    }

    /// Whether node `i` has something due in either group.
    fn has_due(&self, i: usize) -> bool {
        self.net.has_due(i) || (self.upgrade_at.is_some() && self.net2.has_due(i))
    }

    fn run_node(&mut self, i: usize) -> R<()> {
        let (in1, in2) = (
            self.net.has_due(i),
            self.upgrade_at.is_some() && self.net2.has_due(i),
        );
        let second = in2 && (!in1 || self.rng.percent(50));
        if self.nodes[i].sentinel.is_some() && !second {
            return self.run_sentinel(i);
        }
        let due = if second {
            self.net2.take(i, &mut self.rng)
        } else {
            self.net.take(i, &mut self.rng)
        };
        let Some(due) = due else {
            return Ok(());
        };
        // Checker keys of pmxfs's group's configurations, apart from pmxcfs's.
        let cfg_key = |c: usize| if second { c + (1 << 32) } else { c };
        match due {
            Due::LateQuorum(q) => {
                self.log(format!("n{} late quorum={q}", i + 1));
                self.feed(i, Event::Quorum(q))
            }
            Due::Deliver {
                cfg,
                pos,
                from,
                bytes,
            } => {
                let msg = if self.nodes[i].compat() {
                    match memdb::dcdb::decode(&bytes) {
                        Ok(m) => m,
                        Err(e) => {
                            let Some(term) = memdb::dcdb::decode_switched(&bytes) else {
                                return Err(format!("pmxcfs's encoding rejected: {e}"));
                            };
                            self.log(format!("n{} told by {from}: switched at {term}", i + 1));
                            self.report.switched_late += 1;
                            return self.feed(i, Event::Switched { term });
                        }
                    }
                } else {
                    wire::decode::<MemdbCodec>(&bytes)
                        .map_err(|e| format!("own encoding rejected: {e}"))?
                };
                self.log(format!(
                    "n{} delivers cfg {cfg}#{pos}{} from {from} seq {}: {}",
                    i + 1,
                    if second { " (pmxfs group)" } else { "" },
                    msg.seq,
                    describe(&msg.body)
                ));
                self.feed(i, Event::Deliver { from, msg })?;
                let net = if second { &self.net2 } else { &self.net };
                if let Some(core) = &self.nodes[i].core {
                    // A detached member ended the round keeping its own tree.
                    if core.all_synced()
                        && core.mode() == Mode::Synced
                        && net.delivering(i) == Some(cfg)
                        && core.protocol()
                            == if second {
                                Protocol::Terms
                            } else {
                                self.protocol
                            }
                    {
                        let db = core.db().tree().read();
                        self.check.synced(i, cfg_key(cfg), pos + 1, &db)?;
                    }
                }
                Ok(())
            }
            Due::Enter {
                cfg,
                members,
                left,
                joined,
                quorum,
            } => {
                self.log(format!(
                    "n{} enters cfg {cfg}{}",
                    i + 1,
                    if second { " (pmxfs group)" } else { "" }
                ));
                match quorum {
                    Some(q) => self.feed(i, Event::Quorum(q))?,
                    None => self.log(format!("n{} quorum notification delayed", i + 1)),
                }
                if let (Some(at), Some(core)) = (self.upgrade_at, self.nodes[i].core.as_mut()) {
                    // The adapter's rule (`switch::ready`): offer once every node of
                    // the cluster is in the configuration, from the step the last
                    // pmxcfs node was replaced.
                    let all = (1..=self.n as u32).all(|n| members.iter().any(|m| m.nodeid == n));
                    core.set_switch_ready(self.step >= at && all);
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
        }
    }

    /// Node `i`'s sentinel takes what pmxcfs's group delivers it: it announces the
    /// switch when [`Sentinel`] says so, and takes no other part.
    fn run_sentinel(&mut self, i: usize) -> R<()> {
        let Some(due) = self.net.take(i, &mut self.rng) else {
            return Ok(());
        };
        let me = self.nodes[i].member();
        let s = self.nodes[i].sentinel.as_mut().expect("a sentinel");
        let tell = match due {
            Due::LateQuorum(_) => false,
            Due::Deliver { from, bytes, .. } => {
                s.heard(me, from, memdb::dcdb::decode_switched(&bytes).is_some())
            }
            Due::Enter { joined, .. } => s.confchg(me, &joined),
        };
        if tell {
            self.log(format!("n{} sentinel announces the switch", i + 1));
            self.announce(i)?;
        }
        Ok(())
    }

    fn request(&mut self) -> R<()> {
        let idle: Vec<usize> = (0..self.work.clients.len())
            .filter(|&c| {
                self.work.clients[c].busy.is_none() && self.alive(self.work.clients[c].node)
            })
            .collect();
        // Clients of a node without quorum mostly wait (they would only hear EACCES);
        // one request in ten still tries, so that the refusal stays tested.
        let quorate: Vec<usize> = idle
            .iter()
            .copied()
            .filter(|&c| {
                let i = self.work.clients[c].node;
                self.nodes[i]
                    .core
                    .as_ref()
                    .is_some_and(|core| core.quorate())
            })
            .collect();
        let pool = if self.rng.percent(10) {
            &idle
        } else {
            &quorate
        };
        if pool.is_empty() {
            return Ok(());
        }
        let ci = *self.rng.pick(pool);
        let i = self.work.clients[ci].node;
        let nodeid = self.nodes[i].nodeid;
        let known = self.known(i);
        let Some((id, op)) = self.work.issue(ci, nodeid, self.now, &known, &mut self.rng) else {
            return Ok(());
        };
        self.log(format!("n{} c{ci} -> {op:?}", i + 1));
        self.feed(i, Event::LocalRequest { req_id: id, op })
    }

    /// The files and directories below `a` and `b` node `i`'s tree holds.
    fn known(&self, i: usize) -> Known {
        let mut k = Known::default();
        let Some(core) = &self.nodes[i].core else {
            return k;
        };
        let db = core.db().tree().read();
        let mut stack: Vec<String> = vec!["a".into(), "b".into()];
        while let Some(d) = stack.pop() {
            let Ok(e) = db.resolve(&d) else { continue };
            for (name, ino) in &e.children {
                let p = format!("{d}/{name}");
                match db.get(*ino) {
                    Some(c) if c.is_dir() => {
                        k.dirs.push(p.clone());
                        stack.push(p);
                    }
                    Some(_) => k.files.push(p),
                    None => {}
                }
            }
        }
        k
    }

    fn tick(&mut self) -> R<()> {
        self.now += self.rng.range(1, 40) as u32;
        // The daemon's verify timer, now and then: each check costs messages, that is,
        // steps the workload would have had.
        let verify = self.rng.below(8) == 0;
        for i in 0..self.n {
            if self.alive(i) {
                let now = self.now;
                self.feed(i, Event::Tick { now })?;
                // Only the lowest synced member acts on it.
                if verify && self.alive(i) {
                    self.feed(i, Event::VerifyNow)?;
                }
            }
        }
        Ok(())
    }

    /// Node `i` goes down; its disk stays. `fault`: a crash the schedule chose (not a
    /// restart after a storage fault).
    fn crash(&mut self, i: usize, fault: bool) {
        let core = self.nodes[i].core.take().expect("alive");
        self.log(format!("n{} CRASH (mode {:?})", i + 1, core.mode()));
        if fault {
            self.report.crashes += 1;
        }
        self.report.resent += core.resent();
        self.nodes[i].sentinel = None;
        self.nodes[i].switching = None;
        self.nodes[i].carried.clear();
        self.net.leave(i);
        self.net2.leave(i);
        for c in self.work.clients.iter_mut().filter(|c| c.node == i) {
            c.busy = None;
            c.locks.clear();
        }
        self.reconfigure();
    }

    fn restart(&mut self, i: usize) -> R<()> {
        self.nodes[i].pid += 1;
        let member = self.nodes[i].member();
        self.nodes[i].core = Some(core_of(&self.nodes[i], self.protocol)?);
        if self.upgrade_at.is_some() && !self.nodes[i].compat() {
            // Switched before: in pmxfs's protocol at once, its sentinel in pmxcfs's
            // group (which announces at its join).
            self.nodes[i].sentinel = Some(Sentinel::default());
        }
        self.report.restarts += 1;
        self.log(format!("n{} RESTART as pid {}", i + 1, member.pid));
        let now = self.now;
        self.feed(i, Event::Tick { now })?;
        let n = self.n;
        self.feed(i, Event::Nodes(n))?;
        self.reconfigure();
        Ok(())
    }

    /// Upgrade: the last node still running pmxcfs gets pmxfs (a restart): from now
    /// on every node offers the switch whenever all are in one configuration.
    fn replace_last(&mut self) -> R<()> {
        let i = self.rng.below(self.n);
        self.log(format!(
            "n{} REPLACED: the last pmxcfs node now runs pmxfs --protocol auto",
            i + 1
        ));
        if self.alive(i) {
            self.crash(i, false);
        }
        self.restart(i)
    }

    fn partition(&mut self) {
        let k = self.rng.range(2, 3);
        for i in 0..self.n {
            let g = self.rng.below(k);
            self.net.set_group(i, g);
            self.net2.set_group(i, g);
        }
        let groups: Vec<usize> = (0..self.n).map(|i| self.net.group(i)).collect();
        self.log(format!("PARTITION groups {groups:?}"));
        self.report.partitions += 1;
        self.reconfigure();
    }

    fn heal(&mut self) {
        for i in 0..self.n {
            self.net.set_group(i, 0);
            self.net2.set_group(i, 0);
        }
        self.log("HEAL".into());
        self.reconfigure();
    }

    fn storage_fault(&mut self) {
        let alive: Vec<usize> = (0..self.n).filter(|&i| self.alive(i)).collect();
        if let Some(&i) = alive.get(self.rng.below(alive.len().max(1))) {
            self.log(format!("n{} STORAGE: its next write fails", i + 1));
            self.nodes[i].disk.fail_next_write();
        }
    }

    fn step_once(&mut self) -> R<()> {
        let ready: Vec<usize> = (0..self.n)
            .filter(|&i| self.alive(i) && self.has_due(i))
            .collect();
        let dead: Vec<usize> = (0..self.n).filter(|&i| !self.alive(i)).collect();
        let roll = self.rng.below(1000) as u32;
        let m = self.mix;
        match roll {
            0..=579 if !ready.is_empty() => {
                let i = *self.rng.pick(&ready);
                self.run_node(i)?;
            }
            0..=799 => self.request()?,
            800..=899 => self.tick()?,
            r => {
                // The fault band: partitions and heals, crashes and restarts, storage.
                let r = r - 900;
                let (p, c, s) = (m.partitions, m.crashes, m.storage);
                if r < p {
                    self.partition();
                } else if r < 2 * p {
                    self.heal();
                } else if r < 2 * p + c {
                    if dead.len() + 1 < self.n {
                        let alive: Vec<usize> = (0..self.n).filter(|&i| self.alive(i)).collect();
                        let i = *self.rng.pick(&alive);
                        self.crash(i, true);
                    }
                } else if r < 2 * p + 2 * c {
                    if !dead.is_empty() {
                        let i = *self.rng.pick(&dead);
                        self.restart(i)?;
                    }
                } else if r < 2 * p + 2 * c + s {
                    self.storage_fault();
                } else {
                    self.tick()?;
                }
            }
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
            let ready: Vec<usize> = (0..self.n)
                .filter(|&i| self.alive(i) && self.has_due(i))
                .collect();
            if ready.is_empty() {
                // A member that gained quorum after its State re-syncs on a tick; a
                // write waiting for that round is answered after it.
                if idle_ticks < 3 {
                    idle_ticks += 1;
                    self.now += 1;
                    for i in 0..self.n {
                        let now = self.now;
                        self.feed(i, Event::Tick { now })?;
                    }
                    continue;
                }
                break;
            }
            idle_ticks = 0;
            budget -= 1;
            if budget == 0 {
                return Err("no convergence after 1e6 deliveries".into());
            }
            let i = *self.rng.pick(&ready);
            self.run_node(i)?;
            self.step += 1;
        }
        let upgrade = self.upgrade_at.is_some();
        let net = if upgrade { &self.net2 } else { &self.net };
        let cfg = net.current(0);
        let mut want = None;
        for i in 0..self.n {
            let core = self.nodes[i].core.as_ref().expect("all restarted");
            if upgrade && core.protocol() != Protocol::Terms {
                return Err(format!(
                    "n{} still speaks pmxcfs's protocol with every node up and joined",
                    i + 1
                ));
            }
            if net.delivering(i) != cfg || !core.all_synced() || core.mode() != Mode::Synced {
                return Err(format!(
                    "n{} stuck: cfg {:?} (cluster at {cfg:?}), mode {:?}, all_synced {}",
                    i + 1,
                    net.delivering(i),
                    core.mode(),
                    core.all_synced()
                ));
            }
            if core.protocol() == Protocol::Terms && core.accepted_term().is_none() {
                return Err(format!("n{} converged without a term: read-only", i + 1));
            }
            self.report.resent += core.resent();
            let idx = cluster_sync::core::Database::index(core.db());
            match &want {
                None => want = Some(idx),
                Some(w) if *w != idx => return Err(format!("n{} did not converge with n1", i + 1)),
                Some(_) => {}
            }
        }
        for (ci, c) in self.work.clients.iter().enumerate() {
            if let Some((_, _, op)) = &c.busy {
                return Err(format!(
                    "c{ci} on n{} never got an answer for {op:?}",
                    c.node + 1
                ));
            }
        }
        self.check.converged()?;
        let db = self.nodes[0]
            .core
            .as_ref()
            .expect("alive")
            .db()
            .tree()
            .read();
        self.report.final_version = db.root_version().version;
        Ok(())
    }

    fn finish_report(&mut self) {
        self.report.acked_unheld = self.check.acked_unheld;
        self.report.acked_lost = self.check.acked_lost;
        self.report.applied_unquorate = self.check.applied_unquorate;
        self.report.configs = self.net.configs();
        self.report.storage_faults = self.nodes.iter().map(|n| n.disk.refused() as usize).sum();
    }
}

/// Run one seed; `Err` describes the first violated invariant (a panic, such as a
/// core's assertion, included).
pub fn run(seed: u64, cfg: &SimConfig) -> Result<Report, Failure> {
    let mut w = match World::new(seed, cfg) {
        Ok(w) => w,
        Err(message) => {
            return Err(Failure {
                seed,
                step: 0,
                message,
                trace: Vec::new(),
            })
        }
    };
    let steps = cfg.steps;
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> R<()> {
        let now = w.now;
        for i in 0..w.n {
            w.feed(i, Event::Tick { now })?;
            let n = w.n;
            w.feed(i, Event::Nodes(n))?;
        }
        w.reconfigure();
        while w.step < steps {
            if w.upgrade_at == Some(w.step) {
                w.replace_last()?;
            }
            w.step_once()?;
            w.step += 1;
        }
        w.converge()
    }));
    let res = match res {
        Ok(r) => r,
        Err(p) => Err(format!(
            "panicked: {}",
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
    };
    w.finish_report();
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

/// Every kind the report counts, for callers that print them.
pub fn kinds() -> &'static [Kind] {
    &KINDS
}
