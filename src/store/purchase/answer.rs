//! `lua/purchase.lua`'s answer, read: one result per purchase of the call, in order.

use redis::Value;

use super::{Purchase, PurchaseRequest};
use crate::domain::Sku;
use crate::domain::event::OrderMessage;
use crate::domain::order::{Order, OrderStatus};
use crate::domain::refusal::PurchaseRefusal;
use crate::domain::sale::format_time;
use crate::store::StoreError;
use crate::store::outbox::{CreatedEvent, WrittenEntry};
use crate::store::reply::Reply;
use crate::store::{Failed, PurchaseError};

/// The call's results from its answer `{ shared, answered_at, answers }`: a purchase with no
/// answer of its own made an order, read from what the call's new orders share.
pub(super) fn read_answer(
    sku: &Sku,
    requests: &[PurchaseRequest],
    shared: &[Value],
    answered_at: &[usize],
    answers: &[Vec<Value>],
) -> Vec<Result<Purchase, PurchaseError>> {
    // Each purchase's own answer, or None: it made an order (purchase.lua's Reply).
    let mut own: Vec<Option<&[Value]>> = vec![None; requests.len()];
    for (&at, answer) in answered_at.iter().zip(answers) {
        if let Some(slot) = at.checked_sub(1).and_then(|i| own.get_mut(i)) {
            *slot = Some(answer);
        }
    }
    let answered = own.iter().filter(|a| a.is_some()).count();
    if answered_at.len() != answers.len() || answered != answers.len() {
        let corrupt = Reply(&[]).corrupt();
        return requests
            .iter()
            .map(|_| Err(corrupt.clone().into()))
            .collect();
    }
    let mut made = NewOrders {
        shared: Reply(shared),
        count: 0,
        units: 0,
        times: None,
    };
    let mut results: Vec<_> = own
        .into_iter()
        .zip(requests)
        .map(|(answer, request)| match answer {
            Some(answer) => outcome(sku, Reply(answer)),
            None => made.next(sku, request),
        })
        .collect();
    share_written_entry(sku, requests, &mut results);
    results
}

/// The outbox entry the call wrote, built from its new orders in the order the script made
/// them (the entry's own), and handed to each of them and to the replays of them in the same
/// call: their handlers publish it once between them.
fn share_written_entry(
    sku: &Sku,
    requests: &[PurchaseRequest],
    results: &mut [Result<Purchase, PurchaseError>],
) {
    let mut entry_id = None;
    let mut events = Vec::new();
    for (request, result) in requests.iter().zip(results.iter()) {
        if let Ok(purchase) = result
            && !purchase.replayed
            && let CreatedEvent::Waiting(id) = &purchase.event
        {
            entry_id.get_or_insert_with(|| id.clone());
            events.push(
                purchase
                    .order
                    .created_event(request.idempotency_key.as_ref()),
            );
        }
    }
    let Some(entry_id) = entry_id else { return };
    let Ok(message) = OrderMessage::new(events) else {
        return;
    };
    let written = WrittenEntry::new(sku.clone(), entry_id.clone(), message);
    for purchase in results.iter_mut().flatten() {
        if matches!(&purchase.event, CreatedEvent::Waiting(id) if *id == entry_id) {
            purchase.event = CreatedEvent::Written(written.clone());
        }
    }
}

/// The orders a call made, read in the order it made them from what they share
/// (`lua/purchase.lua`: the k-th has seq first_seq + k and leaves stock, less what was sold
/// before the call and the units of the new orders up to it).
struct NewOrders<'a> {
    shared: Reply<'a>,
    /// New orders read so far, and their units.
    count: u64,
    units: u64,
    /// created_at and pay_by as the answer prints them, formatted once for the call.
    times: Option<(String, Option<String>)>,
}

impl NewOrders<'_> {
    fn next(&mut self, sku: &Sku, request: &PurchaseRequest) -> Result<Purchase, PurchaseError> {
        let shared = &self.shared;
        let quantity = request.quantity.get();
        let seq = shared.uint(7)? + self.count;
        let is_first = self.count == 0;
        self.count += 1;
        self.units += u64::from(quantity);
        let remaining = shared
            .uint(8)?
            .checked_sub(shared.uint(9)? + self.units)
            .ok_or_else(|| shared.corrupt())?;
        let pay_by = shared.optional_int(4)?;
        let unit_price = shared.uint(1)?;
        let (created_at, pay_by_text) = match &self.times {
            Some(times) => times.clone(),
            None => self
                .times
                .insert((format_time(shared.int(2)?), pay_by.map(format_time)))
                .clone(),
        };
        Ok(Purchase {
            // Made the shared entry of the call by `share_written_entry`.
            event: CreatedEvent::Waiting(shared.text(5)?.to_owned()),
            order: Order {
                order_id: format!("{}-{seq}", shared.text(0)?),
                sku: sku.to_string(),
                user_id: request.user.as_str().to_owned(),
                quantity,
                unit_price,
                total_amount: crate::domain::order::total_amount(unit_price, quantity)
                    .ok_or_else(|| shared.corrupt())?,
                created_at,
                remaining,
                status: OrderStatus::parse(shared.text(3)?).ok_or_else(|| shared.corrupt())?,
                pay_by: pay_by_text,
                delivery: None,
            },
            replayed: false,
            replicated: true,
            // Only the call's first new order can hold the sale's earliest deadline.
            earliest_deadline: if is_first && shared.optional_int(6)? == Some(1) {
                pay_by
            } else {
                None
            },
        })
    }
}

/// The answer of a purchase that made no order (`lua/purchase.lua`).
fn outcome(sku: &Sku, reply: Reply<'_>) -> Result<Purchase, PurchaseError> {
    match reply.text(0)? {
        "replayed" => {
            let entry = reply.text(9)?;
            Ok(Purchase {
                // Made the shared entry of the call by `share_written_entry` when it is
                // this call's.
                event: if entry.is_empty() {
                    CreatedEvent::Delivered
                } else {
                    CreatedEvent::Waiting(entry.to_owned())
                },
                order: reply.order(sku)?,
                replayed: true,
                replicated: true,
                earliest_deadline: None,
            })
        }
        "sold_out" => Err(Failed::Refused(PurchaseRefusal::SoldOut {
            remaining: reply.uint(1)?,
        })),
        "sale_inconsistent" => Err(Failed::Refused(PurchaseRefusal::SaleInconsistent {
            stock: reply.uint(1)?,
            sold: reply.uint(2)?,
        })),
        "quantity_above_limit" => Err(Failed::Refused(PurchaseRefusal::QuantityAboveLimit {
            limit: reply.uint(1)?,
        })),
        "sale_missing" => Err(StoreError::SaleMissing.into()),
        "sale_not_open" => Err(Failed::Refused(PurchaseRefusal::SaleNotOpen)),
        "user_limit_reached" => Err(Failed::Refused(PurchaseRefusal::UserLimitReached)),
        "idempotency_conflict" => Err(Failed::Refused(PurchaseRefusal::IdempotencyConflict)),
        "not_admitted" => Err(Failed::Refused(PurchaseRefusal::NotAdmitted {
            admit_at: reply.optional_int(1)?,
        })),
        "admission_expired" => Err(Failed::Refused(PurchaseRefusal::AdmissionExpired)),
        "queue_token_required" => Err(Failed::Refused(PurchaseRefusal::QueueTokenRequired)),
        _ => Err(reply.corrupt().into()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::domain::{Quantity, UserId};
    use crate::store::purchase::Listing;

    fn request(user: &str, quantity: u64) -> PurchaseRequest {
        PurchaseRequest {
            user: UserId::parse(user.into()).expect("user"),
            quantity: Quantity::parse(quantity).expect("quantity"),
            idempotency_key: None,
            listing: Listing::Listed,
            place: None,
        }
    }

    fn text(value: &str) -> Value {
        Value::BulkString(value.as_bytes().to_vec())
    }

    /// A call's shared part (`lua/purchase.lua`): oid, price, created_at, status, no pay_by,
    /// the entry it wrote, not the earliest deadline, first seq 11, stock 10, 2 sold before.
    fn shared() -> Vec<Value> {
        vec![
            text("abc-7"),
            Value::Int(5),
            Value::Int(1_764_083_092_123),
            text("created"),
            text(""),
            text("1764083092123-0"),
            Value::Int(0),
            Value::Int(11),
            Value::Int(10),
            Value::Int(2),
        ]
    }

    /// A replay of an order an earlier call made, whose event still waits in that call's
    /// entry.
    fn replay_of_an_earlier_call() -> Vec<Value> {
        vec![
            text("replayed"),
            text("abc-7-3"),
            text("u2"),
            Value::Int(1),
            Value::Int(5),
            Value::Int(1_764_083_000_000),
            Value::Int(9),
            text("created"),
            text(""),
            text("1764083000000-0"),
        ]
    }

    /// The orders a call made read from what they share, and handed one entry between them
    /// (their handlers publish it once); a replay of another call's order keeps that call's
    /// entry, which its handler reads back.
    #[test]
    fn a_calls_new_orders_share_its_one_entry_and_a_replay_keeps_its_own() {
        let sku = Sku::parse("s").expect("sku");
        let requests = [request("u1", 2), request("u2", 1), request("u3", 3)];
        let answers = [replay_of_an_earlier_call()];
        let results = read_answer(&sku, &requests, &shared(), &[2], &answers);

        let made: Vec<&Purchase> = [&results[0], &results[2]]
            .into_iter()
            .map(|r| r.as_ref().expect("a new order"))
            .collect();
        let ids: Vec<&str> = made.iter().map(|p| p.order.order_id.as_str()).collect();
        assert_eq!(ids, ["abc-7-11", "abc-7-12"]);
        let remaining: Vec<u64> = made.iter().map(|p| p.order.remaining).collect();
        assert_eq!(remaining, [6, 3], "stock 10, 2 sold before, then 2 and 3");
        let entries: Vec<&Arc<WrittenEntry>> = made
            .iter()
            .map(|p| match &p.event {
                CreatedEvent::Written(entry) => entry,
                other => panic!("a new order's event is the call's entry, not {other:?}"),
            })
            .collect();
        assert!(
            Arc::ptr_eq(entries[0], entries[1]),
            "one entry for the call"
        );
        assert_eq!(entries[0].entry.id, "1764083092123-0");
        let events: Vec<&str> = (entries[0].entry.message.events().iter())
            .map(|e| e.order_id.as_str())
            .collect();
        assert_eq!(
            events,
            ["abc-7-11", "abc-7-12"],
            "the call's orders, in order"
        );

        let replay = results[1].as_ref().expect("a replay");
        assert!(replay.replayed);
        assert!(
            matches!(&replay.event, CreatedEvent::Waiting(id) if id == "1764083000000-0"),
            "{:?}",
            replay.event
        );
    }

    /// An answer whose own replies do not add up (two for one purchase, one for none, one
    /// missing) is read as a bug for every purchase of the call, never half believed.
    #[test]
    fn an_answer_that_does_not_add_up_is_corrupt_for_every_purchase() {
        let sku = Sku::parse("s").expect("sku");
        let requests = [request("u1", 1), request("u2", 1)];
        let sold_out = vec![text("sold_out"), Value::Int(0)];
        for (answered_at, answers) in [
            (vec![1, 1], vec![sold_out.clone(), sold_out.clone()]),
            (vec![3], vec![sold_out.clone()]),
            (vec![1, 2], vec![sold_out.clone()]),
        ] {
            let results = read_answer(&sku, &requests, &shared(), &answered_at, &answers);
            assert!(
                (results.iter()).all(|r| matches!(r, Err(Failed::Store(StoreError::Corrupt(_))))),
                "{answered_at:?}: {results:?}"
            );
        }
    }

    /// Each refusal the script answers reads as the domain's refusal (the HTTP edge gives each
    /// its code), a missing sale as the store's, anything else as a bug.
    #[test]
    fn each_refusal_of_the_script_reads_as_its_own() {
        let sku = Sku::parse("s").expect("sku");
        let read = |reply: Vec<Value>| outcome(&sku, Reply(&reply)).map(|_| ());
        let refused = |refusal| -> Result<(), PurchaseError> { Err(Failed::Refused(refusal)) };
        let cases = [
            (
                vec![text("sold_out"), Value::Int(2)],
                refused(PurchaseRefusal::SoldOut { remaining: 2 }),
            ),
            (
                vec![text("sale_inconsistent"), Value::Int(5), Value::Int(6)],
                refused(PurchaseRefusal::SaleInconsistent { stock: 5, sold: 6 }),
            ),
            (
                vec![text("quantity_above_limit"), Value::Int(3)],
                refused(PurchaseRefusal::QuantityAboveLimit { limit: 3 }),
            ),
            (
                vec![text("sale_not_open")],
                refused(PurchaseRefusal::SaleNotOpen),
            ),
            (
                vec![text("user_limit_reached")],
                refused(PurchaseRefusal::UserLimitReached),
            ),
            (
                vec![text("idempotency_conflict")],
                refused(PurchaseRefusal::IdempotencyConflict),
            ),
            (
                vec![text("not_admitted"), Value::Int(7)],
                refused(PurchaseRefusal::NotAdmitted { admit_at: Some(7) }),
            ),
            (
                vec![text("not_admitted"), text("")],
                refused(PurchaseRefusal::NotAdmitted { admit_at: None }),
            ),
            (
                vec![text("admission_expired")],
                refused(PurchaseRefusal::AdmissionExpired),
            ),
            (
                vec![text("queue_token_required")],
                refused(PurchaseRefusal::QueueTokenRequired),
            ),
        ];
        for (reply, expected) in cases {
            let got = read(reply.clone());
            assert_eq!(format!("{got:?}"), format!("{expected:?}"), "{reply:?}");
        }
        assert!(matches!(
            read(vec![text("sale_missing")]),
            Err(Failed::Store(StoreError::SaleMissing))
        ));
        assert!(matches!(
            read(vec![text("sold")]),
            Err(Failed::Store(StoreError::Corrupt(_)))
        ));
    }
}
