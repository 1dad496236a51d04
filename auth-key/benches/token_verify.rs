//! Token verifications per second, uncached (read + parse + yescrypt) vs cached, at 1, 4
//! and 16 threads, for both generation sources; plus ticket issue/verify per second.
//! Prints figures and ratios only; no timing assertions.
//!
//! `cargo bench -p auth-key --bench token_verify` runs the full measurement; without
//! `--bench` (e.g. under `cargo test --all-targets`) it runs a short smoke version.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use auth_key::generation::{FileStatGeneration, ShmGeneration, DEFAULT_TTL};
use auth_key::keys;
use auth_key::ticket::{self, KeyAt, VerifyContext};
use auth_key::token_cache::{TokenCache, VerifyPath};
use auth_key::token_shadow::{Authid, ShadowFile, TOKEN_SHADOW};
use pmxfs_client::versions::VersionShmWriter;

/// Run `f` on `threads` threads until `dur` has passed; operations per second.
fn rate(threads: usize, dur: Duration, f: impl Fn() + Sync) -> f64 {
    let count = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut n = 0u64;
                while start.elapsed() < dur {
                    for _ in 0..16 {
                        f();
                    }
                    n += 16;
                }
                count.fetch_add(n, Ordering::Relaxed);
            });
        }
    });
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (slow_dur, fast_dur) = if full {
        (Duration::from_secs(3), Duration::from_secs(1))
    } else {
        (Duration::from_millis(100), Duration::from_millis(20))
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("pve");
    std::fs::create_dir_all(&base).expect("mkdir");
    let shadow = ShadowFile::new(&base);
    let id = Authid::parse_token("bench@pam!tok").expect("id");
    let secret = shadow.generate_and_set(&id).expect("set");

    let shm_path = dir.path().join("run/bench.versions");
    let writer = VersionShmWriter::open_or_create(&shm_path).expect("version file");
    writer.bump(TOKEN_SHADOW);
    let caches = [
        (
            "shm",
            TokenCache::with_source(
                &base,
                Box::new(ShmGeneration::open(&shm_path).expect("shm")),
            ),
        ),
        (
            "stat",
            TokenCache::with_source(
                &base,
                Box::new(FileStatGeneration::new(
                    base.join(TOKEN_SHADOW),
                    DEFAULT_TTL,
                )),
            ),
        ),
    ];
    for (_, c) in &caches {
        assert_eq!(
            c.verify(&id, &secret).expect("verify"),
            VerifyPath::Verified
        );
    }

    println!(
        "token verify/s (yescrypt $y$j9T$, {} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:>7} {:>12} {:>14} {:>10} {:>14} {:>10}",
        "threads", "uncached", "cached(shm)", "ratio", "cached(stat)", "ratio"
    );
    for threads in [1usize, 4, 16] {
        let uncached = rate(threads, slow_dur, || {
            shadow.verify(&id, &secret).expect("uncached verify");
        });
        let mut row = format!("{threads:>7} {uncached:>12.1}");
        for (_, c) in &caches {
            let cached = rate(threads, fast_dur, || {
                let p = c.verify(&id, &secret).expect("cached verify");
                debug_assert_eq!(p, VerifyPath::Cached);
            });
            row.push_str(&format!(" {cached:>14.0} {:>9.0}x", cached / uncached));
        }
        println!("{row}");
    }

    let sk = keys::generate();
    let vk = sk.verifying_key();
    let now = auth_key::keyfiles::now_secs();
    let issue = rate(1, fast_dur, || {
        ticket::issue(&sk, "root@pam", now).expect("issue");
    });
    let t = ticket::issue(&sk, "root@pam", now).expect("issue");
    let ctx = VerifyContext::new(
        now,
        Some(KeyAt {
            key: &vk,
            mtime: now - 3600,
        }),
        None,
    );
    let verify = rate(1, fast_dur, || {
        ticket::verify(&t, &ctx).expect("ticket verify");
    });
    println!("tickets/s (1 thread): issue {issue:.0}, verify {verify:.0}");
}
