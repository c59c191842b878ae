-- The canonical request a key was first used for, so a reuse can be answered with the names
-- of the fields that differ. Keys stored before this have only their hash (NULL here).
ALTER TABLE idempotency_keys ADD COLUMN request_fields jsonb;
