"""What every CLI command shares: registration, JSON output, error output and exit statuses.

A command is one ``async`` function registered with :func:`command`; it calls the service,
prints its answer with :func:`emit` and returns an :class:`Exit`. Bad input it can detect
itself (a file, a flag's value) it raises as :class:`UsageError`; a failed call raises
:class:`~clients.WritebackError`. :func:`run` turns both into messages and exit statuses.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from writeback.v1 import writeback_pb2 as pb

from clients._client import WritebackClient, tls_credentials
from clients._errors import WritebackError


class Exit(IntEnum):
    """The CLI's exit statuses."""

    DONE = 0
    FAILED = 1  # the service answered with an error, or the record ended FAILED
    USAGE = 2  # bad arguments or a bad input file; nothing was sent
    PENDING = 3  # asked to wait, and the outcome is still pending


class UsageError(Exception):
    """Input the caller must fix before anything is sent (exit status 2)."""


Run = Callable[[WritebackClient, argparse.Namespace], Awaitable[Exit]]
Arguments = Callable[[argparse.ArgumentParser], None]


@dataclass(frozen=True)
class Command:
    """One command: its words (``("district", "apply")``), help, arguments and function."""

    words: tuple[str, ...]
    help: str
    arguments: Arguments
    run: Run


_COMMANDS: dict[tuple[str, ...], Command] = {}


def command(words: str, help: str, arguments: Arguments | None = None) -> Callable[[Run], Run]:
    """Register the decorated function as the command ``words`` (one word, or a group and a
    word such as ``"district apply"``); ``arguments`` adds its options to its parser."""

    def register(run: Run) -> Run:
        key = tuple(words.split())
        _COMMANDS[key] = Command(key, help, arguments or (lambda _: None), run)
        return run

    return register


def parser(description: str | None) -> argparse.ArgumentParser:
    """The argument parser of every registered command, plus the connection options."""
    top = argparse.ArgumentParser(prog="writeback", description=description)
    top.add_argument(
        "--target",
        default=os.environ.get("WRITEBACK_TARGET", "localhost:50051"),
        help="service address (env WRITEBACK_TARGET, default localhost:50051)",
    )
    top.add_argument("--timeout", type=float, default=10.0, help="seconds per call (default 10)")
    top.add_argument(
        "--token",
        default=os.environ.get("WRITEBACK_TOKEN") or None,
        help="bearer token (env WRITEBACK_TOKEN; prefer the variable: a command line is "
        "visible to other users); default: the local admin token $WRITEBACK_DATA_DIR/admin-token",
    )
    top.add_argument("--tls-ca", type=Path, help="PEM CA certificates: connect over TLS")
    top.add_argument("--tls-cert", type=Path, help="PEM client certificate for mTLS")
    top.add_argument("--tls-key", type=Path, help="PEM key of the client certificate")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups: dict[str, Any] = {}  # argparse's subparsers action is private (no public type)
    for cmd in _COMMANDS.values():
        if len(cmd.words) == 1:
            sub = commands.add_parser(cmd.words[0], help=cmd.help, description=cmd.help)
        else:
            group, word = cmd.words
            if group not in groups:
                groups[group] = commands.add_parser(group, help=f"{group} commands").add_subparsers(
                    dest=f"{group}_command", required=True, metavar="COMMAND"
                )
            sub = groups[group].add_parser(word, help=cmd.help, description=cmd.help)
        cmd.arguments(sub)
        sub.set_defaults(run=cmd.run)
    return top


_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}
# Larger integers lose digits in JavaScript and other readers that parse numbers as doubles.
_SAFE_INTEGER = 2**53


def to_json(message: Message) -> dict[str, Any]:
    """The message as a JSON object: every field, zeros and empty lists included, under its
    proto name; 64-bit integers as JSON numbers when a double holds them exactly
    (|n| < 2^53), as strings otherwise (the proto3 JSON form)."""
    data = MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    # The stubs type DESCRIPTOR as the pure-Python or the upb class; both have .fields.
    _int64_as_numbers(message.DESCRIPTOR, data)  # type: ignore[arg-type]
    return data


def _int64_as_numbers(descriptor: Descriptor, data: dict[str, Any]) -> None:
    for field in descriptor.fields:
        if field.name not in data:
            continue
        values = data[field.name] if field.is_repeated else [data[field.name]]
        if field.message_type is not None:
            # Well-known types (Timestamp, Duration) render as strings: nothing to descend into.
            for value in values:
                if isinstance(value, dict):
                    _int64_as_numbers(field.message_type, value)
        elif field.type in _INT64:
            numbers = [_number(v) for v in values]
            data[field.name] = numbers if field.is_repeated else numbers[0]


def _number(value: str) -> int | str:
    n = int(value)
    return n if abs(n) < _SAFE_INTEGER else value


def emit(message: Message) -> None:
    """Print the message as JSON (see :func:`to_json`) on standard output."""
    print(json.dumps(to_json(message), indent=2))


def report(err: WritebackError) -> None:
    """Print a failed call on standard error: status, message, ErrorInfo reason and metadata,
    field violations and the server's retry delay."""
    print(f"{err.code.name}: {err.message}", file=sys.stderr)
    if err.reason:
        context = ", ".join(f"{k}={v}" for k, v in sorted(err.metadata.items()))
        print(f"  reason: {err.reason}" + (f" ({context})" if context else ""), file=sys.stderr)
    for field, why in err.violations.items():
        print(f"  {field}: {why}", file=sys.stderr)
    if err.retry_after is not None:
        print(f"  retry after: {err.retry_after:g}s", file=sys.stderr)


def record_outcome(record: pb.AttendanceRecord, *, waited: bool) -> Exit:
    """FAILED for a FAILED record; PENDING for a record still pending after a wait."""
    if record.state == pb.ATTENDANCE_STATE_FAILED:
        return Exit.FAILED
    if waited and record.state == pb.ATTENDANCE_STATE_PENDING:
        return Exit.PENDING
    return Exit.DONE


def run(argv: Sequence[str] | None, description: str | None) -> int:
    """Parse ``argv``, run the command it names, and return the exit status."""
    try:
        args = parser(description).parse_args(argv)
    except SystemExit as stop:  # argparse has printed the usage error (or the help)
        return stop.code if isinstance(stop.code, int) else Exit.USAGE
    try:
        return asyncio.run(_call(args))
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return Exit.USAGE
    except WritebackError as err:
        report(err)
        return Exit.FAILED


def local_token() -> str | None:
    """The admin token the service leaves in its data directory on the embedded database
    (``$WRITEBACK_DATA_DIR/admin-token``, ``.data/admin-token`` by default), if readable."""
    path = Path(os.environ.get("WRITEBACK_DATA_DIR") or ".data") / "admin-token"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _tls(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    if not (args.tls_ca or args.tls_cert or args.tls_key):
        return None
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    try:
        return tls_credentials(
            ca=args.tls_ca.read_bytes() if args.tls_ca else None,
            cert=args.tls_cert.read_bytes() if args.tls_cert else None,
            key=args.tls_key.read_bytes() if args.tls_key else None,
        )
    except OSError as err:
        raise UsageError(f"cannot read {err.filename}: {err.strerror}") from None


async def _call(args: argparse.Namespace) -> Exit:
    token = args.token or local_token()
    async with WritebackClient(
        args.target, timeout=args.timeout, token=token, tls=_tls(args)
    ) as client:
        outcome: Exit = await args.run(client, args)
        return outcome
