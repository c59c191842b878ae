"""Sealing district secrets, as pure functions: the AEAD, its associated data, key IDs and
the embedded database's key file."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from service.app import StartupError, _sealer
from service.config import Settings
from service.store import Sealer, SealError

OLD, NEW = b"o" * 32, b"n" * 32


def test_a_sealed_value_names_its_key_and_never_repeats() -> None:
    sealer = Sealer([OLD])
    one, two = (sealer.seal("d1", "ps_client_secret", "hunter2") for _ in range(2))
    assert one != two  # a fresh nonce each time
    assert "hunter2" not in one
    assert one.startswith(f"wbs1:{sealer.current}:")
    assert sealer.open("d1", "ps_client_secret", one) == "hunter2"
    assert sealer.seal("d1", "ps_client_secret", "") == ""


def test_a_value_opens_only_for_its_own_district_and_field() -> None:
    sealer = Sealer([OLD])
    value = sealer.seal("d1", "ps_client_secret", "hunter2")
    for district, column in (("d2", "ps_client_secret"), ("d1", "clever_client_secret")):
        with pytest.raises(SealError, match="copied from another district or field") as err:
            sealer.open(district, column, value)
        assert "hunter2" not in str(err.value)


def test_any_configured_key_opens_and_the_first_seals() -> None:
    old_value = Sealer([OLD]).seal("d1", "ps_client_secret", "s")
    rotating = Sealer([NEW, OLD])
    assert rotating.open("d1", "ps_client_secret", old_value) == "s"
    assert rotating.seal("d1", "ps_client_secret", "s").split(":")[1] == Sealer([NEW]).current
    with pytest.raises(SealError, match="not among the configured"):
        Sealer([NEW]).open("d1", "ps_client_secret", old_value)
    assert "6f6f" not in repr(rotating)  # no key material in a repr


def test_the_embedded_database_gets_a_private_key_file_once(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    value = _sealer(settings).seal("d1", "ps_client_secret", "s")
    key_file = tmp_path / "secret-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(base64.b64decode(key_file.read_text().strip())) == 32
    # The next start reads the same key.
    assert _sealer(settings).open("d1", "ps_client_secret", value) == "s"


def test_an_external_database_without_a_key_is_refused(tmp_path: Path) -> None:
    settings = Settings(database_url="postgresql://db/wb", data_dir=tmp_path)
    with pytest.raises(StartupError, match="WRITEBACK_SECRET_KEY"):
        _sealer(settings)
    assert not (tmp_path / "secret-key").exists()
