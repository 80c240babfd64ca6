-- The price a payment for one unit of a sale must carry (cents), from the gateway's
-- `opened` event, so that a Redis rebuild restores it with the sale. NULL for sales
-- defined before prices (their payments carry the gateway's `default_price_cents`).
ALTER TABLE sales ADD COLUMN price_cents BIGINT CHECK (price_cents > 0);
