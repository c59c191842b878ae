"""Run the PowerSchool simulator as its own process.

``python -m simulators.powerschool --host 127.0.0.1 --port 8081 --seed demo`` prints the base URL,
the OAuth credentials and a few students, then serves until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from simulators._server import serve_until_signalled

from ._app import PowerSchoolSimulator
from ._data import Dataset, demo_dataset


def _school_numbers(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of school numbers: {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m simulators.powerschool", description="Simulated PowerSchool SIS server."
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8081, help="0 picks a free port")
    p.add_argument("--seed", choices=["demo", "empty"], default="demo", help="initial dataset")
    p.add_argument("--students-per-school", type=int, default=20)
    p.add_argument("--client-id", default="sim-client")
    p.add_argument("--client-secret", default="sim-secret")
    p.add_argument("--max-page-size", type=int, default=100)
    p.add_argument("--timezone", default="America/Chicago", help="district_timezone")
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to each request")
    p.add_argument(
        "--meeting-schools",
        type=_school_numbers,
        default=(),
        help="comma-separated school numbers that take Meeting (period) attendance, e.g. 100",
    )
    p.add_argument(
        "--time-schools",
        type=_school_numbers,
        default=(),
        help="comma-separated school numbers that take Time attendance",
    )
    p.add_argument(
        "--plugin",
        default=None,
        help="plugin.xml whose grants the server enforces (default: the one the service ships)",
    )
    return p


async def _serve(args: argparse.Namespace) -> None:
    dataset = (
        demo_dataset(args.students_per_school)
        if args.seed == "demo"
        else Dataset(schools=[], students=[], terms=[], codes=[])
    )
    sim = PowerSchoolSimulator(
        dataset,
        client_id=args.client_id,
        client_secret=args.client_secret,
        max_page_size=args.max_page_size,
        district_timezone=args.timezone,
        plugin=args.plugin,
        meeting_schools=args.meeting_schools,
        time_schools=args.time_schools,
    )
    sim.faults.latency = args.latency

    def banner(base_url: str) -> list[str]:
        return [
            f"PowerSchool simulator listening on {base_url}",
            f"  client_id={sim.client_id} client_secret={sim.client_secret}",
            f"  plugin {sim.plugin.name!r} {sim.plugin.version}: 403 for what it does not grant",
            *(
                f"  school {school.school_number} {school.name!r} {school.attendance_mode}"
                for school in sim.dataset.schools
            ),
            *(
                f"  student dcid={s.dcid} id={s.id} number={s.student_number} "
                f"school={s.schoolid} {s.first_name} {s.last_name}"
                for s in sim.dataset.students[:4]
            ),
            "  control: GET /_sim/calls, GET /_sim/attendance, POST /_sim/faults, "
            "POST /_sim/reset-calls; Ctrl-C to stop",
        ]

    await serve_until_signalled(sim, args.host, args.port, banner)


def main(argv: list[str] | None = None) -> None:
    """Parse ``argv`` and serve until interrupted."""
    args = _parser().parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
