//! Why a dcdb message is refused. Each variant names the check pmxcfs makes (or, where
//! noted, the one this crate adds because pmxcfs would read out of bounds instead).

use pve_status::wire::WireError;
use thiserror::Error;

/// Why a `pve_dcdb_v1` message or payload cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DcdbError {
    /// The dfsm framing is broken (short header, unknown type, newer protocol).
    #[error(transparent)]
    Wire(#[from] WireError),
    /// An older protocol version: pmxcfs ignores such a message.
    #[error("protocol version {0} is older than this node's")]
    OlderProtocol(u32),
    /// A NORMAL subtype outside 1..=8: pmxcfs leaves the group.
    #[error("unknown dcdb message type {0}")]
    UnknownSubtype(u16),
    /// A FUSE-op payload shorter than its 20-byte header.
    #[error("received short fuse message ({0} < 20)")]
    FuseShort(usize),
    /// `msg_len != 20 + size + pathlen + tolen`.
    #[error("malformed fuse message ({len} bytes, header says {expected})")]
    FuseLength {
        /// Payload bytes delivered.
        len: usize,
        /// What the header's lengths add up to.
        expected: u64,
    },
    /// `path[pathlen - 1] != 0`.
    #[error("malformed fuse message - 'path' not terminated")]
    PathNotTerminated,
    /// `to[tolen - 1] != 0`.
    #[error("malformed fuse message - 'to' not terminated")]
    ToNotTerminated,
    /// An UNLOCK_REQUEST/UNLOCK payload shorter than `csum[32]` + one NUL.
    #[error("received short unlock message ({0} < 33)")]
    UnlockShort(usize),
    /// The unlock path's last byte is not NUL.
    #[error("malformed unlock message - 'path' not terminated")]
    UnlockPathNotTerminated,
    /// An inode record shorter than its 41-byte header.
    #[error("received short inode record ({0} < 41)")]
    UpdateShort(usize),
    /// An inode record's `type` is neither DT_DIR (4) nor DT_REG (8).
    #[error("malformed inode record (unknown inode type {0})")]
    InodeType(u8),
    /// `msg_len - 41 != size + namelen`.
    #[error("malformed inode record ({len} bytes after the header, size + namelen = {expected})")]
    UpdateLength {
        /// Bytes after the 41-byte header.
        len: usize,
        /// `size + namelen`.
        expected: u64,
    },
    /// `name[namelen - 1] != 0` (also `namelen == 0`).
    #[error("malformed inode record (name not terminated)")]
    NameNotTerminated,
    /// A memdb index shorter than its 32-byte header.
    #[error("received short memdb index ({0} < 32)")]
    IndexShort(usize),
    /// The index's `bytes` field is not the payload length.
    #[error("malformed memdb index (len {len} != bytes {bytes})")]
    IndexBytes {
        /// Payload bytes delivered.
        len: usize,
        /// The `bytes` field.
        bytes: u32,
    },
    /// `32 + 40 × size != bytes` (pmxcfs's `memdb_index_copy` check; its receive path
    /// skips it and would walk past the end).
    #[error("memdb index has {size} entries but {bytes} bytes")]
    IndexSize {
        /// The `size` (entry count) field.
        size: u32,
        /// The `bytes` field.
        bytes: u32,
    },
    /// A VERIFY_REQUEST payload that is not exactly 8 bytes.
    #[error("verify request with wrong length ({0} bytes)")]
    VerifyRequestLength(usize),
    /// A VERIFY payload that is not exactly 40 bytes.
    #[error("verify message with wrong length ({0} bytes)")]
    VerifyLength(usize),
}
