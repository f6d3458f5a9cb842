//! flashsale: a flash-sale inventory service.
//!
//! Storefronts call it over HTTP when thousands of buyers press "buy" in the same second. It
//! decides who wins the limited stock atomically, in one Redis round trip per purchase, and
//! never sells more than the stock.
//!
//! How the parts fit (see ARCHITECTURE.md for the full map):
//! - [`config`]: settings from the environment, validated once at start-up.
//! - [`domain`]: request values that can only hold valid data (`Sku`, `UserId`, ...).
//! - [`inventory`]: the stock in Redis; each decision is one Lua script in `lua/`.
//! - [`relay`]: hands the orders recorded in Redis outboxes to NATS JetStream ([`jetstream`],
//!   [`event`]).
//! - [`expiry`]: the sweeper that expires orders not paid by their pay_by.
//! - [`routes`]: the HTTP API; [`error`] maps every failure to the contract's JSON error.
//! - [`consumer`]: `flashsale consume-orders`, which persists order events to PostgreSQL.
//! - [`startup`]: builds the server from settings, for `main` and the tests alike.

pub mod audit;
pub mod auth;
pub mod config;
pub mod confirm;
pub mod consumer;
pub mod definitions;
pub mod domain;
pub mod error;
pub mod event;
pub mod expiry;
pub mod inventory;
pub mod jetstream;
pub mod monitoring;
pub mod openapi;
pub mod order;
pub mod rate_limit;
pub mod recovery;
pub mod relay;
pub mod routes;
pub mod sale;
pub mod sale_changes;
pub mod sold_out;
pub mod startup;
pub mod telemetry;
pub mod ticket;
