-- Sales seen in orders, and the orders themselves.
CREATE TABLE sales (
    sale           text PRIMARY KEY,
    first_order_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE orders (
    order_id        text PRIMARY KEY,
    sale            text NOT NULL REFERENCES sales (sale),
    user_id         bigint NOT NULL,
    units           integer NOT NULL CHECK (units > 0),
    per_user_limit  integer NOT NULL CHECK (per_user_limit > 0),
    status          text NOT NULL CHECK (status IN ('reserved', 'paid', 'cancelled')),
    accepted_at     timestamptz NOT NULL,
    written_at      timestamptz NOT NULL DEFAULT now(),
    paid_at         timestamptz,
    cancelled_at    timestamptz,
    CHECK ((status = 'paid') = (paid_at IS NOT NULL)),
    CHECK ((status = 'cancelled') = (cancelled_at IS NOT NULL))
);

-- One live order per buyer and sale while the sale's per-user limit is one.
CREATE UNIQUE INDEX orders_one_per_buyer ON orders (sale, user_id)
    WHERE status <> 'cancelled' AND per_user_limit = 1;

-- The payment-window scan.
CREATE INDEX orders_reserved_by_age ON orders (accepted_at) WHERE status = 'reserved';
