//! Callers proven: storefront tokens (FLASHSALE_API_TOKENS) and buyer tickets
//! (FLASHSALE_TICKET_KEY, FLASHSALE_REQUIRE_TICKET). A refused purchase changes nothing.

use serde_json::{Value, json};

use crate::helpers::{TestApp, error_of, spawn_app_with, unique};

const STORE_TOKEN: &str = "storefront-token";
const TICKET_KEY: &str = "ticket-key-shared-with-the-storefront";

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn ticket(user: &str, sku: &str, expires: i64) -> String {
    flashsale::http::tickets::sign(TICKET_KEY.as_bytes(), user, sku, expires)
}

/// A purchase with the given bearer token, ticket and body.
async fn buy(
    app: &TestApp,
    sku: &str,
    token: Option<&str>,
    ticket: Option<&str>,
    body: Value,
) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url(&format!("/v1/sales/{sku}/orders")))
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(ticket) = ticket {
        request = request.header("Buyer-Ticket", ticket);
    }
    request.send().await.expect("answered")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_storefront_with_a_valid_ticket_buys() {
    let app = spawn_app_with(|s| {
        s.http.api_tokens = vec![STORE_TOKEN.into()];
        s.http.ticket_key = Some(TICKET_KEY.into());
        s.http.require_ticket = true;
    })
    .await;
    let sku = unique("ticketed");
    app.create_sale(&sku, json!({"stock": 10, "per_user_limit": 1}))
        .await;

    // A valid ticket: the buyer comes from it; a body user_id, when sent, must agree.
    let valid = ticket("alice", &sku, now() + 60);
    let response = buy(&app, &sku, Some(STORE_TOKEN), Some(&valid), json!({})).await;
    assert_eq!(response.status(), 201);
    let order: Value = response.json().await.expect("order");
    assert_eq!(order["user_id"], "alice");
    let bob = ticket("bob", &sku, now() + 60);
    let response = buy(
        &app,
        &sku,
        Some(STORE_TOKEN),
        Some(&bob),
        json!({"user_id": "bob"}),
    )
    .await;
    assert_eq!(response.status(), 201);

    // The relay's work on the two orders settles first: only the refused requests below
    // could change Redis after this.
    app.wait_until_relay_idle(&sku).await;
    let before = app.snapshot().await;
    // No storefront token, or a wrong one: 401 unauthorized.
    for token in [None, Some("guess")] {
        let (status, code) = error_of(buy(&app, &sku, token, Some(&valid), json!({})).await).await;
        assert_eq!((status, code.as_str()), (401, "unauthorized"), "{token:?}");
    }
    // Inventing user ids does not get past the per-user limit: each ticket names one buyer.
    let mut forged = ticket("mallory", &sku, now() + 60);
    forged.replace_range(forged.len() - 4.., "AAAA");
    let refused = [
        ("forged", Some(forged)),
        (
            "other key",
            Some(flashsale::http::tickets::sign(
                b"guessed key",
                "mallory",
                &sku,
                now() + 60,
            )),
        ),
        ("expired", Some(ticket("carol", &sku, now() - 1))),
        (
            "other sale",
            Some(ticket("carol", "another-sale", now() + 60)),
        ),
        ("malformed", Some("v1.not-a-ticket".to_owned())),
        ("missing", None),
    ];
    for (case, ticket) in &refused {
        let response = buy(
            &app,
            &sku,
            Some(STORE_TOKEN),
            ticket.as_deref(),
            json!({"user_id": "carol"}),
        )
        .await;
        let (status, code) = error_of(response).await;
        assert_eq!((status, code.as_str()), (401, "invalid_ticket"), "{case}");
    }
    // A valid ticket for another buyer than the body's user_id.
    let response = buy(
        &app,
        &sku,
        Some(STORE_TOKEN),
        Some(&valid),
        json!({"user_id": "bob"}),
    )
    .await;
    assert_eq!(error_of(response).await, (401, "invalid_ticket".into()));
    // The old endpoint carries no ticket: closed while tickets are required.
    assert_eq!(app.get("/kill?user_id=eve").await.status(), 401);
    assert_eq!(
        app.snapshot().await,
        before,
        "nothing refused changed Redis"
    );

    // Order reads take the storefront token too (not only the admin one), and no other.
    let id = order["order_id"].as_str().expect("id");
    let read = |token: &'static str| {
        app.client
            .get(app.url(&format!("/v1/orders/{id}")))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(read(STORE_TOKEN).await.expect("answered").status(), 200);
    assert_eq!(read("guess").await.expect("answered").status(), 401);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_are_optional_unless_required() {
    let app = spawn_app_with(|s| s.http.ticket_key = Some(TICKET_KEY.into())).await;
    let sku = unique("optional-ticket");
    app.create_sale(&sku, json!({"stock": 10})).await;
    // Without a ticket the body names the buyer, as before; with one, the ticket is checked.
    assert_eq!(app.order(&sku, "plain", 1).await.status(), 201);
    let response = buy(
        &app,
        &sku,
        None,
        Some(&ticket("t", &sku, now() + 60)),
        json!({}),
    )
    .await;
    assert_eq!(response.status(), 201);
    let response = buy(
        &app,
        &sku,
        None,
        Some(&ticket("t", &sku, now() - 5)),
        json!({}),
    )
    .await;
    assert_eq!(error_of(response).await, (401, "invalid_ticket".into()));
    // Neither ticket nor user_id: a bad request.
    let (status, code) = error_of(buy(&app, &sku, None, None, json!({})).await).await;
    assert_eq!((status, code.as_str()), (400, "invalid_request"));
    assert_eq!(app.redis_sold(&sku).await, 2);
    app.cleanup().await;
}
