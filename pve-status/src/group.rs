//! This node as a member of the kvstore CPG group: pmxcfs's dfsm (`dfsm.c`) with the
//! kvstore's callbacks (`status.c`), as a state machine that takes membership changes,
//! deliveries and local updates and returns what to send and what to do.
//!
//! The kvstore's sync round is short: on a membership change of more than one member
//! the lowest node id sends SYNC_START; every member answers with its cluster log ring
//! as STATE; once all STATEs are in, every member merges the same logs into the same
//! log, counts every member as synced (there is no leader and no UPDATE phase), sends
//! its own keys again and then its address. Application messages that arrive while not
//! synced wait in a bounded queue and are delivered once synced.

use std::collections::VecDeque;

use crate::clog::{self, Entry};
use crate::store::{StatusStore, Stored};
use crate::wire::{self, Epoch, Kind, Message, Subtype, WireError};

/// Messages that may wait while a round is open; beyond it this node leaves and joins
/// again (and so resyncs) rather than grow without bound.
pub const MAX_QUEUED: usize = 8192;

/// Bytes that may wait while a round is open (see [`MAX_QUEUED`]).
pub const MAX_QUEUED_BYTES: usize = 64 << 20;

/// A group member: a process on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Member {
    /// Corosync node id.
    pub nodeid: u32,
    /// Process id.
    pub pid: u32,
}

/// `dfsm_mode_t`, without the modes the kvstore never enters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Joined, no membership seen yet.
    Start,
    /// A round is open: waiting for SYNC_START and every member's STATE.
    StartSync,
    /// In sync: application messages are delivered.
    Synced,
    /// Left after a protocol violation; the adapter joins again with a new machine.
    Leave,
    /// A member speaks a newer protocol: pmxcfs never rejoins.
    VersionError,
}

/// What happens to this member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// The group's membership changed to `members`.
    ConfChg {
        /// Every current member.
        members: &'a [Member],
    },
    /// A message multicast by `from`, in the group's total order.
    Deliver {
        /// The sender.
        from: Member,
        /// The message as delivered.
        data: &'a [u8],
    },
    /// This node stored a `SET_STATUS` of `key`: tell the others.
    LocalSet {
        /// The key.
        key: &'a str,
        /// The value, as the client sent it.
        value: &'a [u8],
    },
    /// This node logged `entry` (already in its log): tell the others.
    LocalLog {
        /// The entry.
        entry: &'a Entry,
    },
}

/// What the adapter must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Multicast these bytes to the group.
    Send(Vec<u8>),
    /// A peer's RRD update was stored: write it to its RRD file.
    Rrd {
        /// The key after `rrd/`.
        key: String,
        /// The data.
        data: String,
    },
    /// The group's members are now these nodes (`.members`'s `online`).
    Online(Vec<u32>),
    /// A node's address changed (`.members`'s `ip`; the cluster info version moves).
    AddressChanged,
    /// Leave the group; join again with a new machine, which resyncs.
    Leave(String),
    /// Leave the group for good: another member speaks a newer protocol.
    Stop(String),
}

/// One member's view of the kvstore group.
#[derive(Debug)]
pub struct Group {
    me: Member,
    /// This node's address when its store has none (pmxcfs's `cfs.ip`).
    default_ip: Option<String>,
    mode: Mode,
    epoch_counter: u32,
    epoch: Epoch,
    lowest: u32,
    members: Vec<Member>,
    /// Each member's STATE of the open round, by index in `members`.
    states: Vec<Option<Vec<u8>>>,
    queue: VecDeque<(Member, Vec<u8>)>,
    queued_bytes: usize,
    sent: u64,
}

impl Group {
    /// A member that just joined the group.
    pub fn new(me: Member, default_ip: Option<String>) -> Group {
        Group {
            me,
            default_ip,
            mode: Mode::Start,
            epoch_counter: 0,
            epoch: Epoch::default(),
            lowest: 0,
            members: Vec::new(),
            states: Vec::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            sent: 0,
        }
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The current members.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Handle `ev` at time `now` (seconds) against the store.
    pub fn handle(&mut self, store: &mut StatusStore, ev: Event<'_>, now: u32) -> Vec<Action> {
        let mut out = Vec::new();
        if matches!(self.mode, Mode::Leave | Mode::VersionError) {
            return out;
        }
        let r = match ev {
            Event::ConfChg { members } => self.confchg(store, members, now, &mut out),
            Event::Deliver { from, data } => self.deliver(store, from, data, now, &mut out),
            Event::LocalSet { key, value } => {
                let p = wire::update_payload(key, value);
                self.send_normal(Subtype::Update, &p, now, &mut out);
                Ok(())
            }
            Event::LocalLog { entry } => {
                self.send_normal(Subtype::Log, &entry.encode(), now, &mut out);
                Ok(())
            }
        };
        match r {
            Ok(()) => {}
            Err(Exit::Leave(why)) => {
                tracing::error!("kvstore: {why}; leaving the group");
                self.mode = Mode::Leave;
                out.push(Action::Leave(why));
            }
            Err(Exit::Stop(why)) => {
                tracing::error!("kvstore: {why}; please update this node");
                self.mode = Mode::VersionError;
                out.push(Action::Stop(why));
            }
        }
        out
    }

    fn send_normal(&mut self, sub: Subtype, payload: &[u8], now: u32, out: &mut Vec<Action>) {
        self.sent += 1;
        out.push(Action::Send(wire::encode_normal(
            sub,
            now,
            self.sent,
            &[payload],
        )));
    }

    fn confchg(
        &mut self,
        store: &mut StatusStore,
        members: &[Member],
        now: u32,
        out: &mut Vec<Action>,
    ) -> Result<(), Exit> {
        // A new round, named by this member whatever happens next; a SYNC_START of
        // the lowest member replaces it everywhere.
        self.epoch_counter = self.epoch_counter.wrapping_add(1);
        self.epoch = Epoch {
            epoch: self.epoch_counter,
            time: now,
            nodeid: self.me.nodeid,
            pid: self.me.pid,
        };
        let mut members = members.to_vec();
        members.sort();
        members.dedup();
        self.lowest = members.iter().map(|m| m.nodeid).min().unwrap_or(0);
        self.states = vec![None; members.len()];
        let we_are_member = members.contains(&self.me);
        self.members = members;
        if !we_are_member {
            if self.mode == Mode::Start {
                return Ok(());
            }
            return Err(Exit::Leave("this member left the group".into()));
        }
        if self.members.len() > 1 {
            tracing::info!(
                members = ?self.members.iter().map(|m| (m.nodeid, m.pid)).collect::<Vec<_>>(),
                "kvstore: starting data synchronisation"
            );
            self.mode = Mode::StartSync;
            if self.lowest == self.me.nodeid {
                out.push(Action::Send(wire::encode_state(
                    Kind::SyncStart,
                    now,
                    self.epoch,
                    &[],
                )));
            }
        } else {
            self.set_synced(store, now, out);
            self.deliver_queue(store, now, out)?;
        }
        out.push(Action::Online(
            self.members.iter().map(|m| m.nodeid).collect(),
        ));
        Ok(())
    }

    /// Enter the synced mode; only a change of mode sends this node's address, as
    /// pmxcfs's `dfsm_synced` callback runs only then.
    fn set_synced(&mut self, store: &mut StatusStore, now: u32, out: &mut Vec<Action>) {
        if self.mode == Mode::Synced {
            return;
        }
        tracing::info!(
            members = self.members.len(),
            "kvstore: all data is up to date"
        );
        self.mode = Mode::Synced;
        let ip = store
            .ip(store.me())
            .map(str::to_string)
            .or_else(|| self.default_ip.clone());
        if let Some(ip) = ip {
            let mut v = ip.into_bytes();
            v.push(0);
            if let Ok(Stored::Ip(true)) = store.set_local("nodeip", &v, now) {
                out.push(Action::AddressChanged);
            }
            let p = wire::update_payload("nodeip", &v);
            self.send_normal(Subtype::Update, &p, now, out);
        }
    }

    fn deliver(
        &mut self,
        store: &mut StatusStore,
        from: Member,
        data: &[u8],
        now: u32,
        out: &mut Vec<Action>,
    ) -> Result<(), Exit> {
        // pmxcfs ignores messages of an older protocol; none exists below the
        // kvstore's 0, so every version is this one or newer.
        let msg = match wire::decode(data) {
            Ok(m) => m,
            Err(WireError::NewerProtocol(v)) => {
                return Err(Exit::Stop(format!(
                    "member {}/{} speaks protocol {v}",
                    from.nodeid, from.pid
                )))
            }
            Err(e) => {
                return Err(Exit::Leave(format!(
                    "bad message from {}/{}: {e}",
                    from.nodeid, from.pid
                )))
            }
        };
        match msg {
            Message::Normal {
                subtype, payload, ..
            } => {
                if self.mode == Mode::Synced {
                    self.apply(store, from, subtype, payload, now, out);
                    return Ok(());
                }
                if !self.members.contains(&from) && self.mode != Mode::Start {
                    return Err(Exit::Leave(format!(
                        "message from non-member {}/{}",
                        from.nodeid, from.pid
                    )));
                }
                if self.queue.len() >= MAX_QUEUED
                    || self.queued_bytes + data.len() > MAX_QUEUED_BYTES
                {
                    return Err(Exit::Leave("too many messages wait for the sync".into()));
                }
                self.queued_bytes += data.len();
                self.queue.push_back((from, data.to_vec()));
                Ok(())
            }
            Message::State {
                kind,
                epoch,
                payload,
                ..
            } => self.state_message(store, from, kind, epoch, payload, now, out),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn state_message(
        &mut self,
        store: &mut StatusStore,
        from: Member,
        kind: Kind,
        epoch: Epoch,
        payload: &[u8],
        now: u32,
        out: &mut Vec<Action>,
    ) -> Result<(), Exit> {
        if kind != Kind::SyncStart && epoch != self.epoch {
            return Ok(()); // another round's
        }
        match (self.mode, kind) {
            (Mode::Synced, Kind::UpdateComplete) => self.deliver_queue(store, now, out),
            (Mode::Synced, Kind::VerifyRequest) if payload.len() != 8 => Err(Exit::Leave(format!(
                "verify request of {} bytes",
                payload.len()
            ))),
            // Nothing to verify in the kvstore; the rest belongs to rounds already over.
            (Mode::Synced, _) => Ok(()),
            (Mode::StartSync, Kind::SyncStart) => {
                if from.nodeid != self.lowest {
                    tracing::warn!(
                        nodeid = from.nodeid,
                        "kvstore: sync request from a member that is not the lowest"
                    );
                }
                self.epoch = epoch;
                self.states.iter_mut().for_each(|s| *s = None);
                let state = store.log.encode_state();
                out.push(Action::Send(wire::encode_state(
                    Kind::State,
                    now,
                    self.epoch,
                    &state,
                )));
                Ok(())
            }
            (Mode::StartSync, Kind::State) => {
                let Some(i) = self.members.iter().position(|m| *m == from) else {
                    return Err(Exit::Leave(format!(
                        "state from non-member {}/{}",
                        from.nodeid, from.pid
                    )));
                };
                if self.states[i].is_some() {
                    return Err(Exit::Leave(format!(
                        "second state from {}/{}",
                        from.nodeid, from.pid
                    )));
                }
                self.states[i] = Some(payload.to_vec());
                if self.states.iter().all(Option::is_some) {
                    self.merge_states(store, now, out);
                    self.set_synced(store, now, out);
                    self.deliver_queue(store, now, out)?;
                }
                Ok(())
            }
            (_, Kind::VerifyRequest | Kind::Verify) => Ok(()),
            (mode, kind) => Err(Exit::Leave(format!("unexpected {kind:?} in mode {mode:?}"))),
        }
    }

    /// Every member's log merged into one (the same on every member), then this node's
    /// own keys sent again (`dfsm_process_state_update`, `cfs_kvstore_sync`).
    fn merge_states(&mut self, store: &mut StatusStore, now: u32, out: &mut Vec<Action>) {
        let local = self
            .members
            .iter()
            .position(|m| *m == self.me)
            .expect("a synced round has this member");
        let logs: Vec<Option<Vec<Entry>>> = self
            .states
            .iter()
            .enumerate()
            .map(|(i, s)| {
                if i == local {
                    return None; // the local log stands in for its own state
                }
                let s = s.as_deref().unwrap_or_default();
                match clog::decode_state(s) {
                    Ok(e) => Some(e),
                    Err(e) => {
                        let m = self.members[i];
                        tracing::error!(
                            nodeid = m.nodeid,
                            pid = m.pid,
                            "kvstore: dropping a cluster log state: {e}"
                        );
                        None
                    }
                }
            })
            .collect();
        if let Err(e) = store.log.merge(&logs, local) {
            tracing::error!("kvstore: cannot merge the cluster logs: {e}");
        }
        self.states.iter_mut().for_each(|s| *s = None);
        for (k, v) in store.own_entries() {
            let p = wire::update_payload(&k, &v);
            self.send_normal(Subtype::Update, &p, now, out);
        }
    }

    /// Deliver what waited, from members still in the group, in arrival order.
    fn deliver_queue(
        &mut self,
        store: &mut StatusStore,
        now: u32,
        out: &mut Vec<Action>,
    ) -> Result<(), Exit> {
        while let Some((from, data)) = self.queue.pop_front() {
            self.queued_bytes -= data.len();
            if !self.members.contains(&from) {
                continue;
            }
            if let Ok(Message::Normal {
                subtype, payload, ..
            }) = wire::decode(&data)
            {
                self.apply(store, from, subtype, payload, now, out);
            }
        }
        Ok(())
    }

    /// An application message in sync: a peer's UPDATE or LOG. Own messages were
    /// applied when made; malformed ones are logged and dropped, as pmxcfs does.
    fn apply(
        &mut self,
        store: &mut StatusStore,
        from: Member,
        subtype: Subtype,
        payload: &[u8],
        now: u32,
        out: &mut Vec<Action>,
    ) {
        if from == self.me {
            return;
        }
        match subtype {
            Subtype::Update => match wire::parse_update(payload) {
                Ok((key, value)) => match store.set_remote(from.nodeid, key, value, now) {
                    Stored::Rrd { key, data } => out.push(Action::Rrd { key, data }),
                    Stored::Ip(true) => out.push(Action::AddressChanged),
                    _ => {}
                },
                Err(e) => tracing::warn!(nodeid = from.nodeid, "kvstore: dropping update: {e}"),
            },
            Subtype::Log => match Entry::decode(payload) {
                Ok(e) => {
                    store.log.insert(e);
                }
                Err(e) => tracing::warn!(nodeid = from.nodeid, "kvstore: dropping log entry: {e}"),
            },
            Subtype::Other(t) => {
                tracing::warn!(
                    nodeid = from.nodeid,
                    "kvstore: dropping message of unknown type {t}"
                )
            }
        }
    }
}

/// How a handler ends the membership.
enum Exit {
    Leave(String),
    Stop(String),
}

#[cfg(test)]
#[path = "group_tests.rs"]
mod tests;
