"""The simulated ClassLink Roster Server: aiohttp app, OAuth 1.0a checks, paging and faults.

Wire formats follow ``/work/shared/reference/roster-apis.md`` sections 5-7 (direct OAuth1
mode). Behaviour the fact file marks as unverified is configurable on ``ClassLinkSimulator``:
``enabled_user_as_string``, ``link_header``, ``allow_sha1`` and ``default_limit``.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from oauthlib.common import Request as OAuthRequest
from oauthlib.oauth1.rfc5849 import signature, utils

from simulators._server import HttpSimulator
from simulators.roster import (
    PERSON_FIELDS,
    RosterPerson,
    copy_people,
    person_changes,
    person_from_json,
    person_to_json,
)

from ._oneroster import (
    FILTER_FIELDS,
    USER_FIELDS,
    ImsxError,
    UserRecord,
    imsx,
    parse_filter,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

API_PREFIX = "/ims/oneroster/v1p1"
"""Path of the OneRoster 1.1 API under the district's endpoint URL."""

_MESSAGES = {
    429: ("Too many requests: slow down", "server_busy"),
    500: ("Internal server error", "internal_server_error"),
    502: ("Bad gateway", "internal_server_error"),
    503: ("Service unavailable", "server_busy"),
    504: ("Gateway timeout", "internal_server_error"),
}
_OUTAGE_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>503 Service Unavailable</title></head><body>"
    "<h1>Service Unavailable</h1><p>The roster server is down for maintenance.</p>"
    "</body></html>\n"
)
_WWW_AUTHENTICATE = 'OAuth realm="OneRoster"'


@dataclass
class Faults:
    """Failure modes; change the fields at any time (also via ``POST /_sim/faults``)."""

    latency: float = 0.0
    """Seconds added to every API request."""
    outage: bool = False
    """Every API request answers 503 with an HTML page."""
    queue: list[tuple[int, float | None]] = field(default_factory=list)
    """Served FIFO to the next API requests (before the signature check): (status,
    Retry-After seconds or None), with an imsx body (``server_busy`` for 429)."""


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


def _format_retry_after(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def _imsx_response(exc: ImsxError) -> web.Response:
    return web.json_response(
        imsx(exc.description, exc.code_minor), status=exc.status, headers=exc.headers
    )


class _Unauthorized(Exception):
    pass


class ClassLinkSimulator(HttpSimulator[Call]):
    """One district's ClassLink Roster Server (OneRoster 1.1, direct OAuth1 mode), in-process.

    ``base_url`` is the district's ``endpoint_url``; the API lives under
    ``{base_url}/ims/oneroster/v1p1``: ``/students``, ``/teachers``, ``/users``,
    ``/schools/{id}/students`` and the single-user ``/students/{id}``, ``/users/{id}``.
    Every API request must carry a two-legged OAuth 1.0a ``Authorization`` header signed
    with HMAC-SHA256 (HMAC-SHA1 too when ``allow_sha1``); ``oauth_version`` is optional.
    Every piece of state lives on the instance. ``clock`` (Unix seconds) drives timestamp
    checks and ``dateLastModified``; tests may pass a fake one.
    """

    faults: Faults
    """Current failure modes."""
    rejected_signatures: int
    """How many requests got 401 (missing header, wrong key, bad signature, stale
    timestamp, replayed nonce, unsupported signature method)."""

    def __init__(
        self,
        students: Iterable[RosterPerson] = (),
        *,
        client_id: str = "classlink-client",
        client_secret: str = "classlink-secret",  # noqa: S107 - a fake district's fake secret
        enabled_user_as_string: bool = True,
        max_limit: int = 10000,
        default_limit: int = 100,
        timestamp_skew: float = 300.0,
        allow_sha1: bool = False,
        link_header: bool = True,
        schools: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Build the district from ``students`` (copied; ``sourcedId`` = ``roster_id``, or
        ``sis_id`` when ``roster_id`` is empty). ``schools`` (org sourcedId -> name) are the
        school orgs ``/schools`` lists; default: every ``school_id`` of ``students``."""
        super().__init__()
        self.client_id = client_id
        self.client_secret = client_secret
        self.enabled_user_as_string = enabled_user_as_string
        self.max_limit = max_limit
        self.default_limit = default_limit
        self.timestamp_skew = timestamp_skew
        self.allow_sha1 = allow_sha1
        self.link_header = link_header
        self.faults = Faults()
        self.rejected_signatures = 0
        self._clock = clock
        self._records: dict[str, UserRecord] = {}
        self._version = 0
        self._sorted: dict[tuple[str, bool], tuple[int, list[UserRecord]]] = {}
        self._nonces: dict[str, OrderedDict[str, float]] = {}
        self._role_cache: tuple[int, set[str]] = (-1, set())
        self._last_ms = 0
        for person in copy_people(students):
            self._add(person, "student")
        self.schools: dict[str, str] = (
            dict(schools)
            if schools is not None
            else {
                sid: f"School {sid}"
                for sid in sorted({r.person.school_id for r in self._records.values()})
                if sid
            }
        )
        """The school orgs (``/schools``): sourcedId -> name; change it at any time."""
        self.app = self._build_app()

    # -----------------------------------------------------------------------------------------
    # Test helpers (start, stop, count and reset_calls live on HttpSimulator)
    # -----------------------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        """``{base_url}/ims/oneroster/v1p1``."""
        return self.base_url + API_PREFIX

    def people(self, role: str = "student") -> list[RosterPerson]:
        """Copies of every stored user with ``role`` (``tobedeleted`` ones too)."""
        return copy_people(r.person for r in self._records.values() if r.role == role)

    def create(self, person: RosterPerson, *, role: str = "student") -> None:
        """Add a user (``role`` e.g. ``"teacher"``); ``dateLastModified`` becomes now."""
        (stored,) = copy_people([person])
        stored.last_modified = self._stamp()
        self._add(stored, role)

    def update(self, sourced_id: str, **changes: Any) -> None:
        """Change ``RosterPerson`` fields; bumps ``dateLastModified`` to now unless given.

        ``roster_id``/``sis_id`` (the ``sourcedId``) cannot change: hard-delete and create.
        """
        rec = self._record(sourced_id)
        bad = set(changes) - PERSON_FIELDS
        if bad:
            raise ValueError(f"unknown RosterPerson fields {sorted(bad)}")
        if "roster_id" in changes or "sis_id" in changes:
            raise ValueError("the sourcedId cannot change; use hard_delete() and create()")
        for name, value in changes.items():
            setattr(rec.person, name, value)
        if "last_modified" not in changes:
            rec.person.last_modified = self._stamp()
        rec.invalidate()
        self._version += 1

    def soft_delete(self, sourced_id: str) -> None:
        """Mark a user ``status: "tobedeleted"`` (``enabledUser`` false), bumping the date."""
        self.update(sourced_id, active=False)

    def hard_delete(self, sourced_id: str) -> None:
        """Remove a user entirely (only a full reconcile can notice)."""
        self._record(sourced_id)
        del self._records[sourced_id]
        self._version += 1

    # -----------------------------------------------------------------------------------------
    # State internals
    # -----------------------------------------------------------------------------------------

    def _add(self, person: RosterPerson, role: str) -> None:
        if not person.roster_id:
            person.roster_id = person.sis_id
        if not person.roster_id:
            raise ValueError("a OneRoster user needs a sourcedId (roster_id or sis_id)")
        if person.roster_id in self._records:
            raise ValueError(f"duplicate sourcedId {person.roster_id!r}")
        self._records[person.roster_id] = UserRecord(person, role)
        self._last_ms = max(self._last_ms, int(person.last_modified.timestamp() * 1000))
        self._version += 1

    def _record(self, sourced_id: str) -> UserRecord:
        rec = self._records.get(sourced_id)
        if rec is None:
            raise KeyError(f"no OneRoster user {sourced_id!r}")
        return rec

    def _stamp(self) -> datetime.datetime:
        """Now (ms precision), strictly after the previous stamp so deltas never tie."""
        ms = max(int(self._clock() * 1000), self._last_ms + 1)
        self._last_ms = ms
        return datetime.datetime.fromtimestamp(ms // 1000, datetime.UTC).replace(
            microsecond=ms % 1000 * 1000
        )

    def _roles(self) -> set[str]:
        """The distinct roles present (cached per state version)."""
        if self._role_cache[0] != self._version:
            self._role_cache = (self._version, {r.role for r in self._records.values()})
        return self._role_cache[1]

    def _ordered(self, sort: str, desc: bool) -> list[UserRecord]:
        """All users in ``sort`` order (insertion order when ``sort`` is empty), cached."""
        if not sort:
            records = list(self._records.values())
            return records[::-1] if desc else records
        key = (sort, desc)
        cached = self._sorted.get(key)
        if cached is not None and cached[0] == self._version:
            return cached[1]
        records = sorted(self._records.values(), key=lambda r: r.value(sort), reverse=desc)
        self._sorted[key] = (self._version, records)
        return records

    # -----------------------------------------------------------------------------------------
    # OAuth 1.0a verification
    # -----------------------------------------------------------------------------------------

    def _check_oauth(self, request: web.Request) -> None:
        """Raise ``_Unauthorized`` unless the request is validly signed by our consumer."""
        header = request.headers.get("Authorization", "")
        if header[:6].lower() != "oauth ":
            raise _Unauthorized("Missing OAuth Authorization header")
        try:
            pairs = utils.parse_authorization_header(header)
        except ValueError:
            raise _Unauthorized("Malformed OAuth Authorization header") from None
        oauth = {k: utils.unescape(v) for k, v in pairs}
        if oauth.get("oauth_consumer_key") != self.client_id:
            raise _Unauthorized("Unknown oauth_consumer_key")
        method = oauth.get("oauth_signature_method", "")
        allowed = ("HMAC-SHA256", "HMAC-SHA1") if self.allow_sha1 else ("HMAC-SHA256",)
        if method not in allowed:
            raise _Unauthorized(f"Unsupported oauth_signature_method {method!r}")
        if oauth.get("oauth_version", "1.0") != "1.0":
            raise _Unauthorized("Unsupported oauth_version")
        nonce = oauth.get("oauth_nonce", "")
        if not nonce or not oauth.get("oauth_signature"):
            raise _Unauthorized("Missing oauth_nonce or oauth_signature")
        try:
            stamp = float(int(oauth.get("oauth_timestamp", "")))
        except ValueError:
            raise _Unauthorized("Missing or invalid oauth_timestamp") from None
        now = self._clock()
        if abs(now - stamp) > self.timestamp_skew:
            raise _Unauthorized("oauth_timestamp outside the allowed window")
        if not self._signature_valid(request, header, oauth):
            raise _Unauthorized("Invalid oauth_signature")
        seen = self._nonces.setdefault(self.client_id, OrderedDict())
        while seen and next(iter(seen.values())) < now - self.timestamp_skew:
            seen.popitem(last=False)
        if nonce in seen:
            raise _Unauthorized("oauth_nonce already used")
        seen[nonce] = stamp

    def _signature_valid(self, request: web.Request, header: str, oauth: dict[str, str]) -> bool:
        """RFC 5849 check with oauthlib: query + header parameters, signature excluded."""
        raw_query = request.rel_url.raw_query_string
        try:
            params = signature.collect_parameters(
                uri_query=raw_query, headers={"Authorization": header}
            )
        except ValueError:  # characters oauthlib refuses in a query; decode like a browser
            params = parse_qsl(raw_query, keep_blank_values=True) + [
                (k, v) for k, v in oauth.items() if k not in ("oauth_signature", "realm")
            ]
        oreq = OAuthRequest(f"{request.scheme}://{request.host}{request.rel_url.raw_path}")
        vars(oreq).update(params=params, signature=oauth["oauth_signature"])
        if oauth["oauth_signature_method"] == "HMAC-SHA256":
            return signature.verify_hmac_sha256(oreq, client_secret=self.client_secret)
        return signature.verify_hmac_sha1(oreq, client_secret=self.client_secret)

    # -----------------------------------------------------------------------------------------
    # App and middlewares
    # -----------------------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._outer_mw, self._faults_mw, self._auth_mw])
        r = app.router
        p = API_PREFIX
        r.add_get(f"{p}/students", self._list_students)
        r.add_get(f"{p}/teachers", self._list_teachers)
        r.add_get(f"{p}/users", self._list_users)
        r.add_get(f"{p}/schools", self._list_schools)
        r.add_get(f"{p}/schools/{{school}}/students", self._list_school_students)
        r.add_get(f"{p}/students/{{id}}", self._get_student)
        r.add_get(f"{p}/teachers/{{id}}", self._get_teacher)
        r.add_get(f"{p}/users/{{id}}", self._get_user)
        r.add_get("/_sim/calls", self._sim_calls)
        r.add_post("/_sim/reset-calls", self._sim_reset_calls)
        r.add_get("/_sim/faults", self._sim_get_faults)
        r.add_post("/_sim/faults", self._sim_set_faults)
        r.add_get("/_sim/people", self._sim_people)
        r.add_post("/_sim/people", self._sim_create)
        r.add_post("/_sim/people/{id}", self._sim_update)
        r.add_post("/_sim/people/{id}/soft-delete", self._sim_soft_delete)
        r.add_delete("/_sim/people/{id}", self._sim_hard_delete)
        return app

    @web.middleware
    async def _outer_mw(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Turn errors into imsx (API) or JSON (control) responses and record the call."""
        response: web.StreamResponse
        try:
            response = await handler(request)
        except ImsxError as exc:
            response = _imsx_response(exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = "unknownobject" if exc.status == 404 else "invaliddata"
            response = web.json_response(imsx(exc.reason, code), status=exc.status)
        if not request.path.startswith("/_sim"):
            self.calls.append(
                Call(request.method, request.path, dict(request.query), response.status)
            )
        return response

    @web.middleware
    async def _faults_mw(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Latency, outage and queued failures for API requests."""
        if request.path.startswith("/_sim"):
            return await handler(request)
        if self.faults.latency > 0:
            await asyncio.sleep(self.faults.latency)
        if self.faults.outage:
            return web.Response(status=503, text=_OUTAGE_PAGE, content_type="text/html")
        if self.faults.queue:
            status, retry_after = self.faults.queue.pop(0)
            headers = {}
            if retry_after is not None:
                headers["Retry-After"] = _format_retry_after(retry_after)
            description, code = _MESSAGES.get(
                status, ("Simulated failure", "internal_server_error")
            )
            raise ImsxError(status, description, code, headers)
        return await handler(request)

    @web.middleware
    async def _auth_mw(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """OAuth 1.0a signature check on every API request."""
        if request.path.startswith("/_sim"):
            return await handler(request)
        try:
            self._check_oauth(request)
        except _Unauthorized as exc:
            self.rejected_signatures += 1
            raise ImsxError(
                401, str(exc), "unauthorisedrequest", {"WWW-Authenticate": _WWW_AUTHENTICATE}
            ) from None
        return await handler(request)

    # -----------------------------------------------------------------------------------------
    # Collections
    # -----------------------------------------------------------------------------------------

    @staticmethod
    def _int_param(request: web.Request, name: str, default: int) -> int:
        raw = request.query.get(name, "")
        if raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            value = -1
        if value < 0:
            raise ImsxError(400, f"Invalid {name}: {raw!r}", "invaliddata")
        return value

    def _selection(self, request: web.Request) -> list[str] | None:
        raw = request.query.get("fields", "")
        if not raw:
            return None
        names = [n.strip() for n in raw.split(",") if n.strip()]
        for name in names:
            if name not in USER_FIELDS:
                raise ImsxError(400, f"Invalid selection field: {name}", "invalid_selection_field")
        return names

    def _render(self, rec: UserRecord, selection: Sequence[str] | None) -> str:
        """The user as JSON text, restricted to ``selection`` when given."""
        if selection is None:
            return rec.text(self.enabled_user_as_string)
        user = rec.render(self.enabled_user_as_string)
        return json.dumps({k: user[k] for k in selection}, separators=(",", ":"))

    async def _list_schools(self, request: web.Request) -> web.Response:
        limit = self._int_param(request, "limit", self.default_limit)
        if not 1 <= limit <= self.max_limit:
            raise ImsxError(400, f"limit must be 1 to {self.max_limit}", "invaliddata")
        offset = self._int_param(request, "offset", 0)
        ids = sorted(self.schools)
        orgs = [
            {
                "sourcedId": sid,
                "status": "active",
                "dateLastModified": "2024-07-01T00:00:00.000Z",
                "name": self.schools[sid],
                "type": "school",
                "identifier": sid,
            }
            for sid in ids[offset : offset + limit]
        ]
        return web.json_response({"orgs": orgs}, headers={"X-Total-Count": str(len(ids))})

    def _collection(self, request: web.Request, role: str | None, school: str = "") -> web.Response:
        limit = self._int_param(request, "limit", self.default_limit)
        if limit < 1:
            raise ImsxError(400, "limit must be at least 1", "invaliddata")
        if limit > self.max_limit:
            raise ImsxError(400, f"limit may not exceed {self.max_limit}", "invaliddata")
        offset = self._int_param(request, "offset", 0)
        sort = request.query.get("sort", "")
        if sort and sort not in FILTER_FIELDS:
            raise ImsxError(400, f"Invalid sort field: {sort}", "invalid_sort_field")
        desc = request.query.get("orderBy", "").lower() == "desc"  # "dsc" is silently asc
        raw_filter = request.query.get("filter", "")
        predicate = parse_filter(raw_filter) if raw_filter else None
        selection = self._selection(request)
        records = self._ordered(sort, desc)
        if role is not None and all(r == role for r in self._roles()):
            role = None  # everyone has the role: skip a pass over the whole district
        if role is not None or school or predicate is not None:
            records = [
                r
                for r in records
                if (role is None or r.role == role)
                and (not school or r.person.school_id == school)
                and (predicate is None or predicate(r))
            ]
        total = len(records)
        page = records[offset : offset + limit]
        headers = {"X-Total-Count": str(total)}
        if self.link_header:
            headers["Link"] = self._link_header(request, offset, limit, total)
        users = ",".join([self._render(r, selection) for r in page])
        return web.Response(
            text=f'{{"users":[{users}]}}', content_type="application/json", headers=headers
        )

    @staticmethod
    def _link_header(request: web.Request, offset: int, limit: int, total: int) -> str:
        def url(at: int) -> str:
            return str(request.url.update_query(limit=str(limit), offset=str(at)))

        last = max(0, (total - 1) // limit * limit)
        links = []
        if offset + limit < total:
            links.append(f'<{url(offset + limit)}>; rel="next"')
        links.append(f'<{url(last)}>; rel="last"')
        links.append(f'<{url(0)}>; rel="first"')
        if offset > 0:
            links.append(f'<{url(max(0, min(offset, total) - limit))}>; rel="prev"')
        return ", ".join(links)

    async def _list_students(self, request: web.Request) -> web.Response:
        return self._collection(request, "student")

    async def _list_teachers(self, request: web.Request) -> web.Response:
        return self._collection(request, "teacher")

    async def _list_users(self, request: web.Request) -> web.Response:
        return self._collection(request, None)

    async def _list_school_students(self, request: web.Request) -> web.Response:
        return self._collection(request, "student", request.match_info["school"])

    def _single(self, request: web.Request, role: str | None) -> web.Response:
        rec = self._records.get(request.match_info["id"])
        if rec is None or (role is not None and rec.role != role):
            raise ImsxError(404, f"Unknown object: {request.match_info['id']}", "unknownobject")
        user = self._render(rec, self._selection(request))
        return web.Response(text=f'{{"user":{user}}}', content_type="application/json")

    async def _get_student(self, request: web.Request) -> web.Response:
        return self._single(request, "student")

    async def _get_teacher(self, request: web.Request) -> web.Response:
        return self._single(request, "teacher")

    async def _get_user(self, request: web.Request) -> web.Response:
        return self._single(request, None)

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
        unknown = set(body) - {"latency", "outage", "queue"}
        if unknown:
            return _bad_request(f"unknown faults {sorted(unknown)}")
        try:
            if "latency" in body:
                self.faults.latency = float(body["latency"])
            if "outage" in body:
                self.faults.outage = bool(body["outage"])
            if "queue" in body:
                self.faults.queue = [_queue_item(item) for item in body["queue"]]
        except (KeyError, TypeError, ValueError) as exc:
            return _bad_request(str(exc))
        return web.json_response(self._faults_json())

    async def _sim_people(self, request: web.Request) -> web.Response:
        role = request.query.get("role", "student")
        return web.json_response([person_to_json(p) for p in self.people(role)])

    async def _sim_create(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        role = str(body.pop("role", "student"))
        try:
            person = person_from_json(body)
            self.create(person, role=role)
        except (TypeError, ValueError) as exc:
            return _bad_request(str(exc))
        return web.json_response({"sourcedId": person.roster_id or person.sis_id})

    async def _sim_update(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        try:
            self.update(request.match_info["id"], **person_changes(body))
        except KeyError as exc:
            return _bad_request(str(exc.args[0]), 404)
        except (TypeError, ValueError) as exc:
            return _bad_request(str(exc))
        return web.json_response({"ok": True})

    async def _sim_soft_delete(self, request: web.Request) -> web.Response:
        try:
            self.soft_delete(request.match_info["id"])
        except KeyError as exc:
            return _bad_request(str(exc.args[0]), 404)
        return web.json_response({"ok": True})

    async def _sim_hard_delete(self, request: web.Request) -> web.Response:
        try:
            self.hard_delete(request.match_info["id"])
        except KeyError as exc:
            return _bad_request(str(exc.args[0]), 404)
        return web.json_response({"ok": True})


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _bad_request(message: str, status: int = 400) -> web.Response:
    return web.json_response({"message": message}, status=status)


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read() or b"{}")
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(reason="body must be a JSON object")
    return body


def _queue_item(item: Any) -> tuple[int, float | None]:
    if isinstance(item, int) and not isinstance(item, bool):
        return item, None
    status: Any
    retry: Any
    if isinstance(item, Mapping):
        status, retry = item["status"], item.get("retry_after")
    elif isinstance(item, list | tuple) and len(item) in (1, 2):
        status, retry = item[0], (item[1] if len(item) == 2 else None)
    else:
        raise ValueError(f"bad queue item {item!r}: use [status, retry_after_seconds|null]")
    return int(status), None if retry is None else float(retry)
