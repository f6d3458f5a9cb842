//! The waiting room's operations: joining a sale's line, pausing and resuming admission,
//! and the gate that turns away a purchase whose place is plainly not admitted yet without
//! asking Redis (a stampede of early buyers then costs Redis nothing; `lua/purchase.lua`
//! decides every purchase it lets through, at the edge too).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{OperationError, Operations, Unanswered};
use crate::domain::queue::{Admission, Place, Queue};
use crate::domain::refusal::{PurchaseRefusal, QueueRefusal, SaleRefusal};
use crate::domain::sale::{Sale, SaleSettings};
use crate::domain::{Sku, UserId};
use crate::recovery::{Absent, RecoveryError};
use crate::store::{JoinReply, Joined, Reservation, StoreError};
use crate::support::metrics;

/// Places reserved in JetStream at a time: one write to JetStream per this many joins.
const RESERVED_PLACES: u64 = 1000;
/// How long a replica trusts its copy of a sale's queue for the gate: a pause, a resume or a
/// new rate on another replica reaches this one's gate within it (Redis decides meanwhile).
const GATE_COPY_TTL: Duration = Duration::from_secs(1);
/// The gate lets a purchase through this long before its place's admission by this
/// replica's estimate of Redis's clock, so a clock estimate a little behind turns no
/// admitted buyer away.
const GATE_MARGIN_MS: i64 = 100;

/// This replica's copies of sales' queues, for the gate, and its one reservation at a time.
#[derive(Default)]
pub(super) struct Lines {
    copies: Mutex<HashMap<Sku, ScheduleCopy>>,
    /// The highest place this replica gave or handed back, per sale (for the metrics).
    places: Mutex<HashMap<Sku, u64>>,
    reserving: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
struct ScheduleCopy {
    queue: Option<Queue>,
    /// Redis's clock minus this replica's, when read.
    offset_ms: i64,
    read: Instant,
    /// A caller is reading it again (see [`Lines::fresh`]).
    refreshing: bool,
}

impl Lines {
    fn remember(&self, sku: &Sku, queue: Option<Queue>, redis_now_ms: i64) {
        let copy = ScheduleCopy {
            queue,
            offset_ms: redis_now_ms - local_ms(),
            read: Instant::now(),
            refreshing: false,
        };
        self.copies.lock().insert(sku.clone(), copy);
    }

    /// The copy the gate may use: read within [`GATE_COPY_TTL`]. Once it is older, the first
    /// caller to find it so gets `None` and reads it again, while the others go on with it
    /// for up to another TTL: a stampede of early buyers costs Redis one read a second, not
    /// one each.
    fn fresh(&self, sku: &Sku) -> Option<ScheduleCopy> {
        let mut copies = self.copies.lock();
        let copy = copies.get_mut(sku)?;
        let age = copy.read.elapsed();
        if age < GATE_COPY_TTL || (copy.refreshing && age < 2 * GATE_COPY_TTL) {
            return Some(copy.clone());
        }
        copy.refreshing = true;
        None
    }

    pub(super) fn forget(&self, sku: &Sku) {
        self.copies.lock().remove(sku);
    }

    fn placed(&self, sku: &Sku, place: u64) {
        let mut places = self.places.lock();
        let highest = places.entry(sku.clone()).or_default();
        *highest = (*highest).max(place);
    }

    /// Sets each known line's gauges: its length as this replica saw it, and the places its
    /// schedule admits now (by this replica's estimate of Redis's clock).
    pub(super) fn record_gauges(&self) {
        let places = self.places.lock().clone();
        let copies = self.copies.lock().clone();
        for (sku, highest) in places {
            let admitted = copies
                .get(&sku)
                .and_then(|copy| {
                    let queue = copy.queue.as_ref()?;
                    Some(queue.schedule.admitted(local_ms() + copy.offset_ms))
                })
                .unwrap_or(0);
            metrics::record_line(sku.as_str(), highest, admitted);
        }
    }
}

fn local_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// What a join answers.
#[derive(Debug, Clone)]
pub struct JoinAnswer {
    /// The buyer's place; `None` when it joined before the start (drawn at the start).
    pub place: Option<Place>,
    /// This join gave the place (201); else the buyer had it (200), or waits for the draw.
    pub new: bool,
    /// Where the place stands now, with the instants of the schedule as it stands.
    pub admission: Option<Admission>,
    /// When the draw happens (the start of admission), ms.
    pub starts_at: i64,
    /// Places admitted now (1 to this).
    pub admitted: u64,
}

impl Operations {
    /// `user` joins the sale's line: one place per buyer, the same place again on a repeat.
    pub async fn join(
        &self,
        sku: &Sku,
        user: &UserId,
    ) -> Result<JoinAnswer, OperationError<QueueRefusal>> {
        let joined = self.join_reserving(sku, user).await;
        metrics::record_join(match &joined {
            Ok(JoinAnswer { place: None, .. }) => "waiting",
            Ok(JoinAnswer { new: true, .. }) => "placed",
            Ok(_) => "again",
            Err(_) => "refused",
        });
        if let Ok(JoinAnswer {
            place: Some(place), ..
        }) = &joined
        {
            self.lines.placed(sku, place.place);
        }
        joined
    }

    async fn join_reserving(
        &self,
        sku: &Sku,
        user: &UserId,
    ) -> Result<JoinAnswer, OperationError<QueueRefusal>> {
        // Below 2^52: exact as a sorted set's score.
        let score = rand::random::<u64>() >> 12;
        let mut reservation = None;
        for _ in 0..4 {
            let reply = self.join_once(sku, user, score, reservation.take()).await?;
            let Joined::Reserve { .. } = reply.joined else {
                return Ok(answer(&reply));
            };
            // One reservation at a time in this replica: the joins that found the line full
            // meanwhile find it reserved when the first is done.
            let _reserving = self.lines.reserving.lock().await;
            let reply = self.join_once(sku, user, score, None).await?;
            let Joined::Reserve { next } = reply.joined else {
                return Ok(answer(&reply));
            };
            reservation = Some(self.reserve(sku, next).await?);
        }
        log::warn!("sale {sku}: no place reserved after 4 tries");
        Err(Unanswered::Unavailable.into())
    }

    async fn join_once(
        &self,
        sku: &Sku,
        user: &UserId,
        score: u64,
        reservation: Option<Reservation>,
    ) -> Result<JoinReply, OperationError<QueueRefusal>> {
        let joined = self
            .recovery
            .on_sale(sku, || self.store.join(sku, user, score, reservation))
            .await?;
        let reply = match joined {
            Ok(reply) => reply,
            Err(Absent::Undefined) => {
                return Err(OperationError::Refused(QueueRefusal::SaleNotFound));
            }
            Err(Absent::Archived(_)) => {
                return Err(OperationError::Refused(QueueRefusal::SaleArchived));
            }
        };
        self.lines
            .remember(sku, Some(reply.queue.clone()), reply.now_ms);
        Ok(reply)
    }

    /// Counts a purchase whose queue token the edge refused (forged, another buyer's).
    pub fn refused_queue_token(&self) {
        self.store
            .metrics()
            .outcome(metrics::Outcome::QueueTokenRequired);
    }

    /// Sets the waiting rooms' gauges (at a `/metrics` scrape).
    pub fn record_queue_gauges(&self) {
        self.lines.record_gauges();
    }

    /// Reserves places above `next` in JetStream, compare-and-set against other replicas.
    async fn reserve(&self, sku: &Sku, next: u64) -> Result<Reservation, StoreError> {
        let definitions = self.recovery.definitions();
        let definition = definitions.get(sku).await.map_err(RecoveryError::from)?;
        let generation = definition.and_then(|d| d.history_from).unwrap_or(0);
        for _ in 0..5 {
            let (floor, revision) = definitions
                .places_reserved(sku, generation)
                .await
                .map_err(RecoveryError::from)?;
            let ceiling = floor.max(next) + RESERVED_PLACES;
            if definitions
                .reserve_places(sku, generation, ceiling, revision)
                .await
                .map_err(RecoveryError::from)?
            {
                log::info!("sale {sku}: places up to {ceiling} reserved");
                return Ok(Reservation { floor, ceiling });
            }
        }
        Err(StoreError::NotRebuilt(format!(
            "sale {sku}: places not reserved: other replicas kept reserving"
        )))
    }

    /// The gate before a purchase with a queue token: `Err` when this replica's copy of the
    /// sale's queue (at most [`GATE_COPY_TTL`] old) says the place is not admitted yet, or
    /// the token is of an earlier line; otherwise Redis decides. A copy is read when none
    /// is fresh (one read a second per sale and replica).
    pub(super) async fn gate(&self, sku: &Sku, place: Place) -> Result<(), PurchaseRefusal> {
        let copy = match self.lines.fresh(sku) {
            Some(copy) => copy,
            None => match self.sale_in_store(sku).await {
                Ok(Some(sale)) => {
                    let queue = sale.queue.map(|view| view.queue);
                    self.lines.remember(sku, queue, sale.clock.read_at_ms);
                    match self.lines.fresh(sku) {
                        Some(copy) => copy,
                        None => return Ok(()),
                    }
                }
                // Redis decides (and answers what is wrong).
                _ => return Ok(()),
            },
        };
        let Some(queue) = copy.queue else {
            return Ok(());
        };
        if place.line != queue.schedule.starts() {
            return Err(PurchaseRefusal::EarlierLine);
        }
        let redis_now = local_ms() + copy.offset_ms + GATE_MARGIN_MS;
        match queue.admission(place.place, redis_now) {
            Admission::Waiting { admit_at } => Err(PurchaseRefusal::NotAdmitted { admit_at }),
            _ => Ok(()),
        }
    }

    /// Pauses the sale's admission (the line stays; nobody more is admitted until a resume)
    /// or resumes it at the sale's `admit_per_sec`. Recorded in JetStream like a PUT, so a
    /// rebuilt sale admits as before.
    pub async fn switch_queue(
        &self,
        sku: &Sku,
        switch: QueueSwitch,
    ) -> Result<Sale, OperationError<SaleRefusal>> {
        let resume = switch == QueueSwitch::Resume;
        let (sale, _) = self
            .change_definition(sku, |definition| {
                let queue = definition.queue.as_ref().ok_or(SaleRefusal::NoQueue)?;
                let switched = queue
                    .switched(resume, local_ms())
                    .ok_or(SaleRefusal::ScheduleFull)?;
                Ok(SaleSettings {
                    queue: Some(switched),
                    ..definition.settings()
                })
            })
            .await?;
        log::info!(
            "sale {sku}: queue {}",
            if resume { "resumed" } else { "paused" }
        );
        self.sale_changes.state_changed(sku).await;
        Ok(sale)
    }
}

/// What [`Operations::switch_queue`] does to a sale's admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueSwitch {
    Pause,
    Resume,
}

fn answer(reply: &JoinReply) -> JoinAnswer {
    let queue = &reply.queue;
    let line = queue.schedule.starts();
    let place = match reply.joined {
        Joined::Placed { place, .. } => Some(Place { line, place }),
        _ => None,
    };
    JoinAnswer {
        place,
        new: matches!(reply.joined, Joined::Placed { new: true, .. }),
        admission: place.map(|p| queue.admission(p.place, reply.now_ms)),
        starts_at: line,
        admitted: queue.schedule.admitted(reply.now_ms),
    }
}
