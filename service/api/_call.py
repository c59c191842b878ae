"""What the interceptors read from a call, read once per RPC: its metadata and the district
its request names."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from grpc.aio import ServicerContext

if TYPE_CHECKING:  # the stubs make these generic; the runtime class is not
    _Context = ServicerContext[Any, Any]

Metadata = tuple[tuple[str, str | bytes], ...]

# grpc.aio decodes the call's metadata anew at every invocation_metadata(); three
# interceptors read it. The RPC's task has a context of its own, so this holds one call's.
_READ: ContextVar[tuple[object, Metadata]] = ContextVar("rpc_metadata")


def metadata(context: _Context) -> Metadata:
    """The call's metadata (``invocation_metadata()``), decoded once per RPC."""
    read = _READ.get(None)
    if read is not None and read[0] is context:
        return read[1]
    pairs: Metadata = tuple(context.invocation_metadata() or ())
    _READ.set((context, pairs))
    return pairs


def district_of(request: Any) -> str:
    """The district a request names (``district_id``, or ``district.district_id`` for
    UpsertDistrict); "" for a request that names none."""
    kind = type(request)
    reader = _READERS.get(kind)
    if reader is None:
        reader = _READERS[kind] = _district_reader(kind)
    return reader(request)


# One per message type the server receives: as many as the API has.
_READERS: dict[type, Callable[[Any], str]] = {}


def _district_reader(kind: type) -> Callable[[Any], str]:
    # Asking the message for a field it does not have raises and catches an AttributeError:
    # decided once per message type instead.
    descriptor = getattr(kind, "DESCRIPTOR", None)
    fields = getattr(descriptor, "fields_by_name", {})
    if "district" in fields:
        return lambda request: str(request.district.district_id)
    if "district_id" in fields:
        return lambda request: str(request.district_id)
    return lambda _request: ""
