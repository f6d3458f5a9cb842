//! The API's OpenAPI document: served at `/openapi.json`, the same as the committed
//! `openapi.json` storefront teams build against.

use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test]
async fn the_served_document_is_the_committed_one() {
    let app = spawn_app().await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), 200);
    let served: Value = response.json().await.expect("JSON");
    let committed: Value =
        serde_json::from_str(include_str!("../../openapi.json")).expect("openapi.json is JSON");
    assert_eq!(
        served, committed,
        "regenerate: cargo run -q -- openapi > openapi.json"
    );
    // Every route of the service is in it, and the order event is a component.
    for path in [
        "/v1/sales/{sku}",
        "/v1/sales/{sku}/orders",
        "/v1/orders/{order_id}",
        "/v1/orders/{order_id}/pay",
        "/v1/orders/{order_id}/cancel",
        "/kill",
    ] {
        assert!(served["paths"][path].is_object(), "{path} documented");
    }
    assert!(served["components"]["schemas"]["OrderEvent"].is_object());
    assert!(served["components"]["schemas"]["ErrorBody"].is_object());
}
