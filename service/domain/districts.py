"""District configuration rules, and an in-process copy of each district.

Every RPC and every delivery needs its district; reading it from Postgres each time (two
queries) would be the largest cost of a cached ResolveStudent. A change made by any process
drops the copy (:meth:`DistrictService.forget`, fed by the store's change notifications);
copies are still re-read after ``trusted_seconds`` as a safety net, and after
``cache_seconds`` while those notifications are not being heard.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Collection

from service.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from service.models import District
from service.outbound import OutboundPolicy, OutboundRefused
from service.store import DistrictStore


class DistrictService:
    """Saves and loads district configuration."""

    def __init__(
        self,
        store: DistrictStore,
        policy: OutboundPolicy,
        *,
        cache_seconds: float = 2.0,
        trusted_seconds: float = 60.0,
    ) -> None:
        self._store = store
        self._policy = policy
        self._cache_seconds = cache_seconds
        self._trusted_seconds = trusted_seconds
        self._trusted = False
        self._cache: dict[str, tuple[float, District]] = {}
        # Bumped by every forget: a read that began before one is not kept.
        self._epoch = 0

    def forget(self, district_id: str) -> None:
        """Drop the copy of ``district_id`` (every copy for ``""``): it changed."""
        self._epoch += 1
        if district_id:
            self._cache.pop(district_id, None)
        else:
            self._cache.clear()

    def trust(self, heard: bool) -> None:
        """Whether changes made by other processes are being heard (see :meth:`forget`):
        copies are kept ``trusted_seconds`` if so, else ``cache_seconds``."""
        if heard != self._trusted:
            self._trusted = heard
            self.forget("")

    async def upsert(self, district: District) -> District:
        """Save a district (an empty PowerSchool secret keeps the stored one) and return it.
        A PowerSchool, Clever or ClassLink URL the outbound policy refuses (not https, an
        address literal that is private, loopback, link-local…) is
        :class:`FailedPrecondition` ``UPSTREAM_URL_REFUSED``, and nothing is saved."""
        for name, url in (
            ("powerschool.base_url", district.powerschool.base_url),
            ("clever.base_url", district.clever.base_url),
            ("classlink.endpoint_url", district.classlink.endpoint_url),
        ):
            try:
                if url:
                    self._policy.check_url(url)
            except OutboundRefused as exc:
                raise FailedPrecondition(
                    f"district.{name}: {exc}",
                    reason="UPSTREAM_URL_REFUSED",
                    metadata={"field": f"district.{name}"},
                ) from None
        await self._store.upsert(district)
        return await self.get(district.district_id, fresh=True)

    async def get(self, district_id: str, *, fresh: bool = False) -> District:
        """The district, or :class:`NotFound`; ``fresh`` skips the in-process copy."""
        cached = self._cache.get(district_id)
        if not fresh and cached is not None and time.monotonic() < cached[0]:
            return cached[1]
        epoch = self._epoch
        district = await self._store.get(district_id)
        if district is None:
            self._cache.pop(district_id, None)
            raise NotFound(f"district {district_id!r} does not exist", reason="DISTRICT_NOT_FOUND")
        if epoch == self._epoch:
            keep = self._trusted_seconds if self._trusted else self._cache_seconds
            self._cache[district_id] = (time.monotonic() + keep, district)
        return district

    async def page(
        self, *, page_size: int, page_token: str, only: Collection[str] | None = None
    ) -> tuple[list[District], str]:
        """A page of districts by district_id (among ``only``, unless None), and the next
        page's token ("" at the end)."""
        after = _decode_token(page_token)
        districts = await self._store.page(after=after, limit=page_size + 1, only=only)
        if len(districts) <= page_size:
            return districts, ""
        shown = districts[:page_size]
        return shown, base64.urlsafe_b64encode(shown[-1].district_id.encode()).decode()


def _decode_token(token: str) -> str:
    if not token:
        return ""
    try:
        after = base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError):
        after = ""
    if not after:
        raise InvalidArgument(
            [FieldViolation("page_token", "is not a token returned by ListDistricts")]
        )
    return after
