//! The purchase path, top to bottom: extract → domain types → one script call → answer.

use actix_web::{HttpRequest, HttpResponse, web};

use crate::auth::Admin;
use crate::domain::{IdempotencyKey, OrderId, Quantity, Sku, UserId};
use crate::error::ApiError;
use crate::order::OrderRequest;
use crate::startup::AppState;

/// `POST /v1/sales/{sku}/orders`: 201 with a new order, 200 with the order an earlier request
/// with the same `Idempotency-Key` created.
pub async fn create_order(
    state: web::Data<AppState>,
    sku: web::Path<String>,
    request: HttpRequest,
    body: web::Json<OrderRequest>,
) -> Result<HttpResponse, ApiError> {
    let sku = Sku::parse(&sku)?;
    let OrderRequest { user_id, quantity } = body.into_inner();
    let user = UserId::parse(user_id)?;
    let quantity = quantity.map_or(Ok(Quantity::ONE), Quantity::parse)?;
    let idempotency_key = request
        .headers()
        .get("Idempotency-Key")
        .map(|value| IdempotencyKey::parse(value.as_bytes()))
        .transpose()?;

    let purchase = state
        .inventory
        .purchase(&sku, &user, quantity, idempotency_key.as_ref())
        .await?;
    let mut response = if purchase.replayed {
        HttpResponse::Ok()
    } else {
        HttpResponse::Created()
    };
    Ok(response.json(purchase.order))
}

/// `POST /v1/orders/{order_id}/cancel` (admin): 200 with the cancelled order; the stock comes
/// back exactly once however often it is called.
pub async fn cancel_order(
    _: Admin,
    state: web::Data<AppState>,
    order_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    // An id this service cannot have issued names no order.
    let order_id = OrderId::parse(&order_id).map_err(|_| ApiError::OrderNotFound)?;
    let order = state.inventory.cancel(&order_id).await?;
    // Stock is back: other replicas drop their sold-out mark.
    state.sale_changes.announce(&order.sku).await;
    Ok(HttpResponse::Ok().json(order))
}
