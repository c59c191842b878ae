"""District secrets sealed at rest: AES-256-GCM, one random 96-bit nonce per value, the
district ID and column name as associated data (a value moved to another row or field does
not open), and the key's ID in front so any configured key can open it.

A sealed value is text: ``wbs1:<key id>:<base64url(nonce + ciphertext + tag)>``. An empty
secret ("none stored") stays empty.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from service.config import SECRET_KEY_BYTES, parse_secret_keys
from service.errors import FailedPrecondition
from service.store._queries import load

_Q = load("secrets")

_PREFIX = "wbs1"
_NONCE_BYTES = 12
# The secret columns of ``districts``; the column name is part of each value's associated data.
SECRET_COLUMNS = (
    "ps_client_secret",
    "clever_client_secret",
    "clever_district_token",
    "classlink_client_secret",
)


class SealError(FailedPrecondition):
    """A stored secret cannot be opened: sealed under a key that is not configured, or
    tampered with, or moved from another district or field. Names the district and field,
    never the value."""


def new_key_text() -> str:
    """A fresh random key as base64 text."""
    return base64.b64encode(secrets.token_bytes(SECRET_KEY_BYTES)).decode()


def read_key_file(path: Path) -> tuple[bytes, ...]:
    """The keys in ``path`` (as :func:`service.config.parse_secret_keys`); ValueError if it
    cannot be read."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return parse_secret_keys(text)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def ensure_key_file(path: Path) -> tuple[bytes, ...]:
    """The keys in ``path``, first creating it (mode 0600) with one new key if it is absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        scratch = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(new_key_text() + "\n")
        try:
            # A link fails if the name exists: of two processes starting at once, one key wins.
            os.link(scratch, path)
        except FileExistsError:
            pass
        finally:
            scratch.unlink()
    return read_key_file(path)


def load_keys(secret_key: str, key_file: str, embedded_data_dir: Path | None) -> tuple[bytes, ...]:
    """The configured keys: those of ``WRITEBACK_SECRET_KEY`` then those in
    ``WRITEBACK_SECRET_KEY_FILE`` (the first of all seals); with neither, on the embedded
    database only, ``<data dir>/secret-key``, created at first start. ValueError, saying
    what to set, when there is none."""
    if secret_key or key_file:
        keys = parse_secret_keys(secret_key) if secret_key else ()
        return keys + (read_key_file(Path(key_file)) if key_file else ())
    if embedded_data_dir is not None:
        return ensure_key_file(embedded_data_dir / "secret-key")
    raise ValueError(
        "no key for district secrets: with DATABASE_URL set, set WRITEBACK_SECRET_KEY "
        "(base64 of 32 random bytes: head -c32 /dev/urandom | base64) or "
        "WRITEBACK_SECRET_KEY_FILE; every process sharing the database needs the same keys"
    )


def key_id(key: bytes) -> str:
    """A short, stable name for a key that reveals nothing usable about it."""
    return hashlib.sha256(b"writeback-secret-key-id\0" + key).hexdigest()[:8]


def is_sealed(value: str) -> bool:
    """True for text in the sealed form (whichever key)."""
    parts = value.split(":")
    return len(parts) == 3 and parts[0] == _PREFIX and len(parts[1]) == 8


def sealed_key_id(value: str) -> str:
    """The key ID a sealed value names ("" for anything else)."""
    return value.split(":")[1] if is_sealed(value) else ""


class Sealer:
    """Seals with the first key; opens with whichever configured key a value names."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("at least one key is needed")
        self._keys = {key_id(k): AESGCM(k) for k in keys}
        self.current = key_id(keys[0])

    def __repr__(self) -> str:
        return f"Sealer(key_ids={list(self._keys)!r})"

    @property
    def key_ids(self) -> frozenset[str]:
        """The IDs of every configured key."""
        return frozenset(self._keys)

    @staticmethod
    def _aad(district_id: str, column: str) -> bytes:
        return f"{district_id}\0{column}".encode()

    def seal(self, district_id: str, column: str, plaintext: str) -> str:
        """``plaintext`` sealed for this district and column ("" stays "")."""
        if not plaintext:
            return ""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        box = self._keys[self.current].encrypt(
            nonce, plaintext.encode(), self._aad(district_id, column)
        )
        return f"{_PREFIX}:{self.current}:{base64.urlsafe_b64encode(nonce + box).decode()}"

    def open(self, district_id: str, column: str, value: str) -> str:
        """The plaintext of a value :meth:`seal` made for this district and column; raises
        :class:`SealError` for anything else except "" (no secret)."""
        if not value:
            return ""
        where = f"the {column} of district {district_id!r}"
        if not is_sealed(value):
            raise SealError(f"{where} is not sealed", reason="SECRET_UNREADABLE")
        _, kid, body = value.split(":")
        aead = self._keys.get(kid)
        if aead is None:
            raise SealError(
                f"{where} is sealed with key {kid}, which is not among the configured "
                "WRITEBACK_SECRET_KEY keys",
                reason="SECRET_UNREADABLE",
            )
        try:
            raw = base64.urlsafe_b64decode(body.encode())
            plain = aead.decrypt(
                raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], self._aad(district_id, column)
            )
        except (binascii.Error, InvalidTag, ValueError):
            raise SealError(
                f"{where} does not open with key {kid}: it was altered or copied from "
                "another district or field; enter the secret again",
                reason="SECRET_UNREADABLE",
            ) from None
        return plain.decode()


async def reseal(
    conn: asyncpg.Connection | PoolConnectionProxy[asyncpg.Record], sealer: Sealer, *, rekey: bool
) -> int:
    """Seal every plaintext district secret (from before secrets were sealed) and, with
    ``rekey``, re-seal every value sealed under another key with the first key; returns how
    many values were written. One short transaction per district, so it is safe while the
    service runs; running it again writes nothing new."""
    written = 0
    for row in await conn.fetch(_Q["district_ids"]):
        district_id = row["district_id"]
        async with conn.transaction():
            stored = await conn.fetchrow(_Q["lock_secrets"], district_id)
            if stored is None:
                continue  # removed meanwhile
            values = []
            for column in SECRET_COLUMNS:
                value = stored[column] or ""
                if value and not is_sealed(value):
                    value, written = sealer.seal(district_id, column, value), written + 1
                elif rekey and value and sealed_key_id(value) != sealer.current:
                    plain = sealer.open(district_id, column, value)
                    value, written = sealer.seal(district_id, column, plain), written + 1
                values.append(value)
            if values != [stored[c] or "" for c in SECRET_COLUMNS]:
                await conn.execute(_Q["store_secrets"], district_id, *values)
    return written


async def check_key_ids(
    conn: asyncpg.Connection | PoolConnectionProxy[asyncpg.Record], sealer: Sealer
) -> None:
    """Raise :class:`SealError` if any stored secret is sealed under a key that is not
    configured: better to refuse to start than to fail every delivery."""
    missing = {
        r["key_id"]: r["n"]
        for r in await conn.fetch(_Q["secret_key_ids"])
        if r["key_id"] not in sealer.key_ids
    }
    if missing:
        named = ", ".join(f"{n} under key {k}" for k, n in sorted(missing.items()))
        raise SealError(
            f"district secrets are sealed with keys that are not configured ({named}); "
            "add those keys to WRITEBACK_SECRET_KEY (after the first) or run "
            "`python -m service rekey` with them first",
            reason="SECRET_KEY_MISSING",
        )
