//! The purchase path, top to bottom: extract → domain types → one script call → answer.

use actix_web::{HttpRequest, HttpResponse, web};

use crate::auth::Admin;
use crate::confirm::Delivery;
use crate::domain::{IdempotencyKey, OrderId, Quantity, Sku, UserId};
use crate::error::ApiError;
use crate::inventory::{CancelError, Purchase, PurchaseError, StoreError};
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

    let (mut purchase, delivery) =
        purchase(&state, &sku, &user, quantity, idempotency_key.as_ref()).await?;
    let mut response = match delivery {
        _ if purchase.replayed => HttpResponse::Ok(),
        Delivery::Unconfirmed => HttpResponse::Created(),
        Delivery::Confirmed => {
            purchase.order.delivery = Some("confirmed");
            HttpResponse::Created()
        }
        Delivery::Pending => {
            purchase.order.delivery = Some("pending");
            HttpResponse::Accepted()
        }
    };
    Ok(response.json(purchase.order))
}

/// A purchase as both purchase routes make it: decided by Redis (on a sale rebuilt first if
/// Redis lost it), then, for a new order, confirmed with JetStream when so configured.
pub(super) async fn purchase(
    state: &AppState,
    sku: &Sku,
    user: &UserId,
    quantity: Quantity,
    idempotency_key: Option<&IdempotencyKey>,
) -> Result<(Purchase, Delivery), PurchaseError> {
    let purchase = state
        .recovery
        .on_sale(
            sku,
            || {
                state
                    .inventory
                    .purchase(sku, user, quantity, idempotency_key)
            },
            || Err(PurchaseError::SaleNotFound),
        )
        .await?;
    let delivery = if purchase.replayed {
        Delivery::Unconfirmed
    } else {
        state
            .confirmation
            .confirm(&purchase.order, idempotency_key)
            .await
    };
    Ok((purchase, delivery))
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
    let sku = state
        .recovery
        .sku_of(&order_id)
        .await
        .map_err(StoreError::from)?
        .ok_or(ApiError::OrderNotFound)?;
    let order = state
        .recovery
        .on_sale(
            &sku,
            || state.inventory.cancel(&sku, &order_id),
            || Err(CancelError::OrderNotFound),
        )
        .await?;
    // Stock is back: other replicas drop their sold-out mark.
    state.sale_changes.announce(&order.sku).await;
    Ok(HttpResponse::Ok().json(order))
}
