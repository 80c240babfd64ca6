-- Expired orders the payment-window scan could not settle (Redis did not know them, as
-- after a Redis data loss). They are set aside for reconciliation so that they never
-- block the scan of the others.
ALTER TABLE orders ADD COLUMN unsettled_reason text;
DROP INDEX orders_reserved_by_age;
CREATE INDEX orders_reserved_by_age ON orders (accepted_at) WHERE status = 'reserved' AND unsettled_reason IS NULL;
