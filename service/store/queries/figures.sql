-- name: district_figures
-- Every district's delivery queue (a job is deleted once its outcome is recorded, so every
-- row is queued work) and roster schedule with its last successful sync, for /metrics.
SELECT d.district_id,
    COALESCE(q.depth, 0) AS queue_depth,
    COALESCE(extract(epoch FROM now() - q.oldest), 0)::float8 AS oldest_pending_seconds,
    d.sync_interval_seconds::float8 AS sync_interval_seconds,
    extract(epoch FROM s.finished_at)::float8 AS last_sync_success,
    extract(epoch FROM s.finished_at - s.started_at)::float8 AS last_sync_duration
FROM districts d
LEFT JOIN (
    SELECT district_id, count(*) AS depth, min(created_at) AS oldest
    FROM delivery_jobs GROUP BY district_id
) q USING (district_id)
LEFT JOIN LATERAL (
    SELECT j.started_at, j.finished_at FROM sync_jobs j
    WHERE j.district_id = d.district_id AND j.phase = 'done'
    ORDER BY j.started_at DESC
    LIMIT 1
) s ON true
ORDER BY d.district_id;
