//! The waiting rooms' metrics: joins by result, and per sale with a queue the line's length
//! and the places admitted (set when `/metrics` is scraped, from the schedule: they move with
//! the clock, not with requests). Refused purchases count in `flashsale_purchases_total` by
//! their code (`not_admitted`, `admission_expired`, `invalid_queue_token`).

use metrics::{counter, describe_counter, describe_gauge, gauge};

const JOINS: &str = "flashsale_queue_joins_total";
const PLACES: &str = "flashsale_queue_places";
const ADMITTED: &str = "flashsale_queue_admitted";

/// What a join did: `placed` (a new place), `again` (the buyer's place), `waiting` (joined
/// before the start), `refused`.
pub fn record_join(result: &'static str) {
    counter!(JOINS, "result" => result).increment(1);
}

/// A sale's line as this replica knows it: the highest place it gave or handed back
/// (`max by (sku)` over replicas is the line's length) and the places admitted now.
pub fn record_line(sku: &str, places: u64, admitted: u64) {
    gauge!(PLACES, "sku" => sku.to_owned()).set(places as f64);
    gauge!(ADMITTED, "sku" => sku.to_owned()).set(admitted as f64);
}

pub(super) fn describe() {
    describe_counter!(JOINS, "Joins of a sale's waiting room by result.");
    describe_gauge!(
        PLACES,
        "Highest place in a sale's line this replica gave or handed back."
    );
    describe_gauge!(ADMITTED, "Places of a sale's line admitted now.");
}

pub(super) fn zero() {
    for result in ["placed", "again", "waiting", "refused"] {
        counter!(JOINS, "result" => result).increment(0);
    }
}
