-- Per-school attendance mode (Daily, Meeting, Time) and the Meeting-mode "missed" code; and
-- the class meetings a Meeting-mode record wrote. The meetings are a table, not a jsonb column
-- on the record: each meeting's replaced value is kept by its own first-value-wins upsert
-- before the write is sent (as remember_replaced does for a daily row), which a jsonb
-- document would need a read-modify-write for; a cancel's hand-over is per meeting too.

ALTER TABLE schools
    ADD COLUMN attendance_mode text NOT NULL DEFAULT 'daily',
    ADD COLUMN missed_code     text NOT NULL DEFAULT '';

CREATE TABLE record_meetings (
    record_id                  uuid NOT NULL REFERENCES attendance_records ON DELETE CASCADE,
    ccid                       bigint NOT NULL,          -- CC.ID, the section enrollment
    period_id                  bigint NOT NULL,          -- PERIOD.ID
    period                     text NOT NULL DEFAULT '',
    start_time                 integer NOT NULL,         -- seconds since local midnight
    end_time                   integer NOT NULL,
    attendance_code            text NOT NULL DEFAULT '', -- '' until written, or left alone
    left_unchanged             text NOT NULL DEFAULT '',
    replaced_attendance_codeid bigint,
    replaced_att_code          text NOT NULL DEFAULT '',
    replaced_comment           text NOT NULL DEFAULT '',
    replaced_set               boolean NOT NULL DEFAULT false,
    PRIMARY KEY (record_id, ccid, period_id)
);
