//! The buyer's page of a sale, `GET /sales/{sku}`: static HTML, CSS and JavaScript from
//! `static/`, built into the binary (no files to ship, no build step). The page reads the
//! live stream and posts purchases like any storefront page would (`static/sale.js`).

use actix_web::http::header::{CACHE_CONTROL, ContentType};
use actix_web::{HttpResponse, web};

use crate::domain::Sku;
use crate::http::error::ApiError;

const HTML: &str = include_str!("../../static/sale.html");
const CSS: &str = include_str!("../../static/sale.css");
const JS: &str = include_str!("../../static/sale.js");

/// `GET /sales/{sku}`: the page; whether the sale exists the page learns from the stream.
pub async fn sale_page(sku: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Sku::parse(&sku)?;
    Ok(HttpResponse::Ok()
        .content_type(ContentType::html())
        .insert_header((CACHE_CONTROL, "no-cache"))
        .body(HTML))
}

/// `GET /static/{file}`: the page's stylesheet and script.
pub async fn asset(file: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let (body, content_type) = match file.as_str() {
        "sale.css" => (CSS, "text/css; charset=utf-8"),
        "sale.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return Err(ApiError::RouteNotFound),
    };
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((CACHE_CONTROL, "public, max-age=300"))
        .body(body))
}
