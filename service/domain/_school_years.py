"""Cached PowerSchool reference data: which school year contains a date, and the id of an
attendance code in a school year. Both change a few times a year, so each is fetched once
per school (and year) and kept for hours; a missing code is re-checked at most every few
minutes in case an admin just created it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date
from typing import Generic, TypeVar

from service.models import AttendanceMode
from service.powerschool import AttendanceCode, PowerSchoolClient, YearTerm

_TTL = 6 * 3600.0
_MISS_RECHECK = 300.0
T = TypeVar("T")
ATT_MODE_CODES = {
    AttendanceMode.DAILY: "ATT_ModeDaily",
    AttendanceMode.MEETING: "ATT_ModeMeeting",
    AttendanceMode.TIME: "ATT_ModeTime",
}


@dataclass
class _Entry(Generic[T]):
    value: T
    fetched: float = field(default_factory=time.monotonic)

    def expired(self, *, missing: bool) -> bool:
        age = time.monotonic() - self.fetched
        return age > (_MISS_RECHECK if missing else _TTL)


class SchoolYears:
    """Caches TERMS and ATTENDANCE_CODE lookups per PowerSchool server and plugin."""

    def __init__(self) -> None:
        self._terms: dict[tuple[tuple[str, str], int], _Entry[list[YearTerm]]] = {}
        self._codes: dict[tuple[tuple[str, str], int, int], _Entry[dict[str, AttendanceCode]]] = {}
        self._modes: dict[tuple[tuple[str, str], int, int], _Entry[dict[AttendanceMode, int]]] = {}

    async def yearid(self, client: PowerSchoolClient, school_number: int, day: date) -> int | None:
        """The yearid of the school's year-long term containing ``day``, or None."""
        key = (client.cache_key, school_number)
        entry = self._terms.get(key)
        if entry is None or entry.expired(missing=_term_for(entry.value, day) is None):
            entry = self._terms[key] = _Entry(await client.year_terms(school_number))
        return _term_for(entry.value, day)

    async def codes(
        self, client: PowerSchoolClient, school_number: int, yearid: int, wanted: str
    ) -> dict[str, AttendanceCode]:
        """ATT_CODE -> ATTENDANCE_CODE of that school and year; re-read if ``wanted`` is
        missing and the cached list is a few minutes old (an admin may just have added it)."""
        key = (client.cache_key, school_number, yearid)
        entry = self._codes.get(key)
        if entry is None or entry.expired(missing=wanted not in entry.value):
            fetched = await client.attendance_codes(school_number, yearid)
            entry = self._codes[key] = _Entry({c.att_code: c for c in fetched})
        return entry.value

    async def mode_counts(
        self, client: PowerSchoolClient, school_number: int, yearid: int
    ) -> dict[AttendanceMode, int]:
        """How many ATTENDANCE rows of each mode the school has in that year: the evidence
        of the mode it takes. A school without rows yet is asked again after a few minutes."""
        key = (client.cache_key, school_number, yearid)
        entry = self._modes.get(key)
        if entry is None or entry.expired(missing=not any(entry.value.values())):
            counts = {
                mode: await client.attendance_count(school_number, yearid, code)
                for mode, code in ATT_MODE_CODES.items()
            }
            entry = self._modes[key] = _Entry(counts)
        return entry.value


def _term_for(terms: list[YearTerm], day: date) -> int | None:
    return next((t.yearid for t in terms if t.firstday <= day <= t.lastday), None)
