//! The one mapping from what went wrong to an HTTP answer.
//!
//! Every JSON error is `{"error": "<code>", "message": "<text for a person>"}`; the codes are
//! part of the API contract. Internal failures are logged here, once, at the edge.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::domain::InvalidInput;
use crate::domain::refusal::{OrderRefusal, PurchaseRefusal, QueueRefusal, SaleRefusal};
use crate::domain::sale::format_time;
use crate::http::queue_tokens::QueueTokenError;
use crate::http::rate_limit::Refused;
use crate::http::tickets::TicketError;
use crate::live::WatchError;
use crate::operations::{OperationError, Unanswered};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("{0}")]
    InvalidTicket(#[from] TicketError),
    #[error("the admin API is disabled: FLASHSALE_ADMIN_TOKEN is not set")]
    AdminDisabled,
    #[error("no such route")]
    RouteNotFound,
    /// A route that exists, asked with another method; carries the ones it takes.
    #[error("this route takes {0} only")]
    MethodNotAllowed(&'static str),
    #[error("no sale with this sku")]
    SaleNotFound,
    #[error("no order with this id")]
    OrderNotFound,
    #[error("{0}")]
    SoldOut(String),
    /// The buyer holds, or would hold with this purchase, more than `per_user_limit`.
    #[error("{0}")]
    UserLimitReached(String),
    #[error("the sale is not open now")]
    SaleNotOpen,
    /// The sale ended and left Redis: its orders read, nothing changes them.
    #[error("{0}")]
    SaleArchived(String),
    #[error("{0}")]
    StockBelowSold(String),
    #[error("this Idempotency-Key was already used for a different request")]
    IdempotencyConflict,
    /// An order that cannot make the asked move (pay, cancel) from where it is.
    #[error("{message}")]
    OrderState { code: &'static str, message: String },
    #[error("request body is larger than 4 KiB")]
    PayloadTooLarge,
    #[error("request body must be application/json")]
    UnsupportedMediaType,
    #[error("the stock store is unreachable; retry with the same Idempotency-Key")]
    Unavailable,
    /// The sale's copy in Redis sells past its stock; retryable once it is mended.
    #[error("{0}")]
    SaleInconsistent(String),
    /// Over a buyer's or a client's rate limit; nothing was done.
    #[error("too many purchases from this {}; retry after {} s", .0.limit.as_str(), retry_after_secs(.0.retry_after))]
    RateLimited(Refused),
    /// The replica serves its most live viewers (FLASHSALE_LIVE_VIEWERS).
    #[error("{0}")]
    TooManyViewers(String),
    /// A purchase of a sale with a waiting room without a valid `Queue-Token` of the buyer.
    #[error("{0}")]
    InvalidQueueToken(String),
    /// The buyer's place is not admitted yet; `retry_after` seconds as the schedule stands.
    #[error("{message}")]
    NotAdmitted { message: String, retry_after: u64 },
    #[error("your admission lapsed: your turn in line has passed")]
    AdmissionExpired,
    /// The sale's line opens later; `retry_after` seconds.
    #[error("{message}")]
    QueueNotOpen { message: String, retry_after: u64 },
    #[error("this sale has no waiting room: buy directly")]
    NoQueue,
    #[error("{0}")]
    ScheduleFull(String),
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::InvalidTicket(_) => "invalid_ticket",
            ApiError::AdminDisabled => "forbidden",
            ApiError::RouteNotFound => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::SaleNotFound => "sale_not_found",
            ApiError::OrderNotFound => "order_not_found",
            ApiError::SoldOut(_) => "sold_out",
            ApiError::UserLimitReached(_) => "user_limit_reached",
            ApiError::SaleNotOpen => "sale_not_open",
            ApiError::SaleArchived(_) => "sale_archived",
            ApiError::StockBelowSold(_) => "stock_below_sold",
            ApiError::IdempotencyConflict => "idempotency_conflict",
            ApiError::OrderState { code, .. } => code,
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Unavailable => "unavailable",
            ApiError::SaleInconsistent(_) => "sale_inconsistent",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::TooManyViewers(_) => "too_many_viewers",
            ApiError::InvalidQueueToken(_) => "invalid_queue_token",
            ApiError::NotAdmitted { .. } => "not_admitted",
            ApiError::AdmissionExpired => "admission_expired",
            ApiError::QueueNotOpen { .. } => "queue_not_open",
            ApiError::NoQueue => "no_queue",
            ApiError::ScheduleFull(_) => "schedule_full",
            ApiError::Internal => "internal",
        }
    }
}

/// Every JSON error answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody<'a> {
    /// Machine-readable code: invalid_request, unauthorized, invalid_ticket, forbidden,
    /// not_found, method_not_allowed, sale_not_found, order_not_found, sold_out, user_limit_reached,
    /// sale_not_open, sale_archived, stock_below_sold, idempotency_conflict, not_payable, order_cancelled,
    /// order_expired, payment_conflict, order_paid, payload_too_large,
    /// unsupported_media_type, rate_limited, unavailable, sale_inconsistent,
    /// too_many_viewers, invalid_queue_token, not_admitted, admission_expired, queue_not_open,
    /// no_queue, schedule_full, internal.
    pub error: &'a str,
    /// For a person.
    pub message: String,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized
            | ApiError::InvalidTicket(_)
            | ApiError::InvalidQueueToken(_) => StatusCode::UNAUTHORIZED,
            ApiError::AdminDisabled => StatusCode::FORBIDDEN,
            ApiError::RouteNotFound | ApiError::SaleNotFound | ApiError::OrderNotFound => {
                StatusCode::NOT_FOUND
            }
            ApiError::SoldOut(_)
            | ApiError::UserLimitReached(_)
            | ApiError::SaleNotOpen
            | ApiError::SaleArchived(_)
            | ApiError::StockBelowSold(_)
            | ApiError::IdempotencyConflict
            | ApiError::OrderState { .. }
            | ApiError::NotAdmitted { .. }
            | ApiError::AdmissionExpired
            | ApiError::QueueNotOpen { .. }
            | ApiError::NoQueue
            | ApiError::ScheduleFull(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable | ApiError::SaleInconsistent(_) | ApiError::TooManyViewers(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unauthorized => {
                response.insert_header(("WWW-Authenticate", "Bearer"));
            }
            ApiError::MethodNotAllowed(allow) => {
                response.insert_header(("Allow", *allow));
            }
            ApiError::RateLimited(refused) => {
                response.insert_header(("Retry-After", retry_after_secs(refused.retry_after)));
            }
            ApiError::SaleInconsistent(_) | ApiError::Unavailable => {
                response.insert_header(("Retry-After", "1"));
            }
            ApiError::TooManyViewers(_) => {
                response.insert_header(("Retry-After", "5"));
            }
            ApiError::NotAdmitted { retry_after, .. }
            | ApiError::QueueNotOpen { retry_after, .. } => {
                response.insert_header(("Retry-After", retry_after.to_string()));
            }
            _ => {}
        }
        response.json(ErrorBody {
            error: self.code(),
            message: self.to_string(),
        })
    }
}

/// Whole seconds for `Retry-After`, rounded up and at least 1: a client that waits that long
/// gets through (a refill due within the instant of the check would otherwise read 0).
pub fn retry_after_secs(wait: std::time::Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

impl From<Refused> for ApiError {
    fn from(refused: Refused) -> Self {
        ApiError::RateLimited(refused)
    }
}

impl From<WatchError> for ApiError {
    fn from(e: WatchError) -> Self {
        match e {
            WatchError::TooManyViewers(_) => ApiError::TooManyViewers(e.to_string()),
            WatchError::SaleNotFound => ApiError::SaleNotFound,
            WatchError::Unavailable => ApiError::Unavailable,
        }
    }
}

impl From<InvalidInput> for ApiError {
    fn from(e: InvalidInput) -> Self {
        ApiError::InvalidRequest(e.0)
    }
}

impl From<Unanswered> for ApiError {
    fn from(e: Unanswered) -> Self {
        match e {
            Unanswered::Unavailable => ApiError::Unavailable,
            Unanswered::Internal => ApiError::Internal,
        }
    }
}

impl<R: Into<ApiError>> From<OperationError<R>> for ApiError {
    fn from(e: OperationError<R>) -> Self {
        match e {
            OperationError::Refused(refusal) => refusal.into(),
            OperationError::Unanswered(e) => e.into(),
        }
    }
}

impl From<PurchaseRefusal> for ApiError {
    fn from(e: PurchaseRefusal) -> Self {
        match e {
            PurchaseRefusal::SaleNotFound => ApiError::SaleNotFound,
            PurchaseRefusal::SaleNotOpen => ApiError::SaleNotOpen,
            PurchaseRefusal::SaleArchived => ApiError::SaleArchived(e.to_string()),
            PurchaseRefusal::UserLimitReached => ApiError::UserLimitReached(e.to_string()),
            PurchaseRefusal::SoldOut { .. } => ApiError::SoldOut(e.to_string()),
            PurchaseRefusal::SaleInconsistent { .. } => ApiError::SaleInconsistent(e.to_string()),
            // Valid input the sale's own rule refuses, as a buyer at the limit is refused: a state
            // of the sale (409), not a malformed request (400), and one code for storefronts.
            PurchaseRefusal::QuantityAboveLimit { .. } => ApiError::UserLimitReached(e.to_string()),
            PurchaseRefusal::IdempotencyConflict => ApiError::IdempotencyConflict,
            PurchaseRefusal::NotAdmitted { admit_at } => ApiError::NotAdmitted {
                message: match admit_at {
                    Some(at) => format!("your place in line is admitted at {}", format_time(at)),
                    None => "admission is paused before your place in line".into(),
                },
                retry_after: until(admit_at, PAUSED_RETRY_SECS),
            },
            PurchaseRefusal::AdmissionExpired => ApiError::AdmissionExpired,
            PurchaseRefusal::QueueTokenRequired | PurchaseRefusal::EarlierLine => {
                ApiError::InvalidQueueToken(e.to_string())
            }
        }
    }
}

impl From<SaleRefusal> for ApiError {
    fn from(e: SaleRefusal) -> Self {
        match e {
            SaleRefusal::SaleNotFound => ApiError::SaleNotFound,
            SaleRefusal::SaleArchived => ApiError::SaleArchived(e.to_string()),
            SaleRefusal::StockBelowSold { .. } => ApiError::StockBelowSold(e.to_string()),
            SaleRefusal::NoQueue => ApiError::NoQueue,
            SaleRefusal::ScheduleFull => ApiError::ScheduleFull(e.to_string()),
        }
    }
}

impl From<QueueRefusal> for ApiError {
    fn from(e: QueueRefusal) -> Self {
        match e {
            QueueRefusal::SaleNotFound => ApiError::SaleNotFound,
            QueueRefusal::NoQueue => ApiError::NoQueue,
            QueueRefusal::QueueNotOpen { opens_at } => ApiError::QueueNotOpen {
                message: format!("the sale's line opens at {}", format_time(opens_at)),
                retry_after: until(Some(opens_at), PAUSED_RETRY_SECS),
            },
            QueueRefusal::SaleNotOpen => ApiError::SaleNotOpen,
            QueueRefusal::SoldOut => ApiError::SoldOut(e.to_string()),
            QueueRefusal::SaleArchived => ApiError::SaleArchived(e.to_string()),
        }
    }
}

impl From<QueueTokenError> for ApiError {
    fn from(e: QueueTokenError) -> Self {
        ApiError::InvalidQueueToken(e.to_string())
    }
}

/// Seconds a buyer waits while admission is paused before its place: then it asks again.
const PAUSED_RETRY_SECS: u64 = 5;

/// Whole seconds from now until `at` (ms), at least 1; `otherwise` when there is no `at`.
fn until(at: Option<i64>, otherwise: u64) -> u64 {
    at.map_or(otherwise, |at| {
        let ms = at - chrono::Utc::now().timestamp_millis();
        retry_after_secs(std::time::Duration::from_millis(ms.max(0) as u64))
    })
}

impl From<OrderRefusal> for ApiError {
    fn from(e: OrderRefusal) -> Self {
        let code = match e {
            OrderRefusal::OrderNotFound => return ApiError::OrderNotFound,
            OrderRefusal::SaleArchived => return ApiError::SaleArchived(e.to_string()),
            OrderRefusal::NotPayable => "not_payable",
            OrderRefusal::OrderCancelled => "order_cancelled",
            OrderRefusal::OrderExpired { .. } => "order_expired",
            OrderRefusal::PaymentConflict => "payment_conflict",
            OrderRefusal::OrderPaid => "order_paid",
        };
        ApiError::OrderState {
            code,
            message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn retry_after_rounds_up_and_never_says_zero() {
        assert_eq!(super::retry_after_secs(Duration::ZERO), 1);
        assert_eq!(super::retry_after_secs(Duration::from_millis(200)), 1);
        assert_eq!(super::retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(super::retry_after_secs(Duration::from_secs(3)), 3);
    }
}
