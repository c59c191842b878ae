"""`python -m clients`, the CLI admins and support staff use, against the running service."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from writeback.v1 import writeback_pb2 as pb

from clients._cli import to_json
from service import Server
from tests.helpers import World, local, roster_id_of, roster_school_of


async def run_cli(
    server: Server, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Exit status, standard output and standard error of one CLI run."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "clients",
        "--target",
        f"127.0.0.1:{server.port}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def cli(
    server: Server, *args: str, env: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], str]:
    code, out, err = await run_cli(server, *args, env=env)
    return code, json.loads(out) if out.strip() else {}, err


async def test_resolve_submit_stats_and_list(world: World, server: Server) -> None:
    await world.setup()
    ps = world.student()
    code, student, _ = await cli(
        server, "resolve", world.district_id, "--student-number", ps.student_number
    )
    assert code == 0
    assert student["powerschool_id"] == ps.id  # int64 as a JSON number
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
    assert stats["written_last_hour"] == 1
    code, page, _ = await cli(server, "list", world.district_id, "--state", "written")
    assert [r["record_id"] for r in page["records"]] == [record_id]  # type: ignore[attr-defined]


async def test_errors_exit_non_zero_with_the_reasons(world: World, server: Server) -> None:
    code, _, err = await cli(server, "resolve", "bad district!", "--sis-id", "x y")
    assert code == 1
    assert "INVALID_ARGUMENT" in err
    assert "district_id:" in err
    assert "key.sis_id:" in err


def district_yaml(world: World, tmp_path: Path, *, powerschool_secret: str) -> Path:
    """A district file for the world's simulator, the PowerSchool secret given as
    ``powerschool_secret`` (a YAML line) and Clever's from a file beside it."""
    (tmp_path / "clever-secret").write_text("clever-shh-7731\n")
    path = tmp_path / "district.yaml"
    path.write_text(
        f"""\
district_id: {world.district_id}
name: Test District
roster_source: ROSTER_SOURCE_CLEVER
timezone: America/Chicago
writeback_enabled: true
sync_interval: 3600s
powerschool:
  base_url: {world.sim.base_url}
  client_id: "{world.sim.client_id}"
  {powerschool_secret}
clever:
  client_id: clever-app
  client_secret_file: clever-secret
schools:
  - school_number: 100
    roster_school_id: {roster_school_of(100)}
    name: School 100
    writeback_enabled: true
    late_check_in_code: T
    early_check_out_code: ED
"""
    )
    return path


def students_csv(world: World, tmp_path: Path) -> Path:
    """The simulator's school-100 students as a roster CSV saved by a spreadsheet (with a
    byte-order mark); the last one inactive."""
    path = tmp_path / "students.csv"
    school = [s for s in world.students if s.schoolid == 100]
    with path.open("w", newline="", encoding="utf-8-sig") as handle:
        out = csv.writer(handle)
        out.writerow(["roster_id", "sis_id", "student_number", "first_name", "last_name",
                      "roster_school_id", "grade", "active"])  # fmt: skip
        for i, s in enumerate(school):
            out.writerow([roster_id_of(s), s.dcid, s.student_number, s.first_name, s.last_name,
                          roster_school_of(100), s.grade_level,
                          "false" if i == len(school) - 1 else "true"])  # fmt: skip
    return path


async def test_district_applied_from_yaml_is_listed_without_secrets(
    world: World, server: Server, tmp_path: Path
) -> None:
    """`district apply` reads the secrets from the environment and a file, twice gives the
    same district, and `district list` shows it once with no secret anywhere in the output."""
    path = district_yaml(world, tmp_path, powerschool_secret="client_secret_env: TEST_PS_SECRET")
    env = {"TEST_PS_SECRET": world.sim.client_secret}
    code, out, err = await run_cli(server, "district", "apply", str(path), env=env)
    assert code == 0, err
    applied = json.loads(out)
    assert applied["powerschool"]["has_client_secret"] is True
    assert applied["clever"]["has_client_secret"] is True
    assert applied["schools"][0]["school_number"] == 100
    assert applied["sync_interval"] == "3600s"

    code, out_again, err_again = await run_cli(server, "district", "apply", str(path), env=env)
    assert code == 0, err_again
    again = json.loads(out_again)
    assert {k: v for k, v in again.items() if k != "updated_at"} == {
        k: v for k, v in applied.items() if k != "updated_at"
    }

    code, listed_out, list_err = await run_cli(server, "district", "list", "--page-size", "1")
    assert code == 0, list_err
    listed = [
        d for d in json.loads(listed_out)["districts"] if d["district_id"] == world.district_id
    ]
    assert listed == [again]
    for text in (out, err, out_again, err_again, listed_out, list_err):
        assert world.sim.client_secret not in text
        assert "clever-shh-7731" not in text

    # The secret reached the service: a student resolves through PowerSchool's OAuth.
    code, _, err = await cli(
        server, "students", "import", world.district_id, str(students_csv(world, tmp_path))
    )
    assert code == 0, err
    ps = world.student(100, 0)
    code, student, err = await cli(
        server, "resolve", world.district_id, "--student-number", ps.student_number
    )
    assert code == 0, err
    assert student["powerschool_id"] == ps.id


async def test_a_plain_secret_in_the_file_is_refused(
    world: World, server: Server, tmp_path: Path
) -> None:
    path = district_yaml(world, tmp_path, powerschool_secret="client_secret: hunter2-plain")
    code, out, err = await run_cli(server, "district", "apply", str(path))
    assert code == 2
    assert out == ""
    assert "powerschool.client_secret" in err
    assert "client_secret_env" in err
    assert "hunter2-plain" not in err
    code, _, err = await cli(server, "get-district", world.district_id)
    assert code == 1  # nothing was created
    assert "NOT_FOUND" in err


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ("roster_sourse: ROSTER_SOURCE_CLEVER", "roster_sourse"),
        ("id_mode: ID_MODE_DCIDS", "ID_MODE_DCIDS"),
    ],
)
async def test_an_unknown_field_or_enum_in_the_file_is_named(
    world: World, server: Server, tmp_path: Path, bad: str, named: str
) -> None:
    path = district_yaml(world, tmp_path, powerschool_secret="client_secret_env: PS_SECRET")
    path.write_text(path.read_text() + bad + "\n")
    code, out, err = await run_cli(
        server, "district", "apply", str(path), env={"PS_SECRET": world.sim.client_secret}
    )
    assert (code, out) == (2, "")
    assert named in err


async def test_students_import_prints_counts(world: World, server: Server, tmp_path: Path) -> None:
    await world.stub.UpsertDistrict(pb.UpsertDistrictRequest(district=world.district_pb()))
    path = students_csv(world, tmp_path)
    school = [s for s in world.students if s.schoolid == 100]
    code, counts, err = await cli(server, "students", "import", world.district_id, str(path))
    assert code == 0, err
    assert counts == {"created": len(school), "updated": 0, "unchanged": 0, "deactivated": 0}
    code, counts, err = await cli(server, "students", "import", world.district_id, str(path))
    assert code == 0, err
    assert counts == {"created": 0, "updated": 0, "unchanged": len(school), "deactivated": 0}
    inactive = school[-1]
    code, student, err = await cli(
        server, "resolve", world.district_id, "--roster-id", roster_id_of(inactive)
    )
    assert code == 0, err
    assert student["active"] is False


async def test_students_import_sends_batches_of_ten_thousand(
    world: World, server: Server, tmp_path: Path
) -> None:
    """More students than one ImportStudents call takes (10,000) still import."""
    await world.stub.UpsertDistrict(pb.UpsertDistrictRequest(district=world.district_pb()))
    path = tmp_path / "many.csv"
    path.write_text("roster_id,sis_id\n" + "".join(f"r{n},{900_000 + n}\n" for n in range(10_001)))
    code, counts, err = await cli(
        server, "--timeout", "60", "students", "import", world.district_id, str(path)
    )
    assert code == 0, err
    assert counts["created"] == 10_001


async def test_a_bad_csv_imports_nothing(world: World, server: Server, tmp_path: Path) -> None:
    await world.stub.UpsertDistrict(pb.UpsertDistrictRequest(district=world.district_pb()))
    path = tmp_path / "bad.csv"
    path.write_text("roster_id,sis_id,studentnumber\nr1,1001,240001\n")
    code, out, err = await run_cli(server, "students", "import", world.district_id, str(path))
    assert (code, out) == (2, "")
    assert "unknown: studentnumber" in err
    path.write_text("roster_id,sis_id,active\nr1,1001,true\nr2,1002,maybe\n")
    code, out, err = await run_cli(server, "students", "import", world.district_id, str(path))
    assert (code, out) == (2, "")
    assert "line 3: active must be true or false" in err
    path.write_text("roster_id,sis_id\nr1,1001\nr2,1002\nr1,1003\n")
    code, out, err = await run_cli(server, "students", "import", world.district_id, str(path))
    assert (code, out) == (2, "")
    assert "line 4: roster_id repeats line 2" in err
    code, _, _ = await cli(server, "resolve", world.district_id, "--roster-id", "r1")
    assert code == 1  # r1, on a good line, was not imported either


async def test_server_rejections_name_csv_lines(
    world: World, server: Server, tmp_path: Path
) -> None:
    await world.stub.UpsertDistrict(pb.UpsertDistrictRequest(district=world.district_pb()))
    path = tmp_path / "spaces.csv"
    path.write_text("roster_id,sis_id\nr1,1001\nr2,10 02\n")
    code, _, err = await cli(server, "students", "import", world.district_id, str(path))
    assert code == 1
    assert "INVALID_ARGUMENT" in err
    assert "line 3: sis_id:" in err


async def test_submit_exit_codes_follow_the_outcome(world: World, server: Server) -> None:
    """0 written, 1 FAILED, 3 still PENDING when the wait ran out, 2 bad usage."""
    await world.setup()
    when = local(world.school_day(), 8, 40).isoformat()

    def submit(ps_index: int) -> list[str]:
        ps = world.student(100, ps_index)
        return ["submit", world.district_id, "--student-number", ps.student_number,
                "--event", "late_check_in", "--at", when, "--wait"]  # fmt: skip

    code, written, err = await cli(server, *submit(0))
    assert code == 0, err
    assert written["record"]["state"] == "ATTENDANCE_STATE_WRITTEN"

    world.sim.faults.write_forbidden = True
    code, failed, err = await cli(server, *submit(1))
    assert code == 1, err
    assert failed["record"]["state"] == "ATTENDANCE_STATE_FAILED"
    world.sim.faults.write_forbidden = False

    world.sim.faults.write_latency = 5.0
    code, pending, err = await cli(server, "--timeout", "2", *submit(2))
    assert code == 3, err
    assert pending["record"]["state"] == "ATTENDANCE_STATE_PENDING"

    code, out, err = await run_cli(server, "submit", world.district_id, "--sis-id", "1")
    assert (code, out) == (2, "")
    assert "--event" in err
    code, out, err = await run_cli(server, *submit(3)[:-3], "--at", "2026-11-20T08:47:00")
    assert (code, out) == (2, "")
    assert "UTC offset" in err


async def test_json_output_has_zero_fields_and_int64_numbers(world: World, server: Server) -> None:
    await world.setup()
    code, stats, err = await cli(server, "stats", world.district_id)
    assert code == 0, err
    assert stats["pending"] == 0
    assert stats["failed"] == 0
    assert stats["written_last_hour"] == 0
    code, district, err = await cli(server, "get-district", world.district_id)
    assert code == 0, err
    assert district["max_in_flight"] == 0
    assert district["last_sync_error"] == ""
    assert district["schools"][0]["absence_codes"] == []
    assert district["schools"][0]["school_number"] == 100


def test_int64_beyond_a_double_stays_a_string() -> None:
    """A reader parsing numbers as doubles would get a wrong value: such int64s stay strings."""
    counts = to_json(pb.ImportStudentsResponse(created=2**53 - 1, updated=-(2**53)))
    assert counts["created"] == 2**53 - 1
    assert counts["updated"] == str(-(2**53))


async def test_an_error_prints_status_message_and_reason(world: World, server: Server) -> None:
    code, out, err = await run_cli(server, "get-district", world.district_id)
    assert (code, out) == (1, "")
    assert f"NOT_FOUND: district '{world.district_id}' does not exist" in err
    assert "reason: DISTRICT_NOT_FOUND" in err


async def test_a_reused_key_prints_the_reason_and_the_differing_fields(
    world: World, server: Server
) -> None:
    await world.setup()
    ps = world.student()
    when = local(world.school_day(), 8, 40).isoformat()
    submit = ["submit", world.district_id, "--student-number", ps.student_number,
              "--event", "late_check_in", "--at", when, "--idempotency-key", "k-1"]  # fmt: skip
    code, _, err = await cli(server, *submit, "--reason", "Bus")
    assert code == 0, err
    code, out, err = await run_cli(server, *submit, "--reason", "Doctor")
    assert (code, out) == (1, "")
    assert "ALREADY_EXISTS: " in err
    assert "reason: IDEMPOTENCY_KEY_REUSED (fields=reason)" in err
    assert "  reason: differs from the request first sent with this key" in err


async def test_a_json_district_file_with_a_secret_file(
    world: World, server: Server, tmp_path: Path
) -> None:
    """A .json file is read as JSON; a secret comes from the file it names (an unset
    variable is refused) and is the one the service then uses."""
    secret = tmp_path / "secrets" / "ps"
    secret.parent.mkdir()
    secret.write_text(world.sim.client_secret + "\n")
    district = to_json(world.district_pb())
    connection = district.pop("powerschool")
    del connection["client_secret"]
    path = tmp_path / "district.json"
    path.write_text(
        json.dumps({**district, "powerschool": {**connection, "client_secret_env": "TEST_UNSET"}})
    )
    code, out, err = await run_cli(server, "district", "apply", str(path))
    assert (code, out) == (2, "")
    assert "environment variable TEST_UNSET is not set" in err

    path.write_text(
        json.dumps({**district, "powerschool": {**connection, "client_secret_file": str(secret)}})
    )
    code, applied, err = await cli(server, "district", "apply", str(path))
    assert code == 0, err
    assert applied["powerschool"]["has_client_secret"] is True
    ps = world.student()
    code, _, err = await cli(
        server, "students", "import", world.district_id, str(students_csv(world, tmp_path))
    )
    assert code == 0, err
    code, student, err = await cli(server, "resolve", world.district_id, "--sis-id", str(ps.dcid))
    assert code == 0, err
    assert student["powerschool_id"] == ps.id
