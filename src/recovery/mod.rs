//! Redis is the fast copy; JetStream is the record. This folder rebuilds what Redis lost from
//! the record: the sale [`definitions`] kept in JetStream, the [`rebuild`] of a sale's state
//! from its events, and the [`audit`] that compares the stores.

pub mod archive;
pub mod audit;
pub mod definitions;
mod put;
pub mod rebuild;

pub use rebuild::{Absent, Recovery, RecoveryError};
