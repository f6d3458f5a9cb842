//! The refusals: a rule of a sale, or the state of an order, saying no. They are the
//! service's words for it, shared by every layer: the scripts' replies are read into them
//! (`store/`), the operations add a sale's absence (`operations/`), and the HTTP edge gives
//! each its status and code once (`http/error.rs`). Neither Redis nor HTTP appears here.

/// Why a purchase took nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PurchaseRefusal {
    #[error("no sale with this sku")]
    SaleNotFound,
    #[error("the sale is not open now")]
    SaleNotOpen,
    /// The sale ended and left Redis (`recovery/archive.rs`): nothing is decided on it.
    #[error("the sale ended and was archived")]
    SaleArchived,
    #[error("this user already holds the most units the sale allows per user")]
    UserLimitReached,
    #[error("sold out: {remaining} left, fewer than asked for")]
    SoldOut { remaining: u64 },
    /// Redis's copy of the sale holds more sold than stock (a rebuilt history that sells past
    /// it): nothing is decided on it until a cancel, an expiry or a PUT mends it.
    #[error("the sale's copy counts {sold} sold of {stock}; purchases wait until it is mended")]
    SaleInconsistent { stock: u64, sold: u64 },
    #[error("quantity is above the sale's per_user_limit of {limit}")]
    QuantityAboveLimit { limit: u64 },
    #[error("this Idempotency-Key was used for a different request")]
    IdempotencyConflict,
    /// The buyer's place in the sale's line is not admitted yet: at `admit_at` (ms) as the
    /// schedule stands, `None` while admission is paused before it.
    #[error("your place in line is not admitted yet")]
    NotAdmitted { admit_at: Option<i64> },
    #[error("your admission lapsed: your turn in line has passed")]
    AdmissionExpired,
    /// The sale has a waiting room and the purchase brought no `Queue-Token`.
    #[error(
        "this sale has a waiting room: join it (POST /v1/sales/{{sku}}/queue) and send its Queue-Token"
    )]
    QueueTokenRequired,
    /// The queue token names an earlier line of the sale (a sale started anew on its sku).
    #[error("the Queue-Token is from an earlier line of this sale")]
    EarlierLine,
}

/// Why a pay or cancel changed nothing (or, for `OrderExpired { released: true }`, only
/// expired an overdue order).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderRefusal {
    #[error("no order with this id")]
    OrderNotFound,
    #[error("the order's sale has no payment window: it was final when accepted")]
    NotPayable,
    #[error("the order was cancelled")]
    OrderCancelled,
    /// `released`: this call found it overdue and expired it, so its units are back.
    #[error("the order expired: it was not paid by its pay_by")]
    OrderExpired { released: bool },
    #[error("the order was paid with another payment_ref")]
    PaymentConflict,
    #[error("the order is paid; refunds are not handled here")]
    OrderPaid,
    /// Its sale ended and was archived (or is being archived): its orders no longer change.
    #[error("the order's sale ended and was archived: its orders no longer change")]
    SaleArchived,
}

/// Why a PUT, an end or a reopen of a sale changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaleRefusal {
    /// Ending or reopening a sale that was never defined.
    #[error("no sale with this sku")]
    SaleNotFound,
    /// Ending or reopening a sale that was archived: a PUT starts it anew.
    #[error("the sale ended and was archived; a PUT starts it anew")]
    SaleArchived,
    #[error("stock {stock} is below the {sold} units already sold")]
    StockBelowSold { stock: u64, sold: u64 },
    /// Pausing or resuming the queue of a sale that has none.
    #[error("the sale has no queue")]
    NoQueue,
    /// The queue's schedule holds its most rate changes.
    #[error("the queue's admission schedule holds its most changes (64)")]
    ScheduleFull,
}

/// Why a buyer was given no place in a sale's waiting room.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueRefusal {
    #[error("no sale with this sku")]
    SaleNotFound,
    #[error("this sale has no waiting room: buy directly")]
    NoQueue,
    /// The line opens `opens_at` (ms).
    #[error("the sale's line is not open yet")]
    QueueNotOpen { opens_at: i64 },
    #[error("the sale is not open now")]
    SaleNotOpen,
    #[error("sold out")]
    SoldOut,
    #[error("the sale ended and was archived")]
    SaleArchived,
}
