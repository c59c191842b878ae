"""Run the Clever simulator as its own process.

``python -m simulators.clever --port 8082`` builds the roster from the PowerSchool demo dataset
(the same one ``python -m simulators.powerschool`` serves), prints the base URL, credentials and
a few students, then serves until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from simulators._server import serve_until_signalled
from simulators.powerschool import demo_dataset
from simulators.roster import roster_from_powerschool

from ._app import CleverSimulator

DEFAULT_DISTRICT_ID = "5f0c1e7e5e0d157100000001"
"""District id used when ``--district-id`` is not given (stable across runs)."""
DEFAULT_DISTRICT_TOKEN = "c1e7e5e0" * 5
"""District-app token used when ``--district-token`` is not given (stable across runs)."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m simulators.clever", description="Simulated Clever API (one district)."
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8082, help="0 picks a free port")
    p.add_argument("--students-per-school", type=int, default=20)
    p.add_argument("--seed", type=int, default=7, help="PowerSchool demo dataset seed")
    p.add_argument("--sis-field", choices=["dcid", "id"], default="dcid")
    p.add_argument(
        "--student-number-field", choices=["student_number", "dcid", "none"],
        default="student_number",
    )  # fmt: skip
    p.add_argument("--client-id", default="clever-client")
    p.add_argument("--client-secret", default="clever-secret")
    p.add_argument("--district-id", default=DEFAULT_DISTRICT_ID)
    p.add_argument("--district-token", default=DEFAULT_DISTRICT_TOKEN)
    p.add_argument("--rate-limit", type=int, default=1200)
    p.add_argument("--rate-window", type=float, default=60.0)
    p.add_argument("--max-limit", type=int, default=10000)
    p.add_argument("--api-version", choices=["v3.0", "v3.1"], default="v3.0")
    p.add_argument("--spurious-links", action="store_true")
    p.add_argument(
        "--bare-next-links", action="store_true",
        help="next links carry only starting_after (the client must re-add role/limit)",
    )  # fmt: skip
    p.add_argument(
        "--events-off", action="store_true",
        help="the app never enabled Clever Events: /events answers an empty list forever",
    )  # fmt: skip
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to each request")
    return p


async def _serve(args: argparse.Namespace) -> None:
    dataset = demo_dataset(args.students_per_school, seed=args.seed)
    roster = roster_from_powerschool(
        dataset,
        "clever",
        sis_field=args.sis_field,
        student_number_field=args.student_number_field,
    )
    sim = CleverSimulator(
        roster,
        district_id=args.district_id,
        client_id=args.client_id,
        client_secret=args.client_secret,
        district_token=args.district_token,
        rate_limit=args.rate_limit,
        rate_window=args.rate_window,
        max_limit=args.max_limit,
        api_version=args.api_version,
        spurious_links=args.spurious_links,
        next_link_keeps_params=not args.bare_next_links,
        events_enabled=not args.events_off,
    )
    sim.faults.latency = args.latency

    def banner(base_url: str) -> list[str]:
        return [
            f"Clever simulator listening on {base_url}",
            f"  client_id={sim.client_id} client_secret={sim.client_secret}",
            f"  district_id={sim.district_id} district_token={sim.district_token}",
            *(
                f"  user {p.roster_id} sis_id={p.sis_id} student_number={p.student_number!r} "
                f"school={p.school_id} {p.first_name} {p.last_name}"
                for p in roster[:4]
            ),
            "  control: GET /_sim/calls, GET|POST /_sim/faults, GET|POST /_sim/people, "
            "POST|DELETE /_sim/people/{id}, POST /_sim/people/{id}/sis-id, "
            "POST /_sim/age-events, POST /_sim/reset-calls; Ctrl-C to stop",
        ]

    await serve_until_signalled(sim, args.host, args.port, banner)


def main(argv: list[str] | None = None) -> None:
    """Parse ``argv`` and serve until interrupted."""
    args = _parser().parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
