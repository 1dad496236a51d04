//! The dfsm framing pmxcfs puts around every CPG message (`dfsm.c`), and the kvstore's
//! payloads inside it (`status.c`). Little-endian, no padding, as on pmxcfs's x86-64.

use thiserror::Error;

/// The kvstore's CPG group, with the terminating NUL pmxcfs counts in the name's length.
pub const GROUP: &str = "pve_kvstore_v1\0";

/// The kvstore's dfsm protocol version.
pub const PROTOCOL_VERSION: u32 = 0;

/// `dfsm_message_header_t`.
pub const HEADER: usize = 16;
/// Header and the per-sender message count of a NORMAL message.
pub const NORMAL_HEADER: usize = 24;
/// Header and the sync epoch of a state message.
pub const STATE_HEADER: usize = 32;
/// The key field of an UPDATE.
pub const KEY_FIELD: usize = 256;

/// `dfsm_message_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An application message (`subtype` is a [`Subtype`]).
    Normal,
    /// The lowest member opens a sync round.
    SyncStart,
    /// Every member's state (the kvstore's: its cluster log ring).
    State,
    /// A leader's update (never sent in the kvstore group).
    Update,
    /// The leader's end of updates.
    UpdateComplete,
    /// The lowest member asks for checksums.
    VerifyRequest,
    /// A checksum.
    Verify,
}

impl Kind {
    fn from_u16(v: u16) -> Option<Kind> {
        Some(match v {
            0 => Kind::Normal,
            1 => Kind::SyncStart,
            2 => Kind::State,
            3 => Kind::Update,
            4 => Kind::UpdateComplete,
            5 => Kind::VerifyRequest,
            6 => Kind::Verify,
            _ => return None,
        })
    }

    fn as_u16(self) -> u16 {
        match self {
            Kind::Normal => 0,
            Kind::SyncStart => 1,
            Kind::State => 2,
            Kind::Update => 3,
            Kind::UpdateComplete => 4,
            Kind::VerifyRequest => 5,
            Kind::Verify => 6,
        }
    }
}

/// `kvstore_message_t`: what a NORMAL message of the kvstore group carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subtype {
    /// `char key[256]` + value.
    Update,
    /// A raw `clog_entry_t`.
    Log,
    /// Anything else (pmxcfs logs and drops it).
    Other(u16),
}

impl Subtype {
    fn from_u16(v: u16) -> Subtype {
        match v {
            1 => Subtype::Update,
            3 => Subtype::Log,
            o => Subtype::Other(o),
        }
    }

    /// The raw `subtype` field (another dfsm group's message type, such as dcdb's, is
    /// read from it).
    pub fn raw(self) -> u16 {
        self.as_u16()
    }

    fn as_u16(self) -> u16 {
        match self {
            Subtype::Update => 1,
            Subtype::Log => 3,
            Subtype::Other(o) => o,
        }
    }
}

/// `dfsm_sync_epoch_t`: names one sync round; chosen by the member that opened it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Epoch {
    /// The opener's round counter.
    pub epoch: u32,
    /// The opener's clock when it saw the membership change.
    pub time: u32,
    /// The opener's node id.
    pub nodeid: u32,
    /// The opener's pid.
    pub pid: u32,
}

/// One decoded dfsm message; payloads borrow from the delivered bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    /// An application message.
    Normal {
        /// What it carries.
        subtype: Subtype,
        /// The sender's clock.
        time: u32,
        /// The sender's message count (1, 2, … per process).
        count: u64,
        /// The bytes after the 24-byte header.
        payload: &'a [u8],
    },
    /// A sync-round message.
    State {
        /// Which one.
        kind: Kind,
        /// The sender's clock.
        time: u32,
        /// The round it belongs to.
        epoch: Epoch,
        /// The bytes after the 32-byte header.
        payload: &'a [u8],
    },
}

/// Why a delivered message cannot be read. pmxcfs leaves the group on the first three.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    /// Shorter than the header its type needs.
    #[error("short message ({len} bytes, {need} needed)")]
    Short {
        /// Bytes delivered.
        len: usize,
        /// Bytes its header needs.
        need: usize,
    },
    /// The `type` field is not a dfsm message type.
    #[error("unknown message type {0}")]
    UnknownType(u16),
    /// A newer protocol than this node speaks: pmxcfs stops the group for good.
    #[error("protocol version {0} is newer than this node's")]
    NewerProtocol(u32),
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Decode a delivered message of the kvstore group.
pub fn decode(b: &[u8]) -> Result<Message<'_>, WireError> {
    decode_for(b, PROTOCOL_VERSION)
}

/// Decode a delivered message of a dfsm group speaking `protocol` (a newer version is
/// an error, as for pmxcfs; an older one is returned, for the caller to ignore).
pub fn decode_for(b: &[u8], protocol: u32) -> Result<Message<'_>, WireError> {
    if b.len() < HEADER {
        return Err(WireError::Short {
            len: b.len(),
            need: HEADER,
        });
    }
    let proto = u32_at(b, 4);
    if proto > protocol {
        return Err(WireError::NewerProtocol(proto));
    }
    let raw = u16_at(b, 0);
    let kind = Kind::from_u16(raw).ok_or(WireError::UnknownType(raw))?;
    let subtype = u16_at(b, 2);
    let time = u32_at(b, 8);
    let need = if kind == Kind::Normal {
        NORMAL_HEADER
    } else {
        STATE_HEADER
    };
    if b.len() < need {
        return Err(WireError::Short { len: b.len(), need });
    }
    Ok(match kind {
        Kind::Normal => Message::Normal {
            subtype: Subtype::from_u16(subtype),
            time,
            count: u64_at(b, 16),
            payload: &b[NORMAL_HEADER..],
        },
        kind => Message::State {
            kind,
            time,
            epoch: Epoch {
                epoch: u32_at(b, 16),
                time: u32_at(b, 20),
                nodeid: u32_at(b, 24),
                pid: u32_at(b, 28),
            },
            payload: &b[STATE_HEADER..],
        },
    })
}

fn header(out: &mut Vec<u8>, kind: Kind, subtype: u16, protocol: u32, time: u32) {
    out.extend_from_slice(&kind.as_u16().to_le_bytes());
    out.extend_from_slice(&subtype.to_le_bytes());
    out.extend_from_slice(&protocol.to_le_bytes());
    out.extend_from_slice(&time.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
}

/// A NORMAL message: header, `count`, then `parts` concatenated.
pub fn encode_normal(subtype: Subtype, time: u32, count: u64, parts: &[&[u8]]) -> Vec<u8> {
    encode_normal_raw(subtype.as_u16(), PROTOCOL_VERSION, time, count, parts)
}

/// A NORMAL message of any dfsm group: `subtype` and `protocol` as that group numbers
/// them (dcdb: protocol 1, subtypes 1..8).
pub fn encode_normal_raw(
    subtype: u16,
    protocol: u32,
    time: u32,
    count: u64,
    parts: &[&[u8]],
) -> Vec<u8> {
    let len = NORMAL_HEADER + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    header(&mut out, Kind::Normal, subtype, protocol, time);
    out.extend_from_slice(&count.to_le_bytes());
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

/// A state message of round `epoch` with `payload`.
pub fn encode_state(kind: Kind, time: u32, epoch: Epoch, payload: &[u8]) -> Vec<u8> {
    encode_state_raw(kind, PROTOCOL_VERSION, time, epoch, payload)
}

/// A state message of any dfsm group, with its `protocol` version.
pub fn encode_state_raw(
    kind: Kind,
    protocol: u32,
    time: u32,
    epoch: Epoch,
    payload: &[u8],
) -> Vec<u8> {
    debug_assert!(kind != Kind::Normal, "a state message has a state kind");
    let mut out = Vec::with_capacity(STATE_HEADER + payload.len());
    header(&mut out, kind, 0, protocol, time);
    for v in [epoch.epoch, epoch.time, epoch.nodeid, epoch.pid] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(payload);
    out
}

/// The payload of an UPDATE of `key` to `value`: the key in a 256-byte NUL-padded field
/// (pmxcfs truncates longer keys to 255 bytes), then the value.
pub fn update_payload(key: &str, value: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; KEY_FIELD];
    let k = key.as_bytes();
    let n = k.len().min(KEY_FIELD - 1);
    out[..n].copy_from_slice(&k[..n]);
    out.extend_from_slice(value);
    out
}

/// Why an UPDATE's payload is refused (pmxcfs logs "cant parse update message").
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UpdateError {
    /// Less than the 256-byte key field.
    #[error("short kvstore update ({0} < 256 bytes)")]
    Short(usize),
    /// No NUL within the key field.
    #[error("kvstore update key is not NUL-terminated")]
    Unterminated,
    /// The key is not UTF-8 (no PVE key is).
    #[error("kvstore update key is not UTF-8")]
    NotUtf8,
}

/// The key and value of an UPDATE's payload. Bytes after the key's NUL are ignored: a
/// C sender leaves stack contents there.
pub fn parse_update(p: &[u8]) -> Result<(&str, &[u8]), UpdateError> {
    if p.len() < KEY_FIELD {
        return Err(UpdateError::Short(p.len()));
    }
    let n = p[..KEY_FIELD]
        .iter()
        .position(|c| *c == 0)
        .ok_or(UpdateError::Unterminated)?;
    let key = std::str::from_utf8(&p[..n]).map_err(|_| UpdateError::NotUtf8)?;
    Ok((key, &p[KEY_FIELD..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let p = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pmxcfs-wire/");
        std::fs::read(format!("{p}{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    #[test]
    fn captured_update_decodes_and_reencodes() {
        // d1-node-kv: broadcast_node_kv('capture', 'value') from pcs2, its 3rd message.
        let b = fixture("n2/00007-pve_kvstore_v1.bin");
        let Message::Normal {
            subtype,
            time,
            count,
            payload,
        } = decode(&b).unwrap()
        else {
            panic!("not NORMAL")
        };
        assert_eq!((subtype, count), (Subtype::Update, 3));
        let (key, value) = parse_update(payload).unwrap();
        assert_eq!(key, "kv/capture");
        assert_eq!(value, b"value\0");
        // The key field's tail is stack garbage in the capture; ours is zero.
        let mine = encode_normal(Subtype::Update, time, count, &[&update_payload(key, value)]);
        assert_eq!(mine.len(), b.len());
        assert_eq!(mine[..NORMAL_HEADER + 11], b[..NORMAL_HEADER + 11]);
        assert_eq!(
            mine[NORMAL_HEADER + KEY_FIELD..],
            b[NORMAL_HEADER + KEY_FIELD..]
        );
    }

    #[test]
    fn captured_sync_start_and_state_headers() {
        let b = fixture("n1/00004-pve_kvstore_v1.bin");
        let m = decode(&b).unwrap();
        let Message::State {
            kind,
            time,
            epoch,
            payload,
        } = m
        else {
            panic!("not a state message")
        };
        assert_eq!(kind, Kind::SyncStart);
        assert_eq!((epoch.nodeid, epoch.pid, epoch.epoch), (1, 11277, 2));
        assert!(payload.is_empty());
        assert_eq!(encode_state(kind, time, epoch, &[]), b);
        let s = fixture("n1/00011-pve_kvstore_v1.bin");
        let Message::State { kind, payload, .. } = decode(&s).unwrap() else {
            panic!("not a state message")
        };
        assert_eq!((kind, payload.len()), (Kind::State, 131072));
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert_eq!(
            decode(&[0; 15]),
            Err(WireError::Short { len: 15, need: 16 })
        );
        let normal = encode_normal(Subtype::Update, 1, 1, &[]);
        assert_eq!(
            decode(&normal[..20]),
            Err(WireError::Short { len: 20, need: 24 })
        );
        let state = encode_state(Kind::State, 1, Epoch::default(), &[]);
        assert_eq!(
            decode(&state[..31]),
            Err(WireError::Short { len: 31, need: 32 })
        );
        let mut bad = state.clone();
        bad[0] = 9;
        assert_eq!(decode(&bad), Err(WireError::UnknownType(9)));
        let mut newer = state.clone();
        newer[4] = 1;
        assert_eq!(decode(&newer), Err(WireError::NewerProtocol(1)));
        assert_eq!(parse_update(&[b'a'; 100]), Err(UpdateError::Short(100)));
        assert_eq!(parse_update(&[b'a'; 300]), Err(UpdateError::Unterminated));
        let mut k = vec![0xffu8, 0];
        k.resize(256, 0);
        assert_eq!(parse_update(&k), Err(UpdateError::NotUtf8));
        // A key of 300 bytes is cut to 255, as g_strlcpy does.
        let p = update_payload(&"k".repeat(300), b"v");
        assert_eq!(
            parse_update(&p).unwrap(),
            ("k".repeat(255).as_str(), &b"v"[..])
        );
        // Every prefix of a valid message decodes or is an error, never a panic.
        for n in 0..normal.len() {
            let _ = decode(&normal[..n]);
        }
    }
}
