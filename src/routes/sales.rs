use actix_web::{HttpResponse, web};

use crate::auth::Admin;
use crate::domain::Sku;
use crate::error::ApiError;
use crate::sale::{SaleSettings, SaleSettingsRequest};
use crate::startup::AppState;

/// `PUT /v1/sales/{sku}` (admin): 201 when created, 200 when replaced; body = the sale.
pub async fn put_sale(
    _: Admin,
    state: web::Data<AppState>,
    sku: web::Path<String>,
    body: web::Json<SaleSettingsRequest>,
) -> Result<HttpResponse, ApiError> {
    let sku = Sku::parse(&sku)?;
    let settings = SaleSettings::parse(body.into_inner())?;
    let (sale, created) = state.recovery.put_sale(&sku, &settings).await?;
    // Stock or window may have changed: other replicas drop their sold-out mark.
    state.sale_changes.announce(sku.as_str()).await;
    let mut response = if created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    Ok(response.json(sale))
}

/// `GET /v1/sales/{sku}`: the sale with its live counters.
pub async fn get_sale(
    state: web::Data<AppState>,
    sku: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let sku = Sku::parse(&sku)?;
    let sale = state
        .recovery
        .on_sale(
            &sku,
            || async { state.inventory.sale(&sku).await.map(Some) },
            || Ok(None),
        )
        .await?;
    match sale {
        Some(sale) => Ok(HttpResponse::Ok().json(sale)),
        None => Err(ApiError::SaleNotFound),
    }
}
