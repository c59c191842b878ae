"""Postgres adapter: connection pool, migrations, and one store per table group."""

from service.store._database import EmbeddedPostgres, open_pool
from service.store.attendance import AttendanceStore
from service.store.districts import DistrictStore
from service.store.students import StudentStore

__all__ = ["AttendanceStore", "DistrictStore", "EmbeddedPostgres", "StudentStore", "open_pool"]
