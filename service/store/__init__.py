"""Postgres adapter: connection pool, migrations, and one store per table group."""

from service.store._database import EmbeddedPostgres, open_pool
from service.store.attendance import AttendanceStore, Submitted
from service.store.audit import AuditStore
from service.store.callers import CallerStore
from service.store.changes import StudentChanges
from service.store.districts import DistrictStore
from service.store.figures import DistrictFigures, FiguresStore
from service.store.health import DatabaseProbe
from service.store.sealing import Sealer, SealError, load_keys, reseal
from service.store.students import StudentStore
from service.store.sync_jobs import SyncJobStore
from service.store.sync_state import SyncState, SyncStateStore
from service.store.workers import WorkerRegistry

__all__ = [
    "AttendanceStore",
    "AuditStore",
    "CallerStore",
    "DatabaseProbe",
    "DistrictFigures",
    "DistrictStore",
    "EmbeddedPostgres",
    "FiguresStore",
    "SealError",
    "Sealer",
    "StudentChanges",
    "StudentStore",
    "Submitted",
    "SyncJobStore",
    "SyncState",
    "SyncStateStore",
    "WorkerRegistry",
    "load_keys",
    "open_pool",
    "reseal",
]
