//! Tickets: the user identity every client request carries, issued by the site's login
//! layer and verified by the gateway without a database.
//!
//! Format: `<user>.<expires_unix_s>.<hex HMAC-SHA256(secret, "<user>.<expires>")>`, or,
//! signed with a key that has an id (so that the secret can be rotated while tickets
//! signed with the old one are still accepted: [`Keyring`]),
//! `<user>.<expires_unix_s>.<key id>.<hex HMAC-SHA256(secret, "<user>.<expires>.<key id>")>`.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("malformed ticket")]
    Malformed,
    #[error("ticket signature does not match")]
    Forged,
    #[error("ticket expired")]
    Expired,
    /// Signed with a key this gateway does not hold (retired, or not rolled out yet).
    #[error("ticket signed with an unknown key")]
    UnknownKey,
}

/// A key id: 1..=32 of `[A-Za-z0-9_-]` (it sits between dots in a ticket), not `-`
/// alone (which a keys file uses for tickets without an id).
pub fn valid_key_id(id: &str) -> bool {
    id != "-"
        && (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The keys tickets are verified with, by id ("" for tickets without one), and the one
/// new tickets are signed with.
#[derive(Clone)]
pub struct Keyring {
    keys: Vec<(String, Vec<u8>)>,
    signing: usize,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        write!(
            f,
            "Keyring(signing {:?}, ids {ids:?})",
            self.keys[self.signing].0
        )
    }
}

impl Keyring {
    /// Sign with `secret` (id `id`, "" for none); accept it and `others` too.
    pub fn new(id: &str, secret: &[u8], others: Vec<(String, Vec<u8>)>) -> Keyring {
        let mut keys = vec![(id.to_string(), secret.to_vec())];
        keys.extend(others.into_iter().filter(|(other, _)| other != id));
        Keyring { keys, signing: 0 }
    }

    /// A ticket for `user`, valid until `expires_unix_s`, signed with the signing key.
    pub fn mint(&self, user: u64, expires_unix_s: u64) -> String {
        let (id, secret) = &self.keys[self.signing];
        mint_with_id(id, secret, user, expires_unix_s)
    }

    /// The user of `ticket` at `now_unix_s`, its signature checked (in constant time)
    /// with the key its id names.
    pub fn verify(&self, ticket: &str, now_unix_s: u64) -> Result<u64, TicketError> {
        let (claim, sig_hex) = ticket.rsplit_once('.').ok_or(TicketError::Malformed)?;
        let mut parts = claim.split('.');
        let (Some(user), Some(expires), id, None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TicketError::Malformed);
        };
        let user: u64 = user.parse().map_err(|_| TicketError::Malformed)?;
        let expires: u64 = expires.parse().map_err(|_| TicketError::Malformed)?;
        let id = id.unwrap_or("");
        if !id.is_empty() && !valid_key_id(id) {
            return Err(TicketError::Malformed);
        }
        let sig = decode_hex(sig_hex).ok_or(TicketError::Malformed)?;
        let (_, secret) = self
            .keys
            .iter()
            .find(|(k, _)| k == id)
            .ok_or(TicketError::UnknownKey)?;
        sign(secret, claim.as_bytes())
            .verify_slice(&sig)
            .map_err(|_| TicketError::Forged)?;
        if now_unix_s >= expires {
            return Err(TicketError::Expired);
        }
        Ok(user)
    }
}

/// Mint a ticket signed with the key `id` ("" for a ticket without a key id).
pub fn mint_with_id(id: &str, secret: &[u8], user: u64, expires_unix_s: u64) -> String {
    let claim = if id.is_empty() {
        format!("{user}.{expires_unix_s}")
    } else {
        format!("{user}.{expires_unix_s}.{id}")
    };
    let sig = hex(&sign(secret, claim.as_bytes()).finalize().into_bytes());
    format!("{claim}.{sig}")
}

/// Mint a ticket (without a key id) for `user`, valid until `expires_unix_s`.
pub fn mint(secret: &[u8], user: u64, expires_unix_s: u64) -> String {
    mint_with_id("", secret, user, expires_unix_s)
}

/// Verify a ticket without a key id at time `now_unix_s`; returns the user id. The
/// signature compare is constant-time.
pub fn verify(secret: &[u8], ticket: &str, now_unix_s: u64) -> Result<u64, TicketError> {
    Keyring::new("", secret, vec![]).verify(ticket, now_unix_s)
}

pub(crate) fn sign(secret: &[u8], msg: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(msg);
    mac
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 64 hex digits (an HMAC-SHA256), decoded.
pub(crate) fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_ticket_verifies_until_it_expires() {
        let t = mint(b"k", 42, 1000);
        assert_eq!(verify(b"k", &t, 999), Ok(42));
        assert_eq!(verify(b"k", &t, 1000), Err(TicketError::Expired));
    }

    #[test]
    fn forged_and_malformed_tickets_are_refused() {
        let t = mint(b"k", 42, 1000);
        assert_eq!(verify(b"other", &t, 1), Err(TicketError::Forged));
        let tampered = t.replacen("42.", "43.", 1);
        assert_eq!(verify(b"k", &tampered, 1), Err(TicketError::Forged));
        for bad in [
            "",
            "42",
            "42.1000",
            "x.1000.00",
            "42.1000.zz",
            &format!("{t}0"),
            "42.1000.k.1.00",
            "42.1000.a/b.00",
        ] {
            assert_eq!(verify(b"k", bad, 1), Err(TicketError::Malformed), "{bad}");
        }
    }

    #[test]
    fn a_rotated_key_keeps_old_tickets_valid_while_both_are_held() {
        let old = mint(b"old", 7, 1000);
        let new = mint_with_id("k2", b"new", 7, 1000);
        // Before the rotation: the new key rolled out beside the old one.
        let before = Keyring::new("", b"old", vec![("k2".into(), b"new".to_vec())]);
        assert_eq!(before.verify(&old, 1), Ok(7));
        assert_eq!(before.verify(&new, 1), Ok(7));
        assert_eq!(before.mint(7, 1000), old);
        // After: signing with k2, the old key still accepted for the window.
        let after = Keyring::new("k2", b"new", vec![(String::new(), b"old".to_vec())]);
        assert_eq!(after.verify(&old, 1), Ok(7));
        assert_eq!(after.mint(7, 1000), new);
        // Then the old key retired: its tickets name no key held.
        let retired = Keyring::new("k2", b"new", vec![]);
        assert_eq!(retired.verify(&old, 1), Err(TicketError::UnknownKey));
        assert_eq!(retired.verify(&new, 1), Ok(7));
        // A key id is signed: moving a signature to another id does not verify.
        let moved = new.replacen(".k2.", ".k3.", 1);
        let both = Keyring::new("k2", b"new", vec![("k3".into(), b"new".to_vec())]);
        assert_eq!(both.verify(&moved, 1), Err(TicketError::Forged));
        assert!(!valid_key_id("") && !valid_key_id("a.b") && valid_key_id("2026-12_a"));
    }
}
