//! After the switch (DESIGN.md, "The switch"): what a switched member's sentinel in
//! pmxcfs's group does, as events in and decisions out. The sentinel never takes part
//! in pmxcfs's protocol; it makes sure every daemon still speaking it hears that the
//! cluster switched: at every join, and at the first message each member sends in a
//! configuration (a message cut off by a membership change is told again), so that a
//! pmxcfs daemon stops (its version error) and a pmxfs node switches too.
use std::collections::BTreeSet;

use super::types::{Member, NodeId};

/// One sentinel's bookkeeping.
#[derive(Debug, Default)]
pub struct Sentinel {
    /// Nodes told (or seen speaking pmxcfs's protocol, which they are told).
    told: BTreeSet<NodeId>,
    /// Members that sent a pmxcfs message in this configuration and were answered.
    answered: BTreeSet<Member>,
}

impl Sentinel {
    /// A configuration change of pmxcfs's group: whether to announce (someone joined,
    /// this sentinel included). Every joiner but this node counts as told.
    pub fn confchg(&mut self, me: Member, joined: &[Member]) -> bool {
        self.answered.clear();
        self.told.extend(
            joined
                .iter()
                .filter(|m| m.nodeid != me.nodeid)
                .map(|m| m.nodeid),
        );
        !joined.is_empty()
    }

    /// A message from `from`; `announcement`: another switched member's. Whether to
    /// announce again: the first pmxcfs message of a member in this configuration.
    pub fn heard(&mut self, me: Member, from: Member, announcement: bool) -> bool {
        if announcement || from.nodeid == me.nodeid {
            return false;
        }
        self.told.insert(from.nodeid);
        self.answered.insert(from)
    }

    /// The nodes told so far, ascending: they cannot accept writes in pmxcfs's group
    /// (a pmxcfs daemon stopped, a pmxfs node switched).
    pub fn told(&self) -> Vec<NodeId> {
        self.told.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_joiners_and_each_speaker_once_per_configuration() {
        let me = Member::new(1, 10);
        let (p, q) = (Member::new(3, 30), Member::new(2, 20));
        let mut s = Sentinel::default();
        assert!(!s.confchg(me, &[]), "a leave: nothing to tell");
        assert!(s.confchg(me, &[p]));
        assert!(
            s.confchg(me, &[me]),
            "this sentinel joined: tell whoever is there"
        );
        assert_eq!(s.told(), vec![3]);
        assert!(
            s.heard(me, p, false),
            "told at its join, but it still speaks"
        );
        assert!(!s.heard(me, p, false), "once per configuration");
        assert!(s.heard(me, q, false));
        assert!(!s.heard(me, Member::new(4, 40), true), "another sentinel");
        assert!(!s.heard(me, Member::new(1, 11), false), "this node");
        assert_eq!(s.told(), vec![2, 3]);
        s.confchg(me, &[]);
        assert!(s.heard(me, p, false), "a new configuration: told again");
    }
}
