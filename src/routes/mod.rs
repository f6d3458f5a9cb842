//! HTTP routes, one module per resource, and the extractor settings that turn malformed
//! requests into the contract's JSON errors.

pub mod health;
pub mod orders;
pub mod sales;
pub mod seed;

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::{HttpRequest, web};

use crate::error::ApiError;

/// Largest request body the API reads; larger ones are answered 413 unread.
pub const MAX_BODY_BYTES: usize = 4 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
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
    .route("/home", web::get().to(seed::home))
    .route("/kill", web::get().to(seed::kill))
    .route("/healthz", web::get().to(health::healthz))
    .route("/readyz", web::get().to(health::readyz))
    .route("/metrics", web::get().to(health::metrics))
    .route("/openapi.json", web::get().to(openapi))
    .service(
        web::resource("/v1/sales/{sku}")
            .route(web::put().to(sales::put_sale))
            .route(web::get().to(sales::get_sale)),
    )
    .service(
        web::resource("/v1/sales/{sku}/orders")
            .route(web::post().to(orders::create_order))
            .route(web::get().to(orders::list_buyer_orders)),
    )
    .route("/v1/orders/{order_id}", web::get().to(orders::get_order))
    .route(
        "/v1/orders/{order_id}/cancel",
        web::post().to(orders::cancel_order),
    )
    .route(
        "/v1/orders/{order_id}/pay",
        web::post().to(orders::pay_order),
    )
    .default_service(web::to(|| async {
        Err::<&str, _>(ApiError::RouteNotFound)
    }));
}

/// `GET /openapi.json`: the API's OpenAPI 3 document.
async fn openapi() -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .content_type("application/json")
        .body(crate::openapi::document())
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
