-- name: get_district
SELECT d.*, r.last_sync_at, COALESCE(r.last_error, '') AS last_sync_error
FROM districts d LEFT JOIN roster_sync_state r USING (district_id)
WHERE d.district_id = $1;

-- name: get_schools
SELECT * FROM schools WHERE district_id = $1 ORDER BY school_number;

-- name: list_district_ids
-- One page by district_id, after the previous page's last ID ('' for the first page), of
-- the districts in $3 (NULL: all).
SELECT district_id FROM districts
WHERE district_id > $1 AND ($3::text[] IS NULL OR district_id = ANY($3))
ORDER BY district_id LIMIT $2;

-- name: upsert_district
-- An empty secret keeps the stored one (secrets are write-only and callers re-send configs
-- without them), but only for the same server and client ID: a secret is never sent to a
-- host it was not given for.
INSERT INTO districts AS d (
    district_id, name, roster_source, id_mode, visible_student_id, writeback_enabled,
    timezone, ps_base_url, ps_client_id, ps_client_secret,
    clever_base_url, clever_client_id, clever_client_secret, clever_district_token,
    clever_district_id, classlink_endpoint_url, classlink_client_id, classlink_client_secret,
    sync_interval_seconds, max_in_flight, max_requests_per_second
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
          $20, $21)
ON CONFLICT (district_id) DO UPDATE SET
    name = EXCLUDED.name,
    roster_source = EXCLUDED.roster_source,
    id_mode = EXCLUDED.id_mode,
    visible_student_id = EXCLUDED.visible_student_id,
    writeback_enabled = EXCLUDED.writeback_enabled,
    timezone = EXCLUDED.timezone,
    ps_base_url = EXCLUDED.ps_base_url,
    ps_client_id = EXCLUDED.ps_client_id,
    ps_client_secret = CASE
        WHEN EXCLUDED.ps_client_secret <> '' THEN EXCLUDED.ps_client_secret
        WHEN (d.ps_base_url, d.ps_client_id) = (EXCLUDED.ps_base_url, EXCLUDED.ps_client_id)
            THEN d.ps_client_secret
        ELSE '' END,
    clever_base_url = EXCLUDED.clever_base_url,
    clever_client_id = EXCLUDED.clever_client_id,
    clever_client_secret = CASE
        WHEN EXCLUDED.clever_client_secret <> '' THEN EXCLUDED.clever_client_secret
        WHEN (d.clever_base_url, d.clever_client_id)
             = (EXCLUDED.clever_base_url, EXCLUDED.clever_client_id) THEN d.clever_client_secret
        ELSE '' END,
    clever_district_token = CASE
        WHEN EXCLUDED.clever_district_token <> '' THEN EXCLUDED.clever_district_token
        WHEN d.clever_base_url = EXCLUDED.clever_base_url THEN d.clever_district_token
        ELSE '' END,
    clever_district_id = EXCLUDED.clever_district_id,
    classlink_endpoint_url = EXCLUDED.classlink_endpoint_url,
    classlink_client_id = EXCLUDED.classlink_client_id,
    classlink_client_secret = CASE
        WHEN EXCLUDED.classlink_client_secret <> '' THEN EXCLUDED.classlink_client_secret
        WHEN (d.classlink_endpoint_url, d.classlink_client_id)
             = (EXCLUDED.classlink_endpoint_url, EXCLUDED.classlink_client_id)
            THEN d.classlink_client_secret
        ELSE '' END,
    sync_interval_seconds = EXCLUDED.sync_interval_seconds,
    max_in_flight = EXCLUDED.max_in_flight,
    max_requests_per_second = EXCLUDED.max_requests_per_second,
    updated_at = now();

-- name: lock_district
SELECT id_mode, ps_base_url FROM districts WHERE district_id = $1 FOR UPDATE;

-- name: forget_powerschool_ids
-- STUDENTS.IDs looked up under another ID mode or on another server may name other students.
UPDATE students
SET dcid = NULL, powerschool_id = NULL, ps_school_number = NULL, resolved_at = NULL
WHERE district_id = $1 AND (powerschool_id IS NOT NULL OR dcid IS NOT NULL);

-- name: delete_schools
DELETE FROM schools WHERE district_id = $1;

-- name: insert_school
INSERT INTO schools (
    district_id, school_number, roster_school_id, name, timezone, writeback_enabled,
    late_check_in_code, early_check_out_code, late_check_in_excused_code,
    early_check_out_excused_code, late_and_early_code, absence_codes, attendance_mode,
    missed_code
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14);

-- name: due_for_sync
-- Districts whose schedule says a sync is due, and whether that sync reads the whole roster;
-- the caller takes a per-district advisory lock. $1 = FULL_SYNC_INTERVAL in seconds. A Clever
-- district whose Events are not to be trusted (found off, or no new event for $1) is read in
-- full every $1; one whose Events were found off gets no incremental syncs (they see nothing).
-- A failed full read is tried again after the shorter of the two intervals, not at every poll.
WITH s AS (
    SELECT d.district_id, d.sync_interval_seconds, r.last_sync_at,
           d.roster_source = 'clever' AND r.clever_events_off_at IS NOT NULL AS events_off,
           d.roster_source = 'clever'
               AND (r.clever_events_off_at IS NOT NULL
                    OR r.clever_event_seen_at IS NULL
                    OR r.clever_event_seen_at < now() - make_interval(secs => $1))
               AND (r.last_full_at IS NULL
                    OR r.last_full_at < now() - make_interval(secs => $1))
               AND (r.last_sync_at IS NULL
                    OR r.last_sync_at < now() - make_interval(
                        secs => least($1, d.sync_interval_seconds::float8))) AS full_due
    FROM districts d LEFT JOIN roster_sync_state r USING (district_id)
    WHERE d.sync_interval_seconds > 0
)
SELECT district_id, COALESCE(full_due, false) AS full
FROM s
WHERE last_sync_at IS NULL
   OR full_due
   OR (NOT COALESCE(events_off, false)
       AND last_sync_at < now() - make_interval(secs => sync_interval_seconds))
ORDER BY last_sync_at NULLS FIRST
LIMIT 100;
