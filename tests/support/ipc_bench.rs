//! `ipc-bench SERVICE OP SECONDS [START_UNIX_MS]`: one client of a `pve2`-style libqb IPC
//! server (pmxfs or pmxcfs), sending one request at a time for SECONDS, as `PVE::IPCC`
//! does. OP is one of
//!
//! - `version`: GET_FS_VERSION (id 1), empty payload;
//! - `config:PATH`: GET_CONFIG (id 6), payload PATH + NUL; every body must be 4096 bytes;
//! - `set-status`: SET_STATUS (id 4), `Z[256]` name `kv/bench` + a 100-byte value + NUL.
//!
//! The client connects (and sends one request) first, then waits until START_UNIX_MS
//! (milliseconds since the epoch), if given, so that parallel clients measure the same
//! window. It prints one line,
//! `ops=N secs=S ops_per_s=R p50_us=A p99_us=B max_us=C`, latencies being per request.
//! Any reply whose error is not 0 (or a GET_CONFIG body that is not 4096 bytes, or a
//! transport failure) ends it with exit status 1: a benchmark that measures errors is
//! not a result. A refused connection exits 3.
//!
//! The request loop reuses one reply buffer (`IpcClient::call_into`): `IpcClient::call`
//! allocates and zeroes a fresh 1 MiB buffer and copies the body per call, client-side
//! work that would be counted against the server.
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pmxfs_e2e::ipc::{z256, IpcClient, Transport, MAX_MSG};

/// A connection and the reply buffer it reuses.
struct Conn {
    client: IpcClient,
    buf: Vec<u8>,
}

impl Conn {
    fn connect(name: &str) -> Result<Conn, i32> {
        Ok(Conn {
            client: IpcClient::connect(name)?,
            buf: vec![0u8; MAX_MSG],
        })
    }

    /// One request; `Ok(body length)` or `Err(description)`.
    fn call(&mut self, header: &[u8; 16], payload: &[u8]) -> Result<usize, String> {
        match self.client.call_into(header, payload, &mut self.buf) {
            Ok((0, body)) => Ok(body),
            Ok((error, _)) => Err(format!("reply error {error}")),
            Err(Transport::Errno(n)) => Err(format!("transport error {n}")),
            Err(Transport::Malformed(why)) => Err(why),
        }
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("ipc-bench: {msg}");
    std::process::exit(1);
}

/// Request id, payload and the body length every reply must have (if fixed).
fn request(op: &str) -> (i32, Vec<u8>, Option<usize>) {
    if op == "version" {
        (1, Vec::new(), None)
    } else if let Some(path) = op.strip_prefix("config:") {
        let mut p = path.as_bytes().to_vec();
        p.push(0);
        (6, p, Some(4096))
    } else if op == "set-status" {
        let mut p = z256("kv/bench");
        p.extend_from_slice(&[b'v'; 100]);
        p.push(0);
        (4, p, None)
    } else {
        fail(&format!(
            "unknown OP {op:?} (version, config:PATH, set-status)"
        ))
    }
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 || args.len() > 4 {
        eprintln!("usage: ipc-bench SERVICE OP SECONDS [START_UNIX_MS]");
        std::process::exit(2);
    }
    let secs: f64 = args[2]
        .parse()
        .unwrap_or_else(|_| fail("SECONDS: a number"));
    let (id, payload, want_len) = request(&args[1]);
    let header = IpcClient::header(id, payload.len());
    let check = |r: Result<usize, String>, i: u64| match r {
        Ok(len) if want_len.is_none_or(|w| w == len) => {}
        Ok(len) => fail(&format!(
            "request {i}: body of {len} bytes, want {}",
            want_len.unwrap_or(0)
        )),
        Err(e) => fail(&format!("request {i}: {e}")),
    };

    let mut conn = match Conn::connect(&args[0]) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ipc-bench: connect {}: errno {e}", args[0]);
            std::process::exit(3);
        }
    };
    check(conn.call(&header, &payload), 0);
    if let Some(start) = args.get(3) {
        let start: u64 = start
            .parse()
            .unwrap_or_else(|_| fail("START_UNIX_MS: a number"));
        let at = UNIX_EPOCH + Duration::from_millis(start);
        if let Ok(d) = at.duration_since(SystemTime::now()) {
            std::thread::sleep(d);
        }
    }

    let limit = Duration::from_secs_f64(secs);
    let mut lat: Vec<u64> = Vec::with_capacity(1 << 20);
    let t0 = Instant::now();
    let mut now = t0;
    while now - t0 < limit {
        let r = conn.call(&header, &payload);
        let t = Instant::now();
        check(r, lat.len() as u64 + 1);
        lat.push((t - now).as_nanos() as u64);
        now = t;
    }
    let dt = (now - t0).as_secs_f64();
    if lat.is_empty() {
        fail("SECONDS must be more than 0");
    }
    lat.sort_unstable();
    println!(
        "ops={} secs={dt:.2} ops_per_s={:.0} p50_us={:.1} p99_us={:.1} max_us={:.1}",
        lat.len(),
        lat.len() as f64 / dt,
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0),
    );
}
