//! The core's inputs and outputs.
use super::message::Message;
use super::types::{Epoch, Member, Mode, NodeId, ReqId, Term};

/// An input to [`super::Node::handle`].
#[derive(Debug, Clone)]
pub enum Event<O, E> {
    /// CPG configuration change (members is the full new membership).
    ConfChg {
        /// Current members.
        members: Vec<Member>,
        /// Members that left.
        left: Vec<Member>,
        /// Members that joined.
        joined: Vec<Member>,
    },
    /// A message delivered by CPG in agreed order (already decoded).
    Deliver {
        /// Sender.
        from: Member,
        /// The message.
        msg: Message<O, E>,
    },
    /// Quorum changed (from the quorum service). It may come after the `ConfChg` of
    /// the membership it belongs to, but the adapter must feed it before any message
    /// delivered in that configuration: a member's State carries its quorum flag, and
    /// a stale "quorate" would let a member cut off alone accept a term. corosync
    /// queues the notification before the configuration can carry messages.
    Quorum(bool),
    /// How many nodes the cluster is configured with (corosync's node list): a write
    /// is answered once a majority of them (and of the configuration) holds it.
    /// Unknown (0) until fed; then only the configuration's majority counts.
    Nodes(usize),
    /// Time for a cross-node check of the trees (the adapter's timer): the lowest
    /// member of a synced configuration asks every member to checksum its tree.
    VerifyNow,
    /// A local caller wants `op` applied cluster-wide.
    LocalRequest {
        /// Routes the reply.
        req_id: ReqId,
        /// The write.
        op: O,
    },
    /// Compat mode: a member that already switched to the term protocol at `term`
    /// says so (this member missed the switch point, or joined after it). This member
    /// switches too, keeping its tree, labelled at least `term`.
    Switched {
        /// The switch round's label ([`Action::Switched`]).
        term: Term,
    },
    /// The adapter's wall clock (seconds); stamps outgoing messages.
    Tick {
        /// Current time.
        now: u32,
    },
}

/// An output of [`super::Node::handle`], to be carried out in order. `X` is what the
/// database reports of an applied op ([`super::Database::Outcome`]).
#[derive(Debug, Clone)]
pub enum Action<O, E, R, X> {
    /// Multicast to the group (CPG AGREED).
    Multicast(Message<O, E>),
    /// Answer a local request; sent exactly once per `LocalRequest`.
    Reply {
        /// The request.
        req_id: ReqId,
        /// Its outcome.
        result: Result<(), R>,
    },
    /// An op was applied to the database: the adapter publishes what changed. Comes
    /// before the writer's `Reply`.
    Applied {
        /// The op.
        op: O,
        /// What the database reported.
        outcome: X,
        /// Its writer.
        writer: NodeId,
        /// Writer's time it was applied with.
        time: u32,
        /// Written by this node (its kernel already saw the change).
        local: bool,
    },
    /// The database was replaced by the leader's tree of round `epoch`: anything
    /// may have changed.
    SyncInstalled {
        /// Whose tree.
        leader: Member,
        /// The round.
        epoch: Epoch,
    },
    /// The protocol mode changed.
    ModeChanged(Mode),
    /// Compat mode: this member switched to the term protocol (DESIGN.md, "The
    /// switch"). Its tree is durably labelled `term`; it handles no more events, and
    /// the adapter goes on with a term-protocol member on the same database, to which
    /// it hands `pending`, the unanswered requests (applied nowhere: no member applies
    /// a compat write after the switch point), in the order they were made.
    Switched {
        /// The label of every tree at the switch point: the highest any member held.
        term: Term,
        /// Unanswered local requests, oldest first.
        pending: Vec<(ReqId, O)>,
    },
}
