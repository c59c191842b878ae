"""The simulated Clever API: aiohttp app, district state, events, rate limits and faults.

Wire formats follow ``/work/shared/reference/roster-apis.md`` sections 1-4. Behaviour the fact
file marks as inferred is configurable on ``CleverSimulator``: ``default_limit``,
``next_link_keeps_params``, ``spurious_links``, ``item_uri``,
``previous_attributes_in_data``, ``events_enabled`` (what Clever answers while Events are off
is undocumented: here, an empty list forever), ``other_districts``, ``token_page_size`` and
``token_district_filter`` (whether and how ``/oauth/tokens`` pages and filters are
unconfirmed).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import datetime
import json
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from simulators._server import HttpSimulator
from simulators.roster import (
    PERSON_FIELDS,
    RosterPerson,
    clever_object_id,
    copy_people,
    person_changes,
    person_from_json,
    person_to_json,
)

from ._render import JSON, USER_ROLES, UserRecord, iso, previous_attributes, render_user

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

API_VERSIONS = ("v3.0", "v3.1")
"""The API versions served (both under their own path prefix)."""

_API_PATH = re.compile(r"/v3\.[01](?:/|$)")
_SCOPES = [
    "read:district_admins_basic",
    "read:districts",
    "read:school_admins_basic",
    "read:schools",
    "read:sections",
    "read:students",
    "read:teachers",
    "read:user_id",
]
_MESSAGES = {
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_NOT_FOUND = {"message": "Resource not found"}


def _html_page(status: int) -> str:
    reason = _MESSAGES.get(status, "Error")
    return (
        f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {reason}</h1></center>\r\n</body>\r\n</html>\r\n"
    )


@dataclass
class Faults:
    """Failure modes; change the fields at any time (also via ``POST /_sim/faults``)."""

    latency: float = 0.0
    """Seconds added to every ``/oauth`` and ``/v3.x`` request."""
    outage: bool = False
    """Every ``/oauth`` and ``/v3.x`` request answers 503 with an HTML page."""
    queue: list[tuple[int, bool]] = field(default_factory=list)
    """Served FIFO to the next ``/v3.x`` requests: (status, html_body). 429s carry
    ``X-Ratelimit-*`` headers with Remaining 0; other bodies are ``{"message": ...}`` JSON, or
    an HTML error page when ``html_body``."""


@dataclass(frozen=True)
class Call:
    """One request the simulator answered (``/_sim/*`` control requests are not recorded)."""

    method: str
    path: str
    query: dict[str, str]
    status: int

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form, as served by ``GET /_sim/calls``."""
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "status": self.status,
        }


@dataclass
class _Event:
    id: str
    created: datetime.datetime
    type: str
    object: JSON
    previous: JSON | None


class _ApiError(Exception):
    """Raised by handlers; middlewares turn it into a JSON response."""

    def __init__(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status, payload)
        self.status = status
        self.payload = payload
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        return web.json_response(self.payload, status=self.status, headers=self.headers)


def _http_error(exc: web.HTTPException) -> web.Response:
    message = _NOT_FOUND["message"] if exc.status == 404 else exc.reason
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    return web.json_response({"message": message}, status=exc.status, headers=headers)


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class CleverSimulator(HttpSimulator[Call]):
    """One Clever district (a Secure Sync connection of one app), in-process.

    Serves ``GET /oauth/tokens`` (Basic auth) and, with the district token as Bearer,
    ``/v3.0`` and ``/v3.1`` ``users``, ``users/{id}``, ``events`` and ``events/{id}``.
    Every piece of state lives on the instance, so many simulators can run at once.

    Users are listed in ascending id order; inactive people are "unshared" (not listed, 404).
    Events are kept for ``event_retention``; ``starting_after``/``ending_before`` naming an
    event that is unknown or no longer retained answers 404 ``{"message": ...}``, which the
    sync client must treat as "cursor expired: do a full resync". ``clock`` (Unix seconds)
    drives rate-limit windows, ids and timestamps; tests may pass a fake one. ``base_url``
    stands for both ``https://clever.com`` (tokens) and ``https://api.clever.com``.
    """

    faults: Faults
    """Current failure modes."""
    district_id: str
    """The district's 24-hex id (``owner.id`` of its token)."""
    district_token: str
    """The district-app bearer token that ``/oauth/tokens`` lists."""
    connected: bool
    """False after ``disconnect()``: no token is listed and the old one answers 401."""

    def __init__(
        self,
        students: Iterable[RosterPerson] = (),
        *,
        district_id: str | None = None,
        client_id: str = "clever-client",
        client_secret: str = "clever-secret",  # noqa: S107 - a fake app's fake secret
        district_token: str | None = None,
        rate_limit: int = 1200,
        rate_window: float = 60.0,
        max_limit: int = 10000,
        default_limit: int = 100,
        next_link_keeps_params: bool = True,
        spurious_links: bool = False,
        event_retention: datetime.timedelta = datetime.timedelta(days=30),
        api_version: str = "v3.0",
        item_uri: bool = True,
        previous_attributes_in_data: bool = True,
        events_enabled: bool = True,
        other_districts: Sequence[str] = (),
        token_page_size: int = 100,
        token_district_filter: bool = True,
        schools: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Build the district from ``students`` (copied; each keeps its ``roster_id``).

        ``district_id`` / ``district_token`` default to fresh random hex (24 / 40 digits).
        ``api_version`` is the app's version: event payloads carry users in its shape
        (both ``/v3.0`` and ``/v3.1`` are served, each in its own shape). A person with an
        empty ``roster_id`` gets a new id.

        ``events_enabled`` False is an app that never enabled Events (opt-in since December
        2022): no event is generated and ``/events`` answers an empty list; set the attribute
        to True later to enable them (events start with the next change). ``other_districts``
        are further districts connected to the same app: ``/oauth/tokens`` lists a token for
        each (those tokens open no data here), ``token_page_size`` tokens a page in
        ascending token-id order with ``starting_after`` paging, and ``district=`` filters
        unless ``token_district_filter`` is False. ``schools`` (id -> name) are the schools
        shared with the app (``/schools``); default: every ``school_id`` of ``students``.
        """
        super().__init__()
        if api_version not in API_VERSIONS:
            raise ValueError(f"api_version must be one of {API_VERSIONS}")
        if rate_limit < 1 or rate_window <= 0:
            raise ValueError("rate_limit must be >= 1 and rate_window > 0")
        self.district_id = district_id or secrets.token_hex(12)
        self.district_token = district_token or secrets.token_hex(20)
        self.client_id = client_id
        self.client_secret = client_secret
        self.rate_limit = rate_limit
        self.rate_window = rate_window
        self.max_limit = max_limit
        self.default_limit = default_limit
        self.next_link_keeps_params = next_link_keeps_params
        self.spurious_links = spurious_links
        self.event_retention = event_retention
        self.api_version = api_version
        self.item_uri = item_uri
        self.previous_attributes_in_data = previous_attributes_in_data
        self.events_enabled = events_enabled
        self.token_page_size = token_page_size
        self.token_district_filter = token_district_filter
        self.connected = True
        self.faults = Faults()
        self._clock = clock
        self._machine = secrets.randbits(40)
        self._counter = secrets.randbits(20)
        self._buckets: dict[str, tuple[int, int]] = {}
        self._token_id = clever_object_id(int(clock()), self._machine, 0)
        self._token_created = self._now()
        self._other_tokens: dict[str, str] = {}  # token id -> district id
        for i, other in enumerate(other_districts, start=1):
            # Half connected before this district, half after: its token sits in the middle.
            offset = (i + 1) // 2 * (1 if i % 2 else -1)
            self._other_tokens[clever_object_id(int(clock()) + offset, self._machine, i)] = other
        self._users: dict[str, UserRecord] = {}
        self._visible: dict[str, list[str]] = {role: [] for role in ("", *USER_ROLES)}
        self._events: list[_Event] = []
        self._event_ids: list[str] = []
        self._max_user_id = "0" * 24
        self._max_event_id = "0" * 24
        self._load_students(students)
        self.schools = dict(schools) if schools is not None else self._students_schools()
        """The schools shared with the app (``/schools``): id -> name; change it at any time."""
        self.app = self._build_app()

    def _load_students(self, students: Iterable[RosterPerson]) -> None:
        for person in copy_people(students):
            if not person.roster_id:
                person.roster_id = self._new_user_id()
            if person.roster_id in self._users:
                raise ValueError(f"duplicate roster_id {person.roster_id!r}")
            self._users[person.roster_id] = UserRecord(person, "student", person.last_modified)
        self._max_user_id = max(self._users, default=self._max_user_id)
        visible = sorted(uid for uid, rec in self._users.items() if rec.visible)
        self._visible[""] = visible
        self._visible["student"] = list(visible)

    def _students_schools(self) -> dict[str, str]:
        ids = sorted({r.person.school_id for r in self._users.values() if r.person.school_id})
        return {sid: f"School {sid}" for sid in ids}

    # -----------------------------------------------------------------------------------------
    # Test helpers (start, stop, count and reset_calls live on HttpSimulator)
    # -----------------------------------------------------------------------------------------

    def people(self, role: str = "student") -> list[RosterPerson]:
        """Copies of every stored user with ``role`` (inactive ones too), ascending id."""
        return copy_people(rec.person for _, rec in sorted(self._users.items()) if rec.role == role)

    def create(self, person: RosterPerson, *, role: str = "student") -> str:
        """Add ``person`` as a new user (``role`` e.g. ``"teacher"``); return its new id.

        Clever assigns the id (``person.roster_id`` is ignored) and stamps ``created`` and
        ``last_modified`` now. Emits ``users.created`` unless the person is inactive.
        """
        if role not in USER_ROLES:
            raise ValueError(f"role must be one of {USER_ROLES}")
        (stored,) = copy_people([person])
        stored.roster_id = self._new_user_id()
        stored.last_modified = self._now()
        rec = UserRecord(stored, role, stored.last_modified)
        self._users[stored.roster_id] = rec
        if rec.visible:
            self._show(rec)
            self._emit("users.created", rec)
        return stored.roster_id

    def update(self, roster_id: str, **changes: Any) -> None:
        """Change ``RosterPerson`` fields of a user; bumps ``last_modified`` unless given.

        Emits ``users.updated`` with ``previous_attributes``; setting ``active`` False
        unshares the user (``users.deleted``) and True shares it again (``users.created``).
        ``sis_id`` cannot change this way: use ``change_sis_id`` (a new Clever user).
        """
        rec = self._record(roster_id)
        bad = set(changes) - PERSON_FIELDS
        if bad:
            raise ValueError(f"unknown RosterPerson fields {sorted(bad)}")
        if "roster_id" in changes or "sis_id" in changes:
            raise ValueError("roster_id/sis_id cannot be updated; use change_sis_id()")
        was_visible = rec.visible
        old = render_user(rec, self.district_id, self.api_version)
        for name, value in changes.items():
            setattr(rec.person, name, value)
        if "last_modified" not in changes:
            rec.person.last_modified = self._now()
        rec.invalidate()
        if was_visible and not rec.visible:
            self._hide(rec)
            self._emit("users.deleted", rec, rendered=old)
        elif rec.visible and not was_visible:
            self._show(rec)
            self._emit("users.created", rec)
        elif rec.visible:
            new = render_user(rec, self.district_id, self.api_version)
            self._emit("users.updated", rec, previous=previous_attributes(old, new))

    def delete(self, roster_id: str) -> None:
        """Remove a user; emits ``users.deleted`` carrying the full last object."""
        rec = self._record(roster_id)
        if rec.visible:
            old = render_user(rec, self.district_id, self.api_version)
            self._hide(rec)
            self._emit("users.deleted", rec, rendered=old)
        del self._users[roster_id]

    def change_sis_id(self, roster_id: str, new_sis_id: str) -> str:
        """What Clever does when a student's SIS id changes; return the new user id.

        The old user is deleted (``users.deleted``) and a **new** user id is provisioned
        carrying ``new_sis_id`` (``users.created``).
        """
        (person,) = copy_people([self._record(roster_id).person])
        role = self._users[roster_id].role
        self.delete(roster_id)
        person.sis_id = new_sis_id
        return self.create(person, role=role)

    def age_events(self, days: float) -> None:
        """Shift every existing event ``days`` into the past (ids unchanged).

        Events older than ``event_retention`` are then dropped, so a cursor naming them
        answers 404.
        """
        delta = datetime.timedelta(days=days)
        for ev in self._events:
            ev.created -= delta
        self._purge_events()

    def events(self) -> list[dict[str, Any]]:
        """The retained events as the API renders them (oldest first; none while Events are
        off)."""
        self._purge_events()
        if not self.events_enabled:
            return []
        return [self._event_json(ev) for ev in self._events]

    def rotate_token(self, new_token: str | None = None) -> str:
        """Replace the district token (the old one answers 401); return the new one."""
        self.district_token = new_token or secrets.token_hex(20)
        self.connected = True
        self._buckets.clear()
        return self.district_token

    def disconnect(self) -> None:
        """The district disconnects the app: no token listed, the old one answers 401."""
        self.connected = False

    # -----------------------------------------------------------------------------------------
    # State internals
    # -----------------------------------------------------------------------------------------

    def _now(self) -> datetime.datetime:
        moment = datetime.datetime.fromtimestamp(self._clock(), datetime.UTC)
        return moment.replace(microsecond=moment.microsecond // 1000 * 1000)

    def _next_id(self, floor: str) -> str:
        candidate = clever_object_id(int(self._clock()), self._machine, self._counter)
        self._counter += 1
        if candidate <= floor:
            candidate = f"{int(floor, 16) + 1:024x}"
        return candidate

    def _new_user_id(self) -> str:
        self._max_user_id = self._next_id(self._max_user_id)
        return self._max_user_id

    def _record(self, roster_id: str) -> UserRecord:
        rec = self._users.get(roster_id)
        if rec is None:
            raise KeyError(f"no Clever user {roster_id!r}")
        return rec

    def _show(self, rec: UserRecord) -> None:
        for key in ("", rec.role):
            bisect.insort(self._visible[key], rec.person.roster_id)

    def _hide(self, rec: UserRecord) -> None:
        uid = rec.person.roster_id
        for key in ("", rec.role):
            ids = self._visible[key]
            i = bisect.bisect_left(ids, uid)
            if i < len(ids) and ids[i] == uid:
                del ids[i]

    def _emit(
        self,
        type_: str,
        rec: UserRecord,
        *,
        rendered: JSON | None = None,
        previous: JSON | None = None,
    ) -> None:
        if not self.events_enabled:
            return
        self._purge_events()
        self._max_event_id = self._next_id(self._max_event_id)
        obj = (
            rendered
            if rendered is not None
            else render_user(rec, self.district_id, self.api_version)
        )
        self._events.append(_Event(self._max_event_id, self._now(), type_, obj, previous))
        self._event_ids.append(self._max_event_id)

    def _purge_events(self) -> None:
        cutoff = self._now() - self.event_retention
        n = 0
        while n < len(self._events) and self._events[n].created < cutoff:
            n += 1
        if n:
            del self._events[:n]
            del self._event_ids[:n]

    def _event_json(self, ev: _Event) -> JSON:
        data: JSON = {"object": ev.object}
        out: JSON = {"id": ev.id, "created": iso(ev.created), "type": ev.type, "data": data}
        if ev.previous is not None:
            if self.previous_attributes_in_data:
                data["previous_attributes"] = ev.previous
            else:
                out["previous_attributes"] = ev.previous
        return out

    # -----------------------------------------------------------------------------------------
    # Rate limiting
    # -----------------------------------------------------------------------------------------

    def _rate_headers(self, remaining: int, window: int) -> dict[str, str]:
        reset = math.ceil((window + 1) * self.rate_window)
        return {
            "X-Ratelimit-Bucket": "bearer",
            "X-Ratelimit-Limit": str(self.rate_limit),
            "X-Ratelimit-Remaining": str(max(0, remaining)),
            "X-Ratelimit-Reset": str(reset),
        }

    def _take(self, token: str) -> tuple[bool, dict[str, str]]:
        """Count one request against ``token``'s fixed window; (allowed, headers)."""
        window = math.floor(self._clock() / self.rate_window)
        start, used = self._buckets.get(token, (window, 0))
        if start != window:
            used = 0
        if used >= self.rate_limit:
            self._buckets[token] = (window, used)
            return False, self._rate_headers(0, window)
        used += 1
        self._buckets[token] = (window, used)
        return True, self._rate_headers(self.rate_limit - used, window)

    # -----------------------------------------------------------------------------------------
    # App and middlewares
    # -----------------------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._outer_mw, self._faults_mw, self._auth_mw])
        r = app.router
        version = r"{version:v3\.[01]}"
        r.add_get("/oauth/tokens", self._tokens)
        r.add_get(f"/{version}/users", self._list_users)
        r.add_get(f"/{version}/users/{{id}}", self._get_user)
        r.add_get(f"/{version}/events", self._list_events)
        r.add_get(f"/{version}/schools", self._list_schools)
        r.add_get(f"/{version}/events/{{id}}", self._get_event)
        r.add_get("/_sim/calls", self._sim_calls)
        r.add_post("/_sim/reset-calls", self._sim_reset_calls)
        r.add_get("/_sim/faults", self._sim_get_faults)
        r.add_post("/_sim/faults", self._sim_set_faults)
        r.add_get("/_sim/people", self._sim_people)
        r.add_post("/_sim/people", self._sim_create)
        r.add_post("/_sim/people/{id}", self._sim_update)
        r.add_delete("/_sim/people/{id}", self._sim_delete)
        r.add_post("/_sim/people/{id}/sis-id", self._sim_change_sis_id)
        r.add_post("/_sim/age-events", self._sim_age_events)
        return app

    @web.middleware
    async def _outer_mw(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Turn errors into JSON responses and record the call."""
        response: web.StreamResponse
        try:
            response = await handler(request)
        except _ApiError as exc:
            response = exc.response()
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = _http_error(exc)
        if not request.path.startswith("/_sim"):
            self.calls.append(
                Call(request.method, request.path, dict(request.query), response.status)
            )
        return response

    @web.middleware
    async def _faults_mw(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Latency and outage for ``/oauth`` and ``/v3.x``; queued failures for ``/v3.x``."""
        api = _API_PATH.match(request.path) is not None
        if not (api or request.path.startswith("/oauth/")):
            return await handler(request)
        if self.faults.latency > 0:
            await asyncio.sleep(self.faults.latency)
        if self.faults.outage:
            return web.Response(status=503, text=_html_page(503), content_type="text/html")
        if api and self.faults.queue:
            status, html_body = self.faults.queue.pop(0)
            headers: dict[str, str] = {}
            if status == 429:
                window = math.floor(self._clock() / self.rate_window)
                headers = self._rate_headers(0, window)
            if html_body:
                return web.Response(
                    status=status,
                    text=_html_page(status),
                    content_type="text/html",
                    headers=headers,
                )
            message = _MESSAGES.get(status, "Simulated failure")
            return web.json_response({"message": message}, status=status, headers=headers)
        return await handler(request)

    @web.middleware
    async def _auth_mw(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Bearer check and per-token rate limit on ``/v3.x``; rate headers on every answer."""
        if _API_PATH.match(request.path) is None:
            return await handler(request)
        token = _bearer(request)
        if token is None or not self.connected or token != self.district_token:
            raise _ApiError(401, {"message": "Unauthorized: invalid or missing bearer token"})
        allowed, headers = self._take(token)
        if not allowed:
            raise _ApiError(429, {"message": "Too Many Requests"}, headers)
        response: web.StreamResponse
        try:
            response = await handler(request)
        except _ApiError as exc:
            response = exc.response()
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = _http_error(exc)
        response.headers.update(headers)
        return response

    # -----------------------------------------------------------------------------------------
    # /oauth/tokens
    # -----------------------------------------------------------------------------------------

    def _client_authenticated(self, request: web.Request) -> bool:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        client_id, sep, secret = decoded.partition(":")
        return bool(sep) and client_id == self.client_id and secret == self.client_secret

    async def _tokens(self, request: web.Request) -> web.Response:
        if not self._client_authenticated(request):
            raise _ApiError(
                401,
                {
                    "error": "invalid_client",
                    "error_description": "Client authentication failed: bad client_id or "
                    "client_secret",
                },
            )
        if request.query.get("owner_type") != "district":
            raise _ApiError(
                400,
                {"error": "invalid_request", "error_description": "owner_type must be district"},
            )
        owners = dict(self._other_tokens)
        if self.connected:
            owners[self._token_id] = self.district_id
        wanted = request.query.get("district", "")
        if wanted and self.token_district_filter:
            owners = {tid: owner for tid, owner in owners.items() if owner == wanted}
        limit = self._limit(request) if request.query.get("limit") else self.token_page_size
        page, before = self._page(
            sorted(owners),
            request.query.get("starting_after", ""),
            request.query.get("ending_before", ""),
            limit,
        )
        data = [self._token_json(tid, owners[tid]) for tid in page]
        links = self._links(request, "/oauth/tokens", page, limit, before)
        return web.json_response({"data": data, "links": links})

    def _token_json(self, token_id: str, owner: str) -> JSON:
        ours = token_id == self._token_id
        return {
            "id": token_id,
            "created": iso(self._token_created),
            "owner": {"type": "district", "id": owner},
            # Other districts' tokens are stable per token but open nothing here.
            "access_token": self.district_token if ours else f"{token_id}{'0' * 16}",
            "scopes": list(_SCOPES),
        }

    # -----------------------------------------------------------------------------------------
    # Paging helpers
    # -----------------------------------------------------------------------------------------

    def _limit(self, request: web.Request) -> int:
        raw = request.query.get("limit", "")
        if raw == "":
            return self.default_limit
        try:
            limit = int(raw)
        except ValueError:
            raise _ApiError(400, {"message": f"invalid limit: {raw!r}"}) from None
        if limit > self.max_limit:
            raise _ApiError(413, {"message": "Request entity too large"})
        if limit < 1:
            raise _ApiError(400, {"message": "limit must be a positive integer"})
        return limit

    @staticmethod
    def _page(
        ids: Sequence[str], starting_after: str, ending_before: str, limit: int
    ) -> tuple[Sequence[str], bool]:
        """One page of ascending ``ids`` and whether anything comes before it."""
        if starting_after and ending_before:
            raise _ApiError(400, {"message": "use only one of starting_after and ending_before"})
        if starting_after:
            i = bisect.bisect_right(ids, starting_after)
            return ids[i : i + limit], i > 0
        if ending_before:
            j = len(ids) if ending_before == "last" else bisect.bisect_left(ids, ending_before)
            start = max(0, j - limit)
            return ids[start:j], start > 0
        return ids[:limit], False

    def _links(
        self,
        request: web.Request,
        path: str,
        page: Sequence[str],
        limit: int,
        has_before: bool,
    ) -> list[JSON]:
        raw = request.rel_url.raw_query_string
        links: list[JSON] = [{"rel": "self", "uri": f"{path}?{raw}" if raw else path}]
        keep = [
            (k, v) for k, v in request.query.items() if k not in ("starting_after", "ending_before")
        ]
        if page and (has_before or self.spurious_links):
            query = urlencode([*keep, ("ending_before", page[0])])
            links.append({"rel": "prev", "uri": f"{path}?{query}"})
        if page and (len(page) >= limit or self.spurious_links):
            after = ("starting_after", page[-1])
            query = urlencode([*keep, after] if self.next_link_keeps_params else [after])
            links.append({"rel": "next", "uri": f"{path}?{query}"})
        return links

    def _item(self, obj: JSON, uri: str) -> JSON:
        return {"data": obj, "uri": uri} if self.item_uri else {"data": obj}

    # -----------------------------------------------------------------------------------------
    # Users and events
    # -----------------------------------------------------------------------------------------

    async def _list_users(self, request: web.Request) -> web.Response:
        version = request.match_info["version"]
        role = request.query.get("role", "")
        if role and role not in USER_ROLES:
            raise _ApiError(400, {"message": f"invalid role: {role!r}"})
        limit = self._limit(request)
        page, before = self._page(
            self._visible[role],
            request.query.get("starting_after", ""),
            request.query.get("ending_before", ""),
            limit,
        )
        district, users = self.district_id, self._users
        if self.item_uri:
            items = [
                f'{{"data":{users[uid].text(district, version)},"uri":"/{version}/users/{uid}"}}'
                for uid in page
            ]
        else:
            items = [f'{{"data":{users[uid].text(district, version)}}}' for uid in page]
        links = self._links(request, f"/{version}/users", page, limit, before)
        return _json_text(f'{{"data":[{",".join(items)}],"links":{json.dumps(links)}}}')

    async def _list_schools(self, request: web.Request) -> web.Response:
        version = request.match_info["version"]
        limit = self._limit(request)
        page, before = self._page(
            sorted(self.schools),
            request.query.get("starting_after", ""),
            request.query.get("ending_before", ""),
            limit,
        )
        items = [
            self._item(
                {"id": sid, "name": self.schools[sid], "district": self.district_id},
                f"/{version}/schools/{sid}",
            )
            for sid in page
        ]
        links = self._links(request, f"/{version}/schools", page, limit, before)
        return web.json_response({"data": items, "links": links})

    async def _get_user(self, request: web.Request) -> web.Response:
        version, uid = request.match_info["version"], request.match_info["id"]
        rec = self._users.get(uid)
        if rec is None or not rec.visible:
            raise _ApiError(404, _NOT_FOUND)
        links = json.dumps([{"rel": "self", "uri": f"/{version}/users/{uid}"}])
        return _json_text(f'{{"data":{rec.text(self.district_id, version)},"links":{links}}}')

    async def _list_events(self, request: web.Request) -> web.Response:
        version = request.match_info["version"]
        self._purge_events()
        limit = self._limit(request)
        if not self.events_enabled:
            return web.json_response(
                {"data": [], "links": self._links(request, f"/{version}/events", [], limit, False)}
            )
        after = request.query.get("starting_after", "")
        before = request.query.get("ending_before", "")
        retained = set(self._event_ids)
        for cursor in (after, "" if before == "last" else before):
            if cursor and cursor not in retained:
                raise _ApiError(
                    404,
                    {
                        "message": f"Event {cursor} not found: it is unknown or older than "
                        "the retention window"
                    },
                )
        record_types = [t for t in request.query.getall("record_type", []) if t]
        school = request.query.get("school", "")
        events = [
            ev
            for ev in self._events
            if (not record_types or ev.type.split(".", 1)[0] in record_types)
            and (not school or _object_school(ev.object, school))
        ]
        by_id = {ev.id: ev for ev in events}
        page, has_before = self._page([ev.id for ev in events], after, before, limit)
        data = [
            self._item(self._event_json(by_id[eid]), f"/{version}/events/{eid}") for eid in page
        ]
        links = self._links(request, f"/{version}/events", page, limit, has_before)
        return web.json_response({"data": data, "links": links})

    async def _get_event(self, request: web.Request) -> web.Response:
        version, eid = request.match_info["version"], request.match_info["id"]
        self._purge_events()
        i = bisect.bisect_left(self._event_ids, eid)
        if not self.events_enabled or i >= len(self._event_ids) or self._event_ids[i] != eid:
            raise _ApiError(404, _NOT_FOUND)
        return web.json_response(
            {
                "data": self._event_json(self._events[i]),
                "links": [{"rel": "self", "uri": f"/{version}/events/{eid}"}],
            }
        )

    # -----------------------------------------------------------------------------------------
    # /_sim control endpoints
    # -----------------------------------------------------------------------------------------

    async def _sim_calls(self, request: web.Request) -> web.Response:
        return web.json_response([c.to_json() for c in self.calls])

    async def _sim_reset_calls(self, request: web.Request) -> web.Response:
        self.reset_calls()
        return web.json_response({"ok": True})

    def _faults_json(self) -> dict[str, Any]:
        return {
            "latency": self.faults.latency,
            "outage": self.faults.outage,
            "queue": [list(item) for item in self.faults.queue],
        }

    async def _sim_get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self._faults_json())

    async def _sim_set_faults(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        try:
            if "latency" in body:
                self.faults.latency = float(body["latency"])
            if "outage" in body:
                self.faults.outage = bool(body["outage"])
            if "queue" in body:
                self.faults.queue = [_queue_item(item) for item in body["queue"]]
        except (TypeError, ValueError) as exc:
            raise _ApiError(400, {"message": str(exc)}) from exc
        unknown = set(body) - {"latency", "outage", "queue"}
        if unknown:
            raise _ApiError(400, {"message": f"unknown faults {sorted(unknown)}"})
        return web.json_response(self._faults_json())

    async def _sim_people(self, request: web.Request) -> web.Response:
        role = request.query.get("role", "student")
        return web.json_response([person_to_json(p) for p in self.people(role)])

    async def _sim_create(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        role = str(body.pop("role", "student"))
        try:
            person = person_from_json({"roster_id": "", **body})
            uid = self.create(person, role=role)
        except (TypeError, ValueError) as exc:
            raise _ApiError(400, {"message": str(exc)}) from exc
        return web.json_response({"id": uid})

    async def _sim_update(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        try:
            changes = person_changes(body)
            self.update(request.match_info["id"], **changes)
        except KeyError as exc:
            raise _ApiError(404, {"message": str(exc.args[0])}) from exc
        except (TypeError, ValueError) as exc:
            raise _ApiError(400, {"message": str(exc)}) from exc
        return web.json_response({"ok": True})

    async def _sim_delete(self, request: web.Request) -> web.Response:
        try:
            self.delete(request.match_info["id"])
        except KeyError as exc:
            raise _ApiError(404, {"message": str(exc.args[0])}) from exc
        return web.json_response({"ok": True})

    async def _sim_change_sis_id(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        if not isinstance(body.get("sis_id"), str | int):
            raise _ApiError(400, {"message": 'body must be {"sis_id": "<new sis id>"}'})
        try:
            uid = self.change_sis_id(request.match_info["id"], str(body["sis_id"]))
        except KeyError as exc:
            raise _ApiError(404, {"message": str(exc.args[0])}) from exc
        return web.json_response({"id": uid})

    async def _sim_age_events(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        try:
            self.age_events(float(body["days"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise _ApiError(400, {"message": 'body must be {"days": <number>}'}) from exc
        return web.json_response({"ok": True})


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _json_text(text: str) -> web.Response:
    return web.Response(text=text, content_type="application/json")


def _object_school(obj: JSON, school: str) -> bool:
    for role in obj.get("roles", {}).values():
        if isinstance(role, dict) and (
            role.get("school") == school or school in role.get("schools", [])
        ):
            return True
    return False


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read() or b"{}")
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise _ApiError(400, {"message": "body must be a JSON object"})
    return body


def _queue_item(item: Any) -> tuple[int, bool]:
    if isinstance(item, int) and not isinstance(item, bool):
        return item, False
    if isinstance(item, dict):
        return int(item["status"]), bool(item.get("html_body", False))
    if isinstance(item, list | tuple) and len(item) in (1, 2):
        return int(item[0]), bool(item[1]) if len(item) == 2 else False
    raise ValueError(f"bad queue item {item!r}: use [status, html_body]")
