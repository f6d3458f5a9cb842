//! The order record: how the scripts keep an order in its sale's `orders` hash. Nine fields,
//! a line each (no field holds a line break: free text refuses control characters):
//!
//! ```text
//! status, quantity, unit_price, created_at, pay_by, paid_at, event, payment_ref, user_id
//! ```
//!
//! Times are milliseconds on Redis's clock; an absent value is an empty line; `event` is the
//! outbox entry of the order's latest event while it waits there. `lua/purchase.lua` and
//! `lua/order_moves.lua` write it in Lua; this is the one place Rust reads or writes it. The
//! order's fields themselves are the domain's ([`OrderRecord`]).

use crate::domain::order::{LISTED_ORDERS, OrderRecord, OrderStatus, OrderView};

/// An order's field in its sale's `orders` hash as a rebuild installs it: the id without the
/// sku digest and dash that start every id of the sale. (The scripts key an order that
/// carries the sale's current oid by its sequence number alone, see `lua/purchase.lua`; a
/// rebuilt sale gets a new oid, so every order it installs predates it.)
pub fn order_field(id: &str) -> &str {
    id.split_once('-').map_or(id, |(_, rest)| rest)
}

/// A buyer's field in its sale's `buyers` hash, as `lua/purchase.lua` writes it:
/// `<units held>:<order fields>`, newest first, at most [`LISTED_ORDERS`]. `ids` come newest
/// first.
pub fn buyer_entry(held: u64, ids: &[&str]) -> String {
    let listed: Vec<&str> = ids
        .iter()
        .take(LISTED_ORDERS)
        .map(|id| order_field(id))
        .collect();
    format!("{held}:{}", listed.join(","))
}

/// The record as the scripts wrote it; `None` for anything they do not write.
pub fn decode(record: &str) -> Option<OrderRecord<'_>> {
    let fields: Vec<&str> = record.splitn(9, '\n').collect();
    let [
        status,
        quantity,
        unit_price,
        created_at,
        pay_by,
        paid_at,
        event,
        payment_ref,
        user_id,
    ] = fields[..]
    else {
        return None;
    };
    let time = |field: &str| -> Option<Option<i64>> {
        if field.is_empty() {
            Some(None)
        } else {
            field.parse().ok().map(Some)
        }
    };
    Some(OrderRecord {
        status: OrderStatus::parse(status)?,
        quantity: quantity.parse().ok()?,
        unit_price: unit_price.parse().ok()?,
        created_at_ms: created_at.parse().ok()?,
        pay_by_ms: time(pay_by)?,
        paid_at_ms: time(paid_at)?,
        event,
        payment_ref: (!payment_ref.is_empty()).then_some(payment_ref),
        user_id,
    })
}

/// The record as the scripts write it.
pub fn encode(record: &OrderRecord<'_>) -> String {
    let time = |ms: Option<i64>| ms.map(|ms| ms.to_string()).unwrap_or_default();
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}",
        record.status.as_str(),
        record.quantity,
        record.unit_price,
        record.created_at_ms,
        time(record.pay_by_ms),
        time(record.paid_at_ms),
        record.event,
        record.payment_ref.unwrap_or_default(),
        record.user_id
    )
}

/// An order record as the API shows the order; `None` for a record no script writes.
pub fn order_view(order_id: &str, sku: &str, record: &str, delivered: bool) -> Option<OrderView> {
    decode(record)?.view(order_id, sku, delivered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_record_with_its_empty_fields_unset() {
        let view = order_view(
            "abc-1-2",
            "phone",
            "cancelled\n2\n500\n1764083092123\n\n\n1764083092123-0\n\nbuyer\nwith newline",
            false,
        )
        .expect("a valid record");
        assert_eq!(view.status, OrderStatus::Cancelled);
        assert_eq!(view.total_amount, 1000);
        assert_eq!(view.user_id, "buyer\nwith newline", "user_id is the rest");
        assert_eq!(view.created_at, "2025-11-25T15:04:52.123Z");
        assert_eq!(
            (view.pay_by, view.paid_at, view.payment_ref),
            (None, None, None)
        );
        assert!(order_view("x", "s", "created\n1\n1\n1\nuser", true).is_none());
    }

    #[test]
    fn a_record_reads_back_as_written() {
        for record in [
            "created\n1\n100\n1764083092123\n\n\n\n\nu1",
            "paid\n2\n7\n1764083092123\n1764083152123\n1764083100000\n1764083100001-0\npsp-1\nu 2",
        ] {
            let parsed = decode(record).expect("a script's record");
            assert_eq!(encode(&parsed), record);
        }
        let paid = decode("paid\n2\n7\n5\n6\n7\n\npsp-1\nu1").expect("valid");
        assert_eq!(
            (paid.status, paid.quantity, paid.pay_by_ms, paid.payment_ref),
            (OrderStatus::Paid, 2, Some(6), Some("psp-1"))
        );
    }

    #[test]
    fn refuses_what_no_script_writes() {
        for bad in [
            "",
            "created\n1\n100",
            "sold\n1\n100\n5\n\n\n\n\nu1",
            "created\nx\n100\n5\n\n\n\n\nu1",
            "created\n1\n100\nnoon\n\n\n\n\nu1",
            "created\n1\n100\n5\nlater\n\n\n\nu1",
        ] {
            assert!(decode(bad).is_none(), "{bad:?} was read");
        }
    }
}
