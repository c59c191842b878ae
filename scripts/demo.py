"""`make demo`: a PowerSchool simulator, the service, and one late check-in, end to end.

Everything runs on loopback: the simulator on a free port, the service with embedded
PostgreSQL under .data/demo (or DATABASE_URL), called through the client library.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from writeback.v1 import writeback_pb2 as pb

from clients import WritebackClient, student_key
from service import Server, Settings
from service.logs import configure
from simulators.powerschool import PowerSchoolSimulator, demo_dataset

TZ = "America/Chicago"


def _school_day(sim: PowerSchoolSimulator) -> datetime:
    """Yesterday (or the last day of the school year), 08:47 local time."""
    day = datetime.now(UTC).date() - timedelta(days=1)
    terms = [t for t in sim.dataset.terms if t.isyearrec]
    while not any(t.firstday <= day <= t.lastday for t in terms):
        day -= timedelta(days=1)
    return datetime.combine(day, time(8, 47), tzinfo=ZoneInfo(TZ))


async def main() -> None:
    configure("WARNING", "console")
    sim = PowerSchoolSimulator(demo_dataset(students_per_school=5), district_timezone=TZ)
    await sim.start()
    server = Server(
        Settings(
            database_url=os.environ.get("DATABASE_URL", ""),
            data_dir=Path(".data/demo"),
            grpc_host="127.0.0.1",
            grpc_port=0,
        )
    )
    await server.start()
    print(f"PowerSchool simulator: {sim.base_url}")
    print(f"writeback service:     127.0.0.1:{server.port}\n")
    try:
        async with WritebackClient(f"127.0.0.1:{server.port}") as client:
            district_id = f"demo-{uuid.uuid4().hex[:6]}"
            await client.upsert_district(
                pb.District(
                    district_id=district_id,
                    name="Demo Unified School District",
                    roster_source=pb.ROSTER_SOURCE_CLEVER,
                    id_mode=pb.ID_MODE_DCID,
                    visible_student_id=pb.VISIBLE_STUDENT_ID_STUDENT_NUMBER,
                    writeback_enabled=True,
                    timezone=TZ,
                    powerschool=pb.PowerSchoolConnection(
                        base_url=sim.base_url,
                        client_id=sim.client_id,
                        client_secret=sim.client_secret,
                    ),
                    schools=[
                        pb.School(
                            school_number=s.school_number,
                            roster_school_id=f"clever-school-{s.school_number}",
                            name=s.name,
                            writeback_enabled=True,
                            late_check_in_code="T",
                            early_check_out_code="ED",
                        )
                        for s in sim.dataset.schools
                    ],
                )
            )
            print(f"1. configured district {district_id} (Clever, Student ID = DCID)")
            imported = await client.import_students(
                district_id,
                [
                    pb.RosterStudent(
                        roster_id=f"clever-user-{s.dcid:x}",
                        sis_id=str(s.dcid),
                        student_number=s.student_number,
                        first_name=s.first_name,
                        last_name=s.last_name,
                        roster_school_id=f"clever-school-{s.schoolid}",
                        grade=str(s.grade_level),
                        active=True,
                    )
                    for s in sim.dataset.students
                ],
            )
            print(f"2. imported the roster: {imported.created} students")

            ps = sim.dataset.students[0]
            student = await client.resolve_student(
                district_id, student_key(student_number=ps.student_number)
            )
            print(
                f"3. barcode scan {ps.student_number} -> roster DCID {student.dcid} -> "
                f"PowerSchool STUDENTS.ID {student.powerschool_id} "
                f"(visible ID {student.visible_student_id}, school {student.school_number})"
            )

            when = _school_day(sim)
            submitted = await client.submit_attendance(
                district_id,
                idempotency_key=f"kiosk-1:{uuid.uuid4().hex[:8]}",
                student=student_key(student_number=ps.student_number),
                event="late_check_in",
                occurred_at=when,
                reason="Doctor appointment",
            )
            record = submitted.record
            print(
                f"4. late check-in at {when:%Y-%m-%d %H:%M %Z}: record {record.record_id} is "
                f"{pb.AttendanceState.Name(record.state)} with code {record.attendance_code!r} "
                f"for {record.att_date}"
            )
        rows = [r for r in sim.attendance_rows() if r["studentid"] == str(ps.id)]
        print("5. PowerSchool's ATTENDANCE table now holds:")
        for row in rows:
            print(
                f"     id={row['id']} studentid={row['studentid']} schoolid={row['schoolid']} "
                f"yearid={row['yearid']} att_date={row['att_date']} "
                f"attendance_codeid={row['attendance_codeid']}\n"
                f"     att_comment={row['att_comment']!r}"
            )
        print(f"   ({len(sim.calls)} PowerSchool calls in all)")
        if not rows or record.state != pb.ATTENDANCE_STATE_WRITTEN:
            raise SystemExit("demo failed: the check-in did not reach PowerSchool")
    finally:
        await server.stop()
        await sim.stop()


if __name__ == "__main__":
    asyncio.run(main())
