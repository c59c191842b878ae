-- Districts, their schools, roster students with their PowerSchool keys, and attendance records.

CREATE TABLE districts (
    district_id          text PRIMARY KEY,
    name                 text NOT NULL DEFAULT '',
    roster_source        text NOT NULL,
    id_mode              text NOT NULL,
    visible_student_id   text NOT NULL,
    writeback_enabled    boolean NOT NULL DEFAULT false,
    timezone             text NOT NULL,
    ps_base_url          text NOT NULL DEFAULT '',
    ps_client_id         text NOT NULL DEFAULT '',
    ps_client_secret     text NOT NULL DEFAULT '',
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE schools (
    district_id                  text NOT NULL REFERENCES districts ON DELETE CASCADE,
    school_number                bigint NOT NULL,
    roster_school_id             text NOT NULL DEFAULT '',
    name                         text NOT NULL DEFAULT '',
    timezone                     text NOT NULL DEFAULT '',
    writeback_enabled            boolean NOT NULL DEFAULT true,
    late_check_in_code           text NOT NULL DEFAULT '',
    early_check_out_code         text NOT NULL DEFAULT '',
    late_check_in_excused_code   text NOT NULL DEFAULT '',
    early_check_out_excused_code text NOT NULL DEFAULT '',
    PRIMARY KEY (district_id, school_number)
);

CREATE TABLE students (
    district_id          text NOT NULL REFERENCES districts ON DELETE CASCADE,
    roster_id            text NOT NULL,
    sis_id               text NOT NULL DEFAULT '',
    student_number       text NOT NULL DEFAULT '',
    first_name           text NOT NULL DEFAULT '',
    last_name            text NOT NULL DEFAULT '',
    roster_school_id     text NOT NULL DEFAULT '',
    grade                text NOT NULL DEFAULT '',
    active               boolean NOT NULL DEFAULT true,
    -- What PowerSchool said about sis_id; cleared when sis_id changes.
    dcid                 bigint,
    powerschool_id       bigint,
    ps_school_number     bigint,
    resolved_at          timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (district_id, roster_id)
);
CREATE INDEX students_sis_id ON students (district_id, sis_id);
CREATE INDEX students_student_number ON students (district_id, student_number);
CREATE INDEX students_powerschool_id ON students (district_id, powerschool_id);

CREATE TABLE attendance_records (
    record_id                 uuid PRIMARY KEY,
    district_id               text NOT NULL REFERENCES districts ON DELETE CASCADE,
    idempotency_key           text NOT NULL,
    request_hash              text NOT NULL,
    roster_id                 text NOT NULL,
    event                     text NOT NULL,
    occurred_at               timestamptz NOT NULL,
    school_number             bigint NOT NULL,
    att_date                  date NOT NULL,
    attendance_code           text NOT NULL DEFAULT '',
    reason                    text NOT NULL DEFAULT '',
    excused                   boolean NOT NULL DEFAULT false,
    comment                   text NOT NULL DEFAULT '',
    checked_out_by            text NOT NULL DEFAULT '',
    state                     text NOT NULL,
    powerschool_attendance_id bigint,
    attempts                  integer NOT NULL DEFAULT 0,
    last_error                text NOT NULL DEFAULT '',
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now(),
    UNIQUE (district_id, idempotency_key)
);
CREATE INDEX attendance_records_state ON attendance_records (district_id, state, created_at);
