"""One roster data set shared by the Clever and ClassLink simulators.

A district's roster is built from its PowerSchool data (``simulators.powerschool.demo_dataset``)
so the two agree — or, for the misconfigured districts the sync must survive, disagree on
purpose (``sis_field="id"``, ``student_number_field="none"`` or ``"dcid"``).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from simulators.powerschool import Dataset

__all__ = [
    "PERSON_FIELDS",
    "RosterPerson",
    "RosterSource",
    "clever_object_id",
    "copy_people",
    "now_ms",
    "person_changes",
    "person_from_json",
    "person_to_json",
    "roster_from_powerschool",
    "school_roster_id",
]

RosterSource = Literal["clever", "classlink"]
"""Which roster service a record is shaped for."""

_CLEVER_BASE_EPOCH = 1_690_000_000
"""Unix seconds of the first Clever user id built from a PowerSchool dataset (2023-07-22)."""
_CLEVER_SCHOOL_EPOCH = 0x58DA8C58
"""Timestamp part of the deterministic Clever school ids (2017-03-28, before every user)."""
_CLEVER_USERS_PER_SECOND = 50


def now_ms() -> datetime.datetime:
    """The current UTC time truncated to whole milliseconds (what the roster APIs render)."""
    now = datetime.datetime.now(datetime.UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def clever_object_id(epoch_seconds: int, machine: int, counter: int) -> str:
    """A 24-hex Mongo-style id: 8 hex of Unix seconds, 10 hex ``machine``, 6 hex ``counter``.

    Ids made with a later ``epoch_seconds`` (or the same one and a larger counter) sort later,
    which is how Clever's "ascending id = creation order" comes about.
    """
    return f"{epoch_seconds & 0xFFFFFFFF:08x}{machine & 0xFFFFFFFFFF:010x}{counter & 0xFFFFFF:06x}"


@dataclass(slots=True)
class RosterPerson:
    """One student as a roster service (Clever or ClassLink) knows them."""

    roster_id: str
    """Clever: the 24-hex user id; ClassLink: the ``sourcedId`` (the same as ``sis_id``)."""
    sis_id: str
    """The roster's student-ID field: Clever ``roles.student.sis_id`` / OneRoster ``sourcedId``."""
    student_number: str
    """Clever ``roles.student.student_number`` / OneRoster ``identifier``; ``""`` = empty."""
    first_name: str
    """Given name."""
    last_name: str
    """Family name."""
    school_id: str
    """The roster's school id (Clever school id / OneRoster org ``sourcedId``)."""
    grade: str
    """Grade as ``"9"``, ``"10"``, ``"K"`` ... (OneRoster renders ``"09"``)."""
    active: bool = True
    """False: Clever no longer shares the user; OneRoster lists it as ``tobedeleted``."""
    last_modified: datetime.datetime = field(default_factory=now_ms)
    """Last change, timezone-aware UTC."""


PERSON_FIELDS = frozenset(f.name for f in fields(RosterPerson))
"""The names of the ``RosterPerson`` fields."""


def school_roster_id(source: RosterSource, school_number: int) -> str:
    """The deterministic roster id of PowerSchool school ``school_number``.

    Clever: a 24-hex id (``58da8c58`` + the school number in hex); ClassLink: ``"org-<number>"``.
    """
    if source == "clever":
        return f"{_CLEVER_SCHOOL_EPOCH:08x}{school_number & 0xFFFFFFFFFFFFFFFF:016x}"
    if source == "classlink":
        return f"org-{school_number}"
    raise ValueError(f"unknown roster source {source!r}")


def roster_from_powerschool(
    dataset: Dataset,
    source: RosterSource,
    *,
    sis_field: Literal["dcid", "id"] = "dcid",
    student_number_field: Literal["student_number", "dcid", "none"] = "student_number",
    last_modified: datetime.datetime | None = None,
) -> list[RosterPerson]:
    """The roster a district's ``source`` would show for the students of ``dataset``.

    * ``sis_field``: what the roster's student-ID field carries; ``"dcid"`` is the correct
      setup, ``"id"`` the misconfigured district whose Student ID carries STUDENTS.ID.
    * ``student_number_field``: what the student-number field carries; ``"none"`` leaves it
      empty, ``"dcid"`` is a district that mapped the wrong PowerSchool field.
    * ``last_modified`` (default: now) stamps every record; Clever ``created`` uses it too.

    Clever ``roster_id`` values are deterministic 24-hex ids increasing in dataset order;
    ClassLink ones equal ``sis_id``. Students with ``enroll_status != 0`` are inactive.
    """
    if sis_field not in ("dcid", "id"):
        raise ValueError(f"bad sis_field {sis_field!r}")
    if student_number_field not in ("student_number", "dcid", "none"):
        raise ValueError(f"bad student_number_field {student_number_field!r}")
    if source not in ("clever", "classlink"):
        raise ValueError(f"unknown roster source {source!r}")
    stamp = last_modified or now_ms()
    if stamp.tzinfo is None:
        raise ValueError("last_modified must be timezone-aware")
    schools = {s.school_number: school_roster_id(source, s.school_number) for s in dataset.schools}
    clever = source == "clever"
    by_id = sis_field == "id"
    out: list[RosterPerson] = []
    append = out.append
    for index, s in enumerate(dataset.students):
        sis_id = str(s.id if by_id else s.dcid)
        if student_number_field == "student_number":
            number = s.student_number
        elif student_number_field == "dcid":
            number = str(s.dcid)
        else:
            number = ""
        school = schools.get(s.schoolid)
        if school is None:
            school = school_roster_id(source, s.schoolid)
        roster_id = (
            f"{_CLEVER_BASE_EPOCH + index // _CLEVER_USERS_PER_SECOND:08x}c1e7e5eed0"
            f"{index & 0xFFFFFF:06x}"
            if clever
            else sis_id
        )
        append(
            RosterPerson(
                roster_id,
                sis_id,
                number,
                s.first_name,
                s.last_name,
                school,
                str(s.grade_level),
                s.enroll_status == 0,
                stamp,
            )
        )
    return out


def copy_people(people: Iterable[RosterPerson]) -> list[RosterPerson]:
    """Shallow copies of ``people`` (simulators keep their own records)."""
    return [
        RosterPerson(
            p.roster_id,
            p.sis_id,
            p.student_number,
            p.first_name,
            p.last_name,
            p.school_id,
            p.grade,
            p.active,
            p.last_modified,
        )
        for p in people
    ]


def person_to_json(p: RosterPerson) -> dict[str, Any]:
    """``p`` as plain JSON (``last_modified`` as ISO 8601)."""
    return {
        "roster_id": p.roster_id,
        "sis_id": p.sis_id,
        "student_number": p.student_number,
        "first_name": p.first_name,
        "last_name": p.last_name,
        "school_id": p.school_id,
        "grade": p.grade,
        "active": p.active,
        "last_modified": p.last_modified.isoformat(),
    }


def person_changes(body: Mapping[str, Any]) -> dict[str, Any]:
    """Validate JSON ``RosterPerson`` field changes (``last_modified`` parsed as ISO 8601)."""
    out: dict[str, Any] = {}
    for name, value in body.items():
        if name not in PERSON_FIELDS:
            raise ValueError(f"unknown RosterPerson field {name!r}")
        if name == "active":
            if not isinstance(value, bool):
                raise TypeError("active must be true or false")
            out[name] = value
        elif name == "last_modified":
            moment = datetime.datetime.fromisoformat(str(value))
            out[name] = moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)
        else:
            out[name] = str(value)
    return out


def person_from_json(body: Mapping[str, Any]) -> RosterPerson:
    """Build a ``RosterPerson`` from JSON (``active``/``last_modified`` optional)."""
    values = person_changes(body)
    missing = {"sis_id", "first_name", "last_name", "school_id", "grade"} - set(values)
    if missing:
        raise ValueError(f"missing fields {sorted(missing)}")
    values.setdefault("roster_id", "")
    values.setdefault("student_number", "")
    return RosterPerson(**values)
