"""The request on whose behalf work is done. An RPC sets it; a delivery job it queues keeps
it, so the delivery's log lines, in whichever process and however much later, name the
request that asked for them."""

from __future__ import annotations

from contextvars import ContextVar, Token

_REQUEST_ID: ContextVar[str | None] = ContextVar("writeback_request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request being handled here, if any."""
    return _REQUEST_ID.get()


def set_request_id(request_id: str | None) -> Token[str | None]:
    """Handle what follows (in this task and tasks it starts) on behalf of ``request_id``;
    give the returned token to :func:`reset_request_id` when done."""
    return _REQUEST_ID.set(request_id)


def reset_request_id(token: Token[str | None]) -> None:
    """Undo the :func:`set_request_id` that returned ``token``."""
    _REQUEST_ID.reset(token)
