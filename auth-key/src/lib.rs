//! Auth keys, tickets and API-token verification for a Proxmox-VE-style cluster
//! filesystem (pmxfs), working through ordinary file operations on the mount (default
//! `/etc/pve`) exactly as PVE's Perl code does.
//!
//! - [`keys`]: Ed25519 key generation and PEM (SPKI / PKCS#8) encoding.
//! - [`keyfiles`]: `authkey.pub`, `authkey.pub.old`, `priv/authkey.key`, the per-process
//!   mtime-keyed key cache, atomic writes.
//! - [`rotation`]: `check` (is the key due?) and `rotate` with the fixed (2022) or naive
//!   (pre-2022) sequence under the cluster lock `authkey`.
//! - [`ticket`]: `PVE:<user>:<HEXTIME>::<sig>` tickets and PVE's exact age windows.
//! - [`crypt`]: yescrypt / SHA-crypt verification of stored token hashes.
//! - [`token_shadow`]: `priv/token.shadow` (JSON map of token id → crypt hash), Authid.
//! - [`generation`]: what tells the token cache that the shadow file changed (pmxfs
//!   shared memory, or a stat fallback with a TTL).
//! - [`token_cache`]: the verified-secret cache.

pub mod crypt;
pub mod generation;
pub mod keyfiles;
pub mod keys;
pub mod rotation;
pub mod ticket;
pub mod token_cache;
pub mod token_shadow;
