//! The `pve2` IPC server, driven through libqb's client library with the request bytes
//! PVE's Perl sends (`PVE::Cluster` 9.1.6; sizes from the reference's table): every
//! operation and its errnos, read-only and refused clients, and clients that misbehave.
use std::fs;
use std::process::Command;

use pmxfs_e2e::ipc::{z256, IpcClient};
use pmxfs_e2e::Pmxfs;

fn json(b: &[u8]) -> serde_json::Value {
    serde_json::from_slice(b).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(b)))
}

const EINVAL: i32 = -libc::EINVAL;
const ENOENT: i32 = -libc::ENOENT;

#[test]
fn every_operation_answers_as_pmxcfs() {
    let fs = Pmxfs::start(&[]);
    let c = IpcClient::connect(&fs.ipc).expect("root connects");

    // 1: `.version`, with starttime, the change counters and this node's kvstore.
    let (e, v) = c.call(1, &[]);
    assert_eq!(e, 0);
    let v = json(&v);
    assert!(v["starttime"].as_u64().unwrap() > 0, "{v}");
    assert!(
        v["storage.cfg"].is_u64() && v["kvstore"]["n1"].is_object(),
        "{v}"
    );
    assert_eq!(c.call(1, b"x").0, EINVAL, "GET_FS_VERSION takes no payload");
    let before = v["storage.cfg"].as_u64().unwrap();
    fs::write(fs.p("storage.cfg"), b"dir: local\n").unwrap();
    let v = json(&c.call(1, &[]).1);
    assert!(
        v["storage.cfg"].as_u64().unwrap() > before,
        "the counter moves: {v}"
    );

    // 2 and 3: `.members` and `.vmlist`, whose version moves with the guests.
    let (e, m) = c.call(2, &[]);
    assert_eq!((e, json(&m)["nodename"].as_str()), (0, Some("n1")));
    let v0 = json(&c.call(3, &[]).1)["version"].as_u64().unwrap();
    fs::write(
        fs.p("nodes/n1/qemu-server/100.conf"),
        b"lock: backup\ntags: a;b\n[snap]\nlock: snapshot\n",
    )
    .unwrap();
    let vm = json(&c.call(3, &[]).1);
    assert!(vm["version"].as_u64().unwrap() > v0, "{vm}");
    assert_eq!(vm["ids"]["100"]["type"], "qemu");

    // 4 and 5: SET_STATUS / GET_STATUS as `broadcast_node_kv` and `get_node_kv` send.
    let mut set = z256("kv/static-info");
    set.extend_from_slice(b"{\"cpus\":4}\0");
    assert_eq!(set.len() + 16, 283);
    assert_eq!(c.call(4, &set), (0, Vec::new()));
    let mut get = z256("kv/static-info");
    get.extend_from_slice(&z256("n1"));
    assert_eq!(get.len() + 16, 528);
    assert_eq!(c.call(5, &get), (0, b"{\"cpus\":4}\0".to_vec()));
    let mut get_local = z256("kv/static-info");
    get_local.extend_from_slice(&z256(""));
    assert_eq!(c.call(5, &get_local).1, b"{\"cpus\":4}\0");
    let v = json(&c.call(1, &[]).1);
    assert_eq!(v["kvstore"]["n1"]["kv/static-info"], 0);
    assert_eq!(c.call(4, &set).0, 0);
    assert_eq!(
        json(&c.call(1, &[]).1)["kvstore"]["n1"]["kv/static-info"],
        1
    );
    let mut other = z256("kv/static-info");
    other.extend_from_slice(&z256("n2"));
    assert_eq!(c.call(5, &other).0, ENOENT, "nothing from another node");
    assert_eq!(c.call(4, &z256("kv/static-info")).0, 0, "name only: delete");
    assert_eq!(c.call(5, &get).0, ENOENT);
    let mut big = z256("kv/big");
    big.extend(vec![b'x'; 32 * 1024 + 1]);
    assert_eq!(c.call(4, &big).0, -libc::EFBIG);
    assert_eq!(c.call(4, b"short").0, EINVAL);
    assert_eq!(
        c.call(5, &z256("kv/x")).0,
        EINVAL,
        "GET_STATUS needs both names"
    );

    // 10: the RRD dump, as `broadcast_rrd` feeds it, with its trailing NUL.
    let mut rrd = z256("rrd/pve-node-9.0/n1");
    rrd.extend_from_slice(b"123:4:5\0");
    assert_eq!(rrd.len() + 16, 280);
    assert_eq!(c.call(4, &rrd).0, 0);
    assert_eq!(
        c.call(10, &[]),
        (0, b"pve-node-9.0/n1:123:4:5\n\0".to_vec())
    );
    assert_eq!(c.call(4, &z256("rrd/pve-node-9.0/n1")).0, -libc::ENOMEM);

    // The update is written to its RRD file, with pmxcfs's schema (19 data sources of
    // a node) and the update's time; the writer runs on its own thread. pvestatd's node
    // data starts with uptime and sublevel, which are not archived.
    let rrd_file = fs.dir.path().join("rrd/pve-node-9.0/n1");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut node = z256("rrd/pve-node-9.0/n1");
    let cols = vec!["1"; 19].join(":");
    node.extend_from_slice(format!("3600:0:{now}:{cols}\0").as_bytes());
    assert_eq!(c.call(4, &node).0, 0);
    let info = pmxfs_e2e::wait_until(std::time::Duration::from_secs(10), || {
        rrd_info(&rrd_file).contains(&format!("last_update = {now}"))
    });
    assert!(
        info.is_some(),
        "RRD file not written: {}",
        rrd_info(&rrd_file)
    );
    let info = rrd_info(&rrd_file);
    assert_eq!(info.matches(".index = ").count(), 19, "{info}");
    assert!(info.contains("step = 60"), "{info}");

    // 7 and 8: a cluster log entry as `log_msg('info', 'root@pam', 'hello')` sends it,
    // then read back with `get_cluster_log('root@pam', 10)` and through `.clusterlog`.
    let log = b"\x06\x09\x08root@pam\0unknown\0hello\0";
    assert_eq!(log.len() + 16, 42);
    assert_eq!(c.call(7, log), (0, Vec::new()));
    let mut get_log = 10u32.to_le_bytes().to_vec();
    get_log.extend_from_slice(&[0; 12]);
    get_log.extend_from_slice(b"root@pam\0");
    assert_eq!(get_log.len() + 16, 41);
    let (e, body) = c.call(8, &get_log);
    assert_eq!(e, 0);
    let l = json(&body);
    let first = &l["data"][0];
    assert_eq!(first["msg"], "hello", "{l}");
    assert_eq!(first["user"], "root@pam");
    assert_eq!(first["tag"], "unknown");
    assert_eq!(first["node"], "n1");
    assert_eq!(first["pri"], 6);
    assert!(
        first["pid"].as_u64().unwrap() > 0,
        "the client's pid: {first}"
    );
    assert_eq!(
        l["data"].as_array().unwrap().len(),
        1,
        "only root@pam's: {l}"
    );
    // Everyone's: also the log's opening entry.
    let mut all = 0u32.to_le_bytes().to_vec();
    all.extend_from_slice(&[0; 12]);
    all.push(0);
    let l = json(&c.call(8, &all).1);
    let msgs: Vec<&str> = l["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["msg"].as_str().unwrap())
        .collect();
    assert_eq!(msgs, vec!["hello", "starting cluster log"]);
    let file = json(&fs::read(fs.p(".clusterlog")).unwrap());
    assert_eq!(file["data"][0]["msg"], "hello");
    assert_eq!(c.call(8, &[0; 16]).0, EINVAL, "no user string");
    assert_eq!(
        c.call(7, b"\x06\x09\x08root@pam\0unknown\0").0,
        EINVAL,
        "no msg"
    );
    assert_eq!(c.call(7, b"\x06\x09\x08root@pamXunknown\0hi\0").0, EINVAL);
    assert_eq!(c.call(7, b"\x06\x00\x00hi\0").0, EINVAL, "zero lengths");
    assert_eq!(c.call(7, b"\x06").0, EINVAL);

    // 6: GET_CONFIG as `get_config('storage.cfg')` sends it.
    assert_eq!(b"storage.cfg\0".len() + 16, 28);
    assert_eq!(c.call(6, b"storage.cfg\0"), (0, b"dir: local\n".to_vec()));
    assert_eq!(c.call(6, b"nope.cfg\0").0, ENOENT);
    assert_eq!(c.call(6, b"nodes\0").0, -libc::EISDIR);
    assert_eq!(c.call(6, &[]).0, EINVAL);

    // 12: VERIFY_TOKEN, a line of priv/token.cfg exactly.
    fs::write(fs.p("priv/token.cfg"), b"root@pam!tok secret\nother line\n").unwrap();
    assert_eq!(b"root@pam!tok secret\0".len() + 16, 36);
    assert_eq!(c.call(12, b"root@pam!tok secret\0"), (0, Vec::new()));
    assert_eq!(c.call(12, b"root@pam!tok wrong\0").0, ENOENT);
    assert_eq!(c.call(12, b"a\nb\0").0, EINVAL);
    assert_eq!(c.call(12, b"\0").0, EINVAL);
    assert_eq!(c.call(12, b"a\0b\0").0, EINVAL);

    // 13 and 11: guest config properties of the current section only.
    let mut props = 0u32.to_le_bytes().to_vec();
    props.push(2);
    props.extend_from_slice(b"lock\0tags\0");
    assert_eq!(props.len() + 16, 31);
    assert_eq!(
        c.call(13, &props),
        (
            0,
            b"{\n\"100\":{\"lock\": \"backup\",\"tags\": \"a;b\"}\n}\n".to_vec()
        )
    );
    let mut one = 100u32.to_le_bytes().to_vec();
    one.extend_from_slice(b"lock\0");
    assert_eq!(one.len() + 16, 25);
    assert_eq!(
        c.call(11, &one),
        (0, b"{\n\"100\":{\"lock\": \"backup\"}\n}\n".to_vec())
    );
    let with = |vmid: u32, rest: &[u8]| {
        let mut p = vmid.to_le_bytes().to_vec();
        p.extend_from_slice(rest);
        p
    };
    assert_eq!(
        c.call(13, &with(50, b"\x01lock\0")).0,
        EINVAL,
        "vmid below 100"
    );
    assert_eq!(
        c.call(13, &with(101, b"\x01lock\0")).0,
        ENOENT,
        "no such guest"
    );
    assert_eq!(c.call(13, &with(0, b"\x00lock\0")).0, EINVAL, "no property");
    assert_eq!(c.call(13, &with(0, b"\x01Lock\0")).0, EINVAL, "not [a-z]");
    assert_eq!(
        c.call(13, &with(0, b"\x01lock\0x")).0,
        EINVAL,
        "leftover bytes"
    );
    assert_eq!(
        c.call(13, &with(0, b"\x01cores\0")),
        (0, b"{\n\n}\n".to_vec()),
        "no guest has it"
    );

    // Unknown operations, and 9, which pmxcfs never had.
    assert_eq!(c.call(9, &[]).0, -libc::ECHRNG);
    assert_eq!(c.call(1000, &[]).0, -libc::ECHRNG);

    // A header whose size disagrees with what was sent.
    let mut lying = IpcClient::header(1, 0);
    lying[8..12].copy_from_slice(&100i32.to_ne_bytes());
    assert_eq!(c.call_raw(&lying, &[]).0, EINVAL);
    let st = fs.status();
    assert!(st["ipc"]["requests"].as_u64().unwrap() > 40);
    // `pmxfs status` lists this client, as root, with its requests.
    let me = std::process::id();
    let clients = st["ipc"]["clients"].as_array().unwrap();
    let mine = clients
        .iter()
        .find(|c| c["pid"] == me)
        .expect("this client listed");
    assert_eq!(
        (mine["uid"].as_u64(), mine["read_only"].as_bool()),
        (Some(0), Some(false))
    );
    assert!(mine["requests"].as_u64().unwrap() > 40, "{mine}");
    assert_eq!(st["rrd"]["written"], 1, "{st}");
}

/// `rrdtool info` of `file` ("" if it cannot be read).
fn rrd_info(file: &std::path::Path) -> String {
    Command::new("rrdtool")
        .arg("info")
        .arg(file)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn ipc_call(fs: &Pmxfs, who: &str, calls: &[(i32, &[u8])]) -> (Option<i32>, Vec<(i32, String)>) {
    let mut cmd = Command::new(pmxfs_e2e::bin("ipc-call"));
    cmd.args(["--as", who, &fs.ipc]);
    for (id, p) in calls {
        cmd.arg(id.to_string());
        cmd.arg(p.iter().map(|b| format!("{b:02x}")).collect::<String>());
    }
    let out = cmd.output().expect("run ipc-call");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let replies = text
        .lines()
        .filter(|l| !l.starts_with("refused"))
        .map(|l| {
            let (e, b) = l.split_once(' ').unwrap_or((l, ""));
            (e.parse().unwrap(), b.to_string())
        })
        .collect();
    (out.status.code(), replies)
}

/// root:root reads and writes; group www-data (pveproxy) reads, and may verify tokens,
/// but may not set status, log, or read private files; anyone else is refused.
#[test]
fn read_only_and_refused_clients() {
    let fs = Pmxfs::start(&[]);
    fs::write(fs.p("priv/token.cfg"), b"root@pam!tok secret\n").unwrap();
    fs::write(fs.p("storage.cfg"), b"dir: local\n").unwrap();
    fs::write(fs.p("nodes/n1/priv/x"), b"secret").unwrap();
    let mut set = z256("kv/a");
    set.extend_from_slice(b"1\0");
    let www = nix::unistd::Group::from_name("www-data")
        .unwrap()
        .map(|g| g.gid.as_raw())
        .unwrap_or(33);
    let eperm = -libc::EPERM;
    let (code, r) = ipc_call(
        &fs,
        &format!("{www}:{www}"),
        &[
            (1, b""),
            (4, &set),
            (6, b"storage.cfg\0"),
            (6, b"priv/token.cfg\0"),
            (6, b"priv\0"),
            (6, b"nodes/n1/priv/x\0"),
            (12, b"root@pam!tok secret\0"),
            (7, b"\x06\x09\x08root@pam\0unknown\0hello\0"),
            (8, b"\x0a\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"),
        ],
    );
    assert_eq!(code, Some(0));
    let errors: Vec<i32> = r.iter().map(|(e, _)| *e).collect();
    assert_eq!(errors, vec![0, eperm, 0, eperm, eperm, eperm, 0, eperm, 0]);
    assert_eq!(r[2].1, "6469723a206c6f63616c0a", "storage.cfg read");
    // root in group www-data is read-only too, as in pmxcfs.
    let (_, r) = ipc_call(&fs, &format!("0:{www}"), &[(4, &set)]);
    assert_eq!(r[0].0, eperm);
    // nobody is refused at connect.
    let (code, _) = ipc_call(&fs, "65534:65534", &[(1, b"")]);
    assert_eq!(code, Some(3), "connection refused");
}

/// Clients that never read their replies, or vanish mid-request, do not keep the
/// others from being served.
#[test]
fn misbehaving_clients_do_not_stall_the_others() {
    let fs = Pmxfs::start(&[]);
    fs::write(fs.p("big.cfg"), vec![b'x'; 512 * 1024]).unwrap();
    // A client that sends requests for 512 KiB replies and never reads one: its
    // response ring fills, the server drops it.
    let greedy = IpcClient::connect(&fs.ipc).unwrap();
    let mut sent = 0;
    for _ in 0..64 {
        if greedy.send_only(6, b"big.cfg\0") < 0 {
            break;
        }
        sent += 1;
    }
    assert!(sent > 0);
    // The server drops it once a reply cannot be sent.
    assert!(
        pmxfs_e2e::wait_until(std::time::Duration::from_secs(10), || fs.status()["ipc"]
            ["dropped"]
            .as_u64()
            .unwrap_or(0)
            >= 1)
        .is_some(),
        "the client that never reads was not dropped: {}",
        fs.status()
    );
    // A client killed after sending its request, before reading the reply.
    let mut victim = Command::new(pmxfs_e2e::bin("ipc-call"))
        .args(["--send-only", &fs.ipc, "6", "6269672e63666700"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(victim.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.starts_with("sent "), "{line}");
    victim.kill().unwrap();
    victim.wait().unwrap();
    // Meanwhile everyone else is answered at once.
    let c = IpcClient::connect(&fs.ipc).unwrap();
    for _ in 0..50 {
        assert_eq!(c.call(1, &[]).0, 0);
    }
    let (e, body) = c.call(6, b"big.cfg\0");
    assert_eq!((e, body.len()), (0, 512 * 1024));
    drop(greedy);
    assert!(fs.status()["ipc"]["connections"].as_u64().unwrap() >= 3);
}
