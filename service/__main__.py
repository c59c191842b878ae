"""``python -m service [--role api|worker|all]``: run the writeback service with
configuration from the environment (``--role`` overrides ``ROLE``), as ``GRPC_PROCESSES``
processes; ``python -m service rekey``: re-seal every district secret with the first
configured key.

A start that fails is one JSON line on standard error (``startup_failed``, naming what is
wrong) and a non-zero exit status. Bad configuration is refused before anything starts (no
database, no port), every bad variable named in that one line, and exit status 2.
"""

import argparse
import asyncio
import os

import structlog

from service.app import StartupError, rekey, run
from service.config import ROLES, ConfigError, Settings
from service.logs import configure
from service.supervisor import run_processes


def _settings(role: str | None) -> Settings:
    """The environment's settings (``role`` in place of ROLE), or exit 2 naming what is
    wrong."""
    environ = dict(os.environ) if role is None else {**os.environ, "ROLE": role}
    try:
        return Settings.from_env(environ)
    except ConfigError as exc:
        # LOG_FORMAT itself may be what is wrong: JSON, which every collector reads.
        configure("INFO", "json")
        structlog.get_logger("service").error("startup_failed", error=str(exc))
        raise SystemExit(2) from None


def main() -> None:
    """Parse the command line and run what it asks for."""
    parser = argparse.ArgumentParser(prog="python -m service")
    parser.add_argument("command", nargs="?", choices=["rekey"])
    parser.add_argument("--role", help=f"one of {', '.join(ROLES)} (overrides ROLE)")
    args = parser.parse_args()
    settings = _settings(args.role)
    if args.command == "rekey":
        try:
            count = asyncio.run(rekey(settings))
        except StartupError as exc:
            raise SystemExit(f"writeback rekey: {exc}") from None
        print(f"re-encrypted {count} secret values under the first key")
    elif settings.grpc_processes > 1:
        raise SystemExit(run_processes(settings))
    else:
        run(settings)


if __name__ == "__main__":
    main()
