"""A failed call, with the google.rpc details the service attaches."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


class WritebackError(Exception):
    """A non-OK answer from the writeback service.

    ``violations`` maps field paths to reasons: the bad fields (INVALID_ARGUMENT), or the
    fields that differ from the request first sent with a reused idempotency key
    (ALREADY_EXISTS); ``reason`` is the machine-readable ErrorInfo reason and ``metadata`` its
    context (e.g. ``{"fields": "comment,reason"}``); ``retry_after`` is the server's RetryInfo
    delay in seconds (UNAVAILABLE), or None.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        violations: dict[str, str] | None = None,
        reason: str = "",
        metadata: dict[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.violations = violations or {}
        self.reason = reason
        self.metadata = metadata or {}
        self.retry_after = retry_after

    @classmethod
    def from_rpc_error(cls, err: grpc.aio.AioRpcError) -> WritebackError:
        """Decode the status details of a failed call."""
        violations: dict[str, str] = {}
        reason = ""
        metadata: dict[str, str] = {}
        retry_after: float | None = None
        status = rpc_status.from_call(err)
        for detail in status.details if status is not None else []:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations.update({v.field: v.description for v in bad.field_violations})
            elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
                metadata = dict(info.metadata)
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                retry_after = retry.retry_delay.ToTimedelta().total_seconds()
        return cls(
            err.code(),
            err.details() or "",
            violations=violations,
            reason=reason,
            metadata=metadata,
            retry_after=retry_after,
        )
