-- name: heartbeat
-- Returns how many workers were seen recently, this one included.
WITH beat AS (
    INSERT INTO delivery_workers (owner, seen_at) VALUES ($1, now())
    ON CONFLICT (owner) DO UPDATE SET seen_at = now()
)
SELECT count(*) + 1 FROM delivery_workers
WHERE owner <> $1 AND seen_at > now() - make_interval(secs => $2);

-- name: leave
DELETE FROM delivery_workers WHERE owner = $1;

-- name: forget_stale
DELETE FROM delivery_workers WHERE seen_at < now() - interval '1 hour';
