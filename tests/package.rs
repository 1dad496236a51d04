//! The Debian package: `scripts/package.sh` builds it (here from the binary the tests
//! already built), it installs with `dpkg -i`, `systemd-analyze verify` accepts its unit
//! and the drop-in for pve-cluster.service, and the installed binary goes into the
//! background, mounts and serves. The package is removed again, however the test ends.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pmxfs_e2e::ipc::IpcClient;
use pmxfs_e2e::{bin, is_mounted, wait_until};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Removes the installed package (and stops its daemon) when dropped.
struct Installed {
    pidfile: PathBuf,
}

impl Drop for Installed {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = wait_until(Duration::from_secs(10), || {
                !Path::new(&format!("/proc/{pid}")).exists()
            });
        }
        let _ = Command::new("dpkg").args(["-r", "pmxfs"]).output();
    }
}

/// `systemd-analyze verify` of `unit` found in `dir`: Ok, or what it said.
fn verify(dir: &Path, unit: &str) -> Result<(), String> {
    let out = Command::new("systemd-analyze")
        .args(["verify", unit])
        .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.display()))
        .output()
        .expect("systemd-analyze");
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(said)
    }
}

#[test]
fn the_package_builds_installs_and_serves() {
    let out = Command::new("bash")
        .arg(repo().join("scripts/package.sh"))
        .env("PMXFS_BIN", bin("pmxfs"))
        .output()
        .expect("package.sh");
    assert!(out.status.success(), "package.sh: {out:?}");
    let deb = repo().join(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        deb.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("pmxfs_"),
        "{}",
        deb.display()
    );
    let contents = Command::new("dpkg-deb")
        .arg("--contents")
        .arg(&deb)
        .output()
        .unwrap();
    let contents = String::from_utf8_lossy(&contents.stdout);
    for f in [
        "./usr/bin/pmxfs",
        "./lib/systemd/system/pmxfs.service",
        "./usr/share/pmxfs/pve-cluster-pmxfs.conf",
        "./usr/share/man/man8/pmxfs.8.gz",
    ] {
        assert!(
            contents.contains(f),
            "{f} missing from the package:\n{contents}"
        );
    }
    let depends = Command::new("dpkg-deb")
        .args(["--field"])
        .arg(&deb)
        .arg("Depends")
        .output()
        .unwrap();
    let depends = String::from_utf8_lossy(&depends.stdout);
    assert!(
        depends.contains("libqb100") && depends.contains("libcpg4"),
        "{depends}"
    );

    let t = tempfile::tempdir().unwrap();
    let installed = Installed {
        pidfile: t.path().join("pmxfs.pid"),
    };
    let out = Command::new("dpkg").arg("-i").arg(&deb).output().unwrap();
    assert!(out.status.success(), "dpkg -i: {out:?}");
    assert!(Path::new("/usr/bin/pmxfs").exists());

    // The unit, and the drop-in over a pve-cluster.service like Proxmox's.
    let units = t.path().join("units");
    std::fs::create_dir_all(units.join("pve-cluster.service.d")).unwrap();
    std::fs::copy(
        "/lib/systemd/system/pmxfs.service",
        units.join("pmxfs.service"),
    )
    .unwrap();
    let pve = std::fs::read_to_string("/lib/systemd/system/pmxfs.service")
        .unwrap()
        .replace("/usr/bin/pmxfs", "/usr/bin/true")
        .replace("Alias=pve-cluster.service", "");
    std::fs::write(units.join("pve-cluster.service"), pve).unwrap();
    std::fs::copy(
        "/usr/share/pmxfs/pve-cluster-pmxfs.conf",
        units.join("pve-cluster.service.d/pmxfs.conf"),
    )
    .unwrap();
    verify(&units, "pmxfs.service").expect("pmxfs.service");
    verify(&units, "pve-cluster.service").expect("pve-cluster.service with the drop-in");
    // The check can fail: a unit with a bad key is refused.
    std::fs::write(
        units.join("pve-cluster.service.d/bad.conf"),
        "[Service]\nExecStartt=/x\n",
    )
    .unwrap();
    assert!(verify(&units, "pve-cluster.service").is_err());

    // The installed binary: into the background, returning once it serves.
    let mnt = t.path().join("mnt");
    let ipc = format!("pmxfs-pkg-{}", std::process::id());
    let log = std::fs::File::create(t.path().join("pmxfs.log")).unwrap();
    let st = Command::new("/usr/bin/pmxfs")
        .arg("--local")
        .arg("--mount")
        .arg(&mnt)
        .arg("--db")
        .arg(t.path().join("config.db"))
        .arg("--pidfile")
        .arg(&installed.pidfile)
        .arg("--restart-flag")
        .arg(t.path().join("restart-flag"))
        .arg("--rrd-dir")
        .arg(t.path().join("rrd"))
        .args(["--rrdcached", "", "--nodename", "pkg", "--ipc-name", &ipc])
        .env("PMXFS_RUN_DIR", t.path().join("run"))
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .status()
        .unwrap();
    let daemon_log = || std::fs::read_to_string(t.path().join("pmxfs.log")).unwrap_or_default();
    assert!(st.success(), "{st:?}\n{}", daemon_log());
    assert!(is_mounted(&mnt));
    std::fs::write(mnt.join("datacenter.cfg"), "keyboard: en-us\n").unwrap();
    let c = IpcClient::connect(&ipc).expect("IPC serves");
    assert_eq!(
        c.call(6, b"datacenter.cfg\0"),
        (0, b"keyboard: en-us\n".to_vec())
    );
    drop(c);
    drop(installed);
    assert!(!is_mounted(&mnt), "stopped by SIGTERM: {}", daemon_log());
    assert!(!Path::new("/usr/bin/pmxfs").exists(), "dpkg -r removed it");
}
