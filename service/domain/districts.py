"""District configuration rules."""

from __future__ import annotations

from service.errors import NotFound
from service.models import District
from service.store import DistrictStore


class DistrictService:
    """Saves and loads district configuration."""

    def __init__(self, store: DistrictStore) -> None:
        self._store = store

    async def upsert(self, district: District) -> District:
        """Save a district (an empty PowerSchool secret keeps the stored one) and return it."""
        await self._store.upsert(district)
        return await self.get(district.district_id)

    async def get(self, district_id: str) -> District:
        """The district, or :class:`NotFound`."""
        district = await self._store.get(district_id)
        if district is None:
            raise NotFound(f"district {district_id!r} does not exist", reason="DISTRICT_NOT_FOUND")
        return district
