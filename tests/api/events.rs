//! Orders reach JetStream exactly once: through NATS outages, process crashes, dead
//! replicas and several replicas at once. Each test has its own stream and subjects.

use std::collections::HashSet;
use std::time::Duration;

use flashsale::domain::event::EventKind;
use flashsale::domain::{Quantity, Sku, UserId};
use flashsale::store::{PurchaseRequest, Store};
use flashsale::support::settings::Confirm;
use futures::future::join_all;
use serde_json::{Value, json};

use crate::helpers::nats::{
    PrivateNats, PublishTap, Published, assert_each_order_in_order, assert_in_sale_order,
    assert_message_ids, assert_no_duplicates, publishes_per_order, wait_for_delivered,
};
use crate::helpers::postgres::{TestDb, spawn_consumer};
use crate::helpers::process::{env_of, spawn_process};
use crate::helpers::{
    ADMIN_TOKEN, assert_audit_clean, error_of, free_port, spawn_app, spawn_app_from,
    spawn_app_with, test_settings, unique,
};
use crate::helpers::{buy_all, users};

/// Order ids of the answers that accepted an order (201, or 202 while JetStream had not
/// confirmed it).
async fn accepted_ids(answers: Vec<reqwest::Response>) -> HashSet<String> {
    let (confirmed, late) = confirmed_and_late(answers).await;
    confirmed.union(&late).cloned().collect()
}

/// Order ids answered 201, and those answered 202 (JetStream late); other answers are dropped.
async fn confirmed_and_late(answers: Vec<reqwest::Response>) -> (HashSet<String>, HashSet<String>) {
    let (mut confirmed, mut late) = (HashSet::new(), HashSet::new());
    for response in answers {
        let status = response.status().as_u16();
        if status == 201 || status == 202 {
            let order: Value = response.json().await.expect("order");
            let id = order["order_id"].as_str().expect("order_id").to_owned();
            if status == 201 {
                confirmed.insert(id);
            } else {
                late.insert(id);
            }
        }
    }
    (confirmed, late)
}

/// Asserts each accepted order was published and nothing else was; each confirmed one (201)
/// exactly once: its handlers' delivery ended within the confirm timeout of the write, before
/// the relay's grace let the relay read its entry (`events/confirm.rs`). An order answered 202
/// (JetStream late) is the relay's too: at most twice alone (its handler's late try, the
/// relay's) and in at most two atomic batches (the relay's, refused whole when it held a
/// message that late try had stored, then one by one).
fn assert_published_exactly(
    publishes: &[Published],
    confirmed: &HashSet<String>,
    late: &HashSet<String>,
) {
    let published = publishes_per_order(publishes);
    let accepted: HashSet<String> = confirmed.union(late).cloned().collect();
    assert_eq!(
        published.keys().cloned().collect::<HashSet<_>>(),
        accepted,
        "the accepted orders were published, nothing else"
    );
    let repeated: Vec<_> = confirmed
        .iter()
        .filter(|id| published[*id] != 1)
        .map(|id| (id, published[id]))
        .collect();
    assert!(
        repeated.is_empty(),
        "confirmed orders published more than once: {repeated:?}"
    );
    let (batched, alone): (Vec<Published>, Vec<Published>) =
        publishes.iter().cloned().partition(|p| p.batch.is_some());
    let (alone, batched) = (publishes_per_order(&alone), publishes_per_order(&batched));
    let excess: Vec<_> = alone.iter().filter(|(_, n)| **n > 2).collect();
    assert!(
        excess.is_empty(),
        "published alone three times or more: {excess:?}"
    );
    let excess: Vec<_> = batched.iter().filter(|(_, n)| **n > 2).collect();
    assert!(
        excess.is_empty(),
        "in three atomic batches or more: {excess:?}"
    );
    println!(
        "{} orders: {} confirmed, each published once; {} late",
        accepted.len(),
        confirmed.len(),
        late.len()
    );
}

/// Asserts each order was published exactly once.
fn assert_published_once(publishes: &[Published], orders: &HashSet<String>) {
    let published = publishes_per_order(publishes);
    assert_eq!(
        published.keys().cloned().collect::<HashSet<_>>(),
        *orders,
        "the orders were published, nothing else"
    );
    let repeated: Vec<_> = published.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        repeated.is_empty(),
        "published more than once: {repeated:?}"
    );
}

fn created_ids(messages: &[crate::helpers::nats::Delivered]) -> HashSet<String> {
    messages
        .iter()
        .filter(|m| m.event.event == EventKind::Created)
        .map(|m| m.event.order_id.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_order_reaches_the_stream_and_postgres_once() {
    // One try per handler: see assert_published_once.
    let app = spawn_app_with(|s| s.nats.confirm_timeout = Duration::from_millis(500)).await;
    let db = TestDb::create().await;
    let consumer = spawn_consumer(&app.settings, &db);
    let mut tap = PublishTap::open(&app.settings).await;
    let sku = unique("e2e");
    app.create_sale(&sku, json!({"stock": 500, "price": 1200}))
        .await;

    // 500 at a time: 3,000 connections opened at once starved the test's own runtime on a
    // loaded CI machine, whose requests then came after the server's 5 s request timeout.
    let buyers = users("buyer", 3000);
    let answered: Vec<reqwest::Response> =
        futures::StreamExt::collect(futures::StreamExt::buffer_unordered(
            futures::stream::iter(buyers.iter().map(|user| app.order(&sku, user, 1))),
            500,
        ))
        .await;
    let (confirmed, late) = confirmed_and_late(answered).await;
    let accepted: HashSet<String> = confirmed.union(&late).cloned().collect();
    assert_eq!(accepted.len(), 500);

    app.wait_until_relay_idle(&sku).await;
    let publishes = tap.published().await;
    for p in &publishes {
        assert_eq!(
            p.subject,
            format!("{}.created.{sku}", app.settings.nats.subject_prefix)
        );
        let first = p.order_ids.first().expect("an event at least");
        match p.order_ids.len() {
            1 => assert_eq!(&p.message_id, first),
            n => assert_eq!(p.message_id, format!("{first}+{n}")),
        }
    }
    assert_published_exactly(&publishes, &confirmed, &late);
    let messages = wait_for_delivered(&app.settings, 500, Duration::from_secs(30)).await;
    assert_eq!(
        messages.len(),
        500,
        "exactly the accepted orders, nothing more"
    );
    assert_no_duplicates(&messages);
    assert_each_order_in_order(&messages);
    assert_eq!(created_ids(&messages), accepted);
    let prefix = &app.settings.nats.subject_prefix;
    assert_message_ids(&messages);
    for m in &messages {
        assert_eq!(m.subject, format!("{prefix}.created.{sku}"));
        assert_eq!(
            (m.event.quantity, m.event.unit_price, m.event.total_amount),
            (1, 1200, 1200)
        );
        assert!(m.event.created_at.ends_with('Z'));
    }

    db.wait_until_consumed(&app.settings, Duration::from_secs(30))
        .await;
    let rows = db.rows().await;
    assert_eq!(rows.keys().cloned().collect::<HashSet<_>>(), accepted);
    assert!(rows.values().all(|status| status == "created"));
    // Each row written once: inserted, never written again.
    db.assert_writes(&accepted, &[("INSERT", "created")]).await;
    assert_audit_clean(&app.settings, Some(&db.url)).await;
    consumer.abort();
    db.drop_schema().await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_deleted_under_the_relay_is_made_again_and_gets_what_waits() {
    // `redis` mode: only the relay publishes, so the relay is what must notice.
    let app = spawn_app_with(|s| s.nats.confirm = Confirm::Redis).await;
    let sku = unique("restream");
    app.create_sale(&sku, json!({"stock": 100})).await;
    let before = buy_all(&app, &sku, &users("before", 5), 5).await;
    let delivered = wait_for_delivered(&app.settings, 5, Duration::from_secs(30)).await;
    assert_eq!(created_ids(&delivered), before);

    // Deleted by hand while the service runs: the relay's next publishes find no stream.
    crate::helpers::nats::delete_stream(&app.settings).await;
    let after = buy_all(&app, &sku, &users("after", 5), 5).await;
    assert_eq!(after.len(), 5, "Redis alone decides");
    let delivered = wait_for_delivered(&app.settings, 5, Duration::from_secs(30)).await;
    assert_eq!(
        created_ids(&delivered),
        after,
        "the relay made the stream again and delivered what waited"
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_cannot_deliver_backs_off_instead_of_spinning() {
    // A Redis of the test's own, so its command counts are this app's alone.
    let redis = crate::helpers::redis_fixtures::LosableRedis::start().await;
    let mut nats = PrivateNats::start().await;
    let mut settings = crate::helpers::test_settings();
    settings.redis.url = redis.url();
    settings.nats.confirm = Confirm::Redis;
    crate::helpers::use_nats(&mut settings, &nats.url());
    let app = crate::helpers::spawn_app_from(settings).await;
    let sku = unique("backoff");
    app.create_sale(&sku, json!({"stock": 10})).await;
    // The relay runs: it delivered an order.
    assert_eq!(app.order(&sku, "u0", 1).await.status(), 201);
    wait_for_delivered(&app.settings, 1, Duration::from_secs(30)).await;
    nats.stop().await;
    assert_eq!(app.order(&sku, "u1", 1).await.status(), 201);
    // Until the replica sees NATS down and its relay has the order waiting: it is failing.
    let mut failing = Value::Null;
    for _ in 0..150 {
        failing = app.get("/readyz").await.json().await.expect("readiness");
        if failing["nats"] == "down" && failing["outbox"]["pending"].as_u64() >= Some(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(failing["nats"], "down", "{failing}");
    assert!(
        failing["outbox"]["pending"].as_u64() >= Some(1),
        "{failing}"
    );

    // Each failed try reads the index of waiting sales once (for /readyz's lag). Idle, the
    // relay looks every 50 ms (40 looks in 2 s); failing, it waits 0.1 s doubling to 5 s
    // between tries: a handful in 2 s. A relay that retried at once would look thousands
    // of times. (A count of work, not a latency: a slow machine only lowers it.)
    let mut check = crate::helpers::redis_connection(&redis.url()).await;
    let before = crate::helpers::redis_fixtures::command_calls(&mut check).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = crate::helpers::redis_fixtures::command_calls(&mut check).await;
    let looks = crate::helpers::redis_fixtures::delta(&before, &after, "smembers");
    assert!(
        looks < 20,
        "{looks} looks at the index in 2 s while NATS was down"
    );

    nats.restart().await;
    let delivered = wait_for_delivered(&app.settings, 2, Duration::from_secs(40)).await;
    assert_eq!(delivered.len(), 2, "delivered once NATS is back");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_reaches_a_current_server_in_atomic_batches_exactly_once() {
    backlog_in_atomic_batches(Confirm::JetStream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_redis_confirmed_orders_reaches_the_server_in_atomic_batches_exactly_once() {
    backlog_in_atomic_batches(Confirm::Redis).await;
}

/// nats-server 2.15 as shipped (sync_interval: always): the stream the relay makes takes
/// atomic batches, so a backlog left by an outage goes a batch (one acknowledgement, one
/// fsync) at a time, in either confirm mode.
async fn backlog_in_atomic_batches(confirm: Confirm) {
    let mut nats = PrivateNats::start_durable().await;
    let url = nats.url();
    let app = spawn_app_with(|s| {
        crate::helpers::use_nats(s, &url);
        s.nats.confirm = confirm;
    })
    .await;
    let sku = unique("batched");
    app.create_sale(&sku, json!({"stock": 1000})).await;
    nats.stop().await;
    let accepted = buy_all(&app, &sku, &users("waiting", 600), 32).await;
    assert_eq!(accepted.len(), 600);

    nats.restart().await;
    let messages = wait_for_delivered(&app.settings, 600, Duration::from_secs(60)).await;
    app.wait_until_relay_idle(&sku).await;
    assert_eq!(messages.len(), 600);
    assert_no_duplicates(&messages);
    assert_in_sale_order(&messages);
    assert_eq!(created_ids(&messages), accepted);
    // A message a script call (32 buyers at a time share calls), and those packed into
    // atomic batches: far fewer acknowledgements and fsyncs than events.
    let stored: HashSet<u64> = messages.iter().map(|m| m.sequence).collect();
    let batches: HashSet<&str> = messages.iter().filter_map(|m| m.batch.as_deref()).collect();
    println!(
        "{confirm:?}: 600 events in {} messages, {} atomic batches",
        stored.len(),
        batches.len()
    );
    assert!(
        stored.len() <= 600 / 4,
        "the backlog went a message a call: {} messages",
        stored.len()
    );
    assert!(
        !batches.is_empty() && batches.len() < stored.len(),
        "messages packed into atomic batches: {} batches",
        batches.len()
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiries_decided_together_reach_the_stream_together() {
    // Nobody confirms an expiry: the relay sends it, and the orders one sweep expired of a
    // sale are one outbox entry, one message, not one fsync each.
    let nats = PrivateNats::start_durable().await;
    let url = nats.url();
    let app = spawn_app_with(|s| crate::helpers::use_nats(s, &url)).await;
    let sku = unique("expiring");
    app.create_sale(&sku, json!({"stock": 200, "payment_timeout_secs": 1}))
        .await;
    let accepted = buy_all(&app, &sku, &users("unpaid", 200), 64).await;
    assert_eq!(accepted.len(), 200);

    let messages = wait_for_delivered(&app.settings, 400, Duration::from_secs(60)).await;
    app.wait_until_relay_idle(&sku).await;
    assert_eq!(
        messages.len(),
        400,
        "a created and an expired event per order"
    );
    assert_no_duplicates(&messages);
    assert_each_order_in_order(&messages);
    let expiries: Vec<_> = messages
        .iter()
        .filter(|m| m.event.event == EventKind::Expired)
        .collect();
    let expired: HashSet<String> = expiries.iter().map(|m| m.event.order_id.clone()).collect();
    assert_eq!(expired, accepted, "every unpaid order expired once");
    let stored: HashSet<u64> = expiries.iter().map(|m| m.sequence).collect();
    println!("200 expiries in {} messages", stored.len());
    assert!(
        stored.len() <= 200 / 4,
        "expiries went a message a sweep: {} messages",
        stored.len()
    );
    for m in &expiries {
        assert_eq!(
            m.subject,
            format!("{}.expired.{sku}", app.settings.nats.subject_prefix)
        );
    }
    app.cleanup().await;
}

/// Messages of one event each of `n` orders of `sku`, as a relay would read entries of a
/// payment or a cancel, or of a version before batches, from an outbox.
fn messages_of(sku: &str, n: usize) -> Vec<flashsale::domain::event::OrderMessage> {
    let digest = Sku::parse(sku).expect("sku").digest();
    (1..=n)
        .map(|i| flashsale::domain::event::OrderEvent {
            event: EventKind::Created,
            order_id: format!("{digest}-1-{i}"),
            sku: sku.to_owned(),
            user_id: format!("u{i}"),
            quantity: 1,
            unit_price: 100,
            total_amount: 100,
            created_at: "2026-11-30T12:00:00.000Z".into(),
            idempotency_key: None,
            pay_by: None,
            paid_at: None,
            payment_ref: None,
        })
        .map(flashsale::domain::event::OrderMessage::one)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_holding_an_event_already_stored_goes_one_by_one_and_stores_each_once() {
    use flashsale::events::jetstream::{OrderStream, ensure_stream};
    use flashsale::events::publish::publish_in_order;
    let nats = PrivateNats::start_durable().await;
    let mut settings = crate::helpers::test_settings();
    crate::helpers::use_nats(&mut settings, &nats.url());
    let client = async_nats::connect(nats.url()).await.expect("nats");
    let js = async_nats::jetstream::new(client);
    let stream = OrderStream::new(&settings.nats);
    let features = ensure_stream(&js, &stream).await.expect("stream");
    assert!(
        features.atomic_batches,
        "nats-server 2.15 takes atomic batches"
    );

    let events = messages_of("dup", 5);
    let all: Vec<_> = events.iter().map(Some).collect();
    // The third is stored already (its handler confirmed it; or a batch's ack was lost).
    let (sent, failure) =
        publish_in_order(&js, &stream, features.atomic_batches, &all[2..3], |_| {}).await;
    assert_eq!((sent, failure.is_none()), (1, true));

    let mut acknowledged = Vec::new();
    let (delivered, failure) = publish_in_order(&js, &stream, features.atomic_batches, &all, |i| {
        acknowledged.push(i)
    })
    .await;
    assert!(failure.is_none(), "{failure:?}");
    assert_eq!(delivered, 5);
    assert_eq!(acknowledged, vec![0, 1, 2, 3, 4]);
    let messages = delivered_on(&settings).await;
    assert_eq!(messages.len(), 5, "each event stored once");
    assert_no_duplicates(&messages);
    assert!(
        messages.iter().all(|m| m.batch.is_none()),
        "the refused batch stored nothing; each event went alone"
    );

    // A batch of new events is stored whole, under one batch id.
    let more = messages_of("dup2", 4);
    let all: Vec<_> = more.iter().map(Some).collect();
    let (delivered, failure) =
        publish_in_order(&js, &stream, features.atomic_batches, &all, |_| {}).await;
    assert_eq!((delivered, failure.is_none()), (4, true));
    let messages = delivered_on(&settings).await;
    let batches: HashSet<_> = messages[5..].iter().map(|m| m.batch.clone()).collect();
    assert_eq!(messages.len(), 9);
    assert_eq!(batches.len(), 1);
    assert!(batches.iter().all(Option::is_some));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_atomic_batches_gets_one_publish_per_event() {
    use flashsale::events::jetstream::{OrderStream, ensure_stream};
    use flashsale::events::publish::publish_in_order;
    // The machine's nats-server (Debian's 2.9.10 here; on the cluster topology, 2.15's
    // nodes, where the stream takes batches and this checks that path instead).
    let settings = crate::helpers::test_settings();
    let client = async_nats::connect(settings.nats.urls.as_slice())
        .await
        .expect("nats");
    let version = client.server_info().version.clone();
    let js = async_nats::jetstream::new(client);
    let stream = OrderStream::new(&settings.nats);
    let features = ensure_stream(&js, &stream).await.expect("stream");
    let old =
        version.starts_with("2.9.") || version.starts_with("2.10.") || version.starts_with("2.11.");
    assert_eq!(features.atomic_batches, !old, "nats-server {version}");
    let events = messages_of("plain", 3);
    let all: Vec<_> = events.iter().map(Some).collect();
    let (delivered, failure) =
        publish_in_order(&js, &stream, features.atomic_batches, &all, |_| {}).await;
    assert_eq!((delivered, failure.is_none()), (3, true));
    let messages = delivered_on(&settings).await;
    assert_eq!(messages.len(), 3);
    assert_eq!(messages.iter().all(|m| m.batch.is_some()), !old);
    crate::helpers::nats::delete_stream(&settings).await;
}

async fn delivered_on(
    settings: &flashsale::support::settings::Settings,
) -> Vec<crate::helpers::nats::Delivered> {
    crate::helpers::nats::delivered(settings).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_taken_while_nats_is_down_arrive_once_it_returns() {
    let mut nats = PrivateNats::start().await;
    let url = nats.url();
    let app = spawn_app_with(|s| crate::helpers::use_nats(s, &url)).await;
    let sku = unique("nats-down");
    app.create_sale(&sku, json!({"stock": 1000})).await;

    nats.stop().await;
    let accepted = buy_all(&app, &sku, &users("offline", 100), 32).await;
    assert_eq!(
        accepted.len(),
        100,
        "Redis alone decides: every purchase is answered 201"
    );

    // The relay reports the lag while it cannot deliver: the entries waiting, a message each
    // (32 buyers at a time share script calls, so fewer than the events).
    assert_eq!(app.outbox_events(&sku).await, 100);
    let entries = app.outbox_entries(&sku).await;
    assert!(entries < 100, "{entries} entries for 100 orders");
    let mut lag_seen = false;
    for _ in 0..50 {
        let ready: Value = app
            .client
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("readyz")
            .json()
            .await
            .expect("JSON");
        if ready["nats"] == "down" && ready["outbox"]["pending"] == entries {
            lag_seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        lag_seen,
        "/readyz shows nats down and {entries} entries waiting"
    );

    nats.restart().await;
    let db = TestDb::create().await;
    let consumer = spawn_consumer(&app.settings, &db);
    let messages = wait_for_delivered(&app.settings, 100, Duration::from_secs(40)).await;
    assert_eq!(messages.len(), 100);
    assert_no_duplicates(&messages);
    assert_in_sale_order(&messages);
    assert_eq!(created_ids(&messages), accepted);
    // Each order written to the table once (counted by the write log, not the primary key).
    db.wait_until_consumed(&app.settings, Duration::from_secs(30))
        .await;
    db.assert_writes(&accepted, &[("INSERT", "created")]).await;
    consumer.abort();
    db.drop_schema().await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_after_a_burst_loses_nothing() {
    // The process's NATS is down during the burst, so nothing can have been delivered when
    // it is killed: everything must come from the outbox, through a fresh process.
    let mut nats = PrivateNats::start().await;
    let mut settings = test_settings();
    crate::helpers::use_nats(&mut settings, &nats.url());
    let (mut process, app) = spawn_process(&settings).await;
    let sku = unique("crash");
    app.create_sale(&sku, json!({"stock": 1000})).await;
    nats.stop().await;

    let accepted = buy_all(&app, &sku, &users("burst", 1000), 64).await;
    process.start_kill().expect("SIGKILL sent");
    process.wait().await.expect("process gone");
    assert_eq!(accepted.len(), 1000);
    assert_eq!(
        app.outbox_events(&sku).await,
        1000,
        "the killed process delivered nothing"
    );

    nats.restart().await;
    // Counted where repeats cannot hide: every publish on the subjects (JetStream would drop
    // a repeat before storing it), and every write to the table (the primary key would).
    let mut tap = PublishTap::open(&settings).await;
    let db = TestDb::create().await;
    let consumer = spawn_consumer(&settings, &db);
    let replacement = spawn_app_from(settings.clone()).await;
    let messages = wait_for_delivered(&settings, 1000, Duration::from_secs(40)).await;
    assert_eq!(messages.len(), 1000);
    assert_no_duplicates(&messages);
    assert_in_sale_order(&messages);
    assert_eq!(created_ids(&messages), accepted);
    replacement.wait_until_relay_idle(&sku).await;
    assert_published_once(&tap.published().await, &accepted);
    db.wait_until_consumed(&settings, Duration::from_secs(30))
        .await;
    db.assert_writes(&accepted, &[("INSERT", "created")]).await;
    consumer.abort();
    db.drop_schema().await;
    replacement.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_a_dead_replica_read_are_delivered_once_by_the_next() {
    let settings = test_settings();
    let sku = Sku::parse(&unique("claim")).expect("sku");
    // A "replica" that takes the lease, reads the entries, publishes half of them and dies
    // before trimming any.
    let dead = Store::new(&settings.redis).expect("store");
    dead.rebuild()
        .put_sale(
            &sku,
            &flashsale::domain::sale::SaleSettings::plain(50, 1),
            None,
            0,
        )
        .await
        .expect("sale");
    for i in 0..20 {
        let request = PurchaseRequest {
            user: UserId::parse(format!("u{i}")).expect("user"),
            quantity: Quantity::ONE,
            idempotency_key: None,
            listing: flashsale::store::Listing::Listed,
            place: None,
        };
        dead.sales()
            .purchase(&sku, request)
            .await
            .expect("accepted");
    }
    assert!(
        dead.outbox()
            .take_lease(&sku, "dead-replica", settings.relay.claim_idle)
            .await
            .expect("lease")
    );
    let read = dead.outbox().read(&sku, 100, None).await.expect("read");
    assert_eq!(read.len(), 20, "the dead replica read every entry");
    let nats = async_nats::connect(settings.nats.urls.clone())
        .await
        .expect("nats");
    let js = async_nats::jetstream::new(nats);
    flashsale::events::jetstream::ensure_stream(
        &js,
        &flashsale::events::jetstream::OrderStream::new(&settings.nats),
    )
    .await
    .expect("stream");
    for (_, message) in &read[..10] {
        let message = message.as_ref().expect("readable entry");
        crate::helpers::nats::publish_stored(
            &js,
            message.subject(&settings.nats.subject_prefix),
            &message.message_id(),
            message.payload().expect("JSON"),
        )
        .await;
    }

    // The next holder re-sends the ten the dead one had published (it cannot know), and
    // JetStream keeps one of each: counted at the core level and in the table.
    let mut tap = PublishTap::open(&settings).await;
    let db = TestDb::create().await;
    let consumer = spawn_consumer(&settings, &db);
    let app = spawn_app_from(settings.clone()).await;
    let messages = wait_for_delivered(&settings, 20, Duration::from_secs(20)).await;
    assert_eq!(messages.len(), 20);
    assert_no_duplicates(&messages);
    assert_in_sale_order(&messages);
    let orders: HashSet<String> = read
        .iter()
        .filter_map(|(_, m)| m.as_ref())
        .flat_map(|m| m.events().iter().map(|e| e.order_id.clone()))
        .collect();
    assert_eq!(created_ids(&messages), orders);
    app.wait_until_relay_idle(sku.as_str()).await;
    // Each entry once by the next holder (the tap opened after the dead one's sends): alone,
    // or in an atomic batch. On a stream that takes atomic batches the entries the relay read
    // together went first in one batch with the ten the dead one had sent, which JetStream
    // refused whole, storing nothing of it, and then alone; entries younger than the relay's
    // grace at that pass went in a later batch of their own, which JetStream took.
    let (batched, alone): (Vec<Published>, Vec<Published>) = tap
        .published()
        .await
        .into_iter()
        .partition(|p| p.batch.is_some());
    let (alone, in_batches) = (publishes_per_order(&alone), publishes_per_order(&batched));
    assert!(
        alone.values().all(|n| *n == 1) && in_batches.values().all(|n| *n == 1),
        "an order sent twice the same way: alone {alone:?}, in batches {in_batches:?}"
    );
    let sent: HashSet<String> = alone.keys().chain(in_batches.keys()).cloned().collect();
    assert_eq!(
        sent, orders,
        "every entry sent by the next holder, nothing else"
    );
    db.wait_until_consumed(&settings, Duration::from_secs(30))
        .await;
    db.assert_writes(&orders, &[("INSERT", "created")]).await;
    consumer.abort();
    db.drop_schema().await;
    let left: u64 =
        redis::AsyncCommands::xlen(&mut app.redis.clone(), app.key(sku.as_str(), "outbox"))
            .await
            .expect("XLEN");
    assert_eq!(left, 0, "the next holder trimmed every delivered entry");
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_deliver_exactly_once_and_sell_exactly_the_stock() {
    // Every event through the relays, whose sale lease keeps a sale's events in order.
    let first = spawn_app_with(|s| s.nats.confirm = Confirm::Redis).await;
    let second = spawn_app_from(first.settings.clone()).await;
    let sku = unique("replicas");
    first.create_sale(&sku, json!({"stock": 301})).await;
    // A new stream's first publish may go unacknowledged while its copies elect a leader (on
    // the cluster), and the relay then sends it again, by design: counted from the second on.
    assert_eq!(first.order(&sku, "warm-up", 1).await.status(), 201);
    first.wait_until_relay_idle(&sku).await;
    let mut tap = PublishTap::open(&first.settings).await;

    let buyers = users("split", 1000);
    let answered = join_all(buyers.iter().enumerate().map(|(i, user)| {
        let replica = if i % 2 == 0 { &first } else { &second };
        replica.order(&sku, user, 1)
    }))
    .await;
    let accepted = accepted_ids(answered).await;
    assert_eq!(accepted.len(), 300);
    assert_eq!(first.redis_sold(&sku).await, 301);

    // The sale's lease lets one relay at a time publish, each event once.
    first.wait_until_relay_idle(&sku).await;
    assert_published_once(&tap.published().await, &accepted);
    let messages = wait_for_delivered(&first.settings, 301, Duration::from_secs(30)).await;
    assert_eq!(messages.len(), 301);
    assert_no_duplicates(&messages);
    assert_in_sale_order(&messages);
    assert_eq!(created_ids(&messages).len(), 301);
    assert!(created_ids(&messages).is_superset(&accepted));
    first.cleanup().await;
}

/// In `jetstream` confirm mode every handler publishes its order's event itself and removes
/// the outbox entry it confirmed before answering, so no relay (this replica's, or the other's
/// holding the sale's lease) publishes it again. A core subscription sees every publish,
/// including repeats JetStream would drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_events_are_published_once_by_their_handlers_alone() {
    // One try per handler (the confirm timeout within a try's 500 ms), on either topology.
    let first = spawn_app_with(|s| s.nats.confirm_timeout = Duration::from_millis(500)).await;
    let second = spawn_app_from(first.settings.clone()).await;
    let sku = unique("published-once");
    first.create_sale(&sku, json!({"stock": 430})).await;
    let mut tap = PublishTap::open(&first.settings).await;

    // One buyer at a time: each 201's entry is gone from the outbox when it is answered,
    // before any relay's grace could pass, and that order is published once, by its handler.
    let mut one_by_one = HashSet::new();
    for i in 0..30 {
        let response = first.order(&sku, &format!("alone-{i}"), 1).await;
        if response.status() != 201 {
            continue; // JetStream late (202): the relay's, not this check's
        }
        let order: Value = response.json().await.expect("order");
        let id = order["order_id"].as_str().expect("order_id").to_owned();
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(first.key(&sku, "outbox"))
            .arg("-")
            .arg("+")
            .query_async(&mut first.redis.clone())
            .await
            .expect("XRANGE");
        // An entry's events field holds a line an order, its id first.
        let holds = |value: &String| value.lines().any(|l| l.split('\t').next() == Some(&id));
        assert!(
            entries
                .iter()
                .all(|(_, fields)| !fields.iter().any(|(_, v)| holds(v))),
            "{id} answered 201 with its entry still in the outbox"
        );
        one_by_one.insert(id);
    }
    assert!(
        one_by_one.len() >= 20,
        "{} of 30 confirmed",
        one_by_one.len()
    );

    // Then 400 at once on both replicas.
    let buyers = users("once", 400);
    let answered = join_all(buyers.iter().enumerate().map(|(i, user)| {
        let replica = if i % 2 == 0 { &first } else { &second };
        replica.order(&sku, user, 1)
    }))
    .await;
    let (mut confirmed, late) = confirmed_and_late(answered).await;
    assert_eq!(confirmed.len() + late.len(), 400);
    assert!(
        !confirmed.is_empty(),
        "no order was confirmed: {} late",
        late.len()
    );
    first.wait_until_relay_idle(&sku).await;
    let publishes = tap.published().await;
    let alone: Vec<Published> = publishes
        .iter()
        .filter(|p| p.order_ids.iter().any(|id| one_by_one.contains(id)))
        .cloned()
        .collect();
    assert_published_once(&alone, &one_by_one);
    confirmed.extend(one_by_one);
    assert_published_exactly(&publishes, &confirmed, &late);
    let messages = wait_for_delivered(&first.settings, 430, Duration::from_secs(30)).await;
    assert_eq!(messages.len(), 430);
    assert_no_duplicates(&messages);
    first.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_returns_stock_exactly_once() {
    let app = spawn_app().await;
    let db = TestDb::create().await;
    let consumer = spawn_consumer(&app.settings, &db);
    let sku = unique("cancel");
    app.create_sale(
        &sku,
        json!({"stock": 10, "per_user_limit": 1, "price": 300}),
    )
    .await;
    let buyers = users("canceller", 10);
    let ids: Vec<String> = buy_all(&app, &sku, &buyers, 10).await.into_iter().collect();
    assert_eq!(ids.len(), 10);
    assert_eq!(app.sale_json(&sku).await["state"], "sold_out");

    // Every order cancelled twice, all at once.
    let cancels = ids.iter().chain(ids.iter()).map(|id| {
        app.client
            .post(app.url(&format!("/v1/orders/{id}/cancel")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
    });
    for response in join_all(cancels).await {
        let response = response.expect("answered");
        assert_eq!(response.status(), 200);
        let order: Value = response.json().await.expect("order");
        assert_eq!(order["status"], "cancelled");
    }
    let sale = app.sale_json(&sku).await;
    assert_eq!(
        (sale["sold"].as_u64(), sale["remaining"].as_u64()),
        (Some(0), Some(10)),
        "stock back exactly once"
    );

    let messages = wait_for_delivered(&app.settings, 20, Duration::from_secs(20)).await;
    assert_eq!(messages.len(), 20, "10 created + 10 cancelled");
    assert_no_duplicates(&messages);
    assert_each_order_in_order(&messages);
    let cancelled: HashSet<String> = messages
        .iter()
        .filter(|m| m.event.event == EventKind::Cancelled)
        .map(|m| {
            assert_eq!(
                m.subject,
                format!("{}.cancelled.{sku}", app.settings.nats.subject_prefix)
            );
            assert_eq!(
                m.message_id,
                format!("{}.cancelled", m.event.order_id),
                "one a message"
            );
            m.event.order_id.clone()
        })
        .collect();
    assert_eq!(cancelled, ids.iter().cloned().collect());
    let rows = db.wait_for_rows(10, Duration::from_secs(20)).await;
    let mut all_cancelled = false;
    for _ in 0..100 {
        if db
            .rows()
            .await
            .values()
            .filter(|s| *s == "cancelled")
            .count()
            == 10
        {
            all_cancelled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(all_cancelled, "rows marked cancelled: {rows:?}");
    // Twenty cancels, ten events: each row inserted, then cancelled once.
    db.wait_until_consumed(&app.settings, Duration::from_secs(20))
        .await;
    db.assert_writes(
        &ids.iter().cloned().collect(),
        &[("INSERT", "created"), ("UPDATE", "cancelled")],
    )
    .await;

    // The per-user allowance is free again.
    assert_eq!(buy_all(&app, &sku, &buyers, 10).await.len(), 10);

    let (status, code) = error_of(
        app.client
            .post(app.url(&format!("/v1/orders/{}-1-999/cancel", &ids[0][..16])))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("answered"),
    )
    .await;
    assert_eq!((status, code.as_str()), (404, "order_not_found"));
    let malformed = app
        .client
        .post(app.url("/v1/orders/nonsense/cancel"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("answered");
    assert_eq!(error_of(malformed).await, (404, "order_not_found".into()));
    let anonymous = app
        .client
        .post(app.url(&format!("/v1/orders/{}/cancel", ids[0])))
        .send()
        .await
        .expect("answered");
    assert_eq!(error_of(anonymous).await, (401, "unauthorized".into()));
    consumer.abort();
    db.drop_schema().await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_killed_mid_stream_leaves_an_exact_table() {
    let app = spawn_app().await;
    let db = TestDb::create().await;
    let sku = unique("consumer-crash");
    app.create_sale(&sku, json!({"stock": 3000})).await;
    // Few buyers at a time: small messages, so the consumer's first fetch is not all of them.
    let accepted = buy_all(&app, &sku, &users("row", 3000), 4).await;
    assert_eq!(accepted.len(), 3000);
    wait_for_delivered(&app.settings, 3000, Duration::from_secs(40)).await;

    let port = free_port();
    let mut consumer = tokio::process::Command::new(env!("CARGO_BIN_EXE_flashsale"))
        .arg("consume-orders")
        .envs(env_of(&app.settings, port))
        .env("FLASHSALE_DATABASE_URL", &db.url)
        .current_dir(std::env::temp_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("consumer starts");
    let mut rows_at_kill = 0;
    for _ in 0..6000 {
        rows_at_kill = db.count().await;
        if rows_at_kill > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    consumer.start_kill().expect("SIGKILL sent");
    consumer.wait().await.expect("consumer gone");
    assert!(
        rows_at_kill > 0 && rows_at_kill < 3000,
        "killed mid-stream at {rows_at_kill} rows"
    );

    let restarted = spawn_consumer(&app.settings, &db);
    // What the killed consumer held unacknowledged comes back after JetStream's ack wait
    // (30 s, consumer.rs) counted from its delivery; the rest of the wait is for a machine
    // busy with the other tests.
    db.wait_for_rows(3000, Duration::from_secs(75)).await;
    db.wait_until_consumed(&app.settings, Duration::from_secs(75))
        .await;
    let rows = db.rows().await;
    assert_eq!(rows.keys().cloned().collect::<HashSet<_>>(), accepted);
    // What the killed consumer wrote but never acknowledged came again: written once all the
    // same (a created event inserts only an absent row).
    db.assert_writes(&accepted, &[("INSERT", "created")]).await;
    restarted.abort();
    db.drop_schema().await;
    app.cleanup().await;
}

/// A stream with no leader answers a publish "no responders" (a replicated stream being
/// created, an election after a node left). The handler tries again under the same message id
/// until its confirm timeout rather than answering 202 at once: here the stream is gone and
/// comes back 300 ms later, and the purchase made meanwhile is still confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_waits_out_a_stream_that_has_no_leader_yet() {
    let app = spawn_app_with(|s| s.nats.confirm_timeout = Duration::from_secs(3)).await;
    let sku = unique("no-leader");
    app.create_sale(&sku, json!({"stock": 10})).await;
    assert_eq!(app.order(&sku, "before", 1).await.status(), 201);

    let client = async_nats::connect(app.settings.nats.urls.clone())
        .await
        .expect("NATS");
    let js = async_nats::jetstream::new(client);
    js.delete_stream(&app.settings.nats.stream)
        .await
        .expect("stream deleted");
    let settings = app.settings.clone();
    let (answer, ()) = tokio::join!(app.order(&sku, "during", 1), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        flashsale::events::jetstream::ensure_stream(
            &js,
            &flashsale::events::jetstream::OrderStream::new(&settings.nats),
        )
        .await
        .expect("stream back");
    });
    assert_eq!(answer.status(), 201);
    let order: Value = answer.json().await.expect("order");
    assert_eq!(order["delivery"], "confirmed");
    let stored = wait_for_delivered(&app.settings, 1, Duration::from_secs(10)).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(
        Some(stored[0].event.order_id.as_str()),
        order["order_id"].as_str()
    );
    app.cleanup().await;
}

/// The limits JetStream holds for a stream: (max age, max bytes; -1 = no limit).
async fn limits(js: &async_nats::jetstream::Context, stream: &str) -> (Duration, i64) {
    let mut stream = js.get_stream(stream).await.expect("the stream exists");
    let config = &stream.info().await.expect("stream info").config;
    (config.max_age, config.max_bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_keeps_what_the_retention_settings_say_and_follows_a_change() {
    use flashsale::support::settings::Retention;
    let week = Duration::from_secs(7 * 86_400);
    let app = crate::helpers::spawn_app_with(|s| {
        s.nats.stream_retention = Retention {
            max_age: Some(week),
            max_bytes: Some(64 << 20),
        };
        s.nats.definitions_retention.max_age = Some(week * 4);
    })
    .await;
    let sku = unique("retained");
    app.create_sale(&sku, json!({"stock": 5})).await;
    app.buy_accepted(&sku, "u1").await;
    let nats = async_nats::connect(app.settings.nats.urls.as_slice())
        .await
        .expect("nats");
    let js = async_nats::jetstream::new(nats);
    let stream = app.settings.nats.stream.clone();
    let bucket = format!("KV_{stream}_SALES");
    assert_eq!(limits(&js, &stream).await, (week, 64 << 20));
    assert_eq!(limits(&js, &bucket).await, (week * 4, -1));

    // A replica started without limits lifts them from the existing stream and bucket (its
    // first PUT opens the bucket, its first purchase the stream).
    let mut unlimited = app.settings.clone();
    unlimited.nats.stream_retention = Retention::default();
    unlimited.nats.definitions_retention = Retention::default();
    let later = crate::helpers::spawn_app_from(unlimited).await;
    later.put_sale(&sku, json!({"stock": 6})).await;
    later.buy_accepted(&sku, "u2").await;
    assert_eq!(limits(&js, &stream).await, (Duration::ZERO, -1));
    assert_eq!(limits(&js, &bucket).await, (Duration::ZERO, -1));
    app.cleanup().await;
}

/// The outbox lease (`lua/relay_lease.lua`): its holder renews it as often as it likes, no
/// other replica takes it while it is held, and another takes it once it lapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_lease_is_renewed_by_its_holder_and_taken_by_another_only_once_it_lapses() {
    let settings = test_settings();
    let sku = Sku::parse(&unique("lease")).expect("sku");
    let store = Store::new(&settings.redis).expect("store");
    let outbox = store.outbox();
    // Long enough that a stalled test thread cannot let it lapse between two lines.
    let ttl = Duration::from_secs(2);
    let take = |consumer: &'static str| outbox.take_lease(&sku, consumer, ttl);
    assert!(take("first").await.expect("lease"), "a free lease is taken");
    // Renewed past its first TTL, by its holder only.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(take("first").await.expect("lease"), "its holder renews it");
        assert!(
            !take("second").await.expect("lease"),
            "held, it is not taken"
        );
    }
    tokio::time::sleep(ttl + Duration::from_millis(500)).await;
    assert!(
        take("second").await.expect("lease"),
        "lapsed, another takes it"
    );
    assert!(!take("first").await.expect("lease"), "and holds it");
    // The lease is the sale's only key here, and it lapses by itself: nothing to clean.
}

/// The delivering mark (`store/delivering.rs`): while a handler of this replica delivers an
/// entry, this replica's relay reads the outbox only up to it, whatever its age; the mark
/// dropped, the entry and those after it are the relay's again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_reads_up_to_an_entry_a_handler_is_delivering_and_past_it_once_done() {
    let settings = test_settings();
    let sku = Sku::parse(&unique("delivering")).expect("sku");
    let store = Store::new(&settings.redis).expect("store");
    store
        .rebuild()
        .put_sale(
            &sku,
            &flashsale::domain::sale::SaleSettings::plain(10, 1),
            None,
            0,
        )
        .await
        .expect("sale");
    // Three calls, three entries.
    for i in 0..3 {
        let request = PurchaseRequest {
            user: UserId::parse(format!("u{i}")).expect("user"),
            quantity: Quantity::ONE,
            idempotency_key: None,
            listing: flashsale::store::Listing::Listed,
            place: None,
        };
        store
            .sales()
            .purchase(&sku, request)
            .await
            .expect("accepted");
    }
    let outbox = store.outbox();
    let ids: Vec<String> = outbox
        .read(&sku, 10, None)
        .await
        .expect("read")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids.len(), 3, "an entry a call");
    let read_ids = || async {
        let read = outbox.read(&sku, 10, None).await.expect("read");
        read.into_iter().map(|(id, _)| id).collect::<Vec<_>>()
    };
    {
        let _second = outbox.delivering(&sku, &ids[1]);
        assert_eq!(
            read_ids().await,
            ids[..1],
            "up to the entry being delivered"
        );
        let _first = outbox.delivering(&sku, &ids[0]);
        assert!(
            read_ids().await.is_empty(),
            "nothing before the first one delivered"
        );
    }
    assert_eq!(
        read_ids().await,
        ids,
        "every entry once the deliveries are done"
    );
    // An app on the namespace only to clean it (and the stream its relay makes).
    spawn_app_from(settings).await.cleanup().await;
}
