//! The tree's messages in pmxcfs's encoding (`pve_dcdb_v1`, protocol version 1): the
//! second wire format over the same core, for compat mode. `dcdb-wire` holds pmxcfs's
//! byte layouts; this maps them onto the core's messages, memdb's ops and rows.
//!
//! A NORMAL's `count` is its seq's count ([`cluster_sync::core::count_of`]). What
//! pmxcfs's messages do not carry reads back as a neutral value: a state message's
//! `seq` is 0 (only NORMALs are numbered), a State says "quorate" and no
//! promise (compat mode reads neither).
//!
//! Two additions pmxcfs never reads (DESIGN.md, "The switch"): a pmxfs STATE carries
//! its tree's term label in the header's `reserved` field and, when it offers the
//! switch to pmxfs's own protocol, [`SWITCH_READY`] as its `subtype` (pmxcfs sends
//! both as 0, so its States read as label 0, not offering); and a member that has
//! switched sends [`encode_switched`], a message of protocol version 2, which puts a
//! pmxcfs daemon into its version error ("detected newer protocol - please update
//! this node").
use cluster_sync::core::{count_of, seq_of, Body, DbIndex, Epoch, Message, Term};
use dcdb_wire::{
    DcdbError, DcdbMessage, FuseMsg, FuseOp, Index, IndexEntry, InodeRecord, Normal, StateExtra,
    UnlockMsg,
};

/// A STATE's `subtype` when its sender offers the switch to pmxfs's own protocol.
pub const SWITCH_READY: u16 = 0x5846;

/// The protocol version of the message a switched member sends in `pve_dcdb_v1`.
pub const SWITCHED_PROTOCOL: u32 = 2;

/// What follows the 24-byte NORMAL header in that message, before the term.
const SWITCHED_MAGIC: &[u8; 8] = b"pmxfs-v2";

/// The message a member that switched to pmxfs's own protocol at `term` multicasts in
/// `pve_dcdb_v1` whenever a member joins it: a NORMAL of protocol version 2, whose
/// payload is [`SWITCHED_MAGIC`] and the term (little-endian).
pub fn encode_switched(time: u32, term: Term) -> Vec<u8> {
    pve_status::wire::encode_normal_raw(
        SWITCH_READY,
        SWITCHED_PROTOCOL,
        time,
        0,
        &[SWITCHED_MAGIC, &term.to_le_bytes()],
    )
}

/// The term of a message made by [`encode_switched`]; `None` for anything else.
pub fn decode_switched(b: &[u8]) -> Option<Term> {
    let proto = u32::from_le_bytes(b.get(4..8)?.try_into().ok()?);
    let rest = b.get(24..)?;
    if proto != SWITCHED_PROTOCOL || rest.len() != 16 || &rest[..8] != SWITCHED_MAGIC {
        return None;
    }
    Some(u64::from_le_bytes(rest[8..].try_into().ok()?))
}
use pve_status::wire::Epoch as WireEpoch;

use crate::entry::{Inode, Kind, Row};
use crate::Op;

/// The core's message of the tree.
pub type TreeMessage = Message<Op, Row>;

/// A message compat mode cannot put into pmxcfs's encoding: the core never makes one
/// (a term-protocol message, or a batch), so seeing one is a bug, reported, not sent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    /// pmxcfs has no such message (a Promise).
    #[error("pmxcfs's protocol has no {0} message")]
    NoSuchMessage(&'static str),
    /// A NORMAL carries exactly one op in pmxcfs's protocol.
    #[error("a pmxcfs NORMAL carries one op, not {0}")]
    Batch(usize),
    /// An UPDATE carries exactly one inode.
    #[error("a pmxcfs UPDATE carries one inode, not {0}")]
    Entries(usize),
    /// A field beyond what pmxcfs's layout holds.
    #[error("{0} does not fit pmxcfs's 32-bit field")]
    TooLarge(&'static str),
}

/// A pmxcfs message the tree cannot take: pmxcfs's own reason, or a name that is not
/// UTF-8 (pmxfs's tree holds UTF-8 names only).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Malformed, or of another protocol version, as pmxcfs judges it.
    #[error(transparent)]
    Dcdb(#[from] DcdbError),
    /// A path or name pmxfs cannot hold.
    #[error("{0} is not UTF-8")]
    NotUtf8(&'static str),
    /// A FUSE op without the path it needs.
    #[error("{0} without a path")]
    NoPath(&'static str),
}

fn to_wire(e: &Epoch) -> WireEpoch {
    WireEpoch {
        epoch: e.counter,
        time: e.time,
        nodeid: e.nodeid,
        pid: e.pid,
    }
}

fn from_wire(e: &WireEpoch) -> Epoch {
    Epoch {
        counter: e.epoch,
        nodeid: e.nodeid,
        pid: e.pid,
        time: e.time,
    }
}

fn u32_of(v: u64, what: &'static str) -> Result<u32, EncodeError> {
    u32::try_from(v).map_err(|_| EncodeError::TooLarge(what))
}

/// The pmxcfs NORMAL payload of one op (`cfs-plug-memdb.c`'s senders).
pub fn normal_of(op: &Op) -> Result<Normal, EncodeError> {
    Ok(match op {
        Op::Create { path } => Normal::Fuse(FuseMsg::create(path)),
        Op::Mkdir { path } => Normal::Fuse(FuseMsg::mkdir(path)),
        Op::Delete { path } => Normal::Fuse(FuseMsg::delete(path)),
        Op::Rename { from, to } => Normal::Fuse(FuseMsg::rename(from, to)),
        Op::Mtime { path, mtime } => Normal::Fuse(FuseMsg::mtime(path, *mtime)),
        Op::Write {
            path,
            offset,
            data,
            truncate,
        } => {
            let mut m = FuseMsg::write(path, u32_of(*offset, "write offset")?, data);
            m.flags = u32::from(*truncate);
            Normal::Fuse(m)
        }
        Op::UnlockRequest { path, csum } => Normal::Unlock(UnlockMsg::new(true, path, *csum)),
        Op::Unlock { path, csum } => Normal::Unlock(UnlockMsg::new(false, path, *csum)),
    })
}

/// A string field as pmxcfs reads it: a C string, up to its first NUL.
fn text(b: &Option<Vec<u8>>, what: &'static str) -> Result<String, DecodeError> {
    let b = b.as_ref().ok_or(DecodeError::NoPath(what))?;
    c_string(b, what)
}

fn c_string(b: &[u8], what: &'static str) -> Result<String, DecodeError> {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    std::str::from_utf8(&b[..end])
        .map(str::to_string)
        .map_err(|_| DecodeError::NotUtf8(what))
}

/// The op a pmxcfs NORMAL payload asks for (`dcdb_deliver`).
pub fn op_of(n: &Normal) -> Result<Op, DecodeError> {
    Ok(match n {
        Normal::Fuse(m) => {
            let path = || text(&m.path, "path");
            match m.op {
                FuseOp::Create => Op::Create { path: path()? },
                FuseOp::Mkdir => Op::Mkdir { path: path()? },
                FuseOp::Delete => Op::Delete { path: path()? },
                FuseOp::Rename => Op::Rename {
                    from: path()?,
                    to: text(&m.to, "rename target")?,
                },
                FuseOp::Mtime => Op::Mtime {
                    path: path()?,
                    mtime: m.offset,
                },
                FuseOp::Write => Op::Write {
                    path: path()?,
                    offset: u64::from(m.offset),
                    data: m.data.clone(),
                    truncate: m.flags != 0,
                },
            }
        }
        Normal::Unlock(u) => {
            let path = c_string(&u.path, "lock path")?;
            if u.request {
                Op::UnlockRequest { path, csum: u.csum }
            } else {
                Op::Unlock { path, csum: u.csum }
            }
        }
    })
}

/// A row as pmxcfs's UPDATE inode record.
pub fn record_of(r: &Row) -> InodeRecord {
    InodeRecord {
        parent: r.parent.0,
        inode: r.inode.0,
        version: r.version,
        writer: r.writer,
        mtime: r.mtime,
        kind: r.kind.dtype(),
        name: r.name.as_bytes().to_vec(),
        data: r.data.to_vec(),
    }
}

/// The row a pmxcfs UPDATE inode record carries.
pub fn row_of(r: &InodeRecord) -> Result<Row, DecodeError> {
    let kind = Kind::from_dtype(i64::from(r.kind))
        .ok_or(DecodeError::Dcdb(DcdbError::InodeType(r.kind)))?;
    Ok(Row {
        inode: Inode(r.inode),
        parent: Inode(r.parent),
        version: r.version,
        writer: r.writer,
        mtime: r.mtime,
        kind,
        name: String::from_utf8(r.name.clone()).map_err(|_| DecodeError::NotUtf8("name"))?,
        data: std::sync::Arc::new(r.data.clone()),
    })
}

/// An index as pmxcfs's memdb index (`memdb_encode_index`).
pub fn wire_index(ix: &DbIndex) -> Index {
    Index {
        version: ix.version,
        last_inode: ix.entries.iter().map(|(i, _)| *i).max().unwrap_or(0),
        writer: ix.writer,
        mtime: ix.mtime,
        entries: ix
            .entries
            .iter()
            .map(|(inode, digest)| IndexEntry {
                inode: *inode,
                digest: *digest,
            })
            .collect(),
    }
}

/// A pmxcfs memdb index as the core's (term 0: pmxcfs has none).
pub fn core_index(ix: &Index) -> DbIndex {
    DbIndex {
        term: 0,
        version: ix.version,
        mtime: ix.mtime,
        writer: ix.writer,
        entries: ix.entries.iter().map(|e| (e.inode, e.digest)).collect(),
    }
}

/// Encode a compat-mode message as pmxcfs sends it.
pub fn encode(m: &TreeMessage) -> Result<Vec<u8>, EncodeError> {
    let time = m.time;
    let d = match &m.body {
        Body::Normal { ops, .. } => {
            let [op] = ops.as_slice() else {
                return Err(EncodeError::Batch(ops.len()));
            };
            DcdbMessage::Normal {
                time,
                count: count_of(m.seq),
                msg: normal_of(op)?,
            }
        }
        Body::SyncStart { epoch, .. } => DcdbMessage::SyncStart {
            time,
            epoch: to_wire(epoch),
        },
        Body::State {
            epoch,
            index,
            switch_ready,
            ..
        } => DcdbMessage::State {
            time,
            epoch: to_wire(epoch),
            index: wire_index(index),
            extra: StateExtra {
                subtype: if *switch_ready { SWITCH_READY } else { 0 },
                reserved: u32::try_from(index.term)
                    .map_err(|_| EncodeError::TooLarge("the tree's term"))?,
            },
        },
        Body::Update { epoch, entries } => {
            let [row] = entries.as_slice() else {
                return Err(EncodeError::Entries(entries.len()));
            };
            DcdbMessage::Update {
                time,
                epoch: to_wire(epoch),
                record: record_of(row),
            }
        }
        Body::UpdateComplete { epoch } => DcdbMessage::UpdateComplete {
            time,
            epoch: to_wire(epoch),
        },
        Body::VerifyRequest { epoch, id } => DcdbMessage::VerifyRequest {
            time,
            epoch: to_wire(epoch),
            csum_id: *id,
        },
        Body::Verify {
            epoch,
            id,
            checksum,
        } => DcdbMessage::Verify {
            time,
            epoch: to_wire(epoch),
            csum_id: *id,
            csum: *checksum,
        },
        Body::Promise { .. } => return Err(EncodeError::NoSuchMessage("promise")),
    };
    Ok(d.encode())
}

/// Decode a delivered `pve_dcdb_v1` message for the compat core.
pub fn decode(b: &[u8]) -> Result<TreeMessage, DecodeError> {
    let m = dcdb_wire::decode_message(b)?;
    Ok(match m {
        DcdbMessage::Normal { time, count, msg } => Message {
            seq: seq_of(count),
            time,
            body: Body::Normal {
                ops: vec![op_of(&msg)?],
                ack: 0,
            },
        },
        DcdbMessage::SyncStart { time, epoch } => state(
            time,
            Body::SyncStart {
                epoch: from_wire(&epoch),
                proposed_term: 0,
            },
        ),
        DcdbMessage::State {
            time,
            epoch,
            index,
            extra,
        } => state(
            time,
            Body::State {
                epoch: from_wire(&epoch),
                quorate: true,
                promised_proposed_term: false,
                promised_term: 0,
                index: DbIndex {
                    term: Term::from(extra.reserved),
                    ..core_index(&index)
                },
                switch_ready: extra.subtype == SWITCH_READY,
            },
        ),
        DcdbMessage::Update {
            time,
            epoch,
            record,
        } => state(
            time,
            Body::Update {
                epoch: from_wire(&epoch),
                entries: vec![row_of(&record)?],
            },
        ),
        DcdbMessage::UpdateComplete { time, epoch } => state(
            time,
            Body::UpdateComplete {
                epoch: from_wire(&epoch),
            },
        ),
        DcdbMessage::VerifyRequest {
            time,
            epoch,
            csum_id,
        } => state(
            time,
            Body::VerifyRequest {
                epoch: from_wire(&epoch),
                id: csum_id,
            },
        ),
        DcdbMessage::Verify {
            time,
            epoch,
            csum_id,
            csum,
        } => state(
            time,
            Body::Verify {
                epoch: from_wire(&epoch),
                id: csum_id,
                checksum: csum,
            },
        ),
    })
}

fn state(time: u32, body: Body<Op, Row>) -> TreeMessage {
    Message { seq: 0, time, body }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../dcdb-wire/tests/fixtures/pmxcfs-wire")
    }

    /// Every captured pmxcfs message decodes into the core's terms and encodes back
    /// to the same bytes: the second encoding loses nothing pmxcfs sends.
    #[test]
    fn every_capture_round_trips_through_the_core() {
        let manifest = std::fs::read_to_string(fixtures().join("manifest.tsv")).unwrap();
        let mut n = 0;
        for line in manifest.lines().skip(1) {
            let cols: Vec<&str> = line.split('\t').collect();
            let Some(file) = cols.iter().find(|c| c.ends_with("pve_dcdb_v1.bin")) else {
                continue;
            };
            let b = std::fs::read(fixtures().join(file)).unwrap();
            let m = decode(&b).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(encode(&m).unwrap(), b, "{file}");
            n += 1;
        }
        assert_eq!(n, 74, "dcdb captures");
    }

    /// pmxfs's States carry its label and switch offer where pmxcfs sends zeros (a
    /// pmxcfs State reads as label 0, not offering); the announcement of a switched
    /// node is version 2 to pmxcfs and decodes back to its term, nothing else does.
    #[test]
    fn states_carry_the_switch_offer_and_switched_nodes_say_so() {
        let b = std::fs::read(fixtures().join("n1/00003-pve_dcdb_v1.bin")).unwrap();
        let mut m = decode(&b).unwrap();
        let Body::State {
            index,
            switch_ready,
            ..
        } = &mut m.body
        else {
            panic!("a STATE capture")
        };
        assert!(!*switch_ready);
        assert_eq!(index.term, 0);
        (*switch_ready, index.term) = (true, 12);
        let ours = encode(&m).unwrap();
        assert_eq!(ours[2..4], SWITCH_READY.to_le_bytes());
        assert_eq!(ours[12..16], 12u32.to_le_bytes());
        assert_eq!(ours[16..], b[16..], "the rest as pmxcfs sends it");
        assert_eq!(decode(&ours).unwrap(), m);
        let Body::State { index, .. } = &mut m.body else {
            unreachable!()
        };
        index.term = 1 << 40;
        assert_eq!(encode(&m), Err(EncodeError::TooLarge("the tree's term")));
        let sw = encode_switched(1000, 1 << 40);
        assert_eq!(sw[4..8], SWITCHED_PROTOCOL.to_le_bytes());
        assert_eq!(decode_switched(&sw), Some(1 << 40));
        assert!(decode(&sw).is_err(), "pmxcfs's reader: a newer protocol");
        assert_eq!(decode_switched(&b), None);
        assert_eq!(decode_switched(&sw[..30]), None);
    }

    #[test]
    fn ops_map_onto_pmxcfs_payloads_and_back() {
        let ops = [
            Op::Create { path: "a".into() },
            Op::Mkdir { path: "d".into() },
            Op::Delete { path: "a".into() },
            Op::Rename {
                from: "a".into(),
                to: "b".into(),
            },
            Op::Mtime {
                path: "priv/lock/x".into(),
                mtime: 0,
            },
            Op::Write {
                path: "a".into(),
                offset: 3,
                data: b"xy".to_vec(),
                truncate: false,
            },
            Op::Write {
                path: "a".into(),
                offset: 5,
                data: vec![],
                truncate: true,
            },
            Op::UnlockRequest {
                path: "priv/lock/x".into(),
                csum: [7; 32],
            },
            Op::Unlock {
                path: "priv/lock/x".into(),
                csum: [8; 32],
            },
        ];
        for (k, op) in ops.iter().enumerate() {
            let m = Message {
                seq: seq_of(k as u64 + 1),
                time: 1_700_000_000,
                body: Body::Normal {
                    ops: vec![op.clone()],
                    ack: 0,
                },
            };
            let b = encode(&m).unwrap();
            assert_eq!(decode(&b).unwrap(), m, "{op:?}");
        }
        // pmxcfs's truncate: WRITE of nothing at the new size, flags 1.
        let t = normal_of(&ops[6]).unwrap();
        let Normal::Fuse(f) = t else { panic!() };
        assert_eq!(
            (f.op, f.offset, f.flags, f.data.len()),
            (FuseOp::Write, 5, 1, 0)
        );
    }

    #[test]
    fn what_pmxcfs_cannot_carry_is_refused() {
        let two = Message {
            seq: seq_of(1),
            time: 0,
            body: Body::Normal {
                ops: vec![
                    Op::Create { path: "a".into() },
                    Op::Create { path: "b".into() },
                ],
                ack: 0,
            },
        };
        assert_eq!(encode(&two), Err(EncodeError::Batch(2)));
        let far = Op::Write {
            path: "a".into(),
            offset: 1 << 33,
            data: vec![],
            truncate: false,
        };
        assert_eq!(normal_of(&far), Err(EncodeError::TooLarge("write offset")));
        let p: TreeMessage = Message {
            seq: 0,
            time: 0,
            body: Body::Promise {
                epoch: Epoch::default(),
                term: 3,
            },
        };
        assert_eq!(encode(&p), Err(EncodeError::NoSuchMessage("promise")));
    }

    #[test]
    fn names_pmxfs_cannot_hold_are_refused_not_mangled() {
        let mut m = FuseMsg::create("x");
        m.path = Some(vec![0xff, 0xfe]);
        assert_eq!(op_of(&Normal::Fuse(m)), Err(DecodeError::NotUtf8("path")));
        let mut m = FuseMsg::create("x");
        m.path = None;
        assert_eq!(op_of(&Normal::Fuse(m)), Err(DecodeError::NoPath("path")));
    }
}
