//! Smoke test of the CPG wrapper on a real cluster: run one instance per node namespace
//! (`scripts/cluster.sh exec K target/.../examples/cpg_order GROUP MEMBERS COUNT`).
//! Each waits for MEMBERS members, multicasts COUNT messages, delivers everyone's and
//! prints an order hash; identical hashes on all nodes mean identical total order.
use std::time::{Duration, Instant};

use corosync_sys::{Cmap, Cpg, CpgEvent, Dispatch, Quorum};

fn pump(cpg: &Cpg, ms: i32) -> Vec<CpgEvent> {
    let fd = cpg.fd_get().expect("cpg fd");
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    if unsafe { libc::poll(&mut p, 1, ms) } > 0 {
        cpg.dispatch(Dispatch::All).expect("dispatch")
    } else {
        Vec::new()
    }
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let group = a.get(1).map(String::as_str).unwrap_or("pmxfs_order_test");
    let want: usize = a.get(2).and_then(|s| s.parse().ok()).unwrap_or(2);
    let count: usize = a.get(3).and_then(|s| s.parse().ok()).unwrap_or(1000);

    let cmap = Cmap::initialize().expect("cmap");
    let quorum = Quorum::initialize().expect("quorum");
    let cpg = Cpg::initialize().expect("cpg");
    let me = cpg.local_get().expect("local_get");
    println!(
        "node {me}: cluster {:?}, {} nodes in nodelist, quorate {}",
        cmap.cluster_name().unwrap_or_default(),
        cmap.nodelist().map(|l| l.len()).unwrap_or(0),
        quorum.getquorate().unwrap_or(false)
    );
    cpg.join(group).expect("join");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut members = 0;
    let mut got: Vec<(u32, u32)> = Vec::new();
    while members < want {
        assert!(
            Instant::now() < deadline,
            "timeout waiting for {want} members"
        );
        for e in pump(&cpg, 100) {
            match e {
                CpgEvent::ConfChg { members: m, .. } => members = m.len(),
                CpgEvent::Deliver { nodeid, data, .. } => {
                    got.push((nodeid, u32::from_le_bytes(data[..4].try_into().unwrap())))
                }
                CpgEvent::TotemConfChg { .. } => {}
            }
        }
    }
    for i in 0..count as u32 {
        cpg.mcast_joined(&[&i.to_le_bytes(), &[0u8; 60]])
            .expect("mcast");
        if i % 64 == 0 {
            for e in pump(&cpg, 0) {
                if let CpgEvent::Deliver { nodeid, data, .. } = e {
                    got.push((nodeid, u32::from_le_bytes(data[..4].try_into().unwrap())));
                }
            }
        }
    }
    while got.len() < want * count {
        assert!(
            Instant::now() < deadline + Duration::from_secs(30),
            "timeout: {} of {} delivered",
            got.len(),
            want * count
        );
        for e in pump(&cpg, 100) {
            if let CpgEvent::Deliver { nodeid, data, .. } = e {
                got.push((nodeid, u32::from_le_bytes(data[..4].try_into().unwrap())));
            }
        }
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (n, s) in &got {
        for b in n.to_le_bytes().iter().chain(s.to_le_bytes().iter()) {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    let switches = got.windows(2).filter(|w| w[0].0 != w[1].0).count();
    println!(
        "node {me}: delivered {} messages, {switches} sender switches, order hash {h:016x}",
        got.len()
    );
    cpg.leave().ok();
}
