-- Sale definitions, from the gateway's `opened` events: what a Redis rebuild needs
-- besides the orders (initial stock, per-user limit, window). Null for sales seen only
-- through their orders.
ALTER TABLE sales ADD COLUMN initial_stock bigint CHECK (initial_stock >= 0);
ALTER TABLE sales ADD COLUMN per_user_limit bigint CHECK (per_user_limit > 0);
ALTER TABLE sales ADD COLUMN start_ms bigint;
ALTER TABLE sales ADD COLUMN end_ms bigint;
