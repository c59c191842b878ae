"""What the roster adapters (Clever, ClassLink) share and what the domain needs from them:
the source Protocols and the records they yield, the error vocabulary, and the retry policy
for transient failures. Imports neither adapter: they are wired at startup."""

from service.roster._errors import (
    RosterAuthError,
    RosterCursorExpired,
    RosterError,
    RosterUnavailable,
)
from service.roster._retry import RetryPolicy, retrying
from service.roster._sources import (
    EventFeedSource,
    ModifiedSinceSource,
    RosterEvent,
    RosterPage,
    RosterSchool,
    RosterSources,
)

__all__ = [
    "EventFeedSource",
    "ModifiedSinceSource",
    "RetryPolicy",
    "RosterAuthError",
    "RosterCursorExpired",
    "RosterError",
    "RosterEvent",
    "RosterPage",
    "RosterSchool",
    "RosterSources",
    "RosterUnavailable",
    "retrying",
]
