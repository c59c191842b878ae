"""`python -m clients`, the CLI support staff use, against the running service."""

from __future__ import annotations

import asyncio
import json
import sys

from service import Server
from tests.helpers import World, local


async def cli(server: Server, *args: str) -> tuple[int, dict[str, object], str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "clients",
        "--target",
        f"127.0.0.1:{server.port}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, json.loads(out) if out.strip() else {}, err.decode()


async def test_resolve_submit_stats_and_list(world: World, server: Server) -> None:
    await world.setup()
    ps = world.student()
    code, student, _ = await cli(
        server, "resolve", world.district_id, "--student-number", ps.student_number
    )
    assert code == 0
    assert student["powerschool_id"] == str(ps.id)  # int64 renders as a JSON string
    when = local(world.school_day(), 8, 40).isoformat()
    code, submitted, _ = await cli(
        server, "submit", world.district_id, "--student-number", ps.student_number,
        "--event", "late_check_in", "--at", when, "--reason", "Bus", "--wait",
    )  # fmt: skip
    assert code == 0
    assert submitted["record"]["state"] == "ATTENDANCE_STATE_WRITTEN"  # type: ignore[index]
    record_id = submitted["record"]["record_id"]  # type: ignore[index]
    code, shown, _ = await cli(server, "get-attendance", world.district_id, str(record_id))
    assert code == 0
    history: list[dict[str, str]] = shown["history"]  # type: ignore[assignment]
    assert [(a["kind"], a["outcome"], a["attendance_code"]) for a in history] == [
        ("DELIVERY_JOB_KIND_WRITE", "ATTEMPT_OUTCOME_WRITTEN", "T")
    ]
    code, stats, _ = await cli(server, "stats", world.district_id)
    assert code == 0
    assert stats["written_last_hour"] == "1"
    code, page, _ = await cli(server, "list", world.district_id, "--state", "written")
    assert [r["record_id"] for r in page["records"]] == [record_id]  # type: ignore[attr-defined]


async def test_errors_exit_non_zero_with_the_reasons(world: World, server: Server) -> None:
    code, _, err = await cli(server, "resolve", "bad district!", "--sis-id", "x y")
    assert code == 1
    assert "INVALID_ARGUMENT" in err
    assert "district_id:" in err
    assert "key.sis_id:" in err
