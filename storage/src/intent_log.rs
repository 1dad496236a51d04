//! The intent log: every change the tree accepts is written here before the caller is
//! answered, and reaches SQLite afterwards, in batches, on a background thread (see
//! `logged_store`). A write that returned is in the page cache, which a process crash
//! (kill -9) cannot take back, so an acknowledged change survives a crash exactly as a
//! synchronous `synchronous=NORMAL` commit would; at the next start, recovery applies
//! the records SQLite does not have yet.
//!
//! Record layout, little-endian:
//! `magic u32 | payload length u32 | crc32 of (seq, payload) u32 | seq u64 | payload`.
//! A record whose payload LZ4 shrinks has its own magic, and its payload is
//! `uncompressed length u32 | LZ4 block`, compressed against the last [`WINDOW`] bytes
//! of the lap's earlier payloads ([`History`]): a file rewritten with a new timestamp
//! (pve-ha-lrm's status, every 10 s) then costs a few dozen bytes of log, not its whole
//! content, and log pages dirtied are the SSD wear this log exists to save
//! (`scripts/bench-wear.sh`). Records of both kinds mix in one file; the history makes
//! a record readable only after the ones before it in its lap, which is how a scan
//! reads anyway.
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
/// A record whose payload is LZ4-compressed ("PLXZ").
const MAGIC_LZ4: u32 = 0x5a58_4c50;
const HEADER: usize = 4 + 4 + 4 + 8;
/// Payloads shorter than this are stored as they are: LZ4 gains little on them, and
/// most changes (renames, deletes, directories) are that small.
const COMPRESS_MIN: usize = 256;
/// An uncompressed payload never exceeds the log's cap; a larger claim is damage.
const RAW_MAX: usize = 64 << 20;
/// How far back a compressed record may refer. LZ4 hashes its whole dictionary for
/// every record, so this is CPU on every logged change (about 1.5 µs per KiB here);
/// 4 KiB holds the previous version of a small status file or two.
pub const WINDOW: usize = 4 << 10;

/// The raw payloads of the current lap so far (their last [`WINDOW`] bytes), which the
/// next record is compressed against. The writer and a scan build the same history
/// from the same records.
#[derive(Debug, Default, Clone)]
pub struct History {
    bytes: Vec<u8>,
}

impl History {
    /// The bytes a record may refer back to.
    fn window(&self) -> &[u8] {
        &self.bytes[self.bytes.len().saturating_sub(WINDOW)..]
    }

    /// Add the raw payload of a record just written (or read).
    fn push(&mut self, raw: &[u8]) {
        if self.bytes.len() + raw.len() > 4 * WINDOW {
            let keep = self.bytes.len().saturating_sub(WINDOW);
            self.bytes.drain(..keep);
        }
        self.bytes.extend_from_slice(raw);
    }

    /// A new lap starts: nothing before it may be referred to.
    pub fn clear(&mut self) {
        self.bytes.clear();
    }
}

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

/// Append the record for change `seq` to `out`, compressed against `history`, and add
/// its payload to `history`.
pub fn encode(seq: u64, txn: &Txn, history: &mut History, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&[0; 8]); // length and checksum, filled in below
    out.extend_from_slice(&seq.to_le_bytes());
    // The raw payload goes in place; only a compressed one is rewritten.
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
    let raw = start + HEADER..out.len();
    let raw_len = raw.len();
    let packed = (raw_len >= COMPRESS_MIN)
        .then(|| lz4_flex::block::compress_with_dict(&out[raw.clone()], history.window()))
        // Only a real gain is worth a format that recovery must decompress.
        .filter(|p| p.len() + 4 + raw_len / 8 <= raw_len);
    history.push(&out[raw]);
    if let Some(p) = packed {
        out.truncate(start + HEADER);
        put_u32(out, raw_len);
        out.extend_from_slice(&p);
        out[start..start + 4].copy_from_slice(&MAGIC_LZ4.to_le_bytes());
    }
    let payload_len = (out.len() - start - HEADER) as u32;
    let crc = crc32fast::hash(&out[start + 12..]);
    out[start + 4..start + 8].copy_from_slice(&payload_len.to_le_bytes());
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
}

/// Bytes the record of `txn` takes before compression, without encoding it.
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
    let mut history = History::default();
    let mut at = 0usize;
    while bytes.len() - at >= HEADER {
        let h = &bytes[at..at + HEADER];
        let magic = u32::from_le_bytes(h[0..4].try_into().unwrap());
        if magic != MAGIC && magic != MAGIC_LZ4 {
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
        let stored = &bytes[at + HEADER..end];
        let malformed = |reason| Malformed {
            seq,
            offset: at,
            reason,
        };
        let raw = if magic == MAGIC_LZ4 {
            std::borrow::Cow::Owned(unpack(stored, history.window()).map_err(malformed)?)
        } else {
            std::borrow::Cow::Borrowed(stored)
        };
        let txn = decode(&raw).map_err(malformed)?;
        history.push(&raw);
        out.push((seq, txn));
        at = end;
    }
    Ok(out)
}

/// The payload of a compressed record, which must decompress (against the lap's
/// history) to exactly the length it claims.
fn unpack(stored: &[u8], window: &[u8]) -> Result<Vec<u8>, String> {
    let Some((len, packed)) = stored.split_first_chunk::<4>() else {
        return Err("compressed record without its length".into());
    };
    let len = u32::from_le_bytes(*len) as usize;
    if len > RAW_MAX {
        return Err(format!("compressed record claims {len} bytes"));
    }
    let mut raw = vec![0; len];
    match lz4_flex::block::decompress_into_with_dict(packed, &mut raw, window) {
        Ok(n) if n == len => Ok(raw),
        Ok(n) => Err(format!("compressed record holds {n} bytes, claims {len}")),
        Err(e) => Err(format!("compressed record does not decompress: {e}")),
    }
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

/// Whether `bytes` (a log file, or its beginning) start with a record's magic: a log
/// that does not holds nothing to replay.
pub fn starts_with_record(bytes: &[u8]) -> bool {
    bytes
        .first_chunk::<4>()
        .is_some_and(|m| matches!(u32::from_le_bytes(*m), MAGIC | MAGIC_LZ4))
}

/// The intent log file beside the database.
pub struct LogFile {
    file: File,
    path: PathBuf,
    end: u64,
    buf: Vec<u8>,
    /// The current lap's payloads, for compression.
    history: History,
    /// The file may start with a record (so `clear` has something to invalidate).
    live: bool,
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
                history: History::default(),
                live: starts_with_record(&bytes),
            },
            bytes,
        ))
    }

    /// Write the record of change `seq` after the previous one. On failure nothing
    /// counts as written: the next record goes to the same place, and a partly written
    /// one is never read back because its checksum fails.
    pub fn append(&mut self, seq: u64, txn: &Txn) -> std::io::Result<()> {
        self.buf.clear();
        encode(seq, txn, &mut self.history, &mut self.buf);
        if let Err(e) = self.file.write_all_at(&self.buf, self.end) {
            // The history now holds a record that is not in the file. Without any, the
            // next record refers to nothing before it, which every reader decodes alike.
            self.history.clear();
            return Err(e);
        }
        self.end += self.buf.len() as u64;
        self.live = true;
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
        self.history.clear();
    }

    /// Make the file hold no record (after recovery, or when its content is obsolete)
    /// by overwriting the first record's magic. The file keeps its length on purpose:
    /// truncating it would free its blocks, and the next appends would make the file
    /// system allocate them again, writing its bitmaps and group descriptors, which
    /// costs more wear than the records themselves.
    pub fn clear(&mut self) -> std::io::Result<()> {
        if self.live {
            self.file.write_all_at(&[0; 4], 0)?;
            self.live = false;
        }
        self.end = 0;
        self.history.clear();
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
        let (mut out, mut h) = (Vec::new(), History::default());
        for s in seqs {
            encode(s, &txn(s + 10), &mut h, &mut out);
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
        encode(1, &txn(20), &mut History::default(), &mut one);
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

    /// A change carrying a 1 KiB status file, as pve-ha-lrm writes it.
    fn status_txn(v: u64) -> Txn {
        let mut body =
            format!(r#"{{"mode":"active","state":"active","timestamp":{v},"results":{{"#);
        for i in 0..12 {
            body.push_str(&format!(
                r#""uid{i:02}":{{"exit_code":0,"sid":"vm:{}","state":"started"}},"#,
                100 + i
            ));
        }
        body.push_str("}}");
        Txn {
            deletes: vec![],
            upserts: vec![row(v, "lrm_status", body.as_bytes())],
            root: RootVersion {
                version: v,
                writer: 1,
                mtime: 1_700_000_002,
            },
        }
    }

    /// A change whose content LZ4 cannot shrink.
    fn noise_txn(v: u64) -> Txn {
        let mut x = v.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let data: Vec<u8> = (0..2048)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        Txn {
            deletes: vec![],
            upserts: vec![row(v, "noise", &data)],
            root: RootVersion {
                version: v,
                writer: 1,
                mtime: 1_700_000_003,
            },
        }
    }

    #[test]
    fn a_compressible_record_is_stored_compressed_and_reads_back() {
        let t = status_txn(9);
        let mut one = Vec::new();
        encode(1, &t, &mut History::default(), &mut one);
        assert_eq!(u32::from_le_bytes(one[..4].try_into().unwrap()), MAGIC_LZ4);
        assert!(
            one.len() * 2 < encoded_len(&t),
            "{} bytes stored for {} raw",
            one.len(),
            encoded_len(&t)
        );
        let got = scan(&one).unwrap();
        assert!(same(&got[0].1, &t));
        let mut plain = Vec::new();
        encode(1, &noise_txn(9), &mut History::default(), &mut plain);
        assert_eq!(u32::from_le_bytes(plain[..4].try_into().unwrap()), MAGIC);
        assert_eq!(plain.len(), encoded_len(&noise_txn(9)));
    }

    #[test]
    fn compressed_and_plain_records_mix_and_a_cut_one_is_dropped() {
        let txns: Vec<Txn> = (1..7)
            .map(|s| match s % 3 {
                0 => status_txn(s),
                1 => noise_txn(s),
                _ => txn(s + 10),
            })
            .collect();
        let (mut bytes, mut h) = (Vec::new(), History::default());
        let mut starts = Vec::new();
        for (i, t) in txns.iter().enumerate() {
            starts.push(bytes.len());
            encode(i as u64 + 1, t, &mut h, &mut bytes);
        }
        let got = scan(&bytes).unwrap();
        assert_eq!(got.len(), txns.len());
        for ((_, g), t) in got.iter().zip(&txns) {
            assert!(same(g, t));
        }
        // the last record (seq 6, compressed) cut anywhere: the five before it stay
        let last = *starts.last().unwrap();
        assert_eq!(
            u32::from_le_bytes(bytes[last..last + 4].try_into().unwrap()),
            MAGIC_LZ4
        );
        for cut in last..bytes.len() {
            assert_eq!(scan(&bytes[..cut]).unwrap().len(), 5, "cut at {cut}");
        }
    }

    #[test]
    fn a_rewrite_refers_back_to_the_version_before_it() {
        let mut h = History::default();
        let (mut bytes, mut sizes) = (Vec::new(), Vec::new());
        for v in 1..6 {
            let before = bytes.len();
            encode(v, &status_txn(v), &mut h, &mut bytes);
            sizes.push(bytes.len() - before);
        }
        // the first stands alone; each later one differs from it in a timestamp
        assert!(sizes[1..].iter().all(|&n| n < 100), "{sizes:?}");
        let got = scan(&bytes).unwrap();
        assert_eq!(got.len(), 5);
        for (s, t) in &got {
            assert!(same(t, &status_txn(*s)));
        }
    }

    #[test]
    fn after_a_failed_write_the_next_record_refers_to_nothing_before_it() {
        let mut h = History::default();
        let mut bytes = Vec::new();
        encode(1, &status_txn(1), &mut h, &mut bytes);
        // record 2 is encoded but never reaches the file, as LogFile::append handles it
        encode(2, &status_txn(2), &mut h, &mut Vec::new());
        h.clear();
        let second = bytes.len();
        encode(2, &status_txn(3), &mut h, &mut bytes);
        assert!(bytes.len() - second > 200, "stands alone");
        let got = scan(&bytes).unwrap();
        assert_eq!(got.len(), 2);
        assert!(same(&got[1].1, &status_txn(3)));
    }

    #[test]
    fn a_new_lap_over_an_old_one_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("config.db"));
        let (mut log, _) = LogFile::open(&path).unwrap();
        for s in 1..30 {
            log.append(s, &status_txn(s)).unwrap();
        }
        log.rewind();
        for s in 30..33 {
            log.append(s, &status_txn(s + 100)).unwrap();
        }
        let (_, bytes) = LogFile::open(&path).unwrap();
        let got = scan(&bytes).unwrap();
        assert_eq!(
            got.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            [30, 31, 32]
        );
        for (s, t) in &got {
            assert!(same(t, &status_txn(s + 100)));
        }
    }

    #[test]
    fn a_compressed_record_that_does_not_decompress_is_an_error() {
        let mut good = Vec::new();
        encode(1, &status_txn(3), &mut History::default(), &mut good);
        let reseal = |mut b: Vec<u8>| {
            let crc = crc32fast::hash(&b[12..]);
            b[8..12].copy_from_slice(&crc.to_le_bytes());
            b
        };
        // a length it does not decompress to
        let mut b = good.clone();
        b[HEADER..HEADER + 4].copy_from_slice(&7u32.to_le_bytes());
        let err = scan(&reseal(b)).unwrap_err();
        assert!(err.reason.contains("compressed record"), "{err}");
        // a length past the cap is refused before any allocation
        let mut b = good.clone();
        b[HEADER..HEADER + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = scan(&reseal(b)).unwrap_err();
        assert!(err.reason.contains("claims"), "{err}");
        // a damaged LZ4 stream
        let mut b = good.clone();
        let n = b.len();
        b[HEADER + 4..n].fill(0xff);
        let err = scan(&reseal(b)).unwrap_err();
        assert_eq!(err.seq, 1);
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
        // Cleared, the file holds no record but keeps its length (and so its blocks).
        let len = std::fs::metadata(&path).unwrap().len();
        log.clear().unwrap();
        let (mut log, bytes) = LogFile::open(&path).unwrap();
        assert_eq!(bytes.len() as u64, len);
        assert!(!starts_with_record(&bytes));
        assert!(scan(&bytes).unwrap().is_empty());
        // A cleared log that is opened again is not written to by clearing it again,
        // and the next lap over the invalidated one reads back.
        assert!(!log.live);
        log.clear().unwrap();
        log.append(5, &txn(30)).unwrap();
        let (_, bytes) = LogFile::open(&path).unwrap();
        let got = scan(&bytes).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, 5);
    }
}
