-- name: get_district
SELECT * FROM districts WHERE district_id = $1;

-- name: get_schools
SELECT * FROM schools WHERE district_id = $1 ORDER BY school_number;

-- name: upsert_district
-- An empty secret keeps the stored one: secrets are write-only and callers re-send configs without them.
INSERT INTO districts AS d (
    district_id, name, roster_source, id_mode, visible_student_id, writeback_enabled,
    timezone, ps_base_url, ps_client_id, ps_client_secret
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (district_id) DO UPDATE SET
    name = EXCLUDED.name,
    roster_source = EXCLUDED.roster_source,
    id_mode = EXCLUDED.id_mode,
    visible_student_id = EXCLUDED.visible_student_id,
    writeback_enabled = EXCLUDED.writeback_enabled,
    timezone = EXCLUDED.timezone,
    ps_base_url = EXCLUDED.ps_base_url,
    ps_client_id = EXCLUDED.ps_client_id,
    ps_client_secret = COALESCE(NULLIF(EXCLUDED.ps_client_secret, ''), d.ps_client_secret),
    updated_at = now();

-- name: delete_schools
DELETE FROM schools WHERE district_id = $1;

-- name: insert_school
INSERT INTO schools (
    district_id, school_number, roster_school_id, name, timezone, writeback_enabled,
    late_check_in_code, early_check_out_code, late_check_in_excused_code,
    early_check_out_excused_code
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10);
