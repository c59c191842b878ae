"""ClassLink Roster Server, OneRoster 1.1 (``{endpoint}/ims/oneroster/v1p1``), with
two-legged OAuth 1.0a HMAC-SHA256 request signing (oauthlib computes the signature).

Facts from the reference file: ``/students`` answers ``{"users": [...]}``; ``limit``/``offset``
paging with ``X-Total-Count``; a stable ``sort=sourcedId``; deltas by
``filter=dateLastModified>'...'``; deletes as ``status: tobedeleted`` (or not at all: a full
reconcile catches hard deletes); ``enabledUser`` arrives as "true"/"false" or a boolean.
Records carry passwords and PII: they are never logged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import structlog
from oauthlib import oauth1
from yarl import URL

from service.metrics import observe_call
from service.models import ClassLinkConnection, RosterStudent
from service.outbound import OutboundError, json_capped
from service.roster import (
    RetryPolicy,
    RosterAuthError,
    RosterError,
    RosterPage,
    RosterSchool,
    RosterUnavailable,
    retrying,
)

log = structlog.get_logger("classlink")

API_PATH = "/ims/oneroster/v1p1"
_RETRYABLE = frozenset({408, 429, 500, 502, 503, 504})
# A page of 10,000 students is a few megabytes; a larger answer is refused, not held in memory.
MAX_BODY_BYTES = 16 << 20


def _truthy(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def _grade(grades: object) -> str:
    first = str(grades[0]) if isinstance(grades, list) and grades else ""
    # OneRoster pads grades ("09"); Clever does not ("9"). Keep one spelling.
    return first.lstrip("0") or first if first.isdigit() else first


def student_from_user(user: dict[str, Any]) -> RosterStudent:
    """A OneRoster user as a roster student (sourcedId is both roster ID and sis_id)."""
    orgs = user.get("orgs") or []
    first_org = orgs[0] if orgs and isinstance(orgs[0], dict) else {}
    sourced_id = str(user.get("sourcedId") or "").strip()
    active = (
        str(user.get("status") or "active").lower() != "tobedeleted"
        and _truthy(user.get("enabledUser", True))
        and str(user.get("role") or "student").lower() == "student"
    )
    return RosterStudent(
        roster_id=sourced_id,
        sis_id=sourced_id,
        student_number=str(user.get("identifier") or "").strip(),
        first_name=str(user.get("givenName") or ""),
        last_name=str(user.get("familyName") or ""),
        roster_school_id=str(first_org.get("sourcedId") or ""),
        grade=_grade(user.get("grades")),
        active=active,
    )


def roster_server_base(endpoint_url: str) -> str:
    """The Roster Server's base URL from an endpoint as ClassLink shows it: with or without
    a trailing slash, and with or without the OneRoster 1.1 path (``/ims/oneroster/v1p1``,
    or a resource under it, such as ``.../v1p1/students``). Any other path (a OneRoster 1.2
    ``v1p2`` endpoint, say) is kept, so the connection check reports it as the wrong one."""
    url = endpoint_url.strip().rstrip("/")
    marker = url.lower().find(API_PATH.lower())
    return url[:marker] if marker >= 0 else url


class ClassLinkClient:
    """Reads one district's students from its Roster Server."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        connection: ClassLinkConnection,
        *,
        page_size: int = 1000,
        concurrency: int = 4,
        retry: RetryPolicy | None = None,
        timeout: float = 60.0,
    ) -> None:
        self._session = session
        self._base = roster_server_base(connection.endpoint_url) + API_PATH
        self._signer = oauth1.Client(
            connection.client_id,
            client_secret=connection.client_secret,
            signature_method=oauth1.SIGNATURE_HMAC_SHA256,
            signature_type=oauth1.SIGNATURE_TYPE_AUTH_HEADER,
        )
        self._page_size = min(max(page_size, 1), 10_000)
        self._width = max(concurrency, 1)
        self._concurrency = asyncio.Semaphore(self._width)
        self._retry = retry or RetryPolicy()
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    def __repr__(self) -> str:
        return f"ClassLinkClient(base={self._base!r})"

    async def _get(self, path: str, params: dict[str, str]) -> tuple[dict[str, Any], int | None]:
        async for attempt in retrying(self._retry):
            with attempt:
                async with self._concurrency:
                    return await self._once(path, params)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once(self, path: str, params: dict[str, str]) -> tuple[dict[str, Any], int | None]:
        # Sign exactly the URL that goes on the wire: a fresh nonce and timestamp per attempt.
        url = f"{self._base}{path}?{urlencode(params, quote_via=quote)}"
        _, headers, _ = self._signer.sign(url, http_method="GET")
        started = time.perf_counter()
        status: int | None = None
        try:
            async with self._session.get(
                URL(url, encoded=True),
                headers={**headers, "Accept": "application/json"},
                timeout=self._timeout,
            ) as resp:
                status = resp.status
                try:
                    body = await json_capped(resp, MAX_BODY_BYTES)
                except ValueError:
                    body = None
                if resp.status in _RETRYABLE or resp.status >= 500:
                    raise RosterUnavailable(
                        f"ClassLink answered HTTP {resp.status}",
                        retry_after=_seconds(resp.headers.get("Retry-After")),
                    )
                if resp.status in (401, 403):
                    raise RosterAuthError(
                        f"ClassLink refused the request (HTTP {resp.status}): {_imsx(body)}"
                        "; check the Roster Server client ID and secret"
                    )
                if resp.status >= 400 or not isinstance(body, dict):
                    raise RosterError(f"ClassLink answered HTTP {resp.status}: {_imsx(body)}")
                total = resp.headers.get("X-Total-Count")
                return body, int(total) if total and total.isdigit() else None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RosterUnavailable(f"ClassLink unreachable: {type(exc).__name__}") from exc
        except OutboundError as exc:
            raise RosterError(f"ClassLink not called: {exc}") from exc
        finally:
            elapsed = time.perf_counter() - started
            observe_call("classlink", f"{API_PATH}{path}", "GET", status, elapsed)
            log.debug(
                "classlink_call",
                endpoint=f"{API_PATH}{path}",
                http_status=status,
                duration_ms=round(elapsed * 1000, 1),
            )

    def _params(self, offset: int, modified_after: str) -> dict[str, str]:
        params = {
            "limit": str(self._page_size),
            "offset": str(offset),
            "sort": "sourcedId",
            "orderBy": "asc",
        }
        if modified_after:
            params["filter"] = f"dateLastModified>'{modified_after}'"
        return params

    async def _page(self, offset: int, modified_after: str) -> tuple[RosterPage, int | None]:
        body, total = await self._get("/students", self._params(offset, modified_after))
        users = [u for u in body.get("users") or [] if isinstance(u, dict)]
        newest = max((str(u.get("dateLastModified") or "") for u in users), default="")
        students = [s for s in map(student_from_user, users) if s.roster_id]
        return RosterPage(students, newest), total

    async def schools(self) -> list[RosterSchool]:
        """Every school org on the Roster Server, read in pages until a short one."""
        found: list[RosterSchool] = []
        offset = 0
        while True:
            body, _ = await self._get(
                "/schools",
                {"limit": str(self._page_size), "offset": str(offset), "sort": "sourcedId"},
            )
            orgs = [o for o in body.get("orgs") or [] if isinstance(o, dict)]
            found.extend(
                RosterSchool(id=str(o.get("sourcedId") or ""), name=str(o.get("name") or ""))
                for o in orgs
            )
            if "orgs" not in body:
                raise RosterError("ClassLink answered /schools without an orgs list")
            if len(orgs) < self._page_size:
                return found
            offset += self._page_size

    async def students(self, *, modified_after: str = "") -> AsyncIterator[RosterPage]:
        """Every student (or those modified after the ISO time), a page at a time.

        The first page tells the total; the rest are fetched several at a time. Without a
        total, pages are read in order until a short or empty one.
        """
        first, total = await self._page(0, modified_after)
        yield first
        if total is None:
            offset = self._page_size
            page = first
            while len(page.students) >= self._page_size:
                page, _ = await self._page(offset, modified_after)
                if not page.students:
                    return
                yield page
                offset += self._page_size
            return
        offsets = list(range(self._page_size, total, self._page_size))
        # A few pages at a time: memory stays bounded, and a failure stops the rest.
        width = self._width
        for start in range(0, len(offsets), width):
            tasks = [
                asyncio.ensure_future(self._page(o, modified_after))
                for o in offsets[start : start + width]
            ]
            try:
                done = await asyncio.gather(*tasks)
            except BaseException:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
            for page, _ in done:
                yield page


def _seconds(text: str | None) -> float | None:
    try:
        return max(float(text), 0.0) if text else None
    except ValueError:
        return None


def _imsx(body: object) -> str:
    """The description of a OneRoster StatusInfo error body, wherever it sits."""
    if not isinstance(body, dict):
        return "no details"
    infos = body.get("statusInfoSet") or [body.get("imsx_statusInfo") or body]
    first = infos[0] if isinstance(infos, list) and infos and isinstance(infos[0], dict) else {}
    return str(first.get("imsx_description") or first.get("imsx_codeMajor") or "no details")[:200]
