//! PVE-style authentication tickets signed with the Ed25519 auth key.
//!
//! # Format
//! `PVE:<user>:<HEXTIME>::<signature>` where `<user>` has every `:` replaced by `%3A`
//! (Perl `uri_escape($data, ':')`), `<HEXTIME>` is the issue time as 8 upper-case hex
//! digits (`%08X`), and `<signature>` is the *padded* standard base64 (no newlines) of
//! the Ed25519 signature of everything before the `::`. Unpadded base64 (PBS style) is
//! accepted when verifying.
//!
//! # What [`verify`] implements (PVE `verify_ticket` + `$get_ticket_age_range`)
//! `age = now - ticket_time`. Each available key gets a window `(min, max)`, compared
//! **strictly**: a key accepts the ticket iff its signature verifies and `min < age < max`.
//! With `key_age = max(0, now - key_mtime)`:
//! - current key (`authkey.pub`): `min = -300`, `max = 7200`; if `key_age > lifetime`
//!   (86400) and the cluster is quorate, `min = key_age - lifetime` (the key should have
//!   been rotated; refuse tickets issued after that); if `key_age < 7200`,
//!   `max = key_age + 300` (a ticket cannot be older than its key, plus skew);
//! - old key (`authkey.pub.old`, whose mtime is the rotation time): `min = key_age - 300`
//!   (issued no later than 5 min after the rotation), `max = 7200`;
//! - a window with `min > 7200` makes that key unusable.
//!
//! Kept quirk: for a current key aged 6900..7199 s, `max = key_age + 300` exceeds 7200,
//! so such a key accepts tickets up to `key_age + 299` s old, as PVE does.
//!
//! The current key is tried first, then the old one. When both fail, the error says why:
//! [`TicketError::Garbage`] / [`TicketError::WrongPrefix`] for malformed input,
//! [`TicketError::BadSignature`] if no available key signed it, otherwise
//! [`TicketError::Expired`] (`age >= 7200`), [`TicketError::Future`] (`age <= -300`) or
//! [`TicketError::KeyWindow`] (inside the plain lifetime but outside the signing key's
//! window, e.g. issued with the old key after the rotation).
//!
//! Not implemented: TFA/u2f payloads, `aad`/secret data, short-lived VNC/SPICE tickets.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::rotation::{AUTH_GRACE, DEFAULT_LIFETIME, TICKET_LIFETIME};

/// Ticket prefix used by PVE.
pub const PREFIX: &str = "PVE";

/// Base64 decoder that accepts both padded (PVE) and unpadded (PBS) signatures.
const LENIENT_B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Which key a ticket was checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyUsed {
    /// `authkey.pub`
    Current,
    /// `authkey.pub.old`
    Old,
}

/// Why a ticket was not issued or not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// The user name cannot be put into a ticket (empty, whitespace, control characters).
    #[error("invalid user name for a ticket: {0:?}")]
    InvalidUser(String),
    /// Not a ticket at all.
    #[error("invalid ticket: malformed ({0})")]
    Garbage(&'static str),
    /// A ticket of another product or kind (e.g. `PBS:`, `PVEVNC:`).
    #[error("invalid ticket: wrong prefix '{0}', expected 'PVE'")]
    WrongPrefix(String),
    /// No public key is available to check the signature.
    #[error("cannot verify ticket: no auth key available")]
    NoKey,
    /// Neither the current nor the old key signed it.
    #[error("invalid ticket: bad signature")]
    BadSignature,
    /// Older than the ticket lifetime.
    #[error("invalid ticket: expired (issued {age} s ago, lifetime {TICKET_LIFETIME} s)")]
    Expired {
        /// `now - issue time`.
        age: i64,
    },
    /// Issued further in the future than the clock-skew grace allows.
    #[error("invalid ticket: issued {} s in the future (more than the {AUTH_GRACE} s grace)", -age)]
    Future {
        /// `now - issue time` (negative).
        age: i64,
    },
    /// Within the lifetime, but outside the validity window of the key that signed it.
    #[error("invalid ticket: outside the {key:?} key's validity window (age {age} s, window {window:?})")]
    KeyWindow {
        /// The key whose signature matched.
        key: KeyUsed,
        /// `now - issue time`.
        age: i64,
        /// `(min, max)` of that key, or `None` if the key is unusable (`min > 7200`).
        window: Option<(i64, i64)>,
    },
}

/// A public key and its file's mtime (seconds since the epoch).
#[derive(Clone, Copy, Debug)]
pub struct KeyAt<'a> {
    /// The key.
    pub key: &'a VerifyingKey,
    /// mtime of the file it came from.
    pub mtime: i64,
}

/// Everything [`verify`] needs besides the ticket; no I/O happens in verification.
#[derive(Clone, Copy, Debug)]
pub struct VerifyContext<'a> {
    /// Current time (seconds since the epoch).
    pub now: i64,
    /// `authkey.pub` and its mtime.
    pub current: Option<KeyAt<'a>>,
    /// `authkey.pub.old` and its mtime.
    pub old: Option<KeyAt<'a>>,
    /// Whether the cluster is quorate (without quorum an overdue key stays usable).
    pub quorate: bool,
    /// Key lifetime (PVE `$authkey_lifetime`, 86400; 0 disables the overdue clamp).
    pub key_lifetime: i64,
}

impl<'a> VerifyContext<'a> {
    /// A quorate context with the default key lifetime.
    pub fn new(now: i64, current: Option<KeyAt<'a>>, old: Option<KeyAt<'a>>) -> Self {
        VerifyContext {
            now,
            current,
            old,
            quorate: true,
            key_lifetime: DEFAULT_LIFETIME,
        }
    }
}

/// An accepted ticket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The user it was issued for (unescaped).
    pub user: String,
    /// `now - issue time`.
    pub age: i64,
    /// The key that accepted it.
    pub key: KeyUsed,
}

/// PVE's `$get_ticket_age_range`: the open interval `(min, max)` of ticket ages a key
/// accepts, or `None` if the key is unusable.
pub fn age_range(
    now: i64,
    key_mtime: i64,
    rotated: bool,
    quorate: bool,
    key_lifetime: i64,
) -> Option<(i64, i64)> {
    let key_age = (now - key_mtime).max(0);
    let mut min = -AUTH_GRACE;
    let mut max = TICKET_LIFETIME;
    if rotated {
        min = key_age - AUTH_GRACE;
    } else {
        if key_age > key_lifetime && key_lifetime > 0 {
            if quorate {
                min = key_age - key_lifetime;
            } else {
                tracing::warn!("cluster not quorate - extending auth key lifetime");
            }
        }
        if key_age < TICKET_LIFETIME {
            max = key_age + AUTH_GRACE;
        }
    }
    if min > TICKET_LIFETIME {
        return None;
    }
    Some((min, max))
}

/// Escape `:` as `%3A` (Perl `uri_escape($data, ':')`).
fn escape_user(user: &str) -> String {
    user.replace(':', "%3A")
}

/// Decode `%XX` sequences (Perl `uri_unescape`); anything else is kept as is.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(hi), Some(lo)) = (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Issue a ticket for `user` at time `now`, signed with `key`.
pub fn issue(key: &SigningKey, user: &str, now: i64) -> Result<String, TicketError> {
    if user.is_empty() || user.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(TicketError::InvalidUser(user.to_string()));
    }
    if !(0..=0xFFFF_FFFF).contains(&now) {
        return Err(TicketError::Garbage("time does not fit in 8 hex digits"));
    }
    let plain = format!("{PREFIX}:{}:{now:08X}", escape_user(user));
    let sig = key.sign(plain.as_bytes());
    Ok(format!("{plain}::{}", STANDARD.encode(sig.to_bytes())))
}

/// A syntactically valid ticket, not yet authenticated.
struct Parsed<'t> {
    plain: &'t str,
    /// `None` if the decoded signature has the wrong length for Ed25519.
    signature: Option<Signature>,
    user: String,
    time: i64,
}

/// Apply PVE's two regexes: `^(PVE:\S+)::([^:\s]+)$`, then on the plain part
/// `^PVE:(?:(\S+):)?([A-Z0-9]{8})$` (we require real hex digits).
fn parse(ticket: &str) -> Result<Parsed<'_>, TicketError> {
    if ticket.is_empty() {
        return Err(TicketError::Garbage("empty"));
    }
    if ticket.chars().any(char::is_whitespace) {
        return Err(TicketError::Garbage("contains whitespace"));
    }
    let (plain, sig_b64) = ticket
        .rsplit_once("::")
        .ok_or(TicketError::Garbage("no '::' before the signature"))?;
    if sig_b64.is_empty() || sig_b64.contains(':') {
        return Err(TicketError::Garbage("bad signature field"));
    }
    let (prefix, rest) = plain
        .split_once(':')
        .ok_or(TicketError::Garbage("no prefix"))?;
    if prefix != PREFIX {
        return Err(TicketError::WrongPrefix(prefix.to_string()));
    }
    let (data, hextime) = match rest.rsplit_once(':') {
        Some((d, t)) => (Some(d), t),
        None => (None, rest),
    };
    if hextime.len() != 8
        || !hextime
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c))
    {
        return Err(TicketError::Garbage(
            "timestamp is not 8 upper-case hex digits",
        ));
    }
    let time = i64::from_str_radix(hextime, 16).map_err(|_| TicketError::Garbage("timestamp"))?;
    let data = match data {
        Some(d) if !d.is_empty() => d,
        _ => return Err(TicketError::Garbage("no user")),
    };
    let sig_bytes = LENIENT_B64
        .decode(sig_b64)
        .map_err(|_| TicketError::Garbage("signature is not base64"))?;
    // Right encoding, wrong length: certainly not a signature of any of our keys.
    let signature = Signature::from_slice(&sig_bytes).ok();
    Ok(Parsed {
        plain,
        signature,
        user: unescape(data),
        time,
    })
}

/// Verify a ticket against the current and old keys with PVE's age windows (see the
/// module documentation for the exact rules).
pub fn verify(ticket: &str, ctx: &VerifyContext<'_>) -> Result<Verified, TicketError> {
    let p = parse(ticket)?;
    let age = ctx.now - p.time;
    if ctx.current.is_none() && ctx.old.is_none() {
        return Err(TicketError::NoKey);
    }
    let mut first_signer: Option<(KeyUsed, Option<(i64, i64)>)> = None;
    for (which, key) in [(KeyUsed::Current, ctx.current), (KeyUsed::Old, ctx.old)] {
        let (Some(k), Some(sig)) = (key, p.signature.as_ref()) else {
            continue;
        };
        if k.key.verify_strict(p.plain.as_bytes(), sig).is_err() {
            continue;
        }
        let window = age_range(
            ctx.now,
            k.mtime,
            which == KeyUsed::Old,
            ctx.quorate,
            ctx.key_lifetime,
        );
        if let Some((min, max)) = window {
            if min < age && age < max {
                return Ok(Verified {
                    user: p.user,
                    age,
                    key: which,
                });
            }
        }
        first_signer.get_or_insert((which, window));
    }
    let Some((key, window)) = first_signer else {
        return Err(TicketError::BadSignature);
    };
    if age >= TICKET_LIFETIME {
        Err(TicketError::Expired { age })
    } else if age <= -AUTH_GRACE {
        Err(TicketError::Future { age })
    } else {
        Err(TicketError::KeyWindow { key, age, window })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys;

    const NOW: i64 = 1_700_000_000;

    struct Keys {
        cur: SigningKey,
        old: SigningKey,
        cur_v: VerifyingKey,
        old_v: VerifyingKey,
    }

    fn keys() -> Keys {
        let cur = keys::generate();
        let old = keys::generate();
        Keys {
            cur_v: cur.verifying_key(),
            old_v: old.verifying_key(),
            cur,
            old,
        }
    }

    fn ctx<'a>(k: &'a Keys, cur_mtime: i64, old_mtime: Option<i64>) -> VerifyContext<'a> {
        VerifyContext::new(
            NOW,
            Some(KeyAt {
                key: &k.cur_v,
                mtime: cur_mtime,
            }),
            old_mtime.map(|m| KeyAt {
                key: &k.old_v,
                mtime: m,
            }),
        )
    }

    #[test]
    fn format_and_round_trip() {
        let k = keys();
        let t = issue(&k.cur, "root@pam", NOW).unwrap();
        let (plain, sig) = t.split_once("::").unwrap();
        assert_eq!(plain, format!("PVE:root@pam:{NOW:08X}"));
        assert_eq!(sig.len(), 88, "64 bytes → 88 chars of padded base64");
        assert!(sig.ends_with("=="));
        let v = verify(&t, &ctx(&k, NOW - 3 * 86400 / 4, None)).unwrap();
        assert_eq!(
            v,
            Verified {
                user: "root@pam".into(),
                age: 0,
                key: KeyUsed::Current
            }
        );
        // ':' in the user is escaped and restored.
        let t = issue(&k.cur, "a:b@pve", NOW).unwrap();
        assert!(t.starts_with("PVE:a%3Ab@pve:"));
        assert_eq!(
            verify(&t, &ctx(&k, NOW - 10000, None)).unwrap().user,
            "a:b@pve"
        );
        // Unpadded signatures (PBS style) are accepted too.
        let t = issue(&k.cur, "root@pam", NOW).unwrap();
        let unpadded = t.trim_end_matches('=');
        assert!(verify(unpadded, &ctx(&k, NOW - 10000, None)).is_ok());
        assert!(matches!(
            issue(&k.cur, "a b", NOW),
            Err(TicketError::InvalidUser(_))
        ));
        assert!(matches!(
            issue(&k.cur, "", NOW),
            Err(TicketError::InvalidUser(_))
        ));
    }

    #[test]
    fn distinct_errors() {
        let k = keys();
        let c = ctx(&k, NOW - 10000, None);
        let good = issue(&k.cur, "root@pam", NOW).unwrap();
        for g in [
            "",
            "garbage",
            "PVE:root@pam:65A1B2C3",
            "PVE:root@pam:65A1B2C3::a:b",
            "PVE:root@pam::AAAA",
            "PVE:65A1B2C3::AAAA",
            "PVE:root@pam:65a1b2c3::AAAA",
            "PVE:root@pam:ZZZZZZZZ::AAAA",
            "PVE:root@pam:65A1B2C3::not*base64",
            "a b::c",
        ] {
            assert!(
                matches!(verify(g, &c), Err(TicketError::Garbage(_))),
                "{g:?}: {:?}",
                verify(g, &c)
            );
        }
        let wrong = good.replacen("PVE:", "PBS:", 1);
        assert_eq!(
            verify(&wrong, &c),
            Err(TicketError::WrongPrefix("PBS".into()))
        );
        let vnc = good.replacen("PVE:", "PVEVNC:", 1);
        assert!(matches!(verify(&vnc, &c), Err(TicketError::WrongPrefix(_))));
        // Signed by a stranger / tampered user / wrong signature length.
        let stranger = issue(&keys::generate(), "root@pam", NOW).unwrap();
        assert_eq!(verify(&stranger, &c), Err(TicketError::BadSignature));
        let tampered = good.replacen("root@pam", "root@pve", 1);
        assert_eq!(verify(&tampered, &c), Err(TicketError::BadSignature));
        let short = format!("PVE:root@pam:{NOW:08X}::AAAA");
        assert_eq!(verify(&short, &c), Err(TicketError::BadSignature));
        assert_eq!(
            verify(&good, &VerifyContext::new(NOW, None, None)),
            Err(TicketError::NoKey)
        );
        // Old key alone verifies; current-key-signed ticket with only the old key fails.
        let only_old = VerifyContext::new(
            NOW,
            None,
            Some(KeyAt {
                key: &k.old_v,
                mtime: NOW,
            }),
        );
        assert_eq!(verify(&good, &only_old), Err(TicketError::BadSignature));
    }

    /// Ticket issued `age` seconds before NOW with the current key.
    fn at(k: &Keys, age: i64) -> String {
        issue(&k.cur, "root@pam", NOW - age).unwrap()
    }

    fn at_old(k: &Keys, age: i64) -> String {
        issue(&k.old, "root@pam", NOW - age).unwrap()
    }

    #[test]
    fn current_key_plain_window_edges() {
        // Key 3 h old: window (-300, 7200), strict at both ends.
        let k = keys();
        let c = ctx(&k, NOW - 3 * 3600, None);
        assert!(verify(&at(&k, 7199), &c).is_ok());
        assert_eq!(
            verify(&at(&k, 7200), &c),
            Err(TicketError::Expired { age: 7200 })
        );
        assert!(verify(&at(&k, -299), &c).is_ok());
        assert_eq!(
            verify(&at(&k, -300), &c),
            Err(TicketError::Future { age: -300 })
        );
        assert_eq!(
            verify(&at(&k, -5000), &c),
            Err(TicketError::Future { age: -5000 })
        );
    }

    #[test]
    fn young_key_caps_ticket_age() {
        // Key 1000 s old: max = 1000 + 300; a ticket older than its key (plus grace) is
        // refused with a key-window error, not "expired".
        let k = keys();
        let c = ctx(&k, NOW - 1000, None);
        assert!(verify(&at(&k, 1299), &c).is_ok());
        assert_eq!(
            verify(&at(&k, 1300), &c),
            Err(TicketError::KeyWindow {
                key: KeyUsed::Current,
                age: 1300,
                window: Some((-300, 1300))
            })
        );
        // PVE quirk kept as is: key_age 7199 → max = 7499, above the 7200 lifetime, so a
        // ticket aged 7200..7498 is still accepted by such a key.
        let c = ctx(&k, NOW - 7199, None);
        assert!(verify(&at(&k, 7200), &c).is_ok());
        assert!(verify(&at(&k, 7498), &c).is_ok());
        assert_eq!(
            verify(&at(&k, 7499), &c),
            Err(TicketError::Expired { age: 7499 })
        );
        // From key_age 7200 on, max stays 7200.
        let c = ctx(&k, NOW - 7200, None);
        assert_eq!(
            verify(&at(&k, 7200), &c),
            Err(TicketError::Expired { age: 7200 })
        );
        // Key mtime in the future: key_age clamps to 0 → window (-300, 300).
        let c = ctx(&k, NOW + 5000, None);
        assert!(verify(&at(&k, 299), &c).is_ok());
        assert!(matches!(
            verify(&at(&k, 300), &c),
            Err(TicketError::KeyWindow { .. })
        ));
    }

    #[test]
    fn overdue_key_only_accepts_tickets_from_before_the_missed_rotation() {
        let k = keys();
        // Key 86400 + 1000 s old, quorate: min = 1000.
        let c = ctx(&k, NOW - 86400 - 1000, None);
        assert!(verify(&at(&k, 1001), &c).is_ok());
        assert_eq!(
            verify(&at(&k, 1000), &c),
            Err(TicketError::KeyWindow {
                key: KeyUsed::Current,
                age: 1000,
                window: Some((1000, 7200))
            })
        );
        assert!(matches!(
            verify(&at(&k, 0), &c),
            Err(TicketError::KeyWindow { .. })
        ));
        // Exactly 86400 old: not yet clamped (strict '>').
        let c = ctx(&k, NOW - 86400, None);
        assert!(verify(&at(&k, 0), &c).is_ok());
        // Not quorate: the lifetime is extended, fresh tickets are fine.
        let mut c = ctx(&k, NOW - 86400 - 1000, None);
        c.quorate = false;
        assert!(verify(&at(&k, 0), &c).is_ok());
        // Key more than 86400 + 7200 old: min > 7200, unusable.
        let c = ctx(&k, NOW - 86400 - 7201, None);
        assert_eq!(
            verify(&at(&k, 7199), &c),
            Err(TicketError::KeyWindow {
                key: KeyUsed::Current,
                age: 7199,
                window: None
            })
        );
        assert_eq!(
            age_range(NOW, NOW - 86400 - 7200, false, true, 86400),
            Some((7200, 7200))
        );
        assert_eq!(age_range(NOW, NOW - 86400 - 7201, false, true, 86400), None);
    }

    #[test]
    fn old_key_window_edges() {
        let k = keys();
        // Rotated 1000 s ago (pub.old mtime): old-key tickets must be older than 700 s.
        let rot = NOW - 1000;
        let c = ctx(&k, rot, Some(rot));
        assert!(verify(&at_old(&k, 701), &c).is_ok());
        assert_eq!(verify(&at_old(&k, 701), &c).unwrap().key, KeyUsed::Old);
        assert_eq!(
            verify(&at_old(&k, 700), &c),
            Err(TicketError::KeyWindow {
                key: KeyUsed::Old,
                age: 700,
                window: Some((700, 7200))
            })
        );
        // Issued after the rotation with the old key: rejected.
        assert!(matches!(
            verify(&at_old(&k, 10), &c),
            Err(TicketError::KeyWindow { .. })
        ));
        assert!(verify(&at_old(&k, 7199), &c).is_ok());
        assert_eq!(
            verify(&at_old(&k, 7200), &c),
            Err(TicketError::Expired { age: 7200 })
        );
        // Rotation just happened: min = -300 → fresh old-key tickets still pass.
        let c = ctx(&k, NOW, Some(NOW));
        assert!(verify(&at_old(&k, -299), &c).is_ok());
        assert_eq!(
            verify(&at_old(&k, -300), &c),
            Err(TicketError::Future { age: -300 })
        );
        // Rotated more than 7500 s ago: the old key is unusable.
        let c = ctx(&k, NOW - 7501, Some(NOW - 7501));
        assert_eq!(
            verify(&at_old(&k, 7199), &c),
            Err(TicketError::KeyWindow {
                key: KeyUsed::Old,
                age: 7199,
                window: None
            })
        );
        let c = ctx(&k, NOW - 7500, Some(NOW - 7500));
        assert_eq!(
            age_range(NOW, NOW - 7500, true, true, 86400),
            Some((7200, 7200))
        );
        assert!(matches!(
            verify(&at_old(&k, 7199), &c),
            Err(TicketError::KeyWindow { .. })
        ));
    }

    #[test]
    fn unescape_like_uri_unescape() {
        assert_eq!(unescape("a%3Ab"), "a:b");
        assert_eq!(unescape("a%3ab%"), "a:b%");
        assert_eq!(unescape("%zz%4"), "%zz%4");
        assert_eq!(unescape("%41%42"), "AB");
    }
}
