"""Test helpers: a district wired to a simulator, and gRPC error inspection."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import asyncpg
import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from writeback.v1 import writeback_pb2 as pb
from writeback.v1 import writeback_pb2_grpc

from clients import BearerToken, WritebackError
from service import Settings
from simulators.powerschool import PowerSchoolSimulator, PSStudent, recent_school_day

TZ = "America/Chicago"
# The suite's key for district secrets (conftest also exports it to the processes tests start).
TEST_SECRET_KEY = "dGVzdC1vbmx5LXdyaXRlYmFjay1zZWNyZXQta2V5ISE="
# The bootstrap admin of every service the tests start (in-process by fast_settings,
# `python -m service` by the environment conftest sets).
TEST_ADMIN_TOKEN = "test-bootstrap-admin-token-0123456789abcdef"

# Production patience scaled down so tests see retries, breakers and timeouts in seconds.
FAST = {
    "grpc_host": "127.0.0.1",
    "grpc_port": 0,
    "powerschool_timeout": 2.0,
    "delivery_poll_seconds": 0.2,
    "delivery_backoff_base": 0.2,
    "delivery_backoff_cap": 2.0,
    "breaker_cooldown": 0.5,
    "breaker_max_cooldown": 2.0,
    # Tests share the host: no test server takes the fixed metrics port unless it asks.
    "metrics_port": 0,
    "secret_key": TEST_SECRET_KEY,
    # The simulators listen on plain http on loopback.
    "allow_insecure_upstreams": True,
    # Processes stop at once; tests/test_operations.py measures the drain itself.
    "shutdown_drain": 0.0,
    "bootstrap_admin_token": TEST_ADMIN_TOKEN,
}


def fast_settings(database_url: str, **overrides: Any) -> Settings:
    """Service settings for tests (see FAST)."""
    return Settings(database_url=database_url, **{**FAST, **overrides})


def authed_channel(target: str, token: str = TEST_ADMIN_TOKEN) -> grpc.aio.Channel:
    """An insecure channel whose calls carry ``token`` (the test admin's by default)."""
    return grpc.aio.insecure_channel(target, interceptors=[BearerToken(token)])


def roster_id_of(s: PSStudent) -> str:
    return f"clever-{s.dcid:x}"


def roster_school_of(school_number: int) -> str:
    return f"sch-{school_number}"


def ts(dt: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(dt.astimezone(UTC))
    return out


def local(day: date, hh: int, mm: int, tz: str = TZ) -> datetime:
    return datetime.combine(day, time(hh, mm), tzinfo=ZoneInfo(tz))


@dataclass
class World:
    """One test's district: the stub, its simulator, and handy lookups."""

    stub: writeback_pb2_grpc.WritebackServiceStub
    sim: PowerSchoolSimulator
    district_id: str = field(default_factory=lambda: f"d-{uuid.uuid4().hex[:12]}")

    @property
    def students(self) -> list[PSStudent]:
        return list(self.sim.dataset.students)

    def student(self, school_number: int = 100, index: int = 0) -> PSStudent:
        return [s for s in self.students if s.schoolid == school_number][index]

    def school_day(self, back: int = 1) -> date:
        """A recent date inside one of the simulator's school years (a real school day)."""
        return recent_school_day(self.sim.dataset, back=back)

    def yearid(self, school_number: int, day: date) -> int:
        return next(
            t.yearid
            for t in self.sim.dataset.terms
            if t.schoolid == school_number and t.isyearrec and t.firstday <= day <= t.lastday
        )

    def code_id(self, school_number: int, yearid: int, att_code: str) -> int:
        return next(
            c.id
            for c in self.sim.dataset.codes
            if (c.schoolid, c.yearid, c.att_code) == (school_number, yearid, att_code)
        )

    def district_pb(self, **overrides: Any) -> pb.District:
        schools = overrides.pop(
            "schools",
            [
                pb.School(
                    school_number=number,
                    roster_school_id=roster_school_of(number),
                    name=f"School {number}",
                    writeback_enabled=True,
                    late_check_in_code="T",
                    early_check_out_code="ED",
                    late_check_in_excused_code="TE",
                    early_check_out_excused_code="EDE",
                )
                for number in (100, 200)
            ],
        )
        fields: dict[str, Any] = {
            "district_id": self.district_id,
            "name": "Test District",
            "roster_source": pb.ROSTER_SOURCE_CLEVER,
            "id_mode": pb.ID_MODE_DCID,
            "visible_student_id": pb.VISIBLE_STUDENT_ID_STUDENT_ID,
            "writeback_enabled": True,
            "timezone": TZ,
            "powerschool": pb.PowerSchoolConnection(
                base_url=self.sim.base_url,
                client_id=self.sim.client_id,
                client_secret=self.sim.client_secret,
            ),
            "schools": schools,
        }
        fields.update(overrides)
        return pb.District(**fields)

    async def setup(self, *, sis_field: str = "dcid", **overrides: Any) -> None:
        """Create the district and import every simulator student into its roster,
        with ``sis_id`` carrying the PowerSchool field ``sis_field`` (``dcid`` or ``id``)."""
        await self.stub.UpsertDistrict(
            pb.UpsertDistrictRequest(district=self.district_pb(**overrides))
        )
        await self.stub.ImportStudents(
            pb.ImportStudentsRequest(
                district_id=self.district_id,
                students=[
                    pb.RosterStudent(
                        roster_id=roster_id_of(s),
                        sis_id=str(getattr(s, sis_field)),
                        student_number=s.student_number,
                        first_name=s.first_name,
                        last_name=s.last_name,
                        roster_school_id=roster_school_of(s.schoolid),
                        grade=str(s.grade_level),
                        active=True,
                    )
                    for s in self.students
                ],
            )
        )

    async def resolve(self, **key: Any) -> pb.Student:
        response = await self.stub.ResolveStudent(
            pb.ResolveStudentRequest(district_id=self.district_id, key=pb.StudentKey(**key))
        )
        return response.student

    async def submit(
        self,
        student: PSStudent,
        when: datetime,
        event: int = pb.ATTENDANCE_EVENT_LATE_CHECK_IN,
        *,
        deadline: float = 10.0,
        **extra: Any,
    ) -> pb.SubmitAttendanceResponse:
        """Submit and (by default) wait for the PowerSchool outcome, up to ``deadline`` seconds."""
        fields: dict[str, Any] = {
            "district_id": self.district_id,
            "idempotency_key": uuid.uuid4().hex,
            "student": pb.StudentKey(sis_id=str(student.dcid)),
            "event": event,
            "occurred_at": ts(when),
            "reason": "Doctor appointment",
            "wait_for_writeback": True,
        }
        fields.update(extra)
        return await self.stub.SubmitAttendance(
            pb.SubmitAttendanceRequest(**fields), timeout=deadline
        )

    async def record(self, record_id: str) -> pb.AttendanceRecord:
        response = await self.stub.GetAttendance(
            pb.GetAttendanceRequest(district_id=self.district_id, record_id=record_id)
        )
        return response.record


def failure(err: grpc.aio.AioRpcError) -> WritebackError:
    """The status code and google.rpc details of a failed call, decoded by the client library."""
    return WritebackError.from_rpc_error(err)


@asynccontextmanager
async def fresh_database(database_url: str) -> AsyncIterator[str]:
    """A new database on the test server (its URL), dropped afterwards: no other test's
    service (the session's in-process one included) claims its jobs or schedules its
    districts."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield urlunsplit(urlsplit(database_url)._replace(path=f"/{name}"))
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()
