"""writeback (or python -m clients): the CLI admins, support staff and scripts use.
Prints JSON; exits 0 done, 1 failed, 2 bad usage, 3 still pending after --wait."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import grpc
from writeback.v1 import writeback_pb2 as pb

from clients._cli import Exit, UsageError, command, emit, record_outcome, run
from clients._client import IMPORT_BATCH, WritebackClient, student_key
from clients._errors import WritebackError
from clients._inputs import InputError, StudentRow, read_district, read_students
from clients.loadgen import _command as _load_command  # noqa: F401 (registers "load")


def _district_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("district_id")


def _key_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--sis-id")
    group.add_argument("--student-number")
    group.add_argument("--roster-id")
    group.add_argument("--powerschool-id", type=int)


def _key(args: argparse.Namespace) -> pb.StudentKey:
    return student_key(
        sis_id=args.sis_id,
        student_number=args.student_number,
        roster_id=args.roster_id,
        powerschool_id=args.powerschool_id,
    )


def _record_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("district_id")
    parser.add_argument("record_id")


# --- districts and students -------------------------------------------------------------


def _file_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="a YAML file (JSON if it ends in .json)")


@command("district apply", "create or update a district from a YAML or JSON file", _file_arg)
async def _district_apply(client: WritebackClient, args: argparse.Namespace) -> Exit:
    try:
        district = read_district(args.file)
    except InputError as err:
        raise UsageError(str(err)) from None
    emit(await client.upsert_district(district))
    return Exit.DONE


def _district_list_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--page-size", type=int, default=0, help="districts per call")


@command("district list", "every district's configuration (no secrets)", _district_list_args)
async def _district_list(client: WritebackClient, args: argparse.Namespace) -> Exit:
    everything = pb.ListDistrictsResponse()
    token = ""
    while True:
        page = await client.list_districts(page_size=args.page_size, page_token=token)
        everything.districts.extend(page.districts)
        token = page.next_page_token
        if not token:
            break
    emit(everything)
    return Exit.DONE


@command("get-district", "show a district's configuration", _district_arg)
async def _get_district(client: WritebackClient, args: argparse.Namespace) -> Exit:
    emit(await client.get_district(args.district_id))
    return Exit.DONE


def _students_import_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("district_id")
    parser.add_argument("file", type=Path, help="a CSV with a header row (see the README)")


@command("students import", "add or update roster students from a CSV", _students_import_args)
async def _students_import(client: WritebackClient, args: argparse.Namespace) -> Exit:
    try:
        rows = read_students(args.file)
    except InputError as err:
        raise UsageError(str(err)) from None
    total = pb.ImportStudentsResponse()
    for start in range(0, len(rows), IMPORT_BATCH):
        batch = rows[start : start + IMPORT_BATCH]
        try:
            part = await client.import_students(args.district_id, [r.student for r in batch])
        except WritebackError as err:
            _name_csv_lines(err, batch)
            if start:
                print(f"lines before {batch[0].line} were imported", file=sys.stderr)
            raise
        total.created += part.created
        total.updated += part.updated
        total.unchanged += part.unchanged
        total.deactivated += part.deactivated
    emit(total)
    return Exit.DONE


_STUDENT_FIELD = re.compile(r"students\[(\d+)\]\.(.+)")


def _name_csv_lines(err: WritebackError, batch: list[StudentRow]) -> None:
    """Point the server's ``students[i].field`` violations at the CSV's lines."""
    named: dict[str, str] = {}
    for field, why in err.violations.items():
        match = _STUDENT_FIELD.fullmatch(field)
        if match and int(match[1]) < len(batch):
            named[f"line {batch[int(match[1])].line}: {match[2]}"] = why
        else:
            named[field] = why
    err.violations = named


# --- students and attendance ------------------------------------------------------------


def _resolve_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("district_id")
    _key_args(parser)


@command("resolve", "find a student and their STUDENTS.ID", _resolve_args)
async def _resolve(client: WritebackClient, args: argparse.Namespace) -> Exit:
    emit(await client.resolve_student(args.district_id, _key(args)))
    return Exit.DONE


def _submit_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("district_id")
    _key_args(parser)
    parser.add_argument("--event", choices=["late_check_in", "early_check_out"], required=True)
    parser.add_argument("--at", help="ISO time with offset (default: now)")
    parser.add_argument("--reason", default="")
    parser.add_argument("--excused", action="store_true")
    parser.add_argument("--school-number", type=int, default=0)
    parser.add_argument("--idempotency-key", default="", help="default: a new random key")
    parser.add_argument(
        "--wait", action="store_true", help="answer with PowerSchool's outcome (exit 3: pending)"
    )


@command("submit", "record a late check-in or early check-out", _submit_args)
async def _submit(client: WritebackClient, args: argparse.Namespace) -> Exit:
    try:
        occurred = datetime.fromisoformat(args.at) if args.at else datetime.now(UTC)
    except ValueError:
        raise UsageError("--at must be an ISO time, e.g. 2026-11-20T08:47:00-06:00") from None
    if occurred.tzinfo is None:
        raise UsageError("--at needs a UTC offset, e.g. 2026-11-20T08:47:00-06:00")
    response = await client.submit_attendance(
        args.district_id,
        idempotency_key=args.idempotency_key or uuid.uuid4().hex,
        student=_key(args),
        event=args.event,
        occurred_at=occurred,
        school_number=args.school_number,
        reason=args.reason,
        excused=args.excused,
        wait=args.wait,
    )
    emit(response)
    return record_outcome(response.record, waited=args.wait)


@command("get-attendance", "show one attendance record", _record_args)
async def _get_attendance(client: WritebackClient, args: argparse.Namespace) -> Exit:
    emit(await client.get_attendance(args.district_id, args.record_id))
    return Exit.DONE


def _cancel_args(parser: argparse.ArgumentParser) -> None:
    _record_args(parser)
    parser.add_argument("--reason", default="")


@command("cancel", "withdraw a check-in entered by mistake", _cancel_args)
async def _cancel(client: WritebackClient, args: argparse.Namespace) -> Exit:
    emit(await client.cancel_attendance(args.district_id, args.record_id, reason=args.reason))
    return Exit.DONE


def _list_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("district_id")
    parser.add_argument("--state", choices=["pending", "written", "failed", "skipped", "cancelled"])
    parser.add_argument("--school-number", type=int, default=0)
    parser.add_argument("--date-from", default="")
    parser.add_argument("--date-to", default="")
    parser.add_argument("--page-size", type=int, default=50)
    parser.add_argument("--page-token", default="")


@command("list", "list a district's records, newest first", _list_args)
async def _list(client: WritebackClient, args: argparse.Namespace) -> Exit:
    state = f"ATTENDANCE_STATE_{(args.state or 'unspecified').upper()}"
    emit(
        await client.list_attendance(
            pb.ListAttendanceRequest(
                district_id=args.district_id,
                state=pb.AttendanceState.Value(state),
                school_number=args.school_number,
                date_from=args.date_from,
                date_to=args.date_to,
                page_size=args.page_size,
                page_token=args.page_token,
            )
        )
    )
    return Exit.DONE


def _retry_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("district_id")
    parser.add_argument("--record-id", default="")
    parser.add_argument("--date-from", default="")
    parser.add_argument("--date-to", default="")


@command("retry", "send a record, or FAILED records in a range, again", _retry_args)
async def _retry(client: WritebackClient, args: argparse.Namespace) -> Exit:
    retried = await client.retry_attendance(
        pb.RetryAttendanceRequest(
            district_id=args.district_id,
            record_id=args.record_id,
            date_from=args.date_from,
            date_to=args.date_to,
        )
    )
    emit(pb.RetryAttendanceResponse(retried=retried))
    return Exit.DONE


# --- operations -------------------------------------------------------------------------


@command("stats", "a district's delivery backlog and health", _district_arg)
async def _stats(client: WritebackClient, args: argparse.Namespace) -> Exit:
    emit(await client.delivery_stats(args.district_id))
    return Exit.DONE


def _sync_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("district_id")
    parser.add_argument("--full", action="store_true")
    parser.add_argument(
        "--wait", action="store_true", help="show progress on stderr; exit 0 done, 1 failed"
    )


@command("sync", "start a roster sync and print its sync_id, or follow it with --wait", _sync_args)
async def _sync(client: WritebackClient, args: argparse.Namespace) -> Exit:
    started = await client.sync_roster(args.district_id, full=args.full, background=True)
    if not args.wait:
        emit(started)
        return Exit.DONE
    status = await _follow_sync(client, args.district_id, started.sync_id)
    emit(status)
    if status.phase == pb.SYNC_PHASE_FAILED:
        print(f"sync failed: {status.error_reason}: {status.error}", file=sys.stderr)
        return Exit.FAILED
    return Exit.DONE


# Each status poll gets a short deadline of its own: the sync, not the call, takes long.
_POLL_DEADLINE = 5.0
_POLL_EVERY = 0.5
# Poll failures that only mean "not now": the service is restarting or busy.
_TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def _progress_line(status: pb.SyncStatus) -> str:
    phase = pb.SyncPhase.Name(status.phase).removeprefix("SYNC_PHASE_").lower()
    line = (
        f"sync {status.sync_id[:8]} {phase}: {status.pages_done:,} pages, "
        f"{status.students_done:,} students"
    )
    if status.phase == pb.SYNC_PHASE_DONE:
        line += (
            f" (created {status.created:,}, updated {status.updated:,}, deactivated "
            f"{status.deactivated:,}, prefetched {status.prefetched:,}, unresolved "
            f"{status.unresolved:,})"
        )
    return line


async def _follow_sync(client: WritebackClient, district_id: str, sync_id: str) -> pb.SyncStatus:
    """Poll a sync job until it ends, with one progress line on stderr (redrawn in place on
    a terminal, a new line per change otherwise); returns its final status."""
    client.timeout = min(client.timeout, _POLL_DEADLINE)
    redraw = sys.stderr.isatty()
    shown = ""
    while True:
        try:
            status = await client.get_sync_status(district_id, sync_id)
        except WritebackError as err:
            if err.code not in _TRANSIENT:
                raise
            await asyncio.sleep(_POLL_EVERY)
            continue
        line = _progress_line(status)
        if line != shown:
            if redraw:
                print(f"\r\x1b[K{line}", end="", file=sys.stderr, flush=True)
            else:
                print(line, file=sys.stderr, flush=True)
            shown = line
        if status.phase in (pb.SYNC_PHASE_DONE, pb.SYNC_PHASE_FAILED):
            if redraw:
                print(file=sys.stderr)
            return status
        await asyncio.sleep(_POLL_EVERY)


def _diagnose_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("district_id")
    parser.add_argument("--sample-size", type=int, default=0)


@command("diagnose", "check the roster mapping against PowerSchool", _diagnose_args)
async def _diagnose(client: WritebackClient, args: argparse.Namespace) -> Exit:
    emit(await client.diagnose_mapping(args.district_id, args.sample_size))
    return Exit.DONE


@command(
    "check",
    "probe PowerSchool and the roster, read-only; exit 1 on an error or a warning",
    _district_arg,
)
async def _check(client: WritebackClient, args: argparse.Namespace) -> Exit:
    report = await client.check_connection(args.district_id)
    emit(report)
    # People read the findings on stderr; scripts read the JSON on stdout.
    blocking = 0
    for f in report.findings:
        severity = pb.Severity.Name(f.severity).removeprefix("SEVERITY_")
        code = pb.FindingCode.Name(f.code).removeprefix("FINDING_CODE_")
        where = f"school {f.school_number}" if f.school_number else "district"
        print(f"{severity:<7} {where:<12} {code}\n        {f.message}", file=sys.stderr)
        blocking += f.severity in (pb.SEVERITY_ERROR, pb.SEVERITY_WARNING)
    checked = f"{report.schools_checked} school(s) checked"
    print(
        f"{blocking} problem(s) to fix; {checked}." if blocking else f"No problems; {checked}.",
        file=sys.stderr,
    )
    return Exit.FAILED if blocking else Exit.DONE


# --- callers and audit --------------------------------------------------------------------

_ROLES = {
    "admin": pb.CALLER_ROLE_ADMIN,
    "operator": pb.CALLER_ROLE_OPERATOR,
    "writer": pb.CALLER_ROLE_WRITER,
    "reader": pb.CALLER_ROLE_READER,
}


def _caller_create_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="who (a certificate's CN or first SAN names it by this)")
    parser.add_argument("--role", choices=sorted(_ROLES), required=True)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--district", action="append", dest="districts", help="a district it may touch (repeat)"
    )
    where.add_argument("--all-districts", action="store_true")
    parser.add_argument(
        "--certificate-only", action="store_true", help="no token: it calls with a certificate"
    )


@command(
    "caller create",
    "create a caller; prints its token, shown this once only",
    _caller_create_args,
)
async def _caller_create(client: WritebackClient, args: argparse.Namespace) -> Exit:
    emit(
        await client.create_caller(
            args.name,
            _ROLES[args.role],
            district_ids=args.districts or (),
            all_districts=args.all_districts,
            certificate_only=args.certificate_only,
        )
    )
    return Exit.DONE


def _caller_list_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--include-revoked", action="store_true")


@command("caller list", "every caller (never a token)", _caller_list_args)
async def _caller_list(client: WritebackClient, args: argparse.Namespace) -> Exit:
    callers = await client.list_callers(include_revoked=args.include_revoked)
    emit(pb.ListCallersResponse(callers=callers))
    return Exit.DONE


def _caller_revoke_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("caller_id")


@command("caller revoke", "revoke a caller's token and certificate name", _caller_revoke_args)
async def _caller_revoke(client: WritebackClient, args: argparse.Namespace) -> Exit:
    emit(await client.revoke_caller(args.caller_id))
    return Exit.DONE


def _audit_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--district", default="", help="one district's events")
    parser.add_argument("--limit", type=int, default=100, help="newest events shown (default 100)")


@command("audit", "who changed settings, secrets, callers; manual retries and cancels", _audit_args)
async def _audit(client: WritebackClient, args: argparse.Namespace) -> Exit:
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    shown = pb.ListAuditEventsResponse()
    token = ""
    while len(shown.events) < args.limit:
        page = await client.list_audit_events(
            args.district, page_size=min(args.limit - len(shown.events), 500), page_token=token
        )
        shown.events.extend(page.events)
        token = page.next_page_token
        if not token:
            break
    shown.next_page_token = token
    emit(shown)
    return Exit.DONE


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit status (see the module docstring)."""
    return run(argv, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
