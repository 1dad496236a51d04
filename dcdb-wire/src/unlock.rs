//! UNLOCK_REQUEST (7) and UNLOCK (8): `u8 csum[32]` then the lock directory's path,
//! NUL-terminated, with no FUSE header (`dcdb_send_unlock`, `dcdb_parse_unlock_request`).

use crate::bytes::Reader;
use crate::fuse::c_view;
use crate::DcdbError;

/// The shortest payload pmxcfs accepts: the checksum and an empty path's NUL.
pub const UNLOCK_MIN: usize = 33;

/// An UNLOCK_REQUEST or UNLOCK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnlockMsg {
    /// `true`: UNLOCK_REQUEST (7), any node asks; `false`: UNLOCK (8), the lowest node
    /// decided the lock expired.
    pub request: bool,
    /// The lock directory's `memdb_tree_entry_csum` as the sender saw it.
    pub csum: [u8; 32],
    /// The path bytes before the final NUL (pmxcfs reads up to the first NUL).
    pub path: Vec<u8>,
}

impl UnlockMsg {
    /// An UNLOCK_REQUEST (`request`) or UNLOCK of `path` with `csum`.
    pub fn new(request: bool, path: &str, csum: [u8; 32]) -> UnlockMsg {
        UnlockMsg {
            request,
            csum,
            path: path.as_bytes().to_vec(),
        }
    }

    /// The NORMAL subtype: 7 or 8.
    pub fn subtype(&self) -> u16 {
        if self.request {
            7
        } else {
            8
        }
    }

    /// The path as pmxcfs reads it, if UTF-8.
    pub fn path_str(&self) -> Option<&str> {
        c_view(&self.path)
    }

    /// The payload after the 24-byte NORMAL header.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(UNLOCK_MIN + self.path.len());
        out.extend_from_slice(&self.csum);
        out.extend_from_slice(&self.path);
        out.push(0);
        out
    }

    /// Read the payload of NORMAL `subtype` 7 or 8 with pmxcfs's checks: at least 33
    /// bytes, and the last byte NUL.
    pub fn decode(subtype: u16, payload: &[u8]) -> Result<UnlockMsg, DcdbError> {
        let request = match subtype {
            7 => true,
            8 => false,
            o => return Err(DcdbError::UnknownSubtype(o)),
        };
        if payload.len() < UNLOCK_MIN {
            return Err(DcdbError::UnlockShort(payload.len()));
        }
        let mut r = Reader::new(payload);
        let csum = r
            .array::<32>()
            .ok_or(DcdbError::UnlockShort(payload.len()))?;
        match r.rest().split_last() {
            Some((0, path)) => Ok(UnlockMsg {
                request,
                csum,
                path: path.to_vec(),
            }),
            _ => Err(DcdbError::UnlockPathNotTerminated),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{fixture, normal_payload};

    #[test]
    fn captured_unlock_request_and_unlock() {
        for (name, st) in [
            ("n1/00040-pve_dcdb_v1.bin", 7),
            ("n2/00010-pve_dcdb_v1.bin", 7),
            ("n1/00042-pve_dcdb_v1.bin", 8),
        ] {
            let b = fixture(name);
            let (subtype, payload) = normal_payload(&b);
            assert_eq!(subtype, st);
            let m = UnlockMsg::decode(subtype, &payload).unwrap();
            assert_eq!(m.path_str(), Some("priv/lock/capture"));
            assert_eq!(m.request, st == 7);
            // manifest: csum=8f71da98dc3ba065...
            assert_eq!(
                m.csum[..8],
                [0x8f, 0x71, 0xda, 0x98, 0xdc, 0x3b, 0xa0, 0x65]
            );
            assert_eq!(m.encode(), payload);
            assert_eq!(UnlockMsg::new(m.request, "priv/lock/capture", m.csum), m);
        }
    }

    #[test]
    fn wrong_lengths_are_specific_errors() {
        let m = UnlockMsg::new(true, "", [7; 32]).encode();
        assert_eq!(m.len(), 33);
        assert!(UnlockMsg::decode(7, &m).is_ok());
        assert_eq!(
            UnlockMsg::decode(7, &m[..32]),
            Err(DcdbError::UnlockShort(32))
        );
        let mut bad = UnlockMsg::new(false, "x", [0; 32]).encode();
        bad.pop();
        assert_eq!(
            UnlockMsg::decode(8, &bad),
            Err(DcdbError::UnlockPathNotTerminated)
        );
        assert_eq!(UnlockMsg::decode(1, &m), Err(DcdbError::UnknownSubtype(1)));
    }
}
