//! Purchases under concurrency: the invariants hold with hundreds of simultaneous buyers.

use std::collections::HashSet;

use futures::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{error_of, spawn_app, spawn_app_with, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stampede_sells_exactly_the_stock() {
    let app = spawn_app().await;
    let sku = unique("stampede");
    app.create_sale(&sku, json!({"stock": 100, "price": 990}))
        .await;

    let buyers = (0..1000).map(|i| {
        let app = &app;
        let sku = &sku;
        async move {
            let response = app.order(sku, &format!("buyer-{i}"), 1).await;
            let status = response.status().as_u16();
            let body: Value = response.json().await.expect("JSON answer");
            (status, body)
        }
    });
    let answers = join_all(buyers).await;

    // 202: accepted, its event not yet confirmed by JetStream in time (a loaded NATS
    // cluster); a unit sold all the same.
    let created: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 201 || *s == 202)
        .map(|(_, b)| b)
        .collect();
    let sold_out = answers
        .iter()
        .filter(|(s, b)| *s == 409 && b["error"] == "sold_out")
        .count();
    assert_eq!(created.len(), 100, "exactly the stock is sold");
    assert_eq!(sold_out, 900, "everyone else is told sold_out");

    let ids: HashSet<&str> = created
        .iter()
        .filter_map(|o| o["order_id"].as_str())
        .collect();
    assert_eq!(ids.len(), 100, "order ids are distinct");
    // Each winner is told the units its own order left: a batch's orders read theirs from
    // what the call shares (lua/purchase.lua's Reply), one unit less each, in order.
    let mut remaining: Vec<u64> = created
        .iter()
        .filter_map(|o| o["remaining"].as_u64())
        .collect();
    remaining.sort_unstable();
    assert_eq!(remaining, (0..100).collect::<Vec<u64>>());
    assert!(
        created
            .iter()
            .all(|o| o["total_amount"] == 990 && o["quantity"] == 1)
    );

    let sale = app.sale_json(&sku).await;
    assert_eq!(sale["sold"], 100);
    assert_eq!(sale["remaining"], 0);
    assert_eq!(sale["state"], "sold_out");

    assert_eq!(app.redis_sold(&sku).await, 100, "Redis agrees");
    let recorded: HashSet<String> = app.redis_order_ids(&sku).await.into_iter().collect();
    let answered: HashSet<String> = ids.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        recorded, answered,
        "Redis recorded exactly the orders answered 201"
    );
    // No key per buyer (issue 23): a hundred buyers leave the sale with its own keys only.
    let tag = format!("{{{sku}}}");
    let mut names: Vec<String> = app
        .namespace_keys()
        .await
        .into_iter()
        .filter_map(|key| key.split_once(&tag).map(|(_, name)| name.to_owned()))
        .collect();
    names.sort();
    names.retain(|name| name != ":relay" && name != ":outbox");
    assert_eq!(names, [":buyers", ":orders", ":sale"], "the sale's keys");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quantities_are_all_or_nothing() {
    let app = spawn_app().await;
    let sku = unique("quantities");
    app.create_sale(&sku, json!({"stock": 10})).await;

    let users: Vec<String> = (0..50).map(|i| format!("u{i}")).collect();
    let answers = join_all(users.iter().map(|user| app.order(&sku, user, 3))).await;
    let created = answers
        .iter()
        .filter(|r| [201, 202].contains(&r.status().as_u16()))
        .count();
    assert_eq!(created, 3, "three orders of 3 fit in 10, a fourth does not");
    assert_eq!(app.redis_sold(&sku).await, 9, "no partial fill");

    // One unit is left: 3 takes nothing, 1 takes the last unit.
    let (status, code) = error_of(app.order(&sku, "late", 3).await).await;
    assert_eq!((status, code.as_str()), (409, "sold_out"));
    assert_eq!(app.redis_sold(&sku).await, 9);
    let last = app.order(&sku, "late", 1).await;
    assert_eq!(last.status(), 201);
    let order: Value = last.json().await.expect("order");
    assert_eq!(order["remaining"], 0);
    assert_eq!(app.redis_sold(&sku).await, 10);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_limit_holds_under_concurrency() {
    let app = spawn_app().await;
    let sku = unique("per-user");
    app.create_sale(&sku, json!({"stock": 100, "per_user_limit": 1}))
        .await;

    let answers = join_all((0..50).map(|_| app.order(&sku, "greedy", 1))).await;
    let mut created = 0;
    for response in answers {
        match response.status().as_u16() {
            201 => created += 1,
            _ => assert_eq!(error_of(response).await, (409, "user_limit_reached".into())),
        }
    }
    assert_eq!(created, 1, "one user, one unit");
    assert_eq!(app.redis_sold(&sku).await, 1);

    // Another user is not affected; asking for more than the limit at once is refused as
    // the limit refuses a holder, and takes nothing.
    assert_eq!(app.order(&sku, "modest", 1).await.status(), 201);
    let (status, code) = error_of(app.order(&sku, "bulk", 2).await).await;
    assert_eq!((status, code.as_str()), (409, "user_limit_reached"));
    assert_eq!(app.redis_sold(&sku).await, 2);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_idempotency_key_makes_one_order() {
    let app = spawn_app().await;
    let sku = unique("idempotency");
    app.create_sale(&sku, json!({"stock": 100})).await;
    let body = json!({"user_id": "retrying", "quantity": 2});

    let answers =
        join_all((0..20).map(|_| app.order_with_key(&sku, body.clone(), Some("key-1")))).await;
    let mut statuses = Vec::new();
    let mut ids = HashSet::new();
    for response in answers {
        statuses.push(response.status().as_u16());
        let order: Value = response.json().await.expect("order JSON");
        ids.insert(order["order_id"].as_str().expect("order_id").to_owned());
    }
    // The creation is 201, or 202 when JetStream did not confirm its event in time (a
    // loaded machine): accepted either way, and once.
    assert_eq!(
        statuses.iter().filter(|s| **s == 201 || **s == 202).count(),
        1,
        "one creation: {statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        19,
        "19 replays"
    );
    assert_eq!(ids.len(), 1, "every answer carries the same order_id");
    assert_eq!(app.redis_sold(&sku).await, 2, "stock taken once");
    assert_eq!(app.redis_order_ids(&sku).await.len(), 1);

    // The same key for another request is refused and changes nothing.
    let other = json!({"user_id": "someone-else", "quantity": 2});
    let (status, code) = error_of(app.order_with_key(&sku, other, Some("key-1")).await).await;
    assert_eq!((status, code.as_str()), (409, "idempotency_conflict"));
    assert_eq!(app.redis_sold(&sku).await, 2);
    app.cleanup().await;
}

#[tokio::test]
async fn purchases_survive_script_flush() {
    let app = spawn_app().await;
    let sku = unique("noscript");
    app.create_sale(&sku, json!({"stock": 10})).await;
    assert_eq!(app.order(&sku, "before", 1).await.status(), 201);

    let mut redis = app.redis.clone();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut redis)
        .await
        .expect("SCRIPT FLUSH");

    assert_eq!(
        app.order(&sku, "after", 1).await.status(),
        201,
        "NOSCRIPT recovered"
    );
    assert_eq!(app.redis_sold(&sku).await, 2);
    let sha = redis::Script::new(&crate::helpers::lua_source("purchase.lua"))
        .get_hash()
        .to_owned();
    // Asked of the primary holding the sale (on a cluster, the others never ran it again).
    let mut exists = redis::cmd("SCRIPT");
    exists.arg("EXISTS").arg(sha);
    let loaded: Vec<bool> = redis
        .query_on_primary_of(&app.key(&sku, "sale"), exists)
        .await
        .expect("SCRIPT EXISTS");
    assert_eq!(loaded, vec![true], "the script is cached again");
    app.cleanup().await;
}

#[tokio::test]
async fn sale_window_is_enforced() {
    let app = spawn_app().await;
    let scheduled = unique("scheduled");
    app.create_sale(
        &scheduled,
        json!({"stock": 5, "starts_at": "2999-01-01T00:00:00Z"}),
    )
    .await;
    let closed = unique("closed");
    app.create_sale(
        &closed,
        json!({"stock": 5, "starts_at": "2000-01-01T00:00:00Z", "ends_at": "2000-01-02T00:00:00Z"}),
    )
    .await;

    for (sku, state) in [(&scheduled, "scheduled"), (&closed, "closed")] {
        let (status, code) = error_of(app.order(sku, "early-or-late", 1).await).await;
        assert_eq!((status, code.as_str()), (409, "sale_not_open"), "{state}");
        assert_eq!(app.sale_json(sku).await["state"], state);
        assert_eq!(app.redis_sold(sku).await, 0);
    }
    app.cleanup().await;
}

#[tokio::test]
async fn unknown_sale_is_404() {
    let app = spawn_app().await;
    let (status, code) = error_of(app.order(&unique("nothing"), "u", 1).await).await;
    assert_eq!((status, code.as_str()), (404, "sale_not_found"));
    assert!(app.snapshot().await.is_empty(), "nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_replays_after_the_sale_closed_and_is_forgotten_after_its_ttl() {
    let app = spawn_app_with(|s| s.redis.idempotency_ttl = std::time::Duration::from_secs(1)).await;
    let sku = unique("idem-ttl");
    app.create_sale(&sku, json!({"stock": 1})).await;
    let body = json!({"user_id": "retrying", "quantity": 1});
    let first = app.order_with_key(&sku, body.clone(), Some("k")).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.expect("order");

    // Sold out, then closed: a retry still finds its order (the replay comes before both
    // checks), and another buyer is refused.
    let (status, code) = error_of(app.order(&sku, "other", 1).await).await;
    assert_eq!((status, code.as_str()), (409, "sold_out"));
    let closed =
        json!({"stock": 1, "starts_at": "2000-01-01T00:00:00Z", "ends_at": "2000-01-02T00:00:00Z"});
    assert_eq!(app.put_sale(&sku, closed.clone()).await.status(), 200);
    let replay = app.order_with_key(&sku, body.clone(), Some("k")).await;
    assert_eq!(replay.status(), 200, "a replay after the sale closed");
    let replay: Value = replay.json().await.expect("order");
    assert_eq!(replay["order_id"], first["order_id"]);

    // Past its TTL the key is forgotten: the same request is a new purchase, decided like any
    // (the sale is closed now), and the first order still stands.
    let key = app.key(&sku, "idem:k");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while redis::AsyncCommands::exists::<_, bool>(&mut app.redis.clone(), &key)
        .await
        .expect("EXISTS")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{key} never expired"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (status, code) = error_of(app.order_with_key(&sku, body, Some("k")).await).await;
    assert_eq!((status, code.as_str()), (409, "sale_not_open"));
    assert_eq!(app.redis_sold(&sku).await, 1);
    assert_eq!(app.redis_order_ids(&sku).await.len(), 1);
    app.cleanup().await;
}
