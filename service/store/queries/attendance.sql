-- name: insert_record
-- Returns nothing when the idempotency key is already taken; the caller then reads the stored one.
INSERT INTO attendance_records (
    record_id, district_id, idempotency_key, request_hash, roster_id, event, occurred_at,
    school_number, att_date, attendance_code, reason, excused, comment, checked_out_by, state,
    last_error
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
ON CONFLICT (district_id, idempotency_key) DO NOTHING
RETURNING *;

-- name: get_by_key
SELECT * FROM attendance_records WHERE district_id = $1 AND idempotency_key = $2;

-- name: get_record
SELECT * FROM attendance_records WHERE district_id = $1 AND record_id = $2;

-- name: record_outcome
UPDATE attendance_records
SET state = $2, powerschool_attendance_id = COALESCE($3, powerschool_attendance_id),
    last_error = $4, attempts = attempts + $5, updated_at = now()
WHERE record_id = $1
RETURNING *;
