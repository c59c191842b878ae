"""Retries for roster calls: exponential backoff with jitter (stamina), except that a
server-given wait (Retry-After, or Clever's X-Ratelimit-Reset) replaces the backoff."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

import stamina

from service.roster._errors import RosterUnavailable


@dataclass(frozen=True)
class RetryPolicy:
    """How patient a sync is with one request."""

    attempts: int = 6
    timeout: float = 300.0
    wait_initial: float = 0.5
    wait_max: float = 30.0
    wait_jitter: float = 1.0


def _backoff(exc: Exception) -> bool | float:
    if not isinstance(exc, RosterUnavailable):
        return False
    return exc.retry_after if exc.retry_after is not None else True


def retrying(policy: RetryPolicy) -> AsyncIterator[AbstractContextManager[None]]:
    """``async for attempt in retrying(p): with attempt: ...`` retries RosterUnavailable,
    sleeping without blocking the event loop."""
    return stamina.retry_context(
        on=_backoff,
        attempts=policy.attempts,
        timeout=policy.timeout,
        wait_initial=policy.wait_initial,
        wait_max=policy.wait_max,
        wait_jitter=policy.wait_jitter,
    )
