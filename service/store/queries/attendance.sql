-- name: get_by_key
-- The record a key stands for, with the request first sent with it (request_fields is NULL
-- for keys stored before migration 0006).
SELECT k.request_hash AS key_hash, k.request_fields::text AS key_fields, r.*
FROM idempotency_keys k JOIN attendance_records r USING (record_id)
WHERE k.district_id = $1 AND k.idempotency_key = $2;

-- name: upsert_job
-- A fresh job, or a reset one that fences off an attempt in flight (migration 0013).
SELECT queue_delivery($1, $2, $3, $4, $5);

-- name: notify
SELECT pg_notify('writeback_jobs', $1);

-- name: get_record
-- With its attempt history, oldest first, and its class meetings, read in the same snapshot
-- as the record.
SELECT r.*,
    ARRAY(
        SELECT a FROM delivery_attempts a WHERE a.record_id = r.record_id ORDER BY a.seq
    ) AS history,
    ARRAY(
        SELECT m FROM record_meetings m WHERE m.record_id = r.record_id
        ORDER BY m.start_time, m.ccid
    ) AS meetings
FROM attendance_records r
WHERE r.district_id = $1 AND r.record_id = $2;

-- name: get_job
-- Locked: a worker claiming it meanwhile either commits first (and we see its attempt) or
-- skips it.
SELECT * FROM delivery_jobs WHERE record_id = $1 FOR UPDATE;

-- name: delete_job
DELETE FROM delivery_jobs WHERE record_id = $1;

-- name: cancel_at_once
UPDATE attendance_records SET state = 'cancelled', last_error = '', cancel_reason = $2,
    cancel_outcome = $3, next_attempt_at = NULL, updated_at = now()
WHERE record_id = $1
RETURNING *;

-- name: request_cancel
UPDATE attendance_records SET state = 'pending', cancel_reason = $2, cancel_requested = true,
    last_error = '', updated_at = now()
WHERE record_id = $1
RETURNING *;

-- name: claim_jobs
-- Due, unleased (or lease expired) jobs of districts that are not paused, oldest first.
-- The lease is committed before PowerSchool is called.
UPDATE delivery_jobs j SET
    lease_owner = $1,
    lease_token = gen_random_uuid(),
    lease_until = now() + make_interval(secs => $2),
    attempts = j.attempts + 1,
    first_attempt_at = COALESCE(j.first_attempt_at, now())
WHERE j.record_id IN (
    SELECT record_id FROM delivery_jobs
    WHERE run_at <= now()
      AND (lease_until IS NULL OR lease_until < now())
      AND NOT (district_id = ANY($3::text[]))
      AND ($4::text IS NULL OR district_id = $4)
    ORDER BY run_at
    LIMIT $5
    FOR UPDATE SKIP LOCKED
)
RETURNING j.*;

-- name: claim_batch
-- The oldest due job of a district that is not excluded, and up to $4 - 1 more due jobs of
-- the same district, school and attendance date: one read of that school's day can serve
-- them all. Leased like claim_jobs; returned oldest first. The first job is locked while
-- its fellows are chosen, so two processes claiming at once start from different jobs.
WITH first AS (
    SELECT j.district_id, r.school_number, r.att_date
    FROM delivery_jobs j JOIN attendance_records r ON r.record_id = j.record_id
    WHERE j.run_at <= now()
      AND (j.lease_until IS NULL OR j.lease_until < now())
      AND NOT (j.district_id = ANY($3::text[]))
    ORDER BY j.run_at
    LIMIT 1
    FOR UPDATE OF j SKIP LOCKED
), claimed AS (
    UPDATE delivery_jobs j SET
        lease_owner = $1,
        lease_token = gen_random_uuid(),
        lease_until = now() + make_interval(secs => $2),
        attempts = j.attempts + 1,
        first_attempt_at = COALESCE(j.first_attempt_at, now())
    WHERE j.record_id IN (
        SELECT d.record_id
        FROM delivery_jobs d
        JOIN attendance_records r ON r.record_id = d.record_id
        JOIN first f ON f.district_id = d.district_id
            AND f.school_number = r.school_number AND f.att_date = r.att_date
        WHERE d.run_at <= now()
          AND (d.lease_until IS NULL OR d.lease_until < now())
        ORDER BY d.run_at
        LIMIT $4
        FOR UPDATE OF d SKIP LOCKED
    )
    RETURNING j.*
)
SELECT * FROM claimed ORDER BY run_at, created_at;

-- name: finish_job
-- Fenced: only the holder of this claim's token may record an outcome, and the attempt is
-- logged by the same statement, so an attempt that lost its lease leaves no trace.
WITH done AS (
    DELETE FROM delivery_jobs WHERE record_id = $1 AND lease_token = $2 RETURNING record_id
), logged AS (
    INSERT INTO delivery_attempts
        (record_id, at, kind, outcome, powerschool_status, attendance_code, yearid, error)
    SELECT record_id, $8::timestamptz, $9::text, $10::text, $11::integer, $12::text, $13::bigint, $5
    FROM done
)
UPDATE attendance_records r SET
    state = $3,
    powerschool_attendance_id = COALESCE($4, r.powerschool_attendance_id),
    last_error = $5,
    cancel_outcome = COALESCE($7, r.cancel_outcome),
    attempts = r.attempts + 1,
    attendance_code = COALESCE($6, r.attendance_code),
    next_attempt_at = NULL,
    updated_at = now()
FROM done WHERE r.record_id = done.record_id
RETURNING r.*;

-- name: remember_replaced
-- Saved before the write that replaces it is sent, and not fenced by the lease: even a worker
-- that lost its lease (say, to a cancel) may still be writing, and the value it saw is the one
-- PowerSchool held. The first value seen is the one kept.
UPDATE attendance_records SET
    replaced_attendance_codeid = $2, replaced_att_code = $3, replaced_comment = $4,
    replaced_set = true, updated_at = now()
WHERE record_id = $1 AND NOT replaced_set;

-- name: hand_over_replaced
-- A cancelled record's replaced value passes to the record that keeps the row.
UPDATE attendance_records b SET
    replaced_attendance_codeid = a.replaced_attendance_codeid,
    replaced_att_code = a.replaced_att_code,
    replaced_comment = a.replaced_comment,
    replaced_set = a.replaced_set,
    updated_at = now()
FROM attendance_records a
WHERE a.record_id = $1 AND b.record_id = $2;

-- name: set_code
UPDATE attendance_records SET attendance_code = $2, updated_at = now() WHERE record_id = $1;

-- name: reschedule_job
-- Fenced and logged like finish_job.
WITH later AS (
    UPDATE delivery_jobs SET run_at = $3, lease_owner = NULL, lease_until = NULL,
        lease_token = NULL
    WHERE record_id = $1 AND lease_token = $2
    RETURNING record_id
), logged AS (
    INSERT INTO delivery_attempts
        (record_id, at, kind, outcome, powerschool_status, attendance_code, yearid, error)
    SELECT record_id, $5::timestamptz, $6::text, $7::text, $8::integer, $9::text, $10::bigint, $4
    FROM later
)
UPDATE attendance_records r SET
    last_error = $4, attempts = r.attempts + 1, next_attempt_at = $3, updated_at = now()
FROM later WHERE r.record_id = later.record_id
RETURNING r.*;

-- name: release_job
-- Give a claimed job back untouched, due again at $3 (its district had no free slot in this
-- process, or its PowerSchool asked us to hold back).
UPDATE delivery_jobs SET lease_owner = NULL, lease_until = NULL, lease_token = NULL,
    attempts = attempts - 1, run_at = GREATEST(run_at, $3)
WHERE record_id = $1 AND lease_token = $2;

-- name: renew_leases
-- Deliveries still running keep their jobs: a slow PowerSchool must not let another
-- process take a job whose first attempt is still in flight.
UPDATE delivery_jobs SET lease_until = now() + make_interval(secs => $3)
WHERE lease_owner = $1 AND lease_token = ANY($2::uuid[])
RETURNING lease_token;

-- name: hand_over_jobs
-- A process shutting down gives its unfinished claims back, due now, instead of letting
-- another process wait out their leases.
UPDATE delivery_jobs j SET lease_owner = NULL, lease_until = NULL, lease_token = NULL,
    run_at = now()
FROM unnest($1::uuid[], $2::uuid[]) AS t(record_id, lease_token)
WHERE j.record_id = t.record_id AND j.lease_token = t.lease_token
RETURNING j.district_id;

-- name: release_district
-- PowerSchool is back: jobs waiting out a backoff can go now.
UPDATE delivery_jobs SET run_at = now()
WHERE district_id = $1 AND run_at > now() AND lease_token IS NULL;

-- name: list_records
SELECT r.*,
    ARRAY(
        SELECT m FROM record_meetings m WHERE m.record_id = r.record_id
        ORDER BY m.start_time, m.ccid
    ) AS meetings
FROM attendance_records r
WHERE district_id = $1
  AND ($2::text IS NULL OR state = $2)
  AND ($3::bigint IS NULL OR school_number = $3)
  AND ($4::date IS NULL OR att_date >= $4)
  AND ($5::date IS NULL OR att_date <= $5)
  AND ($6::text IS NULL OR roster_id = $6)
  AND ($7::timestamptz IS NULL OR (created_at, record_id) < ($7, $8::uuid))
ORDER BY created_at DESC, record_id DESC
LIMIT $9;

-- name: retry_one
UPDATE attendance_records SET state = 'pending', last_error = '', updated_at = now()
WHERE district_id = $1 AND record_id = $2 AND state IN ('failed', 'pending')
RETURNING *;

-- name: retry_job
-- Due now, as whatever it was: a failed cancel is retried as a cancel, not as a write.
INSERT INTO delivery_jobs (record_id, district_id, kind, request_id, traceparent)
VALUES ($1, $2, CASE WHEN $3 THEN 'cancel' ELSE 'write' END, $4, $5)
ON CONFLICT (record_id) DO UPDATE SET
    request_id = EXCLUDED.request_id,
    traceparent = EXCLUDED.traceparent,
    run_at = GREATEST(now(), COALESCE(delivery_jobs.lease_until, now())),
    attempts = 0, first_attempt_at = NULL;

-- name: retry_failed
WITH again AS (
    UPDATE attendance_records SET state = 'pending', last_error = '', updated_at = now()
    WHERE district_id = $1 AND state = 'failed' AND att_date BETWEEN $2 AND $3
    RETURNING record_id, district_id, cancel_requested
)
INSERT INTO delivery_jobs (record_id, district_id, kind, request_id, traceparent)
SELECT record_id, district_id, CASE WHEN cancel_requested THEN 'cancel' ELSE 'write' END, $4, $5
FROM again
ON CONFLICT (record_id) DO UPDATE SET run_at = now(), attempts = 0, first_attempt_at = NULL,
    request_id = EXCLUDED.request_id, traceparent = EXCLUDED.traceparent
RETURNING record_id;

-- name: stats
SELECT
    count(*) FILTER (WHERE state = 'pending') AS pending,
    extract(epoch FROM now() - min(created_at) FILTER (WHERE state = 'pending')) AS oldest_age,
    count(*) FILTER (WHERE state = 'failed') AS failed,
    count(*) FILTER (WHERE state = 'written' AND updated_at > now() - interval '1 hour')
        AS written_last_hour
FROM attendance_records
WHERE district_id = $1;

-- name: remember_meetings
-- A Meeting-mode write's meetings, saved before it is sent and, like remember_replaced, not
-- fenced: the value a meeting held is kept the first time it is seen (a later attempt finds
-- the service's own mark there). The code is set once PowerSchool has answered
-- (meetings_written).
INSERT INTO record_meetings AS m (record_id, ccid, period_id, period, start_time, end_time,
    replaced_attendance_codeid, replaced_att_code, replaced_comment, replaced_set)
SELECT $1, t.ccid, t.period_id, t.period, t.start_time, t.end_time, t.codeid, t.code,
    t.comment, t.has_replaced
FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::integer[], $6::integer[],
            $7::bigint[], $8::text[], $9::text[], $10::boolean[])
    AS t(ccid, period_id, period, start_time, end_time, codeid, code, comment, has_replaced)
ON CONFLICT (record_id, ccid, period_id) DO UPDATE SET
    period = EXCLUDED.period, start_time = EXCLUDED.start_time, end_time = EXCLUDED.end_time,
    replaced_attendance_codeid = CASE WHEN m.replaced_set THEN m.replaced_attendance_codeid
        ELSE EXCLUDED.replaced_attendance_codeid END,
    replaced_att_code = CASE WHEN m.replaced_set THEN m.replaced_att_code
        ELSE EXCLUDED.replaced_att_code END,
    replaced_comment = CASE WHEN m.replaced_set THEN m.replaced_comment
        ELSE EXCLUDED.replaced_comment END,
    replaced_set = m.replaced_set OR EXCLUDED.replaced_set;

-- name: meetings_written
-- What each meeting holds now: the code written, or why it was left alone. Meetings of the
-- record not named (an earlier plan's) are dropped.
WITH named AS (
    INSERT INTO record_meetings AS m (record_id, ccid, period_id, period, start_time, end_time,
        attendance_code, left_unchanged)
    SELECT $1, t.ccid, t.period_id, t.period, t.start_time, t.end_time, t.code, t.why
    FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::integer[], $6::integer[],
                $7::text[], $8::text[])
        AS t(ccid, period_id, period, start_time, end_time, code, why)
    ON CONFLICT (record_id, ccid, period_id) DO UPDATE SET
        attendance_code = EXCLUDED.attendance_code, left_unchanged = EXCLUDED.left_unchanged
    RETURNING ccid, period_id
)
DELETE FROM record_meetings d
WHERE d.record_id = $1 AND d.replaced_set = false AND d.attendance_code = ''
  AND (d.ccid, d.period_id) NOT IN (SELECT ccid, period_id FROM named);

-- name: set_meeting_code
-- A cancel that keeps the other event's part of a shared meeting: the code it holds now.
UPDATE record_meetings SET attendance_code = $4
WHERE record_id = $1 AND ccid = $2 AND period_id = $3;

-- name: hand_over_meeting
-- A cancelled record's replaced value of one shared meeting passes to the record that keeps it.
UPDATE record_meetings b SET
    replaced_attendance_codeid = a.replaced_attendance_codeid,
    replaced_att_code = a.replaced_att_code,
    replaced_comment = a.replaced_comment,
    replaced_set = a.replaced_set
FROM record_meetings a
WHERE a.record_id = $1 AND b.record_id = $2 AND a.ccid = $3 AND a.period_id = $4
  AND b.ccid = $3 AND b.period_id = $4;

-- name: submit_batch
-- A group commit's batch, written by the function of migration 0013 (its own transaction):
-- one row per submission whose key was won (its new or corrected record) or was already
-- taken (replayed, with the stored key's request).
SELECT submission, replayed, key_hash, key_fields, stored
FROM submit_batch($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                  $7::timestamptz[], $8::bigint[], $9::date[], $10::text[], $11::text[],
                  $12::boolean[], $13::text[], $14::text[], $15::text[], $16::text[],
                  $17::text[], $18::text[], $19::text[]);
