//! The OpenAPI 3 document of the HTTP API, generated from the handlers' annotations and the
//! request and response types (utoipa), so it cannot drift from the code. Served at
//! `GET /openapi.json` and committed as `openapi.json` (a test keeps the two equal).

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::http;

#[derive(OpenApi)]
#[openapi(
    info(title = "flashsale", description = "Flash-sale inventory: who wins the limited stock, decided atomically; every winning order handed to NATS JetStream."),
    paths(
        http::sales::put_sale,
        http::sales::get_sale,
        http::sales::list_sales,
        http::sales::end_sale,
        http::sales::reopen_sale,
        http::queue::join,
        http::queue::pause,
        http::queue::resume,
        http::live::live,
        http::orders::create_order,
        http::orders::list_buyer_orders,
        http::orders::get_order,
        http::orders::pay_order,
        http::orders::cancel_order,
        http::health::healthz,
        http::health::readyz,
        http::health::metrics,
        http::seed::home,
        http::seed::kill,
    ),
    components(schemas(crate::live::frame::LiveSale, crate::domain::event::OrderEvent, crate::domain::event::EventKind, crate::http::error::ErrorBody)),
    modifiers(&SecuritySchemes),
)]
pub struct ApiDoc;

/// Bearer tokens (admin, storefront) and the buyer ticket header.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer =
            || SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build());
        components.add_security_scheme("admin", bearer());
        components.add_security_scheme("storefront", bearer());
        components.add_security_scheme(
            "buyer_ticket",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("Buyer-Ticket"))),
        );
    }
}

/// The document as JSON, pretty-printed as committed.
pub fn document() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_committed_document_is_the_generated_one() {
        let committed = include_str!("../../openapi.json");
        assert!(
            committed.trim_end() == super::document(),
            "openapi.json is stale: regenerate it with `cargo run -q -- openapi > openapi.json`"
        );
    }
}
