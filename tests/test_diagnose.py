"""DiagnoseMapping: each finding on a district built to trigger it, checked against the
PowerSchool simulator."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from writeback.v1 import writeback_pb2 as pb

from tests.helpers import World, failure, roster_id_of, roster_school_of

Findings = dict[int, pb.MappingFinding]


async def diagnose(
    world: World, sample_size: int = 0
) -> tuple[pb.DiagnoseMappingResponse, Findings]:
    response = await world.stub.DiagnoseMapping(
        pb.DiagnoseMappingRequest(district_id=world.district_id, sample_size=sample_size)
    )
    return response, {f.code: f for f in response.findings}


async def import_rows(world: World, rows: list[dict[str, Any]]) -> None:
    await world.stub.ImportStudents(
        pb.ImportStudentsRequest(
            district_id=world.district_id,
            students=[pb.RosterStudent(active=True, **row) for row in rows],
        )
    )


class TestFindings:
    async def test_a_well_mapped_district_has_no_errors(self, world: World) -> None:
        await world.setup(visible_student_id=pb.VISIBLE_STUDENT_ID_STUDENT_NUMBER)
        response, found = await diagnose(world, sample_size=500)
        assert response.sampled == len(world.students)
        assert response.active_students == len(world.students)
        assert found == {}

    async def test_student_id_carrying_students_id(self, world: World) -> None:
        """Clever Student ID mapped to STUDENTS.ID instead of DCID: every sampled value
        matches q=id== and (because DCIDs and IDs never overlap) no q=dcid==."""
        await world.setup(sis_field="id", visible_student_id=pb.VISIBLE_STUDENT_ID_STUDENT_NUMBER)
        _, found = await diagnose(world, sample_size=500)
        finding = found[pb.FINDING_CODE_SIS_ID_LOOKS_LIKE_STUDENTS_ID]
        assert finding.severity == pb.SEVERITY_ERROR
        assert finding.count == finding.checked == len(world.students)
        assert "STUDENTS.ID" in finding.message
        assert "Student DCID" in finding.message
        assert set(finding.examples) <= {roster_id_of(s) for s in world.students}
        assert pb.FINDING_CODE_DCID_UNKNOWN not in found

    async def test_dcid_district_configured_for_students_id(self, world: World) -> None:
        await world.setup(
            id_mode=pb.ID_MODE_STUDENTS_ID,
            visible_student_id=pb.VISIBLE_STUDENT_ID_STUDENT_NUMBER,
        )
        _, found = await diagnose(world, sample_size=500)
        assert found[pb.FINDING_CODE_SIS_ID_LOOKS_LIKE_DCID].count == len(world.students)

    async def test_non_numeric_and_unknown_ids(self, world: World) -> None:
        await world.setup(visible_student_id=pb.VISIBLE_STUDENT_ID_STUDENT_NUMBER)
        await import_rows(
            world,
            [
                {
                    "roster_id": "guid-1",
                    "sis_id": "5f3c-aa",
                    "student_number": "900001",
                    "roster_school_id": roster_school_of(100),
                },
                {
                    "roster_id": "ghost-1",
                    "sis_id": "123456789",
                    "student_number": "900002",
                    "roster_school_id": roster_school_of(100),
                },
            ],
        )
        _, found = await diagnose(world, sample_size=500)
        assert found[pb.FINDING_CODE_SIS_ID_NOT_NUMERIC].examples == ["guid-1"]
        unknown = found[pb.FINDING_CODE_DCID_UNKNOWN]
        assert (unknown.count, list(unknown.examples)) == (1, ["ghost-1"])

    async def test_student_number_mapped_to_the_wrong_field(self, world: World) -> None:
        await world.setup(visible_student_id=pb.VISIBLE_STUDENT_ID_STUDENT_NUMBER)
        await import_rows(
            world,
            [
                {
                    "roster_id": roster_id_of(s),
                    "sis_id": str(s.dcid),
                    "student_number": str(s.id),
                    "roster_school_id": roster_school_of(s.schoolid),
                }
                for s in world.students[:4]
            ],
        )
        _, found = await diagnose(world, sample_size=500)
        mismatch = found[pb.FINDING_CODE_STUDENT_NUMBER_MISMATCH]
        assert mismatch.count == 4
        assert mismatch.severity == pb.SEVERITY_WARNING

    async def test_duplicate_student_numbers(self, world: World) -> None:
        await world.setup(visible_student_id=pb.VISIBLE_STUDENT_ID_STUDENT_NUMBER)
        a, b = world.students[0], world.students[1]
        await import_rows(
            world,
            [
                {
                    "roster_id": roster_id_of(b),
                    "sis_id": str(b.dcid),
                    "student_number": a.student_number,
                    "roster_school_id": roster_school_of(b.schoolid),
                }
            ],
        )
        _, found = await diagnose(world)
        dup = found[pb.FINDING_CODE_DUPLICATE_STUDENT_NUMBER]
        assert sorted(dup.examples) == sorted([roster_id_of(a), roster_id_of(b)])

    async def test_unmapped_roster_school(self, world: World) -> None:
        await world.setup(
            visible_student_id=pb.VISIBLE_STUDENT_ID_STUDENT_NUMBER,
            schools=[
                pb.School(
                    school_number=100,
                    roster_school_id=roster_school_of(100),
                    writeback_enabled=True,
                    late_check_in_code="T",
                    early_check_out_code="ED",
                )
            ],
        )
        _, found = await diagnose(world)
        finding = found[pb.FINDING_CODE_SCHOOL_NOT_MAPPED]
        assert list(finding.examples) == [roster_school_of(200)]
        assert (
            f"{len([s for s in world.students if s.schoolid == 200])} students" in finding.message
        )

    async def test_clever_still_showing_student_id(self, world: World) -> None:
        await world.setup()  # Clever, visible ID = Student ID (the DCID)
        _, found = await diagnose(world)
        assert "Student Number" in found[pb.FINDING_CODE_VISIBLE_ID_SHOWS_DCID].message

    async def test_classlink_with_empty_identifiers(self, world: World) -> None:
        await world.setup(roster_source=pb.ROSTER_SOURCE_CLASSLINK)
        await import_rows(
            world,
            [
                {
                    "roster_id": roster_id_of(s),
                    "sis_id": str(s.dcid),
                    "roster_school_id": roster_school_of(s.schoolid),
                }
                for s in world.students
            ],
        )
        _, found = await diagnose(world)
        missing = found[pb.FINDING_CODE_STUDENT_NUMBER_MISSING]
        assert missing.count == len(world.students)
        assert "Identifier" in missing.message
        assert pb.FINDING_CODE_VISIBLE_ID_SHOWS_DCID not in found  # that one is Clever's

    async def test_findings_never_carry_names(self, world: World) -> None:
        await world.setup(sis_field="id")
        response, _ = await diagnose(world, sample_size=500)
        text = str(response)
        for s in world.students:
            assert s.last_name not in text


class TestErrors:
    async def test_sample_size_is_bounded(self, world: World) -> None:
        await world.setup()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await diagnose(world, sample_size=100_000)
        assert "sample_size" in failure(err.value).violations

    async def test_powerschool_down(self, world: World) -> None:
        await world.setup()
        world.sim.faults.outage = True
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await diagnose(world)
        assert failure(err.value).code is grpc.StatusCode.UNAVAILABLE
