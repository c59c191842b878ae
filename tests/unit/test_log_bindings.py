"""Fields bound with service.logs.bind reach every line logged in the context that bound
them and in tasks it starts, and no other: a task's bindings never reach its parent's
lines, an RPC's ``bind_only`` drops what the server's context had bound, and a line's own
field wins over a bound one; a batch of lines (the access log's) is logged like any line."""

from __future__ import annotations

import asyncio
import contextvars
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from service import logs as service_logs


@pytest.fixture
def stream(logs: io.StringIO) -> Iterator[io.StringIO]:
    out = io.StringIO()
    service_logs.configure("INFO", "json", stream=out)
    yield out
    # Back to the session's capture, which later tests read.
    service_logs.configure("DEBUG", "json", stream=logs)


def lines(stream: io.StringIO) -> dict[str, dict[str, Any]]:
    parsed = (json.loads(line) for line in stream.getvalue().splitlines())
    return {line["event"]: line for line in parsed}


def test_a_task_keeps_its_parents_fields_and_its_own_stay_out_of_the_parents_lines(
    stream: io.StringIO,
) -> None:
    log = structlog.get_logger("t")

    async def child() -> None:
        service_logs.bind(record_id="r-1")
        log.info("in_child")

    async def parent() -> None:
        service_logs.bind_only(request_id="q-1", district_id="d-1")
        await asyncio.create_task(child())
        log.info("in_parent")
        service_logs.unbind("district_id")
        log.info("unbound")

    asyncio.run(parent())
    got = lines(stream)
    assert got["in_child"]["request_id"] == "q-1"
    assert got["in_child"]["record_id"] == "r-1"
    assert got["in_parent"]["district_id"] == "d-1"
    assert "record_id" not in got["in_parent"]
    assert "district_id" not in got["unbound"]
    assert got["unbound"]["request_id"] == "q-1"


def test_bind_only_drops_what_was_bound_before_and_a_lines_field_wins(
    stream: io.StringIO,
) -> None:
    log = structlog.get_logger("t")

    async def call() -> None:
        service_logs.bind(caller="server-wide")
        service_logs.bind_only(rpc="/x")
        log.info("rpc", rpc="/own")
        log.info("plain")

    asyncio.run(call())
    got = lines(stream)
    assert got["rpc"]["rpc"] == "/own"
    assert got["plain"]["rpc"] == "/x"
    assert "caller" not in got["plain"]


def test_a_batch_is_logged_at_its_level_with_what_every_line_carries(
    stream: io.StringIO,
) -> None:
    log = structlog.get_logger("t")

    def batch() -> None:
        service_logs.bind(request_id="q-2")
        service_logs.log_batch(logging.DEBUG, [{"event": "below_the_level"}])
        service_logs.log_batch(
            logging.INFO,
            [{"event": "first", "token": "s3cret"}, {"event": "second", "request_id": "own"}],
        )
        try:
            int("boom")
        except ValueError:
            log.exception("failed")

    # In a context of its own: what it binds stays out of later tests' lines.
    contextvars.copy_context().run(batch)
    got = lines(stream)
    assert "below_the_level" not in got
    assert got["first"]["level"] == "info"
    assert got["first"]["instance"]
    assert got["first"]["timestamp"].endswith("Z")
    assert got["first"]["request_id"] == "q-2"
    assert got["first"]["token"] == "[redacted]"
    assert got["second"]["request_id"] == "own"
    assert "ValueError: invalid literal for int()" in got["failed"]["exception"]
    assert "request_id" not in service_logs.bound()
