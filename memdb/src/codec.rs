//! Wire encoding of memdb operations and rows for cluster-sync messages: tagged,
//! length-prefixed little-endian fields, decoded defensively (bounded lengths, UTF-8
//! names, no trailing bytes) so a malformed message is an error, never a panic.

use cluster_sync::wire::WireCodec;

use crate::row_codec::{decode_row, encode_row, put_bytes, Reader, MAX_DATA};
use crate::{Op, Row};

/// The codec for pmxfs's replicated tree.
pub struct MemdbCodec;

impl WireCodec for MemdbCodec {
    type Op = Op;
    type Entry = Row;

    fn encode_op(op: &Op, out: &mut Vec<u8>) {
        match op {
            Op::Create { path } => {
                out.push(1);
                put_bytes(out, path.as_bytes());
            }
            Op::Mkdir { path } => {
                out.push(2);
                put_bytes(out, path.as_bytes());
            }
            Op::Write {
                path,
                offset,
                data,
                truncate,
            } => {
                out.push(3);
                put_bytes(out, path.as_bytes());
                out.extend_from_slice(&offset.to_le_bytes());
                out.push(u8::from(*truncate));
                put_bytes(out, data);
            }
            Op::Delete { path } => {
                out.push(4);
                put_bytes(out, path.as_bytes());
            }
            Op::Rename { from, to } => {
                out.push(5);
                put_bytes(out, from.as_bytes());
                put_bytes(out, to.as_bytes());
            }
            Op::Mtime { path, mtime } => {
                out.push(6);
                put_bytes(out, path.as_bytes());
                out.extend_from_slice(&mtime.to_le_bytes());
            }
            Op::UnlockRequest { path, csum } => {
                out.push(7);
                put_bytes(out, path.as_bytes());
                out.extend_from_slice(csum);
            }
            Op::Unlock { path, csum } => {
                out.push(8);
                put_bytes(out, path.as_bytes());
                out.extend_from_slice(csum);
            }
        }
    }

    fn decode_op(buf: &[u8]) -> Result<Op, String> {
        let mut r = Reader::new(buf);
        let op = match r.u8("op tag")? {
            1 => Op::Create {
                path: r.string("path")?,
            },
            2 => Op::Mkdir {
                path: r.string("path")?,
            },
            3 => {
                let path = r.string("path")?;
                let offset = r.u64("offset")?;
                let truncate = match r.u8("truncate flag")? {
                    0 => false,
                    1 => true,
                    t => return Err(format!("bad truncate flag {t}")),
                };
                let data = r.bytes(MAX_DATA, "data")?.to_vec();
                Op::Write {
                    path,
                    offset,
                    data,
                    truncate,
                }
            }
            4 => Op::Delete {
                path: r.string("path")?,
            },
            5 => Op::Rename {
                from: r.string("from")?,
                to: r.string("to")?,
            },
            6 => Op::Mtime {
                path: r.string("path")?,
                mtime: r.u32("mtime")?,
            },
            7 => Op::UnlockRequest {
                path: r.string("path")?,
                csum: csum(&mut r)?,
            },
            8 => Op::Unlock {
                path: r.string("path")?,
                csum: csum(&mut r)?,
            },
            t => return Err(format!("unknown op tag {t}")),
        };
        r.end()?;
        Ok(op)
    }

    fn encode_entry(e: &Row, out: &mut Vec<u8>) {
        encode_row(e, out);
    }

    fn decode_entry(buf: &[u8]) -> Result<Row, String> {
        let mut r = Reader::new(buf);
        let row = decode_row(&mut r)?;
        r.end()?;
        Ok(row)
    }
}

fn csum(r: &mut Reader<'_>) -> Result<[u8; 32], String> {
    Ok(r.take(32, "csum")?.try_into().expect("32 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kind;
    use std::sync::Arc;

    fn ops() -> Vec<Op> {
        vec![
            Op::Create { path: "a/b".into() },
            Op::Mkdir {
                path: "priv/lock/x".into(),
            },
            Op::Write {
                path: "f".into(),
                offset: 7,
                data: b"xyz".to_vec(),
                truncate: true,
            },
            Op::Delete { path: "f".into() },
            Op::Rename {
                from: "a".into(),
                to: "b".into(),
            },
            Op::Mtime {
                path: "f".into(),
                mtime: 99,
            },
            Op::UnlockRequest {
                path: "priv/lock/x".into(),
                csum: [0xa5; 32],
            },
            Op::Unlock {
                path: "priv/lock/y".into(),
                csum: std::array::from_fn(|i| i as u8),
            },
        ]
    }

    #[test]
    fn round_trip() {
        for op in ops() {
            let mut b = Vec::new();
            MemdbCodec::encode_op(&op, &mut b);
            assert_eq!(MemdbCodec::decode_op(&b), Ok(op));
        }
        let row = Row {
            inode: crate::Inode(5),
            parent: crate::Inode(0),
            version: 9,
            writer: 2,
            mtime: 3,
            kind: Kind::File,
            name: "n".into(),
            data: Arc::new(b"d".to_vec()),
        };
        let mut b = Vec::new();
        MemdbCodec::encode_entry(&row, &mut b);
        assert_eq!(MemdbCodec::decode_entry(&b), Ok(row));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let mut seed = 0x9e3779b97f4a7c15u64;
        for op in ops() {
            let mut b = Vec::new();
            MemdbCodec::encode_op(&op, &mut b);
            for cut in 0..b.len() {
                assert!(
                    MemdbCodec::decode_op(&b[..cut]).is_err(),
                    "{op:?} cut at {cut}"
                );
            }
            for _ in 0..200 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let mut m = b.clone();
                let i = (seed as usize) % m.len();
                m[i] ^= (seed >> 32) as u8 | 1;
                let _ = MemdbCodec::decode_op(&m);
            }
        }
        assert!(MemdbCodec::decode_op(&[3, 0xff, 0xff, 0xff, 0xff])
            .unwrap_err()
            .contains("exceeds"));
        assert!(MemdbCodec::decode_op(&[9])
            .unwrap_err()
            .contains("unknown op tag"));
        // An unlock whose csum is one byte short, or has one byte too many.
        let mut b = Vec::new();
        MemdbCodec::encode_op(
            &Op::Unlock {
                path: "p".into(),
                csum: [1; 32],
            },
            &mut b,
        );
        assert_eq!(b.len(), 1 + 4 + 1 + 32);
        assert!(MemdbCodec::decode_op(&b[..b.len() - 1])
            .unwrap_err()
            .contains("truncated csum"));
        b.push(0);
        assert!(MemdbCodec::decode_op(&b).unwrap_err().contains("trailing"));
    }
}
