-- Who may call the service, and what callers changed.
--
-- A bearer token is `wb_<token_prefix>.<secret>`: the prefix finds the row, the SHA-256 of
-- the whole token proves it. The token itself is never stored. A caller with
-- all_districts = false may touch only district_ids.

CREATE TABLE callers (
    caller_id     uuid PRIMARY KEY,
    name          text NOT NULL,
    role          text NOT NULL,                 -- admin, operator, writer, reader
    all_districts boolean NOT NULL DEFAULT false,
    district_ids  text[] NOT NULL DEFAULT '{}',
    token_prefix  text UNIQUE,                   -- NULL for a certificate-only caller
    token_sha256  bytea,
    created_by    text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);

-- A certificate names its caller: at most one live caller per name.
CREATE UNIQUE INDEX callers_live_name ON callers (name) WHERE revoked_at IS NULL;

CREATE TABLE audit_events (
    event_id       bigserial PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT now(),
    caller_id      text NOT NULL,                -- '' for a caller with no row (bootstrap, AUTH=off)
    caller_name    text NOT NULL,
    action         text NOT NULL,
    district_id    text NOT NULL DEFAULT '',
    target         text NOT NULL DEFAULT '',     -- a record ID, a caller ID
    changed_fields text[] NOT NULL DEFAULT '{}',
    details        jsonb NOT NULL DEFAULT '{}'   -- never a secret's value
);

CREATE INDEX audit_events_district ON audit_events (district_id, event_id DESC);
