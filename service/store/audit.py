"""The audit log in Postgres: who changed what, and when."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence

import asyncpg

from service.models import AuditEvent
from service.store._database import connection
from service.store._queries import load

_Q = load("audit")


class AuditStore:
    """Appends audit events and reads them back newest first."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def record(
        self,
        *,
        caller_id: str,
        caller_name: str,
        action: str,
        district_id: str = "",
        target: str = "",
        changed_fields: Sequence[str] = (),
        details: Mapping[str, str] | None = None,
    ) -> None:
        """Append one event."""
        async with connection(self._pool) as conn:
            await conn.execute(
                _Q["insert_event"],
                caller_id,
                caller_name,
                action,
                district_id,
                target,
                list(changed_fields),
                json.dumps(dict(details or {})),
            )

    async def page(
        self,
        *,
        district_id: str,
        visible: Collection[str] | None,
        before: int,
        limit: int,
    ) -> list[AuditEvent]:
        """Up to ``limit`` events older than event ``before`` (0: the newest), of one district
        ("" for any) among ``visible`` (None: every district, and events without one)."""
        async with connection(self._pool) as conn:
            rows = await conn.fetch(
                _Q["page"],
                district_id,
                None if visible is None else sorted(visible),
                before,
                limit,
            )
        return [
            AuditEvent(
                event_id=r["event_id"],
                at=r["at"],
                caller_id=r["caller_id"],
                caller_name=r["caller_name"],
                action=r["action"],
                district_id=r["district_id"],
                target=r["target"],
                changed_fields=tuple(r["changed_fields"]),
                details=json.loads(r["details"]),
            )
            for r in rows
        ]
