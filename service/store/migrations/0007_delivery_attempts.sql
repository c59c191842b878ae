-- Every delivery attempt of a record, so an admin can see what happened and when (not just
-- the last error); and what a finished cancel did, kept apart from last_error.
CREATE TABLE delivery_attempts (
    record_id          uuid NOT NULL REFERENCES attendance_records ON DELETE CASCADE,
    -- Insertion order: clocks of several processes cannot be trusted to order attempts.
    seq                bigint GENERATED ALWAYS AS IDENTITY,
    at                 timestamptz NOT NULL,
    kind               text NOT NULL,          -- 'write' or 'cancel'
    outcome            text NOT NULL,          -- written/skipped/failed/cancelled/retry
    powerschool_status integer,
    attendance_code    text NOT NULL DEFAULT '',
    yearid             bigint,
    error              text NOT NULL DEFAULT '',
    -- Also the index that reads one record's history in order.
    PRIMARY KEY (record_id, seq)
);

ALTER TABLE attendance_records ADD COLUMN cancel_outcome text NOT NULL DEFAULT '';
