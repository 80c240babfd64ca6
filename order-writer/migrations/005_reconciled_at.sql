-- When a reconcile (after Redis lost writes) last started on each sale, writer's clock in
-- ms. An order accepted before it that reaches the writer afterwards (a gateway's spool
-- replayed once the broker came back) was not seen by that reconcile: the writer puts
-- it back into Redis itself (`late`).
ALTER TABLE sales ADD COLUMN reconciled_at_ms bigint;
