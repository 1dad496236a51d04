//! Byte encoding of protocol messages (format 2), kept apart from the protocol logic
//! so that a pmxcfs-compatible encoding can be added beside it.
//!
//! Layout, little-endian: `u8 version, u8 kind, u64 seq, u32 time`, then per kind:
//! * Normal (0): `u64 ack, u32 n, n × (u32 len, op[len])`
//! * SyncStart (1): epoch `u32 counter, u32 nodeid, u32 pid`, `u64 term`
//! * UpdateComplete (4): epoch
//! * State (2): epoch, `u8 flags` (bit 0: quorate, bit 1: promised the proposed term;
//!   other bits must be 0),
//!   `u64 promised, u64 term, u64 version, u32 mtime, u32 n,
//!   n × (u64 inode, [u8; 32])`
//! * Update (3): epoch, `u32 n, n × (u32 len, entry[len])`
//! * Promise (5): epoch, `u64 term`
//! * VerifyRequest (6): epoch, `u64 id`
//! * Verify (7): epoch, `u64 id, [u8; 32] checksum`
//!
//! Format 3 put several ops and the sender's acknowledgement in one Normal. Format 2
//! added the SyncStart's term, the State's flags, promised term and term, and
//! Promise. Older formats' messages are rejected; format 1
//! messages are rejected ([`WireError::Version`]) rather than read with guessed terms:
//! a member that cannot state its term must not take part in a sync.
//!
//! Decoding never panics and never trusts a length before checking it against the
//! bytes actually present; unknown flag bits and trailing bytes are errors.
use crate::core::{Body, DbIndex, Epoch, Message};

/// The format version this module writes and reads.
pub const WIRE_VERSION: u8 = 3;

/// State flag: the sender was quorate.
const FLAG_QUORATE: u8 = 1;
/// State flag: the sender promised the SyncStart's proposed term.
const FLAG_PROMISED: u8 = 2;

const HEADER_LEN: usize = 14;

/// Encodes the application's payloads (ops and tree entries).
pub trait WireCodec {
    /// The replicated op.
    type Op;
    /// A tree entry shipped during sync.
    type Entry;
    /// Append `op`'s bytes to `out`.
    fn encode_op(op: &Self::Op, out: &mut Vec<u8>);
    /// Parse an op from exactly `buf`.
    fn decode_op(buf: &[u8]) -> Result<Self::Op, String>;
    /// Append `entry`'s bytes to `out`.
    fn encode_entry(entry: &Self::Entry, out: &mut Vec<u8>);
    /// Parse an entry from exactly `buf`.
    fn decode_entry(buf: &[u8]) -> Result<Self::Entry, String>;
}

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Zero-length message.
    #[error("empty message")]
    Empty,
    /// Written by another format version (newer: this node needs an update).
    #[error("unsupported wire version {0} (this node speaks {WIRE_VERSION})")]
    Version(u8),
    /// Unknown message kind.
    #[error("unknown message kind {0}")]
    Kind(u8),
    /// The message ends inside a field.
    #[error("truncated {what}: need {need} bytes at offset {at}, have {have}")]
    Truncated {
        /// Field being read.
        what: &'static str,
        /// Offset of the field.
        at: usize,
        /// Bytes the field needs.
        need: usize,
        /// Bytes left.
        have: usize,
    },
    /// A flags byte with bits this version does not define.
    #[error("unknown flag bits {0:#04x}")]
    Flags(u8),
    /// Bytes left over after the last field.
    #[error("{0} trailing bytes")]
    Trailing(usize),
    /// The application's codec rejected a payload.
    #[error("bad {what}: {msg}")]
    Payload {
        /// "op" or "entry".
        what: &'static str,
        /// The codec's reason.
        msg: String,
    },
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        let have = self.buf.len() - self.at;
        if n > have {
            return Err(WireError::Truncated {
                what,
                at: self.at,
                need: n,
                have,
            });
        }
        let s = &self.buf[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.take(1, what)?[0])
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn epoch(&mut self) -> Result<Epoch, WireError> {
        Ok(Epoch {
            counter: self.u32("epoch counter")?,
            nodeid: self.u32("epoch nodeid")?,
            pid: self.u32("epoch pid")?,
            time: 0,
        })
    }
    /// A count of items of at least `min_item` bytes each, checked against what is left
    /// so a forged count cannot make us allocate.
    fn count(&mut self, what: &'static str, min_item: usize) -> Result<usize, WireError> {
        let at = self.at;
        let n = self.u32(what)? as usize;
        let have = self.buf.len() - self.at;
        if n.saturating_mul(min_item) > have {
            return Err(WireError::Truncated {
                what,
                at,
                need: n.saturating_mul(min_item),
                have,
            });
        }
        Ok(n)
    }
    fn finish(&self) -> Result<(), WireError> {
        match self.buf.len() - self.at {
            0 => Ok(()),
            n => Err(WireError::Trailing(n)),
        }
    }
}

fn put_epoch(out: &mut Vec<u8>, e: &Epoch) {
    out.extend_from_slice(&e.counter.to_le_bytes());
    out.extend_from_slice(&e.nodeid.to_le_bytes());
    out.extend_from_slice(&e.pid.to_le_bytes());
}

fn put_blob(out: &mut Vec<u8>, f: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    f(out);
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

/// Encode a message.
pub fn encode<C: WireCodec>(msg: &Message<C::Op, C::Entry>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(WIRE_VERSION);
    out.push(match &msg.body {
        Body::Normal { .. } => 0,
        Body::SyncStart { .. } => 1,
        Body::State { .. } => 2,
        Body::Update { .. } => 3,
        Body::UpdateComplete { .. } => 4,
        Body::Promise { .. } => 5,
        Body::VerifyRequest { .. } => 6,
        Body::Verify { .. } => 7,
    });
    out.extend_from_slice(&msg.seq.to_le_bytes());
    out.extend_from_slice(&msg.time.to_le_bytes());
    match &msg.body {
        Body::Normal { ops, ack } => {
            out.extend_from_slice(&ack.to_le_bytes());
            out.extend_from_slice(&(ops.len() as u32).to_le_bytes());
            for op in ops {
                put_blob(&mut out, |o| C::encode_op(op, o));
            }
        }
        Body::UpdateComplete { epoch } => put_epoch(&mut out, epoch),
        Body::SyncStart {
            epoch,
            proposed_term: term,
        }
        | Body::Promise { epoch, term } => {
            put_epoch(&mut out, epoch);
            out.extend_from_slice(&term.to_le_bytes());
        }
        Body::State {
            epoch,
            quorate,
            promised_proposed_term,
            promised_term,
            index,
            // Compat mode only: never on this wire.
            switch_ready: _,
        } => {
            put_epoch(&mut out, epoch);
            let mut flags = 0;
            if *quorate {
                flags |= FLAG_QUORATE;
            }
            if *promised_proposed_term {
                flags |= FLAG_PROMISED;
            }
            out.push(flags);
            out.extend_from_slice(&promised_term.to_le_bytes());
            out.extend_from_slice(&index.term.to_le_bytes());
            out.extend_from_slice(&index.version.to_le_bytes());
            out.extend_from_slice(&index.mtime.to_le_bytes());
            out.extend_from_slice(&(index.entries.len() as u32).to_le_bytes());
            for (ino, d) in &index.entries {
                out.extend_from_slice(&ino.to_le_bytes());
                out.extend_from_slice(d);
            }
        }
        Body::VerifyRequest { epoch, id } => {
            put_epoch(&mut out, epoch);
            out.extend_from_slice(&id.to_le_bytes());
        }
        Body::Verify {
            epoch,
            id,
            checksum,
        } => {
            put_epoch(&mut out, epoch);
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(checksum);
        }
        Body::Update { epoch, entries } => {
            put_epoch(&mut out, epoch);
            out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
            for e in entries {
                put_blob(&mut out, |o| C::encode_entry(e, o));
            }
        }
    }
    out
}

/// Decode a message; any defect gives a precise error, never a panic.
pub fn decode<C: WireCodec>(buf: &[u8]) -> Result<Message<C::Op, C::Entry>, WireError> {
    let mut r = Reader { buf, at: 0 };
    if buf.is_empty() {
        return Err(WireError::Empty);
    }
    let version = r.u8("version")?;
    if version != WIRE_VERSION {
        return Err(WireError::Version(version));
    }
    if buf.len() < HEADER_LEN {
        r.take(HEADER_LEN - 1, "header")?;
    }
    let kind = r.u8("kind")?;
    let seq = r.u64("seq")?;
    let time = r.u32("time")?;
    let body = match kind {
        0 => {
            let ack = r.u64("ack")?;
            let n = r.count("op count", 4)?;
            let mut ops = Vec::with_capacity(n);
            for _ in 0..n {
                let len = r.count("op length", 1)?;
                let b = r.take(len, "op")?;
                ops.push(C::decode_op(b).map_err(|msg| WireError::Payload { what: "op", msg })?);
            }
            Body::Normal { ops, ack }
        }
        1 => Body::SyncStart {
            epoch: r.epoch()?,
            proposed_term: r.u64("proposed term")?,
        },
        2 => {
            let epoch = r.epoch()?;
            let flags = r.u8("state flags")?;
            if flags & !(FLAG_QUORATE | FLAG_PROMISED) != 0 {
                return Err(WireError::Flags(flags));
            }
            let promised = r.u64("promised term")?;
            let term = r.u64("index term")?;
            let version = r.u64("index version")?;
            let mtime = r.u32("index mtime")?;
            let n = r.count("index entry count", 40)?;
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                let ino = r.u64("index inode")?;
                let mut d = [0u8; 32];
                d.copy_from_slice(r.take(32, "index digest")?);
                entries.push((ino, d));
            }
            Body::State {
                epoch,
                quorate: flags & FLAG_QUORATE != 0,
                promised_proposed_term: flags & FLAG_PROMISED != 0,
                promised_term: promised,
                index: DbIndex {
                    term,
                    version,
                    mtime,
                    // Not on this wire: the entries' digests cover it.
                    writer: 0,
                    entries,
                },
                switch_ready: false,
            }
        }
        3 => {
            let epoch = r.epoch()?;
            let n = r.count("update entry count", 4)?;
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                let len = r.count("entry length", 1)?;
                let b = r.take(len, "entry")?;
                entries.push(
                    C::decode_entry(b).map_err(|msg| WireError::Payload { what: "entry", msg })?,
                );
            }
            Body::Update { epoch, entries }
        }
        4 => Body::UpdateComplete { epoch: r.epoch()? },
        5 => Body::Promise {
            epoch: r.epoch()?,
            term: r.u64("promise term")?,
        },
        6 => Body::VerifyRequest {
            epoch: r.epoch()?,
            id: r.u64("verify id")?,
        },
        7 => {
            let epoch = r.epoch()?;
            let id = r.u64("verify id")?;
            let checksum = r
                .take(32, "checksum")?
                .try_into()
                .expect("take returned 32 bytes");
            Body::Verify {
                epoch,
                id,
                checksum,
            }
        }
        k => return Err(WireError::Kind(k)),
    };
    r.finish()?;
    Ok(Message { seq, time, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ops are strings, entries are (u64, bytes): enough to exercise both blob kinds.
    struct Codec;
    impl WireCodec for Codec {
        type Op = String;
        type Entry = (u64, Vec<u8>);
        fn encode_op(op: &String, out: &mut Vec<u8>) {
            out.extend_from_slice(op.as_bytes());
        }
        fn decode_op(buf: &[u8]) -> Result<String, String> {
            String::from_utf8(buf.to_vec()).map_err(|e| e.to_string())
        }
        fn encode_entry(e: &(u64, Vec<u8>), out: &mut Vec<u8>) {
            out.extend_from_slice(&e.0.to_le_bytes());
            out.extend_from_slice(&e.1);
        }
        fn decode_entry(buf: &[u8]) -> Result<(u64, Vec<u8>), String> {
            if buf.len() < 8 {
                return Err("short entry".into());
            }
            let mut a = [0u8; 8];
            a.copy_from_slice(&buf[..8]);
            Ok((u64::from_le_bytes(a), buf[8..].to_vec()))
        }
    }

    type M = Message<String, (u64, Vec<u8>)>;

    fn samples() -> Vec<M> {
        let epoch = Epoch {
            counter: 7,
            nodeid: 2,
            pid: 4242,
            time: 0,
        };
        let body = |b| M {
            seq: 99,
            time: 1_700_000_000,
            body: b,
        };
        vec![
            body(Body::Normal {
                ops: vec!["mkdir priv/lock/x".into(), "write a".into()],
                ack: 17,
            }),
            body(Body::SyncStart {
                epoch,
                proposed_term: 12,
            }),
            body(Body::State {
                epoch,
                quorate: true,
                promised_proposed_term: true,
                promised_term: 12,
                index: DbIndex {
                    term: 11,
                    version: 201,
                    mtime: 1234,
                    writer: 0,
                    entries: vec![(0, [1; 32]), (5, [2; 32])],
                },
                switch_ready: false,
            }),
            body(Body::Update {
                epoch,
                entries: vec![(5, b"hello".to_vec()), (6, vec![])],
            }),
            body(Body::UpdateComplete { epoch }),
            body(Body::Promise { epoch, term: 12 }),
            body(Body::State {
                epoch,
                quorate: false,
                promised_proposed_term: false,
                promised_term: 0,
                index: DbIndex::default(),
                switch_ready: false,
            }),
            body(Body::Normal {
                ops: Vec::new(),
                ack: 3,
            }),
            body(Body::VerifyRequest { epoch, id: 5 }),
            body(Body::Verify {
                epoch,
                id: 5,
                checksum: [7; 32],
            }),
        ]
    }

    #[test]
    fn round_trip() {
        for m in samples() {
            let b = encode::<Codec>(&m);
            assert_eq!(decode::<Codec>(&b), Ok(m));
        }
    }

    #[test]
    fn precise_errors() {
        assert_eq!(decode::<Codec>(&[]), Err(WireError::Empty));
        assert_eq!(decode::<Codec>(&[9, 0]), Err(WireError::Version(9)));
        let mut b = encode::<Codec>(&samples()[1]);
        b[1] = 77;
        assert_eq!(decode::<Codec>(&b), Err(WireError::Kind(77)));
        let mut b = encode::<Codec>(&samples()[4]);
        b.push(0);
        assert_eq!(decode::<Codec>(&b), Err(WireError::Trailing(1)));
        let b = encode::<Codec>(&samples()[2]);
        assert!(matches!(
            decode::<Codec>(&b[..b.len() - 1]),
            Err(WireError::Truncated { .. })
        ));
        // Undefined flag bits are refused, not ignored: a future format may give them
        // a meaning this node would get wrong.
        let mut b = encode::<Codec>(&samples()[2]);
        b[HEADER_LEN + 12] |= 0x80;
        assert_eq!(decode::<Codec>(&b), Err(WireError::Flags(0x83)));
        // The previous format is refused as a whole.
        let mut b = encode::<Codec>(&samples()[2]);
        b[0] = 1;
        assert_eq!(decode::<Codec>(&b), Err(WireError::Version(1)));
        // A forged entry count must be rejected before allocating.
        let mut b = encode::<Codec>(&samples()[2]);
        let at = HEADER_LEN + 12 + 1 + 8 + 8 + 8 + 4;
        b[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode::<Codec>(&b),
            Err(WireError::Truncated {
                what: "index entry count",
                ..
            })
        ));
        let mut b = encode::<Codec>(&samples()[3]);
        let n = b.len();
        b.truncate(n - 8); // cut into the last entry
        assert!(decode::<Codec>(&b).is_err());
    }

    /// Fuzz-style: random bytes, every truncation and random byte flips of valid
    /// messages must decode to Ok or Err, never panic; valid prefixes never decode Ok.
    #[test]
    fn garbage_never_panics() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let mut oks = 0;
        for _ in 0..20_000 {
            let len = (next() % 96) as usize;
            let mut b: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if !b.is_empty() && next() % 2 == 0 {
                b[0] = WIRE_VERSION;
                if b.len() > 1 {
                    b[1] %= 7;
                }
            }
            if decode::<Codec>(&b).is_ok() {
                oks += 1;
            }
        }
        for m in samples() {
            let b = encode::<Codec>(&m);
            for cut in 0..b.len() {
                assert!(
                    decode::<Codec>(&b[..cut]).is_err(),
                    "prefix {cut} of {m:?} decoded"
                );
            }
            for _ in 0..2_000 {
                let mut x = b.clone();
                let i = (next() as usize) % x.len();
                x[i] ^= (next() as u8) | 1;
                let _ = decode::<Codec>(&x);
            }
        }
        // Random bytes almost never form a valid message; a sanity bound on the decoder.
        assert!(oks < 200, "{oks} random buffers decoded");
    }
}
