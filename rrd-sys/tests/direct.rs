//! Updates written by librrd directly (no daemon), read back with `rrdtool info`.
mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::{now, values, Info};
use rrd_sys::{RrdError, RrdWriter};

fn assert_dir_mode(path: &std::path::Path) {
    let mode = std::fs::metadata(path).expect("dir").permissions().mode() & 0o7777;
    // 0750, less whatever the umask takes away.
    assert_eq!(mode & !0o750, 0, "{} has mode {mode:o}", path.display());
    assert_eq!(mode & 0o700, 0o700, "{} has mode {mode:o}", path.display());
}

#[test]
fn old_node_format_is_padded_into_a_new_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = RrdWriter::new(dir.path(), None);
    let t = now();
    // uptime, sublevel, then the time and the 12 columns of pve2-node.
    let data = format!("4711:0:{t}:0.25:8:0.1:0.01:100:50:10:5:1000:500:123:456");
    writer.update("pve2-node/pcs1", &data).expect("update");

    let path = dir.path().join("pve-node-9.0/pcs1");
    assert!(path.is_file(), "{} missing", path.display());
    assert_dir_mode(&dir.path().join("pve-node-9.0"));
    let info = Info::read(&path);
    assert_eq!(info.get("step"), "60");
    assert_eq!(info.last_update(), t);
    let names = info.ds_names();
    assert_eq!(names.len(), 19, "{names:?}");
    assert_eq!(names[0], "loadavg");
    assert_eq!(names[18], "pressurememoryfull");
    assert_eq!(info.rra_count(), 8);
    assert_eq!(info.get("rra[0].cf"), "AVERAGE");
    assert_eq!(info.get("rra[3].pdp_per_row"), "10080");
    assert_eq!(info.get("rra[3].rows"), "570");
    assert_eq!(info.get("rra[7].cf"), "MAX");
    assert_eq!(info.get("ds[netin].type"), "DERIVE");
    assert_eq!(info.get("ds[cpu].minimal_heartbeat"), "120");
    // The live-only columns were dropped: the first value is loadavg's.
    assert_eq!(info.get("ds[loadavg].last_ds"), "0.25");
    assert_eq!(info.get("ds[netout].last_ds"), "456");
    // Columns the old format lacks are unknown.
    assert_eq!(info.get("ds[memavailable].last_ds"), "U");
    assert_eq!(info.get("ds[pressurememoryfull].last_ds"), "U");
}

#[test]
fn current_vm_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = RrdWriter::new(dir.path(), None);
    let t = now();
    let data = format!("300:web01:running:0:{t}:{}", values(17));
    writer.update("pve-vm-9.0/100", &data).expect("update");

    let info = Info::read(&dir.path().join("pve-vm-9.0/100"));
    assert_eq!(info.get("step"), "60");
    assert_eq!(info.last_update(), t);
    assert_eq!(info.ds_names().len(), 17);
    assert_eq!(info.get("ds[maxcpu].last_ds"), "1");
    assert_eq!(info.get("ds[memhost].last_ds"), "11");
    assert_eq!(info.get("ds[pressurememoryfull].last_ds"), "17");
}

#[test]
fn newer_storage_format_is_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = RrdWriter::new(dir.path(), None);
    let t = now();
    writer
        .update("pve-storage-9.4/pcs1/local", &format!("{t}:1000:500:77:88"))
        .expect("update");

    assert_dir_mode(&dir.path().join("pve-storage-9.0"));
    assert_dir_mode(&dir.path().join("pve-storage-9.0/pcs1"));
    let info = Info::read(&dir.path().join("pve-storage-9.0/pcs1/local"));
    assert_eq!(info.ds_names(), ["total", "used"]);
    assert_eq!(info.last_update(), t);
    assert_eq!(info.get("ds[used].last_ds"), "500");
}

#[test]
fn existing_file_is_updated_not_recreated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = RrdWriter::new(dir.path(), None);
    let t = now();
    writer
        .update("pve2-storage/pcs1/local", &format!("{t}:1000:500"))
        .expect("first update");
    let path = dir.path().join("pve-storage-9.0/pcs1/local");
    let inode = std::fs::metadata(&path).expect("file").ino();
    writer
        .update(
            "pve-storage-9.0/pcs1/local",
            &format!("{}:1000:600", t + 60),
        )
        .expect("second update");
    assert_eq!(std::fs::metadata(&path).expect("file").ino(), inode);
    let info = Info::read(&path);
    assert_eq!(info.last_update(), t + 60);
    assert_eq!(info.get("ds[used].last_ds"), "600");
}

#[test]
fn librrd_refusal_names_file_and_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = RrdWriter::new(dir.path(), None);
    let data = format!("{}:1:2", now());
    writer
        .update("pve2-storage/n/s", &data)
        .expect("first update");
    // The same time again: librrd wants at least one second between updates.
    let e = writer.update("pve2-storage/n/s", &data).unwrap_err();
    let path = dir.path().join("pve-storage-9.0/n/s");
    match &e {
        RrdError::Update {
            path: p, daemon, ..
        } => {
            assert_eq!(p, &path);
            assert_eq!(daemon, &None);
        }
        other => panic!("want an update error, got {other}"),
    }
    let text = e.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("minimum one second step"), "{text}");
}

#[test]
fn unwritable_base_is_a_directory_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("not-a-dir");
    std::fs::write(&base, b"").expect("file");
    let writer = RrdWriter::new(&base, None);
    let e = writer
        .update("pve2-node/pcs1", &format!("1:0:{}:{}", now(), values(12)))
        .unwrap_err();
    match e {
        RrdError::CreateDir { path, .. } => assert_eq!(path, base.join("pve-node-9.0")),
        other => panic!("want a directory error, got {other}"),
    }
}

#[test]
fn bad_keys_create_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let writer = RrdWriter::new(dir.path(), None);
    for key in [
        "pve2-node/..",
        "pve2-storage/../x",
        "pve2-node/a/../../b",
        "pve9-node/a",
        "pve2-node/a\0b",
    ] {
        let e = writer.update(key, "1:0:1700000000:1").unwrap_err();
        assert!(matches!(e, RrdError::Rule { .. }), "{key:?}: {e}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
}
