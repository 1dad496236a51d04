//! The transports under faults: an io_uring queue that cannot start or stops while
//! mounted, and SIGSTOP/SIGCONT of the daemon on both transports.

use std::fs;
use std::process::Command;

use pmxfs_e2e::{ring_requests, start_on, Pmxfs};

/// Once INIT agreed to io_uring the kernel holds every request until all queues are
/// registered: a queue that cannot start must hand the mount back to /dev/fuse, not
/// hang it.
#[test]
fn a_queue_that_cannot_start_falls_back_to_dev_fuse() {
    let fs = Pmxfs::start(&["--transport", "io-uring", "--fault", "fail-queue=1"]);
    assert_eq!(fs.status()["transport"], "/dev/fuse", "{}", fs.log());
    assert!(
        fs.log().contains("falling back to /dev/fuse"),
        "{}",
        fs.log()
    );
    // A held mount would block these calls forever: run them on a thread and give up
    // after a while (dropping `fs` then aborts the connection).
    let (p, lock) = (fs.p("storage.cfg"), fs.p("priv/lock/fallback"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        fs::write(&p, b"dir: local\n").unwrap();
        let back = fs::read(&p).unwrap();
        fs::create_dir(&lock).unwrap();
        fs::remove_dir(&lock).unwrap();
        let _ = tx.send(back);
    });
    let back = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the mount hangs: requests are held for a ring that never became ready");
    assert_eq!(back, b"dir: local\n");
    assert_eq!(
        ring_requests(&fs),
        0,
        "nothing went through the half-registered ring"
    );
}

/// SIGSTOP/SIGCONT (job control, a debugger, strace attaching) interrupts the queue
/// threads' io_uring_enter with EINTR; a queue that took that for an error stopped, and
/// the kernel kept routing its CPU's requests to it: the mount hung.
#[test]
fn stopping_and_continuing_the_daemon_keeps_the_ring_serving() {
    keeps_serving_through_stop_and_continue(&start_on("io-uring"));
}

#[test]
fn stopping_and_continuing_the_daemon_keeps_dev_fuse_serving() {
    keeps_serving_through_stop_and_continue(&start_on("dev-fuse"));
}

fn keeps_serving_through_stop_and_continue(fs: &Pmxfs) {
    let pid = nix::unistd::Pid::from_raw(fs.pid() as i32);
    let (p, stop) = (
        fs.p("storage.cfg"),
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let writer = {
        let (p, stop) = (p.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                fs::write(&p, format!("dir: local{n}\n")).unwrap();
                n += 1;
            }
            let _ = tx.send(n);
        })
    };
    for _ in 0..5 {
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let n = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("the mount hangs after SIGSTOP/SIGCONT: {}", fs.log()));
    writer.join().unwrap();
    let want = format!("dir: local{}\n", n - 1);
    assert_eq!(fs::read_to_string(&p).unwrap(), want);
    assert!(!fs.log().contains("queue stopped"), "{}", fs.log());
}

/// A queue that fails while the mount is live must end the daemon: the kernel keeps
/// routing its CPU's requests to the dead queue, where they would wait forever. The
/// exit makes them fail with ENOTCONN, and a restart serves again.
#[test]
fn a_queue_failing_while_mounted_ends_the_daemon_instead_of_hanging_the_mount() {
    let mut fs = Pmxfs::start(&["--fault", "fail-queue-after=300"]);
    let transport = fs.status()["transport"].as_str().unwrap().to_string();
    assert!(transport.starts_with("io_uring"), "{transport}");
    // The client runs in its own process: a request stuck on a dead queue cannot be
    // interrupted, and would keep this test process from exiting.
    let mut client = Command::new("sh")
        .arg("-c")
        .arg(
            "i=0; while [ $i -lt 3000 ]; do echo $i > \"$0/f$((i % 10))\" || exit 3; \
             i=$((i + 1)); done",
        )
        .arg(&fs.mnt)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let finished = pmxfs_e2e::wait_until(std::time::Duration::from_secs(20), || {
        client.try_wait().ok().flatten().is_some()
    });
    if finished.is_none() {
        let stacks = pmxfs_e2e::kernel_stacks(client.id());
        pmxfs_e2e::abort_mount(&fs.mnt);
        let _ = client.kill();
        panic!("the client hung on the mount: {stacks}\n{}", fs.log());
    }
    let out = client.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let st = fs
        .wait_exit(std::time::Duration::from_secs(10))
        .expect("the daemon did not exit");
    assert!(!st.success(), "{st}");
    assert!(
        fs.log()
            .contains("failure injected (--fault fail-queue-after)"),
        "{}",
        fs.log()
    );
    fs.without_fault("fail-queue-after=300");
    fs.restart();
    let last: u32 = (0..10)
        .map(|k| {
            fs::read_to_string(fs.p(&format!("f{k}")))
                .unwrap_or_default()
                .trim()
                .parse()
                .unwrap_or(0)
        })
        .max()
        .unwrap();
    assert!(last > 0, "nothing written before the failure");
    fs::write(fs.p("after"), b"ok").unwrap();
    assert_eq!(fs::read(fs.p("after")).unwrap(), b"ok");
}
