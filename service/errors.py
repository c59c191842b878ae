"""Domain errors. Each one names what went wrong in words a caller can act on;
the gRPC layer maps each class to one status code."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


class DomainError(Exception):
    """Base class: ``message`` is safe to show to a caller (no secrets, no names);
    ``metadata`` is machine-readable context sent along with ``reason``."""

    def __init__(
        self, message: str, *, reason: str = "", metadata: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.metadata = dict(metadata or {})


@dataclass(frozen=True)
class FieldViolation:
    """One bad input field: the field's path and why it is bad."""

    field: str
    description: str


class InvalidArgument(DomainError):
    """The request is malformed; ``violations`` says which fields and why."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        summary = "; ".join(f"{v.field}: {v.description}" for v in violations[:5])
        super().__init__(f"invalid request: {summary}", reason="INVALID_ARGUMENT")
        self.violations = violations


class NotFound(DomainError):
    """The district, student or record does not exist."""


class Unauthenticated(DomainError):
    """The call carries no valid identity (no token, an unknown or revoked one, or a
    certificate naming no caller)."""


class PermissionDenied(DomainError):
    """The caller is identified but its role or districts do not cover the call. Says the
    same whether the district it named exists or not."""


class FailedPrecondition(DomainError):
    """The district or school is not configured for what was asked."""


class AlreadyExists(DomainError):
    """An idempotency key was reused for a different request; ``violations`` names the
    fields that differ from the first one (none when they cannot be told), also sent as the
    comma-separated ``fields`` metadata."""

    def __init__(
        self, message: str, *, reason: str = "", violations: Sequence[FieldViolation] = ()
    ) -> None:
        names = ",".join(v.field for v in violations)
        super().__init__(message, reason=reason, metadata={"fields": names} if names else None)
        self.violations = list(violations)


class StillRunning(DomainError):
    """The caller's wait ended before the job it waited for; the job goes on, and
    ``metadata`` names it so the caller can follow it."""


class Unavailable(DomainError):
    """Something the service needs (PowerSchool, a roster service, its own database) could
    not be reached and nothing cached could answer: retrying later may succeed. ``reason``
    names which one (``POWERSCHOOL_UNAVAILABLE``, ``ROSTER_UNAVAILABLE``,
    ``DATABASE_UNAVAILABLE``), so a caller never has to guess."""

    def __init__(self, message: str, *, reason: str, retry_after: float = 5.0) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


class ResourceExhausted(DomainError):
    """A limit was reached: the request is too large, or the caller sent too many requests
    too fast. ``retry_after`` (seconds) is set when waiting helps, 0 when it never will."""

    def __init__(self, message: str, *, reason: str, retry_after: float = 0.0) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


class DeadlineExceeded(DomainError):
    """The RPC ran out of its time budget (the caller's deadline, or the service's cap on
    long RPCs) and was stopped; nothing of it continues."""
