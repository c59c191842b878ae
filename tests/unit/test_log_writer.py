"""Log lines below WARNING are written together, within the flush interval; a warning, a full
buffer and a normal exit write at once; nothing is reordered."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from service.logs import configure

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def stream(logs: io.StringIO) -> Iterator[io.StringIO]:
    out = io.StringIO()
    yield out
    # Back to the session's capture, which later tests read, every line at once.
    configure("DEBUG", "json", stream=logs)


def events(stream: io.StringIO) -> list[str]:
    return [json.loads(line)["event"] for line in stream.getvalue().splitlines()]


def wait_for(stream: io.StringIO, count: int, within: float) -> float:
    started = time.monotonic()
    while len(events(stream)) < count:
        assert time.monotonic() - started < within, events(stream)
        time.sleep(0.005)
    return time.monotonic() - started


def test_info_lines_wait_for_the_interval_then_go_together(stream: io.StringIO) -> None:
    configure("INFO", "json", stream=stream, flush_interval=0.3)
    log = structlog.get_logger("t")
    log.info("one")
    log.info("two")
    assert events(stream) == []
    waited = wait_for(stream, 2, within=2.0)
    assert waited < 1.0
    assert events(stream) == ["one", "two"]


def test_a_warning_is_written_at_once_after_the_lines_before_it(stream: io.StringIO) -> None:
    configure("INFO", "json", stream=stream, flush_interval=30)
    log = structlog.get_logger("t")
    log.info("first")
    log.warning("second")
    assert events(stream) == ["first", "second"]
    log.info("third")
    log.error("fourth")
    assert events(stream) == ["first", "second", "third", "fourth"]


def test_a_full_buffer_is_written_at_once(stream: io.StringIO) -> None:
    configure("INFO", "json", stream=stream, flush_interval=30)
    log = structlog.get_logger("t")
    filler = "x" * 1000
    for number in range(80):  # about 80 KiB: past the 64 KiB buffer
        log.info(f"line-{number}", filler=filler)
    written = events(stream)
    assert 60 <= len(written) < 80
    assert written == [f"line-{number}" for number in range(len(written))]


def test_interval_zero_writes_each_line_when_logged(stream: io.StringIO) -> None:
    configure("INFO", "json", stream=stream, flush_interval=0)
    structlog.get_logger("t").info("now")
    assert events(stream) == ["now"]


def test_a_process_that_exits_writes_what_it_buffered() -> None:
    code = (
        "import sys, structlog\n"
        "from service.logs import configure\n"
        "configure('INFO', 'json', sys.stdout, flush_interval=60)\n"
        "structlog.get_logger('t').info('last_words')\n"
    )
    done = subprocess.run(  # noqa: S603  (our own interpreter and code)
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["event"] for line in done.stdout.splitlines()] == ["last_words"]


class FailsOnce(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def write(self, text: str) -> int:
        if not self.failed:
            self.failed = True
            raise BrokenPipeError("the reader went away")
        return super().write(text)


def test_a_failed_write_loses_its_batch_not_the_lines_after_it(logs: io.StringIO) -> None:
    stream = FailsOnce()
    try:
        configure("INFO", "json", stream=stream, flush_interval=0.05)
        log = structlog.get_logger("t")
        log.info("lost")
        wait_until = time.monotonic() + 2
        while not stream.failed:
            assert time.monotonic() < wait_until
            time.sleep(0.01)
        log.info("kept")
        wait_for(stream, 1, within=2.0)
        assert events(stream) == ["kept"]
    finally:
        configure("DEBUG", "json", stream=logs)
