"""Caller identities: bearer tokens (made, verified, revoked), certificate names, the
bootstrap admin, and what a role and a district scope allow.

A token is ``wb_<prefix>.<secret>``: 48 random bytes in all, shown once and stored only as
its SHA-256. A fast hash is right here (a slow one such as bcrypt or argon2 protects guessable
passwords): nobody can search a 2^256 space, and every RPC verifies a token. The prefix finds
the row without scanning. Verified tokens, and the callers that certificate names name, are
kept in-process for at most ``cache_seconds``, so a revocation made through any replica is
honoured by every replica within that time. The in-process cache is keyed by the token itself:
hashing it again on every call cost more than the rest of the check.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import time
from collections.abc import Collection

from service.errors import (
    AlreadyExists,
    FieldViolation,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from service.models import Caller, CallerRole
from service.store import CallerStore

BOOTSTRAP_NAME = "bootstrap-admin"
_TOKEN = re.compile(r"wb_([0-9a-f]{12})\.[A-Za-z0-9_-]{43}")
# Bounds the cache when someone sends many bad tokens; the cache only saves database reads.
_CACHE_LIMIT = 10_000


def _sha256(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token() -> tuple[str, str]:
    """A fresh token and its prefix."""
    prefix = secrets.token_hex(6)
    return f"wb_{prefix}.{secrets.token_urlsafe(32)}", prefix


def authorize(caller: Caller, needed: CallerRole, district_id: str | None) -> None:
    """Raise :class:`PermissionDenied` unless ``caller`` has at least the ``needed`` role and,
    when the call names a district, may touch it. The answer is the same whether the district
    exists or not."""
    if caller.role < needed:
        raise PermissionDenied(
            f"caller {caller.name!r} has the {caller.role.name.lower()} role; this call needs "
            f"{needed.name.lower()}",
            reason="ROLE_NOT_PERMITTED",
        )
    if district_id is not None and not caller.may_touch(district_id):
        raise PermissionDenied(
            f"caller {caller.name!r} may not act on district {district_id!r}",
            reason="DISTRICT_NOT_PERMITTED",
        )


class Callers:
    """Creates, verifies, lists and revokes callers."""

    def __init__(
        self, store: CallerStore, *, bootstrap_token: str = "", cache_seconds: float = 2.0
    ) -> None:
        self._store = store
        self._bootstrap = _sha256(bootstrap_token) if bootstrap_token else b""
        self._cache_seconds = cache_seconds
        self._verified: dict[str, tuple[float, Caller | None]] = {}
        # Certificate names of live callers (a refused name is asked again every time).
        self._named: dict[str, tuple[float, Caller]] = {}

    async def create(
        self,
        *,
        name: str,
        role: CallerRole,
        district_ids: Collection[str],
        all_districts: bool,
        created_by: str,
        with_token: bool = True,
    ) -> tuple[Caller, str]:
        """A new caller and its token ("" when ``with_token`` is false: a certificate-only
        caller). The token is returned here once and never again."""
        token, prefix = new_token() if with_token else ("", "")
        caller = await self._store.create(
            Caller(
                caller_id="",
                name=name,
                role=role,
                all_districts=all_districts,
                district_ids=frozenset(district_ids),
                token_prefix=prefix,
            ),
            token_sha256=_sha256(token) if token else None,
            created_by=created_by,
        )
        if caller is None:
            raise AlreadyExists(
                f"a caller named {name!r} exists; revoke it first or choose another name",
                reason="CALLER_EXISTS",
                violations=[FieldViolation("name", "is taken by a live caller")],
            )
        return caller, token

    async def revoke(self, caller_id: str) -> Caller:
        """Revoke the caller: its token and certificate name stop working at once here and
        within ``cache_seconds`` on every other process."""
        caller = await self._store.revoke(caller_id)
        if caller is None:
            raise NotFound(f"caller {caller_id!r} does not exist", reason="CALLER_NOT_FOUND")
        self._verified = {
            k: v
            for k, v in self._verified.items()
            if v[1] is None or v[1].caller_id != caller.caller_id
        }
        self._named = {k: v for k, v in self._named.items() if v[1].caller_id != caller.caller_id}
        return caller

    async def list(self, *, include_revoked: bool) -> list[Caller]:
        """Every caller (live ones only unless ``include_revoked``), oldest first."""
        return await self._store.list(include_revoked=include_revoked)

    def known(self, token: str) -> Caller | None:
        """The live caller holding ``token`` if it was verified here within ``cache_seconds``
        (the bootstrap token's admin always); None means ask :meth:`by_token`."""
        cached = self._verified.get(token)
        if cached is not None and time.monotonic() < cached[0]:
            return cached[1]
        return None

    async def by_token(self, token: str) -> Caller:
        """The live caller holding ``token``, or :class:`Unauthenticated`."""
        now = time.monotonic()
        cached = self._verified.get(token)
        if cached is not None and now < cached[0]:
            caller = cached[1]
        else:
            digest = _sha256(token)
            if self._bootstrap and hmac.compare_digest(digest, self._bootstrap):
                # Not a database row: nothing revokes it but a restart without it.
                caller = Caller(
                    caller_id="", name=BOOTSTRAP_NAME, role=CallerRole.ADMIN, all_districts=True
                )
                expires = math.inf
            else:
                caller = await self._lookup(token, digest)
                expires = now + self._cache_seconds
            if len(self._verified) >= _CACHE_LIMIT:
                self._verified.clear()
            self._verified[token] = (expires, caller)
        if caller is None:
            raise Unauthenticated(
                "the bearer token is not valid (unknown, mistyped or revoked)",
                reason="TOKEN_INVALID",
            )
        return caller

    async def by_certificate(self, name: str) -> Caller:
        """The live caller a client certificate names (its subject CN or first SAN)."""
        now = time.monotonic()
        cached = self._named.get(name)
        if cached is not None and now < cached[0]:
            return cached[1]
        caller = await self._store.live_by_name(name)
        if caller is not None:
            if len(self._named) >= _CACHE_LIMIT:
                self._named.clear()
            self._named[name] = (now + self._cache_seconds, caller)
        if caller is None:
            raise Unauthenticated(
                f"the client certificate names {name!r}, which is not a caller; "
                "create one with that name",
                reason="CERTIFICATE_NOT_A_CALLER",
            )
        return caller

    async def verifies(self, token: str) -> bool:
        """True when ``token`` belongs to a live caller (no cache)."""
        return await self._lookup(token, _sha256(token)) is not None

    async def _lookup(self, token: str, digest: bytes) -> Caller | None:
        match = _TOKEN.fullmatch(token)
        if match is None:
            return None
        found = await self._store.by_prefix(match.group(1))
        if found is None:
            return None
        caller, stored = found
        if not hmac.compare_digest(digest, stored) or caller.revoked_at is not None:
            return None
        return caller
