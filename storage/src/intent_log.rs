//! The intent log: every change the tree accepts is written here before the caller is
//! answered, and reaches SQLite afterwards, in batches, on a background thread (see
//! `logged_store`). A write that returned is in the page cache, which a process crash
//! (kill -9) cannot take back, so an acknowledged change survives a crash exactly as a
//! synchronous `synchronous=NORMAL` commit would; at the next start, recovery applies
//! the records SQLite does not have yet.
//!
//! Record layout, little-endian:
//! `magic u32 | payload length u32 | crc32 of (seq, payload) u32 | seq u64 | payload`.
//! The file is rewritten from its start once everything in it is in SQLite, so what
//! follows the newest record may be an older lap: a scan stops at the first record that
//! is cut short, fails its checksum, or does not continue the sequence.

use memdb::row_codec::{decode_row, encode_row, row_len, Reader, ROW_FIXED};
use memdb::{Inode, RootVersion, Txn};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

const MAGIC: u32 = 0x3158_4c50;
const HEADER: usize = 4 + 4 + 4 + 8;

/// A record whose checksum holds but whose content cannot be decoded: not a torn write
/// but damage or a format this build does not know, so recovery must not guess.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("intent log record {seq} at byte {offset} is malformed: {reason}")]
pub struct Malformed {
    /// Sequence number of the record.
    pub seq: u64,
    /// Where the record starts in the file.
    pub offset: usize,
    /// What did not decode.
    pub reason: String,
}

/// Append the record for change `seq` to `out`.
pub fn encode(seq: u64, txn: &Txn, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&[0; 8]); // length and checksum, filled in below
    out.extend_from_slice(&seq.to_le_bytes());
    put_u32(out, txn.deletes.len());
    for ino in &txn.deletes {
        out.extend_from_slice(&ino.0.to_le_bytes());
    }
    put_u32(out, txn.upserts.len());
    for row in &txn.upserts {
        encode_row(row, out);
    }
    out.extend_from_slice(&txn.root.version.to_le_bytes());
    out.extend_from_slice(&txn.root.writer.to_le_bytes());
    out.extend_from_slice(&txn.root.mtime.to_le_bytes());
    let payload_len = (out.len() - start - HEADER) as u32;
    let crc = crc32fast::hash(&out[start + 12..]);
    out[start + 4..start + 8].copy_from_slice(&payload_len.to_le_bytes());
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
}

/// Bytes the record of `txn` takes, without encoding it.
pub fn encoded_len(txn: &Txn) -> usize {
    HEADER + 4 + 8 * txn.deletes.len() + 4 + txn.upserts.iter().map(row_len).sum::<usize>() + 16
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

/// The records at the start of `bytes` that form the current lap: consecutive sequence
/// numbers, each whole and with a valid checksum.
pub fn scan(bytes: &[u8]) -> Result<Vec<(u64, Txn)>, Malformed> {
    let mut out: Vec<(u64, Txn)> = Vec::new();
    let mut at = 0usize;
    while bytes.len() - at >= HEADER {
        let h = &bytes[at..at + HEADER];
        if u32::from_le_bytes(h[0..4].try_into().unwrap()) != MAGIC {
            break;
        }
        let len = u32::from_le_bytes(h[4..8].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(h[8..12].try_into().unwrap());
        let seq = u64::from_le_bytes(h[12..20].try_into().unwrap());
        let Some(end) = (at + HEADER).checked_add(len).filter(|e| *e <= bytes.len()) else {
            break;
        };
        if crc32fast::hash(&bytes[at + 12..end]) != crc {
            break;
        }
        if out
            .last()
            .is_some_and(|(prev, _)| prev.checked_add(1) != Some(seq))
        {
            break;
        }
        let txn = decode(&bytes[at + HEADER..end]).map_err(|reason| Malformed {
            seq,
            offset: at,
            reason,
        })?;
        out.push((seq, txn));
        at = end;
    }
    Ok(out)
}

fn decode(payload: &[u8]) -> Result<Txn, String> {
    let mut r = Reader::new(payload);
    let deletes = (0..r.count(8, "delete count")?)
        .map(|_| r.u64("deleted inode").map(Inode))
        .collect::<Result<Vec<_>, _>>()?;
    let n = r.count(ROW_FIXED, "row count")?;
    let upserts = (0..n)
        .map(|_| decode_row(&mut r))
        .collect::<Result<Vec<_>, _>>()?;
    let root = RootVersion {
        version: r.u64("version")?,
        writer: r.u32("writer")?,
        mtime: r.u32("mtime")?,
    };
    r.end()?;
    Ok(Txn {
        deletes,
        upserts,
        root,
    })
}

/// The intent log file beside the database.
pub struct LogFile {
    file: File,
    path: PathBuf,
    end: u64,
    buf: Vec<u8>,
}

/// Where the intent log of the database at `db` lives.
pub fn path_for(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-pmxfs-log");
    PathBuf::from(p)
}

impl LogFile {
    /// Open (or create, mode 0600: it holds `priv/` content) the log at `path`, and
    /// return what it holds for recovery. Nothing is changed in an existing file.
    pub fn open(path: &Path) -> std::io::Result<(LogFile, Vec<u8>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok((
            LogFile {
                file,
                path: path.to_path_buf(),
                end: 0,
                buf: Vec::new(),
            },
            bytes,
        ))
    }

    /// Write the record of change `seq` after the previous one. On failure nothing
    /// counts as written: the next record goes to the same place, and a partly written
    /// one is never read back because its checksum fails.
    pub fn append(&mut self, seq: u64, txn: &Txn) -> std::io::Result<()> {
        self.buf.clear();
        encode(seq, txn, &mut self.buf);
        self.file.write_all_at(&self.buf, self.end)?;
        self.end += self.buf.len() as u64;
        // Keep a burst's large buffer from living on.
        if self.buf.capacity() > 1 << 20 {
            self.buf = Vec::new();
        }
        Ok(())
    }

    /// Start the next lap at the beginning of the file (everything in it is in SQLite).
    /// Overwriting in place keeps the file's size, so appends do not change the inode.
    pub fn rewind(&mut self) {
        self.end = 0;
    }

    /// Empty the file (after recovery, or when its content is obsolete).
    pub fn clear(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.end = 0;
        Ok(())
    }

    /// Bytes written in the current lap.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memdb::{Kind, Row};
    use std::sync::Arc;

    fn row(inode: u64, name: &str, data: &[u8]) -> Row {
        Row {
            inode: Inode(inode),
            parent: Inode(0),
            version: inode,
            writer: 3,
            mtime: 1_700_000_000,
            kind: if data.is_empty() {
                Kind::Dir
            } else {
                Kind::File
            },
            name: name.into(),
            data: Arc::new(data.to_vec()),
        }
    }

    fn txn(v: u64) -> Txn {
        Txn {
            deletes: vec![Inode(v - 1), Inode(7)],
            upserts: vec![row(v, &format!("f{v}"), b"content"), row(v + 1, "d", b"")],
            root: RootVersion {
                version: v,
                writer: 3,
                mtime: 1_700_000_001,
            },
        }
    }

    fn same(a: &Txn, b: &Txn) -> bool {
        a.deletes == b.deletes && a.upserts == b.upserts && a.root == b.root
    }

    fn log_of(seqs: std::ops::Range<u64>) -> Vec<u8> {
        let mut out = Vec::new();
        for s in seqs {
            encode(s, &txn(s + 10), &mut out);
        }
        out
    }

    #[test]
    fn records_read_back_as_written() {
        let bytes = log_of(5..9);
        let got = scan(&bytes).unwrap();
        assert_eq!(
            got.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            [5, 6, 7, 8]
        );
        for (s, t) in &got {
            assert!(same(t, &txn(s + 10)));
        }
        let mut one = Vec::new();
        encode(1, &txn(20), &mut one);
        assert_eq!(one.len(), encoded_len(&txn(20)));
    }

    #[test]
    fn a_record_cut_anywhere_is_dropped_and_the_ones_before_kept() {
        let bytes = log_of(1..4);
        let last_start = log_of(1..3).len();
        for cut in last_start..bytes.len() {
            let got = scan(&bytes[..cut]).unwrap();
            assert_eq!(got.len(), 2, "cut at {cut}");
        }
        assert_eq!(scan(&bytes).unwrap().len(), 3);
    }

    #[test]
    fn a_flipped_bit_ends_the_scan_there() {
        let bytes = log_of(1..4);
        let second = log_of(1..2).len();
        for at in second..log_of(1..3).len() {
            let mut b = bytes.clone();
            b[at] ^= 0x10;
            assert_eq!(scan(&b).unwrap().len(), 1, "flip at {at}");
        }
    }

    #[test]
    fn an_older_lap_after_the_newest_record_is_not_read() {
        // lap 1 wrote 1..6; lap 2 rewrote the start with 6..8
        let mut bytes = log_of(1..6);
        let lap2 = log_of(6..8);
        bytes[..lap2.len()].copy_from_slice(&lap2);
        let got = scan(&bytes).unwrap();
        assert_eq!(got.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [6, 7]);
    }

    #[test]
    fn a_record_with_a_valid_checksum_that_does_not_decode_is_an_error() {
        let mut bytes = log_of(1..2);
        // claim a huge upsert count, then fix the checksum so it is not a torn write
        let at = HEADER + 4 + 2 * 8;
        bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let crc = crc32fast::hash(&bytes[12..]);
        bytes[8..12].copy_from_slice(&crc.to_le_bytes());
        let err = scan(&bytes).unwrap_err();
        assert_eq!(err.seq, 1);
        assert!(err.reason.contains("does not fit"), "{err}");
    }

    #[test]
    fn the_file_appends_rewinds_and_clears() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("config.db"));
        assert!(path.ends_with("config.db-pmxfs-log"));
        let (mut log, old) = LogFile::open(&path).unwrap();
        assert!(old.is_empty());
        for s in 1..4 {
            log.append(s, &txn(s + 10)).unwrap();
        }
        log.rewind();
        log.append(4, &txn(20)).unwrap();
        let (_, bytes) = LogFile::open(&path).unwrap();
        let got = scan(&bytes).unwrap();
        assert_eq!(got.len(), 1);
        assert!(same(&got[0].1, &txn(20)));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        log.clear().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }
}
