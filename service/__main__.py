"""``python -m service``: run the writeback service with configuration from the environment;
``python -m service rekey``: re-seal every district secret with the first configured key.

A start that fails is one JSON line on standard error (``startup_failed``, naming what is
wrong) and a non-zero exit status. Bad configuration is refused before anything starts (no
database, no port), every bad variable named in that one line.
"""

import asyncio
import sys

import structlog
import uvloop

from service.app import StartupError, rekey, serve
from service.config import ConfigError, Settings
from service.logs import configure

if __name__ == "__main__":
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        # LOG_FORMAT itself may be what is wrong: JSON, which every collector reads.
        configure("INFO", "json")
        structlog.get_logger("service").error("startup_failed", error=str(exc))
        raise SystemExit(2) from None
    if sys.argv[1:] == ["rekey"]:
        try:
            count = asyncio.run(rekey(settings))
        except StartupError as exc:
            raise SystemExit(f"writeback rekey: {exc}") from None
        print(f"re-encrypted {count} secret values under the first key")
    elif sys.argv[1:]:
        raise SystemExit("usage: python -m service [rekey]")
    else:
        # uvloop's loop must exist before grpc.aio creates anything: it binds to the loop.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop if settings.uvloop else None) as run:
            run.run(serve(settings))
