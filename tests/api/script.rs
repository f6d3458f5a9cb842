//! The purchase script's own rules, checked on the Redis state: every rejection writes
//! nothing, an acceptance writes exactly the order.

use serde_json::{Value, json};

use crate::helpers::{error_of, spawn_app, unique};

#[tokio::test]
async fn every_rejection_leaves_redis_byte_for_byte_unchanged() {
    let app = spawn_app().await;
    let sku = unique("rules");
    app.create_sale(&sku, json!({"stock": 3, "per_user_limit": 2, "price": 500}))
        .await;
    let first = app
        .order_with_key(&sku, json!({"user_id": "holder", "quantity": 2}), Some("k"))
        .await;
    assert_eq!(first.status(), 201);
    let closed = unique("rules-closed");
    app.create_sale(
        &closed,
        json!({"stock": 3, "starts_at": "2999-01-01T00:00:00Z"}),
    )
    .await;
    // Once the relay has delivered the order and its lease has lapsed, nothing but the
    // rejections could change Redis between the snapshots.
    app.wait_until_relay_idle(&sku).await;

    let before = app.snapshot().await;
    let rejections = [
        (app.order(&sku, "holder", 1).await, "user_limit_reached"),
        (app.order(&sku, "other", 2).await, "sold_out"),
        // Above the per-user limit at once.
        (app.order(&sku, "other", 3).await, "user_limit_reached"),
        (app.order(&closed, "other", 1).await, "sale_not_open"),
        (
            app.order(&unique("missing"), "other", 1).await,
            "sale_not_found",
        ),
        (
            app.order_with_key(&sku, json!({"user_id": "holder", "quantity": 1}), Some("k"))
                .await,
            "idempotency_conflict",
        ),
    ];
    for (response, expected) in rejections {
        assert_eq!(error_of(response).await.1, expected);
    }
    assert_eq!(app.snapshot().await, before, "no rejection wrote anything");
    app.cleanup().await;
}

#[tokio::test]
async fn an_accepted_order_is_recorded_with_its_buyer() {
    // Spaces, digits and non-ASCII: the record keeps the user id whole.
    const BUYER: &str = "买家 42 {x}";
    let app = spawn_app().await;
    let sku = unique("record");
    app.create_sale(&sku, json!({"stock": 5, "price": 250}))
        .await;
    let body = json!({"user_id": BUYER, "quantity": 3});
    let order: Value = app
        .order_with_key(&sku, body.clone(), Some("rec"))
        .await
        .json()
        .await
        .expect("order");
    assert_eq!(order["total_amount"], 750);
    assert_eq!(order["remaining"], 2);
    let created_at = order["created_at"].as_str().expect("created_at");
    assert!(chrono::DateTime::parse_from_rfc3339(created_at).is_ok() && created_at.ends_with('Z'));
    let order_id = order["order_id"].as_str().expect("order_id");
    assert!(order_id.len() <= 64);

    let record: String = app
        .redis_hget(&sku, "orders", &app.order_field(&sku, order_id).await)
        .await
        .expect("recorded");
    let fields: Vec<&str> = record.split('\n').collect();
    assert_eq!(
        fields[..3],
        ["created", "3", "250"],
        "status, quantity, unit_price"
    );
    assert_eq!(fields[8], BUYER, "user_id last, whatever it holds");
    assert_eq!(
        fields[4..7]
            .iter()
            .map(|f| f.is_empty())
            .collect::<Vec<_>>(),
        [true, true, false],
        "no pay_by or paid_at in a sale without a payment window; the event's outbox id"
    );
    // One field per buyer, no key: the units held, then the buyer's orders by their field
    // in the orders hash.
    let buyer: String = app
        .redis_hget(&sku, "buyers", BUYER)
        .await
        .expect("recorded");
    let field = app.order_field(&sku, order_id).await;
    assert_eq!(
        (buyer, field.as_str()),
        (
            format!("3:{field}"),
            &order_id[order_id.rfind('-').expect("seq") + 1..]
        ),
        "units held, then the buyer's orders, keyed by sequence number"
    );

    // The record reads back whole: a replay returns the same order, a cancel rewrites only
    // the status and the id of the order's latest event.
    let replay = app.order_with_key(&sku, body, Some("rec")).await;
    assert_eq!(replay.status(), 200);
    let replayed: Value = replay.json().await.expect("order");
    assert_eq!(
        (&replayed["order_id"], &replayed["user_id"]),
        (&order["order_id"], &json!(BUYER))
    );
    assert_eq!(replayed["created_at"], order["created_at"]);
    let cancelled = app
        .client
        .post(app.url(&format!("/v1/orders/{order_id}/cancel")))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .send()
        .await
        .expect("answered");
    let cancelled: Value = cancelled.json().await.expect("order");
    assert_eq!(
        (&cancelled["status"], &cancelled["user_id"]),
        (&json!("cancelled"), &json!(BUYER))
    );
    let record: String = app
        .redis_hget(&sku, "orders", &app.order_field(&sku, order_id).await)
        .await
        .expect("recorded");
    let after: Vec<&str> = record.split('\n').collect();
    assert_eq!(after[0], "cancelled");
    assert_ne!(after[6], fields[6], "the cancellation is the latest event");
    assert_eq!(
        (&after[1..6], &after[7..]),
        (&fields[1..6], &fields[7..]),
        "everything else as it was"
    );
    app.cleanup().await;
}

/// One call of the script with several purchases (as group commit sends them) decides them
/// one after the other, in the order given, each by the rules a lone purchase meets.
#[tokio::test]
async fn one_call_decides_a_batch_in_order_by_every_rule() {
    let app = spawn_app().await;
    let sku = unique("batch");
    app.create_sale(&sku, json!({"stock": 5, "per_user_limit": 3, "price": 100}))
        .await;
    // (user, quantity, Idempotency-Key)
    let batch = [
        ("a", 2, ""),
        ("b", 2, "k1"),
        ("b", 2, "k1"),
        ("c", 2, "k1"),
        ("a", 2, ""),
        ("d", 4, ""),
        ("d", 2, ""),
        ("e", 1, "k2"),
        ("e", 1, "k2"),
        ("f", 1, ""),
    ];
    let script = redis::Script::new(&crate::helpers::lua_source("purchase.lua"));
    let mut call = script.prepare_invoke();
    for name in ["sale", "orders", "buyers", "outbox", "deadlines"] {
        call.key(app.key(&sku, name));
    }
    for (_, _, idem) in batch.iter().filter(|(_, _, idem)| !idem.is_empty()) {
        call.key(app.key(&sku, &format!("idem:{idem}")));
    }
    call.arg(600);
    for (user, quantity, idem) in batch {
        call.arg(user).arg(quantity).arg(idem).arg("1");
    }
    let (shared, answered_at, answers): (Vec<redis::Value>, Vec<usize>, Vec<Vec<redis::Value>>) =
        call.invoke_async(&mut app.redis.clone())
            .await
            .expect("EVALSHA");
    let text = |v: &redis::Value| redis::from_redis_value_ref::<String>(v).expect("text");
    // A purchase that made an order has no answer of its own; the others have theirs at
    // their (1-based) index.
    let answer = |i: usize| {
        answered_at
            .iter()
            .position(|&at| at == i + 1)
            .map(|k| &answers[k])
    };
    let outcomes: Vec<String> = (0..batch.len())
        .map(|i| answer(i).map_or("created".to_owned(), |a| text(&a[0])))
        .collect();
    assert_eq!(
        outcomes,
        [
            "created",              // a takes 2 of 5
            "created",              // b takes 2 with k1
            "replayed",             // the same request again: b's order
            "idempotency_conflict", // k1 for another buyer
            "user_limit_reached",   // a would hold 4 of 3
            "quantity_above_limit", // 4 at once is above 3
            "sold_out",             // 1 left, 2 asked: nothing taken
            "created",              // e takes the last unit, with k2
            "replayed",             // the same request again, nothing left: e's order
            "sold_out",             // nothing left
        ]
    );
    // The new orders share the rest: the k-th has seq first_seq + k, and the units left
    // follow from stock, sold before the call and the units of the new orders up to it.
    let first_seq: u64 = text(&shared[7]).parse().expect("first_seq");
    let id_of = |k: u64| format!("{}-{}", text(&shared[0]), first_seq + k);
    let answer_text = |i: usize, at: usize| text(&answer(i).expect("an answer")[at]);
    assert_eq!(answer_text(2, 1), id_of(1), "replayed b's order");
    assert_eq!(
        [text(&shared[8]), text(&shared[9])],
        ["5", "0"],
        "stock, sold before the call"
    );
    assert_eq!(answer_text(8, 1), id_of(2), "replayed e's order");
    // remaining: field 6 of a replay, field 1 of sold_out.
    assert_eq!(
        [
            answer_text(2, 6),
            answer_text(6, 1),
            answer_text(8, 6),
            answer_text(9, 1)
        ],
        ["1", "1", "0", "0"]
    );
    assert_eq!(text(&shared[1]), "100", "the sale's price");
    let ids: Vec<String> = (0..3).map(id_of).collect();
    assert_eq!(app.redis_sold(&sku).await, 5);
    assert_eq!(
        app.redis_order_ids(&sku).await.len(),
        3,
        "three orders recorded"
    );
    // One outbox entry for the call, its id shared by the new orders and in the replay's
    // reply (its event waits in that very entry), holding the three orders' events in order.
    let entry = text(&shared[5]);
    assert_eq!(
        answer_text(2, 9),
        entry,
        "the replay names the call's entry"
    );
    let outbox: redis::streams::StreamRangeReply =
        redis::AsyncCommands::xrange_all(&mut app.redis.clone(), app.key(&sku, "outbox"))
            .await
            .expect("XRANGE");
    assert_eq!(outbox.ids.len(), 1, "one entry for the call");
    assert_eq!(outbox.ids[0].id, entry);
    let lines: String = outbox.ids[0].get("events").expect("the entry's events");
    let ordered: Vec<&str> = lines
        .lines()
        .map(|l| l.split('\t').next().unwrap_or(""))
        .collect();
    assert_eq!(ordered, ids, "the new orders' events, in the order made");
    assert_eq!(
        outbox.ids[0].get::<String>("kind").as_deref(),
        Some("created")
    );
    // A later call replays b's order from its record: nothing left now either.
    let mut again = script.prepare_invoke();
    for name in ["sale", "orders", "buyers", "outbox", "deadlines"] {
        again.key(app.key(&sku, name));
    }
    again.key(app.key(&sku, "idem:k1"));
    again.arg(600).arg("b").arg(2).arg("k1").arg("1");
    let (_, _, answers): (Vec<redis::Value>, Vec<usize>, Vec<Vec<redis::Value>>) = again
        .invoke_async(&mut app.redis.clone())
        .await
        .expect("EVALSHA");
    let replay: Vec<String> = answers[0].iter().map(text).collect();
    assert_eq!(
        [&replay[0], &replay[1], &replay[6]],
        ["replayed", &id_of(1), "0"],
        "{replay:?}"
    );
    app.cleanup().await;
}
