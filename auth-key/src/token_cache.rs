//! Verified-secret cache for API tokens: a repeated verification of the same token and
//! secret costs one keyed hash and a constant-time compare instead of a file read and a
//! ~20 ms yescrypt.
//!
//! # Rules (the token-shadow review rules, all kept)
//! - Key: the token id. Value: `HMAC-SHA256(process key, secret)` plus the generation the
//!   secret was verified at. Storing a keyed digest instead of the secret keeps no usable
//!   plaintext in memory (core dumps, swap) and gives a fixed-length, constant-time
//!   compare; the per-process random key means a leaked digest cannot be precomputed
//!   against. Cost: ~1 µs per hit.
//! - Wrong secrets are never cached (no negative cache).
//! - Slow path: read the generation *before* reading the file, verify outside any lock,
//!   then insert only if the generation is still the same, checked again under the write
//!   lock. A verify that raced with a change can therefore never insert a stale secret.
//! - Hot path: generation → lookup (read lock held for a hash-map lookup only, never
//!   while hashing) → constant-time compare with a length check → generation again; a hit
//!   counts only if both generations match the entry's.
//! - Each entry carries its *own* generation and entries are never re-stamped: a later
//!   generation change cannot make an old entry valid again (the 2026 v8 design re-stamped
//!   the whole map on a local mutation; see the test `mutation_never_restamps_stale_entry`).
//! - Mutations through this cache (`set`/`delete`) bump a process-local epoch and the
//!   source after writing the file, so this process never serves a stale secret even
//!   before the source notices.
//!
//! # Guarantee
//! With [`crate::generation::ShmGeneration`], a cached secret stops being accepted as soon as
//! pmxfs has bumped the `priv/token.shadow` slot, which it does when it applies a change
//! to that path on this node (API, manual edit, or replication), independent of mtime
//! and size. Requests already past their second generation read may still complete with
//! the previous secret (the same residue the Proxmox series documents).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hmac::{Hmac, Mac};
use parking_lot::RwLock;
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::generation::{self, GenerationSource};
use crate::token_shadow::{Authid, AuthidError, ShadowFile, TokenError};

type Digest = [u8; 32];

/// Which path a successful verification took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyPath {
    /// Answered from the cache.
    Cached,
    /// Verified against the file with crypt.
    Verified,
}

/// The generation an entry belongs to: the source's plus this process's mutation epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Generation {
    source: u64,
    local: u64,
}

struct CachedSecret {
    digest: Digest,
    generation: Generation,
}

/// Interleaving points where tests can inject work (no-ops outside tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HookPoint {
    /// Slow path: crypt verification succeeded, nothing inserted yet.
    AfterCrypt,
    /// Hot path: digest matched, second generation read not yet done.
    BeforeRecheck,
}

#[cfg(test)]
type Hook = std::sync::Arc<dyn Fn(HookPoint) + Send + Sync>;

/// The token verifier with its verified-secret cache. One per process (per base dir).
pub struct TokenCache {
    shadow: ShadowFile,
    source: Box<dyn GenerationSource>,
    local_epoch: AtomicU64,
    mac: Hmac<Sha256>,
    entries: RwLock<HashMap<String, CachedSecret>>,
    #[cfg(test)]
    hook: parking_lot::Mutex<Option<Hook>>,
}

impl TokenCache {
    /// Cache for the tokens under `base`, with the generation source chosen by
    /// [`generation::select`] (shared memory on pmxfs, stat + `ttl` otherwise).
    pub fn open(base: &Path, ttl: Duration) -> Self {
        let source = generation::select(base, ttl);
        Self::with_source(base, source)
    }

    /// Cache with an explicit generation source.
    pub fn with_source(base: impl Into<PathBuf>, source: Box<dyn GenerationSource>) -> Self {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        let mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
        key.fill(0);
        TokenCache {
            shadow: ShadowFile::new(base),
            source,
            local_epoch: AtomicU64::new(0),
            mac,
            entries: RwLock::new(HashMap::new()),
            #[cfg(test)]
            hook: parking_lot::Mutex::new(None),
        }
    }

    /// The underlying shadow file.
    pub fn shadow(&self) -> &ShadowFile {
        &self.shadow
    }

    /// What invalidates this cache, for `--verbose`.
    pub fn source_description(&self) -> String {
        self.source.describe()
    }

    /// Number of cached entries.
    pub fn len(&self) -> usize {
        self.entries.read().len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn generation(&self) -> Option<Generation> {
        // Local epoch first: a mutation bumps it after writing, so reading it before the
        // source can only make us see an older pair, never a newer-looking stale one.
        let local = self.local_epoch.load(Ordering::Acquire);
        let source = self.source.current()?;
        Some(Generation { source, local })
    }

    fn digest(&self, secret: &str) -> Digest {
        let mut m = self.mac.clone();
        m.update(secret.as_bytes());
        m.finalize().into_bytes().into()
    }

    #[cfg(test)]
    fn hook(&self, p: HookPoint) {
        let h = self.hook.lock().clone();
        if let Some(h) = h {
            h(p);
        }
    }

    #[cfg(not(test))]
    #[inline(always)]
    fn hook(&self, _p: HookPoint) {}

    /// Hot path: `true` only if the secret matches an entry whose generation is current
    /// both before and after the compare.
    fn check_cached(&self, id: &Authid, digest: &Digest) -> bool {
        let Some(g1) = self.generation() else {
            return false;
        };
        let matched = {
            let map = self.entries.read();
            match map.get(id.as_str()) {
                Some(e) => {
                    e.generation == g1
                        && e.digest.len() == digest.len()
                        && bool::from(e.digest.ct_eq(digest))
                }
                None => false,
            }
        };
        if !matched {
            return false;
        }
        self.hook(HookPoint::BeforeRecheck);
        self.generation() == Some(g1)
    }

    /// Verify `secret` for token `id`, from the cache if possible.
    pub fn verify(&self, id: &Authid, secret: &str) -> Result<VerifyPath, TokenError> {
        if !id.is_token() {
            return Err(AuthidError::NotAToken(id.to_string()).into());
        }
        let digest = self.digest(secret);
        if self.check_cached(id, &digest) {
            return Ok(VerifyPath::Cached);
        }
        // Read before the file: anything written after this read moves the generation.
        let before = self.generation();
        self.shadow.verify(id, secret)?;
        self.hook(HookPoint::AfterCrypt);
        if let Some(before) = before {
            let mut map = self.entries.write();
            // Checked under the write lock, which mutations take after bumping.
            if self.generation() == Some(before) {
                map.insert(
                    id.as_str().to_string(),
                    CachedSecret {
                        digest,
                        generation: before,
                    },
                );
            }
        }
        Ok(VerifyPath::Verified)
    }

    /// Forget everything and move the local epoch: called after this process changed
    /// the file. Existing entries could not match any more anyway; clearing frees them.
    pub fn invalidate(&self) {
        self.local_epoch.fetch_add(1, Ordering::AcqRel);
        self.source.note_local_change();
        self.entries.write().clear();
    }

    /// Generate and store a new secret for `id`; returns it.
    pub fn set(&self, id: &Authid) -> Result<String, TokenError> {
        let r = self.shadow.generate_and_set(id);
        // Also after a failed write: the file may have been replaced before the error.
        self.invalidate();
        r
    }

    /// Delete `id`; returns whether it existed.
    pub fn delete(&self, id: &Authid) -> Result<bool, TokenError> {
        let r = self.shadow.delete(id);
        self.invalidate();
        r
    }

    #[cfg(test)]
    pub(crate) fn set_hook(&self, h: Option<Hook>) {
        *self.hook.lock() = h;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::{mpsc, Arc};

    /// A generation shared by several "processes" (TokenCache instances), bumped by the
    /// test the way pmxfs bumps the version slot when it applies a change.
    #[derive(Default)]
    struct SharedGen(AtomicU64);

    impl GenerationSource for Arc<SharedGen> {
        fn current(&self) -> Option<u64> {
            Some(self.0.load(Ordering::Acquire))
        }
        fn describe(&self) -> String {
            "test".into()
        }
    }

    fn id(s: &str) -> Authid {
        Authid::parse_token(s).unwrap()
    }

    fn setup() -> (tempfile::TempDir, Arc<SharedGen>) {
        (tempfile::tempdir().unwrap(), Arc::new(SharedGen::default()))
    }

    /// A "pmxfs" write: change the file, then bump the shared generation.
    fn remote_set(dir: &Path, g: &SharedGen, tok: &Authid) -> String {
        let s = ShadowFile::new(dir).generate_and_set(tok).unwrap();
        g.0.fetch_add(1, Ordering::AcqRel);
        s
    }

    #[test]
    fn hit_after_verify_and_wrong_secret_never_cached() {
        let (dir, g) = setup();
        let c = TokenCache::with_source(dir.path(), Box::new(g.clone()));
        let t = id("root@pam!a");
        let s = c.set(&t).unwrap();
        assert!(matches!(
            c.verify(&t, "nope"),
            Err(TokenError::InvalidSecret)
        ));
        assert!(c.is_empty(), "a wrong secret must not be cached");
        assert_eq!(c.verify(&t, &s).unwrap(), VerifyPath::Verified);
        assert_eq!(c.verify(&t, &s).unwrap(), VerifyPath::Cached);
        // A wrong secret (other length too) for a cached token goes to the slow path and
        // fails; it does not evict or panic.
        assert!(matches!(c.verify(&t, "x"), Err(TokenError::InvalidSecret)));
        assert!(matches!(
            c.verify(&t, &s[..35]),
            Err(TokenError::InvalidSecret)
        ));
        assert_eq!(c.verify(&t, &s).unwrap(), VerifyPath::Cached);
        assert!(matches!(
            c.verify(&id("root@pam!zz"), &s),
            Err(TokenError::UnknownToken(_))
        ));
    }

    #[test]
    fn change_by_another_process_is_seen_immediately() {
        let (dir, g) = setup();
        let a = TokenCache::with_source(dir.path(), Box::new(g.clone()));
        let t = id("root@pam!a");
        let s1 = remote_set(dir.path(), &g, &t);
        a.verify(&t, &s1).unwrap();
        assert_eq!(a.verify(&t, &s1).unwrap(), VerifyPath::Cached);
        let s2 = remote_set(dir.path(), &g, &t);
        assert!(matches!(a.verify(&t, &s1), Err(TokenError::InvalidSecret)));
        assert_eq!(a.verify(&t, &s2).unwrap(), VerifyPath::Verified);
        // Delete elsewhere → rejected here at once.
        ShadowFile::new(dir.path()).delete(&t).unwrap();
        g.0.fetch_add(1, Ordering::AcqRel);
        assert!(matches!(
            a.verify(&t, &s2),
            Err(TokenError::UnknownToken(_))
        ));
    }

    /// Zombie insert: a verify that passed crypt against the old file while a mutation
    /// completed must not insert.
    #[test]
    fn no_insert_when_generation_moved_during_verify() {
        let (dir, g) = setup();
        let c = Arc::new(TokenCache::with_source(dir.path(), Box::new(g.clone())));
        let t = id("root@pam!a");
        let s1 = c.set(&t).unwrap();
        let (at_crypt_tx, at_crypt_rx) = mpsc::channel::<()>();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let go_rx = parking_lot::Mutex::new(go_rx);
        let fired = AtomicBool::new(false);
        c.set_hook(Some(Arc::new(move |p| {
            if p == HookPoint::AfterCrypt && !fired.swap(true, Ordering::SeqCst) {
                at_crypt_tx.send(()).unwrap();
                go_rx.lock().recv().unwrap();
            }
        })));
        let c2 = c.clone();
        let t2 = t.clone();
        let s1c = s1.clone();
        let verifier = std::thread::spawn(move || c2.verify(&t2, &s1c));
        at_crypt_rx.recv().unwrap();
        // The mutation runs entirely while the verifier sits between crypt and insert.
        let s2 = c.set(&t).unwrap();
        go_tx.send(()).unwrap();
        // The in-flight request itself succeeds (it checked the file as it was)...
        assert_eq!(verifier.join().unwrap().unwrap(), VerifyPath::Verified);
        c.set_hook(None);
        // ...but nothing was inserted, so the old secret is now rejected.
        assert!(c.is_empty());
        assert!(matches!(c.verify(&t, &s1), Err(TokenError::InvalidSecret)));
        assert_eq!(c.verify(&t, &s2).unwrap(), VerifyPath::Verified);
        assert_eq!(c.verify(&t, &s2).unwrap(), VerifyPath::Cached);
    }

    /// Same race, but the change comes from another process/node (shared generation).
    #[test]
    fn no_insert_when_remote_change_lands_during_verify() {
        let (dir, g) = setup();
        let c = Arc::new(TokenCache::with_source(dir.path(), Box::new(g.clone())));
        let t = id("root@pam!a");
        let s1 = remote_set(dir.path(), &g, &t);
        let (tx, rx) = mpsc::channel::<()>();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let go_rx = parking_lot::Mutex::new(go_rx);
        c.set_hook(Some(Arc::new(move |p| {
            if p == HookPoint::AfterCrypt {
                let _ = tx.send(());
                let _ = go_rx.lock().recv();
            }
        })));
        let (c2, t2, s1c) = (c.clone(), t.clone(), s1.clone());
        let verifier = std::thread::spawn(move || c2.verify(&t2, &s1c));
        rx.recv().unwrap();
        let _s2 = remote_set(dir.path(), &g, &t);
        go_tx.send(()).unwrap();
        verifier.join().unwrap().unwrap();
        c.set_hook(None);
        assert!(c.is_empty());
        assert!(matches!(c.verify(&t, &s1), Err(TokenError::InvalidSecret)));
    }

    /// The generation moves between the compare and the re-check: the hit must not count.
    #[test]
    fn hit_rejected_if_generation_moves_before_recheck() {
        let (dir, g) = setup();
        let c = TokenCache::with_source(dir.path(), Box::new(g.clone()));
        let t = id("root@pam!a");
        let s1 = remote_set(dir.path(), &g, &t);
        c.verify(&t, &s1).unwrap();
        let base = dir.path().to_path_buf();
        let (g2, t2) = (g.clone(), t.clone());
        let fired = AtomicBool::new(false);
        c.set_hook(Some(Arc::new(move |p| {
            if p == HookPoint::BeforeRecheck && !fired.swap(true, Ordering::SeqCst) {
                remote_set(&base, &g2, &t2);
            }
        })));
        // The digest matched, but the re-check sees the bump: slow path → new file.
        assert!(matches!(c.verify(&t, &s1), Err(TokenError::InvalidSecret)));
    }

    /// Process A holds a stale entry (verified before B re-secreted the token). B's
    /// change is applied and bumped; then A performs a mutation of its own (on another
    /// token) before any verify. In the 2026 v8 design that mutation adopted the new
    /// generation for the whole map and re-stamped A's stale secret as current. Here
    /// entries keep the generation they were verified at, so the stale secret stays dead.
    #[test]
    fn mutation_never_restamps_stale_entry() {
        let (dir, g) = setup();
        let a = TokenCache::with_source(dir.path(), Box::new(g.clone()));
        let b = TokenCache::with_source(dir.path(), Box::new(g.clone()));
        let t = id("root@pam!a");
        let other = id("root@pam!other");
        let s1 = a.set(&t).unwrap();
        g.0.fetch_add(1, Ordering::AcqRel); // pmxfs applies A's write
        a.verify(&t, &s1).unwrap();
        assert_eq!(a.verify(&t, &s1).unwrap(), VerifyPath::Cached);
        // B re-secrets the token; pmxfs bumps.
        let s2 = b.set(&t).unwrap();
        g.0.fetch_add(1, Ordering::AcqRel);
        // A mutates something else, then pmxfs bumps for that write too.
        a.set(&other).unwrap();
        g.0.fetch_add(1, Ordering::AcqRel);
        assert!(matches!(a.verify(&t, &s1), Err(TokenError::InvalidSecret)));
        assert_eq!(a.verify(&t, &s2).unwrap(), VerifyPath::Verified);

        // Even with the mutation racing a verifier that is past crypt with s2 while
        // A's second mutation (delete) runs, nothing stale survives.
        let a = Arc::new(a);
        let (tx, rx) = mpsc::channel::<()>();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let go_rx = parking_lot::Mutex::new(go_rx);
        a.invalidate();
        a.set_hook(Some(Arc::new(move |p| {
            if p == HookPoint::AfterCrypt {
                let _ = tx.send(());
                let _ = go_rx.lock().recv();
            }
        })));
        let (a2, t2, s2c) = (a.clone(), t.clone(), s2.clone());
        let verifier = std::thread::spawn(move || a2.verify(&t2, &s2c));
        rx.recv().unwrap();
        a.delete(&t).unwrap();
        go_tx.send(()).unwrap();
        verifier.join().unwrap().unwrap();
        a.set_hook(None);
        assert!(matches!(
            a.verify(&t, &s2),
            Err(TokenError::UnknownToken(_))
        ));
    }

    #[test]
    fn unknown_generation_bypasses_cache() {
        struct Broken;
        impl GenerationSource for Broken {
            fn current(&self) -> Option<u64> {
                None
            }
            fn describe(&self) -> String {
                "broken".into()
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let c = TokenCache::with_source(dir.path(), Box::new(Broken));
        let t = id("root@pam!a");
        let s = c.set(&t).unwrap();
        assert_eq!(c.verify(&t, &s).unwrap(), VerifyPath::Verified);
        assert_eq!(c.verify(&t, &s).unwrap(), VerifyPath::Verified);
        assert!(c.is_empty());
    }

    #[test]
    fn plain_dir_fallback_end_to_end() {
        let dir = tempfile::tempdir().unwrap();
        let c = TokenCache::open(dir.path(), Duration::from_millis(50));
        assert!(c.source_description().starts_with("file stat"));
        let t = id("root@pam!a");
        let s1 = c.set(&t).unwrap();
        c.verify(&t, &s1).unwrap();
        assert_eq!(c.verify(&t, &s1).unwrap(), VerifyPath::Cached);
        // Another process replaces the secret: noticed after at most one TTL.
        let s2 = ShadowFile::new(dir.path()).generate_and_set(&t).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert!(matches!(c.verify(&t, &s1), Err(TokenError::InvalidSecret)));
        assert_eq!(c.verify(&t, &s2).unwrap(), VerifyPath::Verified);
        // Own mutations are visible immediately.
        c.delete(&t).unwrap();
        assert!(matches!(
            c.verify(&t, &s2),
            Err(TokenError::UnknownToken(_))
        ));
    }

    #[test]
    fn shm_source_end_to_end() {
        let dir = tempfile::tempdir().unwrap();
        let shm = dir.path().join("run/test.versions");
        let w = pmxfs_client::versions::VersionShmWriter::open_or_create(&shm).unwrap();
        let src = crate::generation::ShmGeneration::open(&shm).unwrap();
        let base = dir.path().join("pve");
        std::fs::create_dir_all(&base).unwrap();
        let c = TokenCache::with_source(&base, Box::new(src));
        let t = id("root@pam!a");
        let s1 = ShadowFile::new(&base).generate_and_set(&t).unwrap();
        w.bump("priv/token.shadow");
        c.verify(&t, &s1).unwrap();
        assert_eq!(c.verify(&t, &s1).unwrap(), VerifyPath::Cached);
        // Manual in-place edit that keeps size and mtime, as pmxfs would apply it.
        let path = ShadowFile::new(&base).path();
        let meta = std::fs::metadata(&path).unwrap();
        let s2 = ShadowFile::new(&base).generate_and_set(&t).unwrap();
        pmxfs_client::cfs_lock::set_mtime(&path, {
            use std::os::unix::fs::MetadataExt;
            meta.mtime()
        })
        .unwrap();
        w.bump("priv/token.shadow");
        assert!(matches!(c.verify(&t, &s1), Err(TokenError::InvalidSecret)));
        assert_eq!(c.verify(&t, &s2).unwrap(), VerifyPath::Verified);
    }
}
