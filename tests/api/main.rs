//! Tests of the whole service over HTTP, against the real Redis and NATS that
//! `scripts/services.sh` starts. One binary, one module per capability.

mod archive;
mod cluster;
mod consumer;
mod contract;
mod durable;
#[path = "../common/event_contract.rs"]
mod event_contract;
mod events;
mod failover;
mod health;
mod helpers;
mod lifecycle;
mod live;
mod operator;
mod order_reads;
mod orders;
mod page;
mod queue;
mod rate_limits;
mod recovery;
mod reliability;
mod round_trips;
mod sales;
mod script;
mod seed;
#[path = "../common/servers.rs"]
mod servers;
mod settings;
mod shutdown;
#[path = "../common/stream.rs"]
mod stream;
mod tickets;
mod upgrade;
mod validation;
