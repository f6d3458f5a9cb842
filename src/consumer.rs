//! The order consumer (`flashsale consume-orders`): a durable JetStream pull consumer that
//! writes every order event into PostgreSQL.
//!
//! Each fetched batch is applied in one transaction and acknowledged only after it commits,
//! so a crash at any point means redelivery, never loss. Redelivery is harmless: a created
//! event inserts only if the row is absent, a cancellation only moves a row to `cancelled`.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures::StreamExt;
use tokio_postgres::NoTls;

use crate::config::Settings;
use crate::event::{EventKind, OrderEvent};
use crate::jetstream::{OrderStream, StreamSetupError, ensure_stream};
use crate::order::OrderStatus;

const SCHEMA: &str = include_str!("../sql/schema.sql");
/// Events per fetch, and so per transaction.
const BATCH: usize = 200;
/// A fetch returns after this long even when fewer events came (so shutdown is prompt).
const FETCH_WAIT: Duration = Duration::from_millis(500);
/// JetStream redelivers an event not acknowledged within this.
const ACK_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("nats: {0}")]
    Nats(String),
    #[error(transparent)]
    Stream(#[from] StreamSetupError),
}

fn nats_error(e: impl std::fmt::Display) -> ConsumerError {
    ConsumerError::Nats(e.to_string())
}

/// Runs until `shutdown` completes, reconnecting with back-off when PostgreSQL or NATS fail.
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut failures: u32 = 0;
    loop {
        tokio::select! {
            outcome = session(&settings) => {
                let e = match outcome { Ok(never) => match never {}, Err(e) => e };
                if failures == 0 {
                    log::warn!("order consumer failed, retrying: {e}");
                }
                failures = failures.saturating_add(1);
            }
            _ = &mut shutdown => {
                log::info!("order consumer stopped");
                return;
            }
        }
        let delay = Duration::from_millis(200) * 2u32.pow(failures.min(5));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = &mut shutdown => return,
        }
    }
}

/// One connected stretch: set up, then apply batches until something fails. A batch being
/// applied when `run` is told to stop is dropped before its commit and so redelivered later.
async fn session(settings: &Settings) -> Result<std::convert::Infallible, ConsumerError> {
    let (db, connection) = tokio_postgres::connect(&settings.database_url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            log::warn!("postgres connection closed: {e}");
        }
    });
    let mut db = db;
    db.batch_execute(SCHEMA).await?;

    let nats = async_nats::connect(settings.nats_urls.as_slice())
        .await
        .map_err(nats_error)?;
    let js = jetstream::new(nats);
    ensure_stream(&js, &OrderStream::new(settings)).await?;
    let stream = js.get_stream(&settings.stream).await.map_err(nats_error)?;
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            &settings.consumer_name,
            pull::Config {
                durable_name: Some(settings.consumer_name.clone()),
                filter_subject: format!("{}.>", settings.subject_prefix),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                ..Default::default()
            },
        )
        .await
        .map_err(nats_error)?;
    log::info!(
        "order consumer {} reading {} into postgres",
        settings.consumer_name,
        settings.stream
    );

    loop {
        let mut fetched = consumer
            .fetch()
            .max_messages(BATCH)
            .expires(FETCH_WAIT)
            .messages()
            .await
            .map_err(nats_error)?;
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(message) = fetched.next().await {
            batch.push(message.map_err(nats_error)?);
        }
        if batch.is_empty() {
            continue;
        }

        let mut unreadable = Vec::new();
        let transaction = db.transaction().await?;
        for (index, message) in batch.iter().enumerate() {
            match serde_json::from_slice::<OrderEvent>(&message.payload) {
                Ok(event) => apply(&transaction, &event).await?,
                Err(e) => {
                    log::error!(
                        "event on {} is not an order event, dropped: {e}",
                        message.subject
                    );
                    unreadable.push(index);
                }
            }
        }
        transaction.commit().await?;

        // Only now: everything above is durable.
        for (index, message) in batch.iter().enumerate() {
            let kind = if unreadable.contains(&index) {
                AckKind::Term
            } else {
                AckKind::Ack
            };
            message.ack_with(kind).await.map_err(nats_error)?;
        }
    }
}

async fn apply(
    db: &tokio_postgres::Transaction<'_>,
    event: &OrderEvent,
) -> Result<(), tokio_postgres::Error> {
    let status = match event.event {
        EventKind::Created if event.pay_by.is_some() => OrderStatus::PendingPayment,
        EventKind::Created => OrderStatus::Created,
        EventKind::Paid => OrderStatus::Paid,
        EventKind::Expired => OrderStatus::Expired,
        EventKind::Cancelled => OrderStatus::Cancelled,
    };
    // Every event carries the whole order, so an ending event also stands in for a created
    // event that has not arrived (it cannot overtake it on one stream, but this costs
    // nothing). A row moves only out of created / pending_payment, once: a redelivered or
    // late event changes nothing.
    db.execute(
        "INSERT INTO orders (order_id, sku, user_id, quantity, unit_price, total_amount,
                             created_at, status, pay_by, paid_at, payment_ref)
         VALUES ($1, $2, $3, $4, $5, $6, ($7::text)::timestamptz, $8,
                 ($9::text)::timestamptz, ($10::text)::timestamptz, $11)
         ON CONFLICT (order_id) DO UPDATE
             SET status = EXCLUDED.status, paid_at = EXCLUDED.paid_at,
                 payment_ref = EXCLUDED.payment_ref, updated_at = now()
         WHERE orders.status IN ('created', 'pending_payment')
           AND EXCLUDED.status NOT IN ('created', 'pending_payment')",
        &[
            &event.order_id,
            &event.sku,
            &event.user_id,
            &i32::try_from(event.quantity).unwrap_or(i32::MAX),
            &i64::try_from(event.unit_price).unwrap_or(i64::MAX),
            &i64::try_from(event.total_amount).unwrap_or(i64::MAX),
            &event.created_at,
            &status.as_str(),
            &event.pay_by,
            &event.paid_at,
            &event.payment_ref,
        ],
    )
    .await
    .map(drop)
}
