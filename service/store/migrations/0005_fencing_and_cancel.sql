-- A fencing token per claim (a process re-claiming its own job must not accept the older
-- attempt's outcome), and whether a record's pending job is a cancel (so a retry keeps it one).
ALTER TABLE delivery_jobs ADD COLUMN lease_token uuid;
ALTER TABLE attendance_records ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false;
