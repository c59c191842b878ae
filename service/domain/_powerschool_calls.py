"""Turns PowerSchool adapter failures into domain errors a caller can act on."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from service.errors import FailedPrecondition, Unavailable
from service.models import District
from service.powerschool import (
    PowerSchoolClient,
    PowerSchoolError,
    PowerSchoolPool,
    PowerSchoolUnavailable,
)

T = TypeVar("T")


def client_for(pool: PowerSchoolPool, district: District) -> PowerSchoolClient:
    """The district's PowerSchool client, or :class:`FailedPrecondition` if unconfigured."""
    ps = district.powerschool
    if not ps.configured:
        raise FailedPrecondition(
            f"district {district.district_id!r} has no PowerSchool connection configured "
            "(base_url, client_id and client_secret are required)",
            reason="POWERSCHOOL_NOT_CONFIGURED",
        )
    return pool.client(ps.base_url, ps.client_id, ps.client_secret)


async def call(operation: Awaitable[T]) -> T:
    """Await a PowerSchool call; transient failures become :class:`Unavailable`, the rest
    (credentials, permissions, refusals) :class:`FailedPrecondition`."""
    try:
        return await operation
    except PowerSchoolUnavailable as exc:
        raise Unavailable(
            str(exc), reason="POWERSCHOOL_UNAVAILABLE", retry_after=exc.retry_after or 5.0
        ) from exc
    except PowerSchoolError as exc:
        raise FailedPrecondition(str(exc), reason="POWERSCHOOL_REFUSED") from exc
