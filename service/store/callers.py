"""Callers (identities, roles, district scopes and token hashes) in Postgres."""

from __future__ import annotations

import uuid

import asyncpg

from service.models import Caller, CallerRole
from service.store._database import connection
from service.store._queries import load

_Q = load("callers")


def _caller(row: asyncpg.Record) -> Caller:
    return Caller(
        caller_id=str(row["caller_id"]),
        name=row["name"],
        role=CallerRole[row["role"].upper()],
        all_districts=row["all_districts"],
        district_ids=frozenset(row["district_ids"]),
        token_prefix=row["token_prefix"] or "",
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


class CallerStore:
    """Creates, finds, lists and revokes callers."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(
        self,
        caller: Caller,
        *,
        token_sha256: bytes | None,
        created_by: str,
    ) -> Caller | None:
        """Store a new caller (a fresh ``caller_id`` is assigned); None when a live caller
        already has that name."""
        async with connection(self._pool) as conn:
            try:
                row = await conn.fetchrow(
                    _Q["insert_caller"],
                    uuid.uuid4(),
                    caller.name,
                    caller.role.name.lower(),
                    caller.all_districts,
                    sorted(caller.district_ids),
                    caller.token_prefix or None,
                    token_sha256,
                    created_by,
                )
            except asyncpg.UniqueViolationError:
                return None
        assert row is not None  # RETURNING always gives the row
        return _caller(row)

    async def by_prefix(self, prefix: str) -> tuple[Caller, bytes] | None:
        """The caller holding the token with this prefix and the token's SHA-256, or None."""
        async with connection(self._pool) as conn:
            row = await conn.fetchrow(_Q["by_prefix"], prefix)
        if row is None or row["token_sha256"] is None:
            return None
        return _caller(row), bytes(row["token_sha256"])

    async def live_by_name(self, name: str) -> Caller | None:
        """The unrevoked caller of that name, or None."""
        async with connection(self._pool) as conn:
            row = await conn.fetchrow(_Q["live_by_name"], name)
        return None if row is None else _caller(row)

    async def get(self, caller_id: str) -> Caller | None:
        """The caller with that ID (revoked or not), or None."""
        try:
            key = uuid.UUID(caller_id)
        except ValueError:
            return None
        async with connection(self._pool) as conn:
            row = await conn.fetchrow(_Q["by_id"], key)
        return None if row is None else _caller(row)

    async def list(self, *, include_revoked: bool) -> list[Caller]:
        """Every caller, oldest first."""
        async with connection(self._pool) as conn:
            rows = await conn.fetch(_Q["list_callers"], include_revoked)
        return [_caller(r) for r in rows]

    async def revoke(self, caller_id: str) -> Caller | None:
        """Mark the caller revoked (kept for the audit trail); None if there is no such caller."""
        try:
            key = uuid.UUID(caller_id)
        except ValueError:
            return None
        async with connection(self._pool) as conn:
            row = await conn.fetchrow(_Q["revoke"], key)
        return None if row is None else _caller(row)
