//! The `pve2` operations: one request (its libqb header and payload) in, one reply out,
//! with pmxcfs's request parsing, reply bodies and errnos (`server.c:s1_msg_process_fn`).
//! No I/O: everything is read from the tree service, and nothing waits for the cluster.

use memdb::paths;
use nix::errno::Errno;

use crate::tree::vfiles::{Virt, CLUSTERLOG_ENTRIES};
use crate::tree::Tree;

/// Operation ids (`cfs-ipc-ops.h`).
pub mod op {
    /// `.version`.
    pub const GET_FS_VERSION: i32 = 1;
    /// `.members`.
    pub const GET_CLUSTER_INFO: i32 = 2;
    /// `.vmlist`.
    pub const GET_GUEST_LIST: i32 = 3;
    /// Set a kvstore key of this node.
    pub const SET_STATUS: i32 = 4;
    /// Read a kvstore key of a node.
    pub const GET_STATUS: i32 = 5;
    /// Read a file of the tree.
    pub const GET_CONFIG: i32 = 6;
    /// Add a cluster log entry.
    pub const LOG_CLUSTER_MSG: i32 = 7;
    /// Read the cluster log.
    pub const GET_CLUSTER_LOG: i32 = 8;
    /// `.rrd`.
    pub const GET_RRD_DUMP: i32 = 10;
    /// One property of guest configs.
    pub const GET_GUEST_CONFIG_PROPERTY: i32 = 11;
    /// Check an API token against `priv/token.cfg`.
    pub const VERIFY_TOKEN: i32 = 12;
    /// Several properties of guest configs.
    pub const GET_GUEST_CONFIG_PROPERTIES: i32 = 13;
}

/// Size of libqb's request header (`struct qb_ipc_request_header`, fields aligned to 8).
pub const REQUEST_HEADER: usize = 16;
/// Size of libqb's response header (`struct qb_ipc_response_header`).
pub const RESPONSE_HEADER: usize = 24;

/// Who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// Group www-data: refused `SET_STATUS`, `LOG_CLUSTER_MSG` and private files.
    pub read_only: bool,
    /// The client's process id (the pid of its cluster log entries).
    pub pid: u32,
}

/// An answer: `Ok(body)` (possibly empty) or a negative errno without body.
pub type Answer = Result<Vec<u8>, Errno>;

/// A C string in `b`: the bytes up to the first NUL, or all of them.
fn c_str(b: &[u8]) -> &[u8] {
    b.iter().position(|c| *c == 0).map_or(b, |n| &b[..n])
}

fn utf8(b: &[u8]) -> Result<&str, Errno> {
    std::str::from_utf8(b).map_err(|_| Errno::EINVAL)
}

/// The reply to request `id` with `payload` (the bytes after the 16-byte header).
pub fn answer(tree: &Tree, client: Client, id: i32, payload: &[u8]) -> Answer {
    match id {
        op::GET_FS_VERSION | op::GET_CLUSTER_INFO | op::GET_GUEST_LIST | op::GET_RRD_DUMP
            if !payload.is_empty() =>
        {
            Err(Errno::EINVAL)
        }
        op::GET_FS_VERSION => Ok(tree.virtual_file(Virt::Version).into_bytes()),
        op::GET_CLUSTER_INFO => Ok(tree.virtual_file(Virt::Members).into_bytes()),
        op::GET_GUEST_LIST => Ok(tree.virtual_file(Virt::Vmlist).into_bytes()),
        op::SET_STATUS => set_status(tree, client, payload),
        op::GET_STATUS => get_status(tree, payload),
        op::GET_CONFIG => get_config(tree, client, payload),
        op::LOG_CLUSTER_MSG => log_cluster_msg(tree, client, payload),
        op::GET_CLUSTER_LOG => get_cluster_log(tree, payload),
        op::GET_RRD_DUMP => {
            // The dump carries one NUL after its text (the `.rrd` file does not).
            let now = tree.clock.now();
            let mut b = tree.kv.lock().rrd_dump(now).into_bytes();
            b.push(0);
            Ok(b)
        }
        op::VERIFY_TOKEN => verify_token(tree, payload),
        op::GET_GUEST_CONFIG_PROPERTY => guest_property(tree, payload),
        op::GET_GUEST_CONFIG_PROPERTIES => guest_properties(tree, payload),
        _ => Err(Errno::ECHRNG),
    }
}

/// `char name[256]` + value.
fn set_status(tree: &Tree, client: Client, payload: &[u8]) -> Answer {
    if client.read_only {
        return Err(Errno::EPERM);
    }
    if payload.len() < 256 {
        return Err(Errno::EINVAL);
    }
    let (name, value) = payload.split_at(256);
    // pmxcfs forces name[255] to NUL: a name is at most 255 bytes.
    let name = utf8(c_str(&name[..255]))?;
    tree.set_status(name, value)?;
    Ok(Vec::new())
}

/// `char name[256]`, `char nodename[256]`.
fn get_status(tree: &Tree, payload: &[u8]) -> Answer {
    if payload.len() < 512 {
        return Err(Errno::EINVAL);
    }
    let name = utf8(c_str(&payload[..255]))?;
    let node = utf8(c_str(&payload[256..511]))?;
    let node = if node == tree.status.nodename {
        ""
    } else {
        node
    };
    tree.kv.lock().get(node, name).ok_or(Errno::ENOENT)
}

/// `u8 priority, u8 ident_len, u8 tag_len`, then ident, tag and msg, each
/// NUL-terminated (the lengths count the NUL; msg's NUL may be missing, as pmxcfs
/// checks the byte after the request there).
fn log_cluster_msg(tree: &Tree, client: Client, payload: &[u8]) -> Answer {
    if client.read_only {
        return Err(Errno::EPERM);
    }
    let [priority, ident_len, tag_len, data @ ..] = payload else {
        return Err(Errno::EINVAL);
    };
    let (il, tl) = (*ident_len as usize, *tag_len as usize);
    // pmxcfs reads before the strings for a zero length; that is refused here.
    if il == 0 || tl == 0 || data.len() < il + tl + 1 {
        return Err(Errno::EINVAL);
    }
    if data[il - 1] != 0 || data[il + tl - 1] != 0 {
        return Err(Errno::EINVAL);
    }
    let ident = String::from_utf8_lossy(c_str(&data[..il]));
    let tag = String::from_utf8_lossy(c_str(&data[il..il + tl]));
    let msg = String::from_utf8_lossy(c_str(&data[il + tl..]));
    tree.cluster_log(&ident, &tag, client.pid, *priority, &msg)?;
    Ok(Vec::new())
}

/// `u32 max_entries, u32 reserved[3]`, then the user to filter by, NUL-terminated
/// (empty: everyone's); at most 50 entries when `max_entries` is 0.
fn get_cluster_log(tree: &Tree, payload: &[u8]) -> Answer {
    if payload.len() <= 16 {
        return Err(Errno::EINVAL);
    }
    let max = u32::from_le_bytes(payload[..4].try_into().expect("4 bytes")) as usize;
    let max = if max == 0 { CLUSTERLOG_ENTRIES } else { max };
    // pmxcfs forces the request's last byte to NUL.
    let user = String::from_utf8_lossy(c_str(&payload[16..payload.len() - 1]));
    let user = (!user.is_empty()).then_some(user.as_ref());
    Ok(tree.kv.lock().log.dump_json(max, user).into_bytes())
}

/// A path relative to the mount, NUL-terminated.
fn get_config(tree: &Tree, client: Client, payload: &[u8]) -> Answer {
    if payload.is_empty() {
        return Err(Errno::EINVAL);
    }
    // pmxcfs forces the last byte to NUL.
    let path = utf8(c_str(&payload[..payload.len() - 1]))?;
    let path = path.trim_start_matches('/');
    if client.read_only && paths::is_private(path) {
        return Err(Errno::EPERM);
    }
    let db = tree.read();
    let e = db.resolve(path)?;
    if e.is_dir() {
        return Err(Errno::EISDIR);
    }
    Ok(e.row.data.to_vec())
}

/// `"<userid>!<tokenname> <secret>"`, NUL-terminated: success if a line of
/// `priv/token.cfg` is exactly that.
fn verify_token(tree: &Tree, payload: &[u8]) -> Answer {
    let Some((&0, token)) = payload.split_last() else {
        return Err(Errno::EINVAL);
    };
    if token.is_empty() || token.contains(&b'\n') || token.contains(&0) {
        return Err(Errno::EINVAL);
    }
    let db = tree.read();
    let Ok(e) = db.resolve("priv/token.cfg") else {
        return Err(Errno::ENOENT);
    };
    if e.row.data.split(|c| *c == b'\n').any(|line| line == token) {
        Ok(Vec::new())
    } else {
        Err(Errno::ENOENT)
    }
}

/// `u32 vmid`, property Z*: op 13 with one property.
fn guest_property(tree: &Tree, payload: &[u8]) -> Answer {
    let vmid = vmid_of(payload)?;
    check_vmid(tree, vmid)?;
    let rest = &payload[4..];
    if rest.is_empty() {
        return Err(Errno::EINVAL);
    }
    let prop = utf8(c_str(&rest[..rest.len() - 1]))?;
    guest_json(tree, vmid, &[prop])
}

/// `u32 vmid`, `u8 count`, then that many properties Z*.
fn guest_properties(tree: &Tree, payload: &[u8]) -> Answer {
    let vmid = vmid_of(payload)?;
    check_vmid(tree, vmid)?;
    let count = *payload.get(4).ok_or(Errno::EINVAL)? as usize;
    let mut rest = &payload[5..];
    if count == 0 || rest.len() <= 1 {
        return Err(Errno::EINVAL);
    }
    let mut props = Vec::with_capacity(count);
    for _ in 0..count {
        let n = rest.iter().position(|c| *c == 0).ok_or(Errno::EINVAL)?;
        let p = utf8(&rest[..n])?;
        if !p.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(Errno::EINVAL);
        }
        props.push(p);
        rest = &rest[n + 1..];
    }
    if !rest.is_empty() {
        return Err(Errno::EINVAL);
    }
    guest_json(tree, vmid, &props)
}

fn vmid_of(payload: &[u8]) -> Result<u32, Errno> {
    let b: [u8; 4] = payload
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or(Errno::EINVAL)?;
    Ok(u32::from_le_bytes(b))
}

/// Guests 1 to 99 do not exist (EINVAL); a guest from 100 on must be registered
/// (ENOENT); 0 means all guests.
fn check_vmid(tree: &Tree, vmid: u32) -> Result<(), Errno> {
    match vmid {
        0 => Ok(()),
        1..=99 => Err(Errno::EINVAL),
        _ if tree.read().vms().contains_key(&vmid) => Ok(()),
        _ => Err(Errno::ENOENT),
    }
}

/// `{\n"<vmid>":{"p1": "v1","p2": "v2"},\n…\n}\n`: the guests (one, or all) with at
/// least one of `props` in their current configuration.
fn guest_json(tree: &Tree, vmid: u32, props: &[&str]) -> Answer {
    let db = tree.read();
    let mut out = String::from("{\n");
    let mut first = true;
    for (id, vm) in db.vms() {
        if vmid != 0 && *id != vmid {
            continue;
        }
        let Ok(e) = db.resolve(&vm.path(*id)) else {
            continue;
        };
        let found = properties(&e.row.data, props);
        if found.iter().all(Option::is_none) {
            continue;
        }
        if !first {
            out.push_str(",\n");
        }
        first = false;
        out.push_str(&format!("\"{id}\":{{"));
        let kv: Vec<String> = props
            .iter()
            .zip(&found)
            .filter_map(|(p, v)| v.as_ref().map(|v| format!("\"{p}\": \"{}\"", escape(v))))
            .collect();
        out.push_str(&kv.join(","));
        out.push('}');
    }
    out.push_str("\n}\n");
    Ok(out.into_bytes())
}

/// pmxcfs escapes only backslashes and double quotes.
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        if c == '\\' || c == '"' {
            s.push('\\');
        }
        s.push(c);
    }
    s
}

/// The value of each property in a guest config's current section, found as pmxcfs
/// finds it (`status.c:_get_property_values`): lines up to the first one starting with
/// `[` (snapshots and pending changes are not looked at), `<prop>:` then a value with
/// its surrounding whitespace trimmed; a later line overrides an earlier one, but the
/// scan stops once it has met as many lines of properties found before as there are
/// properties (pmxcfs's counting, kept so that both answer alike).
fn properties(conf: &[u8], props: &[&str]) -> Vec<Option<String>> {
    let mut found: Vec<Option<String>> = vec![None; props.len()];
    let mut refound = 0usize;
    // pmxcfs appends a newline to a config that lacks one, so its last line counts.
    for line in conf.split(|c| *c == b'\n') {
        if line.is_empty() {
            continue;
        }
        if line[0] == b'[' {
            break;
        }
        for (i, p) in props.iter().enumerate() {
            let p = p.as_bytes();
            if line.len() > p.len() + 1 && line.starts_with(p) && line[p.len()] == b':' {
                let v = String::from_utf8_lossy(&line[p.len() + 1..]);
                let v = v.trim();
                if !v.is_empty() {
                    refound += usize::from(found[i].is_some());
                    found[i] = Some(v.to_string());
                }
            }
        }
        if refound == props.len() {
            break;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_follow_pmxcfs() {
        let conf = b"lock: backup\ntags: a;b\nname: vm\ntags:  c \n[snap]\nlock: snapshot\n";
        assert_eq!(
            properties(conf, &["lock", "tags", "cores"]),
            vec![Some("backup".into()), Some("c".into()), None]
        );
        // A last line without its newline counts (pmxcfs appends one).
        assert_eq!(properties(b"lock: x", &["lock"]), vec![Some("x".into())]);
        // pmxcfs stops at the first repeated line once every property was seen again.
        assert_eq!(
            properties(b"lock: a\nlock: b\nlock: c\n", &["lock"]),
            vec![Some("b".into())]
        );
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
    }
}
