//! SIGTERM/SIGINT: stop accepting, finish what is in flight, drain the outbox for a while,
//! exit 0; what could not be delivered stays in the outbox for the next process.

use std::time::Duration;

use serde_json::json;

use crate::helpers::nats::{PrivateNats, wait_for_delivered};
use crate::helpers::process::spawn_process;
use crate::helpers::{buy_all, users};
use crate::helpers::{signal, test_settings, unique};

async fn outbox_len(app: &crate::helpers::TestApp, sku: &str) -> usize {
    app.outbox_events(sku).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_outbox_then_exits_0() {
    let mut nats = PrivateNats::start().await;
    let mut settings = test_settings();
    crate::helpers::use_nats(&mut settings, &nats.url());
    settings.relay.drain_timeout = Duration::from_secs(30);
    let (mut process, app) = spawn_process(&settings).await;
    let sku = unique("drain");
    app.create_sale(&sku, json!({"stock": 200})).await;

    nats.stop().await;
    let accepted = buy_all(&app, &sku, &users("drain", 200), 32).await;
    assert_eq!(accepted.len(), 200);
    assert_eq!(
        outbox_len(&app, &sku).await,
        200,
        "nothing delivered while NATS is down"
    );

    signal(process.id().expect("running"), "-TERM");
    nats.restart().await;
    let status = tokio::time::timeout(Duration::from_secs(40), process.wait())
        .await
        .expect("exits within the drain timeout")
        .expect("exit status");
    assert_eq!(status.code(), Some(0));
    assert_eq!(outbox_len(&app, &sku).await, 0, "drained before exiting");
    let messages = wait_for_delivered(&settings, 200, Duration::from_secs(5)).await;
    assert_eq!(messages.len(), 200);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_with_nats_down_exits_0_and_leaves_the_rest_in_the_outbox() {
    let mut nats = PrivateNats::start().await;
    let mut settings = test_settings();
    crate::helpers::use_nats(&mut settings, &nats.url());
    settings.relay.drain_timeout = Duration::from_secs(1);
    let (mut process, app) = spawn_process(&settings).await;
    let sku = unique("undrained");
    app.create_sale(&sku, json!({"stock": 50})).await;
    nats.stop().await;
    assert_eq!(buy_all(&app, &sku, &users("stuck", 50), 16).await.len(), 50);

    signal(process.id().expect("running"), "-INT");
    let status = tokio::time::timeout(Duration::from_secs(20), process.wait())
        .await
        .expect("gives up draining after the timeout")
        .expect("exit status");
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        outbox_len(&app, &sku).await,
        50,
        "kept for the next process"
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_every_purchase_in_flight_before_exiting() {
    let redis_port = crate::helpers::free_port();
    let _redis = crate::helpers::private_redis(redis_port).await;
    let mut settings = test_settings();
    settings.redis.url = format!("redis://127.0.0.1:{redis_port}");
    let (mut process, app) = spawn_process(&settings).await;
    app.wait_until_ready().await;
    let sku = unique("in-flight");
    app.create_sale(&sku, json!({"stock": 100})).await;

    // Redis holds every write for three seconds (within the test's 5 s Redis timeout): the
    // purchases sent meanwhile are in flight (queued in the service, or in its script call)
    // when SIGTERM comes.
    let mut check = crate::helpers::redis_connection(&app.settings.redis.url).await;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(3000)
        .arg("WRITE")
        .query_async(&mut check)
        .await
        .expect("CLIENT PAUSE");
    let purchases: Vec<_> = (0..40)
        .map(|i| {
            let request = app
                .client
                .post(app.url(&format!("/v1/sales/{sku}/orders")))
                .json(&json!({"user_id": format!("u{i}"), "quantity": 1}))
                .send();
            tokio::spawn(async move {
                let response = request.await.expect("an answer, not a dropped connection");
                let status = response.status().as_u16();
                let body: serde_json::Value = response.json().await.expect("a JSON answer");
                (status, body)
            })
        })
        .collect();
    // The first script call waits in the pause, and every purchase is past the listener (a
    // stop resets what is still queued there): the service holds decisions in flight.
    crate::helpers::redis_fixtures::wait_until_a_client_is_held(&mut check).await;
    let port = app
        .address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    crate::helpers::process::wait_until_accepted(port, purchases.len()).await;
    signal(process.id().expect("running"), "-TERM");

    let mut accepted = std::collections::HashSet::new();
    for purchase in purchases {
        let (status, body) = purchase.await.expect("task");
        match status {
            201 => {
                accepted.insert(body["order_id"].as_str().expect("id").to_owned());
            }
            // Not decided before the stop: retryable, and nothing was sold for it.
            503 => assert_eq!(body["error"], "unavailable", "{body}"),
            other => panic!("{other} {body}"),
        }
    }
    let status = tokio::time::timeout(Duration::from_secs(30), process.wait())
        .await
        .expect("exits")
        .expect("exit status");
    assert_eq!(status.code(), Some(0));
    assert!(
        !accepted.is_empty(),
        "the purchases in flight were finished"
    );
    assert_eq!(app.redis_sold(&sku).await, accepted.len() as u64);
    let stored = wait_for_delivered(&settings, accepted.len(), Duration::from_secs(10)).await;
    let in_stream: std::collections::HashSet<String> =
        stored.into_iter().map(|m| m.event.order_id).collect();
    assert_eq!(in_stream, accepted, "every 201 is in JetStream");
    // The port no longer answers.
    assert!(app.client.get(app.url("/healthz")).send().await.is_err());
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_the_live_streams_at_once() {
    let mut settings = test_settings();
    settings.relay.drain_timeout = Duration::from_secs(1);
    let (mut process, app) = spawn_process(&settings).await;
    let sku = unique("livestop");
    app.create_sale(&sku, json!({"stock": 5})).await;
    let mut live = crate::helpers::sse::LiveStream::open(&app, &sku, None).await;
    assert_eq!(live.next().await.remaining(), 5);

    signal(process.id().expect("running"), "-TERM");
    // Not the 30 s actix-web would wait for a response still streaming.
    assert!(
        live.ends_within(Duration::from_secs(5)).await,
        "the stream ends when the service stops"
    );
    let status = tokio::time::timeout(Duration::from_secs(10), process.wait())
        .await
        .expect("exits without waiting on its viewers")
        .expect("exit status");
    assert_eq!(status.code(), Some(0));
    app.cleanup().await;
}

/// Once a stopped service has returned, nothing of it runs on: the sweeper, the archiver, the
/// change listener, the live feeds and the relay have all ended, so the last holder of its
/// Redis connection is gone and the server counts none of its clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_background_task_outlives_a_stopped_service() {
    let redis_port = crate::helpers::free_port();
    let _redis = crate::helpers::private_redis(redis_port).await;
    let mut settings = test_settings();
    settings.redis.url = format!("redis://127.0.0.1:{redis_port}");
    settings.relay.drain_timeout = Duration::from_secs(1);
    let (app, stopper, serving) = crate::helpers::spawn_stoppable(settings).await;
    app.wait_until_ready().await;
    // Work for every background task: an order awaiting payment (the sweeper), a watched
    // sale (a live feed, the change listener), an event (the relay).
    let sku = unique("joined");
    app.create_sale(&sku, json!({"stock": 5, "payment_timeout_secs": 60}))
        .await;
    let mut live = crate::helpers::sse::LiveStream::open(&app, &sku, None).await;
    assert_eq!(live.next().await.remaining(), 5);
    let bought = buy_all(&app, &sku, &users("joined", 2), 2).await;
    assert_eq!(bought.len(), 2);

    stopper.stop().await;
    tokio::time::timeout(Duration::from_secs(20), serving)
        .await
        .expect("the service returns")
        .expect("task")
        .expect("served");
    drop(app);
    let mut check =
        crate::helpers::redis_connection(&format!("redis://127.0.0.1:{redis_port}")).await;
    let mut clients = String::new();
    for _ in 0..100 {
        clients = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut check)
            .await
            .expect("CLIENT LIST");
        // This check's own connection is the only one left.
        if clients.lines().count() == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the stopped service still holds connections 5 s after returning:\n{clients}");
}
