"""`make demo`: the writeback service end to end, on loopback, against simulators.

A PowerSchool simulator, a Clever and a ClassLink simulator seeded from the same district,
and the service (embedded PostgreSQL under .data/demo, or DATABASE_URL). For a Clever
district, a ClassLink district, and a Clever district whose Student ID was mapped to the
wrong PowerSchool field: sync the roster, diagnose the mapping, then scan a barcode and
record a late check-in, and show what PowerSchool now holds.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import replace
from datetime import UTC, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

# Before grpc is imported, which reads it: the demo forks (embedded Postgres) while gRPC is
# busy, and gRPC's fork handlers (for fork without exec) would print a warning each time.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc
from writeback.v1 import writeback_pb2 as pb
from writeback.v1 import writeback_pb2_grpc

from clients import BearerToken
from service import Server, Settings
from service.config import ConfigError
from service.logs import configure
from simulators.classlink import ClassLinkSimulator
from simulators.clever import CleverSimulator
from simulators.powerschool import PowerSchoolSimulator, demo_dataset, recent_school_day
from simulators.roster import roster_from_powerschool, school_roster_id

TZ = "America/Chicago"


def _school_day(sim: PowerSchoolSimulator) -> datetime:
    """Yesterday (or the last day of the school year), 08:47 local time."""
    return datetime.combine(recent_school_day(sim.dataset), time(8, 47), tzinfo=ZoneInfo(TZ))


def _district(
    district_id: str, source: str, sim: PowerSchoolSimulator, **roster: object
) -> pb.District:
    return pb.District(
        district_id=district_id,
        name=f"Demo {source.title()} District",
        roster_source=pb.ROSTER_SOURCE_CLEVER if source == "clever" else pb.ROSTER_SOURCE_CLASSLINK,
        visible_student_id=pb.VISIBLE_STUDENT_ID_STUDENT_NUMBER,
        writeback_enabled=True,
        timezone=TZ,
        powerschool=pb.PowerSchoolConnection(
            base_url=sim.base_url, client_id=sim.client_id, client_secret=sim.client_secret
        ),
        schools=[
            pb.School(
                school_number=s.school_number,
                roster_school_id=school_roster_id(source, s.school_number),  # type: ignore[arg-type]
                name=s.name,
                writeback_enabled=True,
                late_check_in_code="T",
                early_check_out_code="ED",
            )
            for s in sim.dataset.schools
        ],
        **roster,  # type: ignore[arg-type]
    )


async def _walk_through(
    stub: writeback_pb2_grpc.WritebackServiceStub,
    sim: PowerSchoolSimulator,
    title: str,
    district: pb.District,
    student_index: int,
) -> None:
    did = district.district_id
    print(f"\n== {title} ({did})")
    await stub.UpsertDistrict(pb.UpsertDistrictRequest(district=district))
    synced = await stub.SyncRoster(pb.SyncRosterRequest(district_id=did), timeout=120)
    print(
        f"   sync: {synced.created} students created, {synced.prefetched} STUDENTS.IDs "
        f"prefetched, {synced.unresolved} unresolved, in "
        f"{synced.duration.ToTimedelta().total_seconds():.2f} s"
    )
    diagnosis = await stub.DiagnoseMapping(pb.DiagnoseMappingRequest(district_id=did))
    if not diagnosis.findings:
        print(
            f"   diagnosis: {diagnosis.sampled} students checked against PowerSchool, no problems"
        )
    for finding in diagnosis.findings:
        print(f"   diagnosis [{pb.Severity.Name(finding.severity)[9:]}] {finding.message}")
    ps = sim.dataset.students[student_index]
    try:
        student = await stub.ResolveStudent(
            pb.ResolveStudentRequest(
                district_id=did, key=pb.StudentKey(student_number=ps.student_number)
            )
        )
    except grpc.aio.AioRpcError as err:
        print(f"   barcode scan {ps.student_number}: {err.code().name}: {err.details()}")
        return
    s = student.student
    print(
        f"   barcode scan {ps.student_number} -> DCID {s.dcid} -> STUDENTS.ID {s.powerschool_id}"
        f" (staff see {s.visible_student_id}, school {s.school_number})"
    )
    when = _school_day(sim)
    submitted = await stub.SubmitAttendance(
        pb.SubmitAttendanceRequest(
            district_id=did,
            idempotency_key=f"kiosk-1:{uuid.uuid4().hex[:8]}",
            student=pb.StudentKey(student_number=ps.student_number),
            event=pb.ATTENDANCE_EVENT_LATE_CHECK_IN,
            occurred_at=_timestamp(when),
            reason="Doctor appointment",
            wait_for_writeback=True,
        ),
        timeout=15,
    )
    record = submitted.record
    print(
        f"   late check-in {when:%Y-%m-%d %H:%M %Z}: {pb.AttendanceState.Name(record.state)}, "
        f"code {record.attendance_code!r} for {record.att_date}"
    )
    for row in sim.attendance_rows():
        if row["studentid"] == str(ps.id) and row["att_date"] == record.att_date:
            print(
                f"   PowerSchool ATTENDANCE id={row['id']} studentid={row['studentid']} "
                f"schoolid={row['schoolid']} yearid={row['yearid']} "
                f"attendance_codeid={row['attendance_codeid']}\n"
                f"     att_comment={row['att_comment']!r}"
            )


def _timestamp(when: datetime) -> object:
    from google.protobuf.timestamp_pb2 import Timestamp  # noqa: PLC0415

    ts = Timestamp()
    ts.FromDatetime(when.astimezone(UTC))
    return ts


def _settings() -> Settings:
    """The environment's settings (LOG_LEVEL and LOG_FORMAT included; the demo's own
    narrative wants warnings only, for humans, unless told otherwise) on a loopback port."""
    env = dict(os.environ)
    env["LOG_LEVEL"] = env.get("LOG_LEVEL", "").strip() or "WARNING"
    env["LOG_FORMAT"] = env.get("LOG_FORMAT", "").strip() or "console"
    try:
        settings = Settings.from_env(env)
    except ConfigError as exc:
        raise SystemExit(f"demo: {exc}") from None
    return replace(
        settings,
        data_dir=Path(".data/demo"),
        grpc_host="127.0.0.1",
        grpc_port=0,
        # The simulators answer plain http on loopback.
        allow_insecure_upstreams=True,
        # Beside a running service, the demo must not take its metrics port.
        metrics_port=0,
    )


async def main() -> None:
    settings = _settings()
    configure(settings.log_level, settings.log_format)
    dataset = demo_dataset(students_per_school=25)
    ps_sim = PowerSchoolSimulator(dataset, district_timezone=TZ)
    await ps_sim.start()
    clever = CleverSimulator(roster_from_powerschool(dataset, "clever"))
    # This district's SIS connection maps STUDENTS.ID to Clever's Student ID by mistake.
    wrong = CleverSimulator(roster_from_powerschool(dataset, "clever", sis_field="id"))
    people = roster_from_powerschool(dataset, "classlink")
    people[:3] = [replace(p, student_number="") for p in people[:3]]  # identifiers left empty
    classlink = ClassLinkSimulator(people)
    for sim in (clever, wrong, classlink):
        await sim.start()
    server = Server(settings)
    await server.start()
    # On the embedded database the service has left its local admin token in the data dir.
    token = settings.bootstrap_admin_token or (
        (settings.data_dir / "admin-token").read_text().strip()
    )
    print(
        f"PowerSchool simulator {ps_sim.base_url}, Clever {clever.base_url}, ClassLink "
        f"{classlink.base_url}; service on 127.0.0.1:{server.port}"
    )
    try:
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{server.port}", interceptors=[BearerToken(token)]
        ) as channel:
            stub = writeback_pb2_grpc.WritebackServiceStub(channel)
            suffix = uuid.uuid4().hex[:4]
            for index, (title, sim, source, roster) in enumerate(
                (
                    ("Clever district, Student ID = DCID", clever, "clever", "clever"),
                    ("ClassLink district, Sourced ID = DCID", classlink, "classlink", "classlink"),
                    (
                        "Clever district whose Student ID holds STUDENTS.ID",
                        wrong,
                        "clever",
                        "clever",
                    ),
                )
            ):
                connection = (
                    pb.CleverConnection(
                        base_url=sim.base_url,
                        client_id=sim.client_id,
                        client_secret=sim.client_secret,
                        clever_district_id=sim.district_id,  # type: ignore[attr-defined]
                    )
                    if roster == "clever"
                    else pb.ClassLinkConnection(
                        endpoint_url=sim.base_url,
                        client_id=sim.client_id,
                        client_secret=sim.client_secret,
                    )
                )
                district = _district(
                    f"demo-{source}-{len(title)}-{suffix}", source, ps_sim, **{roster: connection}
                )
                # The three districts share one simulated PowerSchool: use different students.
                await _walk_through(stub, ps_sim, title, district, 3 + index)
        print(f"\n({len(ps_sim.calls)} PowerSchool calls in all)")
    finally:
        await server.stop()
        for sim in (clever, wrong, classlink):
            await sim.stop()
        await ps_sim.stop()


if __name__ == "__main__":
    asyncio.run(main())
