//! The event pipeline: orders recorded in Redis outboxes reach NATS JetStream — confirmed by
//! the handler that sold them ([`confirm`]) or delivered by the [`relay`] — through one
//! stream client ([`jetstream`]); sale changes fan out to every replica ([`sale_changes`]);
//! [`consumer`] persists the events to PostgreSQL.

pub mod confirm;
pub mod consumer;
pub mod jetstream;
pub mod publish;
pub mod relay;
pub mod relay_status;
pub mod sale_changes;
