//! pmxcfs's cluster log (`logger.c`), byte-compatible and without I/O.
//!
//! The log is a 128 KiB ring of variable-sized entries that every node keeps. pmxcfs
//! exchanges it over the `pve_kvstore_v1` group in two ways: one entry per kvstore LOG
//! message ([`Entry::encode`], [`Entry::decode`]), and the whole ring as the kvstore
//! STATE of every membership change ([`ClusterLog::encode_state`], [`decode_state`],
//! [`ClusterLog::merge`]).
//!
//! [`ClusterLog`] keeps its entries as structs, but it also tracks the byte offset each
//! one has in pmxcfs's ring. Once the ring wraps, which old entries pmxcfs can still
//! reach depends on those offsets, and every node must agree on that set.

use std::cmp::Ordering;
use std::collections::hash_map::Entry as MapEntry;
use std::collections::{HashMap, VecDeque};
use std::fmt::{self, Write as _};

/// Size of pmxcfs's cluster log ring (`CLOG_DEFAULT_SIZE`), which is also the size of every kvstore STATE payload.
pub const LOG_SIZE: usize = 8192 * 16;
/// Largest entry pmxcfs stores (`CLOG_MAX_ENTRY_SIZE`). [`Entry::pack`] truncates messages to fit it.
pub const MAX_ENTRY_SIZE: usize = 4096;
/// `sizeof(clog_entry_t)`: the fixed part of an entry, including the 4 unused bytes after the strings.
pub const ENTRY_FIXED_SIZE: usize = 48;
/// syslog's `LOG_INFO`, the priority of the log's first entry.
pub const LOG_INFO: u8 = 6;

/// `offsetof(clog_entry_t, data)`: the strings start 4 bytes before the struct's padded end.
const DATA_OFFSET: usize = 44;
/// `sizeof(clog_base_t)`: `u32 size; u32 cpos`.
const RING_HEADER: usize = 8;
/// node, ident and tag lengths are `u8`s that count the NUL.
const MAX_STRING_LEN: usize = 255;
/// Once merge has collected this many bytes it stops (`clusterlog_merge`'s `maxsize`).
const MERGE_LIMIT: usize = LOG_SIZE - RING_HEADER - MAX_ENTRY_SIZE;
const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Why bytes are not a valid log entry or log ring, or why a merge is not possible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClogError {
    /// Shorter than the 48-byte fixed part ("received short log message").
    #[error("short log entry ({len} < {ENTRY_FIXED_SIZE} bytes)")]
    Short {
        /// Bytes received.
        len: usize,
    },
    /// The length is not 48 plus the four string lengths ("received log message with wrong size").
    #[error("log entry with wrong size ({len} != {expected})")]
    WrongSize {
        /// Bytes received.
        len: usize,
        /// 48 plus the string lengths the header declares.
        expected: u64,
    },
    /// A string length of 0. pmxcfs does not check this; it then reads the byte before the string.
    #[error("empty {field} string in log entry")]
    EmptyString {
        /// The string.
        field: Field,
    },
    /// The last byte of a string is not NUL ("unterminated string in log message").
    #[error("unterminated {field} string in log entry")]
    Unterminated {
        /// The string.
        field: Field,
    },
    /// A NUL before a string's end. pmxcfs accepts it (C then sees a shorter string); it never writes one.
    #[error("{field} string in log entry has a NUL before its end")]
    InteriorNul {
        /// The string.
        field: Field,
    },
    /// A string that is not UTF-8. pmxcfs accepts any bytes, but only its IPC clients could send them.
    #[error("{field} string in log entry is not UTF-8")]
    NotUtf8 {
        /// The string.
        field: Field,
    },
    /// `clog_pack` accepts only syslog priorities 0..=7.
    #[error("log priority {0} is not below 8")]
    BadPriority(u8),
    /// A state that is not exactly one ring long ("received log with wrong size").
    #[error("log state of {len} bytes, expected {LOG_SIZE}")]
    StateLen {
        /// Bytes received.
        len: usize,
    },
    /// The ring's own size field does not match its length.
    #[error("log ring claims size {size}, expected {LOG_SIZE}")]
    RingSize {
        /// The `size` field.
        size: u32,
    },
    /// `cpos` or a `prev` link that is not an 8-byte aligned entry position inside the ring.
    #[error("log ring links to {offset}, not an entry position")]
    BadOffset {
        /// The offset.
        offset: u32,
    },
    /// An entry that runs past the ring's end.
    #[error("log entry at {offset} ({size} bytes) runs past the ring's end")]
    PastEnd {
        /// The entry's offset.
        offset: u32,
        /// The entry's declared size.
        size: u64,
    },
    /// An entry larger than [`MAX_ENTRY_SIZE`], which pmxcfs never stores.
    #[error("log entry at {offset} is {size} bytes, over {MAX_ENTRY_SIZE}")]
    TooLarge {
        /// The entry's offset.
        offset: u32,
        /// The entry's declared size.
        size: u64,
    },
    /// The `prev` links come back to an entry already read.
    #[error("log ring links back to entry {offset}")]
    Cycle {
        /// The entry reached twice.
        offset: u32,
    },
    /// A malformed entry inside a ring.
    #[error("log entry at {offset}: {source}")]
    InRing {
        /// The entry's offset.
        offset: u32,
        /// What is wrong with it.
        source: Box<ClogError>,
    },
    /// `clusterlog_merge` needs at least two logs.
    #[error("merge needs at least 2 logs, got {0}")]
    TooFewLogs(usize),
    /// The local log's index is not among the logs.
    #[error("local log index {index} is not below {count}")]
    BadLocalIndex {
        /// The index given.
        index: usize,
        /// The number of logs.
        count: usize,
    },
}

/// One of an entry's four strings, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The node name.
    Node,
    /// The ident (the "user").
    Ident,
    /// The tag.
    Tag,
    /// The message.
    Msg,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Node => "node",
            Field::Ident => "ident",
            Field::Tag => "tag",
            Field::Msg => "msg",
        })
    }
}

/// FNV-1a 64 of `bytes`, the hash pmxcfs uses for the node and ident digests. The callers pass a string together with its NUL.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET_BASIS, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    })
}

/// The digest pmxcfs keeps for a string: [`fnv1a64`] over the string and its NUL.
pub fn digest(s: &str) -> u64 {
    // The NUL's FNV-1a round: XOR with 0 changes nothing, so only the multiplication is left.
    fnv1a64(s.as_bytes()).wrapping_mul(FNV_PRIME)
}

/// One cluster log entry (`clog_entry_t` without its ring links). The strings are stored without their NULs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Sender's per-process counter; it restarts at 1 with pmxcfs.
    pub uid: u32,
    /// Seconds since the epoch.
    pub time: u32,
    /// [`digest`] of the node name.
    pub node_digest: u64,
    /// [`digest`] of the ident.
    pub ident_digest: u64,
    /// Process id of the logging client.
    pub pid: u32,
    /// syslog priority, 0..=7.
    pub priority: u8,
    /// Node name, at most 254 bytes.
    pub node: String,
    /// Ident (the "user"), at most 254 bytes.
    pub ident: String,
    /// Tag, at most 254 bytes.
    pub tag: String,
    /// Message, escaped to ASCII by [`Entry::pack`].
    pub msg: String,
}

impl Entry {
    /// Builds an entry the way `clog_pack` does. It cuts each string at its first NUL and
    /// node, ident and tag at 254 bytes, escapes `msg` to ASCII as `utf8_to_ascii(…, TRUE)`
    /// does, and shortens it so the entry fits [`MAX_ENTRY_SIZE`].
    #[allow(clippy::too_many_arguments)] // clog_pack's own parameter list
    pub fn pack(
        node: &str,
        ident: &str,
        tag: &str,
        pid: u32,
        priority: u8,
        time: u32,
        uid: u32,
        msg: impl AsRef<[u8]>,
    ) -> Result<Self, ClogError> {
        if priority >= 8 {
            return Err(ClogError::BadPriority(priority));
        }
        let (node, node_digest) = capped(node);
        let (ident, ident_digest) = capped(ident);
        let (tag, _) = capped(tag);
        let strings = node.len() + ident.len() + tag.len() + 3;
        let escaped = utf8_to_ascii(msg.as_ref(), MAX_ENTRY_SIZE - DATA_OFFSET - strings);
        // pmxcfs lowers msg_len but leaves the NUL where it was, so peers reject the
        // entry as unterminated. Dropping whole escape units keeps it valid, and JSON-safe.
        let msg = fit_units(&escaped, MAX_ENTRY_SIZE - ENTRY_FIXED_SIZE - strings - 1);
        Ok(Entry {
            uid,
            time,
            node_digest,
            ident_digest,
            pid,
            priority,
            node: node.to_owned(),
            ident: ident.to_owned(),
            tag: tag.to_owned(),
            msg: msg.to_owned(),
        })
    }

    /// The encoded length: 48 plus each string's length and its NUL.
    pub fn size(&self) -> usize {
        let [node, ident, tag, msg] = self.wire_strings();
        ENTRY_FIXED_SIZE + node.len() + ident.len() + tag.len() + msg.len() + 4
    }

    /// The entry as pmxcfs sends it in a kvstore LOG message. `prev` and `next` are 0 and
    /// the 4 unused bytes at the end are zero.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_linked(0, 0)
    }

    /// Parses a kvstore LOG message payload, checking what `kvstore_parse_log_message`
    /// checks. Also refuses empty, non-UTF-8 and NUL-containing strings, which pmxcfs never
    /// produces. `prev`, `next` and the 4 unused bytes are ignored.
    pub fn decode(bytes: &[u8]) -> Result<Self, ClogError> {
        parse(bytes, MsgEnd::Strict)
    }

    /// The four strings as they go on the wire: cut at a NUL, node, ident and tag capped.
    fn wire_strings(&self) -> [&str; 4] {
        [
            cap(c_str(&self.node)),
            cap(c_str(&self.ident)),
            cap(c_str(&self.tag)),
            c_str(&self.msg),
        ]
    }

    fn encode_linked(&self, prev: u32, next: u32) -> Vec<u8> {
        let strings = self.wire_strings();
        let [node, ident, tag, msg] = strings;
        let mut out = Vec::with_capacity(self.size());
        for word in [prev, next, self.uid, self.time] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.extend_from_slice(&self.node_digest.to_le_bytes());
        out.extend_from_slice(&self.ident_digest.to_le_bytes());
        out.extend_from_slice(&self.pid.to_le_bytes());
        out.push(self.priority);
        for s in [node, ident, tag] {
            out.push(u8::try_from(s.len() + 1).unwrap_or(u8::MAX));
        }
        let msg_len = u32::try_from(msg.len() + 1).unwrap_or(u32::MAX);
        out.extend_from_slice(&msg_len.to_le_bytes());
        for s in strings {
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        }
        out.extend_from_slice(&[0; 4]);
        out
    }
}

/// The fixed part of an encoded entry.
struct Header {
    prev: u32,
    uid: u32,
    time: u32,
    node_digest: u64,
    ident_digest: u64,
    pid: u32,
    priority: u8,
    lens: [usize; 4],
}

impl Header {
    fn read(bytes: &[u8]) -> Option<Header> {
        let fixed = bytes.get(..ENTRY_FIXED_SIZE)?;
        Some(Header {
            prev: le32(fixed, 0)?,
            uid: le32(fixed, 8)?,
            time: le32(fixed, 12)?,
            node_digest: le64(fixed, 16)?,
            ident_digest: le64(fixed, 24)?,
            pid: le32(fixed, 32)?,
            priority: *fixed.get(36)?,
            lens: [
                usize::from(*fixed.get(37)?),
                usize::from(*fixed.get(38)?),
                usize::from(*fixed.get(39)?),
                usize::try_from(le32(fixed, 40)?).ok()?,
            ],
        })
    }

    /// `clog_entry_size`, in 64 bits so that a hostile `msg_len` cannot wrap it.
    fn size(&self) -> u64 {
        self.lens
            .iter()
            .fold(ENTRY_FIXED_SIZE as u64, |sum, &len| sum + len as u64)
    }
}

fn le32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn le64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// How to find the end of the message string.
#[derive(Clone, Copy)]
enum MsgEnd {
    /// A NUL as its last byte, as `kvstore_parse_log_message` demands.
    Strict,
    /// Also accept `clog_pack`'s over-long form, which pmxcfs stores and sends in STATE rings.
    Ring,
}

fn parse(bytes: &[u8], msg_end: MsgEnd) -> Result<Entry, ClogError> {
    let header = Header::read(bytes).ok_or(ClogError::Short { len: bytes.len() })?;
    let expected = header.size();
    if bytes.len() as u64 != expected {
        return Err(ClogError::WrongSize {
            len: bytes.len(),
            expected,
        });
    }
    let [node_len, ident_len, tag_len, msg_len] = header.lens;
    let mut strings = Strings {
        bytes,
        pos: DATA_OFFSET,
    };
    let node = strings.next(node_len, Field::Node)?;
    let ident = strings.next(ident_len, Field::Ident)?;
    let tag = strings.next(tag_len, Field::Tag)?;
    let msg = match msg_end {
        MsgEnd::Strict => strings.next(msg_len, Field::Msg)?,
        MsgEnd::Ring => strings.ring_msg(msg_len)?,
    };
    Ok(Entry {
        uid: header.uid,
        time: header.time,
        node_digest: header.node_digest,
        ident_digest: header.ident_digest,
        pid: header.pid,
        priority: header.priority,
        node,
        ident,
        tag,
        msg,
    })
}

/// A cursor over an entry's strings, whose lengths the caller has already checked.
struct Strings<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Strings<'a> {
    fn next(&mut self, len: usize, field: Field) -> Result<String, ClogError> {
        let raw = self.bytes.get(self.pos..self.pos + len).unwrap_or_default();
        self.pos += len;
        let (&last, text) = raw.split_last().ok_or(ClogError::EmptyString { field })?;
        if last != 0 {
            return Err(ClogError::Unterminated { field });
        }
        text_of(text, field)
    }

    fn ring_msg(&mut self, len: usize) -> Result<String, ClogError> {
        // The message, then the 4 unused bytes.
        let rest: &'a [u8] = self.bytes.get(self.pos..).unwrap_or_default();
        match self.next(len, Field::Msg) {
            Err(ClogError::Unterminated { .. }) if self.bytes.len() == MAX_ENTRY_SIZE => {
                overflowed_msg(rest, len)
            }
            other => other,
        }
    }
}

/// Reads a message in the form `clog_pack` writes when escaping made it too long. It lowers
/// only `msg_len`, so the text runs on into the 4 unused bytes and its NUL lands there.
/// pmxcfs peers refuse such a LOG message, but the sender keeps the entry, and later STATE
/// rings carry it. The text is cut to whole escape units that fit `msg_len`, the same way
/// [`Entry::pack`] cuts it.
fn overflowed_msg(rest: &[u8], len: usize) -> Result<String, ClogError> {
    let field = Field::Msg;
    let nul = rest
        .iter()
        .position(|&b| b == 0)
        .ok_or(ClogError::Unterminated { field })?;
    if nul < len {
        return Err(ClogError::InteriorNul { field });
    }
    let text = std::str::from_utf8(rest.get(..nul).unwrap_or_default())
        .map_err(|_| ClogError::NotUtf8 { field })?;
    Ok(fit_units(text, len.saturating_sub(1)).to_owned())
}

fn text_of(text: &[u8], field: Field) -> Result<String, ClogError> {
    if text.contains(&0) {
        return Err(ClogError::InteriorNul { field });
    }
    String::from_utf8(text.to_vec()).map_err(|_| ClogError::NotUtf8 { field })
}

/// C's view of a string: everything before the first NUL.
fn c_str(s: &str) -> &str {
    s.split('\0').next().unwrap_or_default()
}

fn c_bytes(bytes: &[u8]) -> &[u8] {
    bytes.split(|&b| b == 0).next().unwrap_or_default()
}

/// At most 254 bytes, which leaves room for the NUL in a `u8` length. The cut backs off to a
/// character boundary; pmxcfs cuts at the byte and may split a character.
fn cap(s: &str) -> &str {
    let mut end = s.len().min(MAX_STRING_LEN - 1);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

/// What `clog_pack` keeps of node, ident or tag, and its digest. The digest covers the
/// first `len` bytes of the original, so for a string that was cut it ends with the 255th
/// byte rather than a NUL.
fn capped(s: &str) -> (&str, u64) {
    let s = c_str(s);
    let digest = s
        .as_bytes()
        .get(..MAX_STRING_LEN)
        .map_or_else(|| digest(s), fnv1a64);
    (cap(s), digest)
}

/// `utf8_to_ascii(buf, bufsize, msg, TRUE)` from pmxcfs's `cfs-utils.c`. Valid UTF-8 is
/// escaped per character, anything else per byte. It stops at a NUL, and starts no new
/// unit once 7 bytes or fewer of `bufsize` are left.
fn utf8_to_ascii(msg: &[u8], bufsize: usize) -> String {
    let msg = c_bytes(msg);
    let limit = bufsize.saturating_sub(7);
    let mut out = String::with_capacity(msg.len().min(limit) + 6);
    match std::str::from_utf8(msg) {
        Ok(text) => {
            for c in text.chars() {
                if out.len() >= limit {
                    break;
                }
                escape_char(&mut out, c);
            }
        }
        Err(_) => {
            for &byte in msg {
                if out.len() >= limit {
                    break;
                }
                escape_byte(&mut out, byte);
            }
        }
    }
    out
}

fn escape_char(out: &mut String, c: char) {
    let code = u32::from(c);
    match code {
        0x22 => out.push_str("\\\""),
        // pmxcfs keeps a backslash raw, which makes its JSON invalid; escaped here, it
        // reads back as a backslash on every node, pmxcfs's included.
        0x5c => out.push_str("\\\\"),
        0..=31 | 127 => push_decimal(out, code),
        32..=126 => out.push(c),
        128..=0xffff => {
            let _ = write!(out, "\\u{code:04x}");
        }
        // Outside the BMP, pmxcfs writes nothing.
        _ => {}
    }
}

/// Escapes one byte of a message that is not valid UTF-8. C sees the byte as a signed
/// char, so DEL and every byte above it become '?'.
fn escape_byte(out: &mut String, byte: u8) {
    match byte {
        b'"' => out.push_str("\\\""),
        b'\\' => out.push_str("\\\\"),
        0..=31 => push_decimal(out, u32::from(byte)),
        32..=126 => out.push(char::from(byte)),
        _ => out.push('?'),
    }
}

/// Control characters become '#' and three decimal digits (pmxcfs's `hexchar` table, indexed by decimal digits).
fn push_decimal(out: &mut String, code: u32) {
    let _ = write!(out, "#{code:03}");
}

/// The longest prefix of `s`, at most `max` bytes, that ends between escape units.
fn fit_units(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = 0;
    while let Some(rest) = s.get(end..).filter(|rest| !rest.is_empty()) {
        let next = end + unit_len(rest);
        if next > max {
            break;
        }
        end = next;
    }
    s.get(..end).unwrap_or_default()
}

/// The length of the unit `s` starts with: `\"`, `\uXXXX`, `#DDD` or one character.
fn unit_len(s: &str) -> usize {
    let b = s.as_bytes();
    let all = |range: std::ops::Range<usize>, pred: fn(&u8) -> bool| {
        b.get(range).is_some_and(|part| part.iter().all(pred))
    };
    if b.starts_with(b"\\\"") || b.starts_with(b"\\\\") {
        2
    } else if b.starts_with(b"\\u") && all(2..6, u8::is_ascii_hexdigit) {
        6
    } else if b.starts_with(b"#") && all(1..4, u8::is_ascii_digit) {
        4
    } else {
        s.chars().next().map_or(1, char::len_utf8)
    }
}

/// `clog_entry_sort_fn`, including its C arithmetic: it returns each difference cast to a
/// `gint`. Times thus compare modulo 2^32, and node digests only by the low 32 bits of
/// their difference; digests that differ only above those bits count as equal and stop the
/// comparison. This order is not transitive for every set of digests, which is why
/// [`SortTree`] copies GLib's tree rather than using a sort.
fn clog_cmp(a: &Entry, b: &Entry) -> Ordering {
    if a.time != b.time {
        return (a.time.wrapping_sub(b.time) as i32).cmp(&0);
    }
    if a.node_digest != b.node_digest {
        return (a.node_digest.wrapping_sub(b.node_digest) as u32 as i32).cmp(&0);
    }
    (a.uid.wrapping_sub(b.uid) as i32).cmp(&0)
}

/// GLib's `GTree` as pmxcfs uses it: an AVL tree ordered by [`clog_cmp`], with the new key
/// always the comparison's first argument. Inserting the same items in the same order
/// gives the same in-order sequence as pmxcfs, even where [`clog_cmp`] is not transitive.
#[derive(Default)]
struct SortTree {
    nodes: Vec<TreeNode>,
    root: Option<usize>,
}

struct TreeNode {
    key: Entry,
    value: Entry,
    left: Option<usize>,
    right: Option<usize>,
    height: u8,
}

impl SortTree {
    /// `g_tree_lookup`.
    fn contains(&self, entry: &Entry) -> bool {
        let mut at = self.root;
        while let Some(node) = at.and_then(|i| self.nodes.get(i)) {
            at = match clog_cmp(entry, &node.key) {
                Ordering::Equal => return true,
                Ordering::Less => node.left,
                Ordering::Greater => node.right,
            };
        }
        false
    }

    /// `g_tree_insert`: an equal key keeps its node and key and takes the new value.
    fn insert(&mut self, entry: Entry) {
        self.root = Some(self.insert_at(self.root, entry));
    }

    fn insert_at(&mut self, at: Option<usize>, entry: Entry) -> usize {
        let Some(i) = at.filter(|&i| i < self.nodes.len()) else {
            self.nodes.push(TreeNode {
                key: entry.clone(),
                value: entry,
                left: None,
                right: None,
                height: 1,
            });
            return self.nodes.len() - 1;
        };
        match clog_cmp(&entry, &self.nodes[i].key) {
            Ordering::Equal => {
                self.nodes[i].value = entry;
                return i;
            }
            Ordering::Less => {
                let left = self.insert_at(self.nodes[i].left, entry);
                self.nodes[i].left = Some(left);
            }
            Ordering::Greater => {
                let right = self.insert_at(self.nodes[i].right, entry);
                self.nodes[i].right = Some(right);
            }
        }
        self.rebalance(i)
    }

    fn height(&self, at: Option<usize>) -> i32 {
        at.and_then(|i| self.nodes.get(i))
            .map_or(0, |node| i32::from(node.height))
    }

    /// Left height minus right height.
    fn balance(&self, at: Option<usize>) -> i32 {
        at.and_then(|i| self.nodes.get(i))
            .map_or(0, |node| self.height(node.left) - self.height(node.right))
    }

    fn update(&mut self, i: usize) {
        let (left, right) = (self.nodes[i].left, self.nodes[i].right);
        let height = 1 + self.height(left).max(self.height(right));
        self.nodes[i].height = u8::try_from(height).unwrap_or(u8::MAX);
    }

    /// An insertion unbalances at most one node on its path; the rotations are the same as
    /// GLib's `g_tree_node_balance`, so the tree's shape is the same too.
    fn rebalance(&mut self, i: usize) -> usize {
        self.update(i);
        let balance = self.balance(Some(i));
        if balance > 1 {
            if self.balance(self.nodes[i].left) < 0 {
                self.nodes[i].left = self.nodes[i].left.map(|l| self.rotate_left(l));
            }
            return self.rotate_right(i);
        }
        if balance < -1 {
            if self.balance(self.nodes[i].right) > 0 {
                self.nodes[i].right = self.nodes[i].right.map(|r| self.rotate_right(r));
            }
            return self.rotate_left(i);
        }
        i
    }

    fn rotate_left(&mut self, i: usize) -> usize {
        let Some(r) = self.nodes[i].right else {
            return i;
        };
        self.nodes[i].right = self.nodes[r].left;
        self.nodes[r].left = Some(i);
        self.update(i);
        self.update(r);
        r
    }

    fn rotate_right(&mut self, i: usize) -> usize {
        let Some(l) = self.nodes[i].left else {
            return i;
        };
        self.nodes[i].left = self.nodes[l].right;
        self.nodes[l].right = Some(i);
        self.update(i);
        self.update(l);
        l
    }

    /// The values in order, as `g_tree_foreach` visits them.
    fn into_values(self) -> Vec<Entry> {
        let mut order = Vec::with_capacity(self.nodes.len());
        let mut stack = Vec::new();
        let mut at = self.root;
        loop {
            while let Some(node) = at.and_then(|i| self.nodes.get(i).map(|n| (i, n))) {
                stack.push(node.0);
                at = node.1.left;
            }
            let Some(i) = stack.pop() else { break };
            order.push(i);
            at = self.nodes.get(i).and_then(|n| n.right);
        }
        let mut values: Vec<Option<Entry>> =
            self.nodes.into_iter().map(|n| Some(n.value)).collect();
        order
            .into_iter()
            .filter_map(|i| values.get_mut(i).and_then(Option::take))
            .collect()
    }
}

/// An entry and where it sits in pmxcfs's ring.
#[derive(Debug, Clone)]
struct Placed {
    offset: u32,
    /// The entry before it, or 0; for the oldest kept entry it may name one already dropped.
    prev: u32,
    entry: Entry,
}

impl Placed {
    fn next(&self) -> u32 {
        self.offset + ring_size(&self.entry)
    }
}

/// An entry's space in the ring: its size rounded up to 8 bytes.
fn ring_size(entry: &Entry) -> u32 {
    u32::try_from((entry.size() + 7) & !7).unwrap_or(u32::MAX)
}

/// Whether `clog_alloc_entry` accepts an entry of this size.
fn storable(entry: &Entry) -> bool {
    (ENTRY_FIXED_SIZE + 1..=MAX_ENTRY_SIZE).contains(&entry.size())
}

/// Whether pmxcfs's ring walk (`clog_dump`, `clog_sort`, `clusterlog_merge`) goes on from
/// the entry at `at` to its `prev`, given the newest entry at `head`. It stops at the end of
/// the chain; when `prev` points forward to a place this lap has already overwritten; and
/// when `prev` lies in the up to 4096 bytes after `head`, which the newest entry may have
/// overwritten.
fn walk_continues(at: u32, prev: u32, head: u32) -> bool {
    let wrapped = at < prev && prev <= head;
    !wrapped && prev != 0 && (prev <= head || prev > head + MAX_ENTRY_SIZE as u32)
}

/// The last-seen (time, uid) of one node, as `dedup_entry_t` holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    time: u32,
    uid: u32,
}

/// `dedup_lookup`: accepts an entry newer than the last one seen from its node, and records it.
fn dedup_accept(dedup: &mut HashMap<u64, Seen>, entry: &Entry) -> bool {
    let seen = Seen {
        time: entry.time,
        uid: entry.uid,
    };
    match dedup.entry(entry.node_digest) {
        MapEntry::Vacant(slot) => {
            slot.insert(seen);
            true
        }
        MapEntry::Occupied(mut slot) => {
            let last = *slot.get();
            let newer = seen.time > last.time || (seen.time == last.time && seen.uid > last.uid);
            if newer {
                slot.insert(seen);
            }
            newer
        }
    }
}

/// Appends an entry where `clog_alloc_entry` would put it, then forgets the entries pmxcfs
/// can no longer reach.
fn place(ring: &mut VecDeque<Placed>, entry: Entry) {
    let size = ring_size(&entry);
    let (offset, prev) = match ring.back() {
        None => (RING_HEADER as u32, 0),
        Some(head) if head.next() + size >= LOG_SIZE as u32 => (RING_HEADER as u32, head.offset),
        Some(head) => (head.next(), head.offset),
    };
    ring.push_back(Placed {
        offset,
        prev,
        entry,
    });
    forget_unreachable(ring);
}

/// Drops the entries that pmxcfs's walk from the newest entry no longer reaches. Each
/// entry's `prev` is the entry before it, so the reachable ones are always the newest few.
fn forget_unreachable(ring: &mut VecDeque<Placed>) {
    let Some(head) = ring.back().map(|p| p.offset) else {
        return;
    };
    let mut oldest = ring.len() - 1;
    while oldest > 0
        && ring
            .get(oldest)
            .is_some_and(|p| walk_continues(p.offset, p.prev, head))
    {
        oldest -= 1;
    }
    ring.drain(..oldest);
}

/// Lays entries out from the ring's start, as `clog_copy` into a fresh `clog_new` does.
fn lay_out(entries: impl IntoIterator<Item = Entry>) -> VecDeque<Placed> {
    let mut ring = VecDeque::new();
    for entry in entries.into_iter().filter(storable) {
        place(&mut ring, entry);
    }
    ring
}

/// The ring's bytes: `clog_base_t`, then each entry at its offset, everything else zero.
fn ring_bytes(ring: &VecDeque<Placed>) -> Vec<u8> {
    let mut bytes = vec![0; LOG_SIZE];
    let head = ring.back().map_or(0, |p| p.offset);
    bytes[..4].copy_from_slice(&(LOG_SIZE as u32).to_le_bytes());
    bytes[4..8].copy_from_slice(&head.to_le_bytes());
    for placed in ring {
        let encoded = placed.entry.encode_linked(placed.prev, placed.next());
        let at = placed.offset as usize;
        if let Some(target) = bytes.get_mut(at..at + encoded.len()) {
            target.copy_from_slice(&encoded);
        }
    }
    bytes
}

/// Decodes a kvstore STATE payload (a whole ring), walking from `cpos` through `prev` as
/// pmxcfs does. The entries come back newest first, which is the order
/// [`ClusterLog::merge`] takes. A ring is accepted only if it is [`LOG_SIZE`] bytes long
/// and says so itself, as `dfsm_process_state_update` requires. Every entry reached must
/// be well formed, and a `prev` chain that loops is an error, where pmxcfs would spin.
pub fn decode_state(state: &[u8]) -> Result<Vec<Entry>, ClogError> {
    if state.len() != LOG_SIZE {
        return Err(ClogError::StateLen { len: state.len() });
    }
    let size = le32(state, 0).unwrap_or_default();
    if size as usize != LOG_SIZE {
        return Err(ClogError::RingSize { size });
    }
    let head = le32(state, 4).unwrap_or_default();
    let mut entries = Vec::new();
    if head == 0 {
        return Ok(entries);
    }
    let mut visited = vec![false; LOG_SIZE / 8];
    let mut at = head;
    loop {
        let (entry, prev) = ring_entry(state, at)?;
        let seen = visited
            .get_mut(at as usize / 8)
            .ok_or(ClogError::BadOffset { offset: at })?;
        if std::mem::replace(seen, true) {
            return Err(ClogError::Cycle { offset: at });
        }
        entries.push(entry);
        if !walk_continues(at, prev, head) {
            return Ok(entries);
        }
        at = prev;
    }
}

/// The entry at `offset` in a ring, and its `prev` link.
fn ring_entry(ring: &[u8], offset: u32) -> Result<(Entry, u32), ClogError> {
    let at = offset as usize;
    let aligned = offset >= RING_HEADER as u32 && offset & 7 == 0;
    let header = Header::read(ring.get(at..).unwrap_or_default())
        .filter(|_| aligned)
        .ok_or(ClogError::BadOffset { offset })?;
    let size = header.size();
    if size > MAX_ENTRY_SIZE as u64 {
        return Err(ClogError::TooLarge { offset, size });
    }
    let bytes = ring
        .get(at..at + size as usize)
        .ok_or(ClogError::PastEnd { offset, size })?;
    let entry = parse(bytes, MsgEnd::Ring).map_err(|source| ClogError::InRing {
        offset,
        source: Box::new(source),
    })?;
    Ok((entry, header.prev))
}

/// One node's cluster log (`clusterlog_t` with its ring), plus pmxcfs's process-wide uid counter.
#[derive(Debug, Clone)]
pub struct ClusterLog {
    node: String,
    uid_counter: u32,
    /// Oldest first: the entries pmxcfs's walk reaches, at their ring offsets.
    ring: VecDeque<Placed>,
    /// Per node digest, the newest (time, uid) accepted.
    dedup: HashMap<u64, Seen>,
}

impl ClusterLog {
    /// An empty log for the node called `node`.
    pub fn new(node: &str) -> Self {
        ClusterLog {
            node: node.to_owned(),
            uid_counter: 0,
            ring: VecDeque::new(),
            dedup: HashMap::new(),
        }
    }

    /// The log as `cfs_status_init` starts it: with uid 1, "starting cluster log" from
    /// ident "root", tag "cluster", at [`LOG_INFO`].
    pub fn start(node: &str, pid: u32, now: u32) -> Self {
        let mut log = Self::new(node);
        // The ident, tag and priority are valid, so this cannot fail.
        let _ = log.add(
            "root",
            "cluster",
            pid,
            LOG_INFO,
            now,
            b"starting cluster log",
        );
        log
    }

    /// Logs a message from this node (`clusterlog_add`, or the IPC log request): packs it
    /// with the next uid, then inserts it. Returns the entry, which the caller broadcasts
    /// as a kvstore LOG message; pmxcfs sends it even if its own dedup refused it.
    pub fn add(
        &mut self,
        ident: &str,
        tag: &str,
        pid: u32,
        priority: u8,
        time: u32,
        msg: impl AsRef<[u8]>,
    ) -> Result<Entry, ClogError> {
        let uid = self.uid_counter.wrapping_add(1);
        let entry = Entry::pack(&self.node, ident, tag, pid, priority, time, uid, msg)?;
        self.uid_counter = uid;
        self.insert(entry.clone());
        Ok(entry)
    }

    /// `clusterlog_insert`: stores the entry if it is newer than the last one seen from
    /// its node, that is, if its time is later, or equal with a larger uid. Returns whether
    /// it was stored. An entry over [`MAX_ENTRY_SIZE`] still counts as seen, as in pmxcfs,
    /// but is not stored.
    pub fn insert(&mut self, entry: Entry) -> bool {
        if !dedup_accept(&mut self.dedup, &entry) || !storable(&entry) {
            return false;
        }
        place(&mut self.ring, entry);
        true
    }

    /// The entries, oldest first, in the order they were stored.
    pub fn entries(&self) -> impl DoubleEndedIterator<Item = &Entry> + '_ {
        self.ring.iter().map(|p| &p.entry)
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether the log has no entries.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// The kvstore STATE to send: the ring as `clusterlog_get_state` returns it,
    /// [`LOG_SIZE`] bytes, after `clog_sort` has rewritten it from the ring's start in
    /// (time, node digest, uid) order. Entries that compare equal are dropped. The bytes
    /// match pmxcfs's, except that the 4 unused bytes of each entry are zero here. pmxcfs
    /// also sorts its own log in place at this point. Here that only happens in
    /// [`ClusterLog::merge`], the one place that depends on the order.
    pub fn encode_state(&self) -> Vec<u8> {
        if self.ring.is_empty() {
            // clog_sort refuses an empty log; the untouched ring is sent.
            return ring_bytes(&self.ring);
        }
        ring_bytes(&lay_out(self.sorted()))
    }

    fn sorted(&self) -> Vec<Entry> {
        let mut tree = SortTree::default();
        for entry in self.newest_first() {
            tree.insert(entry.clone());
        }
        tree.into_values()
    }

    fn newest_first(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.entries().rev()
    }

    /// `clusterlog_merge`, run after every member's STATE arrived. `states` holds one
    /// [`decode_state`] result per member, in the sync's member order, with `None` for a
    /// refused state. `states[local]` is ignored: this log, sorted the way
    /// [`ClusterLog::encode_state`] sent it, takes its place.
    ///
    /// It repeatedly takes the newest next entry of any log (the lowest index wins a
    /// tie, and an entry with time 0 is never taken). It skips entries already taken,
    /// and stops once about [`LOG_SIZE`] − 8 − 4096 bytes are collected. The log then
    /// becomes those entries in sorted order, and the dedup table becomes what they show.
    /// Nodes that merge the same states in the same order end with identical logs.
    pub fn merge(&mut self, states: &[Option<Vec<Entry>>], local: usize) -> Result<(), ClogError> {
        if states.len() < 2 {
            return Err(ClogError::TooFewLogs(states.len()));
        }
        if local >= states.len() {
            return Err(ClogError::BadLocalIndex {
                index: local,
                count: states.len(),
            });
        }
        let own = self.sorted();
        let logs: Vec<Vec<&Entry>> = states
            .iter()
            .enumerate()
            .map(|(i, state)| match i == local {
                true => own.iter().rev().collect(),
                false => state.iter().flatten().collect(),
            })
            .collect();
        let mut cursors = vec![0; logs.len()];
        let mut tree = SortTree::default();
        let mut dedup = HashMap::new();
        let mut collected = 0;
        while let Some(i) = pick_newest(&logs, &cursors) {
            let entry = logs[i][cursors[i]];
            if !tree.contains(entry) {
                tree.insert(entry.clone());
                dedup_accept(&mut dedup, entry);
                collected += ring_size(entry) as usize;
                if collected >= MERGE_LIMIT {
                    break;
                }
            }
            cursors[i] += 1;
        }
        self.ring = lay_out(tree.into_values());
        self.dedup = dedup;
        Ok(())
    }

    /// `clog_dump_json`: the `.clusterlog` text (pmxcfs reads it with `max` 50). The
    /// entries come newest first, at most `max` of them. With a non-empty `user`, only
    /// entries whose ident digest matches the user's are shown, and only those count
    /// toward `max`. The strings are printed raw, as pmxcfs prints them; escaping at pack
    /// time is what keeps the JSON intact.
    pub fn dump_json(&self, max: usize, user: Option<&str>) -> String {
        let wanted = user.map(c_str).filter(|u| !u.is_empty()).map(digest);
        let mut out = String::from("{\n\"data\": [\n");
        let mut count = 0;
        for entry in self.dump_order() {
            if count >= max {
                break;
            }
            if wanted.is_some_and(|d| d != 0 && d != entry.ident_digest) {
                continue;
            }
            if count > 0 {
                out.push_str(",\n");
            }
            out.push_str(&json_line(entry));
            count += 1;
        }
        if count > 0 {
            out.push('\n');
        }
        out.push_str("]\n}\n");
        out
    }

    /// Newest first, the entries `clog_dump_json` prints. Its loop checks the wrap-around
    /// stop before printing the current entry, so it skips an oldest entry whose `prev`
    /// points forward into this lap.
    fn dump_order(&self) -> impl Iterator<Item = &Entry> + '_ {
        let head = self.ring.back().map_or(0, |p| p.offset);
        let skip_oldest = self
            .ring
            .front()
            .is_some_and(|p| p.offset < p.prev && p.prev <= head);
        self.ring
            .iter()
            .skip(usize::from(skip_oldest))
            .rev()
            .map(|p| &p.entry)
    }
}

/// The log whose next entry has the latest time. Ties go to the lowest index, and an
/// entry with time 0 never wins (pmxcfs starts its search at 0 with a strict `>`).
fn pick_newest(logs: &[Vec<&Entry>], cursors: &[usize]) -> Option<usize> {
    let mut best: Option<(usize, u32)> = None;
    for (i, log) in logs.iter().enumerate() {
        let Some(entry) = cursors.get(i).and_then(|&c| log.get(c)) else {
            continue;
        };
        if entry.time > best.map_or(0, |(_, time)| time) {
            best = Some((i, entry.time));
        }
    }
    best.map(|(i, _)| i)
}

fn json_line(e: &Entry) -> String {
    format!(
        "{{\"uid\": {}, \"time\": {}, \"pri\": {}, \"tag\": \"{}\", \"pid\": {}, \"node\": \"{}\", \"user\": \"{}\", \"msg\": \"{}\"}}",
        e.uid,
        e.time,
        e.priority,
        json_safe(&e.tag),
        e.pid,
        json_safe(&e.node),
        json_safe(&e.ident),
        json_safe(&e.msg)
    )
}

/// `s` as the inside of a JSON string. pmxcfs prints its strings raw and relies on the
/// escaping done when an entry is made; that is kept (valid escapes pass unchanged, so
/// the output is pmxcfs's byte for byte wherever pmxcfs's is valid JSON), but what
/// would break the JSON (a lone backslash, a raw quote or control character, as a
/// pmxcfs peer's entry or a hostile one can hold) is escaped, so that PVE's
/// `decode_json` never fails on the log.
pub fn json_safe(s: &str) -> std::borrow::Cow<'_, str> {
    let b = s.as_bytes();
    let valid_escape = |i: usize| match b.get(i + 1) {
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Some(2),
        Some(b'u')
            if b.get(i + 2..i + 6)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) =>
        {
            Some(6)
        }
        _ => None,
    };
    let needs = |i: usize| match b[i] {
        b'\\' => valid_escape(i).is_none(),
        b'"' => true,
        c => c < 0x20,
    };
    // Fast path: nothing to change (every entry pmxfs or pmxcfs made from plain text).
    let mut i = 0;
    let mut clean = true;
    while i < b.len() {
        if b[i] == b'\\' {
            if let Some(n) = valid_escape(i) {
                i += n;
                continue;
            }
        }
        if needs(i) {
            clean = false;
            break;
        }
        i += 1;
    }
    if clean {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if let Some(n) = valid_escape(i) {
                out.push_str(&s[i..i + n]);
                i += n;
                continue;
            }
            out.push_str("\\\\");
        } else if b[i] == b'"' {
            out.push_str("\\\"");
        } else if b[i] < 0x20 {
            let _ = write!(out, "\\u{:04x}", b[i]);
        } else {
            // Not ASCII-special: copy the whole character.
            let ch = s[i..]
                .chars()
                .next()
                .expect("a character at a char boundary");
            out.push(ch);
            i += ch.len_utf8();
            continue;
        }
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pmxcfs-wire/");
    /// dfsm NORMAL header in front of a kvstore LOG payload.
    const NORMAL_HEADER: usize = 24;
    /// dfsm state header in front of a kvstore STATE payload.
    const STATE_HEADER: usize = 32;
    /// The kvstore STATE captures that were kept (see the fixtures' manifest.tsv).
    const STATES: [&str; 6] = [
        "n1/00011", "n2/00005", "n3/00002", "n1/00056", "n2/00017", "n3/00005",
    ];

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{FIXTURES}{name}-pve_kvstore_v1.bin");
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn state_fixture(name: &str) -> Vec<u8> {
        fixture(name)[STATE_HEADER..].to_vec()
    }

    fn log_fixture() -> Vec<u8> {
        fixture("n2/00009")[NORMAL_HEADER..].to_vec()
    }

    fn entry(node: &str, ident: &str, time: u32, uid: u32, msg: &str) -> Entry {
        Entry::pack(node, ident, "test", 1000 + uid, LOG_INFO, time, uid, msg).unwrap()
    }

    /// A small deterministic generator (Knuth's MMIX LCG, high bits).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn log_of(node: &str, entries: &[Entry]) -> ClusterLog {
        let mut log = ClusterLog::new(node);
        for e in entries {
            assert!(log.insert(e.clone()), "{e:?}");
        }
        log
    }

    #[test]
    fn fixtures_are_reachable() {
        assert!(
            std::path::Path::new(FIXTURES).join("manifest.tsv").exists(),
            "{FIXTURES}"
        );
    }

    #[test]
    fn fnv_matches_known_values() {
        assert_eq!(fnv1a64(b""), FNV_OFFSET_BASIS);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(digest("a"), fnv1a64(b"a\0"));
        assert_eq!(digest("pcs2"), 0xccd9_8d95_d3b4_4f3f);
    }

    #[test]
    fn log_fixture_decodes_field_by_field() {
        let bytes = log_fixture();
        let e = Entry::decode(&bytes).unwrap();
        assert_eq!(e.uid, 2);
        assert_eq!(e.time, 1_796_160_512);
        assert_eq!(e.pid, 11888);
        assert_eq!(e.priority, 6);
        assert_eq!(e.node, "pcs2");
        assert_eq!(e.ident, "root@pam");
        assert_eq!(e.tag, "unknown");
        assert_eq!(e.msg, "hello capture");
        assert_eq!(e.node_digest, digest("pcs2"));
        assert_eq!(e.ident_digest, digest("root@pam"));
        assert_eq!(e.size(), bytes.len());
        assert_eq!(e.encode(), bytes);
    }

    #[test]
    fn pack_reproduces_the_log_fixture() {
        let e = Entry::pack(
            "pcs2",
            "root@pam",
            "unknown",
            11888,
            6,
            1_796_160_512,
            2,
            "hello capture",
        )
        .unwrap();
        assert_eq!(e.encode(), log_fixture());
    }

    #[test]
    fn decode_ignores_links_and_unused_bytes() {
        let mut bytes = log_fixture();
        bytes[..8].fill(0xab);
        let n = bytes.len();
        bytes[n - 4..].fill(0xcd);
        assert_eq!(
            Entry::decode(&bytes).unwrap(),
            Entry::decode(&log_fixture()).unwrap()
        );
    }

    #[test]
    fn start_matches_the_captured_first_entry() {
        let log = ClusterLog::start("pcs1", 11277, 1_796_160_499);
        let ring = state_fixture("n1/00056");
        // pcs1's entry sits at offset 8 there; skip its prev/next.
        let mine = log.entries().next().unwrap().encode();
        assert_eq!(mine[8..], ring[8 + 8..8 + mine.len()]);
        assert_eq!(log.entries().next().unwrap().uid, 1);
    }

    #[test]
    fn state_fixtures_decode_and_reencode_byte_for_byte() {
        for name in STATES {
            let ring = state_fixture(name);
            let newest_first = decode_state(&ring).unwrap();
            assert!(!newest_first.is_empty(), "{name}");
            let oldest_first: Vec<Entry> = newest_first.iter().rev().cloned().collect();
            for e in &oldest_first {
                assert_eq!(e.node_digest, digest(&e.node), "{name}");
                assert_eq!(e.ident_digest, digest(&e.ident), "{name}");
            }
            let log = log_of("pcs1", &oldest_first);
            let encoded = log.encode_state();
            assert_eq!(encoded.len(), LOG_SIZE);
            assert_eq!(decode_state(&encoded).unwrap(), newest_first, "{name}");
            // These rings come from clog_sort into a fresh buffer, so the layout is
            // deterministic, and the unused bytes happen to be zero in the captures.
            assert!(encoded == ring, "{name}: bytes differ");
        }
    }

    #[test]
    fn captured_sync_rounds_merge_to_the_next_captured_state() {
        // Phase a: pcs1 and pcs2 had merged each other's first entry, pcs3 had only its own.
        let states: Vec<Option<Vec<Entry>>> = ["n1/00011", "n2/00005", "n3/00002"]
            .iter()
            .map(|n| Some(decode_state(&state_fixture(n)).unwrap()))
            .collect();
        let hello = Entry::decode(&log_fixture()).unwrap();
        let expected = state_fixture("n1/00056");
        for local in 0..3 {
            let own = states[local].clone().unwrap();
            let mut log = log_of("x", &own.into_iter().rev().collect::<Vec<_>>());
            log.merge(&states, local).unwrap();
            // Phase d's LOG message, then the heal round's STATE.
            assert!(log.insert(hello.clone()));
            assert!(log.encode_state() == expected, "node index {local}");
        }
    }

    #[test]
    fn escaping_matches_utf8_to_ascii() {
        let pack = |msg: &[u8]| Entry::pack("n", "u", "t", 1, 0, 0, 1, msg).unwrap().msg;
        assert_eq!(pack(b"plain text"), "plain text");
        assert_eq!(pack(b"say \"hi\""), "say \\\"hi\\\"");
        assert_eq!(pack(b"a\nb\tc\x1b\x7f"), "a#010b#009c#027#127");
        assert_eq!(pack("caf\u{e9} \u{20ac}".as_bytes()), "caf\\u00e9 \\u20ac");
        assert_eq!(pack("smile \u{1F600}!".as_bytes()), "smile !");
        // pmxcfs keeps the backslash raw (its JSON is then invalid); escaped here.
        assert_eq!(pack(b"back\\slash"), "back\\\\slash");
        assert_eq!(pack(b"cut\0here"), "cut");
        // Not UTF-8: byte by byte, and DEL becomes '?' on this path.
        assert_eq!(pack(b"a\xff\"b\x7f\n\xc3"), "a?\\\"b?#010?");
    }

    #[test]
    fn long_ascii_message_is_cut_like_pmxcfs() {
        let e = Entry::pack("n", "u", "t", 1, 0, 0, 1, vec![b'a'; 5000]).unwrap();
        // bufsize = 4096 - 44 - 6; the loop stops 7 bytes before it.
        assert_eq!(e.msg.len(), 4096 - 44 - 6 - 7);
        assert_eq!(e.size(), 4094);
        assert_eq!(Entry::decode(&e.encode()).unwrap(), e);
    }

    #[test]
    fn long_escaped_message_is_cut_at_a_unit() {
        // Six-byte units overshoot the space pmxcfs checks for; it then lowers msg_len
        // under the NUL. Here whole units are dropped instead.
        let e = Entry::pack("n", "u", "t", 1, 0, 0, 1, "\u{e9}".repeat(2000)).unwrap();
        assert_eq!(e.msg.len(), 673 * 6);
        assert!(e.msg.ends_with("\\u00e9"));
        assert!(e.size() <= MAX_ENTRY_SIZE);
        assert_eq!(Entry::decode(&e.encode()).unwrap(), e);
        let quotes = Entry::pack("n", "u", "t", 1, 0, 0, 1, "\"".repeat(3000)).unwrap();
        assert!(quotes.size() <= MAX_ENTRY_SIZE);
        assert!(quotes.msg.ends_with("\\\""));
    }

    /// The bytes pmxcfs's clog_pack writes for an over-long escaped message.
    fn pmxcfs_overflow_entry() -> (Vec<u8>, String) {
        let full = "\\u00e9".repeat(674); // 4044 bytes, as pmxcfs's loop leaves it
        let strings = 6;
        let msg_len = (MAX_ENTRY_SIZE - ENTRY_FIXED_SIZE - strings) as u32; // 4042
        let mut e = Entry::pack("n", "u", "t", 1, 0, 7, 1, "").unwrap().encode();
        e.truncate(DATA_OFFSET + strings);
        e[40..44].copy_from_slice(&msg_len.to_le_bytes());
        e.extend_from_slice(full.as_bytes());
        e.push(0);
        e.resize(MAX_ENTRY_SIZE, 0);
        (e, full)
    }

    #[test]
    fn pmxcfs_overflowed_entry_is_refused_as_log_but_read_from_a_ring() {
        let (bytes, full) = pmxcfs_overflow_entry();
        assert_eq!(
            Entry::decode(&bytes),
            Err(ClogError::Unterminated { field: Field::Msg })
        );
        let mut ring = ring_bytes(&VecDeque::new());
        ring[8..8 + bytes.len()].copy_from_slice(&bytes);
        ring[4..8].copy_from_slice(&8u32.to_le_bytes());
        let entries = decode_state(&ring).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].msg, full[..673 * 6]);
        assert!(entries[0].size() <= MAX_ENTRY_SIZE);
    }

    #[test]
    fn long_names_are_capped_and_digested_like_pmxcfs() {
        let ident = "x".repeat(300);
        let e = Entry::pack("n", &ident, "t", 1, 0, 0, 1, "m").unwrap();
        assert_eq!(e.ident.len(), 254);
        assert_eq!(e.ident_digest, fnv1a64(&ident.as_bytes()[..255]));
        assert_eq!(e.encode()[38], 255);
        assert_eq!(Entry::decode(&e.encode()).unwrap(), e);
        let exact = "y".repeat(254);
        let e = Entry::pack("n", &exact, "t", 1, 0, 0, 1, "m").unwrap();
        assert_eq!(e.ident, exact);
        assert_eq!(e.ident_digest, digest(&exact));
    }

    #[test]
    fn bad_priority_is_refused() {
        assert_eq!(
            Entry::pack("n", "u", "t", 1, 8, 0, 1, "m"),
            Err(ClogError::BadPriority(8))
        );
        let mut log = ClusterLog::new("n");
        assert!(log.add("u", "t", 1, 9, 0, "m").is_err());
        assert_eq!(log.add("u", "t", 1, 7, 0, "m").unwrap().uid, 1);
    }

    #[test]
    fn malformed_log_messages_are_refused() {
        let good = log_fixture();
        assert_eq!(
            Entry::decode(&good[..47]),
            Err(ClogError::Short { len: 47 })
        );
        assert_eq!(Entry::decode(&[]), Err(ClogError::Short { len: 0 }));
        let expected = good.len() as u64;
        assert_eq!(
            Entry::decode(&good[..good.len() - 1]),
            Err(ClogError::WrongSize {
                len: good.len() - 1,
                expected
            })
        );
        let mut long = good.clone();
        long.push(0);
        assert_eq!(
            Entry::decode(&long),
            Err(ClogError::WrongSize {
                len: long.len(),
                expected
            })
        );
        // A msg_len that would wrap a 32-bit size.
        let mut huge = good.clone();
        huge[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Entry::decode(&huge),
            Err(ClogError::WrongSize { .. })
        ));

        // node "pcs2\0" at 44, ident "root@pam\0" at 49, tag "unknown\0" at 58, msg at 66.
        let ends = [
            (48, Field::Node),
            (57, Field::Ident),
            (65, Field::Tag),
            (79, Field::Msg),
        ];
        for (at, field) in ends {
            let mut b = good.clone();
            b[at] = b'!';
            assert_eq!(
                Entry::decode(&b),
                Err(ClogError::Unterminated { field }),
                "{field}"
            );
        }
        let mut b = good.clone();
        b[46] = 0;
        assert_eq!(
            Entry::decode(&b),
            Err(ClogError::InteriorNul { field: Field::Node })
        );
        let mut b = good.clone();
        b[60] = 0xff;
        assert_eq!(
            Entry::decode(&b),
            Err(ClogError::NotUtf8 { field: Field::Tag })
        );

        // An empty ident: its bytes join the tag, so the total still matches.
        let mut b = good.clone();
        b[38] = 0;
        b[39] = 8 + 9;
        assert_eq!(
            Entry::decode(&b),
            Err(ClogError::EmptyString {
                field: Field::Ident
            })
        );
    }

    #[test]
    fn log_message_fuzz_never_panics() {
        let good = log_fixture();
        for len in 0..good.len() {
            assert!(Entry::decode(&good[..len]).is_err(), "{len}");
        }
        let mut rng = Lcg(7);
        for _ in 0..20_000 {
            let mut b = good.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(b.len());
                b[at] ^= 1 << rng.below(8);
            }
            if let Ok(e) = Entry::decode(&b) {
                assert_eq!(e.size(), b.len());
                assert_eq!(Entry::decode(&e.encode()).unwrap(), e);
            }
        }
    }

    #[test]
    fn dedup_follows_time_then_uid_per_node() {
        let mut log = ClusterLog::new("a");
        assert!(log.insert(entry("a", "u", 100, 5, "first")));
        assert!(!log.insert(entry("a", "u", 100, 5, "same uid")));
        assert!(!log.insert(entry("a", "u", 100, 4, "lower uid")));
        assert!(!log.insert(entry("a", "u", 99, 9, "older")));
        assert!(log.insert(entry("a", "u", 100, 6, "higher uid")));
        assert!(log.insert(entry("a", "u", 101, 1, "later")));
        // Other nodes are tracked separately.
        assert!(log.insert(entry("b", "u", 50, 1, "b")));
        // pmxcfs on b restarts in the same second: its uid counter is back at 1.
        assert!(log.insert(entry("b", "u", 60, 7, "b before restart")));
        assert!(!log.insert(entry("b", "u", 60, 1, "b after restart, same second")));
        assert!(log.insert(entry("b", "u", 61, 2, "b a second later")));
        assert_eq!(log.len(), 6);
    }

    #[test]
    fn oversized_entries_count_as_seen_but_are_not_stored() {
        let mut log = ClusterLog::new("a");
        let mut big = entry("a", "u", 10, 1, "x");
        big.msg = "y".repeat(MAX_ENTRY_SIZE);
        let decoded = Entry::decode(&big.encode()).unwrap();
        assert!(!log.insert(decoded));
        assert!(log.is_empty());
        assert!(!log.insert(entry("a", "u", 10, 1, "x")));
    }

    fn three_logs() -> [ClusterLog; 3] {
        let a1 = entry("a", "u", 10, 1, "a1");
        let a2 = entry("a", "u", 20, 2, "a2");
        let b1 = entry("b", "v", 15, 1, "b1");
        let b2 = entry("b", "v", 20, 2, "b2");
        let c1 = entry("c", "u", 12, 1, "c1");
        let c2 = entry("c", "w", 20, 2, "c2");
        let c3 = entry("c", "w", 25, 3, "c3");
        [
            log_of("a", &[a1.clone(), c1.clone(), b1.clone(), a2.clone()]),
            log_of("b", &[a1, b1, b2]),
            log_of("c", &[c1, c2, a2, c3]),
        ]
    }

    #[test]
    fn merge_converges_whatever_the_member_order() {
        let logs = three_logs();
        let states: Vec<Vec<Entry>> = logs
            .iter()
            .map(|l| decode_state(&l.encode_state()).unwrap())
            .collect();
        let orders = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ];
        let mut results = Vec::new();
        for order in orders {
            let input: Vec<Option<Vec<Entry>>> =
                order.iter().map(|&k| Some(states[k].clone())).collect();
            for (local, &node) in order.iter().enumerate() {
                let mut log = logs[node].clone();
                log.merge(&input, local).unwrap();
                results.push(log);
            }
        }
        let first = results[0].encode_state();
        for log in &results {
            assert!(log.encode_state() == first);
        }
        let merged = &results[0];
        let times: Vec<u32> = merged.entries().map(|e| e.time).collect();
        assert_eq!(times, [10, 12, 15, 20, 20, 20, 25]);
        // The dedup table now holds each node's newest entry.
        let mut log = merged.clone();
        assert!(!log.insert(entry("a", "u", 20, 2, "again")));
        assert!(!log.insert(entry("c", "u", 24, 9, "older than c3")));
        assert!(log.insert(entry("b", "v", 20, 3, "newer")));
    }

    #[test]
    fn merge_skips_refused_states_and_checks_its_arguments() {
        let [a, b, _] = three_logs();
        let b_state = decode_state(&b.encode_state()).unwrap();
        let mut log = a.clone();
        assert_eq!(log.merge(&[None], 0), Err(ClogError::TooFewLogs(1)));
        assert_eq!(
            log.merge(&[None, None], 2),
            Err(ClogError::BadLocalIndex { index: 2, count: 2 })
        );
        log.merge(&[None, None], 0).unwrap();
        assert_eq!(log.encode_state(), a.encode_state());
        let mut log = a.clone();
        log.merge(&[Some(b_state), None], 1).unwrap();
        assert_eq!(log.len(), 5);
    }

    #[test]
    fn merge_never_takes_time_zero_entries() {
        let zero = log_of(
            "z",
            &[entry("z", "u", 0, 1, "epoch"), entry("z", "u", 0, 2, "x")],
        );
        let state = decode_state(&zero.encode_state()).unwrap();
        let mut log = ClusterLog::new("a");
        log.merge(&[None, Some(state)], 0).unwrap();
        assert!(log.is_empty());
    }

    #[test]
    fn merge_of_full_logs_stops_at_the_limit_and_converges() {
        let mut rng = Lcg(3);
        let nodes = ["a", "b", "c"];
        let mut logs: Vec<ClusterLog> = nodes.iter().map(|n| ClusterLog::new(n)).collect();
        let mut uids = [0u32; 3];
        for i in 0..3000u32 {
            let n = rng.below(3);
            uids[n] += 1;
            let len = 20 + rng.below(200);
            let e = entry(nodes[n], "u", 1000 + i / 4, uids[n], &"m".repeat(len));
            // Each entry reaches its own node and, most of the time, one other.
            logs[n].insert(e.clone());
            if rng.below(4) != 0 {
                logs[(n + 1 + rng.below(2)) % 3].insert(e);
            }
        }
        let states: Vec<Option<Vec<Entry>>> = logs
            .iter()
            .map(|l| Some(decode_state(&l.encode_state()).unwrap()))
            .collect();
        let merged: Vec<Vec<u8>> = (0..3)
            .map(|local| {
                let mut log = logs[local].clone();
                log.merge(&states, local).unwrap();
                log.encode_state()
            })
            .collect();
        assert!(merged[0] == merged[1] && merged[1] == merged[2]);
        let entries = decode_state(&merged[0]).unwrap();
        let used: usize = entries.iter().map(|e| ring_size(e) as usize).sum();
        assert!(
            (MERGE_LIMIT..MERGE_LIMIT + MAX_ENTRY_SIZE).contains(&used),
            "{used}"
        );
        // The newest second made it in.
        assert_eq!(entries[0].time, 1000 + 2999 / 4);
    }

    #[test]
    fn merge_ties_go_to_the_lowest_index_at_the_limit() {
        // Everything in the same second: the first log is taken whole before the second,
        // until 31 entries of 4096 bytes pass the limit.
        let big = |node: &str, uid| entry(node, "u", 100, uid, &"s".repeat(4038));
        let a: Vec<Entry> = (1..=20).map(|uid| big("a", uid)).collect();
        let b: Vec<Entry> = (1..=20).map(|uid| big("b", uid)).collect();
        let states = [
            Some(decode_state(&log_of("a", &a).encode_state()).unwrap()),
            Some(decode_state(&log_of("b", &b).encode_state()).unwrap()),
        ];
        let mut log = ClusterLog::new("a");
        log.merge(&states, 1).unwrap();
        // Local index 1 is this (empty) log: only a's entries are left.
        assert_eq!(log.len(), 20);
        let mut log = log_of("b", &b);
        log.merge(&states, 1).unwrap();
        let from_a = log.entries().filter(|e| e.node == "a").count();
        assert_eq!((from_a, log.len()), (20, 31));
        // Within b, newest first means the highest uids.
        assert_eq!(
            log.entries().filter(|e| e.node == "b").map(|e| e.uid).min(),
            Some(10)
        );
    }

    #[test]
    fn ring_keeps_the_newest_entries_within_its_size() {
        let mut log = ClusterLog::new("n");
        let mut last = None;
        for i in 0..10_000u32 {
            let e = entry("n", "u", i, i + 1, &"z".repeat((i % 300) as usize));
            assert!(log.insert(e.clone()));
            last = Some(e);
        }
        assert_eq!(log.entries().last(), last.as_ref());
        let state = log.encode_state();
        assert_eq!(state.len(), LOG_SIZE);
        let decoded = decode_state(&state).unwrap();
        let kept: Vec<&Entry> = log.entries().rev().collect();
        assert_eq!(decoded.iter().collect::<Vec<_>>(), kept);
        let used: usize = decoded.iter().map(|e| ring_size(e) as usize).sum();
        assert!(RING_HEADER + used < LOG_SIZE);
        assert!(used > LOG_SIZE - 3 * MAX_ENTRY_SIZE, "{used}");
    }

    /// pmxcfs's ring over raw bytes: `clog_alloc_entry` and `clog_copy` literally, with
    /// whatever stale bytes they leave.
    struct ByteRing(Vec<u8>);

    impl ByteRing {
        fn new() -> Self {
            ByteRing(ring_bytes(&VecDeque::new()))
        }

        fn word(&self, at: usize) -> u32 {
            le32(&self.0, at).unwrap()
        }

        fn set_word(&mut self, at: usize, value: u32) {
            self.0[at..at + 4].copy_from_slice(&value.to_le_bytes());
        }

        fn copy(&mut self, e: &Entry) {
            let bytes = e.encode();
            let real = (bytes.len() as u32 + 7) & !7;
            let cpos = self.word(4);
            let mut pos = if cpos == 0 {
                8
            } else {
                self.word(cpos as usize + 4)
            };
            if cpos != 0 && pos + real >= LOG_SIZE as u32 {
                pos = 8;
            }
            let at = pos as usize;
            self.0[at + 8..at + bytes.len()].copy_from_slice(&bytes[8..]);
            self.set_word(at, cpos);
            self.set_word(at + 4, pos + real);
            self.set_word(4, pos);
        }

        /// `clog_dump_json`'s loop, literally.
        fn dump_json(&self, max: usize) -> String {
            let head = self.word(4);
            let mut cpos = head;
            let mut out = String::from("{\n\"data\": [\n");
            let mut count = 0;
            while cpos != 0 && (cpos <= head || cpos > head + MAX_ENTRY_SIZE as u32) {
                let (e, prev) = ring_entry(&self.0, cpos).unwrap();
                if cpos < prev && prev <= head {
                    break;
                }
                cpos = prev;
                if count >= max {
                    break;
                }
                if count > 0 {
                    out.push_str(",\n");
                }
                out.push_str(&json_line(&e));
                count += 1;
            }
            if count > 0 {
                out.push('\n');
            }
            out + "]\n}\n"
        }
    }

    #[test]
    fn ring_model_matches_pmxcfs_byte_ring() {
        let mut rng = Lcg(11);
        let nodes = ["alpha", "beta", "gamma"];
        let mut uids = [0u32; 3];
        let mut log = ClusterLog::new("alpha");
        let mut ring = ByteRing::new();
        let mut skipped_oldest = 0;
        for i in 0..2500u32 {
            let n = rng.below(3);
            uids[n] += 1;
            let len = match rng.below(10) {
                0 => 3000 + rng.below(1500),
                1..=3 => rng.below(8),
                _ => rng.below(400),
            };
            let msg: String = (0..len)
                .map(|k| if k % 17 == 3 { '"' } else { 'q' })
                .collect();
            let e = entry(nodes[n], "u", 5000 + i / 3, uids[n], &msg);
            assert!(log.insert(e.clone()));
            ring.copy(&e);
            assert_eq!(
                log.ring.back().map(|p| p.offset),
                Some(ring.word(4)),
                "insert {i}"
            );
            let reached = decode_state(&ring.0).unwrap();
            assert_eq!(
                reached.iter().collect::<Vec<_>>(),
                log.entries().rev().collect::<Vec<_>>(),
                "insert {i}"
            );
            let dump = log.dump_json(usize::MAX, None);
            assert_eq!(dump, ring.dump_json(usize::MAX), "insert {i}");
            if dump.matches("\"uid\"").count() < log.len() {
                skipped_oldest += 1;
            }
            if i % 700 == 699 {
                // What clusterlog_get_state leaves behind: a sorted, fresh ring.
                let mut sorted = ClusterLog::new("alpha");
                sorted.ring = lay_out(log.sorted());
                sorted.dedup = log.dedup.clone();
                log = sorted;
                ring = ByteRing(log.encode_state());
            }
        }
        // clog_dump_json's early wrap-around stop did happen.
        assert!(skipped_oldest > 0);
    }

    #[test]
    fn an_entry_that_would_end_at_the_ring_end_wraps() {
        // clog_alloc_entry wraps when newpos + realsize >= size, so an entry never ends
        // exactly at the ring's end: 31 entries of 4096 bytes, then one of 4088.
        let mut log = ClusterLog::new("n");
        let mut ring = ByteRing::new();
        for i in 0..33u32 {
            let len = if i == 31 { 4030 } else { 4038 };
            let e = entry("n", "u", i, i + 1, &"k".repeat(len));
            assert_eq!(ring_size(&e), if i == 31 { 4088 } else { 4096 });
            assert!(log.insert(e.clone()));
            ring.copy(&e);
        }
        // Entry 31 went to offset 8, entry 32 right after it.
        assert_eq!(ring.word(4), 8 + 4088);
        assert_eq!(log.ring.back().map(|p| p.offset), Some(ring.word(4)));
        let reached = decode_state(&ring.0).unwrap();
        assert_eq!(
            reached.iter().collect::<Vec<_>>(),
            log.entries().rev().collect::<Vec<_>>()
        );
    }

    #[test]
    fn node_digests_compare_by_their_low_32_bits_difference() {
        // Find two names whose digests order differently as u64 and as C's
        // (gint)(a - b); pmxcfs sorts by the latter.
        let names: Vec<String> = (0..200).map(|i| format!("node{i}")).collect();
        let (x, y) = names
            .iter()
            .flat_map(|x| names.iter().map(move |y| (x, y)))
            .find(|(x, y)| {
                let (dx, dy) = (digest(x), digest(y));
                dx > dy && (dx.wrapping_sub(dy) as u32 as i32) < 0
            })
            .unwrap();
        let log = log_of("x", &[entry(y, "u", 5, 1, "m"), entry(x, "u", 5, 1, "m")]);
        let oldest_first: Vec<String> = decode_state(&log.encode_state())
            .unwrap()
            .into_iter()
            .rev()
            .map(|e| e.node)
            .collect();
        assert_eq!(oldest_first, [x.clone(), y.clone()]);
    }

    #[test]
    fn dump_json_text() {
        let empty = ClusterLog::new("n");
        assert_eq!(empty.dump_json(50, None), "{\n\"data\": [\n]\n}\n");
        let mut log = ClusterLog::new("n");
        log.insert(Entry::pack("n1", "root@pam", "tag", 42, 6, 100, 1, "one").unwrap());
        log.insert(Entry::pack("n1", "alice", "t2", 43, 3, 101, 2, "two \"q\"").unwrap());
        assert_eq!(
            log.dump_json(50, None),
            "{\n\"data\": [\n\
             {\"uid\": 2, \"time\": 101, \"pri\": 3, \"tag\": \"t2\", \"pid\": 43, \"node\": \"n1\", \"user\": \"alice\", \"msg\": \"two \\\"q\\\"\"},\n\
             {\"uid\": 1, \"time\": 100, \"pri\": 6, \"tag\": \"tag\", \"pid\": 42, \"node\": \"n1\", \"user\": \"root@pam\", \"msg\": \"one\"}\n\
             ]\n}\n"
        );
        assert_eq!(log.dump_json(0, None), empty.dump_json(50, None));
        assert_eq!(log.dump_json(50, Some("")), log.dump_json(50, None));
        assert_eq!(log.dump_json(50, Some("bob")), empty.dump_json(50, None));
    }

    #[test]
    fn dump_json_user_filter_counts_only_matches() {
        let mut log = ClusterLog::new("n");
        for i in 0..10u32 {
            let user = if i % 2 == 0 { "even" } else { "odd" };
            log.insert(entry("n", user, i, i + 1, &format!("m{i}")));
        }
        let dump = log.dump_json(2, Some("even"));
        assert_eq!(dump.matches("\"uid\"").count(), 2);
        assert!(dump.contains("\"msg\": \"m8\"") && dump.contains("\"msg\": \"m6\""));
        assert!(!dump.contains("odd"));
        assert_eq!(log.dump_json(50, None).matches("\"uid\"").count(), 10);
        assert!(log.dump_json(3, None).contains("m7") && !log.dump_json(3, None).contains("m6"));
    }

    #[test]
    fn sort_order_is_pmxcfs_order() {
        // Same second: by node digest's low 32 bits, as the captures show.
        let e = |node: &str, uid| entry(node, "u", 7, uid, "m");
        let log = log_of(
            "x",
            &[e("pcs2", 1), e("pcs1", 1), e("pcs3", 1), e("pcs1", 2)],
        );
        let state = decode_state(&log.encode_state()).unwrap();
        let order: Vec<(&str, u32)> = state
            .iter()
            .rev()
            .map(|e| (e.node.as_str(), e.uid))
            .collect();
        assert_eq!(order, [("pcs1", 1), ("pcs1", 2), ("pcs3", 1), ("pcs2", 1)]);
        // Times compare modulo 2^32, as C's int cast does.
        let a = entry("a", "u", 1, 1, "m");
        let b = entry("a", "u", 0x8000_0002, 2, "m");
        assert_eq!(clog_cmp(&a, &b), Ordering::Greater);
    }

    #[test]
    fn sort_tree_sorts_and_replaces_values() {
        let mut rng = Lcg(5);
        let mut tree = SortTree::default();
        let mut all = Vec::new();
        for uid in 0..500u32 {
            let e = entry("n", "u", rng.below(50) as u32, uid, "m");
            tree.insert(e.clone());
            all.push(e);
        }
        all.sort_by(clog_cmp);
        assert_eq!(tree.into_values(), all);
        let mut tree = SortTree::default();
        tree.insert(entry("n", "u", 1, 1, "old"));
        tree.insert(entry("n", "u", 1, 1, "new"));
        assert!(tree.contains(&entry("n", "u", 1, 1, "other")));
        assert_eq!(tree.into_values()[0].msg, "new");
    }

    #[test]
    fn malformed_states_are_refused() {
        let good =
            log_of("a", &three_logs()[2].entries().cloned().collect::<Vec<_>>()).encode_state();
        assert!(decode_state(&good).is_ok());
        for len in [0, 8, LOG_SIZE - 1, LOG_SIZE + 1] {
            let mut s = good.clone();
            s.resize(len, 0);
            assert_eq!(decode_state(&s), Err(ClogError::StateLen { len }));
        }
        let mut s = good.clone();
        s[0..4].copy_from_slice(&65536u32.to_le_bytes());
        assert_eq!(decode_state(&s), Err(ClogError::RingSize { size: 65536 }));

        let with_head = |head: u32| {
            let mut s = good.clone();
            s[4..8].copy_from_slice(&head.to_le_bytes());
            decode_state(&s)
        };
        for head in [4, 12, LOG_SIZE as u32, LOG_SIZE as u32 - 40, u32::MAX - 7] {
            assert_eq!(
                with_head(head),
                Err(ClogError::BadOffset { offset: head }),
                "{head}"
            );
        }
        // An entry header that fits but whose strings run past the end.
        let mut s = good.clone();
        let at = LOG_SIZE - 56;
        s[at..at + 48].copy_from_slice(&good[8..56]);
        s[4..8].copy_from_slice(&(at as u32).to_le_bytes());
        assert!(matches!(decode_state(&s), Err(ClogError::PastEnd { .. })));
        // Entry size over 4096.
        let mut s = good.clone();
        s[8 + 40..8 + 44].copy_from_slice(&5000u32.to_le_bytes());
        s[4..8].copy_from_slice(&8u32.to_le_bytes());
        assert!(matches!(
            decode_state(&s),
            Err(ClogError::TooLarge { offset: 8, .. })
        ));
        // A broken string inside the ring.
        let mut s = good.clone();
        s[8 + 44 + 1] = b'!';
        s[4..8].copy_from_slice(&8u32.to_le_bytes());
        assert!(matches!(
            decode_state(&s),
            Err(ClogError::InRing { offset: 8, .. })
        ));
        // A zeroed ring says it is empty.
        assert_eq!(with_head(0), Ok(vec![]));
    }

    #[test]
    fn prev_cycles_are_refused() {
        let good = ClusterLog::new("x").encode_state();
        let e = entry("n", "u", 1, 1, "m").encode();
        let put = |ring: &mut Vec<u8>, at: usize, prev: u32| {
            ring[at..at + e.len()].copy_from_slice(&e);
            ring[at..at + 4].copy_from_slice(&prev.to_le_bytes());
        };
        // The newest entry names itself.
        let mut s = good.clone();
        put(&mut s, 8, 8);
        s[4..8].copy_from_slice(&8u32.to_le_bytes());
        assert_eq!(decode_state(&s), Err(ClogError::Cycle { offset: 8 }));
        // Two entries past head + 4096 that name each other: pmxcfs would spin here.
        let mut s = good.clone();
        put(&mut s, 8, 20000);
        put(&mut s, 20000, 40000);
        put(&mut s, 40000, 20000);
        s[4..8].copy_from_slice(&8u32.to_le_bytes());
        assert_eq!(decode_state(&s), Err(ClogError::Cycle { offset: 20000 }));
        // A prev that points forward into this lap just ends the walk.
        let mut s = good.clone();
        put(&mut s, 300, 0);
        put(&mut s, 400, 200);
        put(&mut s, 200, 300);
        s[4..8].copy_from_slice(&400u32.to_le_bytes());
        assert_eq!(decode_state(&s).unwrap().len(), 2);
    }

    #[test]
    fn state_fuzz_never_panics() {
        let mut log = ClusterLog::new("a");
        for i in 0..40u32 {
            log.insert(entry(
                ["a", "b"][i as usize % 2],
                "u",
                i,
                i + 1,
                &"w".repeat(i as usize * 7),
            ));
        }
        let good = log.encode_state();
        let used = 8 + log.entries().map(|e| ring_size(e) as usize).sum::<usize>();
        let mut rng = Lcg(99);
        let mut accepted = 0;
        for _ in 0..4000 {
            let mut s = good.clone();
            for _ in 0..1 + rng.below(6) {
                let at = rng.below(used + 64);
                match rng.below(4) {
                    // A random aligned link somewhere in the ring.
                    0 => {
                        let link = (rng.below(LOG_SIZE / 8) * 8) as u32;
                        let word = at & !3;
                        s[word..word + 4].copy_from_slice(&link.to_le_bytes());
                    }
                    _ => s[at] ^= 1 << rng.below(8),
                }
            }
            if let Ok(entries) = decode_state(&s) {
                accepted += 1;
                let mut merged = ClusterLog::new("z");
                merged.merge(&[None, Some(entries)], 0).unwrap();
                let again = merged.encode_state();
                assert_eq!(again.len(), LOG_SIZE);
                decode_state(&again).unwrap();
                let _ = merged.dump_json(50, Some("u"));
            }
        }
        assert!(accepted > 0 && accepted < 4000, "{accepted}");
    }

    #[test]
    fn backslashes_and_hostile_strings_never_break_the_json() {
        // Made here: the backslash is escaped, so it reads back as one.
        let e = Entry::pack("n1", "root@pam", "t", 1, 6, 5, 1, r#"a\b "q""#).unwrap();
        assert_eq!(e.msg, r#"a\\b \"q\""#);
        let mut log = ClusterLog::new("n1");
        log.insert(e);
        // From a peer (a pmxcfs node, or a hostile one): a lone backslash, a raw quote,
        // a control character, a bad \u escape.
        let mut peer = Entry::pack("n2", "x\"y", "t", 1, 6, 6, 1, "m").unwrap();
        peer.msg = "c:\\dir \\q raw\"quote \u{1} \\u12".into();
        log.insert(peer);
        let dump = log.dump_json(10, None);
        let v: serde_json::Value = serde_json::from_str(&dump).expect("valid JSON");
        assert_eq!(v["data"][1]["msg"], r#"a\b "q""#);
        assert_eq!(v["data"][0]["msg"], "c:\\dir \\q raw\"quote \u{1} \\u12");
        assert_eq!(v["data"][0]["user"], "x\"y");
        // Valid escapes pass unchanged: pmxcfs's bytes wherever its JSON is valid.
        assert_eq!(
            json_safe(r#"a \"b\" \u00fc \\ #010"#),
            r#"a \"b\" \u00fc \\ #010"#
        );
        assert!(matches!(json_safe("plain"), std::borrow::Cow::Borrowed(_)));
    }
}
