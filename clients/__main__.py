"""``python -m clients``: a small CLI for support staff and scripts. Prints JSON."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from datetime import UTC, datetime

import grpc
from google.protobuf.json_format import MessageToJson
from google.protobuf.message import Message
from writeback.v1 import writeback_pb2 as pb

from clients._client import WritebackClient, student_key
from clients._errors import WritebackError


def _key_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--sis-id")
    group.add_argument("--student-number")
    group.add_argument("--roster-id")
    group.add_argument("--powerschool-id", type=int)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m clients", description=__doc__)
    parser.add_argument(
        "--target",
        default=os.environ.get("WRITEBACK_TARGET", "localhost:50051"),
        help="service address (env WRITEBACK_TARGET, default localhost:50051)",
    )
    parser.add_argument("--timeout", type=float, default=10.0)
    commands = parser.add_subparsers(dest="command", required=True)

    get_district = commands.add_parser("get-district", help="show a district's configuration")
    get_district.add_argument("district_id")

    resolve = commands.add_parser("resolve", help="find a student and their STUDENTS.ID")
    resolve.add_argument("district_id")
    _key_args(resolve)

    submit = commands.add_parser("submit", help="record a late check-in or early check-out")
    submit.add_argument("district_id")
    _key_args(submit)
    submit.add_argument("--event", choices=["late_check_in", "early_check_out"], required=True)
    submit.add_argument("--at", help="ISO time with offset (default: now)")
    submit.add_argument("--reason", default="")
    submit.add_argument("--excused", action="store_true")
    submit.add_argument("--school-number", type=int, default=0)
    submit.add_argument("--idempotency-key", default="", help="default: a new random key")
    submit.add_argument("--wait", action="store_true", help="answer with PowerSchool's outcome")

    get_attendance = commands.add_parser("get-attendance", help="show one attendance record")
    get_attendance.add_argument("district_id")
    get_attendance.add_argument("record_id")

    cancel = commands.add_parser("cancel", help="withdraw a check-in entered by mistake")
    cancel.add_argument("district_id")
    cancel.add_argument("record_id")
    cancel.add_argument("--reason", default="")

    listing = commands.add_parser("list", help="list a district's records, newest first")
    listing.add_argument("district_id")
    listing.add_argument(
        "--state", choices=["pending", "written", "failed", "skipped", "cancelled"]
    )
    listing.add_argument("--school-number", type=int, default=0)
    listing.add_argument("--date-from", default="")
    listing.add_argument("--date-to", default="")
    listing.add_argument("--page-size", type=int, default=50)
    listing.add_argument("--page-token", default="")

    retry = commands.add_parser("retry", help="send a record, or FAILED records in a range, again")
    retry.add_argument("district_id")
    retry.add_argument("--record-id", default="")
    retry.add_argument("--date-from", default="")
    retry.add_argument("--date-to", default="")

    stats = commands.add_parser("stats", help="a district's delivery backlog and health")
    stats.add_argument("district_id")

    sync = commands.add_parser(
        "sync", help="start a roster sync and print its sync_id, or follow it with --wait"
    )
    sync.add_argument("district_id")
    sync.add_argument("--full", action="store_true")
    sync.add_argument(
        "--wait", action="store_true", help="show progress on stderr; exit 0 done, 1 failed"
    )

    diagnose = commands.add_parser("diagnose", help="check the roster mapping against PowerSchool")
    diagnose.add_argument("district_id")
    diagnose.add_argument("--sample-size", type=int, default=0)

    _check_parser(commands)
    return parser


def _check_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = commands.add_parser(
        "check",
        help="probe PowerSchool and the roster (read-only); exit 1 on errors or warnings",
    )
    check.add_argument("district_id")
    check.add_argument("--json", action="store_true", help="print the response as JSON")


async def _run(args: argparse.Namespace) -> Message:
    async with WritebackClient(args.target, timeout=args.timeout) as client:
        if args.command == "get-district":
            return await client.get_district(args.district_id)
        if args.command == "get-attendance":
            return await client.get_attendance(args.district_id, args.record_id)
        operations = await _operations(client, args)
        if operations is not None:
            return operations
        key = student_key(
            sis_id=args.sis_id,
            student_number=args.student_number,
            roster_id=args.roster_id,
            powerschool_id=args.powerschool_id,
        )
        if args.command == "resolve":
            return await client.resolve_student(args.district_id, key)
        occurred = datetime.fromisoformat(args.at) if args.at else datetime.now(UTC)
        if occurred.tzinfo is None:
            raise SystemExit("--at needs a UTC offset, e.g. 2026-11-20T08:47:00-06:00")
        return await client.submit_attendance(
            args.district_id,
            idempotency_key=args.idempotency_key or uuid.uuid4().hex,
            student=key,
            event=args.event,
            occurred_at=occurred,
            school_number=args.school_number,
            reason=args.reason,
            excused=args.excused,
            wait=args.wait,
        )


async def _operations(client: WritebackClient, args: argparse.Namespace) -> Message | None:
    """The operations commands; None for the student commands."""
    did = args.district_id
    if args.command == "cancel":
        return await client.cancel_attendance(did, args.record_id, reason=args.reason)
    if args.command == "list":
        state = (
            f"ATTENDANCE_STATE_{args.state.upper()}"
            if args.state
            else "ATTENDANCE_STATE_UNSPECIFIED"
        )
        return await client.list_attendance(
            pb.ListAttendanceRequest(
                district_id=did,
                state=pb.AttendanceState.Value(state),
                school_number=args.school_number,
                date_from=args.date_from,
                date_to=args.date_to,
                page_size=args.page_size,
                page_token=args.page_token,
            )
        )
    if args.command == "retry":
        retried = await client.retry_attendance(
            pb.RetryAttendanceRequest(
                district_id=did,
                record_id=args.record_id,
                date_from=args.date_from,
                date_to=args.date_to,
            )
        )
        return pb.RetryAttendanceResponse(retried=retried)
    if args.command == "stats":
        return await client.delivery_stats(did)
    if args.command == "sync":
        started = await client.sync_roster(did, full=args.full, background=True)
        if not args.wait:
            return started
        return await _follow_sync(client, did, started.sync_id)
    if args.command == "diagnose":
        return await client.diagnose_mapping(did, args.sample_size)
    if args.command == "check":
        return await client.check_connection(did)
    return None


_BLOCKING = (pb.SEVERITY_ERROR, pb.SEVERITY_WARNING)


def _print_check(report: pb.CheckConnectionResponse) -> int:
    """One block per finding, errors first; 1 when any is an error or a warning."""
    for f in report.findings:
        severity = pb.Severity.Name(f.severity).removeprefix("SEVERITY_")
        code = pb.FindingCode.Name(f.code).removeprefix("FINDING_CODE_")
        where = f"school {f.school_number}" if f.school_number else "district"
        print(f"{severity:<7} {where:<12} {code}\n        {f.message}")
    blocking = sum(f.severity in _BLOCKING for f in report.findings)
    print(
        f"{blocking} problem(s) to fix; {report.schools_checked} school(s) checked."
        if blocking
        else f"No problems found; {report.schools_checked} school(s) checked."
    )
    return 1 if blocking else 0


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


def main(argv: list[str] | None = None) -> int:
    """Run one command; exit status 1 with the error on stderr when the call fails."""
    args = _parser().parse_args(argv)
    try:
        message = asyncio.run(_run(args))
    except WritebackError as err:
        print(err, file=sys.stderr)
        for field, why in err.violations.items():
            print(f"  {field}: {why}", file=sys.stderr)
        return 1
    if isinstance(message, pb.CheckConnectionResponse) and not args.json:
        return _print_check(message)
    print(MessageToJson(message, preserving_proto_field_name=True))
    if isinstance(message, pb.CheckConnectionResponse):
        return 1 if any(f.severity in _BLOCKING for f in message.findings) else 0
    if isinstance(message, pb.SyncStatus) and message.phase == pb.SYNC_PHASE_FAILED:
        print(f"sync failed: {message.error_reason}: {message.error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
