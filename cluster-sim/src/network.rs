//! The CPG model: configurations, their total order, and what each node delivers.
//!
//! Each configuration has one log, its total order. A multicast is appended to the
//! sender's newest configuration (CPG orders a message sent just before a confchg after
//! it). Every member delivers the log at its own pace; when the configuration ends, one
//! cut point at or after the furthest delivery is chosen, every surviving member
//! delivers exactly the prefix up to it and nobody the rest, then each enters its next
//! configuration (quorum, then confchg). Quorum is a majority of all nodes in the
//! configuration: corosync's, since every running node is in the group; across the
//! protocol switch, pmxfs's group may hold fewer nodes than corosync counts, and its
//! adapter then feeds the core that rule too (`QuorumView` in the daemon). With late
//! quorum notifications, a member's notification may come after its confchg, but always
//! before its next delivery, as the daemon's adapter guarantees.
use std::collections::BTreeMap;

use cluster_sync::core::Member;

use crate::rng::Rng;

/// One configuration.
#[derive(Debug)]
pub struct Cfg {
    /// Its members, sorted.
    pub members: Vec<Member>,
    /// A majority of all nodes.
    pub quorate: bool,
    log: Vec<(Member, Vec<u8>)>,
    /// Length of the log every surviving member delivers, once the configuration ended.
    cut: Option<usize>,
    max_delivered: usize,
    /// Next configuration of each member that moved on.
    next: BTreeMap<usize, usize>,
}

/// Where one node is.
#[derive(Debug, Default)]
struct Endpoint {
    /// Configuration whose log this node delivers.
    cfg: Option<usize>,
    cursor: usize,
    /// First configuration of a (re)started node.
    join: Option<usize>,
    /// Newest configuration containing this node (where its sends go).
    current: Option<usize>,
    view: Vec<Member>,
    group: usize,
    /// A quorum notification not delivered yet.
    late_quorum: Option<bool>,
}

/// What a node is due to receive next.
#[derive(Debug)]
pub enum Due {
    /// Message `pos` of configuration `cfg`.
    Deliver {
        /// The configuration.
        cfg: usize,
        /// Position in its log.
        pos: usize,
        /// Sender.
        from: Member,
        /// The encoded message.
        bytes: Vec<u8>,
    },
    /// Entering configuration `cfg`: the quorum notification (unless delayed) and the
    /// confchg.
    Enter {
        /// The configuration.
        cfg: usize,
        /// Its members.
        members: Vec<Member>,
        /// Members that left since the node's last view.
        left: Vec<Member>,
        /// Members that joined.
        joined: Vec<Member>,
        /// The quorum notification, if it comes now (`None`: delayed).
        quorum: Option<bool>,
    },
    /// A delayed quorum notification.
    LateQuorum(bool),
}

/// Every node's view of CPG.
#[derive(Debug)]
pub struct Network {
    n: usize,
    cfgs: Vec<Cfg>,
    ends: Vec<Endpoint>,
    /// Percent of confchgs whose quorum notification comes late.
    late_quorum: u32,
}

impl Network {
    /// `n` nodes, none in a configuration yet.
    pub fn new(n: usize, late_quorum: u32) -> Network {
        Network {
            n,
            cfgs: Vec::new(),
            ends: (0..n).map(|_| Endpoint::default()).collect(),
            late_quorum,
        }
    }

    /// Configurations formed so far.
    pub fn configs(&self) -> usize {
        self.cfgs.len()
    }

    /// The configuration `c`.
    pub fn cfg(&self, c: usize) -> &Cfg {
        &self.cfgs[c]
    }

    /// The configuration node `i` delivers in.
    pub fn delivering(&self, i: usize) -> Option<usize> {
        self.ends[i].cfg
    }

    /// The newest configuration containing node `i`.
    pub fn current(&self, i: usize) -> Option<usize> {
        self.ends[i].current
    }

    /// Put node `i` in partition group `g` (call [`Network::reconfigure`] after).
    pub fn set_group(&mut self, i: usize, g: usize) {
        self.ends[i].group = g;
    }

    /// The partition group of node `i`.
    pub fn group(&self, i: usize) -> usize {
        self.ends[i].group
    }

    fn seal(&mut self, c: usize, rng: &mut Rng, log: &mut Vec<String>) {
        if self.cfgs[c].cut.is_none() {
            let cfg = &self.cfgs[c];
            let (lo, hi) = (cfg.max_delivered, cfg.log.len());
            let cut = rng.range(lo, hi);
            self.cfgs[c].cut = Some(cut);
            log.push(format!("cfg {c} ends: {cut} of {hi} messages delivered"));
        }
    }

    /// Recompute the configurations from the partition groups of the live nodes
    /// (`live[i]` is node `i`'s member, `None` if it is down or not in this group).
    pub fn reconfigure(&mut self, live: &[Option<Member>], rng: &mut Rng, log: &mut Vec<String>) {
        let mut comps: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, m) in live.iter().enumerate() {
            if m.is_some() {
                comps.entry(self.ends[i].group).or_default().push(i);
            }
        }
        let mut ended = Vec::new();
        for (_, idxs) in comps {
            let mut members: Vec<Member> = idxs.iter().filter_map(|&i| live[i]).collect();
            members.sort();
            let cur = self.ends[idxs[0]].current;
            let same = cur.is_some_and(|c| {
                self.cfgs[c].members == members
                    && idxs.iter().all(|&i| self.ends[i].current == Some(c))
            });
            if same {
                continue;
            }
            let id = self.cfgs.len();
            let quorate = members.len() * 2 > self.n;
            log.push(format!(
                "cfg {id}: members {:?} quorate={quorate}",
                members.iter().map(|m| m.to_string()).collect::<Vec<_>>()
            ));
            self.cfgs.push(Cfg {
                members,
                quorate,
                log: Vec::new(),
                cut: None,
                max_delivered: 0,
                next: BTreeMap::new(),
            });
            for &i in &idxs {
                match self.ends[i].current {
                    Some(old) => {
                        ended.push(old);
                        self.cfgs[old].next.insert(i, id);
                    }
                    None => self.ends[i].join = Some(id),
                }
                self.ends[i].current = Some(id);
            }
        }
        ended.sort_unstable();
        ended.dedup();
        for c in ended {
            self.seal(c, rng, log);
        }
    }

    /// Node `i` went down: it delivers nothing more.
    pub fn leave(&mut self, i: usize) {
        let group = self.ends[i].group;
        self.ends[i] = Endpoint {
            group,
            ..Endpoint::default()
        };
    }

    /// Node `i` multicasts `bytes` as `from`.
    pub fn multicast(&mut self, i: usize, from: Member, bytes: Vec<u8>) -> Result<(), String> {
        let c = self.ends[i]
            .current
            .ok_or("multicast from a node outside any configuration")?;
        self.cfgs[c].log.push((from, bytes));
        Ok(())
    }

    /// Whether node `i` has something due.
    pub fn has_due(&self, i: usize) -> bool {
        let e = &self.ends[i];
        if e.late_quorum.is_some() {
            return true;
        }
        match e.cfg {
            None => e.join.is_some(),
            Some(c) => {
                let cfg = &self.cfgs[c];
                let lim = cfg.cut.unwrap_or(cfg.log.len());
                e.cursor < lim || (cfg.cut.is_some() && cfg.next.contains_key(&i))
            }
        }
    }

    /// Take what node `i` receives next, if anything.
    pub fn take(&mut self, i: usize, rng: &mut Rng) -> Option<Due> {
        if let Some(q) = self.ends[i].late_quorum.take() {
            // Late, but before the node's next delivery (see the module doc).
            return Some(Due::LateQuorum(q));
        }
        let e = &self.ends[i];
        let next = match e.cfg {
            None => e.join?,
            Some(c) => {
                let cfg = &self.cfgs[c];
                let lim = cfg.cut.unwrap_or(cfg.log.len());
                if e.cursor < lim {
                    let pos = e.cursor;
                    let (from, bytes) = cfg.log[pos].clone();
                    self.ends[i].cursor += 1;
                    let cfg = &mut self.cfgs[c];
                    cfg.max_delivered = cfg.max_delivered.max(pos + 1);
                    return Some(Due::Deliver {
                        cfg: c,
                        pos,
                        from,
                        bytes,
                    });
                }
                // Not over yet: nothing more until more is multicast or it ends.
                cfg.cut?;
                *cfg.next.get(&i)?
            }
        };
        let members = self.cfgs[next].members.clone();
        let e = &mut self.ends[i];
        let old = std::mem::take(&mut e.view);
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
        e.cfg = Some(next);
        e.cursor = 0;
        e.join = None;
        e.view = members.clone();
        let q = self.cfgs[next].quorate;
        let quorum = if self.late_quorum > 0 && rng.percent(self.late_quorum) {
            self.ends[i].late_quorum = Some(q);
            None
        } else {
            Some(q)
        };
        Some(Due::Enter {
            cfg: next,
            members,
            left,
            joined,
            quorum,
        })
    }
}
