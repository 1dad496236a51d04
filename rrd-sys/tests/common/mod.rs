//! Helpers the integration tests share: reading a file back with `rrdtool info`.
#![allow(dead_code)]
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// `rrdtool info <file>`, as `key = value` pairs (string values unquoted).
pub struct Info(BTreeMap<String, String>);

impl Info {
    /// Read `path` directly, never through a daemon from the environment.
    pub fn read(path: &Path) -> Info {
        let out = Command::new("rrdtool")
            .arg("info")
            .arg(path)
            .env_remove("RRDCACHED_ADDRESS")
            .output()
            .expect("run rrdtool (package rrdtool)");
        assert!(
            out.status.success(),
            "rrdtool info {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let map = text
            .lines()
            .filter_map(|line| line.split_once(" = "))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
            .collect();
        Info(map)
    }

    /// The value of `key`, failing the test if it is missing.
    pub fn get(&self, key: &str) -> &str {
        match self.0.get(key) {
            Some(v) => v,
            None => panic!("rrdtool info has no {key}"),
        }
    }

    /// Data source names, in index order.
    pub fn ds_names(&self) -> Vec<String> {
        let mut named: Vec<(usize, String)> = self
            .0
            .iter()
            .filter_map(|(k, v)| {
                let name = k.strip_prefix("ds[")?.strip_suffix("].index")?;
                Some((v.parse().ok()?, name.to_owned()))
            })
            .collect();
        named.sort();
        named.into_iter().map(|(_, name)| name).collect()
    }

    /// Number of archives.
    pub fn rra_count(&self) -> usize {
        self.0
            .keys()
            .filter(|k| k.starts_with("rra[") && k.ends_with("].cf"))
            .count()
    }

    /// `last_update` as seconds.
    pub fn last_update(&self) -> i64 {
        self.get("last_update").parse().expect("last_update")
    }
}

/// Now, in whole seconds: the time column of the test updates.
pub fn now() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(d.as_secs()).expect("time fits i64")
}

/// `n` values `1:2:…:n`.
pub fn values(n: usize) -> String {
    (1..=n).map(|i| i.to_string()).collect::<Vec<_>>().join(":")
}
