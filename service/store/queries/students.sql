-- name: upsert_students
-- One statement for a whole batch. A row is only touched when something changed, and a changed
-- sis_id forgets the PowerSchool keys looked up for the old one. (xmax = 0) tells inserts apart;
-- prev (the snapshot before the statement) tells which updates switched a student off.
WITH prev AS (
    SELECT roster_id, active FROM students
    WHERE district_id = $1 AND roster_id = ANY($2::text[])
), up AS (
    INSERT INTO students AS s (
        district_id, roster_id, sis_id, student_number, first_name, last_name,
        roster_school_id, grade, active
    )
    SELECT $1, r.roster_id, r.sis_id, r.student_number, r.first_name, r.last_name,
           r.roster_school_id, r.grade, r.active
    FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                $8::text[], $9::boolean[])
         AS r(roster_id, sis_id, student_number, first_name, last_name, roster_school_id, grade,
              active)
    ON CONFLICT (district_id, roster_id) DO UPDATE SET
        sis_id = EXCLUDED.sis_id,
        student_number = EXCLUDED.student_number,
        first_name = EXCLUDED.first_name,
        last_name = EXCLUDED.last_name,
        roster_school_id = EXCLUDED.roster_school_id,
        grade = EXCLUDED.grade,
        active = EXCLUDED.active,
        dcid = CASE WHEN s.sis_id = EXCLUDED.sis_id THEN s.dcid END,
        powerschool_id = CASE WHEN s.sis_id = EXCLUDED.sis_id THEN s.powerschool_id END,
        ps_school_number = CASE WHEN s.sis_id = EXCLUDED.sis_id THEN s.ps_school_number END,
        resolved_at = CASE WHEN s.sis_id = EXCLUDED.sis_id THEN s.resolved_at END,
        updated_at = now()
    WHERE (s.sis_id, s.student_number, s.first_name, s.last_name, s.roster_school_id, s.grade,
           s.active)
          IS DISTINCT FROM
          (EXCLUDED.sis_id, EXCLUDED.student_number, EXCLUDED.first_name, EXCLUDED.last_name,
           EXCLUDED.roster_school_id, EXCLUDED.grade, EXCLUDED.active)
    RETURNING s.roster_id, s.active, (xmax = 0) AS inserted
)
SELECT up.inserted, (prev.active AND NOT up.active) AS deactivated
FROM up LEFT JOIN prev USING (roster_id);

-- name: find_by_roster_id
SELECT * FROM students WHERE district_id = $1 AND roster_id = $2;

-- name: find_by_sis_id
-- Active students first: a roster can hold a deactivated record with a recycled ID.
SELECT * FROM students WHERE district_id = $1 AND sis_id = $2
ORDER BY active DESC, updated_at DESC LIMIT 2;

-- name: find_by_student_number
SELECT * FROM students WHERE district_id = $1 AND student_number = $2
ORDER BY active DESC, updated_at DESC LIMIT 2;

-- name: find_by_powerschool_id
SELECT * FROM students WHERE district_id = $1 AND powerschool_id = $2
ORDER BY active DESC, updated_at DESC LIMIT 2;

-- name: save_powerschool_ids
-- Guarded by sis_id so a lookup that raced a roster change cannot attach keys to the new ID.
-- Answers whether a copy some process keeps may now be wrong, which is so only when the
-- student already had keys from PowerSchool and they changed, or another student already
-- holds this STUDENTS.ID (a lookup by it may now answer the other one). Only students with a
-- STUDENTS.ID are kept, so a first resolution changes no copy. FOR UPDATE reads the keys a
-- concurrent save may have just committed.
WITH before AS (
    SELECT roster_id, dcid, powerschool_id, ps_school_number FROM students
    WHERE district_id = $1 AND roster_id = $2 AND sis_id = $3
    FOR UPDATE
), saved AS (
    UPDATE students s
    SET dcid = $4, powerschool_id = $5, ps_school_number = $6, resolved_at = now()
    FROM before b
    WHERE s.district_id = $1 AND s.roster_id = b.roster_id
    RETURNING b.powerschool_id IS NOT NULL
              AND (b.dcid, b.powerschool_id, b.ps_school_number)
                  IS DISTINCT FROM ($4::bigint, $5::bigint, $6::bigint) AS rekeyed
)
SELECT coalesce(bool_or(rekeyed), false)
       OR EXISTS (SELECT 1 FROM students o
                  WHERE o.district_id = $1 AND o.powerschool_id = $5 AND o.roster_id <> $2)
FROM saved;

-- name: deactivate_dcid_holders
-- A DCID carried by a newly active roster record (Clever re-provisions a user with a new id
-- when sis_id changes) must not stay active on the older record too. sis_id = ANY() keeps this
-- on the (district_id, sis_id) index, so a batch costs its own size, not the district's.
UPDATE students s SET active = false, updated_at = now()
WHERE s.district_id = $1 AND s.active AND s.sis_id = ANY($3::text[])
  AND NOT EXISTS (
      SELECT 1 FROM unnest($2::text[], $3::text[]) AS b(roster_id, sis_id)
      WHERE b.roster_id = s.roster_id AND b.sis_id = s.sis_id
  )
RETURNING s.roster_id;

-- name: deactivate_missing
-- After a full sync: whoever the roster no longer lists is inactive (hard deletes).
UPDATE students s SET active = false, updated_at = now()
WHERE s.district_id = $1 AND s.active
  AND NOT EXISTS (SELECT 1 FROM unnest($2::text[]) AS seen(roster_id)
                  WHERE seen.roster_id = s.roster_id)
RETURNING s.roster_id;

-- name: unresolved
SELECT roster_id, sis_id FROM students
WHERE district_id = $1 AND active AND powerschool_id IS NULL
ORDER BY roster_id LIMIT $2;

-- name: save_powerschool_ids_batch
-- Only students without a STUDENTS.ID are saved, and none of them is kept by any process: the
-- answer (as for save_powerschool_ids) is whether another student already held one of the
-- IDs saved.
WITH saved AS (
    UPDATE students s
    SET dcid = b.dcid, powerschool_id = b.powerschool_id, resolved_at = now()
    FROM unnest($2::text[], $3::bigint[], $4::bigint[]) AS b(sis_id, dcid, powerschool_id)
    WHERE s.district_id = $1 AND s.sis_id = b.sis_id AND s.powerschool_id IS NULL
    RETURNING s.roster_id, s.powerschool_id
)
SELECT EXISTS (
    SELECT 1 FROM saved JOIN students o
        ON o.district_id = $1 AND o.powerschool_id = saved.powerschool_id
       AND o.roster_id <> saved.roster_id
);

-- name: count_active
SELECT count(*) FROM students WHERE district_id = $1 AND active;

-- name: sample_active
SELECT * FROM students WHERE district_id = $1 AND active ORDER BY random() LIMIT $2;

-- name: non_numeric_sis_ids
SELECT roster_id FROM students
WHERE district_id = $1 AND active AND sis_id !~ '^[0-9]+$'
ORDER BY roster_id;

-- name: missing_student_numbers
SELECT roster_id FROM students
WHERE district_id = $1 AND active AND student_number = ''
ORDER BY roster_id;

-- name: duplicate_student_numbers
SELECT student_number, array_agg(roster_id ORDER BY roster_id) AS roster_ids
FROM students
WHERE district_id = $1 AND active AND student_number <> ''
GROUP BY student_number HAVING count(*) > 1
ORDER BY student_number;

-- name: roster_school_counts
SELECT roster_school_id, count(*) AS students
FROM students WHERE district_id = $1 AND active
GROUP BY roster_school_id ORDER BY roster_school_id;

-- name: deactivate_ids
UPDATE students SET active = false, updated_at = now()
WHERE district_id = $1 AND active AND roster_id = ANY($2::text[])
RETURNING roster_id;

-- name: analyze
ANALYZE students;

-- name: notify_change
-- Inside the writing transaction, so it is delivered when (and only if) that commits.
SELECT pg_notify('writeback_students', $1);
