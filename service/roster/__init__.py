"""What the roster adapters (Clever, ClassLink) share: their error vocabulary, the retry
policy for transient failures, and the shape of a page of roster records."""

from service.roster._errors import (
    RosterAuthError,
    RosterCursorExpired,
    RosterError,
    RosterUnavailable,
)
from service.roster._retry import RetryPolicy, retrying

__all__ = [
    "RetryPolicy",
    "RosterAuthError",
    "RosterCursorExpired",
    "RosterError",
    "RosterUnavailable",
    "retrying",
]
