//! Fault tests: the service as its own processes, on servers of the test's own, which the
//! tests pause and kill. A test binary of its own, so that it runs alone (cargo runs test
//! binaries one after another): what it measures is then the service, not the rest of the
//! suite beside it.
//!
//! - `overload`: Redis or NATS paused for 10 s under 1,000 connections.
//! - `chaos`: a seeded schedule of faults under a mixed load, then a ledger of what every
//!   store holds against what every client was answered.

mod chaos;
#[path = "../common/event_contract.rs"]
mod event_contract;
mod fixtures;
mod overload;
#[path = "../common/servers.rs"]
mod servers;
#[path = "../common/stream.rs"]
mod stream;
