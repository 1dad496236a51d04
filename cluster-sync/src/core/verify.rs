//! The cross-node check of the trees (pmxcfs's VERIFY_REQUEST and VERIFY): every
//! member of a synced configuration applies the same writes in the same order, so at
//! any point of the message order their trees are equal. Now and then the lowest member
//! multicasts a request; every member checksums its tree when it delivers it, and the
//! requester multicasts its own checksum. A member whose checksum differs holds a tree
//! nothing in the protocol foresaw (a bug, a disk that changed under it): it stops, as
//! pmxcfs's member leaves, and the adapter joins it again, which resyncs it. On a tie
//! in (term, version, mtime) the lowest member, the requester, leads that round.
use super::db::Database;
use super::message::Body;
use super::node::{Act, Node};
use super::types::{Digest, Epoch, Member, Mode};

/// What a member keeps of the checks.
#[derive(Debug, Default)]
pub(super) struct Verifier {
    /// Names the requests this member sends.
    next_id: u64,
    /// This member's checksum at the request it delivered last, until the
    /// requester's arrives.
    pub pending: Option<(Epoch, u64, Digest)>,
    /// Checks this member completed.
    pub checks: u64,
    /// Checks that found this member's tree differing.
    pub mismatches: u64,
}

impl<D: Database> Node<D> {
    /// The adapter's timer: the lowest member of a synced configuration that accepted
    /// a term starts a check.
    pub(super) fn verify_now(&mut self, out: &mut Vec<Act<D>>) {
        let Some(epoch) = self.round.epoch else {
            return;
        };
        if self.members.first() != Some(&self.me)
            || self.mode != Mode::Synced
            || !self.round.accepted()
        {
            return;
        }
        self.verify.next_id += 1;
        let id = self.verify.next_id;
        self.send(Body::VerifyRequest { epoch, id }, out);
    }

    /// A request: checksum the tree here, where every member delivers it.
    pub(super) fn on_verify_request(
        &mut self,
        from: Member,
        epoch: Epoch,
        id: u64,
        out: &mut Vec<Act<D>>,
    ) {
        if !self.round.is(epoch) || !self.round.accepted() || self.members.first() != Some(&from) {
            // Of an earlier round, or not settled here yet: pmxcfs ignores it too.
            return;
        }
        debug_assert_eq!(self.writes.queued(), 0, "a synced round queues no writes");
        let checksum = self.db.checksum();
        if from == self.me {
            self.verify.checks += 1;
            self.send(
                Body::Verify {
                    epoch,
                    id,
                    checksum,
                },
                out,
            );
        } else {
            self.verify.pending = Some((epoch, id, checksum));
        }
    }

    /// The requester's checksum: compare.
    pub(super) fn on_verify(
        &mut self,
        from: Member,
        epoch: Epoch,
        id: u64,
        checksum: Digest,
        out: &mut Vec<Act<D>>,
    ) {
        if from == self.me || self.verify.pending.map(|(e, i, _)| (e, i)) != Some((epoch, id)) {
            return;
        }
        let (_, _, mine) = self.verify.pending.take().expect("checked");
        self.verify.checks += 1;
        if mine != checksum {
            self.verify.mismatches += 1;
            let e = format!(
                "this tree's checksum differs from {from}'s at check {id} of round {epoch}: resyncing"
            );
            self.fail("verifying the tree", &e, out);
        }
    }
}
