use actix_web::{HttpResponse, web};

use crate::domain::Sku;
use crate::domain::sale::{SaleSettings, SaleSettingsRequest};
use crate::http::AppState;
use crate::http::auth::Admin;
use crate::http::error::{ApiError, ErrorBody};

/// `PUT /v1/sales/{sku}` (admin): 201 when created, 200 when replaced; body = the sale.
#[utoipa::path(put, path = "/v1/sales/{sku}", tag = "sales",
    params(("sku" = String, Path, description = "the sale", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    request_body = crate::domain::sale::SaleSettingsRequest,
    security(("admin" = [])),
    responses(
        (status = 201, description = "created", body = crate::domain::sale::Sale),
        (status = 200, description = "replaced", body = crate::domain::sale::Sale),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden: no admin token configured", body = ErrorBody),
        (status = 409, description = "stock_below_sold", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
        (status = 415, description = "unsupported_media_type", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
pub async fn put_sale(
    _: Admin,
    state: web::Data<AppState>,
    sku: web::Path<String>,
    body: web::Json<SaleSettingsRequest>,
) -> Result<HttpResponse, ApiError> {
    let sku = Sku::parse(&sku)?;
    let settings = SaleSettings::parse(body.into_inner())?;
    let (sale, created) = state.operations.put_sale(&sku, &settings).await?;
    let mut response = if created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    Ok(response.json(sale))
}

/// `GET /v1/sales/{sku}`: the sale with its live counters.
#[utoipa::path(get, path = "/v1/sales/{sku}", tag = "sales",
    params(("sku" = String, Path, description = "the sale", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    responses(
        (status = 200, description = "the sale with its live counters", body = crate::domain::sale::Sale),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 404, description = "sale_not_found", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
pub async fn get_sale(
    state: web::Data<AppState>,
    sku: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let sku = Sku::parse(&sku)?;
    let sale = state.operations.sale(&sku).await?;
    match sale {
        Some(sale) => Ok(HttpResponse::Ok().json(sale)),
        None => Err(ApiError::SaleNotFound),
    }
}
