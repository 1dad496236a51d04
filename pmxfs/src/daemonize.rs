//! Going into the background as pmxcfs does: without `-f` the started process forks,
//! the child becomes the daemon, and the parent exits only once the child says it
//! serves (the mount is up and the IPC server answers), so that systemd's
//! `Type=forking` and a shell both see a ready filesystem when the command returns. If
//! the child fails to start, the parent prints why and exits non-zero.
//!
//! The fork happens before the daemon starts any thread: a multithreaded process must
//! not fork (only the forking thread survives, with every lock as it was).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};

use anyhow::{Context, Result};
use nix::unistd::{fork, pipe, setsid, ForkResult};

/// How the daemon reports that it serves.
#[derive(Debug)]
pub enum Ready {
    /// In the foreground (`-f`): nobody waits.
    Foreground,
    /// Forked: the parent reads this pipe.
    Child(File),
}

/// The byte that tells the parent the daemon serves.
const READY: u8 = b'1';

/// Fork: returns in the child (the daemon); the parent waits for it and exits. `quiet`
/// sends the child's standard error to /dev/null (its logs go to the journal).
pub fn daemonize(quiet: bool) -> Result<Ready> {
    let (r, w) = pipe().context("pipe")?;
    // SAFETY: called before the daemon starts any thread (see the module comment).
    match unsafe { fork() }.context("fork")? {
        ForkResult::Parent { .. } => {
            drop(w);
            std::process::exit(wait_for_child(r));
        }
        ForkResult::Child => {
            drop(r);
            setsid().context("setsid")?;
            std::env::set_current_dir("/").context("chdir /")?;
            detach_stdio(quiet)?;
            Ok(Ready::Child(File::from(w)))
        }
    }
}

/// The parent's side: 0 once the child reports ready, 1 (after printing the child's
/// reason) if it fails or dies first.
fn wait_for_child(r: OwnedFd) -> i32 {
    let mut buf = Vec::new();
    let _ = File::from(r).read_to_end(&mut buf);
    match buf.split_first() {
        Some((&READY, _)) => 0,
        Some((_, why)) => {
            eprintln!("pmxfs: {}", String::from_utf8_lossy(why).trim_end());
            1
        }
        None => {
            eprintln!("pmxfs: the daemon exited while starting (see its log)");
            1
        }
    }
}

fn detach_stdio(quiet: bool) -> Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .context("open /dev/null")?;
    let targets: &[i32] = if quiet { &[0, 1, 2] } else { &[0, 1] };
    for fd in targets {
        // SAFETY: dup2 onto the standard descriptors, which this process owns.
        if unsafe { libc::dup2(null.as_raw_fd(), *fd) } < 0 {
            return Err(std::io::Error::last_os_error()).context("dup2");
        }
    }
    Ok(())
}

impl Ready {
    /// Tell the parent the daemon serves.
    pub fn serving(&mut self) {
        if let Ready::Child(f) = self {
            let _ = f.write_all(&[READY]);
        }
        *self = Ready::Foreground;
    }

    /// Tell the parent why the daemon did not start (it prints it).
    pub fn failed(&mut self, why: &str) {
        if let Ready::Child(f) = self {
            let _ = f.write_all(format!("-{why}\n").as_bytes());
        }
        *self = Ready::Foreground;
    }
}
