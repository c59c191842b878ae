"""Whether a Clever district's Events API can be trusted, and the finding that tells an admin
how to turn it on.

Clever's Events are opt-in (since December 2022: Settings > Integrations > Enable events) and
only for Secure Sync. What the API answers while they are off is not documented, and a feed
that is off looks like a quiet one, so the sync judges by what it observes: a full read that
finds changes while no event came since the previous cursor means the events are not being
generated. Such a district is re-read in full on a schedule (``FULL_SYNC_INTERVAL``) instead
of incrementally, and DiagnoseMapping (and CheckConnection) report this finding until an event
shows up.
"""

from __future__ import annotations

import enum

from service.models import District, Finding, FindingCode, RosterSource, Severity
from service.store import SyncState


class EventsVerdict(enum.Enum):
    """What one full read of a Clever roster says about the district's Events."""

    SEEN = "seen"
    """An event newer than the previous cursor exists: Events are on."""
    MISSED = "missed"
    """The roster changed since the previous full read but no event came: Events are off."""
    UNDECIDED = "undecided"
    """Nothing changed and nothing came (or there was no earlier read to compare with)."""


def judge_full_read(
    previous_cursor: str, before: str, after: str, changes: int, *, comparable: bool
) -> EventsVerdict:
    """Judge Clever's Events from a full read: ``previous_cursor`` is where the previous
    sync left off, ``before`` / ``after`` the newest event id taken just before and just after
    the read ("" when there is none), ``changes`` how many students the read created, updated
    or deactivated. ``comparable`` says the previous sync was a complete read recent enough
    that Clever still keeps every event since (not an expired cursor, not 29 days ago).

    The second look (``after``) matters: a change made during the read has its event after
    ``before``, and is not a missed change.
    """
    if any(newest and newest != previous_cursor for newest in (before, after)):
        return EventsVerdict.SEEN
    if comparable and changes > 0:
        return EventsVerdict.MISSED
    return EventsVerdict.UNDECIDED


def clever_events_finding(district: District, state: SyncState) -> Finding | None:
    """The finding for a Clever district whose Events were found off (None otherwise): what
    it means for roster changes and what to click in Clever to enable them.

    ``state`` is the district's roster sync state (``SyncStateStore.get``). Shared by
    DiagnoseMapping and CheckConnection so both say the same thing.
    """
    if district.roster_source is not RosterSource.CLEVER or state.clever_events_off_at is None:
        return None
    found = state.clever_events_off_at.date().isoformat()
    if district.sync_interval_seconds > 0:
        meanwhile = (
            "Until they are, the service re-reads this district's whole roster on a schedule "
            "(FULL_SYNC_INTERVAL, nightly by default) instead of reading changes, so a new or "
            "changed student can be missing until the next full read."
        )
    else:
        meanwhile = (
            "This district has no sync schedule (sync_interval), so roster changes arrive only "
            "when someone runs a sync (which reads the whole roster until Events are on)."
        )
    return Finding(
        FindingCode.CLEVER_EVENTS_OFF,
        Severity.WARNING,
        f"Clever's Events API is off for this district: on {found} a full read of the roster "
        f"found {state.clever_events_missed} changed students that Clever sent no event for. "
        f"{meanwhile} To enable Events: sign in to the Clever dashboard, open Settings > "
        "Integrations and click Enable events (Events need a Secure Sync connection). This "
        "finding clears at the first sync that sees an event.",
        count=state.clever_events_missed,
        checked=state.clever_events_missed,
    )
