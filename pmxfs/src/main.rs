//! `pmxfs`: the daemon, `pmxfs status` and `pmxfs lock`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use memdb::Limits;
use pmxfs::coherence::Ttls;
use pmxfs::daemon::{self, DaemonOpts};
use pmxfs::{CfsLockError, CfsLockGuard};
use storage::SyncMode;

#[derive(Parser)]
#[command(
    name = "pmxfs",
    version,
    about = "Proxmox VE cluster configuration filesystem (/etc/pve)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    daemon: DaemonArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print node name, mode, quorum, members, database version, inodes and bytes.
    Status {
        /// Mount point of the pmxfs to ask.
        #[arg(long, default_value = "/etc/pve")]
        mount: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check, repair or set aside the database (pmxfs must not run on it to set it
    /// aside).
    Db {
        #[command(subcommand)]
        what: DbCmd,
        /// The database.
        #[arg(long, default_value = "/var/lib/pve-cluster/config.db", global = true)]
        db: PathBuf,
    },
    /// Print the manual page (troff) to standard output.
    #[command(hide = true)]
    Man,
    /// Run a command while holding cluster lock NAME (`priv/lock/NAME`).
    Lock {
        /// Lock name.
        name: String,
        /// Give up after this many seconds (exit status 2).
        #[arg(long)]
        timeout: Option<f64>,
        /// Mount point.
        #[arg(long, default_value = "/etc/pve")]
        mount: PathBuf,
        /// Command and arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

#[derive(Subcommand)]
enum DbCmd {
    /// Say whether the tree is consistent, and if not, every entry that cannot stay
    /// and why (exit status 1).
    Check,
    /// Write a copy with every consistent entry beside the database (or to --output),
    /// listing what it leaves out; the database itself is not changed.
    Repair {
        /// Where to write the copy (default: <db>.repaired).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Move the database aside (into set-aside-<time>/ beside it): the next start
    /// begins anew, imports the host's corosync.conf and takes the cluster's tree.
    SetAside,
}

#[derive(Clone, Copy, ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Clone, Copy, ValueEnum)]
enum TransportArg {
    /// io_uring when the kernel offers it, else /dev/fuse.
    Auto,
    /// As auto, but warn when the kernel does not offer io_uring.
    IoUring,
    /// fuser's /dev/fuse reader threads only.
    DevFuse,
}

#[derive(Clone, Copy, ValueEnum)]
enum SyncArg {
    Normal,
    Full,
}

#[derive(Args)]
struct DaemonArgs {
    /// Mount point.
    #[arg(long, default_value = "/etc/pve")]
    mount: PathBuf,
    /// SQLite database (pmxcfs's config.db schema).
    #[arg(long, default_value = "/var/lib/pve-cluster/config.db")]
    db: PathBuf,
    /// Force local mode: no corosync, always writable, even if the database holds
    /// corosync.conf (pmxcfs -l). Without it the database decides, as in pmxcfs:
    /// cluster mode when it holds corosync.conf.
    #[arg(long, short = 'l')]
    local: bool,
    /// Stay in the foreground and log to standard error (pmxcfs -f). Without it pmxfs
    /// forks and returns once /etc/pve is mounted and the IPC server answers.
    #[arg(long, short = 'f')]
    foreground: bool,
    /// Debug messages (pmxcfs -d); PMXFS_LOG overrides (e.g. "pmxfs=debug").
    #[arg(long, short = 'd')]
    debug: bool,
    /// The host's corosync.conf: imported into a new database, and written back from
    /// the cluster's in cluster mode.
    #[arg(long, default_value = "/etc/corosync/corosync.conf")]
    corosync_conf: PathBuf,
    /// Pid file, written once the daemon serves ("" for none).
    #[arg(long, default_value = "/run/pve-cluster.pid")]
    pidfile: PathBuf,
    /// Restart flag: created when the daemon stops and removed once it serves; PVE's
    /// IPC client waits while it exists ("" for none).
    #[arg(long, default_value = "/run/pve-cluster/cfs-restart-flag")]
    restart_flag: PathBuf,
    /// Node name (default: the host name up to the first dot).
    #[arg(long)]
    nodename: Option<String>,
    /// Kernel entry cache timeout for unprotected paths, seconds.
    #[arg(long, default_value_t = 1.0)]
    entry_timeout: f64,
    /// Kernel attribute cache timeout for unprotected paths, seconds.
    #[arg(long, default_value_t = 1.0)]
    attr_timeout: f64,
    /// Cache-coherent stat (off: legacy fixed timeouts, no invalidation).
    #[arg(long, value_enum, default_value = "on")]
    coherence: OnOff,
    /// Seconds after its last refresh at which a cluster lock expires.
    #[arg(long, default_value_t = memdb::locks::DEFAULT_LOCK_TIMEOUT)]
    lock_timeout: u32,
    /// Maximum number of entries (ENOSPC beyond).
    #[arg(long, default_value_t = Limits::default().max_inodes)]
    max_inodes: usize,
    /// Maximum total bytes of file content (ENOSPC beyond).
    #[arg(long, default_value_t = Limits::default().max_fs_size)]
    max_fs_size: u64,
    /// SQLite durability: normal (as pmxcfs: survives crashes) or full (fsync each commit).
    #[arg(long, value_enum, default_value = "normal")]
    sync: SyncArg,
    /// FUSE worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// How requests reach the daemon: per-CPU io_uring queues (Linux 6.14+ with
    /// fuse.enable_uring=1) or /dev/fuse reader threads.
    #[arg(long, value_enum, default_value = "auto")]
    transport: TransportArg,
    /// libqb service name of the IPC server PVE's daemons connect to.
    #[arg(long, default_value = pmxfs::ipc::SERVICE)]
    ipc_name: String,
    /// Directory of the RRD files (pve-{node,vm,storage}-9.0/<id>) written for every
    /// node's RRD updates.
    #[arg(long, default_value = rrd_sys::writer::PVE_RRD_DIR)]
    rrd_dir: std::path::PathBuf,
    /// rrdcached's address for RRD updates ("" for none: librrd writes directly, as it
    /// also does when the daemon is not running).
    #[arg(long, default_value = rrd_sys::writer::PVE_RRDCACHED)]
    rrdcached: String,
    /// Seconds a change may wait in the intent log (where it is already durable)
    /// before it is folded into SQLite together with the ones after it; 0 folds each
    /// at once. Longer means fewer SQLite commits and checkpoints, so less SSD wear;
    /// config.db trails the tree by at most this much (pmxfs itself reads the tree).
    #[arg(long, default_value_t = storage::logged::FOLD_AFTER.as_secs_f64())]
    db_fold_after: f64,
    /// In cluster mode, how often (seconds) the lowest node asks every node to
    /// checksum its tree at the same point of the message order; a node whose tree
    /// differs resyncs (pmxcfs: every 3,600 s).
    #[arg(long, default_value_t = 600.0)]
    verify_every: f64,
    /// The cluster protocol: `pmxfs` (pmxfs's own: replication terms, writes answered
    /// once a majority holds them, group commit), `pmxcfs` (pmxcfs 9.1.6's
    /// `pve_dcdb_v1`, byte for byte, to share a cluster with pmxcfs nodes, with
    /// pmxcfs's guarantees), or `auto` (pmxcfs's until every node of the cluster runs
    /// pmxfs, then pmxfs's own for good, by agreement at a sync round; pmxcfs daemons
    /// are refused after that). README, "Mixed clusters and upgrading".
    #[arg(long, value_enum, default_value_t = ProtocolArg::Pmxfs)]
    protocol: ProtocolArg,
    /// Accept the control socket's test hooks: operations injected as if from another
    /// node, and moving the daemon's clock forward.
    #[arg(long, hide = true)]
    debug_hooks: bool,
    /// Inject a fault (tests): stall-apply, fail-queue=N, fail-queue-after=N.
    #[arg(long = "fault", hide = true, value_name = "FAULT")]
    faults: Vec<pmxfs::faults::Fault>,
}

/// `--protocol`'s values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ProtocolArg {
    /// pmxfs's own protocol.
    Pmxfs,
    /// pmxcfs's `pve_dcdb_v1`.
    Pmxcfs,
    /// pmxcfs's, switching to pmxfs's own once every node runs pmxfs.
    Auto,
}

fn secs(s: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(s).context("timeouts must be non-negative seconds")
}

/// Where the logs go: the journal for a daemon in the background when journald runs,
/// else standard error (without colours or timestamps when the journal captures it, as
/// under systemd). Returns whether the journal took them.
fn init_logging(cli: &Cli) -> bool {
    use tracing_subscriber::prelude::*;
    let level = if cli.daemon.debug { "debug" } else { "info" };
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("PMXFS_LOG").unwrap_or_else(|_| level.into())
    };
    let background = cli.cmd.is_none() && !cli.daemon.foreground;
    if background {
        if let Ok(j) = tracing_journald::layer() {
            tracing_subscriber::registry()
                .with(j.with_syslog_identifier("pmxfs".into()))
                .with(filter())
                .init();
            return true;
        }
    }
    let to_journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_ansi(!to_journal && std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if to_journal {
        fmt.without_time().init();
    } else {
        fmt.init();
    }
    false
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let journal = init_logging(&cli);
    let r = match cli.cmd {
        Some(Cmd::Status { mount, json }) => status(&mount, json).map(|()| ExitCode::SUCCESS),
        Some(Cmd::Man) => man().map(|()| ExitCode::SUCCESS),
        Some(Cmd::Db { what, db }) => db_cmd(what, &db),
        Some(Cmd::Lock {
            name,
            timeout,
            mount,
            command,
        }) => lock(&mount, &name, timeout, &command),
        None => run_daemon(cli.daemon, journal).map(|()| ExitCode::SUCCESS),
    };
    r.unwrap_or_else(|e| {
        eprintln!("pmxfs: {e:#}");
        ExitCode::FAILURE
    })
}

/// The manual page: clap's rendering of the options and commands, then the sections
/// only prose can hold (modes, lifecycle, use on a Proxmox VE node, files).
fn man() -> Result<()> {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let page = clap_mangen::Man::new(cmd)
        .section("8")
        .manual("System Administration");
    let mut out = Vec::new();
    page.render(&mut out)?;
    out.extend_from_slice(include_bytes!("manpage.txt"));
    std::io::Write::write_all(&mut std::io::stdout(), &out)?;
    Ok(())
}

fn db_cmd(what: DbCmd, db: &std::path::Path) -> Result<ExitCode> {
    use pmxfs::db_tools;
    match what {
        DbCmd::Check => Ok(if db_tools::check(db)? {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }),
        DbCmd::Repair { output } => {
            db_tools::repair(db, output.as_deref())?;
            Ok(ExitCode::SUCCESS)
        }
        DbCmd::SetAside => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let dir = db_tools::set_aside(db, now)?;
            println!(
                "moved {} aside to {}; the next start begins with a new database (in a \
                 cluster: the host's corosync.conf, then the cluster's tree)",
                db.display(),
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// An optional path: "" means none.
fn optional(p: PathBuf) -> Option<PathBuf> {
    (!p.as_os_str().is_empty()).then_some(p)
}

fn run_daemon(a: DaemonArgs, journal: bool) -> Result<()> {
    let opts = DaemonOpts {
        mount: a.mount,
        db: a.db,
        force_local: a.local,
        foreground: a.foreground,
        journal,
        corosync_conf: a.corosync_conf,
        pidfile: optional(a.pidfile),
        restart_flag: optional(a.restart_flag),
        nodename: a.nodename.unwrap_or_else(daemon::default_nodename),
        ttls: Ttls {
            entry: secs(a.entry_timeout)?,
            attr: secs(a.attr_timeout)?,
        },
        coherence: matches!(a.coherence, OnOff::On),
        limits: Limits {
            max_inodes: a.max_inodes,
            max_fs_size: a.max_fs_size,
            ..Limits::default()
        },
        lock_timeout: a.lock_timeout,
        sync: match a.sync {
            SyncArg::Normal => SyncMode::Normal,
            SyncArg::Full => SyncMode::Full,
        },
        threads: a.threads,
        transport: match a.transport {
            TransportArg::Auto => pmxfs::transport::Transport::Auto,
            TransportArg::IoUring => pmxfs::transport::Transport::IoUring,
            TransportArg::DevFuse => pmxfs::transport::Transport::DevFuse,
        },
        debug_hooks: a.debug_hooks,
        faults: pmxfs::faults::Faults::from_list(&a.faults),
        ipc_name: a.ipc_name,
        rrd_dir: a.rrd_dir,
        rrdcached: a.rrdcached,
        fold_after: secs(a.db_fold_after)?,
        verify_every: secs(a.verify_every)?.max(std::time::Duration::from_millis(100)),
        protocol: match a.protocol {
            ProtocolArg::Pmxfs => cluster_sync::core::Protocol::Terms,
            ProtocolArg::Pmxcfs | ProtocolArg::Auto => cluster_sync::core::Protocol::Dfsm,
        },
        upgrade: a.protocol == ProtocolArg::Auto,
    };
    daemon::run(opts)
}

fn status(mount: &std::path::Path, json: bool) -> Result<()> {
    let mount = mount.canonicalize().unwrap_or_else(|_| mount.to_path_buf());
    let v = pmxfs::control::request(&mount, &serde_json::json!({"cmd": "status"}))?;
    if let Some(e) = v.get("error") {
        anyhow::bail!("{e}");
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let members: Vec<String> = v["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|x| {
                    format!(
                        "{}({}{})",
                        x["name"].as_str().unwrap_or("?"),
                        x["id"],
                        if x["online"] == true { "" } else { ",offline" }
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    println!("node:      {}", v["nodename"].as_str().unwrap_or("?"));
    println!(
        "mode:      {} ({})",
        v["mode"].as_str().unwrap_or("?"),
        v["mode_reason"].as_str().unwrap_or("?")
    );
    println!(
        "quorate:   {}",
        if v["quorate"] == true { "yes" } else { "no" }
    );
    println!(
        "members:   {}",
        if members.is_empty() {
            "-".into()
        } else {
            members.join(" ")
        }
    );
    println!("version:   {}", v["version"]);
    println!("inodes:    {}", v["inodes"]);
    println!("bytes:     {}", v["bytes"]);
    let backlog = &v["db_backlog"];
    println!(
        "db queue:  {} changes logged, not yet in the database{}",
        backlog["pending"],
        backlog["failing"]
            .as_str()
            .map(|e| format!(" (failing: {e})"))
            .unwrap_or_default()
    );
    println!("transport: {}", v["transport"].as_str().unwrap_or("?"));
    println!(
        "ipc:       {} connections, {} requests, {} clients dropped",
        v["ipc"]["connections"], v["ipc"]["requests"], v["ipc"]["dropped"]
    );
    for c in v["ipc"]["clients"].as_array().into_iter().flatten() {
        println!(
            "  client:  pid {} uid {} gid {}{}, {} requests",
            c["pid"],
            c["uid"],
            c["gid"],
            if c["read_only"] == true {
                " (read-only)"
            } else {
                ""
            },
            c["requests"]
        );
    }
    let kv = &v["kvstore"];
    let kv_members: Vec<String> = kv["group"]["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| format!("{}/{}", m[0], m[1]))
        .collect();
    if v["mode"] == "cluster" {
        let l = &v["write_latency"];
        let ms = |k: &str, q: &str| l[k][q].as_u64().unwrap_or(0) as f64 / 1000.0;
        // Means add up (for the writes timed stage by stage); quantiles do not.
        println!(
            "writes:    {} answered; mean {:.2} ms = queued {:.2} + corosync delivery {:.2} + \
             majority confirmation {:.2}; p50 {:.2}, p99 {:.2}, max {:.2} ms",
            l["total"]["count"],
            ms("total", "mean_us"),
            ms("queued", "mean_us"),
            ms("delivery", "mean_us"),
            ms("confirmation", "mean_us"),
            ms("total", "p50_us"),
            ms("total", "p99_us"),
            ms("total", "max_us"),
        );
        println!(
            "applying:  {} messages of other nodes' writes; mean {:.2} ms, p99 {:.2} ms",
            l["applying_others"]["count"],
            ms("applying_others", "mean_us"),
            ms("applying_others", "p99_us"),
        );
        println!(
            "kvstore:   {}, members {}; {} sent, {} delivered, {} dropped, {} rejoins",
            kv["group"]["mode"].as_str().unwrap_or("?"),
            if kv_members.is_empty() {
                "-".to_string()
            } else {
                kv_members.join(" ")
            },
            kv["sent"],
            kv["delivered"],
            kv["dropped"],
            kv["restarts"]
        );
    }
    println!(
        "log:       {} cluster log entries; rrd: {} written, {} failed",
        kv["log_entries"], v["rrd"]["written"], v["rrd"]["failed"]
    );
    println!(
        "coherence: {}",
        if v["coherence"] == true { "on" } else { "off" }
    );
    Ok(())
}

fn lock(
    mount: &std::path::Path,
    name: &str,
    timeout: Option<f64>,
    cmd: &[String],
) -> Result<ExitCode> {
    let timeout = timeout.map(secs).transpose()?;
    let guard = match CfsLockGuard::acquire(mount, name, timeout) {
        Ok(g) => g,
        Err(e @ CfsLockError::Timeout(_)) => {
            eprintln!("pmxfs lock: {e}");
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e.into()),
    };
    let status = std::process::Command::new(&cmd[0])
        .args(&cmd[1..])
        .status()
        .with_context(|| format!("cannot run {}", cmd[0]));
    guard.release()?;
    let status = status?;
    Ok(match status.code() {
        Some(c) => ExitCode::from(c as u8),
        None => ExitCode::from(128),
    })
}
