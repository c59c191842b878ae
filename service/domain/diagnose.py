"""DiagnoseMapping: checks a district's roster mapping against PowerSchool and explains,
in words an admin can act on, what is wrong before a single writeback fails.

Roster-wide checks run in Postgres (non-numeric IDs, missing or duplicate student numbers,
unmapped schools, the visible-ID option, a Clever district whose Events are off); a random
sample is checked against PowerSchool (does the student-ID field hold DCIDs, STUDENTS.IDs,
or neither; do student numbers agree).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from service.domain._powerschool_calls import call, client_for
from service.domain.clever_events import clever_events_finding
from service.domain.districts import DistrictService
from service.models import (
    Diagnosis,
    District,
    Finding,
    FindingCode,
    IdMode,
    RosterSource,
    Severity,
    Student,
    VisibleId,
)
from service.powerschool import PowerSchoolClient, PowerSchoolPool, PSStudentIds
from service.store import StudentStore, SyncStateStore

DEFAULT_SAMPLE = 50
MAX_SAMPLE = 500
_EXAMPLES = 5
_CONCURRENCY = 4


@dataclass(frozen=True)
class _Probe:
    """What PowerSchool says about one sampled sis_id, looked up both ways."""

    student: Student
    as_dcid: PSStudentIds | None
    as_id: PSStudentIds | None


def _finding(
    code: FindingCode, severity: Severity, message: str, affected: list[str], checked: int
) -> Finding:
    return Finding(code, severity, message, len(affected), checked, tuple(affected[:_EXAMPLES]))


class MappingDoctor:
    """Produces a :class:`Diagnosis` for a district."""

    def __init__(
        self,
        districts: DistrictService,
        students: StudentStore,
        powerschool: PowerSchoolPool,
        sync_state: SyncStateStore,
    ) -> None:
        self._districts = districts
        self._students = students
        self._powerschool = powerschool
        self._sync_state = sync_state

    async def diagnose(self, district_id: str, sample_size: int = 0) -> Diagnosis:
        """Run every check; PowerSchool checks need a configured connection."""
        district = await self._districts.get(district_id)
        did = district.district_id
        size = min(sample_size or DEFAULT_SAMPLE, MAX_SAMPLE)
        active = await self._students.count_active(did)
        findings = await self._roster_checks(district, active)
        events = clever_events_finding(district, await self._sync_state.get(did))
        if events is not None:
            findings.append(events)
        sample = [
            s
            for s in await self._students.sample_active(did, size)
            if s.roster.sis_id.isascii() and s.roster.sis_id.isdigit()
        ]
        if sample:
            client = client_for(self._powerschool, district)
            probes = await self._probe(client, sample)
            findings += _powerschool_checks(district, probes)
        order = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
        findings.sort(key=lambda f: (order[f.severity], -f.count))
        return Diagnosis(tuple(findings), sampled=len(sample), active_students=active)

    async def _probe(self, client: PowerSchoolClient, sample: list[Student]) -> list[_Probe]:
        gate = asyncio.Semaphore(_CONCURRENCY)

        async def one(student: Student) -> _Probe:
            async with gate:
                sis_id = student.roster.sis_id
                as_dcid = await call(client.student_by_dcid(sis_id))
                as_id = await call(client.student_by_id(sis_id))
            return _Probe(student, as_dcid, as_id)

        return list(await asyncio.gather(*(one(s) for s in sample)))

    async def _roster_checks(self, district: District, active: int) -> list[Finding]:
        did = district.district_id
        findings: list[Finding] = []
        non_numeric = await self._students.non_numeric_sis_ids(did)
        if non_numeric:
            field = _sis_field(district)
            findings.append(
                _finding(
                    FindingCode.SIS_ID_NOT_NUMERIC,
                    Severity.ERROR,
                    f"{len(non_numeric)} of {active} students have a {field} that is not a "
                    "number, so it cannot be a PowerSchool DCID. Map the PowerSchool field "
                    f"Student DCID to {field} in the {_source(district)} SIS connection.",
                    non_numeric,
                    active,
                )
            )
        missing = await self._students.missing_student_numbers(did)
        if missing:
            field = (
                "Identifier"
                if district.roster_source is RosterSource.CLASSLINK
                else ("Student Number")
            )
            findings.append(
                _finding(
                    FindingCode.STUDENT_NUMBER_MISSING,
                    Severity.WARNING,
                    f"{len(missing)} of {active} students have an empty {field}, so staff "
                    "cannot find them by barcode, RFID or ID card and see their Student ID "
                    f"instead. Map the preferred student number to {field} in "
                    f"{_source(district)}.",
                    missing,
                    active,
                )
            )
        duplicates = await self._students.duplicate_student_numbers(did)
        if duplicates:
            affected = [rid for ids in duplicates.values() for rid in ids]
            findings.append(
                _finding(
                    FindingCode.DUPLICATE_STUDENT_NUMBER,
                    Severity.WARNING,
                    f"{len(duplicates)} student numbers are shared by more than one active "
                    f"student ({len(affected)} students); a barcode or RFID scan of those "
                    "numbers cannot tell the students apart. Check the field mapped to "
                    "the student number.",
                    affected,
                    active,
                )
            )
        schools = await self._students.roster_school_counts(did)
        unmapped = sorted(
            sid for sid in schools if sid and district.school_by_roster_id(sid) is None
        )
        if unmapped:
            students = sum(schools[s] for s in unmapped)
            findings.append(
                _finding(
                    FindingCode.SCHOOL_NOT_MAPPED,
                    Severity.ERROR,
                    f"{len(unmapped)} roster schools ({students} students) have no PowerSchool "
                    "school number in this district's configuration; their check-ins cannot "
                    "be written. Add them to the district's schools.",
                    unmapped,
                    len(schools),
                )
            )
        if (
            district.roster_source is RosterSource.CLEVER
            and district.visible_student_id is VisibleId.STUDENT_ID
            and active > len(missing)
        ):
            findings.append(
                _finding(
                    FindingCode.VISIBLE_ID_SHOWS_DCID,
                    Severity.WARNING,
                    "Staff see Clever's Student ID, which holds the PowerSchool DCID, on student "
                    "profiles. Set Visible Student ID to Student Number so they see the "
                    "preferred student number.",
                    [],
                    active,
                )
            )
        return findings


def _source(district: District) -> str:
    return "ClassLink" if district.roster_source is RosterSource.CLASSLINK else "Clever"


def _sis_field(district: District) -> str:
    return "Sourced ID" if district.roster_source is RosterSource.CLASSLINK else "Student ID"


def _numbers_agree(student: Student, ps: PSStudentIds) -> bool:
    return bool(student.roster.student_number) and student.roster.student_number == (
        ps.student_number
    )


def _powerschool_checks(district: District, probes: list[_Probe]) -> list[Finding]:
    checked = len(probes)
    field = _sis_field(district)
    expects_dcid = district.id_mode is IdMode.DCID
    wrong_kind: list[str] = []
    unknown: list[str] = []
    number_mismatch: list[str] = []
    for p in probes:
        rid = p.student.roster.roster_id
        expected, other = (p.as_dcid, p.as_id) if expects_dcid else (p.as_id, p.as_dcid)
        # The value names a student the other way, and that one is the better match
        # (or the expected way finds nobody): the field holds the other key.
        if other is not None and (
            expected is None
            or (_numbers_agree(p.student, other) and not _numbers_agree(p.student, expected))
        ):
            wrong_kind.append(rid)
        elif expected is None:
            unknown.append(rid)
        elif p.student.roster.student_number and not _numbers_agree(p.student, expected):
            number_mismatch.append(rid)
    findings: list[Finding] = []
    if wrong_kind:
        if expects_dcid:
            message = (
                f"{len(wrong_kind)} of {checked} sampled students have a {field} that matches "
                "PowerSchool's STUDENTS.ID, not the DCID: the SIS connection maps the STUDENTS "
                f"ID field to {field}. Map Student DCID to {field} instead, or submit a "
                "Configuration Request to switch this district to STUDENTS.ID mode."
            )
            code = FindingCode.SIS_ID_LOOKS_LIKE_STUDENTS_ID
        else:
            message = (
                f"{len(wrong_kind)} of {checked} sampled students have a {field} that matches "
                "PowerSchool's DCID, but this district is set to STUDENTS.ID mode. Switch the "
                "district to DCID mode."
            )
            code = FindingCode.SIS_ID_LOOKS_LIKE_DCID
        findings.append(_finding(code, Severity.ERROR, message, wrong_kind, checked))
    if unknown:
        key = "DCID" if expects_dcid else "STUDENTS.ID"
        findings.append(
            _finding(
                FindingCode.DCID_UNKNOWN,
                Severity.ERROR,
                f"{len(unknown)} of {checked} sampled students have a {field} that PowerSchool "
                f"does not know as a {key}; their writebacks will fail. Check that {field} "
                f"carries the PowerSchool Student {key} and that the roster and PowerSchool "
                "are the same district.",
                unknown,
                checked,
            )
        )
    if number_mismatch:
        findings.append(
            _finding(
                FindingCode.STUDENT_NUMBER_MISMATCH,
                Severity.WARNING,
                f"{len(number_mismatch)} of {checked} sampled students have a student number "
                "that differs from PowerSchool's STUDENT_NUMBER: the preferred student ID is "
                "mapped to the wrong field, so barcode and ID-card scans may not match.",
                number_mismatch,
                checked,
            )
        )
    return findings
