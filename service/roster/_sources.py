"""What the domain needs from a roster source, declared here so the domain depends on these
Protocols and the Clever / ClassLink adapters implement them without ``roster/`` importing
either adapter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from service.models import ClassLinkConnection, CleverConnection, RosterStudent
from service.roster._retry import RetryPolicy


@dataclass(frozen=True)
class RosterEvent:
    """One change to a roster user, already turned into the roster record it implies
    (``student`` is None when the user is no longer a student)."""

    id: str
    type: str
    student: RosterStudent | None
    roster_id: str


@dataclass(frozen=True)
class RosterPage:
    """One page of students and the newest modification time on it ("" if none)."""

    students: list[RosterStudent]
    newest_modified: str


@dataclass(frozen=True)
class RosterSchool:
    """A school the roster shares with the app: its roster ID and name."""

    id: str
    name: str


class EventFeedSource(Protocol):
    """A roster read in full or replayed from an event cursor (Clever)."""

    def students(self) -> AsyncIterator[list[RosterStudent]]:
        """Every student of the district, a page at a time."""
        ...

    async def latest_event_id(self) -> str:
        """The newest event's id ("" if none): the cursor to take before a full read."""
        ...

    def events(self, starting_after: str) -> AsyncIterator[list[RosterEvent]]:
        """User events after the cursor, oldest first, a page at a time; raises
        :class:`~service.roster.RosterCursorExpired` when the cursor is no longer kept."""
        ...

    async def schools(self) -> list[RosterSchool]:
        """Every school the district shares with the app (proves the token works)."""
        ...


class ModifiedSinceSource(Protocol):
    """A roster read in full or filtered by modification time (ClassLink / OneRoster)."""

    def students(self, *, modified_after: str = "") -> AsyncIterator[RosterPage]:
        """Students modified after the ISO timestamp (all of them if empty), a page at a
        time."""
        ...

    async def schools(self) -> list[RosterSchool]:
        """Every school org on the Roster Server (proves the endpoint, the OneRoster version
        and the request signatures)."""
        ...


class RosterSources(Protocol):
    """Builds a source for a district's roster connection; wired at startup."""

    def clever(
        self, connection: CleverConnection, *, retry: RetryPolicy | None = None
    ) -> EventFeedSource:
        """The source for one Clever district (``retry`` overrides the sync's patience)."""
        ...

    def classlink(
        self, connection: ClassLinkConnection, *, retry: RetryPolicy | None = None
    ) -> ModifiedSinceSource:
        """The source for one ClassLink Roster Server (``retry`` overrides the sync's
        patience)."""
        ...
