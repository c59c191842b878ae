"""Domain errors as gRPC statuses with ``google.rpc`` details."""

from __future__ import annotations

import math
from typing import NamedTuple

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from service.errors import (
    AlreadyExists,
    DeadlineExceeded,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    StillRunning,
    Unauthenticated,
    Unavailable,
)

ERROR_DOMAIN = "writeback.v1"

_CODES: list[tuple[type[DomainError], int]] = [
    (InvalidArgument, code_pb2.INVALID_ARGUMENT),
    (NotFound, code_pb2.NOT_FOUND),
    (FailedPrecondition, code_pb2.FAILED_PRECONDITION),
    (AlreadyExists, code_pb2.ALREADY_EXISTS),
    (Unavailable, code_pb2.UNAVAILABLE),
    (StillRunning, code_pb2.DEADLINE_EXCEEDED),
    (Unauthenticated, code_pb2.UNAUTHENTICATED),
    (PermissionDenied, code_pb2.PERMISSION_DENIED),
    (ResourceExhausted, code_pb2.RESOURCE_EXHAUSTED),
    (DeadlineExceeded, code_pb2.DEADLINE_EXCEEDED),
]


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


Metadata = tuple[tuple[str, str], ...]


class _Status(NamedTuple):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def _answer(status: status_pb2.Status, metadata: Metadata) -> grpc.Status:
    rich: grpc.Status = rpc_status.to_status(status)
    # grpc.Status is an interface with no constructor; the fields are what abort reads.
    return _Status(rich.code, rich.details, (*rich.trailing_metadata, *metadata))  # type: ignore[return-value]


def to_status(error: DomainError, metadata: Metadata = ()) -> grpc.Status:
    """The rich status for a domain error: BadRequest for bad (or, on a reused idempotency
    key, differing) fields, RetryInfo when a retry can help, ErrorInfo with a machine-readable
    reason and its metadata otherwise; ``metadata`` joins the details in the trailers."""
    code = next((c for cls, c in _CODES if isinstance(error, cls)), code_pb2.INTERNAL)
    details: list[any_pb2.Any] = []
    violations = error.violations if isinstance(error, InvalidArgument | AlreadyExists) else []
    if violations:
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in violations
                    ]
                )
            )
        )
    if error.reason:
        details.append(
            _pack(
                error_details_pb2.ErrorInfo(
                    reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata
                )
            )
        )
    if isinstance(error, Unavailable) or (
        isinstance(error, ResourceExhausted) and error.retry_after > 0
    ):
        seconds = max(error.retry_after, 0.0)
        details.append(
            _pack(
                error_details_pb2.RetryInfo(
                    retry_delay=duration_pb2.Duration(
                        seconds=int(seconds), nanos=int(math.modf(seconds)[0] * 1e9)
                    )
                )
            )
        )
    return _answer(status_pb2.Status(code=code, message=error.message, details=details), metadata)


def internal_status(metadata: Metadata = ()) -> grpc.Status:
    """The answer for a bug: no detail that could leak a secret or a stack trace;
    ``metadata`` in the trailers."""
    return _answer(
        status_pb2.Status(
            code=code_pb2.INTERNAL, message="internal error; the service logged the details"
        ),
        metadata,
    )
