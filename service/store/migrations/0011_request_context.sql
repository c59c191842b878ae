-- The request that queued (or last re-queued) a delivery job, so the delivery's log lines name
-- it: one check-in can be followed from its RPC to its outcome, in whichever process.
ALTER TABLE delivery_jobs ADD COLUMN request_id text;
