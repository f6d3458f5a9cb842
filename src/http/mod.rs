//! HTTP routes, one module per resource, and the extractor settings that turn malformed
//! requests into the contract's JSON errors.

pub mod auth;
pub mod bodies;
pub mod error;
pub mod health;
pub mod live;
pub mod openapi;
pub mod orders;
pub mod page;
pub mod queue;
pub mod queue_tokens;
pub mod rate_limit;
pub mod sales;
pub mod seed;
pub mod signing;
pub mod tickets;

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::{HttpRequest, web};

use std::sync::Arc;

use crate::domain::Sku;
use crate::events::relay_status::RelayStatus;
use crate::live::Live;
use crate::operations::Operations;
use error::ApiError;
use rate_limit::RateLimits;

/// What every request handler shares.
pub struct AppState {
    /// What each route does (`operations.rs`).
    pub operations: Arc<Operations>,
    /// The live streams' viewers and feeds (`live/`).
    pub live: Arc<Live>,
    /// Asked by `/readyz` whether Redis answers.
    pub relay_status: Arc<RelayStatus>,
    /// Renders `/metrics`; `None` when metrics are off.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    pub nats: async_nats::Client,
    pub default_sku: Sku,
    /// Per-buyer and per-client purchase limits (FLASHSALE_BUYER_RATE, _CLIENT_RATE).
    pub rate_limits: Arc<RateLimits>,
    /// The callers' credentials: tokens and buyer tickets.
    pub access: auth::Access,
}

/// Largest request body the API reads; larger ones are answered 413 unread.
pub const MAX_BODY_BYTES: usize = 4 * 1024;

/// Cross-origin access for storefront pages on `origins` (FLASHSALE_CORS_ORIGINS), to the
/// routes a buyer's page calls: the live stream, the sale, purchases and order reads. Exact
/// origins only; a request from any other origin is served without CORS headers, so a
/// browser keeps its answer from the page.
fn cors(origins: &[String]) -> actix_cors::Cors {
    use actix_web::http::header;
    origins
        .iter()
        .fold(actix_cors::Cors::default(), |cors, origin| {
            cors.allowed_origin(origin)
        })
        .allowed_methods(["GET", "POST"])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::HeaderName::from_static("idempotency-key"),
            header::HeaderName::from_static("buyer-ticket"),
            header::HeaderName::from_static("queue-token"),
            header::HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([header::RETRY_AFTER])
        .max_age(600)
        .block_on_origin_mismatch(false)
}

/// The routes; `cors_origins`: the storefront origins allowed to call the buyer's routes.
pub fn configure(cfg: &mut web::ServiceConfig, cors_origins: &[String]) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(MAX_BODY_BYTES)
            .error_handler(json_error),
    )
    .app_data(
        web::PathConfig::default()
            .error_handler(|e: PathError, _| ApiError::InvalidRequest(e.to_string()).into()),
    )
    .app_data(
        web::QueryConfig::default().error_handler(|e: QueryPayloadError, _| {
            ApiError::InvalidRequest(e.to_string()).into()
        }),
    )
    // The purchase routes first: actix tries the routes in this order, and each pattern
    // with a {segment} is a regex match.
    .service(
        resource("/v1/sales/{sku}/orders", "GET, POST")
            .wrap(cors(cors_origins))
            .route(web::post().to(orders::create_order))
            .route(web::get().to(orders::list_buyer_orders)),
    )
    .service(
        resource("/v1/sales/{sku}/queue", "POST")
            .wrap(cors(cors_origins))
            .route(web::post().to(queue::join)),
    )
    .service(get("/kill").route(web::get().to(seed::kill)))
    .service(get("/home").route(web::get().to(seed::home)))
    .service(get("/healthz").route(web::get().to(health::healthz)))
    .service(get("/readyz").route(web::get().to(health::readyz)))
    .service(get("/metrics").route(web::get().to(health::metrics)))
    .service(get("/openapi.json").route(web::get().to(openapi)))
    .service(get("/sales/{sku}").route(web::get().to(page::sale_page)))
    .service(get("/static/{file}").route(web::get().to(page::asset)))
    .service(
        resource("/v1/sales/{sku}", "GET, PUT")
            .wrap(cors(cors_origins))
            .route(web::put().to(sales::put_sale))
            .route(web::get().to(sales::get_sale)),
    )
    .service(get("/v1/sales").route(web::get().to(sales::list_sales)))
    .service(resource("/v1/sales/{sku}/end", "POST").route(web::post().to(sales::end_sale)))
    .service(resource("/v1/sales/{sku}/reopen", "POST").route(web::post().to(sales::reopen_sale)))
    .service(resource("/v1/sales/{sku}/queue/pause", "POST").route(web::post().to(queue::pause)))
    .service(resource("/v1/sales/{sku}/queue/resume", "POST").route(web::post().to(queue::resume)))
    .service(
        get("/v1/sales/{sku}/live")
            .wrap(cors(cors_origins))
            .route(web::get().to(live::live)),
    )
    .service(
        get("/v1/orders/{order_id}")
            .wrap(cors(cors_origins))
            .route(web::get().to(orders::get_order)),
    )
    .service(
        resource("/v1/orders/{order_id}/cancel", "POST")
            .route(web::post().to(orders::cancel_order)),
    )
    .service(resource("/v1/orders/{order_id}/pay", "POST").route(web::post().to(orders::pay_order)))
    .default_service(web::to(|| async {
        Err::<&str, _>(ApiError::RouteNotFound)
    }));
}

/// A route that answers other methods than `allow` with 405 `method_not_allowed`.
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        Err::<&str, _>(ApiError::MethodNotAllowed(allow))
    }))
}

/// A route that takes GET only.
fn get(path: &str) -> actix_web::Resource {
    resource(path, "GET")
}

/// `GET /openapi.json`: the API's OpenAPI 3 document.
async fn openapi() -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .content_type("application/json")
        .body(crate::http::openapi::document())
}

fn json_error(e: JsonPayloadError, _: &HttpRequest) -> actix_web::Error {
    match e {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            ApiError::PayloadTooLarge
        }
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType,
        JsonPayloadError::Deserialize(e) => {
            ApiError::InvalidRequest(format!("invalid JSON body: {e}"))
        }
        other => ApiError::InvalidRequest(format!("unreadable body: {other}")),
    }
    .into()
}
