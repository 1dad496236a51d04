//! The `authkey` binary on a plain temporary directory (the stat fallback path).

use std::path::Path;
use std::process::{Command, Output};

fn authkey(base: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_authkey"))
        .arg("--base")
        .arg(base)
        .args(args)
        .env("AUTHKEY_LOG", "off")
        .output()
        .expect("run authkey")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn rotate_issue_verify_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path();
    if !is_root() {
        let o = authkey(b, &["rotate", "--sequence", "fixed"]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("must run as root"), "{}", stderr(&o));
        return;
    }
    assert_eq!(stdout(&authkey(b, &["check"])), "due: Missing");
    let o = authkey(b, &["rotate", "--sequence", "fixed"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "rotated");
    assert_eq!(
        stdout(&authkey(b, &["rotate", "--sequence", "naive"])),
        "not-due"
    );
    assert_eq!(stdout(&authkey(b, &["check"])), "fresh");

    let t = stdout(&authkey(b, &["ticket", "issue", "root@pam"]));
    assert!(t.starts_with("PVE:root@pam:"), "{t}");
    let o = authkey(b, &["ticket", "verify", &t]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "root@pam");
    for (bad, msg) in [
        ("garbage".to_string(), "malformed"),
        (t.replacen("PVE:", "PMG:", 1), "wrong prefix"),
        (t.replacen("root@pam", "root@pve", 1), "bad signature"),
    ] {
        let o = authkey(b, &["ticket", "verify", &bad]);
        assert_eq!(o.status.code(), Some(1), "{bad}");
        assert!(stderr(&o).contains(msg), "{bad}: {}", stderr(&o));
    }

    let o = authkey(b, &["token", "set", "root@pam!ci"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let secret = stdout(&o);
    assert_eq!(secret.len(), 36);
    let o = authkey(b, &["token", "verify", "root@pam!ci", &secret, "--verbose"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("invalidation: file stat"), "{out}");
    assert!(out.ends_with("ok"), "{out}");
    let o = authkey(b, &["token", "verify", "root@pam!ci", "wrong"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("invalid API token secret"));
    let o = authkey(b, &["token", "verify", "root@pam", "x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not an API token id"), "{}", stderr(&o));
    assert!(authkey(b, &["token", "delete", "root@pam!ci"])
        .status
        .success());
    let o = authkey(b, &["token", "verify", "root@pam!ci", &secret]);
    assert!(stderr(&o).contains("unknown API token"), "{}", stderr(&o));

    // A corrupt key is not rotated over without --force.
    std::fs::write(b.join("authkey.pub"), "not a key\n").unwrap();
    let o = authkey(b, &["rotate", "--sequence", "fixed"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    let o = authkey(b, &["rotate", "--sequence", "fixed", "--force"]);
    assert_eq!(stdout(&o), "rotated", "{}", stderr(&o));
}

#[test]
fn missing_keys_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let o = authkey(
        dir.path(),
        &["ticket", "verify", "PVE:root@pam:65A1B2C3::AAAA"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no auth key"), "{}", stderr(&o));
    if is_root() {
        let o = authkey(dir.path(), &["ticket", "issue", "root@pam"]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("no private key"), "{}", stderr(&o));
    }
}
