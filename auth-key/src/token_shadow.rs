//! `priv/token.shadow`: API-token secrets, stored as crypt hashes (PBS/PDM style).
//!
//! The file is one compact JSON object `{"user@realm!name": "$y$j9T$...", ...}`. A
//! missing file is an empty map. Mutations take the cluster lock `token-shadow`, reread
//! the file, change it, and replace it with tmp + rename, so concurrent writers on any
//! node cannot lose each other's updates. Parse errors never echo file content, so no
//! hash leaks into a log.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use rand::RngCore;

use crate::crypt::{self, CryptError};
use crate::keyfiles::write_atomic;

/// Path of the shadow file relative to the base directory.
pub const TOKEN_SHADOW: &str = "priv/token.shadow";
/// Name of the cluster lock serialising mutations.
pub const LOCK_NAME: &str = "token-shadow";

/// Why a string is not a valid (token) Authid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthidError {
    /// Empty string.
    #[error("empty auth id")]
    Empty,
    /// No `@realm` part.
    #[error("auth id '{0}' has no realm ('user@realm')")]
    NoRealm(String),
    /// `@realm` with nothing before it.
    #[error("auth id '{0}' has an empty user name")]
    EmptyUser(String),
    /// `user@` with nothing after it.
    #[error("auth id '{0}' has an empty realm")]
    EmptyRealm(String),
    /// A user id where a token id (`user@realm!name`) is required.
    #[error("'{0}' is not an API token id (expected 'user@realm!tokenname')")]
    NotAToken(String),
    /// `user@realm!` with nothing after the `!`.
    #[error("auth id '{0}' has an empty token name")]
    EmptyTokenName(String),
    /// A character that is not allowed in that part.
    #[error("auth id '{id}': invalid character {ch:?} in the {part}")]
    InvalidChar {
        /// The whole id.
        id: String,
        /// Which part.
        part: &'static str,
        /// The offending character.
        ch: char,
    },
    /// A part longer than 64 characters.
    #[error("auth id '{0}' is too long")]
    TooLong(String),
}

/// A user id (`name@realm`) optionally followed by a token name (`!name`).
///
/// Parsed from the right like `proxmox-auth-api`: the last `@` splits off the realm, and
/// a `!` after that `@` splits off the token name. User names may contain anything but
/// whitespace, control characters, `:` and `/`; realm and token name are
/// `[A-Za-z0-9_][A-Za-z0-9._-]*`; each part is at most 64 characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Authid {
    full: String,
    at: usize,
    bang: Option<usize>,
}

fn check_safe_id(id: &str, part: &'static str, s: &str) -> Result<(), AuthidError> {
    for (i, ch) in s.chars().enumerate() {
        let ok = ch.is_ascii_alphanumeric() || ch == '_' || (i > 0 && (ch == '.' || ch == '-'));
        if !ok {
            return Err(AuthidError::InvalidChar {
                id: id.to_string(),
                part,
                ch,
            });
        }
    }
    Ok(())
}

impl FromStr for Authid {
    type Err = AuthidError;

    fn from_str(s: &str) -> Result<Self, AuthidError> {
        if s.is_empty() {
            return Err(AuthidError::Empty);
        }
        let at = s
            .rfind('@')
            .ok_or_else(|| AuthidError::NoRealm(s.to_string()))?;
        let (user, rest) = (&s[..at], &s[at + 1..]);
        let (realm, token, bang) = match rest.find('!') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..]), Some(at + 1 + i)),
            None => (rest, None, None),
        };
        if user.is_empty() {
            return Err(AuthidError::EmptyUser(s.to_string()));
        }
        if realm.is_empty() {
            return Err(AuthidError::EmptyRealm(s.to_string()));
        }
        if token == Some("") {
            return Err(AuthidError::EmptyTokenName(s.to_string()));
        }
        if let Some(ch) = user
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || *c == ':' || *c == '/')
        {
            return Err(AuthidError::InvalidChar {
                id: s.to_string(),
                part: "user name",
                ch,
            });
        }
        check_safe_id(s, "realm", realm)?;
        if let Some(t) = token {
            check_safe_id(s, "token name", t)?;
        }
        if [Some(user), Some(realm), token]
            .iter()
            .flatten()
            .any(|p| p.chars().count() > 64)
        {
            return Err(AuthidError::TooLong(s.to_string()));
        }
        Ok(Authid {
            full: s.to_string(),
            at,
            bang,
        })
    }
}

impl Authid {
    /// Parse and require a token id (`user@realm!name`).
    pub fn parse_token(s: &str) -> Result<Self, AuthidError> {
        let id: Authid = s.parse()?;
        if !id.is_token() {
            return Err(AuthidError::NotAToken(s.to_string()));
        }
        Ok(id)
    }

    /// The whole id as written.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// `name@realm`.
    pub fn user_id(&self) -> &str {
        &self.full[..self.bang.unwrap_or(self.full.len())]
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.full[self.at + 1..self.bang.unwrap_or(self.full.len())]
    }

    /// The token name, if this is a token id.
    pub fn token_name(&self) -> Option<&str> {
        self.bang.map(|b| &self.full[b + 1..])
    }

    /// Whether this is a token id.
    pub fn is_token(&self) -> bool {
        self.bang.is_some()
    }
}

impl fmt::Display for Authid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

/// Errors of token-shadow operations.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The id is not a valid token id.
    #[error(transparent)]
    BadId(#[from] AuthidError),
    /// No entry for this token.
    #[error("unknown API token '{0}'")]
    UnknownToken(String),
    /// The secret is wrong.
    #[error("invalid API token secret")]
    InvalidSecret,
    /// The stored hash cannot be checked.
    #[error("stored hash for '{id}': {source}")]
    BadHash {
        /// Token id.
        id: String,
        /// Problem with the hash.
        source: CryptError,
    },
    /// The file is not a JSON object of strings (content deliberately not shown).
    #[error("unable to parse '{}'", .0.display())]
    Parse(PathBuf),
    /// Not allowed to read or write the file (not root, or `priv/` unreadable).
    #[error("{}: permission denied (must run as root)", .0.display())]
    PermissionDenied(PathBuf),
    /// The node has no quorum: the cluster filesystem is read-only.
    #[error("cannot change API tokens: this node has no quorum (filesystem is read-only)")]
    NoQuorum,
    /// The cluster lock could not be taken.
    #[error(transparent)]
    Lock(pmxfs_client::CfsLockError),
    /// Other I/O errors.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl TokenError {
    fn io(path: &Path, e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::PermissionDenied => TokenError::PermissionDenied(path.to_path_buf()),
            io::ErrorKind::ReadOnlyFilesystem => TokenError::NoQuorum,
            _ => TokenError::Io {
                path: path.to_path_buf(),
                source: e,
            },
        }
    }
}

impl From<pmxfs_client::CfsLockError> for TokenError {
    fn from(e: pmxfs_client::CfsLockError) -> Self {
        match e {
            pmxfs_client::CfsLockError::NoQuorum(_) => TokenError::NoQuorum,
            e => TokenError::Lock(e),
        }
    }
}

/// The parsed content of `token.shadow`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenShadow {
    entries: BTreeMap<String, String>,
}

impl TokenShadow {
    /// Parse the file content; `path` is only used in the error.
    pub fn parse(data: &[u8], path: &Path) -> Result<Self, TokenError> {
        if data.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        let entries: BTreeMap<String, String> =
            serde_json::from_slice(data).map_err(|_| TokenError::Parse(path.to_path_buf()))?;
        Ok(TokenShadow { entries })
    }

    /// Compact JSON, as `serde_json::to_vec` writes it (no trailing newline).
    pub fn to_vec(&self) -> Vec<u8> {
        serde_json::to_vec(&self.entries).unwrap_or_else(|_| b"{}".to_vec())
    }

    /// Stored hash of a token.
    pub fn get(&self, id: &Authid) -> Option<&str> {
        self.entries.get(id.as_str()).map(String::as_str)
    }

    /// Set the stored hash of a token.
    pub fn insert(&mut self, id: &Authid, hash: String) {
        self.entries.insert(id.as_str().to_string(), hash);
    }

    /// Remove a token; returns whether it existed.
    pub fn remove(&mut self, id: &Authid) -> bool {
        self.entries.remove(id.as_str()).is_some()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A random secret in Proxmox's format: a lowercase hyphenated UUID v4.
pub fn generate_secret() -> String {
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// `priv/token.shadow` under a base directory, with uncached operations.
#[derive(Clone, Debug)]
pub struct ShadowFile {
    base: PathBuf,
    lock_timeout: Option<Duration>,
}

impl ShadowFile {
    /// The shadow file under `base` (e.g. `/etc/pve`).
    pub fn new(base: impl Into<PathBuf>) -> Self {
        ShadowFile {
            base: base.into(),
            lock_timeout: Some(Duration::from_secs(10)),
        }
    }

    /// The base directory.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Absolute path of the file.
    pub fn path(&self) -> PathBuf {
        self.base.join(TOKEN_SHADOW)
    }

    /// Read and parse the file (missing = empty).
    pub fn read(&self) -> Result<TokenShadow, TokenError> {
        let path = self.path();
        match std::fs::read(&path) {
            Ok(data) => TokenShadow::parse(&data, &path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(TokenShadow::default()),
            Err(e) => Err(TokenError::io(&path, e)),
        }
    }

    /// Read-modify-write under the cluster lock, replacing the file with tmp + rename.
    fn mutate<R>(&self, f: impl FnOnce(&mut TokenShadow) -> R) -> Result<R, TokenError> {
        crate::keyfiles::ensure_priv_dir(&self.base)
            .map_err(|e| TokenError::io(&self.base.join("priv"), e))?;
        pmxfs_client::cfs_lock(&self.base, LOCK_NAME, self.lock_timeout, || {
            let mut shadow = self.read()?;
            let r = f(&mut shadow);
            let path = self.path();
            write_atomic(&path, &shadow.to_vec(), 0o600).map_err(|e| {
                // As root, EACCES on pmxfs means "read-only without quorum".
                if e.kind() == io::ErrorKind::PermissionDenied && nix::unistd::geteuid().is_root() {
                    TokenError::NoQuorum
                } else {
                    TokenError::io(&path, e)
                }
            })?;
            Ok(r)
        })?
    }

    /// Generate a new secret for `id`, store its yescrypt hash, return the secret.
    ///
    /// The (slow) hash is computed before taking the lock so that the lock is held only
    /// for the read-modify-write.
    pub fn generate_and_set(&self, id: &Authid) -> Result<String, TokenError> {
        if !id.is_token() {
            return Err(AuthidError::NotAToken(id.to_string()).into());
        }
        let secret = generate_secret();
        let hash =
            crypt::hash_yescrypt(secret.as_bytes()).map_err(|source| TokenError::BadHash {
                id: id.to_string(),
                source,
            })?;
        self.mutate(|s| s.insert(id, hash))?;
        Ok(secret)
    }

    /// Store a given hash for `id` (e.g. a legacy `$5$` entry).
    pub fn set_hash(&self, id: &Authid, hash: String) -> Result<(), TokenError> {
        self.mutate(|s| s.insert(id, hash))
    }

    /// Remove `id`; returns whether it existed.
    pub fn delete(&self, id: &Authid) -> Result<bool, TokenError> {
        self.mutate(|s| s.remove(id))
    }

    /// Read the file and check `secret` (no cache): the slow path.
    pub fn verify(&self, id: &Authid, secret: &str) -> Result<(), TokenError> {
        if !id.is_token() {
            return Err(AuthidError::NotAToken(id.to_string()).into());
        }
        let shadow = self.read()?;
        let hash = shadow
            .get(id)
            .ok_or_else(|| TokenError::UnknownToken(id.to_string()))?;
        match crypt::verify(secret.as_bytes(), hash) {
            Ok(()) => Ok(()),
            Err(CryptError::Mismatch) => Err(TokenError::InvalidSecret),
            Err(source) => Err(TokenError::BadHash {
                id: id.to_string(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authid_parsing() {
        let id = Authid::parse_token("john@pbs!client1").unwrap();
        assert_eq!(id.user_id(), "john@pbs");
        assert_eq!(id.realm(), "pbs");
        assert_eq!(id.token_name(), Some("client1"));
        assert_eq!(id.to_string(), "john@pbs!client1");
        // Parsed from the right: '@' may occur in the user name.
        let id = Authid::parse_token("a@b.example@pve!t-1.x_2").unwrap();
        assert_eq!(id.user_id(), "a@b.example@pve");
        assert_eq!(id.realm(), "pve");
        assert_eq!(id.token_name(), Some("t-1.x_2"));
        // A '!' before the last '@' belongs to the user name.
        let id: Authid = "we!rd@pam".parse().unwrap();
        assert!(!id.is_token());
        assert_eq!(id.user_id(), "we!rd@pam");

        assert_eq!(
            Authid::parse_token("root@pam"),
            Err(AuthidError::NotAToken("root@pam".into()))
        );
        assert_eq!(Authid::parse_token(""), Err(AuthidError::Empty));
        assert!(matches!(
            Authid::parse_token("rootpam!x"),
            Err(AuthidError::NoRealm(_))
        ));
        assert!(matches!(
            Authid::parse_token("@pam!x"),
            Err(AuthidError::EmptyUser(_))
        ));
        assert!(matches!(
            Authid::parse_token("root@!x"),
            Err(AuthidError::EmptyRealm(_))
        ));
        assert!(matches!(
            Authid::parse_token("root@pam!"),
            Err(AuthidError::EmptyTokenName(_))
        ));
        assert!(matches!(
            Authid::parse_token("ro ot@pam!x"),
            Err(AuthidError::InvalidChar {
                part: "user name",
                ch: ' ',
                ..
            })
        ));
        assert!(matches!(
            Authid::parse_token("a:b@pam!x"),
            Err(AuthidError::InvalidChar { ch: ':', .. })
        ));
        assert!(matches!(
            Authid::parse_token("root@pam!x:y"),
            Err(AuthidError::InvalidChar {
                part: "token name",
                ch: ':',
                ..
            })
        ));
        assert!(matches!(
            Authid::parse_token("root@pam!-x"),
            Err(AuthidError::InvalidChar {
                part: "token name",
                ch: '-',
                ..
            })
        ));
        assert!(matches!(
            Authid::parse_token("root@p/m!x"),
            Err(AuthidError::InvalidChar { part: "realm", .. })
        ));
        let long = format!("root@pam!{}", "x".repeat(65));
        assert!(matches!(
            Authid::parse_token(&long),
            Err(AuthidError::TooLong(_))
        ));
    }

    #[test]
    fn shadow_json_round_trip() {
        let p = Path::new("/x/token.shadow");
        let s =
            TokenShadow::parse(br#"{"john@pbs!a":"$y$j9T$x$y","b@pve!c":"$5$s$h"}"#, p).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(
            s.get(&Authid::parse_token("john@pbs!a").unwrap()),
            Some("$y$j9T$x$y")
        );
        let again = TokenShadow::parse(&s.to_vec(), p).unwrap();
        assert_eq!(again, s);
        assert!(!s.to_vec().contains(&b'\n'));
        assert!(TokenShadow::parse(b"", p).unwrap().is_empty());
        let e = TokenShadow::parse(br#"{"a@b!c": "$y$secret-hash" "#, p).unwrap_err();
        assert_eq!(e.to_string(), "unable to parse '/x/token.shadow'");
        assert!(TokenShadow::parse(br#"["x"]"#, p).is_err());
        assert!(TokenShadow::parse(br#"{"a@b!c": 1}"#, p).is_err());
    }

    #[test]
    fn secrets_are_uuid_v4() {
        let s = generate_secret();
        assert_eq!(s.len(), 36);
        let parts: Vec<_> = s.split('-').map(str::len).collect();
        assert_eq!(parts, vec![8, 4, 4, 4, 12]);
        assert_eq!(&s[14..15], "4");
        assert!("89ab".contains(&s[19..20]));
        assert!(s
            .chars()
            .all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(generate_secret(), s);
    }

    #[test]
    fn set_verify_delete_on_plain_dir() {
        let dir = tempfile::tempdir().unwrap();
        let f = ShadowFile::new(dir.path());
        let id = Authid::parse_token("root@pam!ci").unwrap();
        assert!(matches!(
            f.verify(&id, "x"),
            Err(TokenError::UnknownToken(_))
        ));
        let secret = f.generate_and_set(&id).unwrap();
        f.verify(&id, &secret).unwrap();
        assert!(matches!(
            f.verify(&id, "wrong"),
            Err(TokenError::InvalidSecret)
        ));
        // A legacy sha256-crypt entry verifies too.
        let legacy = Authid::parse_token("root@pam!old").unwrap();
        f.set_hash(&legacy, crypt::hash_sha256_crypt(b"legacy-secret").unwrap())
            .unwrap();
        f.verify(&legacy, "legacy-secret").unwrap();
        assert_eq!(f.read().unwrap().len(), 2);
        assert!(f.delete(&id).unwrap());
        assert!(!f.delete(&id).unwrap());
        assert!(matches!(
            f.verify(&id, &secret),
            Err(TokenError::UnknownToken(_))
        ));
        // The lock directory is released, the file is compact JSON.
        assert!(!dir.path().join("priv/lock/token-shadow").exists());
        let raw = std::fs::read_to_string(f.path()).unwrap();
        assert!(raw.starts_with("{\"root@pam!old\":\"$5$"), "{raw}");
        // A corrupt file is reported without its content.
        std::fs::write(f.path(), b"{\"root@pam!old\": \"$5$leak").unwrap();
        let e = f.verify(&legacy, "legacy-secret").unwrap_err();
        assert!(!e.to_string().contains("leak"), "{e}");
        // A user id is not a token.
        let user: Authid = "root@pam".parse().unwrap();
        assert!(matches!(
            f.verify(&user, "x"),
            Err(TokenError::BadId(AuthidError::NotAToken(_)))
        ));
    }
}
