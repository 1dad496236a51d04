//! Applies an RRD update to its file: creates the directories and the file when missing,
//! then updates through rrdcached when one is configured and reachable, and directly
//! through librrd otherwise or when the daemon refuses, as pmxcfs does.
//!
//! Paths to rrdcached: the daemon gets the absolute file path (`dir` joined with the
//! rule's relative path), as pmxcfs sends it. Over a unix socket librrd's client resolves
//! it with `realpath` before sending. A daemon started with `-b <base> -B` (Debian's
//! default: `-b /var/lib/rrdcached/db/ -B`) accepts absolute paths only below `<base>`,
//! so with `dir` the daemon's base directory (PVE's layout) updates are cached, and with
//! any other `dir` the daemon refuses and the update goes to the file directly. Over TCP
//! librrd refuses absolute paths itself, which also ends in the direct update. Either
//! way the file gets the update; only the caching differs.
//!
//! librrd's client writes to the daemon's socket without `MSG_NOSIGNAL`: a daemon gone
//! mid-update raises SIGPIPE, which Rust's runtime ignores by default and the process
//! must keep ignored.
use std::ffi::{c_char, CStr, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use crate::ffi;
use crate::rules::{self, Kind, RuleError};

/// pmxcfs's RRD base directory.
pub const PVE_RRD_DIR: &str = "/var/lib/rrdcached/db";

/// pmxcfs's rrdcached address.
pub const PVE_RRDCACHED: &str = "unix:/var/run/rrdcached.sock";

/// Step of every file, in seconds: the schemas' archive lengths assume it.
const STEP: libc::c_ulong = 60;

/// librrd's rrdcached client has one connection for the whole process: a
/// connect-update-disconnect sequence of one writer must not interleave with another's.
/// The error string is per thread, but holding this across a call and the read of its
/// error also keeps the two together.
static LIBRRD: Mutex<()> = parking_lot::const_mutex(());

/// Why an update did not reach its file.
#[derive(Debug, thiserror::Error)]
pub enum RrdError {
    /// The key or data string breaks the rules; nothing was touched.
    #[error("RRD update error: unknown/wrong key {key:?}: {source}")]
    Rule {
        /// The key as received.
        key: String,
        /// Which rule it breaks.
        source: RuleError,
    },
    /// The file's path cannot be passed to C.
    #[error("RRD path {} contains a NUL byte", path.display())]
    NulInPath {
        /// The file.
        path: PathBuf,
    },
    /// A directory for the file could not be created.
    #[error("could not create directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The OS's reason.
        source: io::Error,
    },
    /// `rrd_create_r` failed.
    #[error("RRD create error {}: {message}", path.display())]
    Create {
        /// The file.
        path: PathBuf,
        /// librrd's message.
        message: String,
    },
    /// The direct `rrd_update_r` failed (after rrdcached did, if one was tried).
    #[error("RRD update error {}: {message}{}", path.display(), daemon_note(daemon))]
    Update {
        /// The file.
        path: PathBuf,
        /// librrd's message for the direct update.
        message: String,
        /// librrd's message for the failed update through rrdcached, if it was tried.
        daemon: Option<String>,
    },
}

fn daemon_note(daemon: &Option<String>) -> String {
    match daemon {
        Some(message) => format!(" (through rrdcached before: {message})"),
        None => String::new(),
    }
}

/// Writes RRD updates below one base directory, optionally through an rrdcached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RrdWriter {
    dir: PathBuf,
    daemon: Option<String>,
}

impl RrdWriter {
    /// A writer for files below `dir`, updating through the rrdcached at `daemon` (e.g.
    /// `unix:/var/run/rrdcached.sock`) when given. An empty address means no daemon:
    /// librrd would otherwise read `RRDCACHED_ADDRESS` from the environment.
    pub fn new(dir: impl Into<PathBuf>, daemon: Option<String>) -> Self {
        Self {
            dir: dir.into(),
            daemon: daemon.filter(|address| !address.is_empty()),
        }
    }

    /// pmxcfs's setup: [`PVE_RRD_DIR`] through [`PVE_RRDCACHED`].
    pub fn pve() -> Self {
        Self::new(PVE_RRD_DIR, Some(PVE_RRDCACHED.to_owned()))
    }

    /// The base directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The rrdcached address, if updates go through one.
    pub fn daemon(&self) -> Option<&str> {
        self.daemon.as_deref()
    }

    /// Apply pvestatd's `data` for `key` (the part after `rrd/`) to its 9.0 file.
    pub fn update(&self, key: &str, data: &str) -> Result<(), RrdError> {
        let update = rules::parse(key, data).map_err(|source| RrdError::Rule {
            key: key.to_owned(),
            source,
        })?;
        let path = self.dir.join(&update.rel_path);
        let c_path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| RrdError::NulInPath { path: path.clone() })?;
        // The rules let no NUL into the values.
        let c_values = CString::new(update.values).map_err(|_| RrdError::Rule {
            key: key.to_owned(),
            source: RuleError::Nul,
        })?;

        let _librrd = LIBRRD.lock();
        // Anything there, even a dangling link, is left to librrd to report on update:
        // creating over it could clobber what someone else put there. When nothing can
        // be seen (missing, or a parent is no directory), creating reports the cause.
        if std::fs::symlink_metadata(&path).is_err() {
            self.create(update.kind, &path, &c_path)?;
        }
        let daemon = match &self.daemon {
            Some(address) => match update_through_daemon(address, &c_path, &c_values) {
                Ok(()) => return Ok(()),
                Err(message) => message,
            },
            None => None,
        };
        update_direct(&c_path, &c_values).map_err(|message| RrdError::Update {
            path,
            message,
            daemon,
        })
    }

    /// Create the missing directories (mode 0750) and a new file of `kind`'s schema.
    fn create(&self, kind: Kind, path: &Path, c_path: &CStr) -> Result<(), RrdError> {
        if let Some(parent) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(parent)
                .map_err(|source| RrdError::CreateDir {
                    path: parent.to_owned(),
                    source,
                })?;
        }
        let schema: Vec<CString> = rules::schema(kind)
            .iter()
            .filter_map(|def| CString::new(*def).ok())
            .collect();
        let mut argv: Vec<*const c_char> = schema.iter().map(|def| def.as_ptr()).collect();
        let Ok(argc) = std::ffi::c_int::try_from(argv.len()) else {
            return Err(RrdError::Create {
                path: path.to_owned(),
                message: format!("{} schema definitions are too many", argv.len()),
            });
        };
        // The first update comes after the file's start; at local midnight, as pmxcfs
        // does, so that one can come from any time today.
        let start = local_midnight(now());
        // SAFETY: c_path and every argv entry are NUL-terminated strings that outlive the
        // call (schema owns them); librrd reads argc entries and keeps no pointer.
        let rc = unsafe {
            ffi::rrd_clear_error();
            ffi::rrd_create_r(c_path.as_ptr(), STEP, start, argc, argv.as_mut_ptr())
        };
        if rc != 0 {
            return Err(RrdError::Create {
                path: path.to_owned(),
                message: last_error(rc),
            });
        }
        Ok(())
    }
}

/// Update through rrdcached. `Err(None)` when it cannot be reached (a silent fallback,
/// as in pmxcfs), `Err(Some(message))` when it refused the update.
fn update_through_daemon(
    address: &str,
    c_path: &CStr,
    c_values: &CStr,
) -> Result<(), Option<String>> {
    let Ok(c_address) = CString::new(address) else {
        return Err(Some(format!("address {address:?} contains a NUL byte")));
    };
    // SAFETY: c_address is a NUL-terminated string librrd copies if it keeps it.
    let connected = unsafe {
        ffi::rrdc_connect(c_address.as_ptr()) == 0
            && ffi::rrdc_is_connected(c_address.as_ptr()) != 0
    };
    if !connected {
        tracing::debug!("rrdcached at {address} not reachable: {}", last_error(-1));
        return Err(None);
    }
    let values = [c_values.as_ptr()];
    // SAFETY: one NUL-terminated value and a NUL-terminated path, valid for the call.
    let rc = unsafe {
        ffi::rrd_clear_error();
        ffi::rrdc_update(c_path.as_ptr(), 1, values.as_ptr())
    };
    if rc == 0 {
        return Ok(());
    }
    let message = last_error(rc);
    tracing::warn!(
        "RRDC update error {}: {message}; updating the file directly",
        c_path.to_string_lossy()
    );
    // A broken or refusing connection is opened anew next time.
    // SAFETY: no arguments; closes librrd's own connection.
    unsafe {
        ffi::rrdc_disconnect();
    }
    Err(Some(message))
}

fn update_direct(c_path: &CStr, c_values: &CStr) -> Result<(), String> {
    let mut argv = [c_values.as_ptr()];
    // SAFETY: as for rrdc_update; no template. The rules allow no `@` in the values, so
    // librrd's not thread-safe at-style time parsing is never used.
    let rc = unsafe {
        ffi::rrd_clear_error();
        ffi::rrd_update_r(c_path.as_ptr(), std::ptr::null(), 1, argv.as_mut_ptr())
    };
    if rc != 0 {
        return Err(last_error(rc));
    }
    Ok(())
}

/// librrd's message for this thread's last failed call.
fn last_error(rc: i32) -> String {
    // SAFETY: rrd_get_error returns this thread's context buffer (NUL-terminated) or
    // NULL; it is copied before any other librrd call can change it.
    let message = unsafe {
        let p = ffi::rrd_get_error();
        if p.is_null() {
            String::new()
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    if message.is_empty() {
        format!("librrd gave no message (status {rc})")
    } else {
        message
    }
}

fn now() -> libc::time_t {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    libc::time_t::try_from(secs).unwrap_or(libc::time_t::MAX)
}

/// Today's 00:00 in local time; UTC midnight if the C library cannot tell.
fn local_midnight(now: libc::time_t) -> libc::time_t {
    let utc_midnight = now - now.rem_euclid(86_400);
    // SAFETY: tm is plain data; localtime_r and mktime only read and write it.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            return utc_midnight;
        }
        tm.tm_sec = 0;
        tm.tm_min = 0;
        tm.tm_hour = 0;
        // Midnight may be on the other side of a DST change than now: let mktime decide.
        tm.tm_isdst = -1;
        match libc::mktime(&mut tm) {
            -1 => utc_midnight,
            t => t,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn midnight_is_today_at_zero() {
        let now = now();
        let midnight = local_midnight(now);
        assert!(midnight <= now);
        // Up to 25 h on a day that gains an hour.
        assert!(now - midnight < 25 * 3600);
        // SAFETY: as in local_midnight.
        let tm = unsafe {
            let mut tm: libc::tm = std::mem::zeroed();
            assert!(!libc::localtime_r(&midnight, &mut tm).is_null());
            tm
        };
        assert_eq!((tm.tm_hour, tm.tm_min, tm.tm_sec), (0, 0, 0));
    }

    #[test]
    fn empty_daemon_address_is_none() {
        assert_eq!(RrdWriter::new("/x", Some(String::new())).daemon(), None);
        assert_eq!(
            RrdWriter::pve().daemon(),
            Some("unix:/var/run/rrdcached.sock")
        );
    }

    #[test]
    fn bad_key_touches_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = RrdWriter::new(dir.path(), None);
        let e = writer
            .update("pve2-node/../x", "1:0:1700000000:1")
            .unwrap_err();
        assert!(matches!(e, RrdError::Rule { .. }), "{e}");
        assert!(e
            .to_string()
            .starts_with("RRD update error: unknown/wrong key"));
        let entries = std::fs::read_dir(dir.path()).expect("read_dir").count();
        assert_eq!(entries, 0);
    }
}
