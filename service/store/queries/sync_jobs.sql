-- name: create
INSERT INTO sync_jobs (sync_id, district_id) VALUES ($1, $2)
RETURNING *;

-- name: page_done
UPDATE sync_jobs SET pages_done = pages_done + 1, students_done = students_done + $2
WHERE sync_id = $1;

-- name: set_phase
UPDATE sync_jobs SET phase = $2 WHERE sync_id = $1;

-- name: finish
UPDATE sync_jobs SET
    phase = $2, full_read = $3, created = $4, updated = $5, deactivated = $6, unchanged = $7,
    prefetched = $8, unresolved = $9, error = $10, error_reason = $11, finished_at = now()
WHERE sync_id = $1
RETURNING *;

-- name: get
SELECT * FROM sync_jobs WHERE district_id = $1 AND sync_id = $2;

-- name: latest
SELECT * FROM sync_jobs WHERE district_id = $1 ORDER BY started_at DESC LIMIT 1;

-- name: running
SELECT * FROM sync_jobs WHERE district_id = $1 AND finished_at IS NULL;

-- name: close_abandoned
-- Only run while holding the district's sync lock: an unfinished job then belongs to a
-- process that died (its lock went with its session).
UPDATE sync_jobs SET phase = 'failed', finished_at = now(),
    error = 'the service process running this sync stopped before it finished',
    error_reason = 'SYNC_INTERRUPTED'
WHERE district_id = $1 AND finished_at IS NULL
RETURNING *;
