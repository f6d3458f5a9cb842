//! The order consumer against events no purchase produces in order: a late or redelivered
//! event, an ending before its creation, and a message that is no order event at all. Each is
//! published straight to the test's own stream.

use std::time::Duration;

use async_nats::jetstream;
use flashsale::domain::event::{EventKind, OrderEvent};
use flashsale::events::jetstream::{OrderStream, ensure_stream};

use crate::helpers::nats::publish_stored;
use crate::helpers::postgres::{TestDb, spawn_consumer};
use crate::helpers::{test_settings, unique};

fn event(kind: EventKind, order_id: &str, sku: &str) -> OrderEvent {
    OrderEvent {
        event: kind,
        order_id: order_id.to_owned(),
        sku: sku.to_owned(),
        user_id: "buyer".into(),
        quantity: 1,
        unit_price: 700,
        total_amount: 700,
        created_at: "2026-11-30T10:00:00.000Z".into(),
        idempotency_key: None,
        pay_by: None,
        paid_at: None,
        payment_ref: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_and_repeated_events_never_move_an_ended_row_and_junk_is_dropped() {
    let settings = test_settings();
    let client = async_nats::connect(settings.nats.urls.clone())
        .await
        .expect("NATS");
    let js = jetstream::new(client);
    ensure_stream(&js, &OrderStream::new(&settings.nats))
        .await
        .expect("stream");
    let sku = unique("late");
    let prefix = settings.nats.subject_prefix.clone();
    let send = |e: OrderEvent, id: &str| {
        let js = js.clone();
        let subject = e.subject(&prefix);
        let id = id.to_owned();
        async move {
            publish_stored(&js, subject, &id, serde_json::to_vec(&e).expect("JSON")).await;
        }
    };

    // a: created, cancelled, then its creation again (a redelivery under another id) and a
    //    payment after the end: the row stays cancelled.
    send(event(EventKind::Created, "a", &sku), "a").await;
    send(event(EventKind::Cancelled, "a", &sku), "a.cancelled").await;
    send(event(EventKind::Created, "a", &sku), "a.again").await;
    send(event(EventKind::Paid, "a", &sku), "a.paid").await;
    // b: its expiry overtakes its creation: the ending stands in for it, and the creation
    //    that follows changes nothing.
    send(event(EventKind::Expired, "b", &sku), "b.expired").await;
    send(event(EventKind::Created, "b", &sku), "b").await;
    // Junk on an order subject, then c, which must not wait behind it.
    publish_stored(
        &js,
        format!("{prefix}.created.{sku}"),
        "junk",
        b"{not an order event".to_vec(),
    )
    .await;
    send(event(EventKind::Created, "c", &sku), "c").await;
    // c and d (awaiting payment) created again (redeliveries under other ids): no write.
    send(event(EventKind::Created, "c", &sku), "c.again").await;
    let awaiting = || OrderEvent {
        pay_by: Some("2026-11-30T10:10:00.000Z".into()),
        ..event(EventKind::Created, "d", &sku)
    };
    send(awaiting(), "d").await;
    send(awaiting(), "d.again").await;

    let db = TestDb::create().await;
    let consumer = spawn_consumer(&settings, &db);
    // Everything acknowledged (or terminated): the junk is not left to come back.
    db.wait_until_consumed(&settings, Duration::from_secs(30))
        .await;
    let rows = db.rows().await;
    assert_eq!(rows.get("a").map(String::as_str), Some("cancelled"));
    assert_eq!(rows.get("b").map(String::as_str), Some("expired"));
    assert_eq!(rows.get("c").map(String::as_str), Some("created"));
    assert_eq!(rows.get("d").map(String::as_str), Some("pending_payment"));
    assert_eq!(rows.len(), 4, "{rows:?}");
    let writes = db.writes_by_order().await;
    let written = |id: &str| {
        writes[id]
            .iter()
            .map(|(op, status)| format!("{op} {status}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(written("a"), ["INSERT created", "UPDATE cancelled"]);
    assert_eq!(written("b"), ["INSERT expired"]);
    assert_eq!(written("c"), ["INSERT created"]);
    assert_eq!(written("d"), ["INSERT pending_payment"]);
    // A row's end is when it last changed: e's updated_at, set far back once its row is
    // in, moves with its cancel.
    send(event(EventKind::Created, "e", &sku), "e").await;
    db.wait_until_consumed(&settings, Duration::from_secs(30))
        .await;
    db.execute("UPDATE orders SET updated_at = '2000-01-01T00:00:00Z' WHERE order_id = 'e'")
        .await;
    send(event(EventKind::Cancelled, "e", &sku), "e.cancelled").await;
    db.wait_until_consumed(&settings, Duration::from_secs(30))
        .await;
    let moved = db
        .query_one(
            "SELECT status, updated_at > '2000-01-02T00:00:00Z' FROM orders \
             WHERE order_id = 'e'",
        )
        .await;
    assert_eq!(moved.get::<_, String>(0), "cancelled");
    assert!(moved.get::<_, bool>(1), "updated_at moved with the cancel");
    consumer.abort();
    db.drop_schema().await;
    crate::helpers::nats::delete_stream(&settings).await;
}
