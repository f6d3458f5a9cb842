//! Joining a sale's waiting room: `lua/queue.lua`, one round trip a join.

use redis::Value;

use super::reply::Reply;
use super::{Failed, Store, StoreError};
use crate::domain::queue::Queue;
use crate::domain::refusal::QueueRefusal;
use crate::domain::{Sku, UserId};

pub type JoinError = Failed<QueueRefusal>;

/// What a join found, at `now_ms` on Redis's clock, with the sale's queue as Redis holds it.
#[derive(Debug, Clone)]
pub struct JoinReply {
    pub now_ms: i64,
    pub queue: Queue,
    pub joined: Joined,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// The buyer's place; `new` when this join gave it.
    Placed { place: u64, new: bool },
    /// Joined before the start: the place is drawn at the start.
    Waiting,
    /// No place is left below the ceiling JetStream recorded: reserve more above `next`,
    /// then join again with the reservation.
    Reserve { next: u64 },
}

/// Places JetStream recorded as reserved: `floor` the ceiling before this reservation,
/// `ceiling` the new one (see `lua/queue.lua`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    pub floor: u64,
    pub ceiling: u64,
}

impl Store {
    /// `user` joins the sale's line; `score` (below 2^52) places it among the early joiners.
    pub(super) async fn join(
        &self,
        sku: &Sku,
        user: &UserId,
        score: u64,
        reservation: Option<Reservation>,
    ) -> Result<JoinReply, JoinError> {
        let keys = self.redis.keys(sku);
        let mut call = self.scripts.queue.prepare_invoke();
        let (floor, ceiling) = reservation.map_or((String::new(), String::new()), |r| {
            (r.floor.to_string(), r.ceiling.to_string())
        });
        call.key(keys.sale())
            .key(keys.queue_early())
            .key(keys.queue_places())
            .arg(user.as_str())
            .arg(score)
            .arg(floor)
            .arg(ceiling);
        let mut redis = self.redis.writer().await?;
        let reply: Vec<Value> = self.redis.observe(call.invoke_async(&mut *redis).await)?;
        let reply = Reply(&reply);
        let refused = |refusal| Err(Failed::Refused(refusal));
        match reply.text(0)? {
            "sale_missing" => return Err(StoreError::SaleMissing.into()),
            "no_queue" => return refused(QueueRefusal::NoQueue),
            _ => {}
        }
        let now_ms = reply.int(1)?;
        let queue = Queue::decode(reply.text(2)?).ok_or_else(|| reply.corrupt())?;
        let joined = match reply.text(0)? {
            "placed" => Joined::Placed {
                place: reply.uint(3)?,
                new: reply.int(4)? == 1,
            },
            "waiting" => Joined::Waiting,
            "reserve" => Joined::Reserve {
                next: reply.uint(3)?,
            },
            "queue_not_open" => {
                return refused(QueueRefusal::QueueNotOpen {
                    opens_at: queue.opens_at(),
                });
            }
            "sale_not_open" => return refused(QueueRefusal::SaleNotOpen),
            "sold_out" => return refused(QueueRefusal::SoldOut),
            _ => return Err(reply.corrupt().into()),
        };
        Ok(JoinReply {
            now_ms,
            queue,
            joined,
        })
    }
}
