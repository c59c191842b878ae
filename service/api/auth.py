"""Who is calling and whether it may: every WritebackService RPC is authenticated and
authorised here, from one table, before its handler runs. Health and reflection stay open.

Identity is a bearer token (``authorization: Bearer <token>``) or, on a TLS port that verifies
client certificates, the certificate's subject CN (else its first SAN) naming a caller. A call
without either is UNAUTHENTICATED; a caller outside its role or districts PERMISSION_DENIED,
the same answer whether the district it named exists or not.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import grpc
from grpc.aio import ServicerContext

from service import logs
from service.api._call import district_of, metadata
from service.domain.callers import Callers, authorize
from service.errors import PermissionDenied, Unauthenticated
from service.models import Caller, CallerRole

if TYPE_CHECKING:  # the stubs make these generic; the runtime classes are not
    _Context = ServicerContext[Any, Any]
    _Handler = Callable[[Any, _Context], Awaitable[Any]]
    _MethodHandler = grpc.RpcMethodHandler[Any, Any]

SERVICE_PREFIX = "/writeback.v1.WritebackService/"

_A, _O, _W, _R = CallerRole.ADMIN, CallerRole.OPERATOR, CallerRole.WRITER, CallerRole.READER
MINIMUM_ROLE: dict[str, CallerRole] = {
    # District settings and secrets, callers, the audit trail.
    "UpsertDistrict": _A,
    "CreateCaller": _A,
    "RevokeCaller": _A,
    "ListCallers": _A,
    "ListAuditEvents": _A,
    # Running the service for a district. ImportStudents rewrites the roster, as a sync does.
    "RetryAttendance": _O,
    "CancelAttendance": _O,
    "SyncRoster": _O,
    "GetSyncStatus": _O,
    "ImportStudents": _O,
    "CheckConnection": _O,
    "DiagnoseMapping": _O,
    "GetDeliveryStats": _O,
    # The front-office platform.
    "ResolveStudent": _W,
    "SubmitAttendance": _W,
    # Looking.
    "GetDistrict": _R,
    "ListDistricts": _R,
    "GetAttendance": _R,
    "ListAttendance": _R,
}
# Callers are not district-scoped: managing them needs an admin on all districts.
ALL_DISTRICTS_ONLY = frozenset({"CreateCaller", "RevokeCaller", "ListCallers"})
# These name no district, or an optional one; without one they narrow their answer to the
# caller's districts. Every other method's district is checked, an empty one too (refused
# for a caller limited to some districts).
_OPTIONAL_DISTRICT = frozenset({"ListDistricts", "ListAuditEvents"})

ANONYMOUS = Caller(caller_id="", name="anonymous", role=CallerRole.ADMIN, all_districts=True)
_CALLER: ContextVar[Caller] = ContextVar("caller")


def current_caller() -> Caller:
    """The caller of the RPC being handled (set by :class:`AuthInterceptor`)."""
    return _CALLER.get()


def authenticated_caller() -> Caller | None:
    """The caller of the RPC being handled, or None outside an authenticated call (health,
    reflection, ``AUTH=off``)."""
    return _CALLER.get(None)


def _bearer(context: _Context) -> str | None:
    for key, value in metadata(context):
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated(
                    "the authorization metadata must be 'Bearer <token>'",
                    reason="TOKEN_MALFORMED",
                )
            return token.strip()
    return None


def certificate_name(auth_context: Mapping[str, Iterable[bytes]]) -> str | None:
    """The name a verified client certificate gives its holder: the subject CN, else the
    first subject alternative name; None without a client certificate."""
    for key in ("x509_common_name", "x509_subject_alternative_name"):
        for value in auth_context.get(key, ()):
            return value.decode(errors="replace")
    return None


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates and authorises every WritebackService RPC; ``callers`` None means
    AUTH=off (every call is the anonymous admin)."""

    def __init__(self, callers: Callers | None) -> None:
        self._callers = callers

    def _known(self, context: _Context) -> Caller | None:
        """The caller, when no await is needed to say (a bearer token verified lately)."""
        if self._callers is None:
            return ANONYMOUS
        token = _bearer(context)
        return None if token is None else self._callers.known(token)

    async def _identify(self, context: _Context) -> Caller:
        if self._callers is None:
            return ANONYMOUS
        token = _bearer(context)
        if token is not None:
            return await self._callers.by_token(token)
        name = certificate_name(context.auth_context())
        if name is not None:
            return await self._callers.by_certificate(name)
        raise Unauthenticated(
            "no credentials: send 'authorization: Bearer <token>' metadata or a client certificate",
            reason="CREDENTIALS_MISSING",
        )

    def _check(self, method: str, behavior: _Handler) -> _Handler:
        name = method.removeprefix(SERVICE_PREFIX)
        # A method missing from the table (added later and forgotten) is for admins only.
        needed = MINIMUM_ROLE.get(name, CallerRole.ADMIN)

        async def handle(request: Any, context: _Context) -> Any:
            caller = self._known(context) or await self._identify(context)
            logs.bind(caller=caller.name)
            if name in ALL_DISTRICTS_ONLY and not caller.all_districts:
                raise PermissionDenied(
                    f"caller {caller.name!r} is limited to some districts; managing callers "
                    "needs an admin on all districts",
                    reason="DISTRICT_NOT_PERMITTED",
                )
            district: str | None = district_of(request)
            if name in _OPTIONAL_DISTRICT and not district:
                district = None
            authorize(caller, needed, district)
            reset = _CALLER.set(caller)
            try:
                return await behavior(request, context)
            finally:
                _CALLER.reset(reset)

        return handle

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_MethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _MethodHandler | None:
        """Return the method's handler with the identity and permission checks in front."""
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(SERVICE_PREFIX):
            return handler
        if handler.unary_unary is None:  # pragma: no cover  (the service has no streams)
            raise RuntimeError(f"{method} is not unary: it would bypass authorisation")
        return grpc.unary_unary_rpc_method_handler(
            # grpc.aio registers coroutine functions here; the stubs only know sync ones.
            self._check(method, handler.unary_unary),  # type: ignore[arg-type]
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
