//! `ipc-call [--as UID:GID] SERVICE ID HEX [ID HEX ...]`: connect to a pmxfs IPC service
//! (after taking UID and GID), send each request, print `error hex-body` per reply.
//! Exit 3 if the connection is refused, printing the errno. The tests use it to ask as
//! www-data or nobody, which a process of the test harness cannot become.
//! `ipc-call --send-only SERVICE ID HEX` sends one request, prints `sent`, and waits
//! without reading the reply until it is killed.
use pmxfs_e2e::ipc::IpcClient;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--as") {
        let ids = args[1].clone();
        args.drain(..2);
        let (u, g) = ids.split_once(':').expect("UID:GID");
        nix::unistd::setgroups(&[]).expect("setgroups");
        nix::unistd::setgid(nix::unistd::Gid::from_raw(g.parse().unwrap())).expect("setgid");
        nix::unistd::setuid(nix::unistd::Uid::from_raw(u.parse().unwrap())).expect("setuid");
    }
    let send_only = args.first().map(String::as_str) == Some("--send-only");
    if send_only {
        args.remove(0);
    }
    let c = match IpcClient::connect(&args[0]) {
        Ok(c) => c,
        Err(e) => {
            println!("refused {e}");
            std::process::exit(3);
        }
    };
    if send_only {
        let n = c.send_only(args[1].parse().unwrap(), &unhex(&args[2]));
        println!("sent {n}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        loop {
            std::thread::park();
        }
    }
    for pair in args[1..].chunks(2) {
        let (err, body) = c.call(pair[0].parse().unwrap(), &unhex(&pair[1]));
        println!("{err} {}", hex(&body));
    }
}
