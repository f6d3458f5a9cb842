//! The order routes: extract → domain types → one operation (`operations.rs`) → answer.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use crate::domain::order::{Delivered, OrderView};
use crate::domain::{IdempotencyKey, OrderId, PaymentRef, Quantity, Sku, UserId};
use crate::events::confirm::Delivery;
use crate::http::AppState;
use crate::http::auth::{Admin, Caller, caller};
use crate::http::bodies::{OrderRequest, PaymentRequest};
use crate::http::error::{ApiError, ErrorBody};
#[cfg(doc)]
use crate::operations::LISTED_ORDERS;
use crate::operations::Listing;

/// `POST /v1/sales/{sku}/orders`: 201 with a new order, 200 with the order an earlier request
/// with the same `Idempotency-Key` created.
#[utoipa::path(post, path = "/v1/sales/{sku}/orders", tag = "orders",
    params(("sku" = String, Path, description = "the sale", pattern = "^[A-Za-z0-9_-]{1,64}$"),
           ("Idempotency-Key" = Option<String>, Header, description = "a retry with the same key returns the same order (200)", pattern = "^[!-~]{1,128}$"),
           ("Buyer-Ticket" = Option<String>, Header, description = "v1.<user>.<sku>.<expires>.<mac>, signed by the storefront"),
           ("Queue-Token" = Option<String>, Header, description = "a sale with a waiting room: the token its join answered (q1.<user>.<sku>.<line>.<place>.<mac>)")),
    request_body = crate::http::bodies::OrderRequest,
    security((), ("storefront" = [])),
    responses(
        (status = 201, description = "a new order", body = crate::domain::order::Order),
        (status = 200, description = "the order an earlier request with this Idempotency-Key created", body = crate::domain::order::Order),
        (status = 202, description = "accepted; JetStream (or the replicas asked for) had not acknowledged it in time: delivery pending", body = crate::domain::order::Order),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthorized (storefront token), invalid_ticket, invalid_queue_token (a sale with a waiting room: no token, a forged one, another buyer's)", body = ErrorBody),
        (status = 404, description = "sale_not_found", body = ErrorBody),
        (status = 409, description = "sold_out, user_limit_reached, sale_not_open, sale_archived, idempotency_conflict, not_admitted (Retry-After), admission_expired", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
        (status = 415, description = "unsupported_media_type", body = ErrorBody),
        (status = 429, description = "rate_limited (Retry-After)", body = ErrorBody),
        (status = 503, description = "unavailable: retry with the same Idempotency-Key; sale_inconsistent: the sale's copy sells past its stock until mended (Retry-After)", body = ErrorBody),
    ))]
pub async fn create_order(
    state: web::Data<AppState>,
    sku: web::Path<String>,
    request: HttpRequest,
    body: web::Json<OrderRequest>,
) -> Result<HttpResponse, ApiError> {
    let sku = Sku::parse(&sku)?;
    let OrderRequest { user_id, quantity } = body.into_inner();
    let user = buyer(&request, &state, &sku, user_id)?;
    let quantity = quantity.map_or(Ok(Quantity::ONE), Quantity::parse)?;
    let idempotency_key = request
        .headers()
        .get("Idempotency-Key")
        .map(|value| IdempotencyKey::parse(value.as_bytes()))
        .transpose()?;
    // Its signature is checked here: a forged or another buyer's token costs Redis nothing.
    let place = request
        .headers()
        .get("Queue-Token")
        .map(|token| {
            state
                .access
                .queue_tokens
                .verify(token.as_bytes(), &user, &sku)
        })
        .transpose()
        .inspect_err(|_| state.operations.refused_queue_token())?;

    let (mut purchase, delivery) = state
        .operations
        .purchase(
            &sku,
            &user,
            quantity,
            idempotency_key.as_ref(),
            Listing::Listed,
            place,
        )
        .await?;
    let mut response = match delivery {
        _ if purchase.replayed => {
            purchase.order.delivery = delivery.shown();
            HttpResponse::Ok()
        }
        // `redis` mode with FLASHSALE_REDIS_WAIT_REPLICAS: the replicas asked for hold it.
        Delivery::Unconfirmed if purchase.replicated => HttpResponse::Created(),
        Delivery::Unconfirmed => {
            purchase.order.delivery = Some(Delivered::Pending);
            HttpResponse::Accepted()
        }
        Delivery::Confirmed => {
            purchase.order.delivery = delivery.shown();
            HttpResponse::Created()
        }
        Delivery::Pending => {
            purchase.order.delivery = delivery.shown();
            HttpResponse::Accepted()
        }
    };
    Ok(response.json(purchase.order))
}

/// The buyer of a purchase or a join, by the purchase's rules: a storefront token when
/// FLASHSALE_API_TOKENS asks for one, the buyer from its ticket or the body's `user_id`, and
/// within the rate limits (checked before any Redis work: a bot over its limit costs Redis
/// nothing).
pub(super) fn buyer(
    request: &HttpRequest,
    state: &AppState,
    sku: &Sku,
    user_id: Option<String>,
) -> Result<UserId, ApiError> {
    if !state.access.api_tokens.is_empty() {
        caller(request, state)?;
    }
    let ticket = request.headers().get("Buyer-Ticket").map(|v| v.as_bytes());
    let now_secs = chrono::Utc::now().timestamp();
    let user = match state
        .access
        .tickets
        .buyer(ticket, user_id.as_deref(), sku, now_secs)?
    {
        Some(user) => user,
        None => UserId::parse(user_id.ok_or_else(|| {
            ApiError::InvalidRequest("user_id is required (or a Buyer-Ticket)".into())
        })?)?,
    };
    state.rate_limits.check(request, user.as_str())?;
    Ok(user)
}

/// `POST /v1/orders/{order_id}/cancel` (admin): 200 with the cancelled order; the stock comes
/// back exactly once however often it is called. A paid order is 409 `order_paid`. In
/// `FLASHSALE_CONFIRM=jetstream` the answer waits (bounded) for JetStream to hold the event.
#[utoipa::path(post, path = "/v1/orders/{order_id}/cancel", tag = "orders",
    params(("order_id" = String, Path, description = "the order", pattern = "^[0-9a-f]{16}-[0-9]+-[0-9]+$", max_length = 64)),
    security(("admin" = [])),
    responses(
        (status = 200, description = "the cancelled order", body = crate::domain::order::Order),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "forbidden: no admin token configured", body = ErrorBody),
        (status = 404, description = "order_not_found", body = ErrorBody),
        (status = 409, description = "order_paid, order_expired, sale_archived", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
pub async fn cancel_order(
    _: Admin,
    state: web::Data<AppState>,
    order_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let order = state.operations.cancel(&parse_order_id(&order_id)?).await?;
    Ok(HttpResponse::Ok().json(order))
}

/// `POST /v1/orders/{order_id}/pay` (bearer token): `pending_payment` → `paid`, decided by
/// Redis's clock against the order's pay_by. The same `payment_ref` again answers 200 with
/// the same order. In `FLASHSALE_CONFIRM=jetstream` the answer waits for JetStream to hold
/// the paid event (`delivered`), so a payment survives Redis losing the sale.
#[utoipa::path(post, path = "/v1/orders/{order_id}/pay", tag = "orders",
    params(("order_id" = String, Path, description = "the order", pattern = "^[0-9a-f]{16}-[0-9]+-[0-9]+$", max_length = 64)),
    request_body = crate::http::bodies::PaymentRequest,
    security(("storefront" = []), ("admin" = [])),
    responses(
        (status = 200, description = "the paid order", body = crate::domain::order::OrderView),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 404, description = "order_not_found", body = ErrorBody),
        (status = 409, description = "order_expired, order_cancelled, payment_conflict, not_payable, sale_archived", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
        (status = 415, description = "unsupported_media_type", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
pub async fn pay_order(
    _: Caller,
    state: web::Data<AppState>,
    order_id: web::Path<String>,
    body: web::Json<PaymentRequest>,
) -> Result<HttpResponse, ApiError> {
    let payment_ref = PaymentRef::parse(body.into_inner().payment_ref)?;
    let order = state
        .operations
        .pay(&parse_order_id(&order_id)?, &payment_ref)
        .await?;
    Ok(HttpResponse::Ok().json(order))
}

/// The order id in a path: one this service cannot have issued names no order.
fn parse_order_id(raw: &str) -> Result<OrderId, ApiError> {
    OrderId::parse(raw).map_err(|_| ApiError::OrderNotFound)
}

/// `GET /v1/orders/{order_id}` (bearer token): the order as it stands.
#[utoipa::path(get, path = "/v1/orders/{order_id}", tag = "orders",
    params(("order_id" = String, Path, description = "the order", pattern = "^[0-9a-f]{16}-[0-9]+-[0-9]+$", max_length = 64)),
    security(("storefront" = []), ("admin" = [])),
    responses(
        (status = 200, description = "the order", body = crate::domain::order::OrderView),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 404, description = "order_not_found", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
pub async fn get_order(
    _: Caller,
    state: web::Data<AppState>,
    order_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let order = state
        .operations
        .order(&parse_order_id(&order_id)?)
        .await?
        .ok_or(ApiError::OrderNotFound)?;
    Ok(HttpResponse::Ok().json(order))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BuyerQuery {
    /// The buyer.
    #[param(pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,128}$")]
    user_id: String,
}

#[derive(Serialize, utoipa::ToSchema)]
struct BuyerOrders<'a> {
    sku: &'a str,
    user_id: &'a str,
    /// Newest first, at most [`LISTED_ORDERS`].
    orders: Vec<OrderView>,
}

/// `GET /v1/sales/{sku}/orders?user_id=…` (bearer token): that buyer's orders in the sale,
/// newest first.
#[utoipa::path(get, path = "/v1/sales/{sku}/orders", tag = "orders",
    params(("sku" = String, Path, description = "the sale", pattern = "^[A-Za-z0-9_-]{1,64}$"), BuyerQuery),
    security(("storefront" = []), ("admin" = [])),
    responses(
        (status = 200, description = "the buyer's orders in the sale, newest first", body = BuyerOrders),
        (status = 400, description = "invalid_request", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 404, description = "sale_not_found", body = ErrorBody),
        (status = 503, description = "unavailable", body = ErrorBody),
    ))]
pub async fn list_buyer_orders(
    _: Caller,
    state: web::Data<AppState>,
    sku: web::Path<String>,
    query: web::Query<BuyerQuery>,
) -> Result<HttpResponse, ApiError> {
    let sku = Sku::parse(&sku)?;
    let user = UserId::parse(query.into_inner().user_id)?;
    let orders = state
        .operations
        .buyer_orders(&sku, &user)
        .await?
        .ok_or(ApiError::SaleNotFound)?;
    Ok(HttpResponse::Ok().json(BuyerOrders {
        sku: sku.as_str(),
        user_id: user.as_str(),
        orders,
    }))
}
