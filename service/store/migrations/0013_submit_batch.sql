-- A batch of submissions (group commit) written by one statement, so it costs the service one
-- round trip to the database instead of four (BEGIN, claim, insert, COMMIT). On a loaded host
-- each round trip is a write that wakes the database and a wakeup back: measured, those were
-- a quarter of an accept's time. The statement is its own transaction.
--
-- The rules of submissions made one after another: keys are claimed in key order (a second
-- claim of a key blocks until the first commits, then finds it taken), then the student-day
-- advisory locks of the keys won are taken in lock order (so two batches never
-- wait on each other in a cycle); then each claimed submission, in batch order, corrects the
-- live record of its student, day and event or becomes a new record, and queues its delivery.
-- Inside a function each statement reads a fresh snapshot (READ COMMITTED), so the check for a
-- live record is made under the lock, as in separate statements. A key that was already taken
-- answers the record it stands for. One NOTIFY per district with new work.
--
-- The arrays are one entry per submission; a key appears at most once (the caller answers a
-- second use of a key in a batch as a replay of the first).
-- A record's delivery job, fresh or reset (a correction, a retry, a cancel). Resetting clears
-- the lease token, which fences off an attempt still in flight (its outcome is discarded), and
-- the reset job waits until that attempt's lease is over, so its PowerSchool call cannot land
-- after the new attempt's read.
CREATE FUNCTION queue_delivery(
    p_record_id uuid, p_district_id text, p_kind text, p_request_id text, p_traceparent text
) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO delivery_jobs (record_id, district_id, kind, request_id, traceparent)
    VALUES (p_record_id, p_district_id, p_kind, p_request_id, p_traceparent)
    ON CONFLICT (record_id) DO UPDATE SET
        kind = EXCLUDED.kind,
        request_id = EXCLUDED.request_id,
        traceparent = EXCLUDED.traceparent,
        run_at = GREATEST(now(), COALESCE(delivery_jobs.lease_until, now())),
        lease_owner = NULL, lease_until = NULL, lease_token = NULL,
        attempts = 0, first_attempt_at = NULL;
$$;

CREATE FUNCTION submit_batch(
    p_record_id uuid[], p_district_id text[], p_idempotency_key text[], p_request_hash text[],
    p_roster_id text[], p_event text[], p_occurred_at timestamptz[], p_school_number bigint[],
    p_att_date date[], p_attendance_code text[], p_reason text[], p_excused boolean[],
    p_comment text[], p_checked_out_by text[], p_state text[], p_last_error text[],
    p_request_id text[], p_traceparent text[], p_request_fields text[]
) RETURNS TABLE (
    submission uuid, replayed boolean, key_hash text, key_fields text,
    stored attendance_records
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    claimed uuid[];
    s record;
    same_day uuid;
    lock_key integer;
    notify text[] := '{}';
BEGIN
    WITH t AS (
        SELECT * FROM unnest(p_district_id, p_idempotency_key, p_request_hash, p_record_id,
                             p_request_fields)
            AS t(district_id, idempotency_key, request_hash, record_id, request_fields)
    ), won AS (
        INSERT INTO idempotency_keys (district_id, idempotency_key, request_hash, record_id,
            request_fields)
        SELECT district_id, idempotency_key, request_hash, record_id, request_fields::jsonb
        FROM t ORDER BY district_id, idempotency_key
        ON CONFLICT DO NOTHING
        RETURNING record_id
    )
    SELECT coalesce(array_agg(record_id), '{}') INTO claimed FROM won;

    FOR lock_key IN
        SELECT DISTINCT hashtext(d || '|' || r || '|' || a::text || '|' || e)
        FROM unnest(p_record_id, p_district_id, p_roster_id, p_att_date, p_event)
            AS t(id, d, r, a, e)
        WHERE id = ANY (claimed)
        ORDER BY 1
    LOOP
        PERFORM pg_advisory_xact_lock(lock_key);
    END LOOP;

    FOR s IN
        SELECT * FROM unnest(p_record_id, p_district_id, p_idempotency_key, p_request_hash,
                             p_roster_id, p_event, p_occurred_at, p_school_number, p_att_date,
                             p_attendance_code, p_reason, p_excused, p_comment,
                             p_checked_out_by, p_state, p_last_error, p_request_id,
                             p_traceparent) WITH ORDINALITY
            AS t(record_id, district_id, idempotency_key, request_hash, roster_id, event,
                 occurred_at, school_number, att_date, attendance_code, reason, excused,
                 comment, checked_out_by, state, last_error, request_id, traceparent, n)
        WHERE record_id = ANY (claimed)
        ORDER BY n
    LOOP
        SELECT r.record_id INTO same_day FROM attendance_records r
        WHERE r.district_id = s.district_id AND r.roster_id = s.roster_id
          AND r.att_date = s.att_date AND r.event = s.event AND r.state <> 'cancelled'
        ORDER BY r.created_at DESC
        LIMIT 1
        FOR UPDATE;
        IF FOUND THEN
            UPDATE attendance_records r SET
                occurred_at = s.occurred_at, school_number = s.school_number,
                attendance_code = s.attendance_code, reason = s.reason, excused = s.excused,
                comment = s.comment, checked_out_by = s.checked_out_by, state = s.state,
                last_error = s.last_error, next_attempt_at = NULL, updated_at = now()
            WHERE r.record_id = same_day;
            UPDATE idempotency_keys k SET record_id = same_day
            WHERE k.district_id = s.district_id AND k.idempotency_key = s.idempotency_key;
        ELSE
            same_day := s.record_id;
            INSERT INTO attendance_records (
                record_id, district_id, idempotency_key, request_hash, roster_id, event,
                occurred_at, school_number, att_date, attendance_code, reason, excused, comment,
                checked_out_by, state, last_error
            ) VALUES (
                s.record_id, s.district_id, s.idempotency_key, s.request_hash, s.roster_id,
                s.event, s.occurred_at, s.school_number, s.att_date, s.attendance_code,
                s.reason, s.excused, s.comment, s.checked_out_by, s.state, s.last_error
            );
        END IF;
        IF s.state = 'pending' THEN
            PERFORM queue_delivery(same_day, s.district_id, 'write', s.request_id, s.traceparent);
            notify := notify || s.district_id;
        END IF;
        RETURN QUERY
        SELECT s.record_id, false, NULL::text, NULL::text, r
        FROM attendance_records r WHERE r.record_id = same_day;
    END LOOP;

    RETURN QUERY
    SELECT t.record_id, true, k.request_hash, k.request_fields::text, r
    FROM unnest(p_record_id, p_district_id, p_idempotency_key)
        AS t(record_id, district_id, idempotency_key)
    JOIN idempotency_keys k USING (district_id, idempotency_key)
    JOIN attendance_records r ON r.record_id = k.record_id
    WHERE t.record_id <> ALL (claimed);

    PERFORM pg_notify('writeback_jobs', d)
    FROM (SELECT DISTINCT unnest(notify) AS d ORDER BY 1) x;
END
$$;
