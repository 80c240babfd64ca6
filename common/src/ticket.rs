//! Tickets: the user identity every client request carries, issued by the site's login
//! layer and verified by the gateway without a database.
//!
//! Format: `<user>.<expires_unix_s>.<hex HMAC-SHA256(secret, "<user>.<expires>")>`.

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
}

/// Mint a ticket for `user`, valid until `expires_unix_s`.
pub fn mint(secret: &[u8], user: u64, expires_unix_s: u64) -> String {
    let claim = format!("{user}.{expires_unix_s}");
    let sig = hex(&sign(secret, claim.as_bytes()).finalize().into_bytes());
    format!("{claim}.{sig}")
}

/// Verify a ticket at time `now_unix_s`; returns the user id. The signature compare is
/// constant-time.
pub fn verify(secret: &[u8], ticket: &str, now_unix_s: u64) -> Result<u64, TicketError> {
    let (claim, sig_hex) = ticket.rsplit_once('.').ok_or(TicketError::Malformed)?;
    let (user, expires) = claim.split_once('.').ok_or(TicketError::Malformed)?;
    let user: u64 = user.parse().map_err(|_| TicketError::Malformed)?;
    let expires: u64 = expires.parse().map_err(|_| TicketError::Malformed)?;
    let sig = decode_hex(sig_hex).ok_or(TicketError::Malformed)?;
    sign(secret, claim.as_bytes())
        .verify_slice(&sig)
        .map_err(|_| TicketError::Forged)?;
    if now_unix_s >= expires {
        return Err(TicketError::Expired);
    }
    Ok(user)
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
        ] {
            assert_eq!(verify(b"k", bad, 1), Err(TicketError::Malformed), "{bad}");
        }
    }
}
