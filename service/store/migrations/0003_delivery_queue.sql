-- Durable delivery: a job per record to deliver (or cancel), claimed under a lease with
-- FOR UPDATE SKIP LOCKED; idempotency keys in their own table so a correction's new key
-- can point at the record it corrects; what a write replaced in PowerSchool.

CREATE TABLE delivery_jobs (
    record_id        uuid PRIMARY KEY REFERENCES attendance_records ON DELETE CASCADE,
    district_id      text NOT NULL,
    kind             text NOT NULL,          -- 'write' or 'cancel'
    run_at           timestamptz NOT NULL DEFAULT now(),
    lease_owner      text,
    lease_until      timestamptz,
    attempts         integer NOT NULL DEFAULT 0,
    first_attempt_at timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX delivery_jobs_due ON delivery_jobs (run_at);
CREATE INDEX delivery_jobs_district ON delivery_jobs (district_id, run_at);

CREATE TABLE idempotency_keys (
    district_id     text NOT NULL,
    idempotency_key text NOT NULL,
    request_hash    text NOT NULL,
    -- Deferred so a key can be claimed first, in the same transaction as its new record.
    record_id       uuid NOT NULL REFERENCES attendance_records ON DELETE CASCADE
                    DEFERRABLE INITIALLY DEFERRED,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (district_id, idempotency_key)
);
INSERT INTO idempotency_keys (district_id, idempotency_key, request_hash, record_id)
SELECT district_id, idempotency_key, request_hash, record_id FROM attendance_records;

ALTER TABLE attendance_records
    ADD COLUMN replaced_attendance_codeid bigint,
    ADD COLUMN replaced_att_code          text NOT NULL DEFAULT '',
    ADD COLUMN replaced_comment           text NOT NULL DEFAULT '',
    ADD COLUMN replaced_set               boolean NOT NULL DEFAULT false,
    ADD COLUMN cancel_reason              text NOT NULL DEFAULT '',
    ADD COLUMN next_attempt_at            timestamptz;
CREATE INDEX attendance_records_student_day
    ON attendance_records (district_id, roster_id, att_date, event);
CREATE INDEX attendance_records_listing
    ON attendance_records (district_id, created_at DESC, record_id DESC);

ALTER TABLE schools
    ADD COLUMN late_and_early_code text NOT NULL DEFAULT '',
    ADD COLUMN absence_codes       text[] NOT NULL DEFAULT '{}';

ALTER TABLE districts
    ADD COLUMN max_in_flight           integer NOT NULL DEFAULT 0,
    ADD COLUMN max_requests_per_second integer NOT NULL DEFAULT 0;
