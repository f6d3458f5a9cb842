//! The waiting room's routes: a buyer joins a sale's line; the admin pauses and resumes its
//! admission (a new rate is a PUT of the sale).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use crate::domain::Sku;
use crate::domain::queue::Admission;
use crate::domain::sale::format_time;
use crate::http::AppState;
use crate::http::auth::Admin;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::orders::buyer;
use crate::operations::{JoinAnswer, QueueSwitch};

/// Body of `POST /v1/sales/{sku}/queue`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The buyer, as for a purchase: required unless a Buyer-Ticket names the buyer.
    #[schema(value_type = String, required = true, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,128}$")]
    pub user_id: Option<String>,
}

/// A buyer's place in a sale's line.
#[derive(Serialize, utoipa::ToSchema)]
pub struct QueuePlace {
    /// The place (1 = first); null when the buyer joined before the sale's start: places of
    /// early joiners are drawn at the start, and the same call then answers it.
    position: Option<u64>,
    /// When the place is admitted as the schedule stands (it moves with a pause or a new
    /// rate); null while the place is not drawn yet or admission is paused before it.
    admit_at: Option<String>,
    /// When its admission lapses; null likewise.
    admission_ends_at: Option<String>,
    /// Whether the place may buy now.
    admitted: bool,
    /// Places admitted so far (1 to this).
    admitted_through: u64,
    /// When the places of early joiners are drawn (the start of admission).
    draw_at: String,
    /// Send it as `Queue-Token` with the purchase; null until the place is drawn.
    token: Option<String>,
}

/// `POST /v1/sales/{sku}/queue`: joins the sale's line. 201 with a new place, 200 with the
/// place the buyer had, 202 before the start (the place is drawn at the start).
#[utoipa::path(post, path = "/v1/sales/{sku}/queue", tag = "queue",
    params(("sku" = String, Path, description = "the sale", pattern = "^[A-Za-z0-9_-]{1,64}$"),
           ("Buyer-Ticket" = Option<String>, Header, description = "v1.<user>.<sku>.<expires>.<mac>, signed by the storefront")),
    request_body = JoinRequest,
    security((), ("storefront" = [])),
    responses(
        (status = 201, description = "a new place", body = QueuePlace),
        (status = 200, description = "the buyer's place already", body = QueuePlace),
        (status = 202, description = "joined before the start: the place is drawn at the start (position null)", body = QueuePlace),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthorized (storefront token), invalid_ticket", body = ErrorBody),
        (status = 404, description = "sale_not_found", body = ErrorBody),
        (status = 409, description = "queue_not_open (Retry-After), sale_not_open, sold_out, sale_archived, no_queue", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
        (status = 415, description = "unsupported_media_type", body = ErrorBody),
        (status = 429, description = "rate_limited (Retry-After)", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
pub async fn join(
    state: web::Data<AppState>,
    sku: web::Path<String>,
    request: HttpRequest,
    body: web::Json<JoinRequest>,
) -> Result<HttpResponse, ApiError> {
    let sku = Sku::parse(&sku)?;
    let user = buyer(&request, &state, &sku, body.into_inner().user_id)?;
    let joined = state.operations.join(&sku, &user).await?;
    let token = joined
        .place
        .map(|place| state.access.queue_tokens.sign(&user, &sku, place))
        .transpose()
        .map_err(|e| {
            log::error!("sale {sku}: a queue without a key to sign its tokens: {e}");
            ApiError::Internal
        })?;
    let mut response = match &joined {
        JoinAnswer { place: None, .. } => HttpResponse::Accepted(),
        JoinAnswer { new: true, .. } => HttpResponse::Created(),
        _ => HttpResponse::Ok(),
    };
    Ok(response.json(place_view(&joined, token)))
}

fn place_view(joined: &JoinAnswer, token: Option<String>) -> QueuePlace {
    let (admit_at, ends_at, admitted) = match joined.admission {
        Some(Admission::Waiting { admit_at }) => (admit_at, None, false),
        Some(Admission::Admitted { until, admit_at }) => (Some(admit_at), Some(until), true),
        Some(Admission::Lapsed { admit_at, until }) => (Some(admit_at), Some(until), false),
        None => (None, None, false),
    };
    QueuePlace {
        position: joined.place.map(|p| p.place),
        admit_at: admit_at.map(format_time),
        admission_ends_at: ends_at.map(format_time),
        admitted,
        admitted_through: joined.admitted,
        draw_at: format_time(joined.starts_at),
        token,
    }
}

/// `POST /v1/sales/{sku}/queue/pause` (admin): nobody more is admitted until a resume; the
/// line and the admissions given stay. Recorded in JetStream like a PUT.
#[utoipa::path(post, path = "/v1/sales/{sku}/queue/pause", tag = "queue",
    params(("sku" = String, Path, description = "the sale", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    security(("admin" = [])),
    responses(
        (status = 200, description = "the sale, its queue paused", body = crate::domain::sale::Sale),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden: no admin token configured", body = ErrorBody),
        (status = 404, description = "sale_not_found", body = ErrorBody),
        (status = 409, description = "no_queue, sale_archived, schedule_full", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
pub async fn pause(
    _: Admin,
    state: web::Data<AppState>,
    sku: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let sku = Sku::parse(&sku)?;
    Ok(HttpResponse::Ok().json(
        state
            .operations
            .switch_queue(&sku, QueueSwitch::Pause)
            .await?,
    ))
}

/// `POST /v1/sales/{sku}/queue/resume` (admin): admission goes on from the place it stood at,
/// at the sale's `admit_per_sec`.
#[utoipa::path(post, path = "/v1/sales/{sku}/queue/resume", tag = "queue",
    params(("sku" = String, Path, description = "the sale", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    security(("admin" = [])),
    responses(
        (status = 200, description = "the sale, its queue admitting", body = crate::domain::sale::Sale),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden: no admin token configured", body = ErrorBody),
        (status = 404, description = "sale_not_found", body = ErrorBody),
        (status = 409, description = "no_queue, sale_archived, schedule_full", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
pub async fn resume(
    _: Admin,
    state: web::Data<AppState>,
    sku: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let sku = Sku::parse(&sku)?;
    Ok(HttpResponse::Ok().json(
        state
            .operations
            .switch_queue(&sku, QueueSwitch::Resume)
            .await?,
    ))
}
