-- name: get_state
SELECT * FROM roster_sync_state WHERE district_id = $1;

-- name: save_cursor
INSERT INTO roster_sync_state (district_id, cursor) VALUES ($1, $2)
ON CONFLICT (district_id) DO UPDATE SET cursor = EXCLUDED.cursor;

-- name: finish
-- $3 = true when the run read the whole roster.
INSERT INTO roster_sync_state (district_id, last_sync_at, last_error, last_full_at)
VALUES ($1, now(), $2, CASE WHEN $3 THEN now() END)
ON CONFLICT (district_id) DO UPDATE SET
    last_sync_at = now(),
    last_error = EXCLUDED.last_error,
    last_full_at = CASE WHEN $3 THEN now() ELSE roster_sync_state.last_full_at END;

-- name: try_lock
SELECT pg_try_advisory_lock(hashtext('roster-sync:' || $1));

-- name: unlock
SELECT pg_advisory_unlock(hashtext('roster-sync:' || $1));

-- name: clever_event_seen
-- An event newer than the cursor: Clever's Events API is on for the district.
INSERT INTO roster_sync_state (district_id, clever_event_seen_at) VALUES ($1, now())
ON CONFLICT (district_id) DO UPDATE SET
    clever_event_seen_at = now(),
    clever_events_off_at = NULL,
    clever_events_missed = 0;

-- name: clever_events_missed
-- A full read found $2 changes while no event came: the first detection time is kept.
INSERT INTO roster_sync_state (district_id, clever_events_off_at, clever_events_missed)
VALUES ($1, now(), $2)
ON CONFLICT (district_id) DO UPDATE SET
    clever_events_off_at = COALESCE(roster_sync_state.clever_events_off_at, now()),
    clever_events_missed = EXCLUDED.clever_events_missed;
