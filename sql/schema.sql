-- Orders as the consumer persists them from the JetStream order events.
-- Applied by `flashsale consume-orders` at start; safe to apply again.
CREATE TABLE IF NOT EXISTS orders (
    order_id     text        PRIMARY KEY,
    sku          text        NOT NULL,
    user_id      text        NOT NULL,
    quantity     integer     NOT NULL CHECK (quantity > 0),
    unit_price   bigint      NOT NULL CHECK (unit_price >= 0),
    total_amount bigint      NOT NULL CHECK (total_amount >= 0),
    created_at   timestamptz NOT NULL,
    status       text        NOT NULL CHECK (status IN ('created', 'cancelled')),
    -- When this row last changed: insert, or the cancellation.
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS orders_sku_created_at ON orders (sku, created_at);
