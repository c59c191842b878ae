"""What can go wrong talking to PowerSchool, sorted by what the caller should do about it."""

from __future__ import annotations


class PowerSchoolError(Exception):
    """Base class. ``str()`` is safe to store and show: no token, no secret, no names."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class PowerSchoolUnavailable(PowerSchoolError):
    """Network failure, timeout, 5xx, 429 or a non-JSON page: try again later."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class PowerSchoolAuthError(PowerSchoolError):
    """Bad client credentials, or a 401 that a fresh token did not cure (a plugin permission)."""


class PowerSchoolForbidden(PowerSchoolError):
    """403: the plugin lacks a field or table grant; ``denied`` holds the (resource, field)
    pairs PowerSchool named."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        denied: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message, status=status)
        self.denied = denied


class PowerSchoolRejected(PowerSchoolError):
    """400, or a 200 whose body reports ERROR: PowerSchool refused the request as sent."""


class PowerSchoolBlocked(PowerSchoolError):
    """The outbound policy refused the server (not https, or an address that is private,
    loopback, link-local…) or its answer was larger than allowed: fix the URL or the
    allowlist; retrying cannot help."""
