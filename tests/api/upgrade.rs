//! A record written before batches (one event a JetStream message, one an outbox entry) reads
//! the same after the upgrade: the relay delivers an old entry, the rebuild folds old
//! messages beside new ones, the audit agrees.

use std::time::Duration;

use flashsale::domain::event::{EventKind, OrderEvent};
use flashsale::domain::sale::format_time;
use flashsale::support::settings::Confirm;
use serde_json::json;

use crate::helpers::nats::{delivered, publish_stored, wait_for_delivered};
use crate::helpers::{assert_audit_clean, buy_all, read_order, spawn_app_with, unique, users};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_written_before_batches_folds_the_same_after_the_upgrade() {
    // The relay publishes everything: the old outbox entry goes its way.
    let app = spawn_app_with(|s| s.nats.confirm = Confirm::Redis).await;
    let sku = unique("upgrade");
    app.create_sale(
        &sku,
        json!({"stock": 10, "price": 100, "payment_timeout_secs": 600}),
    )
    .await;
    // Three orders of today's code: one message for the call that made them all, or a few.
    let new_ids = buy_all(&app, &sku, &users("new", 3), 3).await;
    assert_eq!(new_ids.len(), 3);
    app.wait_until_relay_idle(&sku).await;

    // Three orders as the version before batches published them: one JSON event a message,
    // under the order's own id; one of them then paid, one cancelled.
    let oid = app.redis_hget(&sku, "sale", "oid").await.expect("oid");
    let seq: u64 = app
        .redis_hget(&sku, "sale", "seq")
        .await
        .and_then(|s| s.parse().ok())
        .expect("seq");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let old = |n: u64, kind: EventKind| OrderEvent {
        event: kind,
        order_id: format!("{oid}-{}", seq + n),
        sku: sku.clone(),
        user_id: format!("old-{n}"),
        quantity: 1,
        unit_price: 100,
        total_amount: 100,
        created_at: format_time(now_ms),
        idempotency_key: None,
        pay_by: Some(format_time(now_ms + 600_000)),
        paid_at: (kind == EventKind::Paid).then(|| format_time(now_ms + 1_000)),
        payment_ref: (kind == EventKind::Paid).then(|| "psp-old".to_owned()),
    };
    let js = async_nats::jetstream::new(
        async_nats::connect(app.settings.nats.urls.as_slice())
            .await
            .expect("nats"),
    );
    let prefix = &app.settings.nats.subject_prefix;
    for event in [
        old(1, EventKind::Created),
        old(2, EventKind::Created),
        old(3, EventKind::Created),
        old(1, EventKind::Paid),
        old(2, EventKind::Cancelled),
    ] {
        publish_stored(
            &js,
            event.subject(prefix),
            &event.message_id(),
            serde_json::to_vec(&event).expect("JSON"),
        )
        .await;
    }

    // And an outbox entry as the version before batches wrote it: the event's fields are the
    // entry's. The relay reads it and publishes it under the order's own id.
    let waiting = old(4, EventKind::Created);
    let _: String = redis::cmd("XADD")
        .arg(app.key(&sku, "outbox"))
        .arg("*")
        .arg(&[
            ("kind", "created".to_owned()),
            ("order_id", waiting.order_id.clone()),
            ("user_id", waiting.user_id.clone()),
            ("quantity", "1".to_owned()),
            ("unit_price", "100".to_owned()),
            ("created_at", now_ms.to_string()),
            ("idem", String::new()),
            ("pay_by", (now_ms + 600_000).to_string()),
        ])
        .query_async(&mut app.redis.clone())
        .await
        .expect("XADD");
    let _: i64 = redis::cmd("SADD")
        .arg(format!("{}:outbox_waiting", app.settings.redis.namespace))
        .arg(&sku)
        .query_async(&mut app.redis.clone())
        .await
        .expect("SADD");
    // 3 new events (in one to three messages), 5 old messages, the old entry's.
    let messages = wait_for_delivered(&app.settings, 9, Duration::from_secs(20)).await;
    let relayed: Vec<_> = messages
        .iter()
        .filter(|m| m.event.order_id == waiting.order_id)
        .collect();
    assert_eq!(relayed.len(), 1, "the old entry delivered once");
    assert_eq!(
        relayed[0].message_id, waiting.order_id,
        "under the order's own id"
    );
    assert_eq!(relayed[0].event, waiting, "the same event");

    // Redis loses the sale: the next read rebuilds it from the mixed record.
    for name in ["sale", "orders", "buyers", "deadlines"] {
        let _: () = redis::AsyncCommands::del(&mut app.redis.clone(), app.key(&sku, name))
            .await
            .expect("DEL");
    }
    let sale = app.sale_json(&sku).await;
    // 3 new + 4 old created, 1 old cancelled: 6 units held.
    assert_eq!(sale["sold"], 6, "{sale}");
    assert_eq!(sale["remaining"], 4);
    let status = |n: u64| {
        let id = format!("{oid}-{}", seq + n);
        let app = &app;
        async move { read_order(app, &id).await["status"].clone() }
    };
    assert_eq!(status(1).await, "paid");
    assert_eq!(status(2).await, "cancelled");
    assert_eq!(status(3).await, "pending_payment");
    assert_eq!(status(4).await, "pending_payment");
    for id in &new_ids {
        assert_eq!(read_order(&app, id).await["status"], "pending_payment");
    }
    // New orders continue after the old ones' sequence.
    let next = buy_all(&app, &sku, &users("after", 1), 1).await;
    let next_seq: u64 = next
        .iter()
        .next()
        .and_then(|id| id.rsplit('-').next()?.parse().ok())
        .expect("an order id");
    assert!(
        next_seq > seq + 4,
        "numbered after every folded order: {next_seq}"
    );
    assert_eq!(app.sale_json(&sku).await["sold"], 7);
    app.wait_until_relay_idle(&sku).await;
    assert_eq!(delivered(&app.settings).await.len(), 10);
    assert_audit_clean(&app.settings, None).await;
    app.cleanup().await;
}
