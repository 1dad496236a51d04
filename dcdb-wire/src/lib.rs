//! pmxcfs's `pve_dcdb_v1` messages as pure, I/O-free encode/decode, byte-compatible
//! with pmxcfs 9.1.6 (`dcdb.c`, `dfsm.c`, `memdb.c`) and tested against real captures.
//!
//! The dfsm framing (headers, epochs) is `pve_status::wire`'s; this crate reads and
//! writes what dcdb puts inside it.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod bytes;
pub mod csum;
mod error;
pub mod fuse;
pub mod index;
pub mod unlock;
pub mod update;
pub mod verify;

#[cfg(test)]
mod testdata;

pub use error::DcdbError;
pub use fuse::{FuseMsg, FuseOp};
pub use index::{plan_sync, Index, IndexEntry, Member, MemberDiff, SyncPlan};
pub use unlock::UnlockMsg;
pub use update::InodeRecord;

use pve_status::wire::{
    decode_for, encode_normal_raw, encode_state_raw, Epoch, Kind, Message, HEADER,
};

/// dcdb's dfsm protocol version (`DCDB_PROTOCOL_VERSION`).
pub const PROTOCOL_VERSION: u32 = 1;

/// dcdb's CPG group, with the terminating NUL pmxcfs counts in the name's length.
pub const GROUP: &str = "pve_dcdb_v1\0";

/// A NORMAL message's application payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Normal {
    /// Subtypes 1..=6.
    Fuse(FuseMsg),
    /// Subtypes 7 and 8.
    Unlock(UnlockMsg),
}

impl Normal {
    /// The NORMAL subtype (dcdb message type).
    pub fn subtype(&self) -> u16 {
        match self {
            Normal::Fuse(m) => m.op.subtype(),
            Normal::Unlock(m) => m.subtype(),
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            Normal::Fuse(m) => m.encode(),
            Normal::Unlock(m) => m.encode(),
        }
    }
}

/// One decoded `pve_dcdb_v1` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DcdbMessage {
    /// A file-system change or an unlock.
    Normal {
        /// The sender's clock: the change's mtime on every node (except MTIME's).
        time: u32,
        /// The sender's message count.
        count: u64,
        /// The payload.
        msg: Normal,
    },
    /// The lowest member opens a sync round. pmxcfs does not read a payload here;
    /// any bytes after the header are dropped (they do not survive re-encoding).
    SyncStart {
        /// The sender's clock.
        time: u32,
        /// The round.
        epoch: Epoch,
    },
    /// A member's memdb index.
    State {
        /// The sender's clock.
        time: u32,
        /// The round.
        epoch: Epoch,
        /// The index.
        index: Index,
        /// The header's `subtype` and `reserved` fields, which pmxcfs sends as 0 and
        /// never reads in a state message: pmxfs says there whether it offers the
        /// switch to its own protocol, and the label of its tree.
        extra: StateExtra,
    },
    /// One inode from the leader.
    Update {
        /// The sender's clock.
        time: u32,
        /// The round.
        epoch: Epoch,
        /// The inode.
        record: InodeRecord,
    },
    /// The leader's end of updates (payload dropped, as for [`DcdbMessage::SyncStart`]).
    UpdateComplete {
        /// The sender's clock.
        time: u32,
        /// The round.
        epoch: Epoch,
    },
    /// The lowest member asks for checksums.
    VerifyRequest {
        /// The sender's clock.
        time: u32,
        /// The round.
        epoch: Epoch,
        /// Names this request.
        csum_id: u64,
    },
    /// The requester's database checksum.
    Verify {
        /// The sender's clock.
        time: u32,
        /// The round.
        epoch: Epoch,
        /// The request it answers.
        csum_id: u64,
        /// `memdb_compute_checksum`.
        csum: [u8; 32],
    },
}

/// The two header fields of a STATE that pmxcfs sends as 0 and never reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StateExtra {
    /// The header's `subtype`.
    pub subtype: u16,
    /// The header's `reserved`.
    pub reserved: u32,
}

/// Decode one delivered `pve_dcdb_v1` message. The header's `reserved` field and a
/// state message's `subtype` are not read by pmxcfs; they are not kept (they re-encode
/// as 0, as pmxcfs sends them), except a STATE's ([`StateExtra`]). A message of an older protocol is
/// [`DcdbError::OlderProtocol`] (pmxcfs ignores it); a newer one is
/// `Wire(NewerProtocol)` (pmxcfs stops the group).
pub fn decode_message(b: &[u8]) -> Result<DcdbMessage, DcdbError> {
    let m = decode_for(b, PROTOCOL_VERSION)?;
    // decode_for has checked the header is there; it returns older versions as-is.
    let proto = b
        .get(4..8)
        .and_then(|v| v.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or(PROTOCOL_VERSION);
    if proto < PROTOCOL_VERSION {
        return Err(DcdbError::OlderProtocol(proto));
    }
    Ok(match m {
        Message::Normal {
            subtype,
            time,
            count,
            payload,
        } => {
            let st = subtype.raw();
            let msg = match st {
                1..=6 => Normal::Fuse(FuseMsg::decode(st, payload)?),
                7 | 8 => Normal::Unlock(UnlockMsg::decode(st, payload)?),
                o => return Err(DcdbError::UnknownSubtype(o)),
            };
            DcdbMessage::Normal { time, count, msg }
        }
        Message::State {
            kind,
            time,
            epoch,
            payload,
        } => match kind {
            Kind::SyncStart => DcdbMessage::SyncStart { time, epoch },
            Kind::State => DcdbMessage::State {
                time,
                epoch,
                index: Index::decode(payload)?,
                // decode_for has checked the 32-byte header is there.
                extra: StateExtra {
                    subtype: u16::from_le_bytes([b[2], b[3]]),
                    reserved: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
                },
            },
            Kind::Update => DcdbMessage::Update {
                time,
                epoch,
                record: InodeRecord::decode(payload)?,
            },
            Kind::UpdateComplete => DcdbMessage::UpdateComplete { time, epoch },
            Kind::VerifyRequest => DcdbMessage::VerifyRequest {
                time,
                epoch,
                csum_id: verify::decode_verify_request(payload)?,
            },
            Kind::Verify => {
                let (csum_id, csum) = verify::decode_verify(payload)?;
                DcdbMessage::Verify {
                    time,
                    epoch,
                    csum_id,
                    csum,
                }
            }
            // decode_for never gives a State message of kind Normal.
            Kind::Normal => {
                return Err(DcdbError::Wire(pve_status::wire::WireError::Short {
                    len: b.len(),
                    need: HEADER,
                }))
            }
        },
    })
}

impl DcdbMessage {
    /// The whole message, dfsm header included, as pmxcfs would send it.
    pub fn encode(&self) -> Vec<u8> {
        let state = |kind, time, epoch, payload: &[u8]| {
            encode_state_raw(kind, PROTOCOL_VERSION, time, epoch, payload)
        };
        match self {
            DcdbMessage::Normal { time, count, msg } => encode_normal_raw(
                msg.subtype(),
                PROTOCOL_VERSION,
                *time,
                *count,
                &[&msg.encode()],
            ),
            DcdbMessage::SyncStart { time, epoch } => state(Kind::SyncStart, *time, *epoch, &[]),
            DcdbMessage::State {
                time,
                epoch,
                index,
                extra,
            } => {
                let mut b = state(Kind::State, *time, *epoch, &index.encode());
                b[2..4].copy_from_slice(&extra.subtype.to_le_bytes());
                b[12..16].copy_from_slice(&extra.reserved.to_le_bytes());
                b
            }
            DcdbMessage::Update {
                time,
                epoch,
                record,
            } => state(Kind::Update, *time, *epoch, &record.encode()),
            DcdbMessage::UpdateComplete { time, epoch } => {
                state(Kind::UpdateComplete, *time, *epoch, &[])
            }
            DcdbMessage::VerifyRequest {
                time,
                epoch,
                csum_id,
            } => state(
                Kind::VerifyRequest,
                *time,
                *epoch,
                &verify::encode_verify_request(*csum_id),
            ),
            DcdbMessage::Verify {
                time,
                epoch,
                csum_id,
                csum,
            } => state(
                Kind::Verify,
                *time,
                *epoch,
                &verify::encode_verify(*csum_id, csum),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{all_fixtures, fixture};
    use pve_status::wire::WireError;

    #[test]
    fn every_capture_decodes_and_reencodes_byte_for_byte() {
        let all = all_fixtures();
        assert_eq!(all.len(), 74, "dcdb captures in manifest.tsv");
        for row in &all {
            let (name, type_name, subtype_name) = (&row.file, &row.type_name, &row.subtype_name);
            let b = fixture(name);
            let m = decode_message(&b).unwrap_or_else(|e| panic!("{name}: {e}"));
            let kind = match &m {
                DcdbMessage::Normal { .. } => "NORMAL",
                DcdbMessage::SyncStart { .. } => "SYNC_START",
                DcdbMessage::State { .. } => "STATE",
                DcdbMessage::Update { .. } => "UPDATE",
                DcdbMessage::UpdateComplete { .. } => "UPDATE_COMPLETE",
                DcdbMessage::VerifyRequest { .. } => "VERIFY_REQUEST",
                DcdbMessage::Verify { .. } => "VERIFY",
            };
            assert_eq!(kind, type_name, "{name}");
            if let DcdbMessage::Normal { msg, .. } = &m {
                let names = [
                    "WRITE",
                    "MKDIR",
                    "DELETE",
                    "RENAME",
                    "CREATE",
                    "MTIME",
                    "UNLOCK_REQUEST",
                    "UNLOCK",
                ];
                assert_eq!(
                    names[usize::from(msg.subtype()) - 1],
                    subtype_name,
                    "{name}"
                );
            }
            // Every kind round-trips exactly: no dcdb field is uninitialised memory.
            assert_eq!(m.encode(), b, "{name} re-encodes");
        }
    }

    #[test]
    fn captured_header_fields() {
        let m = decode_message(&fixture("n1/00018-pve_dcdb_v1.bin")).unwrap();
        let DcdbMessage::Normal { count, msg, .. } = m else {
            panic!("not NORMAL")
        };
        assert_eq!(count, 5);
        assert_eq!(
            msg,
            Normal::Fuse(FuseMsg::write("capture-small.txt", 0, b"hello wire\n"))
        );
        let m = decode_message(&fixture("n2/00020-pve_dcdb_v1.bin")).unwrap();
        let DcdbMessage::SyncStart { time, epoch } = m else {
            panic!("not SYNC_START")
        };
        assert_eq!((epoch.nodeid, epoch.pid, epoch.epoch), (2, 11286, 5));
        assert_eq!((time, epoch.time), (1_796_160_656, 1_796_160_656));
    }

    #[test]
    fn framing_errors() {
        let mut b = fixture("n1/00018-pve_dcdb_v1.bin");
        b[4] = 0;
        assert_eq!(decode_message(&b), Err(DcdbError::OlderProtocol(0)));
        b[4] = 2;
        assert_eq!(
            decode_message(&b),
            Err(DcdbError::Wire(WireError::NewerProtocol(2)))
        );
        b[4] = 1;
        b[2] = 9;
        assert_eq!(decode_message(&b), Err(DcdbError::UnknownSubtype(9)));
        b[2] = 0;
        assert_eq!(decode_message(&b), Err(DcdbError::UnknownSubtype(0)));
        assert_eq!(GROUP.len(), 12);
    }

    /// Every capture's decoded fields agree with manifest.tsv's summary column.
    #[test]
    fn every_capture_matches_its_manifest_summary() {
        let num = |row: &testdata::Row, k: &str| -> u64 {
            row.get(k)
                .unwrap_or_else(|| panic!("{} has no {k}", row.file))
                .parse()
                .unwrap_or_else(|_| panic!("{} {k}", row.file))
        };
        for row in all_fixtures() {
            let m = decode_message(&fixture(&row.file)).unwrap();
            let f = &row.file;
            match m {
                DcdbMessage::Normal {
                    count,
                    msg: Normal::Fuse(m),
                    ..
                } => {
                    assert_eq!(count.to_string(), row.count_or_epoch, "{f}");
                    assert_eq!(m.path_str(), row.get("path"), "{f}");
                    assert_eq!(m.to_str(), row.get("to"), "{f}");
                    assert_eq!(m.data.len() as u64, num(&row, "size"), "{f}");
                    assert_eq!(u64::from(m.offset), num(&row, "offset"), "{f}");
                    assert_eq!(u64::from(m.flags), num(&row, "flags"), "{f}");
                }
                DcdbMessage::Normal {
                    msg: Normal::Unlock(m),
                    ..
                } => {
                    assert_eq!(m.path_str(), row.get("path"), "{f}");
                    let hex: String = m.csum[..8].iter().map(|b| format!("{b:02x}")).collect();
                    assert_eq!(Some(format!("{hex}...").as_str()), row.get("csum"), "{f}");
                }
                DcdbMessage::State { epoch, index, .. } => {
                    let e = format!("{}/{}/{}", epoch.nodeid, epoch.pid, epoch.epoch);
                    assert_eq!(e, row.count_or_epoch, "{f}");
                    assert_eq!(index.version, num(&row, "version"), "{f}");
                    assert_eq!(index.last_inode, num(&row, "last_inode"), "{f}");
                    assert_eq!(u64::from(index.writer), num(&row, "writer"), "{f}");
                    assert_eq!(u64::from(index.mtime), num(&row, "mtime"), "{f}");
                    assert_eq!(index.entries.len() as u64, num(&row, "entries"), "{f}");
                    assert_eq!(u64::from(index.bytes()), num(&row, "bytes"), "{f}");
                }
                DcdbMessage::Update { record: r, .. } => {
                    assert_eq!(r.parent, num(&row, "parent"), "{f}");
                    assert_eq!(r.inode, num(&row, "inode"), "{f}");
                    assert_eq!(r.version, num(&row, "version"), "{f}");
                    assert_eq!(u64::from(r.writer), num(&row, "writer"), "{f}");
                    assert_eq!(u64::from(r.mtime), num(&row, "mtime"), "{f}");
                    assert_eq!(u64::from(r.size()), num(&row, "size"), "{f}");
                    assert_eq!(u64::from(r.kind), num(&row, "type"), "{f}");
                    assert_eq!(r.name_str(), row.get("name"), "{f}");
                }
                DcdbMessage::VerifyRequest { csum_id, .. }
                | DcdbMessage::Verify { csum_id, .. } => {
                    assert_eq!(Some(format!("{csum_id:016x}").as_str()), row.get("csum_id"));
                }
                DcdbMessage::SyncStart { epoch, .. } => {
                    assert_eq!(u64::from(epoch.time), num(&row, "epoch_time"), "{f}");
                }
                DcdbMessage::UpdateComplete { .. } => {}
            }
        }
    }

    /// For every captured sync round: the leader rule picks the member that sent
    /// UPDATE_COMPLETE, its UPDATEs are exactly the planned inodes, and each hashes to
    /// the leader's index digest.
    #[test]
    fn every_captured_round_follows_the_leader_rule() {
        use std::collections::{BTreeMap, BTreeSet};
        #[derive(Default)]
        struct Round {
            states: Vec<Member>,
            updates: Vec<InodeRecord>,
            completed_by: Option<(u32, u32)>,
        }
        let mut rounds: BTreeMap<(u32, u32, u32), Round> = BTreeMap::new();
        for row in all_fixtures() {
            let m = decode_message(&fixture(&row.file)).unwrap();
            let key = |e: &Epoch| (e.nodeid, e.pid, e.epoch);
            match m {
                DcdbMessage::State { epoch, index, .. } => {
                    rounds.entry(key(&epoch)).or_default().states.push(Member {
                        nodeid: row.nodeid,
                        pid: row.pid,
                        index,
                    })
                }
                DcdbMessage::Update { epoch, record, .. } => {
                    rounds.entry(key(&epoch)).or_default().updates.push(record)
                }
                DcdbMessage::UpdateComplete { epoch, .. } => {
                    rounds.entry(key(&epoch)).or_default().completed_by =
                        Some((row.nodeid, row.pid))
                }
                _ => {}
            }
        }
        assert_eq!(rounds.len(), 7);
        let mut with_updates = 0;
        for (k, r) in &rounds {
            let plan = plan_sync(&r.states).unwrap();
            assert_eq!(Some(plan.leader), r.completed_by, "round {k:?}");
            let sent: BTreeSet<u64> = r.updates.iter().map(|u| u.inode).collect();
            assert_eq!(
                sent.len(),
                r.updates.len(),
                "round {k:?}: an inode sent twice"
            );
            assert_eq!(plan.updates, sent, "round {k:?}");
            let leader = r
                .states
                .iter()
                .find(|m| (m.nodeid, m.pid) == plan.leader)
                .unwrap();
            for u in &r.updates {
                let e = leader
                    .index
                    .entries
                    .iter()
                    .find(|e| e.inode == u.inode)
                    .unwrap();
                assert_eq!(
                    csum::index_digest(u),
                    e.digest,
                    "round {k:?} inode {}",
                    u.inode
                );
            }
            // No captured round needed a follower to delete anything.
            assert!(plan.members.iter().all(|m| m.delete.is_empty()));
            with_updates += usize::from(!sent.is_empty());
        }
        assert_eq!(with_updates, 2);
    }

    #[test]
    fn truncations_and_byte_flips_never_panic() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for row in all_fixtures() {
            let name = row.file;
            let b = fixture(&name);
            // The 70 KiB write: every truncation near both ends is enough.
            let cuts: Vec<usize> = if b.len() > 4096 {
                (0..256).chain(b.len() - 256..b.len()).collect()
            } else {
                (0..b.len()).collect()
            };
            for n in cuts {
                assert!(decode_message(&b[..n]).is_err(), "{name} cut to {n}");
            }
            let head = b.len().min(256);
            for _ in 0..200 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let mut f = b.clone();
                let at = (seed % head as u64) as usize;
                f[at] ^= (seed >> 32) as u8 | 1;
                if let Ok(m) = decode_message(&f) {
                    // Whatever decodes re-encodes to itself, except the fields pmxcfs
                    // does not read and this crate keeps for a STATE only: the
                    // header's `reserved`, and a state message's `subtype`.
                    let mut want = f.clone();
                    if !matches!(m, DcdbMessage::State { .. }) {
                        want[12..16].fill(0);
                        if !matches!(m, DcdbMessage::Normal { .. }) {
                            want[2..4].fill(0);
                        }
                    }
                    assert_eq!(m.encode(), want, "{name} flipped at {at}");
                }
            }
        }
    }
}
