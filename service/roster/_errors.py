"""Roster-service failures, sorted by what the sync should do about them."""

from __future__ import annotations


class RosterError(Exception):
    """Base class. ``str()`` is safe to store and show: no tokens, no student data."""


class RosterUnavailable(RosterError):
    """Network failure, 429 or 5xx: wait (``retry_after`` seconds if the server said), retry."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RosterAuthError(RosterError):
    """The credentials or token were refused: an admin must fix the connection."""


class RosterCursorExpired(RosterError):
    """The incremental cursor is older than the server keeps: a full sync is needed."""
