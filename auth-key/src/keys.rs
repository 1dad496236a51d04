//! Ed25519 key pairs and their PEM encodings.
//!
//! Public keys are written as SPKI (`BEGIN PUBLIC KEY`) and private keys as unencrypted
//! PKCS#8 (`BEGIN PRIVATE KEY`), the encodings PVE's `authkey.pub`/`authkey.key` and
//! PBS's Ed25519 keys use, so `openssl pkey` reads them. Decoding reports *why* a file is
//! unusable, because a rotation must not silently overwrite a key it cannot parse.

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::spki::der::zeroize::Zeroizing;
use ed25519_dalek::pkcs8::spki::SubjectPublicKeyInfoRef;
use ed25519_dalek::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, KeypairBytes,
    ObjectIdentifier, PrivateKeyInfo,
};
pub use ed25519_dalek::{SigningKey, VerifyingKey};

/// OID of Ed25519 (RFC 8410).
const ED25519_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const PUBLIC_LABEL: &str = "PUBLIC KEY";
const PRIVATE_LABEL: &str = "PRIVATE KEY";

/// Why key material could not be decoded (or encoded).
#[derive(Clone, Debug, thiserror::Error)]
pub enum KeyError {
    /// The file was empty (or only whitespace).
    #[error("key file is empty")]
    Empty,
    /// The content is not a PEM document at all.
    #[error("not a PEM document ({0})")]
    NotPem(String),
    /// A PEM document, but with an unexpected label (e.g. a certificate).
    #[error("unexpected PEM label '{found}', expected '{expected}'")]
    WrongLabel {
        /// Label found in the `-----BEGIN ...-----` line.
        found: String,
        /// Label that was expected.
        expected: &'static str,
    },
    /// A well-formed key of another algorithm (e.g. PVE's RSA-2048 keys).
    #[error("wrong key type: {0} (expected Ed25519)")]
    WrongKeyType(String),
    /// PEM framing is fine but the DER inside is damaged.
    #[error("corrupt key: {0}")]
    Corrupt(String),
    /// Encoding a key failed (should not happen for valid keys).
    #[error("cannot encode key: {0}")]
    Encode(String),
}

/// Generate a new Ed25519 signing key from the OS random number generator.
pub fn generate() -> SigningKey {
    SigningKey::generate(&mut rand::rngs::OsRng)
}

/// PEM (SPKI, `BEGIN PUBLIC KEY`, LF line endings) of a public key.
pub fn public_key_pem(key: &VerifyingKey) -> Result<String, KeyError> {
    key.to_public_key_pem(LineEnding::LF)
        .map_err(|e| KeyError::Encode(e.to_string()))
}

/// PEM (PKCS#8, `BEGIN PRIVATE KEY`, LF line endings) of a private key; zeroed on drop.
///
/// Written as PKCS#8 v1 (private key only), the form `openssl genpkey` produces: OpenSSL
/// 3.0 refuses the v2 form (with the public key attached) that ed25519-dalek emits by
/// default.
pub fn private_key_pem(key: &SigningKey) -> Result<Zeroizing<String>, KeyError> {
    let bytes = KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    };
    bytes
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeyError::Encode(e.to_string()))
}

/// Decode the PEM framing and check its label; maps well-known foreign labels to
/// [`KeyError::WrongKeyType`].
fn decode_pem(text: &[u8], expected: &'static str) -> Result<Vec<u8>, KeyError> {
    if text.iter().all(u8::is_ascii_whitespace) {
        return Err(KeyError::Empty);
    }
    let (label, der) =
        ed25519_dalek::pkcs8::spki::der::pem::decode_vec(text).map_err(|e| match e {
            // A BEGIN line was found, so the framing exists but its body is damaged.
            ed25519_dalek::pkcs8::spki::der::pem::Error::Base64(_) => {
                KeyError::Corrupt(e.to_string())
            }
            _ => KeyError::NotPem(e.to_string()),
        })?;
    if label == expected {
        return Ok(der);
    }
    Err(match label {
        "RSA PUBLIC KEY" | "RSA PRIVATE KEY" => KeyError::WrongKeyType("RSA (PKCS#1)".into()),
        "EC PRIVATE KEY" => KeyError::WrongKeyType("EC (SEC1)".into()),
        "ENCRYPTED PRIVATE KEY" => {
            KeyError::WrongKeyType("encrypted PKCS#8 (passphrase protected)".into())
        }
        other => KeyError::WrongLabel {
            found: other.to_string(),
            expected,
        },
    })
}

fn algorithm_name(oid: &ObjectIdentifier) -> String {
    match oid.to_string().as_str() {
        "1.2.840.113549.1.1.1" => "RSA".into(),
        "1.2.840.10045.2.1" => "EC".into(),
        "1.3.101.113" => "Ed448".into(),
        "1.3.101.110" => "X25519".into(),
        other => format!("OID {other}"),
    }
}

/// Parse an SPKI PEM public key; it must be Ed25519.
pub fn parse_public_pem(text: &[u8]) -> Result<VerifyingKey, KeyError> {
    let der = decode_pem(text, PUBLIC_LABEL)?;
    let spki = SubjectPublicKeyInfoRef::try_from(der.as_slice())
        .map_err(|e| KeyError::Corrupt(e.to_string()))?;
    if spki.algorithm.oid != ED25519_OID {
        return Err(KeyError::WrongKeyType(algorithm_name(&spki.algorithm.oid)));
    }
    VerifyingKey::from_public_key_der(&der).map_err(|e| KeyError::Corrupt(e.to_string()))
}

/// Parse a PKCS#8 PEM private key; it must be Ed25519.
pub fn parse_private_pem(text: &[u8]) -> Result<SigningKey, KeyError> {
    let der = Zeroizing::new(decode_pem(text, PRIVATE_LABEL)?);
    let info =
        PrivateKeyInfo::try_from(der.as_slice()).map_err(|e| KeyError::Corrupt(e.to_string()))?;
    if info.algorithm.oid != ED25519_OID {
        return Err(KeyError::WrongKeyType(algorithm_name(&info.algorithm.oid)));
    }
    SigningKey::from_pkcs8_der(&der).map_err(|e| KeyError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, Verifier};
    use std::process::Command;

    #[test]
    fn pem_round_trip() {
        let sk = generate();
        let pub_pem = public_key_pem(&sk.verifying_key()).unwrap();
        let priv_pem = private_key_pem(&sk).unwrap();
        assert!(pub_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert!(priv_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let vk = parse_public_pem(pub_pem.as_bytes()).unwrap();
        let sk2 = parse_private_pem(priv_pem.as_bytes()).unwrap();
        assert_eq!(vk, sk.verifying_key());
        assert_eq!(sk2.to_bytes(), sk.to_bytes());
        let sig = sk2.sign(b"hello");
        vk.verify(b"hello", &sig).unwrap();
    }

    #[test]
    fn precise_decode_errors() {
        let sk = generate();
        let pub_pem = public_key_pem(&sk.verifying_key()).unwrap();
        let priv_pem = private_key_pem(&sk).unwrap();
        assert!(matches!(parse_public_pem(b""), Err(KeyError::Empty)));
        assert!(matches!(parse_public_pem(b" \n"), Err(KeyError::Empty)));
        assert!(matches!(
            parse_public_pem(b"hello world"),
            Err(KeyError::NotPem(_))
        ));
        // A private key where a public one is expected, and vice versa.
        assert!(matches!(
            parse_public_pem(priv_pem.as_bytes()),
            Err(KeyError::WrongLabel { .. })
        ));
        assert!(matches!(
            parse_private_pem(pub_pem.as_bytes()),
            Err(KeyError::WrongLabel { .. })
        ));
        // Damaged body: flip characters in the base64 payload.
        let mut lines: Vec<String> = pub_pem.lines().map(str::to_string).collect();
        lines[1] = "AAAA".repeat(lines[1].len() / 4);
        let damaged = lines.join("\n") + "\n";
        assert!(matches!(
            parse_public_pem(damaged.as_bytes()),
            Err(KeyError::Corrupt(_))
        ));
        let mut lines: Vec<String> = pub_pem.lines().map(str::to_string).collect();
        lines[1] = "!!!!".into();
        let damaged = lines.join("\n") + "\n";
        assert!(parse_public_pem(damaged.as_bytes()).is_err());
        // PKCS#1 RSA labels are recognised as a foreign key type.
        let rsa = "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert!(matches!(
            parse_private_pem(rsa.as_bytes()),
            Err(KeyError::WrongKeyType(_))
        ));
    }

    /// Run openssl with `args`, assert that it succeeded and return its stdout.
    /// scripts/setup.sh installs the CLI, so a missing one fails the test.
    fn openssl<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Vec<u8> {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("the openssl CLI (installed by scripts/setup.sh)");
        assert!(
            out.status.success(),
            "openssl {:?}: {}",
            args.iter()
                .map(|a| a.as_ref().to_owned())
                .collect::<Vec<_>>(),
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// `openssl pkey` must read our files, and we must read openssl's.
    #[test]
    fn openssl_interop() {
        let dir = tempfile::tempdir().unwrap();
        let p = |name: &str| dir.path().join(name).into_os_string();
        let sk = generate();
        let pub_pem = public_key_pem(&sk.verifying_key()).unwrap();
        let priv_pem = private_key_pem(&sk).unwrap();
        std::fs::write(p("authkey.pub"), &pub_pem).unwrap();
        std::fs::write(p("authkey.key"), priv_pem.as_bytes()).unwrap();

        // openssl derives the same public key from our private key file...
        let derived = openssl(&[
            "pkey".into(),
            "-pubout".into(),
            "-in".into(),
            p("authkey.key"),
        ]);
        assert_eq!(String::from_utf8(derived).unwrap(), pub_pem);
        // ...reads our public key file...
        let text = openssl(&[
            "pkey".into(),
            "-pubin".into(),
            "-noout".into(),
            "-text".into(),
            "-in".into(),
            p("authkey.pub"),
        ]);
        assert!(String::from_utf8_lossy(&text).contains("ED25519"));
        // ...and verifies our signature.
        std::fs::write(p("msg"), b"PVE:root@pam:65A1B2C3").unwrap();
        std::fs::write(p("sig"), sk.sign(b"PVE:root@pam:65A1B2C3").to_bytes()).unwrap();
        openssl(&[
            "pkeyutl".into(),
            "-verify".into(),
            "-rawin".into(),
            "-pubin".into(),
            "-inkey".into(),
            p("authkey.pub"),
            "-in".into(),
            p("msg"),
            "-sigfile".into(),
            p("sig"),
        ]);

        // A key generated by openssl parses, and an RSA key is rejected as such.
        openssl(&[
            "genpkey".into(),
            "-algorithm".into(),
            "ed25519".into(),
            "-out".into(),
            p("ed.pem"),
        ]);
        parse_private_pem(&std::fs::read(p("ed.pem")).unwrap()).unwrap();
        openssl(&[
            "genpkey".into(),
            "-algorithm".into(),
            "rsa".into(),
            "-pkeyopt".into(),
            "rsa_keygen_bits:1024".into(),
            "-out".into(),
            p("rsa.pem"),
        ]);
        let e = parse_private_pem(&std::fs::read(p("rsa.pem")).unwrap()).unwrap_err();
        assert!(
            matches!(&e, KeyError::WrongKeyType(t) if t == "RSA"),
            "{e:?}"
        );
        let rsa_pub = openssl(&["pkey".into(), "-pubout".into(), "-in".into(), p("rsa.pem")]);
        let e = parse_public_pem(&rsa_pub).unwrap_err();
        assert!(
            matches!(&e, KeyError::WrongKeyType(t) if t == "RSA"),
            "{e:?}"
        );
    }
}
