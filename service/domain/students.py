"""Student resolution: roster key -> roster student -> PowerSchool STUDENTS.ID.

The roster's student-ID field carries STUDENTS.DCID (or STUDENTS.ID for districts on the
"Configuration Request" fallback); attendance needs STUDENTS.ID, which only PowerSchool
knows. It is looked up once and kept in Postgres.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import replace

import structlog

from service.domain._powerschool_calls import call, client_for
from service.errors import FailedPrecondition, NotFound, Unavailable
from service.models import (
    District,
    IdMode,
    KeyKind,
    RosterSource,
    Student,
    StudentKey,
    VisibleId,
)
from service.powerschool import PowerSchoolError, PowerSchoolPool, PSStudentIds
from service.store import StudentStore

log = structlog.get_logger("students")

# PowerSchool's schema and PowerQuery pages hold 100 rows; a few calls at a time is polite.
_PREFETCH_BATCH = 100
_PREFETCH_CONCURRENCY = 4
_PREFETCH_MAX = 1_000_000


def visible_student_id(district: District, student: Student) -> str:
    """The ID staff see: ClassLink always shows the identifier; Clever follows the
    district's option. Falls back to the student-ID field when the number is empty."""
    roster = student.roster
    prefers_number = (
        district.roster_source is RosterSource.CLASSLINK
        or district.visible_student_id is VisibleId.STUDENT_NUMBER
    )
    return (prefers_number and roster.student_number) or roster.sis_id


def school_number_of(district: District, student: Student) -> int | None:
    """The student's school: PowerSchool's word when known, else the roster school's mapping."""
    if student.powerschool_school_number:
        return student.powerschool_school_number
    school = district.school_by_roster_id(student.roster.roster_school_id)
    return school.school_number if school else None


def _key_label(key: StudentKey) -> str:
    return key.kind.value.replace("_", " ")


class StudentCache:
    """Resolved students (those with a STUDENTS.ID) by district and key, in this process's
    memory, at most ``size`` (the least recently used go first; 0 keeps none).

    An entry is only as good as the news of changes: :meth:`forget` must be called for every
    change to a district's students or resolution settings, by any process, and
    :meth:`trust` says whether such news is being heard. While it is not, nothing is served
    or kept: a stale entry would put a check-in on the wrong student.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._trusted = False
        self._entries: OrderedDict[tuple[str, StudentKey], Student] = OrderedDict()
        self._keys: dict[str, set[StudentKey]] = {}
        # Bumped by every forget: a read that began before one is not kept (its answer
        # may predate the change).
        self._epoch = 0
        self._district_epochs: dict[str, int] = {}

    def get(self, district_id: str, key: StudentKey) -> Student | None:
        """The student kept for ``key``, or None."""
        student = self._entries.get((district_id, key))
        if student is not None:
            self._entries.move_to_end((district_id, key))
        return student

    def epoch(self, district_id: str) -> tuple[int, int]:
        """Taken before reading the store; hand it to :meth:`put`."""
        return self._epoch, self._district_epochs.get(district_id, 0)

    def put(
        self, district_id: str, key: StudentKey, student: Student, epoch: tuple[int, int]
    ) -> None:
        """Keep ``student`` for ``key``, unless it lacks a STUDENTS.ID, news is not being
        heard, or the district changed since ``epoch`` was taken."""
        if (
            not self._size
            or not self._trusted
            or student.powerschool_id is None
            or epoch != self.epoch(district_id)
        ):
            return
        self._entries[district_id, key] = student
        self._entries.move_to_end((district_id, key))
        self._keys.setdefault(district_id, set()).add(key)
        while len(self._entries) > self._size:
            (old_district, old_key), _ = self._entries.popitem(last=False)
            self._keys[old_district].discard(old_key)

    def forget(self, district_id: str) -> None:
        """Drop what is kept for ``district_id`` (for every district when ``""``)."""
        if not district_id:
            self._epoch += 1
            self._entries.clear()
            self._keys.clear()
            self._district_epochs.clear()
            return
        self._district_epochs[district_id] = self._district_epochs.get(district_id, 0) + 1
        for key in self._keys.pop(district_id, ()):
            self._entries.pop((district_id, key), None)

    def trust(self, heard: bool) -> None:
        """Whether changes made by any process are being heard (see :meth:`forget`); any
        change of this drops everything kept."""
        if heard != self._trusted:
            self._trusted = heard
            self.forget("")


class StudentResolver:
    """Finds students by any key and makes sure they carry their STUDENTS.ID; students
    already resolved are answered from ``cache`` when it holds them."""

    def __init__(
        self, students: StudentStore, powerschool: PowerSchoolPool, cache: StudentCache
    ) -> None:
        self._students = students
        self._powerschool = powerschool
        self._cache = cache
        # One PowerSchool lookup per student at a time, however many RPCs ask at once.
        self._inflight: dict[tuple[str, str], asyncio.Task[Student]] = {}

    async def find(self, district: District, key: StudentKey) -> Student:
        """The roster student named by ``key``, without calling PowerSchool unless the key
        is a STUDENTS.ID nobody has resolved yet."""
        did = district.district_id
        cached = self._cache.get(did, key)
        if cached is not None:
            return cached
        epoch = self._cache.epoch(did)
        student = await self._find(district, key)
        self._cache.put(did, key, student, epoch)
        return student

    async def _find(self, district: District, key: StudentKey) -> Student:
        did = district.district_id
        match key.kind:
            case KeyKind.ROSTER_ID:
                found = await self._students.by_roster_id(did, key.value)
            case KeyKind.SIS_ID:
                found = await self._students.by_sis_id(did, key.value)
            case KeyKind.STUDENT_NUMBER:
                found = await self._students.by_student_number(did, key.value)
            case KeyKind.POWERSCHOOL_ID:
                found = await self._students.by_powerschool_id(did, int(key.value))
                if not found:
                    found = await self._find_by_unseen_powerschool_id(district, int(key.value))
        if not found:
            raise NotFound(
                f"no student with that {_key_label(key)} in district {did!r}",
                reason="STUDENT_NOT_FOUND",
            )
        if len(found) > 1 and found[0].roster.active and found[1].roster.active:
            raise FailedPrecondition(
                f"more than one active student has that {_key_label(key)} in district {did!r}; "
                "the roster must give each student a unique value",
                reason="STUDENT_KEY_AMBIGUOUS",
            )
        return found[0]

    async def prefetch(self, district: District) -> tuple[int, int]:
        """Look up STUDENTS.ID for every active student lacking it, many per call.

        Returns ``(found, still_unresolved)``. PowerSchool trouble stops the prefetch, never
        the caller: check-ins resolve on demand anyway.
        """
        if not district.powerschool.configured:
            return 0, len(await self._students.unresolved(district.district_id, _PREFETCH_MAX))
        pending = await self._students.unresolved(district.district_id, _PREFETCH_MAX)
        keys = sorted({int(sis) for _, sis in pending if sis.isascii() and sis.isdigit()})
        client = client_for(self._powerschool, district)
        by = "dcid" if district.id_mode is IdMode.DCID else "id"
        gate = asyncio.Semaphore(_PREFETCH_CONCURRENCY)
        found: list[tuple[str, int, int]] = []

        async def batch(chunk: list[int]) -> None:
            async with gate:
                mapping = await client.id_map(chunk, by=by)
                if mapping is None:  # the PowerQuery is not installed: one query per student
                    lookup = client.student_by_dcid if by == "dcid" else client.student_by_id
                    rows = [await lookup(k) for k in chunk]
                    mapping = {
                        (r.dcid if by == "dcid" else r.id): (r.id if by == "dcid" else r.dcid)
                        for r in rows
                        if r is not None
                    }
            mine = [
                (str(key), *((key, other) if by == "dcid" else (other, key)))
                for key, other in mapping.items()
            ]
            await self._students.save_powerschool_ids_batch(district.district_id, mine)
            found.extend(mine)

        chunks = [keys[i : i + _PREFETCH_BATCH] for i in range(0, len(keys), _PREFETCH_BATCH)]
        tasks = [asyncio.ensure_future(batch(c)) for c in chunks]
        try:
            await asyncio.gather(*tasks)
        except (PowerSchoolError, Unavailable) as exc:
            # Stop at the first failure: no more calls to a server that is struggling.
            log.warning("prefetch_stopped", error=str(exc))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return len(found), len(pending) - len(found)

    async def _find_by_unseen_powerschool_id(
        self, district: District, powerschool_id: int
    ) -> list[Student]:
        client = client_for(self._powerschool, district)
        ids = await call(client.student_by_id(powerschool_id))
        if ids is None:
            return []
        sis_id = str(ids.id if district.id_mode is IdMode.STUDENTS_ID else ids.dcid)
        found = await self._students.by_sis_id(district.district_id, sis_id)
        if found:
            await self._save(district, found[0], ids)
            found[0] = self._with_ids(found[0], ids)
        return found

    async def resolve(self, district: District, key: StudentKey) -> Student:
        """The student named by ``key``, with ``powerschool_id`` filled in."""
        did = district.district_id
        cached = self._cache.get(did, key)
        if cached is not None:
            return cached
        epoch = self._cache.epoch(did)
        student = await self.ensure_powerschool_id(district, await self._find(district, key))
        self._cache.put(did, key, student, epoch)
        return student

    async def ensure_powerschool_id(self, district: District, student: Student) -> Student:
        """Fill in STUDENTS.ID from Postgres, or from PowerSchool once and then keep it."""
        if student.powerschool_id is not None:
            return student
        flight = (district.district_id, student.roster.roster_id)
        task = self._inflight.get(flight)
        if task is None:
            # The lookup belongs to no caller: one caller giving up (a deadline, a hang-up)
            # must not cancel it for the others waiting on the same student.
            task = asyncio.create_task(self._lookup(district, student))
            self._inflight[flight] = task
            task.add_done_callback(lambda done: self._lookup_done(flight, done))
        return await asyncio.shield(task)

    def _lookup_done(self, flight: tuple[str, str], task: asyncio.Task[Student]) -> None:
        self._inflight.pop(flight, None)
        if not task.cancelled():
            task.exception()  # retrieved here, so nobody waiting is not an error

    async def _lookup(self, district: District, student: Student) -> Student:
        sis_id = student.roster.sis_id
        by_dcid = district.id_mode is IdMode.DCID
        field = "DCID" if by_dcid else "STUDENTS.ID"
        if not sis_id.isascii() or not sis_id.isdigit():
            problem = "not numeric" if sis_id else "empty"
            raise FailedPrecondition(
                f"the roster's student-ID field for this student is {problem}, so it cannot be "
                f"a PowerSchool {field}; map STUDENTS.{field.removeprefix('STUDENTS.')} to "
                "Clever's Student ID / ClassLink's sourcedId",
                reason="SIS_ID_NOT_NUMERIC",
            )
        client = client_for(self._powerschool, district)
        lookup = client.student_by_dcid if by_dcid else client.student_by_id
        ids = await call(lookup(sis_id))
        if ids is None:
            raise NotFound(
                f"PowerSchool has no student whose {field} is the roster's student-ID value; "
                "check which PowerSchool field the roster maps to Student ID / sourcedId",
                reason="STUDENT_NOT_IN_POWERSCHOOL",
            )
        await self._save(district, student, ids)
        return self._with_ids(student, ids)

    async def _save(self, district: District, student: Student, ids: PSStudentIds) -> None:
        await self._students.save_powerschool_ids(
            district.district_id,
            student.roster.roster_id,
            student.roster.sis_id,
            dcid=ids.dcid,
            powerschool_id=ids.id,
            school_number=ids.school_number,
        )

    @staticmethod
    def _with_ids(student: Student, ids: PSStudentIds) -> Student:
        return replace(
            student,
            dcid=ids.dcid,
            powerschool_id=ids.id,
            powerschool_school_number=ids.school_number,
        )
