//! Per-path generation counters published by the pmxfs daemon in a small shared-memory
//! file, so that clients can tell "has this file changed?" by comparing one integer.
//!
//! # Why
//! pmxcfs exposes per-path change counters through its `.version` plug file; reading that
//! costs a FUSE round trip and a JSON parse. Hot paths such as the API-token cache need a
//! check that costs one atomic load, and that is *coherent*: once the daemon has applied a
//! change to a tracked path (a local write or one replicated from another node), every
//! process on the node sees a new generation before it can read the new content. This
//! module defines that file and both of its ends.
//!
//! # File
//! `$PMXFS_RUN_DIR/<escaped mount path>.versions` (see [`shm_path_for_mount`]), mode
//! 0644, exactly [`SHM_SIZE`] bytes, in tmpfs (`/run`), so it survives daemon restarts but
//! not reboots. A reboot resets the counters, which is harmless because every consumer
//! keeps only per-process caches.
//!
//! # Layout (native endianness; the file never leaves the host)
//! | offset | field |
//! |---|---|
//! | 0 | `magic: [u8; 8]` = first 8 bytes of sha256("pmxfs version-shm v1") |
//! | 8 | `layout_version: u32` = 1 |
//! | 12 | `slot_count: u32` (slots in use; only ever grows) |
//! | 16 | `instance: u64` (new value at every daemon start) |
//! | 24..64 | zero padding |
//! | 64 + 8·i | slot `i`: `AtomicU64` generation of [`TRACKED_PATHS`]`[i]` |
//!
//! # Guarantees
//! - A slot only ever increases while the file exists (`fetch_add`), so "generation
//!   unchanged" means "no change was applied in between".
//! - The writer reuses a valid existing file instead of replacing it, so mappings held by
//!   long-running clients stay live across daemon restarts; on every open it bumps all
//!   slots because the database may have changed while no daemon was running.
//! - Slots are appended, never reordered: a newer daemon grows `slot_count` in place and
//!   older clients keep reading the slots they know.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::observed::OBSERVED_PATHS;
use crate::run_dir::{escape_mount_path, run_dir};
use std::sync::LazyLock;

#[cfg(not(target_has_atomic = "64"))]
compile_error!("version_shm needs native 64-bit atomics (plain loads on a read-only mapping)");

/// Paths (relative to the mount, no leading slash) that have a generation slot.
///
/// Append-only: the slot index of a path is its position here and is part of the file
/// format shared with already-running clients. The first 43 entries are the paths pmxcfs
/// tracks in `.version` (`status.c:memdb_change_array`), in the same order; the rest are
/// the auth-key and API-token files used by the `auth-key` crate. Adding a path to
/// `OBSERVED_PATHS` therefore moves these and needs a new layout version.
pub const TRACKED_PATHS: &[&str] = &TRACKED;

/// The auth-key and API-token files tracked after pmxcfs's paths.
const EXTRA_PATHS: &[&str] = &[
    "priv/token.shadow",
    "authkey.pub",
    "authkey.pub.old",
    "priv/authkey.key",
    "pve-www.key",
];

const TRACKED: [&str; OBSERVED_PATHS.len() + EXTRA_PATHS.len()] = {
    let mut out = [""; OBSERVED_PATHS.len() + EXTRA_PATHS.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = if i < OBSERVED_PATHS.len() {
            OBSERVED_PATHS[i]
        } else {
            EXTRA_PATHS[i - OBSERVED_PATHS.len()]
        };
        i += 1;
    }
    out
};

/// Total size of the shared file in bytes (one page).
pub const SHM_SIZE: usize = 4096;
/// Size of the header that precedes the slots.
pub const HEADER_SIZE: usize = 64;
/// Number of slots the file can ever hold.
pub const MAX_SLOTS: usize = (SHM_SIZE - HEADER_SIZE) / 8;
/// File magic: the first 8 bytes of sha256("pmxfs version-shm v1").
pub const MAGIC: [u8; 8] = [126, 68, 120, 164, 229, 151, 204, 106];
/// Layout version written at offset 8.
pub const LAYOUT_VERSION: u32 = 1;
const OFF_MAGIC: usize = 0;
const OFF_LAYOUT: usize = 8;
const OFF_SLOT_COUNT: usize = 12;
const OFF_INSTANCE: usize = 16;

const _: () = assert!(TRACKED_PATHS.len() <= MAX_SLOTS);

static SLOT_INDEX: LazyLock<HashMap<&'static str, usize>> = LazyLock::new(|| {
    TRACKED_PATHS
        .iter()
        .enumerate()
        .map(|(i, p)| (*p, i))
        .collect()
});

/// Slot index of `path` (relative to the mount, no leading slash), if it is tracked.
///
/// A hash lookup: this runs on the daemon's write path for every modified file.
pub fn slot_of(path: &str) -> Option<usize> {
    SLOT_INDEX.get(path).copied()
}

/// Version file of the pmxfs mounted at `mount`, inside [`run_dir`].
///
/// The name is the absolute, lexically normalised mount path escaped like
/// `systemd-escape --path` (see [`escape_mount_path`]) plus `.versions`, e.g.
/// `/etc/pve` → `/run/pmxfs/etc-pve.versions`.
pub fn shm_path_for_mount(mount: &Path) -> PathBuf {
    shm_path_in(&run_dir(), mount)
}

/// Like [`shm_path_for_mount`] with an explicit run directory.
pub fn shm_path_in(run_dir: &Path, mount: &Path) -> PathBuf {
    let mut name = escape_mount_path(mount).into_bytes();
    name.extend_from_slice(b".versions");
    run_dir.join(OsString::from_vec(name))
}

/// A `SHM_SIZE`-byte `MAP_SHARED` mapping of a version file, accessed only through
/// atomics at 8-byte aligned offsets.
struct Mapping {
    ptr: NonNull<u8>,
}

// SAFETY: the mapping is only accessed through atomic types (`AtomicU32`/`AtomicU64`),
// which are `Sync`; the pointer itself is never handed out.
unsafe impl Send for Mapping {}
// SAFETY: as above: all shared access goes through atomics.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn map(file: &File, writable: bool) -> io::Result<Self> {
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: we request a fresh mapping (addr NULL) of SHM_SIZE bytes of an open file
        // descriptor at offset 0; the caller has checked that the file is SHM_SIZE bytes
        // long, so no access within the mapping can fault with SIGBUS unless the file is
        // truncated later, which the writer never does to a file it published.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                SHM_SIZE,
                prot,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave NULL"))?;
        Ok(Mapping { ptr })
    }

    fn u64_at(&self, off: usize) -> &AtomicU64 {
        assert!(off % 8 == 0 && off + 8 <= SHM_SIZE);
        // SAFETY: `off` is 8-aligned and in bounds (asserted); the mapping is page aligned
        // and lives as long as `self`; AtomicU64 has the size and alignment of u64 and
        // every access to this memory, in this and other processes, is atomic.
        unsafe { &*self.ptr.as_ptr().add(off).cast::<AtomicU64>() }
    }

    fn u32_at(&self, off: usize) -> &AtomicU32 {
        assert!(off % 4 == 0 && off + 4 <= SHM_SIZE);
        // SAFETY: as in `u64_at`, for a 4-aligned in-bounds AtomicU32.
        unsafe { &*self.ptr.as_ptr().add(off).cast::<AtomicU32>() }
    }

    fn magic(&self) -> [u8; 8] {
        self.u64_at(OFF_MAGIC).load(Ordering::Acquire).to_ne_bytes()
    }

    fn layout_version(&self) -> u32 {
        self.u32_at(OFF_LAYOUT).load(Ordering::Acquire)
    }

    fn slot_count(&self) -> u32 {
        self.u32_at(OFF_SLOT_COUNT).load(Ordering::Acquire)
    }

    fn instance(&self) -> u64 {
        self.u64_at(OFF_INSTANCE).load(Ordering::Acquire)
    }

    fn slot(&self, slot: usize) -> &AtomicU64 {
        assert!(slot < MAX_SLOTS, "version slot {slot} out of range");
        self.u64_at(HEADER_SIZE + slot * 8)
    }

    /// Why the mapped header is not a valid version file, if it is not.
    fn invalid_reason(&self) -> Option<String> {
        let magic = self.magic();
        if magic != MAGIC {
            return Some(format!("bad magic {magic:02x?}"));
        }
        let v = self.layout_version();
        if v != LAYOUT_VERSION {
            return Some(format!("unsupported layout version {v}"));
        }
        let n = self.slot_count();
        if n as usize > MAX_SLOTS {
            return Some(format!("slot count {n} exceeds {MAX_SLOTS}"));
        }
        None
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from a successful mmap of SHM_SIZE bytes, and no reference
        // into it outlives `self` (all accessors borrow `self`).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), SHM_SIZE);
        }
    }
}

fn invalid_data(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("version file {}: {what}", path.display()),
    )
}

fn check_size(path: &Path, file: &File) -> io::Result<()> {
    let len = file.metadata()?.len();
    if len != SHM_SIZE as u64 {
        return Err(invalid_data(
            path,
            &format!("size {len}, expected {SHM_SIZE}"),
        ));
    }
    Ok(())
}

/// The daemon's end: owns the version file of one mount and bumps its slots.
pub struct VersionShmWriter {
    path: PathBuf,
    map: Mapping,
}

impl VersionShmWriter {
    /// Open the version file at `path`, creating it (and its directory, mode 0755) if
    /// needed. A valid existing file is reused in place so that clients' mappings stay
    /// live; a file with a wrong size, magic or layout is replaced (with a warning). In
    /// both cases a new `instance` is set and every slot is bumped, because the database
    /// may have changed while no daemon was running.
    pub fn open_or_create(path: &Path) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)?;
        }
        // Bounded: we only loop when another creator won the race to link the file.
        for _ in 0..4 {
            match OpenOptions::new().read(true).write(true).open(path) {
                Ok(file) => return Self::adopt(path, &file),
                Err(e) if e.kind() == io::ErrorKind::NotFound => match Self::create(path, false) {
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    r => return r,
                },
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other(format!(
            "version file {}: could not open or create it",
            path.display()
        )))
    }

    /// Take over an existing file if it is valid, else replace it.
    fn adopt(path: &Path, file: &File) -> io::Result<Self> {
        let reason = match check_size(path, file) {
            Err(e) if e.kind() == io::ErrorKind::InvalidData => Some(e.to_string()),
            Err(e) => return Err(e),
            Ok(()) => None,
        };
        let map = match reason {
            Some(_) => None,
            None => Some(Mapping::map(file, true)?),
        };
        let reason = reason.or_else(|| map.as_ref().and_then(Mapping::invalid_reason));
        match (map, reason) {
            (Some(map), None) => {
                let meta = file.metadata()?;
                if meta.permissions().mode() & 0o7777 != 0o644 {
                    file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
                }
                let w = VersionShmWriter {
                    path: path.to_path_buf(),
                    map,
                };
                // Grow in place: new slots were zero and no old client reads them.
                let want = TRACKED_PATHS.len() as u32;
                w.map
                    .u32_at(OFF_SLOT_COUNT)
                    .fetch_max(want, Ordering::AcqRel);
                let old = w.map.instance();
                w.map
                    .u64_at(OFF_INSTANCE)
                    .store(new_instance(old), Ordering::Release);
                w.bump_all();
                tracing::debug!(path = %path.display(), "reusing version file");
                Ok(w)
            }
            (_, reason) => {
                tracing::warn!(
                    path = %path.display(),
                    "replacing invalid version file: {}",
                    reason.unwrap_or_default()
                );
                Self::create(path, true)
            }
        }
    }

    /// Build a complete file under a temporary name and publish it: `link` when none
    /// exists (fails with `AlreadyExists` instead of clobbering a concurrent creator's
    /// file), `rename` when replacing an invalid one.
    fn create(path: &Path, replace: bool) -> io::Result<Self> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut tmp_name = OsString::from(".");
        tmp_name.push(path.file_name().unwrap_or_default());
        tmp_name.push(format!(".tmp.{}", std::process::id()));
        let tmp = dir.join(tmp_name);
        let _ = std::fs::remove_file(&tmp);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        let result = (|| {
            // Explicit chmod: the umask may have removed bits from the create mode.
            file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
            file.set_len(SHM_SIZE as u64)?;
            let map = Mapping::map(&file, true)?;
            map.u64_at(OFF_MAGIC)
                .store(u64::from_ne_bytes(MAGIC), Ordering::Relaxed);
            map.u32_at(OFF_LAYOUT)
                .store(LAYOUT_VERSION, Ordering::Relaxed);
            map.u32_at(OFF_SLOT_COUNT)
                .store(TRACKED_PATHS.len() as u32, Ordering::Relaxed);
            map.u64_at(OFF_INSTANCE)
                .store(new_instance(0), Ordering::Relaxed);
            let w = VersionShmWriter {
                path: path.to_path_buf(),
                map,
            };
            w.bump_all();
            if replace {
                std::fs::rename(&tmp, path)?;
            } else {
                std::fs::hard_link(&tmp, path)?;
            }
            Ok(w)
        })();
        let _ = std::fs::remove_file(&tmp);
        result
    }

    /// Path of the version file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Record a change of `path` (relative to the mount, no leading slash). Untracked
    /// paths are ignored.
    ///
    /// Call it *after* the change is visible to readers through the filesystem (committed
    /// and the kernel's cached data for it invalidated) and before acknowledging the
    /// operation: a client that reads the generation, then the file, then the generation
    /// again relies on "content changed ⇒ generation moves afterwards".
    pub fn bump(&self, path: &str) {
        if let Some(slot) = slot_of(path) {
            self.bump_slot(slot);
        }
    }

    /// Increment one slot (Release, so a reader that sees the new value with Acquire also
    /// sees everything this thread did before).
    ///
    /// # Panics
    /// If `slot >= MAX_SLOTS`.
    pub fn bump_slot(&self, slot: usize) {
        self.map.slot(slot).fetch_add(1, Ordering::Release);
    }

    /// Increment every tracked slot: after opening the database or a resync, when any
    /// file may have changed.
    pub fn bump_all(&self) {
        for slot in 0..TRACKED_PATHS.len() {
            self.bump_slot(slot);
        }
    }

    /// Current generation of a slot.
    ///
    /// # Panics
    /// If `slot >= MAX_SLOTS`.
    pub fn generation(&self, slot: usize) -> u64 {
        self.map.slot(slot).load(Ordering::Acquire)
    }

    /// Instance id set when this writer opened the file.
    pub fn instance(&self) -> u64 {
        self.map.instance()
    }
}

/// A value different from `old` and from 0, and unlikely to repeat across starts.
fn new_instance(old: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let x = nanos ^ (u64::from(std::process::id()) << 40);
    if x == old || x == 0 {
        old.wrapping_add(1).max(1)
    } else {
        x
    }
}

/// A client's read-only view of a version file. `Send + Sync`; reading a generation is
/// one atomic load.
pub struct VersionShmReader {
    path: PathBuf,
    map: Mapping,
}

impl VersionShmReader {
    /// Map `path` read-only and validate size, magic and layout version.
    ///
    /// Errors: `NotFound` if the file does not exist (pmxfs not running for that mount),
    /// `InvalidData` naming the problem for a wrong size, bad magic or unknown layout,
    /// or the underlying open/mmap error.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!(
                        "version file {} does not exist (is pmxfs running?)",
                        path.display()
                    ),
                )
            } else {
                e
            }
        })?;
        check_size(path, &file)?;
        let map = Mapping::map(&file, false)?;
        if let Some(reason) = map.invalid_reason() {
            return Err(invalid_data(path, &reason));
        }
        Ok(VersionShmReader {
            path: path.to_path_buf(),
            map,
        })
    }

    /// Open the version file of the pmxfs mounted at `mount` ([`shm_path_for_mount`]).
    pub fn open_for_mount(mount: &Path) -> io::Result<Self> {
        Self::open(&shm_path_for_mount(mount))
    }

    /// Path of the mapped file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Generation of `slot` (Acquire). Only slots below [`Self::slot_count`] are ever
    /// bumped; check that once before relying on a slot.
    ///
    /// # Panics
    /// If `slot >= MAX_SLOTS`.
    pub fn generation(&self, slot: usize) -> u64 {
        self.map.slot(slot).load(Ordering::Acquire)
    }

    /// Number of slots the running daemon maintains.
    pub fn slot_count(&self) -> usize {
        self.map.slot_count() as usize
    }

    /// Instance id of the daemon that last opened the file.
    pub fn instance(&self) -> u64 {
        self.map.instance()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn tracked_paths_and_slots_agree() {
        assert_eq!(TRACKED_PATHS.len(), 48);
        for (i, p) in TRACKED_PATHS.iter().enumerate() {
            assert_eq!(slot_of(p), Some(i), "{p}");
            assert!(!p.starts_with('/'));
        }
        assert_eq!(slot_of("priv/token.shadow"), Some(43));
        assert_eq!(slot_of("pve-www.key"), Some(47));
        assert_eq!(slot_of("/priv/token.shadow"), None);
        assert_eq!(slot_of("nodes/a/qemu-server/100.conf"), None);
    }

    #[test]
    fn magic_is_sha256_prefix() {
        use sha2::Digest;
        let d = sha2::Sha256::digest(b"pmxfs version-shm v1");
        assert_eq!(&d[..8], &MAGIC);
    }

    #[test]
    fn writer_and_reader_see_bumps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/etc-pve.versions");
        let w = VersionShmWriter::open_or_create(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), SHM_SIZE as u64);
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);
        assert_eq!(
            std::fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o755
        );
        let r = VersionShmReader::open(&path).unwrap();
        assert_eq!(r.slot_count(), TRACKED_PATHS.len());
        assert_eq!(r.instance(), w.instance());
        let slot = slot_of("priv/token.shadow").unwrap();
        let other = slot_of("user.cfg").unwrap();
        let g0 = r.generation(slot);
        assert_eq!(g0, 1, "a new file starts with every slot bumped once");
        w.bump("priv/token.shadow");
        w.bump("priv/token.shadow");
        w.bump("not/tracked");
        assert_eq!(r.generation(slot), g0 + 2);
        assert_eq!(r.generation(other), 1);
        w.bump_all();
        assert_eq!(r.generation(slot), g0 + 3);
        assert_eq!(r.generation(other), 2);
        // A reader in another thread sees the same memory.
        let r = std::sync::Arc::new(r);
        let r2 = r.clone();
        let g = std::thread::spawn(move || r2.generation(slot))
            .join()
            .unwrap();
        assert_eq!(g, g0 + 3);
    }

    #[test]
    fn reopening_keeps_inode_and_bumps_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc-pve.versions");
        let w = VersionShmWriter::open_or_create(&path).unwrap();
        let ino = std::fs::metadata(&path).unwrap().ino();
        let first_instance = w.instance();
        w.bump("user.cfg");
        let r = VersionShmReader::open(&path).unwrap();
        let before: Vec<u64> = (0..TRACKED_PATHS.len()).map(|s| r.generation(s)).collect();
        drop(w);
        let w2 = VersionShmWriter::open_or_create(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), ino);
        assert_ne!(w2.instance(), first_instance);
        // The old reader's mapping is the same file: it sees the restart.
        assert_eq!(r.instance(), w2.instance());
        for (s, b) in before.iter().enumerate() {
            assert_eq!(r.generation(s), b + 1, "slot {s}");
        }
    }

    #[test]
    fn corrupt_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.versions");
        std::fs::write(&path, vec![0xAAu8; SHM_SIZE]).unwrap();
        let w = VersionShmWriter::open_or_create(&path).unwrap();
        let r = VersionShmReader::open(&path).unwrap();
        assert_eq!(r.generation(0), 1);
        assert_eq!(r.instance(), w.instance());
        // Wrong size is replaced as well.
        std::fs::write(&path, b"short").unwrap();
        let _w = VersionShmWriter::open_or_create(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), SHM_SIZE as u64);
        VersionShmReader::open(&path).unwrap();
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("x.versions")]);
    }

    #[test]
    fn reader_rejects_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.versions");
        let e = VersionShmReader::open(&missing).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("does not exist"), "{e}");

        let bad = dir.path().join("bad.versions");
        std::fs::write(&bad, vec![0u8; SHM_SIZE]).unwrap();
        let e = VersionShmReader::open(&bad).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("bad magic"), "{e}");

        let mut content = vec![0u8; SHM_SIZE];
        content[..8].copy_from_slice(&MAGIC);
        content[8..12].copy_from_slice(&7u32.to_ne_bytes());
        std::fs::write(&bad, &content).unwrap();
        let e = VersionShmReader::open(&bad).err().unwrap();
        assert!(e.to_string().contains("layout version 7"), "{e}");

        std::fs::write(&bad, &content[..100]).unwrap();
        let e = VersionShmReader::open(&bad).err().unwrap();
        assert!(e.to_string().contains("size 100"), "{e}");
    }
}
