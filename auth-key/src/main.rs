//! `authkey`: command-line front end of the auth-key crate.
//!
//! Exit status 0 on success (including `rotate` printing `not-due`), 1 on any error,
//! with a one-line message on stderr.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use auth_key::generation::DEFAULT_TTL;
use auth_key::keyfiles::{now_secs, KeyStore};
use auth_key::rotation::{self, Freshness, RotateOptions, RotateOutcome, Sequence};
use auth_key::ticket::{self, KeyAt, VerifyContext};
use auth_key::token_cache::{TokenCache, VerifyPath};
use auth_key::token_shadow::Authid;

#[derive(Parser)]
#[command(
    name = "authkey",
    about = "Auth-key rotation, tickets and API tokens on pmxfs"
)]
struct Cli {
    /// Mounted cluster filesystem (or a plain directory for tests).
    #[arg(long, global = true, default_value = "/etc/pve")]
    base: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum SequenceArg {
    /// Drop the key cache and reread the key inside the lock (PVE since 2022).
    Fixed,
    /// Re-check through the cache only (PVE before 2022; reproduces double rotations).
    Naive,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print whether the auth key is due for rotation (`fresh` or `due: <reason>`).
    Check {
        /// Key lifetime in seconds.
        #[arg(long, default_value_t = rotation::DEFAULT_LIFETIME)]
        lifetime: i64,
    },
    /// Rotate the auth key if due; prints `rotated` or `not-due`.
    Rotate {
        /// Rotation sequence.
        #[arg(long, value_enum)]
        sequence: SequenceArg,
        /// Replace a corrupt key instead of refusing.
        #[arg(long)]
        force: bool,
        /// Key lifetime in seconds.
        #[arg(long, default_value_t = rotation::DEFAULT_LIFETIME)]
        lifetime: i64,
        /// Seconds to wait for the cluster lock.
        #[arg(long, default_value_t = 10)]
        lock_timeout: u64,
        /// Call `check` this many times first, filling this process's key cache and the
        /// kernel's attribute cache (the race harness's warm-up).
        #[arg(long, default_value_t = 0)]
        warm: u32,
        /// Wait until this wall-clock time (Unix milliseconds) after warming up, so many
        /// rotators start together.
        #[arg(long)]
        start_at: Option<u64>,
    },
    /// Issue or verify tickets.
    Ticket {
        #[command(subcommand)]
        cmd: TicketCmd,
    },
    /// Manage and verify API-token secrets in priv/token.shadow.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
}

#[derive(Subcommand)]
enum TicketCmd {
    /// Print a ticket for USER signed with the current private key.
    Issue {
        /// User id, e.g. root@pam.
        user: String,
    },
    /// Verify TICKET; prints the user, or fails with the reason.
    Verify {
        /// The ticket.
        ticket: String,
        /// Treat the cluster as not quorate (an overdue key stays usable).
        #[arg(long)]
        not_quorate: bool,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Generate a new secret for token ID (user@realm!name) and print it.
    Set {
        /// Token id.
        id: String,
    },
    /// Delete token ID.
    Delete {
        /// Token id.
        id: String,
    },
    /// Verify SECRET for token ID; prints `ok`.
    Verify {
        /// Token id.
        id: String,
        /// The secret.
        secret: String,
        /// Also print the invalidation mechanism and whether the cache answered.
        #[arg(long)]
        verbose: bool,
        /// TTL of the stat fallback in milliseconds (plain directories only).
        #[arg(long, default_value_t = DEFAULT_TTL.as_millis() as u64)]
        ttl_ms: u64,
    },
}

fn require_root(what: &str) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("'authkey {what}' must run as root (it needs access to priv/)");
    }
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    let store = KeyStore::new(&cli.base);
    match cli.cmd {
        Cmd::Check { lifetime } => match rotation::check(&store, now_secs(), lifetime)? {
            Freshness::Fresh => println!("fresh"),
            Freshness::Due(reason) => println!("due: {reason:?}"),
        },
        Cmd::Rotate {
            sequence,
            force,
            lifetime,
            lock_timeout,
            warm,
            start_at,
        } => {
            require_root("rotate")?;
            for _ in 0..warm {
                rotation::check(&store, now_secs(), lifetime)?;
            }
            if let Some(at) = start_at {
                let at = std::time::UNIX_EPOCH + Duration::from_millis(at);
                if let Ok(wait) = at.duration_since(std::time::SystemTime::now()) {
                    std::thread::sleep(wait);
                }
            }
            let sequence = match sequence {
                SequenceArg::Fixed => Sequence::Fixed,
                SequenceArg::Naive => Sequence::Naive,
            };
            let opts = RotateOptions {
                lifetime,
                force,
                lock_timeout: Some(Duration::from_secs(lock_timeout)),
                now: None,
            };
            match rotation::rotate(&store, sequence, &opts)? {
                RotateOutcome::Rotated => println!("rotated"),
                RotateOutcome::NotDue => println!("not-due"),
            }
        }
        Cmd::Ticket {
            cmd: TicketCmd::Issue { user },
        } => {
            require_root("ticket issue")?;
            let key = store.private_key()?.with_context(|| {
                format!(
                    "no private key at {}",
                    store.path(auth_key::keyfiles::KeyKind::Priv).display()
                )
            })?;
            println!("{}", ticket::issue(&key.key, &user, now_secs())?);
        }
        Cmd::Ticket {
            cmd:
                TicketCmd::Verify {
                    ticket: t,
                    not_quorate,
                },
        } => {
            let current = store.public_key()?;
            let old = store.old_public_key()?;
            let mut ctx = VerifyContext::new(
                now_secs(),
                current.as_ref().map(|k| KeyAt {
                    key: &k.key,
                    mtime: k.mtime,
                }),
                old.as_ref().map(|k| KeyAt {
                    key: &k.key,
                    mtime: k.mtime,
                }),
            );
            ctx.quorate = !not_quorate;
            let v = ticket::verify(&t, &ctx)?;
            println!("{}", v.user);
        }
        Cmd::Token { cmd } => {
            require_root("token")?;
            match cmd {
                TokenCmd::Set { id } => {
                    let id = Authid::parse_token(&id)?;
                    let cache = TokenCache::open(&cli.base, DEFAULT_TTL);
                    println!("{}", cache.set(&id)?);
                }
                TokenCmd::Delete { id } => {
                    let id = Authid::parse_token(&id)?;
                    let cache = TokenCache::open(&cli.base, DEFAULT_TTL);
                    if !cache.delete(&id)? {
                        bail!("unknown API token '{id}'");
                    }
                    println!("deleted");
                }
                TokenCmd::Verify {
                    id,
                    secret,
                    verbose,
                    ttl_ms,
                } => {
                    let id = Authid::parse_token(&id)?;
                    let cache = TokenCache::open(&cli.base, Duration::from_millis(ttl_ms));
                    if verbose {
                        println!("invalidation: {}", cache.source_description());
                    }
                    let path = cache.verify(&id, &secret)?;
                    if verbose {
                        let how = match path {
                            VerifyPath::Cached => "cache",
                            VerifyPath::Verified => "crypt",
                        };
                        println!("verified by: {how}");
                    }
                    println!("ok");
                }
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AUTHKEY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("authkey: {e:#}");
            ExitCode::FAILURE
        }
    }
}
