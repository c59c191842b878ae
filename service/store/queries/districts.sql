-- name: get_district
SELECT d.*, r.last_sync_at, COALESCE(r.last_error, '') AS last_sync_error
FROM districts d LEFT JOIN roster_sync_state r USING (district_id)
WHERE d.district_id = $1;

-- name: get_schools
SELECT * FROM schools WHERE district_id = $1 ORDER BY school_number;

-- name: list_district_ids
-- One page by district_id, after the previous page's last ID ('' for the first page).
SELECT district_id FROM districts WHERE district_id > $1 ORDER BY district_id LIMIT $2;

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
    early_check_out_excused_code, late_and_early_code, absence_codes
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12);

-- name: due_for_sync
-- Districts whose schedule says a sync is due; the caller takes a per-district advisory lock.
SELECT d.district_id
FROM districts d LEFT JOIN roster_sync_state r USING (district_id)
WHERE d.sync_interval_seconds > 0
  AND (r.last_sync_at IS NULL
       OR r.last_sync_at < now() - make_interval(secs => d.sync_interval_seconds))
ORDER BY r.last_sync_at NULLS FIRST
LIMIT 100;
