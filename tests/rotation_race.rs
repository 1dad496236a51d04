//! The auth-key rotation race harness (`scripts/rotation-race.sh`) in a small CI size:
//! the pre-2022 sequence on the legacy filesystem must reproduce double rotations, and
//! the same naive sequence on the coherent filesystem must never double-rotate.

use std::process::Command;

fn race(fs: &str, seq: &str, trials: u32) -> (u32, u32, u32, u32) {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/rotation-race.sh");
    let out = Command::new("bash")
        .arg(script)
        .args([
            "--trials",
            &trials.to_string(),
            "--fs",
            fs,
            "--sequence",
            seq,
        ])
        .env("PMXFS_BIN", pmxfs_e2e::bin("pmxfs"))
        .env("AUTHKEY_BIN", pmxfs_e2e::bin("authkey"))
        .env(
            "RACE_DIR",
            std::env::temp_dir().join(format!("pmxfs-race-{}", std::process::id())),
        )
        .output()
        .expect("run rotation-race.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    let field = |k: &str| -> u32 {
        last.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {last:?}"))
    };
    (
        field("trials"),
        field("rotations"),
        field("double_rotations"),
        field("invalid_tickets"),
    )
}

#[test]
fn legacy_naive_reproduces_and_coherent_never_double_rotates() {
    let (t, r, d, _) = race("legacy", "naive", 3);
    eprintln!("legacy+naive: trials={t} rotations={r} double_rotations={d}");
    assert!(d > 0, "legacy+naive did not reproduce the double rotation");
    let (t, r, d, i) = race("coherent", "naive", 15);
    eprintln!("coherent+naive: trials={t} rotations={r} double_rotations={d} invalid_tickets={i}");
    assert_eq!(
        (r, d, i),
        (t, 0, 0),
        "coherent stat must rotate exactly once per trial"
    );
}
