-- name: ping
-- The cheapest round trip that proves the server accepts queries.
SELECT 1;
