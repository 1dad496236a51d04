//! The kvstore group on a small in-memory CPG: total order per partition, membership
//! changes delivered to every member, and the captured messages of a pmxcfs cluster.

use super::*;
use crate::clog::{ClusterLog, LOG_SIZE};

/// A node: its member identity, its group machine and its store.
struct Node {
    me: Member,
    group: Group,
    store: StatusStore,
    actions: Vec<Action>,
}

/// Processes on one corosync "network": each partition delivers what its members send,
/// in one order, to its members.
struct Net {
    nodes: Vec<Node>,
    /// Partitions as node indices; every node is in exactly one.
    parts: Vec<Vec<usize>>,
    now: u32,
}

impl Net {
    fn new(n: usize) -> Net {
        let nodes = (0..n)
            .map(|i| {
                let me = Member {
                    nodeid: i as u32 + 1,
                    pid: 100 + i as u32,
                };
                let mut store = StatusStore::new(&format!("n{}", i + 1), 7, 1000);
                store.set_nodes((1..=n as u32).map(|k| (k, format!("n{k}"))));
                Node {
                    me,
                    group: Group::new(me, Some(format!("10.0.0.{}", i + 1))),
                    store,
                    actions: Vec::new(),
                }
            })
            .collect();
        Net {
            nodes,
            parts: Vec::new(),
            now: 1000,
        }
    }

    fn handle(&mut self, i: usize, ev: Event<'_>) -> Vec<Vec<u8>> {
        let n = &mut self.nodes[i];
        let acts = n.group.handle(&mut n.store, ev, self.now);
        let sends = acts
            .iter()
            .filter_map(|a| match a {
                Action::Send(b) => Some(b.clone()),
                _ => None,
            })
            .collect();
        n.actions.extend(acts);
        sends
    }

    /// Re-partition into `parts`, deliver the confchgs and run until quiet.
    fn partition(&mut self, parts: &[&[usize]]) {
        self.parts = parts.iter().map(|p| p.to_vec()).collect();
        for p in self.parts.clone() {
            let members: Vec<Member> = p.iter().map(|i| self.nodes[*i].me).collect();
            let mut queue = Vec::new();
            for i in &p {
                for b in self.handle(*i, Event::ConfChg { members: &members }) {
                    queue.push((*i, b));
                }
            }
            self.pump(&p, queue);
        }
    }

    /// Deliver `queue` (and everything it causes) to the members of partition `p`.
    fn pump(&mut self, p: &[usize], mut queue: Vec<(usize, Vec<u8>)>) {
        let mut at = 0;
        while at < queue.len() {
            assert!(at < 100_000, "the group does not settle");
            let (from, bytes) = queue[at].clone();
            at += 1;
            let from_m = self.nodes[from].me;
            for i in p {
                for b in self.handle(
                    *i,
                    Event::Deliver {
                        from: from_m,
                        data: &bytes,
                    },
                ) {
                    queue.push((*i, b));
                }
            }
        }
    }

    fn part_of(&self, i: usize) -> Vec<usize> {
        self.parts.iter().find(|p| p.contains(&i)).unwrap().clone()
    }

    /// Node `i` sets a key: stored, then multicast to its partition.
    fn set(&mut self, i: usize, key: &str, value: &[u8]) {
        self.nodes[i].store.set_local(key, value, self.now).unwrap();
        let sends = self.handle(i, Event::LocalSet { key, value });
        let p = self.part_of(i);
        self.pump(&p, sends.into_iter().map(|b| (i, b)).collect());
    }

    /// Node `i` logs `msg`.
    fn log(&mut self, i: usize, msg: &str) {
        let now = self.now;
        let e = self.nodes[i]
            .store
            .log_local("root@pam", "test", 42, 6, now, msg)
            .unwrap();
        let sends = self.handle(i, Event::LocalLog { entry: &e });
        let p = self.part_of(i);
        self.pump(&p, sends.into_iter().map(|b| (i, b)).collect());
    }

    fn msgs(&self, i: usize) -> Vec<String> {
        self.nodes[i]
            .store
            .log
            .entries()
            .map(|e| e.msg.clone())
            .collect()
    }
}

#[test]
fn updates_and_logs_reach_every_member() {
    let mut net = Net::new(3);
    net.partition(&[&[0]]);
    assert_eq!(
        net.nodes[0].group.mode(),
        Mode::Synced,
        "alone: synced at once"
    );
    net.parts.push(vec![1]);
    net.parts.push(vec![2]);
    net.partition(&[&[0, 1, 2]]);
    for n in &net.nodes {
        assert_eq!(n.group.mode(), Mode::Synced, "node {}", n.me.nodeid);
    }
    net.set(0, "kv/a", b"x\0");
    net.set(0, "rrd/pve-node-9.0/n1", b"1:2:3\0");
    net.log(0, "hello");
    for i in 1..3 {
        let s = &net.nodes[i].store;
        assert_eq!(s.get("n1", "kv/a"), Some(b"x\0".to_vec()), "node {i}");
        assert_eq!(s.ip("n1"), Some("10.0.0.1"), "address sent after the sync");
        assert!(net.msgs(i).contains(&"hello".to_string()), "node {i}");
        assert!(
            net.nodes[i].actions.contains(&Action::Rrd {
                key: "pve-node-9.0/n1".into(),
                data: "1:2:3".into()
            }),
            "node {i} is told to write the peer's RRD update"
        );
        assert!(net.nodes[i]
            .actions
            .contains(&Action::Online(vec![1, 2, 3])));
    }
    // The sender does not apply its own messages a second time.
    assert_eq!(net.nodes[0].store.versions()[0].1, vec![("kv/a".into(), 0)]);
}

#[test]
fn a_cut_and_a_heal_merge_both_sides_logs_in_one_order() {
    let mut net = Net::new(3);
    net.partition(&[&[0, 1, 2]]);
    net.log(0, "before");
    net.partition(&[&[0, 1], &[2]]);
    net.now += 1;
    net.log(0, "left side");
    net.log(2, "right side");
    net.set(2, "kv/cut", b"r\0");
    assert_eq!(
        net.nodes[0].store.get("n3", "kv/cut"),
        None,
        "not across the cut"
    );
    net.now += 1;
    net.partition(&[&[0, 1, 2]]);
    let logs: Vec<Vec<u8>> = net
        .nodes
        .iter()
        .map(|n| n.store.log.encode_state())
        .collect();
    assert_eq!(logs[0].len(), LOG_SIZE);
    assert!(
        logs.iter().all(|l| *l == logs[0]),
        "every node holds the same log"
    );
    let msgs = net.msgs(0);
    for m in ["before", "left side", "right side"] {
        assert_eq!(
            msgs.iter().filter(|x| *x == m).count(),
            1,
            "{m} once: {msgs:?}"
        );
    }
    // The own keys are sent again after the sync.
    assert_eq!(
        net.nodes[0].store.get("n3", "kv/cut"),
        Some(b"r\0".to_vec())
    );
}

#[test]
fn messages_of_an_open_round_wait_for_its_end() {
    let mut net = Net::new(2);
    net.partition(&[&[0], &[1]]);
    let members = [net.nodes[0].me, net.nodes[1].me];
    // Both see the new membership, but the round's messages are not delivered yet.
    let mut queue: Vec<(usize, Vec<u8>)> = Vec::new();
    for i in 0..2 {
        for b in net.handle(i, Event::ConfChg { members: &members }) {
            queue.push((i, b));
        }
    }
    assert_eq!(net.nodes[1].group.mode(), Mode::StartSync);
    // n1's update is delivered first, before SYNC_START: it waits.
    net.nodes[0].store.set_local("kv/early", b"e\0", 1).unwrap();
    let early = net.handle(
        0,
        Event::LocalSet {
            key: "kv/early",
            value: b"e\0",
        },
    );
    let mut q: Vec<(usize, Vec<u8>)> = early.into_iter().map(|b| (0, b)).collect();
    q.extend(queue);
    let from = net.nodes[0].me;
    net.handle(
        1,
        Event::Deliver {
            from,
            data: &q[0].1,
        },
    );
    assert_eq!(net.nodes[1].store.get("n1", "kv/early"), None, "queued");
    net.parts = vec![vec![0, 1]];
    net.pump(&[0, 1], q[1..].to_vec());
    assert_eq!(net.nodes[1].group.mode(), Mode::Synced);
    assert_eq!(
        net.nodes[1].store.get("n1", "kv/early"),
        Some(b"e\0".to_vec())
    );
}

/// A synced member of {1, 2} with store names n1, n2, for the bad-input tests.
fn synced_pair() -> Net {
    let mut net = Net::new(2);
    net.partition(&[&[0, 1]]);
    assert_eq!(net.nodes[0].group.mode(), Mode::Synced);
    net
}

fn last_action(net: &Net, i: usize) -> Option<&Action> {
    net.nodes[i].actions.last()
}

#[test]
fn bad_peer_input_is_dropped_or_leaves_the_group_never_panics() {
    let peer = Member {
        nodeid: 2,
        pid: 101,
    };
    // Dropped, the member stays: a key without NUL, a short update, a LOG of the
    // wrong size, an unknown subtype, a state message of another round.
    let mut net = synced_pair();
    let bad: Vec<Vec<u8>> = vec![
        wire::encode_normal(Subtype::Update, 1, 9, &[&[b'k'; 300]]),
        wire::encode_normal(Subtype::Update, 1, 9, &[&[0; 10]]),
        wire::encode_normal(Subtype::Log, 1, 9, &[&[0; 47]]),
        wire::encode_normal(Subtype::Other(7), 1, 9, &[b"x"]),
        wire::encode_state(Kind::State, 1, Epoch::default(), &[0; 8]),
    ];
    for b in &bad {
        net.handle(
            0,
            Event::Deliver {
                from: peer,
                data: b,
            },
        );
        assert_eq!(net.nodes[0].group.mode(), Mode::Synced, "{:?}", &b[..4]);
    }
    // A header too short for its type: pmxcfs leaves (and rejoins).
    let mut net = synced_pair();
    net.handle(
        0,
        Event::Deliver {
            from: peer,
            data: &[0; 10],
        },
    );
    assert_eq!(net.nodes[0].group.mode(), Mode::Leave);
    assert!(matches!(last_action(&net, 0), Some(Action::Leave(_))));
    // Everything after leaving is ignored.
    let b = wire::encode_normal(
        Subtype::Update,
        1,
        9,
        &[&wire::update_payload("kv/x", b"1\0")],
    );
    assert!(net
        .handle(
            0,
            Event::Deliver {
                from: peer,
                data: &b
            }
        )
        .is_empty());
    // A newer protocol: out for good.
    let mut net = synced_pair();
    let mut newer = wire::encode_normal(Subtype::Update, 1, 9, &[]);
    newer[4] = 1;
    net.handle(
        0,
        Event::Deliver {
            from: peer,
            data: &newer,
        },
    );
    assert_eq!(net.nodes[0].group.mode(), Mode::VersionError);
    assert!(matches!(last_action(&net, 0), Some(Action::Stop(_))));
}

#[test]
fn bad_sync_rounds_leave_or_drop_the_state() {
    // Open a round on n1 of {n1, n2} and capture its epoch from the SYNC_START.
    let open = || {
        let mut net = Net::new(2);
        net.partition(&[&[0], &[1]]);
        let members = [net.nodes[0].me, net.nodes[1].me];
        let sends = net.handle(0, Event::ConfChg { members: &members });
        let sync_start = sends[0].clone();
        let Ok(Message::State { epoch, .. }) = wire::decode(&sync_start) else {
            panic!("no SYNC_START")
        };
        let me = net.nodes[0].me;
        net.handle(
            0,
            Event::Deliver {
                from: me,
                data: &sync_start,
            },
        );
        (net, epoch)
    };
    let peer = Member {
        nodeid: 2,
        pid: 101,
    };
    let stranger = Member { nodeid: 9, pid: 1 };
    let good_state = ClusterLog::start("n2", 1, 5).encode_state();

    let (mut net, epoch) = open();
    let st = wire::encode_state(Kind::State, 1, epoch, &good_state);
    net.handle(
        0,
        Event::Deliver {
            from: stranger,
            data: &st,
        },
    );
    assert_eq!(
        net.nodes[0].group.mode(),
        Mode::Leave,
        "state from a non-member"
    );

    let (mut net, epoch) = open();
    let st = wire::encode_state(Kind::State, 1, epoch, &good_state);
    net.handle(
        0,
        Event::Deliver {
            from: peer,
            data: &st,
        },
    );
    net.handle(
        0,
        Event::Deliver {
            from: peer,
            data: &st,
        },
    );
    assert_eq!(net.nodes[0].group.mode(), Mode::Leave, "a second state");

    let (mut net, epoch) = open();
    let up = wire::encode_state(Kind::Update, 1, epoch, &[]);
    net.handle(
        0,
        Event::Deliver {
            from: peer,
            data: &up,
        },
    );
    assert_eq!(
        net.nodes[0].group.mode(),
        Mode::Leave,
        "UPDATE in the kvstore"
    );

    // A state of the wrong size is logged and left out of the merge; the round ends.
    let (mut net, epoch) = open();
    let own = net.nodes[0].store.log.encode_state();
    let me = net.nodes[0].me;
    let mine = wire::encode_state(Kind::State, 1, epoch, &own);
    net.handle(
        0,
        Event::Deliver {
            from: me,
            data: &mine,
        },
    );
    let short = wire::encode_state(Kind::State, 1, epoch, &good_state[..1000]);
    net.handle(
        0,
        Event::Deliver {
            from: peer,
            data: &short,
        },
    );
    assert_eq!(net.nodes[0].group.mode(), Mode::Synced);

    // The same with a corrupt ring of the right size.
    let (mut net, epoch) = open();
    net.handle(
        0,
        Event::Deliver {
            from: me,
            data: &mine,
        },
    );
    let mut corrupt = good_state.clone();
    corrupt[4..8].copy_from_slice(&(LOG_SIZE as u32 - 4).to_le_bytes());
    let st = wire::encode_state(Kind::State, 1, epoch, &corrupt);
    net.handle(
        0,
        Event::Deliver {
            from: peer,
            data: &st,
        },
    );
    assert_eq!(net.nodes[0].group.mode(), Mode::Synced);
}

fn fixture(name: &str) -> Vec<u8> {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pmxcfs-wire/");
    std::fs::read(format!("{p}{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn a_pmxcfs_peers_captured_messages_are_understood() {
    // pcs1 in a synced group with pcs2 (pid 11286): pcs2's phase-d messages.
    let pcs1 = Member {
        nodeid: 1,
        pid: 11277,
    };
    let pcs2 = Member {
        nodeid: 2,
        pid: 11286,
    };
    let mut store = StatusStore::new("pcs1", 1, 1);
    store.set_nodes([(1, "pcs1".into()), (2, "pcs2".into()), (3, "pcs3".into())]);
    let mut g = Group::new(pcs1, None);
    g.handle(&mut store, Event::ConfChg { members: &[pcs1] }, 1);
    let mut actions = Vec::new();
    for f in [
        "n2/00007-pve_kvstore_v1.bin",
        "n2/00008-pve_kvstore_v1.bin",
        "n2/00009-pve_kvstore_v1.bin",
    ] {
        let b = fixture(f);
        actions.extend(g.handle(
            &mut store,
            Event::Deliver {
                from: pcs2,
                data: &b,
            },
            2,
        ));
    }
    assert_eq!(g.mode(), Mode::Synced);
    assert_eq!(store.get("pcs2", "kv/capture"), Some(b"value\0".to_vec()));
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Rrd { key, .. } if key == "pve2-node/pcs1")),
        "{actions:?}"
    );
    assert!(store.rrd_dump(2).starts_with("pve2-node/pcs1:"));
    let e = store.log.entries().last().unwrap().clone();
    assert_eq!((e.node.as_str(), e.msg.as_str()), ("pcs2", "hello capture"));
}

/// Randomized schedules of cuts, heals, rejoins (a member restarting with a new pid),
/// log entries and key updates on 4 nodes; after the final heal every node holds the
/// same log, every entry logged once, and every node's last value of every key.
#[test]
fn random_schedules_converge() {
    for seed in 1..=200u64 {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let n = 4;
        let mut net = Net::new(n);
        net.partition(&[&[0, 1, 2, 3]]);
        let mut logged: Vec<String> = Vec::new();
        let mut last: Vec<Option<String>> = vec![None; n];
        for step in 0..60 {
            net.now += rnd(2) as u32;
            match rnd(10) {
                // A new split: every node into one of two sides.
                0 | 1 => {
                    let (mut a, mut b) = (Vec::new(), Vec::new());
                    for i in 0..n {
                        if rnd(2) == 0 {
                            a.push(i)
                        } else {
                            b.push(i)
                        }
                    }
                    let parts: Vec<&[usize]> = [&a[..], &b[..]]
                        .into_iter()
                        .filter(|p| !p.is_empty())
                        .collect();
                    net.partition(&parts);
                }
                2 => net.partition(&[&[0, 1, 2, 3]]),
                // A restart: the member comes back as a new process, its log and keys
                // kept only as far as pmxcfs keeps them (not at all: a new store).
                3 => {
                    let i = rnd(n as u64) as usize;
                    let me = Member {
                        nodeid: i as u32 + 1,
                        pid: 1000 + step,
                    };
                    net.nodes[i].me = me;
                    net.nodes[i].group = Group::new(me, Some(format!("10.0.0.{}", i + 1)));
                    let mut store = StatusStore::new(&format!("n{}", i + 1), me.pid, net.now);
                    store.set_nodes((1..=n as u32).map(|k| (k, format!("n{k}"))));
                    net.nodes[i].store = store;
                    // Nothing is persisted (as in pmxcfs): its keys are gone, and so are
                    // its entries no other node has yet. The others' dedup record of it
                    // drops a restarted node's entries made within the same second
                    // (pmxcfs's rule), so the clock moves on first.
                    last[i] = None;
                    let tag = format!("on n{}", i + 1);
                    let others: Vec<Vec<String>> =
                        (0..n).filter(|k| *k != i).map(|k| net.msgs(k)).collect();
                    logged.retain(|m| !m.ends_with(&tag) || others.iter().any(|o| o.contains(m)));
                    net.now += 2;
                    let parts = net.parts.clone();
                    let refs: Vec<&[usize]> = parts.iter().map(|p| &p[..]).collect();
                    net.partition(&refs);
                }
                4..=6 => {
                    let i = rnd(n as u64) as usize;
                    let m = format!("s{seed} {step} on n{}", i + 1);
                    net.log(i, &m);
                    logged.push(m);
                }
                _ => {
                    let i = rnd(n as u64) as usize;
                    let v = format!("{seed}-{step}\0");
                    net.set(i, "kv/r", v.as_bytes());
                    last[i] = Some(v);
                }
            }
        }
        net.now += 1;
        net.partition(&[&[0, 1, 2, 3]]);
        let states: Vec<Vec<u8>> = net
            .nodes
            .iter()
            .map(|n| n.store.log.encode_state())
            .collect();
        assert!(
            states.iter().all(|s| *s == states[0]),
            "seed {seed}: logs differ"
        );
        let msgs = net.msgs(0);
        for m in &logged {
            assert_eq!(
                msgs.iter().filter(|x| *x == m).count(),
                1,
                "seed {seed}: {m}"
            );
        }
        for (i, v) in last.iter().enumerate() {
            let Some(v) = v else { continue };
            for k in 0..n {
                if k != i {
                    assert_eq!(
                        net.nodes[k]
                            .store
                            .get(&format!("n{}", i + 1), "kv/r")
                            .as_deref(),
                        Some(v.as_bytes()),
                        "seed {seed}: n{}'s kv/r on n{}",
                        i + 1,
                        k + 1
                    );
                }
            }
        }
    }
}
