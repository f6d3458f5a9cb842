//! The order consumer (`flashsale consume-orders`): a durable JetStream pull consumer that
//! writes every order event into PostgreSQL.
//!
//! Each fetched batch is applied in one transaction and acknowledged only after it commits,
//! so a crash at any point means redelivery, never loss. Redelivery is harmless: a created
//! event inserts only if the row is absent, a cancellation only moves a row to `cancelled`.
//!
//! A batch that PostgreSQL fails (its connection dropped, a restart) is handed back at once
//! (NAK), not left to JetStream's ack wait: the next session, a fraction of a second later,
//! fetches it again. Left alone, those events waited out the ack wait (30 s) and the table
//! stalled behind them although PostgreSQL was back within a second.

use secrecy::ExposeSecret;
use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures::StreamExt;
use tokio_postgres::NoTls;

use crate::domain::event::{EventKind, OrderEvent, OrderMessage};
use crate::domain::order::OrderStatus;
use crate::events::jetstream::{OrderStream, StreamSetupError, ensure_stream};
use crate::support::backoff;
use crate::support::settings::Settings;

const SCHEMA: &str = include_str!("../../sql/schema.sql");
/// Events per fetch, and so per transaction.
const BATCH: usize = 200;
/// A fetch returns after this long even when fewer events came (so shutdown is prompt).
const FETCH_WAIT: Duration = Duration::from_millis(500);
/// The first retry after a failure; doubled per failure in a row, up to 32 times this.
const RETRY: Duration = Duration::from_millis(100);
/// How PostgreSQL lists the consumer's connections (`pg_stat_activity.application_name`),
/// unless FLASHSALE_DATABASE_URL names another.
const APPLICATION_NAME: &str = "flashsale-consumer";

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
        let mut committed = false;
        tokio::select! {
            outcome = session(&settings, &mut committed) => {
                let e = match outcome { Ok(never) => match never {}, Err(e) => e };
                // A session that got work done ended by a fresh failure: retry at once.
                if committed {
                    failures = 0;
                }
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
        tokio::select! {
            _ = tokio::time::sleep(retry_delay(failures)) => {}
            _ = &mut shutdown => return,
        }
    }
}

/// The pause before the next session after `failures` failures in a row (at least one):
/// [`RETRY`], doubled per failure, at most 32 times [`RETRY`].
fn retry_delay(failures: u32) -> Duration {
    backoff::doubling(RETRY, failures, RETRY * 32)
}

/// One connected stretch: set up, then apply batches until something fails (`committed` says
/// whether any batch was). A batch being applied when `run` is told to stop is dropped before
/// its commit and so redelivered after the ack wait.
async fn session(
    settings: &Settings,
    committed: &mut bool,
) -> Result<std::convert::Infallible, ConsumerError> {
    let mut config: tokio_postgres::Config =
        settings.consumer.database_url.expose_secret().parse()?;
    if config.get_application_name().is_none() {
        config.application_name(APPLICATION_NAME);
    }
    let (db, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            log::warn!("postgres connection closed: {e}");
        }
    });
    let mut db = db;
    db.batch_execute(SCHEMA).await?;

    let nats = async_nats::connect(settings.nats.urls.as_slice())
        .await
        .map_err(nats_error)?;
    let js = jetstream::new(nats.clone());
    ensure_stream(&js, &OrderStream::new(&settings.nats)).await?;
    let stream = js
        .get_stream(&settings.nats.stream)
        .await
        .map_err(nats_error)?;
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            &settings.consumer.name,
            pull::Config {
                durable_name: Some(settings.consumer.name.clone()),
                filter_subject: format!("{}.>", settings.nats.subject_prefix),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: settings.consumer.ack_wait,
                ..Default::default()
            },
        )
        .await
        .map_err(nats_error)?;
    log::info!(
        "order consumer {} reading {} into postgres",
        settings.consumer.name,
        settings.nats.stream
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

        let unreadable = match apply_batch(&mut db, &batch).await {
            Ok(unreadable) => unreadable,
            Err(e) => {
                // Handed back now, so the next session finds them without the ack wait.
                for message in &batch {
                    let _ = message.ack_with(AckKind::Nak(None)).await;
                }
                // This session's NATS connection goes with it: send the NAKs first.
                let _ = nats.flush().await;
                return Err(e.into());
            }
        };
        *committed = true;

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

/// One batch of messages in one transaction; returns the positions of the messages that hold
/// no order events (dropped: nothing could ever apply them).
async fn apply_batch(
    db: &mut tokio_postgres::Client,
    batch: &[jetstream::Message],
) -> Result<Vec<usize>, tokio_postgres::Error> {
    let mut unreadable = Vec::new();
    let transaction = db.transaction().await?;
    for (index, message) in batch.iter().enumerate() {
        match OrderMessage::decode(&message.payload) {
            Ok(events) => apply(&transaction, &events).await?,
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
    Ok(unreadable)
}

/// One message's events, in one statement: a message holds each order at most once (the
/// orders one script call made or ended), so no row is touched twice by it.
async fn apply(
    db: &tokio_postgres::Transaction<'_>,
    events: &[OrderEvent],
) -> Result<(), tokio_postgres::Error> {
    let column = |field: fn(&OrderEvent) -> String| events.iter().map(field).collect::<Vec<_>>();
    let optional =
        |field: fn(&OrderEvent) -> Option<String>| events.iter().map(field).collect::<Vec<_>>();
    let status = |event: &OrderEvent| {
        match event.event {
            EventKind::Created if event.pay_by.is_some() => OrderStatus::PendingPayment,
            EventKind::Created => OrderStatus::Created,
            EventKind::Paid => OrderStatus::Paid,
            EventKind::Expired => OrderStatus::Expired,
            EventKind::Cancelled => OrderStatus::Cancelled,
        }
        .as_str()
        .to_owned()
    };
    let quantities: Vec<i32> = events
        .iter()
        .map(|e| i32::try_from(e.quantity).unwrap_or(i32::MAX))
        .collect();
    let amount = |field: fn(&OrderEvent) -> u64| {
        events
            .iter()
            .map(|e| i64::try_from(field(e)).unwrap_or(i64::MAX))
            .collect::<Vec<_>>()
    };
    // Every event carries the whole order, so an ending event also stands in for a created
    // event that has not arrived (it cannot overtake it on one stream, but this costs
    // nothing). A row moves only out of created / pending_payment, once: a redelivered or
    // late event changes nothing.
    db.execute(
        "INSERT INTO orders (order_id, sku, user_id, quantity, unit_price, total_amount,
                             created_at, status, pay_by, paid_at, payment_ref)
         SELECT order_id, sku, user_id, quantity, unit_price, total_amount,
                created_at::timestamptz, status, pay_by::timestamptz, paid_at::timestamptz,
                payment_ref
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int4[], $5::int8[], $6::int8[],
                     $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])
              AS event(order_id, sku, user_id, quantity, unit_price, total_amount,
                       created_at, status, pay_by, paid_at, payment_ref)
         ON CONFLICT (order_id) DO UPDATE
             SET status = EXCLUDED.status, paid_at = EXCLUDED.paid_at,
                 payment_ref = EXCLUDED.payment_ref, updated_at = now()
         WHERE orders.status IN ('created', 'pending_payment')
           AND EXCLUDED.status NOT IN ('created', 'pending_payment')",
        &[
            &column(|e| e.order_id.clone()),
            &column(|e| e.sku.clone()),
            &column(|e| e.user_id.clone()),
            &quantities,
            &amount(|e| e.unit_price),
            &amount(|e| e.total_amount),
            &column(|e| e.created_at.clone()),
            &events.iter().map(status).collect::<Vec<_>>(),
            &optional(|e| e.pay_by.clone()),
            &optional(|e| e.paid_at.clone()),
            &optional(|e| e.payment_ref.clone()),
        ],
    )
    .await
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_from_100_ms_doubling_to_at_most_3_2_s() {
        let delays: Vec<u128> = (1..=8).map(|n| retry_delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 3200, 3200]);
    }
}
