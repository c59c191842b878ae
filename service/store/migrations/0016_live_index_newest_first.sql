-- The index of live records gains created_at, and corrections keep their plans like the rest
-- of submit_batch (0015). A correction looks for the live record it replaces, the student's
-- day newest first. 0015 planned that look at each run: a plan kept from a nearly empty table
-- took attendance_records_listing, the one index that gave the order, and read the district's
-- records. Planned at each run, it went wrong another way: in a district onboarded since the
-- table's last ANALYZE, the statistics hold none of its rows, every index that starts with
-- district_id looks as cheap as another, and the planner took attendance_records_state and
-- read the district's records for every correction (measured: 3,000 rows read to correct one
-- record among 3,000). With created_at in the index of live records, that index alone matches
-- all four keys and gives the order, so the plan kept from the first correction goes straight
-- to the student's day however the tables and the statistics change
-- (tests/test_submit_plans.py). The common path's look for a student's live record of the
-- day uses the same index by its first four columns.

CREATE INDEX attendance_records_live_newest
    ON attendance_records (district_id, roster_id, att_date, event, created_at)
    WHERE state <> 'cancelled';
DROP INDEX attendance_records_live;
ALTER INDEX attendance_records_live_newest RENAME TO attendance_records_live;

CREATE OR REPLACE FUNCTION submit_batch(
    p_record_id uuid[], p_district_id text[], p_idempotency_key text[], p_request_hash text[],
    p_roster_id text[], p_event text[], p_occurred_at timestamptz[], p_school_number bigint[],
    p_att_date date[], p_attendance_code text[], p_reason text[], p_excused boolean[],
    p_comment text[], p_checked_out_by text[], p_state text[], p_last_error text[],
    p_request_id text[], p_traceparent text[], p_request_fields text[]
) RETURNS TABLE (
    submission uuid, replayed boolean, key_hash text, key_fields text,
    stored attendance_records
)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    claimed uuid[];
    new_records uuid[];
    new_rows attendance_records[];
    i bigint;
    same_day uuid;
    day_district text;
    day_roster text;
    day_date date;
    day_event text;
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

    -- The common case, set-based: a claimed submission that is the batch's first for its
    -- student, day and event, with no live record for them, becomes a new record.
    WITH t AS (
        SELECT * FROM unnest(p_record_id, p_district_id, p_idempotency_key, p_request_hash,
                             p_roster_id, p_event, p_occurred_at, p_school_number, p_att_date,
                             p_attendance_code, p_reason, p_excused, p_comment,
                             p_checked_out_by, p_state, p_last_error, p_request_id,
                             p_traceparent) WITH ORDINALITY
            AS t(record_id, district_id, idempotency_key, request_hash, roster_id, event,
                 occurred_at, school_number, att_date, attendance_code, reason, excused,
                 comment, checked_out_by, state, last_error, request_id, traceparent, n)
        WHERE record_id = ANY (claimed)
    ), fresh AS (
        SELECT * FROM (
            SELECT DISTINCT ON (district_id, roster_id, att_date, event) * FROM t
            ORDER BY district_id, roster_id, att_date, event, n
        ) f
        WHERE NOT EXISTS (
            SELECT 1 FROM attendance_records r
            WHERE r.district_id = f.district_id AND r.roster_id = f.roster_id
              AND r.att_date = f.att_date AND r.event = f.event AND r.state <> 'cancelled'
            OFFSET 0
        )
    ), inserted AS (
        INSERT INTO attendance_records (
            record_id, district_id, idempotency_key, request_hash, roster_id, event,
            occurred_at, school_number, att_date, attendance_code, reason, excused, comment,
            checked_out_by, state, last_error
        )
        SELECT record_id, district_id, idempotency_key, request_hash, roster_id, event,
            occurred_at, school_number, att_date, attendance_code, reason, excused, comment,
            checked_out_by, state, last_error
        FROM fresh
        RETURNING *
    ), queued AS (
        INSERT INTO delivery_jobs (record_id, district_id, kind, request_id, traceparent)
        SELECT record_id, district_id, 'write', request_id, traceparent
        FROM fresh WHERE state = 'pending'
        RETURNING district_id
    )
    SELECT coalesce((SELECT array_agg(record_id) FROM inserted), '{}'),
           coalesce((SELECT array_agg(i) FROM inserted i), '{}'),
           coalesce((SELECT array_agg(district_id) FROM queued), '{}')
    INTO new_records, new_rows, notify;

    -- Answered before the corrections below, which may correct one of them: as if the
    -- submissions had come one after another.
    RETURN QUERY
    SELECT r.record_id, false, NULL::text, NULL::text, r FROM unnest(new_rows) r;

    -- The rest, one by one in batch order: each corrects the live record of its student, day
    -- and event (one inserted above, or an older one).
    -- (None when every claimed submission became a new record.)
    IF cardinality(claimed) > cardinality(new_records) THEN
        FOR i IN
            SELECT n FROM unnest(p_record_id) WITH ORDINALITY AS t(id, n)
            WHERE id = ANY (claimed) AND id <> ALL (new_records)
            ORDER BY n
        LOOP
            -- Plain variables, not the arrays' elements: compared with an element, the
            -- planner did not take the index's order for the ORDER BY and kept a plan that
            -- walked attendance_records_listing through the district's records.
            day_district := p_district_id[i];
            day_roster := p_roster_id[i];
            day_date := p_att_date[i];
            day_event := p_event[i];
            SELECT r.record_id INTO same_day FROM attendance_records r
            WHERE r.district_id = day_district AND r.roster_id = day_roster
              AND r.att_date = day_date AND r.event = day_event AND r.state <> 'cancelled'
            ORDER BY r.created_at DESC
            LIMIT 1
            FOR UPDATE;
            IF NOT FOUND THEN
                -- Its live record was cancelled since the statement above looked: the batch is
                -- rolled back and the service writes each of its submissions on its own, where
                -- this one is a new record.
                RAISE EXCEPTION 'the record a submission corrects was cancelled meanwhile'
                    USING ERRCODE = 'serialization_failure';
            END IF;
            UPDATE attendance_records r SET
                occurred_at = p_occurred_at[i], school_number = p_school_number[i],
                attendance_code = p_attendance_code[i], reason = p_reason[i],
                excused = p_excused[i], comment = p_comment[i],
                checked_out_by = p_checked_out_by[i], state = p_state[i],
                last_error = p_last_error[i], next_attempt_at = NULL, updated_at = now()
            WHERE r.record_id = same_day;
            UPDATE idempotency_keys k SET record_id = same_day
            WHERE k.district_id = p_district_id[i] AND k.idempotency_key = p_idempotency_key[i];
            IF p_state[i] = 'pending' THEN
                PERFORM queue_delivery(
                    same_day, p_district_id[i], 'write', p_request_id[i], p_traceparent[i]
                );
                notify := notify || p_district_id[i];
            END IF;
            RETURN QUERY
            SELECT p_record_id[i], false, NULL::text, NULL::text, r
            FROM attendance_records r WHERE r.record_id = same_day;
        END LOOP;
    END IF;

    -- Keys already taken (none in the common case, every key claimed).
    IF cardinality(claimed) < cardinality(p_record_id) THEN
        RETURN QUERY
        SELECT t.record_id, true, k.request_hash, k.request_fields::text, r
        FROM unnest(p_record_id, p_district_id, p_idempotency_key)
            AS t(record_id, district_id, idempotency_key)
        JOIN idempotency_keys k USING (district_id, idempotency_key)
        JOIN attendance_records r ON r.record_id = k.record_id
        WHERE t.record_id <> ALL (claimed);
    END IF;

    PERFORM pg_notify('writeback_jobs', d)
    FROM (SELECT DISTINCT unnest(notify) AS d ORDER BY 1) x;
END
$$;
