"""Rules `make check` and `make test` enforce on the project itself, beyond style."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUFF = Path(sys.executable).parent / "ruff"

WAITS_WITH_WAIT_FOR = """import asyncio


async def stop(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), timeout=1)
"""


def ruff_on(source: str, as_path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603  (our own linter on a snippet)
        [str(RUFF), "check", "--no-cache", "--stdin-filename", as_path, "-"],
        input=source,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("as_path", ["service/domain/waiting.py", "clients/waiting.py"])
def test_asyncio_wait_for_is_refused_in_shipped_code(as_path: str) -> None:
    # On Python 3.11 it can drop the cancellation a stop depends on (gh-86296).
    result = ruff_on(WAITS_WITH_WAIT_FOR, as_path)
    assert result.returncode == 1
    assert "TID251" in result.stdout
    assert "asyncio.timeout" in result.stdout


def test_asyncio_wait_for_is_allowed_in_tests() -> None:
    result = ruff_on(WAITS_WITH_WAIT_FOR, "tests/test_waiting.py")
    assert result.returncode == 0, result.stdout


def test_a_hung_test_fails_after_five_minutes(pytestconfig: pytest.Config) -> None:
    assert float(pytestconfig.getini("timeout")) == 300
