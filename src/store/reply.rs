//! Typed access to the arrays the Lua scripts return.

use redis::Value;

use super::StoreError;
use crate::domain::Sku;
use crate::domain::order::{Order, OrderStatus};
use crate::domain::sale::format_time;

pub(super) struct Reply<'a>(pub &'a [Value]);

impl Reply<'_> {
    pub fn text(&self, at: usize) -> Result<&str, StoreError> {
        match self.0.get(at) {
            Some(Value::BulkString(bytes)) => {
                std::str::from_utf8(bytes).map_err(|_| self.corrupt())
            }
            Some(Value::SimpleString(text)) => Ok(text),
            _ => Err(self.corrupt()),
        }
    }

    pub fn int(&self, at: usize) -> Result<i64, StoreError> {
        match self.0.get(at) {
            Some(Value::Int(n)) => Ok(*n),
            Some(Value::BulkString(bytes)) => std::str::from_utf8(bytes)
                .ok()
                .and_then(|text| text.parse().ok())
                .ok_or_else(|| self.corrupt()),
            _ => Err(self.corrupt()),
        }
    }

    /// An integer that may be absent or '' (unset).
    pub fn optional_int(&self, at: usize) -> Result<Option<i64>, StoreError> {
        match self.0.get(at) {
            None | Some(Value::Nil) => Ok(None),
            Some(Value::BulkString(bytes)) if bytes.is_empty() => Ok(None),
            Some(_) => self.int(at).map(Some),
        }
    }

    pub fn uint(&self, at: usize) -> Result<u64, StoreError> {
        u64::try_from(self.int(at)?).map_err(|_| self.corrupt())
    }

    /// The order that `purchase.lua` returns after its outcome:
    /// order_id, user_id, quantity, unit_price, created_at_ms, remaining, status, pay_by_ms
    /// ('' or absent when none).
    pub fn order(&self, sku: &Sku) -> Result<Order, StoreError> {
        let quantity = u32::try_from(self.uint(3)?).map_err(|_| self.corrupt())?;
        let unit_price = self.uint(4)?;
        Ok(Order {
            order_id: self.text(1)?.to_owned(),
            sku: sku.to_string(),
            user_id: self.text(2)?.to_owned(),
            quantity,
            unit_price,
            total_amount: crate::domain::order::total_amount(unit_price, quantity)
                .ok_or_else(|| self.corrupt())?,
            created_at: format_time(self.int(5)?),
            remaining: self.uint(6)?,
            status: OrderStatus::parse(self.text(7)?).ok_or_else(|| self.corrupt())?,
            pay_by: self.optional_int(8)?.map(format_time),
            delivery: None,
        })
    }

    pub fn corrupt(&self) -> StoreError {
        StoreError::Corrupt(format!("{:?}", self.0))
    }
}
