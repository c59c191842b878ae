"""Postgres adapter: connection pool, migrations, and one store per table group."""

from service.store._database import EmbeddedPostgres, open_pool
from service.store.attendance import AttendanceStore
from service.store.districts import DistrictStore
from service.store.students import StudentStore
from service.store.sync_state import SyncState, SyncStateStore

__all__ = [
    "AttendanceStore",
    "DistrictStore",
    "EmbeddedPostgres",
    "StudentStore",
    "SyncState",
    "SyncStateStore",
    "open_pool",
]
