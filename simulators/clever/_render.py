"""Clever v3.0 / v3.1 JSON shapes for users and events (see the fact file, sections 2 and 3).

Users are rendered straight to JSON text and cached, so a 100,000-student district pages out
in well under a second; ``render_user`` parses that text when a dict is needed (events).
"""

from __future__ import annotations

import datetime
import functools
import json
import zlib
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _q
from typing import Any

from simulators.roster import RosterPerson

JSON = dict[str, Any]
"""A JSON object."""

USER_ROLES = ("contact", "district_admin", "staff", "student", "teacher")
"""Values of the ``role`` query parameter Clever accepts."""

_V31_STUDENT = (
    ',"disability":{"disability_code":null,"disability_status":null,"disability_type":null}'
    ',"frl_status":"","gifted_status":"","home_language":null,"home_language_code":null'
    ',"iep_status":"","preferred_name":{"first":null,"middle":null,"last":null}'
    ',"section_504_status":""'
)
_V31_USER = ',"lms_status":{"synced_in_lms":null}'


@functools.lru_cache(maxsize=4096)
def iso(moment: datetime.datetime) -> str:
    """``2023-08-15T10:22:11.000Z``: UTC, milliseconds, ``Z``."""
    utc = moment.astimezone(datetime.UTC)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"


@dataclass(slots=True)
class UserRecord:
    """A Clever user as the simulator stores it: the person, its role and render caches."""

    person: RosterPerson
    role: str
    created: datetime.datetime
    v30: str | None = None
    v31: str | None = None

    @property
    def visible(self) -> bool:
        """Shared with the app (inactive people are unshared)."""
        return self.person.active

    def text(self, district_id: str, version: str) -> str:
        """The ``User`` object for API ``version`` as JSON text (cached until invalidated)."""
        if version == "v3.0":
            if self.v30 is None:
                self.v30 = render_user_text(self, district_id, version)
            return self.v30
        if self.v31 is None:
            self.v31 = render_user_text(self, district_id, version)
        return self.v31

    def invalidate(self) -> None:
        """Forget cached renderings after a change."""
        self.v30 = self.v31 = None


_DROP = str.maketrans("", "", " -'.,")


def username(p: RosterPerson) -> str:
    """Deterministic district username, e.g. ``jdoe104233``."""
    first = p.first_name[:1].lower()
    return f"{first if first.isalnum() else ''}{p.last_name.lower().translate(_DROP)}{p.sis_id}"


def render_user_text(rec: UserRecord, district_id: str, version: str) -> str:
    """Render ``rec`` as Clever's v3.0 (or v3.1) ``User``, as compact JSON text."""
    p = rec.person
    login = username(p)
    legacy = f"58da8c63{p.roster_id[8:]}" if len(p.roster_id) == 24 else p.roster_id
    school = _q(p.school_id)
    number = _q(p.student_number) if p.student_number else "null"
    v31 = version != "v3.0"
    if rec.role == "student":
        h = zlib.crc32(p.sis_id.encode())
        grade = int(p.grade) if p.grade.isdigit() else 0
        role = (
            f'"student":{{"sis_id":{_q(p.sis_id)},"student_number":{number},'
            f'"state_id":"99{h % 100_000_000:08d}","school":{school},"schools":[{school}],'
            f'"grade":{_q(p.grade)},"dob":"{h % 12 + 1}/{h // 12 % 28 + 1}/{2019 - grade}",'
            f'"credentials":{{"district_username":{_q(login)}}},"legacy_id":{_q(legacy)},'
            f'"enrollments":[],"location":{{"zip":"10459"}},"ext":{{}}'
            f"{_V31_STUDENT if v31 else ''}}}"
        )
        domain = "students.example.org"
    else:
        role = (
            f'{_q(rec.role)}:{{"sis_id":{_q(p.sis_id)},"teacher_number":{number},'
            f'"state_id":null,"school":{school},"schools":[{school}],"title":null,'
            f'"credentials":{{"district_username":{_q(login)}}},"legacy_id":{_q(legacy)},'
            f'"ext":{{}}}}'
        )
        domain = "example.org"
    return (
        f'{{"id":{_q(p.roster_id)},"district":{_q(district_id)},'
        f'"email":{_q(f"{login}@{domain}")},'
        f'"name":{{"first":{_q(p.first_name)},"middle":null,"last":{_q(p.last_name)}}},'
        f'"created":"{iso(rec.created)}","last_modified":"{iso(p.last_modified)}",'
        f'"roles":{{{role}}}{_V31_USER if v31 else ""}}}'
    )


def render_user(rec: UserRecord, district_id: str, version: str) -> JSON:
    """Render ``rec`` as Clever's v3.0 (or v3.1) ``User`` dict."""
    obj: JSON = json.loads(rec.text(district_id, version))
    return obj


def previous_attributes(old: JSON, new: JSON) -> JSON:
    """The old values of what changed from ``old`` to ``new``, nested like the objects."""
    out: JSON = {}
    for key in [*old, *(k for k in new if k not in old)]:
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        if isinstance(before, dict) and isinstance(after, dict):
            out[key] = previous_attributes(before, after)
        else:
            out[key] = before
    return out
