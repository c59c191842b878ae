-- name: upsert_students
-- One statement for a whole batch. A row is only touched when something changed, and a changed
-- sis_id forgets the PowerSchool keys looked up for the old one. (xmax = 0) tells inserts apart.
INSERT INTO students AS s (
    district_id, roster_id, sis_id, student_number, first_name, last_name,
    roster_school_id, grade, active
)
SELECT $1, r.roster_id, r.sis_id, r.student_number, r.first_name, r.last_name,
       r.roster_school_id, r.grade, r.active
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::boolean[])
     AS r(roster_id, sis_id, student_number, first_name, last_name, roster_school_id, grade, active)
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
WHERE (s.sis_id, s.student_number, s.first_name, s.last_name, s.roster_school_id, s.grade, s.active)
      IS DISTINCT FROM
      (EXCLUDED.sis_id, EXCLUDED.student_number, EXCLUDED.first_name, EXCLUDED.last_name,
       EXCLUDED.roster_school_id, EXCLUDED.grade, EXCLUDED.active)
RETURNING (xmax = 0) AS inserted;

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
UPDATE students
SET dcid = $4, powerschool_id = $5, ps_school_number = $6, resolved_at = now()
WHERE district_id = $1 AND roster_id = $2 AND sis_id = $3;
