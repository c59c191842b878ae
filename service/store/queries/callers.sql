-- name: insert_caller
INSERT INTO callers (caller_id, name, role, all_districts, district_ids, token_prefix,
                     token_sha256, created_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
RETURNING *;

-- name: by_prefix
SELECT * FROM callers WHERE token_prefix = $1;

-- name: live_by_name
SELECT * FROM callers WHERE name = $1 AND revoked_at IS NULL;

-- name: by_id
SELECT * FROM callers WHERE caller_id = $1;

-- name: list_callers
SELECT * FROM callers WHERE $1 OR revoked_at IS NULL ORDER BY created_at, caller_id;

-- name: revoke
-- The first revocation's time is kept.
UPDATE callers SET revoked_at = COALESCE(revoked_at, now()) WHERE caller_id = $1 RETURNING *;
