"""``writeback load``: the load tool's flags, and the command that runs it and reports."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import date
from pathlib import Path

from clients._cli import Exit, UsageError, command, local_token
from clients._client import WritebackClient
from clients.loadgen._report import table, write_json, write_plot
from clients.loadgen._runner import Unreachable, run
from clients.loadgen._scenarios import KEYS, SCENARIOS, Options, Tls, check, read_students_file


def _arguments(parser: argparse.ArgumentParser) -> None:
    # Connection flags are also taken after `load` (as the global ones are before it); given
    # here, they override the global ones, and absent they leave them alone.
    keep = argparse.SUPPRESS
    parser.add_argument("--target", default=keep, help="HOST:PORT of the service (or echo server)")
    parser.add_argument("--token", default=keep, help="bearer token (else env WRITEBACK_TOKEN)")
    parser.add_argument("--token-file", type=Path, help="a file holding the bearer token")
    parser.add_argument("--tls-ca", type=Path, default=keep, help="PEM CA certificates: TLS")
    parser.add_argument("--tls-cert", type=Path, default=keep, help="PEM client certificate")
    parser.add_argument("--tls-key", type=Path, default=keep, help="PEM client key")
    parser.add_argument("--timeout", type=float, default=keep, help="seconds per call")
    parser.add_argument("--scenario", choices=SCENARIOS, required=True)
    parser.add_argument("--rate", type=float, help="open loop: requests/s in total")
    parser.add_argument(
        "--concurrency", type=int, help="closed loop: calls in flight in total (default 1)"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds run first, unrecorded")
    parser.add_argument("--processes", type=int, default=1, help="client processes")
    parser.add_argument("--channels", type=int, default=1, help="gRPC channels per process")
    parser.add_argument("--district", default="", help="the district the scenario uses")
    parser.add_argument(
        "--students-file",
        type=Path,
        help="CSV: sis_id,student_number,powerschool_id,school_number",
    )
    parser.add_argument("--key", choices=KEYS, default="sis_id", help="(resolve) key to send")
    parser.add_argument("--miss-share", type=float, default=0.0, help="(resolve) unknown keys")
    parser.add_argument("--replay-share", type=float, default=0.0, help="(submit) replays")
    parser.add_argument("--day", help="(submit, rush) YYYY-MM-DD school day (default: yesterday)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the miss and replay draws")
    parser.add_argument("--json", help="write the result as JSON to this file (- for stdout)")
    parser.add_argument("--plot", type=Path, help="write a latency-percentile plot (PNG)")


def options_from(args: argparse.Namespace) -> Options:
    """The run the parsed flags describe; raises UsageError for flags that make none."""
    try:
        token = args.token or (
            args.token_file.read_text().strip() if args.token_file else local_token()
        )
        students = read_students_file(args.students_file) if args.students_file else []
        tls = None
        if args.tls_ca or args.tls_cert or args.tls_key:
            if bool(args.tls_cert) != bool(args.tls_key):
                raise UsageError("--tls-cert and --tls-key go together")
            tls = Tls(
                *(p.read_bytes() if p else None for p in (args.tls_ca, args.tls_cert, args.tls_key))
            )
    except OSError as err:
        raise UsageError(f"cannot read {err.filename}: {err.strerror}") from None
    except ValueError as err:
        raise UsageError(str(err)) from None
    try:
        day = date.fromisoformat(args.day) if args.day else None
    except ValueError:
        raise UsageError("--day must be a date, YYYY-MM-DD") from None
    options = Options(
        target=args.target,
        scenario=args.scenario,
        rate=args.rate,
        concurrency=args.concurrency,
        duration=args.duration,
        warmup=args.warmup,
        processes=args.processes,
        channels=args.channels,
        token=token,
        tls=tls,
        district=args.district,
        students=tuple(students),
        key=args.key,
        miss_share=args.miss_share,
        replay_share=args.replay_share,
        day=day,
        timeout=args.timeout,
        seed=args.seed,
    )
    try:
        check(options)
    except ValueError as err:
        raise UsageError(str(err)) from None
    return options


@command("load", "load-test the service: open or closed loop, latency percentiles", _arguments)
async def load(_: WritebackClient, args: argparse.Namespace) -> Exit:
    """Run the load the flags describe; print the table (stderr when --json -), write the
    JSON and plot. FAILED when the target cannot be reached."""
    options = options_from(args)
    try:
        # In a thread: the run starts processes and waits on them, with no loop of its own.
        outcome = await asyncio.to_thread(run, options)
    except (Unreachable, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return Exit.FAILED
    print(table(outcome), file=sys.stderr if args.json == "-" else sys.stdout)
    if args.json:
        write_json(outcome, args.json)
    if args.plot:
        write_plot(args.plot, [outcome])
    return Exit.DONE
