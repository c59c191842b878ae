"""Domain rules: district configuration, student resolution, attendance records and their
delivery. Knows nothing of gRPC or HTTP; talks to the store and PowerSchool adapters."""

from service.domain.attendance import AttendanceService
from service.domain.audit import Audit
from service.domain.callers import Callers
from service.domain.connection_check import ConnectionChecker
from service.domain.delivery import Deliverer
from service.domain.diagnose import MappingDoctor
from service.domain.districts import DistrictService
from service.domain.politeness import Politeness
from service.domain.roster_sync import RosterSync, SyncScheduler
from service.domain.rules import Backoff
from service.domain.students import StudentCache, StudentResolver, visible_student_id
from service.domain.sync_jobs import SyncJobs
from service.domain.worker import DeliveryElsewhere, DeliveryWorker, WorkerSettings

__all__ = [
    "AttendanceService",
    "Audit",
    "Backoff",
    "Callers",
    "ConnectionChecker",
    "Deliverer",
    "DeliveryElsewhere",
    "DeliveryWorker",
    "DistrictService",
    "MappingDoctor",
    "Politeness",
    "RosterSync",
    "StudentCache",
    "StudentResolver",
    "SyncJobs",
    "SyncScheduler",
    "WorkerSettings",
    "visible_student_id",
]
