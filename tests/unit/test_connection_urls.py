"""Which PowerSchool URLs CheckConnection flags as unencrypted (no network involved)."""

from __future__ import annotations

import pytest

from service.domain.connection_check import plain_http_off_loopback


@pytest.mark.parametrize(
    ("url", "flagged"),
    [
        ("http://ps.district.org", True),
        ("http://10.0.0.5:8080", True),
        ("HTTP://ps.district.org/", True),
        ("https://ps.district.org", False),
        ("http://127.0.0.1:8081", False),
        ("http://localhost:8081", False),
        ("http://[::1]:8081", False),
    ],
)
def test_plain_http_off_loopback(url: str, flagged: bool) -> None:
    assert plain_http_off_loopback(url) is flagged
