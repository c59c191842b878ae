"""How services join the server: through their generic handler only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import grpc

if TYPE_CHECKING:  # the stubs make this generic; the runtime class is not
    _MethodHandler = grpc.RpcMethodHandler[Any, Any]


class _GenericOnly:
    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(
        self, _service: str, _handlers: dict[str, _MethodHandler]
    ) -> None:
        # Called by the generated add_*Servicer_to_server functions, right after they added
        # the same methods as a generic handler: nothing more to add.
        return


def generic_only(server: grpc.aio.Server) -> grpc.aio.Server:
    """``server`` as grpc's generated ``add_*Servicer_to_server`` functions should see it:
    the generic handler they add reaches it, their table of registered methods does not.

    grpc.aio's server keeps one pending request per registered method and, at every call
    that arrives, ``asyncio.wait``s on all of them again: the service's methods, health's and
    reflection's made that 24 futures per call, against one for every generic method (about
    120 us of CPU per call at 1 in flight on the bench's machine; README, Benchmarks:
    "Registered methods cost every call")."""
    # Only the two methods the generated functions call are needed of a server.
    return cast("grpc.aio.Server", _GenericOnly(server))
