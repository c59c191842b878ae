-- What the roster sync has learned about a Clever district's Events API. Events are opt-in
-- (Clever, since December 2022) and a disabled feed answers like a quiet one, so the sync
-- trusts Events only while they show up and falls back to scheduled full reads otherwise.
ALTER TABLE roster_sync_state
    -- Last time the sync saw an event it had not seen before (NULL: never).
    ADD COLUMN clever_event_seen_at  timestamptz,
    -- Set when a full read found changes that no event reported; cleared by the next event.
    ADD COLUMN clever_events_off_at  timestamptz,
    -- How many changes that full read found (created + updated + deactivated students).
    ADD COLUMN clever_events_missed  integer NOT NULL DEFAULT 0;
