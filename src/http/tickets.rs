//! Buyer tickets: proof, signed by the storefront that logged the buyer in, that a purchase
//! is that buyer's. Header `Buyer-Ticket: v1.<user>.<sku>.<expires>.<mac>`: `<user>` the
//! user id in unpadded base64url, `<expires>` Unix seconds, `<mac>` the unpadded base64url
//! HMAC-SHA256, under FLASHSALE_TICKET_KEY, of everything before the last dot. The MAC is
//! compared in constant time (`hmac`'s `verify_slice`); neither key nor ticket is logged.

use crate::domain::{Sku, UserId};
use crate::http::signing::{self, SignatureError};

/// Why a ticket was refused (all are 401 `invalid_ticket` to the caller: the details are for
/// the tests, not for a forger).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("a Buyer-Ticket is required")]
    Missing,
    #[error("the ticket is not v1.<user>.<sku>.<expires>.<mac>")]
    Malformed,
    #[error("the ticket's signature does not match")]
    Forged,
    #[error("the ticket has expired")]
    Expired,
    #[error("the ticket is for another sale")]
    OtherSale,
    #[error("the ticket is for another user than the body's user_id")]
    OtherUser,
    #[error("this service takes no tickets: FLASHSALE_TICKET_KEY is not set")]
    NoKey,
}

/// The ticket key and whether purchases need a ticket.
pub struct Tickets {
    key: Option<Vec<u8>>,
    required: bool,
}

impl Tickets {
    pub fn new(key: Option<&str>, required: bool) -> Self {
        Self {
            key: key.map(|k| k.as_bytes().to_vec()),
            required,
        }
    }

    pub fn required(&self) -> bool {
        self.required
    }

    /// The buyer a purchase of `sku` is for: from its ticket when it has one (a body
    /// `user_id` must then name the same buyer), else from the body, unless tickets are
    /// required.
    pub fn buyer(
        &self,
        ticket: Option<&[u8]>,
        body_user: Option<&str>,
        sku: &Sku,
        now_secs: i64,
    ) -> Result<Option<UserId>, TicketError> {
        let Some(ticket) = ticket else {
            return if self.required {
                Err(TicketError::Missing)
            } else {
                Ok(None)
            };
        };
        let key = self.key.as_deref().ok_or(TicketError::NoKey)?;
        let user = verify(key, ticket, sku, now_secs)?;
        match body_user {
            Some(body) if body != user.as_str() => Err(TicketError::OtherUser),
            _ => Ok(Some(user)),
        }
    }
}

/// Checks a ticket for a purchase of `sku` at `now_secs`; the buyer it names.
pub fn verify(key: &[u8], ticket: &[u8], sku: &Sku, now_secs: i64) -> Result<UserId, TicketError> {
    let (signed, mac) = signing::split(ticket).ok_or(TicketError::Malformed)?;
    let mut fields = signed.split('.');
    let (Some("v1"), Some(user), Some(ticket_sku), Some(expires), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(TicketError::Malformed);
    };
    signing::check(key, signed, mac).map_err(|e| match e {
        SignatureError::Malformed => TicketError::Malformed,
        SignatureError::Forged => TicketError::Forged,
    })?;
    // Signed by the storefront from here on: the rest can be trusted to be what it sent.
    let expires: i64 = expires.parse().map_err(|_| TicketError::Malformed)?;
    if expires <= now_secs {
        return Err(TicketError::Expired);
    }
    if ticket_sku != sku.as_str() {
        return Err(TicketError::OtherSale);
    }
    let user = signing::decoded_user(user).ok_or(TicketError::Malformed)?;
    UserId::parse(user).map_err(|_| TicketError::Malformed)
}

/// A ticket, as a storefront signs one (tests, tools, docs/storefront.md's example).
pub fn sign(key: &[u8], user: &str, sku: &str, expires: i64) -> String {
    signing::signed(
        key,
        format!("v1.{}.{sku}.{expires}", signing::encoded_user(user)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"shared-secret";

    fn sku(s: &str) -> Sku {
        Sku::parse(s).expect("sku")
    }

    #[test]
    fn signing_matches_the_readme_examples() {
        // The same ticket docs/storefront.md's shell (openssl) and Python lines print.
        assert_eq!(
            sign(b"shared-secret", "u42", "phone-17", 1_795_712_400),
            "v1.dTQy.phone-17.1795712400.2LX1kfWlhAKdv8n9HN9yk937zpSSyzoDFSpTPyZk6z8"
        );
    }

    #[test]
    fn a_signed_ticket_names_its_buyer() {
        let ticket = sign(KEY, "用户-42", "phone", 2_000);
        let user = verify(KEY, ticket.as_bytes(), &sku("phone"), 1_999).expect("valid");
        assert_eq!(user.as_str(), "用户-42");
    }

    #[test]
    fn forged_expired_other_sale_and_malformed_tickets_are_refused() {
        let ticket = sign(KEY, "u", "phone", 2_000);
        let check = |t: &str, s: &str, now: i64| verify(KEY, t.as_bytes(), &sku(s), now);
        assert_eq!(check(&ticket, "phone", 2_000), Err(TicketError::Expired));
        assert_eq!(check(&ticket, "tablet", 1_000), Err(TicketError::OtherSale));
        let other_key = sign(b"another key", "u", "phone", 2_000);
        assert_eq!(check(&other_key, "phone", 1_000), Err(TicketError::Forged));
        // The expiry moved, the signature kept: forged.
        let moved = ticket.replacen(".2000.", ".9000.", 1);
        assert_eq!(check(&moved, "phone", 1_000), Err(TicketError::Forged));
        for malformed in [
            "",
            "v1",
            "v2.dQ.phone.2000.x",
            "v1.dQ.phone.2000",
            "v1.dQ.phone.2000.!!",
        ] {
            assert_eq!(
                check(malformed, "phone", 1_000),
                Err(TicketError::Malformed),
                "{malformed}"
            );
        }
    }

    #[test]
    fn the_body_user_must_match_and_a_required_ticket_must_be_there() {
        let tickets = Tickets::new(Some("shared-secret"), true);
        let ticket = sign(KEY, "u", "phone", 2_000);
        let buyer = |t: Option<&str>, body: Option<&str>| {
            tickets.buyer(t.map(str::as_bytes), body, &sku("phone"), 1_000)
        };
        assert_eq!(
            buyer(Some(&ticket), Some("u"))
                .expect("ok")
                .map(|u| u.as_str().to_owned()),
            Some("u".into())
        );
        assert!(buyer(Some(&ticket), None).is_ok());
        assert_eq!(buyer(Some(&ticket), Some("v")), Err(TicketError::OtherUser));
        assert_eq!(buyer(None, Some("u")), Err(TicketError::Missing));
        let optional = Tickets::new(None, false);
        assert_eq!(optional.buyer(None, Some("u"), &sku("phone"), 0), Ok(None));
        assert_eq!(
            optional.buyer(Some(ticket.as_bytes()), None, &sku("phone"), 0),
            Err(TicketError::NoKey)
        );
    }
}
