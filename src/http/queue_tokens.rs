//! Queue tokens: the service's proof, given when a buyer joins a sale's waiting room, of the
//! buyer's place in line. Header `Queue-Token: q1.<user>.<sku>.<line>.<place>.<mac>`:
//! `<user>` the user id in unpadded base64url, `<line>` when the line's admission started
//! (ms: a sale started anew on the same sku has a line of its own), `<mac>` the unpadded
//! base64url HMAC-SHA256, under FLASHSALE_QUEUE_KEY, of everything before the last dot.
//! Checking one costs Redis nothing; neither key nor token is logged.

use crate::domain::queue::Place;
use crate::domain::{Sku, UserId};
use crate::http::signing::{self, SignatureError};

/// Why a queue token was refused (all 401 `invalid_queue_token`: the details are for the
/// tests, not for a forger).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueTokenError {
    #[error("the Queue-Token is not q1.<user>.<sku>.<line>.<place>.<mac>")]
    Malformed,
    #[error("the Queue-Token's signature does not match")]
    Forged,
    #[error("the Queue-Token is for another sale")]
    OtherSale,
    #[error("the Queue-Token is another buyer's")]
    OtherUser,
    #[error("the Queue-Token is from an earlier line of this sale")]
    OtherLine,
    #[error("this service gives no queue tokens: FLASHSALE_QUEUE_KEY is not set")]
    NoKey,
}

/// The key queue tokens are signed with (FLASHSALE_QUEUE_KEY).
pub struct QueueTokens {
    key: Option<Vec<u8>>,
}

impl QueueTokens {
    pub fn new(key: Option<&str>) -> Self {
        Self {
            key: key.map(|k| k.as_bytes().to_vec()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.key.is_some()
    }

    /// The token of `place` in the line of `sku` that started at `line`, for `user`.
    pub fn sign(&self, user: &UserId, sku: &Sku, place: Place) -> Result<String, QueueTokenError> {
        let key = self.key.as_deref().ok_or(QueueTokenError::NoKey)?;
        Ok(sign(key, user.as_str(), sku.as_str(), place))
    }

    /// The place a token gives `user` in the line of `sku`.
    pub fn verify(&self, token: &[u8], user: &UserId, sku: &Sku) -> Result<Place, QueueTokenError> {
        let key = self.key.as_deref().ok_or(QueueTokenError::NoKey)?;
        let (signed, mac) = signing::split(token).ok_or(QueueTokenError::Malformed)?;
        let mut fields = signed.split('.');
        let (Some("q1"), Some(token_user), Some(token_sku), Some(line), Some(place), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(QueueTokenError::Malformed);
        };
        signing::check(key, signed, mac).map_err(|e| match e {
            SignatureError::Malformed => QueueTokenError::Malformed,
            SignatureError::Forged => QueueTokenError::Forged,
        })?;
        // Signed by this service from here on.
        if token_sku != sku.as_str() {
            return Err(QueueTokenError::OtherSale);
        }
        if token_user != signing::encoded_user(user.as_str()) {
            return Err(QueueTokenError::OtherUser);
        }
        Ok(Place {
            line: line.parse().map_err(|_| QueueTokenError::Malformed)?,
            place: place.parse().map_err(|_| QueueTokenError::Malformed)?,
        })
    }
}

fn sign(key: &[u8], user: &str, sku: &str, place: Place) -> String {
    let user = signing::encoded_user(user);
    signing::signed(
        key,
        format!("q1.{user}.{sku}.{}.{}", place.line, place.place),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sku(s: &str) -> Sku {
        Sku::parse(s).expect("sku")
    }

    fn user(u: &str) -> UserId {
        UserId::parse(u.into()).expect("user")
    }

    #[test]
    fn a_token_gives_its_place_to_its_buyer_only() {
        let tokens = QueueTokens::new(Some("queue-secret"));
        let place = Place {
            line: 1_795_000_000_000,
            place: 42,
        };
        let token = tokens
            .sign(&user("用户-7"), &sku("phone"), place)
            .expect("key");
        let check = |t: &str, u: &str, s: &str| tokens.verify(t.as_bytes(), &user(u), &sku(s));
        assert_eq!(check(&token, "用户-7", "phone"), Ok(place));
        assert_eq!(
            check(&token, "用户-8", "phone"),
            Err(QueueTokenError::OtherUser)
        );
        assert_eq!(
            check(&token, "用户-7", "tablet"),
            Err(QueueTokenError::OtherSale)
        );
        // The place moved forward, the signature kept: forged.
        let moved = token.replacen(".42.", ".1.", 1);
        assert_eq!(
            check(&moved, "用户-7", "phone"),
            Err(QueueTokenError::Forged)
        );
        let other_key = QueueTokens::new(Some("another key"))
            .sign(&user("u"), &sku("phone"), place)
            .expect("key");
        assert_eq!(
            check(&other_key, "u", "phone"),
            Err(QueueTokenError::Forged)
        );
        for malformed in [
            "",
            "q1",
            "q2.dQ.phone.1.2.x",
            "q1.dQ.phone.1.2",
            "q1.dQ.phone.1.2.!!",
        ] {
            assert_eq!(
                check(malformed, "u", "phone"),
                Err(QueueTokenError::Malformed),
                "{malformed}"
            );
        }
        let keyless = QueueTokens::new(None);
        assert_eq!(
            keyless.verify(token.as_bytes(), &user("u"), &sku("phone")),
            Err(QueueTokenError::NoKey)
        );
    }
}
