-- Roster sync jobs: a sync runs apart from the RPC that asked for it, and its phase, progress
-- and outcome are visible from every process.

CREATE TABLE sync_jobs (
    sync_id         uuid PRIMARY KEY,
    district_id     text NOT NULL REFERENCES districts ON DELETE CASCADE,
    -- reading, prefetching, done or failed
    phase           text NOT NULL DEFAULT 'reading',
    full_read       boolean NOT NULL DEFAULT false,
    pages_done      bigint NOT NULL DEFAULT 0,
    students_done   bigint NOT NULL DEFAULT 0,
    created         bigint NOT NULL DEFAULT 0,
    updated         bigint NOT NULL DEFAULT 0,
    deactivated     bigint NOT NULL DEFAULT 0,
    unchanged       bigint NOT NULL DEFAULT 0,
    prefetched      bigint NOT NULL DEFAULT 0,
    unresolved      bigint NOT NULL DEFAULT 0,
    error           text NOT NULL DEFAULT '',
    error_reason    text NOT NULL DEFAULT '',
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);

CREATE INDEX sync_jobs_by_district ON sync_jobs (district_id, started_at DESC);
-- One unfinished job per district: the advisory lock's twin in the data.
CREATE UNIQUE INDEX sync_jobs_one_running ON sync_jobs (district_id) WHERE finished_at IS NULL;
