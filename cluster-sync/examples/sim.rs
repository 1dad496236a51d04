//! Run the protocol simulator over many seeds; prints the first failing seed and its
//! trace. `cargo run -p cluster-sync --example sim --release -- --seeds 1000 [--start 0]
//! [--steps 1500] [--nodes N] [--no-crashes] [--late-quorum] [--all]`
use cluster_sync::sim::{run, SimConfig};

fn main() {
    let mut seeds = 100u64;
    let mut start = 0u64;
    let mut all = false;
    let mut cfg = SimConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{a} needs a number"))
        };
        match a.as_str() {
            "--seeds" => seeds = val(),
            "--start" => start = val(),
            "--steps" => cfg.steps = val() as usize,
            "--nodes" => cfg.nodes = Some(val() as usize),
            "--no-crashes" => cfg.crashes = false,
            "--late-quorum" => cfg.late_quorum = true,
            "--all" => all = true,
            "--trace" => cfg.trace_lines = val() as usize,
            _ => {
                eprintln!("usage: sim --seeds N [--start S] [--steps K] [--nodes N] [--no-crashes] [--late-quorum] [--all]");
                std::process::exit(2);
            }
        }
    }
    let t0 = std::time::Instant::now();
    let (mut ok, mut failed) = (0u64, 0u64);
    let (mut acked, mut again, mut noq, mut locks, mut crashes, mut msgs, mut lost) =
        (0, 0, 0, 0, 0, 0, 0);
    let mut resent = 0;
    for seed in start..start + seeds {
        match run(seed, &cfg) {
            Ok(r) => {
                ok += 1;
                acked += r.acked;
                again += r.interrupted;
                resent += r.resent;
                noq += r.no_quorum;
                locks += r.locks;
                crashes += r.crashes;
                msgs += r.messages;
                lost += r.lost_minority_acks;
            }
            Err(f) => {
                failed += 1;
                println!("{f}");
                println!("replay: cargo run -p cluster-sync --example sim --release -- --seeds 1 --start {seed} --steps {}", cfg.steps);
                if !all {
                    std::process::exit(1);
                }
            }
        }
    }
    println!(
        "{ok} seeds passed, {failed} failed in {:.1} s; acked {acked}, re-sent {resent}, EAGAIN {again}, EACCES {noq}, locks {locks}, crashes {crashes}, messages {msgs}, acked-but-minority-held lost {lost}",
        t0.elapsed().as_secs_f64()
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
