//! The seed-compatible endpoints of the Flask app this service replaces: same paths, same
//! texts, so existing storefronts and load scripts keep working.

use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use serde::Deserialize;

use crate::domain::refusal::PurchaseRefusal;
use crate::domain::{Quantity, UserId};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::tickets::TicketError;
use crate::operations::Listing;
use crate::operations::OperationError;

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
    match buy_one(&state, &request, query.into_inner()).await {
        Ok(Kill::Accepted) => text(HttpResponse::Ok(), ORDER_ACCEPTED),
        Ok(Kill::SoldOut) => text(HttpResponse::Ok(), SOLD_OUT),
        Err(e) => legacy_answer(&e),
    }
}

/// What `/kill` answers 200 for.
enum Kill {
    Accepted,
    /// The old app's "商品已售完" is a 200, and what most of a stampede gets: said without
    /// making an error of it.
    SoldOut,
}

/// One unit of the default sale for the query's buyer, refused as any purchase is.
async fn buy_one(
    state: &AppState,
    request: &HttpRequest,
    query: KillQuery,
) -> Result<Kill, ApiError> {
    // The anonymous buyer's orders go on no list: the old app kept none (its tally stays,
    // for a per-user limit an admin may set).
    let (user, listing) = match query.user_id {
        Some(user) => (UserId::parse(user)?, Listing::Listed),
        None => (UserId::parse("anonymous".into())?, Listing::Unlisted),
    };
    // No ticket travels here: the old endpoint stays open only while tickets are optional.
    if state.access.tickets.required() {
        return Err(TicketError::Missing.into());
    }
    state.rate_limits.check(request, user.as_str())?;
    // Accepted is accepted: 201 and 202 (delivery pending) read the same here.
    let bought = state
        .operations
        .purchase(
            &state.default_sku,
            &user,
            Quantity::ONE,
            None,
            listing,
            None,
        )
        .await;
    match bought {
        Ok(_) => Ok(Kill::Accepted),
        Err(OperationError::Refused(PurchaseRefusal::SoldOut { .. })) => Ok(Kill::SoldOut),
        Err(e) => Err(e.into()),
    }
}

/// An error as the old app said it: the one mapping's status and headers (`error.rs`), the
/// old texts, and "sold out" as a 200, as it always was.
fn legacy_answer(e: &ApiError) -> HttpResponse {
    let said = match e {
        ApiError::UserLimitReached(_) => "超出限购数量",
        ApiError::SaleNotOpen | ApiError::SaleArchived(_) => "活动未开始或已结束",
        ApiError::Unavailable | ApiError::SaleInconsistent(_) | ApiError::Internal => {
            "服务暂不可用"
        }
        ApiError::RateLimited(_) => "请求过于频繁",
        ApiError::InvalidTicket(_) => "需要购买凭证 (Buyer-Ticket)",
        other => return plain(other.error_response(), other.to_string()),
    };
    plain(e.error_response(), said.to_owned())
}

/// `answer`'s status and headers with `said` as its text.
fn plain(answer: HttpResponse, said: String) -> HttpResponse {
    let mut answer = answer.set_body(said).map_into_boxed_body();
    answer.headers_mut().insert(
        actix_web::http::header::CONTENT_TYPE,
        actix_web::http::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    answer
}

/// A text answer; the fixed texts are `&'static str`, so the hot path copies nothing.
fn text(
    mut builder: actix_web::HttpResponseBuilder,
    body: impl actix_web::body::MessageBody + 'static,
) -> HttpResponse {
    builder.content_type("text/plain; charset=utf-8").body(body)
}
