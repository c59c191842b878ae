"""Times in answers: the service's own conversion gives the Timestamp protobuf's
``FromDatetime`` gives, for every time a record can hold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from service.api._convert import timestamp

TIMES = [
    datetime(2026, 12, 2, 8, 30, 1, 123456, tzinfo=UTC),
    # Before the epoch: whole seconds round down, nanoseconds stay positive.
    datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC),
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    # Another offset: the same instant as in UTC.
    datetime(2026, 3, 8, 2, 30, tzinfo=timezone(timedelta(hours=-5))),
    # Naive: taken as UTC, as FromDatetime takes it.
    datetime(2026, 1, 1, 12, 0, 0, 7),
]


@pytest.mark.parametrize("value", TIMES, ids=str)
def test_timestamp_matches_protobufs_conversion(value: datetime) -> None:
    expected = Timestamp()
    expected.FromDatetime(value)
    assert timestamp(value) == expected


def test_no_time_is_no_timestamp() -> None:
    assert timestamp(None) is None
