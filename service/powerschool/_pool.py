"""One shared HTTP connection pool and one client (with its token cache) per PowerSchool
connection, so a district's token is fetched once, not once per request."""

from __future__ import annotations

import hashlib

import aiohttp
from aiohttp.abc import AbstractResolver

from service import outbound
from service.outbound import OutboundPolicy
from service.powerschool._client import PowerSchoolClient


class PowerSchoolPool:
    """Hands out a :class:`PowerSchoolClient` per (base URL, credentials); every call obeys
    ``policy`` (``resolver``: DNS under the policy instead of the system's)."""

    def __init__(
        self,
        *,
        policy: OutboundPolicy,
        timeout: float = 10.0,
        limit: int = 100,
        limit_per_host: int = 8,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self._policy = policy
        self._resolver = resolver
        self._timeout = timeout
        self._limit = limit
        self._limit_per_host = limit_per_host
        self._session: aiohttp.ClientSession | None = None
        self._clients: dict[str, PowerSchoolClient] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = outbound.session(
                self._policy,
                limit=self._limit,
                limit_per_host=self._limit_per_host,
                ttl_dns_cache=300,
                resolver=self._resolver,
            )
        return self._session

    def client(self, base_url: str, client_id: str, client_secret: str) -> PowerSchoolClient:
        """The client for these credentials; a changed secret gets a fresh client and token."""
        key = hashlib.sha256(f"{base_url}\0{client_id}\0{client_secret}".encode()).hexdigest()
        found = self._clients.get(key)
        if found is None:
            found = PowerSchoolClient(
                self._get_session(), base_url, client_id, client_secret, timeout=self._timeout
            )
            self._clients[key] = found
        return found

    async def close(self) -> None:
        """Close the shared session."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._clients.clear()
