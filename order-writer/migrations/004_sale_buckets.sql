-- The stock buckets a sale was created with (the gateway's `opened` event), so that a
-- Redis rebuild restores a bucketed sale in its buckets. 1 for sales defined before
-- buckets, and for sales seen only through their orders.
ALTER TABLE sales ADD COLUMN buckets INT NOT NULL DEFAULT 1 CHECK (buckets BETWEEN 1 AND 64);
