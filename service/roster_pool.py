"""One HTTP session for roster services, and the Clever / ClassLink clients built on it:
the concrete :class:`service.roster.RosterSources` the service is wired with at startup.

Lives outside ``service.roster`` so that package (which the two adapters import) imports
neither adapter.
"""

from __future__ import annotations

import aiohttp
from aiohttp.abc import AbstractResolver

from service import outbound
from service.classlink import ClassLinkClient
from service.clever import CleverClient
from service.models import ClassLinkConnection, CleverConnection
from service.outbound import OutboundPolicy
from service.roster._retry import RetryPolicy


class RosterPool:
    """Hands out roster clients that share one bounded connection pool; satisfies
    :class:`service.roster.RosterSources`. Every call obeys ``policy`` (``resolver``: DNS
    under the policy instead of the system's)."""

    def __init__(
        self,
        *,
        policy: OutboundPolicy,
        page_size: int = 1000,
        retry: RetryPolicy | None = None,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self._policy = policy
        self._resolver = resolver
        self._page_size = page_size
        self._retry = retry
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = outbound.session(
                self._policy, limit=50, limit_per_host=8, resolver=self._resolver
            )
        return self._session

    def clever(
        self, connection: CleverConnection, *, retry: RetryPolicy | None = None
    ) -> CleverClient:
        """A client for one Clever district (``retry``: instead of the pool's policy)."""
        return CleverClient(
            self._get_session(),
            connection,
            page_size=self._page_size,
            retry=retry or self._retry,
        )

    def classlink(
        self, connection: ClassLinkConnection, *, retry: RetryPolicy | None = None
    ) -> ClassLinkClient:
        """A client for one ClassLink Roster Server (``retry``: instead of the pool's policy)."""
        return ClassLinkClient(
            self._get_session(),
            connection,
            page_size=self._page_size,
            retry=retry or self._retry,
        )

    async def close(self) -> None:
        """Close the shared session."""
        if self._session is not None:
            await self._session.close()
            self._session = None
