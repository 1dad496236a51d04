//! What happens to an RRD update before librrd sees it: which file a key names, which
//! leading columns are live-only, and how older and newer formats are fitted to the 9.0
//! schemas. No I/O, so every rule is tested here.
//!
//! Keys are `pve2-node/<node>`, `pve2.3-vm/<vmid>`, `pve2-storage/<node>/<store>` (up to
//! PVE 8) and `pve-<kind>-<version>/<id>` (9.0 on). Newer versions may only append
//! columns, so an unknown newer version is cut to the 9.0 column count; the old formats
//! are padded with `U` (unknown). Whatever the key's format, the file is the 9.0 one.
//!
//! Deliberate differences from pmxcfs, all on input it would mishandle or librrd would
//! refuse anyway:
//! - ids must be safe file names (a peer chooses them), and a storage key's node part
//!   must not be empty;
//! - the version in `pve-<kind>-<version>` must be digits and dots;
//! - the archived columns are checked (count, characters) here rather than by librrd, so
//!   garbage creates no file, and `@` (librrd's at-style time, not thread-safe) or a
//!   newline (rrdcached's line protocol) never reaches librrd;
//! - a newer format with no surplus columns is kept whole (pmxcfs drops its last byte).
use std::fmt;

/// Longest data string accepted, in bytes: pmxcfs refuses 4096 and more.
pub const MAX_DATA_LEN: usize = 4095;

/// What an RRD file records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A cluster node (`pve-node-9.0/<node>`).
    Node,
    /// A guest (`pve-vm-9.0/<vmid>`).
    Vm,
    /// A storage as one node sees it (`pve-storage-9.0/<node>/<store>`).
    Storage,
}

impl Kind {
    /// The directory, below the RRD base directory, that holds this kind's files.
    pub fn dir(self) -> &'static str {
        match self {
            Kind::Node => "pve-node-9.0",
            Kind::Vm => "pve-vm-9.0",
            Kind::Storage => "pve-storage-9.0",
        }
    }

    /// Number of data sources (the columns after the time) in the 9.0 schema.
    pub fn columns(self) -> usize {
        schema(self).iter().filter(|d| d.starts_with("DS:")).count()
    }

    /// Leading columns pvestatd sends for the live status only (uptime, VM name, ...).
    fn live_columns(self) -> usize {
        match self {
            Kind::Node => 2,
            Kind::Vm => 4,
            Kind::Storage => 0,
        }
    }

    /// Data sources of the format before 9.0: the 9.0 ones only appended to it.
    fn old_columns(self) -> usize {
        match self {
            Kind::Node => 12,
            Kind::Vm => 10,
            Kind::Storage => 2,
        }
    }

    /// Path components of the id: a storage is named per node.
    fn id_components(self) -> usize {
        match self {
            Kind::Storage => 2,
            Kind::Node | Kind::Vm => 1,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Node => "node",
            Kind::Vm => "vm",
            Kind::Storage => "storage",
        })
    }
}

/// An update fitted to a 9.0 schema, ready for librrd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// What the file records.
    pub kind: Kind,
    /// The file below the RRD base directory, e.g. `pve-storage-9.0/pcs1/local`.
    pub rel_path: String,
    /// `rrd_update`'s argument: `time:v1:…`, exactly [`Kind::columns`] values.
    pub values: String,
}

/// Why a key or data string is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// The part before the first `/` is none of the known prefixes.
    #[error("unknown key prefix {0:?}")]
    UnknownPrefix(String),
    /// `pve-<kind>-<version>` with a version that is not digits and dots.
    #[error("bad format version {0:?} (want digits and dots, e.g. 9.0)")]
    BadVersion(String),
    /// A known prefix with nothing after it.
    #[error("no id after {0:?}")]
    MissingId(String),
    /// The id has the wrong number of `/`-separated components for its kind.
    #[error("a {kind} id has {want} path component(s), {id:?} has {got}")]
    ComponentCount {
        /// The key's kind.
        kind: Kind,
        /// The id as sent.
        id: String,
        /// Components this kind's ids have.
        want: usize,
        /// Components the id has.
        got: usize,
    },
    /// The id has an empty component (`a//b`, a leading or trailing `/`).
    #[error("empty path component in id {0:?}")]
    EmptyComponent(String),
    /// An id component is `.` or contains `..`: it would leave its directory.
    #[error("path component {0:?} is `.` or contains `..`")]
    DotComponent(String),
    /// The key contains a NUL byte, which would cut the file name short in C.
    #[error("key contains a NUL byte")]
    Nul,
    /// An id component contains whitespace or a control character.
    #[error("path component {0:?} contains whitespace or a control character")]
    BadChar(String),
    /// The data string is empty.
    #[error("data is empty")]
    EmptyData,
    /// The data string is longer than [`MAX_DATA_LEN`].
    #[error("data is {0} bytes, at most {MAX_DATA_LEN} accepted")]
    DataTooLong(usize),
    /// Not even the live-only columns and the time are there.
    #[error("data has {got} column(s), a {kind} update has at least {need}")]
    MissingColumns {
        /// The key's kind.
        kind: Kind,
        /// Columns in the data string.
        got: usize,
        /// Live-only columns plus the time.
        need: usize,
    },
    /// After padding or cutting, the values do not match the schema's data sources.
    #[error("{got} value(s) for the {kind} schema's {want} data sources")]
    ValueCount {
        /// The key's kind.
        kind: Kind,
        /// Data sources in the 9.0 schema.
        want: usize,
        /// Values the update has.
        got: usize,
    },
    /// The time column is not `N` or a plain decimal number.
    #[error("time column {0:?} is not `N` or a decimal number")]
    BadTime(String),
    /// A value column is empty or has characters no number or `U` has.
    #[error("value {index} {value:?} is not a number or U")]
    BadValue {
        /// 1-based position among the archived values.
        index: usize,
        /// The column as sent.
        value: String,
    },
}

/// How a key's format relates to the 9.0 schemas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// `pve2-*`/`pve2.3-vm`: fewer columns, padded with `U`.
    Old,
    /// `pve-*-9.0`: taken as is.
    Current,
    /// `pve-*-X.Y` newer than 9.0: cut to the 9.0 columns.
    Newer,
}

/// Fit pvestatd's `data` for `key` (the part after `rrd/`) to the 9.0 schema of its kind.
pub fn parse(key: &str, data: &str) -> Result<Update, RuleError> {
    let (kind, format, id) = parse_key(key)?;
    let values = fit_values(kind, format, data)?;
    Ok(Update {
        kind,
        rel_path: format!("{}/{}", kind.dir(), id),
        values,
    })
}

/// Split a key into kind, format and a validated id.
fn parse_key(key: &str) -> Result<(Kind, Format, &str), RuleError> {
    if key.contains('\0') {
        return Err(RuleError::Nul);
    }
    let (head, id) = match key.split_once('/') {
        Some((head, id)) => (head, Some(id)),
        None => (key, None),
    };
    let (kind, format) = parse_prefix(head)?;
    let id = match id {
        Some(id) if !id.is_empty() => id,
        _ => return Err(RuleError::MissingId(head.to_owned())),
    };
    let got = id.split('/').count();
    if got != kind.id_components() {
        // A trailing `/` on a one-component id reads better as an empty component.
        if got == kind.id_components() + 1 && id.ends_with('/') {
            return Err(RuleError::EmptyComponent(id.to_owned()));
        }
        return Err(RuleError::ComponentCount {
            kind,
            id: id.to_owned(),
            want: kind.id_components(),
            got,
        });
    }
    for component in id.split('/') {
        check_component(id, component)?;
    }
    Ok((kind, format, id))
}

fn parse_prefix(head: &str) -> Result<(Kind, Format), RuleError> {
    match head {
        "pve2-node" => return Ok((Kind::Node, Format::Old)),
        "pve2.3-vm" => return Ok((Kind::Vm, Format::Old)),
        "pve2-storage" => return Ok((Kind::Storage, Format::Old)),
        _ => {}
    }
    for kind in [Kind::Node, Kind::Vm, Kind::Storage] {
        let Some(version) = head
            .strip_prefix("pve-")
            .and_then(|rest| rest.strip_prefix(kind.to_string().as_str()))
            .and_then(|rest| rest.strip_prefix('-'))
        else {
            continue;
        };
        if !is_version(version) {
            return Err(RuleError::BadVersion(version.to_owned()));
        }
        let format = if version == "9.0" {
            Format::Current
        } else {
            Format::Newer
        };
        return Ok((kind, format));
    }
    Err(RuleError::UnknownPrefix(head.to_owned()))
}

/// `9.0`, `10.2`, `9.0.1`: digit runs joined by single dots.
fn is_version(version: &str) -> bool {
    version
        .split('.')
        .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
}

/// An id component becomes a file or directory name: it must stay where it is put.
fn check_component(id: &str, component: &str) -> Result<(), RuleError> {
    if component.is_empty() {
        return Err(RuleError::EmptyComponent(id.to_owned()));
    }
    if component == "." || component.contains("..") {
        return Err(RuleError::DotComponent(component.to_owned()));
    }
    // A newline would end rrdcached's command line early; spaces and controls are in no
    // node, VM or storage name.
    if component
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(RuleError::BadChar(component.to_owned()));
    }
    Ok(())
}

/// Drop the live-only columns, pad or cut to the 9.0 column count, and check the rest.
fn fit_values(kind: Kind, format: Format, data: &str) -> Result<String, RuleError> {
    if data.is_empty() {
        return Err(RuleError::EmptyData);
    }
    if data.len() > MAX_DATA_LEN {
        return Err(RuleError::DataTooLong(data.len()));
    }
    let need = kind.live_columns() + 1;
    let got = data.split(':').count();
    if got < need {
        return Err(RuleError::MissingColumns { kind, got, need });
    }
    let mut archived: Vec<&str> = data.split(':').skip(kind.live_columns()).collect();
    match format {
        Format::Old => {
            let padding = kind.columns() - kind.old_columns();
            archived.extend(std::iter::repeat_n("U", padding));
        }
        Format::Current => {}
        // The time column comes first, then the values the 9.0 schema knows.
        Format::Newer => archived.truncate(1 + kind.columns()),
    }
    let (time, values) =
        archived
            .split_first()
            .ok_or(RuleError::MissingColumns { kind, got, need })?;
    if values.len() != kind.columns() {
        return Err(RuleError::ValueCount {
            kind,
            want: kind.columns(),
            got: values.len(),
        });
    }
    if !is_time(time) {
        return Err(RuleError::BadTime((*time).to_owned()));
    }
    for (i, value) in values.iter().enumerate() {
        if !is_value(value) {
            return Err(RuleError::BadValue {
                index: i + 1,
                value: (*value).to_owned(),
            });
        }
    }
    Ok(archived.join(":"))
}

/// `N` (now) or seconds since the epoch, with an optional fraction. Anything else could be
/// librrd's at-style time, which its docs call not thread-safe.
fn is_time(time: &str) -> bool {
    if time == "N" {
        return true;
    }
    let (int, frac) = time.split_once('.').unwrap_or((time, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(int) && digits(frac)
}

/// What a number (`12`, `-0.5`, `1.2e+09`, `nan`) or `U` is made of; librrd parses it.
fn is_value(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-'))
}

/// A data source: unknown after 120 s (two missed steps) without an update, never
/// negative, no upper bound.
macro_rules! ds {
    ($name:literal, $type:literal) => {
        concat!("DS:", $name, ":", $type, ":120:0:U")
    };
}

/// An archive over `$steps` 60 s steps, `$rows` long, known if half its steps are.
macro_rules! rra {
    ($cf:literal, $steps:literal, $rows:literal) => {
        concat!("RRA:", $cf, ":0.5:", $steps, ":", $rows)
    };
}

/// The data sources, then the archives all kinds share: for both the average and the
/// maximum, 1 min for a day, 30 min for 30 days, 6 h for 360 days, 1 week for ~10 years.
macro_rules! with_rras {
    ($($ds:expr),+ $(,)?) => {
        &[
            $($ds,)+
            rra!("AVERAGE", 1, 1440),
            rra!("AVERAGE", 30, 1440),
            rra!("AVERAGE", 360, 1440),
            rra!("AVERAGE", 10080, 570),
            rra!("MAX", 1, 1440),
            rra!("MAX", 30, 1440),
            rra!("MAX", 360, 1440),
            rra!("MAX", 10080, 570),
        ]
    };
}

// The DS names and order are what PVE's API and web UI read: they are the file format.
static NODE_SCHEMA: &[&str] = with_rras![
    ds!("loadavg", "GAUGE"),
    ds!("maxcpu", "GAUGE"),
    ds!("cpu", "GAUGE"),
    ds!("iowait", "GAUGE"),
    ds!("memtotal", "GAUGE"),
    ds!("memused", "GAUGE"),
    ds!("swaptotal", "GAUGE"),
    ds!("swapused", "GAUGE"),
    ds!("roottotal", "GAUGE"),
    ds!("rootused", "GAUGE"),
    // Byte counters: DERIVE turns them into rates.
    ds!("netin", "DERIVE"),
    ds!("netout", "DERIVE"),
    // Added in 9.0.
    ds!("memavailable", "GAUGE"),
    ds!("arcsize", "GAUGE"),
    ds!("pressurecpusome", "GAUGE"),
    ds!("pressureiosome", "GAUGE"),
    ds!("pressureiofull", "GAUGE"),
    ds!("pressurememorysome", "GAUGE"),
    ds!("pressurememoryfull", "GAUGE"),
];

static VM_SCHEMA: &[&str] = with_rras![
    ds!("maxcpu", "GAUGE"),
    ds!("cpu", "GAUGE"),
    ds!("maxmem", "GAUGE"),
    ds!("mem", "GAUGE"),
    ds!("maxdisk", "GAUGE"),
    ds!("disk", "GAUGE"),
    ds!("netin", "DERIVE"),
    ds!("netout", "DERIVE"),
    ds!("diskread", "DERIVE"),
    ds!("diskwrite", "DERIVE"),
    // Added in 9.0.
    ds!("memhost", "GAUGE"),
    ds!("pressurecpusome", "GAUGE"),
    ds!("pressurecpufull", "GAUGE"),
    ds!("pressureiosome", "GAUGE"),
    ds!("pressureiofull", "GAUGE"),
    ds!("pressurememorysome", "GAUGE"),
    ds!("pressurememoryfull", "GAUGE"),
];

static STORAGE_SCHEMA: &[&str] = with_rras![ds!("total", "GAUGE"), ds!("used", "GAUGE")];

/// The `DS:`/`RRA:` definitions `rrd_create` gets for a new 9.0 file of `kind`.
pub fn schema(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Node => NODE_SCHEMA,
        Kind::Vm => VM_SCHEMA,
        Kind::Storage => STORAGE_SCHEMA,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` columns `c1:c2:…`, for building data strings of a given width.
    fn cols(prefix: &str, n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("{prefix}{i}")).collect()
    }

    fn data(live: &[&str], time: &str, values: &[String]) -> String {
        let mut all: Vec<String> = live.iter().map(|s| s.to_string()).collect();
        all.push(time.to_owned());
        all.extend(values.iter().cloned());
        all.join(":")
    }

    fn ok(key: &str, data: &str) -> Update {
        match parse(key, data) {
            Ok(update) => update,
            Err(e) => panic!("{key}: {e}"),
        }
    }

    fn count(values: &str) -> usize {
        values.split(':').count()
    }

    #[test]
    fn schema_sizes() {
        assert_eq!(Kind::Node.columns(), 19);
        assert_eq!(Kind::Vm.columns(), 17);
        assert_eq!(Kind::Storage.columns(), 2);
        for kind in [Kind::Node, Kind::Vm, Kind::Storage] {
            let s = schema(kind);
            let avg = s.iter().filter(|d| d.starts_with("RRA:AVERAGE:")).count();
            let max = s.iter().filter(|d| d.starts_with("RRA:MAX:")).count();
            assert_eq!((avg, max), (4, 4), "{kind}");
            assert_eq!(s.len(), kind.columns() + 8, "{kind}");
        }
    }

    #[test]
    fn schema_strings() {
        let node = schema(Kind::Node);
        assert_eq!(node[0], "DS:loadavg:GAUGE:120:0:U");
        assert_eq!(node[10], "DS:netin:DERIVE:120:0:U");
        assert_eq!(node[18], "DS:pressurememoryfull:GAUGE:120:0:U");
        assert_eq!(node[19], "RRA:AVERAGE:0.5:1:1440");
        assert_eq!(node[22], "RRA:AVERAGE:0.5:10080:570");
        assert_eq!(node[23], "RRA:MAX:0.5:1:1440");
        assert_eq!(node[26], "RRA:MAX:0.5:10080:570");
        let vm = schema(Kind::Vm);
        assert_eq!(vm[9], "DS:diskwrite:DERIVE:120:0:U");
        assert_eq!(vm[10], "DS:memhost:GAUGE:120:0:U");
        assert_eq!(vm[12], "DS:pressurecpufull:GAUGE:120:0:U");
        assert_eq!(
            schema(Kind::Storage)[..2],
            ["DS:total:GAUGE:120:0:U", "DS:used:GAUGE:120:0:U"]
        );
        let derive: Vec<_> = vm.iter().filter(|d| d.contains(":DERIVE:")).collect();
        assert_eq!(derive.len(), 4);
    }

    #[test]
    fn node_current() {
        let v = cols("v", 19);
        let u = ok("pve-node-9.0/pcs1", &data(&["4711", "0"], "1700000000", &v));
        assert_eq!(u.kind, Kind::Node);
        assert_eq!(u.rel_path, "pve-node-9.0/pcs1");
        assert_eq!(u.values, format!("1700000000:{}", v.join(":")));
        assert_eq!(count(&u.values), 20);
    }

    #[test]
    fn node_old_is_padded() {
        let v = cols("v", 12);
        let u = ok("pve2-node/pcs1", &data(&["4711", "0"], "1700000000", &v));
        assert_eq!(u.kind, Kind::Node);
        assert_eq!(u.rel_path, "pve-node-9.0/pcs1");
        assert_eq!(
            u.values,
            format!("1700000000:{}:U:U:U:U:U:U:U", v.join(":"))
        );
        assert_eq!(count(&u.values), 1 + 19);
    }

    #[test]
    fn node_newer_is_cut() {
        let v = cols("v", 25);
        let u = ok("pve-node-9.3/pcs1", &data(&["4711", "0"], "1700000000", &v));
        assert_eq!(u.rel_path, "pve-node-9.0/pcs1");
        assert_eq!(u.values, format!("1700000000:{}", v[..19].join(":")));
        let u = ok("pve-node-10.0/pcs1", &data(&["1", "0"], "N", &v));
        assert_eq!(count(&u.values), 20);
    }

    #[test]
    fn newer_with_exact_count_is_kept_whole() {
        let v = cols("v", 19);
        let u = ok("pve-node-9.1/pcs1", &data(&["1", "0"], "1700000000", &v));
        assert_eq!(u.values, format!("1700000000:{}", v.join(":")));
    }

    #[test]
    fn vm_current_old_newer() {
        let live = ["300", "vm-name", "running", "0"];
        let v = cols("", 17);
        let u = ok("pve-vm-9.0/100", &data(&live, "1700000060", &v));
        assert_eq!(u.kind, Kind::Vm);
        assert_eq!(u.rel_path, "pve-vm-9.0/100");
        assert_eq!(u.values, format!("1700000060:{}", v.join(":")));

        let v = cols("", 10);
        let u = ok("pve2.3-vm/100", &data(&live, "1700000060", &v));
        assert_eq!(u.rel_path, "pve-vm-9.0/100");
        assert_eq!(
            u.values,
            format!("1700000060:{}:U:U:U:U:U:U:U", v.join(":"))
        );
        assert_eq!(count(&u.values), 1 + 17);

        let v = cols("", 30);
        let u = ok("pve-vm-9.2/100", &data(&live, "1700000060", &v));
        assert_eq!(u.values, format!("1700000060:{}", v[..17].join(":")));
    }

    #[test]
    fn storage_current_old_newer() {
        let u = ok("pve-storage-9.0/pcs1/local", "1700000000:1000:500");
        assert_eq!(u.kind, Kind::Storage);
        assert_eq!(u.rel_path, "pve-storage-9.0/pcs1/local");
        assert_eq!(u.values, "1700000000:1000:500");

        // The storage columns did not change in 9.0: no padding, nothing skipped.
        let u = ok("pve2-storage/pcs1/local", "1700000000:1000:500");
        assert_eq!(u.rel_path, "pve-storage-9.0/pcs1/local");
        assert_eq!(u.values, "1700000000:1000:500");

        let u = ok("pve-storage-9.5/pcs1/local-zfs", "1700000000:1000:500:7:8");
        assert_eq!(u.rel_path, "pve-storage-9.0/pcs1/local-zfs");
        assert_eq!(u.values, "1700000000:1000:500");
    }

    #[test]
    fn live_columns_may_hold_anything() {
        // The VM name is live-only: it is dropped, never checked.
        let v = cols("", 17);
        let u = ok(
            "pve-vm-9.0/100",
            &data(&["", "a b@c", "x", ""], "1700000000", &v),
        );
        assert_eq!(count(&u.values), 18);
    }

    #[test]
    fn values_accept_numbers_and_unknown() {
        let u = ok("pve2-storage/n/s", "1700000000.5:1.5e+10:U");
        assert_eq!(u.values, "1700000000.5:1.5e+10:U");
        ok("pve2-storage/n/s", "N:-3:nan");
    }

    #[test]
    fn wrong_counts() {
        let e = parse("pve-node-9.0/pcs1", &data(&["1", "0"], "1", &cols("v", 18)));
        assert_eq!(
            e,
            Err(RuleError::ValueCount {
                kind: Kind::Node,
                want: 19,
                got: 18
            })
        );
        let e = parse("pve2-node/pcs1", &data(&["1", "0"], "1", &cols("v", 13)));
        assert_eq!(
            e,
            Err(RuleError::ValueCount {
                kind: Kind::Node,
                want: 19,
                got: 20
            })
        );
        // A newer format must only append: fewer columns than 9.0 is not newer.
        let e = parse(
            "pve-vm-9.1/1",
            &data(&["1", "n", "s", "0"], "1", &cols("", 5)),
        );
        assert!(matches!(e, Err(RuleError::ValueCount { got: 5, .. })));
        assert_eq!(
            parse("pve-vm-9.0/1", "1:name:running"),
            Err(RuleError::MissingColumns {
                kind: Kind::Vm,
                got: 3,
                need: 5
            })
        );
        assert_eq!(
            parse("pve2-node/a", "1"),
            Err(RuleError::MissingColumns {
                kind: Kind::Node,
                got: 1,
                need: 3
            })
        );
        assert_eq!(parse("pve2-storage/n/s", ""), Err(RuleError::EmptyData));
        let long = format!("1:{}:2", "9".repeat(MAX_DATA_LEN));
        assert_eq!(
            parse("pve2-storage/n/s", &long),
            Err(RuleError::DataTooLong(long.len()))
        );
    }

    #[test]
    fn bad_time_and_values() {
        for time in ["", "now", "-1", "1.", ".5", "1@2", "12 3", "1\n"] {
            assert_eq!(
                parse("pve2-storage/n/s", &format!("{time}:1:2")),
                Err(RuleError::BadTime(time.to_owned())),
                "{time:?}"
            );
        }
        for value in ["", "1 2", "1@2", "1\nflush", "a/b", "1\0"] {
            assert_eq!(
                parse("pve2-storage/n/s", &format!("1:5:{value}")),
                Err(RuleError::BadValue {
                    index: 2,
                    value: value.to_owned()
                }),
                "{value:?}"
            );
        }
    }

    #[test]
    fn unknown_prefixes() {
        let d = "1:2:3";
        for (key, head) in [
            ("pve2-vm/100", "pve2-vm"),
            ("pve3-node/a", "pve3-node"),
            ("pve-ct-9.0/100", "pve-ct-9.0"),
            ("pve-node9.0/a", "pve-node9.0"),
            ("PVE2-NODE/a", "PVE2-NODE"),
            ("", ""),
            ("/a", ""),
            ("../pve2-node/a", ".."),
            ("node", "node"),
        ] {
            assert_eq!(
                parse(key, d),
                Err(RuleError::UnknownPrefix(head.to_owned())),
                "{key:?}"
            );
        }
    }

    #[test]
    fn bad_versions() {
        for (key, version) in [
            ("pve-node-/a", ""),
            ("pve-vm-9./1", "9."),
            ("pve-vm-.9/1", ".9"),
            ("pve-storage-9..0/n/s", "9..0"),
            ("pve-node-9.0-beta/a", "9.0-beta"),
            ("pve-node-x/a", "x"),
        ] {
            assert_eq!(
                parse(key, "1:2:3"),
                Err(RuleError::BadVersion(version.to_owned())),
                "{key:?}"
            );
        }
        // A single number or three parts are versions too, taken as newer formats.
        for key in ["pve-storage-10/n/s", "pve-storage-9.0.1/n/s"] {
            assert_eq!(ok(key, "1:2:3:4").values, "1:2:3", "{key:?}");
        }
    }

    #[test]
    fn missing_ids() {
        for (key, head) in [
            ("pve2-node", "pve2-node"),
            ("pve2-node/", "pve2-node"),
            ("pve-vm-9.0/", "pve-vm-9.0"),
            ("pve-storage-9.0", "pve-storage-9.0"),
        ] {
            assert_eq!(
                parse(key, "1:2:3"),
                Err(RuleError::MissingId(head.to_owned())),
                "{key:?}"
            );
        }
    }

    #[test]
    fn wrong_component_counts() {
        assert_eq!(
            parse("pve2-node/a/b", "1:2:3"),
            Err(RuleError::ComponentCount {
                kind: Kind::Node,
                id: "a/b".into(),
                want: 1,
                got: 2
            })
        );
        assert_eq!(
            parse("pve-vm-9.0/1/2/3", "1:2:3"),
            Err(RuleError::ComponentCount {
                kind: Kind::Vm,
                id: "1/2/3".into(),
                want: 1,
                got: 3
            })
        );
        assert_eq!(
            parse("pve2-storage/pcs1", "1:2:3"),
            Err(RuleError::ComponentCount {
                kind: Kind::Storage,
                id: "pcs1".into(),
                want: 2,
                got: 1
            })
        );
        assert!(matches!(
            parse("pve2-storage/a/b/c", "1:2:3"),
            Err(RuleError::ComponentCount { got: 3, .. })
        ));
    }

    #[test]
    fn empty_components() {
        for (key, id) in [
            ("pve2-node/a/", "a/"),
            ("pve2-storage//local", "/local"),
            ("pve2-storage/pcs1/", "pcs1/"),
            ("pve-storage-9.0//", "/"),
        ] {
            assert_eq!(
                parse(key, "1:2:3"),
                Err(RuleError::EmptyComponent(id.to_owned())),
                "{key:?}"
            );
        }
    }

    #[test]
    fn traversal_attempts() {
        for (key, component) in [
            ("pve2-node/..", ".."),
            ("pve2-node/.", "."),
            ("pve-vm-9.0/..", ".."),
            ("pve2-storage/../local", ".."),
            ("pve2-storage/pcs1/..", ".."),
            ("pve-storage-9.0/./x", "."),
            ("pve2-node/..hidden", "..hidden"),
            ("pve2-node/a..b", "a..b"),
        ] {
            assert_eq!(
                parse(key, "1:2:3"),
                Err(RuleError::DotComponent(component.to_owned())),
                "{key:?}"
            );
        }
        // Escapes through extra components are caught by the component count.
        assert!(parse("pve2-node/../../etc/passwd", "1:2:3").is_err());
        assert!(parse("pve2-storage/../../etc", "1:2:3").is_err());
        // A dot inside a name is fine: storage ids and host names have them.
        let u = ok("pve2-storage/pcs1.lan/nfs.backup", "1:2:3");
        assert_eq!(u.rel_path, "pve-storage-9.0/pcs1.lan/nfs.backup");
    }

    #[test]
    fn nul_and_control_characters() {
        for key in ["pve2-node/a\0", "pve2\0-node/a", "\0", "pve2-storage/a/\0b"] {
            assert_eq!(parse(key, "1:2:3"), Err(RuleError::Nul), "{key:?}");
        }
        for (key, component) in [
            ("pve2-node/a\nflush", "a\nflush"),
            ("pve2-node/a b", "a b"),
            ("pve-vm-9.0/1\t", "1\t"),
            ("pve2-storage/n/s\r", "s\r"),
            ("pve2-node/\u{7f}", "\u{7f}"),
        ] {
            assert_eq!(
                parse(key, "1:2:3"),
                Err(RuleError::BadChar(component.to_owned())),
                "{key:?}"
            );
        }
    }

    #[test]
    fn errors_say_what() {
        let e = parse("pve2-storage/pcs1/..", "1:2:3").unwrap_err();
        assert_eq!(
            e.to_string(),
            "path component \"..\" is `.` or contains `..`"
        );
        let e = parse("pve2-node/a/b", "1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "a node id has 1 path component(s), \"a/b\" has 2"
        );
    }
}
