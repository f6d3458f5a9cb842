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
