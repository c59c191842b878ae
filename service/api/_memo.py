"""Interceptors wrap a method's handler once, not on every call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class HandlerMemo:
    """Wrapped handlers by method name, rebuilt only when the handler inside changes (only
    methods the server has a handler for are kept, so this stays as small as the API)."""

    def __init__(self) -> None:
        self._by_method: dict[str, tuple[Any, Any]] = {}

    def get(self, method: str, inner: Any, wrap: Callable[[], Any]) -> Any:
        """The wrapper of ``inner`` for ``method``, made by ``wrap()`` the first time."""
        kept = self._by_method.get(method)
        if kept is not None and kept[0] is inner:
            return kept[1]
        wrapped = wrap()
        self._by_method[method] = (inner, wrapped)
        return wrapped
