"""A typed asyncio client for ``writeback.v1.WritebackService``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from writeback.v1 import writeback_pb2 as pb
from writeback.v1 import writeback_pb2_grpc

from clients._errors import WritebackError

Resp = TypeVar("Resp")
Event = Literal["late_check_in", "early_check_out"]
_EVENTS: dict[str, pb.AttendanceEvent.ValueType] = {
    "late_check_in": pb.ATTENDANCE_EVENT_LATE_CHECK_IN,
    "early_check_out": pb.ATTENDANCE_EVENT_EARLY_CHECK_OUT,
}
# The server's per-call limit: fewest calls, and 10,000 roster rows (about 1 MB) stay well
# inside gRPC's 4 MB message cap.
IMPORT_BATCH = 10_000


def student_key(
    *,
    sis_id: str | None = None,
    student_number: str | None = None,
    roster_id: str | None = None,
    powerschool_id: int | None = None,
) -> pb.StudentKey:
    """A StudentKey from exactly one of the four identifiers."""
    given = [v for v in (sis_id, student_number, roster_id, powerschool_id) if v is not None]
    if len(given) != 1:
        raise ValueError("give exactly one of sis_id, student_number, roster_id, powerschool_id")
    if powerschool_id is not None:
        return pb.StudentKey(powerschool_id=powerschool_id)
    if sis_id is not None:
        return pb.StudentKey(sis_id=sis_id)
    if student_number is not None:
        return pb.StudentKey(student_number=student_number)
    if roster_id is not None:
        return pb.StudentKey(roster_id=roster_id)
    raise AssertionError("unreachable")  # pragma: no cover


class BearerToken(grpc.aio.UnaryUnaryClientInterceptor):
    """A channel interceptor for code that uses the generated stubs directly: sends
    ``authorization: Bearer <token>`` with every call that does not carry its own."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        """Add the header, unless the call has an ``authorization`` of its own."""
        metadata = list(client_call_details.metadata or ())
        if not any(key == "authorization" for key, _ in metadata):
            metadata.append(self._header)
        return await continuation(client_call_details._replace(metadata=metadata), request)


def tls_credentials(
    *, ca: bytes | None = None, cert: bytes | None = None, key: bytes | None = None
) -> grpc.ChannelCredentials:
    """TLS channel credentials: ``ca`` the PEM CA certificates that sign the service's
    certificate (None: the system's), ``cert`` and ``key`` the client certificate for mTLS."""
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


class WritebackClient:
    """Calls the service with a per-call deadline; failures raise :class:`WritebackError`.

    Use as ``async with WritebackClient("localhost:50051") as client: ...``.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float = 10.0,
        token: str | None = None,
        tls: grpc.ChannelCredentials | None = None,
    ) -> None:
        """``token``: a bearer token sent with every call; ``tls``: channel credentials
        (:func:`tls_credentials`) for a service whose port is TLS."""
        self.target = target
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._channel = (
            grpc.aio.secure_channel(target, tls) if tls else grpc.aio.insecure_channel(target)
        )
        self._stub = writeback_pb2_grpc.WritebackServiceStub(self._channel)

    async def __aenter__(self) -> WritebackClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()

    async def _call(self, method: Callable[..., Awaitable[Resp]], request: Any) -> Resp:
        try:
            return await method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as err:
            raise WritebackError.from_rpc_error(err) from None

    async def upsert_district(self, district: pb.District) -> pb.District:
        """Create or replace a district; returns it as stored (without secrets)."""
        response = await self._call(
            self._stub.UpsertDistrict, pb.UpsertDistrictRequest(district=district)
        )
        return response.district

    async def get_district(self, district_id: str) -> pb.District:
        """A district's configuration (without secrets)."""
        response = await self._call(
            self._stub.GetDistrict, pb.GetDistrictRequest(district_id=district_id)
        )
        return response.district

    async def list_districts(
        self, *, page_size: int = 0, page_token: str = ""
    ) -> pb.ListDistrictsResponse:
        """One page of districts (without secrets); pass ``next_page_token`` back for the next."""
        return await self._call(
            self._stub.ListDistricts,
            pb.ListDistrictsRequest(page_size=page_size, page_token=page_token),
        )

    async def import_students(
        self, district_id: str, students: Sequence[pb.RosterStudent]
    ) -> pb.ImportStudentsResponse:
        """Upsert any number of roster students, in batches the server accepts."""
        total = pb.ImportStudentsResponse()
        for start in range(0, len(students), IMPORT_BATCH):
            part = await self._call(
                self._stub.ImportStudents,
                pb.ImportStudentsRequest(
                    district_id=district_id, students=students[start : start + IMPORT_BATCH]
                ),
            )
            total.created += part.created
            total.updated += part.updated
            total.unchanged += part.unchanged
            total.deactivated += part.deactivated
        return total

    async def resolve_student(self, district_id: str, key: pb.StudentKey) -> pb.Student:
        """The student named by ``key`` with their PowerSchool STUDENTS.ID."""
        response = await self._call(
            self._stub.ResolveStudent, pb.ResolveStudentRequest(district_id=district_id, key=key)
        )
        return response.student

    async def submit_attendance(
        self,
        district_id: str,
        *,
        idempotency_key: str,
        student: pb.StudentKey,
        event: Event,
        occurred_at: datetime,
        school_number: int = 0,
        reason: str = "",
        excused: bool = False,
        comment: str = "",
        checked_out_by: str = "",
        wait: bool = False,
    ) -> pb.SubmitAttendanceResponse:
        """Record a late check-in or early check-out. Safe to retry with the same key.
        ``wait`` answers with PowerSchool's outcome (or PENDING near the deadline)."""
        when = Timestamp()
        when.FromDatetime(occurred_at.astimezone(UTC))
        return await self._call(
            self._stub.SubmitAttendance,
            pb.SubmitAttendanceRequest(
                district_id=district_id,
                idempotency_key=idempotency_key,
                student=student,
                event=_EVENTS[event],
                occurred_at=when,
                school_number=school_number,
                reason=reason,
                excused=excused,
                comment=comment,
                checked_out_by=checked_out_by,
                wait_for_writeback=wait,
            ),
        )

    async def get_attendance(self, district_id: str, record_id: str) -> pb.AttendanceRecord:
        """One attendance record and its delivery state."""
        response = await self._call(
            self._stub.GetAttendance,
            pb.GetAttendanceRequest(district_id=district_id, record_id=record_id),
        )
        return response.record

    async def cancel_attendance(
        self, district_id: str, record_id: str, *, reason: str = "", wait: bool = False
    ) -> pb.AttendanceRecord:
        """Withdraw a record entered by mistake (PowerSchool is put back as it was)."""
        response = await self._call(
            self._stub.CancelAttendance,
            pb.CancelAttendanceRequest(
                district_id=district_id, record_id=record_id, reason=reason, wait_for_writeback=wait
            ),
        )
        return response.record

    async def list_attendance(self, request: pb.ListAttendanceRequest) -> pb.ListAttendanceResponse:
        """One page of records; pass ``next_page_token`` back for the next."""
        return await self._call(self._stub.ListAttendance, request)

    async def retry_attendance(self, request: pb.RetryAttendanceRequest) -> int:
        """Queue one record, or a district's FAILED records in a date range; returns how many."""
        response = await self._call(self._stub.RetryAttendance, request)
        return response.retried

    async def delivery_stats(self, district_id: str) -> pb.DeliveryStats:
        """Backlog, failures, recent writes and breaker state of a district."""
        response = await self._call(
            self._stub.GetDeliveryStats, pb.GetDeliveryStatsRequest(district_id=district_id)
        )
        return response.stats

    async def sync_roster(
        self, district_id: str, *, full: bool = False, background: bool = False
    ) -> pb.SyncRosterResponse:
        """Sync the district's roster from Clever or ClassLink now (or join the running sync).

        Waits for the counts; a sync outlasting the call's timeout goes on, and the call
        raises DEADLINE_EXCEEDED with reason ``SYNC_STILL_RUNNING`` and the ``sync_id`` in its
        metadata. ``background`` answers at once with only the ``sync_id``.
        """
        return await self._call(
            self._stub.SyncRoster,
            pb.SyncRosterRequest(district_id=district_id, full=full, background=background),
        )

    async def check_connection(self, district_id: str) -> pb.CheckConnectionResponse:
        """Probe the district's PowerSchool and roster connections (read-only); every problem
        comes back as a finding, errors first."""
        return await self._call(
            self._stub.CheckConnection, pb.CheckConnectionRequest(district_id=district_id)
        )

    async def get_sync_status(self, district_id: str, sync_id: str = "") -> pb.SyncStatus:
        """A sync job's phase, progress, counts and error (the latest sync without an id)."""
        response = await self._call(
            self._stub.GetSyncStatus,
            pb.GetSyncStatusRequest(district_id=district_id, sync_id=sync_id),
        )
        return response.status

    async def diagnose_mapping(
        self, district_id: str, sample_size: int = 0
    ) -> pb.DiagnoseMappingResponse:
        """Check the district's roster mapping against PowerSchool."""
        return await self._call(
            self._stub.DiagnoseMapping,
            pb.DiagnoseMappingRequest(district_id=district_id, sample_size=sample_size),
        )

    async def create_caller(
        self,
        name: str,
        role: pb.CallerRole.ValueType,
        *,
        district_ids: Sequence[str] = (),
        all_districts: bool = False,
        certificate_only: bool = False,
    ) -> pb.CreateCallerResponse:
        """Create a caller; the answer holds its token, shown this once."""
        return await self._call(
            self._stub.CreateCaller,
            pb.CreateCallerRequest(
                name=name,
                role=role,
                district_ids=district_ids,
                all_districts=all_districts,
                certificate_only=certificate_only,
            ),
        )

    async def revoke_caller(self, caller_id: str) -> pb.Caller:
        """Revoke a caller; its token stops working within seconds on every replica."""
        response = await self._call(
            self._stub.RevokeCaller, pb.RevokeCallerRequest(caller_id=caller_id)
        )
        return response.caller

    async def list_callers(self, *, include_revoked: bool = False) -> list[pb.Caller]:
        """Every caller (without tokens)."""
        response = await self._call(
            self._stub.ListCallers, pb.ListCallersRequest(include_revoked=include_revoked)
        )
        return list(response.callers)

    async def list_audit_events(
        self, district_id: str = "", *, page_size: int = 0, page_token: str = ""
    ) -> pb.ListAuditEventsResponse:
        """One page of audit events, newest first; pass ``next_page_token`` back for more."""
        return await self._call(
            self._stub.ListAuditEvents,
            pb.ListAuditEventsRequest(
                district_id=district_id, page_size=page_size, page_token=page_token
            ),
        )
