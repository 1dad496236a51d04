//! Run the simulator over many seeds, in parallel; print the totals and the first
//! failing seed with its trace.
//!
//! `sim --seeds N [--start S] [--nodes K] [--steps STEPS] [--jobs J] [--trace LINES]
//! [--compat] [--upgrade]` (`--compat`: every node speaks pmxcfs's protocol;
//! `--upgrade`: the nodes start in it and switch to pmxfs's own during the run)
//! (`scripts/sim.sh` runs it in the `sim` profile: optimised, with debug assertions).
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use cluster_sim::workload::Kind;
use cluster_sim::{run, Failure, Report, SimConfig};

fn main() {
    let mut seeds = 100u64;
    let mut start = 0u64;
    let mut jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut cfg = SimConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage(&format!("{a} needs a number")))
        };
        match a.as_str() {
            "--seeds" => seeds = val(),
            "--start" => start = val(),
            "--steps" => cfg.steps = val() as usize,
            "--nodes" => cfg.nodes = Some(val() as usize),
            "--jobs" => jobs = val().max(1) as usize,
            "--trace" => cfg.trace_lines = val() as usize,
            "--compat" => cfg.protocol = cluster_sync::core::Protocol::Dfsm,
            "--upgrade" => cfg.upgrade = true,
            _ => usage(&format!("unknown argument {a}")),
        }
    }
    // A core assertion that trips is reported with its seed, not printed per thread.
    std::panic::set_hook(Box::new(|_| {}));
    let t0 = std::time::Instant::now();
    let next = AtomicU64::new(start);
    let total = Mutex::new(Report::default());
    let failures: Mutex<Vec<Failure>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= start + seeds {
                    return;
                }
                match run(seed, &cfg) {
                    Ok(r) => total.lock().expect("report").add(&r),
                    Err(f) => failures.lock().expect("failures").push(f),
                }
            });
        }
    });
    let r = total.into_inner().expect("report");
    let mut failures = failures.into_inner().expect("failures");
    failures.sort_by_key(|f| f.seed);
    if let Some(f) = failures.first() {
        println!("{f}");
        let nodes = cfg
            .nodes
            .map(|n| format!(" --nodes {n}"))
            .unwrap_or_default();
        println!(
            "replay: scripts/sim.sh --seeds 1 --start {}{nodes} --steps {}",
            f.seed, cfg.steps
        );
    }
    let errors: Vec<String> = r.errors.iter().map(|(e, n)| format!("{e}={n}")).collect();
    println!(
        "in {:.1} s: create={} truncate={} release={} stale-locks={} re-sent={} configs={} messages={} tree-checks={}; errors: {}",
        t0.elapsed().as_secs_f64(),
        r.ok(Kind::Create),
        r.ok(Kind::Truncate),
        r.ok(Kind::Release),
        r.stale_locks,
        r.resent,
        r.configs,
        r.messages,
        r.tree_checks,
        errors.join(" ")
    );
    println!(
        "ops: write={} mkdir={} rmdir={} rename={} unlink={} lock={} mtime={} unlock={} takeover={}",
        r.ok(Kind::Write),
        r.ok(Kind::Mkdir),
        r.ok(Kind::Rmdir),
        r.ok(Kind::Rename),
        r.ok(Kind::Unlink),
        r.ok(Kind::Lock),
        r.ok(Kind::Refresh),
        r.ok(Kind::Unlock),
        r.takeovers
    );
    println!(
        "faults: partition={} crash={} restart={} storage={}",
        r.partitions, r.crashes, r.restarts, r.storage_faults
    );
    if cfg.upgrade {
        println!(
            "upgrade: switched={} (told by a switched node: {}) acknowledged by pmxfs's protocol={} (none lost) carried over the switch={} (failed unapplied: {})",
            r.switched, r.switched_late, r.acked_after_switch, r.carried, r.carried_failed
        );
    }
    if cfg.protocol == cluster_sync::core::Protocol::Dfsm || cfg.upgrade {
        // pmxcfs's window, expected in its protocol (README, "Mixed clusters").
        println!(
            "compat (pmxcfs's protocol): acknowledged while no majority held it={} acknowledged and lost={} applied without quorum={}",
            r.acked_unheld, r.acked_lost, r.applied_unquorate
        );
    }
    if failures.len() > 1 {
        let list: Vec<String> = failures.iter().map(|f| f.seed.to_string()).collect();
        println!("failing seeds: {}", list.join(" "));
    }
    println!("seeds={seeds} failures={}", failures.len());
    if !failures.is_empty() {
        std::process::exit(1);
    }
}

fn usage(why: &str) -> ! {
    eprintln!("sim: {why}");
    eprintln!(
        "usage: sim --seeds N [--start S] [--nodes K] [--steps STEPS] [--jobs J] [--trace LINES] [--compat] [--upgrade]"
    );
    std::process::exit(2)
}
