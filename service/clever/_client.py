"""Clever district-app API v3.0: district token, students (``/users?role=student``) with
``starting_after`` paging, and the Events API for incremental sync.

Facts from the reference file: IDs live in ``roles.student`` (``sis_id`` = the DCID,
``student_number`` = the preferred number); pages are followed through ``links[rel=next]``
until a page is empty or has no next link (Clever also hands out next links that lead to
empty pages); ``limit`` is capped at 10,000; 1,200 requests a minute per token, reported in
``X-Ratelimit-*`` headers on every answer, with no Retry-After on a 429.
"""

from __future__ import annotations

import asyncio
import base64
import random
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog

from service.metrics import observe_call
from service.models import CleverConnection, RosterStudent
from service.outbound import OutboundError, json_capped
from service.roster import (
    RetryPolicy,
    RosterAuthError,
    RosterCursorExpired,
    RosterError,
    RosterEvent,
    RosterSchool,
    RosterUnavailable,
    retrying,
)

log = structlog.get_logger("clever")

API_URL = "https://api.clever.com"
TOKENS_URL = "https://clever.com/oauth/tokens"
_RETRYABLE = frozenset({408, 429, 500, 502, 503, 504})
# A page of 10,000 students is a few megabytes; a larger answer is refused, not held in memory.
MAX_BODY_BYTES = 16 << 20


def student_from_user(user: dict[str, Any], *, active: bool = True) -> RosterStudent | None:
    """A Clever user as a roster student; None if the user has no student role."""
    role = (user.get("roles") or {}).get("student")
    if not isinstance(role, dict):
        return None
    name = user.get("name") or {}
    return RosterStudent(
        roster_id=str(user.get("id") or ""),
        sis_id=str(role.get("sis_id") or "").strip(),
        student_number=str(role.get("student_number") or "").strip(),
        first_name=str(name.get("first") or ""),
        last_name=str(name.get("last") or ""),
        roster_school_id=str(role.get("school") or ""),
        grade=str(role.get("grade") or ""),
        active=active,
    )


def _event(item: dict[str, Any]) -> RosterEvent:
    event = item.get("data", item)
    payload = event.get("data") or {}
    user = payload.get("object") or {}
    kind = str(event.get("type") or "")
    student = student_from_user(user, active=kind != "users.deleted")
    return RosterEvent(
        id=str(event.get("id") or ""), type=kind, student=student, roster_id=str(user.get("id"))
    )


class CleverClient:
    """Reads one district's students and events. Never logs a record: they carry PII."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        connection: CleverConnection,
        *,
        page_size: int = 1000,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
    ) -> None:
        self._session = session
        self._conn = connection
        self._api = (connection.base_url or API_URL).rstrip("/")
        self._tokens_url = (
            f"{connection.base_url.rstrip('/')}/oauth/tokens" if connection.base_url else TOKENS_URL
        )
        self._page_size = min(max(page_size, 1), 10_000)
        self._retry = retry or RetryPolicy()
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._token = connection.district_token or None
        self._not_before = 0.0  # monotonic time before which the rate limit says wait

    def __repr__(self) -> str:
        return f"CleverClient(api={self._api!r})"

    async def _district_token(self) -> str:
        """This district's token from the app's token list. The list names every district
        connected to the app, a page at a time: it is asked for this district only
        (``district=``) and still checked by owner, page after page, in case the filter is
        not applied."""
        basic = base64.b64encode(
            f"{self._conn.client_id}:{self._conn.client_secret}".encode()
        ).decode()
        wanted = self._conn.clever_district_id
        query = {"owner_type": "district", **({"district": wanted} if wanted else {})}
        params = dict(query)
        matching: list[dict[str, Any]] = []
        while True:
            body = await self._request(
                self._tokens_url, params, headers={"Authorization": f"Basic {basic}"}
            )
            tokens = [t for t in body.get("data") or [] if isinstance(t, dict)]
            matching += [
                t for t in tokens if not wanted or (t.get("owner") or {}).get("id") == wanted
            ]
            after = str(tokens[-1].get("id") or "") if tokens else ""
            if (wanted and matching) or not after or not _has_next(body):
                break
            params = {**query, "starting_after": after}
        if len(matching) != 1 or not matching[0].get("access_token"):
            raise RosterAuthError(
                f"Clever listed no token for district {wanted}: the district has not "
                "authorised this app, or disconnected it"
                if wanted and not matching
                else f"Clever listed {len(matching)} district tokens for this app"
                + ("" if wanted else "; set clever_district_id to pick one")
            )
        return str(matching[0]["access_token"])

    async def _api_get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        for refreshed in (False, True):
            if self._token is None:
                self._token = await self._district_token()
            try:
                return await self._request(
                    f"{self._api}{path}",
                    params,
                    headers={"Authorization": f"Bearer {self._token}"},
                )
            except RosterAuthError:
                # A district that re-authorised the app has a new token: list tokens again once.
                if refreshed or not (self._conn.client_id and self._conn.client_secret):
                    raise
                self._token = None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _request(
        self, url: str, params: dict[str, str], *, headers: dict[str, str]
    ) -> dict[str, Any]:
        async for attempt in retrying(self._retry):
            with attempt:
                return await self._once(url, params, headers)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once(
        self, url: str, params: dict[str, str], headers: dict[str, str]
    ) -> dict[str, Any]:
        wait = self._not_before - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        started = time.perf_counter()
        status: int | None = None
        try:
            async with self._session.get(
                url,
                params=params,
                headers={**headers, "Accept": "application/json"},
                timeout=self._timeout,
            ) as resp:
                status = resp.status
                self._note_rate_limit(resp)
                body: Any = None
                try:
                    body = await json_capped(resp, MAX_BODY_BYTES)
                except ValueError:
                    body = None  # HTML error pages happen; never require JSON
                if resp.status == 429:
                    raise RosterUnavailable(
                        "Clever rate limit reached", retry_after=self._reset_wait(resp)
                    )
                if resp.status in _RETRYABLE or resp.status >= 500:
                    raise RosterUnavailable(f"Clever answered HTTP {resp.status}")
                if resp.status == 401:
                    raise RosterAuthError("Clever refused the district token (HTTP 401)")
                if resp.status == 404 and url.endswith("/events"):
                    raise RosterCursorExpired("Clever no longer has the events after the cursor")
                if resp.status >= 400 or not isinstance(body, dict):
                    message = body.get("message", "") if isinstance(body, dict) else ""
                    raise RosterError(f"Clever answered HTTP {resp.status} {message}".strip())
                return body
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RosterUnavailable(f"Clever unreachable: {type(exc).__name__}") from exc
        except OutboundError as exc:
            raise RosterError(f"Clever not called: {exc}") from exc
        finally:
            elapsed = time.perf_counter() - started
            observe_call("clever", urlsplit(url).path, "GET", status, elapsed)
            log.debug(
                "clever_call",
                endpoint=urlsplit(url).path,
                http_status=status,
                duration_ms=round(elapsed * 1000, 1),
            )

    def _note_rate_limit(self, resp: aiohttp.ClientResponse) -> None:
        """Pause before the next call once any bucket has nothing left."""
        remaining = resp.headers.getall("X-Ratelimit-Remaining", [])
        if any(_number(r) == 0 for r in remaining):
            self._not_before = max(self._not_before, time.monotonic() + self._reset_wait(resp))

    @staticmethod
    def _reset_wait(resp: aiohttp.ClientResponse) -> float:
        """Seconds until the exhausted bucket resets (the earliest, if several), plus jitter."""
        remaining = resp.headers.getall("X-Ratelimit-Remaining", [])
        resets = resp.headers.getall("X-Ratelimit-Reset", [])
        candidates = [
            _number(reset)
            for left, reset in zip(remaining or ["0"] * len(resets), resets, strict=False)
            if _number(left) == 0
        ] or [_number(r) for r in resets]
        known = [c for c in candidates if c is not None]
        wait = (min(known) - time.time()) if known else 1.0
        return max(wait, 0.0) + random.uniform(0.05, 0.25)  # noqa: S311  (jitter, not crypto)

    async def students(self) -> AsyncIterator[list[RosterStudent]]:
        """Every student of the district, a page at a time."""
        params = {"role": "student", "limit": str(self._page_size)}
        while True:
            body = await self._api_get("/v3.0/users", params)
            items = [i for i in body.get("data") or [] if isinstance(i, dict)]
            if not items:
                return
            users = [i.get("data", i) for i in items]
            page = [student_from_user(u) for u in users]
            yield [s for s in page if s is not None]
            if not _has_next(body):
                return
            # Rebuild the next request ourselves: Clever's next links may drop role and limit.
            params = {
                "role": "student",
                "limit": str(self._page_size),
                "starting_after": str(users[-1].get("id", "")),
            }

    async def schools(self) -> list[RosterSchool]:
        """Every school the district shares with the app, across all pages."""
        found: list[RosterSchool] = []
        params = {"limit": str(self._page_size)}
        while True:
            body = await self._api_get("/v3.0/schools", params)
            items = [i.get("data", i) for i in body.get("data") or [] if isinstance(i, dict)]
            found.extend(
                RosterSchool(id=str(i.get("id") or ""), name=str(i.get("name") or ""))
                for i in items
                if isinstance(i, dict)
            )
            if not items or not _has_next(body):
                return found
            params = {"limit": str(self._page_size), "starting_after": found[-1].id}

    async def latest_event_id(self) -> str:
        """The newest event's id ("" if there is none): the cursor to take before a full sync."""
        body = await self._api_get("/v3.0/events", {"ending_before": "last", "limit": "1"})
        items = [i for i in body.get("data") or [] if isinstance(i, dict)]
        return str(items[-1].get("data", items[-1]).get("id", "")) if items else ""

    async def events(self, starting_after: str) -> AsyncIterator[list[RosterEvent]]:
        """User events after the cursor, oldest first, a page at a time.

        Raises :class:`RosterCursorExpired` when Clever no longer keeps the cursor's event.
        """
        after = starting_after
        while True:
            params = {"limit": str(self._page_size), "record_type": "users"}
            if after:
                params["starting_after"] = after
            body = await self._api_get("/v3.0/events", params)
            items = [i for i in body.get("data") or [] if isinstance(i, dict)]
            if not items:
                return
            page = [_event(i) for i in items]
            yield page
            after = page[-1].id
            if not _has_next(body):
                return


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _has_next(body: dict[str, Any]) -> bool:
    return any(
        isinstance(link, dict) and link.get("rel") == "next" for link in body.get("links") or []
    )
