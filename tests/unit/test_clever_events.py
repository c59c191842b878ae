"""What a full Clever read says about the district's Events, and the finding that follows, as
pure functions: no database, no HTTP."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from service.domain.clever_events import EventsVerdict, clever_events_finding, judge_full_read
from service.models import District, FindingCode, RosterSource, Severity
from service.store import SyncState

OLD, NEW = "5f0c1e7e5e0d157100000001", "5f0c1e7e5e0d157100000002"


@pytest.mark.parametrize(
    ("previous", "before", "after", "changes", "comparable", "verdict"),
    [
        # A newer event than the cursor, before or after the read: Events are on.
        (OLD, NEW, NEW, 3, True, EventsVerdict.SEEN),
        ("", NEW, NEW, 0, False, EventsVerdict.SEEN),
        # A change made during the read: its event comes after the first look.
        (OLD, OLD, NEW, 1, True, EventsVerdict.SEEN),
        # Changes and no event since a recent complete read: Events are off.
        (OLD, OLD, OLD, 2, True, EventsVerdict.MISSED),
        ("", "", "", 1, True, EventsVerdict.MISSED),
        # Nothing changed, or nothing to compare with (first read, expired cursor).
        ("", "", "", 0, True, EventsVerdict.UNDECIDED),
        (OLD, "", "", 5, False, EventsVerdict.UNDECIDED),
    ],
)
def test_judge_full_read(
    *,
    previous: str,
    before: str,
    after: str,
    changes: int,
    comparable: bool,
    verdict: EventsVerdict,
) -> None:
    assert judge_full_read(previous, before, after, changes, comparable=comparable) is verdict


OFF = SyncState(clever_events_off_at=datetime(2026, 11, 30, 3, tzinfo=UTC), clever_events_missed=4)


def test_finding_for_a_scheduled_clever_district_with_events_off() -> None:
    finding = clever_events_finding(District("d", sync_interval_seconds=3600), OFF)
    assert finding is not None
    assert (finding.code, finding.severity, finding.count) == (
        FindingCode.CLEVER_EVENTS_OFF,
        Severity.WARNING,
        4,
    )
    assert "2026-11-30" in finding.message
    assert "Settings > Integrations" in finding.message
    assert "FULL_SYNC_INTERVAL" in finding.message


def test_finding_says_when_nothing_is_scheduled() -> None:
    finding = clever_events_finding(District("d"), OFF)
    assert finding is not None
    assert "no sync schedule" in finding.message


@pytest.mark.parametrize(
    ("district", "state"),
    [
        (District("d", sync_interval_seconds=3600), SyncState()),
        (District("d", roster_source=RosterSource.CLASSLINK), OFF),
    ],
)
def test_no_finding(district: District, state: SyncState) -> None:
    assert clever_events_finding(district, state) is None
