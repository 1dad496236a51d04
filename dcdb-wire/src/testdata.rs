//! Test helpers: the captured messages under tests/fixtures (copied from
//! /work/shared/fixtures/pmxcfs-wire) and their manifest.

use pve_status::wire::{decode_for, Kind, Message};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pmxcfs-wire/");

/// The bytes of a captured message, e.g. `n1/00018-pve_dcdb_v1.bin`.
pub(crate) fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{DIR}{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// One kept pve_dcdb_v1 capture's row of manifest.tsv.
pub(crate) struct Row {
    /// The .bin, e.g. `n1/00018-pve_dcdb_v1.bin`.
    pub file: String,
    /// The sender's node id (from `pcsK`).
    pub nodeid: u32,
    /// The sender's pid.
    pub pid: u32,
    /// `type_name`.
    pub type_name: String,
    /// `subtype_name`.
    pub subtype_name: String,
    /// `count_or_epoch`.
    pub count_or_epoch: String,
    /// `summary`, as key=value words.
    pub summary: String,
}

impl Row {
    /// The value of `key=` in the summary.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.summary
            .split(' ')
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
    }
}

/// Every kept pve_dcdb_v1 capture in manifest.tsv, in send-time order.
pub(crate) fn all_fixtures() -> Vec<Row> {
    let m = std::fs::read_to_string(format!("{DIR}manifest.tsv")).expect("manifest.tsv");
    let mut lines = m.lines();
    let head: Vec<&str> = lines.next().expect("header").split('\t').collect();
    let col = |n: &str| head.iter().position(|h| *h == n).expect(n);
    let (g, t, s, f) = (
        col("group"),
        col("type_name"),
        col("subtype_name"),
        col("file"),
    );
    let (node, pid, ce, sum) = (
        col("node"),
        col("pid"),
        col("count_or_epoch"),
        col("summary"),
    );
    lines
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|r| r[g] == "pve_dcdb_v1" && r[f].ends_with(".bin"))
        .map(|r| Row {
            file: r[f].to_string(),
            nodeid: r[node].trim_start_matches("pcs").parse().expect("node"),
            pid: r[pid].parse().expect("pid"),
            type_name: r[t].to_string(),
            subtype_name: r[s].to_string(),
            count_or_epoch: r[ce].to_string(),
            summary: r[sum].to_string(),
        })
        .collect()
}

/// A NORMAL message's subtype and payload.
pub(crate) fn normal_payload(b: &[u8]) -> (u16, Vec<u8>) {
    match decode_for(b, 1).expect("framing") {
        Message::Normal {
            subtype, payload, ..
        } => (subtype.raw(), payload.to_vec()),
        m => panic!("not NORMAL: {m:?}"),
    }
}

/// A state message's payload; `kind` is its dfsm type number (2 STATE, 3 UPDATE, …).
pub(crate) fn state_payload(b: &[u8], kind: u16) -> Vec<u8> {
    match decode_for(b, 1).expect("framing") {
        Message::State {
            kind: k, payload, ..
        } => {
            let want = [
                Kind::SyncStart,
                Kind::State,
                Kind::Update,
                Kind::UpdateComplete,
                Kind::VerifyRequest,
                Kind::Verify,
            ];
            assert_eq!(Some(&k), want.get(usize::from(kind) - 1));
            payload.to_vec()
        }
        m => panic!("not a state message: {m:?}"),
    }
}
