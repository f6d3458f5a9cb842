//! HMAC-SHA256 signatures of the tokens the edge checks (buyer tickets, queue tokens): a token
//! is `<signed>.<mac>`, `<mac>` the unpadded base64url HMAC of `<signed>`. The MAC is compared
//! in constant time (`hmac`'s `verify_slice`): timing tells a forger nothing about how much
//! of a guess was right.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a token's signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    /// A MAC that is not base64url.
    Malformed,
    /// A MAC that does not match.
    Forged,
}

/// A token's two parts, `<signed>.<mac>`; `None` when it is not UTF-8 or has no dot.
pub fn split(token: &[u8]) -> Option<(&str, &str)> {
    std::str::from_utf8(token).ok()?.rsplit_once('.')
}

/// Whether `mac` is the MAC of `signed` under `key`.
pub fn check(key: &[u8], signed: &str, mac: &str) -> Result<(), SignatureError> {
    let mac = URL_SAFE_NO_PAD
        .decode(mac)
        .map_err(|_| SignatureError::Malformed)?;
    mac_of(key, signed)
        .verify_slice(&mac)
        .map_err(|_| SignatureError::Forged)
}

/// `signed` with its MAC under `key` appended.
pub fn signed(key: &[u8], signed: String) -> String {
    let mac = URL_SAFE_NO_PAD.encode(mac_of(key, &signed).finalize().into_bytes());
    format!("{signed}.{mac}")
}

fn mac_of(key: &[u8], signed: &str) -> HmacSha256 {
    // HMAC takes a key of any length.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(signed.as_bytes());
    mac
}

/// A user id as tokens carry it: unpadded base64url.
pub fn encoded_user(user: &str) -> String {
    URL_SAFE_NO_PAD.encode(user)
}

/// The user id a token carries, if it is base64url of UTF-8.
pub fn decoded_user(field: &str) -> Option<String> {
    URL_SAFE_NO_PAD
        .decode(field)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
}
