"""Callers: who may call, on which districts, in what role; tokens, certificates, the
embedded default, AUTH=off; and the audit trail of what callers changed."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf.json_format import MessageToJson
from grpc_health.v1 import health_pb2, health_pb2_grpc
from writeback.v1 import writeback_pb2 as pb
from writeback.v1 import writeback_pb2_grpc

from clients import BearerToken
from service import Server
from service.api.auth import MINIMUM_ROLE
from service.config import ConfigError, Settings
from simulators.powerschool import PowerSchoolSimulator
from tests.conftest import LogCapture
from tests.helpers import (
    TEST_ADMIN_TOKEN,
    World,
    authed_channel,
    failure,
    fast_settings,
    local,
)

Stub = writeback_pb2_grpc.WritebackServiceStub


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def create_caller(
    stub: Stub, role: int, districts: list[str] | None = None, name: str = ""
) -> pb.CreateCallerResponse:
    response: pb.CreateCallerResponse = await stub.CreateCaller(
        pb.CreateCallerRequest(
            name=name or f"caller-{uuid.uuid4().hex[:8]}",
            role=role,  # type: ignore[arg-type]
            district_ids=districts or [],
            all_districts=districts is None,
        )
    )
    return response


async def refused(call: Any, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() is code, err.value.details()
    assert failure(err.value).reason, "every refusal names its reason"
    return str(err.value.details())


def test_every_rpc_of_the_service_has_a_minimum_role() -> None:
    methods = set(pb.DESCRIPTOR.services_by_name["WritebackService"].methods_by_name)
    assert methods == set(MINIMUM_ROLE)


async def test_a_call_without_credentials_is_unauthenticated_but_health_stays_open(
    server: Server, world: World
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as bare:
        stub = Stub(bare)
        district = world.district_pb()
        await refused(
            stub.UpsertDistrict(pb.UpsertDistrictRequest(district=district)),
            grpc.StatusCode.UNAUTHENTICATED,
        )
        await refused(
            stub.UpsertDistrict(
                pb.UpsertDistrictRequest(district=district),
                metadata=(("authorization", "Bearer wb_0123456789ab.not-a-real-token"),),
            ),
            grpc.StatusCode.UNAUTHENTICATED,
        )
        await refused(
            stub.ListDistricts(pb.ListDistrictsRequest(), metadata=(("authorization", "Basic x"),)),
            grpc.StatusCode.UNAUTHENTICATED,
        )
        health = await health_pb2_grpc.HealthStub(bare).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    # Nothing was saved by the refused call: the admin finds no such district.
    err = await refused(
        world.stub.GetDistrict(pb.GetDistrictRequest(district_id=world.district_id)),
        grpc.StatusCode.NOT_FOUND,
    )
    assert world.district_id in err


async def test_a_writer_for_one_district_cannot_touch_another(
    server: Server, stub: Stub, sim: PowerSchoolSimulator
) -> None:
    mine, other = World(stub, sim), World(stub, sim)
    await mine.setup()
    await other.setup()
    writer = await create_caller(stub, pb.CALLER_ROLE_WRITER, [mine.district_id])
    reader = await create_caller(stub, pb.CALLER_ROLE_READER, [mine.district_id])
    async with (
        authed_channel(f"127.0.0.1:{server.port}", writer.token) as w,
        authed_channel(f"127.0.0.1:{server.port}", reader.token) as r,
    ):
        as_writer, as_reader = World(Stub(w), sim, mine.district_id), World(Stub(r), sim)
        student = mine.student()
        resolved = await as_writer.resolve(sis_id=str(student.dcid))
        assert resolved.powerschool_id == student.id
        submitted = await as_writer.submit(student, as_writer_time(mine))
        record_id = submitted.record.record_id
        assert (await as_writer.record(record_id)).record_id == record_id

        missing = f"d-{uuid.uuid4().hex[:12]}"
        answers = {}
        for district_id in (other.district_id, missing):
            as_writer.district_id = district_id
            answers[district_id] = [
                await refused(call, grpc.StatusCode.PERMISSION_DENIED)
                for call in (
                    as_writer.resolve(sis_id=str(student.dcid)),
                    as_writer.submit(student, as_writer_time(mine)),
                    as_writer.record(record_id),
                    as_writer.stub.GetDistrict(pb.GetDistrictRequest(district_id=district_id)),
                    as_writer.stub.ListAttendance(
                        pb.ListAttendanceRequest(district_id=district_id)
                    ),
                )
            ]
        # The same words for a district that exists and one that does not.
        assert [a.replace(other.district_id, "X") for a in answers[other.district_id]] == [
            a.replace(missing, "X") for a in answers[missing]
        ]

        # Roles: a writer may not retry; a reader may look but not submit.
        as_writer.district_id = mine.district_id
        await refused(
            as_writer.stub.RetryAttendance(
                pb.RetryAttendanceRequest(district_id=mine.district_id, record_id=record_id)
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        as_reader.district_id = mine.district_id
        assert (await as_reader.record(record_id)).record_id == record_id
        await refused(
            as_reader.submit(student, as_writer_time(mine)), grpc.StatusCode.PERMISSION_DENIED
        )
        # ListDistricts shows only the caller's districts.
        listed = await as_reader.stub.ListDistricts(pb.ListDistrictsRequest(page_size=500))
        assert [d.district_id for d in listed.districts] == [mine.district_id]
        # Managing callers needs an admin.
        await refused(
            as_reader.stub.ListCallers(pb.ListCallersRequest()), grpc.StatusCode.PERMISSION_DENIED
        )


def as_writer_time(world: World) -> datetime:
    return local(world.school_day(), 8, 30 + uuid.uuid4().int % 20)


async def test_an_admin_limited_to_districts_cannot_manage_callers(
    server: Server, stub: Stub, world: World
) -> None:
    await world.setup()
    admin = await create_caller(stub, pb.CALLER_ROLE_ADMIN, [world.district_id])
    async with authed_channel(f"127.0.0.1:{server.port}", admin.token) as ch:
        scoped = Stub(ch)
        await scoped.GetDistrict(pb.GetDistrictRequest(district_id=world.district_id))
        await refused(
            scoped.CreateCaller(
                pb.CreateCallerRequest(name="sneaky", role=pb.CALLER_ROLE_ADMIN, all_districts=True)
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        )


async def test_tokens_are_shown_once_stored_hashed_and_revocable(
    server: Server, stub: Stub, database_url: str, logs: LogCapture
) -> None:
    mark = logs.tell()
    created = await create_caller(stub, pb.CALLER_ROLE_READER, None)
    token = created.token
    assert token.startswith(created.caller.token_prefix + ".")
    listed = await stub.ListCallers(pb.ListCallersRequest())
    assert created.caller.caller_id in {c.caller_id for c in listed.callers}
    assert token not in MessageToJson(listed)
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT * FROM callers")
    finally:
        await conn.close()
    assert token not in repr([dict(r) for r in rows])

    async with authed_channel(f"127.0.0.1:{server.port}", token) as ch:
        mine = Stub(ch)
        await mine.ListDistricts(pb.ListDistrictsRequest())
        await stub.RevokeCaller(pb.RevokeCallerRequest(caller_id=created.caller.caller_id))
        # The revoking process forgets it at once.
        await refused(
            mine.ListDistricts(pb.ListDistrictsRequest()), grpc.StatusCode.UNAUTHENTICATED
        )
    again = await stub.ListCallers(pb.ListCallersRequest(include_revoked=True))
    revoked = next(c for c in again.callers if c.caller_id == created.caller.caller_id)
    assert revoked.HasField("revoked_at")
    # Its calls were logged under its name, never with the token.
    lines = [json.loads(line) for line in logs.since(mark).splitlines() if line.startswith("{")]
    assert any(line.get("caller") == created.caller.name for line in lines)
    assert token not in logs.since(mark)
    assert TEST_ADMIN_TOKEN not in logs.since(mark)


@pytest.fixture
async def service_process(own_database: str) -> AsyncIterator[int]:
    """``python -m service`` on its own database; yields its gRPC port."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": own_database,
        "GRPC_HOST": "127.0.0.1",
        "GRPC_PORT": str(port),
        "SYNC_SCHEDULER": "false",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", env=env, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        async with authed_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), timeout=30)
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), timeout=30)


async def test_a_revoked_token_stops_working_on_another_process_within_5_seconds(
    own_database: str, service_process: int
) -> None:
    first = Server(fast_settings(own_database, run_scheduler=False))
    await first.start()
    try:
        async with (
            authed_channel(f"127.0.0.1:{first.port}") as admin_channel,
            authed_channel(f"127.0.0.1:{service_process}") as probe,
        ):
            created = await create_caller(Stub(admin_channel), pb.CALLER_ROLE_READER, None)
            other = Stub(probe)
            token = (("authorization", f"Bearer {created.token}"),)
            # The other process has verified (and may keep) the token...
            await other.ListDistricts(pb.ListDistrictsRequest(), metadata=token)
            await other.ListDistricts(pb.ListDistrictsRequest(), metadata=token)
            await Stub(admin_channel).RevokeCaller(
                pb.RevokeCallerRequest(caller_id=created.caller.caller_id)
            )
            revoked_at = time.monotonic()
            code = grpc.StatusCode.OK
            while code is grpc.StatusCode.OK:
                assert time.monotonic() - revoked_at < 5, "still accepted 5 s after revocation"
                await asyncio.sleep(0.1)
                try:
                    await other.ListDistricts(pb.ListDistrictsRequest(), metadata=token)
                except grpc.aio.AioRpcError as err:
                    code = err.code()
            assert code is grpc.StatusCode.UNAUTHENTICATED
    finally:
        await first.stop()


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    assert openssl is not None
    subprocess.run(  # noqa: S603  (openssl with our own arguments)
        [openssl, *args], cwd=cwd, check=True, capture_output=True
    )


def make_ca(tmp: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN={name}", "-days", "1",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=tmp,
    )  # fmt: skip


def make_cert(tmp: Path, name: str, ca: str, extensions: str) -> None:
    (tmp / f"{name}.ext").write_text(extensions + "\n")
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
        cwd=tmp,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.crt", "-days", "1", "-extfile", f"{name}.ext",
        cwd=tmp,
    )  # fmt: skip


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_mtls_names_the_caller_and_refuses_an_untrusted_certificate(
    tmp_path: Path, own_database: str, sim: PowerSchoolSimulator
) -> None:
    make_ca(tmp_path, "trusted-ca")
    make_ca(tmp_path, "rogue-ca")
    make_cert(
        tmp_path,
        "server",
        "trusted-ca",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth",
    )
    for name, ca in (
        ("kiosk-1", "trusted-ca"),
        ("stranger", "trusted-ca"),
        ("kiosk-2", "rogue-ca"),
    ):
        make_cert(tmp_path, name, ca, "extendedKeyUsage=clientAuth")
    read = lambda name: (tmp_path / name).read_bytes()  # noqa: E731

    def credentials(client: str | None) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=read("trusted-ca.crt"),
            private_key=read(f"{client}.key") if client else None,
            certificate_chain=read(f"{client}.crt") if client else None,
        )

    server = Server(
        fast_settings(
            own_database,
            run_scheduler=False,
            tls_cert=str(tmp_path / "server.crt"),
            tls_key=str(tmp_path / "server.key"),
            tls_client_ca=str(tmp_path / "trusted-ca.crt"),
        )
    )
    await server.start()
    target = f"127.0.0.1:{server.port}"
    try:
        # The admin, too, needs a trusted certificate to reach the port; its token names it.
        async with grpc.aio.secure_channel(
            target, credentials("kiosk-1"), interceptors=[BearerToken(TEST_ADMIN_TOKEN)]
        ) as ch:
            admin = Stub(ch)
            world = World(admin, sim)
            await world.setup()
            kiosk = await admin.CreateCaller(
                pb.CreateCallerRequest(
                    name="kiosk-1",
                    role=pb.CALLER_ROLE_READER,
                    district_ids=[world.district_id],
                    certificate_only=True,
                )
            )
        async with grpc.aio.secure_channel(target, credentials("kiosk-1")) as ch:
            listed = await Stub(ch).ListDistricts(pb.ListDistrictsRequest())
            assert [d.district_id for d in listed.districts] == [world.district_id]
        # The CLI, too, with no token: the certificate names it.
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "clients", "--target", target,
            "--tls-ca", str(tmp_path / "trusted-ca.crt"),
            "--tls-cert", str(tmp_path / "kiosk-1.crt"),
            "--tls-key", str(tmp_path / "kiosk-1.key"),
            "district", "list",
            env={k: v for k, v in os.environ.items() if k != "WRITEBACK_TOKEN"}
            | {"WRITEBACK_DATA_DIR": str(tmp_path / "no-data")},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        assert [d["district_id"] for d in json.loads(out)["districts"]] == [world.district_id]
        # Revoked: the certificate names no live caller from that moment on.
        async with grpc.aio.secure_channel(
            target, credentials("kiosk-1"), interceptors=[BearerToken(TEST_ADMIN_TOKEN)]
        ) as ch:
            await Stub(ch).RevokeCaller(pb.RevokeCallerRequest(caller_id=kiosk.caller.caller_id))
        async with grpc.aio.secure_channel(target, credentials("kiosk-1")) as ch:
            await refused(
                Stub(ch).ListDistricts(pb.ListDistrictsRequest()),
                grpc.StatusCode.UNAUTHENTICATED,
            )
        # Trusted, but naming no caller.
        async with grpc.aio.secure_channel(target, credentials("stranger")) as ch:
            await refused(
                Stub(ch).ListDistricts(pb.ListDistrictsRequest()),
                grpc.StatusCode.UNAUTHENTICATED,
            )
        # Signed by another CA, or no certificate at all: the handshake fails.
        for client in ("kiosk-2", None):
            async with grpc.aio.secure_channel(target, credentials(client)) as ch:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await Stub(ch).ListDistricts(pb.ListDistrictsRequest(), timeout=5)
                assert err.value.code() is grpc.StatusCode.UNAVAILABLE
        # And plaintext is not spoken at all.
        async with grpc.aio.insecure_channel(target) as ch:
            with pytest.raises(grpc.aio.AioRpcError):
                await health_pb2_grpc.HealthStub(ch).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
    finally:
        await server.stop()


def test_an_external_database_needs_an_identity_source_unless_auth_is_off() -> None:
    url = {"DATABASE_URL": "postgresql://u:p@db.example/wb"}
    with pytest.raises(ConfigError) as err:
        Settings.from_env(url)
    assert "WRITEBACK_BOOTSTRAP_ADMIN_TOKEN or GRPC_TLS_CLIENT_CA" in str(err.value)
    assert Settings.from_env({**url, "WRITEBACK_BOOTSTRAP_ADMIN_TOKEN": "t" * 32}).auth == "on"
    assert Settings.from_env({**url, "AUTH": "off"}).auth == "off"
    # A short bootstrap token is refused, and never echoed.
    with pytest.raises(ConfigError) as err:
        Settings.from_env({**url, "WRITEBACK_BOOTSTRAP_ADMIN_TOKEN": "hunter2"})
    assert "WRITEBACK_BOOTSTRAP_ADMIN_TOKEN=(hidden)" in str(err.value)
    assert "hunter2" not in str(err.value)
    assert "t" * 32 not in repr(
        Settings.from_env({**url, "WRITEBACK_BOOTSTRAP_ADMIN_TOKEN": "t" * 32})
    )


async def test_auth_off_lets_anyone_in_and_says_so_at_every_start(
    own_database: str, logs: LogCapture
) -> None:
    mark = logs.tell()
    server = Server(fast_settings(own_database, run_scheduler=False, auth="off"))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as bare:
            await Stub(bare).ListDistricts(pb.ListDistrictsRequest())
    finally:
        await server.stop()
    warnings = [
        json.loads(line)
        for line in logs.since(mark).splitlines()
        if line.startswith("{") and '"auth_off"' in line
    ]
    assert warnings
    assert warnings[0]["level"] == "warning"


async def _cli(port: int, data_dir: Path, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if k != "WRITEBACK_TOKEN"}
    env["WRITEBACK_DATA_DIR"] = str(data_dir)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "clients", "--target", f"127.0.0.1:{port}", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _embedded_service(data_dir: Path, port: int) -> asyncio.subprocess.Process:
    # As `make run` starts it: no DATABASE_URL, no bootstrap token, no TLS.
    drop = {"DATABASE_URL", "WRITEBACK_BOOTSTRAP_ADMIN_TOKEN", "WRITEBACK_TOKEN"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env |= {
        "WRITEBACK_DATA_DIR": str(data_dir),
        "GRPC_HOST": "127.0.0.1",
        "GRPC_PORT": str(port),
        "SYNC_SCHEDULER": "false",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", env=env, stderr=asyncio.subprocess.DEVNULL
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await asyncio.wait_for(channel.channel_ready(), timeout=90)
    return proc


async def _stop(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(proc.wait(), timeout=60)


async def test_the_embedded_database_leaves_an_admin_token_the_cli_picks_up(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    proc = await _embedded_service(data_dir, port)
    try:
        token_file = data_dir / "admin-token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        code, out, err = await _cli(port, data_dir, "district", "list")
        assert code == 0, err
        assert json.loads(out) == {"districts": [], "next_page_token": ""}
        # Without the file (another data directory) and no token: refused.
        code, _, err = await _cli(port, tmp_path / "elsewhere", "district", "list")
        assert code == 1
        assert "UNAUTHENTICATED" in err
    finally:
        await _stop(proc)
    # A second start keeps the same token; the CLI manages callers with it.
    proc = await _embedded_service(data_dir, port)
    try:
        assert (data_dir / "admin-token").read_text().strip() == token
        code, out, err = await _cli(
            port, data_dir, "caller", "create", "kiosk", "--role", "writer", "--district", "d1"
        )
        assert code == 0, err
        kiosk = json.loads(out)
        assert kiosk["token"].startswith(kiosk["caller"]["token_prefix"] + ".")
        code, out, err = await _cli(port, data_dir, "caller", "list")
        assert code == 0, err
        assert kiosk["token"] not in out
        assert "kiosk" in {c["name"] for c in json.loads(out)["callers"]}
        code, out, err = await _cli(
            port, data_dir, "caller", "revoke", kiosk["caller"]["caller_id"]
        )
        assert code == 0, err
        assert json.loads(out)["revoked_at"]
    finally:
        await _stop(proc)
    # A lost token file is made again, with a new token.
    token_file.unlink()
    proc = await _embedded_service(data_dir, port)
    try:
        assert token_file.read_text().strip() != token
        code, _, err = await _cli(port, data_dir, "district", "list")
        assert code == 0, err
    finally:
        await _stop(proc)


async def test_the_audit_log_shows_who_changed_what_and_never_a_secret(
    server: Server, stub: Stub, world: World
) -> None:
    await world.setup()
    alice = await create_caller(
        stub, pb.CALLER_ROLE_ADMIN, [world.district_id], name=f"alice-{uuid.uuid4().hex[:6]}"
    )
    new_secret = f"NEW-SECRET-{uuid.uuid4().hex}"
    async with authed_channel(f"127.0.0.1:{server.port}", alice.token) as ch:
        as_alice = Stub(ch)
        changed = world.district_pb(name="Renamed District")
        changed.powerschool.client_secret = new_secret
        changed.schools[0].late_check_in_code = "TX"
        await as_alice.UpsertDistrict(pb.UpsertDistrictRequest(district=changed))
        # Saving the same settings again changes nothing and records nothing.
        await as_alice.UpsertDistrict(pb.UpsertDistrictRequest(district=changed))
        student = world.student()
        record = (await world.submit(student, as_writer_time(world))).record
        day = world.school_day().isoformat()
        await as_alice.RetryAttendance(
            pb.RetryAttendanceRequest(district_id=world.district_id, date_from=day, date_to=day)
        )
        await as_alice.CancelAttendance(
            pb.CancelAttendanceRequest(
                district_id=world.district_id, record_id=record.record_id, reason="wrong student"
            )
        )
        events = await as_alice.ListAuditEvents(
            pb.ListAuditEventsRequest(district_id=world.district_id)
        )
    assert new_secret not in MessageToJson(events)
    actions = [(e.action, e.caller_name) for e in events.events]
    assert actions == [
        ("attendance_cancelled", alice.caller.name),
        ("attendance_retried", alice.caller.name),
        ("district_updated", alice.caller.name),
        ("district_created", "bootstrap-admin"),
    ]
    update = events.events[2]
    assert update.caller_id == alice.caller.caller_id
    assert set(update.changed_fields) == {
        "name",
        "powerschool.client_secret",
        "schools[100].late_check_in_code",
    }
    assert update.details["powerschool.client_secret"] == "changed"
    assert update.details["schools[100].late_check_in_code"] == "TX"
    assert events.events[0].details["reason"] == "wrong student"
    assert events.events[0].target == record.record_id
    # The record failed on the code TX (unknown to PowerSchool), so the retry queued it.
    assert events.events[1].details == {"retried": "1", "date_from": day, "date_to": day}
    # Alice's whole log is her district's; the CLI prints it.
    code, out, err = await _cli_as(server, alice.token, "audit", "--limit", "2")
    assert code == 0, err
    printed = json.loads(out)
    assert [e["action"] for e in printed["events"]] == [
        "attendance_cancelled",
        "attendance_retried",
    ]
    assert printed["next_page_token"]
    code, out, err = await _cli_as(server, alice.token, "audit")
    assert code == 0, err
    assert {e["district_id"] for e in json.loads(out)["events"]} == {world.district_id}
    # The caller's creation is in the whole log, which only an all-districts admin reads.
    everything = await stub.ListAuditEvents(pb.ListAuditEventsRequest(page_size=500))
    assert any(
        e.action == "caller_created" and e.target == alice.caller.caller_id
        for e in everything.events
    )


async def _cli_as(server: Server, token: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "clients", "--target", f"127.0.0.1:{server.port}", *args,
        env={**os.environ, "WRITEBACK_TOKEN": token},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
