-- Live delivery workers, so per-district politeness limits can be split between processes.
CREATE TABLE delivery_workers (
    owner    text PRIMARY KEY,
    seen_at  timestamptz NOT NULL DEFAULT now()
);
