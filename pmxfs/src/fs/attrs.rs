//! File attributes as pmxcfs reports them: root:www-data, fixed modes, private
//! subtrees root-only, write bits dropped without quorum, whole-second times.

use std::time::{Duration, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};

use memdb::{paths, Entry, Kind, MemDb, ROOT_INODE};

use crate::tree::FuseIno;

/// Mode bits for an entry at `path` (`""` is the root).
pub fn perm(kind: FileType, path: &str, quorate: bool) -> u16 {
    let private = paths::is_private(path);
    let base: u16 = match (kind, private) {
        (FileType::Directory, true) => 0o700,
        (FileType::Directory, false) | (FileType::Symlink, _) => 0o755,
        (_, true) => 0o600,
        (_, false) => 0o640,
    };
    if quorate {
        base
    } else {
        base & !0o222
    }
}

/// Attributes of `size` bytes, `mtime`, `kind` and `perm` for FUSE inode `ino`.
pub fn make(ino: FuseIno, kind: FileType, perm: u16, size: u64, mtime: u32, gid: u32) -> FileAttr {
    let t = UNIX_EPOCH + Duration::from_secs(mtime as u64);
    FileAttr {
        ino: INodeNo(ino.0),
        size,
        blocks: size.div_ceil(512),
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        kind,
        perm,
        nlink: if kind == FileType::Directory { 2 } else { 1 },
        uid: 0,
        gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

/// Attributes of a memdb entry; `size` overrides the committed size (an open handle's
/// unflushed buffer).
pub fn of_entry(db: &MemDb, e: &Entry, quorate: bool, gid: u32, size: Option<u64>) -> FileAttr {
    let kind = match e.row.kind {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
    };
    let path = if e.row.inode == ROOT_INODE {
        String::new()
    } else {
        // Only the private-ness of the path matters; avoid building it for deep paths
        // outside `priv` and `nodes`.
        db.path_of(e.row.inode).unwrap_or_default()
    };
    make(
        FuseIno::of(e.row.inode),
        kind,
        perm(kind, &path, quorate),
        size.unwrap_or(e.size()),
        e.row.mtime,
        gid,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_follow_pmxcfs() {
        assert_eq!(perm(FileType::Directory, "", true), 0o755);
        assert_eq!(perm(FileType::RegularFile, "storage.cfg", true), 0o640);
        assert_eq!(perm(FileType::RegularFile, "priv/authkey.key", true), 0o600);
        assert_eq!(perm(FileType::Directory, "nodes/n1/priv", true), 0o700);
        assert_eq!(perm(FileType::Symlink, "local", true), 0o755);
        assert_eq!(perm(FileType::RegularFile, "storage.cfg", false), 0o440);
        assert_eq!(perm(FileType::Directory, "priv", false), 0o500);
        assert_eq!(perm(FileType::Symlink, "local", false), 0o555);
    }
}
