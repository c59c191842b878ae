"""District secrets are sealed at rest: nothing in Postgres holds one in plain text, old
plaintext is sealed at start, keys rotate with ``python -m service rekey``, and a sealed
value copied to another district does not open."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import uuid
from typing import Any

import asyncpg
import grpc
import pytest
from writeback.v1 import writeback_pb2 as pb
from writeback.v1 import writeback_pb2_grpc

from service import Server
from service.app import StartupError
from simulators.powerschool import PowerSchoolSimulator
from tests.conftest import LogCapture
from tests.helpers import World, authed_channel, failure, fast_settings

KEY_A = base64.b64encode(b"A" * 32).decode()
KEY_B = base64.b64encode(b"B" * 32).decode()


def secrets_of(tag: str) -> dict[str, str]:
    return {
        "clever_secret": f"clever-secret-{tag}",
        "clever_token": f"clever-token-{tag}",
        "classlink_secret": f"classlink-secret-{tag}",
    }


def every_secret(tag: str) -> dict[str, Any]:
    """District fields holding a Clever secret and token and a ClassLink secret."""
    s = secrets_of(tag)
    return dict(
        clever=pb.CleverConnection(
            base_url="https://clever.example",
            client_id="cid",
            client_secret=s["clever_secret"],
            district_token=s["clever_token"],
        ),
        classlink=pb.ClassLinkConnection(
            endpoint_url="https://cl.example", client_id="clid", client_secret=s["classlink_secret"]
        ),
    )


async def plaintext_hits(database_url: str, needles: list[str]) -> list[str]:
    """Every (table.column) of the public schema whose text, array or bytea holds a needle."""
    conn = await asyncpg.connect(database_url)
    try:
        columns = await conn.fetch(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'public'"
            " AND data_type IN ('text', 'character varying', 'bytea', 'json', 'jsonb', 'ARRAY')"
        )
        hits = []
        for c in columns:
            col, table = f'"{c["column_name"]}"', f'"{c["table_name"]}"'
            for needle in needles:
                if c["data_type"] == "bytea":
                    sql = f"SELECT count(*) FROM {table} WHERE position($1::bytea in {col}) > 0"  # noqa: S608
                    arg: object = needle.encode()
                else:
                    sql = f"SELECT count(*) FROM {table} WHERE strpos({col}::text, $1) > 0"  # noqa: S608
                    arg = needle
                if await conn.fetchval(sql, arg):
                    hits.append(f"{c['table_name']}.{c['column_name']}")
        return hits
    finally:
        await conn.close()


async def test_no_district_secret_is_in_the_database_in_plain_text(
    world: World, database_url: str, logs: LogCapture
) -> None:
    mark = logs.tell()
    tag = uuid.uuid4().hex
    await world.setup(**every_secret(tag))
    needles = [world.sim.client_secret, *secrets_of(tag).values()]
    assert await plaintext_hits(database_url, needles) == []
    # ...and the sealed secret still works: the student is looked up in PowerSchool with it.
    student = await world.resolve(sis_id=str(world.student().dcid))
    assert student.powerschool_id == world.student().id
    assert not [n for n in needles if n in logs.since(mark)]


async def test_a_secret_copied_to_another_district_does_not_open(
    stub: writeback_pb2_grpc.WritebackServiceStub, sim: PowerSchoolSimulator, database_url: str
) -> None:
    a, b = World(stub, sim), World(stub, sim)
    await a.setup()
    await b.setup(powerschool=pb.PowerSchoolConnection(base_url=sim.base_url, client_id="other"))
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "UPDATE districts SET ps_client_secret ="
            " (SELECT ps_client_secret FROM districts WHERE district_id = $1)"
            " WHERE district_id = $2",
            a.district_id,
            b.district_id,
        )
    finally:
        await conn.close()
    await asyncio.sleep(2.1)  # the service's in-process copy of B expires
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await b.resolve(sis_id=str(b.student().dcid))
    error = failure(err.value)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "SECRET_UNREADABLE"
    assert "ps_client_secret" in str(error)
    assert sim.client_secret not in str(error)
    # A still opens its own.
    assert (await a.resolve(sis_id=str(a.student().dcid))).powerschool_id == a.student().id


async def rekey(database_url: str, keys: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        "rekey",
        env={**os.environ, "DATABASE_URL": database_url, "WRITEBACK_SECRET_KEY": keys},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, (out + err).decode()


async def test_plaintext_is_sealed_at_start_and_keys_rotate_with_rekey(
    own_database: str, sim: PowerSchoolSimulator
) -> None:
    tag = uuid.uuid4().hex
    server = Server(fast_settings(own_database, secret_key=KEY_A))
    await server.start()
    try:
        async with authed_channel(f"127.0.0.1:{server.port}") as channel:
            world = World(writeback_pb2_grpc.WritebackServiceStub(channel), sim)
            await world.setup(**every_secret(tag))
    finally:
        await server.stop()
    # A database from before secrets were sealed: the PowerSchool secret in plain text.
    conn = await asyncpg.connect(own_database)
    try:
        await conn.execute("UPDATE districts SET ps_client_secret = $1", sim.client_secret)
    finally:
        await conn.close()
    server = Server(fast_settings(own_database, secret_key=KEY_A))
    await server.start()  # seals it
    await server.stop()
    needles = [sim.client_secret, *secrets_of(tag).values()]
    assert await plaintext_hits(own_database, needles) == []

    # A service with only the new key refuses to start while secrets need the old one.
    with pytest.raises(StartupError, match="not configured"):
        await Server(fast_settings(own_database, secret_key=KEY_B)).start()
    # New key first, old key still listed: rekey re-seals all four values, then none.
    assert await rekey(own_database, f"{KEY_B},{KEY_A}") == (
        0,
        "re-encrypted 4 secret values under the first key\n",
    )
    assert (await rekey(own_database, f"{KEY_B},{KEY_A}"))[1].startswith("re-encrypted 0 ")
    assert await plaintext_hits(own_database, needles) == []

    # The old key removed: everything still opens, and the student resolves through it.
    server = Server(fast_settings(own_database, secret_key=KEY_B))
    await server.start()
    try:
        async with authed_channel(f"127.0.0.1:{server.port}") as channel:
            world.stub = writeback_pb2_grpc.WritebackServiceStub(channel)
            student = await world.resolve(sis_id=str(world.student().dcid))
            assert student.powerschool_id == world.student().id
            got = await world.stub.GetDistrict(pb.GetDistrictRequest(district_id=world.district_id))
            assert got.district.powerschool.has_client_secret
    finally:
        await server.stop()


async def test_an_external_database_without_a_key_refuses_to_start(database_url: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "service",
        env={
            **{k: v for k, v in os.environ.items() if k != "WRITEBACK_SECRET_KEY"},
            "DATABASE_URL": database_url,
            "GRPC_PORT": "0",
        },
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode != 0
    assert "no key for district secrets" in err.decode()
    assert "WRITEBACK_SECRET_KEY" in err.decode()
