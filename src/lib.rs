//! flashsale: a flash-sale inventory service.
//!
//! Storefronts call it over HTTP when thousands of buyers press "buy" in the same second. It
//! decides who wins the limited stock atomically, in one Redis round trip per purchase, and
//! never sells more than the stock; every winning order reaches NATS JetStream.
//!
//! The code map, top down: a module uses only those below it (`tests/layout.rs` checks it;
//! ARCHITECTURE.md draws the paths through them).
//! - [`startup`]: builds the service from the settings; the only module that knows every part.
//! - [`http`]: the HTTP edge: routes, auth, buyer tickets, rate limits, the one mapping of
//!   errors to the contract's JSON, the OpenAPI document. [`expiry`]: the sweeper that expires
//!   orders not paid by their pay_by.
//! - [`live`]: the live streams of sales: one read per change per replica, fanned out to
//!   every viewer in memory.
//! - [`operations`]: what a purchase, a pay, a cancel, a PUT and the reads do; handlers
//!   parse, call one of these, and answer.
//! - [`recovery`]: rebuilds what Redis lost from JetStream (sale definitions, the rebuild, the
//!   audit).
//! - [`events`]: JetStream: the one publish path, the handler's confirmation, the relay that
//!   drains the outboxes, sale changes between replicas, the PostgreSQL consumer.
//! - [`store`]: Redis: each decision one Lua script in `lua/`; group commit, the outbox, the
//!   payment index, the sold-out marks.
//! - [`support`]: settings, metrics, logging: what every layer uses.
//! - [`domain`]: values that can only hold valid data (`Sku`, `UserId`, ...), the sale and
//!   order models, order events, the order record, the fold of a sale's history.

pub mod domain;
pub mod events;
pub mod expiry;
pub mod http;
pub mod live;
pub mod operations;
pub mod recovery;
pub mod startup;
pub mod store;
pub mod support;
