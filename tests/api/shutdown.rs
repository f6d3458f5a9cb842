//! SIGTERM/SIGINT: stop accepting, finish what is in flight, drain the outbox for a while,
//! exit 0; what could not be delivered stays in the outbox for the next process.

use std::time::Duration;

use serde_json::json;

use crate::events::{buy_all, spawn_process, users};
use crate::helpers::{test_settings, unique};
use crate::nats::{PrivateNats, wait_for_delivered};

/// Sends a signal with the `kill` command (no crate needed for one call).
fn send_signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} {pid}");
}

async fn outbox_len(app: &crate::helpers::TestApp, sku: &str) -> u64 {
    redis::cmd("XLEN")
        .arg(app.key(sku, "outbox"))
        .query_async(&mut app.redis.clone())
        .await
        .expect("XLEN")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_outbox_then_exits_0() {
    let mut nats = PrivateNats::start().await;
    let mut settings = test_settings();
    crate::helpers::use_nats(&mut settings, &nats.url());
    settings.drain_timeout = Duration::from_secs(30);
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

    send_signal(process.id().expect("running"), "TERM");
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
    settings.drain_timeout = Duration::from_secs(1);
    let (mut process, app) = spawn_process(&settings).await;
    let sku = unique("undrained");
    app.create_sale(&sku, json!({"stock": 50})).await;
    nats.stop().await;
    assert_eq!(buy_all(&app, &sku, &users("stuck", 50), 16).await.len(), 50);

    send_signal(process.id().expect("running"), "INT");
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
