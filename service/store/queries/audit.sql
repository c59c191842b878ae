-- name: insert_event
INSERT INTO audit_events (caller_id, caller_name, action, district_id, target, changed_fields,
                          details)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb);

-- name: page
-- Newest first. $1: one district ('' for any); $2: the districts the reader may see (NULL for
-- all, and then events without a district, such as caller changes, too); $3: the previous
-- page's last event_id (0 for the first page).
SELECT * FROM audit_events
WHERE ($1 = '' OR district_id = $1)
  AND ($2::text[] IS NULL OR district_id = ANY($2))
  AND ($3 = 0 OR event_id < $3)
ORDER BY event_id DESC
LIMIT $4;
