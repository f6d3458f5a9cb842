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
        _ => Err(reply.corrupt().into()),
    }
}
