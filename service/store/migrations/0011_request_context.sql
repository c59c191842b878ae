-- The request that queued (or last re-queued) a delivery job, so the delivery's log lines name
-- it and its trace continues: one check-in can be followed from its RPC to its outcome, in
-- whichever process. traceparent is the W3C header value (version-traceid-spanid-flags).
ALTER TABLE delivery_jobs
    ADD COLUMN request_id  text,
    ADD COLUMN traceparent text;
