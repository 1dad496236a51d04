//! crypt(3)-style password hashes as Proxmox's `encrypt_pw`/`verify_crypt_pw` use them:
//! yescrypt (`$y$`, current) and SHA-crypt (`$5$`, older entries; `$6$` also verifies).
//!
//! Pure Rust (RustCrypto `yescrypt` and `sha-crypt`) instead of linking libxcrypt; the
//! tests pin hashes produced by libxcrypt (`mkpasswd`) so that compatibility is checked,
//! not assumed.

use password_hash_compat::{PasswordHasher, PasswordVerifier};
use rand::RngCore;

// Both crates implement the same `password-hash` 0.6 traits; take them from one of them.
mod password_hash_compat {
    pub use yescrypt::{PasswordHasher, PasswordVerifier};
}

/// Why a secret did not verify against a stored hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptError {
    /// The secret does not match.
    #[error("invalid credentials")]
    Mismatch,
    /// A scheme we do not implement (e.g. `$2b$`, `$1$`).
    #[error("unsupported password hash scheme '{0}'")]
    Unsupported(String),
    /// The stored hash is not well-formed.
    #[error("malformed password hash")]
    Malformed,
}

fn map_err(e: yescrypt::password_hash::Error) -> CryptError {
    match e {
        yescrypt::password_hash::Error::PasswordInvalid => CryptError::Mismatch,
        _ => CryptError::Malformed,
    }
}

/// Check `secret` against a stored crypt hash (`$y$...`, `$5$...`, `$6$...`).
///
/// Costs what the hash's parameters say: ~20 ms and 16 MiB for Proxmox's yescrypt
/// (`j9T`), ~2 ms for SHA-crypt with 5000 rounds. The final compare is constant-time
/// inside both crates.
pub fn verify(secret: &[u8], hash: &str) -> Result<(), CryptError> {
    let scheme = hash
        .strip_prefix('$')
        .and_then(|s| s.split_once('$'))
        .map(|(id, _)| id)
        .ok_or(CryptError::Malformed)?;
    match scheme {
        "y" => yescrypt::Yescrypt::default()
            .verify_password(secret, hash)
            .map_err(map_err),
        "5" | "6" => sha_crypt::ShaCrypt::default()
            .verify_password(secret, hash)
            .map_err(map_err),
        other => Err(CryptError::Unsupported(format!("${other}$"))),
    }
}

/// Hash `secret` with yescrypt at Proxmox's/Debian's default cost (`$y$j9T$`, N=4096,
/// r=32) and a 16-byte random salt, as libxcrypt's `crypt_gensalt("$y$", 5)` would.
pub fn hash_yescrypt(secret: &[u8]) -> Result<String, CryptError> {
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let h = yescrypt::Yescrypt::default()
        .hash_password_with_salt(secret, &salt)
        .map_err(map_err)?;
    Ok(h.as_str().to_string())
}

/// Hash `secret` with SHA-256-crypt (`$5$`, 5000 rounds, 16-char salt). Only for
/// producing legacy-style entries, e.g. in tests.
pub fn hash_sha256_crypt(secret: &[u8]) -> Result<String, CryptError> {
    // The crate base64-encodes the salt bytes: 12 bytes give 16 characters, libxcrypt's
    // maximum salt length (a longer salt would be truncated differently).
    let mut salt = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let h = sha_crypt::ShaCrypt::SHA256
        .hash_password_with_salt(secret, &salt)
        .map_err(map_err)?;
    Ok(h.as_str().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Produced on Debian 12 with libxcrypt: `mkpasswd -m yescrypt SECRET`.
    const UUID_SECRET: &str = "d63e505a-e3ec-449a-9bc7-1da610d4ccde";
    const Y_UUID_1: &str =
        "$y$j9T$.T.hvAbMviBp3FGOPlCiv0$J4VRR6kz/NWjYiE1ZDm6vuJjmV3TCY1bAJSG03Elme8";
    const Y_UUID_2: &str =
        "$y$j9T$oYcjIIuk4g3ZLZlnuYBgZ1$6kVrqr1ZsSVauRTg14tjuhsjpXm2dW0o8zoYOn15kD1";
    const Y_HUNTER2: &str =
        "$y$j9T$kSaNn0eQB/I9OpGjhXWoj/$K4bnMG4MmkyY5gnedLv3GjugjdbsJjH7qsOAINOLjV4";
    /// `mkpasswd -m yescrypt -R 3 pw` (cheaper cost, different parameter string).
    const Y_PW_COST3: &str =
        "$y$j7T$spW.2xnTVR9ZXI1Fbkk9e.$.Q0Z/yDawcdBzqj.FtnEECVovC.4jYU.XWHKGU.mMS3";
    /// `mkpasswd -m sha-256 SECRET` (default 5000 rounds, no `rounds=` field).
    const S5_UUID: &str = "$5$h/edBXmTCbsKmgaK$fcBxxNRJA25kbTrqbZyFsxc5nHM5HRvtb/J1wtVuqj4";
    /// `mkpasswd -m sha-256 -R 10000 hunter2`.
    const S5_HUNTER2_R10000: &str =
        "$5$rounds=10000$fQf8MoXA.WdDvywD$GxPpxLiAV4GNuO6BeNz1XnAXKH7GDkf7yS3A/1//fN/";

    #[test]
    fn libxcrypt_yescrypt_vectors() {
        verify(UUID_SECRET.as_bytes(), Y_UUID_1).unwrap();
        verify(UUID_SECRET.as_bytes(), Y_UUID_2).unwrap();
        verify(b"hunter2", Y_HUNTER2).unwrap();
        verify(b"pw", Y_PW_COST3).unwrap();
        assert_eq!(verify(b"hunter3", Y_HUNTER2), Err(CryptError::Mismatch));
        assert_eq!(verify(b"", Y_UUID_1), Err(CryptError::Mismatch));
    }

    #[test]
    fn libxcrypt_sha256_crypt_vectors() {
        verify(UUID_SECRET.as_bytes(), S5_UUID).unwrap();
        verify(b"hunter2", S5_HUNTER2_R10000).unwrap();
        assert_eq!(verify(b"hunter2", S5_UUID), Err(CryptError::Mismatch));
        assert_eq!(
            verify(b"Hunter2", S5_HUNTER2_R10000),
            Err(CryptError::Mismatch)
        );
    }

    #[test]
    fn malformed_and_unsupported() {
        assert_eq!(verify(b"x", ""), Err(CryptError::Malformed));
        assert_eq!(verify(b"x", "plaintext"), Err(CryptError::Malformed));
        assert_eq!(verify(b"x", "$y$j9T$"), Err(CryptError::Malformed));
        assert_eq!(
            verify(b"x", "$2b$10$abcdefghijklmnopqrstuu"),
            Err(CryptError::Unsupported("$2b$".into()))
        );
        assert!(verify(b"x", "$5$salt$notbase64!!").is_err());
    }

    #[test]
    fn our_hashes_look_like_libxcrypt_and_verify() {
        let h = hash_yescrypt(b"secret").unwrap();
        assert!(h.starts_with("$y$j9T$"), "{h}");
        let parts: Vec<_> = h.split('$').collect();
        assert_eq!(parts.len(), 5, "{h}");
        assert_eq!(parts[3].len(), 22, "16-byte salt: {h}");
        assert_eq!(parts[4].len(), 43, "{h}");
        verify(b"secret", &h).unwrap();
        assert_eq!(verify(b"secreT", &h), Err(CryptError::Mismatch));
        let s = hash_sha256_crypt(b"secret").unwrap();
        assert!(s.starts_with("$5$"), "{s}");
        verify(b"secret", &s).unwrap();
    }

    /// Cross-check with the system's crypt(3) (libxcrypt, which verifies PVE's shadow
    /// hashes) through Perl's `crypt`; perl-base is essential on Debian, so a missing
    /// perl or an unsupported scheme fails the test. The fixed vectors above cover the
    /// other direction.
    #[test]
    fn system_crypt_accepts_our_hashes() {
        for h in [
            hash_yescrypt(b"s3cret").unwrap(),
            hash_sha256_crypt(b"s3cret").unwrap(),
        ] {
            let out = std::process::Command::new("perl")
                .arg("-e")
                .arg("print crypt($ARGV[0], $ARGV[1]) // 'undef'")
                .arg("s3cret")
                .arg(&h)
                .output()
                .expect("perl (perl-base is essential on Debian)");
            assert!(out.status.success(), "perl failed: {out:?}");
            let got = String::from_utf8(out.stdout).unwrap();
            assert_eq!(got, h);
        }
    }
}
