//! VERIFY_REQUEST (`u64 csum_id`) and VERIFY (`u64 csum_id; u8 csum[32]`) payloads
//! (`dfsm_verify_request`, `dfsm_send_checksum`); pmxcfs requires exactly 8 and 40 bytes.

use crate::bytes::Reader;
use crate::DcdbError;

/// Read a VERIFY_REQUEST payload: exactly 8 bytes.
pub fn decode_verify_request(payload: &[u8]) -> Result<u64, DcdbError> {
    let mut r = Reader::new(payload);
    match (r.u64(), r.rest().is_empty()) {
        (Some(id), true) => Ok(id),
        _ => Err(DcdbError::VerifyRequestLength(payload.len())),
    }
}

/// A VERIFY_REQUEST payload.
pub fn encode_verify_request(csum_id: u64) -> Vec<u8> {
    csum_id.to_le_bytes().to_vec()
}

/// Read a VERIFY payload: exactly 40 bytes.
pub fn decode_verify(payload: &[u8]) -> Result<(u64, [u8; 32]), DcdbError> {
    let mut r = Reader::new(payload);
    match (r.u64(), r.array::<32>(), r.rest().is_empty()) {
        (Some(id), Some(csum), true) => Ok((id, csum)),
        _ => Err(DcdbError::VerifyLength(payload.len())),
    }
}

/// A VERIFY payload.
pub fn encode_verify(csum_id: u64, csum: &[u8; 32]) -> Vec<u8> {
    let mut out = csum_id.to_le_bytes().to_vec();
    out.extend_from_slice(csum);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{fixture, state_payload};

    #[test]
    fn captured_verify_pair() {
        let p = state_payload(&fixture("n1/00066-pve_dcdb_v1.bin"), 5);
        assert_eq!(decode_verify_request(&p), Ok(1));
        assert_eq!(encode_verify_request(1), p);
        let p = state_payload(&fixture("n1/00067-pve_dcdb_v1.bin"), 6);
        let (id, csum) = decode_verify(&p).unwrap();
        // manifest: csum_id=0000000000000001 csum=826ed0b91cb8ab91...
        assert_eq!(id, 1);
        assert_eq!(csum[..4], [0x82, 0x6e, 0xd0, 0xb9]);
        assert_eq!(encode_verify(id, &csum), p);
    }

    #[test]
    fn wrong_lengths() {
        assert_eq!(
            decode_verify_request(&[0; 7]),
            Err(DcdbError::VerifyRequestLength(7))
        );
        assert_eq!(
            decode_verify_request(&[0; 9]),
            Err(DcdbError::VerifyRequestLength(9))
        );
        assert_eq!(decode_verify(&[0; 39]), Err(DcdbError::VerifyLength(39)));
        assert_eq!(decode_verify(&[0; 41]), Err(DcdbError::VerifyLength(41)));
    }
}
