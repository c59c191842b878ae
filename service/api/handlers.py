"""The WritebackService servicer: validates each request, calls the domain, and answers.

Errors are raised as domain errors; the interceptor turns them into statuses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from grpc.aio import ServicerContext
from writeback.v1 import writeback_pb2 as pb
from writeback.v1 import writeback_pb2_grpc

from service.api import _convert, limits, validation
from service.api.auth import current_caller
from service.domain import (
    AttendanceService,
    Audit,
    Callers,
    ConnectionChecker,
    DistrictService,
    MappingDoctor,
    RosterSync,
    StudentResolver,
    SyncJobs,
)
from service.errors import NotFound
from service.models import AttendanceRequest, District

if TYPE_CHECKING:  # the stubs make it generic; the runtime class is not
    _Context = ServicerContext[Any, Any]


class WritebackServicer(writeback_pb2_grpc.WritebackServiceServicer):
    """Implements ``writeback.v1.WritebackService``."""

    def __init__(
        self,
        *,
        districts: DistrictService,
        resolver: StudentResolver,
        attendance: AttendanceService,
        roster_sync: RosterSync,
        sync_jobs: SyncJobs,
        doctor: MappingDoctor,
        checker: ConnectionChecker,
        callers: Callers,
        audit: Audit,
    ) -> None:
        self._districts = districts
        self._resolver = resolver
        self._attendance = attendance
        self._roster_sync = roster_sync
        self._sync_jobs = sync_jobs
        self._doctor = doctor
        self._checker = checker
        self._callers = callers
        self._audit = audit

    async def UpsertDistrict(
        self, request: pb.UpsertDistrictRequest, context: _Context
    ) -> pb.UpsertDistrictResponse:
        """Create or replace a district."""
        validation.check_district(request.district)
        before = await self._existing(request.district.district_id)
        saved = await self._districts.upsert(_convert.district_from_pb(request.district))
        await self._audit.district_saved(current_caller(), before, saved)
        return pb.UpsertDistrictResponse(district=_convert.district_to_pb(saved))

    async def GetDistrict(
        self, request: pb.GetDistrictRequest, context: _Context
    ) -> pb.GetDistrictResponse:
        """Return a district without its secrets."""
        validation.check_district_id(request.district_id)
        # An admin's view: never a cached copy.
        district = await self._districts.get(request.district_id, fresh=True)
        return pb.GetDistrictResponse(district=_convert.district_to_pb(district))

    async def ListDistricts(
        self, request: pb.ListDistrictsRequest, context: _Context
    ) -> pb.ListDistrictsResponse:
        """A page of districts without their secrets."""
        validation.check_list_districts(request)
        caller = current_caller()
        districts, token = await self._districts.page(
            page_size=request.page_size or 100,
            page_token=request.page_token,
            only=None if caller.all_districts else caller.district_ids,
        )
        return pb.ListDistrictsResponse(
            districts=[_convert.district_to_pb(d) for d in districts], next_page_token=token
        )

    async def ImportStudents(
        self, request: pb.ImportStudentsRequest, context: _Context
    ) -> pb.ImportStudentsResponse:
        """Upsert roster students."""
        validation.check_roster_students(request.district_id, list(request.students))
        counts = await self._roster_sync.import_students(
            request.district_id, [_convert.roster_student_from_pb(s) for s in request.students]
        )
        return pb.ImportStudentsResponse(
            created=counts.created,
            updated=counts.updated,
            unchanged=counts.unchanged,
            deactivated=counts.deactivated,
        )

    async def ResolveStudent(
        self, request: pb.ResolveStudentRequest, context: _Context
    ) -> pb.ResolveStudentResponse:
        """Find a student and their STUDENTS.ID."""
        key = validation.check_resolve(request)
        district = await self._districts.get(request.district_id)
        student = await self._resolver.resolve(district, key)
        return pb.ResolveStudentResponse(student=_convert.student_to_pb(district, student))

    async def SubmitAttendance(
        self, request: pb.SubmitAttendanceRequest, context: _Context
    ) -> pb.SubmitAttendanceResponse:
        """Store a check-in/check-out and write it to PowerSchool."""
        key = validation.check_submit(request)
        wait = _wait_budget(context) if request.wait_for_writeback else 0.0
        record, replayed = await self._attendance.submit(
            AttendanceRequest(
                district_id=request.district_id,
                idempotency_key=request.idempotency_key,
                event=_convert.EVENT[request.event],
                occurred_at=_convert.aware(request.occurred_at),
                school_number=request.school_number or None,
                reason=request.reason,
                excused=request.excused,
                comment=request.comment,
                checked_out_by=request.checked_out_by,
            ),
            key,
            wait=wait,
        )
        return pb.SubmitAttendanceResponse(record=_convert.record_to_pb(record), replayed=replayed)

    async def GetAttendance(
        self, request: pb.GetAttendanceRequest, context: _Context
    ) -> pb.GetAttendanceResponse:
        """Return one attendance record."""
        validation.check_get_attendance(request)
        record = await self._attendance.get(request.district_id, request.record_id)
        return pb.GetAttendanceResponse(record=_convert.record_to_pb(record))

    async def SyncRoster(
        self, request: pb.SyncRosterRequest, context: _Context
    ) -> pb.SyncRosterResponse:
        """Start (or join) a roster sync job; answer its sync_id, or wait for its counts."""
        validation.check_district_id(request.district_id)
        sync_id = await self._sync_jobs.start(request.district_id, full=request.full)
        if request.background:
            return pb.SyncRosterResponse(sync_id=sync_id)
        job = await self._sync_jobs.wait(
            request.district_id, sync_id, within=_sync_wait_budget(context)
        )
        return _convert.sync_job_to_response(job)

    async def GetSyncStatus(
        self, request: pb.GetSyncStatusRequest, context: _Context
    ) -> pb.GetSyncStatusResponse:
        """A roster sync job's phase, progress and outcome."""
        validation.check_sync_status(request)
        job = await self._sync_jobs.status(request.district_id, request.sync_id)
        return pb.GetSyncStatusResponse(status=_convert.sync_job_to_pb(job))

    async def DiagnoseMapping(
        self, request: pb.DiagnoseMappingRequest, context: _Context
    ) -> pb.DiagnoseMappingResponse:
        """Check the district's roster mapping against PowerSchool."""
        validation.check_diagnose(request)
        diagnosis = await self._doctor.diagnose(request.district_id, request.sample_size)
        return _convert.diagnosis_to_pb(diagnosis)

    async def CheckConnection(
        self, request: pb.CheckConnectionRequest, context: _Context
    ) -> pb.CheckConnectionResponse:
        """Probe the district's PowerSchool and roster connections, read-only."""
        validation.check_connection(request)
        report = await self._checker.check(request.district_id)
        return _convert.connection_report_to_pb(report)

    async def CancelAttendance(
        self, request: pb.CancelAttendanceRequest, context: _Context
    ) -> pb.CancelAttendanceResponse:
        """Withdraw a check-in entered by mistake."""
        validation.check_cancel(request)
        wait = _wait_budget(context) if request.wait_for_writeback else 0.0
        record = await self._attendance.cancel(
            request.district_id, request.record_id, request.reason, wait=wait
        )
        await self._audit.attendance_cancelled(
            current_caller(), request.district_id, request.record_id, request.reason
        )
        return pb.CancelAttendanceResponse(record=_convert.record_to_pb(record))

    async def ListAttendance(
        self, request: pb.ListAttendanceRequest, context: _Context
    ) -> pb.ListAttendanceResponse:
        """A filtered page of records."""
        where = validation.check_list(request)
        records, token = await self._attendance.list(
            request.district_id,
            where,
            page_size=request.page_size or 100,
            page_token=request.page_token,
        )
        return pb.ListAttendanceResponse(
            records=[_convert.record_to_pb(r) for r in records], next_page_token=token
        )

    async def RetryAttendance(
        self, request: pb.RetryAttendanceRequest, context: _Context
    ) -> pb.RetryAttendanceResponse:
        """Queue records for delivery again."""
        first, last = validation.check_retry(request)
        count = await self._attendance.retry(request.district_id, request.record_id, first, last)
        await self._audit.attendance_retried(
            current_caller(),
            request.district_id,
            request.record_id,
            first=first,
            last=last,
            count=count,
        )
        return pb.RetryAttendanceResponse(retried=count)

    async def GetDeliveryStats(
        self, request: pb.GetDeliveryStatsRequest, context: _Context
    ) -> pb.GetDeliveryStatsResponse:
        """Delivery health of a district."""
        validation.check_district_id(request.district_id)
        stats = await self._attendance.stats(request.district_id)
        return pb.GetDeliveryStatsResponse(stats=_convert.stats_to_pb(stats))

    async def CreateCaller(
        self, request: pb.CreateCallerRequest, context: _Context
    ) -> pb.CreateCallerResponse:
        """Create a caller; its token is in this answer and nowhere else, ever."""
        validation.check_create_caller(request)
        actor = current_caller()
        caller, token = await self._callers.create(
            name=request.name,
            role=_convert.CALLER_ROLE_FROM_PB[request.role],
            district_ids=list(request.district_ids),
            all_districts=request.all_districts,
            created_by=actor.name,
            with_token=not request.certificate_only,
        )
        await self._audit.caller_created(actor, caller)
        return pb.CreateCallerResponse(caller=_convert.caller_to_pb(caller), token=token)

    async def RevokeCaller(
        self, request: pb.RevokeCallerRequest, context: _Context
    ) -> pb.RevokeCallerResponse:
        """Revoke a caller's token and certificate name."""
        validation.check_caller_id(request.caller_id)
        caller = await self._callers.revoke(request.caller_id)
        await self._audit.caller_revoked(current_caller(), caller)
        return pb.RevokeCallerResponse(caller=_convert.caller_to_pb(caller))

    async def ListCallers(
        self, request: pb.ListCallersRequest, context: _Context
    ) -> pb.ListCallersResponse:
        """Every caller, without tokens."""
        callers = await self._callers.list(include_revoked=request.include_revoked)
        return pb.ListCallersResponse(callers=[_convert.caller_to_pb(c) for c in callers])

    async def ListAuditEvents(
        self, request: pb.ListAuditEventsRequest, context: _Context
    ) -> pb.ListAuditEventsResponse:
        """A page of audit events, newest first, within the caller's districts."""
        before = validation.check_list_audit(request)
        caller = current_caller()
        page_size = request.page_size or 100
        events = await self._audit.page(
            district_id=request.district_id,
            visible=None if caller.all_districts else caller.district_ids,
            page_size=page_size + 1,
            before=before,
        )
        token = str(events[page_size - 1].event_id) if len(events) > page_size else ""
        return pb.ListAuditEventsResponse(
            events=[_convert.audit_event_to_pb(e) for e in events[:page_size]],
            next_page_token=token,
        )

    async def _existing(self, district_id: str) -> District | None:
        try:
            return await self._districts.get(district_id, fresh=True)
        except NotFound:
            return None


# Without a deadline, a waiting caller gets at most this long; answers leave this much early.
_MAX_WAIT = 30.0
_MARGIN = 0.25


def _sync_wait_budget(context: _Context) -> float | None:
    remaining = limits.time_remaining(context)
    if remaining is None:
        return None
    return max(remaining - max(_MARGIN, remaining * 0.1), 0.0)


def _wait_budget(context: _Context) -> float:
    remaining = limits.time_remaining(context)
    if remaining is None:
        return _MAX_WAIT
    return max(min(remaining - max(_MARGIN, remaining * 0.1), _MAX_WAIT), 0.0)
