"""``python -m service``: run the writeback service with configuration from the environment.

A start that fails is one JSON line on standard error (``startup_failed``, naming what is
wrong) and a non-zero exit status. Bad configuration is refused before anything starts (no
database, no port), every bad variable named in that one line.
"""

import asyncio

import structlog

from service.app import serve
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
    asyncio.run(serve(settings))
