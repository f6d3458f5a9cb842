//! The request bodies as they come over the wire, with their OpenAPI schemas: what JSON the
//! edge accepts. Each is parsed here into the domain's types, which know nothing of JSON.

use serde::Deserialize;

use crate::domain::InvalidInput;
use crate::domain::queue::{Queue, QueueSettings};
use crate::domain::sale::{SaleSettings, parse_time};

/// Body of `POST /v1/orders/{order_id}/pay`, as sent.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentRequest {
    /// The caller's reference of the payment: 1-128 characters, no control characters.
    #[schema(pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,128}$")]
    pub payment_ref: String,
}

/// Body of `POST /v1/sales/{sku}/orders`, as sent; the handler parses it into domain types.
/// `user_id` may be left out when a `Buyer-Ticket` names the buyer.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    /// The buyer: 1-128 characters, no control characters. Required unless a Buyer-Ticket
    /// names the buyer (then it may be left out, or must be the same).
    #[schema(value_type = String, required = true, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,128}$")]
    pub user_id: Option<String>,
    /// Units, all or nothing; absent = 1.
    #[schema(minimum = 1, maximum = 100)]
    #[serde(
        default,
        deserialize_with = "crate::http::bodies::whole_number::optional"
    )]
    pub quantity: Option<u64>,
}

/// Body of `PUT /v1/sales/{sku}`, as sent; [`SaleSettingsRequest::parse`] makes it trustworthy.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SaleSettingsRequest {
    #[schema(maximum = 9_007_199_254_740_992_u64)]
    #[serde(deserialize_with = "crate::http::bodies::whole_number::required")]
    pub stock: u64,
    /// Units one buyer may hold; absent = no limit.
    #[schema(minimum = 1, maximum = 9_007_199_254_740_992_u64)]
    #[serde(
        default,
        deserialize_with = "crate::http::bodies::whole_number::optional"
    )]
    pub per_user_limit: Option<u64>,
    /// Minor units (cents).
    #[schema(maximum = 90_071_992_547_409_u64)]
    #[serde(
        default,
        deserialize_with = "crate::http::bodies::whole_number::optional"
    )]
    pub price: Option<u64>,
    /// RFC 3339; absent = open from now. Must be before `ends_at`.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub starts_at: Option<String>,
    /// RFC 3339; absent = never closes.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ends_at: Option<String>,
    /// Seconds a buyer has to pay an order; absent = an order is final when accepted.
    #[schema(minimum = 1, maximum = 86_400)]
    #[serde(
        default,
        deserialize_with = "crate::http::bodies::whole_number::optional"
    )]
    pub payment_timeout_secs: Option<u64>,
    /// A waiting room: buyers join a line and buy once admitted; absent = no queue.
    pub queue: Option<QueueRequest>,
}

/// The `queue` of a PUT's body, as sent.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueRequest {
    /// Places admitted a second.
    #[schema(minimum = 1, maximum = 100_000)]
    #[serde(deserialize_with = "crate::http::bodies::whole_number::required")]
    pub admit_per_sec: u64,
    /// How long before `starts_at` the line opens; absent = 0. Everyone who joins before
    /// `starts_at` is placed in a random order drawn at the open.
    #[schema(maximum = 604_800)]
    #[serde(
        default,
        deserialize_with = "crate::http::bodies::whole_number::optional"
    )]
    pub opens_before_secs: Option<u64>,
    /// How long an admission lasts; then it lapses.
    #[schema(minimum = 1, maximum = 86_400)]
    #[serde(deserialize_with = "crate::http::bodies::whole_number::required")]
    pub admission_secs: u64,
}

impl SaleSettingsRequest {
    /// The settings this body asks for, if they keep a sale's rules. A queue's schedule is
    /// drawn as for a new sale at `now_ms`; the PUT fits it to the sale's running schedule
    /// (`Queue::put`).
    pub fn parse(self, now_ms: i64) -> Result<SaleSettings, InvalidInput> {
        let starts_at = parse_time("starts_at", self.starts_at.as_deref())?;
        let queue = self
            .queue
            .map(|q| {
                QueueSettings {
                    admit_per_sec: q.admit_per_sec,
                    opens_before_secs: q.opens_before_secs.unwrap_or(0),
                    admission_secs: q.admission_secs,
                }
                .checked()
            })
            .transpose()?
            .map(|settings| Queue::put(settings, None, starts_at, now_ms));
        SaleSettings {
            stock: self.stock,
            per_user_limit: self.per_user_limit,
            price: self.price.unwrap_or(0),
            starts_at,
            ends_at: parse_time("ends_at", self.ends_at.as_deref())?,
            payment_timeout_secs: self.payment_timeout_secs,
            ended_at: None,
            queue,
        }
        .checked()
    }
}

/// Serde helpers for counts in request bodies: JSON has one number type, and `88.0` is the
/// same whole number as `88` (JSON Schema's `integer` takes both), so both are read as 88;
/// a fraction or a negative number is refused.
mod whole_number {
    use serde::{Deserialize, Deserializer, de::Error};

    fn whole(number: serde_json::Number) -> Option<u64> {
        number.as_u64().or_else(|| {
            let float = number.as_f64()?;
            // Below 2^64 and without a fraction: exact as u64.
            (float >= 0.0 && float.fract() == 0.0 && float < 18_446_744_073_709_551_616.0)
                .then_some(float as u64)
        })
    }

    pub fn required<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        let number = serde_json::Number::deserialize(deserializer)?;
        whole(number).ok_or_else(|| D::Error::custom("expected a whole number of at least 0"))
    }

    pub fn optional<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
        Option::<serde_json::Number>::deserialize(deserializer)?
            .map(|number| {
                whole(number)
                    .ok_or_else(|| D::Error::custom("expected a whole number of at least 0"))
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Sku;
    use crate::domain::sale::{Sale, SaleState};

    fn parse(request: SaleSettingsRequest) -> Result<SaleSettings, InvalidInput> {
        request.parse(0)
    }

    fn request(json: &str) -> SaleSettingsRequest {
        serde_json::from_str(json).expect("valid JSON")
    }

    #[test]
    fn only_stock_is_required() {
        let s = parse(request(r#"{"stock": 5}"#)).expect("valid");
        assert_eq!(s.stock, 5);
        assert_eq!(s.price, 0);
        assert_eq!(s.per_user_limit, None);
    }

    #[test]
    fn an_inverted_window_is_a_closed_sale_and_bad_numbers_are_refused() {
        let inverted =
            r#"{"stock":1,"starts_at":"2026-01-02T00:00:00Z","ends_at":"2026-01-01T00:00:00Z"}"#;
        let never = parse(request(inverted)).expect("an empty window");
        let sku = Sku::parse("s").expect("valid sku");
        for now in [0, 1_767_225_600_000, i64::MAX] {
            assert_eq!(Sale::new(&sku, &never, 0, now).state, SaleState::Closed);
        }
        let whole = parse(request(r#"{"stock":5.0,"per_user_limit":2.0}"#));
        assert_eq!(whole.expect("whole numbers").per_user_limit, Some(2));
        assert!(serde_json::from_str::<SaleSettingsRequest>(r#"{"stock":1.5}"#).is_err());
        let huge = r#"{"stock":1,"per_user_limit":9223372036854775808}"#;
        assert!(parse(request(huge)).is_err());
        assert!(parse(request(r#"{"stock":1,"per_user_limit":0}"#)).is_err());
        assert!(parse(request(r#"{"stock":1,"starts_at":"tomorrow"}"#)).is_err());
        assert!(parse(request(r#"{"stock":1,"payment_timeout_secs":0}"#)).is_err());
        assert!(parse(request(r#"{"stock":1,"payment_timeout_secs":86401}"#)).is_err());
        let day = parse(request(r#"{"stock":1,"payment_timeout_secs":86400}"#));
        assert_eq!(day.expect("valid").payment_timeout_secs, Some(86_400));
    }
}
