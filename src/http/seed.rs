//! The seed-compatible endpoints of the Flask app this service replaces: same paths, same
//! texts, so existing storefronts and load scripts keep working.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use crate::domain::{Quantity, UserId};
use crate::http::AppState;
use crate::http::error::retry_after_secs;
use crate::operations::Listing;
use crate::store::PurchaseError;

pub const ORDER_ACCEPTED: &str = "提交订单成功";
pub const SOLD_OUT: &str = "商品已售完";

#[utoipa::path(get, path = "/home", tag = "seed",
    responses((status = 200, description = "ok", body = String, content_type = "text/plain")))]
pub async fn home() -> HttpResponse {
    text(HttpResponse::Ok(), "ok")
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KillQuery {
    /// The buyer; absent = an anonymous buyer.
    #[param(pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]{1,128}$")]
    user_id: Option<String>,
}

/// Buys one unit of the default sale. Without `user_id` every call is an anonymous buyer, as
/// in the old app (the default sale has no per-user limit unless an admin sets one).
#[utoipa::path(get, path = "/kill", tag = "seed", params(KillQuery),
    responses((status = 200, description = "提交订单成功 or 商品已售完", body = String, content_type = "text/plain"),
              (status = 400, description = "a bad user_id", body = String, content_type = "text/plain"),
              (status = 401, description = "tickets are required", body = String, content_type = "text/plain"),
              (status = 409, description = "per-user limit, sale not open", body = String, content_type = "text/plain"),
              (status = 429, description = "rate limited (Retry-After)", body = String, content_type = "text/plain"),
              (status = 503, description = "unavailable", body = String, content_type = "text/plain")))]
pub async fn kill(
    state: web::Data<AppState>,
    request: HttpRequest,
    query: web::Query<KillQuery>,
) -> HttpResponse {
    // The anonymous buyer's orders go on no list: the old app kept none (its tally stays,
    // for a per-user limit an admin may set).
    let (user, listing) = match query.into_inner().user_id {
        Some(user) => (UserId::parse(user), Listing::Listed),
        None => (UserId::parse("anonymous".into()), Listing::Unlisted),
    };
    let user = match user {
        Ok(user) => user,
        Err(e) => return text(HttpResponse::BadRequest(), e.0),
    };
    // No ticket travels here: the old endpoint stays open only while tickets are optional.
    if state.access.tickets.required() {
        return text(HttpResponse::Unauthorized(), "需要购买凭证 (Buyer-Ticket)");
    }
    if let Err(refused) = state.rate_limits.check(&request, user.as_str()) {
        let mut response = HttpResponse::TooManyRequests();
        response.insert_header(("Retry-After", retry_after_secs(refused.retry_after)));
        return text(response, "请求过于频繁");
    }
    // Accepted is accepted: 201 and 202 (delivery pending) read the same here.
    let outcome = state
        .operations
        .purchase(&state.default_sku, &user, Quantity::ONE, None, listing)
        .await;
    match outcome {
        Ok(_) => text(HttpResponse::Ok(), ORDER_ACCEPTED),
        Err(PurchaseError::SoldOut { .. }) => text(HttpResponse::Ok(), SOLD_OUT),
        Err(PurchaseError::UserLimitReached) => text(HttpResponse::Conflict(), "超出限购数量"),
        Err(PurchaseError::SaleNotOpen | PurchaseError::SaleArchived) => {
            text(HttpResponse::Conflict(), "活动未开始或已结束")
        }
        Err(PurchaseError::Store(_) | PurchaseError::SaleInconsistent { .. }) => {
            text(HttpResponse::ServiceUnavailable(), "服务暂不可用")
        }
        Err(e) => text(HttpResponse::Conflict(), e.to_string()),
    }
}

/// A text answer; the fixed texts are `&'static str`, so the hot path copies nothing.
fn text(
    mut builder: actix_web::HttpResponseBuilder,
    body: impl actix_web::body::MessageBody + 'static,
) -> HttpResponse {
    builder.content_type("text/plain; charset=utf-8").body(body)
}
