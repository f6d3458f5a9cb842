//! The durability cases against JetStream's durability boundary as shipped: nats-server 2.15
//! with `nats-server.conf` (`sync_interval: always`), the configuration docker-compose uses.

use std::collections::HashSet;
use std::time::Duration;

use flashsale::support::settings::Confirm;
use serde_json::{Value, json};

use crate::helpers::nats::{PrivateNats, assert_no_duplicates, wait_for_delivered};
use crate::helpers::redis_fixtures::LosableRedis;
use crate::helpers::users;
use crate::helpers::{assert_audit_clean, spawn_app_with, unique};
use crate::recovery::{no_confirmed_order_lost, sale_across_a_restart};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_configuration_fsyncs_every_write() {
    let nats = PrivateNats::start_durable().await;
    let varz: Value = reqwest::get(format!("http://127.0.0.1:{}/varz", nats.monitor_port()))
        .await
        .expect("monitoring answers")
        .json()
        .await
        .expect("varz is JSON");
    assert_eq!(varz["jetstream"]["config"]["sync_always"], true, "{varz}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_survives_a_redis_restart_on_durable_jetstream() {
    let nats = PrivateNats::start_durable().await;
    sale_across_a_restart(Some(&nats)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loss_mid_burst_loses_no_confirmed_order_on_durable_jetstream() {
    let nats = PrivateNats::start_durable().await;
    no_confirmed_order_lost(Some(&nats)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_orders_outlive_a_killed_nats_server_and_then_redis() {
    let mut nats = PrivateNats::start_durable().await;
    let mut redis = LosableRedis::start().await;
    let nats_url = nats.url();
    let app = spawn_app_with(|s| {
        s.redis.url = redis.url();
        crate::helpers::use_nats(s, &nats_url);
        s.nats.confirm = Confirm::JetStream;
    })
    .await;
    let sku = unique("durable");
    app.create_sale(&sku, json!({"stock": 50})).await;
    let mut confirmed = HashSet::new();
    for user in users("d", 30) {
        let response = app.order(&sku, &user, 1).await;
        assert_eq!(response.status(), 201);
        let order: Value = response.json().await.expect("order");
        assert_eq!(order["delivery"], "confirmed");
        confirmed.insert(order["order_id"].as_str().expect("id").to_owned());
    }

    // SIGKILL: nothing flushed on the way out; every acknowledged write was synced already.
    nats.stop().await;
    nats.restart().await;
    redis.restart_empty_for(&[&app]).await;
    let messages = wait_for_delivered(&app.settings, 30, Duration::from_secs(20)).await;
    assert_no_duplicates(&messages);
    let in_stream: HashSet<String> = messages.iter().map(|m| m.event.order_id.clone()).collect();
    assert_eq!(in_stream, confirmed);
    // Rebuilt from the restarted server: 20 left, no more.
    let sale = app.sale_json(&sku).await;
    assert_eq!(sale["remaining"], 20);
    assert_audit_clean(&app.settings, None).await;
    app.cleanup().await;
}

/// A durable server and an app confirming with it (`FLASHSALE_CONFIRM=jetstream`).
async fn app_on(nats: &PrivateNats, confirm_timeout: Duration) -> crate::helpers::TestApp {
    let nats_url = nats.url();
    spawn_app_with(|s| {
        crate::helpers::use_nats(s, &nats_url);
        s.nats.confirm = Confirm::JetStream;
        s.nats.confirm_timeout = confirm_timeout;
    })
    .await
}

/// The ids of the accepted orders (201 or 202) and of those confirmed (201).
fn accepted_and_confirmed(answers: &[(u16, Value)]) -> (HashSet<String>, HashSet<String>) {
    let (mut accepted, mut confirmed) = (HashSet::new(), HashSet::new());
    for (status, order) in answers {
        assert!([201, 202].contains(status), "{status} {order}");
        let id = order["order_id"].as_str().expect("order_id").to_owned();
        if *status == 201 {
            confirmed.insert(id.clone());
        }
        accepted.insert(id);
    }
    (accepted, confirmed)
}

/// Asserts the stream holds each accepted order's creation exactly once, nothing else, and
/// every confirmed one among them.
async fn assert_stream_holds_each_once(
    app: &crate::helpers::TestApp,
    accepted: &HashSet<String>,
    confirmed: &HashSet<String>,
) -> Vec<crate::helpers::nats::Delivered> {
    let messages = wait_for_delivered(&app.settings, accepted.len(), Duration::from_secs(30)).await;
    assert_no_duplicates(&messages);
    let in_stream: HashSet<String> = messages.iter().map(|m| m.event.order_id.clone()).collect();
    assert_eq!(
        &in_stream, accepted,
        "each accepted order in the stream, nothing else"
    );
    assert!(confirmed.is_subset(&in_stream));
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_reaches_a_durable_server_a_message_per_call_each_once() {
    let nats = PrivateNats::start_durable().await;
    let app = app_on(&nats, Duration::from_secs(5)).await;
    let sku = unique("crowd");
    app.create_sale(&sku, json!({"stock": 600})).await;
    let answers = crate::helpers::buy_each(&app, &sku, &users("c", 600), 64).await;
    let (accepted, confirmed) = accepted_and_confirmed(&answers);
    assert_eq!(accepted.len(), 600);
    let messages = assert_stream_holds_each_once(&app, &accepted, &confirmed).await;
    // The handlers' events went to JetStream a message per script call (64 buyers at a time
    // share calls): one acknowledgement and one fsync for each call's orders.
    crate::helpers::nats::assert_message_ids(&messages);
    let stored: HashSet<u64> = messages.iter().map(|m| m.sequence).collect();
    println!(
        "{} of 600 confirmed; 600 events stored in {} messages",
        confirmed.len(),
        stored.len()
    );
    assert!(
        stored.len() <= 600 / 4,
        "600 events in {} messages",
        stored.len()
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgements_lost_to_a_killed_server_lose_and_duplicate_nothing() {
    // SIGKILL mid-burst: batches the server had stored (synced) when it died were never
    // acknowledged. Their handlers answer 202, the relay sends them again after the restart,
    // and JetStream, which rebuilt its duplicate window from the store, drops the repeats.
    let mut nats = PrivateNats::start_durable().await;
    let app = app_on(&nats, Duration::from_secs(2)).await;
    let sku = unique("ack-lost");
    app.create_sale(&sku, json!({"stock": 500})).await;
    let buyers = users("lost", 500);
    let (answers, ()) = tokio::join!(crate::helpers::buy_each(&app, &sku, &buyers, 64), async {
        app.wait_until_sold(&sku, 150).await;
        nats.stop().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        nats.restart().await;
    });
    let (accepted, confirmed) = accepted_and_confirmed(&answers);
    assert_eq!(accepted.len(), 500);
    app.wait_until_relay_idle(&sku).await;
    assert_stream_holds_each_once(&app, &accepted, &confirmed).await;
    println!("{} of 500 confirmed across the kill", confirmed.len());
    assert_audit_clean(&app.settings, None).await;
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_and_handlers_of_two_replicas_racing_over_a_stalled_server_store_each_once() {
    // The server stalls 1.5 s mid-burst with batches in flight: past the relays' grace both
    // replicas' relays send the waiting events again while the handlers' batches are still
    // out. Whichever copy lands first is stored; an atomic batch meeting a stored id is
    // refused whole and goes again one by one; repeats are dropped.
    let nats = PrivateNats::start_durable().await;
    let first = app_on(&nats, Duration::from_secs(3)).await;
    let second = crate::helpers::spawn_app_from(first.settings.clone()).await;
    let sku = unique("stalled");
    first.create_sale(&sku, json!({"stock": 600})).await;
    let mut tap = crate::helpers::nats::PublishTap::open(&first.settings).await;
    let buyers = users("s", 600);
    let (left, right) = buyers.split_at(300);
    let (one, two, ()) = tokio::join!(
        crate::helpers::buy_each(&first, &sku, left, 32),
        crate::helpers::buy_each(&second, &sku, right, 32),
        async {
            first.wait_until_sold(&sku, 150).await;
            nats.pause();
            tokio::time::sleep(Duration::from_millis(1500)).await;
            nats.resume();
        }
    );
    let answers: Vec<(u16, Value)> = one.into_iter().chain(two).collect();
    let (accepted, confirmed) = accepted_and_confirmed(&answers);
    assert_eq!(accepted.len(), 600);
    first.wait_until_relay_idle(&sku).await;
    assert_stream_holds_each_once(&first, &accepted, &confirmed).await;
    // The race took place: events went out more than once (a handler's try after 500 ms
    // without an answer, a relay's after its grace), and were stored once all the same.
    let sent = crate::helpers::nats::publishes_per_order(&tap.published().await);
    let repeated = sent.values().filter(|n| **n > 1).count();
    println!(
        "{} of 600 confirmed across the stall; {repeated} events sent more than once",
        confirmed.len()
    );
    assert!(
        repeated > 0,
        "nothing was sent twice: the stall raced nothing"
    );
    assert_audit_clean(&first.settings, None).await;
    first.cleanup().await;
}
