-- Roster connections, the sync schedule, and per-district sync state (event cursors).

ALTER TABLE districts
    ADD COLUMN clever_base_url            text NOT NULL DEFAULT '',
    ADD COLUMN clever_client_id           text NOT NULL DEFAULT '',
    ADD COLUMN clever_client_secret       text NOT NULL DEFAULT '',
    ADD COLUMN clever_district_token      text NOT NULL DEFAULT '',
    ADD COLUMN clever_district_id         text NOT NULL DEFAULT '',
    ADD COLUMN classlink_endpoint_url     text NOT NULL DEFAULT '',
    ADD COLUMN classlink_client_id        text NOT NULL DEFAULT '',
    ADD COLUMN classlink_client_secret    text NOT NULL DEFAULT '',
    ADD COLUMN sync_interval_seconds      integer NOT NULL DEFAULT 0;

CREATE TABLE roster_sync_state (
    district_id     text PRIMARY KEY REFERENCES districts ON DELETE CASCADE,
    -- Clever: the last processed event id. ClassLink: the newest dateLastModified seen.
    cursor          text NOT NULL DEFAULT '',
    last_full_at    timestamptz,
    last_sync_at    timestamptz,
    last_error      text NOT NULL DEFAULT ''
);

CREATE INDEX students_missing_powerschool_id ON students (district_id)
    WHERE powerschool_id IS NULL AND active;
