use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use crate::domain::Sku;
use crate::domain::sale::{PutOutcome, Sale};
use crate::http::AppState;
use crate::http::auth::{Admin, is_admin};
use crate::http::bodies::SaleSettingsRequest;
use crate::http::error::{ApiError, ErrorBody};

/// `PUT /v1/sales/{sku}` (admin): 201 when created, 200 when replaced; body = the sale.
#[utoipa::path(put, path = "/v1/sales/{sku}", tag = "sales",
    params(("sku" = String, Path, description = "the sale", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    request_body = crate::http::bodies::SaleSettingsRequest,
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
    let settings = body
        .into_inner()
        .parse(chrono::Utc::now().timestamp_millis())?;
    if settings.queue.is_some() && !state.access.queue_tokens.enabled() {
        return Err(ApiError::InvalidRequest(
            "a queue needs FLASHSALE_QUEUE_KEY, the key its tokens are signed with (the same on every replica)".into(),
        ));
    }
    let (sale, put) = state.operations.put_sale(&sku, &settings).await?;
    let mut response = match put {
        PutOutcome::Created => HttpResponse::Created(),
        PutOutcome::Replaced => HttpResponse::Ok(),
    };
    Ok(response.json(sale))
}

/// `GET /v1/sales/{sku}`: the sale with its live counters; with the admin token, its orders
/// by status too.
#[utoipa::path(get, path = "/v1/sales/{sku}", tag = "sales",
    params(("sku" = String, Path, description = "the sale", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    security((), ("admin" = [])),
    responses(
        (status = 200, description = "the sale with its live counters (`orders`: with the admin token only)", body = crate::domain::sale::Sale),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 404, description = "sale_not_found", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
pub async fn get_sale(
    state: web::Data<AppState>,
    sku: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let sku = Sku::parse(&sku)?;
    let mut sale = state
        .operations
        .sale(&sku)
        .await?
        .ok_or(ApiError::SaleNotFound)?;
    if !is_admin(&request) {
        sale.orders = None;
    }
    Ok(HttpResponse::Ok().json(sale))
}

/// The largest page of `GET /v1/sales`, and the page when `limit` is left out.
pub const MAX_PAGE: usize = 200;
pub const DEFAULT_PAGE: usize = 50;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SalePage {
    /// `next_cursor` of the previous page; absent = the first page.
    #[param(pattern = "^[0-9a-f]{16}$")]
    cursor: Option<String>,
    /// Sales per page, 1 to 200; absent = 50.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<usize>,
}

/// One page of `GET /v1/sales`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SaleList {
    /// In the order of their sku digest (stable, not by creation), each with `orders`.
    sales: Vec<Sale>,
    /// Pass as `cursor` for the next page; null on the last.
    next_cursor: Option<String>,
}

/// `GET /v1/sales` (admin): every sale, paged, read from the definitions in JetStream (a
/// sale Redis lost is listed, and rebuilt).
#[utoipa::path(get, path = "/v1/sales", tag = "sales",
    params(SalePage),
    security(("admin" = [])),
    responses(
        (status = 200, description = "a page of sales", body = SaleList),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden: no admin token configured", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
pub async fn list_sales(
    _: Admin,
    state: web::Data<AppState>,
    page: web::Query<SalePage>,
) -> Result<HttpResponse, ApiError> {
    let SalePage { cursor, limit } = page.into_inner();
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::InvalidRequest(format!(
            "limit must be 1 to {MAX_PAGE}"
        )));
    }
    if let Some(cursor) = &cursor
        && !(cursor.len() == 16
            && cursor
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
    {
        return Err(ApiError::InvalidRequest(
            "cursor must be a next_cursor from an earlier page".into(),
        ));
    }
    let (sales, next_cursor) = state.operations.sales(cursor.as_deref(), limit).await?;
    Ok(HttpResponse::Ok().json(SaleList { sales, next_cursor }))
}

/// `POST /v1/sales/{sku}/end` (admin): closes the sale now, whatever its window says, until
/// reopened; recorded in JetStream. Ending an ended sale changes nothing.
#[utoipa::path(post, path = "/v1/sales/{sku}/end", tag = "sales",
    params(("sku" = String, Path, description = "the sale", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    security(("admin" = [])),
    responses(
        (status = 200, description = "the sale, closed, with `ended_at`", body = crate::domain::sale::Sale),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden: no admin token configured", body = ErrorBody),
        (status = 404, description = "sale_not_found", body = ErrorBody),
        (status = 409, description = "sale_archived: a PUT starts the sku anew", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
pub async fn end_sale(
    _: Admin,
    state: web::Data<AppState>,
    sku: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let sku = Sku::parse(&sku)?;
    Ok(HttpResponse::Ok().json(state.operations.end_sale(&sku).await?))
}

/// `POST /v1/sales/{sku}/reopen` (admin): undoes an early end; the sale runs by its window
/// and stock again. Reopening a sale that was not ended changes nothing.
#[utoipa::path(post, path = "/v1/sales/{sku}/reopen", tag = "sales",
    params(("sku" = String, Path, description = "the sale", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    security(("admin" = [])),
    responses(
        (status = 200, description = "the sale, by its window and stock", body = crate::domain::sale::Sale),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden: no admin token configured", body = ErrorBody),
        (status = 404, description = "sale_not_found", body = ErrorBody),
        (status = 409, description = "sale_archived: a PUT starts the sku anew", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
pub async fn reopen_sale(
    _: Admin,
    state: web::Data<AppState>,
    sku: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let sku = Sku::parse(&sku)?;
    Ok(HttpResponse::Ok().json(state.operations.reopen_sale(&sku).await?))
}
