-- Orders as the consumer persists them from the JetStream order events.
-- Applied by `flashsale consume-orders` at start; safe to apply again, and it brings a table
-- of an earlier version up to date in place (new columns nullable, the status check widened).
CREATE TABLE IF NOT EXISTS orders (
    order_id     text        PRIMARY KEY,
    sku          text        NOT NULL,
    user_id      text        NOT NULL,
    quantity     integer     NOT NULL CHECK (quantity > 0),
    unit_price   bigint      NOT NULL CHECK (unit_price >= 0),
    total_amount bigint      NOT NULL CHECK (total_amount >= 0),
    created_at   timestamptz NOT NULL,
    status       text        NOT NULL,
    -- When this row last changed: insert, or the order's end (paid, expired, cancelled).
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Added with the payment window: null for orders of sales without one.
ALTER TABLE orders ADD COLUMN IF NOT EXISTS pay_by      timestamptz;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS paid_at     timestamptz;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS payment_ref text;

-- The first version allowed only 'created' and 'cancelled'. Replaced only when it is not the
-- current one, so a start does not re-validate the whole table each time.
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint
        WHERE conrelid = 'orders'::regclass AND conname = 'orders_status_check'
          AND pg_get_constraintdef(oid) LIKE '%pending_payment%'
    ) THEN
        ALTER TABLE orders DROP CONSTRAINT IF EXISTS orders_status_check;
        ALTER TABLE orders ADD CONSTRAINT orders_status_check
            CHECK (status IN ('created', 'pending_payment', 'paid', 'expired', 'cancelled'));
    END IF;
END $$;

CREATE INDEX IF NOT EXISTS orders_sku_created_at ON orders (sku, created_at);
