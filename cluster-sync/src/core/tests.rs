//! The core's unit tests: scenarios on a hand-fed CPG (`Cfg`) over the test double
//! `test_db`. The simulator (crate `cluster-sim`) runs the real tree under random
//! schedules; these pin the cases that found bugs and the protocol's fast and slow
//! paths.
use super::test_db::{SimDb, SimEntry, SimErr, SimOp};
use super::*;

type A = Action<SimOp, SimEntry, SimErr, u64>;
type Msg<D> = Message<<D as Database>::Op, <D as Database>::Entry>;

fn sent(actions: &[A]) -> Vec<Msg<SimDb>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Multicast(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

/// A lone member delivers its own messages, and those they cause, in order; the
/// other actions it took on the way.
fn deliver_own(n: &mut Node<SimDb>, mut inbox: Vec<Msg<SimDb>>) -> Vec<A> {
    let me = n.me();
    let mut out = Vec::new();
    while !inbox.is_empty() {
        let msg = inbox.remove(0);
        for a in n.handle(Event::Deliver { from: me, msg }) {
            match a {
                Action::Multicast(m) => inbox.push(m),
                a => out.push(a),
            }
        }
    }
    out
}

fn replies(actions: &[A]) -> Vec<(u64, Result<(), SimErr>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Reply { req_id, result } => Some((*req_id, *result)),
            _ => None,
        })
        .collect()
}

fn mkdir(id: u64) -> SimOp {
    SimOp::Mkdir {
        id,
        path: "priv/lock/x".into(),
    }
}

#[test]
fn no_quorum_fails_without_multicast() {
    let me = Member::new(1, 10);
    let mut n = Node::new(me, SimDb::genesis());
    let acts = n.handle(Event::LocalRequest {
        req_id: 7,
        op: mkdir(1),
    });
    assert!(sent(&acts).is_empty());
    assert!(matches!(
        acts.as_slice(),
        [Action::Reply {
            req_id: 7,
            result: Err(SimErr::Access)
        }]
    ));
}

#[test]
fn lone_node_syncs_then_writes_and_replies_on_own_delivery() {
    let me = Member::new(1, 10);
    let mut n = Node::new(me, SimDb::genesis());
    n.handle(Event::Tick { now: 500 });
    n.handle(Event::Quorum(true));
    let acts = n.handle(Event::ConfChg {
        members: vec![me],
        left: vec![],
        joined: vec![me],
    });
    // Queued until synced: nothing sent for the request yet.
    let early = n.handle(Event::LocalRequest {
        req_id: 1,
        op: mkdir(1),
    });
    assert!(sent(&early).is_empty());
    let done = deliver_own(&mut n, sent(&acts));
    let applied: Vec<u32> = done
        .iter()
        .filter_map(|a| match a {
            Action::Applied {
                local: true, time, ..
            } => Some(*time),
            _ => None,
        })
        .collect();
    assert_eq!(n.mode(), Mode::Synced);
    assert!(n.writable());
    assert_eq!(replies(&done), vec![(1, Ok(()))]);
    assert_eq!(applied, vec![500]);
    assert_eq!(n.db().locks(), vec![("x".to_string(), 500)]);
}

/// A quorate member at `now` that has synced its first configuration, alone.
fn synced_alone(me: Member, now: u32) -> Node<SimDb> {
    let mut n = Node::new(me, SimDb::genesis());
    n.handle(Event::Tick { now });
    n.handle(Event::Quorum(true));
    let acts = n.handle(Event::ConfChg {
        members: vec![me],
        left: vec![],
        joined: vec![me],
    });
    deliver_own(&mut n, sent(&acts));
    assert!(n.writable());
    n
}

/// A lone quorate member that has synced its first configuration, and a write it
/// sent at `now` that corosync lost; then the next configuration's messages.
fn lose_a_write(now: u32, later: u32) -> (Node<SimDb>, Vec<A>) {
    let me = Member::new(1, 10);
    let mut n = synced_alone(me, now);
    let write = sent(&n.handle(Event::LocalRequest {
        req_id: 9,
        op: mkdir(2),
    }));
    assert_eq!(write.len(), 1);
    n.handle(Event::Tick { now: later });
    // The write is never delivered; a new configuration's own State reveals it.
    let acts = n.handle(Event::ConfChg {
        members: vec![me],
        left: vec![],
        joined: vec![],
    });
    let done = deliver_own(&mut n, sent(&acts));
    (n, done)
}

#[test]
fn lost_own_message_is_sent_again_with_its_time_and_applied_once() {
    let (n, done) = lose_a_write(500, 500 + RESEND_WINDOW);
    assert_eq!(replies(&done), vec![(9, Ok(()))]);
    assert_eq!(n.db().locks(), vec![("x".to_string(), 500)]);
    assert_eq!(n.db().applied(), &[2]);
    assert_eq!(n.resent(), 1);
    assert_eq!(n.unanswered(), 0);
}

#[test]
fn requests_in_names_a_batch_while_it_is_in_flight() {
    let me = Member::new(1, 10);
    let mut n = synced_alone(me, 500);
    let first = sent(&n.handle(Event::LocalRequest {
        req_id: 1,
        op: mkdir(1),
    }));
    // Requested while the first is on the wire: they wait and go out together.
    for (req_id, id) in [(2, 2), (3, 3)] {
        let more = n.handle(Event::LocalRequest {
            req_id,
            op: write(id, &format!("f{id}")),
        });
        assert!(
            sent(&more).is_empty(),
            "one own Normal on the wire at a time"
        );
    }
    assert_eq!(first.len(), 1);
    assert_eq!(n.requests_in(first[0].seq), vec![1]);
    let mut batch = Vec::new();
    for a in n.handle(Event::Deliver {
        from: me,
        msg: first[0].clone(),
    }) {
        if let Action::Multicast(m) = a {
            batch.push(m);
        }
    }
    assert_eq!(
        n.requests_in(first[0].seq),
        Vec::<u64>::new(),
        "applied: no longer in flight"
    );
    assert_eq!(batch.len(), 1);
    assert_eq!(n.requests_in(batch[0].seq), vec![2, 3], "in their order");
    assert_eq!(
        n.requests_in(batch[0].seq + 100),
        Vec::<u64>::new(),
        "not a message of ours"
    );
    let done = deliver_own(&mut n, batch);
    assert_eq!(replies(&done), vec![(2, Ok(())), (3, Ok(()))]);
}

#[test]
fn lost_own_message_older_than_the_window_fails_once_unapplied() {
    let (n, done) = lose_a_write(500, 501 + RESEND_WINDOW);
    assert_eq!(replies(&done), vec![(9, Err(SimErr::Again))]);
    assert!(n.db().locks().is_empty());
    assert_eq!(n.resent(), 0);
    assert_eq!(n.unanswered(), 0);
}

#[test]
fn writes_queued_by_a_round_that_a_confchg_ends_are_sent_again_in_order() {
    let me = Member::new(1, 10);
    let other = Member::new(2, 20);
    let mut n = synced_alone(me, 700);
    let mut writes = Vec::new();
    for (req, id) in [(1, 11), (2, 12)] {
        writes.extend(sent(&n.handle(Event::LocalRequest {
            req_id: req,
            op: write(id, &format!("f{id}")),
        })));
    }
    // A joiner arrives: both writes are delivered in the new configuration (FIFO:
    // before its SyncStart) while its round runs, so they are queued; then another
    // confchg drops that round and its queue.
    let sync = sent(&n.handle(Event::ConfChg {
        members: vec![me, other],
        left: vec![],
        joined: vec![other],
    }));
    for msg in writes.into_iter().chain(sync) {
        let acts = n.handle(Event::Deliver { from: me, msg });
        assert!(replies(&acts).is_empty(), "answered before the round ended");
    }
    let acts = n.handle(Event::ConfChg {
        members: vec![me],
        left: vec![other],
        joined: vec![],
    });
    assert!(replies(&acts).is_empty(), "a dropped write was failed");
    let done = deliver_own(&mut n, sent(&acts));
    assert_eq!(replies(&done), vec![(1, Ok(())), (2, Ok(()))]);
    assert_eq!(n.db().applied(), &[11, 12]);
    // Only the first was on the wire: the second waited behind it (one message of a
    // member's on the wire at a time) and was never sent before.
    assert_eq!(n.resent(), 1);
}

/// A tiny CPG for one configuration: one log in total order, delivered to every
/// member in full unless it is cut short for some (they "crash" first).
struct Cfg<'a> {
    nodes: Vec<&'a mut Node<SimDb>>,
    log: Vec<(Member, Msg<SimDb>)>,
    /// Replies seen, by node position.
    replies: Vec<(usize, u64, Result<(), SimErr>)>,
    /// Messages each node delivered.
    delivered: Vec<usize>,
    /// Switches seen ([`Action::Switched`]), by node position.
    switched: Vec<Switch>,
}

/// A switch a node made: its position, term and the requests it handed back.
type Switch = (usize, Term, Vec<(u64, SimOp)>);

impl<'a> Cfg<'a> {
    /// Quorum then ConfChg to every node, as the simulator and corosync do.
    fn new(nodes: Vec<&'a mut Node<SimDb>>, quorate: bool) -> Self {
        let members: Vec<Member> = nodes.iter().map(|n| n.me()).collect();
        let mut c = Cfg {
            delivered: vec![0; nodes.len()],
            nodes,
            log: Vec::new(),
            replies: Vec::new(),
            switched: Vec::new(),
        };
        for i in 0..c.nodes.len() {
            let acts = c.nodes[i].handle(Event::Quorum(quorate));
            c.take(i, acts);
            let acts = c.nodes[i].handle(Event::ConfChg {
                members: members.clone(),
                left: vec![],
                joined: vec![],
            });
            c.take(i, acts);
        }
        c
    }

    fn take(&mut self, i: usize, acts: Vec<A>) {
        let me = self.nodes[i].me();
        for a in acts {
            match a {
                Action::Multicast(m) => self.log.push((me, m)),
                Action::Reply { req_id, result } => self.replies.push((i, req_id, result)),
                Action::Switched { term, pending } => self.switched.push((i, term, pending)),
                _ => {}
            }
        }
    }

    fn feed(&mut self, i: usize, ev: Event<SimOp, SimEntry>) {
        let acts = self.nodes[i].handle(ev);
        self.take(i, acts);
    }

    fn request(&mut self, i: usize, req_id: u64, op: SimOp) {
        self.feed(i, Event::LocalRequest { req_id, op });
    }

    /// Node `i` delivers the log up to `upto` messages (or all, growing as it goes).
    fn deliver_to(&mut self, i: usize, upto: Option<usize>) {
        while self.delivered[i] < upto.unwrap_or(self.log.len()).min(self.log.len()) {
            let (from, msg) = self.log[self.delivered[i]].clone();
            self.delivered[i] += 1;
            self.feed(i, Event::Deliver { from, msg });
        }
    }

    /// Everyone delivers everything, round-robin, until nothing is left.
    fn settle(&mut self) {
        loop {
            let before = self.delivered.clone();
            for i in 0..self.nodes.len() {
                if self.delivered[i] < self.log.len() {
                    let upto = self.delivered[i] + 1;
                    self.deliver_to(i, Some(upto));
                }
            }
            if self.delivered == before {
                return;
            }
        }
    }

    fn kinds(&self) -> Vec<&'static str> {
        self.log.iter().map(|(_, m)| m.body.kind()).collect()
    }
}

fn node(id: u32, pid: u32) -> Node<SimDb> {
    let mut n = Node::new(Member::new(id, pid), SimDb::genesis());
    n.handle(Event::Tick { now: 1000 });
    n
}

/// A crashed process keeps only its database; it restarts as a new member.
fn restart(n: Node<SimDb>, now: u32) -> Node<SimDb> {
    let me = n.me();
    let mut r = Node::new(Member::new(me.nodeid, me.pid + 1), n.into_db());
    r.handle(Event::Tick { now });
    r
}

fn write(id: u64, path: &str) -> SimOp {
    SimOp::Create {
        id,
        path: path.into(),
    }
}

/// The lost-write scenario the simulator found (seeds 6, 177, 473, ...), end to
/// end: n1's partners crash before delivering its writes, n1 goes on alone with a
/// higher version, the restarted majority writes under a new term, and after the
/// heal the majority's write survives and n1's minority branch is dropped.
#[test]
fn minority_branch_with_higher_version_but_older_term_loses() {
    let (mut a, mut b, mut c) = (node(1, 10), node(2, 10), node(3, 10));
    let t1 = {
        let mut cfg = Cfg::new(vec![&mut a, &mut b, &mut c], true);
        cfg.settle();
        assert!(cfg.nodes.iter().all(|n| n.writable()));
        // n1 writes three files; only n1 delivers them before b and c crash.
        for (k, p) in ["a/w1", "a/w2", "a/w3"].into_iter().enumerate() {
            cfg.request(0, k as u64 + 1, write(k as u64 + 1, p));
        }
        cfg.deliver_to(0, None);
        assert_eq!(cfg.nodes[0].db().applied(), &[1, 2, 3], "n1 applied them");
        assert!(
            cfg.replies.is_empty(),
            "not answered: no majority holds them (pmxcfs would have answered)"
        );
        cfg.nodes[0].db().index().term
    };
    assert!(t1 >= 1);
    let (mut b, mut c) = (restart(b, 2000), restart(c, 2000));
    // n1 alone, not quorate: no new term, but it keeps its higher version.
    Cfg::new(vec![&mut a], false).settle();
    assert_eq!(a.db().index().term, t1);
    // The restarted majority: a new term and a write of its own.
    let t2 = {
        let mut cfg = Cfg::new(vec![&mut b, &mut c], true);
        cfg.settle();
        cfg.request(0, 9, write(9, "b/x"));
        cfg.settle();
        assert_eq!(cfg.replies, vec![(0, 9, Ok(()))]);
        cfg.nodes[0].db().index().term
    };
    assert!(t2 > t1);
    assert!(
        a.db().version() > b.db().version(),
        "the minority branch has the higher version"
    );
    // Heal: the majority's history wins although its version is lower.
    let mut cfg = Cfg::new(vec![&mut a, &mut b, &mut c], true);
    cfg.settle();
    let want = cfg.nodes[1].db().index();
    assert!(want.term > t2);
    for n in &cfg.nodes {
        assert!(n.writable());
        assert_eq!(n.db().index(), want);
        assert!(
            n.db().read("b/x").is_some(),
            "the majority's write survived"
        );
        assert!(n.db().read("a/w1").is_none(), "the minority branch is gone");
    }
    // The round could not tell whether the majority's tree holds n1's writes (its term
    // is newer than theirs): their outcome is unknown to the caller.
    let io: Vec<_> = (1..=3).map(|r| (0, r, Err(SimErr::Io))).collect();
    assert_eq!(cfg.replies, io);
}

/// Fast path: a SyncStart's proposal every member could promise is the term, and
/// the round needs no Promise messages.
#[test]
fn proposal_promised_by_all_is_accepted_without_promises() {
    let (mut a, mut b) = (node(1, 10), node(2, 10));
    let mut cfg = Cfg::new(vec![&mut a, &mut b], true);
    cfg.settle();
    // Each member then acknowledges the round's end (DESIGN.md, "Confirmation").
    assert_eq!(
        cfg.kinds(),
        vec!["sync-start", "state", "state", "normal", "normal"]
    );
    for n in &cfg.nodes {
        assert_eq!(n.accepted_term(), Some(1));
        assert_eq!(n.db().index().term, 1);
        assert_eq!(n.db().promised_term(), 1);
    }
}

/// Slow path: the starter proposed a term another member had already promised, so
/// every member must promise a higher one, and nobody accepts it until every
/// member's Promise is delivered. A member that crashed before promising leaves
/// the others unaccepted, so it cannot later help another configuration pick the
/// same term for a different tree.
#[test]
fn no_member_accepts_a_term_before_every_member_promised_it() {
    let (mut a, mut b, mut c) = (node(1, 10), node(2, 10), node(3, 10));
    // n2 promised term 5 in some configuration n1 never saw.
    b.db.set_promised_term(5).unwrap();
    let states = {
        let mut cfg = Cfg::new(vec![&mut a, &mut b, &mut c], true);
        // Everyone delivers the SyncStart and sends a State.
        for i in 0..3 {
            cfg.deliver_to(i, Some(1));
        }
        assert_eq!(cfg.kinds(), vec!["sync-start", "state", "state", "state"]);
        // n1 and n2 deliver every State and promise 6; n3 crashes before its last.
        cfg.deliver_to(0, Some(4));
        cfg.deliver_to(1, Some(4));
        cfg.deliver_to(2, Some(3));
        assert_eq!(&cfg.kinds()[4..], ["promise", "promise"]);
        // Both Promises delivered, n3's never comes: nobody accepted anything.
        cfg.deliver_to(0, None);
        cfg.deliver_to(1, None);
        for n in &cfg.nodes[..2] {
            assert_eq!(n.db().promised_term(), 6);
            assert_eq!(n.db().index().term, 0);
            assert_eq!(n.accepted_term(), None);
            assert!(!n.writable());
        }
        cfg.log.len()
    };
    assert_eq!(states, 6);
    assert_eq!(c.db().promised_term(), 1, "n3 promised only the proposal");
    // The next configuration must pick a term above every promise, 6 included.
    let mut c = restart(c, 2000);
    let mut cfg = Cfg::new(vec![&mut a, &mut b, &mut c], true);
    cfg.settle();
    for n in &cfg.nodes {
        let t = n.accepted_term().expect("accepted");
        assert!(t > 6);
        assert_eq!(n.db().index().term, t);
    }
}

/// A member whose State said "not quorate" because its quorum notification came
/// late starts a new round once quorate, so the configuration gets a term without
/// waiting for a confchg.
#[test]
fn late_quorum_re_syncs_to_pick_a_term() {
    let (mut a, mut b, mut c) = (node(1, 10), node(2, 10), node(3, 10));
    let mut cfg = Cfg::new(vec![&mut a, &mut b, &mut c], true);
    // n2 was not quorate when it sent its State: its quorum notification came
    // late, or quorum came back without a membership change.
    cfg.feed(1, Event::Quorum(false));
    cfg.settle();
    assert!(cfg
        .nodes
        .iter()
        .all(|n| n.all_synced() && n.accepted_term().is_none()));
    // Meanwhile a write on a quorate member waits for the re-sync instead of
    // failing with EACCES on a node that says it is quorate.
    cfg.request(0, 1, write(1, "a/f"));
    assert!(cfg.replies.is_empty());
    assert!(
        cfg.kinds().iter().all(|k| *k != "normal"),
        "sent without a term"
    );
    cfg.feed(1, Event::Quorum(true));
    // The re-sync waits for a tick, so that a confchg arriving with the quorum
    // change (the usual case) makes it unnecessary.
    assert_eq!(cfg.kinds().last(), Some(&"state"));
    cfg.feed(1, Event::Tick { now: 1001 });
    assert_eq!(cfg.kinds().last(), Some(&"sync-start"));
    cfg.settle();
    assert!(cfg.nodes.iter().all(|n| n.writable()));
    assert_eq!(cfg.replies, vec![(0, 1, Ok(()))]);
    let resyncs: Vec<u64> = cfg.nodes.iter().map(|n| n.resyncs()).collect();
    assert_eq!(resyncs, vec![0, 1, 0]);
    cfg.request(0, 2, write(2, "a/g"));
    cfg.settle();
    assert_eq!(cfg.replies.last(), Some(&(0, 2, Ok(()))));
    for n in &cfg.nodes {
        assert_eq!(n.db().applied(), &[1, 2]);
    }
}

/// If the member that said "not quorate" never gains quorum, a write waiting on a
/// quorate member fails with EACCES after `TERMLESS_WAIT`, applied nowhere.
#[test]
fn a_write_waiting_for_a_re_sync_that_never_comes_fails_in_bounded_time() {
    let (mut a, mut b, mut c) = (node(1, 10), node(2, 10), node(3, 10));
    let mut cfg = Cfg::new(vec![&mut a, &mut b, &mut c], true);
    cfg.feed(1, Event::Quorum(false));
    cfg.settle();
    cfg.request(0, 1, write(1, "a/f"));
    cfg.feed(
        0,
        Event::Tick {
            now: 1000 + TERMLESS_WAIT,
        },
    );
    assert!(cfg.replies.is_empty(), "failed before the wait was over");
    cfg.feed(
        0,
        Event::Tick {
            now: 1001 + TERMLESS_WAIT,
        },
    );
    assert_eq!(cfg.replies, vec![(0, 1, Err(SimErr::Access))]);
    cfg.settle();
    assert!(cfg.nodes.iter().all(|n| n.db().applied().is_empty()));
    assert_eq!(cfg.nodes[0].unanswered(), 0);
}

/// A confchg right after the quorum change cancels the pending re-sync: its own
/// round carries the new quorum.
#[test]
fn confchg_after_quorum_gain_needs_no_re_sync() {
    let mut a = node(1, 10);
    Cfg::new(vec![&mut a], false).settle();
    let mut cfg = Cfg::new(vec![&mut a], true);
    cfg.feed(0, Event::Tick { now: 1001 });
    cfg.settle();
    assert_eq!(cfg.kinds(), vec!["sync-start", "state", "normal"]);
    assert!(cfg.nodes[0].writable());
}

/// Without a term, a member does not adopt a leader's tree older than a term it
/// promised: that tree is superseded, and copying it would only spread a branch a
/// quorate configuration already left behind.
#[test]
fn termless_round_does_not_spread_a_superseded_tree() {
    let mut old = SimDb::genesis();
    old.set_term(3).unwrap();
    old.apply(&write(1, "a/old"), 1, 5).unwrap();
    let mut promised = SimDb::genesis();
    promised.set_promised_term(7).unwrap();
    let mut fresh = SimDb::genesis();
    let mut a = Node::new(Member::new(1, 10), old);
    let mut b = Node::new(Member::new(2, 10), promised.clone());
    let mut c = Node::new(Member::new(3, 10), fresh.clone());
    let mut cfg = Cfg::new(vec![&mut a, &mut b, &mut c], false);
    cfg.settle();
    assert_eq!(cfg.nodes[0].mode(), Mode::Synced);
    assert_eq!(cfg.nodes[1].mode(), Mode::Detached);
    assert_eq!(cfg.nodes[1].db(), &promised);
    // A member that promised nothing newer still copies it, as pmxcfs does.
    assert_eq!(cfg.nodes[2].mode(), Mode::Synced);
    fresh
        .install_update(
            &cfg.nodes[0].db().index(),
            cfg.nodes[0].db().entries(&[0, 5]),
        )
        .unwrap();
    assert_eq!(cfg.nodes[2].db(), &fresh);
}

/// Three synced members, n1..n3 (pids 10), in one quorate configuration of a 3-node
/// cluster.
fn three() -> (Node<SimDb>, Node<SimDb>, Node<SimDb>) {
    let (mut a, mut b, mut c) = (node(1, 10), node(2, 10), node(3, 10));
    for n in [&mut a, &mut b, &mut c] {
        n.handle(Event::Nodes(3));
    }
    let mut cfg = Cfg::new(vec![&mut a, &mut b, &mut c], true);
    cfg.settle();
    assert!(cfg.nodes.iter().all(|n| n.writable()));
    assert!(cfg.replies.is_empty());
    drop(cfg);
    (a, b, c)
}

/// A write is answered once a majority holds it: not at the writer's own delivery,
/// but when the member before it, round the start (its confirmer), says it applied
/// it.
#[test]
fn a_write_is_answered_once_its_confirmer_holds_it() {
    let (mut a, mut b, mut c) = three();
    let mut cfg = Cfg::new(vec![&mut a, &mut b, &mut c], true);
    cfg.settle();
    cfg.replies.clear();
    let base = cfg.log.len();
    cfg.request(0, 1, write(1, "a/f"));
    cfg.deliver_to(0, None);
    assert_eq!(cfg.nodes[0].db().applied(), &[1]);
    assert!(cfg.replies.is_empty(), "only the writer holds it");
    // n2 is not n1's confirmer: it applies the write and says nothing.
    cfg.deliver_to(1, None);
    assert_eq!(
        cfg.log.len(),
        base + 1,
        "no acknowledgement nobody waits for"
    );
    cfg.deliver_to(2, None);
    assert_eq!(cfg.log.len(), base + 2, "n3 confirms");
    assert!(matches!(
        &cfg.log[base + 1],
        (m, Message { body: Body::Normal { ops, .. }, .. }) if ops.is_empty() && m.nodeid == 3
    ));
    cfg.deliver_to(0, None);
    assert_eq!(cfg.replies, vec![(0, 1, Ok(()))]);
}

/// A confirmer that stops delivering (a stopped daemon stays in the CPG group) only
/// delays the answer: a tick later the other member confirms instead.
#[test]
fn a_silent_confirmer_is_covered_by_the_others_at_the_next_tick() {
    let (mut a, mut b, mut c) = three();
    let mut cfg = Cfg::new(vec![&mut a, &mut b, &mut c], true);
    cfg.settle();
    cfg.replies.clear();
    cfg.request(0, 1, write(1, "a/f"));
    cfg.deliver_to(0, None);
    cfg.deliver_to(1, None);
    cfg.feed(1, Event::Tick { now: 1001 });
    cfg.deliver_to(0, None);
    assert!(
        cfg.replies.is_empty(),
        "applied after n2's last tick: not late yet"
    );
    cfg.feed(1, Event::Tick { now: 1002 });
    cfg.deliver_to(0, None);
    assert_eq!(cfg.replies, vec![(0, 1, Ok(()))], "n2 confirmed");
    assert!(
        cfg.delivered[2] < cfg.log.len(),
        "n3, the confirmer, never delivered the write"
    );
}

/// Requests made while the writer's message is on the wire go out together in the
/// next one (group commit), are applied in order and answered each on its own.
#[test]
fn requests_made_meanwhile_share_one_message_and_keep_their_own_answers() {
    let (mut a, mut b, mut c) = three();
    let mut cfg = Cfg::new(vec![&mut a, &mut b, &mut c], true);
    cfg.settle();
    cfg.replies.clear();
    let base = cfg.log.len();
    cfg.request(0, 1, write(1, "a/one"));
    cfg.request(0, 2, write(2, "a/two"));
    cfg.request(0, 3, write(3, "a/one"));
    cfg.request(0, 4, write(4, "a/three"));
    assert_eq!(cfg.log.len(), base + 1, "the first went out alone");
    cfg.deliver_to(0, None);
    assert_eq!(cfg.log.len(), base + 2, "the next three in one message");
    assert!(matches!(
        &cfg.log[base + 1].1.body,
        Body::Normal { ops, .. } if ops.len() == 3
    ));
    cfg.settle();
    let mut got = cfg.replies.clone();
    got.sort_by_key(|r| r.1);
    assert_eq!(
        got,
        vec![
            (0, 1, Ok(())),
            (0, 2, Ok(())),
            (0, 3, Err(SimErr::Exist)),
            (0, 4, Ok(()))
        ]
    );
    for n in &cfg.nodes {
        assert_eq!(n.db().applied(), &[1, 2, 4]);
    }
}

/// A write whose confirmation the configuration change took is answered after the
/// next round if the tree that round settled on holds it, and only once that tree is
/// installed by a majority.
#[test]
fn a_write_confirmed_by_the_next_round_waits_for_its_members_to_install_it() {
    let (mut a, mut b, mut c) = three();
    let t = {
        let mut cfg = Cfg::new(vec![&mut a, &mut b, &mut c], true);
        cfg.settle();
        cfg.request(0, 1, write(1, "a/f"));
        cfg.deliver_to(0, None);
        assert!(cfg.replies.is_empty());
        cfg.nodes[0].db().index().term
    };
    // n3 goes away before anyone confirmed; n1 and n2 form the next configuration.
    let mut cfg = Cfg::new(vec![&mut a, &mut b], true);
    cfg.deliver_to(0, None);
    assert!(cfg.replies.is_empty(), "n2 has not installed n1's tree yet");
    cfg.settle();
    assert_eq!(cfg.replies, vec![(0, 1, Ok(()))]);
    assert!(cfg.nodes[1].db().read("a/f").is_some());
    assert!(cfg.nodes[1].db().index().term > t);
}

/// Trees that diverged behind the protocol's back (here: a different op applied
/// directly to n2's database than to the others') are found by the periodic check:
/// n2's checksum differs from the requester's, so n2 stops, and once it joins again
/// the resync gives it the others' tree. Equal trees pass the check untouched.
#[test]
fn a_tree_that_diverged_is_found_by_the_check_and_resynced() {
    let (mut a, mut b, mut c) = three();
    {
        let mut cfg = Cfg::new(vec![&mut a, &mut b, &mut c], true);
        cfg.settle();
        cfg.feed(0, Event::VerifyNow);
        cfg.settle();
        assert!(cfg.nodes.iter().all(|n| n.verifies() == (1, 0)));
        assert!(cfg.nodes.iter().all(|n| n.mode() == Mode::Synced));
        // Same version everywhere, different content on n2.
        for (k, n) in cfg.nodes.iter_mut().enumerate() {
            let op = if k == 1 {
                write(98, "a/rogue")
            } else {
                write(99, "a/right")
            };
            n.db.apply(&op, 1, 5).unwrap();
        }
        cfg.feed(0, Event::VerifyNow);
        cfg.settle();
        assert_eq!(cfg.nodes[1].mode(), Mode::Error, "n2 stopped");
        assert_eq!(cfg.nodes[1].verifies(), (2, 1));
        assert_eq!(cfg.nodes[2].verifies(), (2, 0));
        assert_eq!(cfg.nodes[0].mode(), Mode::Synced);
    }
    // The adapter joins n2 again as a new member.
    let mut b = restart(b, 1100);
    b.handle(Event::Nodes(3));
    let mut cfg = Cfg::new(vec![&mut a, &mut b, &mut c], true);
    cfg.settle();
    let want = cfg.nodes[0].db().index();
    for n in &cfg.nodes {
        assert_eq!(n.mode(), Mode::Synced);
        assert!(n.db().index().same_content(&want));
        assert!(n.db().read("a/right").is_some() && n.db().read("a/rogue").is_none());
    }
}

// ---- Compat mode (pmxcfs's dfsm) ----

fn dfsm_node(id: u32, pid: u32) -> Node<SimDb> {
    let mut n = Node::with_protocol(Member::new(id, pid), SimDb::genesis(), Protocol::Dfsm);
    n.handle(Event::Tick { now: 1000 });
    n
}

fn dfsm_restart(n: Node<SimDb>, now: u32) -> Node<SimDb> {
    let me = n.me();
    let mut r = Node::with_protocol(
        Member::new(me.nodeid, me.pid + 1),
        n.into_db(),
        Protocol::Dfsm,
    );
    r.handle(Event::Tick { now });
    r
}

/// pmxcfs's round: SyncStart from the lowest node, a State each, UpdateComplete from
/// the leader even when nobody needs an update; then writes are answered at their
/// own delivery, with no confirmation message.
#[test]
fn compat_round_and_write_follow_dfsm() {
    let (mut a, mut b, mut c) = (dfsm_node(1, 10), dfsm_node(2, 10), dfsm_node(3, 10));
    let mut cfg = Cfg::new(vec![&mut a, &mut b, &mut c], true);
    cfg.settle();
    assert_eq!(
        cfg.kinds(),
        vec!["sync-start", "state", "state", "state", "update-complete"]
    );
    assert!(cfg.log.iter().all(|(_, m)| match &m.body {
        Body::SyncStart { epoch, .. } => epoch.time == 1000,
        _ => true,
    }));
    assert!(cfg.nodes.iter().all(|n| n.writable()));
    let before = cfg.log.len();
    cfg.request(1, 7, write(7, "f"));
    cfg.deliver_to(1, None);
    assert_eq!(
        cfg.replies,
        vec![(1, 7, Ok(()))],
        "answered at own delivery"
    );
    cfg.settle();
    assert_eq!(cfg.log.len(), before + 1, "one message, no acknowledgement");
    assert!(cfg.nodes.iter().all(|n| n.db().applied() == [7]));
}

/// The version-only leader rule: a tree with a higher version wins over one with a
/// higher term (compat mode does not look at terms), so the others get its entries.
#[test]
fn compat_leader_is_highest_version_and_out_of_date_members_install_it() {
    let (mut a, mut b) = (dfsm_node(1, 10), dfsm_node(2, 10));
    {
        let mut cfg = Cfg::new(vec![&mut a], true);
        cfg.settle();
        for k in 1..=3 {
            cfg.request(0, k, write(k, &format!("a{k}")));
        }
        cfg.settle();
        assert_eq!(cfg.nodes[0].db().applied(), &[1, 2, 3]);
    }
    b.db.set_term(9).unwrap();
    let mut cfg = Cfg::new(vec![&mut a, &mut b], true);
    cfg.settle();
    let kinds = cfg.kinds();
    assert_eq!(kinds[..3], ["sync-start", "state", "state"]);
    assert_eq!(kinds.last(), Some(&"update-complete"));
    assert!(
        kinds[3..kinds.len() - 1].iter().all(|k| *k == "update") && kinds.len() >= 7,
        "the three files (and the root) from the leader: {kinds:?}"
    );
    assert_eq!(
        cfg.nodes[0].db().index().entries,
        cfg.nodes[1].db().index().entries
    );
    assert_eq!(cfg.nodes[1].db().version(), cfg.nodes[0].db().version());
    assert_eq!(
        cfg.nodes[1].db().term(),
        9,
        "compat mode never relabels a tree"
    );
    assert!(cfg.nodes.iter().all(|n| n.mode() == Mode::Synced));
}

/// A synced member's write delivered while another member still installs the
/// leader's tree: the synced ones apply it at once, the installing one after its
/// install (pmxcfs's sync queue); all end equal.
#[test]
fn compat_writes_during_an_update_are_applied_after_the_install() {
    let (mut a, mut b, mut c) = (dfsm_node(1, 10), dfsm_node(2, 10), dfsm_node(3, 10));
    {
        let mut cfg = Cfg::new(vec![&mut a, &mut c], true);
        cfg.settle();
        cfg.request(0, 1, write(1, "old"));
        cfg.settle();
    }
    let mut cfg = Cfg::new(vec![&mut a, &mut b, &mut c], true);
    // c delivers the SyncStart and every State first: it is synced (its tree is the
    // leader's) and writes before the leader sent its updates.
    for i in [2, 0, 1] {
        cfg.deliver_to(i, Some(1));
    }
    cfg.deliver_to(2, Some(4));
    assert_eq!(cfg.nodes[2].mode(), Mode::Synced);
    cfg.request(2, 2, write(2, "new"));
    cfg.deliver_to(1, Some(5));
    assert_eq!(cfg.nodes[1].mode(), Mode::Update);
    assert!(
        cfg.nodes[1].db().applied().is_empty(),
        "queued, not applied"
    );
    cfg.settle();
    assert_eq!(cfg.nodes[0].db().applied(), &[1, 2]);
    assert!(cfg.nodes.iter().all(|n| n.mode() == Mode::Synced));
    let ix = cfg.nodes[0].db().index();
    assert!(cfg.nodes.iter().all(|n| n.db().index() == ix));
    assert_eq!(cfg.replies, vec![(2, 2, Ok(()))]);
}

/// pmxcfs's queue outlives a membership change without joiners: a pmxcfs peer's
/// write delivered while the round ran is applied after the next round.
#[test]
fn compat_queue_survives_a_leave() {
    let mut a = dfsm_node(1, 10);
    let me = a.me();
    let (p, q) = (Member::new(2, 20), Member::new(3, 30));
    let deliver = |a: &mut Node<SimDb>, from, seq, body| {
        a.handle(Event::Deliver {
            from,
            msg: Message {
                seq,
                time: 1000,
                body,
            },
        })
    };
    a.handle(Event::Quorum(true));
    let start = |a: &mut Node<SimDb>, members: Vec<Member>| {
        let acts = a.handle(Event::ConfChg {
            members,
            left: vec![],
            joined: vec![],
        });
        let m = sent(&acts).remove(0);
        let Body::SyncStart { epoch, .. } = m.body else {
            panic!("a is the lowest node")
        };
        (m, epoch)
    };
    let (ss, _) = start(&mut a, vec![me, p, q]);
    deliver(&mut a, me, ss.seq, ss.body);
    // p (a pmxcfs node) writes before the round ends: a queues it.
    let w = Body::Normal {
        ops: vec![write(5, "queued")],
        ack: 0,
    };
    deliver(&mut a, p, 10, w);
    assert!(a.db().applied().is_empty());
    // q leaves; nobody joins: the queue stays.
    let (ss, epoch) = start(&mut a, vec![me, p]);
    let acts = deliver(&mut a, me, ss.seq, ss.body);
    let state = sent(&acts).remove(0);
    let index = a.db().index();
    deliver(&mut a, me, state.seq, state.body);
    let theirs = Body::State {
        epoch,
        quorate: true,
        promised_proposed_term: false,
        promised_term: 0,
        index,
        switch_ready: false,
    };
    deliver(&mut a, p, 0, theirs);
    assert_eq!(a.mode(), Mode::Synced);
    assert_eq!(a.db().applied(), &[5], "applied once both were synced");
}

/// A write delivered to a member without quorum makes it leave (pmxcfs: "received
/// write while not quorate - trigger resync"); so does a message its mode does not
/// expect.
#[test]
fn compat_member_leaves_on_a_write_without_quorum_and_on_unexpected_messages() {
    let (mut a, mut b) = (dfsm_node(1, 10), dfsm_node(2, 10));
    let mut cfg = Cfg::new(vec![&mut a, &mut b], true);
    cfg.settle();
    cfg.feed(1, Event::Quorum(false));
    cfg.request(0, 1, write(1, "x"));
    cfg.settle();
    assert_eq!(cfg.nodes[0].mode(), Mode::Synced);
    assert_eq!(cfg.nodes[1].mode(), Mode::Error);

    let mut c = dfsm_node(3, 10);
    let mut d = dfsm_node(4, 10);
    let mut cfg = Cfg::new(vec![&mut c, &mut d], true);
    let epoch = match &cfg.log[0].1.body {
        Body::SyncStart { epoch, .. } => *epoch,
        b => panic!("{}", b.kind()),
    };
    cfg.deliver_to(1, Some(1));
    assert_eq!(cfg.nodes[1].mode(), Mode::StartSync);
    let upd = Message {
        seq: 0,
        time: 1000,
        body: Body::UpdateComplete { epoch },
    };
    let from = cfg.nodes[0].me();
    cfg.feed(1, Event::Deliver { from, msg: upd });
    assert_eq!(
        cfg.nodes[1].mode(),
        Mode::Error,
        "UpdateComplete while collecting"
    );
}

/// VERIFY: equal trees pass; a tree that changed under a member makes it leave.
#[test]
fn compat_verify_finds_a_divergent_tree() {
    let (mut a, mut b) = (dfsm_node(1, 10), dfsm_node(2, 10));
    let mut cfg = Cfg::new(vec![&mut a, &mut b], true);
    cfg.settle();
    cfg.feed(0, Event::VerifyNow);
    cfg.settle();
    assert_eq!(cfg.nodes[0].verifies(), (1, 0));
    assert_eq!(cfg.nodes[1].verifies(), (1, 0));
    cfg.nodes[1].db.apply(&write(9, "rogue"), 2, 1000).unwrap();
    cfg.feed(0, Event::VerifyNow);
    cfg.settle();
    assert_eq!(cfg.nodes[1].verifies(), (2, 1));
    assert_eq!(cfg.nodes[1].mode(), Mode::Error);
    assert_eq!(cfg.nodes[0].mode(), Mode::Synced);
}

/// A restarted pmxcfs-mode member with an old tree is brought up to date.
#[test]
fn compat_restarted_member_resyncs() {
    let (mut a, b) = (dfsm_node(1, 10), dfsm_node(2, 10));
    let mut b = dfsm_restart(b, 1500);
    {
        let mut cfg = Cfg::new(vec![&mut a], true);
        cfg.settle();
        cfg.request(0, 1, write(1, "while-b-was-down"));
        cfg.settle();
    }
    let mut cfg = Cfg::new(vec![&mut a, &mut b], true);
    cfg.settle();
    assert_eq!(cfg.nodes[1].db().read("while-b-was-down"), Some(&b""[..]));
}

/// The switch to the term protocol: not while one member's State does not offer it;
/// then at the UpdateComplete of a round whose States all do, on every member, each
/// tree labelled with the round's highest label. A write on the wire past that point
/// is applied by nobody and handed back to its writer's adapter, unanswered.
#[test]
fn compat_switch_happens_where_every_state_offers_it() {
    let (mut a, mut b, mut c) = (dfsm_node(1, 10), dfsm_node(2, 10), dfsm_node(3, 10));
    b.db.set_term(9).unwrap();
    a.set_switch_ready(true);
    b.set_switch_ready(true);
    {
        let mut cfg = Cfg::new(vec![&mut a, &mut b, &mut c], true);
        cfg.settle();
        assert!(cfg.switched.is_empty(), "c did not offer it");
        assert!(cfg.nodes.iter().all(|n| !n.switched() && n.writable()));
    }
    c.set_switch_ready(true);
    let mut cfg = Cfg::new(vec![&mut a, &mut b, &mut c], true);
    // Everyone answers the SyncStart; the leader (a) delivers everything and sends
    // its UpdateComplete; b then delivers the States only, is synced, and writes:
    // its write follows the UpdateComplete on the wire.
    for i in 0..3 {
        cfg.deliver_to(i, Some(1));
    }
    cfg.deliver_to(0, None);
    assert_eq!(cfg.kinds().last(), Some(&"update-complete"));
    cfg.deliver_to(1, Some(4));
    assert_eq!(cfg.nodes[1].mode(), Mode::Synced);
    cfg.request(1, 5, write(5, "late"));
    assert_eq!(cfg.kinds().last(), Some(&"normal"));
    cfg.settle();
    let seen: Vec<(usize, Term)> = cfg.switched.iter().map(|(i, t, _)| (*i, *t)).collect();
    assert_eq!(seen, vec![(0, 9), (1, 9), (2, 9)]);
    assert_eq!(cfg.switched[1].2, vec![(5, write(5, "late"))]);
    assert!(cfg.switched[0].2.is_empty() && cfg.switched[2].2.is_empty());
    assert!(
        cfg.replies.is_empty(),
        "the late write is handed back, not answered"
    );
    for n in &cfg.nodes {
        assert!(n.switched());
        assert_eq!(n.db().term(), 9);
        assert!(n.db().applied().is_empty(), "applied past the switch point");
    }
    // A switched member handles nothing more.
    assert!(cfg.nodes[0].handle(Event::VerifyNow).is_empty());
}

/// A membership change before the UpdateComplete ends the round: no switch, and the
/// next round's States decide again.
#[test]
fn compat_switch_waits_for_a_whole_round() {
    let (mut a, mut b) = (dfsm_node(1, 10), dfsm_node(2, 10));
    a.set_switch_ready(true);
    b.set_switch_ready(true);
    let mut cfg = Cfg::new(vec![&mut a, &mut b], true);
    cfg.deliver_to(1, None);
    // b has its own State only: it changes configuration, no longer ready.
    cfg.nodes[1].set_switch_ready(false);
    let members = vec![cfg.nodes[0].me(), cfg.nodes[1].me()];
    for i in 0..2 {
        cfg.feed(
            i,
            Event::ConfChg {
                members: members.clone(),
                left: vec![],
                joined: vec![],
            },
        );
    }
    cfg.settle();
    assert!(cfg.switched.is_empty(), "{:?}", cfg.kinds());
    assert!(cfg.nodes.iter().all(|n| n.mode() == Mode::Synced));
}

/// A lone node of a one-node cluster switches at its configuration change; a member
/// told by a switched one switches keeping the higher of the two labels; the term
/// protocol ignores the news.
#[test]
fn compat_switch_alone_and_late() {
    let mut a = dfsm_node(1, 10);
    a.set_switch_ready(true);
    a.db.set_term(4).unwrap();
    let cfg = Cfg::new(vec![&mut a], true);
    assert_eq!(cfg.switched.len(), 1);
    assert_eq!(cfg.switched[0].1, 4);
    drop(cfg);
    for (own, told, label) in [(3, 12, 12), (20, 12, 20)] {
        let mut b = dfsm_node(2, 10);
        b.db.set_term(own).unwrap();
        let mut cfg = Cfg::new(vec![&mut b], true);
        assert!(cfg.switched.is_empty(), "not offered: a member of its own");
        cfg.request(0, 1, write(1, "x"));
        cfg.feed(0, Event::Switched { term: told });
        assert_eq!(cfg.switched.len(), 1);
        assert_eq!(cfg.switched[0].1, label);
        assert_eq!(cfg.nodes[0].db().term(), label);
        // Its write went out before the news and will not be applied here.
        assert_eq!(cfg.switched[0].2, vec![(1, write(1, "x"))]);
    }
    let mut t = node(3, 10);
    assert!(t.handle(Event::Switched { term: 5 }).is_empty());
    assert!(!t.switched());
}
