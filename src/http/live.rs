//! `GET /v1/sales/{sku}/live`: the sale as a Server-Sent Events stream (`live/`).

use actix_web::http::header::CACHE_CONTROL;
use actix_web::{HttpResponse, web};

use crate::domain::Sku;
use crate::http::AppState;
use crate::http::error::{ApiError, ErrorBody};

/// `GET /v1/sales/{sku}/live`: `text/event-stream`, starting with the sale as it stands.
#[utoipa::path(get, path = "/v1/sales/{sku}/live", tag = "sales",
    params(("sku" = String, Path, description = "the sale", pattern = "^[A-Za-z0-9_-]{1,64}$"),
           ("Last-Event-ID" = Option<String>, Header, description = "sent by a reconnecting EventSource; the stream starts with the current state whatever it holds")),
    responses(
        (status = 200, description = "text/event-stream: `retry: 2000`, then one `event: sale` (id: the read's ms on Redis's clock, data: the sale) at once and on every change, at most 10 a second but every state change, and a `: heartbeat` comment every 15 s", content_type = "text/event-stream", body = crate::live::frame::LiveEvent),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 404, description = "sale_not_found", body = ErrorBody),
        (status = 503, description = "too_many_viewers: this replica serves its most (FLASHSALE_LIVE_VIEWERS); unavailable (Retry-After)", body = ErrorBody),
    ))]
pub async fn live(
    state: web::Data<AppState>,
    sku: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let sku = Sku::parse(&sku)?;
    let viewer = state.live.watch(&sku).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((CACHE_CONTROL, "no-cache"))
        // nginx and the like would otherwise hold events back to fill a buffer.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(viewer.into_stream()))
}
