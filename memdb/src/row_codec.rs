//! The byte form of a tree row, shared by the cluster wire format and the intent log:
//! little-endian fixed fields, `u32`-length-prefixed name and content. The reader
//! checks every length against what is left, so damaged input is an error, never a
//! panic or a huge allocation.

use std::sync::Arc;

use super::entry::{Inode, Kind, Row};

/// Longest name or path accepted.
pub const MAX_NAME: usize = 4096;
/// Largest content accepted (the file limit plus slack).
pub const MAX_DATA: usize = 2 * 1024 * 1024;
/// Bytes of a row with an empty name and no content.
pub const ROW_FIXED: usize = 8 * 3 + 4 * 2 + 1 + 4 + 4;

/// Append `b` with its `u32` length in front.
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// Append `row`.
pub fn encode_row(row: &Row, out: &mut Vec<u8>) {
    out.extend_from_slice(&row.inode.0.to_le_bytes());
    out.extend_from_slice(&row.parent.0.to_le_bytes());
    out.extend_from_slice(&row.version.to_le_bytes());
    out.extend_from_slice(&row.writer.to_le_bytes());
    out.extend_from_slice(&row.mtime.to_le_bytes());
    out.push(row.kind.dtype());
    put_bytes(out, row.name.as_bytes());
    put_bytes(out, &row.data);
}

/// Bytes [`encode_row`] appends for `row`.
pub fn row_len(row: &Row) -> usize {
    ROW_FIXED + row.name.len() + row.data.len()
}

/// Read the next row.
pub fn decode_row(r: &mut Reader<'_>) -> Result<Row, String> {
    let inode = Inode(r.u64("inode")?);
    let parent = Inode(r.u64("parent")?);
    let version = r.u64("version")?;
    let writer = r.u32("writer")?;
    let mtime = r.u32("mtime")?;
    let t = r.u8("type")?;
    let kind = Kind::from_dtype(t as i64).ok_or_else(|| format!("bad entry type {t}"))?;
    let name = r.string("name")?;
    let data = r.bytes(MAX_DATA, "data")?.to_vec();
    Ok(Row {
        inode,
        parent,
        version,
        writer,
        mtime,
        kind,
        name,
        data: Arc::new(data),
    })
}

/// A cursor over encoded bytes; `what` names the field in errors.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Read from the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if self.buf.len() < n {
            return Err(format!(
                "truncated {what}: need {n} bytes, have {}",
                self.buf.len()
            ));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    /// One byte.
    pub fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }

    /// A little-endian `u32`.
    pub fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }

    /// A little-endian `u64`.
    pub fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }

    /// Length-prefixed bytes, at most `max`.
    pub fn bytes(&mut self, max: usize, what: &str) -> Result<&'a [u8], String> {
        let n = self.u32(what)? as usize;
        if n > max {
            return Err(format!("{what} of {n} bytes exceeds {max}"));
        }
        self.take(n, what)
    }

    /// A length-prefixed UTF-8 string of at most [`MAX_NAME`] bytes.
    pub fn string(&mut self, what: &str) -> Result<String, String> {
        let b = self.bytes(MAX_NAME, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
    }

    /// A `u32` count of items of at least `min_item` bytes each, checked against what
    /// is left so that a damaged count cannot make the caller reserve gigabytes.
    pub fn count(&mut self, min_item: usize, what: &str) -> Result<usize, String> {
        let n = self.u32(what)? as usize;
        if n.saturating_mul(min_item) > self.buf.len() {
            return Err(format!(
                "{what} {n} does not fit in {} bytes",
                self.buf.len()
            ));
        }
        Ok(n)
    }

    /// Fail unless everything was read.
    pub fn end(&self) -> Result<(), String> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(format!("{} trailing bytes", self.buf.len()))
        }
    }
}
