"""Configuration: every tunable from the environment, validated before anything starts, and
the README's table kept true to what the settings read."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import socket
import sys
from dataclasses import fields
from pathlib import Path

import grpc
import pytest
from writeback.v1 import writeback_pb2_grpc

from service import Server
from service.config import ConfigError, Settings, variables
from simulators.powerschool import PowerSchoolSimulator
from tests.helpers import World, authed_channel, fast_settings

README = Path(__file__).resolve().parent.parent / "README.md"

KEY = base64.b64encode(bytes(range(32))).decode()
# A valid, non-default value for every variable, and the field value it must give.
VALID = {
    "DATABASE_URL": ("postgresql://u:p@db.example:5432/wb", "postgresql://u:p@db.example:5432/wb"),
    "GRPC_HOST": ("127.0.0.1", "127.0.0.1"),
    "GRPC_PORT": ("6000", 6000),
    "LOG_LEVEL": ("debug", "DEBUG"),
    "LOG_FORMAT": ("Console", "console"),
    "LOG_FLUSH_MS": ("0", 0.0),
    "METRICS_PORT": ("9100", 9100),
    "WRITEBACK_DATA_DIR": ("/var/lib/writeback", Path("/var/lib/writeback")),
    "DB_POOL_SIZE": ("7", 7),
    "SUBMIT_BATCH_MAX_ROWS": ("50", 50),
    "SUBMIT_BATCH_WAIT_MS": ("2.5", 2.5),
    "POWERSCHOOL_TIMEOUT": ("2.5", 2.5),
    "POWERSCHOOL_CONNECTIONS": ("64", 64),
    "POWERSCHOOL_CONNECTIONS_PER_HOST": ("16", 16),
    "SHUTDOWN_GRACE_SECONDS": ("0", 0.0),
    "SHUTDOWN_DRAIN_SECONDS": ("0", 0.0),
    "GRPC_REUSE_PORT": ("1", True),
    "ROLE": ("API", "api"),
    "GRPC_PROCESSES": ("2", 2),
    "OTEL_EXPORTER_OTLP_ENDPOINT": ("http://collector:4317", "http://collector:4317"),
    "ROSTER_PAGE_SIZE": ("250", 250),
    "SYNC_POLL_SECONDS": ("5", 5.0),
    "FULL_SYNC_INTERVAL": ("3600", 3600.0),
    "SYNC_SCHEDULER": ("false", False),
    "WORKER_CONCURRENCY": ("8", 8),
    "DELIVERY_LEASE_SECONDS": ("20", 20.0),
    "DELIVERY_POLL_SECONDS": ("0.5", 0.5),
    "DELIVERY_MAX_AGE_HOURS": ("48", 48.0),
    "DELIVERY_BACKOFF_BASE": ("3", 3.0),
    "DELIVERY_BACKOFF_CAP": ("60", 60.0),
    "BREAKER_THRESHOLD": ("3", 3),
    "BREAKER_COOLDOWN": ("1", 1.0),
    "BREAKER_MAX_COOLDOWN": ("10", 10.0),
    "WRITEBACK_SECRET_KEY": (f" {KEY},{KEY} ", f"{KEY},{KEY}"),
    "WRITEBACK_SECRET_KEY_FILE": ("/run/secrets/writeback-key", "/run/secrets/writeback-key"),
    "ALLOW_INSECURE_UPSTREAMS": ("1", True),
    "UPSTREAM_ALLOWLIST": (
        "PS.District.example., 10.20.0.0/16",
        "ps.district.example,10.20.0.0/16",
    ),
    "AUTH": ("OFF", "off"),
    "WRITEBACK_BOOTSTRAP_ADMIN_TOKEN": ("b" * 40, "b" * 40),
    # Any readable file passes the settings' check; the server reads them as PEM at start.
    "GRPC_TLS_CERT": (__file__, __file__),
    "GRPC_TLS_KEY": (__file__, __file__),
    "GRPC_TLS_CLIENT_CA": (__file__, __file__),
    "GRPC_MAX_RECEIVE_BYTES": ("8388608", 8_388_608),
    "CALLER_RATE_LIMIT": ("50", 50),
    "RPC_DEFAULT_DEADLINE": ("30", 30.0),
    "RPC_MAX_DEADLINE": ("90", 90.0),
    "STUDENT_CACHE_SIZE": ("1000", 1000),
    "UVLOOP": ("false", False),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def refused(environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as err:
        Settings.from_env(environ)
    return str(err.value)


def test_nothing_set_means_every_default() -> None:
    assert Settings.from_env({}) == Settings()
    assert Settings.from_env({name: "  " for name in VALID}) == Settings()


def test_every_settings_field_has_a_variable_and_each_is_read() -> None:
    assert {v.field for v in variables()} == {f.name for f in fields(Settings)}
    assert {v.name for v in variables()} == set(VALID)
    settings = Settings.from_env({name: text for name, (text, _) in VALID.items()})
    for var in variables():
        got = getattr(settings, var.field)
        assert got == VALID[var.name][1], var.name
        assert got != var.default, f"{var.name}: the test value must differ from the default"


def test_several_grpc_processes_need_a_fixed_port_to_share() -> None:
    message = refused({"GRPC_PROCESSES": "2", "GRPC_PORT": "0"})
    assert "GRPC_PROCESSES above 1 needs a fixed GRPC_PORT" in message
    assert Settings.from_env({"GRPC_PROCESSES": "2"}).grpc_processes == 2


def test_shutdown_grace_defaults_to_ten_seconds() -> None:
    assert Settings.from_env({}).shutdown_grace == 10.0
    assert Settings.from_env({"SHUTDOWN_GRACE_SECONDS": "25"}).shutdown_grace == 25.0


def test_unknown_log_level_is_refused() -> None:
    message = refused({"LOG_LEVEL": "LOUD"})
    assert "LOG_LEVEL='LOUD'" in message
    assert "DEBUG, INFO, WARNING, ERROR" in message


def test_every_bad_variable_is_named_at_once_with_what_is_allowed() -> None:
    message = refused(
        {
            "GRPC_PORT": "70000",
            "LOG_LEVEL": "LOUD",
            "LOG_FORMAT": "xml",
            "DB_POOL_SIZE": "many",
            "DELIVERY_LEASE_SECONDS": "0",
            "POWERSCHOOL_TIMEOUT": "-1",
            "WORKER_CONCURRENCY": "0",
            "SYNC_SCHEDULER": "maybe",
            "BREAKER_COOLDOWN": "nan",
            "ROSTER_PAGE_SIZE": "20000",
        }
    )
    assert "\n" not in message
    for expected in (
        "GRPC_PORT='70000' (allowed: an integer from 0 to 65535)",
        "LOG_LEVEL='LOUD'",
        "LOG_FORMAT='xml' (allowed: one of json, console)",
        "DB_POOL_SIZE='many' (allowed: an integer from 1 to 1000)",
        "DELIVERY_LEASE_SECONDS='0' (allowed: a number > 0)",
        "POWERSCHOOL_TIMEOUT='-1' (allowed: a number > 0)",
        "WORKER_CONCURRENCY='0'",
        "SYNC_SCHEDULER='maybe' (allowed: true or false)",
        "BREAKER_COOLDOWN='nan'",
        "ROSTER_PAGE_SIZE='20000' (allowed: an integer from 1 to 10000)",
    ):
        assert expected in message


def test_contradicting_pairs_are_refused() -> None:
    message = refused(
        {
            "DELIVERY_BACKOFF_BASE": "600",
            "BREAKER_COOLDOWN": "60",
            "POWERSCHOOL_CONNECTIONS": "10",
        }
    )
    assert "DELIVERY_BACKOFF_BASE=600 must not exceed DELIVERY_BACKOFF_CAP=300" in message
    assert "BREAKER_COOLDOWN=60 must not exceed BREAKER_MAX_COOLDOWN=30" in message
    assert "POWERSCHOOL_CONNECTIONS_PER_HOST=32 must not exceed POWERSCHOOL_CONNECTIONS=10" in (
        message
    )
    # A pair with an unreadable member is reported once, for the unreadable value.
    message = refused({"DELIVERY_BACKOFF_BASE": "600", "DELIVERY_BACKOFF_CAP": "soon"})
    assert "DELIVERY_BACKOFF_CAP='soon'" in message
    assert "must not exceed" not in message


def test_a_bad_secret_key_is_refused_without_echoing_it() -> None:
    short = base64.b64encode(b"too short, but still a secret").decode()
    message = refused({"WRITEBACK_SECRET_KEY": f"{KEY},{short}"})
    assert "WRITEBACK_SECRET_KEY=(hidden)" in message
    assert short not in message
    assert KEY not in message
    assert short not in repr(Settings(secret_key=short))


def test_an_allowlist_entry_that_is_neither_host_nor_cidr_is_refused() -> None:
    message = refused({"UPSTREAM_ALLOWLIST": "ps.example.org, 10.0.0.0/33"})
    assert "UPSTREAM_ALLOWLIST='ps.example.org, 10.0.0.0/33'" in message
    assert "UPSTREAM_ALLOWLIST" in refused({"UPSTREAM_ALLOWLIST": "https://ps.example.org"})


def test_a_bad_database_url_is_refused_without_echoing_it() -> None:
    message = refused({"DATABASE_URL": "mysql://admin:S3CRET@db/wb"})
    assert "DATABASE_URL=(hidden)" in message
    assert "S3CRET" not in message
    settings = Settings.from_env({"DATABASE_URL": "postgresql://a:S3CRET@h/d", "AUTH": "off"})
    assert "S3CRET" not in repr(settings)


def readme_table() -> dict[str, str]:
    """The README's configuration table: variable name → default cell."""
    text = README.read_text()
    section = text.split("## Configuration (environment)", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"^\| `([A-Z_]+)` \| ([^|]+) \|", line)
        if match:
            rows[match.group(1)] = match.group(2).strip()
    return rows


def test_readme_configuration_table_matches_the_settings() -> None:
    table = readme_table()
    declared = {v.name: v for v in variables()}
    assert sorted(set(table) - set(declared)) == [], "README rows that nothing reads"
    assert sorted(set(declared) - set(table)) == [], "variables missing from the README"
    for name, cell in table.items():
        var = declared[name]
        if cell == "*(unset)*":
            assert var.default == "", name
            continue
        literal = re.fullmatch(r"`([^`]*)`", cell)
        assert literal, f"{name}: default cell {cell!r} is not a `literal`"
        assert var.parse(literal.group(1)) == var.default, name


async def test_python_m_service_refuses_bad_configuration_and_starts_nothing(
    tmp_path: Path,
) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    env = {
        **{k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
        "GRPC_HOST": "127.0.0.1",
        "GRPC_PORT": str(port),
        "WRITEBACK_DATA_DIR": str(data_dir),
        "LOG_LEVEL": "LOUD",
        "DELIVERY_LEASE_SECONDS": "0",
        "DB_POOL_SIZE": "lots",
        "DELIVERY_BACKOFF_BASE": "900",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode != 0
    lines = stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    for name in ("LOG_LEVEL", "DELIVERY_LEASE_SECONDS", "DB_POOL_SIZE", "DELIVERY_BACKOFF_BASE"):
        assert name in lines[0]
    assert stdout == b""
    # Nothing started: no embedded Postgres data directory, and the port is still free.
    assert not data_dir.exists()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


@pytest.mark.parametrize(("grace", "finishes"), [(10.0, True), (0.0, False)])
async def test_shutdown_grace_lets_rpcs_in_flight_finish(
    database_url: str, sim: PowerSchoolSimulator, grace: float, finishes: bool
) -> None:
    """Stopping while a ResolveStudent waits on a slow PowerSchool: within the grace the
    caller still gets its answer; with no grace the call is cut off."""
    srv = Server(fast_settings(database_url, run_scheduler=False, shutdown_grace=grace))
    await srv.start()
    stopped = False
    try:
        async with authed_channel(f"127.0.0.1:{srv.port}") as channel:
            world = World(writeback_pb2_grpc.WritebackServiceStub(channel), sim)
            await world.setup()
            sim.faults.latency = 0.6
            student = world.student()
            call = asyncio.create_task(world.resolve(sis_id=str(student.dcid)))
            await asyncio.sleep(0.3)  # the RPC is now waiting on PowerSchool
            await srv.stop()
            stopped = True
            if finishes:
                assert (await call).powerschool_id == student.id
            else:
                with pytest.raises(grpc.aio.AioRpcError):
                    await call
    finally:
        if not stopped:
            await srv.stop()
