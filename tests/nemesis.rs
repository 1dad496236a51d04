//! The nemesis (issue 14, in the spirit of Jepsen and etcd's robustness tests): a
//! writer per node of a real 3-node cluster creates unique files while faults come at
//! random: a partition of one node or of two, kill -9 and restart of a daemon, SIGSTOP
//! and SIGCONT of one. Cuts and kills of a node are aimed at the moment its writer
//! was just answered, the window an acknowledgement that only the writer holds would
//! be lost in. Then everything heals and the checker proves that every acknowledged
//! write is on every node with its content and that the trees are identical, and
//! reports the faults, the acknowledged writes, the losses and the errors by errno.
//!
//! A file counts as acknowledged once its fsync returned (pmxfs commits a file's
//! content at fsync or close; close's error is lost by most callers).
//!
//! `PMXFS_NEMESIS_SECS` (default 40) sets how long faults come, `PMXFS_NEMESIS_SEED`
//! (default 1) the schedule; `PMXFS_BIN` runs another pmxfs build.
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pmxfs_e2e::{errno, kernel_stacks, tree_digest, wait_until, Cluster};

/// splitmix64: the schedule is a function of the seed alone.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo))
    }
}

/// What one node's writer saw.
#[derive(Default)]
struct Seen {
    /// Files answered OK: (name, content).
    acked: Vec<(String, String)>,
    /// Failed calls by the call that failed and its errno.
    errors: BTreeMap<(&'static str, i32), u64>,
}

/// `write_acked`, saying which call failed: the create, the write, or the fsync
/// that commits the content.
fn write_staged(p: &Path, data: &str) -> Result<(), (&'static str, std::io::Error)> {
    use std::io::Write;
    let mut f = std::fs::File::create(p).map_err(|e| ("create", e))?;
    f.write_all(data.as_bytes()).map_err(|e| ("write", e))?;
    f.sync_all().map_err(|e| ("fsync", e))
}

/// One writer per node, creating `nem/n<k>-<i>` until told to stop.
struct Writers {
    stop: Arc<AtomicBool>,
    /// Acknowledgements per node, for aiming faults at the moment after one.
    acks: Arc<Vec<AtomicU64>>,
    /// Nodes whose daemon is killed: their mount point is a plain directory then, and
    /// writing there would only count ENOENTs.
    down: Arc<Vec<AtomicBool>>,
    threads: Vec<std::thread::JoinHandle<Seen>>,
}

impl Writers {
    fn start(c: &Cluster) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acks: Arc<Vec<AtomicU64>> = Arc::new((0..=c.n).map(|_| AtomicU64::new(0)).collect());
        let down: Arc<Vec<AtomicBool>> =
            Arc::new((0..=c.n).map(|_| AtomicBool::new(false)).collect());
        let threads = (1..=c.n)
            .map(|k| {
                let (stop, acks, down) = (stop.clone(), acks.clone(), down.clone());
                let dir = c.mnt(k).join("nem");
                std::thread::spawn(move || {
                    let mut seen = Seen::default();
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        if down[k].load(Ordering::Acquire) {
                            std::thread::sleep(Duration::from_millis(20));
                            continue;
                        }
                        i += 1;
                        let name = format!("n{k}-{i}");
                        // Longer than one line, so that a half-written file shows.
                        let content = format!("{name}\n").repeat(1 + (i % 7) as usize);
                        match write_staged(&dir.join(&name), &content) {
                            Ok(()) => {
                                seen.acked.push((name, content));
                                acks[k].fetch_add(1, Ordering::Release);
                            }
                            Err((stage, e)) => {
                                *seen.errors.entry((stage, errno(&e))).or_default() += 1;
                                // Without quorum or with the daemon gone every call
                                // fails at once; pace the retries.
                                std::thread::sleep(Duration::from_millis(20));
                            }
                        }
                    }
                    seen
                })
            })
            .collect();
        Writers {
            stop,
            acks,
            down,
            threads,
        }
    }

    /// Wait (up to 2 s) until node `k`'s writer is answered OK once more.
    fn next_ack(&self, k: usize) {
        let a0 = self.acks[k].load(Ordering::Acquire);
        let t0 = Instant::now();
        while self.acks[k].load(Ordering::Acquire) == a0 && t0.elapsed() < Duration::from_secs(2) {
            std::hint::spin_loop();
        }
    }

    fn finish(self, c: &Cluster) -> Vec<Seen> {
        self.stop.store(true, Ordering::Relaxed);
        // A writer stuck in a call that never returns would hold the test until the
        // cluster's watchdog tears everything down, saying nothing of where it hung.
        let returned = wait_until(Duration::from_secs(60), || {
            self.threads.iter().all(|t| t.is_finished())
        });
        if returned.is_none() {
            let mut stacks = format!("=== writers\n{}", kernel_stacks(std::process::id()));
            for k in 1..=c.n {
                // A daemon killed by the last fault may have no pid file yet.
                let pid = std::fs::read_to_string(c.dir.join(format!("n{k}/pmxfs.pid")));
                match pid.ok().and_then(|p| p.trim().parse::<u32>().ok()) {
                    Some(pid) => stacks += &format!("=== n{k}'s daemon\n{}", kernel_stacks(pid)),
                    None => stacks += &format!("=== n{k}'s daemon: no pid file\n"),
                }
            }
            panic!(
                "a writer's call did not return within 60 s of the stop\n{stacks}\n{}",
                c.logs()
            );
        }
        self.threads
            .into_iter()
            .map(|t| t.join().expect("writer"))
            .collect()
    }
}

fn daemon_pid(c: &Cluster, k: usize) -> u32 {
    std::fs::read_to_string(c.dir.join(format!("n{k}/pmxfs.pid")))
        .expect("pmxfs pid")
        .trim()
        .parse()
        .expect("pid")
}

fn signal(c: &Cluster, k: usize, sig: libc::c_int) {
    let pid = daemon_pid(c, k) as i32;
    // SAFETY: a plain kill(2) of the node's daemon.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill {pid} {sig}");
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn nemesis() {
    let secs = env_u64("PMXFS_NEMESIS_SECS", 40);
    let seed = env_u64("PMXFS_NEMESIS_SEED", 1);
    if std::env::var_os("PMXFS_CLUSTER_TEST_TIMEOUT").is_none() {
        // The cluster's watchdog must outlast the run and the final convergence.
        std::env::set_var("PMXFS_CLUSTER_TEST_TIMEOUT", (secs + 240).to_string());
    }
    let c = Cluster::up(3, "");
    std::fs::create_dir(c.mnt(1).join("nem")).expect("mkdir nem");
    let seen_all = wait_until(Duration::from_secs(10), || {
        (1..=3).all(|k| c.mnt(k).join("nem").is_dir())
    });
    assert!(seen_all.is_some(), "nem/ did not replicate\n{}", c.logs());

    let writers = Writers::start(&c);
    let mut rng = Rng(seed);
    // Per kind of fault: how many, and the seconds they took in all (hold included).
    let mut faults: BTreeMap<&str, (u64, f64)> = BTreeMap::new();
    // At least this many faults, however long some take (a heal after a cut of two
    // nodes has taken 30 s), so that a short run still shows several kinds.
    let min_faults = (secs / 6).max(4);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs)
        || faults.values().map(|f| f.0).sum::<u64>() < min_faults
    {
        std::thread::sleep(rng.millis(300, 1500));
        let k = 1 + rng.below(3) as usize;
        let hold = rng.millis(500, 4000);
        let f0 = Instant::now();
        let kind = match rng.below(4) {
            0 => {
                writers.next_ack(k);
                c.cut(k);
                std::thread::sleep(hold);
                c.heal(k);
                "cut one node"
            }
            1 => {
                let j = 1 + (k % 3);
                c.cut(k);
                c.cut(j);
                std::thread::sleep(hold);
                c.heal(k);
                c.heal(j);
                "cut two nodes"
            }
            2 => {
                writers.next_ack(k);
                writers.down[k].store(true, Ordering::Release);
                c.script("pmxfs-kill", k);
                std::thread::sleep(hold);
                c.script("pmxfs-start", k);
                writers.down[k].store(false, Ordering::Release);
                "kill -9 and restart"
            }
            _ => {
                signal(&c, k, libc::SIGSTOP);
                std::thread::sleep(hold);
                signal(&c, k, libc::SIGCONT);
                "SIGSTOP/SIGCONT"
            }
        };
        let f = faults.entry(kind).or_default();
        f.0 += 1;
        f.1 += f0.elapsed().as_secs_f64();
    }
    let seen = writers.finish(&c);

    // Everything is healed: every node must come back quorate with one tree.
    let converged = wait_until(Duration::from_secs(90), || {
        (1..=3).all(|k| c.status(k)["quorate"] == true) && {
            let d1 = tree_digest(&c.mnt(1));
            (2..=3).all(|k| tree_digest(&c.mnt(k)) == d1)
        }
    });
    let acked: usize = seen.iter().map(|s| s.acked.len()).sum();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for s in &seen {
        for ((stage, e), n) in &s.errors {
            let name = format!("{stage} {:?}", nix::errno::Errno::from_raw(*e));
            *errors.entry(name).or_default() += n;
        }
    }
    let mut lost = Vec::new();
    for s in &seen {
        for (name, content) in &s.acked {
            for k in 1..=3 {
                let got = std::fs::read_to_string(c.mnt(k).join("nem").join(name));
                if got.as_deref().ok() != Some(content.as_str()) {
                    lost.push(format!("n{k}: {name}: {got:?}"));
                }
            }
        }
    }
    let total_faults: u64 = faults.values().map(|f| f.0).sum();
    eprintln!(
        "nemesis seed {seed}, {secs} s: faults {total_faults} {faults:?}; acknowledged writes {acked} (per node {:?}); lost {}; errors {errors:?}; converged after {converged:?}",
        seen.iter().map(|s| s.acked.len()).collect::<Vec<_>>(),
        lost.len()
    );
    assert!(
        converged.is_some(),
        "the nodes did not converge on one tree after the faults\n{}",
        c.logs()
    );
    assert!(
        lost.is_empty(),
        "{} acknowledged writes missing or wrong: {:?}\n{}",
        lost.len(),
        &lost[..lost.len().min(20)],
        c.logs()
    );
    assert!(total_faults >= min_faults, "only {total_faults} faults");
    assert!(faults.len() >= 2, "only one kind of fault: {faults:?}");
    assert!(
        acked as u64 >= 10 * secs,
        "only {acked} writes acknowledged in {secs} s: the run proves little"
    );
    assert!(
        Path::new(&c.mnt(1).join("nem")).is_dir(),
        "nem/ is gone on n1"
    );
}
