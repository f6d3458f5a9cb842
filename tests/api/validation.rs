//! Bad input gets the right 4xx and the contract's error JSON, and changes nothing.

use serde_json::json;

use crate::helpers::{ADMIN_TOKEN, error_of, spawn_app, unique};

struct Case {
    what: &'static str,
    path: String,
    content_type: &'static str,
    body: String,
    idempotency_key: Option<String>,
    status: u16,
    code: &'static str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_orders_are_refused_with_json_errors_and_take_nothing() {
    let app = spawn_app().await;
    let sku = unique("validation");
    app.create_sale(&sku, json!({"stock": 1000, "per_user_limit": 50}))
        .await;
    let before = app.snapshot().await;

    let orders = format!("/v1/sales/{sku}/orders");
    let case = |what, body: &str, status, code| Case {
        what,
        path: orders.clone(),
        content_type: "application/json",
        body: body.to_owned(),
        idempotency_key: None,
        status,
        code,
    };
    let long_user = "u".repeat(129);
    let cases = vec![
        case(
            "malformed JSON",
            r#"{"user_id": "u1", "quantity": "#,
            400,
            "invalid_request",
        ),
        case("not an object", "[1, 2]", 400, "invalid_request"),
        case(
            "missing user_id",
            r#"{"quantity": 1}"#,
            400,
            "invalid_request",
        ),
        case(
            "user_id a number",
            r#"{"user_id": 42}"#,
            400,
            "invalid_request",
        ),
        case(
            "quantity a string",
            r#"{"user_id": "u1", "quantity": "1"}"#,
            400,
            "invalid_request",
        ),
        case(
            "quantity a fraction",
            r#"{"user_id": "u1", "quantity": 1.5}"#,
            400,
            "invalid_request",
        ),
        case(
            "quantity 0",
            r#"{"user_id": "u1", "quantity": 0}"#,
            400,
            "invalid_request",
        ),
        case(
            "quantity -1",
            r#"{"user_id": "u1", "quantity": -1}"#,
            400,
            "invalid_request",
        ),
        case(
            "quantity 101",
            r#"{"user_id": "u1", "quantity": 101}"#,
            400,
            "invalid_request",
        ),
        case(
            "quantity 10^20",
            r#"{"user_id": "u1", "quantity": 100000000000000000000}"#,
            400,
            "invalid_request",
        ),
        // Well-formed: the sale's rule refuses it, as it refuses a buyer at the limit.
        case(
            "quantity above per_user_limit",
            r#"{"user_id": "u1", "quantity": 51}"#,
            409,
            "user_limit_reached",
        ),
        case(
            "unknown field",
            r#"{"user_id": "u1", "quantity": 1, "price": 0}"#,
            400,
            "invalid_request",
        ),
        case(
            "empty user_id",
            r#"{"user_id": ""}"#,
            400,
            "invalid_request",
        ),
        case(
            "129-char user_id",
            &format!(r#"{{"user_id": "{long_user}"}}"#),
            400,
            "invalid_request",
        ),
        case(
            "control character in user_id",
            r#"{"user_id": "a\u0007b"}"#,
            400,
            "invalid_request",
        ),
        case(
            "5 KiB body",
            &format!(r#"{{"user_id": "{}"}}"#, "x".repeat(5 * 1024)),
            413,
            "payload_too_large",
        ),
        Case {
            content_type: "text/plain",
            ..case(
                "wrong content type",
                r#"{"user_id": "u1"}"#,
                415,
                "unsupported_media_type",
            )
        },
        Case {
            path: "/v1/sales/bad%20sku/orders".into(),
            ..case(
                "space in sku",
                r#"{"user_id": "u1"}"#,
                400,
                "invalid_request",
            )
        },
        Case {
            path: "/v1/sales/a.b/orders".into(),
            ..case("dot in sku", r#"{"user_id": "u1"}"#, 400, "invalid_request")
        },
        Case {
            path: format!("/v1/sales/{}/orders", "s".repeat(65)),
            ..case(
                "65-char sku",
                r#"{"user_id": "u1"}"#,
                400,
                "invalid_request",
            )
        },
        Case {
            idempotency_key: Some("has space".into()),
            ..case(
                "bad Idempotency-Key",
                r#"{"user_id": "u1"}"#,
                400,
                "invalid_request",
            )
        },
        Case {
            idempotency_key: Some("k".repeat(129)),
            ..case(
                "129-char Idempotency-Key",
                r#"{"user_id": "u1"}"#,
                400,
                "invalid_request",
            )
        },
    ];

    for case in cases {
        let mut request = app
            .client
            .post(app.url(&case.path))
            .header("Content-Type", case.content_type)
            .body(case.body);
        if let Some(key) = case.idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.expect("answered");
        assert_eq!(
            error_of(response).await,
            (case.status, case.code.into()),
            "{}",
            case.what
        );
    }

    assert_eq!(
        app.snapshot().await,
        before,
        "no bad request wrote anything"
    );
    assert_eq!(app.sale_json(&sku).await["sold"], 0);
    app.cleanup().await;
}

#[tokio::test]
async fn bad_sale_settings_are_refused() {
    let app = spawn_app().await;
    let sku = unique("bad-settings");
    let bodies = [
        ("no stock", json!({"price": 1})),
        ("negative stock", json!({"stock": -1})),
        ("stock a string", json!({"stock": "10"})),
        ("per_user_limit 0", json!({"stock": 1, "per_user_limit": 0})),
        ("bad time", json!({"stock": 1, "starts_at": "next monday"})),
        ("fractional stock", json!({"stock": 1.5})),
        (
            "per_user_limit past any stock",
            json!({"stock": 1, "per_user_limit": 9_223_372_036_854_775_808_u64}),
        ),
        ("unknown field", json!({"stock": 1, "colour": "red"})),
    ];
    for (what, body) in bodies {
        assert_eq!(
            error_of(app.put_sale(&sku, body).await).await,
            (400, "invalid_request".into()),
            "{what}"
        );
    }
    let bad_sku = app
        .client
        .put(app.url("/v1/sales/no*stars"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"stock": 1}))
        .send()
        .await
        .expect("answered");
    assert_eq!(error_of(bad_sku).await, (400, "invalid_request".into()));
    assert!(app.snapshot().await.is_empty(), "no sale created");

    // An inverted window is a sale that never opens, not an error.
    let never =
        json!({"stock": 1, "starts_at": "2030-01-02T00:00:00Z", "ends_at": "2030-01-01T00:00:00Z"});
    let response = app.put_sale(&sku, never).await;
    assert_eq!(response.status(), 201);
    let sale: serde_json::Value = response.json().await.expect("sale");
    assert_eq!(sale["state"], "closed");
    assert_eq!(
        error_of(app.order(&sku, "u", 1).await).await,
        (409, "sale_not_open".into())
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_route_asked_with_another_method_is_405_with_allow() {
    let app = spawn_app().await;
    let response = app
        .client
        .delete(app.url("/v1/sales/some-sale"))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["Allow"], "GET, PUT");
    assert_eq!(error_of(response).await.1, "method_not_allowed");
}

#[tokio::test]
async fn unknown_routes_answer_json_404() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/v2/nothing"))
        .send()
        .await
        .expect("answered");
    assert_eq!(error_of(response).await, (404, "not_found".into()));
}
