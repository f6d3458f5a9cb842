//! The admin sale API: create, replace, read, and the stock_below_sold guard.

use serde_json::{Value, json};

use crate::helpers::{error_of, spawn_app, spawn_app_with, unique};

#[tokio::test]
async fn put_creates_then_replaces_and_get_shows_counters() {
    let app = spawn_app().await;
    let sku = unique("sale");
    let body = json!({"stock": 5, "per_user_limit": 2, "price": 1299,
                      "starts_at": "2020-01-01T00:00:00Z", "ends_at": "2999-01-01T00:00:00.250+08:00"});
    let created = app.put_sale(&sku, body).await;
    assert_eq!(created.status(), 201);
    let sale: Value = created.json().await.expect("sale JSON");
    assert_eq!(sale["sku"], sku.as_str());
    assert_eq!(sale["stock"], 5);
    assert_eq!(sale["per_user_limit"], 2);
    assert_eq!(sale["price"], 1299);
    assert_eq!(sale["starts_at"], "2020-01-01T00:00:00.000Z");
    assert_eq!(
        sale["ends_at"], "2998-12-31T16:00:00.250Z",
        "normalised to UTC"
    );
    assert_eq!(sale["sold"], 0);
    assert_eq!(sale["state"], "open");

    assert_eq!(app.order(&sku, "u1", 2).await.status(), 201);

    // A replace keeps what was sold; omitted settings are cleared.
    let replaced = app.put_sale(&sku, json!({"stock": 8})).await;
    assert_eq!(replaced.status(), 200);
    let sale = app.sale_json(&sku).await;
    assert_eq!(sale["stock"], 8);
    assert_eq!(sale["sold"], 2);
    assert_eq!(sale["remaining"], 6);
    assert_eq!(sale["per_user_limit"], Value::Null);
    assert_eq!(sale["ends_at"], Value::Null);
    app.cleanup().await;
}

#[tokio::test]
async fn stock_cannot_go_below_sold() {
    let app = spawn_app().await;
    let sku = unique("shrink");
    app.create_sale(&sku, json!({"stock": 5})).await;
    assert_eq!(app.order(&sku, "u1", 3).await.status(), 201);

    let (status, code) = error_of(app.put_sale(&sku, json!({"stock": 2})).await).await;
    assert_eq!((status, code.as_str()), (409, "stock_below_sold"));
    assert_eq!(app.sale_json(&sku).await["stock"], 5, "unchanged");

    assert_eq!(app.put_sale(&sku, json!({"stock": 3})).await.status(), 200);
    let sale = app.sale_json(&sku).await;
    assert_eq!(
        (sale["remaining"].clone(), sale["state"].clone()),
        (json!(0), json!("sold_out"))
    );
    app.cleanup().await;
}

#[tokio::test]
async fn get_unknown_sale_is_404_and_default_sale_is_shown_before_first_use() {
    // Showing the default sale defines it (in JetStream, then Redis) with its configured
    // stock, as its first purchase would.
    let app = spawn_app().await;
    let (status, code) = error_of(app.get_sale(&unique("none")).await).await;
    assert_eq!((status, code.as_str()), (404, "sale_not_found"));

    let default = app.sale_json(&app.default_sku).await;
    assert_eq!(default["stock"], 1000);
    assert_eq!(default["sold"], 0);
    assert_eq!(app.redis_sold(&app.default_sku).await, 0, "nothing sold");
    app.cleanup().await;
}

#[tokio::test]
async fn admin_token_is_required_and_checked() {
    let app = spawn_app().await;
    let sku = unique("auth");
    let url = app.url(&format!("/v1/sales/{sku}"));
    let body = json!({"stock": 1});

    let missing = app
        .client
        .put(&url)
        .json(&body)
        .send()
        .await
        .expect("answered");
    assert_eq!(error_of(missing).await, (401, "unauthorized".into()));
    let wrong = app
        .client
        .put(&url)
        .bearer_auth("test-admin-tokeX")
        .json(&body)
        .send()
        .await
        .expect("answered");
    assert_eq!(error_of(wrong).await, (401, "unauthorized".into()));
    let not_bearer = app
        .client
        .put(&url)
        .basic_auth("admin", Some("x"))
        .json(&body)
        .send()
        .await
        .expect("answered");
    assert_eq!(error_of(not_bearer).await, (401, "unauthorized".into()));
    assert!(app.snapshot().await.is_empty(), "no sale created");

    let disabled = spawn_app_with(|s| s.http.admin_token = None).await;
    let response = disabled.put_sale(&sku, body).await;
    assert_eq!(error_of(response).await, (403, "forbidden".into()));
    assert!(disabled.snapshot().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_that_shrinks_the_stock_mid_burst_holds_exactly() {
    use futures::StreamExt;
    let app = spawn_app().await;
    let sku = unique("shrink-burst");
    app.create_sale(&sku, json!({"stock": 1000})).await;
    let buyers: Vec<String> = (0..1500).map(|i| format!("b{i}")).collect();
    let (answers, stock) = tokio::join!(
        futures::stream::iter(&buyers)
            .map(|user| async {
                let response = app.order(&sku, user, 1).await;
                let status = response.status().as_u16();
                (status, response.json::<Value>().await.expect("JSON"))
            })
            .buffer_unordered(64)
            .collect::<Vec<_>>(),
        async {
            // Once a tenth has sold, cut the stock to 300 above what is sold by then (room
            // for what the burst sells meanwhile, on a slow machine's cluster too); a PUT
            // that the burst overtook (stock_below_sold) tries again higher.
            app.wait_until_sold(&sku, 100).await;
            loop {
                let stock = app.redis_sold(&sku).await + 300;
                let response = app.put_sale(&sku, json!({"stock": stock})).await;
                match response.status().as_u16() {
                    200 => return stock,
                    409 => continue,
                    other => panic!("PUT answered {other}"),
                }
            }
        }
    );
    assert!(stock < 1000, "the cut came mid-burst (stock {stock})");
    let mut ids = std::collections::HashSet::new();
    for (status, body) in &answers {
        match status {
            201 => assert!(ids.insert(body["order_id"].to_string()), "{body}"),
            409 => assert_eq!(body["error"], "sold_out", "{body}"),
            other => panic!("{other} {body}"),
        }
    }
    assert_eq!(ids.len() as u64, stock, "exactly the new stock sold");
    let sale = app.sale_json(&sku).await;
    assert_eq!(
        (
            sale["stock"].as_u64(),
            sale["sold"].as_u64(),
            sale["remaining"].as_u64()
        ),
        (Some(stock), Some(stock), Some(0))
    );
    app.cleanup().await;
}
