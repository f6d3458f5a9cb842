//! What reached a JetStream stream, read as a subscriber would: shared by the test binaries
//! (`#[path]`-included, like `servers.rs`).

// Each test binary uses part of what is here.
#![allow(dead_code)]

use async_nats::jetstream;
use flashsale::domain::event::{OrderEvent, OrderMessage};

/// One event of the stream, with the message that carried it (a message holds the events of
/// one outbox entry).
#[derive(Debug, Clone)]
pub struct Delivered {
    pub subject: String,
    pub message_id: String,
    /// The stream sequence of its message: events of one message share it.
    pub sequence: u64,
    pub event: OrderEvent,
    /// The atomic batch its message was stored in (`Nats-Batch-Id`), if any.
    pub batch: Option<String>,
}

/// Every event in `stream`, in stream order (empty when the stream does not exist).
pub async fn stored_events(client: async_nats::Client, stream: &str) -> Vec<Delivered> {
    let js = jetstream::new(client);
    let Ok(mut stream) = js.get_stream(stream).await else {
        return Vec::new();
    };
    let state = stream.info().await.expect("stream info").state.clone();
    let mut messages = Vec::new();
    if state.messages == 0 {
        return messages;
    }
    for sequence in state.first_sequence..=state.last_sequence {
        let message = stream
            .get_raw_message(sequence)
            .await
            .expect("stored message");
        let message_id = message
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_owned())
            .expect("every event carries Nats-Msg-Id");
        let batch = message
            .headers
            .get("Nats-Batch-Id")
            .map(|v| v.as_str().to_owned());
        crate::event_contract::assert_follows_contract(
            &message.subject,
            &message_id,
            &message.payload,
        );
        let events = OrderMessage::decode(&message.payload).expect("payload holds order events");
        for event in events {
            messages.push(Delivered {
                subject: message.subject.to_string(),
                message_id: message_id.clone(),
                sequence,
                batch: batch.clone(),
                event,
            });
        }
    }
    messages
}
