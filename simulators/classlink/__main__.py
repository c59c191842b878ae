"""Run the ClassLink (OneRoster 1.1) simulator as its own process.

``python -m simulators.classlink --port 8083`` builds the roster from the PowerSchool demo
dataset (the same one ``python -m simulators.powerschool`` serves), prints the endpoint URL,
the OAuth1 credentials and a few students, then serves until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from simulators._server import serve_until_signalled
from simulators.powerschool import demo_dataset
from simulators.roster import roster_from_powerschool

from ._app import API_PREFIX, ClassLinkSimulator


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m simulators.classlink",
        description="Simulated ClassLink Roster Server (OneRoster 1.1, OAuth1).",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8083, help="0 picks a free port")
    p.add_argument("--students-per-school", type=int, default=20)
    p.add_argument("--seed", type=int, default=7, help="PowerSchool demo dataset seed")
    p.add_argument("--sis-field", choices=["dcid", "id"], default="dcid")
    p.add_argument(
        "--student-number-field", choices=["student_number", "dcid", "none"],
        default="student_number",
    )  # fmt: skip
    p.add_argument("--client-id", default="classlink-client")
    p.add_argument("--client-secret", default="classlink-secret")
    p.add_argument("--max-limit", type=int, default=10000)
    p.add_argument("--timestamp-skew", type=float, default=300.0)
    p.add_argument("--allow-sha1", action="store_true")
    p.add_argument("--enabled-user-bool", action="store_true", help="enabledUser as JSON bool")
    p.add_argument("--no-link-header", action="store_true")
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to each request")
    return p


async def _serve(args: argparse.Namespace) -> None:
    dataset = demo_dataset(args.students_per_school, seed=args.seed)
    roster = roster_from_powerschool(
        dataset,
        "classlink",
        sis_field=args.sis_field,
        student_number_field=args.student_number_field,
    )
    sim = ClassLinkSimulator(
        roster,
        client_id=args.client_id,
        client_secret=args.client_secret,
        enabled_user_as_string=not args.enabled_user_bool,
        max_limit=args.max_limit,
        timestamp_skew=args.timestamp_skew,
        allow_sha1=args.allow_sha1,
        link_header=not args.no_link_header,
    )
    sim.faults.latency = args.latency

    def banner(base_url: str) -> list[str]:
        return [
            f"ClassLink simulator listening on {base_url} (API under {API_PREFIX})",
            f"  endpoint_url={base_url} client_id={sim.client_id} "
            f"client_secret={sim.client_secret} (OAuth 1.0a HMAC-SHA256)",
            *(
                f"  student sourcedId={p.roster_id} identifier={p.student_number!r} "
                f"org={p.school_id} {p.first_name} {p.last_name}"
                for p in roster[:4]
            ),
            "  control: GET /_sim/calls, GET|POST /_sim/faults, GET|POST /_sim/people, "
            "POST|DELETE /_sim/people/{id}, POST /_sim/people/{id}/soft-delete, "
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
