"""OneRoster 1.1 pieces of the ClassLink simulator: user JSON, the filter grammar, imsx errors."""

from __future__ import annotations

import datetime
import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _q
from typing import Any

from simulators.roster import RosterPerson

JSON = dict[str, Any]
"""A JSON object."""

USER_FIELDS = (
    "sourcedId",
    "status",
    "dateLastModified",
    "metadata",
    "username",
    "userIds",
    "enabledUser",
    "givenName",
    "familyName",
    "middleName",
    "role",
    "identifier",
    "email",
    "sms",
    "phone",
    "agents",
    "orgs",
    "grades",
    "password",
)
"""Every field of a rendered user, in output order (what ``fields=`` may select)."""

FILTER_FIELDS = (
    "sourcedId",
    "status",
    "dateLastModified",
    "username",
    "enabledUser",
    "givenName",
    "familyName",
    "middleName",
    "role",
    "identifier",
    "email",
)
"""Fields accepted in ``filter=`` and ``sort=``."""

_PREDICATE = re.compile(r"\s*([A-Za-z][A-Za-z0-9_.]*)\s*(!=|>=|<=|=|>|<|~)\s*'([^']*)'\s*")
_JOIN = re.compile(r"(AND|OR)(?=[\s'A-Za-z])")


@functools.lru_cache(maxsize=4096)
def iso(moment: datetime.datetime) -> str:
    """``2024-08-20T14:03:22.000Z``: UTC, milliseconds, ``Z``."""
    utc = moment.astimezone(datetime.UTC)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"


def imsx(description: str, code_minor: str) -> JSON:
    """An imsx StatusInfo failure body."""
    return {
        "imsx_codeMajor": "failure",
        "imsx_severity": "error",
        "imsx_description": description,
        "imsx_CodeMinor": {
            "imsx_codeMinorField": [
                {
                    "imsx_codeMinorFieldName": "TargetEndSystem",
                    "imsx_codeMinorFieldValue": code_minor,
                }
            ]
        },
    }


class ImsxError(Exception):
    """Raised by handlers; answered as ``status`` with an imsx body."""

    def __init__(
        self,
        status: int,
        description: str,
        code_minor: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, description)
        self.status = status
        self.description = description
        self.code_minor = code_minor
        self.headers = headers or {}


def _grade(grade: str) -> str:
    return grade.zfill(2) if grade.isdigit() else grade


_DROP = str.maketrans("", "", " -'.,")


@dataclass(slots=True)
class UserRecord:
    """A OneRoster user as the simulator stores it: the person, its role and render caches."""

    person: RosterPerson
    role: str
    as_string: str | None = None
    as_bool: str | None = None

    @property
    def sourced_id(self) -> str:
        """The OneRoster ``sourcedId``."""
        return self.person.roster_id

    def text(self, enabled_as_string: bool) -> str:
        """The OneRoster 1.1 user object as JSON text (cached until ``invalidate()``)."""
        if enabled_as_string:
            if self.as_string is None:
                self.as_string = render_user_text(self, enabled_as_string=True)
            return self.as_string
        if self.as_bool is None:
            self.as_bool = render_user_text(self, enabled_as_string=False)
        return self.as_bool

    def render(self, enabled_as_string: bool) -> JSON:
        """The OneRoster 1.1 user object as a dict."""
        obj: JSON = json.loads(self.text(enabled_as_string))
        return obj

    def invalidate(self) -> None:
        """Forget cached renderings after a change."""
        self.as_string = self.as_bool = None

    def value(self, name: str) -> str | datetime.datetime:
        """The value ``filter``/``sort`` compare for field ``name`` (one of FILTER_FIELDS)."""
        p = self.person
        if name == "sourcedId":
            return p.roster_id
        if name == "dateLastModified":
            return p.last_modified
        if name == "status":
            return "active" if p.active else "tobedeleted"
        if name == "enabledUser":
            return "true" if p.active else "false"
        if name == "givenName":
            return p.first_name
        if name == "familyName":
            return p.last_name
        if name == "identifier":
            return p.student_number
        if name == "role":
            return self.role
        if name == "username":
            return username(p)
        if name == "email":
            return email(self)
        return ""  # middleName


def username(p: RosterPerson) -> str:
    """Deterministic username, e.g. ``jdoe104233``."""
    first = p.first_name[:1].lower()
    return f"{first if first.isalnum() else ''}{p.last_name.lower().translate(_DROP)}{p.roster_id}"


def email(rec: UserRecord) -> str:
    """Deterministic e-mail address."""
    domain = "students.example.org" if rec.role == "student" else "example.org"
    return f"{username(rec.person)}@{domain}"


def render_user_text(rec: UserRecord, *, enabled_as_string: bool) -> str:
    """Render ``rec`` as a OneRoster 1.1 user (ClassLink flavour), as compact JSON text."""
    p = rec.person
    sid = _q(p.roster_id)
    school = _q(p.school_id)
    if enabled_as_string:
        enabled = '"true"' if p.active else '"false"'
    else:
        enabled = "true" if p.active else "false"
    grades = f"[{_q(_grade(p.grade))}]" if rec.role == "student" and p.grade else "[]"
    href = _q(f"https://elsewhere.example/ims/oneroster/v1p1/orgs/{p.school_id}")
    return (
        f'{{"sourcedId":{sid},"status":"{"active" if p.active else "tobedeleted"}",'
        f'"dateLastModified":"{iso(p.last_modified)}","metadata":{{}},'
        f'"username":{_q(username(p))},"userIds":[{{"type":"Fed","identifier":{sid}}}],'
        f'"enabledUser":{enabled},"givenName":{_q(p.first_name)},'
        f'"familyName":{_q(p.last_name)},"middleName":"","role":{_q(rec.role)},'
        f'"identifier":{_q(p.student_number)},"email":{_q(email(rec))},"sms":"","phone":"",'
        f'"agents":[],"orgs":[{{"href":{href},"sourcedId":{school},"type":"org"}}],'
        f'"grades":{grades},"password":""}}'
    )


def parse_time(text: str) -> datetime.datetime:
    """Parse an ISO 8601 date or date-time (``Z`` or offset; naive = UTC)."""
    moment = datetime.datetime.fromisoformat(text.strip())
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


Predicate = Callable[[UserRecord], bool]
"""A compiled filter."""


def _compare(op: str, left: Any, right: Any) -> bool:
    if op == "=":
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    if op == ">":
        return bool(left > right)
    if op == ">=":
        return bool(left >= right)
    if op == "<":
        return bool(left < right)
    if op == "<=":
        return bool(left <= right)
    return bool(str(right) in str(left))  # "~": contains


def _predicate(name: str, op: str, raw: str) -> Predicate:
    if name not in FILTER_FIELDS:
        raise ImsxError(400, f"Invalid filter field: {name}", "invalid_filter_field")
    if name == "dateLastModified":
        if op == "~":
            raise ImsxError(400, "~ is not valid for dateLastModified", "invalid_filter_field")
        try:
            moment = parse_time(raw)
        except ValueError:
            raise ImsxError(
                400, f"Invalid dateLastModified value: {raw!r}", "invalid_filter_field"
            ) from None
        return lambda rec: _compare(op, rec.person.last_modified, moment)
    if op in ("=", "!=", "~"):
        wanted = raw.lower()
        return lambda rec: _compare(op, str(rec.value(name)).lower(), wanted)
    return lambda rec: _compare(op, rec.value(name), raw)


def parse_filter(text: str) -> Predicate:
    """Compile ``<field><op>'<value>'`` with at most one ``AND``/``OR`` joining two predicates.

    ``=``, ``!=`` and ``~`` compare strings case-insensitively; ``dateLastModified`` compares
    as instants. Errors raise 400 ``invalid_filter_field``.
    """
    preds: list[Predicate] = []
    joins: list[str] = []
    pos = 0
    while True:
        m = _PREDICATE.match(text, pos)
        if m is None:
            raise ImsxError(400, f"Invalid filter syntax: {text!r}", "invalid_filter_field")
        preds.append(_predicate(*m.groups()))
        pos = m.end()
        if pos >= len(text):
            break
        j = _JOIN.match(text, pos)
        if j is None or not text[pos - 1].isspace():
            raise ImsxError(400, f"Invalid filter syntax: {text!r}", "invalid_filter_field")
        joins.append(j.group(1))
        pos = j.end()
        if len(preds) >= 2:
            raise ImsxError(400, "You may only specify two filters", "invalid_filter_field")
    if not joins:
        return preds[0]
    first, second = preds
    if joins[0] == "AND":
        return lambda rec: first(rec) and second(rec)
    return lambda rec: first(rec) or second(rec)
